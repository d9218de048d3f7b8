"""Model recovery: each model family on the problem it is built for, and where it fails.

- SAE and lifted SAE (tied, the lift whitening the data: a preconditioner of inference) on the
  standard vector problem: m = 50, p = 100 random unit atoms, 5 active per sample, signed
  amplitudes in [1, 2], 8000 samples.
- SAE-CNN on localized concepts: 4 sums of Gaussian bumps on the periodic interval, two events
  per sample, trained at n = 128 with filters of 64 grid points (half the domain) and 8 atoms,
  then run on a grid twice as fine, where its filters are functions half as wide.
- SAE-FNO on smooth band-limited concepts (6 concepts, modes up to 24, one event per sample),
  trained at n = 128 with the 25 lowest modes and run at n = 64 and n = 256 as well.

Every model uses the recommended defaults: a start from the data (`eqs.init_from_data`) and
the lasso by unrolled FISTA (lambda is in the data's units here; for data in other units add
`sae.with_scale_of(data)`). The vector SAEs train through the unrolled steps with a small l1
term in the outer loss. The function SAEs use the one default that
`benchmarks/recovery_families.py` runs on every family of functions: 100 FISTA steps at
lambda = 0.5, the codes refitted on their support (`eqs.Debiased`) and held constant for the
gradient (`eqs.Alternating`: alternating minimisation, the loss the reconstruction alone).
Learned atoms are matched to the true ones one to one, up to sign and (for functions) shift,
with shifts searched on a grid 8 times finer.

    python examples/recovery.py            # about 1-2.5 minutes on 2 CPU cores
    python examples/recovery.py --out DIR  # where the figure goes (default: outputs/)
    python examples/recovery.py --quick    # a smoke run (CI): short training, numbers meaningless
"""

import argparse
import pathlib
import time

import equinox as eqx
import jax
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np
import optax
from tqdm.auto import tqdm

import equisae as eqs


def vectors(key, quick: bool):
    """The standard vector problem on `Grid(())`."""
    truth = eqs.data.VectorModel(key, dim=50, concepts=100, sparsity=5)
    return truth, truth.sample(jr.fold_in(key, 1), 1000 if quick else 8000)


def localized(key, quick: bool, grid: eqs.Grid):
    """Sums of bumps within +-0.2 of the origin (standard deviations 0.01 to 0.03), 2 events."""
    concepts = eqs.data.bumps(key, 4, spread=0.1)
    truth = eqs.data.FunctionalModel(concepts, spikes=2, lattice=64)
    return truth, truth.sample(jr.fold_in(key, 1), 500 if quick else 4000, grid)


def smooth(key, quick: bool, grid: eqs.Grid):
    """Band-limited concepts (modes up to 24), one event per sample."""
    truth = eqs.data.FunctionalModel(eqs.data.smooth(key, 6, bandwidth=24), spikes=1, lattice=64)
    return truth, truth.sample(jr.fold_in(key, 1), 500 if quick else 4000, grid)


def function_encoder(quick: bool) -> eqs.AbstractEncoder:
    """The function SAEs' default: the lasso's support by FISTA, the codes refitted on it and
    held constant for the gradient (alternating minimisation)."""
    lasso = eqs.Unrolled(eqs.SoftThreshold(0.5), 10 if quick else 100)
    return eqs.Alternating(eqs.Debiased(lasso, 10))


def train(dictionary, signals, encoder, *, steps, batch_size, key, l1: float = 0.0) -> eqs.SAE:
    """The recommended recipe: a start from the data, then Adam with a cosine decay on the
    reconstruction error (plus `l1` times the codes' L1 norm)."""
    start, order = jr.split(key)
    dictionary = eqs.init_from_data(dictionary, signals, key=start)
    sae = eqs.SAE(encoder, dictionary)
    sae, _ = eqs.fit(
        sae,
        signals,
        optimizer=optax.adam(optax.cosine_decay_schedule(1e-2, steps)),
        steps=steps,
        batch_size=batch_size,
        key=order,
        loss=eqs.SAELoss(l1=l1),
        progress=False,
    )
    return sae


@eqx.filter_jit
def reconstruct(sae: eqs.SAE, signals, grid: eqs.Grid):
    return jax.vmap(sae, in_axes=(0, None))(signals, grid)[0]


def score(sae, test, grid: eqs.Grid) -> dict:
    """Recovery and explained variance of one trained model on test data on `grid`."""
    atoms = sae.dictionary.atoms(grid)
    functions = grid.ndim > 0
    result = eqs.metrics.recovery(
        test.concepts, atoms, shift_invariant=functions, upsample=8 if functions else 1
    )
    ev = eqs.metrics.explained_variance(test.signals, reconstruct(sae, test.signals, grid))
    return {
        "at 0.95": float(np.mean(result.cosine > 0.95)),
        "at 0.99": float(np.mean(result.cosine > 0.99)),
        "mean |cos|": float(np.mean(result.cosine)),
        "expl. var": float(ev),
        "aligned": result.align_atoms(atoms),
        "concepts": np.asarray(test.concepts),
        "grid": grid,
    }


def run_vectors(lifted: bool, key, quick: bool) -> list[dict]:
    k_data, k_model, k_fit = jr.split(key, 3)
    truth, data = vectors(k_data, quick)
    grid = eqs.Grid(())
    dictionary = eqs.Dense(grid, 50, 100, key=k_model)
    if lifted:  # tied: the concepts stay in data space, A = C^{-1/2} is the metric of inference
        dictionary = eqs.Tied(dictionary, eqs.whitening(data.signals, grid))
    steps = 100 if quick else 800
    start = time.perf_counter()
    encoder = eqs.Unrolled(eqs.SoftThreshold(0.3), 30)
    sae = train(dictionary, data.signals, encoder, steps=steps, batch_size=256, key=k_fit, l1=0.05)
    seconds = time.perf_counter() - start
    test = truth.sample(jr.fold_in(k_data, 2), 200 if quick else 1000)
    return [{"where": "vectors", "steps": steps, "seconds": seconds} | score(sae, test, grid)]


