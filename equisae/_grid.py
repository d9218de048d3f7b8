import functools
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float


class Grid(eqx.Module):
    """A uniform grid of the periodic domain $\\Omega = [0, 1)^d$.

    A function $x : \\Omega \\to \\mathbb{R}^c$ sampled on the grid is an array of shape
    `(c, *grid.shape)`. Point $i$ of an axis with $n$ points sits at $i / n$, and every point
    carries the same quadrature weight $1/N$ with $N$ = `grid.size`, so that
    $\\int_\\Omega f \\approx \\frac{1}{N} \\sum_i f(s_i)$; the rule is exact for trigonometric
    polynomials below the Nyquist frequency.

    `Grid(())` is the zero-dimensional grid of a single point with weight 1: a vector of $c$
    numbers is a function on it, and its $L^2$ norm is the Euclidean norm. Codes of shape
    `(p,)` live there; codes of shape `(p, *spatial)` live on `Grid(spatial)`.
    """

    shape: tuple[int, ...] = eqx.field(static=True)

    def __init__(self, shape: int | Sequence[int]):
        """**Arguments:**

        - `shape`: points per axis, e.g. `128` or `(64, 64)`; `()` for a single point.
        """
        if isinstance(shape, (int, np.integer)):
            shape = (shape,)
        self.shape = tuple(int(n) for n in shape)

    def __check_init__(self):
        for n in self.shape:
            if n < 1:
                raise ValueError(f"Grid needs at least one point per axis, got shape {self.shape}.")

    @property
    def ndim(self) -> int:
        """The dimension $d$ of the domain."""
        return len(self.shape)

    @property
    def size(self) -> int:
        """The number of points $N$."""
        return math.prod(self.shape)

    @property
    def weight(self) -> float:
        """The quadrature weight $1/N$ of every point."""
        return 1.0 / self.size

    def points(self) -> Float[Array, " d *spatial"]:
        """The coordinates of the grid points, shape `(d, *grid.shape)`."""
        axes = [jnp.arange(n) / n for n in self.shape]
        return jnp.stack(jnp.meshgrid(*axes, indexing="ij")) if axes else jnp.zeros((0,))

    def check(self, x: Array | np.ndarray, name: str = "x", channels: int | None = None) -> None:
        """Raise a `ValueError` unless `x` has shape `(channels, *grid.shape)`."""
        expected = ("c" if channels is None else channels, *self.shape)
        ok = x.ndim == 1 + self.ndim and tuple(x.shape[1:]) == self.shape
        if channels is not None:
            ok = ok and x.shape[0] == channels
        if not ok:
            shown = "(" + ", ".join(str(e) for e in expected) + ")"
            raise ValueError(
                f"{name} has shape {tuple(x.shape)}, expected {shown}: one example of "
                f"{'channels' if channels is None else channels} channels on a grid of shape "
                f"{self.shape}. Batches go through jax.vmap."
            )

    def resample(
        self, x: Float[Array, " c *spatial"], grid: "Grid"
    ) -> Float[Array, " c *spatial_to"]:
        """`x`, a function on this grid, Fourier-interpolated to `grid` (see `resample`)."""
        return resample(x, self, grid)

    def integrate(self, f: Float[Array, " *batch"]) -> Float[Array, " ..."]:
        """$\\int_\\Omega f$ over the last `d` axes of `f` (the quadrature rule)."""
        axes = tuple(range(f.ndim - self.ndim, f.ndim))
        return jnp.sum(f, axis=axes) * self.weight

    def inner(self, a: Float[Array, " *shape"], b: Float[Array, " *shape"]) -> Float[Array, " "]:
        """The $L^2(\\Omega)$ inner product $\\sum_c \\int_\\Omega a_c b_c$ of two functions."""
        return jnp.sum(a * b) * self.weight

    def norm(self, x: Float[Array, " *shape"]) -> Float[Array, " "]:
        """The $L^2(\\Omega)$ norm $\\|x\\| = (\\sum_c \\int_\\Omega x_c^2)^{1/2}$."""
        return jnp.sqrt(self.inner(x, x))


