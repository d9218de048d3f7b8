import jax.numpy as jnp
import numpy as np
import pytest

import equisae as eqs


def test_points_are_the_uniform_grid_of_the_unit_square():
    grid = eqs.Grid((4, 8))
    points = grid.points()
    assert points.shape == (2, 4, 8)
    np.testing.assert_allclose(points[0, :, 0], [0, 0.25, 0.5, 0.75])
    np.testing.assert_allclose(points[1, 0, :], np.arange(8) / 8)


def test_quadrature_is_exact_for_trigonometric_polynomials():
    grid = eqs.Grid(16)
    s = grid.points()[0]
    f = 2.0 + jnp.cos(2 * jnp.pi * 3 * s) + jnp.sin(2 * jnp.pi * 7 * s)
    np.testing.assert_allclose(grid.integrate(f), 2.0, rtol=1e-6)
    # int cos^2(2 pi 3 s) ds = 1/2: the L2 norm of a unit-amplitude cosine
    np.testing.assert_allclose(grid.norm(jnp.cos(2 * jnp.pi * 3 * s)[None]) ** 2, 0.5, rtol=1e-6)


def test_the_zero_dimensional_grid_is_euclidean():
    grid = eqs.Grid(())
    x = jnp.array([3.0, 4.0])
    assert grid.size == 1 and grid.weight == 1.0
    np.testing.assert_allclose(grid.norm(x), 5.0)


def test_an_int_is_a_one_dimensional_grid():
    assert eqs.Grid(32) == eqs.Grid((32,))


@pytest.mark.parametrize("shape", [(0,), (4, -1)])
def test_a_grid_needs_points(shape):
    with pytest.raises(ValueError, match="at least one point"):
        eqs.Grid(shape)


def test_check_names_the_expected_shape():
    grid = eqs.Grid(64)
    grid.check(jnp.zeros((3, 64)))
    with pytest.raises(ValueError, match=r"expected \(c, 64\)"):
        grid.check(jnp.zeros((3, 32)))
    with pytest.raises(ValueError, match=r"expected \(2, 64\)"):
        grid.check(jnp.zeros((3, 64)), channels=2)
    with pytest.raises(ValueError, match="jax.vmap"):
        grid.check(jnp.zeros((8, 3, 64)))
