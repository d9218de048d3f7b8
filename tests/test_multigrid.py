"""Warm starts and coarse-to-fine inference: codes moved between grids as measures, encoders
started from given codes, multigrid_infer and its errors."""

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import relative_error

import equisae as eqs


def oracle(functions: eqs.data.FourierConcepts, grid: eqs.Grid) -> eqs.Spectral:
    """The spectral dictionary whose kernels are exactly the given band-limited concepts."""
    bandwidth, ndim = functions.bandwidth, functions.ndim
    axes = tuple(range(2, 2 + ndim))
    coefficients = jnp.fft.ifftshift(functions.coefficients, axes=axes)[..., : bandwidth + 1]
    p, c = coefficients.shape[:2]
    dictionary = eqs.Spectral(grid, c, p, bandwidth + 1, key=jr.key(0))
    weight = jnp.stack([coefficients.real, coefficients.imag]).astype(jnp.float32)
    return eqx.tree_at(lambda d: d.conv.weight, dictionary, weight)


def problem(seed: int, ndim: int, train: int):
    """Band-limited concepts, one spike per sample on the lattice of the training grid, and
    the SAE-FNO whose dictionary is the truth."""
    bandwidth = 8 if ndim == 1 else 3
    functions = eqs.data.smooth(jr.key(seed), 3, ndim=ndim, bandwidth=bandwidth)
    model = eqs.data.FunctionalModel(functions, spikes=1, lattice=train)
    grid = eqs.Grid((train,) * ndim)
    sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.1), 50), oracle(functions, grid))
    return model, sae


@eqx.filter_jit
def multigrid(sae, signals, grid, max_steps=20_000):
    """`multigrid_infer` to 1e-5 on a batch (shared with test_resolution: compiled once)."""
    return jax.vmap(lambda x: eqs.multigrid_infer(sae, x, grid, max_steps=max_steps))(signals)


@eqx.filter_jit
def _infer(encoder, dictionary, signals, grid, init):
    return jax.vmap(lambda x, z: encoder.infer(x, dictionary, grid, z))(signals, init)


# resampling codes as measures


@hypothesis.given(
    seed=st.sampled_from([0, 1, 2]),
    case=st.sampled_from(
        [((8,), (32,)), ((32,), (8,)), ((8,), (12,)), ((12,), (7,)), ((4, 6), (8, 9))]
    ),
)
def test_resampled_codes_keep_the_mass_of_every_concept(seed, case):
    a, b = (eqs.Grid(s) for s in case)
    codes = jr.normal(jr.key(seed), (3,) + a.shape)
    moved = eqs.resample_codes(codes, a, b)
    assert moved.shape == (3,) + b.shape
    np.testing.assert_allclose(b.integrate(moved), a.integrate(codes), rtol=1e-5, atol=1e-5)


@hypothesis.given(seed=st.sampled_from([0, 1, 2]), factor=st.sampled_from([2, 4, 16]))
def test_refining_by_a_whole_factor_keeps_spikes_and_restricting_undoes_it(seed, factor):
    coarse, fine = eqs.Grid((8, 6)), eqs.Grid((8 * factor, 6 * factor))
    codes = jr.normal(jr.key(seed), (2, 8, 6))
    refined = eqs.resample_codes(codes, coarse, fine)
    # each coarse point's mass sits on the fine point at the same position, nowhere else
    np.testing.assert_allclose(refined[:, ::factor, ::factor], codes * factor**2, rtol=1e-6)
    assert int(jnp.sum(refined != 0)) == int(jnp.sum(codes != 0))
    assert relative_error(eqs.resample_codes(refined, fine, coarse), codes) <= 1e-6


def test_resampling_codes_refuses_grids_of_another_dimension():
    with pytest.raises(ValueError, match="1-D grid to a 2-D grid"):
        eqs.resample_codes(jnp.zeros((1, 8)), eqs.Grid(8), eqs.Grid((8, 8)))


# warm starts


