import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from . import metrics
from ._grid import Grid, code_grid
from ._sae import SAE


def reconstruction_error(
    x: Float[Array, " c *spatial"], reconstruction: Float[Array, " c *spatial"], grid: Grid
) -> Float[Array, " "]:
    """$\\tfrac12\\|x - \\hat x\\|^2_{L^2(\\Omega)}$ for one signal."""
    return 0.5 * grid.inner(x - reconstruction, x - reconstruction)


def l1_norm(codes: Float[Array, " p *code_spatial"]) -> Float[Array, " "]:
    """$\\|z\\|_{L^1} = \\sum_k \\int |z_k|$ for one code (a plain sum for vector codes)."""
    return jnp.sum(jnp.abs(codes)) * code_grid(codes).weight


class SAELoss(eqx.Module):
    """The training loss of an SAE over a batch,
    $\\frac1B \\sum_b \\tfrac12\\|x_b - \\hat x_b\\|^2_{L^2(\\Omega)} + \\mu \\|z_b\\|_{L^1}$
    with $\\mu$ = `l1`.

    With a model-based encoder that solves the lasso with penalty $\\lambda$: `l1` $= 0$
    trains on reconstruction alone (backpropagation through the inference then compensates the
    shrinkage of the codes), `l1` $= \\lambda$ gives the classic dictionary-learning objective,
    the lasso objective at the inferred codes. For convolutional and spectral dictionaries a
    small `l1` (a fraction of $\\lambda$) matters: with none, a dictionary that reconstructs the
    data from dense codes scores as well as the true one; with the full $\\lambda$ the
    shrinkage biases the atoms.

    `loss(model, batch, grid)` returns `(value, aux)`, where `aux` holds the batch means of the
    reconstruction error, $\\|z\\|_{L^1}$, $L_0$ (non-zero code entries per example), the
    explained variance, the inference steps and the fraction of examples whose inference
    converged (see `Diagnostics`).
    """

    l1: float = 0.0

    def __check_init__(self):
        if not self.l1 >= 0:
            raise ValueError(f"SAELoss l1 weight must be >= 0, got {self.l1}.")

    def __call__(
        self, model: SAE, batch: Float[Array, " batch c *spatial"], grid: Grid
    ) -> tuple[Float[Array, " "], dict[str, Float[Array, " "]]]:
        reconstruction, codes, diagnostics = jax.vmap(model.infer, in_axes=(0, None))(batch, grid)
        error = jax.vmap(reconstruction_error, in_axes=(0, 0, None))(batch, reconstruction, grid)
        l1 = jax.vmap(l1_norm)(codes)
        value = jnp.mean(error) + self.l1 * jnp.mean(l1)
        aux = {
            "reconstruction": jnp.mean(error),
            "l1": jnp.mean(l1),
            "l0": metrics.l0(codes),
            "explained_variance": metrics.explained_variance(batch, reconstruction),
            "inference_steps": jnp.mean(diagnostics.steps),
            "converged": jnp.mean(diagnostics.converged),
        }
        return value, aux
