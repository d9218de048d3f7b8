"""Where `fit`'s batches come from, a chunk of steps at a time.

A chunk of `count` steps is handed to the training program as `xs`, scanned along its first
axis of length `length` (the program's static chunk length; rows past `count` are padding),
and a `gather` module that turns one row of `xs` into a batch on the device:

- an array on the device: `xs` holds the example indices of each step, `(length, batch)`, and
  the batches are gathered on the device inside the program;
- an array on the host (a NumPy array or a memory-mapped `.npy`) or an iterator of batches:
  `xs` holds the batches themselves, `(length, batch, channels, *spatial)`, gathered on the host
  and sent to the device in one transfer per chunk.

Arrays are read epoch by epoch in an order drawn from the key, so the batches of a step do not
depend on how the steps are cut into chunks.
"""

import functools
from collections.abc import Iterable, Iterator
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Int, PRNGKeyArray

from ._grid import Grid

# Host chunks (batches stacked on the host) are kept below this size, whatever the chunk length.
HOST_CHUNK_BYTES = 2**24


def check_array(data, grid: Grid | None) -> Grid:
    """The grid of array `data` (examples, channels, *spatial), after checking its dtype and
    shape."""
    if not jnp.issubdtype(data.dtype, jnp.floating):
        raise TypeError(f"data must hold floating-point numbers, got dtype {data.dtype}.")
    if data.ndim < 2:
        raise ValueError(f"data must have shape (examples, channels, *spatial), got {data.shape}.")
    if data.shape[0] == 0:
        raise ValueError("data is empty: it holds no examples.")
    grid = Grid(data.shape[2:]) if grid is None else grid
    grid.check(data[0], "an example of data")
    return grid


def check_finite(batch, where: str) -> None:
    """Refuse NaN or inf in any example of `batch`, naming the first."""
    finite = np.isfinite(np.asarray(batch)).reshape(batch.shape[0], -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"{where} contains NaN or inf in {len(bad)} example(s), the first at index {bad[0]}."
        )


class Take(eqx.Module):
    """Gathers the batch of one step on the device: `data[indices]`."""

    data: Array

    def __call__(self, indices: Int[Array, " batch"]) -> Array:
        return self.data[indices]


class Given(eqx.Module):
    """The batch of one step was gathered on the host: `xs` rows are batches."""

    def __call__(self, batch: Array) -> Array:
        return batch


class Chunk(NamedTuple):
    """The inputs of `count` steps: `xs` (padded to the program's chunk length), the examples
    per step `size`, and `position`, where the source stands after the chunk (for checkpoints,
    through `Batches.state`)."""

    xs: np.ndarray | Array
    count: int
    size: int
    position: tuple | None


class Plan(NamedTuple):
    """Steps `start, ..., start + count - 1` of a chunk of the program's length `length`, with
    their example indices `(length, batch)` on the device (for arrays) and where the order
    stands after them."""

    start: int
    count: int
    length: int
    indices: Array | None = None
    position: tuple | None = None


class Order:
    """The order in which array examples are read: a permutation per epoch, drawn from the
    key at the first step of each epoch. Drawn on the device by `plan`, a chunk at a time,
    so that the host never waits for it."""

    def __init__(self, examples: int, batch_size: int, key: PRNGKeyArray):
        self.batch_size = batch_size
        self.per_epoch = examples // batch_size
        self.key = key
        self.permutation = jnp.arange(examples)  # replaced at step 0, before it is read

    def plan(self, start: int, count: int, length: int) -> Plan:
        indices, self.key, self.permutation = _plan(
            self.key, self.permutation, start, count, length=length, per_epoch=self.per_epoch,
            batch_size=self.batch_size,
        )  # fmt: skip
        return Plan(start, count, length, indices, (self.key, self.permutation))

    def restore(self, state: dict) -> None:
        self.key = jr.wrap_key_data(jnp.asarray(state["key"], jnp.uint32))
        if state["order"] is not None:
            self.permutation = jnp.asarray(state["order"], self.permutation.dtype)


@functools.partial(jax.jit, static_argnames=("length", "per_epoch", "batch_size"))
def _plan(key, permutation, start, count, *, length: int, per_epoch: int, batch_size: int):
    """The example indices of `length` steps from `start` (those past `count` leave the order
    as it is), and the key and permutation after them."""

    def draw(key, permutation):
        key, subkey = jr.split(key)
        return key, jr.permutation(subkey, permutation.shape[0]).astype(permutation.dtype)

    def keep(key, permutation):
        return key, permutation

    def body(carry, i):
        step = start + i
        new_epoch = (i < count) & (step % per_epoch == 0)
        key, permutation = jax.lax.cond(new_epoch, draw, keep, *carry)
        rows = jax.lax.dynamic_slice_in_dim(
            permutation, (step % per_epoch) * batch_size, batch_size
        )
        return (key, permutation), rows

    (key, permutation), indices = jax.lax.scan(body, (key, permutation), jnp.arange(length))
    return indices, key, permutation


