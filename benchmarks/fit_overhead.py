"""The training loop's overhead: `equisae.fit` against the same steps in one hand-written
`lax.scan` and against `make_step` called from a Python loop.

Every loop runs the same steps: value and gradient of `SAELoss`, an Adam update and the atom
renormalisation, on batches gathered on the device from one array in the same order. The
hand-written scan keeps, per step, what `fit`'s history holds (the loss and the loss's aux:
reconstruction, l0, explained variance, firing, ...); a second column shows it keeping the loss
only, which lets XLA drop the aux's work. A loop's
cost per step is measured as `(t(2N) - t(N)) / N`, the wall time of N more steps, so compiles
and start-up cancel; the best of `--repeats` runs is kept. Three model sizes:

- tiny: dense SAE, m = 16, p = 32, unrolled FISTA T = 5, batch 64;
- race: the recovery race's SAE, m = 50, p = 100, T = 30, batch 256;
- fno: an SAE-FNO, n = 1024, p = 16 concepts, 32 modes, T = 10, batch 64.

    python benchmarks/fit_overhead.py
"""

import argparse
import functools
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from _common import append

import equisae as eqs

# one optimiser and loss for every loop; `fit` compiles in every call, which the difference
# t(2N) - t(N) cancels
OPTIMIZER = optax.adam(1e-3)
LOSS = eqs.SAELoss()


def _dense(m: int, p: int, sparsity: int, examples: int, lam: float, steps: int):
    grid = eqs.Grid(())
    model = eqs.data.VectorModel(jr.key(0), dim=m, concepts=p, sparsity=sparsity)
    encoder = eqs.Unrolled(eqs.SoftThreshold(lam), steps)
    sae = eqs.SAE(encoder, eqs.Dense(grid, m, p, key=jr.key(2)))
    return sae, model.sample(jr.key(1), examples).signals, grid


def _spectral(n: int, p: int, modes: int, steps: int):
    grid = eqs.Grid(n)
    concepts = eqs.data.smooth(jr.key(0), p, bandwidth=24)
    data = eqs.data.FunctionalModel(concepts, spikes=2).sample(jr.key(1), 1024, grid)
    encoder = eqs.Unrolled(eqs.SoftThreshold(0.1), steps)
    sae = eqs.SAE(encoder, eqs.Spectral(grid, 1, p, modes, key=jr.key(2)))
    return sae, data.signals, grid


# model size: (sae, data, grid), batch size, steps N
PROBLEMS = {
    "tiny": (lambda: _dense(16, 32, 3, 4096, 0.1, 5), 64, 2000),
    "race": (lambda: _dense(50, 100, 5, 20_000, 0.3, 30), 256, 200),
    "fno": (lambda: _spectral(1024, 16, 32, 10), 64, 60),
}


def problem(size: str):
    """`(sae, data, grid, batch_size, steps N)` for one model size."""
    build, batch, n = PROBLEMS[size]
    sae, data, grid = build()
    return sae, jnp.asarray(data), grid, batch, n


