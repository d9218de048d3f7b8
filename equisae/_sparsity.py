import abc

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float


def _check_nonnegative(name: str, value) -> None:
    if isinstance(value, jax.core.Tracer):
        return
    value = np.asarray(value)
    if not np.all(np.isfinite(value)) or np.any(value < 0):
        raise ValueError(f"{name} must be finite and non-negative, got {value}.")


def _effective_threshold(threshold: Array, learnable: bool, u: Array) -> Array:
    """$\\max(\\lambda, 0)$, without a gradient unless learnable, broadcast against `u`."""
    lam = threshold if learnable else jax.lax.stop_gradient(threshold)
    return _per_concept(jnp.maximum(lam, 0.0), u)


def _per_concept(value: Array, u: Array) -> Array:
    """Broadcast a scalar or a `(p,)` array against codes `u` of shape `(p, *spatial)`."""
    if value.ndim == 0:
        return value
    if value.shape != u.shape[:1]:
        raise ValueError(
            f"per-concept threshold has shape {value.shape}, expected ({u.shape[0]},) "
            f"for codes of shape {u.shape}."
        )
    return value.reshape(value.shape + (1,) * (u.ndim - 1))


class AbstractSparsity(eqx.Module):
    """A sparsity penalty $R$ and its proximal map.

    Called as an activation it is $\\sigma(u) = \\mathrm{prox}_R(u)$; called with a step $t$
    by a model-based encoder it is
    $\\mathrm{prox}_{tR}(u) = \\arg\\min_z \\tfrac12\\|z - u\\|^2 + t R(z)$.
    The penalty acts entrywise, so the same map is the proximal map in the quadrature-weighted
    inner product of function codes.
    """

    @abc.abstractmethod
    def __call__(
        self, u: Float[Array, " *shape"], step: float | Float[ArrayLike, " "] = 1.0
    ) -> Float[Array, " *shape"]:
        """$\\mathrm{prox}_{tR}(u)$ for the step $t$ = `step`."""

    @abc.abstractmethod
    def penalty(self, z: Float[Array, " *shape"]) -> Float[Array, " "]:
        """$R(z)$, summed over all entries (`inf` outside the penalty's domain)."""


class SoftThreshold(AbstractSparsity):
    """The $\\ell^1$ penalty $R(z) = \\lambda \\|z\\|_1$ and its proximal map, two-sided soft
    thresholding $\\mathrm{sign}(u)\\max(|u| - t\\lambda, 0)$.

    `threshold` $\\lambda$ is a scalar or one value per concept (shape `(p,)`). It is fixed
    unless `learnable=True`; a learned threshold is used through $\\max(\\lambda, 0)$.
    """

    threshold: Float[Array, " *p"]
    learnable: bool = eqx.field(static=True)

    def __init__(self, threshold: float | Float[ArrayLike, " *p"], *, learnable: bool = False):
        _check_nonnegative("SoftThreshold threshold (lambda)", threshold)
        self.threshold = jnp.asarray(threshold, dtype=float)
        self.learnable = learnable

    def _lambda(self, u: Array) -> Array:
        return _effective_threshold(self.threshold, self.learnable, u)

    def __call__(
        self, u: Float[Array, " *shape"], step: float | Float[ArrayLike, " "] = 1.0
    ) -> Float[Array, " *shape"]:
        return jnp.sign(u) * jax.nn.relu(jnp.abs(u) - step * self._lambda(u))

    def penalty(self, z: Float[Array, " *shape"]) -> Float[Array, " "]:
        return jnp.sum(self._lambda(z) * jnp.abs(z))


class NonNegSoftThreshold(AbstractSparsity):
    """The non-negative $\\ell^1$ penalty $R(z) = \\lambda \\sum z$ on $z \\ge 0$ ($+\\infty$
    elsewhere) and its proximal map $\\max(u - t\\lambda, 0)$: a ReLU with threshold.

    With `threshold=0` it is the plain ReLU; with a learnable per-concept threshold it is the
    ReLU-with-bias activation of a standard SAE.
    """

    threshold: Float[Array, " *p"]
    learnable: bool = eqx.field(static=True)

    def __init__(
        self, threshold: float | Float[ArrayLike, " *p"] = 0.0, *, learnable: bool = False
    ):
        _check_nonnegative("NonNegSoftThreshold threshold (lambda)", threshold)
        self.threshold = jnp.asarray(threshold, dtype=float)
        self.learnable = learnable

    def _lambda(self, u: Array) -> Array:
        return _effective_threshold(self.threshold, self.learnable, u)

    def __call__(
        self, u: Float[Array, " *shape"], step: float | Float[ArrayLike, " "] = 1.0
    ) -> Float[Array, " *shape"]:
        return jax.nn.relu(u - step * self._lambda(u))

    def penalty(self, z: Float[Array, " *shape"]) -> Float[Array, " "]:
        value = jnp.sum(self._lambda(z) * z)
        return jnp.where(jnp.all(z >= 0), value, jnp.inf)


class TopK(AbstractSparsity):
    """The constraint $\\|z\\|_0 \\le k$ ($R = 0$ on $k$-sparse codes, $+\\infty$ elsewhere) and
    its proximal map, the projection that keeps the $k$ entries of largest magnitude.

    With `nonnegative=True` the constraint is $z \\ge 0, \\|z\\|_0 \\le k$: the $k$ largest
    entries of $\\max(u, 0)$ are kept (the TopK activation of SAELens). For function codes of
    shape `(p, *spatial)`, $k$ counts entries over concepts and grid points together.
    The step does not matter: the projection is the same for every $t > 0$.
    """

    k: int = eqx.field(static=True)
    nonnegative: bool = eqx.field(static=True)

    def __init__(self, k: int, *, nonnegative: bool = False):
        if int(k) != k or k < 1:
            raise ValueError(f"TopK needs a positive whole number k, got k={k}.")
        self.k = int(k)
        self.nonnegative = nonnegative

    def __call__(
        self, u: Float[Array, " *shape"], step: float | Float[ArrayLike, " "] = 1.0
    ) -> Float[Array, " *shape"]:
        if self.k > u.size:
            raise ValueError(
                f"TopK(k={self.k}) keeps more entries than the codes have: codes of shape "
                f"{u.shape} have {u.size}. Choose k <= {u.size} (k <= p for vector codes)."
            )
        flat = jax.nn.relu(u.ravel()) if self.nonnegative else u.ravel()
        _, index = jax.lax.top_k(jnp.abs(flat), self.k)
        return jnp.zeros_like(flat).at[index].set(flat[index]).reshape(u.shape)

    def penalty(self, z: Float[Array, " *shape"]) -> Float[Array, " "]:
        feasible = jnp.sum(z != 0) <= self.k
        if self.nonnegative:
            feasible = feasible & jnp.all(z >= 0)
        return jnp.where(feasible, 0.0, jnp.inf)
