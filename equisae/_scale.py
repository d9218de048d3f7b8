import math

import jax
import numpy as np
from jaxtyping import Array, Float

from ._batches import check_array
from ._grid import Grid

_CHUNK = 4096  # examples read at a time: memory-mapped data need not fit in memory


def data_scale(
    data: Float[Array, " examples c *spatial"] | Float[np.ndarray, " examples c *spatial"],
    grid: Grid | None = None,
) -> float:
    """The scale of a data set, $s = \\big(\\frac1B \\sum_b \\|x_b\\|^2_{L^2(\\Omega)}\\big)^{1/2}$,
    the root of its mean energy: $x / s$ has unit mean energy.

    `SAE.with_scale_of(data)` stores it in a model, which then divides every input by $s$
    before encoding and multiplies every reconstruction by $s$ (activation normalisation, as
    SAELens does it), so that the same $\\lambda$, `l1`, `k` and learning rate mean the same on
    $x$, $100 x$ and $0.01 x$. The energy is accumulated in float64 on the host, a chunk of
    examples at a time, so the same data give the same scale on every device and a
    memory-mapped `.npy` need not fit in memory.

    **Arguments:**

    - `data`: a floating-point array of shape `(examples, channels, *spatial)` (JAX or NumPy).
    - `grid`: the grid of the data; by default the uniform grid of shape `data.shape[2:]`.

    **Returns:** $s$, a positive Python float (rounded to float32, so that it is stored exactly
    by `equisae.save`).

    **Raises:** `ValueError` for empty data, a shape that does not fit `grid`, NaN or inf in the
    data, or data with zero energy (every example zero: there is no scale to normalise by).
    """
    total = float(np.sum(energies(data, grid)))
    scale = math.sqrt(total / data.shape[0])
    scale = float(np.float32(scale))
    if not scale > 0 or not math.isfinite(scale):
        raise ValueError(
            f"data has zero energy (mean squared L2 norm {total / data.shape[0]:.3g}): every "
            "example is zero (or too small for float32), so there is no scale to normalise by."
        )
    return scale


def energies(data, grid: Grid | None = None) -> np.ndarray:
    """$\\|x_b\\|^2_{L^2(\\Omega)}$ of every example, in float64 on the host, a chunk of
    examples at a time; checks the data's dtype, shape and finiteness first."""
    grid = check_array(data, grid)
    out = np.empty(data.shape[0])
    for start in range(0, data.shape[0], _CHUNK):
        chunk = np.asarray(jax.device_get(data[start : start + _CHUNK]), np.float64)
        out[start : start + len(chunk)] = np.sum(chunk * chunk, axis=tuple(range(1, chunk.ndim)))
    out *= grid.weight
    bad = np.flatnonzero(~np.isfinite(out))
    if bad.size:
        raise ValueError(
            f"data contains NaN or inf in {bad.size} example(s), the first at index {bad[0]}."
        )
    return out