def test_a_fixed_point_started_at_its_solution_stops_at_once():
    model, sae = problem(0, 1, 32)
    grid = eqs.Grid(32)
    signals = model.sample(jr.key(1), 8, grid).signals
    encoder = eqs.FixedPoint.from_encoder(sae.encoder, tol=1e-5)
    zeros = jnp.zeros((8,) + sae.dictionary.code_shape(grid))
    codes, cold = _infer(encoder, sae.dictionary, signals, grid, zeros)
    again, warm = _infer(encoder, sae.dictionary, signals, grid, codes)
    assert int(jnp.min(cold.steps)) > 10
    assert int(jnp.max(warm.steps)) <= 2
    assert relative_error(again, codes) <= 1e-4


def test_unrolled_steps_from_a_fixed_point_stay_there():
    model, sae = problem(0, 1, 32)
    grid = eqs.Grid(32)
    x = model.sample(jr.key(1), 1, grid).signals[0]
    solved, _ = eqs.FixedPoint.from_encoder(sae.encoder, tol=1e-7).infer(x, sae.dictionary, grid)
    for method in ["ista", "fista"]:
        unrolled = eqs.Unrolled(eqs.SoftThreshold(0.1), 5, method=method)
        codes, _ = unrolled.infer(x, sae.dictionary, grid, solved)
        assert relative_error(codes, solved) <= 1e-3


def test_init_of_another_shape_is_refused():
    _, sae = problem(0, 1, 32)
    with pytest.raises(ValueError, match="init has shape"):
        sae.encoder.infer(jnp.zeros((1, 32)), sae.dictionary, eqs.Grid(32), jnp.zeros((3, 16)))


def test_amortised_encoders_refuse_a_warm_start():
    grid = eqs.Grid(16)
    dictionary = eqs.Spectral(grid, 1, 2, 4, key=jr.key(0))
    layer = eqs.SpectralConv(1, 2, 4, key=jr.key(1))
    encoder = eqs.Amortised(layer, eqs.SoftThreshold(0.1))
    with pytest.raises(ValueError, match="take no init"):
        encoder.infer(jnp.zeros((1, 16)), dictionary, grid, jnp.zeros((2, 16)))


def test_from_encoder_solves_the_same_problem_to_the_tolerance():
    unrolled = eqs.Unrolled(eqs.SoftThreshold(0.2), 30, ridge=0.01, step_safety=1.3)
    encoder = eqs.FixedPoint.from_encoder(unrolled, tol=1e-4, max_steps=77)
    assert encoder.sparsity is unrolled.sparsity
    assert (encoder.ridge, encoder.step_safety, encoder.max_steps) == (0.01, 1.3, 77)
    assert (encoder.rtol, encoder.atol) == (1e-4, 1e-4)


@pytest.mark.parametrize("tol", [0.0, -1e-5])
def test_a_tolerance_that_is_not_positive_is_refused(tol):
    _, sae = problem(0, 1, 32)
    with pytest.raises(ValueError, match="tol must be > 0"):
        eqs.FixedPoint.from_encoder(sae.encoder, tol=tol)
    with pytest.raises(ValueError, match="tol must be > 0"):
        eqs.multigrid_infer(sae, jnp.zeros((1, 64)), eqs.Grid(64), tol=tol)
    with pytest.raises(ValueError, match="rtol and atol"):
        eqs.FixedPoint(eqs.SoftThreshold(0.1), rtol=tol, atol=tol)


def test_from_encoder_refuses_encoders_without_the_problem():
    layer = eqs.SpectralConv(1, 2, 4, key=jr.key(1))
    with pytest.raises(ValueError, match="needs an Unrolled or FixedPoint"):
        eqs.FixedPoint.from_encoder(eqs.Amortised(layer, eqs.SoftThreshold(0.1)))


def test_with_encoder_swaps_the_encoder_and_keeps_the_dictionary():
    _, sae = problem(0, 1, 32)
    encoder = eqs.FixedPoint.from_encoder(sae.encoder)
    swapped = sae.with_encoder(encoder)
    assert eqx.tree_equal(swapped.encoder, encoder)
    assert eqx.tree_equal(swapped.dictionary, sae.dictionary)


