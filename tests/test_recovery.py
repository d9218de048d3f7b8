"""End-to-end model recovery: training finds the true concepts."""

import jax.numpy as jnp
import jax.random as jr
import optax
import pytest

import equisae as eqs


@pytest.mark.slow
@pytest.mark.parametrize("seed", [2, 12, 22])
def test_an_unrolled_sae_recovers_the_standard_vector_dictionary(vector_problem, seed):
    """m=50, p=100, s=5: at least 95% of atoms at |cos| > 0.99 for three dictionary keys and
    data orders, from a start on the data (`init_from_data`: every atom one example) with a
    small l1 term in the outer loss (l1 = 0.05 = lambda / 6).

    Steps to 95% in a `make_step` loop of the same steps (recovery every 50 steps; seeds 2, 12,
    22): random start, l1 = 0 (the old test): 900, 1000, 550, so 800 steps sat on a knife edge;
    data start, l1 = 0: 450, 550, 450, but `fit`'s data order left seed 2 at 97% after 800
    steps (one atom a mixture of two true ones); random start, l1 = 0.05: 550, 450, 450; both:
    350, 350, 250, and 100% by step 400. With `fit` and 800 steps both give 100% of atoms and a
    smallest matched |cos| of 0.997 for seeds 2, 12, 22, 32, 42 and 52 (l1 = 0.1 already lets
    one of them fall to 96%: the l1 term's shrinkage biases the atoms)."""
    _, sample = vector_problem
    grid = eqs.Grid(())
    lam = 0.3
    dictionary = eqs.Dense(grid, 50, 100, key=jr.key(seed))
    dictionary = eqs.init_from_data(dictionary, sample.signals, key=jr.fold_in(jr.key(seed), 1))
    sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(lam), 30), dictionary)
    sae, history = eqs.fit(
        sae,
        sample.signals,
        optimizer=optax.adam(1e-2),
        steps=800,
        batch_size=256,
        key=jr.key(seed + 1),
        loss=eqs.SAELoss(l1=0.05),
        progress=False,
    )
    result = eqs.metrics.recovery(sample.concepts, sae.dictionary.atoms(grid))
    assert result.fraction >= 0.95, result.cosine
    assert history["explained_variance"][-1] > 0.9


@pytest.mark.slow
def test_an_sae_fno_recovers_smooth_functional_concepts(trained_sae_fno):
    """Band-limited concepts (bandwidth 8) at n = 32, one spike per sample; an SAE-FNO with the
    matching 9 modes, from a random start, recovers at least 90% at |cos| > 0.99 after
    shift-aware matching.

    The outer loss keeps an l1 term of half the encoder's lambda (0.05 against 0.1): without it
    a dictionary that reconstructs from dense codes scores as well as the true one; with the full
    lambda the shrinkage of the codes biases the atoms. Measured over initial keys 2, 5, 7, 11:
    l1 = 0.05 recovers all four concepts (|cos| >= 0.9989) from every key; l1 = 0.03 leaves one
    concept at |cos| 0.96-0.97 from three of the four, l1 = 0.1 from two at 0.93-0.94."""
    sae, grid, sample = trained_sae_fno
    result = eqs.metrics.recovery(sample.concepts, sae.dictionary.atoms(grid), shift_invariant=True)
    assert result.fraction >= 0.9, result.cosine


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_an_sae_fno_from_the_data_recovers_smooth_concepts_in_every_seed(seed):
    """The recommended recipe (a start from the data, 600 steps, the lasso at lambda = 0.5
    refitted on its support by `Debiased`, l1 = 0.05) on concepts, data, start and order all
    drawn from `seed`: every concept at |cos| > 0.98 and a mean matched |cos| above 0.99.

    The spikes sit anywhere (off the grid of n = 32), and grid codes place a spike at one or
    two points, so the learned atoms absorb a little of the sub-grid shifts: measured on an
    AMD EPYC machine (2026-12-04), the worst concept's |cos| over seeds 0-4 is 0.9972,
    0.9977, 0.9945, 0.9965, 0.9957 (means 0.997-0.998). The lasso alone at lambda = 0.1 (this
    test's recipe until 2026-12-04) left seed 0 there with one concept at 0.9716 (mean
    0.9902), though it gave 0.9959 on the machine it was measured on: its shrinkage bends the
    atoms, and where they settle depends on rounding. A concept caught in a local minimum
    scores 0.77-0.97 (measured from other starts), below 0.98."""
    keys = jr.split(jr.key(seed), 4)
    truth = eqs.data.FunctionalModel(eqs.data.smooth(keys[0], 4, bandwidth=8), spikes=1)
    grid = eqs.Grid(32)
    sample = truth.sample(keys[1], 2000, grid)
    dictionary = eqs.init_from_data(
        eqs.Spectral(grid, 1, 4, 9, key=keys[2]), sample.signals, key=keys[2]
    )
    sae, _ = eqs.fit(
        eqs.SAE(eqs.Debiased(eqs.Unrolled(eqs.SoftThreshold(0.5), 50), 10), dictionary),
        sample.signals,
        optimizer=optax.adam(optax.cosine_decay_schedule(1e-2, 600)),
        steps=600,
        batch_size=32,
        key=keys[3],
        loss=eqs.SAELoss(l1=0.05),
        progress=False,
    )
    result = eqs.metrics.recovery(
        sample.concepts, sae.dictionary.atoms(grid), shift_invariant=True, upsample=8
    )
    assert float(result.cosine.min()) > 0.98, result.cosine
    assert float(result.cosine.mean()) > 0.99, result.cosine


