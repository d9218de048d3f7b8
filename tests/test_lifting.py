"""Tied lifting: concepts in data space, the lift in the metric of inference only."""

import equinox as eqx
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from hypothesis import given

import equisae as eqs

VECTOR = eqs.Grid(())


def _identity(channels: int) -> eqs.Pointwise:
    lift = eqs.Pointwise(channels, channels, key=jr.key(0))
    return eqx.tree_at(lambda p: p.weight, lift, jnp.eye(channels))


def _isometry(channels: int, width: int, seed: int) -> eqs.Pointwise:
    """A lift with orthonormal columns: $A^*A = I$."""
    q, _ = jnp.linalg.qr(jr.normal(jr.key(seed), (width, channels)))
    lift = eqs.Pointwise(channels, width, key=jr.key(0))
    return eqx.tree_at(lambda p: p.weight, lift, q)


def _sae(dictionary, lam=0.1, steps=20):
    return eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(lam), steps), dictionary)


@eqx.filter_jit
def _codes(sae, x, grid):
    return jax.vmap(sae.encode, in_axes=(0, None))(x, grid)


@eqx.filter_jit
def _gradient(sae, x, grid):
    return eqx.filter_grad(lambda m: eqs.SAELoss(l1=0.1)(m, x, grid)[0])(sae)


@eqx.filter_jit
def _diagnostics(sae, x, grid):
    return jax.vmap(sae.infer, in_axes=(0, None))(x, grid)[2]


def _coherent(seed: int, examples: int = 512):
    """Vectors m=32 from p=64 atoms sharing one direction (|cos| about 0.5), 3 active."""
    kd, ks, kc = jr.split(jr.key(seed), 3)
    model = eqs.data.VectorModel(kd, dim=32, concepts=64, sparsity=3)
    atoms = jr.normal(kd, (64, 32)) + jr.normal(kc, (32,))
    atoms = atoms / jnp.linalg.norm(atoms, axis=1, keepdims=True)
    codes = model.sample(ks, examples).codes
    dictionary = eqs.Dense(VECTOR, 32, 64, key=jr.key(1))
    return eqx.tree_at(lambda d: d.weight, dictionary, atoms.T), codes @ atoms


def test_a_tied_identity_lift_is_the_plain_sae():
    dictionary = eqs.Dense(VECTOR, 8, 12, key=jr.key(0))
    plain, tied = _sae(dictionary), _sae(eqs.Tied(dictionary, _identity(8)))
    x = jr.normal(jr.key(1), (16, 8))
    np.testing.assert_allclose(_codes(tied, x, VECTOR), _codes(plain, x, VECTOR), atol=1e-5)
    g_plain = _gradient(plain, x, VECTOR).dictionary.weight
    g_tied = _gradient(tied, x, VECTOR).dictionary.inner.weight
    np.testing.assert_allclose(g_tied, g_plain, rtol=1e-5, atol=1e-5)


@given(seed=st.sampled_from([0, 1, 2]), width=st.sampled_from([8, 16]))
def test_an_isometric_lift_leaves_inference_unchanged(seed, width):
    dictionary = eqs.Dense(VECTOR, 8, 12, key=jr.key(seed))
    plain, tied = _sae(dictionary), _sae(eqs.Tied(dictionary, _isometry(8, width, seed)))
    x = jr.normal(jr.key(seed + 10), (8, 8))
    np.testing.assert_allclose(_codes(tied, x, VECTOR), _codes(plain, x, VECTOR), atol=2e-5)


@given(seed=st.sampled_from([0, 1, 2]), family=st.sampled_from(["spectral", "dense"]))
def test_the_adjoint_identity_holds_in_the_lifted_metric(seed, family):
    grid = eqs.Grid(16)
    inner = (
        eqs.Spectral(grid, 2, 3, 5, key=jr.key(seed))
        if family == "spectral"
        else eqs.Dense(grid, 2, 3, key=jr.key(seed))
    )
    lift = eqs.SpectralConv(2, 3, 5, key=jr.key(seed + 1)) if family == "spectral" else None
    lift = lift or eqs.Pointwise(2, 3, key=jr.key(seed + 1))
    _, lifted = eqs.Tied(inner, lift).lift(jnp.zeros((2, 16)), grid)
    k1, k2 = jr.split(jr.key(seed + 2))
    z = jr.normal(k1, lifted.code_shape(grid))
    y = jr.normal(k2, (3, 16))
    with jax.default_matmul_precision("highest"):
        left = grid.inner(lifted(z, grid), y)
        adjoint = lifted.adjoint(y, grid)
        right = jnp.sum(z * adjoint) * eqs.Grid(z.shape[1:]).weight
    np.testing.assert_allclose(left, right, rtol=1e-4, atol=1e-5)


