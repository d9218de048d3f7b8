import abc
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Complex, Float, Int, PRNGKeyArray

from .._grid import Grid


class Sample(NamedTuple):
    """A batch drawn from a sparse generative model: `signals` of shape
    `(batch, channels, *spatial)`, the true `codes` of shape `(batch, p, *code_spatial)` and the
    true `concepts` (atoms) on the grid, shape `(p, channels, *spatial)`."""

    signals: Float[Array, " batch c *spatial"]
    codes: Float[Array, " batch p *code_spatial"]
    concepts: Float[Array, " p c *spatial"]


class AbstractGenerativeModel(eqx.Module):
    """A sparse generative model $x = \\sum_k D_k z_k$ with known concepts and codes."""

    @abc.abstractmethod
    def concepts(self, grid: Grid) -> Float[Array, " p c *spatial"]:
        """The true concepts (atoms) on `grid`, each of unit $L^2(\\Omega)$ norm."""

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray, num: int, grid: Grid) -> Sample:
        """`num` signals on `grid` with their true codes and concepts; the same key gives the
        same underlying functions on every grid."""


def _check_amplitude(amplitude: tuple[float, float]) -> tuple[float, float]:
    low, high = (float(a) for a in amplitude)
    if not 0 <= low <= high:
        raise ValueError(f"amplitude must be a range 0 <= low <= high, got {amplitude}.")
    return low, high


def _amplitudes(key, shape, amplitude, signed):
    akey, skey = jr.split(key)
    values = jr.uniform(akey, shape, minval=amplitude[0], maxval=amplitude[1])
    if signed:
        values = values * jr.rademacher(skey, shape, dtype=values.dtype)
    return values


class VectorModel(AbstractGenerativeModel):
    """The standard sparse vector model: $x = D z$ with a random dictionary of `concepts`
    unit-norm atoms in $\\mathbb{R}^{\\text{dim}}$ and exactly `sparsity` non-zero codes per
    sample, with amplitudes uniform in `amplitude` and a random sign.

    Vectors are functions on the zero-dimensional grid `Grid(())`: signals have shape
    `(batch, dim)`, codes `(batch, concepts)`, concepts `(concepts, dim)`.
    """

    dictionary: Float[Array, " m p"]
    sparsity: int = eqx.field(static=True)
    amplitude: tuple[float, float] = eqx.field(static=True)
    signed: bool = eqx.field(static=True)

    def __init__(
        self,
        key: PRNGKeyArray,
        dim: int = 50,
        concepts: int = 100,
        sparsity: int = 5,
        *,
        amplitude: tuple[float, float] = (1.0, 2.0),
        signed: bool = True,
    ):
        """**Arguments:**

        - `key`: a `jax.random` key for the dictionary.
        - `dim`, `concepts`, `sparsity`: $m$, $p$ and $s \\le p$.
        - `amplitude`: the range of $|z_k|$ for active concepts.
        - `signed`: draw a random sign for each active code.
        """
        if not 1 <= sparsity <= concepts or dim < 1:
            raise ValueError(
                f"VectorModel needs dim >= 1 and 1 <= sparsity <= concepts, got dim={dim}, "
                f"concepts={concepts}, sparsity={sparsity}."
            )
        atoms = jr.normal(key, (dim, concepts))
        self.dictionary = atoms / jnp.linalg.norm(atoms, axis=0)
        self.sparsity = sparsity
        self.amplitude = _check_amplitude(amplitude)
        self.signed = signed

    def concepts(self, grid: Grid = Grid(())) -> Float[Array, " p m"]:
        _check_vector_grid(grid)
        return self.dictionary.T

    def sample(self, key: PRNGKeyArray, num: int, grid: Grid = Grid(())) -> Sample:
        _check_vector_grid(grid)
        dim, p = self.dictionary.shape
        skey, akey = jr.split(key)
        support = jax.vmap(lambda k: jr.permutation(k, p)[: self.sparsity])(jr.split(skey, num))
        values = _amplitudes(akey, (num, self.sparsity), self.amplitude, self.signed)
        codes = jax.vmap(lambda i, v: jnp.zeros(p).at[i].set(v))(support, values)
        return Sample(codes @ self.dictionary.T, codes, self.dictionary.T)


def _check_vector_grid(grid: Grid) -> None:
    if grid.ndim != 0:
        raise ValueError(f"VectorModel samples vectors, on Grid(()); got a grid {grid.shape}.")


