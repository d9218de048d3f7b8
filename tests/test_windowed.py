"""`Windowed`: localized atoms, a window in the domain's units around the origin.

`helpers.FAMILIES` holds it too, so the property tests over families may draw it; the
operator identities are checked here explicitly, in 1-D and 2-D."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import equisae as eqs


def _windowed(grid, width=0.25, concepts=2, modes=None):
    inner = eqs.Spectral(grid, 1, concepts, modes, key=jr.key(0))
    return inner, eqs.Windowed(inner, width)


def test_the_atoms_are_the_inner_atoms_inside_the_window_and_zero_outside():
    grid = eqs.Grid(32)
    inner, windowed = _windowed(grid, width=0.25)
    atoms, kernels = np.asarray(inner.atoms(grid)), np.asarray(windowed.atoms(grid))
    inside = np.r_[0:5, 28:32]  # offsets -4 .. 4 of 32 points: |s| <= 1/8
    np.testing.assert_allclose(kernels[..., inside], atoms[..., inside], rtol=1e-6)
    assert np.all(kernels[..., 5:28] == 0)


def test_a_window_of_the_whole_domain_is_the_inner_dictionary():
    grid = eqs.Grid(16)
    inner, windowed = _windowed(grid, width=1.0)
    z = jr.normal(jr.key(1), inner.code_shape(grid))
    np.testing.assert_allclose(windowed(z, grid), inner(z, grid), atol=1e-5)


def test_the_window_covers_the_same_stretch_of_the_domain_on_a_finer_grid():
    """A band-limited inner atom sampled on a 2x finer grid is the coarse atom in between its
    points, and the window cuts it at the same place in the domain."""
    coarse, fine = eqs.Grid(32), eqs.Grid(64)
    _, windowed = _windowed(coarse, width=0.3, modes=8)
    np.testing.assert_allclose(
        windowed.atoms(fine)[..., ::2], windowed.atoms(coarse), rtol=1e-4, atol=1e-5
    )
    np.testing.assert_array_equal(windowed.window(fine)[::2], windowed.window(coarse))


def test_two_dimensional_windows_are_products_of_the_axes():
    grid = eqs.Grid((8, 16))
    inner = eqs.Spectral(grid, 1, 1, key=jr.key(0))
    window = np.asarray(eqs.Windowed(inner, (0.5, 0.25)).window(grid))
    rows = np.isin(np.arange(8), [0, 1, 2, 6, 7])  # |s| <= 1/4 on 8 points
    columns = np.isin(np.arange(16), [0, 1, 2, 14, 15])  # |s| <= 1/8 on 16 points
    np.testing.assert_array_equal(window, np.outer(rows, columns))


@pytest.mark.parametrize("shape,modes", [((16,), None), ((16,), 4), ((6, 8), 3)])
def test_the_operator_identities_hold(shape, modes):
    """<D z, x> = <z, D* x>, D*D z = D*(D z), and D z = sum_k d_k * z_k with d_k the atoms."""
    grid = eqs.Grid(shape)
    inner = eqs.Spectral(grid, 2, 3, modes, key=jr.key(0))
    windowed = eqs.Windowed(inner, 0.5)
    z = jr.normal(jr.key(1), windowed.code_shape(grid))
    x = jr.normal(jr.key(2), (2,) + shape)
    left = grid.inner(windowed(z, grid), x)
    np.testing.assert_allclose(left, grid.inner(z, windowed.adjoint(x, grid)), rtol=1e-4)
    derived = eqs.AbstractDictionary.adjoint(windowed, windowed(z, grid), grid)
    np.testing.assert_allclose(windowed.normal(z, grid), derived, rtol=1e-4, atol=1e-4)
    axes = tuple(range(-grid.ndim, 0))
    atoms = windowed.atoms(grid)
    product = jnp.fft.fftn(atoms, axes=axes) * jnp.fft.fftn(z, axes=axes)[:, None]
    expected = jnp.sum(jnp.fft.ifftn(product, axes=axes).real, axis=0) * grid.weight
    np.testing.assert_allclose(windowed(z, grid), expected, atol=1e-4)


def test_a_start_from_data_is_the_window_of_an_example_around_one_of_its_points():
    """With every mode kept the windowed family holds any function on the window, so every
    started atom is an example's stretch around some point, normalised."""
    grid = eqs.Grid(64)
    _, windowed = _windowed(grid, width=0.25, concepts=3)
    data = jr.normal(jr.key(2), (10, 1, 64))
    started = eqs.init_from_data(windowed, data, key=jr.key(3))
    atoms = np.asarray(started.atoms(grid))[:, 0]
    window = np.asarray(started.window(grid), bool)
    stretches = np.stack(
        [np.roll(x, -s) * window for x in np.asarray(data)[:, 0] for s in range(64)]
    )
    stretches /= np.linalg.norm(stretches, axis=1, keepdims=True)
    best = np.max(np.abs(atoms @ stretches.T), axis=1) / np.linalg.norm(atoms, axis=1)
    np.testing.assert_array_less(0.999, best)
    np.testing.assert_allclose(started.atom_norms(grid), 1.0, rtol=1e-5)


def test_a_windowed_model_round_trips_through_save_and_load(tmp_path):
    grid = eqs.Grid(32)
    _, windowed = _windowed(grid)
    sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.1), 5), windowed)
    eqs.save(tmp_path / "model.eqx", sae)
    other = eqs.Windowed(eqs.Spectral(grid, 1, 2, key=jr.key(7)), 0.25)
    loaded = eqs.load(tmp_path / "model.eqx", eqs.SAE(sae.encoder, other)).model
    assert eqx.tree_equal(loaded, sae)


def test_a_tied_lift_goes_outside_the_window_and_a_lifted_inner_dictionary_is_refused():
    grid = eqs.Grid(16)
    inner = eqs.Spectral(grid, 1, 2, key=jr.key(0))
    tied = eqs.Tied(eqs.Windowed(inner, 0.5), eqs.SpectralConv(1, 3, 9, key=jr.key(1)))
    sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.1), 5), tied)
    reconstruction, codes = sae(jnp.ones((1, 16)), grid)[:2]
    assert codes.shape == (2, 16) and np.all(np.isfinite(reconstruction))
    with pytest.raises(ValueError, match="lift outside"):
        eqs.Windowed(tied, 0.5)


def test_a_whole_number_width_is_a_fraction_too():
    grid = eqs.Grid(16)
    inner = eqs.Spectral(grid, 1, 2, key=jr.key(0))
    assert eqs.Windowed(inner, 1).width == (1.0,)
    assert eqs.Windowed(inner, np.float32(0.5)).width == (0.5,)


@pytest.mark.parametrize("width", [0.0, -0.2, 1.5, (0.5, 0.0)])
def test_widths_outside_the_unit_interval_are_refused(width):
    with pytest.raises(ValueError, match="width"):
        eqs.Windowed(eqs.Spectral(eqs.Grid(16), 1, 2, key=jr.key(0)), width)


def test_vector_codes_and_a_window_of_another_dimension_are_refused():
    grid = eqs.Grid(16)
    with pytest.raises(ValueError, match="function codes"):
        eqs.Windowed(eqs.Dense(grid, 1, 2, key=jr.key(0)), 0.5).atoms(grid)
    windowed = eqs.Windowed(eqs.Spectral(grid, 1, 2, key=jr.key(0)), (0.5, 0.5))
    with pytest.raises(ValueError, match="cannot act on the grid"):
        windowed.window(grid)
