import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import equisae as eqs

SIZES = [1, 7, 32]


def _objective(sparsity, u, step, z):
    return 0.5 * jnp.sum((z - u) ** 2) + step * sparsity.penalty(z)


def _perturbations(key, z, scale):
    """Random directions and, for the constrained penalties, moves within the constraint."""
    return scale * jr.normal(key, (16,) + z.shape)


PENALTIES = {
    "soft": lambda lam, k: eqs.SoftThreshold(lam),
    "nonneg": lambda lam, k: eqs.NonNegSoftThreshold(lam),
}


@hypothesis.given(
    seed=st.integers(0, 2**16),
    size=st.sampled_from(SIZES),
    lam=st.floats(0.0, 2.0),
    step=st.floats(0.05, 3.0),
    name=st.sampled_from(sorted(PENALTIES)),
)
def test_proximal_maps_minimise_their_proximal_objective(seed, size, lam, step, name):
    """prox_{tR}(u) = argmin_z 1/2 |z - u|^2 + t R(z): no nearby point does better."""
    sparsity = PENALTIES[name](lam, None)
    ukey, dkey = jr.split(jr.key(seed))
    u = 2 * jr.normal(ukey, (size,))
    z = sparsity(u, step)
    best = _objective(sparsity, u, step, z)
    for scale in (1e-2, 1e-1, 1.0):
        others = z + _perturbations(dkey, z, scale)
        values = jax.vmap(lambda w: _objective(sparsity, u, step, w))(others)
        assert jnp.all(values >= best - 1e-5)


@hypothesis.given(seed=st.integers(0, 2**16), size=st.sampled_from(SIZES), lam=st.floats(0.0, 2.0))
def test_soft_threshold_satisfies_the_subgradient_condition(seed, size, lam):
    """u - z is in t * lam * d|z|: equal to t lam sign(z) on the support, at most t lam off it."""
    step = 0.7
    u = 2 * jr.normal(jr.key(seed), (size,))
    z = eqs.SoftThreshold(lam)(u, step)
    residual = u - z
    on = z != 0
    np.testing.assert_allclose(residual[on], step * lam * jnp.sign(z[on]), atol=1e-5)
    assert jnp.all(jnp.abs(residual[~on]) <= step * lam + 1e-6)


def test_nonnegative_soft_threshold_is_a_relu_with_threshold():
    u = jnp.array([-1.0, 0.2, 0.5, 3.0])
    np.testing.assert_allclose(eqs.NonNegSoftThreshold(0.5)(u), [0.0, 0.0, 0.0, 2.5])
    np.testing.assert_allclose(eqs.NonNegSoftThreshold()(u), jax.nn.relu(u))


@hypothesis.given(
    seed=st.integers(0, 2**16),
    shape=st.sampled_from([(8,), (3, 16), (2, 4, 4)]),
    k=st.integers(1, 8),
    nonnegative=st.booleans(),
)
def test_topk_keeps_exactly_k_entries_and_projects(seed, shape, k, nonnegative):
    u = jr.normal(jr.key(seed), shape)
    z = eqs.TopK(k, nonnegative=nonnegative)(u)
    candidates = jax.nn.relu(u) if nonnegative else u
    assert int(jnp.sum(z != 0)) == min(k, int(jnp.sum(candidates != 0)))
    # the kept entries are unchanged and are the k largest in magnitude
    kept = z != 0
    np.testing.assert_array_equal(z[kept], u[kept])
    threshold = jnp.sort(jnp.abs(candidates).ravel())[-k]
    assert jnp.all(jnp.abs(candidates[kept]) >= threshold)
    # a projection: z is the closest point of the constraint set, so R(z) = 0 and R(u) = inf
    assert eqs.TopK(k, nonnegative=nonnegative).penalty(z) == 0.0


def test_topk_step_does_not_matter():
    u = jr.normal(jr.key(0), (10,))
    np.testing.assert_array_equal(eqs.TopK(3)(u, 0.1), eqs.TopK(3)(u, 10.0))


def test_per_concept_thresholds_broadcast_over_the_domain():
    u = jnp.ones((2, 5))
    z = eqs.SoftThreshold(jnp.array([0.25, 2.0]))(u)
    np.testing.assert_allclose(z, jnp.stack([0.75 * jnp.ones(5), jnp.zeros(5)]))


def test_fixed_thresholds_get_no_gradient_and_learnable_ones_do():
    u = jnp.linspace(-2, 2, 9)

    def loss(sparsity):
        return jnp.sum(sparsity(u) ** 2)

    fixed = jax.grad(loss)(eqs.SoftThreshold(0.5))
    learned = jax.grad(loss)(eqs.SoftThreshold(0.5, learnable=True))
    assert fixed.threshold == 0.0
    assert learned.threshold < 0.0


def test_the_soft_threshold_has_the_derivatives_of_its_formula():
    """d/du sign(u) max(|u| - t lam, 0) = 1 on the support, 0 off it; d/dlam = -t sign(u) on the
    support (a learnable threshold)."""
    u = jnp.array([-2.0, -0.7, -0.3, 0.0, 0.2, 0.9, 3.0])
    step, lam = 1.5, 0.4
    sparsity = eqs.SoftThreshold(lam, learnable=True)
    support = jnp.abs(u) > step * lam
    weights = jnp.arange(1.0, 8.0)

    def loss(sparsity, u):
        return jnp.sum(weights * sparsity(u, step))

    d_sparsity, d_u = jax.grad(loss, argnums=(0, 1))(sparsity, u)
    np.testing.assert_allclose(d_u, jnp.where(support, weights, 0.0))
    expected = -step * jnp.sum(jnp.where(support, weights * jnp.sign(u), 0.0))
    np.testing.assert_allclose(d_sparsity.threshold, expected, rtol=1e-6)


@pytest.mark.parametrize("build", [eqs.SoftThreshold, eqs.NonNegSoftThreshold])
@pytest.mark.parametrize("bad", [-0.1, float("nan")])
def test_a_negative_or_nan_lambda_is_refused(build, bad):
    with pytest.raises(ValueError, match="non-negative"):
        build(bad)


@pytest.mark.parametrize("k", [0, -3])
def test_topk_needs_a_positive_k(k):
    with pytest.raises(ValueError, match="positive whole number"):
        eqs.TopK(k)


def test_topk_needs_a_whole_k():
    # the runtime type check (tests) or the ValueError (no type checking) refuses it
    with pytest.raises((TypeError, ValueError), match="k"):
        eqs.TopK(2.5)


def test_topk_with_k_above_the_code_size_is_refused():
    with pytest.raises(ValueError, match=r"k <= 5"):
        eqs.TopK(6)(jnp.ones(5))
