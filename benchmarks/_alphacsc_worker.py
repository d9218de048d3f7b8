"""Runs alphacsc's `BatchCDL` and `learn_d_z` for `recovery_families.py`, in the virtual
environment of its own (`benchmarks/.venv-alphacsc`: alphacsc 0.4.1 needs NumPy < 2 and
SciPy < 1.12, see `requirements-alphacsc.txt`). Not run by hand:

    .venv-alphacsc/bin/python _alphacsc_worker.py JOBS.npz RESULTS.npz

`JOBS.npz` holds `jobs` (a JSON list of {"id", "method", "reg", "atoms", "width", "seed",
"data", and optionally "n_iter"}) and one array of signals `signals_<data>` of shape
(examples, n) per data set. The signals are periodic: each is extended by `width - 1` of its
own first samples, so that alphacsc's "valid" convolution of the extended signal is the
circular convolution of the original (the model of the data). `RESULTS.npz` gets
`atoms_<id>` (atoms, width) and `seconds_<id>` (the wall time of the fit alone), and
`warmup_seconds`: a first tiny fit that pays numba's compilation once per process, not counted
in any job.
"""

import json
import sys
import time
import warnings

import numpy as np

# the recommended settings of alphacsc's own examples: `BatchCDL` as in its multivariate
# examples (data start from chunks, lambda a fraction of lambda_max, LGCD for the codes),
# univariate here (rank1=False, one channel); `learn_d_z` as in its "vanilla CSC" example
BATCH_CDL = dict(
    rank1=False,
    uv_constraint="auto",
    window=False,
    D_init="chunk",
    lmbd_max="scaled",
    n_iter=100,
    eps=1e-4,
    solver_z="lgcd",
    solver_z_kwargs={"tol": 1e-3, "max_iter": 10_000},
    solver_d="fista",
    verbose=0,
    n_jobs=1,
)
LEARN_D_Z = dict(n_iter=50, lmbd_max="scaled", solver_d_kwargs=dict(factr=100), n_jobs=1, verbose=0)


def periodic(signals: np.ndarray, width: int) -> np.ndarray:
    return np.concatenate([signals, signals[:, : width - 1]], axis=1)


def fit(method, signals, atoms: int, width: int, reg: float, seed: int, n_iter=None):
    from alphacsc import BatchCDL, learn_d_z

    batch_cdl, vanilla = dict(BATCH_CDL), dict(LEARN_D_Z)
    if n_iter:  # a smoke run
        batch_cdl["n_iter"] = vanilla["n_iter"] = n_iter

    x = periodic(np.asarray(signals, dtype=np.float64), width)
    if method == "BatchCDL":
        cdl = BatchCDL(atoms, width, reg=reg, random_state=seed, **batch_cdl)
        cdl.fit(x[:, None, :])
        return np.asarray(cdl.D_hat_)[:, 0, :]
    if method == "learn_d_z":
        _, _, d_hat, _, _ = learn_d_z(x, atoms, width, reg=reg, random_state=seed, **vanilla)
        return np.asarray(d_hat)
    raise ValueError(f"unknown alphacsc method {method!r}")


def main(jobs_path: str, results_path: str) -> None:
    warnings.simplefilter("ignore")
    stored = np.load(jobs_path)
    jobs = json.loads(str(stored["jobs"]))
    results = {}
    rng = np.random.default_rng(0)
    start = time.perf_counter()
    for method in sorted({job["method"] for job in jobs}):
        fit(method, rng.standard_normal((4, 32)), 2, 8, 0.1, 0)
    results["warmup_seconds"] = np.asarray(time.perf_counter() - start)
    for job in jobs:
        signals = stored[f"signals_{job['data']}"]
        start = time.perf_counter()
        atoms = fit(
            job["method"],
            signals,
            job["atoms"],
            job["width"],
            job["reg"],
            job["seed"],
            job.get("n_iter"),
        )
        seconds = time.perf_counter() - start
        results[f"seconds_{job['id']}"] = np.asarray(seconds)
        results[f"atoms_{job['id']}"] = atoms
        print(f"alphacsc {job['method']} job {job['id']}: {seconds:.1f} s", flush=True)
    np.savez(results_path, **results)


if __name__ == "__main__":
    main(*sys.argv[1:3])
