import json
import os
import pathlib
from collections.abc import Callable
from typing import NamedTuple

import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from .._grid import Grid


class PDEData(NamedTuple):
    """Input and output functions of a PDE's solution operator: `inputs` of shape
    `(batch, c_in, *spatial)` (initial conditions, coefficient fields) and `outputs` of shape
    `(batch, c_out, *spatial)` (the solutions), on the same grid."""

    inputs: Float[Array, " batch c_in *spatial"]
    outputs: Float[Array, " batch c_out *spatial"]


def gaussian_random_field(
    key: PRNGKeyArray,
    grid: Grid,
    *,
    alpha: float = 2.0,
    tau: float = 5.0,
    sigma: float = 25.0,
) -> Float[Array, " 1 *spatial"]:
    """One sample of the zero-mean periodic Gaussian random field
    $\\mathcal N(0, \\sigma^2(-\\Delta + \\tau^2 I)^{-\\alpha})$ on $[0, 1)^d$, truncated at the
    grid's Nyquist frequency: $u = \\sum_{f \\ne 0} \\sigma ((2\\pi|f|)^2 + \\tau^2)^{-\\alpha/2}
    \\xi_f e^{2\\pi i f \\cdot s}$ with standard complex normal $\\xi_f$ (Hermitian, so $u$ is
    real). The defaults are the initial conditions of the Burgers benchmark of Li et al. (2021).

    **Returns:** the field on `grid`, shape `(1, *grid.shape)`.
    """
    if grid.ndim == 0:
        raise ValueError("gaussian_random_field needs a grid with at least one axis.")
    for name, value in (("alpha", alpha), ("tau", tau), ("sigma", sigma)):
        if not (np.isfinite(value) and value > 0):
            raise ValueError(f"gaussian_random_field {name} must be positive, got {value}.")
    axes = tuple(range(grid.ndim))
    frequencies = jnp.meshgrid(*[jnp.fft.fftfreq(n, 1.0 / n) for n in grid.shape], indexing="ij")
    squared = sum((2 * jnp.pi * f) ** 2 for f in frequencies)
    amplitude = sigma * (squared + tau**2) ** (-alpha / 2)
    amplitude = jnp.where(squared == 0, 0.0, amplitude)
    noise = jr.normal(key, grid.shape)  # real white noise: its FFT is Hermitian and unit variance
    field = jnp.fft.ifftn(amplitude * jnp.fft.fftn(noise, axes=axes, norm="ortho"), norm="forward")
    return field.real[None]


def check_resolution(n: int, fine: int, ndim: int) -> Grid:
    """The output grid, after checking that `fine` is a whole multiple of `n`."""
    for name, value in (("n", n), ("fine", fine)):
        if int(value) != value or value < 2:
            raise ValueError(f"{name} must be a whole number of grid points >= 2, got {value}.")
    if fine % n:
        raise ValueError(
            f"the solver grid fine={fine} must be a whole multiple of the output grid n={n} "
            "(outputs are the fine solution subsampled)."
        )
    return Grid((int(n),) * ndim)


def check_num(num: int) -> int:
    if int(num) != num or num < 1:
        raise ValueError(f"num must be a positive whole number of samples, got {num}.")
    return int(num)


def cached(cache: str | os.PathLike | None, meta: dict, compute: Callable[[], PDEData]) -> PDEData:
    """`compute()`, or the arrays stored in the `.npz` file `cache` when it was written with the
    same `meta` (generator, key, sizes, parameters); a file with other parameters is
    recomputed and overwritten. Writes are atomic."""
    meta_json = json.dumps(meta, sort_keys=True)
    if cache is not None:
        path = pathlib.Path(cache)
        if path.exists():
            with np.load(path) as stored:
                if "meta" in stored and str(stored["meta"]) == meta_json:
                    return PDEData(jnp.asarray(stored["inputs"]), jnp.asarray(stored["outputs"]))
    data = compute()
    if cache is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(path.name + ".partial")
        with open(partial, "wb") as f:
            np.savez(
                f,
                inputs=np.asarray(data.inputs),
                outputs=np.asarray(data.outputs),
                meta=np.asarray(meta_json),
            )
        os.replace(partial, path)
    return data


def key_meta(key: PRNGKeyArray) -> list:
    return np.asarray(jr.key_data(key)).ravel().tolist()
