import os
from collections.abc import Callable

import equinox as eqx
import exponax
import jax
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from ._pde import PDEData, cached, check_num, check_resolution, key_meta


def _check_positive(**values) -> None:
    for name, value in values.items():
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"{name} must be positive, got {value}.")


def _check_count(name: str, value: int, minimum: int) -> int:
    if int(value) != value or value < minimum:
        raise ValueError(f"{name} must be a whole number >= {minimum}, got {value}.")
    return int(value)


class _Pairs(eqx.Module):
    """Initial condition, then `warmup` steps to the input and `steps` more to the output."""

    stepper: Callable
    initial_condition: Callable
    fine: int = eqx.field(static=True)
    warmup: int = eqx.field(static=True)
    steps: int = eqx.field(static=True)

    def __call__(self, key: PRNGKeyArray) -> tuple[Array, Array]:
        u = self.initial_condition(self.fine, key=key)
        if self.warmup:
            u = exponax.repeat(self.stepper, self.warmup)(u)
        return u, exponax.repeat(self.stepper, self.steps)(u)


@eqx.filter_jit
def _solve_pairs(pairs: _Pairs, keys: Array) -> tuple[Array, Array]:
    return jax.vmap(pairs)(keys)


def exponax_pairs(
    key: PRNGKeyArray,
    stepper: Callable[[Float[Array, " c *spatial"]], Float[Array, " c *spatial"]],
    initial_condition: Callable[..., Float[Array, " c *spatial"]],
    num: int,
    n: int,
    *,
    steps: int,
    warmup: int = 0,
    cache: str | os.PathLike | None = None,
    meta: dict | None = None,
) -> PDEData:
    """`num` input–output pairs of a time-dependent PDE solved by an exponax stepper: from a
    random initial condition, `warmup` steps to the input $u(t_0)$, then `steps` more to the
    output $u(t_0 + \\text{steps} \\cdot \\Delta t)$, both subsampled from the stepper's grid to
    `n` points per axis. This is how every named generator here (`burgers`,
    `kuramoto_sivashinsky`, `korteweg_de_vries`, `navier_stokes`) is built; use it for any other
    equation exponax has (its `stepper` module lists them).

    **Arguments:**

    - `key`: a `jax.random` key; same key, same data.
    - `stepper`: an exponax stepper (`exponax.stepper.*`) on a grid of `fine` points per axis
      (its `num_points`), on the periodic domain; one call advances one time step.
    - `initial_condition`: an exponax random initial-condition generator
      (`exponax.ic.*`, called as `initial_condition(fine, key=...)`).
    - `num`, `n`: the number of pairs and of output grid points per axis (dividing `fine`).
    - `steps`, `warmup`: time steps between input and output, and before the input.
    - `cache`: an `.npz` path (loaded when made with the same arguments, else written).
    - `meta`: what identifies the data in the cache (default: the stepper's and the initial
      condition's `repr`, which list their parameters).

    **Returns:** `PDEData(inputs, outputs)`, each of shape `(num, channels, n, ...)`.
    """
    num = check_num(num)
    fine = getattr(stepper, "num_points", None)
    ndim = getattr(stepper, "num_spatial_dims", None)
    if fine is None or ndim is None:
        raise ValueError(
            f"stepper must be an exponax stepper (with num_points and num_spatial_dims), got "
            f"{type(stepper).__name__}."
        )
    check_resolution(n, fine, ndim)
    steps = _check_count("steps", steps, 1)
    warmup = _check_count("warmup", warmup, 0)
    if meta is None:
        meta = {"stepper": repr(stepper), "initial_condition": repr(initial_condition)}
    meta = dict(meta) | {
        "generator": meta.get("generator", "exponax"),
        "key": key_meta(key),
        "num": num,
        "n": int(n),
        "fine": int(fine),
        "steps": steps,
        "warmup": warmup,
        "exponax": exponax.__version__,
    }

    def compute() -> PDEData:
        pairs = _Pairs(stepper, initial_condition, int(fine), warmup, steps)
        inputs, outputs = _solve_pairs(pairs, jr.split(key, num))
        sub = (Ellipsis,) + (slice(None, None, fine // n),) * ndim
        return PDEData(inputs[sub], outputs[sub])

    return cached(cache, meta, compute)


def kuramoto_sivashinsky(
    key: PRNGKeyArray,
    num: int,
    n: int,
    *,
    length: float = 60.0,
    dt: float = 0.5,
    steps: int = 1,
    warmup: int = 200,
    fine: int = 256,
    cutoff: int = 5,
    cache: str | os.PathLike | None = None,
) -> PDEData:
    """`num` pairs $(u(t_0), u(t_0 + \\text{steps} \\cdot \\Delta t))$ of the 1-D
    Kuramoto–Sivashinsky equation $u_t + \\tfrac12 (u_x)^2 + u_{xx} + u_{xxxx} = 0$ on a
    periodic domain of length $L$ (chaotic for $L \\gtrsim 22$), solved by exponax
    (`exponax.stepper.KuramotoSivashinsky`, ETDRK2) on `fine` points. Initial conditions are
    truncated Fourier series (`exponax.ic.RandomTruncatedFourierSeries`, `cutoff` modes, unit
    standard deviation); `warmup` steps carry them onto the attractor before the input.
    The learned map is one step of the dynamics, as in APEBench.

    **Arguments:** `key`; `num`, `n` (dividing `fine`); `length` $L$; `dt` $\\Delta t$;
    `steps` between input and output; `warmup`; `fine`; `cutoff`; `cache`, an `.npz` path.

    **Returns:** `PDEData` of shape `(num, 1, n)` each.
    """
    _check_positive(length=length, dt=dt)
    stepper = exponax.stepper.KuramotoSivashinsky(1, float(length), int(fine), float(dt))
    ic = exponax.ic.RandomTruncatedFourierSeries(1, cutoff=int(cutoff), std_one=True)
    meta = {"generator": "kuramoto_sivashinsky", "length": float(length), "dt": float(dt)}
    meta["cutoff"] = int(cutoff)
    return exponax_pairs(
        key, stepper, ic, num, n, steps=steps, warmup=warmup, cache=cache, meta=meta
    )


def korteweg_de_vries(
    key: PRNGKeyArray,
    num: int,
    n: int,
    *,
    length: float = 20.0,
    dt: float = 0.05,
    steps: int = 20,
    warmup: int = 0,
    fine: int = 256,
    cutoff: int = 5,
    hyper_diffusivity: float = 0.01,
    cache: str | os.PathLike | None = None,
) -> PDEData:
    """`num` pairs $(u_0, u(T))$, $T$ = `steps` $\\cdot \\Delta t$, of the 1-D Korteweg–de
    Vries equation $u_t - 6 u u_x + u_{xxx} = -\\epsilon\\, u_{xxxx}$ on a periodic domain of
    length $L$, with a small hyper-diffusion $\\epsilon$ that damps the grid-scale modes, solved
    by exponax (`exponax.stepper.KortewegDeVries`, ETDRK2) on `fine` points, from truncated
    Fourier series of unit standard deviation: random waves steepen into trains of solitons.

    **Arguments:** `key`; `num`, `n` (dividing `fine`); `length` $L$; `dt`; `steps`;
    `warmup`; `fine`; `cutoff`; `hyper_diffusivity` $\\epsilon \\ge 0$; `cache`.

    **Returns:** `PDEData` of shape `(num, 1, n)` each.
    """
    _check_positive(length=length, dt=dt)
    if not (np.isfinite(hyper_diffusivity) and hyper_diffusivity >= 0):
        raise ValueError(f"hyper_diffusivity must be >= 0, got {hyper_diffusivity}.")
    stepper = exponax.stepper.KortewegDeVries(
        1, float(length), int(fine), float(dt), hyper_diffusivity=float(hyper_diffusivity)
    )
    ic = exponax.ic.RandomTruncatedFourierSeries(1, cutoff=int(cutoff), std_one=True)
    meta = {
        "generator": "korteweg_de_vries",
        "length": float(length),
        "dt": float(dt),
        "cutoff": int(cutoff),
        "hyper_diffusivity": float(hyper_diffusivity),
    }
    return exponax_pairs(
        key, stepper, ic, num, n, steps=steps, warmup=warmup, cache=cache, meta=meta
    )


def navier_stokes(
    key: PRNGKeyArray,
    num: int,
    n: int,
    *,
    viscosity: float = 1e-3,
    dt: float = 0.01,
    steps: int = 50,
    warmup: int = 0,
    fine: int = 64,
    cutoff: int = 5,
    cache: str | os.PathLike | None = None,
) -> PDEData:
    """`num` pairs $(\\omega_0, \\omega(T))$, $T$ = `steps` $\\cdot \\Delta t$, of the 2-D
    incompressible Navier–Stokes equations in vorticity form, $\\omega_t + u \\cdot \\nabla
    \\omega = \\nu \\Delta \\omega$ with $u = \\nabla^\\perp \\Delta^{-1} \\omega$, on the unit
    torus (decaying turbulence), solved by exponax (`exponax.stepper.NavierStokesVorticity`,
    ETDRK2) on `fine` × `fine` points from truncated Fourier series of unit standard
    deviation.

    **Arguments:** `key`; `num`, `n` (dividing `fine`); `viscosity` $\\nu > 0$; `dt`; `steps`;
    `warmup`; `fine`; `cutoff`; `cache`.

    **Returns:** `PDEData` of shape `(num, 1, n, n)` each.
    """
    _check_positive(viscosity=viscosity, dt=dt)
    stepper = exponax.stepper.NavierStokesVorticity(
        2, 1.0, int(fine), float(dt), diffusivity=float(viscosity)
    )
    ic = exponax.ic.RandomTruncatedFourierSeries(2, cutoff=int(cutoff), std_one=True)
    meta = {
        "generator": "navier_stokes",
        "viscosity": float(viscosity),
        "dt": float(dt),
        "cutoff": int(cutoff),
    }
    return exponax_pairs(
        key, stepper, ic, num, n, steps=steps, warmup=warmup, cache=cache, meta=meta
    )
