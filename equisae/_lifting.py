"""Tied lifting: concepts in data space, a lift $A$ in the metric of sparse inference only."""

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._dictionaries import AbstractDictionary
from ._grid import Grid
from ._layers import AbstractOperator, Pointwise, SpectralConv


class _Composed(AbstractDictionary):
    """The dictionary $A D$: the atoms of `inner` mapped by the linear operator `lifting`."""

    inner: AbstractDictionary
    lifting: AbstractOperator

    @property
    def concepts(self) -> int:
        return self.inner.concepts

    @property
    def channels(self) -> int:
        return self.lifting.out_channels

    def __call__(self, codes: Array, grid: Grid) -> Array:
        return self.lifting(self.inner(codes, grid))

    def code_shape(self, grid: Grid) -> tuple[int, ...]:
        return self.inner.code_shape(grid)

    def rescale(self, factors: Array) -> "_Composed":
        return eqx.tree_at(lambda d: d.inner, self, self.inner.rescale(factors))


class Tied(AbstractDictionary):
    """A tied lifted dictionary: the concepts $D$ stay in data space and a linear lift $A$ (from
    $c$ to $h$ channels) changes only the geometry of sparse inference.

    Decoding is $D z$, so the atoms are those of `inner`; sparse inference works on $A x$ with
    the dictionary $A D$, i.e. it solves
    $\\min_z \\tfrac12\\|A(x - Dz)\\|^2 + R(z)$ by proximal gradient in the metric $A^*A$,
    $z \\leftarrow \\mathrm{prox}_{tR}(z + t D^* A^* A (x - D z))$: a preconditioner of the inner
    problem. With $A = I$ it is the plain dictionary; with an isometry ($A^*A = I$) inference is
    unchanged. Compare `Lifted`, whose lifting, inner dictionary and projection are untied.

    On vectors $A$ is a `Pointwise` matrix; on functions it is `Pointwise` (the same matrix
    across channels at every point: for one channel a scalar, which cannot precondition) or
    `SpectralConv` (a matrix per Fourier mode, which can). A `SpectralConv` lift must keep at
    least the modes of a `Spectral` inner dictionary: with fewer, $A$ would drop part of the
    residual $x - Dz$ that the atoms see.

    The lift is learned with the model; wrap it in `Frozen` to keep it fixed (a random lift,
    one set from the data by `whitening`, or one set from the dictionary by `gram_whitening`).
    """

    inner: AbstractDictionary
    lifting: AbstractOperator

    def __init__(self, inner: AbstractDictionary, lifting: AbstractOperator):
        """**Arguments:**

        - `inner`: $D$, the concepts, a dictionary with $c$ channels.
        - `lifting`: $A$, a *linear* operator layer from $c$ to $h$ channels (`Pointwise`
          without bias, `SpectralConv`, or `Frozen` of one).
        """
        self.inner = inner
        self.lifting = lifting

    def __check_init__(self):
        if self.lifting.in_channels != self.inner.channels:
            raise ValueError(
                f"Tied: the lifting takes {self.lifting.in_channels} channels, but the "
                f"dictionary has {self.inner.channels}."
            )
        if isinstance(self.lifting, Pointwise) and self.lifting.bias is not None:
            raise ValueError("Tied: the lifting must be linear (Pointwise(use_bias=False)).")
        lifting = self.lifting.layer if isinstance(self.lifting, Frozen) else self.lifting
        inner_modes = getattr(self.inner, "modes", None)
        if isinstance(lifting, SpectralConv) and inner_modes is not None:
            if len(lifting.modes) != len(inner_modes) or any(
                a < d for a, d in zip(lifting.modes, inner_modes)
            ):
                raise ValueError(
                    f"Tied: the SpectralConv lifting keeps modes {lifting.modes}, fewer than the "
                    f"{inner_modes} of the dictionary; it would drop the part of the residual "
                    "at the other modes. Give the lifting at least the dictionary's modes."
                )

    @property
    def concepts(self) -> int:
        """$p$, the concepts of the inner dictionary."""
        return self.inner.concepts

    @property
    def channels(self) -> int:
        """$c$, the channels of the signals."""
        return self.inner.channels

    def __call__(
        self, codes: Float[Array, " p *code_spatial"], grid: Grid
    ) -> Float[Array, " c *spatial"]:
        return self.inner(codes, grid)

    def code_shape(self, grid: Grid) -> tuple[int, ...]:
        return self.inner.code_shape(grid)

    def rescale(self, factors: Float[Array, " p"]) -> "Tied":
        return eqx.tree_at(lambda d: d.inner, self, self.inner.rescale(factors))

    def atom_norms(self, grid: Grid) -> Float[Array, " p"]:
        return self.inner.atom_norms(grid)

    def lift(
        self, x: Float[Array, " c *spatial"], grid: Grid
    ) -> tuple[Float[Array, " h *spatial"], AbstractDictionary]:
        """`(A x, A D)`: the signal and the dictionary of inference in the lifted metric."""
        grid.check(x, "x", self.channels)
        return self.lifting(x), _Composed(self.inner, self.lifting)