def _orders(examples: int, batch: int, steps: int) -> np.ndarray:
    order = np.asarray(jr.permutation(jr.key(7), examples * (steps * batch // examples + 1)))
    return (order % examples)[: steps * batch].reshape(steps, batch).astype(np.int32)


def fit_loop(chunk):
    def run(sae, data, grid, batch, steps):
        eqs.fit(sae, data, optimizer=OPTIMIZER, steps=steps, batch_size=batch,
                key=jr.key(3), grid=grid, progress=False, chunk=chunk)  # fmt: skip

    return run


def scanned_loop(keep_aux: bool):
    def run(sae, data, grid, batch, steps):
        """The same steps, written by hand as one jitted `lax.scan`."""
        opt_state = OPTIMIZER.init(eqx.filter(sae, eqx.is_inexact_array))
        indices = jnp.asarray(_orders(data.shape[0], batch, steps))
        jax.block_until_ready(_scan(LOSS, OPTIMIZER, keep_aux, sae, opt_state, data, indices, grid))

    return run


@eqx.filter_jit
def _scan(loss, optimizer, keep_aux, sae, opt_state, data, indices, grid):
    params, static = eqx.partition((sae, opt_state), eqx.is_array)

    def body(params, rows):
        sae, opt_state = eqx.combine(params, static)
        (value, aux), grads = eqx.filter_value_and_grad(loss, has_aux=True)(sae, data[rows], grid)
        updates, opt_state = optimizer.update(
            grads, opt_state, eqx.filter(sae, eqx.is_inexact_array)
        )
        sae = eqx.apply_updates(sae, updates)
        sae = eqx.tree_at(lambda m: m.dictionary, sae, sae.dictionary.normalise(grid))
        return eqx.filter((sae, opt_state), eqx.is_array), (value, aux) if keep_aux else value

    params, values = jax.lax.scan(body, params, indices)
    return eqx.combine(params, static), values


def python_loop(sae, data, grid, batch, steps):
    """`make_step` called once per step from Python, synchronising only at the end."""
    step = _python_step(LOSS, OPTIMIZER)
    opt_state = OPTIMIZER.init(eqx.filter(sae, eqx.is_inexact_array))
    for rows in _orders(data.shape[0], batch, steps):
        sae, opt_state, value, _ = step(sae, opt_state, data[jnp.asarray(rows)], grid)
    value.block_until_ready()


@functools.cache
def _python_step(loss, optimizer):
    return eqs.make_step(loss, optimizer)


def per_step(loops: dict, size: str, repeats: int) -> dict[str, float]:
    """Seconds per step of every loop: the best over `repeats` of `(t(2N) - t(N)) / N`, the
    loops taking turns in every repeat, so that a change in the machine's load hits all."""
    sae, data, grid, batch, n = problem(size)
    for loop in loops.values():
        for steps in (n, 2 * n):  # compile every program once (scan lengths depend on N)
            loop(sae, data, grid, batch, steps)
    best = dict.fromkeys(loops, float("inf"))
    for _ in range(repeats):
        for name, loop in loops.items():
            times = []
            for steps in (n, 2 * n):
                start = time.perf_counter()
                loop(sae, data, grid, batch, steps)
                times.append(time.perf_counter() - start)
            best[name] = min(best[name], (times[1] - times[0]) / n)
    return best


LOOPS = {
    "scanned by hand": scanned_loop(keep_aux=True),
    "scanned by hand, loss only": scanned_loop(keep_aux=False),
    "fit": fit_loop(None),
    "fit, chunk=1": fit_loop(1),
    "make_step in Python": python_loop,
}


def main(args) -> None:
    lines = [
        "| model | " + " | ".join(LOOPS) + " | fit / scanned |",
        "|---|" + "---:|" * (len(LOOPS) + 1),
    ]
    for size in args.sizes:
        seconds = per_step(LOOPS, size, args.repeats)
        ratio = seconds["fit"] / seconds["scanned by hand"]
        cells = " | ".join(f"{1e3 * s:.3f}" for s in seconds.values())
        lines.append(f"| {size} | {cells} | {ratio:.2f} |")
        print(lines[-1], flush=True)
    note = (
        "Milliseconds per training step, `(t(2N) - t(N)) / N`, loops in turn, best of "
        f"{args.repeats}. tiny: m=16, p=32, T=5, batch 64; race: m=50, p=100, T=30, batch 256; "
        "fno: SAE-FNO n=1024, p=16, 32 modes, T=10, batch 64."
    )
    table = note + "\n\n" + "\n".join(lines)
    print(table)
    if args.record:
        append("fit against a hand-written scanned loop", "python benchmarks/fit_overhead.py",
               table)  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", nargs="+", default=["tiny", "race", "fno"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-record", dest="record", action="store_false")
    main(parser.parse_args())
