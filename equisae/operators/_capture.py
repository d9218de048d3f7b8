import contextlib
import inspect
from collections.abc import Callable, Iterator

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

ArrayLike = Array | np.ndarray

# The captures being traced right now, innermost last: `Record` appends to the last one.
_ACTIVE: list[list] = []


def describe_path(where: Callable) -> str:
    """The source text of a path such as `lambda m: m.blocks[2]` (best effort)."""
    try:
        source = inspect.getsource(where).strip()
    except (OSError, TypeError):
        return repr(where)
    start = source.find("lambda")
    if start < 0:
        return getattr(where, "__name__", repr(where))
    text, depth = source[start:], 0
    for i, char in enumerate(text):  # the lambda ends at the first unbalanced ) or , at depth 0
        if char in "([{":
            depth += 1
        elif char in ")]}":
            if depth == 0:
                return text[:i].strip()
            depth -= 1
        elif char == "," and depth == 0:
            return text[:i].strip()
    return text


def _fields(model) -> str:
    if not isinstance(model, eqx.Module):
        return type(model).__name__
    parts = []
    for name in getattr(model, "__dataclass_fields__", {}):
        value = getattr(model, name, None)
        if isinstance(value, (list, tuple)):
            parts.append(f"{name} ({type(value).__name__} of {len(value)})")
        elif isinstance(value, eqx.Module) or callable(value):
            parts.append(name)
    return ", ".join(parts)


def submodule(model: PyTree, where: Callable[[PyTree], Callable]) -> Callable:
    """The submodule `where(model)` of an Equinox model, after checking that the path exists
    and leads to something callable.

    **Arguments:** `model`, any Equinox module; `where`, a function of the model returning one
    of its submodules, as for `eqx.tree_at` (for example `lambda m: m.blocks[2]`).

    **Returns:** the submodule. Raises `ValueError` naming the path when it does not exist in
    the model or does not lead to a callable.
    """
    if not callable(where):
        raise ValueError(
            f"where must be a function of the model returning a submodule (for example "
            f"`lambda m: m.blocks[2]`), got {where!r}."
        )
    try:
        module = where(model)
    except (AttributeError, IndexError, KeyError, TypeError) as error:
        raise ValueError(
            f"the submodule path `{describe_path(where)}` does not exist in the "
            f"{type(model).__name__} model ({type(error).__name__}: {error}); its submodules "
            f"are: {_fields(model)}."
        ) from None
    if not callable(module) or isinstance(module, (jax.Array, np.ndarray)):
        raise ValueError(
            f"the submodule path `{describe_path(where)}` leads to a {type(module).__name__}, "
            "not a callable submodule of the model."
        )
    return module


class Spliced(eqx.Module):
    """A submodule whose output passes through a function: `Spliced(module, replace)(*args)`
    is `replace(module(*args))`. `splice` puts one into a model with `eqx.tree_at`, in place of
    the submodule; the model's own code runs unchanged around it."""

    module: Callable
    replace: Callable

    def __call__(self, *args, **kwargs):
        """`replace(module(*args, **kwargs))`."""
        return self.replace(self.module(*args, **kwargs))


class Record(eqx.Module):
    """The identity function that also records its argument into the capture being traced
    (`capture` splices one in; outside a capture it only returns its argument)."""

    label: str = eqx.field(static=True)

    def __call__(self, v: PyTree) -> PyTree:
        """Record `v` and return it unchanged."""
        if _ACTIVE:
            _ACTIVE[-1].append(v)
        return v


