"""Training: a jitted step for your own loop (`make_step`) and a complete loop (`fit`)."""

import time
import warnings
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
from jaxtyping import Array, PRNGKeyArray, PyTree
from tqdm.auto import tqdm

from ._grid import Grid
from ._losses import SAELoss
from ._sae import SAE

Loss = Callable[[SAE, Array, Grid], tuple[Array, dict[str, Array]]]
Step = Callable[[SAE, PyTree, Array, Grid], tuple[SAE, PyTree, Array, dict[str, Array]]]


class NonFiniteLossError(FloatingPointError):
    """Training produced a NaN or infinite loss or parameter. `error.step` is the step that
    failed; `error.model` and `error.opt_state` are the last good ones, from before that step."""

    def __init__(self, step: int, value: float, model: SAE, opt_state: PyTree):
        self.step = step
        self.model = model
        self.opt_state = opt_state
        what = (
            f"the loss became {value}"
            if not np.isfinite(value)
            else "the parameters became NaN or inf"
        )
        super().__init__(
            f"{what} at step {step}; training stopped. error.model holds the last good model "
            f"(from before step {step}). Try a smaller learning rate or check the data's scale."
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
        (value, aux), grads = eqx.filter_value_and_grad(loss, has_aux=True)(model, batch, grid)
        params = eqx.filter(model, eqx.is_inexact_array)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        model = eqx.apply_updates(model, updates)
        if normalise:
            model = _normalised(model, grid)
        return model, opt_state, value, aux

    return step


def _check_data(data, grid: Grid | None) -> tuple[Array, Grid]:
    if not hasattr(data, "shape") or not hasattr(data, "dtype"):
        raise TypeError(
            f"data must be an array of shape (examples, channels, *spatial), got {type(data)}."
        )
    if not jnp.issubdtype(data.dtype, jnp.floating):
        raise TypeError(f"data must hold floating-point numbers, got dtype {data.dtype}.")
    if data.ndim < 2:
        raise ValueError(f"data must have shape (examples, channels, *spatial), got {data.shape}.")
    if data.shape[0] == 0:
        raise ValueError("data is empty: it holds no examples.")
    finite = np.isfinite(np.asarray(data)).reshape(data.shape[0], -1).all(axis=1)
    if not finite.all():
        bad = np.flatnonzero(~finite)
        raise ValueError(
            f"data contains NaN or inf in {len(bad)} example(s), the first at index {bad[0]}."
        )
    grid = Grid(data.shape[2:]) if grid is None else grid
    grid.check(data[0], "an example of data")
    return jnp.asarray(data), grid


def fit(
    model: SAE,
    data: Array | np.ndarray,
    *,
    optimizer: optax.GradientTransformation,
    steps: int,
    batch_size: int,
    key: PRNGKeyArray,
    loss: Loss = SAELoss(),
    grid: Grid | None = None,
    normalise: bool = True,
    progress: bool = True,
) -> tuple[SAE, dict[str, np.ndarray]]:
    """Train `model` on `data` for `steps` optimiser steps of `batch_size` examples, drawn
    epoch by epoch in an order set by `key`.

    **Arguments:**

    - `model`: the `SAE` to train.
    - `data`: a floating-point array of examples, shape `(examples, channels, *spatial)`
      (a JAX or NumPy array).
    - `optimizer`: an `optax` optimiser.
    - `steps`, `batch_size`: the number of steps and examples per step.
    - `key`: a `jax.random` key for the order of examples; same key, same run.
    - `loss`: `loss(model, batch, grid) -> (value, aux)`; `SAELoss()` by default.
    - `grid`: the grid of the data; by default the uniform grid of shape `data.shape[2:]`.
    - `normalise`: put the atoms at unit $L^2(\\Omega)$ norm before the first step and after
      every step.
    - `progress`: show a `tqdm` progress bar.

    **Returns:** the trained model and its history, a dict of arrays with one entry per step:
    `step`, `loss`, `seconds` (wall time since the start) and every entry of the loss's `aux`
    (for `SAELoss`: `reconstruction`, `l1`, `l0`, `explained_variance`, `inference_steps`,
    `converged`).

    **Warns:** `InferenceWarning` the first time an encoder that solves to a tolerance
    (`FixedPoint`, `ODEFlow`) reports that it did not converge on part of a batch.

    **Raises:** `ValueError` for empty data, data with NaN or inf, a shape that does not fit the
    grid, or bad `steps` / `batch_size`; `NonFiniteLossError`, holding the last good model, if
    the loss turns NaN or infinite.
    """
    data, grid = _check_data(data, grid)
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive whole number, got {steps}.")
    if int(batch_size) != batch_size or not 1 <= batch_size <= data.shape[0]:
        raise ValueError(
            f"batch_size must lie between 1 and the number of examples ({data.shape[0]}), "
            f"got {batch_size}."
        )
    step = make_step(loss, optimizer, normalise=normalise)

    @eqx.filter_jit
    def step_on(model, opt_state, data, index, grid):
        model, opt_state, value, aux = step(model, opt_state, data[index], grid)
        leaves = jax.tree.leaves(eqx.filter(model, eqx.is_inexact_array))
        finite = jnp.isfinite(value) & jnp.all(
            jnp.stack([jnp.all(jnp.isfinite(x)) for x in leaves])
        )
        return model, opt_state, value, aux, finite

    if normalise:
        model = _normalised(model, grid)
    opt_state = optimizer.init(eqx.filter(model, eqx.is_inexact_array))
    per_epoch = data.shape[0] // batch_size
    records, seconds, unconverged = [], [], False
    start = time.perf_counter()
    with tqdm(total=steps, disable=not progress, desc="fit", unit="step") as bar:
        for i in range(steps):
            if i % per_epoch == 0:
                key, subkey = jr.split(key)
                order = jr.permutation(subkey, data.shape[0])
            index = order[(i % per_epoch) * batch_size : (i % per_epoch + 1) * batch_size]
            new_model, new_opt_state, value, aux, finite = step_on(
                model, opt_state, data, index, grid
            )
            value = float(value)
            if not finite:
                raise NonFiniteLossError(i, value, model, opt_state)
            model, opt_state = new_model, new_opt_state
            if "converged" in aux and not unconverged and float(aux["converged"]) < 1:
                unconverged = True
                warnings.warn(
                    f"sparse inference did not converge for {1 - float(aux['converged']):.0%} of "
                    f"the batch at step {i}: the encoder hit its step budget. Gradients there are "
                    "approximate; raise max_steps or loosen the tolerance. history['converged'] "
                    "holds the fraction for every step.",
                    InferenceWarning,
                    stacklevel=2,
                )
            records.append((value, aux))
            seconds.append(time.perf_counter() - start)
            if progress and (i % max(steps // 100, 1) == 0 or i == steps - 1):
                bar.set_postfix(loss=f"{value:.4g}")
            bar.update()
    values, auxes = zip(*records)
    history = {"step": np.arange(steps), "loss": np.asarray(values), "seconds": np.asarray(seconds)}
    for name, column in jax.device_get(jax.tree.map(lambda *xs: jnp.stack(xs), *auxes)).items():
        history[name] = np.asarray(column)
    return model, history
