import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import equisae as eqs
from equisae import data


def test_the_vector_model_has_unit_atoms_and_exactly_s_codes(vector_problem):
    model, sample = vector_problem
    np.testing.assert_allclose(jnp.linalg.norm(sample.concepts, axis=1), 1.0, rtol=1e-5)
    assert sample.signals.shape == (8000, 50) and sample.codes.shape == (8000, 100)
    assert jnp.all(jnp.sum(sample.codes != 0, axis=1) == 5)
    active = jnp.abs(sample.codes[sample.codes != 0])
    assert jnp.all((active >= 1.0) & (active <= 2.0))
    assert 0.4 < float(jnp.mean(sample.codes[sample.codes != 0] > 0)) < 0.6
    np.testing.assert_allclose(sample.signals, sample.codes @ sample.concepts, atol=1e-5)


def test_same_key_same_sample():
    model = data.VectorModel(jr.key(0), 10, 20, 3)
    a, b = model.sample(jr.key(1), 5), model.sample(jr.key(1), 5)
    np.testing.assert_array_equal(a.signals, b.signals)


@pytest.mark.parametrize("family", ["smooth", "rough", "bumps", "gabor", "asymmetric"])
@pytest.mark.parametrize("ndim", [1, 2])
def test_concept_families_are_real_unit_norm_functions(family, ndim):
    concepts = data.concept_family(family, jr.key(0), 3, ndim=ndim, channels=2)
    grid = eqs.Grid((4 * concepts.bandwidth,) * ndim)
    values = concepts(grid)
    assert values.shape == (3, 2) + grid.shape
    norms = jnp.sqrt(grid.integrate(jnp.sum(values**2, axis=1)))
    np.testing.assert_allclose(norms, 1.0, rtol=1e-4)
    # real: the coefficients are Hermitian
    c = concepts.coefficients
    axes = tuple(range(2, c.ndim))
    np.testing.assert_allclose(jnp.conj(jnp.flip(c, axis=axes)), c, atol=1e-7)


def test_asymmetric_concepts_are_one_sided_exponentials_and_asymmetric_triangles():
    concepts = data.asymmetric(jr.key(0), 4, bandwidth=256)
    grid = eqs.Grid(1024)
    values = np.asarray(concepts(grid))[:, 0]
    assert values.shape == (4, 1024)
    np.testing.assert_allclose(np.sqrt(np.mean(values**2, axis=1)), 1.0, rtol=1e-4)
    s = np.arange(1024) / 1024
    s = np.where(s > 0.5, s - 1, s)  # positions in [-1/2, 1/2)
    values = values * np.sign(values[np.arange(4), np.argmax(np.abs(values), axis=1)])[:, None]
    for k, kind in enumerate(["exponential", "triangle"] * 2):
        f = values[k]
        support = s[f > 0.01 * f.max()]
        assert abs(s[np.argmax(f)]) < 0.01  # the jump or the peak sits at the origin
        if kind == "exponential":  # one side of the origin only (up to the ringing)
            assert min(-support.min(), support.max()) < 0.05
            assert max(-support.min(), support.max()) > 0.05
        elif k == 1:  # feet at different distances on the two sides (drawn independently)
            assert abs(-support.min() - support.max()) > 0.01


def test_the_functional_model_samples_the_same_functions_on_every_grid():
    model = data.FunctionalModel(data.gabor(jr.key(0), 4), spikes=3)
    coarse = model.sample(jr.key(1), 6, eqs.Grid(64))
    fine = model.sample(jr.key(1), 6, eqs.Grid(256))
    np.testing.assert_allclose(fine.signals[..., ::4], coarse.signals, atol=1e-4)
    np.testing.assert_allclose(fine.concepts[..., ::4], coarse.concepts, atol=1e-5)


