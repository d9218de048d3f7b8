"""PDE data for host neural operators: random fields, Burgers and Darcy solvers, caching."""

import jax
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import numpy as np
import pytest
import scipy.sparse
import scipy.sparse.linalg
from helpers import relative_error

import equisae as eqs


def test_gaussian_random_fields_are_keyed_real_and_zero_mean():
    grid = eqs.Grid((16, 12))
    a = eqs.data.gaussian_random_field(jr.key(0), grid, tau=3.0)
    assert a.shape == (1, 16, 12) and a.dtype == jnp.float32
    np.testing.assert_array_equal(a, eqs.data.gaussian_random_field(jr.key(0), grid, tau=3.0))
    assert not np.allclose(a, eqs.data.gaussian_random_field(jr.key(1), grid, tau=3.0))
    assert abs(float(jnp.mean(a))) < 1e-6 * float(jnp.max(jnp.abs(a)))
    with pytest.raises(ValueError, match="tau"):
        eqs.data.gaussian_random_field(jr.key(0), grid, tau=-1.0)


def _solve(u0, viscosity, time, steps, order=None):
    kwargs = {} if order is None else {"order": order}
    return eqs.data.solve_burgers(
        jnp.asarray(u0, jnp.float32), viscosity=viscosity, time=time, steps=steps, **kwargs
    )


def test_burgers_conserves_the_mean_and_dissipates_energy():
    grid = eqs.Grid(64)
    u0 = eqs.data.gaussian_random_field(jr.key(2), grid) + 0.3
    u = _solve(u0, 0.02, 0.5, 200)
    np.testing.assert_allclose(jnp.mean(u), jnp.mean(u0), atol=1e-6)
    assert grid.norm(u - 0.3) < grid.norm(u0 - 0.3)


def test_inviscid_burgers_matches_the_characteristics_before_the_shock():
    """u_t + u u_x = 0 with u0 = a sin(2 pi x): u(x, t) = u0(x - u t) until the shock at
    t* = 1 / (2 pi a); at t = t*/2 the solver (exponax, ETDRK3, 200 steps) matches it to 1e-7
    in float64 (the discretisation error); in float32 its FFT round-off adds about 6e-8 per
    step, and the error stays below 3e-5."""
    n, a = 128, 0.5
    x = np.arange(n) / n
    time = 0.5 / (2 * np.pi * a)
    exact = a * np.sin(2 * np.pi * x)
    for _ in range(200):  # fixed point of u = u0(x - u t): a contraction for t < t*
        exact = a * np.sin(2 * np.pi * (x - exact * time))
    with jax.enable_x64(True):
        u0 = jnp.asarray(a * np.sin(2 * np.pi * x)[None], jnp.float64)
        u = eqs.data.solve_burgers(u0, viscosity=0.0, time=time, steps=200)
        assert u.dtype == jnp.float64
        assert relative_error(u[0], exact) <= 1e-7
    u = _solve(a * np.sin(2 * np.pi * x)[None], 0.0, time, 200)
    assert relative_error(u[0], exact) <= 3e-5


def test_viscous_burgers_matches_a_reference_at_a_finer_step():
    """Default solver (exponax's ETDRK3) at the default number of steps against ETDRK4 at 4x
    the steps,
    on a random initial condition with a steep front; and the heat-equation limit of a tiny
    wave, u = eps exp(-nu (2 pi)^2 t) sin(2 pi x) up to O(eps^2)."""
    grid = eqs.Grid(64)
    u0 = eqs.data.gaussian_random_field(jr.key(3), grid)
    steps = eqs.data.burgers_steps(u0[None], 0.5)
    u = _solve(u0, 0.02, 0.5, steps)
    reference = _solve(u0, 0.02, 0.5, 4 * steps, order=4)
    assert relative_error(u, reference) <= 1e-4
    eps, nu = 1e-4, 0.02
    wave = eps * np.sin(2 * np.pi * np.arange(64) / 64)[None]
    decayed = _solve(wave, nu, 0.5, steps)
    assert relative_error(decayed, wave * np.exp(-nu * (2 * np.pi) ** 2 * 0.5)) <= 1e-3


