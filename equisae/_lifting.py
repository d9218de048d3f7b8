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

    The lift is learned with the model; wrap it in `Frozen` to keep it fixed (a random lift, or
    one set from the data by `whitening`).
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
    data: Float[Array, " n c *spatial"], grid: Grid, *, modes: int | None = None
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

    Eigenvalues below $10^{-6}$ of the largest are floored there.

    **Raises:** `ValueError` for data with zero energy or of the wrong shape.
    """
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
        lift = eqx.tree_at(lambda p: p.weight, lift, _inverse_sqrt(second))
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
    root = _inverse_sqrt(second)  # (*kept, c, c): A(f) maps channel i to channel o as root[o, i]
    weight = jnp.moveaxis(jnp.swapaxes(root, -1, -2), (-2, -1), (0, 1))  # (in, out, *kept)
    lift = eqx.tree_at(lambda s: s.weight, lift, jnp.stack([weight.real, weight.imag]))
    return Frozen(_keeping_energy(lift, data, grid))


def _keeping_energy(lift: Pointwise | SpectralConv, data: Array, grid: Grid):
    """`lift` rescaled so that the lifted data have the data's mean $L^2$ energy."""
    energy = jnp.mean(jax.vmap(grid.integrate)(jnp.sum(data**2, axis=1)))
    lifted = jax.vmap(lift)(data)
    scale = jnp.sqrt(energy / jnp.mean(jax.vmap(grid.integrate)(jnp.sum(lifted**2, axis=1))))
    return eqx.tree_at(lambda layer: layer.weight, lift, lift.weight * scale)


def _inverse_sqrt(matrix: Array) -> Array:
    """$M^{-1/2}$ of Hermitian positive semi-definite matrices (batched), eigenvalues floored at
    $10^{-6}$ of the largest."""
    values, vectors = jnp.linalg.eigh(matrix)
    top = jnp.max(values, axis=-1, keepdims=True)
    if not bool(jnp.all(top > 0)):
        raise ValueError("whitening: the data have zero energy (at some mode), nothing to whiten.")
    values = jnp.maximum(values, 1e-6 * top)
    return (vectors * values[..., None, :] ** -0.5) @ jnp.conj(jnp.swapaxes(vectors, -1, -2))
