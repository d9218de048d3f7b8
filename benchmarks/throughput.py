"""Throughput of an unrolled-ISTA SAE training step against the machine's own limit.

The step is `equisae.train.make_step` (value and gradient of `SAELoss`, an Adam update and the
atom renormalisation) for a dense SAE with `T` unrolled ISTA steps. Its FLOPs are counted
analytically from the matrix products, the only work that scales with the batch:

    forward  = 2mp (D*x) + T * 4mp (D z, then D* of the residual) + 2mp (the reconstruction)
    step     = 3 * batch * forward     (the backward pass costs two products per product)

Achieved FLOP/s is divided by the FLOP/s of `jnp.dot` on large float32 matrices measured in
the same run.

    python benchmarks/throughput.py
"""

import argparse

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
from _common import append, best_of

import equisae as eqs


def matmul_flops(size: int = 2048) -> float:
    """FLOP/s of `jnp.dot` on two `size x size` float32 matrices."""
    a = jr.normal(jr.key(0), (size, size))
    b = jr.normal(jr.key(1), (size, size))
    dot = jax.jit(jnp.dot)
    return 2 * size**3 / best_of(lambda: dot(a, b))


def step_flops(m: int, p: int, steps: int, batch: int) -> int:
    """The analytic FLOPs of one training step (value and gradient)."""
    forward = 2 * m * p + steps * 4 * m * p + 2 * m * p
    return 3 * batch * forward


def sae_step_seconds(m: int, p: int, steps: int, batch: int) -> float:
    """Best wall time of one `make_step` call."""
    grid = eqs.Grid(())
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.1), steps, method="ista"),
        eqs.Dense(grid, m, p, key=jr.key(0)),
    )
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(eqx.filter(sae, eqx.is_inexact_array))
    step = eqs.train.make_step(eqs.SAELoss(), optimizer)
    x = jr.normal(jr.key(1), (batch, m))
    return best_of(lambda: step(sae, opt_state, x, grid)[2])


def main(args) -> None:
    peak = matmul_flops()
    print(f"{jax.devices()[0]}: jnp.dot {peak / 1e9:.1f} GFLOP/s")
    lines = [
        "| batch | step (ms) | GFLOP/step | achieved GFLOP/s | matmul GFLOP/s | fraction |",
        "|---:|---:|---:|---:|---:|---:|",
    ]
    for batch in args.batches:
        seconds = sae_step_seconds(args.m, args.p, args.steps, batch)
        flops = step_flops(args.m, args.p, args.steps, batch)
        achieved = flops / seconds
        lines.append(
            f"| {batch} | {1e3 * seconds:.1f} | {flops / 1e9:.2f} | {achieved / 1e9:.1f} | "
            f"{peak / 1e9:.1f} | {achieved / peak:.0%} |"
        )
        print(lines[-1])
    note = f"Dense SAE, m={args.m}, p={args.p}, unrolled ISTA T={args.steps}, Adam, float32."
    table = note + "\n\n" + "\n".join(lines)
    if args.record:
        append("Throughput: SAE training step against matmul", "python benchmarks/throughput.py",
               table)  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--m", type=int, default=256)
    parser.add_argument("--p", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batches", type=int, nargs="+", default=[256, 1024])
    parser.add_argument("--no-record", dest="record", action="store_false")
    main(parser.parse_args())
