import abc
import math
from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Complex, Float, PRNGKeyArray


class AbstractOperator(eqx.Module):
    """A layer that maps a function with `in_channels` channels to one with `out_channels`
    channels on the same grid: `(in_channels, *spatial) -> (out_channels, *spatial)`.

    Subclass it to bring your own operator layer (see `examples/custom_operator.py`).
    """

    in_channels: eqx.AbstractVar[int]
    out_channels: eqx.AbstractVar[int]

    @abc.abstractmethod
    def __call__(self, x: Float[Array, " in *spatial"]) -> Float[Array, " out *spatial"]:
        """Apply the layer to one function `x` of shape `(in_channels, *spatial)`."""


def _check_channels(layer: AbstractOperator, x: Array) -> None:
    if x.ndim < 1 or x.shape[0] != layer.in_channels:
        raise ValueError(
            f"{type(layer).__name__} expects an input of shape (in_channels={layer.in_channels},"
            f" *spatial), got {tuple(x.shape)}."
        )


def _uniform(key: PRNGKeyArray, shape: tuple[int, ...], fan_in: int) -> Array:
    bound = 1.0 / math.sqrt(fan_in)
    return jr.uniform(key, shape, minval=-bound, maxval=bound)


class Pointwise(AbstractOperator):
    """A linear map of channels applied at every point, $y(s) = W x(s) + b$ (a $1 \\times 1$
    convolution): the lifting and projection of lifted models and neural operators.

    On the zero-dimensional grid (`x` of shape `(in_channels,)`) it is a dense layer.
    """

    weight: Float[Array, " out in"]
    bias: Float[Array, " out"] | None
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)

    def __init__(
        self, in_channels: int, out_channels: int, *, use_bias: bool = False, key: PRNGKeyArray
    ):
        """**Arguments:**

        - `in_channels`, `out_channels`: the channels $c_{in}$ and $c_{out}$.
        - `use_bias`: add a learned constant $b$ (the layer is then affine, not linear).
        - `key`: a `jax.random` key for the uniform $\\pm 1/\\sqrt{c_{in}}$ initialisation.
        """
        wkey, bkey = jr.split(key)
        self.weight = _uniform(wkey, (out_channels, in_channels), in_channels)
        self.bias = _uniform(bkey, (out_channels,), in_channels) if use_bias else None
        self.in_channels = in_channels
        self.out_channels = out_channels

    def __call__(self, x: Float[Array, " in *spatial"]) -> Float[Array, " out *spatial"]:
        _check_channels(self, x)
        y = jnp.tensordot(self.weight, x, axes=(1, 0))
        if self.bias is not None:
            y = y + self.bias.reshape((-1,) + (1,) * (x.ndim - 1))
        return y