class FourierConcepts(eqx.Module):
    """Continuous periodic concepts $\\kappa_k : \\Omega \\to \\mathbb{R}^c$ given by their
    Fourier series, $\\kappa_k(s) = \\sum_{|f_a| \\le M} \\hat\\kappa_k(f) e^{2\\pi i f\\cdot s}$,
    so that they can be sampled exactly, and shifted exactly, on any grid.

    `coefficients` has shape `(p, c, 2M+1, ..., 2M+1)` with frequencies $-M, \\dots, M$ in
    increasing order per axis and Hermitian symmetry (the functions are real).
    """

    coefficients: Complex[Array, " p c *freqs"]

    @property
    def bandwidth(self) -> int:
        """$M$: the highest frequency present."""
        return (self.coefficients.shape[-1] - 1) // 2

    @property
    def ndim(self) -> int:
        """The dimension $d$ of the domain."""
        return self.coefficients.ndim - 2

    def evaluate(self, coefficients: Complex[Array, " ..."], grid: Grid) -> Float[Array, " ..."]:
        """Sample Fourier series with these `coefficients` (last `d` axes: $-M..M$) on `grid`."""
        if grid.ndim != self.ndim:
            raise ValueError(f"concepts on a {self.ndim}-D domain, got a grid {grid.shape}.")
        frequencies = jnp.arange(-self.bandwidth, self.bandwidth + 1)
        values = coefficients
        for a, n in enumerate(grid.shape):
            basis = jnp.exp(2j * jnp.pi * frequencies[:, None] * jnp.arange(n)[None, :] / n)
            axis = values.ndim - self.ndim + a
            values = jnp.moveaxis(jnp.tensordot(values, basis, axes=([axis], [0])), -1, axis)
        return values.real

    def shift_phases(self, positions: Float[Array, " *lead d"]) -> Complex[Array, " ..."]:
        """$e^{-2\\pi i f \\cdot t}$ on the frequency lattice: coefficients of a shift by $t$."""
        frequencies = jnp.arange(-self.bandwidth, self.bandwidth + 1)
        phase = jnp.zeros(positions.shape[:-1] + (1,) * self.ndim)
        for a in range(self.ndim):
            shape = (1,) * a + (-1,) + (1,) * (self.ndim - a - 1)
            lead = positions[(..., a) + (None,) * self.ndim]
            phase = phase + lead * frequencies.reshape(shape)
        return jnp.exp(-2j * jnp.pi * phase)

    def __call__(self, grid: Grid) -> Float[Array, " p c *spatial"]:
        """The concepts sampled on `grid`."""
        return self.evaluate(self.coefficients, grid)


class FunctionalModel(AbstractGenerativeModel):
    """The sparse functional generative model with domain sparsity:
    $x(s) = \\sum_j a_j \\kappa_{k_j}(s - t_j)$, a sum of `spikes` shifted concepts with
    concept $k_j$ uniform, position $t_j$ uniform on $\\Omega$ (or on a lattice) and amplitude
    $a_j$ uniform in `amplitude` with a random sign. The codes are the spike measures
    $z_k = \\sum_{j: k_j = k} a_j \\delta_{t_j}$, so that $x = \\sum_k \\kappa_k * z_k$.

    Signals are exact samples of the continuous functions on any grid. The codes returned on
    a grid put each spike's mass on its nearest grid point (value $a_j N$), which is exact when
    the positions lie on the grid (`lattice` dividing the grid size).
    """

    family: FourierConcepts
    spikes: int = eqx.field(static=True)
    amplitude: tuple[float, float] = eqx.field(static=True)
    signed: bool = eqx.field(static=True)
    lattice: int | None = eqx.field(static=True)
    noise: float = eqx.field(static=True)

    def __init__(
        self,
        concepts: FourierConcepts,
        spikes: int = 3,
        *,
        amplitude: tuple[float, float] = (1.0, 2.0),
        signed: bool = True,
        lattice: int | None = None,
        noise: float = 0.0,
    ):
        """**Arguments:**

        - `concepts`: the true concepts, e.g. from `equisae.data.gabor(key, 8)`.
        - `spikes`: spikes per sample.
        - `amplitude`, `signed`: amplitudes $|a_j|$ uniform in this range, random sign.
        - `lattice`: if given, positions lie on the lattice of `lattice` points per axis.
        - `noise`: standard deviation of white noise added to every grid value.
        """
        if spikes < 1:
            raise ValueError(f"spikes must be >= 1, got {spikes}.")
        if lattice is not None and lattice < 1:
            raise ValueError(f"lattice must be a positive number of points, got {lattice}.")
        if noise < 0:
            raise ValueError(f"noise must be >= 0, got {noise}.")
        self.family = concepts
        self.spikes = spikes
        self.amplitude = _check_amplitude(amplitude)
        self.signed = signed
        self.lattice = lattice
        self.noise = noise

    def concepts(self, grid: Grid) -> Float[Array, " p c *spatial"]:
        return self.family(grid)

    def spike_parameters(
        self, key: PRNGKeyArray, num: int
    ) -> tuple[Int[Array, " batch s"], Float[Array, " batch s d"], Float[Array, " batch s"]]:
        """The continuous codes of `num` samples: concept index, position and amplitude of
        every spike (independent of any grid)."""
        ckey, pkey, akey = jr.split(key, 3)
        p, d = self.family.coefficients.shape[0], self.family.ndim
        concept = jr.randint(ckey, (num, self.spikes), 0, p)
        if self.lattice is None:
            position = jr.uniform(pkey, (num, self.spikes, d))
        else:
            position = jr.randint(pkey, (num, self.spikes, d), 0, self.lattice) / self.lattice
        amplitude = _amplitudes(akey, (num, self.spikes), self.amplitude, self.signed)
        return concept, position, amplitude

    def sample(self, key: PRNGKeyArray, num: int, grid: Grid) -> Sample:
        if num < 1:
            raise ValueError(f"num must be >= 1, got {num}.")
        return _functional_sample(self, key, num, grid)


