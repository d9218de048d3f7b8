from collections.abc import Sequence

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray, PyTree

from ._dead import concept_mask
from ._dictionaries import AbstractDictionary, Convolutional
from ._grid import Grid
from ._layers import _per_axis
from ._scale import energies


def init_from_data(
    dictionary: AbstractDictionary,
    data: Float[Array, " examples c *spatial"] | Float[np.ndarray, " examples c *spatial"],
    grid: Grid | None = None,
    *,
    key: PRNGKeyArray,
    width: int | Sequence[int] | None = None,
) -> AbstractDictionary:
    """A copy of `dictionary` whose atoms start from the data (a data-driven start, as
    scikit-learn's dictionary learning and alphacsc's `"chunk"` start do), for every family.

    Each concept draws its own example, among the examples with non-zero energy, spread out as
    k-means++ spreads its centres: from a pool of up to 16 examples per concept (at most 4096
    unless the dictionary has more concepts), the first uniformly and each next with
    probability proportional to $(1 - c)^2$, $c$ its largest $|\\cos|$ with those drawn (over
    circular shifts for function codes), so that two atoms rarely start on the same concept
    (with one event per example, every example is a shifted concept). For dictionaries with
    function codes (`Convolutional`, `Spectral`, and lifted ones) the example is then shifted
    circularly so that a point drawn with probability proportional to its energy
    $\\sum_c x_c(s)^2$ sits at the origin, where the atoms are centred: the window lands on an
    event of the example, not on an empty stretch of it. With
    `width`, everything outside a window of `width` grid points per axis around the origin is
    set to zero.

    The target functions are then projected onto the dictionary's family by least squares over
    each concept's parameters (conjugate gradients on the normal equations, the transpose by
    `jax.vjp`; a concept's parameters are those its `rescale` multiplies), so the same code
    serves every dictionary, a subclass of your own included: a `Dense` atom is the example
    itself, a `Convolutional` filter the window of its filter width, a `Spectral` kernel the
    window's lowest `modes` Fourier coefficients, and a `Lifted` dictionary gets effective
    atoms $Q D_l e_k$ equal to the projected windows (its lifting and projection are kept; a
    `Tied` one gets its concepts $D$ from the windows). Finally the atoms are put at
    unit $L^2(\\Omega)$ norm.

    The random start of each dictionary's constructor stays the default (the paper's
    experiments use it): `init_from_data` is a separate call, e.g.
    `eqs.init_from_data(eqs.Spectral(grid, 1, 8, 17, key=k1), data, key=k2)`.

    **Arguments:**

    - `dictionary`: the dictionary to start; its family, sizes, modes and widths are kept.
    - `data`: a floating-point array `(examples, channels, *spatial)` with at least as many
      examples of non-zero energy as the dictionary has concepts.
    - `grid`: the grid of the data; by default the uniform grid of shape `data.shape[2:]`.
    - `key`: a `jax.random` key for the choice of examples and of the points in them.
    - `width`: for function codes only, the window in grid points per axis (an int for every
      axis); `None` keeps the whole shifted example.

    **Returns:** a dictionary of the same family with unit-norm atoms taken from the data.

    **Raises:** `ValueError` for data whose shape does not fit `grid` or whose channels differ
    from the dictionary's, for fewer examples of non-zero energy than concepts, for a filter or
    a window wider than the grid, for `width` with vector codes, and for data that have no
    component in the dictionary's family (e.g. no energy in its kept modes).
    """
    grid = _check_data(dictionary, data, grid)
    code_shape = dictionary.code_shape(grid)
    function_codes = len(code_shape) > 1
    if width is not None and not function_codes:
        raise ValueError(
            f"width={width} is for dictionaries with function codes; {type(dictionary).__name__} "
            "has vector codes, and its atoms are whole examples."
        )
    window = None if width is None else _per_axis("width", width, grid.ndim)
    if window is not None and any(w < 1 or w > n for w, n in zip(window, grid.shape)):
        raise ValueError(f"width={window} must lie between 1 and the grid shape {grid.shape}.")
    _check_filters(dictionary, grid)

    p = dictionary.concepts
    energy = energies(data, grid)
    positive = energy > 0
    if positive.sum() < p:
        raise ValueError(
            f"init_from_data needs at least as many examples of non-zero energy as concepts "
            f"({p}); the data hold {positive.sum()} (of {len(energy)} examples)."
        )
    pool_key, example_key, point_key = jr.split(key, 3)
    size = min(int(positive.sum()), max(p, min(_POOL * p, _MAX_POOL)))
    pool = jr.choice(
        pool_key, len(energy), (size,), replace=False, p=jnp.asarray(positive / positive.sum())
    )
    candidates = jnp.asarray(np.asarray(data[np.sort(np.asarray(pool))]))  # one read, in order
    if size == p:  # no choice left: every candidate is an atom
        order = jr.permutation(example_key, size)
    else:
        order = _spread_out(candidates, p, function_codes, example_key)
    targets = candidates[order]  # in the order drawn
    if function_codes:
        targets = jax.vmap(_centre, in_axes=(0, 0, None))(targets, jr.split(point_key, p), window)
    return _project(dictionary, targets, grid)


