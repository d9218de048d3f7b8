"""Inference to convergence (FixedPoint, ODEFlow) and implicit gradients."""

import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import FAMILIES, dictionary as build

import equisae as eqs

TIGHT = dict(rtol=1e-11, atol=1e-11, max_steps=20000)


def _vector_problem(p=20, m=30):
    """An undercomplete (well-conditioned) dictionary and a signal of three of its atoms."""
    grid = eqs.Grid(())
    dictionary = eqs.Dense(grid, m, p, key=jr.key(0))
    z = jnp.zeros(p).at[jnp.array([1, 7, 12])].set(jnp.array([1.5, -2.0, 1.0]))
    x = dictionary(z, grid) + 0.05 * jr.normal(jr.key(1), (m,))
    return grid, dictionary, x


def _function_problem():
    grid = eqs.Grid(16)
    dictionary = eqs.Spectral(grid, 2, 2, None, key=jr.key(0))
    z = jnp.zeros((2, 16)).at[0, 3].set(16.0).at[1, 11].set(-24.0)
    x = dictionary(z, grid) + 0.05 * jr.normal(jr.key(1), (2, 16))
    return grid, dictionary, x


def _assert_elastic_net_kkt(codes, x, dictionary, grid, lam, ridge, tol):
    """0 in D*(Dz - x) + ridge z + lam d|z|."""
    correlation = dictionary.adjoint(x - dictionary(codes, grid), grid) - ridge * codes
    on = codes != 0
    assert jnp.any(on)
    np.testing.assert_allclose(correlation[on], lam * jnp.sign(codes[on]), atol=tol)
    assert jnp.all(jnp.abs(correlation[~on]) <= lam + tol)


@eqx.filter_jit
def _infer(encoder, x, dictionary, grid):
    return encoder.infer(x, dictionary, grid)


@pytest.mark.parametrize("kind", ["vector", "function"])
@pytest.mark.parametrize("build_encoder", [eqs.FixedPoint, eqs.ODEFlow])
def test_converged_inference_satisfies_the_lasso_kkt_conditions(kind, build_encoder):
    grid, dictionary, x = _vector_problem() if kind == "vector" else _function_problem()
    encoder = build_encoder(eqs.SoftThreshold(0.2), rtol=1e-7, atol=1e-7, max_steps=5000)
    codes, diagnostics = _infer(encoder, x, dictionary, grid)
    assert bool(diagnostics.converged)
    assert 0 < int(diagnostics.steps) < 5000
    _assert_elastic_net_kkt(codes, x, dictionary, grid, 0.2, encoder.ridge, tol=2e-3)


def _loss(parameters, encoder, x, grid, weights):
    """A generic smooth function of the codes (and the reconstruction)."""
    dictionary, sparsity = parameters
    encoder = eqx.tree_at(lambda e: e.sparsity, encoder, sparsity)
    codes = encoder(x, dictionary, grid)
    return jnp.sum(weights * codes) + 0.5 * grid.inner(dictionary(codes, grid), x)


def _gradients(encoder, grid, dictionary, x):
    sparsity = eqs.SoftThreshold(0.2, learnable=True)
    weights = jr.normal(jr.key(5), dictionary.code_shape(grid))
    grad = eqx.filter_jit(eqx.filter_grad(_loss))
    return grad((dictionary, sparsity), encoder, x, grid, weights), weights


def _relative(a, b):
    a, b = jax.tree.leaves(a), jax.tree.leaves(b)
    num = sum(jnp.sum((u - v) ** 2) for u, v in zip(a, b))
    den = sum(jnp.sum(v**2) for v in b)
    return float(jnp.sqrt(num / den))


@pytest.mark.parametrize(
    "kind,build_encoder",
    [("vector", eqs.FixedPoint), ("function", eqs.FixedPoint), ("vector", eqs.ODEFlow)],
)
def test_implicit_gradients_match_unrolled_gradients_in_float64(kind, build_encoder):
    """With respect to the dictionary and to lambda, relative error at most 1e-4."""
    with jax.enable_x64(True):
        grid, dictionary, x = _vector_problem() if kind == "vector" else _function_problem()
        ridge = 1e-3
        implicit = build_encoder(eqs.SoftThreshold(0.2), ridge=ridge, **TIGHT)
        unrolled = eqs.Unrolled(eqs.SoftThreshold(0.2), 6000, ridge=ridge)
        (g_dict, g_lam), _ = _gradients(implicit, grid, dictionary, x)
        (u_dict, u_lam), _ = _gradients(unrolled, grid, dictionary, x)
        assert _relative(g_dict, u_dict) <= 1e-4
        assert _relative(g_lam.threshold, u_lam.threshold) <= 1e-4
        assert float(jnp.abs(u_lam.threshold)) > 0  # the comparison is not of zeros


