import abc
import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int


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

    def l0(self, u: Float[Array, " *shape"]) -> Float[Array, " "]:
        """The number of non-zero codes the activation gives for pre-activations `u` (without
        a gradient; `JumpReLU` gives its threshold a straight-through one)."""
        return jnp.sum(jax.lax.stop_gradient(self(u)) != 0).astype(u.dtype)


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
        threshold = step * self._lambda(u)
        # as a select, backpropagation keeps only the boolean mask |u| > t lam per call (not
        # a float array such as sign(u)): much less memory traffic through unrolled steps
        return jnp.where(jnp.abs(u) > threshold, u - jnp.sign(u) * threshold, 0.0)

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


def _kth_largest(values: Array, k: Array) -> Array:
    """The k-th largest entry of a flat array, for a k that may be traced (a sweep over k)."""
    k = jnp.clip(k, 1, values.size)
    return jnp.take(jnp.sort(values), values.size - k)


def _as_k(name: str, k) -> Array:
    """`k` as an int32 array, checked to be a positive whole number unless traced (a sweep)."""
    if not isinstance(k, jax.core.Tracer) and (int(k) != k or k < 1):
        raise ValueError(f"{name} needs a positive whole number k, got k={k}.")
    return jnp.asarray(k, jnp.int32)


def _check_k(name: str, k, size: int, shape) -> None:
    if not isinstance(k, jax.core.Tracer) and int(k) > size:
        raise ValueError(
            f"{name}(k={int(k)}) keeps more entries than the codes have: codes of shape "
            f"{shape} have {size}. Choose k <= {size} (k <= p for vector codes)."
        )


class TopK(AbstractSparsity):
    """The constraint $\\|z\\|_0 \\le k$ ($R = 0$ on $k$-sparse codes, $+\\infty$ elsewhere) and
    its proximal map, the projection that keeps the $k$ entries of largest magnitude.

    With `nonnegative=True` the constraint is $z \\ge 0, \\|z\\|_0 \\le k$: the $k$ largest
    entries of $\\max(u, 0)$ are kept (the TopK activation of SAELens). For function codes of
    shape `(p, *spatial)`, $k$ counts entries over concepts and grid points together.
    The step does not matter: the projection is the same for every $t > 0$. `k` is an array, so
    a sweep over $k$ can be trained as one vmapped program.
    """

    k: Int[Array, " "]
    nonnegative: bool = eqx.field(static=True)

    def __init__(self, k: int | Int[ArrayLike, " "], *, nonnegative: bool = False):
        self.k = _as_k("TopK", k)
        self.nonnegative = nonnegative

    def __call__(
        self, u: Float[Array, " *shape"], step: float | Float[ArrayLike, " "] = 1.0
    ) -> Float[Array, " *shape"]:
        _check_k("TopK", self.k, u.size, u.shape)
        candidates = jax.nn.relu(u) if self.nonnegative else u
        magnitude = jnp.abs(candidates)
        keep = (magnitude >= _kth_largest(magnitude.ravel(), self.k)) & (magnitude > 0)
        return jnp.where(keep, candidates, 0.0)

    def penalty(self, z: Float[Array, " *shape"]) -> Float[Array, " "]:
        feasible = jnp.sum(z != 0) <= self.k
        if self.nonnegative:
            feasible = feasible & jnp.all(z >= 0)
        return jnp.where(feasible, 0.0, jnp.inf)


class BatchTopK(AbstractSparsity):
    """BatchTopK: keeps the $k B$ largest entries of $\\max(u, 0)$ over a batch of $B$
    examples together, so each example has $k$ active entries on average (Bussmann et al., 2024).

    It couples the examples of a batch, so it must run under
    `jax.vmap(..., axis_name=axis_name)` (`SAELoss` and `fit` do this); it is an activation
    for `Amortised` encoders and a proximal map for `Unrolled` ones, not for encoders that
    solve to a tolerance per example.
    """

    k: Int[Array, " "]
    axis_name: str = eqx.field(static=True)

    def __init__(self, k: int | Int[ArrayLike, " "], *, axis_name: str = "batch"):
        self.k = _as_k("BatchTopK", k)
        self.axis_name = axis_name

    def __call__(
        self, u: Float[Array, " *shape"], step: float | Float[ArrayLike, " "] = 1.0
    ) -> Float[Array, " *shape"]:
        _check_k("BatchTopK", self.k, u.size, u.shape)
        candidates = jax.nn.relu(u)
        try:
            batch = jax.lax.all_gather(candidates.ravel(), self.axis_name)
        except NameError as error:
            raise ValueError(
                f"BatchTopK needs the whole batch: call the model under "
                f"jax.vmap(..., axis_name={self.axis_name!r}) (SAELoss and fit do)."
            ) from error
        threshold = _kth_largest(batch.ravel(), self.k * batch.shape[0])
        return jnp.where((candidates >= threshold) & (candidates > 0), candidates, 0.0)

    def penalty(self, z: Float[Array, " *shape"]) -> Float[Array, " "]:
        """0 on non-negative codes (the constraint holds over the batch, not per example)."""
        return jnp.where(jnp.all(z >= 0), 0.0, jnp.inf)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _jump(u: Array, threshold: Array, bandwidth: float) -> Array:
    return jnp.where(u > threshold, u, 0.0)


