"""Inference to a tolerance against the grid size: iterations and wall time, cold (from zero
codes on the grid) against warm (coarse to fine with `multigrid_infer`).

The SAE-FNO's kernels are the true band-limited concepts (so the numbers are about inference,
not about training); signals hold `--spikes` spikes on the lattice of the training grid
(n = 64 in 1-D, 32^2 in 2-D), or anywhere with `--off-lattice`. Every grid solves the same
lasso, lambda = 0.1, to rtol = atol = `--tol` (1e-5) with the accelerated fixed-point solver,
which for the lasso also requires a relative duality gap within `--tol` (a test that means the
same on every grid, less its float32 rounding), in at most `--max-steps` iterations.

    python benchmarks/warm_start.py               # 1-D n = 64..1024 and 2-D 32^2..256^2
    python benchmarks/warm_start.py --dims 1 --off-lattice
    python benchmarks/warm_start.py --tol 1e-4
    python benchmarks/warm_start.py --no-record   # print only, RESULTS.md untouched
    python benchmarks/warm_start.py --dims 2 --cold-up-to 4096   # no cold solves past 64^2

Cold solves on the finest 2-D grids run to the iteration budget for many minutes (128^2:
about 10, 256^2: about 40 on 2 CPU cores); `--cold-up-to` skips them above a number of grid
points (their columns read "-"). The goal compares the finest warm grid with the cold
training grid, which is always solved.
"""

import argparse
import functools
import sys
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from _common import append, best_of

import equisae as eqs

LAMBDA = 0.1


def true_dictionary(functions: eqs.data.FourierConcepts, grid: eqs.Grid) -> eqs.Spectral:
    """The spectral dictionary whose kernels are the given band-limited concepts."""
    bandwidth, ndim = functions.bandwidth, functions.ndim
    axes = tuple(range(2, 2 + ndim))
    coefficients = jnp.fft.ifftshift(functions.coefficients, axes=axes)[..., : bandwidth + 1]
    p, c = coefficients.shape[:2]
    dictionary = eqs.Spectral(grid, c, p, bandwidth + 1, key=jr.key(0))
    weight = jnp.stack([coefficients.real, coefficients.imag]).astype(jnp.float32)
    return eqx.tree_at(lambda d: d.conv.weight, dictionary, weight)


@eqx.filter_jit
def cold(sae: eqs.SAE, signals, grid: eqs.Grid):
    return jax.vmap(lambda x: sae.infer(x, grid)[1:])(signals)


@eqx.filter_jit
def warm(sae: eqs.SAE, signals, grid: eqs.Grid, tol: float, max_steps: int):
    infer = functools.partial(eqs.multigrid_infer, tol=tol, max_steps=max_steps)
    return jax.vmap(lambda x: infer(sae, x, grid))(signals)[1:]


def time_cold(fn, grid: eqs.Grid, repeats: int) -> float:
    """Best-of wall time; on grids of more than 4096 points, where cold solves run for
    thousands of iterations, one timed call (the program is compiled already)."""
    if grid.size <= 4096:
        return best_of(fn, repeats)
    start = time.perf_counter()
    jax.block_until_ready(fn())
    return time.perf_counter() - start


def f1(sample, codes, grid: eqs.Grid, train: int) -> float:
    tolerance = max(1, grid.shape[0] // train)
    threshold = 0.05 / grid.weight
    return eqs.metrics.support_f1(sample.codes, codes, threshold=threshold, tolerance=tolerance)[
        "f1"
    ]


def study(
    ndim: int,
    off_lattice: bool,
    spikes: int,
    batch: int,
    repeats: int,
    max_steps: int,
    tol: float,
    cold_up_to: int | None = None,
) -> list[dict]:
    train, sizes, bandwidth = (
        (64, [64, 128, 256, 512, 1024], 8) if ndim == 1 else (32, [32, 64, 128, 256], 4)
    )
    functions = eqs.data.smooth(jr.key(0), 4, ndim=ndim, bandwidth=bandwidth)
    model = eqs.data.FunctionalModel(
        functions, spikes=spikes, lattice=None if off_lattice else train
    )
    grid0 = eqs.Grid((train,) * ndim)
    trained = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(LAMBDA), 50), true_dictionary(functions, grid0)
    )
    to_tolerance = trained.with_encoder(
        eqs.FixedPoint.from_encoder(trained.encoder, tol=tol, max_steps=max_steps)
    )
    rows = []
    for n in sizes:
        grid = eqs.Grid((n,) * ndim)
        sample = model.sample(jr.key(1), batch, grid)
        warm_codes, warm_info = warm(trained, sample.signals, grid, tol, max_steps)
        warm_s = best_of(lambda: warm(trained, sample.signals, grid, tol, max_steps), repeats)
        row = {
            "n": n,
            "levels": "→".join(str(s[0]) for s in warm_info.shapes),
            "warm_steps": float(np.median(warm_info.steps[:, -1])),
            "warm_max": int(np.max(warm_info.steps[:, -1])),
            "warm_refined": float(np.median(warm_info.refined[:, -1])),
            "warm_work": float(np.median(warm_info.work)),
            "warm_converged": float(np.mean(np.all(warm_info.converged, axis=-1))),
            "warm_s": warm_s,
            "warm_f1": f1(sample, warm_codes, grid, train),
        }
        if n == train or cold_up_to is None or grid.size <= cold_up_to:

            def run_cold():
                return cold(to_tolerance, sample.signals, grid)

            cold_codes, cold_info = run_cold()
            row |= {
                "cold_steps": float(np.median(cold_info.steps)),
                "cold_max": int(np.max(cold_info.steps)),
                "cold_converged": float(np.mean(cold_info.converged)),
                "cold_s": time_cold(run_cold, grid, repeats),
                "cold_f1": f1(sample, cold_codes, grid, train),
            }
        rows.append(row)
        print(rows[-1], flush=True)
    return rows


