"""The Fourier neural operator: resolution, hidden fields, splicing."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import jaxtyping
import numpy as np
import optax
import pytest
from helpers import relative_error

import equisae as eqs

# (shape of the coarse grid, modes, bandwidth of the inputs): bandwidth < modes <= n/2
CASES = [((16,), 6, 4), ((12, 16), (4, 4), 3)]


def _identity(x):
    return x


@functools.cache
def _fno(ndim: int, modes, coordinates=False) -> eqs.operators.FNO:
    """A small FNO (2 -> 3 channels, width 8, depth 3), built once under jit (eager
    initialisation compiles every small operation separately)."""

    def build(key):
        return eqs.operators.FNO(
            2,
            3,
            8,
            modes,
            3,
            num_spatial_dims=ndim,
            coordinates=coordinates,
            key=key,
        )

    return eqx.filter_jit(build)(jr.key(0))


@eqx.filter_jit
def _apply(fno, x):
    return fno(x)


def _inputs(ndim: int, bandwidth: int, grid: eqs.Grid, seed: int = 1) -> jnp.ndarray:
    """Two channels of a random real function with every frequency |f_a| <= bandwidth."""
    rng = np.random.default_rng(seed)
    size = (2,) + (2 * bandwidth + 1,) * ndim
    coefficients = rng.normal(size=size) + 1j * rng.normal(size=size)
    waves = [
        np.exp(2j * np.pi * np.outer(np.arange(-bandwidth, bandwidth + 1), np.arange(n) / n))
        for n in grid.shape
    ]
    if ndim == 1:
        x = coefficients @ waves[0]
    else:
        x = np.einsum("cfg,fs,gt->cst", coefficients, *waves)
    x = x.real / np.sqrt(np.mean(x.real**2))  # unit RMS: GELU is then clearly nonlinear
    return jnp.asarray(x, jnp.float32)


def _subsample(y, factor: int, ndim: int):
    return y[(slice(None),) + (slice(None, None, factor),) * ndim]


@pytest.mark.parametrize("shape,modes,bandwidth", CASES)
def test_the_fno_is_discretisation_invariant(shape, modes, bandwidth):
    """On band-limited inputs sampled on n, 2n and 4n points per axis:

    - with a linear activation every part of the FNO is pointwise or a band-limited spectral
      convolution, so the outputs on the finer grids restrict exactly (to float32 round-off)
      to those on the coarse grid;
    - with GELU the activation creates harmonics above the Nyquist frequency, which alias on a
      coarse grid: the outputs converge under refinement (the 2n output is at least 4x closer
      to the 4n output than the n output is) and are within 1% on the coarse grid already.
    """
    ndim = len(shape)
    fno = _fno(ndim, modes)
    linear = eqx.tree_at(
        lambda m: [m.activation] + [b.activation for b in m.blocks], fno, [_identity] * 4
    )
    grids = [eqs.Grid(tuple(factor * n for n in shape)) for factor in (1, 2, 4)]
    inputs = [_inputs(ndim, bandwidth, grid) for grid in grids]
    exact = [_apply(linear, x) for x in inputs]
    for factor, y in zip((2, 4), exact[1:]):
        assert relative_error(_subsample(y, factor, ndim), exact[0]) <= 1e-5
    outputs = [_apply(fno, x) for x in inputs]
    errors = [
        relative_error(_subsample(outputs[2], 4 // f, ndim), y) for f, y in zip((1, 2), outputs)
    ]
    assert errors[0] <= 1e-2 and errors[1] <= errors[0] / 4, errors


@eqx.filter_jit
def _capture(fno, x):
    fields = fno.hidden(x)
    restarted = [fno.from_block(i, v) for i, v in enumerate(fields)]
    return fno(x), fields, restarted, fno.block(1, fno.lift(x))


@pytest.mark.parametrize("ndim,modes", [(1, 6), (2, (4, 4))])
def test_capturing_hidden_fields_does_not_change_the_output(ndim, modes):
    """hidden() returns L + 1 fields; running the rest of the network from any of them gives
    the plain output."""
    fno = _fno(ndim, modes, coordinates=ndim == 2)
    x = _inputs(ndim, 3, eqs.Grid((16,) * ndim))
    y, fields, restarted, first = _capture(fno, x)
    assert len(fields) == fno.depth + 1
    assert all(v.shape == (fno.width,) + x.shape[1:] for v in fields)
    for output in restarted:
        np.testing.assert_allclose(output, y, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(fields[1], first, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(_apply(fno, x), y, rtol=1e-6, atol=1e-6)


def test_the_fno_refuses_bad_input():
    fno = _fno(1, 6)
    with pytest.raises(ValueError, match="in_channels=2"):
        fno(jnp.zeros((3, 16)))
    with pytest.raises(ValueError, match="in_channels=2"):
        fno(jnp.zeros((4, 2, 16)))  # a batch: goes through vmap
    with pytest.raises(ValueError, match="block index"):
        fno.from_block(4, jnp.zeros((8, 16)))
    with pytest.raises(ValueError, match="width=8"):
        fno.from_block(1, jnp.zeros((7, 16)))
    with pytest.raises(ValueError, match="depth"):
        eqs.operators.FNO(1, 1, 8, 4, 0, key=jr.key(0))
    with pytest.raises(ValueError, match="1-D and 2-D"):
        eqs.operators.FNO(1, 1, 8, (4, 4, 4), 2, key=jr.key(0))


def test_the_splice_metric_is_zero_for_a_perfect_reconstruction():
    fno = _fno(1, 6)
    grid = eqs.Grid(16)
    inputs = jax.vmap(lambda k: eqs.data.gaussian_random_field(k, grid))(jr.split(jr.key(3), 8))
    inputs = jnp.concatenate([inputs, inputs**2], axis=1)
    for block in range(fno.depth + 1):
        assert float(eqs.operators.splice_error(fno, block, inputs, _identity)) == 0.0
    fields = jax.vmap(fno.hidden)(inputs)[1]
    mean = jnp.mean(fields, axis=0)
    ablated = float(eqs.operators.splice_error(fno, 1, inputs, lambda v: mean))
    assert ablated > 0.01
    # against targets the identity splice is the network's own error
    targets = jax.vmap(fno)(inputs) + 0.1
    np.testing.assert_allclose(
        eqs.operators.splice_error(fno, 2, inputs, _identity, targets=targets),
        eqs.operators.relative_l2_error(jax.vmap(fno)(inputs), targets),
        rtol=1e-6,
    )
    with pytest.raises(ValueError, match="block"):
        eqs.operators.splice_error(fno, 5, inputs, _identity)
    with pytest.raises((ValueError, jaxtyping.TypeCheckError)):
        eqs.operators.relative_l2_error(targets, targets[:, :1])


def test_splicing_an_sae_fno_end_to_end():
    """A small FNO trained for a few steps on Burgers data; an SAE-FNO trained on the fields of
    one block; the SAE splice error lies between 0 and the mean-ablation error, and the FNO's
    output with the SAE spliced in is far closer to the plain output than with the mean."""
    data = eqs.data.burgers(jr.key(0), 32, 32, fine=64, viscosity=0.05, time=0.5)
    fno = eqx.filter_jit(lambda key: eqs.operators.FNO(1, 1, 8, 8, 2, key=key))(jr.key(1))
    optimizer = optax.adam(3e-3)
    state = optimizer.init(eqx.filter(fno, eqx.is_array))

    @eqx.filter_jit
    def step(fno, state):
        def loss(m):
            return eqs.operators.relative_l2_error(jax.vmap(m)(data.inputs), data.outputs)

        value, grads = eqx.filter_value_and_grad(loss)(fno)
        updates, state = optimizer.update(grads, state)
        return eqx.apply_updates(fno, updates), state, value

    first = None
    for _ in range(30):
        fno, state, value = step(fno, state)
        first = float(value) if first is None else first
    assert float(value) < first
    grid = eqs.Grid(32)
    fields = jax.vmap(fno.hidden)(data.inputs)[1]
    mean = jnp.mean(fields, axis=0)
    scale = jnp.sqrt(jnp.mean((fields - mean) ** 2))
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.01), 10),
        eqx.filter_jit(lambda key: eqs.Spectral(grid, fno.width, 16, 8, key=key))(jr.key(2)),
    )
    sae, _ = eqs.fit(
        sae,
        (fields - mean) / scale,
        optimizer=optax.adam(1e-2),
        steps=60,
        batch_size=16,
        key=jr.key(3),
        progress=False,
    )

    def reconstruct(v):
        return mean + scale * sae((v - mean) / scale, grid)[0]

    spliced = float(eqs.operators.splice_error(fno, 1, data.inputs, reconstruct))
    ablated = float(eqs.operators.splice_error(fno, 1, data.inputs, lambda v: mean))
    assert np.isfinite(spliced) and 0 < spliced < 0.5 * ablated
