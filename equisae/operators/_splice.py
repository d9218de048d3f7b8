from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._grid import Grid, resample
from .._sae import SAE
from ._capture import splice
from ._fno import FNO

ArrayLike = Array | np.ndarray


def relative_l2_error(
    prediction: Float[ArrayLike, " batch c *spatial"], target: Float[ArrayLike, " batch c *spatial"]
) -> Float[Array, " "]:
    """The mean relative $L^2$ error over a batch, $\\frac1B \\sum_b \\|\\hat y_b - y_b\\| /
    \\|y_b\\|$ (the quadrature weights cancel in the ratio, so it is the same on every grid)."""
    prediction, target = jnp.asarray(prediction), jnp.asarray(target)
    if prediction.shape != target.shape or prediction.ndim < 2:
        raise ValueError(
            f"prediction {prediction.shape} and target {target.shape} must be batches of the "
            "same shape (batch, channels, *spatial)."
        )
    axes = tuple(range(1, target.ndim))
    error = jnp.sqrt(jnp.sum((prediction - target) ** 2, axis=axes))
    size = jnp.sqrt(jnp.sum(target**2, axis=axes))
    return jnp.mean(error / jnp.maximum(size, jnp.finfo(size.dtype).tiny))


class Reconstruction(eqx.Module):
    """The field an SAE gives back for a captured field $v$, to splice into a host:
    $R(v) = \\mu + s\\, D z^*\\big((v - \\mu)/s\\big)$, with $z^*$ the SAE's codes and $D z^*$
    its reconstruction, for an SAE trained on the centred and scaled fields $(v - \\mu)/s$.

    The grid is the field's own (`Grid(v.shape[1:])`), so an SAE-FNO spliced in works at any
    resolution; a mean field on another grid is Fourier-resampled to it. A field whose shape
    does not match the SAE (its channels, or the grid of a dense dictionary) raises a
    `ValueError` that names both shapes, before any work.
    """

    sae: SAE
    mean: Float[Array, "..."] | float
    scale: Float[Array, " "] | float

    def __init__(
        self,
        sae: SAE,
        mean: Float[ArrayLike, " c *spatial"] | float = 0.0,
        scale: Float[ArrayLike, " "] | float = 1.0,
    ):
        """**Arguments:** `sae`; `mean` $\\mu$, a field of shape `(channels, *spatial)` or a
        number (default 0); `scale` $s > 0$ (default 1)."""
        self.sae = sae
        self.mean = mean if isinstance(mean, (int, float)) else jnp.asarray(mean)
        self.scale = scale if isinstance(scale, (int, float)) else jnp.asarray(scale)

    def __check_init__(self):
        if isinstance(self.scale, (int, float)) and not self.scale > 0:
            raise ValueError(f"Reconstruction scale must be positive, got {self.scale}.")

    def __call__(self, v: Float[Array, " c *spatial"]) -> Float[Array, " c *spatial"]:
        """$R(v)$ for one captured field `v` of shape `(channels, *spatial)`."""
        channels = self.sae.dictionary.channels
        if v.ndim < 1 or v.shape[0] != channels:
            raise ValueError(
                f"the captured field has shape {tuple(v.shape)}, but the SAE expects fields of "
                f"{channels} channels, shape ({channels}, *spatial): capture the submodule the "
                "SAE was trained on."
            )
        fixed = getattr(self.sae.dictionary, "grid", None)
        if isinstance(fixed, Grid) and fixed.shape != tuple(v.shape[1:]):
            raise ValueError(
                f"the captured field has shape {tuple(v.shape)}, but the SAE's dictionary lives "
                f"on a grid of shape {fixed.shape}, shape ({channels}, *{fixed.shape})."
            )
        grid = Grid(tuple(v.shape[1:]))
        mean = self.mean
        if not isinstance(mean, (int, float)) and mean.ndim and mean.shape != v.shape:
            if mean.ndim != v.ndim or mean.shape[0] != v.shape[0]:
                raise ValueError(
                    f"Reconstruction mean has shape {mean.shape}, the field {tuple(v.shape)}."
                )
            mean = resample(mean, Grid(tuple(mean.shape[1:])), grid)
        return mean + self.scale * self.sae((v - mean) / self.scale, grid)[0]


@eqx.filter_jit
def _spliced(model, spliced, inputs: Array) -> tuple[Array, Array]:
    return jax.vmap(model)(inputs), jax.vmap(spliced)(inputs)


def splice_error(
    model: PyTree,
    where: int | Callable[[PyTree], Callable],
    inputs: Float[ArrayLike, " batch in *spatial"],
    replace: Callable[[Array], Array],
    *,
    targets: Float[ArrayLike, " batch out *spatial"] | None = None,
) -> Float[Array, " "]:
    """The splice metric: the mean relative $L^2$ error of a model's output when the output
    $v(x)$ of one submodule is replaced,

    $$\\frac1B \\sum_b \\frac{\\|F_R(x_b) - y_b\\|}{\\|y_b\\|}, \\qquad
    y_b = F(x_b) \\text{ (default) or } y_b = \\text{targets}_b,$$

    where $F$ is the model and $F_R$ the model with $v$ replaced by $R(v)$, $R$ = `replace`
    (`splice(model, where, replace)`): an SAE's reconstruction (`Reconstruction`), or a
    constant mean field for the mean-ablation baseline. Against the model's own output it is 0
    when $R$ is the identity (a perfect reconstruction); against the PDE's `targets` it is the
    test error of the spliced network, the analogue of the loss of a language model with an
    SAE spliced in.

    **Arguments:**

    - `model`: any Equinox model acting on one example (equisae's `FNO`, a pdequinox
      architecture, your own).
    - `where`: the path of the submodule, for example `lambda m: m.blocks[2]`; for an `FNO`
      also the index $i$ of its field ($0 \\le i \\le L$, `fno.where(i)`).
    - `inputs`: a batch `(batch, in, *spatial)`.
    - `replace`: a function of one output of the submodule.
    - `targets`: the reference outputs (default: the model's own).

    The computation is jitted with `replace` as part of the program: pass an `eqx.Module` (or
    reuse one function) rather than a fresh `lambda` per call, which would recompile.
    """
    inputs = jnp.asarray(inputs)
    if inputs.ndim < 2:
        raise ValueError(f"inputs must be a batch (batch, in, *spatial), got {inputs.shape}.")
    if isinstance(where, int):
        if not isinstance(model, FNO):
            raise ValueError(
                f"a block index ({where}) names a field of an equisae FNO only; for a "
                f"{type(model).__name__} pass the path of a submodule, e.g. "
                "`lambda m: m.blocks[2]`."
            )
        if not 0 <= where <= model.depth:
            raise ValueError(f"block must lie in 0..{model.depth}, got {where}.")
        where = model.where(where)
    plain, spliced = _spliced(model, splice(model, where, replace), inputs)
    reference = plain if targets is None else jnp.asarray(targets)
    return relative_l2_error(spliced, reference)
