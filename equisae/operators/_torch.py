import contextlib
import difflib
import os
from collections.abc import Callable, Iterator
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from ._splice import relative_l2_error

_EXTRA = (
    "needs PyTorch, which equisae installs only with its optional extra `torch`: "
    "pip install 'equisae[torch]' (torch==2.13.0 and neuraloperator)"
)


def _torch():
    try:
        import torch
    except ImportError as error:
        raise ImportError(f"equisae.operators' PyTorch route {_EXTRA}.") from error
    return torch


def torch_module(model: Any, name: str) -> Any:
    """The submodule of a `torch.nn.Module` called `name` in `model.named_modules()` (for
    example `"fno_blocks"` of a neuraloperator `FNO`).

    Raises an `ImportError` naming the extra `torch` when PyTorch is not installed, and a
    `ValueError` listing the closest names when the model has no such module.
    """
    torch = _torch()
    if not isinstance(model, torch.nn.Module):
        raise ValueError(f"model must be a torch.nn.Module, got {type(model).__name__}.")
    modules = dict(model.named_modules())
    if name not in modules or name == "":
        close = difflib.get_close_matches(name, list(modules), n=5, cutoff=0.3)
        shown = ", ".join(repr(n) for n in (close or list(modules)[1:8]))
        raise ValueError(
            f"the {type(model).__name__} model has no module named {name!r}; "
            f"{'closest' if close else 'some'} names: {shown} (see model.named_modules())."
        )
    return modules[name]


class _Calls:
    """Counts the calls of a module within one forward pass of the model."""

    def __init__(self, model, module, call: int | None, name: str):
        self.count = 0
        self.call = call
        self.name = name
        self.handles = [model.register_forward_pre_hook(self.reset)]
        self.module = module

    def reset(self, *args) -> None:
        self.count = 0

    def selected(self) -> bool:
        """Whether the call being made is the one selected (and count it)."""
        index, self.count = self.count, self.count + 1
        return self.call is None or index == self.call

    def check(self) -> None:
        if self.call is None and self.count != 1:
            raise ValueError(
                f"the module {self.name!r} was called {self.count} times in one forward pass; "
                f"pass call=i (0 <= i < {self.count}) to choose one."
            )
        if self.call is not None and not 0 <= self.call < self.count:
            raise ValueError(
                f"call={self.call}, but the module {self.name!r} was called {self.count} "
                f"times in one forward pass (call must lie in 0..{self.count - 1})."
            )

    def after(self, *args) -> None:
        """After a forward pass: a chosen call that never came is an error."""
        if self.call is not None and not 0 <= self.call < self.count:
            self.check()

    def remove(self) -> None:
        for handle in self.handles:
            handle.remove()


def _batches(inputs, batch_size: int):
    if int(batch_size) != batch_size or batch_size < 1:
        raise ValueError(f"batch_size must be a positive whole number, got {batch_size}.")
    for start in range(0, len(inputs), int(batch_size)):
        yield start, inputs[start : start + int(batch_size)]


def _as_tensor(torch, x, model):
    parameter = next(model.parameters(), None)
    device = parameter.device if parameter is not None else "cpu"
    dtype = parameter.dtype if parameter is not None else torch.float32
    if isinstance(x, torch.Tensor):
        return x.to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), dtype=dtype, device=device)


