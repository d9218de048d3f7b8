"""Figures with matplotlib: atoms as functions, training curves."""

from collections.abc import Sequence

import matplotlib.pyplot as plt
import numpy as np
from jaxtyping import Array, Float

from ._grid import Grid


def plot_atoms(
    axes: Sequence[plt.Axes] | np.ndarray,
    atoms: Float[Array | np.ndarray, " p c *spatial"],
    grid: Grid,
    *,
    reference: Float[Array | np.ndarray, " p c *spatial"] | None = None,
    label: str | None = None,
    color: str = "C0",
) -> None:
    """Draw atom $k$ in `axes[k]` (a sequence of axes, or the array `plt.subplots` returns):
    a line per channel over $[0, 1)$ in 1-D (centred on the origin of the periodic domain), an
    image of the first channel in 2-D, a line over the entries of a vector (atoms `(p, m)` on
    `Grid(())`). With `reference`, the true atoms are drawn behind in grey (1-D and vectors)."""
    atoms = np.asarray(atoms)
    if grid.ndim > 2:
        raise ValueError(f"plot_atoms draws 0-, 1- and 2-D atoms, got a grid {grid.shape}.")
    for k, ax in enumerate(axes[: len(atoms)]):
        if grid.ndim == 2:
            ax.imshow(
                np.fft.fftshift(atoms[k, 0]),
                cmap="RdBu_r",
                origin="lower",
                extent=(-0.5, 0.5, -0.5, 0.5),
            )
            continue
        if grid.ndim == 1:
            s = np.arange(grid.shape[0]) / grid.shape[0] - 0.5
            curves = [np.fft.fftshift(a) for a in atoms[k]]
            truth = (
                [] if reference is None else [np.fft.fftshift(a) for a in np.asarray(reference)[k]]
            )
        else:
            s = np.arange(atoms.shape[1])
            curves = [atoms[k]]
            truth = [] if reference is None else [np.asarray(reference)[k]]
        for t in truth:
            ax.plot(s, t, color="0.6", lw=2.5)
        for c, curve in enumerate(curves):
            ax.plot(s, curve, color=color, lw=1.2, label=label if c == 0 else None)
        ax.set_xticks([])
        ax.set_yticks([])


def plot_history(
    ax: plt.Axes, history: dict[str, np.ndarray], key: str = "loss", *, label: str | None = None
) -> None:
    """Plot one entry of a `fit` history against the step, on a log scale for losses."""
    ax.plot(history["step"], history[key], label=label)
    ax.set_xlabel("step")
    ax.set_ylabel(key)
    if key in ("loss", "reconstruction") and np.all(history[key] > 0):
        ax.set_yscale("log")