@eqx.filter_jit
def _functional_sample(model: FunctionalModel, key: PRNGKeyArray, num: int, grid: Grid) -> Sample:
    """`FunctionalModel.sample`, compiled once per model structure, `num` and grid (sampled
    op by op, a new grid or batch size costs some hundred small compiles)."""
    skey, nkey = jr.split(key)
    concept, position, amplitude = model.spike_parameters(skey, num)
    coefficients = model.family.coefficients

    def signal_coefficients(k, t, a):
        phases = model.family.shift_phases(t)  # (s, *freqs)
        weighted = (a.reshape((-1,) + (1,) * model.family.ndim) * phases)[:, None]
        return jnp.sum(coefficients[k] * weighted, axis=0)

    signals = model.family.evaluate(
        jax.vmap(signal_coefficients)(concept, position, amplitude), grid
    )
    if model.noise > 0:
        signals = signals + model.noise * jr.normal(nkey, signals.shape)
    p = coefficients.shape[0]
    index = jnp.round(position * jnp.asarray(grid.shape)).astype(int) % jnp.asarray(grid.shape)

    def grid_codes(k, i, a):
        return jnp.zeros((p,) + grid.shape).at[(k, *i.T)].add(a / grid.weight)

    codes = jax.vmap(grid_codes)(concept, index, amplitude)
    return Sample(signals, codes, model.family(grid))


def _lattice(bandwidth: int, ndim: int) -> Int[Array, " d *freqs"]:
    f = jnp.arange(-bandwidth, bandwidth + 1)
    return jnp.stack(jnp.meshgrid(*([f] * ndim), indexing="ij"))


def _finish(coefficients: Complex[Array, " p c *freqs"]) -> FourierConcepts:
    """Make real (Hermitian) and of unit $L^2$ norm by Parseval."""
    ndim = coefficients.ndim - 2
    axes = tuple(range(2, 2 + ndim))
    mirrored = jnp.conj(jnp.flip(coefficients, axis=axes))
    coefficients = 0.5 * (coefficients + mirrored)
    norms = jnp.sqrt(jnp.sum(jnp.abs(coefficients) ** 2, axis=tuple(range(1, coefficients.ndim))))
    return FourierConcepts(coefficients / norms.reshape((-1,) + (1,) * (coefficients.ndim - 1)))


def _channel_mix(key: PRNGKeyArray, p: int, channels: int) -> Array:
    mix = jr.normal(key, (p, channels))
    return mix / jnp.linalg.norm(mix, axis=1, keepdims=True)


def _gaussian(frequencies: Array, width: Array, offset: Array) -> Array:
    """Fourier coefficients of a periodised Gaussian of standard deviation `width` at `offset`."""
    squared = jnp.sum(frequencies**2, axis=0)
    phase = jnp.tensordot(offset, frequencies, axes=1)
    return jnp.exp(-2 * jnp.pi**2 * width**2 * squared - 2j * jnp.pi * phase)


def _bandwidth_for(width: float) -> int:
    """The frequency where a Gaussian of this width has decayed below 1e-8 of its peak."""
    return int(np.ceil(np.sqrt(np.log(1e8) / (2 * np.pi**2)) / width))


