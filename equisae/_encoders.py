import abc
from collections.abc import Callable

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import optimistix as optx
from jaxtyping import Array, Bool, Float, Int

from ._dictionaries import AbstractDictionary, operator_norm
from ._grid import Grid
from ._solvers import AcceleratedFixedPoint
from ._sparsity import AbstractSparsity, BatchTopK, SoftThreshold


class Diagnostics(eqx.Module):
    """How sparse inference went for one example.

    - `steps`: iterations (unrolled, fixed point) or accepted solver steps (ODE flow).
    - `converged`: whether a solver that runs to a tolerance reached it within its step
      budget (always true for encoders with a fixed amount of work).
    - `residual`: the relative fixed-point residual $\\|T(z) - z\\| / \\|z\\|$ of the
      proximal-gradient map $T$ at the returned codes (0 for amortised encoders).
    - `gap`: for the lasso (`SoftThreshold`, no ridge), the relative duality gap
      $(P(z) - P_{dual}(\\theta)) / P(z) \\ge (P(z) - P^*) / P(z)$ of the returned codes: how far
      their objective can be from the optimum, in the $L^2(\\Omega)$ units of the problem, so the
      same number means the same on every grid. float32 resolves it to about 1e-6 to 1e-5 of
      the objective with $\\lambda = 0.1$ (see `_lasso_gap`); NaN for other problems and
      amortised encoders.
    """

    steps: Int[Array, " "]
    converged: Bool[Array, " "]
    residual: Float[Array, " "]
    gap: Float[Array, " "]


class AbstractEncoder(eqx.Module):
    """Sparse inference: maps a signal to codes, given the dictionary.

    `encoder(x, dictionary, grid)` returns codes of shape `dictionary.code_shape(grid)`;
    `encoder.infer(x, dictionary, grid)` returns them with `Diagnostics`, and
    `encoder.infer(x, dictionary, grid, init)` starts an iterative encoder from the codes
    `init` (a warm start, e.g. from a coarser grid: see `multigrid_infer`). Model-based encoders
    solve (or approximately solve) the inner problem
    $z^*(x) = \\arg\\min_z \\tfrac12\\|x - Dz\\|^2_{L^2(\\Omega)} + R(z)$ with the dictionary
    and its adjoint; amortised encoders own their weights. `sparsity` is $R$ (and its
    proximal map, or the activation).
    """

    sparsity: eqx.AbstractVar[AbstractSparsity]

    @abc.abstractmethod
    def infer(
        self,
        x: Float[Array, " c *spatial"],
        dictionary: AbstractDictionary,
        grid: Grid,
        init: Float[Array, " p *code_spatial"] | None = None,
    ) -> tuple[Float[Array, " p *code_spatial"], Diagnostics]:
        """The codes of one signal `x` of shape `(channels, *grid.shape)`, with diagnostics.

        `init`, of shape `dictionary.code_shape(grid)`, is where an iterative encoder starts
        (zero codes when `None`); encoders that do not iterate refuse it.
        """

    def __call__(
        self, x: Float[Array, " c *spatial"], dictionary: AbstractDictionary, grid: Grid
    ) -> Float[Array, " p *code_spatial"]:
        """The codes of one signal `x` of shape `(channels, *grid.shape)`."""
        return self.infer(x, dictionary, grid)[0]


