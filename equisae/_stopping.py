import math

import equinox as eqx
import numpy as np
from jaxtyping import Float


class DictionarySettled(eqx.Module):
    """Stop training when the dictionary stops moving: every `every` steps `fit` compares the
    atoms on the data's grid with those `every` steps before, and stops once the relative
    change $\\|A_t - A_{t - \\text{every}}\\|_F / \\|A_{t - \\text{every}}\\|_F$ is at most `rtol`
    (for a sweep: for every member).

    Atoms that no longer move are the end of dictionary learning whatever the loss still does:
    the codes' fit can keep improving by amounts that change nothing a user reads off the atoms.
    The first check after a start (or a resume) only records the atoms.

    **Arguments:**

    - `every`: the steps between two checks (chunks end there, so the stop is exact).
    - `rtol`: $> 0$, the relative change below which the dictionary counts as settled.
    """

    every: int = eqx.field(static=True)
    rtol: float = eqx.field(static=True)

    def __init__(self, every: int = 100, rtol: float = 1e-3):
        if int(every) != every or every < 1:
            raise ValueError(
                f"DictionarySettled every must be a positive whole number, got {every}."
            )
        if not (math.isfinite(rtol) and rtol > 0):
            raise ValueError(f"DictionarySettled rtol must be > 0 and finite, got {rtol}.")
        self.every = int(every)
        self.rtol = float(rtol)

    def change(
        self,
        before: Float[np.ndarray, "..."],
        after: Float[np.ndarray, "..."],
        members: int = 0,
    ) -> Float[np.ndarray, "*members"]:
        """The relative change of the atoms from `before` to `after`, one value per member
        (`members`: the number of leading sweep axes, 0 or 1)."""
        before = np.asarray(before, np.float64)
        after = np.asarray(after, np.float64)
        axes = tuple(range(members, before.ndim))
        size = np.sqrt(np.sum(before**2, axis=axes))
        return np.asarray(
            np.sqrt(np.sum((after - before) ** 2, axis=axes)) / np.maximum(size, 1e-300)
        )

    def settled(self, before: np.ndarray, after: np.ndarray, members: int = 0) -> bool:
        """Whether every member's atoms moved by at most `rtol`."""
        return bool(np.all(self.change(before, after, members) <= self.rtol))
