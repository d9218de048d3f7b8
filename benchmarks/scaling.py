"""How an SAE-FNO training step scales with the resolution n and the number of concepts p.

One `make_step` (unrolled ISTA, Adam, renormalisation) of a 1-D SAE-FNO with K = 16 modes, at
n = 64 ... 8192 for fixed p, and at p = 4 ... 64 for fixed n. The exponent is the slope of
log(time) against log(n) by least squares; the same fit of n log n over the same n is printed
next to it (about 1.2 over 64 ... 8192, not 1), so the two can be compared.

    python benchmarks/scaling.py
"""

import argparse

import equinox as eqx
import jax
import jax.random as jr
import numpy as np
import optax
from _common import append, best_of

import equisae as eqs


def step_seconds(n: int, concepts: int, modes: int, steps: int, batch: int) -> float:
    grid = eqs.Grid((n,))
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.1), steps, method="ista"),
        eqs.Spectral(grid, 1, concepts, modes, key=jr.key(0)),
    )
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(eqx.filter(sae, eqx.is_inexact_array))
    step = eqs.train.make_step(eqs.SAELoss(), optimizer)
    x = jr.normal(jr.key(1), (batch, 1, n))
    return best_of(lambda: step(sae, opt_state, x, grid)[2], 3)


def slope(x, y) -> float:
    """Least-squares slope of log y against log x."""
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


def main(args) -> None:
    print(jax.devices()[0])
    sizes = [2**k for k in range(6, 14)]
    times = []
    lines = ["| n | p | step (ms) | ms per 1000 points |", "|---:|---:|---:|---:|"]
    for n in sizes:
        times.append(step_seconds(n, args.p, args.modes, args.steps, args.batch))
        lines.append(f"| {n} | {args.p} | {1e3 * times[-1]:.2f} | {1e6 * times[-1] / n:.2f} |")
        print(lines[-1])
    sizes_arr, times_arr = np.array(sizes), np.array(times)
    large = sizes_arr >= 512
    fits = [
        f"exponent in n over 64-8192: {slope(sizes_arr, times_arr):.2f} "
        f"(n log n: {slope(sizes_arr, sizes_arr * np.log(sizes_arr)):.2f})",
        f"exponent in n over 512-8192: {slope(sizes_arr[large], times_arr[large]):.2f} "
        f"(n log n: {slope(sizes_arr[large], (sizes_arr * np.log(sizes_arr))[large]):.2f})",
    ]
    concepts = [4, 8, 16, 32, 64]
    p_times = []
    lines += ["", "| n | p | step (ms) |", "|---:|---:|---:|"]
    for p in concepts:
        p_times.append(step_seconds(args.n, p, args.modes, args.steps, args.batch))
        lines.append(f"| {args.n} | {p} | {1e3 * p_times[-1]:.2f} |")
        print(lines[-1])
    fits.append(f"exponent in p at n={args.n}: {slope(concepts, p_times):.2f}")
    note = (
        f"1-D SAE-FNO, K={args.modes} modes, unrolled ISTA T={args.steps}, batch {args.batch}.\n\n"
        + "\n".join(f"- {f}" for f in fits)
    )
    print(note)
    if args.record:
        append("Scaling: SAE-FNO step time against n and p", "python benchmarks/scaling.py",
               note + "\n\n" + "\n".join(lines))  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--p", type=int, default=16)
    parser.add_argument("--n", type=int, default=1024)
    parser.add_argument("--modes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--no-record", dest="record", action="store_false")
    main(parser.parse_args())