class Amortised(AbstractEncoder):
    """An amortised encoder $z = \\sigma(E x)$ with untied weights $E$: the standard SAE
    encoder when `layer` is a `Linear`, an SAE-NO encoder when it is an operator layer
    (`SpectralConv`, `Conv`, `Pointwise`) mapping channels to concepts.

    A learnable per-concept threshold in $\\sigma$ plays the role of the encoder bias.
    """

    layer: Callable[[Array], Array]
    sparsity: AbstractSparsity

    def preactivations(
        self, x: Float[Array, " c *spatial"], dictionary: AbstractDictionary, grid: Grid
    ) -> Float[Array, " p *code_spatial"]:
        """$u = E x$, the codes before the activation."""
        u = self.layer(x)
        expected = dictionary.code_shape(grid)
        if u.shape != expected:
            raise ValueError(
                f"Amortised encoder layer gives codes of shape {u.shape}, but the dictionary "
                f"expects {expected}."
            )
        return u

    def infer(
        self,
        x: Float[Array, " c *spatial"],
        dictionary: AbstractDictionary,
        grid: Grid,
        init: Float[Array, " p *code_spatial"] | None = None,
    ) -> tuple[Float[Array, " p *code_spatial"], Diagnostics]:
        if init is not None:
            raise ValueError(
                "Amortised encoders compute the codes in one pass and take no init (warm start); "
                "use an iterative encoder (Unrolled, FixedPoint, ODEFlow)."
            )
        u = self.preactivations(x, dictionary, grid)
        zero = jnp.zeros((), jnp.int32)
        nan = jnp.full((), jnp.nan, u.dtype)
        return self.sparsity(u), Diagnostics(zero, jnp.array(True), jnp.zeros((), u.dtype), nan)


def _prox(sparsity: AbstractSparsity, u: Array, step, ridge: float) -> Array:
    """$\\mathrm{prox}_{t(R + \\frac{\\varepsilon}{2}\\|\\cdot\\|^2)}(u)
    = \\mathrm{prox}_{t' R}(u / (1 + t\\varepsilon))$ with $t' = t / (1 + t\\varepsilon)$."""
    if ridge == 0:
        return sparsity(u, step)
    shrink = 1.0 + step * ridge
    return sparsity(u / shrink, step / shrink)


class _ProximalGradient(eqx.Module):
    """The proximal-gradient (ISTA) map of the inner problem, as a callable module so that
    solvers see the same function (and compile once) for every call.

    `args` is `(dictionary, target, step, grid, energy)`: $D$, $D^* x$, the step $t$, the grid
    and $\\|x\\|^2$ (for the duality gap)."""

    sparsity: AbstractSparsity
    ridge: float = eqx.field(static=True)

    def __call__(self, z: Array, args) -> Array:
        dictionary, target, step, grid, _ = args
        return self._map(z, dictionary.normal(z, grid), target, step)

    def _map(self, z: Array, normal: Array, target: Array, step) -> Array:
        return _prox(self.sparsity, z - step * (normal - target), step, self.ridge)

    def with_gap(self, z: Array, args) -> tuple[Array, Array, Array]:
        """$T(z)$, the relative duality gap at $z$ and the rounding error of that gap (both
        NaN unless the problem is the lasso), from one application of $D^*D$."""
        dictionary, target, step, grid, energy = args
        normal = dictionary.normal(z, grid)
        mapped = self._map(z, normal, target, step)
        if not _is_lasso(self.sparsity, self.ridge):
            nan = jnp.full((), jnp.nan, z.dtype)
            return mapped, nan, nan
        return mapped, *_lasso_gap(self.sparsity, z, normal, target, energy)


class _Certified(eqx.Module):
    """The proximal-gradient map with, as `aux`, its duality gap beyond rounding: the
    certificate that `AcceleratedFixedPoint` stops on (NaN: none)."""

    map: _ProximalGradient

    def __call__(self, z: Array, args) -> tuple[Array, Array]:
        mapped, gap, rounding = self.map.with_gap(z, args)
        return mapped, jnp.maximum(gap - rounding, 0.0)


def _is_lasso(sparsity: AbstractSparsity, ridge: float) -> bool:
    return isinstance(sparsity, SoftThreshold) and ridge == 0


