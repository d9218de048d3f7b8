import math
import os

import equinox as eqx
import exponax
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._grid import Grid
from ._pde import PDEData, cached, check_num, check_resolution, gaussian_random_field, key_meta


def solve_burgers(
    u0: Float[Array, " 1 n"],
    *,
    viscosity: float,
    time: float,
    steps: int,
    order: int = 3,
) -> Float[Array, " 1 n"]:
    """The viscous Burgers equation $u_t + (u^2/2)_x = \\nu u_{xx}$ on the periodic domain
    $[0, 1)$, solved from `u0` to `time` by exponax (`exponax.stepper.Burgers`): a
    pseudo-spectral method whose nonlinear term is dealiased by the 2/3 rule, advanced by an
    exponential time-differencing Runge–Kutta method (ETDRK of `order` 1 to 4) that integrates
    the viscous term exactly, so that it is stable for any $\\nu$; the step only has to
    resolve advection, $\\Delta t\\, k_{max} \\max|u| \\lesssim 2$ with
    $k_{max} = 2\\pi n/3$ (see `burgers_steps`). The mean of $u$ (mode 0) is conserved exactly.
    Acts on one function; vmap for batches.

    **Arguments:** `u0` of shape `(1, n)`; `viscosity` $\\nu \\ge 0$; `time` $T > 0$; `steps`,
    the number of equal time steps; `order` of the ETDRK method (default 3, the order of
    the Runge–Kutta method of equisae's own solver, which this one replaced).

    **Returns:** $u(T)$ on the same grid, shape `(1, n)`.
    """
    if u0.ndim != 2 or u0.shape[0] != 1 or u0.shape[1] < 4:
        raise ValueError(f"u0 must have shape (1, n) with n >= 4, got {tuple(u0.shape)}.")
    if not (np.isfinite(viscosity) and viscosity >= 0):
        raise ValueError(f"viscosity must be >= 0, got {viscosity}.")
    if not (np.isfinite(time) and time > 0):
        raise ValueError(f"time must be positive, got {time}.")
    if int(steps) != steps or steps < 1:
        raise ValueError(f"steps must be a positive whole number, got {steps}.")
    if order not in (1, 2, 3, 4):
        raise ValueError(f"order must be 1, 2, 3 or 4, got {order}.")
    stepper = _stepper(u0.shape[1], viscosity, time / int(steps), order)
    return exponax.repeat(stepper, int(steps))(u0).astype(u0.dtype)


def _stepper(n: int, viscosity: float, dt: float, order: int) -> exponax.stepper.Burgers:
    return exponax.stepper.Burgers(
        1, 1.0, int(n), float(dt), diffusivity=float(viscosity), order=int(order)
    )


class _Solve(eqx.Module):
    stepper: exponax.stepper.Burgers
    steps: int = eqx.field(static=True)

    def __call__(self, u0):
        return exponax.repeat(self.stepper, self.steps)(u0)


@eqx.filter_jit
def _solve_batch(solve: _Solve, u0: Array) -> Array:
    return jax.vmap(solve)(u0)


def burgers_steps(u0: Float[Array, " batch 1 n"], time: float, courant: float = 2.0) -> int:
    """The number of steps for which $\\Delta t \\cdot 2\\pi (n/3) \\max|u_0| \\le$ `courant`
    (Burgers' maximum principle keeps $\\max|u| \\le \\max|u_0|$), at least 10."""
    n = u0.shape[-1]
    speed = float(jnp.max(jnp.abs(u0)))
    return max(10, math.ceil(time * 2 * math.pi * (n / 3) * speed / courant))


def burgers(
    key: PRNGKeyArray,
    num: int,
    n: int,
    *,
    viscosity: float = 0.02,
    time: float = 1.0,
    fine: int = 512,
    steps: int | None = None,
    alpha: float = 2.0,
    tau: float = 5.0,
    sigma: float = 25.0,
    order: int = 3,
    cache: str | os.PathLike | None = None,
) -> PDEData:
    """`num` solutions of the 1-D viscous Burgers equation $u_t + (u^2/2)_x = \\nu u_{xx}$ on
    the periodic domain $[0, 1)$: inputs $u_0$, outputs $u(T)$, both of shape `(num, 1, n)`.

    Initial conditions are drawn from `gaussian_random_field` on the solver grid of `fine`
    points (defaults: $\\mathcal N(0, 625(-\\Delta + 25 I)^{-2})$, zero mean, as in Li et al.
    2021), solved there by exponax (`solve_burgers`, ETDRK of `order`) and subsampled to
    `n` points, so that the same key gives the same functions at every output resolution
    dividing `fine`.

    **Arguments:**

    - `key`: a `jax.random` key; same key, same data.
    - `num`, `n`: the number of samples and output grid points.
    - `viscosity`, `time`: $\\nu$ and $T$.
    - `fine`: the solver grid, a multiple of `n`.
    - `steps`: time steps; by default `burgers_steps` of the initial conditions.
    - `order`: of the ETDRK method (1 to 4).
    - `alpha`, `tau`, `sigma`: the random field of the initial conditions.
    - `cache`: a path to an `.npz` file: loaded when it holds data made with the same
      arguments, else written after computing.
    """
    num = check_num(num)
    check_resolution(n, fine, 1)
    if order not in (1, 2, 3, 4):
        raise ValueError(f"order must be 1, 2, 3 or 4, got {order}.")
    meta = {
        "generator": "burgers",
        "key": key_meta(key),
        "num": num,
        "n": int(n),
        "fine": int(fine),
        "viscosity": float(viscosity),
        "time": float(time),
        "steps": steps,
        "field": [float(alpha), float(tau), float(sigma)],
        "solver": f"exponax {exponax.__version__} ETDRK{int(order)}",
    }

    def compute() -> PDEData:
        grid = Grid(fine)
        u0 = jax.vmap(lambda k: gaussian_random_field(k, grid, alpha=alpha, tau=tau, sigma=sigma))(
            jr.split(key, num)
        )
        count = burgers_steps(u0, time) if steps is None else steps
        u_t = _solve_batch(_Solve(_stepper(fine, viscosity, time / count, order), count), u0)
        stride = fine // n
        return PDEData(u0[..., ::stride], u_t[..., ::stride])

    return cached(cache, meta, compute)
