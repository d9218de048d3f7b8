"""Shared helpers of the experiments: command line, training of many members in one jitted
program, evaluation and output files.

A *member* is one model of a sweep: a seed, a hyperparameter value, or both. Members are
stacked with `eqs.stack` (they differ only in their arrays) and trained together: every
training step is one `eqx.filter_vmap` of `eqs.make_step` over the members, and `every` steps
are fused in one `jax.lax.scan`, so a whole sweep is one compiled program. Unlike
`eqs.fit(..., sweep=True)`, each member may see its own data set (its seed's ground truth),
and the members can be evaluated every `every` steps (recovery against training step).
"""

import argparse
import json
import pathlib
import time
from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax

import equisae as eqs

# outputs/ by default; the docs' figures are regenerated on purpose, with
# `--out docs/figures/experiments`
OUT = pathlib.Path(__file__).parents[2] / "outputs" / "experiments"


def parser(doc: str, seeds: int = 3) -> argparse.ArgumentParser:
    """The command line every experiment shares: `--quick`, `--out DIR`, `--seeds N`."""
    p = argparse.ArgumentParser(
        description=doc, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    p.add_argument("--quick", action="store_true", help="a smaller version (CI)")
    p.add_argument(
        "--out", type=pathlib.Path, default=OUT, help="output folder (outputs/experiments)"
    )
    p.add_argument(
        "--seeds", type=int, default=None, help=f"number of seeds ({seeds}; 2 with --quick)"
    )
    p.add_argument(
        "--replot", action="store_true", help="only redraw the figure from the JSON in --out"
    )
    return p


def seeds_of(args, default: int = 3) -> int:
    return args.seeds if args.seeds is not None else (2 if args.quick else default)


def train(
    models: eqs.SAE,
    data: jax.Array,
    member_data: Sequence[int],
    grid: eqs.Grid,
    *,
    loss,
    steps: int,
    batch_size: int,
    learning_rate: float,
    key,
    every: int | None = None,
    evaluate: Callable[[int, eqs.SAE], None] | None = None,
    refresh: Callable[[int, eqs.SAE], eqs.SAE] | None = None,
) -> tuple[eqs.SAE, dict[str, np.ndarray]]:
    """Train a stack of `M` members for `steps` steps of Adam (cosine-decayed learning rate).

    `data` has shape `(S, N, channels, *spatial)`: `S` data sets; member `i` trains on data
    set `member_data[i]`. Every step draws one set of `batch_size` indices (from `key`) for all
    members. `evaluate(step, models)` is called at step 0 and after every `every` steps;
    `refresh(step, models)`, before it, may return changed models (the same structure: e.g. a
    fixed lift rebuilt from the current dictionary), and the optimiser's state carries on.
    Returns the trained stack and the per-step losses and aux of `SAELoss`, shape `(steps, M)`.
    """
    every = steps if every is None else every
    if steps % every:
        raise ValueError(f"steps={steps} must be a multiple of every={every}.")
    optimizer, step = _step(loss, learning_rate, steps)
    member_data = jnp.asarray(member_data)
    params = eqx.filter(models, eqx.is_inexact_array)
    opt_state = eqx.filter_vmap(optimizer.init)(params)
    models = eqx.filter_vmap(
        lambda m: eqx.tree_at(lambda s: s.dictionary, m, m.dictionary.normalise(grid))
    )(models)
    indices = jr.randint(key, (steps // every, every, batch_size), 0, data.shape[1])
    records = []
    if evaluate is not None:
        evaluate(0, models)
    for chunk in range(steps // every):
        models, opt_state, record = _chunk(
            models, opt_state, data, member_data, indices[chunk], grid, step
        )
        records.append(jax.device_get(record))
        if refresh is not None:
            models = refresh((chunk + 1) * every, models)
        if evaluate is not None:
            evaluate((chunk + 1) * every, models)
    history = {name: np.concatenate([r[name] for r in records]) for name in records[0]}
    return models, history


_STEPS = {}


def _step(loss, learning_rate: float, steps: int):
    """One optimiser and training step per setting, so that repeated runs reuse the compiled
    program."""
    key = (loss, learning_rate, steps)
    if key not in _STEPS:
        optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
        _STEPS[key] = optimizer, eqs.make_step(loss, optimizer)
    return _STEPS[key]


@eqx.filter_jit
def _chunk(models, opt_state, data, member_data, indices, grid, step):
    arrays, static = eqx.partition(models, eqx.is_array)
    vstep = eqx.filter_vmap(step, in_axes=(0, 0, 0, None))

    def body(carry, index):
        arrays, opt_state = carry
        batch = data[member_data[:, None], index[None, :]]
        models, opt_state, value, aux = vstep(eqx.combine(arrays, static), opt_state, batch, grid)
        record = {"loss": value} | {k: v for k, v in aux.items() if k != "firing"}
        return (eqx.partition(models, eqx.is_array)[0], opt_state), record

    (arrays, opt_state), record = jax.lax.scan(body, (arrays, opt_state), indices)
    return eqx.combine(arrays, static), opt_state, record


@eqx.filter_jit
def infer(models: eqs.SAE, signals: jax.Array, grid: eqs.Grid):
    """Reconstructions, codes and inference diagnostics of a batch of signals for every member:
    `signals` has shape `(M, B, channels, *spatial)`."""

    def one(model, x):
        return jax.vmap(model.infer, in_axes=(0, None))(x, grid)

    return eqx.filter_vmap(one)(models, signals)


def member(models: eqs.SAE, i: int) -> eqs.SAE:
    return eqs.unstack(models, i)


def recovery(true_atoms, atoms, grid: eqs.Grid, *, upsample: int = 4) -> eqs.metrics.Recovery:
    """Sign- (and for functions shift-) invariant recovery of the true concepts."""
    if grid.ndim == 0:
        return eqs.metrics.recovery(true_atoms, atoms)
    return eqs.metrics.recovery(true_atoms, atoms, shift_invariant=True, upsample=upsample)


def gram_condition(atoms) -> float:
    """The condition number of the Gram matrix $A A^T$ of the atoms (flattened), on its range:
    $\\lambda_{max} / \\lambda_r$ over the $r = \\min(p, \\dim)$ largest eigenvalues (the Gram
    matrix of more atoms than dimensions is singular); $\\lambda_r$ is floored at
    $10^{-16} \\lambda_{max}$, so a singular Gram on the range reads $10^{16}$, not infinity."""
    flat = np.asarray(atoms, np.float64).reshape(len(atoms), -1)
    flat = flat / np.linalg.norm(flat, axis=1, keepdims=True)
    eig = np.linalg.eigvalsh(flat @ flat.T)[::-1]
    r = min(flat.shape)
    return float(eig[0] / max(eig[r - 1], 1e-16 * eig[0]))


def summary(values) -> dict[str, float]:
    """Mean, min and max over seeds."""
    values = np.asarray(values, np.float64)
    return {"mean": float(values.mean()), "min": float(values.min()), "max": float(values.max())}


def table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """A plain-text table: `columns` are `(key, header, format)`."""
    widths = [max(len(h), 8) for _, h, _ in columns]
    head = "  ".join(f"{h:>{w}}" for (_, h, _), w in zip(columns, widths))
    lines = [head, "-" * len(head)]
    for row in rows:
        cells = []
        for (k, _, fmt), w in zip(columns, widths):
            v = row[k]
            cells.append(f"{v:>{w}}" if isinstance(v, str) else f"{v:>{w}{fmt}}")
        lines.append("  ".join(cells))
    return "\n".join(lines)


def markdown_table(rows: list[dict], columns: list[tuple[str, str, str]]) -> str:
    """The same table in Markdown."""
    lines = ["| " + " | ".join(h for _, h, _ in columns) + " |"]
    lines.append("|" + "|".join("---" for _ in columns) + "|")
    for row in rows:
        cells = [row[k] if isinstance(row[k], str) else f"{row[k]:{fmt}}" for k, _, fmt in columns]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plain(value):
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, (np.ndarray, jax.Array)):
        return _plain(np.asarray(value).tolist())
    if isinstance(value, (np.floating, np.integer, np.bool_)):
        return value.item()
    return value


def write(out: pathlib.Path, name: str, numbers: dict, fig, seconds: float) -> dict:
    """Write `<name>.json` (with the wall time) and `<name>.png` to `out`."""
    out.mkdir(parents=True, exist_ok=True)
    numbers = _plain(numbers | {"wall_seconds": seconds})
    (out / f"{name}.json").write_text(json.dumps(numbers, indent=2))
    fig.savefig(out / f"{name}.png", dpi=110)
    print(f"wrote {out / (name + '.png')} and {out / (name + '.json')} ({seconds:.0f} s)")
    return numbers


def replot(out: pathlib.Path, name: str, figure: Callable[[dict], object]) -> dict:
    """Redraw `<name>.png` from `<name>.json` in `out` with `figure(numbers)`."""
    numbers = json.loads((out / f"{name}.json").read_text())
    figure(numbers).savefig(out / f"{name}.png", dpi=110)
    print(f"redrew {out / (name + '.png')}")
    return numbers


def first_reaching(steps: Sequence[int], values: Sequence[float], target: float) -> int | None:
    """The first step at which `values` reaches `target` (`None` if it never does)."""
    for s, v in zip(steps, values):
        if v >= target:
            return int(s)
    return None


class Timer:
    def __init__(self):
        self.start = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.start