def smooth(
    key: PRNGKeyArray,
    concepts: int,
    *,
    ndim: int = 1,
    channels: int = 1,
    bandwidth: int = 8,
    decay: float = 0.0,
) -> FourierConcepts:
    """Smooth, band-limited concepts: random Gaussian Fourier coefficients for every frequency
    with $\\max_a |f_a| \\le$ `bandwidth`, none above, scaled by $(1 + |f|)^{-\\text{decay}}$."""
    shape = (concepts, channels) + (2 * bandwidth + 1,) * ndim
    real, imag = jr.normal(key, (2,) + shape)
    radius = jnp.sqrt(jnp.sum(_lattice(bandwidth, ndim) ** 2, axis=0))
    return _finish((real + 1j * imag) * (1 + radius) ** -decay)


def rough(
    key: PRNGKeyArray,
    concepts: int,
    *,
    ndim: int = 1,
    channels: int = 1,
    bandwidth: int = 48,
    decay: float = 0.5,
) -> FourierConcepts:
    """Rough concepts: random Fourier coefficients whose magnitude decays only like
    $(1 + |f|)^{-\\text{decay}}$ up to `bandwidth`: most energy sits at high frequencies."""
    shape = (concepts, channels) + (2 * bandwidth + 1,) * ndim
    real, imag = jr.normal(key, (2,) + shape)
    radius = jnp.sqrt(jnp.sum(_lattice(bandwidth, ndim) ** 2, axis=0))
    return _finish((real + 1j * imag) * (1 + radius) ** -decay)


def bumps(
    key: PRNGKeyArray,
    concepts: int,
    *,
    ndim: int = 1,
    channels: int = 1,
    per_concept: int = 4,
    width: tuple[float, float] = (0.01, 0.03),
    spread: float = 0.2,
) -> FourierConcepts:
    """Localised concepts: each a signed sum of `per_concept` Gaussian bumps of standard
    deviation uniform in `width`, at offsets uniform in $[-\\text{spread}, \\text{spread}]^d$
    around the origin."""
    bandwidth = _bandwidth_for(width[0])
    frequencies = _lattice(bandwidth, ndim)
    wkey, okey, akey, ckey = jr.split(key, 4)
    widths = jr.uniform(wkey, (concepts, per_concept), minval=width[0], maxval=width[1])
    offsets = jr.uniform(okey, (concepts, per_concept, ndim), minval=-spread, maxval=spread)
    weights = _amplitudes(akey, (concepts, per_concept), (0.5, 1.0), True)
    each = jax.vmap(jax.vmap(_gaussian, in_axes=(None, 0, 0)), in_axes=(None, 0, 0))
    shapes = jnp.einsum("kj,kj...->k...", weights, each(frequencies, widths, offsets))
    return _finish(jnp.einsum("kc,k...->kc...", _channel_mix(ckey, concepts, channels), shapes))


def gabor(
    key: PRNGKeyArray,
    concepts: int,
    *,
    ndim: int = 1,
    channels: int = 1,
    width: tuple[float, float] = (0.06, 0.1),
    frequency: tuple[float, float] = (2.0, 26.0),
) -> FourierConcepts:
    """Gabor concepts: a Gaussian envelope of standard deviation uniform in `width` times a
    cosine with random phase. The frequencies are stratified over the range `frequency` (one
    uniform draw in each of `concepts` equal bins, in random order; a random direction in 2-D),
    so that no two concepts are near-copies of each other up to a shift."""
    bandwidth = int(np.ceil(frequency[1])) + _bandwidth_for(width[0])
    frequencies = _lattice(bandwidth, ndim)
    wkey, fkey, okey, dkey, pkey, ckey = jr.split(key, 6)
    widths = jr.uniform(wkey, (concepts,), minval=width[0], maxval=width[1])
    bins = (jnp.arange(concepts) + jr.uniform(fkey, (concepts,))) / concepts
    magnitude = jr.permutation(okey, frequency[0] + bins * (frequency[1] - frequency[0]))
    direction = jr.normal(dkey, (concepts, ndim))
    carrier = magnitude[:, None] * direction / jnp.linalg.norm(direction, axis=1, keepdims=True)
    phase = jr.uniform(pkey, (concepts,), maxval=2 * jnp.pi)

    def one(width, carrier, phase):
        # the spectrum of g(s) cos(2 pi f0.s + phase): half the envelope's, moved to +-f0
        shape = (-1,) + (1,) * ndim
        up = _gaussian(frequencies - carrier.reshape(shape), width, jnp.zeros(ndim))
        down = _gaussian(frequencies + carrier.reshape(shape), width, jnp.zeros(ndim))
        return 0.5 * (jnp.exp(1j * phase) * up + jnp.exp(-1j * phase) * down)

    shapes = jax.vmap(one)(widths, carrier, phase)
    return _finish(jnp.einsum("kc,k...->kc...", _channel_mix(ckey, concepts, channels), shapes))