def test_a_tied_model_decodes_with_its_data_space_concepts():
    grid = eqs.Grid(16)
    inner = eqs.Spectral(grid, 1, 3, 5, key=jr.key(0))
    tied = eqs.Tied(inner, eqs.Pointwise(1, 4, key=jr.key(1))).normalise(grid)
    np.testing.assert_allclose(tied.atoms(grid), tied.inner.atoms(grid))
    np.testing.assert_allclose(tied.atom_norms(grid), 1.0, rtol=1e-5)


def test_a_frozen_lift_gets_no_gradient():
    dictionary = eqs.Dense(VECTOR, 8, 12, key=jr.key(0))
    lift = eqs.Pointwise(8, 8, key=jr.key(1))
    x = jr.normal(jr.key(2), (16, 8))

    free = _gradient(_sae(eqs.Tied(dictionary, lift)), x, VECTOR)
    frozen = _gradient(_sae(eqs.Tied(dictionary, eqs.Frozen(lift))), x, VECTOR)
    assert jnp.any(free.dictionary.lifting.weight != 0)
    assert jnp.all(frozen.dictionary.lifting.layer.weight == 0)
    np.testing.assert_allclose(
        frozen.dictionary.inner.weight, free.dictionary.inner.weight, rtol=1e-5, atol=1e-7
    )


def test_whitening_inverts_the_data_covariance_and_keeps_its_energy():
    _, x = _coherent(0)
    lift = eqs.whitening(x, VECTOR)
    weight = lift.layer.weight
    second = x.T @ x / x.shape[0]
    metric = weight.T @ weight
    with jax.default_matmul_precision("highest"):
        product = metric @ second
    scale = jnp.trace(product) / 32
    np.testing.assert_allclose(product / scale, jnp.eye(32), atol=1e-3)
    energy = jnp.mean(jnp.sum(jax.vmap(lift)(x) ** 2, axis=1))
    np.testing.assert_allclose(energy, jnp.mean(jnp.sum(x**2, axis=1)), rtol=1e-4)


def test_spectral_whitening_with_a_small_floor_flattens_the_spectrum_of_function_data():
    grid = eqs.Grid(32)
    concepts = eqs.data.smooth(jr.key(0), 3, bandwidth=6)
    x = eqs.data.FunctionalModel(concepts, spikes=2).sample(jr.key(1), 256, grid).signals
    lift = eqs.whitening(x, grid, modes=7, floor=1e-6)
    spectrum = jnp.mean(jnp.abs(jax.vmap(lift.layer.to_modes)(jax.vmap(lift)(x))) ** 2, axis=0)
    assert float(jnp.max(spectrum) / jnp.min(spectrum)) < 1.01


@pytest.mark.parametrize("floor", [None, 1e-2, 1e-6])
def test_spectral_whitening_amplifies_no_mode_beyond_its_floor(floor):
    """Band-limited data (modes <= 6) whitened at every mode of the grid: the modes past the
    band hold only rounding, and the largest multiplier is at most floor^(-1/2) times the
    smallest (the default floor of a spectral lift is 0.1), over all modes together."""
    grid = eqs.Grid(32)
    concepts = eqs.data.smooth(jr.key(0), 3, bandwidth=6)
    x = eqs.data.FunctionalModel(concepts, spikes=2).sample(jr.key(1), 256, grid).signals
    lift = eqs.whitening(x, grid, modes=17, floor=floor)
    gain = jnp.hypot(*lift.layer.weight[:, 0, 0])  # |A(f)| per mode
    bound = (0.1 if floor is None else floor) ** -0.5
    assert float(jnp.max(gain) / jnp.min(gain)) <= bound * (1 + 1e-4)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_tied_whitening_speeds_up_inference_on_coherent_atoms(seed):
    """The true coherent dictionary, fixed: FISTA with restarts to 1e-5 needs 95 iterations
    (median, seed 0) in the data metric and 23 in the whitened one; the Gram's condition
    number drops from about 290 to 1.7."""
    dictionary, x = _coherent(seed)
    encoder = eqs.FixedPoint(eqs.SoftThreshold(0.1), rtol=1e-5, atol=1e-5, max_steps=5000)
    steps = {}
    for name, d in [
        ("plain", dictionary),
        ("tied", eqs.Tied(dictionary, eqs.whitening(x, VECTOR))),
    ]:
        diagnostics = _diagnostics(eqs.SAE(encoder, d), x[:32], VECTOR)
        assert bool(jnp.all(diagnostics.converged))
        steps[name] = float(jnp.median(diagnostics.steps))
    assert steps["tied"] < 0.5 * steps["plain"], steps