def test_the_burgers_generator_subsamples_one_fine_solution_and_caches_it(tmp_path):
    path = tmp_path / "burgers.npz"
    options = dict(fine=64, viscosity=0.05, time=0.25)
    data = eqs.data.burgers(jr.key(0), 3, 32, cache=path, **options)
    assert data.inputs.shape == data.outputs.shape == (3, 1, 32)
    stamp = path.stat().st_mtime_ns
    again = eqs.data.burgers(jr.key(0), 3, 32, cache=path, **options)
    assert path.stat().st_mtime_ns == stamp  # read, not rewritten
    np.testing.assert_array_equal(again.outputs, data.outputs)
    coarse = eqs.data.burgers(jr.key(0), 3, 16, cache=path, **options)  # other args: recomputed
    np.testing.assert_array_equal(coarse.inputs, data.inputs[..., ::2])
    np.testing.assert_allclose(coarse.outputs, data.outputs[..., ::2], rtol=1e-5, atol=1e-6)
    assert path.stat().st_mtime_ns != stamp
    with pytest.raises(ValueError, match="multiple"):
        eqs.data.burgers(jr.key(0), 3, 24, fine=64)
    with pytest.raises(ValueError, match="viscosity"):
        eqs.data.solve_burgers(jnp.zeros((1, 16)), viscosity=-1.0, time=1.0, steps=10)
    with pytest.raises((ValueError, jaxtyping.TypeCheckError)):  # jaxtyping is on in tests
        eqs.data.solve_burgers(jnp.zeros((2, 16)), viscosity=0.1, time=1.0, steps=10)


def _darcy_matrix(a: np.ndarray) -> scipy.sparse.csr_matrix:
    """The 5-point matrix on the interior nodes, assembled independently, row by row."""
    n = a.shape[0]
    rows, cols, values = [], [], []

    def index(i, j):
        return (i - 1) * (n - 1) + (j - 1)

    for i in range(1, n):
        for j in range(1, n):
            diagonal = 0.0
            for di, dj in ((1, 0), (-1, 0), (0, 1), (0, -1)):
                ii, jj = (i + di) % n, (j + dj) % n
                face = 0.5 * (a[i, j] + a[ii, jj]) * n**2
                diagonal += face
                if ii > 0 and jj > 0:
                    rows.append(index(i, j))
                    cols.append(index(ii, jj))
                    values.append(-face)
            rows.append(index(i, j))
            cols.append(index(i, j))
            values.append(diagonal)
    return scipy.sparse.csr_matrix((values, (rows, cols)))


def _coefficient(n: int, key=0) -> jnp.ndarray:
    field = eqs.data.gaussian_random_field(jr.key(key), eqs.Grid((n, n)), tau=3.0, sigma=1.0)
    return jnp.where(field > 0, 12.0, 3.0)


def test_the_darcy_solver_solves_the_five_point_system():
    """The operator is the assembled matrix; the float32 solution matches a sparse direct
    solve; in float64 the relative residual of the discrete system is below 1e-5 (in float32
    round-off in u limits it to about 1e-3: the system's condition number grows like n^2)."""
    n = 24
    a = _coefficient(n)
    matrix = _darcy_matrix(np.asarray(a[0], np.float64))
    v = np.random.default_rng(0).normal(size=(1, n, n))
    v[:, 0, :] = v[:, :, 0] = 0.0
    applied = eqs.data.darcy_operator(jnp.asarray(v, jnp.float32), a)
    expected = matrix @ v[0, 1:, 1:].ravel()
    assert relative_error(applied[0, 1:, 1:].ravel(), expected) <= 1e-5
    assert float(jnp.max(jnp.abs(applied[0, 0]))) == 0.0

    u = eqs.data.solve_darcy(a)
    direct = scipy.sparse.linalg.spsolve(matrix.tocsc(), np.ones((n - 1) ** 2))
    assert relative_error(np.asarray(u[0, 1:, 1:], np.float64).ravel(), direct) <= 1e-5
    assert float(jnp.min(u[0, 1:, 1:])) > 0 and float(jnp.max(jnp.abs(u[0, 0]))) == 0.0
    with jax.enable_x64(True):
        a64 = jnp.asarray(a, jnp.float64)
        u64 = eqs.data.solve_darcy(a64, rtol=1e-10)
        assert float(eqs.data.darcy_residual(u64, a64)) <= 1e-5


def test_the_darcy_generator_is_keyed_and_subsamples():
    data = eqs.data.darcy(jr.key(0), 2, 16, fine=16)
    assert data.inputs.shape == data.outputs.shape == (2, 1, 16, 16)
    assert set(np.unique(np.asarray(data.inputs))) <= {3.0, 12.0}
    coarse = eqs.data.darcy(jr.key(0), 2, 8, fine=16)
    np.testing.assert_array_equal(coarse.inputs, data.inputs[..., ::2, ::2])
    np.testing.assert_allclose(coarse.outputs, data.outputs[..., ::2, ::2], rtol=1e-6)
    with pytest.raises(ValueError, match="positive"):
        eqs.data.darcy(jr.key(0), 2, 8, fine=16, values=(0.0, 1.0))
    with pytest.raises((ValueError, jaxtyping.TypeCheckError)):
        eqs.data.solve_darcy(jnp.ones((1, 8, 9)))