def table(ndim: int, rows: list[dict]) -> str:
    unit = "n" if ndim == 1 else "n²"
    lines = [
        f"| {unit} | levels | cold steps (median / max) | warm steps, finest (median / max) "
        "| refinement D*D, finest | warm work (finest-grid steps) | cold s | warm s | cold F1 "
        "| warm F1 | converged cold / warm |",
        "|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in rows:
        if "cold_steps" in r:
            cold = (
                f"{r['cold_steps']:.0f} / {r['cold_max']}",
                f"{r['cold_s']:.3f}",
                f"{r['cold_f1']:.2f}",
                f"{r['cold_converged']:.2f}",
            )
        else:
            cold = ("-",) * 4
        lines.append(
            f"| {r['n']} | {r['levels']} | {cold[0]} "
            f"| {r['warm_steps']:.0f} / {r['warm_max']} | {r['warm_refined']:.0f} "
            f"| {r['warm_work']:.1f} "
            f"| {cold[1]} | {r['warm_s']:.3f} | {cold[2]} | {r['warm_f1']:.2f} "
            f"| {cold[3]} / {r['warm_converged']:.2f} |"
        )
    first, last = rows[0], rows[-1]
    ratio = (last["warm_steps"] + last["warm_refined"]) / max(first["cold_steps"], 1)
    lines.append("")
    lines.append(
        f"Finest grid, warm-started: {last['warm_steps']:.0f} median steps and "
        f"{last['warm_refined']:.0f} refinement applications of D*D against "
        f"{first['cold_steps']:.0f} cold at the training grid ({ratio:.3f}x; goal <= 2x: "
        f"{'holds' if ratio <= 2 else 'does not hold'})."
    )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--dims", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--off-lattice", action="store_true", help="spikes anywhere on [0, 1)^d")
    parser.add_argument("--spikes", type=int, default=2)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--max-steps", type=int, default=20_000, help="iteration budget")
    parser.add_argument("--tol", type=float, default=1e-5, help="tolerance of every solve")
    parser.add_argument(
        "--cold-up-to",
        type=int,
        default=None,
        help="skip cold solves on grids of more points than this (the training grid always runs)",
    )
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    sections = []
    for ndim in args.dims:
        rows = study(
            ndim,
            args.off_lattice,
            args.spikes,
            args.batch,
            args.repeats,
            args.max_steps,
            args.tol,
            args.cold_up_to,
        )
        where = "anywhere (off the lattice)" if args.off_lattice else "on the training lattice"
        title = (
            f"**{ndim}-D, trained at {rows[0]['n']}{'' if ndim == 1 else '²'}, {args.spikes} "
            f"spikes {where}, batch {args.batch}, tolerance {args.tol}**"
        )
        sections.append(title + "\n\n" + table(ndim, rows))
    text = "\n\n".join(sections)
    print(text)
    if not args.no_record:
        note = (
            "Iterations and best-of wall time (s, whole batch, jitted) of inference to the "
            "tolerance: cold = `FixedPoint.from_encoder` from zero codes on the grid; warm = "
            "`multigrid_infer` (the levels listed; its wall time includes every level; work = "
            "the iterations of all levels in units of finest-grid iterations). Code F1 of the "
            "supports (cells of mass >= 0.05) against the true spikes, within one training-grid "
            "spacing."
        )
        if args.cold_up_to:
            note += f" '-': no cold solve (grids of more than {args.cold_up_to} points)."
        append(
            "Warm starts: inference to a tolerance against the grid"
            + (" (off the lattice)" if args.off_lattice else ""),
            " ".join(["python", *sys.argv]),
            note + "\n\n" + text,
        )


if __name__ == "__main__":
    main()
