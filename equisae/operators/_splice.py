from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

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


@eqx.filter_jit
def _spliced(fno: FNO, block: int, inputs: Array, replace) -> tuple[Array, Array]:
    def one(x):
        fields = fno.hidden(x)
        return fno.project(fields[-1]), fno.from_block(block, replace(fields[block]))

    return jax.vmap(one)(inputs)


def splice_error(
    fno: FNO,
    block: int,
    inputs: Float[ArrayLike, " batch in *spatial"],
    replace: Callable[[Array], Array],
    *,
    targets: Float[ArrayLike, " batch out *spatial"] | None = None,
) -> Float[Array, " "]:
    """The splice metric: the mean relative $L^2$ error of the FNO's output when the hidden
    field of block $i$ is replaced,

    $$\\frac1B \\sum_b \\frac{\\|F_i(R(v_i(x_b))) - y_b\\|}{\\|y_b\\|}, \\qquad
    y_b = F(x_b) \\text{ (default) or } y_b = \\text{targets}_b,$$

    where $v_i(x)$ is the field of block $i$ (`fno.hidden(x)[i]`), $F_i$ the rest of the network
    (`fno.from_block(i, ·)`) and $R$ = `replace`, a function of one field of shape
    `(width, *spatial)` (an SAE's reconstruction, or a constant mean field for the
    mean-ablation baseline). Against the FNO's own output it is 0 when $R$ is the identity
    (a perfect reconstruction); against the PDE's `targets` it is the test error of the spliced
    network, the analogue of the loss of a language model with an SAE spliced in.

    The computation is jitted with `replace` as part of the program: pass an `eqx.Module` (or
    reuse one function) rather than a fresh `lambda` per call, which would recompile.
    """
    inputs = jnp.asarray(inputs)
    if inputs.ndim < 2:
        raise ValueError(f"inputs must be a batch (batch, in, *spatial), got {inputs.shape}.")
    if not 0 <= block <= fno.depth:
        raise ValueError(f"block must lie in 0..{fno.depth}, got {block}.")
    plain, spliced = _spliced(fno, block, inputs, replace)
    reference = plain if targets is None else jnp.asarray(targets)
    return relative_l2_error(spliced, reference)
