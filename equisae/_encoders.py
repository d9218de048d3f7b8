import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._dictionaries import AbstractDictionary, operator_norm
from ._grid import Grid
from ._sparsity import AbstractSparsity


class AbstractEncoder(eqx.Module):
    """Sparse inference: maps a signal to codes, given the dictionary.

    `encoder(x, dictionary, grid)` returns codes of shape `dictionary.code_shape(grid)`.
    Model-based encoders solve (or approximately solve) the inner problem
    $z^*(x) = \\arg\\min_z \\tfrac12\\|x - Dz\\|^2_{L^2(\\Omega)} + R(z)$ with the dictionary
    and its adjoint; amortised encoders own their weights.
    """

    @abc.abstractmethod
    def __call__(
        self, x: Float[Array, " c *spatial"], dictionary: AbstractDictionary, grid: Grid
    ) -> Float[Array, " p *code_spatial"]:
        """The codes of one signal `x` of shape `(channels, *grid.shape)`."""


class Amortised(AbstractEncoder):
    """An amortised encoder $z = \\sigma(E x)$ with untied weights $E$: the standard SAE
    encoder when `layer` is a `Linear`, an SAE-NO encoder when it is an operator layer
    (`SpectralConv`, `Conv`, `Pointwise`) mapping channels to concepts.

    A learnable per-concept threshold in $\\sigma$ plays the role of the encoder bias.
    """

    layer: Callable[[Array], Array]
    sparsity: AbstractSparsity

    def __call__(
        self, x: Float[Array, " c *spatial"], dictionary: AbstractDictionary, grid: Grid
    ) -> Float[Array, " p *code_spatial"]:
        u = self.layer(x)
        expected = dictionary.code_shape(grid)
        if u.shape != expected:
            raise ValueError(
                f"Amortised encoder layer gives codes of shape {u.shape}, but the dictionary "
                f"expects {expected}."
            )
        return self.sparsity(u)


_METHODS = ("ista", "fista")


class Unrolled(AbstractEncoder):
    """A fixed number of proximal-gradient steps on the inner problem, unrolled with
    `jax.lax.scan` and differentiated by backpropagation through the steps:
    $z \\leftarrow \\mathrm{prox}_{tR}(z - t D^*(D z - x))$ (ISTA) or its accelerated form
    (FISTA), from $z = 0$, with $t = 1/\\|D\\|^2$ from power iteration.

    The sparsity module is the proximal map: `SoftThreshold(lam)` solves the lasso with
    penalty `lam`, `TopK(k)` runs iterative hard thresholding.
    """

    sparsity: AbstractSparsity
    steps: int = eqx.field(static=True)
    method: str = eqx.field(static=True)
    power_iterations: int = eqx.field(static=True)
    step_safety: float = eqx.field(static=True)

    def __init__(
        self,
        sparsity: AbstractSparsity,
        steps: int,
        *,
        method: str = "fista",
        power_iterations: int = 30,
        step_safety: float = 1.1,
    ):
        """**Arguments:**

        - `sparsity`: the penalty $R$ and its proximal map.
        - `steps`: $T$, the number of unrolled steps.
        - `method`: `"ista"` or `"fista"`.
        - `power_iterations`: steps of power iteration for $\\|D\\|^2$.
        - `step_safety`: the step is $t = 1/(\\text{safety}\\cdot\\|D\\|^2_{est})$; power
          iteration approaches $\\|D\\|^2$ from below.
        """
        if int(steps) != steps or steps < 1:
            raise ValueError(f"Unrolled needs steps >= 1, got steps={steps}.")
        if method not in _METHODS:
            raise ValueError(f"Unrolled method must be one of {_METHODS}, got {method!r}.")
        if step_safety < 1:
            raise ValueError(f"step_safety must be >= 1, got {step_safety}.")
        self.sparsity = sparsity
        self.steps = int(steps)
        self.method = method
        self.power_iterations = power_iterations
        self.step_safety = step_safety

    def step_size(self, dictionary: AbstractDictionary, grid: Grid) -> Float[Array, " "]:
        """The step $t = 1/(\\text{safety}\\cdot\\|D\\|^2)$, held constant for gradients."""
        lipschitz = operator_norm(dictionary, grid, self.power_iterations)
        return jax.lax.stop_gradient(1.0 / (self.step_safety * lipschitz))

    def __call__(
        self, x: Float[Array, " c *spatial"], dictionary: AbstractDictionary, grid: Grid
    ) -> Float[Array, " p *code_spatial"]:
        t = self.step_size(dictionary, grid)
        target = dictionary.adjoint(x, grid)
        z0 = jnp.zeros_like(target)

        def prox_grad(z):
            return self.sparsity(z - t * (dictionary.normal(z, grid) - target), t)

        if self.method == "ista":

            def ista(z, _):
                return prox_grad(z), None

            z, _ = jax.lax.scan(ista, z0, None, length=self.steps)
            return z

        def fista(state, _):
            z, y, momentum = state
            z_next = prox_grad(y)
            momentum_next = (1 + jnp.sqrt(1 + 4 * momentum**2)) / 2
            y_next = z_next + ((momentum - 1) / momentum_next) * (z_next - z)
            return (z_next, y_next, momentum_next), None

        (z, _, _), _ = jax.lax.scan(fista, (z0, z0, jnp.ones((), x.dtype)), None, length=self.steps)
        return z
