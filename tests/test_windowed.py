"""`Windowed`: localized atoms, a window in the domain's units around the origin.

The generic properties (linearity, the adjoint identity, the atoms as images of unit codes,
normalisation, starts from data, save/load) run over every family in `helpers.FAMILIES`,
this one included."""

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


def test_a_start_from_data_is_a_window_of_an_event():
    """Started from data, every windowed atom is the example's stretch around a chosen point:
    zero outside the window, by construction."""
    grid = eqs.Grid(64)
    _, windowed = _windowed(grid, width=0.25, concepts=3)
    data = jr.normal(jr.key(2), (10, 1, 64))
    started = eqs.init_from_data(windowed, data, key=jr.key(3))
    atoms = np.asarray(started.atoms(grid))
    outside = ~np.asarray(started.window(grid), bool)
    assert np.all(atoms[..., outside] == 0)
    np.testing.assert_allclose(started.atom_norms(grid), 1.0, rtol=1e-5)


def test_a_windowed_model_round_trips_through_save_and_load(tmp_path):
    grid = eqs.Grid(32)
    _, windowed = _windowed(grid)
    sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.1), 5), windowed)
    eqs.save(tmp_path / "model.eqx", sae)
    loaded = eqs.load(tmp_path / "model.eqx", eqs.SAE(sae.encoder, _windowed(grid)[1])).model
    x = jnp.sin(2 * jnp.pi * jnp.arange(32) / 32)[None]
    np.testing.assert_allclose(loaded(x, grid)[0], sae(x, grid)[0], atol=1e-6)
    assert loaded.dictionary.width == windowed.width


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
