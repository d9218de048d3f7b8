import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import equisae as eqs


def _problem(kind):
    """A fixed dictionary and a signal made of a few of its atoms plus noise."""
    if kind == "vector":
        grid = eqs.Grid(())
        dictionary = eqs.Dense(grid, 20, 30, key=jr.key(0))
        z = jnp.zeros(30).at[jnp.array([1, 7, 19])].set(jnp.array([1.5, -2.0, 1.0]))
    else:
        grid = eqs.Grid(16)
        dictionary = eqs.Spectral(grid, 1, 2, None, key=jr.key(0))
        z = jnp.zeros((2, 16)).at[0, 3].set(16.0).at[1, 11].set(-24.0)
    x = dictionary(z, grid)
    x = x + 0.05 * jr.normal(jr.key(1), x.shape)
    return grid, dictionary, x


@eqx.filter_jit
def _encode(encoder, x, dictionary, grid):
    return encoder(x, dictionary, grid)


def _assert_lasso_kkt(codes, x, dictionary, grid, lam, nonnegative=False, tol=2e-3):
    """0 is in D*(Dz - x) + lam d|z|: the optimality conditions of the (non-negative) lasso."""
    correlation = dictionary.adjoint(x - dictionary(codes, grid), grid)
    on = codes != 0
    assert jnp.any(on)
    np.testing.assert_allclose(correlation[on], lam * jnp.sign(codes[on]), atol=tol * max(lam, 1))
    if nonnegative:
        assert jnp.all(correlation[~on] <= lam + tol)
        assert jnp.all(codes >= 0)
    else:
        assert jnp.all(jnp.abs(correlation[~on]) <= lam + tol)


@pytest.mark.parametrize("kind", ["vector", "function"])
def test_fista_reaches_the_lasso_optimum(kind):
    grid, dictionary, x = _problem(kind)
    lam = 0.2
    codes = _encode(eqs.Unrolled(eqs.SoftThreshold(lam), 3000), x, dictionary, grid)
    _assert_lasso_kkt(codes, x, dictionary, grid, lam)


def test_ista_and_fista_agree_at_convergence():
    grid, dictionary, x = _problem("vector")
    ista = _encode(eqs.Unrolled(eqs.SoftThreshold(0.2), 4000, method="ista"), x, dictionary, grid)
    fista = _encode(eqs.Unrolled(eqs.SoftThreshold(0.2), 1000), x, dictionary, grid)
    np.testing.assert_allclose(ista, fista, atol=1e-3)


def test_nonnegative_fista_reaches_the_nonnegative_lasso_optimum():
    grid, dictionary, x = _problem("vector")
    codes = _encode(eqs.Unrolled(eqs.NonNegSoftThreshold(0.2), 3000), x, dictionary, grid)
    _assert_lasso_kkt(codes, x, dictionary, grid, 0.2, nonnegative=True)


def test_few_steps_do_not_reach_the_optimum():
    """The KKT check above can fail: three steps are far from the optimum."""
    grid, dictionary, x = _problem("vector")
    codes = _encode(eqs.Unrolled(eqs.SoftThreshold(0.2), 3), x, dictionary, grid)
    with pytest.raises(AssertionError):
        _assert_lasso_kkt(codes, x, dictionary, grid, 0.2)


@pytest.mark.parametrize("method", ["ista", "fista"])
@pytest.mark.parametrize("kind", ["vector", "function"])
def test_unrolled_steps_are_the_proximal_gradient_iteration_from_zero(method, kind):
    """T unrolled steps equal T proximal-gradient (or FISTA) steps from z = 0, written out."""
    grid, dictionary, x = _problem(kind)
    sparsity = eqs.SoftThreshold(0.2)
    encoder = eqs.Unrolled(sparsity, 4, method=method)
    t = encoder.step_size(dictionary, grid)
    target = dictionary.adjoint(x, grid)
    z = y = jnp.zeros_like(target)
    momentum = 1.0
    for _ in range(4):
        z_next = sparsity(y - t * (dictionary.normal(y, grid) - target), t)
        momentum_next = (1 + np.sqrt(1 + 4 * momentum**2)) / 2
        extrapolation = (momentum - 1) / momentum_next if method == "fista" else 0.0
        z, y, momentum = z_next, z_next + extrapolation * (z_next - z), momentum_next
    np.testing.assert_allclose(_encode(encoder, x, dictionary, grid), z, rtol=1e-5, atol=1e-6)


def test_unrolled_topk_is_iterative_hard_thresholding():
    """Unrolled ISTA with TopK is IHT: it ends at a fixed point z = H_k(z - t D*(Dz - x))."""
    grid, dictionary, x = _problem("vector")
    encoder = eqs.Unrolled(eqs.TopK(3), 300, method="ista")
    codes = _encode(encoder, x, dictionary, grid)
    assert int(jnp.sum(codes != 0)) == 3
    t = encoder.step_size(dictionary, grid)
    gradient = dictionary.normal(codes, grid) - dictionary.adjoint(x, grid)
    np.testing.assert_allclose(eqs.TopK(3)(codes - t * gradient), codes, atol=1e-4)


def test_unrolled_step_size_comes_from_the_operator_norm():
    grid, dictionary, _ = _problem("vector")
    encoder = eqs.Unrolled(eqs.SoftThreshold(0.1), 10, step_safety=1.0, power_iterations=300)
    exact = jnp.linalg.norm(dictionary.weight, ord=2) ** 2
    np.testing.assert_allclose(encoder.step_size(dictionary, grid), 1 / exact, rtol=1e-3)


@pytest.mark.parametrize(
    "kwargs,match",
    [
        (dict(steps=0), "steps"),
        (dict(steps=5, method="admm"), "method"),
        (dict(steps=5, step_safety=0.5), "step_safety"),
    ],
)
def test_unrolled_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eqs.Unrolled(eqs.SoftThreshold(0.1), **kwargs)


def test_amortised_encoders_apply_their_layer_then_the_activation():
    grid = eqs.Grid(32)
    dictionary = eqs.Spectral(grid, 2, 3, 8, key=jr.key(0))
    layer = eqs.SpectralConv(2, 3, 8, key=jr.key(1))
    encoder = eqs.Amortised(layer, eqs.NonNegSoftThreshold(0.1))
    x = jr.normal(jr.key(2), (2, 32))
    np.testing.assert_allclose(encoder(x, dictionary, grid), jax.nn.relu(layer(x) - 0.1), atol=1e-6)


def test_amortised_encoders_must_produce_codes_of_the_dictionarys_shape():
    grid = eqs.Grid(32)
    dictionary = eqs.Spectral(grid, 2, 3, 8, key=jr.key(0))
    encoder = eqs.Amortised(eqs.SpectralConv(2, 4, 8, key=jr.key(1)), eqs.NonNegSoftThreshold())
    with pytest.raises(ValueError, match=r"expects \(3, 32\)"):
        encoder(jnp.zeros((2, 32)), dictionary, grid)
