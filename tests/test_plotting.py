import jax.random as jr
import matplotlib
import numpy as np
import pytest

import equisae as eqs

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402


@pytest.mark.parametrize("shape", [(), (32,)])
def test_plot_atoms_draws_vectors_and_functions_into_the_axes_of_subplots(shape):
    grid = eqs.Grid(shape)
    dictionary = (
        eqs.Dense(grid, 10, 3, key=jr.key(0))
        if not shape
        else eqs.Spectral(grid, 1, 3, key=jr.key(0))
    )
    atoms = dictionary.atoms(grid)
    figure, axes = plt.subplots(1, 3)  # a NumPy array of axes
    eqs.plotting.plot_atoms(axes, atoms, grid, reference=atoms, label="learned")
    for ax, atom in zip(axes, np.asarray(atoms)):
        learned = ax.get_lines()[-1].get_ydata()
        expected = atom if not shape else np.fft.fftshift(atom[0])
        np.testing.assert_allclose(learned, expected, rtol=1e-6)
        assert len(ax.get_lines()) == 2  # the reference behind, the atom in front
    plt.close(figure)
