import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int

from ._dictionaries import AbstractDictionary
from ._grid import Grid
from ._solvers import AcceleratedFixedPoint

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

    Each round costs `size` applications of $D^*D$ on the grid (the columns of $G$), and
    every round after the first one more (the check that finds the violations).
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
        for round in range(self.rounds):
            if round > 0:
                gradient = target - dictionary.normal(codes, grid)
                violated = jnp.abs(gradient) > lam * (1 + 1e-3)
            codes = self._round(codes, target, dictionary, grid, lam, violated)
        applications = self.rounds * self.size + self.rounds - 1
        return codes, jnp.asarray(applications, jnp.int32)

    def _round(self, codes, target, dictionary, grid, lam, violated):
        widened = codes != 0
        for axis in range(1, codes.ndim):  # one point along every axis: a box in 2-D
            widened = widened | jnp.roll(widened, 1, axis) | jnp.roll(widened, -1, axis)
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
    """`steps` steps of `AcceleratedFixedPoint` (FISTA with restarts) on a small dense lasso,
    then the exact solution on the support and signs it found, kept where its signs agree and
    its objective is no worse."""
    lipschitz = 1.01 * jnp.maximum(jnp.linalg.eigvalsh(gram)[-1], jnp.finfo(gram.dtype).tiny)
    step = 1.0 / lipschitz

    def proximal_gradient(y, _):
        u = y - step * (jnp.dot(gram, y, precision=_HIGHEST) - b)
        new = jnp.where(valid, jnp.sign(u) * jnp.maximum(jnp.abs(u) - step * weights, 0.0), 0.0)
        return new, None  # no certificate: the fixed number of steps is the budget

    solver = AcceleratedFixedPoint(rtol=0.0, atol=1.0)  # its tolerance is not used here
    unused = dict(args=None, options={}, tags=frozenset())

    def fista(carry, _):
        y, state = carry
        y, state, _ = solver.step(proximal_gradient, y, state=state, **unused)
        return (y, state), None

    state = solver.init(proximal_gradient, start, f_struct=None, aux_struct=None, **unused)
    (_, state), _ = jax.lax.scan(fista, (start, state), None, steps)
    z = state.previous
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