# candidate examples per concept for the spread-out choice, and at most this many in all (the
# choice costs O(concepts x pool) correlations; a large vector dictionary keeps its memory)
_POOL = 16
_MAX_POOL = 4096


def _spread_out(candidates: Array, count: int, shifts: bool, key: PRNGKeyArray) -> Array:
    """Indices of `count` distinct candidates, chosen as k-means++ seeds its centres: the
    first uniformly, each next with probability proportional to $(1 - c_i)^2$, where $c_i$ is
    the largest coherence of candidate $i$ with those already chosen ($|\\cos|$, over
    circular shifts for function codes). Examples that are copies of a chosen one (the same
    event elsewhere) are then unlikely picks."""
    flat = candidates.reshape(candidates.shape[0], candidates.shape[1], -1)
    flat_unit = flat / jnp.sqrt(jnp.sum(flat**2, axis=(1, 2), keepdims=True))
    spatial = candidates.shape[2:]
    unit = flat_unit.reshape(candidates.shape)
    spectra = jnp.fft.rfftn(unit, axes=tuple(range(2, unit.ndim))) if shifts else None

    def coherence(i):  # (candidates,): |cos| with candidate i, at the best shift for functions
        if not shifts:
            return jnp.abs(jnp.sum(flat_unit * flat_unit[i], axis=(1, 2)))
        cross = jnp.sum(spectra * jnp.conj(spectra[i]), axis=1)  # (candidates, *frequencies)
        correlation = jnp.fft.irfftn(cross, s=spatial, axes=tuple(range(1, 1 + len(spatial))))
        return jnp.max(jnp.abs(correlation.reshape(len(flat_unit), -1)), axis=1)

    def pick(i, state):
        chosen, closest, key = state
        key, sub = jr.split(key)
        free = jnp.where(jnp.isin(jnp.arange(len(flat_unit)), chosen), 0.0, 1.0)
        weight = free * (1.0 - closest) ** 2
        weight = jnp.where(jnp.sum(weight) > 0, weight, free)  # every candidate a copy: uniform
        nxt = jr.choice(sub, len(flat_unit), p=weight / jnp.sum(weight))
        return chosen.at[i].set(nxt), jnp.maximum(closest, coherence(nxt)), key

    first_key, key = jr.split(key)
    first = jr.randint(first_key, (), 0, len(flat_unit))
    chosen = jnp.full((count,), -1, jnp.int32).at[0].set(first)
    chosen, _, _ = jax.lax.fori_loop(1, count, pick, (chosen, coherence(first), key))
    return chosen


def _check_data(dictionary: AbstractDictionary, data, grid: Grid | None) -> Grid:
    if not np.issubdtype(data.dtype, np.floating):
        raise TypeError(f"data must hold floating-point numbers, got dtype {data.dtype}.")
    if data.ndim < 2:
        raise ValueError(f"data must have shape (examples, channels, *spatial), got {data.shape}.")
    grid = Grid(data.shape[2:]) if grid is None else grid
    grid.check(data[0], "an example of data", dictionary.channels)
    return grid


def _check_filters(dictionary: AbstractDictionary, grid: Grid) -> None:
    inner = getattr(dictionary, "inner", None)  # Lifted, Tied: the concepts of the inner one
    if isinstance(inner, AbstractDictionary):
        _check_filters(inner, grid)
    elif isinstance(dictionary, Convolutional) and any(
        w > n for w, n in zip(dictionary.width, grid.shape)
    ):
        raise ValueError(
            f"filters of width {dictionary.width} are wider than the data's grid {grid.shape}: "
            "a window of the data cannot fill them."
        )


