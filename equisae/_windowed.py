from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Complex, Float

from ._dictionaries import AbstractDictionary, _AbstractFFTConvolution
from ._grid import Grid


class Windowed(_AbstractFFTConvolution):
    """Localized atoms: the convolution with the atoms of `inner` cut to a window of `width`
    (a fraction of the domain per axis) around the origin,
    $D z = \\sum_k (w\\,\\kappa_k) * z_k$ with $\\kappa_k$ = `inner.atoms(grid)[k]` and
    $w(s) = 1$ where every axis has $|s_a| \\le$ `width[a]` $/ 2$ (circularly), else 0.
    Codes have shape `(p, *spatial)`.

    `Windowed(Spectral(grid, c, p, modes, key=k), 0.5)` is an SAE-FNO whose concepts are
    supported on half the domain: still Fourier-parameterised and still a function on every
    grid (the window is in the domain's units, so on a finer grid it covers the same stretch
    of $\\Omega$), but it cannot spread an atom over the whole domain. That is the prior a
    CNN's narrow filters carry, and what full-width atoms lack on localized concepts: there
    they can reconstruct the data with the wrong, spread-out shapes. The window is closed:
    width 0.5 on $n = 128$ keeps the 65 points at offsets $-32 \\dots 32$ (a CNN's 64 taps
    cover $-32 \\dots 31$). It cuts the kernel on the grid, so the atoms are no longer
    band-limited (the cut adds a jump where an atom is not zero at the edge).

    Every application forms the $p$ windowed atoms from `inner` (for `Spectral`, $p$ inverse
    transforms) and then convolves by FFTs, $O(p\\,c\\,N \\log N)$. The atoms are not
    rescaled here: `normalise(grid)`, `init_from_data` and `fit` give them unit norm. The inner
    dictionary must not have a lift of its own (`Lifted`, `Tied`): window the concepts and
    lift outside, `Tied(Windowed(Spectral(...), w), A)`.
    """

    inner: AbstractDictionary
    width: tuple[float, ...] = eqx.field(static=True)

    def __init__(
        self, inner: AbstractDictionary, width: float | int | np.floating | Sequence[float]
    ):
        """**Arguments:**

        - `inner`: a dictionary with function codes (`Spectral`, `Convolutional`, ...) and no
          lift of its own; its atoms on a grid are the kernels that the window cuts.
        - `width`: the window's width per axis as a fraction of the domain, in (0, 1]
          (a number for every axis); 1 keeps the whole domain.

        **Raises:** `ValueError` for a width outside (0, 1] and for a lifted inner dictionary;
        a dictionary with vector codes is refused on first use (its code shape needs a grid).
        """
        widths = (width,) if np.ndim(width) == 0 else tuple(width)
        for w in widths:
            if not 0.0 < float(w) <= 1.0:
                raise ValueError(
                    f"Windowed needs every width in (0, 1] (a fraction of the domain), got {width}."
                )
        if type(inner).lift is not AbstractDictionary.lift:
            raise ValueError(
                f"Windowed cannot keep the lift of a {type(inner).__name__} dictionary (inference "
                "would drop it): window its concepts and lift outside, "
                "e.g. Tied(Windowed(Spectral(...), width), lift)."
            )
        self.inner = inner
        self.width = tuple(float(w) for w in widths)

    @property
    def concepts(self) -> int:
        """$p$, the concepts of the inner dictionary."""
        return self.inner.concepts

    @property
    def channels(self) -> int:
        """$c$, the channels of the inner dictionary."""
        return self.inner.channels

    def _widths(self, grid: Grid) -> tuple[float, ...]:
        if len(self.inner.code_shape(grid)) == 1:
            raise ValueError(
                f"Windowed needs a dictionary with function codes; {type(self.inner).__name__} "
                f"has vector codes on the grid {grid.shape}."
            )
        if len(self.width) == 1:
            return self.width * grid.ndim
        if len(self.width) != grid.ndim:
            raise ValueError(f"a window of width {self.width} cannot act on the grid {grid.shape}.")
        return self.width

    def window(self, grid: Grid) -> Float[Array, " *spatial"]:
        """$w$ on `grid`: 1 at the points within `width / 2` of the origin on every axis."""
        inside = np.ones(grid.shape, bool)
        for a, (w, n) in enumerate(zip(self._widths(grid), grid.shape)):
            offset = np.arange(n) / n
            distance = np.minimum(offset, 1.0 - offset)  # circular, to the origin
            axis = distance <= w / 2 + 1e-9
            inside = inside & axis.reshape((-1,) + (1,) * (grid.ndim - 1 - a))
        return jnp.asarray(inside, float)

    def kernels(self, grid: Grid) -> Float[Array, " p c *spatial"]:
        """The windowed atoms $w\\,\\kappa_k$ on `grid`, concepts first (`Convolutional.kernels`
        puts the channels first)."""
        return self.inner.atoms(grid) * self.window(grid)

    def multipliers(self, grid: Grid) -> Complex[Array, " p c *half"]:
        """The Fourier coefficients of the windowed atoms (`norm="forward"`)."""
        axes = tuple(range(2, 2 + grid.ndim))
        return jnp.fft.rfftn(self.kernels(grid), axes=axes, norm="forward")

    def code_shape(self, grid: Grid) -> tuple[int, ...]:
        return self.inner.code_shape(grid)

    def rescale(self, factors: Float[Array, " p"]) -> "Windowed":
        return eqx.tree_at(lambda d: d.inner, self, self.inner.rescale(factors))

    def atoms(self, grid: Grid) -> Float[Array, " p c *spatial"]:
        return self.kernels(grid)
