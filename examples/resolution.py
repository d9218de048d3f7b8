"""Resolution: train at one grid, run on coarser and finer grids of the same functions.

Two studies, each model on the problem it is built for:

- **SAE-FNO on smooth concepts** (band-limited, one spike per sample at a position on a lattice
  that every grid contains), in 1-D and 2-D, scored on every grid by
  - the explained variance of the reconstruction,
  - the fraction of concepts recovered (|cos| > 0.99, sign- and shift-aware) by the atoms on
    that grid,
  - code F1: supports of the inferred codes (cells holding a mass of at least 0.05; true
    amplitudes are at least 1) against the true spikes, within one training-grid spacing,
    after matching the learned concepts to the true ones,

  with the codes inferred three ways: by the trained encoder (unrolled FISTA, a fixed number
  of steps), to a tolerance of 1e-5 from zero codes
  (`sae.with_encoder(FixedPoint.from_encoder(sae.encoder))`; only on grids of at most 4096
  points, `COLD_UP_TO`), and to the same tolerance coarse to fine (`multigrid_infer`:
  warm-started from the coarsest grid that resolves the kept modes, each finer level refined
  by a `WorkingSet`), with the median number of iterations on the grid itself.
- **SAE-CNN against SAE-FNO on localized concepts** (sums of narrow Gaussian bumps, two spikes
  per sample), 1-D, trained at n = 128: the SAE-CNN has 64-tap filters (half the domain), the
  SAE-FNO every mode of the training grid; both start from the data (`init_from_data`) with
  twice as many atoms as concepts. Scored by the fraction recovered at |cos| > 0.95 and 0.99,
  the mean matched |cos| and the explained variance.

The SAE-FNO's kernels are Fourier coefficients, the same operator on every grid. The SAE-CNN is
run as a user would run it: the same filter taps on the new grid (functions half as wide on a
grid twice as fine, twice as wide on one twice as coarse).

    python examples/resolution.py            # 1-D and 2-D, about 10 minutes on 2 CPU cores
    python examples/resolution.py --quick    # a smaller version (CI)
"""

import argparse
import json
import pathlib
import time

import equinox as eqx
import jax
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np
import optax

import equisae as eqs

LAMBDA = 0.1
TOL = 1e-5
# Inference to TOL from zero codes only on grids of at most this many points: beyond, it runs
# to the 20 000-iteration budget (`benchmarks/warm_start.py`: median 3805 at 64², 2 of 16
# signals unconverged), over 15 minutes for 128 signals at 128² on 2 CPU cores.
COLD_UP_TO = 4096


@eqx.filter_jit
def infer(sae: eqs.SAE, signals, grid: eqs.Grid):
    """Reconstructions and codes of a batch."""
    return jax.vmap(sae, in_axes=(0, None))(signals, grid)


@eqx.filter_jit
def infer_with_diagnostics(sae: eqs.SAE, signals, grid: eqs.Grid):
    """Codes and diagnostics of a batch."""
    return jax.vmap(lambda x: sae.infer(x, grid)[1:])(signals)


@eqx.filter_jit
def infer_coarse_to_fine(sae: eqs.SAE, signals, grid: eqs.Grid):
    """Codes and multigrid diagnostics of a batch, inferred coarse to fine."""
    return jax.vmap(lambda x: eqs.multigrid_infer(sae, x, grid, tol=TOL)[1:])(signals)


def train(dictionary, signals, steps: int, unrolled: int, key) -> eqs.SAE:
    sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(LAMBDA), unrolled), dictionary)
    sae, _ = eqs.fit(
        sae,
        signals,
        optimizer=optax.adam(optax.cosine_decay_schedule(1e-2, steps)),
        steps=steps,
        batch_size=32,
        key=key,
        loss=eqs.SAELoss(l1=0.3 * LAMBDA),
        progress=False,
    )
    return sae


