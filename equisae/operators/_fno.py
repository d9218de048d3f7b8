from collections.abc import Callable, Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Float, PRNGKeyArray

from .._grid import Grid
from .._layers import AbstractOperator, Pointwise, SpectralConv, _per_axis


def _identity(v: Array) -> Array:
    return v


class FourierBlock(eqx.Module):
    """One block of an `FNO`, $v \\mapsto \\sigma(K v + W v + b)$: a `SpectralConv` $K$, a
    pointwise skip connection $W v + b$ (`Pointwise`) and an elementwise activation $\\sigma$
    (the identity in the last block). Acts on one field of shape `(width, *spatial)`."""

    spectral: SpectralConv
    skip: Pointwise
    activation: Callable[[Array], Array]

    def __call__(self, v: Float[Array, " width *spatial"]) -> Float[Array, " width *spatial"]:
        """$\\sigma(K v + W v + b)$."""
        return self.activation(self.spectral(v) + self.skip(v))


class _BlockPath(eqx.Module):
    """The path of the field of block `index` in an `FNO`, for `capture` and `splice`."""

    index: int = eqx.field(static=True)

    def __call__(self, fno: "FNO") -> Callable:
        return fno.lifting if self.index == 0 else fno.blocks[self.index - 1]


class FNO(AbstractOperator):
    """A Fourier neural operator (Li et al., 2021) on one function of shape
    `(in_channels, *spatial)`, $d$ = 1 or 2 spatial axes:

    $$v_0 = P x, \\qquad v_l = \\sigma(K_l v_{l-1} + W_l v_{l-1} + b_l) \\ (l = 1, \\dots, L),
    \\qquad y = Q_2\\, \\sigma(Q_1 v_L),$$

    with a pointwise lifting $P$ (`Pointwise`, with bias) to `width` channels, $L$ = `depth`
    blocks of a `SpectralConv` $K_l$ keeping `modes` Fourier modes per axis plus a pointwise
    skip connection $W_l$, and a two-layer pointwise projection $Q$. As in Li et al., the last
    block has no activation ($v_L = K_L v_{L-1} + W_L v_{L-1} + b_L$).

    Every part is pointwise or spectral, so the same weights act on every grid: for
    band-limited inputs the outputs on a grid and on a finer one agree at the common points, up
    to the aliasing of the harmonics that $\\sigma$ creates (none with a linear $\\sigma$).

    The network is `lifting` (a `Pointwise`), `blocks` (a tuple of `FourierBlock`) and
    `projection`, as in pdequinox's `ClassicFNO`, so the generic `capture` and `splice` reach
    its fields by path: `fno.where(i)` is the path of field $i$ (`lambda m: m.lifting` for
    $i = 0$, `lambda m: m.blocks[i - 1]` after). Two shortcuts read them in one pass:
    `hidden(x)` gives $(v_0, v_1, \\dots, v_L)$, and `from_block(i, v)` runs the rest of the
    network from the field of block $i$, so `fno.from_block(i, fno.hidden(x)[i]) == fno(x)`. With
    `coordinates=True` the $d$ coordinates of the grid points are appended to the input
    channels before the lifting (for problems that are not translation invariant, such as
    Dirichlet boundary conditions).
    """

    lifting: Pointwise
    blocks: tuple[FourierBlock, ...]
    projection: tuple[Pointwise, Pointwise]
    activation: Callable[[Array], Array]
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    width: int = eqx.field(static=True)
    modes: tuple[int, ...] = eqx.field(static=True)
    coordinates: bool = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int,
        modes: int | Sequence[int],
        depth: int,
        *,
        num_spatial_dims: int | None = None,
        projection_width: int | None = None,
        coordinates: bool = False,
        activation: Callable[[Array], Array] = jax.nn.gelu,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`, `out_channels`: channels of the input and output functions.
        - `width`: channels of the hidden fields $v_l$.
        - `modes`: $K$, Fourier modes kept per axis by every spectral convolution (an int for
          every axis).
        - `depth`: $L$, the number of Fourier blocks.
        - `num_spatial_dims`: $d$; taken from `modes` when it is a sequence, else 1.
        - `projection_width`: channels between $Q_1$ and $Q_2$ (default `2 * width`).
        - `coordinates`: append the grid coordinates to the input (`in_channels + d` channels
          go into the lifting).
        - `activation`: $\\sigma$, an elementwise function (default GELU).
        - `key`: a `jax.random` key.
        """
        for name, value in (
            ("in_channels", in_channels),
            ("out_channels", out_channels),
            ("width", width),
            ("depth", depth),
        ):
            if int(value) != value or value < 1:
                raise ValueError(f"FNO {name} must be a positive whole number, got {value}.")
        modes = _per_axis("modes", modes, num_spatial_dims)
        if len(modes) not in (1, 2):
            raise ValueError(f"FNO works in 1-D and 2-D, got modes {modes} ({len(modes)} axes).")
        projection_width = 2 * width if projection_width is None else projection_width
        if int(projection_width) != projection_width or projection_width < 1:
            raise ValueError(f"FNO projection_width must be positive, got {projection_width}.")
        lkey, skey, wkey, q1key, q2key = jr.split(key, 5)
        lifted_in = in_channels + (len(modes) if coordinates else 0)
        self.lifting = Pointwise(lifted_in, width, use_bias=True, key=lkey)
        self.blocks = tuple(
            FourierBlock(
                SpectralConv(width, width, modes, key=k1),
                Pointwise(width, width, use_bias=True, key=k2),
                _identity if i == depth - 1 else activation,
            )
            for i, (k1, k2) in enumerate(zip(jr.split(skey, depth), jr.split(wkey, depth)))
        )
        self.projection = (
            Pointwise(width, projection_width, use_bias=True, key=q1key),
            Pointwise(projection_width, out_channels, use_bias=True, key=q2key),
        )
        self.activation = activation
        self.in_channels = int(in_channels)
        self.out_channels = int(out_channels)
        self.width = int(width)
        self.modes = modes
        self.coordinates = coordinates

    @property
    def depth(self) -> int:
        """$L$, the number of Fourier blocks."""
        return len(self.blocks)

    def where(self, i: int) -> Callable[["FNO"], Callable]:
        """The path of field $i$ ($0 \\le i \\le L$) for `capture` and `splice`: the
        lifting for $i = 0$, block $i$ after."""
        if not 0 <= i <= self.depth:
            raise ValueError(f"FNO block index must lie in 0..{self.depth}, got {i}.")
        return _BlockPath(int(i))

    def _check_input(self, x: Array) -> None:
        if x.ndim != 1 + len(self.modes) or x.shape[0] != self.in_channels:
            raise ValueError(
                f"FNO expects one input of shape (in_channels={self.in_channels}, "
                f"{'n' if len(self.modes) == 1 else 'n1, n2'}), got {tuple(x.shape)}; batches go "
                "through jax.vmap."
            )

    def lift(self, x: Float[Array, " in *spatial"]) -> Float[Array, " width *spatial"]:
        """$v_0 = P x$ (with the grid coordinates appended first when `coordinates`)."""
        self._check_input(x)
        if self.coordinates:
            points = Grid(x.shape[1:]).points().astype(x.dtype)
            x = jnp.concatenate([x, points])
        return self.lifting(x)

    def block(self, i: int, v: Float[Array, " width *spatial"]) -> Float[Array, " width *spatial"]:
        """Block $i \\in \\{1, \\dots, L\\}$: $v_i = \\sigma(K_i v_{i-1} + W_i v_{i-1} + b_i)$
        ($\\sigma$ left out for $i = L$)."""
        if not 1 <= i <= self.depth:
            raise ValueError(f"FNO block index must lie in 1..{self.depth}, got {i}.")
        return self.blocks[i - 1](v)

    def project(self, v: Float[Array, " width *spatial"]) -> Float[Array, " out *spatial"]:
        """$y = Q_2\\, \\sigma(Q_1 v_L)$."""
        return self.projection[1](self.activation(self.projection[0](v)))

    def hidden(
        self, x: Float[Array, " in *spatial"]
    ) -> tuple[Float[Array, " width *spatial"], ...]:
        """The hidden fields $(v_0, v_1, \\dots, v_L)$ of one input, each of shape
        `(width, *spatial)`: index 0 is the lifted input, index $i$ the output of block $i$."""
        fields = [self.lift(x)]
        for i in range(1, self.depth + 1):
            fields.append(self.block(i, fields[-1]))
        return tuple(fields)

    def from_block(
        self, i: int, v: Float[Array, " width *spatial"]
    ) -> Float[Array, " out *spatial"]:
        """The output of the network when the field of block $i$ ($0 \\le i \\le L$; 0 is the
        lifted input) is `v`: blocks $i+1, \\dots, L$ and the projection applied to `v`."""
        if not 0 <= i <= self.depth:
            raise ValueError(f"FNO block index must lie in 0..{self.depth}, got {i}.")
        if v.ndim != 1 + len(self.modes) or v.shape[0] != self.width:
            raise ValueError(
                f"FNO hidden fields have shape (width={self.width}, *spatial) with "
                f"{len(self.modes)} spatial axes, got {tuple(v.shape)}."
            )
        for j in range(i + 1, self.depth + 1):
            v = self.block(j, v)
        return self.project(v)

    def __call__(self, x: Float[Array, " in *spatial"]) -> Float[Array, " out *spatial"]:
        """The output $y$ of one input `x` of shape `(in_channels, *spatial)`."""
        return self.from_block(0, self.lift(x))
