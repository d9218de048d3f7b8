import os

import jax
import jax.numpy as jnp
import jax.random as jr
import jax.scipy.sparse.linalg
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._grid import Grid
from ._pde import PDEData, cached, check_num, check_resolution, gaussian_random_field, key_meta


def _check_field(name: str, x: Array) -> None:
    if x.ndim != 3 or x.shape[0] != 1 or x.shape[1] != x.shape[2] or x.shape[1] < 3:
        raise ValueError(f"{name} must have shape (1, n, n) with n >= 3, got {tuple(x.shape)}.")


def _interior(n: int) -> Array:
    index = jnp.arange(n)
    return ((index[:, None] > 0) & (index[None, :] > 0)).astype(jnp.float32)


def _faces(a: Array) -> tuple[Array, Array]:
    """$a_{i+1/2, j}$ and $a_{i, j+1/2}$, arithmetic means of neighbouring nodes."""
    return 0.5 * (a + jnp.roll(a, -1, 0)), 0.5 * (a + jnp.roll(a, -1, 1))


def _operator(u: Array, ax: Array, ay: Array, interior: Array) -> Array:
    """$h^2 (A u)$ on the interior nodes, $u = 0$ on the boundary (row and column 0)."""
    u = u * interior
    flux_x = ax * (jnp.roll(u, -1, 0) - u)
    flux_y = ay * (jnp.roll(u, -1, 1) - u)
    div = flux_x - jnp.roll(flux_x, 1, 0) + flux_y - jnp.roll(flux_y, 1, 1)
    return -div * interior


def darcy_operator(
    u: Float[Array, " 1 n n"], coefficient: Float[Array, " 1 n n"]
) -> Float[Array, " 1 n n"]:
    """The 5-point finite-difference Darcy operator $(A u)_{ij} = -\\frac{1}{h^2}\\big[
    a_{i+\\frac12,j}(u_{i+1,j} - u_{ij}) - a_{i-\\frac12,j}(u_{ij} - u_{i-1,j}) + (\\text{same
    in } j)\\big]$ on the grid $s_{ij} = (i/n, j/n)$ of the unit square, $h = 1/n$, with face
    coefficients $a_{i+\\frac12,j} = (a_{ij} + a_{i+1,j})/2$ and $u = 0$ on the boundary (the
    nodes with $i = 0$ or $j = 0$; node $n$ is node 0 on the periodic grid). Zero on the
    boundary nodes. Symmetric positive definite on the interior nodes."""
    _check_field("u", u)
    _check_field("coefficient", coefficient)
    n = u.shape[1]
    ax, ay = _faces(coefficient[0])
    return (n**2 * _operator(u[0], ax, ay, _interior(n).astype(u.dtype)))[None]


def solve_darcy(
    coefficient: Float[Array, " 1 n n"],
    forcing: float | Float[Array, " 1 n n"] = 1.0,
    *,
    rtol: float = 1e-6,
    max_steps: int | None = None,
) -> Float[Array, " 1 n n"]:
    """The Darcy flow problem $-\\nabla \\cdot (a \\nabla u) = f$ on the unit square with
    $u = 0$ on its boundary, discretised by `darcy_operator` and solved by conjugate gradients
    (`jax.scipy.sparse.linalg.cg`, Jacobi preconditioner) to a relative residual `rtol`.
    Acts on one coefficient field; vmap for batches.

    **Arguments:** `coefficient` $a > 0$ of shape `(1, n, n)` on the grid $s_{ij} = (i/n,
    j/n)$; `forcing` $f$, a number or a field of the same shape; `rtol`; `max_steps`, the
    conjugate-gradient iterations at most (default $10 n^2$).

    **Returns:** $u$, shape `(1, n, n)`, zero on the boundary nodes (row and column 0).
    """
    _check_field("coefficient", coefficient)
    if not (np.isfinite(rtol) and rtol > 0):
        raise ValueError(f"rtol must be positive, got {rtol}.")
    n = coefficient.shape[1]
    interior = _interior(n).astype(coefficient.dtype)
    a = coefficient[0]
    ax, ay = _faces(a)
    f = jnp.broadcast_to(jnp.asarray(forcing, coefficient.dtype), coefficient.shape)[0]
    b = f * interior / n**2
    diagonal = ax + jnp.roll(ax, 1, 0) + ay + jnp.roll(ay, 1, 1)
    inverse = jnp.where(interior > 0, 1.0 / diagonal, 0.0)
    u, _ = jax.scipy.sparse.linalg.cg(
        lambda v: _operator(v, ax, ay, interior),
        b,
        tol=rtol,
        maxiter=max_steps,
        M=lambda r: inverse * r,
    )
    return (u * interior)[None]


