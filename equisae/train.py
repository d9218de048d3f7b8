"""Training: a jitted step for your own loop (`make_step`) and a complete loop (`fit`) with
sweeps, data parallelism, checkpoints and dead-concept resampling."""

import functools
import os
import time
import warnings
from collections.abc import Callable, Iterable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, Bool, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from ._batches import Batches, Chunk, Plan
from ._dead import resample_dead
from ._grid import Grid
from ._io import CheckpointError, read_training, save_training
from ._losses import SAELoss
from ._sae import SAE
from ._stopping import DictionarySettled

Loss = Callable[[SAE, Array, Grid], tuple[Array, dict[str, Array]]]
Step = Callable[[SAE, PyTree, Array, Grid], tuple[SAE, PyTree, Array, dict[str, Array]]]

MAX_CHUNK = 1000  # the most steps `fit` runs in one dispatch by default


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


def _finite(model: SAE, value: Array) -> Array:
    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
    return jnp.isfinite(value) & jnp.all(jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves]))


def _one_step(loss, optimizer, normalise, model, opt_state, batch, grid):
    model, opt_state, value, aux = _step(loss, optimizer, normalise, model, opt_state, batch, grid)
    return model, opt_state, value, aux, _finite(model, value)


def _per_member(fn: Callable, sweep: bool, in_axes) -> Callable:
    """`fn` vmapped over the members of a sweep (`in_axes`), or `fn` itself."""
    return eqx.filter_vmap(fn, in_axes=in_axes) if sweep else fn


def _init(optimizer, sweep: bool, model):
    def init(model):
        return optimizer.init(eqx.filter(model, eqx.is_inexact_array))

    return _per_member(init, sweep, (0,))(model)


def _normalise_members(sweep: bool, model, grid):
    return _per_member(_normalised, sweep, (0, None))(model, grid)


def _resample(sweep: bool, model, opt_state, batch, grid, dead, key):
    return _per_member(resample_dead, sweep, (0, 0, None, None, 0, None))(
        model, opt_state, batch, grid, dead, key
    )


def _run_chunk(
    loss, optimizer, normalise, sweep, batch_sharding, model, opt_state, gather, xs, count, grid
):
    """One chunk of steps: the steps on the batches `gather(xs[0]), ..., gather(xs[count - 1])`
    in one `lax.scan` over `xs`. Returns `(model, opt_state, outputs)`, the outputs
    `(loss, aux, finite)` of every step stacked along a leading axis (rows past `count` are
    zeros).

    With `count=None` the chunk runs every row of `xs`: the plain scan, the hot path of long
    runs. With an array `count` every count up to `len(xs)` runs one compiled program: the rows
    past it are skipped by a `lax.cond`, and so is every step after one whose loss or
    parameters are not finite (the caller replays the chunk up to that step to get the last
    good model). `fit` jits it once per call with the settings bound, so that its programs are
    freed when `fit` returns (a global cache kept every program of a test session alive).
    A `lax.while_loop` over an array count would serve every count at the speed of the plain
    scan, but its dynamic updates of the output rows fail under explicit mesh sharding.
    """
    step = _per_member(
        functools.partial(_one_step, loss, optimizer, normalise), sweep, (0, 0, None, None)
    )
    dynamic, static = eqx.partition((model, opt_state), eqx.is_array)

    def apply(dynamic, batch):
        model, opt_state = eqx.combine(dynamic, static)
        new_model, new_opt_state, value, aux, finite = step(model, opt_state, batch, grid)
        return eqx.filter((new_model, new_opt_state), eqx.is_array), (value, aux, finite)

    def batch_of(x):
        batch = gather(x)
        return batch if batch_sharding is None else _shard_in_program(batch, batch_sharding)

    def every_step(dynamic, x):
        return apply(dynamic, batch_of(x))

    def some_steps(carry, x):
        dynamic, index, alive = carry
        shapes = jax.eval_shape(every_step, dynamic, x)[1]

        def skip(dynamic, x):
            return dynamic, jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), shapes)

        active = alive & (index < count)
        dynamic, outputs = jax.lax.cond(active, every_step, skip, dynamic, x)
        alive = alive & ~(active & ~jnp.all(outputs[2]))
        return (dynamic, index + 1, alive), outputs

    if count is None:
        dynamic, outputs = jax.lax.scan(every_step, dynamic, xs)
    else:
        carry = (dynamic, jnp.zeros((), jnp.int32), jnp.ones((), bool))
        (dynamic, _, _), outputs = jax.lax.scan(some_steps, carry, xs)
    model, opt_state = eqx.combine(dynamic, static)
    return model, opt_state, outputs