def capture_torch(
    model: Any,
    name: str,
    inputs: Any,
    *,
    call: int | None = None,
    batch_size: int = 64,
    out: str | os.PathLike | None = None,
) -> np.ndarray:
    """The outputs of the module `name` of a PyTorch model (a `torch.nn.Module`, for example a
    neuraloperator `FNO`) for a batch of inputs, captured by a forward hook into host memory.

    The model runs in inference mode (`torch.no_grad`), `batch_size` inputs at a time; the
    hook copies each output to a NumPy array. With `out` the array is a memory-mapped `.npy`
    file written batch by batch (for data bigger than memory; read it back with
    `np.load(out, mmap_mode="r")`). Needs the optional extra `torch`.

    **Arguments:**

    - `model`: a `torch.nn.Module` taking a batch `(batch, *input)`.
    - `name`: the module's name in `model.named_modules()`, e.g. `"fno_blocks"`.
    - `inputs`: a NumPy array, JAX array or tensor of shape `(batch, *input)`.
    - `call`: which call of the module to capture when it runs several times per forward pass
      (neuraloperator's `fno_blocks` runs once per layer: `call=i` is the field after layer
      $i$); by default the module must run exactly once.
    - `batch_size`: inputs per forward pass.
    - `out`: a path for a memory-mapped `.npy` result.

    **Returns:** the outputs, shape `(batch, *output)`: a NumPy array, or the `np.memmap`.
    """
    torch = _torch()
    module = torch_module(model, name)
    calls = _Calls(model, module, call, name)
    captured: list = []

    def hook(module, args, output):
        if calls.selected():
            captured.append(output.detach().cpu().numpy())

    calls.handles.append(module.register_forward_hook(hook))
    result = None
    try:
        with torch.no_grad():
            for start, chunk in _batches(inputs, batch_size):
                captured.clear()
                model(_as_tensor(torch, chunk, model))
                calls.check()
                value = captured[0]
                if result is None:
                    shape = (len(inputs),) + value.shape[1:]
                    if out is None:
                        result = np.empty(shape, value.dtype)
                    else:
                        result = np.lib.format.open_memmap(
                            out, mode="w+", dtype=value.dtype, shape=shape
                        )
                result[start : start + len(value)] = value
    finally:
        calls.remove()
    if isinstance(result, np.memmap):
        result.flush()
    return result


@eqx.filter_jit
def _replace_batch(replace: Callable, v: Array) -> Array:
    return jax.vmap(replace)(v)


@contextlib.contextmanager
def splice_torch(
    model: Any,
    name: str,
    replace: Callable[[Float[Array, " c *spatial"]], Float[Array, " c *spatial"]],
    *,
    call: int | None = None,
) -> Iterator[Any]:
    """A context in which the output of the module `name` of a PyTorch model is replaced by
    `replace` of it: a forward hook hands the output to JAX (by DLPack, without a copy on the
    CPU), applies `replace` to every example of the batch (`jax.vmap`, jitted) and returns the
    result to PyTorch as the module's output. `replace` is a JAX function of one example, such
    as an SAE's reconstruction (`Reconstruction`). Needs the optional extra `torch`.

    ```python
    with splice_torch(model, "fno_blocks", Reconstruction(sae, mean), call=1):
        y = model(x)
    ```

    **Arguments:** `model`, a `torch.nn.Module`; `name`, the module's name in
    `model.named_modules()`; `replace`; `call`, which call of the module to replace when it
    runs several times per forward pass (default: every call).

    **Yields:** the model (the hook is removed on leaving the context).
    """
    torch = _torch()
    module = torch_module(model, name)
    calls = _Calls(model, module, call, name)

    def hook(module, args, output):
        if not calls.selected():
            return None
        field = jax.dlpack.from_dlpack(output.detach().contiguous())
        replaced = _replace_batch(replace, field)
        if replaced.shape != field.shape:
            raise ValueError(
                f"replace returned fields of shape {replaced.shape[1:]} for outputs of "
                f"{name!r} of shape {field.shape[1:]}."
            )
        return torch.from_dlpack(replaced).to(dtype=output.dtype, device=output.device)

    calls.handles.append(module.register_forward_hook(hook))
    calls.handles.append(model.register_forward_hook(calls.after))
    try:
        yield model
    finally:
        calls.remove()


def splice_error_torch(
    model: Any,
    name: str,
    inputs: Any,
    replace: Callable[[Float[Array, " c *spatial"]], Float[Array, " c *spatial"]],
    *,
    call: int | None = None,
    targets: Any = None,
    batch_size: int = 64,
) -> Float[Array, " "]:
    """The splice metric of `splice_error` for a PyTorch model: the mean relative $L^2$ error
    of its output with the output of module `name` replaced by `replace` (`splice_torch`),
    against its own output (default) or `targets`. Needs the optional extra `torch`.

    **Arguments:** as `capture_torch` and `splice_torch`; `targets`, a batch of reference
    outputs.
    """
    torch = _torch()
    torch_module(model, name)
    plain, spliced = [], []
    with torch.no_grad():
        for _, chunk in _batches(inputs, batch_size):
            x = _as_tensor(torch, chunk, model)
            plain.append(model(x).cpu().numpy())
            with splice_torch(model, name, replace, call=call):
                spliced.append(model(x).cpu().numpy())
    reference = np.concatenate(plain) if targets is None else np.asarray(targets)
    return relative_l2_error(jnp.asarray(np.concatenate(spliced)), jnp.asarray(reference))