class Frozen(AbstractOperator):
    """An operator layer kept fixed in training: its arrays pass through
    `jax.lax.stop_gradient`, so they get a zero gradient (and an optimiser leaves them as they
    are)."""

    layer: AbstractOperator

    @property
    def in_channels(self) -> int:
        """The channels of the wrapped layer's input."""
        return self.layer.in_channels

    @property
    def out_channels(self) -> int:
        """The channels of the wrapped layer's output."""
        return self.layer.out_channels

    def __call__(self, x: Float[Array, " in *spatial"]) -> Float[Array, " out *spatial"]:
        """The wrapped layer applied to `x`, with its arrays held constant."""
        params, static = eqx.partition(self.layer, eqx.is_inexact_array)
        return eqx.combine(jax.lax.stop_gradient(params), static)(x)


def whitening(
    data: Float[Array, " n c *spatial"],
    grid: Grid,
    *,
    modes: int | None = None,
    floor: float | None = None,
) -> Frozen:
    """A fixed lift $A$ that whitens the data, for `Tied`: $A^*A = s\\,C^{-1}$ with $C$ the
    second-moment operator of the data, so that the metric of inference is the inverse data
    covariance. The scale $s$ keeps the data's mean energy, $\\mathbb{E}\\|Ax\\|^2 =
    \\mathbb{E}\\|x\\|^2$, so that a penalty $\\lambda$ means about the same with and without it.

    - On vectors (`grid = Grid(())`) and with `modes=None` on functions, $C$ is the
      $c \\times c$ channel covariance $\\mathbb{E}\\int x x^\\top$ and $A = C^{-1/2}$ is
      `Pointwise` (for one channel, a plain rescaling: it cannot change the conditioning).
    - With `modes=K` on functions, $C(f) = \\mathbb{E}\\,\\hat x(f) \\hat x(f)^H$ per Fourier mode
      $|f| < K$ and $A$ is the `SpectralConv` with multipliers $C(f)^{-1/2}$: it flattens the
      spectrum of the data, a preconditioner that varies with frequency.

    `floor` regularises the inverse: the eigenvalues of $C$ below `floor` times the largest
    (over every mode and channel) are raised to it, so that no direction is amplified more than
    $\\text{floor}^{-1/2}$ times the strongest one. By default it is $10^{-6}$ for a matrix lift
    (`modes=None`: about exact whitening) and $0.1$ for a spectral one. A spectrum of function
    data falls by orders of magnitude towards the grid's Nyquist mode (to zero past a smooth
    family's band), and exact whitening amplifies those modes, whatever the atoms leak there
    and float32 rounding included, until they decide sparse inference: a lifted SAE-FNO with the
    floor at $10^{-6}$ recovered none of the concepts of any family of
    `benchmarks/recovery_families.py`; at $0.1$, over 5 seeds, every smooth and rough concept
    and 0.97 of the bumps (`floor=0.01`, seed 0: 0.62 of the bumps).

    **Raises:** `ValueError` for data with zero energy or of the wrong shape, or a `floor`
    outside $(0, 1]$.
    """
    if floor is None:
        floor = 1e-6 if modes is None else 0.1
    if not 0 < floor <= 1:
        raise ValueError(f"whitening: floor must be in (0, 1], got {floor}.")
    data = jnp.asarray(data)
    if data.ndim < 2 or data.shape[0] == 0:
        raise ValueError(
            f"whitening needs data of shape (examples, c, *spatial), got {data.shape}."
        )
    grid.check(data[0], "an example of data")
    channels = data.shape[1]
    if modes is None:
        flat = jnp.moveaxis(data, 1, -1).reshape(-1, channels)
        second = (flat.T @ flat) / flat.shape[0]
        lift = Pointwise(channels, channels, key=jax.random.key(0))
        lift = eqx.tree_at(lambda p: p.weight, lift, _inverse_sqrt(second, floor))
        return Frozen(_keeping_energy(lift, data, grid))
    if grid.ndim == 0:
        raise ValueError("whitening with modes needs function data, not vectors (Grid(())).")
    lift = SpectralConv(
        channels, channels, modes, num_spatial_dims=grid.ndim, key=jax.random.key(0)
    )
    x_hat = jax.vmap(lift.to_modes)(data)  # (n, c, *kept)
    if tuple(x_hat.shape[2:]) != tuple(lift.weight.shape[3:]):
        raise ValueError(
            f"whitening: the grid {grid.shape} does not resolve modes={modes} (it needs at least "
            f"{2 * modes - 1} points per axis)."
        )
    moved = jnp.moveaxis(x_hat, (0, 1), (-2, -1))  # (*kept, n, c)
    second = jnp.einsum("...ni,...nj->...ij", moved, jnp.conj(moved)) / data.shape[0]
    # (*kept, c, c): A(f) maps channel i to channel o as root[o, i]
    root = _inverse_sqrt(second, floor)
    weight = jnp.moveaxis(jnp.swapaxes(root, -1, -2), (-2, -1), (0, 1))  # (in, out, *kept)
    lift = eqx.tree_at(lambda s: s.weight, lift, jnp.stack([weight.real, weight.imag]))
    return Frozen(_keeping_energy(lift, data, grid))