def _one_sided_exponential(frequencies: Array, decay: Array) -> Array:
    """Fourier coefficients of the periodised $e^{-s/\\tau}$ for $s > 0$ (zero for $s < 0$)."""
    return decay / (1 + 2j * jnp.pi * frequencies * decay)


def _asymmetric_triangle(frequencies: Array, left: Array, right: Array) -> Array:
    """Fourier coefficients of the periodised triangle rising from $-$`left` to 1 at the
    origin and falling to 0 at `right`: its second derivative is three spikes, so
    $\\hat\\kappa(f) = (1/a + 1/b - e^{2\\pi i f a}/a - e^{-2\\pi i f b}/b) / (4\\pi^2 f^2)$."""
    f = jnp.where(frequencies == 0, 1.0, frequencies)
    spikes = 1 / left + 1 / right - jnp.exp(2j * jnp.pi * f * left) / left
    spikes = spikes - jnp.exp(-2j * jnp.pi * f * right) / right
    return jnp.where(frequencies == 0, (left + right) / 2, spikes / (4 * jnp.pi**2 * f**2))


def asymmetric(
    key: PRNGKeyArray,
    concepts: int,
    *,
    ndim: int = 1,
    channels: int = 1,
    decay: tuple[float, float] = (0.02, 0.05),
    half_width: tuple[float, float] = (0.03, 0.2),
    bandwidth: int = 128,
) -> FourierConcepts:
    """Localised asymmetric concepts with a kink, in two kinds that alternate: even-numbered
    concepts are one-sided exponentials $e^{-|s|/\\tau}$ on one side of the origin (a jump,
    then a decay of length $\\tau$ uniform in `decay`, the side drawn at random), odd-numbered
    ones asymmetric triangles (peak at the origin, kinks there and at the feet, the two
    half-widths drawn independently, uniform in `half_width`: most are clearly lopsided, a
    few nearly symmetric). In $d$ dimensions a concept is
    the product of such profiles along the axes (same kind, independent draws). Their spectra
    decay slowly ($1/f$ and $1/f^2$): the series is cut at `bandwidth`, so the jump rings
    (Gibbs) at the scale of $1 / \\text{bandwidth}$."""
    frequencies = jnp.arange(-bandwidth, bandwidth + 1).astype(float)
    dkey, skey, lkey, rkey, ckey = jr.split(key, 5)
    decays = jr.uniform(dkey, (concepts, ndim), minval=decay[0], maxval=decay[1])
    sides = jr.rademacher(skey, (concepts, ndim)).astype(float)
    lefts = jr.uniform(lkey, (concepts, ndim), minval=half_width[0], maxval=half_width[1])
    rights = jr.uniform(rkey, (concepts, ndim), minval=half_width[0], maxval=half_width[1])
    exponential = _one_sided_exponential(sides[..., None] * frequencies, decays[..., None])
    triangle = _asymmetric_triangle(frequencies, lefts[..., None], rights[..., None])
    kind = (jnp.arange(concepts) % 2 == 0)[:, None, None]
    profiles = jnp.where(kind, exponential, triangle)  # (p, d, 2M+1)
    shapes = profiles[:, 0]
    for a in range(1, ndim):
        shapes = shapes[..., None] * profiles[:, a].reshape((concepts,) + (1,) * a + (-1,))
    return _finish(jnp.einsum("kc,k...->kc...", _channel_mix(ckey, concepts, channels), shapes))


FAMILIES = {
    "smooth": smooth,
    "rough": rough,
    "bumps": bumps,
    "gabor": gabor,
    "asymmetric": asymmetric,
}


def concept_family(name: str, key: PRNGKeyArray, concepts: int, **kwargs) -> FourierConcepts:
    """Concepts from a named family: `"smooth"`, `"rough"`, `"bumps"`, `"gabor"` or
    `"asymmetric"`."""
    if name not in FAMILIES:
        raise ValueError(f"unknown concept family {name!r}; choose one of {sorted(FAMILIES)}.")
    return FAMILIES[name](key, concepts, **kwargs)