CNN = {"filters": 8, "width": 64}  # 4 concepts


def run_on_grids(dictionary, truth, data, problem: str, grids, keys, quick: bool, *, steps):
    """Train a function SAE at its grid (the first of `grids`) and score it on every grid."""
    k_data, k_fit = keys
    start = time.perf_counter()
    encoder = function_encoder(quick)
    sae = train(dictionary, data.signals, encoder, steps=steps, batch_size=32, key=k_fit)
    seconds = time.perf_counter() - start
    rows = []
    for n in grids:
        on = eqs.Grid(n)
        test = truth.sample(jr.fold_in(k_data, n), 64 if quick else 256, on)
        where = f"{problem}, n={n}" + (" (train)" if n == grids[0] else "")
        rows.append({"where": where, "steps": steps, "seconds": seconds} | score(sae, test, on))
    return rows


def run_cnn(key, quick: bool) -> list[dict]:
    k_data, k_model, k_fit = jr.split(key, 3)
    grid = eqs.Grid(128)
    truth, data = localized(k_data, quick, grid)
    # 8 filters of 64 taps for 4 concepts: with as many filters as concepts, 1 of 3 seeds
    # ends with two concepts in one filter
    dictionary = eqs.Convolutional(grid, 1, CNN["filters"], CNN["width"], key=k_model)
    return run_on_grids(dictionary, truth, data, "bumps", (128, 256), (k_data, k_fit), quick,
                        steps=50 if quick else 1000)  # fmt: skip


def run_fno(key, quick: bool) -> list[dict]:
    k_data, k_model, k_fit = jr.split(key, 3)
    grid = eqs.Grid(128)
    truth, data = smooth(k_data, quick, grid)
    dictionary = eqs.Spectral(grid, 1, 6, 25, key=k_model)
    return run_on_grids(dictionary, truth, data, "smooth", (128, 64, 256), (k_data, k_fit),
                        quick, steps=50 if quick else 600)  # fmt: skip


FAMILIES = {
    "SAE": lambda key, quick: run_vectors(False, key, quick),
    "lifted SAE": lambda key, quick: run_vectors(True, key, quick),
    "SAE-CNN": run_cnn,
    "SAE-FNO": run_fno,
}

# why a family fails where it does, for the reason line under the table
EXPECTED = {
    ("SAE-CNN", "bumps, n=256"): "an SAE-CNN's filters are 64 grid values: on a 2x finer grid "
    "they are functions half as wide as the concepts (filters live in grid units)",
}


def table(rows: list[dict]) -> list[str]:
    columns = ("steps", "seconds", "at 0.95", "at 0.99", "mean |cos|", "expl. var")
    header = f"{'family':<12}{'problem':<22}" + "".join(f"{c:>11}" for c in columns)
    lines = [header, "-" * len(header)]
    reasons = []
    for row in rows:
        lines.append(
            f"{row['family']:<12}{row['where']:<22}{row['steps']:>11}{row['seconds']:>11.1f}"
            f"{row['at 0.95']:>11.2f}{row['at 0.99']:>11.2f}{row['mean |cos|']:>11.3f}"
            f"{row['expl. var']:>11.3f}"
        )
        if row["at 0.95"] < 0.9:
            where = row["where"].removesuffix(" (train)")
            reason = EXPECTED.get(
                (row["family"], where),
                "not expected: this family recovers this problem with the full budget "
                "(a --quick run, or a regression)",
            )
            reasons.append(f"{row['family']} on {where} fails: {reason}.")
    return lines + [""] + reasons


def figure(rows: list[dict], path: pathlib.Path, columns: int = 4) -> None:
    fig, axes = plt.subplots(len(rows), columns, figsize=(2.2 * columns, 1.3 * len(rows)))
    for ax_row, row in zip(axes, rows):
        if row["grid"].ndim == 0:  # vectors: drawn here (plot_atoms types atoms as "p c *spatial")
            for ax, atom, truth in zip(ax_row, row["aligned"], row["concepts"]):
                ax.plot(truth, color="0.6", lw=2.5)
                ax.plot(atom, color="C3", lw=1.2)
                ax.set_xticks([])
                ax.set_yticks([])
        else:
            eqs.plotting.plot_atoms(
                list(ax_row),
                row["aligned"][:columns],
                row["grid"],
                reference=row["concepts"][:columns],
                color="C3",
            )
        ax_row[0].set_ylabel(f"{row['family']}\n{row['where']}", rotation=0, ha="right",
                             va="center", fontsize=8)  # fmt: skip
    fig.suptitle("true concepts (grey) and learned atoms (red), matched up to sign and shift")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(out: pathlib.Path, quick: bool = False, seed: int = 0) -> list[dict]:
    key = jr.key(seed)
    rows = []
    for i, (family, run) in enumerate(tqdm(FAMILIES.items(), desc="families", unit="family")):
        rows += [{"family": family} | row for row in run(jr.fold_in(key, i), quick)]
    print("\n".join(table(rows)))
    figure(rows, out / "recovery.png")
    print(f"figure: {out / 'recovery.png'}")
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: short training")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    main(args.out, args.quick, args.seed)
