from collections.abc import Callable
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx
from jaxtyping import Array, Bool, PyTree, Scalar


class _AcceleratedState(eqx.Module):
    previous: PyTree[Array]
    momentum: Scalar
    relative_error: Scalar


class AcceleratedFixedPoint(optx.AbstractFixedPointSolver):
    """Nesterov-accelerated fixed-point iteration with adaptive restart: for the proximal
    gradient map $T$ it is FISTA, $z_{k+1} = T(w_k)$,
    $w_{k+1} = z_{k+1} + \\frac{t_k - 1}{t_{k+1}}(z_{k+1} - z_k)$, with the momentum reset
    whenever it points uphill (O'Donoghue and Candès, 2015).

    It stops when $\\mathrm{rms}(T(w) - w) \\le$ `atol` + `rtol` $\\cdot \\mathrm{rms}(T(w))$ and
    returns $T(w)$, so the implicit function theorem is applied at a point that $T$ moves by less
    than the tolerance. Plain fixed-point iteration needs thousands of steps on the lasso.

    That test compares a step with the size of the iterate, which on fine grids can be met
    far from the solution (a spike of codes is worth $N$ times its mass). A map that returns,
    as its `aux`, a scalar certificate (an upper bound on the relative suboptimality of its
    input, such as the lasso's relative duality gap beyond its rounding error: `FixedPoint`
    passes one) is also required to bring it to at most `rtol`; an `aux` of NaN (no
    certificate) is ignored.
    """

    rtol: float
    atol: float
    norm: Callable[[PyTree], Scalar] = optx.rms_norm

    def init(self, fn, y, args, options, f_struct, aux_struct, tags) -> _AcceleratedState:
        del fn, args, options, f_struct, aux_struct, tags
        return _AcceleratedState(y, jnp.array(1.0), jnp.array(jnp.inf))

    def step(self, fn, y, args, options, state: _AcceleratedState, tags):
        new, aux = fn(y, args)
        change = jax.tree.map(lambda a, b: a - b, new, y)
        scale = self.atol + self.rtol * self.norm(new)
        error = self.norm(change) / scale
        if isinstance(aux, jax.Array) and aux.shape == ():  # a certificate (NaN: none)
            error = jnp.maximum(error, jnp.where(jnp.isnan(aux), 0.0, aux / self.rtol))
        momentum = (1 + jnp.sqrt(1 + 4 * state.momentum**2)) / 2
        beta = (state.momentum - 1) / momentum
        step = jax.tree.map(lambda a, b: a - b, new, state.previous)
        uphill = (
            sum(jnp.sum(-c * s) for c, s in zip(jax.tree.leaves(change), jax.tree.leaves(step))) > 0
        )
        beta = jnp.where(uphill, 0.0, beta)
        momentum = jnp.where(uphill, 1.0, momentum)
        extrapolated = jax.tree.map(lambda a, s: a + beta * s, new, step)
        return extrapolated, _AcceleratedState(new, momentum, error), aux

    def terminate(
        self, fn, y, args, options, state: _AcceleratedState, tags
    ) -> tuple[Bool[Array, " "], Any]:
        return state.relative_error < 1, optx.RESULTS.successful

    def postprocess(self, fn, y, aux, args, options, state: _AcceleratedState, tags, result):
        return state.previous, aux, {}