def _lasso_gap(
    sparsity: SoftThreshold, z: Array, normal: Array, target: Array, energy: Array
) -> tuple[Float[Array, " "], Float[Array, " "]]:
    """The relative duality gap of the lasso $P(z) = \\frac12\\|x - Dz\\|^2 + \\lambda\\|z\\|_{L^1}$
    (codes as measures on their grid) at $z$, given $D^*Dz$, $D^*x$ and $\\|x\\|^2$.

    With $r = x - Dz$, $g = D^* r$ and the dual point $\\theta = s r$, where
    $s = \\min(1, \\min_k \\lambda_k / \\|g_k\\|_\\infty)$ makes $|D^*\\theta| \\le \\lambda$,
    the gap $P(z) - \\langle\\theta, x\\rangle + \\frac12\\|\\theta\\|^2$ is
    $\\frac12(1 - s)^2\\|r\\|^2 + \\lambda\\|z\\|_{L^1} - s\\langle g, z\\rangle$: no
    difference of large terms. What limits it is the rounding of $g = D^*x - D^*Dz$, a small
    difference of two large functions: about $\\epsilon\\langle |D^*x| + |D^*Dz|, |z|\\rangle$
    ($\\epsilon$ the machine epsilon; measured up to 5.4 times that at the optimum in float32,
    which with $\\lambda = 0.1$ is 1e-6 to 1e-5 of $P$). Returns the relative gap and 16 times
    that rounding level, relative too."""
    weight = Grid(z.shape[1:]).weight
    lam = sparsity._lambda(z)
    gradient = target - normal
    tiny = jnp.finfo(z.dtype).tiny
    fit = jnp.maximum(energy - weight * jnp.sum(z * (2 * target - normal)), 0.0)  # ||x - Dz||^2
    l1 = weight * jnp.sum(lam * jnp.abs(z))
    s = jnp.minimum(1.0, jnp.min(lam / jnp.maximum(jnp.abs(gradient), tiny)))
    gap = 0.5 * (1 - s) ** 2 * fit + l1 - s * weight * jnp.sum(gradient * z)
    rounding = (
        16
        * jnp.finfo(z.dtype).eps
        * weight
        * jnp.sum((jnp.abs(target) + jnp.abs(normal)) * jnp.abs(z))
    )
    primal = jnp.maximum(0.5 * fit + l1, tiny)
    return jax.lax.stop_gradient((jnp.maximum(gap, 0.0) / primal, rounding / primal))


def _relative_residual(z: Array, mapped: Array) -> Float[Array, " "]:
    size = jnp.sqrt(jnp.sum(z**2))
    return jnp.sqrt(jnp.sum((mapped - z) ** 2)) / jnp.maximum(size, jnp.finfo(z.dtype).tiny)


def _check_init(init: Array, target: Array) -> Array:
    """`init` as the starting codes, after checking that it has the shape of the codes."""
    if init.shape != target.shape:
        raise ValueError(
            f"init has shape {tuple(init.shape)}, but the codes of this signal have shape "
            f"{tuple(target.shape)}."
        )
    return init.astype(target.dtype)


_METHODS = ("ista", "fista")


class _AbstractModelBased(AbstractEncoder):
    """Shared by encoders that use the dictionary: the step size from power iteration."""

    sparsity: eqx.AbstractVar[AbstractSparsity]
    ridge: eqx.AbstractVar[float]
    power_iterations: eqx.AbstractVar[int]
    step_safety: eqx.AbstractVar[float]

    def step_size(self, dictionary: AbstractDictionary, grid: Grid) -> Float[Array, " "]:
        """The step $t = 1/(\\text{safety}\\cdot\\|D\\|^2)$, held constant for gradients."""
        lipschitz = operator_norm(dictionary, grid, self.power_iterations)
        return jax.lax.stop_gradient(1.0 / (self.step_safety * lipschitz))

    def _problem(self, x, dictionary, grid):
        step = self.step_size(dictionary, grid)
        target = dictionary.adjoint(x, grid)
        energy = jax.lax.stop_gradient(grid.inner(x, x))
        args = (dictionary, target, step, grid, energy)
        return _ProximalGradient(self.sparsity, self.ridge), args


