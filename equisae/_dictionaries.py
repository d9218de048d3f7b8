import abc
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Complex, Float, PRNGKeyArray

from ._grid import Grid, code_grid
from ._layers import (
    AbstractOperator,
    Pointwise,
    SpectralConv,
    _half_spectrum_multiplicity,
    _per_axis,
)


class AbstractDictionary(eqx.Module):
    """A dictionary of `concepts` atoms: a linear map $D$ from codes to signals.

    Codes are either `(p,)` (concept sparsity: an atom is a function, its code a number) or
    `(p, *spatial)` (domain sparsity: an atom is a convolution operator, its code a function on
    the grid). Signals are `(channels, *spatial)`. Subclasses implement `__call__`,
    `code_shape` and `rescale`; the adjoint, the atoms and the normalisation are derived from
    `__call__`, so they cannot disagree with it.
    """

    concepts: eqx.AbstractVar[int]
    channels: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(
        self, codes: Float[Array, " p *code_spatial"], grid: Grid
    ) -> Float[Array, " c *spatial"]:
        """The signal $D z$ on `grid` for codes $z$ of shape `code_shape(grid)`."""

    @abc.abstractmethod
    def code_shape(self, grid: Grid) -> tuple[int, ...]:
        """The shape of the codes for signals on `grid`: `(p,)` or `(p, *grid.shape)`."""

    @abc.abstractmethod
    def rescale(self, factors: Float[Array, " p"]) -> "AbstractDictionary":
        """A copy whose atom $k$ is multiplied by `factors[k]`."""

    def adjoint(
        self, x: Float[Array, " c *spatial"], grid: Grid
    ) -> Float[Array, " p *code_spatial"]:
        """The $L^2(\\Omega)$ adjoint $D^* x$, defined by
        $\\langle D z, x \\rangle_{L^2(\\Omega)} = \\langle z, D^* x \\rangle$ (codes in the
        $L^2$ of their own grid), derived from `__call__` by `jax.linear_transpose`.
        """
        grid.check(x, "signal", self.channels)
        codes = jnp.zeros(self.code_shape(grid), x.dtype)
        (transposed,) = jax.linear_transpose(lambda z: self(z, grid), codes)(x * grid.weight)
        return transposed / code_grid(codes).weight

    def normal(
        self, codes: Float[Array, " p *code_spatial"], grid: Grid
    ) -> Float[Array, " p *code_spatial"]:
        """$D^* D z$, the normal operator of the inner least-squares problem."""
        return self.adjoint(self(codes, grid), grid)

    @eqx.filter_jit
    def atoms(self, grid: Grid) -> Float[Array, " p c *spatial"]:
        """The atoms as functions on `grid`: $D$ applied to unit codes (a unit vector, or a
        spike of unit mass at the origin for function codes)."""
        shape = self.code_shape(grid)
        unit = jnp.zeros(shape).at[(0,) * len(shape)].set(1.0)
        unit = unit / code_grid(unit).weight
        rolls = jnp.arange(self.concepts)
        return jax.vmap(lambda k: self(jnp.roll(unit, k, axis=0), grid))(rolls)

    def atom_norms(self, grid: Grid) -> Float[Array, " p"]:
        """The $L^2(\\Omega)$ norm of every atom on `grid`."""
        atoms = self.atoms(grid)
        return jnp.sqrt(grid.integrate(jnp.sum(atoms**2, axis=1)))

    @eqx.filter_jit
    def normalise(self, grid: Grid) -> "AbstractDictionary":
        """A copy whose atoms have unit $L^2(\\Omega)$ norm on `grid`."""
        norms = self.atom_norms(grid)
        return self.rescale(1.0 / jnp.maximum(norms, jnp.finfo(norms.dtype).tiny))

    def lift(
        self, x: Float[Array, " c *spatial"], grid: Grid
    ) -> tuple[Float[Array, " h *spatial"], "AbstractDictionary"]:
        """The signal and the dictionary that sparse inference works with: `(x, self)`,
        or `(P x, D_l)` for a lifted dictionary."""
        return x, self


def _multiply(multipliers: Array, x_hat: Array) -> Array:
    """$\\hat y_o = \\sum_i M_{io} \\hat x_i$ at every frequency."""
    return jnp.einsum("io...,i...->o...", multipliers, x_hat)