def evaluate(
    sae: eqs.SAE,
    model: eqs.data.FunctionalModel,
    grid: eqs.Grid,
    train_n: int,
    key,
    solve: bool = True,
    examples: int = 128,
) -> dict:
    """The numbers of the tables, for one model on one grid (on `examples` test signals);
    `solve` adds the codes inferred to a tolerance and coarse to fine (for a `Spectral`
    dictionary)."""
    test = model.sample(key, examples, grid)
    reconstruction, codes = infer(sae, test.signals, grid)
    atoms = sae.dictionary.atoms(grid)
    recovery = eqs.metrics.recovery(test.concepts, atoms, shift_invariant=True, upsample=8)

    def f1(codes):
        return eqs.metrics.support_f1(
            test.codes,
            recovery.align(codes),
            threshold=0.05 / grid.weight,
            tolerance=max(1, grid.shape[0] // train_n),
        )["f1"]

    by_tolerance = {}
    if solve and isinstance(sae.dictionary, eqs.Spectral):
        warm_codes, warm = infer_coarse_to_fine(sae, test.signals, grid)
        by_tolerance = {
            "warm_f1": f1(warm_codes),
            "warm_steps": float(np.median(warm.steps[:, -1])),
            "converged": bool(np.all(warm.converged)),
        }
        if grid.size <= COLD_UP_TO:
            solver = sae.with_encoder(eqs.FixedPoint.from_encoder(sae.encoder, tol=TOL))
            cold_codes, cold = infer_with_diagnostics(solver, test.signals, grid)
            by_tolerance |= {
                "tolerance_f1": f1(cold_codes),
                "tolerance_steps": float(np.median(cold.steps)),
                "converged": by_tolerance["converged"] and bool(np.all(cold.converged)),
            }
    return by_tolerance | {
        "explained_variance": float(eqs.metrics.explained_variance(test.signals, reconstruction)),
        "recovered": recovery.fraction,
        "recovered_95": float(np.mean(recovery.cosine > 0.95)),
        "mean_cosine": float(np.mean(recovery.cosine)),
        "code_f1": f1(codes),
        "unrolled_steps": sae.encoder.steps,
        "atoms": recovery.align_atoms(sae.dictionary.atoms(grid)),
        "concepts": np.asarray(test.concepts),
    }


def study(ndim: int, quick: bool, key, train_steps: int | None = None) -> dict:
    """Train at one grid, evaluate at all; returns the numbers per model and grid.
    `train_steps` overrides the number of training steps."""
    if ndim == 1:
        train_n, sizes, bandwidth, concepts, lattice = 64, [32, 64, 128, 256], 12, 4, 32
        steps, unrolled = (300, 60) if quick else (1500, 100)
    else:
        train_n, sizes, bandwidth, concepts, lattice = 32, [16, 32, 64, 128], 4, 3, 16
        steps, unrolled = (100, 30) if quick else (600, 60)
    steps = steps if train_steps is None else train_steps
    sizes = sizes[:3] if quick else sizes  # a smoke run: one coarser grid and one finer
    kc, kd, kf, _, ke = jr.split(key, 5)
    functions = eqs.data.smooth(kc, concepts, ndim=ndim, bandwidth=bandwidth)
    model = eqs.data.FunctionalModel(functions, spikes=1, lattice=lattice)
    train_grid = eqs.Grid((train_n,) * ndim)
    signals = model.sample(kd, 4000 if ndim == 1 else 2000, train_grid).signals
    # an SAE-CNN is not built for smooth concepts (with full-width filters it reconstructs them
    # from the wrong atoms even at its own grid): it has a study of its own, `localized`
    dictionaries = {"SAE-FNO": eqs.Spectral(train_grid, 1, concepts, bandwidth + 1, key=kf)}
    results = {}
    for name, dictionary in dictionaries.items():
        start = time.perf_counter()
        sae = train(dictionary, signals, steps, unrolled, jr.fold_in(key, len(results)))
        seconds = time.perf_counter() - start
        results[name] = {"train_seconds": seconds, "grids": {}}
        for n in sizes:
            grid = eqs.Grid((n,) * ndim)
            results[name]["grids"][n] = evaluate(
                sae, model, grid, train_n, jr.fold_in(ke, n), examples=32 if quick else 128
            )
    return {"train_n": train_n, "sizes": sizes, "models": results}


def localized(quick: bool, key, train_steps: int | None = None) -> dict:
    """An SAE-CNN and an SAE-FNO trained at n = 128 on localized concepts and scored on
    n = 64, 128 and 256 (`train_steps` overrides the number of training steps).

    Both have twice as many atoms as concepts (with as many, one of three seeds ends with two
    concepts in one atom) and start from the data; from a random start the SAE-CNN recovers
    none of them."""
    train_n, sizes, concepts, width = 128, [64, 128, 256], 4, 64
    steps, unrolled = (100, 30) if quick else (1000, 100)
    steps = steps if train_steps is None else train_steps
    kc, kd, kf, kcnn, ki, ke = jr.split(key, 6)
    model = eqs.data.FunctionalModel(eqs.data.bumps(kc, concepts, spread=0.1), spikes=2, lattice=64)
    train_grid = eqs.Grid(train_n)
    signals = model.sample(kd, 4000, train_grid).signals
    dictionaries = {
        "SAE-CNN": eqs.Convolutional(train_grid, 1, 2 * concepts, width, key=kcnn),
        "SAE-FNO": eqs.Spectral(train_grid, 1, 2 * concepts, key=kf),
    }
    results = {}
    for name, dictionary in dictionaries.items():
        dictionary = eqs.init_from_data(dictionary, signals, key=jr.fold_in(ki, len(results)))
        start = time.perf_counter()
        sae = train(dictionary, signals, steps, unrolled, jr.fold_in(key, len(results)))
        seconds = time.perf_counter() - start
        results[name] = {"train_seconds": seconds, "grids": {}}
        for n in sizes:
            grid = eqs.Grid(n)
            results[name]["grids"][n] = evaluate(
                sae, model, grid, train_n, jr.fold_in(ke, n), solve=False
            )
    return {"train_n": train_n, "sizes": sizes, "models": results}


def report_localized(result: dict) -> list[str]:
    lines = [
        f"1-D localized concepts, trained at n = {result['train_n']}: fraction recovered at "
        "|cos| > 0.95 and 0.99, mean matched |cos|"
    ]
    header = f"{'model':<9}{'n':>6}{'expl. var':>11}{'at 0.95':>9}{'at 0.99':>9}{'mean |cos|':>12}"
    lines += [header, "-" * len(header)]
    for name, model in result["models"].items():
        for n, numbers in model["grids"].items():
            mark = " (train)" if n == result["train_n"] else ""
            lines.append(
                f"{name:<9}{n:>6}{numbers['explained_variance']:>11.3f}"
                f"{numbers['recovered_95']:>9.2f}{numbers['recovered']:>9.2f}"
                f"{numbers['mean_cosine']:>12.3f}{mark}"
            )
    return lines


def report(ndim: int, result: dict) -> list[str]:
    lines = [
        f"{ndim}-D, trained at n = {result['train_n']} per axis; code F1 (iterations on the grid) "
        f"of the trained encoder, to tolerance {TOL} from zero, and coarse to fine"
    ]
    header = (
        f"{'model':<9}{'n':>6}{'expl. var':>11}{'recovered':>11}"
        f"{'unrolled':>15}{'to tolerance':>15}{'coarse to fine':>16}"
    )
    lines += [header, "-" * len(header)]
    for name, model in result["models"].items():
        for n, numbers in model["grids"].items():
            mark = " (train)" if n == result["train_n"] else ""
            unrolled = f"{numbers['code_f1']:.2f} ({numbers['unrolled_steps']})"
            cold = warm = "-"
            if "tolerance_f1" in numbers:
                cold = f"{numbers['tolerance_f1']:.2f} ({numbers['tolerance_steps']:.0f})"
            if "warm_f1" in numbers:
                warm = f"{numbers['warm_f1']:.2f} ({numbers['warm_steps']:.0f})"
                if not numbers["converged"]:
                    mark += " (not converged)"
            lines.append(
                f"{name:<9}{n:>6}{numbers['explained_variance']:>11.3f}"
                f"{numbers['recovered']:>11.2f}{unrolled:>15}{cold:>15}{warm:>16}{mark}"
            )
    return lines


def figure(results: dict, local: dict, path: pathlib.Path) -> None:
    """Per row a model on its problem: its first matched atom on each grid (truth in grey) and,
    on the right, the mean matched |cos| against the grid size."""
    panels = [("SAE-CNN", "localized", local), ("SAE-FNO", "localized", local)]
    if 1 in results:
        panels.insert(0, ("SAE-FNO", "smooth", results[1]))
    columns = max(len(r["sizes"]) for _, _, r in panels) + 1
    fig, axes = plt.subplots(len(panels), columns, figsize=(3 * columns, 2.4 * len(panels)))
    for row, (name, data, result) in zip(axes, panels):
        grids = result["models"][name]["grids"]
        for ax, n in zip(row, result["sizes"]):
            numbers = grids[n]
            eqs.plotting.plot_atoms(
                [ax],
                numbers["atoms"][:1],
                eqs.Grid(n),
                reference=numbers["concepts"][:1],
                color="C3",
            )
            mark = " (train)" if n == result["train_n"] else ""
            ax.set_title(f"{name}, {data}, n = {n}{mark}", fontsize=8)
        ax = row[-1]
        ax.plot(list(grids), [g["mean_cosine"] for g in grids.values()], "-o")
        ax.axvline(result["train_n"], color="0.6", ls=":", lw=1)
        ax.set_xscale("log", base=2)
        ax.set_ylim(0, 1.05)
        ax.set_title(f"{name}, {data}: mean matched |cos|", fontsize=8)
        ax.set_xlabel("grid points (dotted: training grid)", fontsize=8)
    fig.suptitle("first concept: truth (grey) and learned (red) on each grid")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def _numbers(result: dict) -> dict:
    return {
        name: {
            str(n): {k: v for k, v in g.items() if k not in ("atoms", "concepts")}
            for n, g in m["grids"].items()
        }
        | {"train_seconds": m["train_seconds"]}
        for name, m in result["models"].items()
    }


def main(out: pathlib.Path, quick: bool, dims: list[int]) -> dict:
    key = jr.key(0)
    results, lines = {}, []
    for ndim in dims:
        results[ndim] = study(ndim, quick, jr.fold_in(key, ndim))
        lines += report(ndim, results[ndim]) + [""]
    local = localized(quick, jr.fold_in(key, 3))
    lines += report_localized(local)
    print("\n".join(lines))
    out.mkdir(parents=True, exist_ok=True)
    figure(results, local, out / "resolution.png")
    numbers = {f"{ndim}d": _numbers(r) for ndim, r in results.items()}
    numbers["1d localized"] = _numbers(local)
    (out / "resolution.json").write_text(json.dumps(numbers, indent=2))
    print(f"figure: {out / 'resolution.png'}, numbers: {out / 'resolution.json'}")
    return numbers


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs"))
    parser.add_argument("--quick", action="store_true", help="fewer steps: a smoke run")
    parser.add_argument("--dims", type=int, nargs="+", default=[1, 2])
    args = parser.parse_args()
    main(args.out, args.quick, args.dims)