def _check_tolerances(rtol: float, atol: float) -> None:
    if not (rtol >= 0 and atol >= 0 and rtol + atol > 0):
        raise ValueError(
            f"rtol and atol must be >= 0 and not both 0, got rtol={rtol}, atol={atol}."
        )


def _check_per_example(name: str, sparsity: AbstractSparsity) -> None:
    if isinstance(sparsity, BatchTopK):
        raise ValueError(
            f"{name} solves each example to its own tolerance, but BatchTopK couples the examples "
            "of a batch; use it with Amortised or Unrolled encoders, or use TopK."
        )


def _check_common(ridge: float, power_iterations: int, step_safety: float) -> None:
    if not ridge >= 0:
        raise ValueError(f"ridge must be >= 0, got {ridge}.")
    if int(power_iterations) != power_iterations or power_iterations < 1:
        raise ValueError(f"power_iterations must be >= 1, got {power_iterations}.")
    if not step_safety >= 1:
        raise ValueError(f"step_safety must be >= 1, got {step_safety}.")


class Unrolled(_AbstractModelBased):
    """A fixed number of proximal-gradient steps on the inner problem, unrolled with
    `jax.lax.scan` and differentiated by backpropagation through the steps:
    $z \\leftarrow \\mathrm{prox}_{tR}(z - t D^*(D z - x))$ (ISTA) or its accelerated form
    (FISTA), from $z = 0$ (or from `init`), with $t = 1/\\|D\\|^2$ from power iteration.

    The sparsity module is the proximal map: `SoftThreshold(lam)` solves the lasso with
    penalty `lam`, `TopK(k)` runs iterative hard thresholding. Memory for gradients grows
    linearly with `steps`; `FixedPoint` and `ODEFlow` do not have that cost.
    """

    sparsity: AbstractSparsity
    steps: int = eqx.field(static=True)
    method: str = eqx.field(static=True)
    ridge: float = eqx.field(static=True)
    power_iterations: int = eqx.field(static=True)
    step_safety: float = eqx.field(static=True)

    def __init__(
        self,
        sparsity: AbstractSparsity,
        steps: int,
        *,
        method: str = "fista",
        ridge: float = 0.0,
        power_iterations: int = 30,
        step_safety: float = 1.1,
    ):
        """**Arguments:**

        - `sparsity`: the penalty $R$ and its proximal map.
        - `steps`: $T$, the number of unrolled steps.
        - `method`: `"ista"` or `"fista"`.
        - `ridge`: $\\varepsilon \\ge 0$, an elastic-net term $\\frac{\\varepsilon}{2}\\|z\\|^2$.
        - `power_iterations`: steps of power iteration for $\\|D\\|^2$.
        - `step_safety`: the step is $t = 1/(\\text{safety}\\cdot\\|D\\|^2_{est})$; power
          iteration approaches $\\|D\\|^2$ from below.
        """
        if int(steps) != steps or steps < 1:
            raise ValueError(f"Unrolled needs steps >= 1, got steps={steps}.")
        if method not in _METHODS:
            raise ValueError(f"Unrolled method must be one of {_METHODS}, got {method!r}.")
        _check_common(ridge, power_iterations, step_safety)
        self.sparsity = sparsity
        self.steps = int(steps)
        self.method = method
        self.ridge = ridge
        self.power_iterations = power_iterations
        self.step_safety = step_safety

    def infer(
        self,
        x: Float[Array, " c *spatial"],
        dictionary: AbstractDictionary,
        grid: Grid,
        init: Float[Array, " p *code_spatial"] | None = None,
    ) -> tuple[Float[Array, " p *code_spatial"], Diagnostics]:
        fn, args = self._problem(x, dictionary, grid)
        _, target, step, _, _ = args
        if init is None:
            # the first step from z = 0 needs no D*D: T(0) = prox(t D* x); FISTA's first
            # extrapolation is zero, so both methods continue from (z_1, y_1 = z_1)
            z1 = _prox(self.sparsity, step * target, step, self.ridge)
        else:
            z1 = fn(_check_init(init, target), args)

        if self.method == "ista":

            def ista(z, _):
                return fn(z, args), None

            z, _ = jax.lax.scan(ista, z1, None, length=self.steps - 1)
        else:

            def fista(state, _):
                z, y, momentum = state
                z_next = fn(y, args)
                momentum_next = (1 + jnp.sqrt(1 + 4 * momentum**2)) / 2
                y_next = z_next + ((momentum - 1) / momentum_next) * (z_next - z)
                return (z_next, y_next, momentum_next), None

            momentum = (1 + jnp.sqrt(jnp.asarray(5.0, z1.dtype))) / 2  # after the first step
            (z, _, _), _ = jax.lax.scan(fista, (z1, z1, momentum), None, length=self.steps - 1)
        mapped, gap, _ = fn.with_gap(jax.lax.stop_gradient(z), args)
        residual = jax.lax.stop_gradient(_relative_residual(z, mapped))
        steps = jnp.array(self.steps, jnp.int32)
        return z, Diagnostics(steps, jnp.array(True), residual, gap)