def splice(
    model: PyTree, where: Callable[[PyTree], Callable], replace: Callable[[PyTree], PyTree]
) -> PyTree:
    """A copy of `model` in which the output of the submodule `where(model)` is replaced by
    `replace` of it, at every call of that submodule. Built with `eqx.tree_at`, which puts a
    `Spliced` wrapper in place of the submodule: no code of the model is copied, and any
    Equinox model works (equisae's `FNO`, pdequinox's architectures, your own).

    **Arguments:**

    - `model`: an Equinox module.
    - `where`: a function of the model returning the submodule, as for `eqx.tree_at`, for
      example `lambda m: m.blocks[2]`.
    - `replace`: a function of the submodule's output (for one example, as the model sees it)
      returning what the rest of the model gets instead: an SAE's reconstruction
      (`Reconstruction`), a mean field, or the identity.

    **Returns:** the spliced model, called like `model`.
    """
    submodule(model, where)
    return eqx.tree_at(where, model, replace_fn=lambda module: Spliced(module, replace))


@contextlib.contextmanager
def _recording() -> Iterator[list]:
    calls: list = []
    _ACTIVE.append(calls)
    try:
        yield calls
    finally:
        _ACTIVE.pop()


class _CaptureOne(eqx.Module):
    tapped: PyTree
    label: str = eqx.field(static=True)

    def __call__(self, x):
        with _recording() as calls:
            self.tapped(x)
        if len(calls) != 1:
            raise ValueError(
                f"the submodule `{self.label}` was called {len(calls)} times in one forward "
                "pass of the model; capture needs a submodule called exactly once (name one "
                "that is, or splice a function that records what you need)."
            )
        return calls[0]


@eqx.filter_jit
def _capture_batch(one: _CaptureOne, inputs):
    return jax.vmap(one)(inputs)


def capture(
    model: PyTree,
    where: Callable[[PyTree], Callable],
    inputs: Float[ArrayLike, " batch *input"],
    *,
    batch_size: int | None = None,
) -> PyTree:
    """The outputs of the submodule `where(model)` for a batch of inputs: `model` is run on
    each input (through `jax.vmap`) with a `Record` spliced in after the submodule (see
    `splice`), and the rest of the model is left out of the jitted program.

    **Arguments:**

    - `model`: an Equinox module acting on one example, `model(x)`.
    - `where`: the path of the submodule, for example `lambda m: m.blocks[2]`; it must be
      called exactly once per forward pass, and not inside a `jax.lax.scan` or `jax.vmap` of
      the model's own.
    - `inputs`: a batch of inputs, shape `(batch, *input)`.
    - `batch_size`: run this many inputs at a time (the last chunk is padded, so one program
      serves every chunk); default all at once.

    **Returns:** the submodule's outputs with a leading batch axis (for a field of shape
    `(channels, *spatial)`, an array `(batch, channels, *spatial)`).
    """
    module = submodule(model, where)
    label = describe_path(where)
    one = _CaptureOne(splice(model, where, Record(label)), label)
    inputs = jnp.asarray(inputs)
    if inputs.ndim < 1 or inputs.shape[0] == 0:
        raise ValueError(f"inputs must be a non-empty batch, got shape {inputs.shape}.")
    del module
    try:
        if batch_size is None or batch_size >= inputs.shape[0]:
            return _capture_batch(one, inputs)
        if int(batch_size) != batch_size or batch_size < 1:
            raise ValueError(f"batch_size must be a positive whole number, got {batch_size}.")
        chunks = []
        for start in range(0, inputs.shape[0], batch_size):
            chunk = inputs[start : start + batch_size]
            size = chunk.shape[0]
            if size < batch_size:
                pad = jnp.broadcast_to(chunk[-1:], (batch_size - size,) + chunk.shape[1:])
                chunk = jnp.concatenate([chunk, pad])
            out = _capture_batch(one, chunk)
            chunks.append(jax.tree.map(lambda a, size=size: a[:size], out))
        return jax.tree.map(lambda *parts: jnp.concatenate(parts), *chunks)
    except jax.errors.UnexpectedTracerError as error:
        raise ValueError(
            f"the submodule `{label}` runs inside a JAX transformation of the model's own "
            "(a scan or vmap over layers), so its output cannot be captured from outside; "
            "capture the transformed module as a whole."
        ) from error
