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


# the duality gap of the lasso


def _lasso_objective(codes, x, dictionary, grid, lam):
    """$\\frac12\\|x - Dz\\|^2 + \\lambda\\|z\\|_{L^1}$, codes as measures on their grid."""
    code_grid = eqs.Grid(codes.shape[1:])
    fit = 0.5 * grid.norm(x - dictionary(codes, grid)) ** 2
    return fit + lam * code_grid.weight * jnp.sum(jnp.abs(codes))


@pytest.mark.parametrize("kind", ["vector", "function"])
@pytest.mark.parametrize("steps", [1, 5, 20])
def test_the_duality_gap_bounds_how_far_the_objective_is_from_the_optimum(kind, steps):
    """(P(z) - P*) / P(z) <= gap(z) for the codes after any number of steps, and the gap of
    the optimum is below 1e-5: the gap is a certificate, not an estimate."""
    grid, dictionary, x = _problem(kind)
    lam = 0.2
    early, info = eqx.filter_jit(eqs.Unrolled(eqs.SoftThreshold(lam), steps).infer)(
        x, dictionary, grid
    )
    optimum, best = eqx.filter_jit(eqs.Unrolled(eqs.SoftThreshold(lam), 3000).infer)(
        x, dictionary, grid
    )
    p_early = _lasso_objective(early, x, dictionary, grid, lam)
    p_star = _lasso_objective(optimum, x, dictionary, grid, lam)
    assert float(info.gap) >= float((p_early - p_star) / p_early) - 1e-6
    assert float(best.gap) < 1e-5
    if steps == 1:
        assert float(info.gap) > 1e-3  # far from the optimum, and the gap says so


def test_the_gap_means_the_same_on_every_grid():
    """The same function and the same codes (as measures) on a grid and on one 4x finer have
    the same gap: it is a quantity of $L^2(\\Omega)$, not of the grid."""
    from equisae._encoders import _ProximalGradient

    coarse, fine = eqs.Grid(16), eqs.Grid(64)
    dictionary = eqs.Spectral(coarse, 1, 2, 5, key=jr.key(0))
    z = jnp.zeros((2, 16)).at[0, 3].set(16.0).at[1, 11].set(-24.0)
    x = dictionary(z, coarse) + 0.1 * jnp.cos(2 * jnp.pi * coarse.points())

    def gap(codes, signal, grid):
        target = dictionary.adjoint(signal, grid)
        args = (dictionary, target, 0.1, grid, grid.inner(signal, signal))
        return _ProximalGradient(eqs.SoftThreshold(0.3), 0.0).with_gap(codes, args)[1]

    on_coarse = gap(0.5 * z, x, coarse)
    on_fine = gap(eqs.resample_codes(0.5 * z, coarse, fine), eqs.resample(x, coarse, fine), fine)
    assert float(on_coarse) > 1e-3
    np.testing.assert_allclose(on_fine, on_coarse, rtol=1e-4)


def test_the_gap_is_nan_where_it_is_not_defined():
    """Only the lasso has this certificate: with a ridge, another penalty, or an amortised
    encoder the gap is NaN (and FixedPoint falls back to its step test)."""
    grid, dictionary, x = _problem("vector")
    for encoder in [
        eqs.Unrolled(eqs.SoftThreshold(0.2), 5, ridge=0.01),
        eqs.Unrolled(eqs.TopK(3), 5),
        eqs.Amortised(eqs.Linear((20,), 30, key=jr.key(0)), eqs.SoftThreshold(0.1)),
    ]:
        assert bool(jnp.isnan(encoder.infer(x, dictionary, grid)[1].gap))
    ridge = eqs.FixedPoint(eqs.SoftThreshold(0.2), ridge=1e-3)
    _, info = eqx.filter_jit(ridge.infer)(x, dictionary, grid)
    assert bool(info.converged) and bool(jnp.isnan(info.gap))


def test_fixed_point_stops_on_the_gap_of_the_lasso():
    """From the tolerance of `from_encoder`, FixedPoint reports converged only with a gap
    within it (up to the gap's own float32 rounding, here below 1e-6), and not before."""
    grid, dictionary, x = _problem("function")
    encoder = eqs.FixedPoint.from_encoder(eqs.Unrolled(eqs.SoftThreshold(0.2), 10), tol=1e-5)
    _, info = eqx.filter_jit(encoder.infer)(x, dictionary, grid)
    assert bool(info.converged) and float(info.gap) <= 1e-5 + 1e-6
    short = eqs.FixedPoint.from_encoder(eqs.Unrolled(eqs.SoftThreshold(0.2), 10), tol=1e-5,
                                        max_steps=int(info.steps) - 1)  # fmt: skip
    _, early = eqx.filter_jit(short.infer)(x, dictionary, grid)
    assert not bool(early.converged)