class Conv(AbstractOperator):
    """A circular (periodic) convolution layer whose filters have `width` grid points per axis:
    $y_o(s_i) = \\sum_{c, j} W_{o c j}\\, x_c(s_{i + j - \\lfloor w/2 \\rfloor})$ (a
    cross-correlation, as in `torch.nn.Conv1d` with circular padding).

    The filters live in grid units: on a finer grid the same taps describe a narrower
    function. That is what a convolutional network does, and why it does not transfer across
    resolutions.
    """

    weight: Float[Array, " out in *width"]
    bias: Float[Array, " out"] | None
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    width: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        width: int | Sequence[int],
        *,
        num_spatial_dims: int | None = None,
        use_bias: bool = False,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`, `out_channels`: channels in and out.
        - `width`: filter size in grid points, one per axis (an int for every axis).
        - `num_spatial_dims`: $d$; taken from `width` when it is a sequence, else 1.
        - `use_bias`: add a learned constant per output channel.
        - `key`: a `jax.random` key.
        """
        width = _per_axis("width", width, num_spatial_dims)
        fan_in = in_channels * math.prod(width)
        wkey, bkey = jr.split(key)
        self.weight = _uniform(wkey, (out_channels, in_channels) + width, fan_in)
        self.bias = _uniform(bkey, (out_channels,), fan_in) if use_bias else None
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.width = width

    def __call__(self, x: Float[Array, " in *spatial"]) -> Float[Array, " out *spatial"]:
        _check_channels(self, x)
        spatial = x.shape[1:]
        if len(spatial) != len(self.width) or any(w > n for w, n in zip(self.width, spatial)):
            raise ValueError(
                f"Conv with filters of width {self.width} needs a grid of {len(self.width)} "
                f"axes with at least that many points, got input shape {tuple(x.shape)}."
            )
        pad = [(0, 0)] + [(w // 2, w - 1 - w // 2) for w in self.width]
        padded = jnp.pad(x, pad, mode="wrap")
        y = jax.lax.conv_general_dilated(
            padded[None], self.weight, window_strides=(1,) * len(spatial), padding="VALID"
        )[0]
        if self.bias is not None:
            y = y + self.bias.reshape((-1,) + (1,) * len(spatial))
        return y


def _per_axis(name: str, value: int | Sequence[int], num_spatial_dims: int | None):
    if isinstance(value, (int, np.integer)):
        value = (int(value),) * (1 if num_spatial_dims is None else num_spatial_dims)
    value = tuple(int(v) for v in value)
    if num_spatial_dims is not None and len(value) != num_spatial_dims:
        raise ValueError(f"{name}={value} does not have num_spatial_dims={num_spatial_dims} axes.")
    if len(value) == 0 or any(v < 1 for v in value):
        raise ValueError(f"{name} must be positive, one value per axis; got {value}.")
    return value


def mode_index(modes: int, n: int, last: bool) -> tuple[np.ndarray, np.ndarray]:
    """Which Fourier coefficients an axis keeps on a grid of `n` points.

    Keeps the frequencies $|f| < K_n$ with $K_n = \\min(K, \\lfloor n/2 \\rfloor + 1)$: on
    the last axis (the real FFT's half spectrum) $f = 0, \\dots, K_n - 1$; on other axes the
    positive and negative frequencies. Returns the indices into the FFT axis and into the
    weight axis (laid out as $0, \\dots, K-1, -(K-1), \\dots, -1$). For even $n$ and
    $K_n = n/2 + 1$ the Nyquist frequency appears twice on a full axis; gathering and
    scatter-adding keep the map linear and its adjoint exact.
    """
    kept = min(modes, n // 2 + 1)
    positive = np.arange(kept)
    if last:
        return positive, positive
    negative = np.arange(1, kept)[::-1]
    spectrum = np.concatenate([positive, n - negative])
    weight = np.concatenate([positive, 2 * modes - 1 - negative])
    return spectrum, weight


def _half_spectrum_multiplicity(frequencies: np.ndarray, n: int) -> np.ndarray:
    """How often each frequency of a real FFT's half spectrum (last axis, `n` points) stands in
    the whole spectrum: once for $f = 0$ and the Nyquist frequency $n/2$, twice (with its
    mirror $-f$) otherwise."""
    return np.where((frequencies == 0) | (2 * frequencies == n), 1.0, 2.0)


def _gather(a: Array, index: np.ndarray, axis: int) -> Array:
    if np.array_equal(index, np.arange(len(index))):
        return jax.lax.slice_in_dim(a, 0, len(index), axis=axis)
    return jnp.take(a, index, axis=axis)


def _scatter(a: Array, index: np.ndarray, n: int, axis: int) -> Array:
    """The transpose of `_gather`: place `a` at `index` along `axis` of a zero array of length n."""
    if np.array_equal(index, np.arange(len(index))):
        pad = [(0, 0)] * a.ndim
        pad[axis] = (0, n - len(index))
        return jnp.pad(a, pad)
    a = jnp.moveaxis(a, axis, 0)
    out = jnp.zeros((n,) + a.shape[1:], a.dtype).at[index].add(a)
    return jnp.moveaxis(out, 0, axis)


def _truncated(indices: list[tuple[np.ndarray, np.ndarray]], spatial: tuple[int, ...]) -> bool:
    """Whether to transform by Fourier matrices: at most a quarter of the points kept per axis."""
    return all(4 * len(spectrum) <= n for (spectrum, _), n in zip(indices, spatial))


_HIGHEST = jax.lax.Precision.HIGHEST  # exact float32 products on every backend (no TF32)


def _along(a: Array, matrix: np.ndarray, axis: int) -> Array:
    """Contract `axis` of `a` with the rows of `matrix`; the result's axis stays in place."""
    out = jnp.tensordot(a, jnp.asarray(matrix, a.dtype), axes=([axis], [0]), precision=_HIGHEST)
    return jnp.moveaxis(out, -1, axis)


def _dft_forward(x: Array, spectra: list[np.ndarray]) -> Array:
    """`rfftn(x, norm="forward")` at the frequencies `spectra` (per axis), by matrix products."""
    n, kept = x.shape[-1], len(spectra[-1])
    angle = 2 * np.pi * np.outer(np.arange(n), spectra[-1]) / n
    # one product for the real and imaginary parts: one pass over the (large) input
    both = _along(x, np.concatenate([np.cos(angle), -np.sin(angle)], axis=1) / n, x.ndim - 1)
    x_hat = jax.lax.complex(both[..., :kept], both[..., kept:])
    for a, spectrum in enumerate(spectra[:-1]):
        m = x.shape[1 + a]
        x_hat = _along(x_hat, np.exp(-2j * np.pi * np.outer(np.arange(m), spectrum) / m) / m, 1 + a)
    return x_hat


def _dft_inverse(y_hat: Array, spectra: list[np.ndarray], spatial: tuple[int, ...]) -> Array:
    """`irfftn(scatter(y_hat), s=spatial, norm="forward")` by matrix products: the inverse
    transform of the kept frequencies (repeated frequencies add), real on the last axis."""
    for a, spectrum in enumerate(spectra[:-1]):
        m = spatial[a]
        y_hat = _along(y_hat, np.exp(2j * np.pi * np.outer(spectrum, np.arange(m)) / m), 1 + a)
    n, k = spatial[-1], spectra[-1]
    count = _half_spectrum_multiplicity(k, n)[:, None]
    angle = 2 * np.pi * np.outer(k, np.arange(n)) / n
    # one product for the real and imaginary parts: one pass over the (large) output
    both = jnp.concatenate([jnp.real(y_hat), jnp.imag(y_hat)], axis=-1)
    basis = np.concatenate([count * np.cos(angle), -count * np.sin(angle)], axis=0)
    return _along(both, basis, y_hat.ndim - 1)


class SpectralConv(AbstractOperator):
    """A Fourier layer: a convolution whose kernel is given by its lowest Fourier modes,
    $\\hat y_o(f) = \\sum_c W_{c o}(f)\\, \\hat x_c(f)$ for $|f_a| < K_a$ on every axis, and
    $\\hat y(f) = 0$ above.

    Fourier coefficients are integrals, $\\hat x(f) = \\int_\\Omega x(s) e^{-2\\pi i f \\cdot s}ds$
    (`norm="forward"`), so the same weights define the same operator on every grid that
    resolves them. On a coarser grid the modes above its Nyquist frequency are dropped.
    """

    weight: Float[Array, " 2 in out *modes"]
    in_channels: int = eqx.field(static=True)
    out_channels: int = eqx.field(static=True)
    modes: tuple[int, ...] = eqx.field(static=True)

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        modes: int | Sequence[int],
        *,
        num_spatial_dims: int | None = None,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_channels`, `out_channels`: channels in and out.
        - `modes`: $K$, frequencies kept per axis ($|f| < K$); an int for every axis.
        - `num_spatial_dims`: $d$; taken from `modes` when it is a sequence, else 1.
        - `key`: a `jax.random` key; weights are complex normal with standard deviation
          $\\sqrt{2 / (c_{in} + c_{out})}$.
        """
        modes = _per_axis("modes", modes, num_spatial_dims)
        shape = (in_channels, out_channels) + tuple(2 * k - 1 for k in modes[:-1]) + modes[-1:]
        std = math.sqrt(2.0 / (in_channels + out_channels))
        self.weight = (std / math.sqrt(2.0)) * jr.normal(key, (2,) + shape)
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.modes = modes

    @property
    def complex_weight(self) -> Complex[Array, " in out *modes"]:
        """The Fourier multipliers $W(f)$, stored as real and imaginary parts in `weight`
        (real parameters keep every optimiser correct: JAX's gradient with respect to a
        complex parameter is the conjugate of the descent direction)."""
        return self.weight[0] + 1j * self.weight[1]

    def _indices(self, spatial: tuple[int, ...]) -> list[tuple[np.ndarray, np.ndarray]]:
        if len(spatial) != len(self.modes):
            raise ValueError(
                f"SpectralConv with modes {self.modes} acts on {len(self.modes)}-D functions, "
                f"got a grid of shape {spatial}."
            )
        last = len(spatial) - 1
        return [
            mode_index(k, n, last=a == last) for a, (k, n) in enumerate(zip(self.modes, spatial))
        ]

    def to_modes(self, x: Float[Array, " c *spatial"]) -> Complex[Array, " c *kept"]:
        """The kept Fourier coefficients $\\hat x(f)$ of `x` on its grid.

        When few modes are kept (at most a quarter of the points on every axis) the truncated
        transform is computed as products with the Fourier matrices of the kept frequencies
        rather than a full FFT and a gather: the same numbers, faster on CPUs."""
        indices = self._indices(x.shape[1:])
        if _truncated(indices, x.shape[1:]):
            return _dft_forward(x, [spectrum for spectrum, _ in indices])
        x_hat = jnp.fft.rfftn(x, axes=tuple(range(1, x.ndim)), norm="forward")
        for a, (spectrum, _) in enumerate(indices):
            x_hat = _gather(x_hat, spectrum, axis=1 + a)
        return x_hat

    def from_modes(
        self, y_hat: Complex[Array, " c *kept"], spatial: tuple[int, ...]
    ) -> Float[Array, " c *spatial"]:
        """The function on the grid `spatial` with these kept Fourier coefficients (the
        transpose of `to_modes` up to the quadrature weights)."""
        indices = self._indices(spatial)
        if _truncated(indices, spatial):
            return _dft_inverse(y_hat, [spectrum for spectrum, _ in indices], spatial)
        half = spatial[:-1] + (spatial[-1] // 2 + 1,)
        for a, ((spectrum, _), n) in enumerate(zip(indices, half)):
            y_hat = _scatter(y_hat, spectrum, n, axis=1 + a)
        return jnp.fft.irfftn(
            y_hat, s=spatial, axes=tuple(range(1, len(spatial) + 1)), norm="forward"
        )

    def multipliers(self, spatial: tuple[int, ...]) -> Complex[Array, " in out *kept"]:
        """$W(f)$ for the modes kept on the grid `spatial`, made consistent with real
        functions: on the self-conjugate modes (last-axis frequency 0, and its Nyquist
        frequency when kept) $W(f)$ and $\\overline{W(-f)}$ are averaged, which is what the
        inverse real FFT would do implicitly. So the layer is exactly
        $x \\mapsto F^{+} W F x$ and its transpose is $F^{+} W^{H} F$."""
        weight = self.complex_weight
        indices = self._indices(spatial)
        for a, (_, w) in enumerate(indices):
            weight = _gather(weight, w, axis=2 + a)
        n_last, kept_last = spatial[-1], weight.shape[-1]
        self_conjugate = [0] + (
            [kept_last - 1] if n_last % 2 == 0 and kept_last - 1 == n_last // 2 else []
        )
        column = weight[..., self_conjugate]
        mirrored = column
        for a in range(len(spatial) - 1):
            length = column.shape[2 + a]
            mirrored = jnp.take(mirrored, np.mod(-np.arange(length), length), axis=2 + a)
        return weight.at[..., self_conjugate].set(0.5 * (column + jnp.conj(mirrored)))

    def __call__(self, x: Float[Array, " in *spatial"]) -> Float[Array, " out *spatial"]:
        _check_channels(self, x)
        spatial = x.shape[1:]
        y_hat = jnp.einsum("i...,io...->o...", self.to_modes(x), self.multipliers(spatial))
        return self.from_modes(y_hat, spatial)


class Linear(eqx.Module):
    """A dense layer from a function on a fixed grid to a vector,
    $z = W\\,\\mathrm{vec}(x) + b$: `(channels, *spatial) -> (out_features,)`.

    The encoder weights of an amortised SAE with vector codes.
    """

    weight: Float[Array, " out m"]
    bias: Float[Array, " out"] | None
    in_shape: tuple[int, ...] = eqx.field(static=True)
    out_features: int = eqx.field(static=True)

    def __init__(
        self,
        in_shape: Sequence[int],
        out_features: int,
        *,
        use_bias: bool = True,
        key: PRNGKeyArray,
    ):
        """**Arguments:**

        - `in_shape`: the shape `(channels, *spatial)` of one input.
        - `out_features`: the length of the output vector.
        - `use_bias`: add a learned constant $b$.
        - `key`: a `jax.random` key.
        """
        in_shape = tuple(int(n) for n in in_shape)
        fan_in = math.prod(in_shape)
        wkey, bkey = jr.split(key)
        self.weight = _uniform(wkey, (out_features, fan_in), fan_in)
        self.bias = _uniform(bkey, (out_features,), fan_in) if use_bias else None
        self.in_shape = in_shape
        self.out_features = out_features

    def __call__(self, x: Float[Array, " *shape"]) -> Float[Array, " out"]:
        if tuple(x.shape) != self.in_shape:
            raise ValueError(f"Linear expects an input of shape {self.in_shape}, got {x.shape}.")
        y = self.weight @ x.ravel()
        return y if self.bias is None else y + self.bias