def test_a_tied_sae_saves_and_loads(tmp_path):
    grid = eqs.Grid(16)
    sae = _sae(
        eqs.Tied(eqs.Spectral(grid, 1, 3, 5, key=jr.key(0)), eqs.Pointwise(1, 2, key=jr.key(1)))
    )
    eqs.save(tmp_path / "tied.eqx", sae)
    like = _sae(
        eqs.Tied(eqs.Spectral(grid, 1, 3, 5, key=jr.key(5)), eqs.Pointwise(1, 2, key=jr.key(6)))
    )
    assert bool(eqx.tree_equal(eqs.load(tmp_path / "tied.eqx", like).model, sae))
    # a Dense dictionary with a fixed whitening lift (tests/helpers.py has the spectral form)
    dictionary, x = _coherent(0, examples=64)
    sae = _sae(eqs.Tied(dictionary, eqs.whitening(x, VECTOR)))
    eqs.save(tmp_path / "whitened.eqx", sae)
    like = _sae(eqs.Tied(eqs.Dense(VECTOR, 32, 64, key=jr.key(7)), eqs.whitening(x + 1, VECTOR)))
    assert bool(eqx.tree_equal(eqs.load(tmp_path / "whitened.eqx", like).model, sae))


def test_bad_tied_liftings_are_refused():
    dense = eqs.Dense(VECTOR, 8, 12, key=jr.key(0))
    with pytest.raises(ValueError, match="takes 4 channels"):
        eqs.Tied(dense, eqs.Pointwise(4, 8, key=jr.key(1)))
    with pytest.raises(ValueError, match="linear"):
        eqs.Tied(dense, eqs.Pointwise(8, 8, use_bias=True, key=jr.key(1)))
    with pytest.raises(ValueError, match="zero energy"):
        eqs.whitening(jnp.zeros((4, 8)), VECTOR)
    with pytest.raises(ValueError, match="resolve"):
        eqs.whitening(jnp.ones((4, 1, 8)), eqs.Grid(8), modes=6)
    for floor in (0.0, -0.1, 1.5):
        with pytest.raises(ValueError, match="floor must be in"):
            eqs.whitening(jnp.ones((4, 1, 8)), eqs.Grid(8), modes=3, floor=floor)


def _range_condition(gram):
    values = np.linalg.eigvalsh(np.asarray(gram, np.float64))[::-1]
    rank = int(np.sum(values > 1e-6 * values[0]))
    return values[0] / values[rank - 1]


def test_gram_whitening_makes_the_metric_weighted_gram_a_projector():
    """Coherent atoms (condition about 300): with A = (D D*)^{-1/2}, D* A* A D is the
    projector onto the row space of D (condition 1), and the atoms keep their mean energy."""
    dictionary, _ = _coherent(0)
    lift = eqs.gram_whitening(dictionary, VECTOR)
    assert isinstance(lift, eqs.Frozen)
    with jax.default_matmul_precision("highest"):
        atoms = dictionary.atoms(VECTOR)  # (p, m)
        lifted = jax.vmap(lift)(atoms)
        assert _range_condition(atoms @ atoms.T) > 100
        assert _range_condition(lifted @ lifted.T) < 1.01
    np.testing.assert_allclose(jnp.mean(jnp.sum(lifted**2, axis=1)), 1.0, rtol=1e-4)
    tied = eqs.Tied(dictionary, lift)
    np.testing.assert_allclose(eqs.gram_whitening(tied, VECTOR).layer.weight, lift.layer.weight)


def test_spectral_gram_whitening_flattens_the_atoms_per_mode():
    """Per Fourier mode f, the lifted atoms' Gram sum_k |A(f) d_k(f)|^2 is the same at every
    kept mode (one channel: the only non-zero eigenvalue of the per-mode Gram)."""
    grid = eqs.Grid(32)
    dictionary = eqs.Spectral(grid, 1, 3, 7, key=jr.key(0)).normalise(grid)
    lift = eqs.gram_whitening(dictionary, grid)
    assert lift.layer.modes == dictionary.modes
    _, composed = eqs.Tied(dictionary, lift).lift(jnp.zeros((1, 32)), grid)
    per_mode = jnp.sum(jnp.abs(jax.vmap(lift.layer.to_modes)(composed.atoms(grid))) ** 2, axis=0)
    before = jnp.sum(jnp.abs(jax.vmap(lift.layer.to_modes)(dictionary.atoms(grid))) ** 2, axis=0)
    assert float(jnp.max(before) / jnp.min(before)) > 2
    assert float(jnp.max(per_mode) / jnp.min(per_mode)) < 1.01


def test_a_spectral_lift_with_fewer_modes_than_the_dictionary_is_refused():
    grid = eqs.Grid(32)
    dictionary = eqs.Spectral(grid, 1, 3, 7, key=jr.key(0))
    with pytest.raises(ValueError, match="fewer than"):
        eqs.Tied(dictionary, eqs.SpectralConv(1, 2, 5, key=jr.key(1)))
    with pytest.raises(ValueError, match="fewer than"):
        eqs.Tied(dictionary, eqs.Frozen(eqs.SpectralConv(1, 1, 6, key=jr.key(1))))
    eqs.Tied(dictionary, eqs.SpectralConv(1, 2, 7, key=jr.key(1)))  # as many: accepted