def _multiply_transpose(multipliers: Array, y_hat: Array) -> Array:
    """$\\hat x_i = \\sum_o \\overline{M_{io}} \\hat y_o$ at every frequency."""
    return jnp.einsum("io...,o...->i...", jnp.conj(multipliers), y_hat)


def _multiply_normal(multipliers: Array, x_hat: Array) -> Array:
    """$M^H M \\hat x$ at every frequency, whichever way takes fewer products: through the
    $p \\times p$ Gram matrices when $p \\le 2c$, else through the $c$ channels
    ($M \\hat x$ first)."""
    concepts, channels = multipliers.shape[:2]
    if 2 * channels < concepts:
        return _multiply_transpose(multipliers, _multiply(multipliers, x_hat))
    gram = jnp.einsum("io...,jo...->ij...", jnp.conj(multipliers), multipliers)
    return jnp.einsum("ij...,j...->i...", gram, x_hat)


class _AbstractFFTConvolution(AbstractDictionary):
    """A dictionary of circular convolutions with function codes, applied by FFTs from its
    multipliers $\\hat\\kappa_k(f)$: $\\widehat{D z} = \\sum_k \\hat\\kappa_k \\hat z_k$ and
    $D^*$, $D^*D$ frequency by frequency, $O(N \\log N)$. Subclasses give `multipliers`."""

    @abc.abstractmethod
    def multipliers(self, grid: Grid) -> Complex[Array, " p c *half"]:
        """The Fourier coefficients of the atoms on `grid` (`norm="forward"`)."""

    def _fft(self, x: Array) -> Array:
        return jnp.fft.rfftn(x, axes=tuple(range(1, x.ndim)), norm="forward")

    def _ifft(self, x_hat: Array, grid: Grid) -> Array:
        return jnp.fft.irfftn(x_hat, s=grid.shape, axes=tuple(range(1, x_hat.ndim)), norm="forward")

    def __call__(
        self, codes: Float[Array, " p *spatial"], grid: Grid
    ) -> Float[Array, " c *spatial"]:
        grid.check(codes, "codes", self.concepts)
        return self._ifft(_multiply(self.multipliers(grid), self._fft(codes)), grid)

    def adjoint(self, x: Float[Array, " c *spatial"], grid: Grid) -> Float[Array, " p *spatial"]:
        """$D^* x = \\sum_c \\bar{\\hat\\kappa}_{kc} \\hat x_c$ in Fourier (a correlation)."""
        grid.check(x, "signal", self.channels)
        return self._ifft(_multiply_transpose(self.multipliers(grid), self._fft(x)), grid)

    def normal(self, codes: Float[Array, " p *spatial"], grid: Grid) -> Float[Array, " p *spatial"]:
        """$D^* D z$ frequency by frequency: one forward and one inverse FFT."""
        grid.check(codes, "codes", self.concepts)
        return self._ifft(_multiply_normal(self.multipliers(grid), self._fft(codes)), grid)


class Dense(AbstractDictionary):
    """The dictionary of a plain SAE: $p$ atoms, each a function on a fixed grid, stored as the
    columns of a matrix of shape `(channels * grid.size, p)`. Codes have shape `(p,)`.

    For vectors use `Grid(())`: the atoms are then vectors of length `channels`.
    """

    weight: Float[Array, " m p"]
    grid: Grid
    channels: int = eqx.field(static=True)
    concepts: int = eqx.field(static=True)

    def __init__(self, grid: Grid, channels: int, concepts: int, *, key: PRNGKeyArray):
        """**Arguments:**

        - `grid`: the grid of the signals.
        - `channels`: $c$, channels of the signals.
        - `concepts`: $p$, the number of atoms.
        - `key`: a `jax.random` key; atoms start Gaussian with unit $L^2(\\Omega)$ norm.
        """
        _check_positive(channels=channels, concepts=concepts)
        self.weight = jr.normal(key, (channels * grid.size, concepts))
        self.grid = grid
        self.channels = channels
        self.concepts = concepts
        self.weight = self.normalise(grid).weight

    def __call__(self, codes: Float[Array, " p"], grid: Grid) -> Float[Array, " c *spatial"]:
        self._check_grid(grid)
        return (self.weight @ codes).reshape((self.channels,) + self.grid.shape)

    def _check_grid(self, grid: Grid) -> None:
        if grid != self.grid:
            raise ValueError(
                f"Dense dictionary lives on a grid of shape {self.grid.shape}, got {grid.shape}; "
                "its atoms do not transfer to other grids."
            )

    def code_shape(self, grid: Grid) -> tuple[int, ...]:
        self._check_grid(grid)
        return (self.concepts,)

    def rescale(self, factors: Float[Array, " p"]) -> "Dense":
        return eqx.tree_at(lambda d: d.weight, self, self.weight * factors)

    def atoms(self, grid: Grid) -> Float[Array, " p c *spatial"]:
        self._check_grid(grid)
        return self.weight.T.reshape((self.concepts, self.channels) + grid.shape)