def darcy_residual(
    u: Float[Array, " 1 n n"],
    coefficient: Float[Array, " 1 n n"],
    forcing: float | Float[Array, " 1 n n"] = 1.0,
) -> Float[Array, " "]:
    """The relative residual $\\|A u - f\\| / \\|f\\|$ of the discrete Darcy problem on the
    interior nodes (`darcy_operator`)."""
    n = u.shape[-1]
    interior = _interior(n).astype(u.dtype)
    f = jnp.broadcast_to(jnp.asarray(forcing, u.dtype), u.shape) * interior
    residual = darcy_operator(u, coefficient) - f
    return jnp.linalg.norm(residual) / jnp.linalg.norm(f)


def darcy(
    key: PRNGKeyArray,
    num: int,
    n: int,
    *,
    fine: int = 128,
    values: tuple[float, float] = (3.0, 12.0),
    alpha: float = 2.0,
    tau: float = 3.0,
    forcing: float = 1.0,
    rtol: float = 1e-6,
    cache: str | os.PathLike | None = None,
) -> PDEData:
    """`num` solutions of 2-D Darcy flow $-\\nabla \\cdot (a \\nabla u) = f$ on the unit square,
    $u = 0$ on the boundary, constant $f$: inputs $a$, outputs $u$, both `(num, 1, n, n)`.

    The coefficient is piecewise constant, $a = $ `values[1]` where a Gaussian random field
    $\\mathcal N(0, (-\\Delta + \\tau^2 I)^{-\\alpha})$ is positive and `values[0]` elsewhere
    (as in Li et al. 2021, here on a periodic field), drawn on the solver grid of `fine` points
    per axis, solved there by `solve_darcy` and subsampled to `n` points per axis. The solver
    is equisae's own: exponax, which makes the other PDE data, solves evolution equations with
    constant-coefficient linear parts on periodic domains, not an elliptic problem with a
    variable coefficient and a zero boundary.

    **Arguments:** `key` (same key, same data); `num`, `n`; `fine`, a multiple of `n`;
    `values`, the two values of $a$ (positive); `alpha`, `tau`; `forcing` $f$; `rtol` of the
    solver; `cache`, an `.npz` path (loaded when made with the same arguments, else written).
    """
    num = check_num(num)
    check_resolution(n, fine, 2)
    low, high = (float(v) for v in values)
    if not (0 < low and 0 < high):
        raise ValueError(f"values of the coefficient must be positive, got {values}.")
    meta = {
        "generator": "darcy",
        "key": key_meta(key),
        "num": num,
        "n": int(n),
        "fine": int(fine),
        "values": [low, high],
        "field": [float(alpha), float(tau)],
        "forcing": float(forcing),
        "rtol": float(rtol),
    }

    def compute() -> PDEData:
        grid = Grid((fine, fine))

        def one(k):
            field = gaussian_random_field(k, grid, alpha=alpha, tau=tau, sigma=1.0)
            a = jnp.where(field > 0, high, low)
            return a, solve_darcy(a, forcing, rtol=rtol)

        a, u = jax.jit(jax.vmap(one))(jr.split(key, num))
        stride = fine // n
        return PDEData(a[..., ::stride, ::stride], u[..., ::stride, ::stride])

    return cached(cache, meta, compute)