def _shard_in_program(x: Array, sharding, batch_sharding=None) -> Array:
    """Put an array inside the program on `sharding`: `reshard` if the batch axis (of
    `batch_sharding`, by default `sharding` itself) is explicit (the default of
    `jax.make_mesh`), a sharding constraint if it is automatic."""
    batch_sharding = sharding if batch_sharding is None else batch_sharding
    axis_types = dict(zip(batch_sharding.mesh.axis_names, batch_sharding.mesh.axis_types))
    if axis_types[batch_sharding.spec[0]] == jax.sharding.AxisType.Explicit:
        return jax.sharding.reshard(x, sharding)
    return jax.lax.with_sharding_constraint(x, sharding)


class _Schedule:
    """How many steps each chunk runs. A chunk ends at `steps` and at every multiple of
    `resample_every`, `checkpoint_every` and the `every` of a `DictionarySettled` stop, so
    resampling, checkpoints and stops happen at exactly the steps they would without chunks.
    Chunks of the steady `size` (`chunk`, or with
    `chunk=None` about `TARGET_SECONDS` of steps, measured on the second chunk: the first pays
    the compile) run a plain scan of that length; shorter ones run the masked program of
    `length` steps. With `chunk=None`, a run too short to earn back the plain scan's compile
    (the masked program costs at most `MASKED_COST` more per step; the first chunk's time,
    mostly its compile, stands for the compile) runs all its steps in the masked program."""

    TARGET_SECONDS = 1.0  # each program call pays fresh buffers (page faults): ~20 ms at n=1024
    MASKED_COST = 0.2  # measured on the CPU: the cond 7-17% over a plain scan

    def __init__(self, chunk: int | None, length: int, steps: int, *every: int | None):
        self.size = None if chunk is None else min(chunk, length)
        self.length, self.steps = length, steps
        self.every = [e for e in every if e is not None]
        self.timings = 0
        self.first_seconds = 0.0
        self.masked_only = False

    def count(self, step: int) -> int:
        end = min([self.steps] + [(step // e + 1) * e for e in self.every])
        return int(np.clip(self.size or 1, 1, min(self.length, end - step)))

    def length_of(self, count: int) -> int:
        """The program length for a chunk of `count` steps: its own if it is a steady one."""
        return count if self.plain(count) else self.length

    def plain(self, count: int) -> bool:
        """Whether a chunk of `count` steps runs the plain scan."""
        return count == self.size and not self.masked_only

    def timed(self, seconds: float, count: int, remaining: int) -> None:
        """Record that a chunk of `count` steps took `seconds`, with `remaining` steps left."""
        self.timings += 1
        if self.timings == 1:
            self.first_seconds = seconds
        if self.size is None and self.timings == 2:
            step_seconds = seconds / count
            if self.MASKED_COST * remaining * step_seconds < self.first_seconds:
                self.size, self.masked_only = self.length, True
            else:
                self.size = int(np.clip(self.TARGET_SECONDS * count / seconds, 1, self.length))


class _History:
    """The per-step records of a run as columns (one NumPy piece per chunk), and the firing
    counts of every concept: whole numbers of examples, so that they are exact on resume."""

    def __init__(self):
        self.pieces: dict[str, list[np.ndarray]] = {}
        self.fired_total = self.fired_since = None
        self.seen = 0

    def add(self, columns: dict[str, np.ndarray], fired: np.ndarray | None, seen: int) -> None:
        for name, column in columns.items():
            self.pieces.setdefault(name, []).append(np.asarray(column))
        if fired is not None:
            self.fired_total = fired if self.fired_total is None else self.fired_total + fired
            self.fired_since = fired if self.fired_since is None else self.fired_since + fired
        self.seen += seen

    def take_dead(self) -> np.ndarray | None:
        """The concepts that did not fire since the last call, `(p,)` (or `(members, p)`), and
        a fresh count from here; recorded as resampled at the last step."""
        if self.fired_since is None:
            return None
        dead = self.fired_since == 0
        self.pieces["resampled"][-1][-1] = dead.sum(axis=-1)
        self.fired_since = np.zeros_like(self.fired_since)
        return dead

    def columns(self) -> dict[str, np.ndarray]:
        return {name: np.concatenate(pieces) for name, pieces in self.pieces.items()}

    def state(self, step: int, batches: dict) -> dict:
        """The training state for a checkpoint, as JSON."""
        return {
            "step": step,
            "columns": {name: column.tolist() for name, column in self.columns().items()},
            "fired_total": _tolist(self.fired_total),
            "fired_since": _tolist(self.fired_since),
            "seen": self.seen,
            "batches": batches,
        }

    @classmethod
    def restore(cls, training: dict) -> "_History":
        history = cls()
        history.pieces = {name: [np.asarray(c)] for name, c in training["columns"].items()}
        for name in ("fired_total", "fired_since"):
            value = training[name]
            setattr(history, name, None if value is None else np.asarray(value))
        history.seen = training["seen"]
        return history

    def result(self, sweep: bool):
        """`fit`'s history: a dict of columns, or one per sweep member."""
        columns = self.columns()
        columns = {"step": np.arange(len(columns["loss"]))} | columns
        firing = None if self.fired_total is None else self.fired_total / max(self.seen, 1)
        if not sweep:
            return columns | ({} if firing is None else {"firing": firing})
        return [
            {
                name: (column if name in ("step", "seconds") else column[:, m])
                for name, column in columns.items()
            }
            | ({} if firing is None else {"firing": firing[m]})
            for m in range(columns["loss"].shape[1])
        ]


def _tolist(array):
    return None if array is None else np.asarray(array).tolist()


def _check_settings(steps, chunk, resample_every, checkpoint_every, checkpoint_path) -> None:
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive whole number, got {steps}.")
    for name, value in (
        ("chunk", chunk),
        ("resample_every", resample_every),
        ("checkpoint_every", checkpoint_every),
    ):
        if value is not None and (int(value) != value or value < 1):
            raise ValueError(f"{name} must be a positive whole number, got {value}.")
    if checkpoint_every is not None and checkpoint_path is None:
        raise ValueError("checkpoint_every needs a checkpoint_path.")


def _records(outputs, count: int, size: int, start: float, end: float, sweep: bool):
    """The history columns of the first `count` steps of a chunk's outputs (`size` examples a
    step; `start`, `end`: the chunk's wall times), and the firing counts of its steps."""
    values, aux, _ = jax.tree.map(lambda x: np.asarray(x)[:count], outputs)
    firing = aux.pop("firing", None)
    # counts of examples in which each concept fired: whole numbers, exact on resume
    fired = (
        None
        if firing is None
        else np.rint(np.asarray(firing, np.float64) * size).astype(np.int64).sum(axis=0)
    )
    columns = {
        "loss": values,
        "seconds": start + (end - start) * np.arange(1, count + 1) / count,
        "resampled": np.zeros(values.shape, np.int64),
    } | {name: v for name, v in aux.items() if v.ndim == (2 if sweep else 1)}
    return columns, fired


class _Prepared:
    """The chunk of a plan, read now; an error in the data (a NaN, an iterator that ran out)
    is raised when the chunk is asked for, after the chunks before it have been trained and
    checkpointed."""

    def __init__(self, source: Batches, plan: Plan):
        self.chunk, self.error = None, None
        try:
            self.chunk = source.chunk(plan)
        except (ValueError, TypeError) as error:
            self.error = error

    def result(self) -> Chunk:
        if self.error is not None:
            raise self.error
        return self.chunk


def _first_not_finite(outputs, count: int) -> int | None:
    """The first of a chunk's steps whose loss or parameters are not finite, if any."""
    finite = np.asarray(outputs[2][:count]).reshape(count, -1)
    return None if finite.all() else int(np.argmax(~finite.all(axis=1)))


def _chunk_placement(mesh, batch_axis: str, on_device: bool) -> Callable:
    """How a chunk's `xs` go to the devices: as they are without a mesh; with one, indices
    replicated, and stacked batches sharded along their batch axis (axis 1)."""
    if mesh is None:
        return jnp.asarray
    spec = (
        jax.sharding.PartitionSpec() if on_device else jax.sharding.PartitionSpec(None, batch_axis)
    )
    return functools.partial(_place, sharding=jax.sharding.NamedSharding(mesh, spec))


def _warn_unconverged(columns: dict, first_step: int) -> bool:
    """Warn (once per run) if an encoder that solves to a tolerance hit its step budget."""
    if "converged" not in columns:
        return False
    converged = np.asarray(columns["converged"]).reshape(len(columns["converged"]), -1).min(1)
    if converged.min() >= 1:
        return False
    row = int(np.argmax(converged < 1))
    warnings.warn(
        f"sparse inference did not converge for {1 - converged[row]:.0%} of the batch at step "
        f"{first_step + row}: the encoder hit its step budget. Gradients there are approximate; "
        "raise max_steps or loosen the tolerance. history['converged'] holds the fraction for "
        "every step.",
        InferenceWarning,
        stacklevel=3,
    )
    return True


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
    chunk: int | None = None,
    sweep: bool = False,
    mesh: jax.sharding.Mesh | None = None,
    batch_axis: str = "batch",
    resample_every: int | None = None,
    checkpoint_every: int | None = None,
    checkpoint_path: str | os.PathLike | None = None,
    resume_from: str | os.PathLike | None = None,
    stop: DictionarySettled | None = None,
) -> tuple[SAE, dict[str, np.ndarray] | list[dict[str, np.ndarray]]]:
    """Train `model` for `steps` optimiser steps.

    The steps run in chunks: one compiled loop per chunk, with the batches gathered on
    the device for device arrays (and, for host data, stacked on the host while the chunk
    before runs), so a small model trains at the speed of its step and not of Python.
    How the steps are cut into chunks changes nothing but the speed: the same key gives the same
    model and history for every `chunk`.

    **Arguments:**

    - `model`: the `SAE` to train; with `sweep=True` a stack of SAEs made by `stack` (arrays
      with a leading axis), trained together in one vmapped program on the same batches.
    - `data`: a floating-point array `(examples, channels, *spatial)` — a JAX array (batches are
      gathered on the device) or a NumPy array, memory-mapped `.npy` included (batches are read
      on the host, so the data need not fit in memory) — or any iterable of such batches, all
      of one shape.
    - `optimizer`: an `optax` optimiser.
    - `steps`: the number of steps; `batch_size`: examples per step (for arrays).
    - `key`: a `jax.random` key for the order of examples and for resampling; same key, same run.
    - `loss`: `loss(model, batch, grid) -> (value, aux)`; `SAELoss()` by default.
    - `grid`: the grid of the data; by default the uniform grid of shape `data.shape[2:]`.
    - `normalise`: put the atoms at unit $L^2(\\Omega)$ norm before the first step and after
      every step.
    - `progress`: show a `tqdm` progress bar (it moves once per chunk).
    - `chunk`: the number of steps per dispatch. By default (`None`) each chunk runs about
      1 s of steps, at most 1000, timed on the second chunk (the first pays the compile),
      and a run too short to repay the compile of that steady program runs on in the first
      chunk's; `chunk=1` dispatches every step from Python. Chunks of host data hold at most 16 MiB
      of batches.
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
    - `stop`: `DictionarySettled(every, rtol)` ends training before `steps` once the atoms
      move by at most `rtol` (relative) in `every` steps; the history then ends at that step.

    **Returns:** the trained model and its history: a dict with one entry per step — `step`,
    `loss`, `seconds` (wall time since the start at the end of the step, interpolated within a
    chunk), `resampled` (concepts re-initialised at that step) and every scalar of the loss's
    `aux` (for `SAELoss`: `reconstruction`, `l1`, `l0`, `explained_variance`,
    `inference_steps`, `converged`) — and `firing`, the fraction of examples in which each
    concept fired over the whole run, shape `(p,)`. With `sweep=True`, one such dict per member.

    **Warns:** `InferenceWarning` the first time an encoder that solves to a tolerance
    (`FixedPoint`, `ODEFlow`) reports that it did not converge on part of a batch.

    **Raises:** `ValueError` for empty data, data with NaN or inf, a shape that does not fit the
    grid, bad `steps` / `batch_size` / `chunk`, or a batch that the mesh cannot split evenly;
    `NonFiniteLossError`, holding the last good model, if the loss turns NaN or infinite (at
    the exact step, whatever the chunk).
    """
    _check_settings(steps, chunk, resample_every, checkpoint_every, checkpoint_path)
    if stop is not None and not isinstance(stop, DictionarySettled):
        raise ValueError(f"stop must be a DictionarySettled, got {type(stop).__name__}.")
    data_key, resample_key = jr.split(key)
    source = Batches(data, batch_size, data_key, grid)
    batch_sharding = _batch_sharding(mesh, batch_axis, source.batch_size)

    # jitted per call: the compiled programs go with this call, not into a global cache
    run_chunk = eqx.filter_jit(
        functools.partial(_run_chunk, loss, optimizer, normalise, sweep, batch_sharding)
    )
    init_fn = eqx.filter_jit(functools.partial(_init, optimizer, sweep))
    resample_fn = eqx.filter_jit(functools.partial(_resample, sweep))
    atoms_fn = eqx.filter_jit(functools.partial(_atoms, sweep))
    settled_atoms = None  # the atoms at the last check of `stop`

    if resume_from is not None:
        model, opt_state, training = read_training(resume_from, model, init_fn(model))
        start_step, history = training["step"], _History.restore(training)
        source.restore(training["batches"])
        if start_step >= steps:
            raise CheckpointError(
                f"{resume_from} is at step {start_step}, not before steps={steps}."
            )
    else:
        start_step, history = 0, _History()
        if normalise and source.grid is not None:
            model = eqx.filter_jit(_normalise_members)(sweep, model, source.grid)
        opt_state = init_fn(model)
    gather = source.gather
    if mesh is not None:
        replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())
        model, opt_state = jax.device_put((model, opt_state), replicated)
        if source.on_device:
            gather = jax.device_put(gather, replicated)

    length = source.longest_chunk(min(chunk or MAX_CHUNK, steps - start_step))
    every = None if stop is None else stop.every
    schedule = _Schedule(chunk, length, steps, resample_every, checkpoint_every, every)
    place = _chunk_placement(mesh, batch_axis, source.on_device)
    global_batch = jax.process_count() if mesh is not None else 1  # examples per local one
    warned = False
    start = last = time.perf_counter()
    with tqdm(
        total=steps, initial=start_step, disable=not progress, desc="fit", unit="step"
    ) as bar:
        step = start_step
        first = schedule.count(step)
        upcoming = _Prepared(source, source.plan(step, first, schedule.length_of(first)))
        while step < steps:
            current = upcoming.result()
            end = step + current.count
            # the next chunk's order is drawn before this chunk is queued, and its batches are
            # read on the host while this chunk runs
            plan = None
            if end < steps:
                following = schedule.count(end)
                plan = source.plan(end, following, schedule.length_of(following))
            xs = place(current.xs)
            # a full chunk is a plain scan; a shorter one skips the rows past its count
            plain = schedule.plain(current.count) and current.count == len(current.xs)
            count = None if plain else jnp.asarray(current.count)
            new_model, new_opt_state, outputs = run_chunk(
                model, opt_state, gather, xs, count, source.grid
            )
            if plan is not None:
                upcoming = _Prepared(source, plan)
            outputs = jax.device_get(outputs)
            now = time.perf_counter()
            schedule.timed(now - last, current.count, steps - end)
            bad = _first_not_finite(outputs, current.count)
            if bad is not None:  # replay the chunk up to that step: the last good model
                good_model, good_opt_state, _ = run_chunk(
                    model, opt_state, gather, xs, jnp.asarray(bad), source.grid
                )
                finite = np.asarray(outputs[2][bad]).reshape(-1)
                members = np.flatnonzero(~finite).tolist() if sweep else None
                raise NonFiniteLossError(
                    step + bad, outputs[0][bad], good_model, good_opt_state, members
                )
            model, opt_state = new_model, new_opt_state
            size = current.size * global_batch
            columns, fired = _records(outputs, current.count, size, last - start, now - start,
                                      sweep)  # fmt: skip
            warned = warned or _warn_unconverged(columns, step)
            history.add(columns, fired, size * current.count)
            if resample_every is not None and end % resample_every == 0:
                dead = history.take_dead()
                if dead is not None and dead.any():
                    batch = source.last_batch(current)
                    if batch_sharding is not None:
                        batch = _place(batch, batch_sharding)
                    model, opt_state = resample_fn(
                        model, opt_state, batch, source.grid, jnp.asarray(dead),
                        jr.fold_in(resample_key, end - 1),
                    )  # fmt: skip
            bar.set_postfix(loss=f"{float(np.mean(columns['loss'][-1])):.4g}")
            bar.update(current.count)
            if checkpoint_every is not None and end % checkpoint_every == 0:
                training = history.state(end, Batches.state(current))
                save_training(checkpoint_path, model, opt_state, training)
            step, last = end, now
            if stop is not None and end % stop.every == 0 and end < steps:
                atoms = np.asarray(atoms_fn(model, source.grid))
                if settled_atoms is not None and stop.settled(settled_atoms, atoms, int(sweep)):
                    break
                settled_atoms = atoms
    return model, history.result(sweep)


def _atoms(sweep: bool, model: SAE, grid: Grid) -> Array:
    if sweep:
        return eqx.filter_vmap(lambda m: m.dictionary.atoms(grid))(model)
    return model.dictionary.atoms(grid)


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