class Batches:
    """The source of `fit`'s batches: an array on the device or the host, or an iterator.

    `plan(start, count, length)` plans steps `start, ..., start + count - 1` and
    `chunk(plan)` returns their `Chunk`; `state(chunk)` is the position in the data after that
    chunk, for checkpoints.
    """

    def __init__(self, data, batch_size: int | None, key: PRNGKeyArray, grid: Grid | None):
        self.iterator: Iterator | None = None
        self.order: Order | None = None
        self.batch_shape = None
        if hasattr(data, "shape") and hasattr(data, "dtype"):
            self.grid = check_array(data, grid)
            size = data.shape[0]
            if batch_size is None or int(batch_size) != batch_size or not 1 <= batch_size <= size:
                raise ValueError(
                    f"batch_size must lie between 1 and the number of examples ({size}), "
                    f"got {batch_size}."
                )
            self.batch_size = int(batch_size)
            # device arrays are gathered in the program; with several processes each holds its
            # own part of the global batch, assembled on the host
            self.on_device = isinstance(data, jax.Array) and jax.process_count() == 1
            if isinstance(data, jax.Array) or data.size * data.dtype.itemsize <= 2**28:
                check_finite(data, "data")  # small host arrays are checked now, large per batch
            self.data = data
            self.order = Order(size, self.batch_size, key)
            self.batch_shape = (self.batch_size, *data.shape[1:])
            self.dtype = data.dtype
        elif isinstance(data, Iterable):
            self.iterator = iter(data)
            self.grid = grid
            self.batch_size = batch_size
            self.on_device = False
        else:
            raise TypeError(
                "data must be an array of shape (examples, channels, *spatial) or an iterable of "
                f"such batches, got {type(data).__name__}."
            )

    @property
    def gather(self) -> Take | Given:
        return Take(self.data) if self.on_device else Given()

    def longest_chunk(self, length: int) -> int:
        """The longest chunk this source can stack: host chunks stay under `HOST_CHUNK_BYTES`."""
        if self.on_device or self.batch_shape is None:
            return length
        batch_bytes = int(np.prod(self.batch_shape)) * np.dtype(self.dtype).itemsize
        return int(np.clip(HOST_CHUNK_BYTES // max(batch_bytes, 1), 1, length))

    def plan(self, start: int, count: int, length: int) -> Plan:
        """The plan of steps `start, ..., start + count - 1`: for arrays, their example indices,
        drawn on the device without waiting."""
        if self.order is None:
            return Plan(start, count, length)
        return self.order.plan(start, count, length)

    def chunk(self, plan: Plan) -> Chunk:
        """The inputs of a planned chunk: for device arrays its indices; otherwise its batches,
        read from the host array or the iterator and stacked (this waits for the plan)."""
        start, count, length = plan.start, plan.count, plan.length
        if self.iterator is not None:
            batches = [self._next(step) for step in range(start, start + count)]
            stacked = np.zeros((length, *batches[0].shape), batches[0].dtype)
            stacked[:count] = batches
            return Chunk(stacked, count, batches[0].shape[0], None)
        if self.on_device:
            return Chunk(plan.indices, count, self.batch_size, plan.position)
        indices = np.asarray(plan.indices)
        stacked = np.zeros((length, *self.batch_shape), self.dtype)
        for row, step in enumerate(range(start, start + count)):
            stacked[row] = self.data[np.sort(indices[row])]
            check_finite(stacked[row], f"the batch of step {step}")
        return Chunk(stacked, count, self.batch_size, plan.position)

    def _next(self, step: int) -> np.ndarray:
        try:
            batch = next(self.iterator)
        except StopIteration:
            raise ValueError(f"the data iterator ran out at step {step}.") from None
        if not hasattr(batch, "shape"):
            raise TypeError(f"the data iterator gave a {type(batch).__name__}, not an array.")
        grid = check_array(batch, self.grid)
        self.grid = self.grid or grid
        if self.batch_shape is None:
            self.batch_shape, self.dtype = tuple(batch.shape), batch.dtype
        elif tuple(batch.shape) != self.batch_shape:
            raise ValueError(
                f"the data iterator gave a batch of shape {tuple(batch.shape)} at step {step}, "
                f"after batches of shape {self.batch_shape}: fit stacks the batches of a chunk, "
                "so they must all have one shape."
            )
        check_finite(batch, f"the batch of step {step}")
        return np.asarray(batch)

    def last_batch(self, chunk: Chunk) -> Array:
        """The batch of the chunk's last step, on the device."""
        row = chunk.xs[chunk.count - 1]
        return self.data[jnp.asarray(row)] if self.on_device else jnp.asarray(row)

    @staticmethod
    def state(chunk: Chunk) -> dict:
        """Where the source stands after `chunk`, as JSON for a checkpoint."""
        if chunk.position is None:
            return {}
        key, permutation = chunk.position
        return {
            "key": np.asarray(jr.key_data(key)).tolist(),
            "order": np.asarray(permutation).tolist(),
        }

    def restore(self, state: dict) -> None:
        if self.order is not None and state:
            self.order.restore(state)