# alternating minimisation


def test_alternating_minimisation_moves_the_dictionary_only_through_the_decoding():
    """The gradient of the reconstruction error through an `Alternating` encoder is the
    gradient with the codes held constant: that of 0.5 |x - D z|^2 in D at the given z."""
    grid, dictionary, x = _problem("vector")
    inner = eqs.FixedPoint(eqs.SoftThreshold(0.2), ridge=0.0)
    alternating = eqs.SAE(eqs.Alternating(inner), dictionary)
    codes = alternating.encode(x, grid)

    def loss(sae):
        return 0.5 * grid.norm(x - sae(x, grid)[0]) ** 2

    def fixed(d):
        return 0.5 * grid.norm(x - d(codes, grid)) ** 2

    grads = eqx.filter_grad(loss)(alternating)
    np.testing.assert_allclose(
        grads.dictionary.weight, eqx.filter_grad(fixed)(dictionary).weight, rtol=1e-5, atol=1e-6
    )
    np.testing.assert_allclose(codes, eqs.SAE(inner, dictionary).encode(x, grid), atol=1e-6)
    unrolled = eqx.filter_grad(loss)(eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.2), 50), dictionary))
    assert not np.allclose(unrolled.dictionary.weight, grads.dictionary.weight, atol=1e-4)


def _noiseless(kind):
    grid, dictionary, noisy = _problem(kind)
    if kind == "vector":
        z = jnp.zeros(30).at[jnp.array([1, 7, 19])].set(jnp.array([1.5, -2.0, 1.0]))
    else:
        z = jnp.zeros((2, 16)).at[0, 3].set(16.0).at[1, 11].set(-24.0)
    return grid, dictionary, dictionary(z, grid), z


@pytest.mark.parametrize("kind", ["vector", "function"])
def test_debiased_codes_undo_the_lasso_shrinkage_on_the_support(kind):
    grid, dictionary, x, truth = _noiseless(kind)
    lasso = eqs.Unrolled(eqs.SoftThreshold(0.3), 2000)
    with jax.default_matmul_precision("highest"):
        shrunk = _encode(lasso, x, dictionary, grid)
        refit = _encode(eqs.Debiased(lasso, 20), x, dictionary, grid)
    assert jnp.all((refit != 0) <= (shrunk != 0))  # the support is the encoder's
    error = jnp.linalg.norm(x - dictionary(shrunk, grid)) / jnp.linalg.norm(x)
    refit_error = jnp.linalg.norm(x - dictionary(refit, grid)) / jnp.linalg.norm(x)
    assert error > 0.05
    assert refit_error < 1e-3
    np.testing.assert_allclose(refit, truth, atol=1e-3 * float(jnp.max(jnp.abs(truth))))


def test_the_true_dictionary_is_a_stationary_point_of_the_debiased_reconstruction_loss():
    grid, dictionary, x, _ = _noiseless("vector")
    lasso = eqs.Unrolled(eqs.SoftThreshold(0.3), 300)

    def loss(d, encoder):
        return 0.5 * jnp.sum((x - d(encoder(x, d, grid), grid)) ** 2)

    with jax.default_matmul_precision("highest"):
        plain = eqx.filter_grad(loss)(dictionary, lasso)
        debiased = eqx.filter_grad(loss)(dictionary, eqs.Debiased(lasso, 20))
    size = jnp.linalg.norm(plain.weight)
    assert size > 0.1
    assert jnp.linalg.norm(debiased.weight) < 1e-3 * size


def test_debiased_gradients_are_finite_when_the_support_is_empty_or_already_fitted():
    grid, dictionary, x, _ = _noiseless("vector")

    def loss(d, signal):
        encoder = eqs.Debiased(eqs.Unrolled(eqs.SoftThreshold(0.3), 50), 10)
        return jnp.sum(d(encoder(signal, d, grid), grid) ** 2)

    for signal in (jnp.zeros_like(x), x):  # no support; CG done before its last iteration
        grads = eqx.filter_grad(loss)(dictionary, signal)
        assert jnp.all(jnp.isfinite(grads.weight))


@pytest.mark.parametrize(
    "kwargs,match", [(dict(steps=0), "steps"), (dict(rtol=0.0), "rtol"), (dict(rtol=1.0), "rtol")]
)
def test_debiased_refuses_bad_settings(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eqs.Debiased(eqs.Unrolled(eqs.SoftThreshold(0.1), 5), **kwargs)