def test_implicit_gradients_match_central_finite_differences():
    with jax.enable_x64(True):
        grid, dictionary, x = _vector_problem()
        encoder = eqs.FixedPoint(eqs.SoftThreshold(0.2), **TIGHT)
        (g_dict, g_lam), weights = _gradients(encoder, grid, dictionary, x)
        direction = jr.normal(jr.key(9), dictionary.weight.shape)
        sparsity = eqs.SoftThreshold(0.2, learnable=True)

        def along(h):
            moved = eqx.tree_at(lambda d: d.weight, dictionary, dictionary.weight + h * direction)
            return _loss((moved, sparsity), encoder, x, grid, weights)

        h = 1e-5
        finite = (along(h) - along(-h)) / (2 * h)
        np.testing.assert_allclose(jnp.sum(g_dict.weight * direction), finite, rtol=1e-5)

        def at(lam):
            sparsity = eqs.SoftThreshold(lam, learnable=True)
            return _loss((dictionary, sparsity), encoder, x, grid, weights)

        finite_lam = (at(0.2 + h) - at(0.2 - h)) / (2 * h)
        np.testing.assert_allclose(g_lam.threshold, finite_lam, rtol=1e-5)


@pytest.mark.parametrize("build_encoder", [eqs.FixedPoint, eqs.ODEFlow])
def test_a_solve_that_cannot_converge_raises_the_flag_and_returns_no_nan(build_encoder):
    grid, dictionary, x = _vector_problem()
    encoder = build_encoder(eqs.SoftThreshold(0.2), max_steps=3)
    codes, diagnostics = _infer(encoder, x, dictionary, grid)
    assert not bool(diagnostics.converged)
    assert jnp.all(jnp.isfinite(codes))
    assert float(diagnostics.residual) > 1e-3


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("build_encoder", [eqs.FixedPoint, eqs.ODEFlow])
def test_implicit_encoders_drop_into_every_family(family, build_encoder):
    """Under jit and vmap, with the same codes as long unrolled FISTA."""
    grid = eqs.Grid(16)
    dictionary = build(family, grid, 1, 3, 5, jr.key(0))
    encoder = build_encoder(eqs.SoftThreshold(0.05), rtol=1e-6, atol=1e-6, max_steps=5000)
    reference = eqs.Unrolled(eqs.SoftThreshold(0.05), 3000, ridge=encoder.ridge)
    batch = jr.normal(jr.key(1), (3, 1, 16))

    @eqx.filter_jit
    def run(sae):
        return jax.vmap(sae.infer, in_axes=(0, None))(batch, grid)

    _, codes, diagnostics = run(eqs.SAE(encoder, dictionary))
    _, expected, _ = run(eqs.SAE(reference, dictionary))
    assert bool(jnp.all(diagnostics.converged))
    np.testing.assert_allclose(codes, expected, atol=2e-3 * float(jnp.max(jnp.abs(expected))))


def _fit_two_steps(sae, data):
    return eqs.fit(
        sae, data, optimizer=optax.adam(1e-3), steps=2, batch_size=16, key=jr.key(3), progress=False
    )


def test_fit_warns_when_inference_does_not_converge():
    grid, _, _ = _vector_problem()
    data = eqs.data.VectorModel(jr.key(0), 30, 20, 3).sample(jr.key(1), 64).signals
    sae = eqs.SAE(
        eqs.FixedPoint(eqs.SoftThreshold(0.2), max_steps=2), eqs.Dense(grid, 30, 20, key=jr.key(2))
    )
    with pytest.warns(eqs.InferenceWarning, match="did not converge"):
        _, history = _fit_two_steps(sae, data)
    assert np.all(history["converged"] < 1)
    # and a converging encoder does not warn
    sae = eqs.SAE(eqs.FixedPoint(eqs.SoftThreshold(0.2)), eqs.Dense(grid, 30, 20, key=jr.key(2)))
    with warnings.catch_warnings():
        warnings.simplefilter("error", eqs.InferenceWarning)
        _, history = _fit_two_steps(sae, data)
    assert np.all(history["converged"] == 1) and np.all(history["inference_steps"] > 1)


@pytest.mark.parametrize(
    "kwargs,match", [(dict(ridge=-1.0), "ridge"), (dict(max_steps=0), "max_steps")]
)
@pytest.mark.parametrize("build_encoder", [eqs.FixedPoint, eqs.ODEFlow])
def test_implicit_encoders_refuse_bad_settings(build_encoder, kwargs, match):
    with pytest.raises(ValueError, match=match):
        build_encoder(eqs.SoftThreshold(0.1), **kwargs)