def _centre(x: Array, key: PRNGKeyArray, window: tuple[int, ...] | None) -> Array:
    """`x` shifted circularly so that a point drawn with probability proportional to its
    energy sits at the origin, then cut to `window` points per axis around the origin."""
    power = jnp.sum(x * x, axis=0)
    flat = jr.choice(key, power.size, p=jnp.ravel(power) / jnp.sum(power))
    point = jnp.unravel_index(flat, power.shape)
    x = jnp.roll(x, [-i for i in point], axis=tuple(range(1, x.ndim)))
    if window is None:
        return x
    inside = jnp.ones(power.shape, bool)
    for a, (w, n) in enumerate(zip(window, power.shape)):
        axis = (np.arange(n) + w // 2) % n < w  # the offsets -w//2 .. w - w//2 - 1
        inside = inside & jnp.asarray(axis).reshape((-1,) + (1,) * (power.ndim - 1 - a))
    return jnp.where(inside, x, 0.0)


def _atoms_of(params: PyTree, static: PyTree, grid: Grid) -> Array:
    return eqx.combine(params, static).atoms(grid)


class _ConceptAtoms(eqx.Module):
    """The linear part $A$ of the map from a dictionary's concept parameters to its atoms,
    and its normal operator $A^T A$ (the transpose by `jax.vjp`: some layers scatter with
    repeated indices, which `jax.linear_transpose` does not transpose)."""

    params: PyTree
    static: PyTree = eqx.field(static=True)
    mask: PyTree
    grid: Grid

    def __call__(self, q: PyTree) -> Array:
        inside = jax.tree.map(lambda m, v, p: jnp.where(m, v, p), self.mask, q, self.params)
        return _atoms_of(inside, self.static, self.grid) - _atoms_of(
            self.origin(), self.static, self.grid
        )

    def origin(self) -> PyTree:
        return jax.tree.map(lambda m, p: jnp.where(m, 0.0, p), self.mask, self.params)

    def transpose(self, atoms: Array) -> PyTree:
        _, pullback = jax.vjp(self, self.origin())
        (q,) = pullback(atoms)
        return jax.tree.map(lambda m, v: jnp.where(m, v, 0.0), self.mask, q)

    def normal(self, q: PyTree) -> PyTree:
        """$A^T A q$."""
        return self.transpose(self(q))


def _dot(a: PyTree, b: PyTree) -> Array:
    return sum(jnp.vdot(x, y) for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)))


def _axpy(alpha: Array, x: PyTree, y: PyTree) -> PyTree:
    return jax.tree.map(lambda u, v: alpha * u + v, x, y)


def _conjugate_gradients(normal, b: PyTree, steps: int = 200, rtol: float = 1e-5) -> PyTree:
    """Conjugate gradients on $N x = b$ from $x = 0$, for pytrees ($N$ symmetric positive
    semi-definite and $b$ in its range: the iterates stay in the range, so a singular $N$, as
    a lifted dictionary's projection with fewer outputs than inputs gives, is no trouble),
    stopped when $\\|r\\| \\le$ `rtol` $\\|b\\|$."""
    tolerance = (rtol**2) * _dot(b, b)

    def keep_going(state):
        *_, rr, k = state
        return (rr > tolerance) & (k < steps)

    def step(state):
        x, r, p, rr, k = state
        q = normal(p)
        curvature = _dot(p, q)
        alpha = jnp.where(curvature > 0, rr / jnp.where(curvature > 0, curvature, 1.0), 0.0)
        x = _axpy(alpha, p, x)
        r = _axpy(-alpha, q, r)
        new = _dot(r, r)
        p = _axpy(new / rr, p, r)
        return x, r, p, new, k + 1

    start = (jax.tree.map(jnp.zeros_like, b), b, b, _dot(b, b), 0)
    return jax.lax.while_loop(keep_going, step, start)[0]


@eqx.filter_jit
def _least_squares(
    dictionary: AbstractDictionary, targets: Array, grid: Grid
) -> tuple[AbstractDictionary, Array]:
    """The dictionary whose atoms are the least-squares fits of `targets` within its family,
    and the norms of those atoms."""
    params, static = eqx.partition(dictionary, eqx.is_inexact_array)
    mask = concept_mask(dictionary, jnp.ones(dictionary.concepts, bool))
    linear = _ConceptAtoms(params, static, mask, grid)
    rhs = linear.transpose(targets - _atoms_of(linear.origin(), static, grid))
    solution = _conjugate_gradients(linear.normal, rhs)
    fitted = jax.tree.map(lambda m, v, p: jnp.where(m, v, p), mask, solution, params)
    fitted = eqx.combine(fitted, static)
    return fitted, fitted.atom_norms(grid)


def _project(
    dictionary: AbstractDictionary, targets: Float[Array, " p c *spatial"], grid: Grid
) -> AbstractDictionary:
    """The dictionary whose atoms are the least-squares fits of `targets` within its family,
    at unit norm; a `ValueError` where a fit is zero."""
    fitted, norms = _least_squares(dictionary, targets, grid)
    scale = jnp.sqrt(jax.vmap(grid.inner)(targets, targets))
    weak = np.flatnonzero(np.asarray(norms <= 1e-6 * scale))
    if weak.size:
        raise ValueError(
            f"the windows drawn for concepts {weak.tolist()} have no component in the "
            f"{type(dictionary).__name__} family (e.g. no energy in its kept Fourier modes)."
        )
    return fitted.rescale(1.0 / norms)