def _jump_fwd(u, threshold, bandwidth):
    return _jump(u, threshold, bandwidth), (u, threshold)


def _rectangle(x: Array) -> Array:
    return (jnp.abs(x) < 0.5).astype(x.dtype)


def _jump_bwd(bandwidth, residuals, cotangent):
    u, threshold = residuals
    du = jnp.where(u > threshold, cotangent, 0.0)
    # straight-through estimate of d/dtheta [u H(u - theta)] with a rectangle kernel
    dthreshold = -cotangent * (threshold / bandwidth) * _rectangle((u - threshold) / bandwidth)
    return du, dthreshold


_jump.defvjp(_jump_fwd, _jump_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2,))
def _step(u: Array, threshold: Array, bandwidth: float) -> Array:
    return (u > threshold).astype(u.dtype)


def _step_fwd(u, threshold, bandwidth):
    return _step(u, threshold, bandwidth), (u, threshold)


def _step_bwd(bandwidth, residuals, cotangent):
    u, threshold = residuals
    dthreshold = -cotangent * _rectangle((u - threshold) / bandwidth) / bandwidth
    return jnp.zeros_like(u), dthreshold


_step.defvjp(_step_fwd, _step_bwd)


class JumpReLU(AbstractSparsity):
    """JumpReLU, $z = u\\, H(u - \\theta)$ with a learned threshold $\\theta$ per concept
    (Rajamanoharan et al., 2024): the proximal map of
    $R(z) = \\tfrac{\\theta^2}{2}\\|z\\|_0$ on $z \\ge 0$, which with step $t$ keeps
    $u > \\theta\\sqrt t$ (hard thresholding).

    The threshold gets gradients through a straight-through estimator with a rectangle kernel of
    width `bandwidth`: $\\partial z / \\partial\\theta = -\\frac{\\theta}{\\varepsilon}
    K(\\frac{u - \\theta}{\\varepsilon})$. `l0(u)` is the differentiable $L_0$ count of the
    same paper. The threshold is stored as it is (not as a log) and kept in float32.
    """

    threshold: Float[Array, " *p"]
    bandwidth: float = eqx.field(static=True)

    def __init__(self, threshold: float | Float[ArrayLike, " *p"], *, bandwidth: float = 1e-3):
        _check_nonnegative("JumpReLU threshold", threshold)
        if not bandwidth > 0:
            raise ValueError(f"JumpReLU bandwidth must be > 0, got {bandwidth}.")
        self.threshold = jnp.asarray(threshold, jnp.float32)
        self.bandwidth = bandwidth

    def _theta(self, u: Array, step) -> Array:
        theta = _per_concept(jnp.maximum(self.threshold, 0.0), u) * jnp.sqrt(step)
        return jnp.broadcast_to(theta, u.shape).astype(u.dtype)

    def __call__(
        self, u: Float[Array, " *shape"], step: float | Float[ArrayLike, " "] = 1.0
    ) -> Float[Array, " *shape"]:
        return _jump(u, self._theta(u, step), self.bandwidth)

    def penalty(self, z: Float[Array, " *shape"]) -> Float[Array, " "]:
        theta = self._theta(z, 1.0)
        value = jnp.sum(0.5 * theta**2 * (z != 0))
        return jnp.where(jnp.all(z >= 0), value, jnp.inf)

    def l0(self, u: Float[Array, " *shape"]) -> Float[Array, " "]:
        """$\\sum H(u - \\theta)$ with the straight-through gradient for $\\theta$."""
        return jnp.sum(_step(u, self._theta(u, 1.0), self.bandwidth))