class FixedPoint(_AbstractModelBased):
    """Sparse inference to convergence, as the fixed point $z^* = T(z^*)$ of the
    proximal-gradient map $T(z) = \\mathrm{prox}_{t(R + \\frac{\\varepsilon}{2}\\|\\cdot\\|^2)}
    (z - t D^*(D z - x))$, found by `optimistix.fixed_point`, and differentiated implicitly
    (`optimistix.ImplicitAdjoint`): the gradient solves one linear system with
    $I - \\partial T / \\partial z$ at $z^*$, so its memory does not grow with the iterations.

    The ridge $\\varepsilon > 0$ keeps that system non-singular when the active atoms are
    linearly dependent (lasso supports as large as the signal's dimension). The default linear
    solver, GMRES, is matrix-free: it never forms the Jacobian. `infer` reports whether the
    solver met its tolerance within `max_steps`; the codes are then the last iterate, never NaN.
    """

    sparsity: AbstractSparsity
    ridge: float = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    solver: optx.AbstractFixedPointSolver
    linear_solver: lx.AbstractLinearSolver
    power_iterations: int = eqx.field(static=True)
    step_safety: float = eqx.field(static=True)

    def __init__(
        self,
        sparsity: AbstractSparsity,
        *,
        ridge: float = 1e-3,
        rtol: float = 1e-6,
        atol: float = 1e-6,
        max_steps: int = 2000,
        solver: optx.AbstractFixedPointSolver | None = None,
        linear_solver: lx.AbstractLinearSolver | None = None,
        power_iterations: int = 30,
        step_safety: float = 1.1,
    ):
        """**Arguments:**

        - `sparsity`: the penalty $R$ and its proximal map.
        - `ridge`: $\\varepsilon$, the elastic-net term that keeps the implicit system regular.
        - `rtol`, `atol`: the stopping tolerance on $T(z) - z$ (root mean square); for the
          lasso (`SoftThreshold` with `ridge=0`) the relative duality gap must be within `rtol`
          too, up to its rounding error.
        - `max_steps`: the iteration budget; beyond it the solve is reported as not converged.
        - `solver`: an optimistix fixed-point solver; by default `AcceleratedFixedPoint`
          (FISTA with restarts) with `rtol`, `atol`. It is handed the map with the gap as its
          `aux` (NaN where there is none).
        - `linear_solver`: the lineax solver of the implicit system; by default GMRES.
        - `power_iterations`, `step_safety`: as in `Unrolled`.
        """
        _check_common(ridge, power_iterations, step_safety)
        _check_per_example("FixedPoint", sparsity)
        _check_tolerances(rtol, atol)
        if int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(f"max_steps must be a positive whole number, got {max_steps}.")
        self.sparsity = sparsity
        self.ridge = ridge
        self.rtol = rtol
        self.atol = atol
        self.max_steps = int(max_steps)
        self.solver = AcceleratedFixedPoint(rtol, atol) if solver is None else solver
        self.linear_solver = (
            lx.GMRES(rtol=1e-7, atol=1e-7, max_steps=500)
            if linear_solver is None
            else linear_solver
        )
        self.power_iterations = power_iterations
        self.step_safety = step_safety

    @classmethod
    def from_encoder(
        cls,
        encoder: "Unrolled | FixedPoint",
        *,
        tol: float = 1e-5,
        max_steps: int = 20_000,
    ) -> "FixedPoint":
        """The same inner problem as `encoder` (its sparsity, ridge and step rule), solved to
        the tolerance `tol` (relative and absolute) instead of for a fixed number of steps.

        Train with `Unrolled`, evaluate with `sae.with_encoder(FixedPoint.from_encoder(
        sae.encoder))`: a fixed step count is not resolution-invariant (finer grids need more
        steps before the code mass concentrates), a tolerance is. An `Unrolled` encoder's
        ridge (0 by default) is kept, so the problem is the one the SAE was trained on.

        For the lasso (`SoftThreshold`, no ridge) the solve stops only when the relative
        duality gap is within `tol` as well (`Diagnostics.gap`): the step test alone compares
        $T(z) - z$ with the size of $z$, and a spike of codes is worth $N$ times its mass, so on
        a fine grid it could be met far from the solution (at 256², measured: "converged" with
        code F1 0). The gap is a quantity of $L^2(\\Omega)$ and means the same on every grid; from
        zero codes a fine grid then needs many iterations (about $N$ times more: the code mass
        of a spike builds up a bounded amount per step), so start there from the codes of a
        coarser grid (`multigrid_infer`).

        **Arguments:**

        - `encoder`: an `Unrolled` or `FixedPoint` encoder.
        - `tol`: $> 0$, the stopping tolerance (`rtol` = `atol` = `tol`).
        - `max_steps`: the iteration budget; `Diagnostics.converged` says whether it sufficed.

        **Returns:** a `FixedPoint` encoder.
        """
        if not isinstance(encoder, (Unrolled, FixedPoint)):
            raise ValueError(
                "FixedPoint.from_encoder needs an Unrolled or FixedPoint encoder (one that "
                f"solves the proximal-gradient problem), got {type(encoder).__name__} (for a "
                "Debiased one, pass its .encoder and wrap the result in Debiased again)."
            )
        if not tol > 0:
            raise ValueError(f"tol must be > 0, got {tol}.")
        linear_solver = encoder.linear_solver if isinstance(encoder, FixedPoint) else None
        return cls(
            encoder.sparsity,
            ridge=encoder.ridge,
            rtol=tol,
            atol=tol,
            max_steps=max_steps,
            linear_solver=linear_solver,
            power_iterations=encoder.power_iterations,
            step_safety=encoder.step_safety,
        )

    def infer(
        self,
        x: Float[Array, " c *spatial"],
        dictionary: AbstractDictionary,
        grid: Grid,
        init: Float[Array, " p *code_spatial"] | None = None,
    ) -> tuple[Float[Array, " p *code_spatial"], Diagnostics]:
        fn, args = self._problem(x, dictionary, grid)
        solution = optx.fixed_point(
            _Certified(fn),
            self.solver,
            jnp.zeros_like(args[1]) if init is None else _check_init(init, args[1]),
            args,
            has_aux=True,
            max_steps=self.max_steps,
            adjoint=optx.ImplicitAdjoint(self.linear_solver),
            throw=False,
        )
        z = solution.value
        converged = solution.result == optx.RESULTS.successful
        mapped, gap, _ = fn.with_gap(jax.lax.stop_gradient(z), args)
        residual = jax.lax.stop_gradient(_relative_residual(z, mapped))
        steps = jnp.asarray(solution.stats["num_steps"], jnp.int32)
        return z, Diagnostics(steps, converged, residual, gap)


