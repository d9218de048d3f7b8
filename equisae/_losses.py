import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import metrics
from ._encoders import Amortised
from ._grid import Grid, code_grid
from ._sae import SAE
from ._sparsity import TopK


def reconstruction_error(
    x: Float[Array, " c *spatial"], reconstruction: Float[Array, " c *spatial"], grid: Grid
) -> Float[Array, " "]:
    """$\\tfrac12\\|x - \\hat x\\|^2_{L^2(\\Omega)}$ for one signal."""
    return 0.5 * grid.inner(x - reconstruction, x - reconstruction)


def l1_norm(codes: Float[Array, " p *code_spatial"]) -> Float[Array, " "]:
    """$\\|z\\|_{L^1} = \\sum_k \\int |z_k|$ for one code (a plain sum for vector codes)."""
    return jnp.sum(jnp.abs(codes)) * code_grid(codes).weight


def _preactivations(model: SAE, x: Array, grid: Grid) -> Array:
    if not isinstance(model.encoder, Amortised):
        raise ValueError(
            "this loss term needs the pre-activations of an Amortised encoder (JumpReLU's L0 "
            f"and AuxK act on them); the model's encoder is {type(model.encoder).__name__}."
        )
    lifted, dictionary = model.dictionary.lift(x / model.scale, grid)
    return model.encoder.preactivations(lifted, dictionary, grid)


def firing(codes: Float[Array, " batch p *code_spatial"]) -> Float[Array, " p"]:
    """The fraction of examples in which each concept is active (anywhere in the domain)."""
    return jnp.mean(jnp.any(codes != 0, axis=tuple(range(2, codes.ndim))), axis=0)


class SAELoss(eqx.Module):
    """The training loss of an SAE over a batch,
    $\\frac1B \\sum_b \\tfrac12\\|x_b - \\hat x_b\\|^2_{L^2(\\Omega)} + \\mu \\|z_b\\|_{L^1}
    + \\nu L_0(u_b)$, with $\\mu$ = `l1` and $\\nu$ = `l0`, plus the AuxK term when `aux_k`
    is set.

    With a model-based encoder that solves the lasso with penalty $\\lambda$: `l1` $= 0$
    trains on reconstruction alone (backpropagation through the inference then compensates the
    shrinkage of the codes), `l1` $= \\lambda$ gives the classic dictionary-learning objective,
    the lasso objective at the inferred codes. For convolutional and spectral dictionaries a
    small `l1` (a fraction of $\\lambda$) matters: with none, a dictionary that reconstructs the
    data from dense codes scores as well as the true one; with the full $\\lambda$ the
    shrinkage biases the atoms.

    - `l0` weighs the number of active codes of an `Amortised` encoder computed from its
      pre-activations $u$ by its sparsity's `l0` (differentiable for `JumpReLU`).
    - `aux_k` adds the AuxK loss of Gao et al. (2024) for TopK models: the concepts that did not
      fire in the batch reconstruct the residual $e = x - \\hat x$ with their `aux_k` largest
      pre-activations, $\\alpha \\cdot \\tfrac12\\|e - D\\,\\mathrm{TopK}(u_{dead})\\|^2$ with
      $\\alpha$ = `aux_coefficient`, which gives dead concepts a gradient.

    The reconstruction error is measured in the units the encoder sees, $x / s$ with $s$ the
    model's `scale` (see `SAE.with_scale_of`): with the scale set from the data, the loss and
    so the hyperparameters do not depend on the data's units.

    The batch is vmapped with `axis_name="batch"` (for `BatchTopK`). `loss(model, batch, grid)`
    returns `(value, aux)`, where `aux` holds the batch means of the reconstruction error,
    $\\|z\\|_{L^1}$, $L_0$ (non-zero code entries per example), the explained variance, the
    inference steps, the fraction of examples whose inference converged (see `Diagnostics`), and
    `firing`, the fraction of examples in which each concept is active, shape `(p,)`.
    """

    l1: float = 0.0
    l0: float = 0.0
    aux_k: int | None = None
    aux_coefficient: float = 1.0 / 32

    def __check_init__(self):
        for name in ("l1", "l0", "aux_coefficient"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"SAELoss {name} weight must be >= 0, got {getattr(self, name)}.")
        if self.aux_k is not None and (int(self.aux_k) != self.aux_k or self.aux_k < 1):
            raise ValueError(f"SAELoss aux_k must be a positive whole number, got {self.aux_k}.")

    def __call__(
        self, model: SAE, batch: Float[Array, " batch c *spatial"], grid: Grid
    ) -> tuple[Float[Array, " "], dict[str, Array]]:
        infer = jax.vmap(model.infer, in_axes=(0, None), axis_name="batch")
        reconstruction, codes, diagnostics = infer(batch, grid)
        # in the units of the model's input, x / s: the loss does not depend on the data's scale
        error = jax.vmap(reconstruction_error, in_axes=(0, 0, None))(batch, reconstruction, grid)
        error = error / model.scale**2
        l1 = jax.vmap(l1_norm)(codes)
        value = jnp.mean(error) + self.l1 * jnp.mean(l1)
        fired = firing(codes)
        if self.l0 > 0 or self.aux_k is not None:
            pre = jax.vmap(_preactivations, in_axes=(None, 0, None))(model, batch, grid)
        if self.l0 > 0:
            value = value + self.l0 * jnp.mean(jax.vmap(model.encoder.sparsity.l0)(pre))
        if self.aux_k is not None:
            value = value + self.aux_coefficient * self._aux_k(
                model, batch, reconstruction, pre, fired, grid
            )
        aux = {
            "reconstruction": jnp.mean(error),
            "l1": jnp.mean(l1),
            "l0": metrics.l0(codes),
            "explained_variance": metrics.explained_variance(batch, reconstruction),
            "inference_steps": jnp.mean(diagnostics.steps),
            "converged": jnp.mean(diagnostics.converged),
            "firing": fired,
        }
        return value, aux

    def _aux_k(self, model, batch, reconstruction, pre, fired, grid):
        dead = jax.lax.stop_gradient(fired == 0)
        residual = jax.lax.stop_gradient(batch - reconstruction)
        mask = dead.reshape((1, -1) + (1,) * (pre.ndim - 2))
        select = TopK(self.aux_k, nonnegative=True)
        dead_codes = jax.vmap(select)(jnp.where(mask, pre, 0.0))
        estimate = jax.vmap(model.decode, in_axes=(0, None))(dead_codes, grid)
        error = jax.vmap(reconstruction_error, in_axes=(0, 0, None))(residual, estimate, grid)
        error = error / model.scale**2
        return jnp.where(jnp.any(dead), jnp.mean(error), 0.0)
