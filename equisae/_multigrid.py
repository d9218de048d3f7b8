from collections.abc import Sequence

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Bool, Float, Int

from ._debiased import Debiased
from ._dictionaries import AbstractDictionary, Lifted, Spectral
from ._encoders import Diagnostics, FixedPoint, _is_lasso
from ._grid import Grid, resample, resample_codes
from ._sae import SAE
from ._working_set import WorkingSet


class MultigridDiagnostics(eqx.Module):
    """How coarse-to-fine inference went, level by level (coarsest first).

    - `shapes`: the grid of every level, the last one the grid of the signal.
    - `steps`, `converged`, `residual`, `gap`: the `Diagnostics` of every level, stacked on
      the last axis (after `jax.vmap`, examples on the first).
    - `refined`: the applications of $D^*D$ that the `WorkingSet` refinement of the warm
      start took on every level (0 on the coarsest, and without refinement).
    """

    shapes: tuple[tuple[int, ...], ...] = eqx.field(static=True)
    steps: Int[Array, " levels"]
    converged: Bool[Array, " levels"]
    residual: Float[Array, " levels"]
    gap: Float[Array, " levels"]
    refined: Int[Array, " levels"]

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
        """The iterations and refinement applications of $D^*D$ of all levels, in units of
        one iteration on the finest grid (an iteration costs about as much as the grid has
        points)."""
        sizes = jnp.asarray([Grid(s).size for s in self.shapes], jnp.float32)
        return jnp.sum((self.steps + self.refined) * (sizes / sizes[-1]), axis=-1)


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
    refine: WorkingSet | None = WorkingSet(),
) -> tuple[Float[Array, " c *spatial"], Float[Array, " p *spatial"], MultigridDiagnostics]:
    """Sparse inference to a tolerance, coarse to fine: solve the inner problem on the
    coarsest grid that resolves the dictionary's kept modes, move the codes to the next finer
    grid as measures (`resample_codes`: mass conserved, spikes stay spikes) and continue there
    from them, up to `grid`. For the lasso, `refine` (a `WorkingSet`) first solves each
    finer level's problem on a small set of positions around the moved codes: without it the
    finest level needs iterations that grow with the grid (measured in 1-D from a coarsest
    level of 32 points: 246 at n = 64 to over 20 000 at 1024), with it 1 (after the
    refinement's 194 applications of $D^*D$).

    The dictionary sees only its kept modes of the signal, so every level solves the same
    continuous problem, on a coarser set of candidate positions. Started cold, the iterations
    to a tolerance grow with the grid (the code mass of a spike, $a N$ at one point, builds up
    a bounded amount per step); warm-started, the finer levels only refine. The encoder is
    `FixedPoint.from_encoder(sae.encoder, tol=tol, max_steps=max_steps)`: the problem `sae`
    was trained on, to the tolerance. A `Debiased` encoder's inner problem is solved so, coarse
    to fine, and its refit runs once, on `grid`, from the finest level's codes.

    **Arguments:**

    - `sae`: an SAE with a spectral dictionary and an `Unrolled` or `FixedPoint` encoder, or
      a `Debiased` one of those.
    - `x`: one signal of shape `(channels, *grid.shape)`; batches through `jax.vmap`.
    - `grid`: its grid.
    - `tol`: $> 0$, the tolerance of every level.
    - `max_steps`: the iteration budget of every level.
    - `levels`: the coarser grids to go through, coarsest first (each resolving the kept
      modes, none finer than `grid`); by default `coarse_grids(sae.dictionary, grid)`.
    - `refine`: the refinement of the warm start on every finer level (lasso only: other
      problems are warm-started as they are), or `None` for none.

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
    debiased = sae.encoder if isinstance(sae.encoder, Debiased) else None
    lasso = sae.encoder if debiased is None else debiased.encoder
    model = sae.with_encoder(FixedPoint.from_encoder(lasso, tol=tol, max_steps=max_steps))
    encoder = model.encoder
    refine = refine if _is_lasso(encoder.sparsity, encoder.ridge) else None
    codes, previous, diagnostics, refined = None, None, [], []
    for level in chain:
        signal = x if level.shape == grid.shape else resample(x, grid, level)
        init, applications = None, jnp.zeros((), jnp.int32)
        if codes is not None:
            init = resample_codes(codes, previous, level)
            if refine is not None:
                lam = encoder.sparsity._lambda(init)
                lifted, inner = model.dictionary.lift(signal / model.scale, level)
                init, applications = refine(init, lifted, inner, level, lam)
        here = model
        if debiased is not None and level is chain[-1]:  # the refit, on the finest grid only
            here = model.with_encoder(eqx.tree_at(lambda d: d.encoder, debiased, encoder))
        reconstruction, codes, info = here.infer(signal, level, init)
        previous = level
        diagnostics.append(info)
        refined.append(applications)
    stacked = MultigridDiagnostics(
        tuple(level.shape for level in chain),
        jnp.stack([d.steps for d in diagnostics], axis=-1),
        jnp.stack([d.converged for d in diagnostics], axis=-1),
        jnp.stack([d.residual for d in diagnostics], axis=-1),
        jnp.stack([d.gap for d in diagnostics], axis=-1),
        jnp.stack(refined, axis=-1),
    )
    return reconstruction, codes, stacked
