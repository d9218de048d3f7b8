from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._dictionaries import AbstractDictionary, Lifted, Spectral
from ._encoders import Diagnostics, FixedPoint
from ._grid import Grid, resample, resample_codes
from ._sae import SAE


class MultigridDiagnostics(eqx.Module):
    """How coarse-to-fine inference went, level by level (coarsest first).

    - `shapes`: the grid of every level, the last one the grid of the signal.
    - `steps`, `converged`, `residual`, `gap`: the `Diagnostics` of every level, stacked on
      the last axis (after `jax.vmap`, examples on the first).
    """

    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    steps: Int[Array, " levels"]
    converged: Bool[Array, " levels"]
    residual: Float[Array, " levels"]
    gap: Float[Array, " levels"]

    @property
    def finest(self) -> Diagnostics:
        """The `Diagnostics` on the grid of the signal (of one example)."""
        return Diagnostics(
            self.steps[..., -1],
            self.converged[..., -1],
            self.residual[..., -1],
            self.gap[..., -1],
        )

    @property
    def work(self) -> Float[Array, " "]:
        """The iterations of all levels in units of one iteration on the finest grid (an
        iteration costs about as much as the grid has points)."""
        sizes = jnp.asarray([Grid(s).size for s in self.shapes], jnp.float32)
        return jnp.sum(self.steps * (sizes / sizes[-1]), axis=-1)


def _kept_modes(dictionary: AbstractDictionary) -> tuple[int, ...]:
    """The Fourier modes $K$ per axis that a spectral dictionary (`Spectral`, or `Lifted`
    around one) keeps; a `ValueError` for dictionaries whose atoms do not live in frequency."""
    inner = dictionary.inner if isinstance(dictionary, Lifted) else dictionary
    if not isinstance(inner, Spectral):
        raise ValueError(
            "coarse-to-fine inference needs a dictionary whose atoms live in frequency (Spectral, "
            f"or Lifted around Spectral), got {type(inner).__name__}: its atoms on a coarser grid "
            "are not the same operator."
        )
    return inner.modes


def _check_resolves(modes: tuple[int, ...], grid: Grid, name: str) -> None:
    if grid.ndim != len(modes):
        raise ValueError(
            f"{name} {grid.shape} is {grid.ndim}-D, but the dictionary acts on "
            f"{len(modes)}-D functions (modes {modes})."
        )
    smallest = tuple(2 * k - 1 for k in modes)
    if any(n < m for n, m in zip(grid.shape, smallest)):
        raise ValueError(
            f"{name} {grid.shape} is too coarse for the dictionary's kept modes {modes}: it "
            f"needs at least 2K - 1 = {smallest} points per axis."
        )


def coarse_grids(dictionary: AbstractDictionary, grid: Grid) -> tuple[Grid, ...]:
    """The grids of coarse-to-fine inference for signals on `grid`, coarsest first and
    `grid` last: `grid` halved along every axis as long as the halves are whole and still
    resolve the dictionary's kept modes $K$ ($n \\ge 2K - 1$ points per axis)."""
    modes = _kept_modes(dictionary)
    _check_resolves(modes, grid, "grid")
    levels = [grid]
    while True:
        shape = levels[-1].shape
        half = tuple(n // 2 for n in shape)
        if any(n % 2 for n in shape) or any(h < 2 * k - 1 for h, k in zip(half, modes)):
            break
        levels.append(Grid(half))
    return tuple(reversed(levels))


def multigrid_infer(
    sae: SAE,
    x: Float[Array, " c *spatial"],
    grid: Grid,
    *,
    tol: float = 1e-5,
    max_steps: int = 20_000,
    levels: Sequence[Grid] | None = None,
) -> tuple[Float[Array, " c *spatial"], Float[Array, " p *spatial"], MultigridDiagnostics]:
    """Sparse inference to a tolerance, coarse to fine: solve the inner problem on the
    coarsest grid that resolves the dictionary's kept modes, move the codes to the next finer
    grid as measures (`resample_codes`: mass conserved, spikes stay spikes) and continue there
    from them, up to `grid`.

    The dictionary sees only its kept modes of the signal, so every level solves the same
    continuous problem, on a coarser set of candidate positions. Started cold, the iterations
    to a tolerance grow with the grid (the code mass of a spike, $a N$ at one point, builds up
    a bounded amount per step); warm-started, the finer levels only refine. The encoder is
    `FixedPoint.from_encoder(sae.encoder, tol=tol, max_steps=max_steps)`: the problem `sae`
    was trained on, to the tolerance.

    **Arguments:**

    - `sae`: an SAE with a spectral dictionary and an `Unrolled` or `FixedPoint` encoder.
    - `x`: one signal of shape `(channels, *grid.shape)`; batches through `jax.vmap`.
    - `grid`: its grid.
    - `tol`: $> 0$, the tolerance of every level.
    - `max_steps`: the iteration budget of every level.
    - `levels`: the coarser grids to go through, coarsest first (each resolving the kept
      modes, none finer than `grid`); by default `coarse_grids(sae.dictionary, grid)`.

    **Returns:** `(reconstruction, codes, diagnostics)` on `grid`, with the
    `MultigridDiagnostics` of every level; non-convergence of any level shows in
    `diagnostics.converged`.
    """
    modes = _kept_modes(sae.dictionary)
    _check_resolves(modes, grid, "grid")
    grid.check(x, "x", sae.dictionary.channels)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}.")
    if levels is None:
        chain = coarse_grids(sae.dictionary, grid)
    else:
        for level in levels:
            _check_resolves(modes, level, "level")
            if any(n > m for n, m in zip(level.shape, grid.shape)):
                raise ValueError(f"level {level.shape} is finer than the grid {grid.shape}.")
        chain = tuple(levels) + (grid,)
    model = sae.with_encoder(FixedPoint.from_encoder(sae.encoder, tol=tol, max_steps=max_steps))
    codes, previous, diagnostics = None, None, []
    for level in chain:
        signal = x if level.shape == grid.shape else resample(x, grid, level)
        init = None if codes is None else resample_codes(codes, previous, level)
        reconstruction, codes, info = model.infer(signal, level, init)
        previous = level
        diagnostics.append(info)
    stacked = MultigridDiagnostics(
        tuple(level.shape for level in chain),
        jnp.stack([d.steps for d in diagnostics], axis=-1),
        jnp.stack([d.converged for d in diagnostics], axis=-1),
        jnp.stack([d.residual for d in diagnostics], axis=-1),
        jnp.stack([d.gap for d in diagnostics], axis=-1),
    )
    return reconstruction, codes, stacked
