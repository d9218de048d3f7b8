"""Training: a jitted step for your own loop (`make_step`) and a complete loop (`fit`) with
sweeps, data parallelism, checkpoints and dead-concept resampling."""

import os
import time
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Bool, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from ._dead import resample_dead
from ._grid import Grid
from ._io import CheckpointError, read_training, save_training
from ._losses import SAELoss
from ._sae import SAE

Loss = Callable[[SAE, Array, Grid], tuple[Array, dict[str, Array]]]
Step = Callable[[SAE, PyTree, Array, Grid], tuple[SAE, PyTree, Array, dict[str, Array]]]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss or parameter. `error.step` is the step that
    failed; `error.model` and `error.opt_state` are the last good ones, from before that step."""

    def __init__(self, step: int, value, model: SAE, opt_state: PyTree, members=None):
        self.step = step
        self.model = model
        self.opt_state = opt_state
        value = np.asarray(value)
        what = (
            f"the loss became {value if value.ndim == 0 else value.tolist()}"
            if not np.all(np.isfinite(value))
            else "the parameters became NaN or inf"
        )
        which = "" if members is None else f" (sweep members {members})"
        super().__init__(
            f"{what} at step {step}{which}; training stopped. error.model holds the last good "
            f"model (from before step {step}). Try a smaller learning rate or check the data's "
            "scale."
        )


class InferenceWarning(UserWarning):
    """Sparse inference did not converge within its step budget during training."""


def _normalised(model: SAE, grid: Grid) -> SAE:
    return eqx.tree_at(lambda m: m.dictionary, model, model.dictionary.normalise(grid))


def make_step(
    loss: Loss, optimizer: optax.GradientTransformation, *, normalise: bool = True
) -> Step:
    """A jitted training step `step(model, opt_state, batch, grid) -> (model, opt_state, value,
    aux)`: one optimiser update of every inexact array of the model on the gradient of
    `loss(model, batch, grid)`, then (with `normalise`) the dictionary's atoms are put back on
    the unit sphere of $L^2(\\Omega)$.

    The optimiser state starts as `optimizer.init(eqx.filter(model, eqx.is_inexact_array))`.
    """

    @eqx.filter_jit
    def step(model: SAE, opt_state: PyTree, batch: Array, grid: Grid):
        return _step(loss, optimizer, normalise, model, opt_state, batch, grid)

    return step


def _step(loss, optimizer, normalise, model, opt_state, batch, grid):
    (value, aux), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model, batch, grid)
    params = eqx.filter(model, eqx.is_inexact_array)
    updates, opt_state = optimizer.update(grads, opt_state, params)
    model = eqx.apply_updates(model, updates)
    if normalise:
        model = _normalised(model, grid)
    return model, opt_state, value, aux


def stack(models: Sequence[SAE]) -> SAE:
    """Stack models that differ only in their arrays (a penalty $\\lambda$, a $k$, a seed)
    into one model whose arrays have a leading sweep axis, for `fit(..., sweep=True)`."""
    arrays = [eqx.filter(m, eqx.is_array) for m in models]
    static = eqx.filter(models[0], eqx.is_array, inverse=True)
    for i, m in enumerate(models[1:], 1):
        if not eqx.tree_equal(static, eqx.filter(m, eqx.is_array, inverse=True)):
            raise ValueError(f"model {i} differs from model 0 in more than its arrays.")
    return eqx.combine(jax.tree.map(lambda *xs: jnp.stack(xs), *arrays), static)


def unstack(models: SAE, index: int) -> SAE:
    """Member `index` of a stack made by `stack`."""
    return jax.tree.map(lambda x: x[index] if eqx.is_array(x) else x, models)


def _check_array(data, grid: Grid | None) -> Grid:
    if not jnp.issubdtype(data.dtype, jnp.floating):
        raise TypeError(f"data must hold floating-point numbers, got dtype {data.dtype}.")
    if data.ndim < 2:
        raise ValueError(f"data must have shape (examples, channels, *spatial), got {data.shape}.")
    if data.shape[0] == 0:
        raise ValueError("data is empty: it holds no examples.")
    grid = Grid(data.shape[2:]) if grid is None else grid
    grid.check(data[0], "an example of data")
    return grid


def _check_finite(batch, where: str) -> None:
    finite = np.isfinite(np.asarray(batch)).reshape(batch.shape[0], -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{where} contains NaN or inf in {len(bad)} example(s), the first at index {bad[0]}."
        )


class _Batches:
    """Where batches come from: an array on the device (gathered on the device), an array on
    the host (a NumPy array or a memory-mapped .npy: gathered on the host, batch by batch), or
    any iterator of batches. Arrays are read epoch by epoch in an order drawn from the key."""

    def __init__(self, data, batch_size: int | None, key: PRNGKeyArray, grid: Grid | None):
        self.key = key
        self.order = None
        if hasattr(data, "shape") and hasattr(data, "dtype"):
            self.grid = _check_array(data, grid)
            self.size = data.shape[0]
            if (
                batch_size is None
                or int(batch_size) != batch_size
                or not 1 <= batch_size <= self.size
            ):
                raise ValueError(
                    f"batch_size must lie between 1 and the number of examples ({self.size}), "
                    f"got {batch_size}."
                )
            self.batch_size = int(batch_size)
            self.on_device = isinstance(data, jax.Array)
            if self.on_device:
                _check_finite(data, "data")
            elif data.size * data.dtype.itemsize <= 2**28:  # small host arrays: check them now
                _check_finite(data, "data")
            self.data = data
            self.iterator = None
        elif isinstance(data, Iterable):
            self.iterator: Iterator = iter(data)
            self.data = None
            self.grid = grid
            self.batch_size = batch_size
        else:
            raise TypeError(
                "data must be an array of shape (examples, channels, *spatial) or an iterable of "
                f"such batches, got {type(data).__name__}."
            )

    def next(self, step: int) -> Array:
        if self.iterator is not None:
            try:
                batch = next(self.iterator)
            except StopIteration:
                raise ValueError(f"the data iterator ran out at step {step}.") from None
            if not hasattr(batch, "shape"):
                raise TypeError(f"the data iterator gave a {type(batch).__name__}, not an array.")
            grid = _check_array(batch, self.grid)
            self.grid = self.grid or grid
            _check_finite(batch, f"the batch of step {step}")
            return jnp.asarray(batch)
        per_epoch = self.size // self.batch_size
        if step % per_epoch == 0 or self.order is None:
            self.key, subkey = jr.split(self.key)
            self.order = np.asarray(jr.permutation(subkey, self.size))
        position = step % per_epoch
        index = self.order[position * self.batch_size : (position + 1) * self.batch_size]
        if self.on_device:
            return self.data[jnp.asarray(index)]
        batch = np.asarray(self.data[np.sort(index)])
        _check_finite(batch, f"the batch of step {step}")
        return jnp.asarray(batch)

    def state(self) -> dict:
        if self.iterator is not None:
            return {}
        return {
            "key": np.asarray(jr.key_data(self.key)).tolist(),
            "order": None if self.order is None else self.order.tolist(),
        }

    def restore(self, state: dict) -> None:
        if self.iterator is None and state:
            self.key = jr.wrap_key_data(jnp.asarray(state["key"], jnp.uint32))
            self.order = None if state["order"] is None else np.asarray(state["order"])


def _finite(model: SAE, value: Array) -> Array:
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    return jnp.isfinite(value) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def fit(
    model: SAE,
    data: Array | np.ndarray | Iterable,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    batch_size: int | None = None,
    key: PRNGKeyArray,
    loss: Loss = SAELoss(),
    grid: Grid | None = None,
    normalise: bool = True,
    progress: bool = True,
    sweep: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    batch_axis: str = "batch",
    resample_every: int | None = None,
    checkpoint_every: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume_from: str | os.PathLike | None = None,
) -> tuple[SAE, dict[str, np.ndarray] | list[dict[str, np.ndarray]]]:
    """Train `model` for `steps` optimiser steps.

    **Arguments:**

    - `model`: the `SAE` to train; with `sweep=True` a stack of SAEs made by `stack` (arrays
      with a leading axis), trained together in one vmapped program on the same batches.
    - `data`: a floating-point array `(examples, channels, *spatial)` — a JAX array (batches are
      gathered on the device) or a NumPy array, memory-mapped `.npy` included (batches are read
      on the host, so the data need not fit in memory) — or any iterable of such batches.
    - `optimizer`: an `optax` optimiser.
    - `steps`: the number of steps; `batch_size`: examples per step (for arrays).
    - `key`: a `jax.random` key for the order of examples and for resampling; same key, same run.
    - `loss`: `loss(model, batch, grid) -> (value, aux)`; `SAELoss()` by default.
    - `grid`: the grid of the data; by default the uniform grid of shape `data.shape[2:]`.
    - `normalise`: put the atoms at unit $L^2(\\Omega)$ norm before the first step and after
      every step.
    - `progress`: show a `tqdm` progress bar.
    - `mesh`, `batch_axis`: data parallelism. Each batch is sharded along `batch_axis` of the
      `jax.sharding.Mesh` and the model and optimiser state are replicated; with several
      processes (after `jax.distributed.initialize()`) each process draws `batch_size` examples
      of its own data and the global batch, `batch_size` times the number of processes, is
      assembled from them.
    - `resample_every`: every that many steps, the concepts that did not fire since the last
      resampling are re-initialised from poorly reconstructed examples (`resample_dead`).
    - `checkpoint_every`, `checkpoint_path`: save the model, the optimiser state and the
      training state (position in the data, history) every that many steps, atomically.
    - `resume_from`: a checkpoint written by this function; training continues from its step
      exactly as if it had not stopped (for array data).

    **Returns:** the trained model and its history: a dict with one entry per step — `step`,
    `loss`, `seconds` (wall time since the start), `resampled` (concepts re-initialised at that
    step) and every scalar of the loss's `aux` (for `SAELoss`: `reconstruction`, `l1`, `l0`,
    `explained_variance`, `inference_steps`, `converged`) — and `firing`, the fraction of
    examples in which each concept fired over the whole run, shape `(p,)`. With `sweep=True`,
    one such dict per member.

    **Warns:** `InferenceWarning` the first time an encoder that solves to a tolerance
    (`FixedPoint`, `ODEFlow`) reports that it did not converge on part of a batch.

    **Raises:** `ValueError` for empty data, data with NaN or inf, a shape that does not fit the
    grid, bad `steps` / `batch_size`, or a batch that the mesh cannot split evenly;
    `NonFiniteLossError`, holding the last good model, if the loss turns NaN or infinite.
    """
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive whole number, got {steps}.")
    for name, value in (("resample_every", resample_every), ("checkpoint_every", checkpoint_every)):
        if value is not None and (int(value) != value or value < 1):
            raise ValueError(f"{name} must be a positive whole number, got {value}.")
    if checkpoint_every is not None and checkpoint_path is None:
        raise ValueError("checkpoint_every needs a checkpoint_path.")
    data_key, resample_key = jr.split(key)
    source = _Batches(data, batch_size, data_key, grid)
    batch_sharding = _batch_sharding(mesh, batch_axis, source.batch_size)

    def one_step(model, opt_state, batch, grid):
        model, opt_state, value, aux = _step(
            loss, optimizer, normalise, model, opt_state, batch, grid
        )
        return model, opt_state, value, aux, _finite(model, value)

    def init(model):
        return optimizer.init(eqx.filter(model, eqx.is_inexact_array))

    vmap = (
        (lambda f, in_axes: eqx.filter_vmap(f, in_axes=in_axes))
        if sweep
        else (lambda f, in_axes: f)
    )
    step_fn = eqx.filter_jit(vmap(one_step, (0, 0, None, None)))
    resample_fn = eqx.filter_jit(vmap(resample_dead, (0, 0, None, None, 0, None)))
    normalise_fn = eqx.filter_jit(vmap(_normalised, (0, None)))

    start_step, records, fired_total, fired_since, seen = 0, [], None, None, 0
    if resume_from is not None:
        model, opt_state, training = read_training(
            resume_from, model, eqx.filter_jit(vmap(init, (0,)))(model)
        )
        start_step, records = training["step"], training["records"]
        fired_total, fired_since = (
            np.asarray(training["fired_total"]),
            np.asarray(training["fired_since"]),
        )
        seen = training["seen"]
        source.restore(training["batches"])
        if start_step >= steps:
            raise CheckpointError(
                f"{resume_from} is at step {start_step}, not before steps={steps}."
            )
    else:
        if normalise and source.grid is not None:
            model = normalise_fn(model, source.grid)
        opt_state = eqx.filter_jit(vmap(init, (0,)))(model)
    if mesh is not None:
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        model, opt_state = jax.device_put((model, opt_state), replicated)

    warned = False
    start = time.perf_counter()
    with tqdm(
        total=steps, initial=start_step, disable=not progress, desc="fit", unit="step"
    ) as bar:
        for i in range(start_step, steps):
            batch = source.next(i)
            if batch_sharding is not None:
                batch = _place(batch, batch_sharding)
            new_model, new_opt_state, value, aux, finite = step_fn(
                model, opt_state, batch, source.grid
            )
            value = np.asarray(value)
            finite = np.asarray(finite)
            if not finite.all():
                members = np.flatnonzero(~finite).tolist() if sweep else None
                raise NonFiniteLossError(i, value, model, opt_state, members)
            model, opt_state = new_model, new_opt_state
            aux = jax.device_get(aux)
            if "converged" in aux and not warned and np.min(aux["converged"]) < 1:
                warned = True
                warnings.warn(
                    f"sparse inference did not converge for {1 - np.min(aux['converged']):.0%} of "
                    f"the batch at step {i}: the encoder hit its step budget. Gradients there are "
                    "approximate; raise max_steps or loosen the tolerance. history['converged'] "
                    "holds the fraction for every step.",
                    InferenceWarning,
                    stacklevel=2,
                )
            # counts of examples in which each concept fired: whole numbers, exact on resume
            fired = (
                np.rint(np.asarray(aux.pop("firing"), np.float64) * batch.shape[0]).astype(np.int64)
                if "firing" in aux
                else None
            )
            if fired is not None:
                fired_total = fired if fired_total is None else fired_total + fired
                fired_since = fired if fired_since is None else fired_since + fired
            seen += batch.shape[0]
            resampled = np.zeros(value.shape, int)
            if (
                resample_every is not None
                and (i + 1) % resample_every == 0
                and fired_since is not None
            ):
                dead = jnp.asarray(fired_since == 0)
                resampled = np.asarray(jnp.sum(dead, axis=-1))
                if resampled.any():
                    model, opt_state = resample_fn(
                        model, opt_state, batch, source.grid, dead, jr.fold_in(resample_key, i)
                    )
                fired_since = np.zeros_like(fired_since)
            records.append(
                {
                    "loss": value.tolist(),
                    "seconds": time.perf_counter() - start,
                    "resampled": resampled.tolist(),
                }
                | {
                    name: np.asarray(v).tolist()
                    for name, v in aux.items()
                    if np.ndim(v) == (1 if sweep else 0)
                }
            )
            if progress and ((i - start_step) % max(steps // 100, 1) == 0 or i == steps - 1):
                bar.set_postfix(loss=f"{float(np.mean(value)):.4g}")
            bar.update()
            if checkpoint_every is not None and (i + 1) % checkpoint_every == 0:
                training = {
                    "step": i + 1,
                    "records": records,
                    "fired_total": _tolist(fired_total),
                    "fired_since": _tolist(fired_since),
                    "seen": seen,
                    "batches": source.state(),
                }
                save_training(checkpoint_path, model, opt_state, training)
    firing = None if fired_total is None else fired_total / max(seen, 1)
    return model, _history(records, firing, sweep)


def _tolist(array):
    return None if array is None else np.asarray(array).tolist()


def _history(records: list[dict], firing, sweep: bool):
    columns = {name: np.asarray([r[name] for r in records]) for name in records[0]}
    columns = {"step": np.arange(len(records))} | columns
    if not sweep:
        return columns | ({} if firing is None else {"firing": np.asarray(firing)})
    members = columns["loss"].shape[1]
    return [
        {
            name: (column if name in ("step", "seconds") else column[:, m])
            for name, column in columns.items()
        }
        | ({} if firing is None else {"firing": np.asarray(firing)[m]})
        for m in range(members)
    ]


def _batch_sharding(mesh, batch_axis: str, batch_size: int | None):
    if mesh is None:
        return None
    if batch_axis not in mesh.shape:
        raise ValueError(f"the mesh has axes {tuple(mesh.shape)}, not {batch_axis!r}.")
    devices = mesh.shape[batch_axis] // jax.process_count()  # this process's share
    if batch_size is not None and batch_size % devices:
        raise ValueError(
            f"batch_size={batch_size} cannot be split evenly over the {devices} devices of mesh "
            f"axis {batch_axis!r} (per process)."
        )
    return jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(batch_axis))


def _place(batch: Array, sharding) -> Array:
    if jax.process_count() > 1:  # each process holds its own part of the global batch
        return jax.make_array_from_process_local_data(sharding, np.asarray(batch))
    return jax.device_put(batch, sharding)


def dead_concepts(history: dict[str, np.ndarray], threshold: float = 0.0) -> Bool[np.ndarray, " p"]:
    """The concepts whose firing frequency over a `fit` run is at most `threshold`."""
    return history["firing"] <= threshold
