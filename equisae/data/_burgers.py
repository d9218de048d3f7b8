import math
import os

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._grid import Grid
from ._pde import PDEData, cached, check_num, check_resolution, gaussian_random_field, key_meta


class _IntegratingFactorField(eqx.Module):
    """The right-hand side of Burgers' equation in integrating-factor form over one step:
    with $\\hat v(\\tau) = e^{\\nu k^2 \\tau} \\hat u(t_0 + \\tau)$,
    $d\\hat v / d\\tau = -e^{\\nu k^2 \\tau} \\tfrac{i k}{2} \\widehat{u^2}$ (dealiased).
    The state is $\\hat v$ as stacked real and imaginary parts."""

    n: int = eqx.field(static=True)

    def __call__(self, tau, y, args):
        decay, wavenumber, keep = args
        factor = jnp.exp(decay * tau)
        u_hat = (y[0] + 1j * y[1]) / factor
        u = jnp.fft.irfft(u_hat, n=self.n, norm="forward")
        flux_hat = jnp.fft.rfft(u * u, norm="forward") * keep
        dv = factor * (-0.5j * wavenumber) * flux_hat
        return jnp.stack([dv.real, dv.imag])


def solve_burgers(
    u0: Float[Array, " 1 n"],
    *,
    viscosity: float,
    time: float,
    steps: int,
    solver: diffrax.AbstractRungeKutta = diffrax.Bosh3(),
) -> Float[Array, " 1 n"]:
    """The viscous Burgers equation $u_t + (u^2/2)_x = \\nu u_{xx}$ on the periodic domain
    $[0, 1)$, solved pseudo-spectrally from `u0` to `time`.

    The nonlinear term is computed on the grid and dealiased by the 2/3 rule (Fourier modes
    $|f| \\ge n/3$ of $u^2$ are dropped); the viscous term is integrated exactly by an
    integrating factor restarted at every step, $\\hat u(t + \\Delta t) =
    e^{-\\nu k^2 \\Delta t} \\hat v(\\Delta t)$ with $k = 2\\pi f$, and $\\hat v$ advanced by one
    step of an explicit diffrax Runge–Kutta `solver` (an integrating-factor, or Lawson,
    Runge–Kutta method: stable for any $\\nu$; the step only has to resolve advection,
    $\\Delta t\\, k_{max} \\max|u| \\lesssim 2$ with $k_{max} = 2\\pi n/3$, see `burgers_steps`).
    The mean of $u$ (mode 0) is conserved exactly. Acts on one function; vmap for batches.

    **Arguments:** `u0` of shape `(1, n)`; `viscosity` $\\nu \\ge 0$; `time` $T > 0$; `steps`,
    the number of equal time steps; `solver`, an explicit Runge–Kutta method of diffrax
    (default `Bosh3`, third order).

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
    n = u0.shape[1]
    dt = time / int(steps)
    frequency = jnp.arange(n // 2 + 1)
    wavenumber = 2 * jnp.pi * frequency
    decay = (viscosity * wavenumber**2).astype(u0.dtype)
    keep = (frequency < n / 3).astype(u0.dtype)
    args = (decay, wavenumber.astype(u0.dtype), keep)
    term = diffrax.ODETerm(_IntegratingFactorField(n))
    if not isinstance(solver, diffrax.AbstractERK):
        raise ValueError(f"solver must be an explicit Runge-Kutta method, got {solver}.")

    def pack(u_hat):
        return jnp.stack([u_hat.real, u_hat.imag])

    u_hat = jnp.fft.rfft(u0[0], norm="forward")
    state = solver.init(term, 0.0, dt, pack(u_hat), args)

    def step(carry, _):
        u_hat, state = carry
        v, _, _, state, _ = solver.step(term, 0.0, dt, pack(u_hat), args, state, made_jump=True)
        return ((v[0] + 1j * v[1]) * jnp.exp(-decay * dt), state), None

    (u_hat, _), _ = jax.lax.scan(step, (u_hat, state), None, length=int(steps))
    return jnp.fft.irfft(u_hat, n=n, norm="forward")[None].astype(u0.dtype)


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
    cache: str | os.PathLike | None = None,
) -> PDEData:
    """`num` solutions of the 1-D viscous Burgers equation $u_t + (u^2/2)_x = \\nu u_{xx}$ on
    the periodic domain $[0, 1)$: inputs $u_0$, outputs $u(T)$, both of shape `(num, 1, n)`.

    Initial conditions are drawn from `gaussian_random_field` on the solver grid of `fine`
    points (defaults: $\\mathcal N(0, 625(-\\Delta + 25 I)^{-2})$, zero mean, as in Li et al.
    2021), solved there by `solve_burgers` and subsampled to `n` points, so that the same key
    gives the same functions at every output resolution dividing `fine`.

    **Arguments:**

    - `key`: a `jax.random` key; same key, same data.
    - `num`, `n`: the number of samples and output grid points.
    - `viscosity`, `time`: $\\nu$ and $T$.
    - `fine`: the solver grid, a multiple of `n`.
    - `steps`: time steps; by default `burgers_steps` of the initial conditions.
    - `alpha`, `tau`, `sigma`: the random field of the initial conditions.
    - `cache`: a path to an `.npz` file: loaded when it holds data made with the same
      arguments, else written after computing.
    """
    num = check_num(num)
    check_resolution(n, fine, 1)
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
    }

    def compute() -> PDEData:
        grid = Grid(fine)
        u0 = jax.vmap(lambda k: gaussian_random_field(k, grid, alpha=alpha, tau=tau, sigma=sigma))(
            jr.split(key, num)
        )
        count = burgers_steps(u0, time) if steps is None else steps
        solve = jax.jit(
            jax.vmap(lambda u: solve_burgers(u, viscosity=viscosity, time=time, steps=count))
        )
        u_t = solve(u0)
        stride = fine // n
        return PDEData(u0[..., ::stride], u_t[..., ::stride])

    return cached(cache, meta, compute)
