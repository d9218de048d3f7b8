import hypothesis
import hypothesis.strategies as st
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import equisae as eqs
from equisae import metrics


def _atoms(seed, shape):
    atoms = np.asarray(jr.normal(jr.key(seed), shape))
    return atoms / np.linalg.norm(atoms.reshape(len(atoms), -1), axis=1).reshape(
        (-1,) + (1,) * (atoms.ndim - 1)
    )


@hypothesis.given(
    seed=st.integers(0, 2**16),
    shape=st.sampled_from([(6, 10), (5, 1, 16), (4, 2, 6, 6)]),
    noise=st.sampled_from([0.0, 0.05, 0.5]),
)
def test_recovery_is_invariant_to_permutation_and_sign(seed, shape, noise):
    true = _atoms(seed, shape)
    learned = true + noise * _atoms(seed + 1, shape)
    rng = np.random.default_rng(seed)
    order = rng.permutation(shape[0])
    signs = rng.choice([-1.0, 1.0], shape[0]).reshape((-1,) + (1,) * (len(shape) - 1))
    base = metrics.recovery(true, learned)
    moved = metrics.recovery(true, signs * learned[order])
    np.testing.assert_allclose(moved.cosine, base.cosine, atol=1e-12)
    assert moved.fraction == base.fraction
    # and permuting the true atoms permutes the per-atom scores the same way
    swapped = metrics.recovery(true[order], learned)
    np.testing.assert_allclose(swapped.cosine, base.cosine[order], atol=1e-12)


@hypothesis.given(
    seed=st.integers(0, 2**16), shape=st.sampled_from([(6, 10), (5, 2, 16), (3, 1, 8, 8)])
)
def test_a_perfect_dictionary_scores_exactly_one(seed, shape):
    true = _atoms(seed, shape)
    result = metrics.recovery(true, 3.0 * true[::-1], shift_invariant=len(shape) > 2)
    assert result.fraction == 1.0
    np.testing.assert_allclose(result.cosine, 1.0, atol=1e-12)
    np.testing.assert_allclose(result.sine_distance, 0.0, atol=1e-6)


def test_shift_aware_matching_finds_circularly_shifted_atoms():
    true = _atoms(0, (4, 1, 32))
    shifted = np.stack([np.roll(a, s, axis=-1) for a, s in zip(true, [3, -5, 0, 11])])
    assert metrics.recovery(true, shifted).fraction < 1.0
    result = metrics.recovery(true, -shifted, shift_invariant=True)
    assert result.fraction == 1.0
    # the sign and the shift move each learned atom back onto its true atom
    np.testing.assert_allclose(result.align_atoms(-shifted), true, atol=1e-6)


def test_align_moves_learned_codes_to_the_true_concepts():
    """If D' z' = D z with D' a permuted, flipped and shifted D, align(z') recovers z."""
    grid = eqs.Grid(32)
    true = eqs.Convolutional(grid, 1, 3, 7, key=jr.key(0))
    codes = jnp.zeros((2, 3, 32)).at[0, 1, 5].set(32.0).at[1, 2, 20].set(-64.0)
    shifts, signs, order = [4, -7, 2], [1.0, -1.0, -1.0], [2, 0, 1]
    # learned atom j = sign * true atom order[j] shifted right by shifts[j]: its codes move left
    learned_atoms = np.stack(
        [signs[j] * np.roll(true.atoms(grid)[order[j]], shifts[j], axis=-1) for j in range(3)]
    )
    learned_codes = np.stack(
        [signs[j] * np.roll(codes[:, order[j]], -shifts[j], axis=-1) for j in range(3)], axis=1
    )
    result = metrics.recovery(true.atoms(grid), learned_atoms, shift_invariant=True)
    assert result.fraction == 1.0
    np.testing.assert_allclose(result.align(learned_codes), codes, atol=1e-4)


def test_unmatched_true_atoms_count_as_not_recovered():
    true = _atoms(0, (5, 8))
    result = metrics.recovery(true, true[:3])
    assert result.fraction == pytest.approx(0.6)
    assert np.sum(result.match < 0) == 2


def test_recovery_threshold_must_be_a_cosine():
    with pytest.raises(ValueError, match="threshold"):
        metrics.recovery(_atoms(0, (2, 4)), _atoms(1, (2, 4)), threshold=1.5)


def test_zero_atoms_cannot_be_compared():
    with pytest.raises(ValueError, match="non-zero"):
        metrics.recovery(_atoms(0, (2, 4)), np.zeros((2, 4)))


def test_support_f1_scores_supports_with_a_tolerance():
    truth = np.zeros((1, 2, 16))
    truth[0, 0, 3] = truth[0, 1, 10] = 1.0
    found = np.zeros_like(truth)
    found[0, 0, 4] = found[0, 1, 10] = found[0, 1, 0] = 1.0
    exact = metrics.support_f1(truth, found)
    assert exact == {"precision": pytest.approx(1 / 3), "recall": 0.5, "f1": pytest.approx(0.4)}
    near = metrics.support_f1(truth, found, tolerance=1)
    assert near["precision"] == pytest.approx(2 / 3) and near["recall"] == 1.0
    assert metrics.support_f1(truth, truth)["f1"] == 1.0


def test_coherence_is_the_largest_off_diagonal_cosine():
    atoms = np.array([[1.0, 0.0], [0.6, 0.8], [0.0, -1.0]])
    assert metrics.mutual_coherence(atoms) == pytest.approx(0.8)


def test_explained_variance_is_one_for_perfect_and_zero_for_the_mean():
    x = jr.normal(jr.key(0), (10, 3, 8))
    assert float(metrics.explained_variance(x, x)) == 1.0
    mean = jnp.broadcast_to(jnp.mean(x, axis=0), x.shape)
    assert abs(float(metrics.explained_variance(x, mean))) < 1e-6


def test_l0_and_dead_fraction_count_active_codes():
    codes = jnp.zeros((4, 3, 5)).at[0, 0, 1].set(1.0).at[1, 0, 2].set(2.0).at[1, 2, 0].set(-1.0)
    assert float(metrics.l0(codes)) == pytest.approx(3 / 4)
    assert float(metrics.dead_fraction(codes)) == pytest.approx(1 / 3)


def test_upsampled_shifts_find_atoms_moved_by_part_of_a_grid_point():
    """Band-limited atoms shifted by half a grid point: grid shifts cannot align them, shifts on
    a grid four times finer can (the cross-correlation is Fourier-interpolated)."""
    grid = eqs.Grid(32)
    concepts = eqs.data.smooth(jr.key(0), 3, bandwidth=10)
    true = concepts(grid)
    moved = concepts.evaluate(
        concepts.coefficients * concepts.shift_phases(jnp.array([[0.5 / 32]])), grid
    )
    coarse = metrics.recovery(true, moved, shift_invariant=True)
    fine = metrics.recovery(true, moved, shift_invariant=True, upsample=4)
    assert coarse.fraction < 1.0
    assert fine.fraction == 1.0
    np.testing.assert_allclose(fine.shift[:, 0], 0.5)  # moved(s + 0.5 points) = true(s)
    np.testing.assert_allclose(fine.align_atoms(moved), true, atol=1e-4)


def test_upsample_must_be_a_positive_whole_number():
    with pytest.raises(ValueError, match="upsample"):
        metrics.recovery(
            _atoms(0, (2, 1, 8)), _atoms(1, (2, 1, 8)), shift_invariant=True, upsample=0
        )