class Alternating(AbstractEncoder):
    """Alternating minimisation, as classical dictionary learning does it: the codes of
    `encoder` (typically `FixedPoint`, the inner problem solved to a tolerance) are held fixed
    for the gradient, so an optimiser step moves the dictionary only through the decoding
    $\\hat x = D z$, the gradient of $\\frac12\\|x - Dz\\|^2$ with $z$ constant.

    No gradient flows through inference: no backpropagation through unrolled steps and no
    implicit linear solve, so a step costs the inference and one decoding. For the lasso
    objective itself as the loss this is the exact gradient at the optimum (the envelope
    theorem); a different outer loss (an `l1` term, a learned threshold) sees no gradient from
    the codes.

    The recommended training of function SAEs is
    `Alternating(Debiased(Unrolled(SoftThreshold(0.5), 100), 10))` with `SAELoss()`: over the
    families benchmark it recovers more concepts than backpropagation through the same
    inference, and faster. It needs accurate codes (25 FISTA steps lose most of the gain) and
    a spread-out start (`init_from_data`): it does not move an atom from a concept that two
    atoms share to one that none has.
    """

    encoder: AbstractEncoder

    @property
    def sparsity(self) -> AbstractSparsity:
        """The inner encoder's penalty $R$."""
        return self.encoder.sparsity

    def infer(
        self,
        x: Float[Array, " c *spatial"],
        dictionary: AbstractDictionary,
        grid: Grid,
        init: Float[Array, " p *code_spatial"] | None = None,
    ) -> tuple[Float[Array, " p *code_spatial"], Diagnostics]:
        encoder, x, dictionary, init = _constant((self.encoder, x, dictionary, init))
        return encoder.infer(x, dictionary, grid, init)