def test_functional_signals_are_the_concepts_convolved_with_the_codes():
    """With positions on the grid, x = sum_k kappa_k * z_k exactly (quadrature convolution)."""
    grid = eqs.Grid(64)
    model = data.FunctionalModel(data.bumps(jr.key(0), 3), spikes=4, lattice=32)
    sample = model.sample(jr.key(1), 5, grid)
    atoms = jnp.fft.fft(sample.concepts, axis=-1)  # (p, c, n)
    codes = jnp.fft.fft(sample.codes, axis=-1)  # (b, p, n)
    rebuilt = jnp.fft.ifft(jnp.einsum("pcn,bpn->bcn", atoms, codes), axis=-1).real * grid.weight
    np.testing.assert_allclose(rebuilt, sample.signals, atol=1e-4)
    # every spike has unit mass times its amplitude
    masses = jnp.sum(jnp.abs(sample.codes), axis=(1, 2)) * grid.weight
    assert jnp.all((masses >= 4 * 1.0 - 1e-4) & (masses <= 4 * 2.0 + 1e-4))


def test_two_dimensional_functional_data():
    grid = eqs.Grid((24, 24))
    model = data.FunctionalModel(
        data.smooth(jr.key(0), 2, ndim=2, bandwidth=4), spikes=2, lattice=24
    )
    sample = model.sample(jr.key(1), 3, grid)
    assert sample.signals.shape == (3, 1, 24, 24) and sample.codes.shape == (3, 2, 24, 24)
    spectral = eqs.Spectral(grid, 1, 2, 5, key=jr.key(2))
    spectral = eqx_set(spectral, sample.concepts)
    rebuilt = jax.vmap(spectral, in_axes=(0, None))(sample.codes, grid)
    np.testing.assert_allclose(rebuilt, sample.signals, atol=1e-3)


def eqx_set(spectral, concepts):
    """A Spectral dictionary whose kernels are the given band-limited atoms."""
    import equinox as eqx

    from equisae._layers import mode_index

    n1, n2 = concepts.shape[-2:]
    hat = jnp.fft.rfftn(concepts, axes=(-2, -1), norm="forward")
    spectrum, _ = mode_index(5, n1, last=False)
    hat = hat[..., spectrum, :5]
    return eqx.tree_at(lambda d: d.conv.weight, spectral, jnp.stack([hat.real, hat.imag]))


@pytest.mark.parametrize(
    "build,match",
    [
        (lambda: data.VectorModel(jr.key(0), 10, 20, 30), "sparsity"),
        (lambda: data.VectorModel(jr.key(0), 10, 20, 3, amplitude=(2.0, 1.0)), "amplitude"),
        (lambda: data.FunctionalModel(data.smooth(jr.key(0), 2), spikes=0), "spikes"),
        (lambda: data.FunctionalModel(data.smooth(jr.key(0), 2), noise=-1.0), "noise"),
        (lambda: data.concept_family("wiggly", jr.key(0), 2), "unknown concept family"),
    ],
)
def test_bad_generative_settings_are_refused(build, match):
    with pytest.raises(ValueError, match=match):
        build()


def test_incoherent_concepts_keep_their_pairwise_coherence_below_the_bound():
    grid = eqs.Grid(64)
    pool = data.bumps(jr.key(0), 24, spread=0.1)
    assert eqs.metrics.mutual_coherence(pool(grid), shift_invariant=True) > 0.8
    chosen = data.incoherent(pool, 4, grid, max_coherence=0.8)
    assert chosen.coefficients.shape == (4,) + pool.coefficients.shape[1:]
    cos, _ = eqs.metrics.cosine_similarity(
        chosen(grid), chosen(grid), shift_invariant=True, upsample=8
    )
    np.fill_diagonal(cos, 0.0)
    assert np.max(np.abs(cos)) <= 0.8
    # greedy in the pool's order: the first concept of the pool is always kept
    np.testing.assert_array_equal(chosen.coefficients[0], pool.coefficients[0])


def test_incoherent_names_how_many_concepts_qualify_when_the_pool_is_too_small():
    pool = data.asymmetric(jr.key(0), 8)
    with pytest.raises(ValueError, match=r"only \d of the pool's 8 concepts"):
        data.incoherent(pool, 8, eqs.Grid(128), max_coherence=0.8)


@pytest.mark.parametrize("count,bound", [(0, 0.5), (-1, 0.5), (2, 0.0), (2, 1.5)])
def test_incoherent_refuses_bad_settings(count, bound):
    with pytest.raises(ValueError, match="count|max_coherence"):
        data.incoherent(data.smooth(jr.key(0), 4), count, eqs.Grid(32), max_coherence=bound)
