import numpy as np

from .._grid import Grid
from ..metrics import cosine_similarity
from ._generative import FourierConcepts


def incoherent(
    pool: FourierConcepts,
    count: int,
    grid: Grid,
    *,
    max_coherence: float,
    upsample: int = 8,
) -> FourierConcepts:
    """`count` concepts of `pool` whose pairwise coherence on `grid` is at most
    `max_coherence`: $\\max_\\sigma |\\cos(\\kappa_i, \\kappa_j(\\cdot + \\sigma))| \\le \\mu$
    over circular shifts $\\sigma$ (on a grid `upsample` times finer) and sign.

    Greedy, in the pool's order: a concept is kept if it is at most `max_coherence` from every
    one kept before it. A concept at coherence 0.93 with another is nearly that concept
    shifted, and recovering both "at $|\\cos| > 0.95$" asks the data to tell them apart where
    it barely can; near-duplicates (coherence 1.00: the short one-sided exponentials of
    `asymmetric` on 128 points) cannot be told apart at all. Draw a pool larger than `count`
    (e.g. `eqs.data.bumps(key, 8 * count)`) and pick from it.

    Raises a `ValueError` naming how many concepts qualify when the pool has fewer than
    `count` of them.
    """
    if isinstance(count, bool) or int(count) != count or count < 1:
        raise ValueError(f"count must be a positive whole number, got {count}.")
    if not 0.0 < max_coherence <= 1.0:
        raise ValueError(f"max_coherence must lie in (0, 1], got {max_coherence}.")
    atoms = np.asarray(pool(grid))
    cos, _ = cosine_similarity(atoms, atoms, shift_invariant=True, upsample=upsample)
    cos = np.abs(cos)
    kept: list[int] = []
    for i in range(len(atoms)):
        if all(cos[i, j] <= max_coherence for j in kept):
            kept.append(i)
        if len(kept) == count:
            return FourierConcepts(pool.coefficients[np.asarray(kept)])
    raise ValueError(
        f"only {len(kept)} of the pool's {len(atoms)} concepts have pairwise coherence at most "
        f"{max_coherence} on a grid {grid.shape}; {count} were asked for. Draw a larger pool "
        "or allow a higher coherence."
    )