def _constant(tree):
    """`tree` with no gradient through its floating-point arrays (other leaves kept)."""
    arrays, static = eqx.partition(tree, eqx.is_inexact_array)
    return eqx.combine(jax.lax.stop_gradient(arrays), static)


class _LocallyCompetitive(eqx.Module):
    """The vector field of the locally competitive algorithm, a module so that diffrax
    differentiates through its parameters (the sparsity) and its args (the dictionary)."""

    sparsity: AbstractSparsity
    ridge: float = eqx.field(static=True)

    def __call__(self, t, u: Array, args) -> Array:
        dictionary, target, grid = args
        a = _prox(self.sparsity, u, 1.0, self.ridge)
        return target - u - (dictionary.normal(a, grid) - a)


class ODEFlow(AbstractEncoder):
    """Sparse inference as the steady state of the locally competitive algorithm (LCA),
    $\\dot u = D^* x - u - (D^* D - I)\\,\\sigma(u)$, $z = \\sigma(u)$, with $\\sigma$ the
    proximal map of $R + \\frac{\\varepsilon}{2}\\|\\cdot\\|^2$. Its steady states are exactly
    the minimisers of the inner problem. Solved with `diffrax.diffeqsolve` (adaptive steps)
    until `diffrax.steady_state_event` fires, and differentiated implicitly at the steady state
    (`diffrax.ImplicitAdjoint`).

    `infer` reports whether the steady state was reached within `max_steps` solver steps; the
    codes are then those at the last step, never NaN. A warm start `init` is the flow's
    starting state $u(0)$.
    """

    sparsity: AbstractSparsity
    ridge: float = eqx.field(static=True)
    rtol: float = eqx.field(static=True)
    atol: float = eqx.field(static=True)
    max_steps: int = eqx.field(static=True)
    solver: diffrax.AbstractSolver
    linear_solver: lx.AbstractLinearSolver

    def __init__(
        self,
        sparsity: AbstractSparsity,
        *,
        ridge: float = 1e-3,
        rtol: float = 1e-6,
        atol: float = 1e-6,
        max_steps: int = 2000,
        solver: diffrax.AbstractSolver | None = None,
        linear_solver: lx.AbstractLinearSolver | None = None,
    ):
        """**Arguments:**

        - `sparsity`: the penalty $R$; its proximal map with unit step is $\\sigma$.
        - `ridge`: $\\varepsilon$, the elastic-net term that keeps the implicit system regular.
        - `rtol`, `atol`: the steady-state test $\\|\\dot u\\| \\le$ `atol` + `rtol`
          $\\|u\\|$ (root mean square); the step-size controller works at a tenth of them, or
          the flow creeps towards the steady state at the kinks of $\\sigma$ and never meets the
          test.
        - `max_steps`: the solver-step budget.
        - `solver`: a diffrax solver, `diffrax.Tsit5()` by default.
        - `linear_solver`: the lineax solver of the implicit system; by default LSMR
          (matrix-free least squares).
        """
        if not ridge >= 0:
            raise ValueError(f"ridge must be >= 0, got {ridge}.")
        _check_per_example("ODEFlow", sparsity)
        if int(max_steps) != max_steps or max_steps < 1:
            raise ValueError(f"max_steps must be a positive whole number, got {max_steps}.")
        self.sparsity = sparsity
        self.ridge = ridge
        self.rtol = rtol
        self.atol = atol
        self.max_steps = int(max_steps)
        self.solver = diffrax.Tsit5() if solver is None else solver
        # diffrax's implicit system maps the saved state (with its time axis) to the vector field
        # (without): same size, different structure, so a least-squares solver: LSMR, which is
        # matrix-free
        self.linear_solver = (
            lx.LSMR(rtol=1e-7, atol=1e-7, max_steps=1000)
            if linear_solver is None
            else linear_solver
        )

    def infer(
        self,
        x: Float[Array, " c *spatial"],
        dictionary: AbstractDictionary,
        grid: Grid,
        init: Float[Array, " p *code_spatial"] | None = None,
    ) -> tuple[Float[Array, " p *code_spatial"], Diagnostics]:
        target = dictionary.adjoint(x, grid)
        field = _LocallyCompetitive(self.sparsity, self.ridge)
        norm = optx.rms_norm
        solution = diffrax.diffeqsolve(
            diffrax.ODETerm(field),
            self.solver,
            t0=0.0,
            t1=jnp.inf,
            dt0=None,
            y0=jnp.zeros_like(target) if init is None else _check_init(init, target),
            args=(dictionary, target, grid),
            saveat=diffrax.SaveAt(t1=True),
            stepsize_controller=diffrax.PIDController(
                rtol=0.1 * self.rtol, atol=0.1 * self.atol, norm=norm
            ),
            event=diffrax.Event(diffrax.steady_state_event(self.rtol, self.atol, norm)),
            adjoint=diffrax.ImplicitAdjoint(self.linear_solver),
            max_steps=self.max_steps,
            throw=False,
        )
        u = solution.ys[0]
        z = _prox(self.sparsity, u, 1.0, self.ridge)
        converged = diffrax.is_event(solution.result)
        # the residual of the proximal-gradient map with the step of the flow (t = 1 / |D|^2)
        step = jax.lax.stop_gradient(1.0 / operator_norm(dictionary, grid, 30))
        energy = jax.lax.stop_gradient(grid.inner(x, x))
        mapped, gap, _ = _ProximalGradient(self.sparsity, self.ridge).with_gap(
            jax.lax.stop_gradient(z), (dictionary, target, step, grid, energy)
        )
        residual = jax.lax.stop_gradient(_relative_residual(z, mapped))
        steps = jnp.asarray(solution.stats["num_accepted_steps"], jnp.int32)
        return z, Diagnostics(steps, converged, residual, gap)