def _overlapping_events(concepts, key, grid: eqs.Grid):
    """100 signals each of 1, 2 and 3 events at continuous positions (so events overlap)."""
    return jnp.concatenate([
        eqs.data.FunctionalModel(concepts, spikes=k).sample(jr.fold_in(key, k), 100, grid)
        .signals
        for k in (1, 2, 3)
    ])  # fmt: skip


def _default_recipe_recovery(dictionary, signals, concepts, grid: eqs.Grid, keys):
    """The function SAEs' default from a start on the data (key `keys[3]`, data order
    `keys[4]`); the matched |cos| of every true concept (up to shift and sign)."""
    dictionary = eqs.init_from_data(dictionary, signals, key=keys[3])
    lasso = eqs.Unrolled(eqs.SoftThreshold(0.5), 100)
    sae, _ = eqs.fit(
        eqs.SAE(eqs.Alternating(eqs.Debiased(lasso, 10)), dictionary),
        signals,
        optimizer=optax.adam(optax.cosine_decay_schedule(1e-2, 300)),
        steps=300,
        batch_size=32,
        key=keys[4],
        loss=eqs.SAELoss(),
        progress=False,
    )
    result = eqs.metrics.recovery(
        concepts(grid), sae.dictionary.atoms(grid), shift_invariant=True, upsample=8
    )
    return result.cosine


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_the_default_recipe_recovers_overlapping_off_grid_gabor_atoms_in_every_seed(seed):
    """The function SAEs' default (a spread-out start from the data; the lasso at lambda = 0.5
    by 100 FISTA steps, refitted on its support and held constant for the gradient:
    alternating minimisation; the reconstruction loss alone) with windowed spectral atoms, on
    4 incoherent Gabor concepts, 1 to 3 events per signal at continuous positions (so events
    overlap), n = 64: every concept at |cos| > 0.98.

    Measured (2026-12-05, AMD EPYC): the worst concept over seeds 0-4 is 0.9964, 0.9988,
    0.9923, 0.9976, 0.9920. Trained through 50 unrolled steps with l1 = 0.05 instead (the
    default until then), seeds 1 and 3 end at 0.951 and 0.976."""
    keys = jr.split(jr.key(seed), 5)
    grid = eqs.Grid(64)
    concepts = eqs.data.incoherent(eqs.data.gabor(keys[0], 32), 4, grid, max_coherence=0.9)
    signals = _overlapping_events(concepts, keys[1], grid)
    dictionary = eqs.Windowed(eqs.Spectral(grid, 1, 8, key=keys[2]), 0.5)
    cosine = _default_recipe_recovery(dictionary, signals, concepts, grid, keys)
    assert float(cosine.min()) > 0.98, cosine


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_a_tied_sae_fno_with_a_whitening_lift_recovers_band_limited_concepts(seed):
    """The default recipe (as above) with the lasso solved in the metric of the whitened data
    (`Tied(Spectral, whitening(signals, grid, modes=every mode))`, its default floor 0.1), on
    4 incoherent smooth concepts, 1 to 3 events at continuous positions, n = 64: every concept
    at |cos| > 0.98.

    Measured (2026-12-07, AMD EPYC): the worst concept over seeds 0-4 is 0.9994, 0.9992,
    0.9994, 0.9996, 0.9997. With the floor taken per mode (for one channel: no floor, so the
    modes past the band, which hold only rounding, were amplified without bound), seeds 0 and 1
    ended at 0.925 and 0.661."""
    keys = jr.split(jr.key(seed), 5)
    grid = eqs.Grid(64)
    concepts = eqs.data.incoherent(eqs.data.smooth(keys[0], 32), 4, grid, max_coherence=0.9)
    signals = _overlapping_events(concepts, keys[1], grid)
    lift = eqs.whitening(signals, grid, modes=grid.shape[0] // 2 + 1)
    dictionary = eqs.Tied(eqs.Spectral(grid, 1, 8, key=keys[2]), lift)
    cosine = _default_recipe_recovery(dictionary, signals, concepts, grid, keys)
    assert float(cosine.min()) > 0.98, cosine