# coarse-to-fine inference


@pytest.mark.parametrize(
    "shape, expected",
    [((1024,), [32, 64, 128, 256, 512, 1024]), ((96,), [24, 48, 96]), ((17,), [17])],
)
def test_coarse_grids_halve_down_to_the_kept_modes(shape, expected):
    dictionary = eqs.Spectral(eqs.Grid(32), 1, 2, 9, key=jr.key(0))  # needs n >= 17
    grids = eqs.coarse_grids(dictionary, eqs.Grid(shape))
    assert [g.shape[0] for g in grids] == expected


def test_multigrid_refuses_a_grid_of_another_dimension():
    _, sae = problem(0, 1, 32)
    with pytest.raises(ValueError, match="is 2-D, but the dictionary acts on 1-D"):
        eqs.multigrid_infer(sae, jnp.zeros((1, 32, 32)), eqs.Grid((32, 32)))
    with pytest.raises(ValueError, match="is 2-D, but the dictionary acts on 1-D"):
        eqs.multigrid_infer(sae, jnp.zeros((1, 64)), eqs.Grid(64), levels=[eqs.Grid((32, 32))])


def test_multigrid_refuses_a_grid_too_coarse_for_the_kept_modes():
    _, sae = problem(0, 1, 32)  # 9 modes: at least 17 points
    with pytest.raises(ValueError, match="too coarse for the dictionary's kept modes"):
        eqs.multigrid_infer(sae, jnp.zeros((1, 16)), eqs.Grid(16))
    with pytest.raises(ValueError, match="too coarse for the dictionary's kept modes"):
        eqs.multigrid_infer(sae, jnp.zeros((1, 64)), eqs.Grid(64), levels=[eqs.Grid(8)])


def test_multigrid_refuses_levels_finer_than_the_grid():
    _, sae = problem(0, 1, 32)
    with pytest.raises(ValueError, match="finer than the grid"):
        eqs.multigrid_infer(sae, jnp.zeros((1, 64)), eqs.Grid(64), levels=[eqs.Grid(128)])


def test_multigrid_refuses_dictionaries_whose_atoms_live_on_the_grid():
    grid = eqs.Grid(32)
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.1), 5),
        eqs.Convolutional(grid, 1, 2, 5, key=jr.key(0)),
    )
    with pytest.raises(ValueError, match="atoms live in frequency"):
        eqs.multigrid_infer(sae, jnp.zeros((1, 32)), grid)


def test_multigrid_reports_levels_that_did_not_converge():
    model, sae = problem(0, 1, 32)
    grid = eqs.Grid(64)
    signals = model.sample(jr.key(1), 2, grid).signals
    _, _, diagnostics = multigrid(sae, signals, grid, 3)
    assert diagnostics.shapes == ((32,), (64,))
    assert diagnostics.steps.shape == (2, 2)
    assert not bool(jnp.any(diagnostics.converged[:, 0]))
    first = jax.tree.map(lambda a: a[0], diagnostics)
    assert int(first.finest.steps) == int(diagnostics.steps[0, -1])


def test_multigrid_with_a_debiased_encoder_refits_the_finest_codes_on_their_support():
    """The lasso coarse to fine, then the refit on the finest grid: the support is the
    lasso's, and the shrinkage is gone (the true dictionary reconstructs the signal)."""
    model, sae = problem(0, 1, 32)
    grid = eqs.Grid(64)
    signals = model.sample(jr.key(1), 2, grid).signals
    debiased = sae.with_encoder(eqs.Debiased(sae.encoder, 10))
    plain_x, plain_z, _ = multigrid(sae, signals, grid)
    refit_x, refit_z, info = multigrid(debiased, signals, grid)
    assert bool(jnp.all(info.converged))
    assert bool(jnp.all((refit_z != 0) <= (plain_z != 0)))
    assert relative_error(plain_x, signals) > 0.02
    assert relative_error(refit_x, signals) < 1e-3