def _resample_axis(x: Array, n_to: int, axis: int) -> Array:
    """Fourier interpolation of a complex array along one axis (spectrum in `norm="forward"`)."""
    n_from = x.shape[axis]
    if n_to == n_from:
        return x
    spectrum = jnp.moveaxis(jnp.fft.fft(x, axis=axis, norm="forward"), axis, 0)
    small = min(n_from, n_to)
    half = small // 2  # frequencies 0..half-1 and -(half-1)..-1 always move over
    out = jnp.zeros((n_to,) + spectrum.shape[1:], spectrum.dtype)
    out = out.at[: (small + 1) // 2].set(spectrum[: (small + 1) // 2])
    if half > 0:
        out = out.at[n_to - half + (small % 2 == 0) :].set(
            spectrum[n_from - half + (small % 2 == 0) :]
        )
    if small % 2 == 0:
        if n_to > n_from:  # split the coarse Nyquist coefficient over +n/2 and -n/2
            out = out.at[half].set(spectrum[half] / 2).at[n_to - half].set(spectrum[half] / 2)
        else:  # fold +m/2 and -m/2 onto the coarse Nyquist bin: the inverse of the split
            out = out.at[half].set(spectrum[half] + spectrum[n_from - half])
    return jnp.moveaxis(jnp.fft.ifft(out, axis=0, norm="forward"), 0, axis)


def resample(
    x: Float[Array, " c *spatial"], grid_from: Grid, grid_to: Grid
) -> Float[Array, " c *spatial_to"]:
    """Fourier interpolation of a function from one uniform grid to another.

    Keeps the Fourier coefficients $\\hat x(f)$ that both grids resolve and sets the others to
    zero: exact for band-limited functions (all frequencies below the coarser grid's Nyquist
    frequency) in both directions, and going up then down returns the input exactly. On an
    even coarse grid the Nyquist coefficient is split evenly between $\\pm n/2$ going up and
    folded back going down.

    **Arguments:** `x` of shape `(channels, *grid_from.shape)`, the grids.
    **Returns:** `x` on `grid_to`, shape `(channels, *grid_to.shape)`.
    """
    grid_from.check(x, "x")
    if grid_from.ndim != grid_to.ndim:
        raise ValueError(
            f"cannot resample from a {grid_from.ndim}-D grid to a {grid_to.ndim}-D grid."
        )
    return _fourier_resample(x, grid_to.shape)


@functools.partial(jax.jit, static_argnames="shape")
def _fourier_resample(x: Array, shape: tuple[int, ...]) -> Array:
    """`resample`'s work, compiled once per shape (op by op it costs dozens of compiles)."""
    y = x.astype(jnp.result_type(x.dtype, jnp.complex64))
    for a, n in enumerate(shape):
        y = _resample_axis(y, n, axis=1 + a)
    return y.real.astype(x.dtype)


def _deposit_matrix(n_from: int, n_to: int) -> np.ndarray:
    """`(n_to, n_from)`: where the mass of each point of an `n_from` grid goes on an `n_to`
    grid of the periodic axis: split between the two nearest points, in proportion to how
    close they are (cloud in cell). Every column sums to 1."""
    position = np.arange(n_from) * (n_to / n_from)
    left = np.floor(position).astype(int)
    right_share = position - left
    matrix = np.zeros((n_to, n_from))
    columns = np.arange(n_from)
    np.add.at(matrix, (left % n_to, columns), 1.0 - right_share)
    np.add.at(matrix, ((left + 1) % n_to, columns), right_share)
    return matrix


def resample_codes(
    codes: Float[Array, " p *spatial"], grid_from: Grid, grid_to: Grid
) -> Float[Array, " p *spatial_to"]:
    """Codes of domain sparsity moved from one grid to another as *measures*: the mass
    $z_i / N$ of every point goes to the nearest points of the other grid (split between the
    two nearest per axis, linearly), so the mass of every concept's code is conserved, and a
    spike stays a spike.

    `resample` (Fourier interpolation) suits functions; it would spread a spike over the
    whole fine grid. Refining by a whole factor puts every point's mass on the fine point at
    the same position, so refining and then restricting returns the codes exactly.

    **Arguments:** `codes` of shape `(p, *grid_from.shape)`, the grids (same dimension).
    **Returns:** the codes on `grid_to`, shape `(p, *grid_to.shape)`.
    """
    grid_from.check(codes, "codes")
    if grid_from.ndim != grid_to.ndim:
        raise ValueError(
            f"cannot resample codes from a {grid_from.ndim}-D grid to a {grid_to.ndim}-D grid."
        )
    out = codes
    for a, (n_from, n_to) in enumerate(zip(grid_from.shape, grid_to.shape)):
        if n_from == n_to:
            continue
        matrix = jnp.asarray(_deposit_matrix(n_from, n_to) * (n_to / n_from), codes.dtype)
        moved = jnp.tensordot(matrix, out, axes=([1], [1 + a]), precision=jax.lax.Precision.HIGHEST)
        out = jnp.moveaxis(moved, 0, 1 + a)
    return out


def code_grid(codes: Array) -> Grid:
    """The grid that codes of shape `(p, *spatial)` live on (`Grid(())` for `(p,)`)."""
    return Grid(codes.shape[1:])