class Convolutional(_AbstractFFTConvolution):
    """The dictionary of an SAE-CNN: atom $k$ is the circular convolution with a filter of
    `width` grid points per axis, $D z = \\sum_k \\kappa_k * z_k$ with the quadrature-weighted
    convolution $(\\kappa * z)(s_i) = \\frac1N \\sum_j \\kappa(s_j)\\, z(s_i - s_j)$.
    Codes have shape `(p, *spatial)`.

    `weight[c, k, j]` is the value of $\\kappa_k$ (channel $c$) at the offset
    $j - \\lfloor w/2 \\rfloor$ grid points from the origin, so the filter is centred there.
    The taps are grid values: on another grid the same taps give another function (narrower on
    a finer grid; wrapped around on a grid smaller than the filter), which is how a CNN runs at
    another resolution. The convolution is computed with FFTs, $O(N \\log N)$ whatever the
    width.
    """

    weight: Float[Array, " c p *width"]
    channels: int = eqx.field(static=True)
    concepts: int = eqx.field(static=True)
    width: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        grid: Grid,
        channels: int,
        concepts: int,
        width: int | Sequence[int],
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `grid`: the training grid (sets $d$ and the initial normalisation).
        - `channels`, `concepts`: $c$ and $p$.
        - `width`: filter size in grid points per axis, at most the grid size.
        - `key`: a `jax.random` key.
        """
        _check_positive(channels=channels, concepts=concepts)
        self.width = _per_axis("width", width, grid.ndim)
        if any(w > n for w, n in zip(self.width, grid.shape)):
            raise ValueError(f"filters of width {self.width} do not fit on the grid {grid.shape}.")
        self.weight = jr.normal(key, (channels, concepts) + self.width)
        self.channels = channels
        self.concepts = concepts
        self.weight = self.normalise(grid).weight

    def _check_grid(self, grid: Grid) -> None:
        if grid.ndim != len(self.width):
            raise ValueError(f"{len(self.width)}-D filters cannot act on the grid {grid.shape}.")

    def kernels(self, grid: Grid) -> Float[Array, " c p *spatial"]:
        """The filters placed on `grid`, centred at the origin (circularly); on a grid with
        fewer points than the filter the taps wrap around and add up, as a circular
        convolution does."""
        self._check_grid(grid)
        kernels = self.weight
        for a, (w, n) in enumerate(zip(self.width, grid.shape)):
            index = (np.arange(w) - w // 2) % n
            kernels = jnp.moveaxis(kernels, 2 + a, 0)
            kernels = jnp.zeros((n,) + kernels.shape[1:], kernels.dtype).at[index].add(kernels)
            kernels = jnp.moveaxis(kernels, 0, 2 + a)
        return kernels

    def multipliers(self, grid: Grid) -> Complex[Array, " p c *half"]:
        """The Fourier coefficients $\\hat\\kappa_k(f)$ of the filters on `grid`
        (`norm="forward"`, so that $\\widehat{D z} = \\sum_k \\hat\\kappa_k \\hat z_k$)."""
        axes = tuple(range(2, 2 + grid.ndim))
        return jnp.swapaxes(jnp.fft.rfftn(self.kernels(grid), axes=axes, norm="forward"), 0, 1)

    def code_shape(self, grid: Grid) -> tuple[int, ...]:
        return (self.concepts,) + grid.shape

    def rescale(self, factors: Float[Array, " p"]) -> "Convolutional":
        scale = factors.reshape((1, -1) + (1,) * len(self.width))
        return eqx.tree_at(lambda d: d.weight, self, self.weight * scale)

    def atoms(self, grid: Grid) -> Float[Array, " p c *spatial"]:
        return jnp.swapaxes(self.kernels(grid), 0, 1)


class Spectral(AbstractDictionary):
    """The dictionary of an SAE-FNO: atom $k$ is the convolution with a kernel $\\kappa_k$
    given by its Fourier coefficients $\\hat\\kappa_k(f)$ for $|f_a| < K$,
    $\\widehat{D z}(f) = \\sum_k \\hat\\kappa_k(f) \\hat z_k(f)$. Codes have shape `(p, *spatial)`.

    The kernels live in frequency, so the dictionary acts on every grid; with all modes kept it
    spans the same model as a `Convolutional` dictionary with full-width filters.
    """

    conv: SpectralConv
    channels: int = eqx.field(static=True)
    concepts: int = eqx.field(static=True)

    def __init__(
        self,
        grid: Grid,
        channels: int,
        concepts: int,
        modes: int | Sequence[int] | None = None,
        *,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `grid`: the training grid; `modes` may not exceed its Nyquist limit $n/2 + 1$.
        - `channels`, `concepts`: $c$ and $p$.
        - `modes`: $K$ per axis (an int for every axis); `None` keeps every mode of `grid`.
        - `key`: a `jax.random` key.
        """
        _check_positive(channels=channels, concepts=concepts)
        if grid.ndim == 0:
            raise ValueError("Spectral dictionaries need a grid with at least one axis.")
        nyquist = tuple(n // 2 + 1 for n in grid.shape)
        modes = nyquist if modes is None else modes
        self.conv = SpectralConv(concepts, channels, modes, num_spatial_dims=grid.ndim, key=key)
        if any(k > m for k, m in zip(self.conv.modes, nyquist)):
            raise ValueError(
                f"modes={self.conv.modes} exceed the Nyquist limit {nyquist} (n // 2 + 1 per "
                f"axis) of the grid {grid.shape}."
            )
        self.channels = channels
        self.concepts = concepts
        self.conv = self.normalise(grid).conv

    @property
    def modes(self) -> tuple[int, ...]:
        """$K$, the Fourier modes kept per axis."""
        return self.conv.modes

    def __call__(
        self, codes: Float[Array, " p *spatial"], grid: Grid
    ) -> Float[Array, " c *spatial"]:
        grid.check(codes, "codes", self.concepts)
        return self.conv(codes)

    def code_shape(self, grid: Grid) -> tuple[int, ...]:
        return (self.concepts,) + grid.shape

    def adjoint(self, x: Float[Array, " c *spatial"], grid: Grid) -> Float[Array, " p *spatial"]:
        """$D^* x = F^{+} W^H F x$: one forward and one inverse FFT."""
        grid.check(x, "signal", self.channels)
        w = self.conv.multipliers(grid.shape)
        return self.conv.from_modes(_multiply_transpose(w, self.conv.to_modes(x)), grid.shape)

    def normal(self, codes: Float[Array, " p *spatial"], grid: Grid) -> Float[Array, " p *spatial"]:
        """$D^* D z = F^{+} W^H W F z$, mode by mode: one forward and one inverse transform
        per application (half the work of $D^*(D z)$)."""
        grid.check(codes, "codes", self.concepts)
        w = self.conv.multipliers(grid.shape)
        return self.conv.from_modes(_multiply_normal(w, self.conv.to_modes(codes)), grid.shape)

    def atom_norms(self, grid: Grid) -> Float[Array, " p"]:
        """The $L^2(\\Omega)$ norm of every atom by Parseval,
        $\\|D e_k\\|^2 = \\sum_f |\\hat\\kappa_k(f)|^2$ over the whole spectrum (a kept
        frequency of the half spectrum and its mirror image), without forming the atoms."""
        indices = self.conv._indices(grid.shape)
        if any(len(np.unique(spectrum)) < len(spectrum) for spectrum, _ in indices):
            # a Nyquist frequency kept twice: its two coefficients add up on the grid
            return super().atom_norms(grid)
        w = self.conv.multipliers(grid.shape)
        mirrored = _half_spectrum_multiplicity(indices[-1][0], grid.shape[-1])
        power = (jnp.real(w) ** 2 + jnp.imag(w) ** 2) * mirrored
        return jnp.sqrt(jnp.sum(power, axis=tuple(range(1, w.ndim))))

    def rescale(self, factors: Float[Array, " p"]) -> "Spectral":
        scale = factors.reshape((1, -1) + (1,) * (self.conv.weight.ndim - 2))
        return eqx.tree_at(lambda d: d.conv.weight, self, self.conv.weight * scale)


class Lifted(AbstractDictionary):
    """A dictionary in a lifted space: a lifting $P$ from $c$ to $h$ channels, an inner
    dictionary $D_l$ with $h$ channels and a linear projection $Q$ back to $c$ channels.

    Decoding is $Q D_l z$, so the effective atoms are $Q D_l e_k$; sparse inference works in
    the lifted space on $P x$ with $D_l$ (see `lift`). With `Dense` inside it is the lifted
    SAE; with `Spectral` inside and `Pointwise` lifting and projection, the lifted SAE-FNO.
    `normalise` gives the effective atoms unit norm.

    $P$, $D_l$ and $Q$ are untied: inference solves the lasso of $P x$ in the lifted space,
    which is the data-space problem only when $Q$ inverts $P$. `Tied` is the other form: the
    concepts stay in data space (decoding $D z$) and a lift $A$ enters only the metric of
    inference, a preconditioner.
    """

    lifting: AbstractOperator
    inner: AbstractDictionary
    projection: AbstractOperator

    def __init__(
        self,
        lifting: AbstractOperator,
        inner: AbstractDictionary,
        projection: AbstractOperator,
    ):
        """**Arguments:**

        - `lifting`: $P$, an operator layer from $c$ to $h$ channels.
        - `inner`: $D_l$, a dictionary with $h$ channels.
        - `projection`: $Q$, a *linear* operator layer from $h$ to $c$ channels.
        """
        self.lifting = lifting
        self.inner = inner
        self.projection = projection

    def __check_init__(self):
        h = self.inner.channels
        if self.lifting.out_channels != h or self.projection.in_channels != h:
            raise ValueError(
                f"Lifted: lifting gives {self.lifting.out_channels} channels and projection takes "
                f"{self.projection.in_channels}, but the inner dictionary has {h}."
            )
        if self.projection.out_channels != self.lifting.in_channels:
            raise ValueError(
                f"Lifted: projection gives {self.projection.out_channels} channels, lifting takes "
                f"{self.lifting.in_channels}."
            )
        if isinstance(self.projection, Pointwise) and self.projection.bias is not None:
            raise ValueError("Lifted: the projection must be linear (Pointwise(use_bias=False)).")

    @property
    def concepts(self) -> int:
        """$p$, the concepts of the inner dictionary."""
        return self.inner.concepts

    @property
    def channels(self) -> int:
        """$c$, the channels of the signals (the projection's output)."""
        return self.projection.out_channels

    def __call__(
        self, codes: Float[Array, " p *code_spatial"], grid: Grid
    ) -> Float[Array, " c *spatial"]:
        return self.projection(self.inner(codes, grid))

    def code_shape(self, grid: Grid) -> tuple[int, ...]:
        return self.inner.code_shape(grid)

    def rescale(self, factors: Float[Array, " p"]) -> "Lifted":
        return eqx.tree_at(lambda d: d.inner, self, self.inner.rescale(factors))

    def lift(
        self, x: Float[Array, " c *spatial"], grid: Grid
    ) -> tuple[Float[Array, " h *spatial"], AbstractDictionary]:
        grid.check(x, "x", self.channels)
        return self.lifting(x), self.inner


def _check_positive(**values: int) -> None:
    for name, value in values.items():
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive whole number, got {value}.")


@eqx.filter_jit
def operator_norm(
    dictionary: AbstractDictionary, grid: Grid, iterations: int = 30
) -> Float[Array, " "]:
    """An estimate of $\\|D\\|^2 = \\|D^* D\\|$ (the Lipschitz constant of the gradient of
    $\\tfrac12\\|x - Dz\\|^2$) by `iterations` steps of power iteration from a fixed random
    start. The estimate approaches $\\|D\\|^2$ from below.
    """
    shape = dictionary.code_shape(grid)
    weight = Grid(shape[1:]).weight
    start = jr.normal(jr.key(0), shape)

    def step(z, _):
        w = dictionary.normal(z, grid)
        return w / jnp.sqrt(jnp.sum(w**2) * weight), None

    z0 = start / jnp.sqrt(jnp.sum(start**2) * weight)
    z, _ = jax.lax.scan(step, z0, None, length=iterations)
    return jnp.sum(z * dictionary.normal(z, grid)) * weight
