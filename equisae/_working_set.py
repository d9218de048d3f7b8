import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._dictionaries import AbstractDictionary
from ._grid import Grid

_HIGHEST = jax.lax.Precision.HIGHEST


class WorkingSet(eqx.Module):
    """Refines warm-started lasso codes on a grid by solving the lasso restricted to a small
    working set of positions: the support of the codes, widened by one point along every
    axis, and every position where the optimality condition $|D^*(x - Dz)| \\le \\lambda$
    fails. On the set $W$ the problem is a small dense lasso,
    $\\min_{z_W} \\frac12 z_W^\\top G z_W - b^\\top z_W + \\lambda\\|z_W\\|_1$ with
    $G = (D^*D)_{WW}$ and $b = (D^*x)_W$, solved with FISTA on $G$ and then exactly on its
    support and signs; `rounds` times, each round adding the positions that still violate
    the condition.

    This is what coarse-to-fine inference needs: the coarse optimum's spikes sit on coarse
    points, the fine optimum has its mass on neighbouring fine points whose atoms are nearly
    collinear, and a first-order method on the whole grid moves mass between them in about
    as many iterations as the grid has points per axis. On $W$ the Gram matrix is small, so
    that ill-conditioning costs nothing. The result is a start; the solver that follows
    certifies it (the duality gap) or continues from it.

    Each round costs `size` + 1 applications of $D^*D$ on the grid (the columns of $G$ and
    the check).
    """

    size: int = eqx.field(static=True, default=64)
    rounds: int = eqx.field(static=True, default=3)
    steps: int = eqx.field(static=True, default=3000)

    def __check_init__(self):
        for name in ("size", "rounds", "steps"):
            value = getattr(self, name)
            if int(value) != value or value < 1:
                raise ValueError(f"WorkingSet {name} must be a whole number >= 1, got {value}.")

    def __call__(
        self,
        codes: Float[Array, " p *spatial"],
        x: Float[Array, " c *spatial"],
        dictionary: AbstractDictionary,
        grid: Grid,
        lam: Float[Array, "..."],
    ) -> tuple[Float[Array, " p *spatial"], Int[Array, " "]]:
        """The refined codes of the lasso with pointwise penalty `lam` (broadcast to the codes'
        shape) for the signal `x` on `grid`, starting from `codes`, and the number of $D^*D$
        applications it took."""
        lam = jnp.broadcast_to(lam, codes.shape).astype(codes.dtype)
        target = dictionary.adjoint(x, grid)
        violated = jnp.zeros(codes.shape, bool)
        for _ in range(self.rounds):
            codes = self._round(codes, target, dictionary, grid, lam, violated)
            gradient = target - dictionary.normal(codes, grid)
            violated = jnp.abs(gradient) > lam * (1 + 1e-3)
        return codes, jnp.asarray(self.rounds * (self.size + 1), jnp.int32)

    def _round(self, codes, target, dictionary, grid, lam, violated):
        support = codes != 0
        widened = support
        for axis in range(1, codes.ndim):
            widened = widened | jnp.roll(support, 1, axis) | jnp.roll(support, -1, axis)
            support = widened
        flat = (widened | violated).reshape(-1)
        index = jnp.nonzero(flat, size=self.size, fill_value=-1)[0]
        valid = index >= 0
        index = jnp.where(valid, index, 0)

        def column(i, keep):
            unit = jnp.zeros(flat.shape, codes.dtype).at[i].set(jnp.where(keep, 1.0, 0.0))
            return dictionary.normal(unit.reshape(codes.shape), grid).reshape(-1)[index]

        gram = jax.vmap(column)(index, valid).T
        both = valid[:, None] & valid[None, :]
        gram = jnp.where(both, 0.5 * (gram + gram.T), 0.0)
        b = jnp.where(valid, target.reshape(-1)[index], 0.0)
        weights = jnp.where(valid, lam.reshape(-1)[index], 0.0)
        start = jnp.where(valid, codes.reshape(-1)[index], 0.0)
        small = _dense_lasso(gram, b, weights, start, valid, self.steps)
        out = jnp.zeros(flat.shape, codes.dtype).at[index].add(jnp.where(valid, small, 0.0))
        # positions left out of a full working set keep their codes
        kept = jnp.where(flat.at[index].set(False), codes.reshape(-1), 0.0)
        return (out + kept).reshape(codes.shape)


def _objective(gram, b, weights, z):
    return 0.5 * z @ jnp.dot(gram, z, precision=_HIGHEST) - b @ z + jnp.sum(weights * jnp.abs(z))


def _dense_lasso(gram, b, weights, start, valid, steps):
    """FISTA with restarts on a small dense lasso, then the exact solution on the support
    and signs it found, kept where its signs agree and its objective is no worse."""
    lipschitz = 1.01 * jnp.maximum(jnp.linalg.eigvalsh(gram)[-1], jnp.finfo(gram.dtype).tiny)
    step = 1.0 / lipschitz

    def fista(state, _):
        z, y, momentum = state
        u = y - step * (jnp.dot(gram, y, precision=_HIGHEST) - b)
        new = jnp.where(valid, jnp.sign(u) * jnp.maximum(jnp.abs(u) - step * weights, 0.0), 0.0)
        following = (1 + jnp.sqrt(1 + 4 * momentum**2)) / 2
        extrapolated = new + ((momentum - 1) / following) * (new - z)
        uphill = jnp.sum((y - new) * (new - z)) > 0
        extrapolated = jnp.where(uphill, new, extrapolated)
        following = jnp.where(uphill, 1.0, following)
        return (new, extrapolated, following), None

    (z, _, _), _ = jax.lax.scan(fista, (start, start, jnp.array(1.0, b.dtype)), None, steps)
    support = (z != 0) & valid
    signs = jnp.sign(z)
    system = jnp.where(support[:, None] & support[None, :], gram, 0.0) + jnp.diag(
        jnp.where(support, 0.0, 1.0)
    )
    exact = jnp.linalg.solve(system, jnp.where(support, b - weights * signs, 0.0))
    consistent = jnp.all(jnp.where(support, jnp.sign(exact) == signs, True))
    better = _objective(gram, b, weights, exact) <= _objective(gram, b, weights, z)
    keep = consistent & better & jnp.all(jnp.isfinite(exact))
    return jnp.where(keep, exact, z)