def test_from_encoder_points_a_debiased_encoder_to_its_inner_one():
    inner = eqs.Unrolled(eqs.SoftThreshold(0.1), 5)
    with pytest.raises(ValueError, match=r"pass its \.encoder"):
        eqs.FixedPoint.from_encoder(eqs.Debiased(inner))


@hypothesis.settings(max_examples=3)
@hypothesis.given(seed=st.sampled_from([0, 1, 2]))
def test_warm_started_iterations_on_a_16x_finer_grid_stay_within_2x_of_the_training_grid(seed):
    """Trained at n = 32; at n = 512 the finest level of coarse-to-fine inference needs at
    most twice the iterations of cold inference at n = 32, and cold inference at n = 512 more
    than ten times as many (measured: about 100 times; the duality gap does not let it stop
    before the code mass has concentrated)."""
    model, sae = problem(seed, 1, 32)
    train, fine = eqs.Grid(32), eqs.Grid(512)
    encoder = eqs.FixedPoint.from_encoder(sae.encoder, tol=1e-5)
    key = jr.key(seed + 10)
    coarse_signals = model.sample(key, 8, train).signals
    fine_signals = model.sample(key, 8, fine).signals
    zeros = jnp.zeros((8,) + sae.dictionary.code_shape(train))
    _, cold = _infer(encoder, sae.dictionary, coarse_signals, train, zeros)
    _, _, diagnostics = multigrid(sae, fine_signals, fine)
    assert bool(jnp.all(diagnostics.converged))
    assert float(jnp.mean(diagnostics.steps[:, -1])) <= 2 * float(jnp.mean(cold.steps))
    zeros = jnp.zeros((8,) + sae.dictionary.code_shape(fine))
    _, cold_fine = _infer(encoder, sae.dictionary, fine_signals, fine, zeros)
    assert float(jnp.mean(cold_fine.steps)) > 10 * float(jnp.mean(cold.steps))


def test_the_working_set_refinement_makes_the_finest_level_cost_bounded():
    """Two spikes per signal on the lattice of n = 64, inferred at n = 256 from a coarsest
    level of 32 points (below that lattice): with the `WorkingSet` refinement the finest level
    costs (iterations plus refinement applications of D*D) at most twice what cold inference
    costs at n = 64, and every level converges; without it the finest level needs more than
    that (`benchmarks/warm_start.py` measured a median of 1496 iterations at n = 256)."""
    functions = eqs.data.smooth(jr.key(0), 4, ndim=1, bandwidth=8)
    model = eqs.data.FunctionalModel(functions, spikes=2, lattice=64)
    train, fine = eqs.Grid(64), eqs.Grid(256)
    sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.1), 50), oracle(functions, train))
    key = jr.key(1)
    encoder = eqs.FixedPoint.from_encoder(sae.encoder, tol=1e-5)
    coarse_signals = model.sample(key, 8, train).signals
    fine_signals = model.sample(key, 8, fine).signals
    _, cold = _infer(
        encoder, sae.dictionary, coarse_signals, train, jnp.zeros((8, 4, 64), jnp.float32)
    )
    _, _, refined = multigrid(sae, fine_signals, fine)
    assert bool(jnp.all(refined.converged))
    finest = refined.steps[:, -1] + refined.refined[:, -1]
    assert float(jnp.mean(finest)) <= 2 * float(jnp.mean(cold.steps))
    _, _, plain = _plain_multigrid(sae, fine_signals, fine)
    assert float(jnp.mean(plain.steps[:, -1])) > 2 * float(jnp.mean(cold.steps))


@eqx.filter_jit
def _plain_multigrid(sae, signals, grid):
    return jax.vmap(lambda x: eqs.multigrid_infer(sae, x, grid, refine=None))(signals)


@pytest.mark.parametrize("field", ["size", "rounds", "steps"])
def test_a_working_set_refuses_sizes_below_one(field):
    with pytest.raises(ValueError, match=field):
        eqs.WorkingSet(**{field: 0})
