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

    xs: np.ndarray
    count: int
    size: int
    position: tuple | None


class Order:
    """The order in which array examples are read: a permutation per epoch, drawn from the
    key at the first step of each epoch."""

    def __init__(self, examples: int, batch_size: int, key: PRNGKeyArray):
        self.examples = examples
        self.batch_size = batch_size
        self.per_epoch = examples // batch_size
        self.key = key
        self.permutation = None

    def indices(self, step: int) -> np.ndarray:
        """The example indices of `step` (steps must be asked for in order)."""
        if step % self.per_epoch == 0 or self.permutation is None:
            self.key, subkey = jr.split(self.key)
            self.permutation = np.asarray(jr.permutation(subkey, self.examples))
        position = step % self.per_epoch
        return self.permutation[position * self.batch_size : (position + 1) * self.batch_size]

    def position(self) -> tuple:
        return self.key, self.permutation

    def restore(self, state: dict) -> None:
        self.key = jr.wrap_key_data(jnp.asarray(state["key"], jnp.uint32))
        self.permutation = None if state["order"] is None else np.asarray(state["order"])


class Batches:
    """The source of `fit`'s batches: an array on the device or the host, or an iterator.

    `chunk(start, count, length)` returns the `Chunk` of steps `start, ..., start + count - 1`;
    `state(chunk)` is the position in the data after that chunk, for checkpoints.
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

    def chunk(self, start: int, count: int, length: int) -> Chunk:
        if self.iterator is not None:
            batches = [self._next(step) for step in range(start, start + count)]
            stacked = np.zeros((length, *batches[0].shape), batches[0].dtype)
            stacked[:count] = batches
            return Chunk(stacked, count, batches[0].shape[0], None)
        indices = np.stack([self.order.indices(step) for step in range(start, start + count)])
        if self.on_device:
            padded = np.zeros((length, self.batch_size), np.int32)
            padded[:count] = indices
            return Chunk(padded, count, self.batch_size, self.order.position())
        stacked = np.zeros((length, *self.batch_shape), self.dtype)
        for row, (step, index) in enumerate(zip(range(start, start + count), indices)):
            stacked[row] = self.data[np.sort(index)]
            check_finite(stacked[row], f"the batch of step {step}")
        return Chunk(stacked, count, self.batch_size, self.order.position())

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
            "order": None if permutation is None else permutation.tolist(),
        }

    def restore(self, state: dict) -> None:
        if self.order is not None and state:
            self.order.restore(state)