def gram_whitening(
    dictionary: AbstractDictionary, grid: Grid, *, modes: int | None = None
) -> Frozen:
    """A fixed lift $A$ set from the dictionary itself, for `Tied`: $A = (D D^*)^{-1/2}$ (up to
    a scale), the inverse square root of the Gram operator of the atoms, so that the
    metric-weighted Gram of inference,

    $$D^* A^* A D \\propto D^* (D D^*)^{-1} D,$$

    is the orthogonal projector onto the row space of $D$: all its non-zero eigenvalues are
    equal, whatever the atoms' correlations (condition number 1 on its range). It is
    `whitening` of data with uncorrelated codes of equal power drawn from $D$, whose second
    moment is $D D^*$ up to a scale, and is computed so: `whitening(dictionary.atoms(grid),
    grid, modes=...)`. The scale keeps the atoms' mean energy,
    $\\frac1p\\sum_k \\|A d_k\\|^2 = \\frac1p\\sum_k \\|d_k\\|^2$.

    The dictionary changes in training; to follow it, rebuild the lift from the current
    dictionary every $k$ steps (`dataclasses.replace` or `eqx.tree_at` on the `Tied`'s
    `lifting`), as `examples/experiments/lifting.py` does.

    - For a `Dense` dictionary on vectors (`grid = Grid(())`) $A$ is the dense
      $c \\times c$ matrix $(D D^\\top)^{-1/2}$ (`Pointwise`); on functions with `modes=None` it
      is the matrix of the atoms' channel covariance.
    - For a `Spectral` dictionary (and any with `modes=K`), the Gram operator of the shifted
      atoms acts per Fourier mode, $(D D^*)(f) = \\sum_k \\hat d_k(f) \\hat d_k(f)^H$, and $A$ is
      the `SpectralConv` with multipliers $(D D^*)(f)^{-1/2}$, keeping the dictionary's modes
      by default.
    - A `Tied` dictionary is whitened by its concepts $D$ (its atoms).

    Eigenvalues below $10^{-6}$ of the largest (over every mode) are floored (the directions
    the atoms do not span: there the residual does not reach $D^*$ anyway).

    **Raises:** `ValueError` for a dictionary whose atoms are all zero.
    """
    if modes is None and grid.ndim > 0:
        inner = dictionary.inner if isinstance(dictionary, Tied) else dictionary
        inner_modes = getattr(inner, "modes", None)
        if inner_modes is not None:
            if len(set(inner_modes)) != 1:
                raise ValueError(
                    f"gram_whitening: the dictionary keeps modes {inner_modes}, not the same "
                    "number per axis; pass modes= explicitly."
                )
            modes = inner_modes[0]
    return whitening(dictionary.atoms(grid), grid, modes=modes, floor=1e-6)


def _keeping_energy(lift: Pointwise | SpectralConv, data: Array, grid: Grid):
    """`lift` rescaled so that the lifted data have the data's mean $L^2$ energy."""
    energy = jnp.mean(jax.vmap(grid.integrate)(jnp.sum(data**2, axis=1)))
    lifted = jax.vmap(lift)(data)
    scale = jnp.sqrt(energy / jnp.mean(jax.vmap(grid.integrate)(jnp.sum(lifted**2, axis=1))))
    return eqx.tree_at(lambda layer: layer.weight, lift, lift.weight * scale)


def _inverse_sqrt(matrix: Array, floor: float) -> Array:
    """$M^{-1/2}$ of Hermitian positive semi-definite matrices (batched, one per mode),
    eigenvalues floored at `floor` times the largest of them all (a floor per mode would leave
    one channel unfloored: its $1 \\times 1$ matrix is its own largest eigenvalue)."""
    values, vectors = jnp.linalg.eigh(matrix)
    if not bool(jnp.max(values) > 0):
        raise ValueError("whitening: the data have zero energy, nothing to whiten.")
    values = jnp.maximum(values, floor * jnp.max(values))
    return (vectors * values[..., None, :] ** -0.5) @ jnp.conj(jnp.swapaxes(vectors, -1, -2))
