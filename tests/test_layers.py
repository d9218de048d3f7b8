import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import relative_error

import equisae as eqs


def _reference_spectral_conv(layer: eqs.SpectralConv, x: np.ndarray) -> np.ndarray:
    """SpectralConv written out frequency by frequency with numpy, for comparison."""
    spatial = x.shape[1:]
    x_hat = np.fft.rfftn(x, axes=tuple(range(1, x.ndim)), norm="forward")
    weight = np.asarray(layer.complex_weight)
    y_hat = np.zeros((layer.out_channels,) + x_hat.shape[1:], complex)
    for index in np.ndindex(*x_hat.shape[1:]):
        w_index = []
        for a, (i, n, k) in enumerate(zip(index, spatial, layer.modes)):
            kept = min(k, n // 2 + 1)
            last = a == len(spatial) - 1
            f = i if last or i <= n // 2 else i - n  # signed frequency
            if abs(f) >= kept and not (not last and kept - 1 == n // 2 and abs(f) == n // 2):
                break
            w_index.append(f if f >= 0 else 2 * k - 1 + f)
        else:
            y_hat[(slice(None),) + index] += (
                weight[(slice(None), slice(None)) + tuple(w_index)].T
                @ x_hat[(slice(None),) + index]
            )
            # the Nyquist row of a full axis is kept once as +n/2 and once as -n/2
            for a, (i, n, k) in enumerate(zip(index, spatial[:-1], layer.modes[:-1])):
                if min(k, n // 2 + 1) - 1 == n // 2 and i == n // 2 and n % 2 == 0:
                    other = list(w_index)
                    other[a] = 2 * k - 1 - n // 2
                    y_hat[(slice(None),) + index] += (
                        weight[(slice(None), slice(None)) + tuple(other)].T
                        @ x_hat[(slice(None),) + index]
                    )
    return np.fft.irfftn(y_hat, s=spatial, axes=tuple(range(1, x.ndim)), norm="forward")


@hypothesis.given(
    seed=st.integers(0, 2**16),
    case=st.sampled_from(
        [((16,), 3), ((15,), 8), ((16,), 9), ((8, 6), 2), ((8, 6), (5, 4)), ((7, 8), 3)]
    ),
)
def test_spectral_conv_keeps_the_lowest_modes_of_every_axis(seed, case):
    """Positive and negative frequencies |f| < K on full axes, 0..K-1 on the last axis."""
    shape, modes = case
    layer = eqs.SpectralConv(2, 3, modes, num_spatial_dims=len(shape), key=jr.key(seed))
    x = jr.normal(jr.key(seed + 1), (2,) + shape)
    np.testing.assert_allclose(layer(x), _reference_spectral_conv(layer, np.asarray(x)), atol=1e-5)


def test_spectral_conv_passes_negative_frequencies_in_2d():
    """The corner-block bug: a wave with a negative first-axis frequency must get through."""
    grid = eqs.Grid((16, 16))
    s1, s2 = grid.points()
    layer = eqs.SpectralConv(1, 1, (4, 4), key=jr.key(0))
    layer = eqx_set_weight(layer, jnp.zeros_like(layer.weight).at[0].set(1.0))  # W = 1
    for f1, f2 in [(3, 2), (-3, 2), (2, 0), (-2, 0)]:
        wave = jnp.cos(2 * jnp.pi * (f1 * s1 + f2 * s2))[None]
        np.testing.assert_allclose(layer(wave), wave, atol=1e-5)
    outside = jnp.cos(2 * jnp.pi * (-5 * s1 + 2 * s2))[None]
    np.testing.assert_allclose(layer(outside), 0.0, atol=1e-5)


def eqx_set_weight(layer, weight):
    import equinox as eqx

    return eqx.tree_at(lambda m: m.weight, layer, weight)


@hypothesis.given(seed=st.integers(0, 2**16), shape=st.sampled_from([(12,), (6, 8)]))
def test_spectral_conv_is_linear(seed, shape):
    k = jr.split(jr.key(seed), 4)
    layer = eqs.SpectralConv(2, 2, 3, num_spatial_dims=len(shape), key=k[0])
    x, y = jr.normal(k[1], (2, 2) + shape)
    a, b = jr.normal(k[2], (2,))
    np.testing.assert_allclose(layer(a * x + b * y), a * layer(x) + b * layer(y), atol=1e-5)


def test_spectral_conv_means_the_same_operator_on_every_grid():
    """A band-limited input sampled on 32 and 64 points gives the same output samples."""
    layer = eqs.SpectralConv(1, 2, 6, key=jr.key(0))
    coarse, fine = eqs.Grid(32), eqs.Grid(64)

    def wave(grid):
        s = grid.points()[0]
        return (jnp.sin(2 * jnp.pi * 3 * s) + 0.5 * jnp.cos(2 * jnp.pi * 5 * s))[None]

    np.testing.assert_allclose(layer(wave(fine))[:, ::2], layer(wave(coarse)), atol=1e-5)


def test_spectral_conv_drops_modes_above_a_coarse_grids_nyquist_limit():
    layer = eqs.SpectralConv(1, 1, 12, key=jr.key(0))
    x = jr.normal(jr.key(1), (1, 8))
    np.testing.assert_allclose(layer(x), _reference_spectral_conv(layer, np.asarray(x)), atol=1e-5)


def test_conv_is_a_circular_cross_correlation():
    layer = eqs.Conv(2, 3, 5, use_bias=True, key=jr.key(0))
    x = jr.normal(jr.key(1), (2, 12))
    expected = np.zeros((3, 12))
    for i in range(12):
        for j in range(5):
            expected[:, i] += np.asarray(layer.weight[:, :, j]) @ np.asarray(x[:, (i + j - 2) % 12])
    expected += np.asarray(layer.bias)[:, None]
    np.testing.assert_allclose(layer(x), expected, atol=1e-5)


@pytest.mark.parametrize("shape,width", [((16,), 4), ((8, 8), (3, 2))])
def test_conv_commutes_with_circular_shifts(shape, width):
    layer = eqs.Conv(1, 2, width, num_spatial_dims=len(shape), key=jr.key(0))
    x = jr.normal(jr.key(1), (1,) + shape)
    axes = tuple(range(1, 1 + len(shape)))
    shifted = jnp.roll(x, 3, axis=axes)
    np.testing.assert_allclose(layer(shifted), jnp.roll(layer(x), 3, axis=axes), atol=1e-5)


def test_pointwise_maps_channels_at_every_point():
    layer = eqs.Pointwise(3, 2, use_bias=True, key=jr.key(0))
    x = jr.normal(jr.key(1), (3, 5, 4))
    expected = jnp.einsum("oc,cij->oij", layer.weight, x) + layer.bias[:, None, None]
    np.testing.assert_allclose(layer(x), expected, atol=1e-6)
    # on the zero-dimensional grid it is a dense layer
    v = jr.normal(jr.key(2), (3,))
    np.testing.assert_allclose(layer(v), layer.weight @ v + layer.bias, atol=1e-6)


def test_linear_flattens_the_function():
    layer = eqs.Linear((2, 8), 5, key=jr.key(0))
    x = jr.normal(jr.key(1), (2, 8))
    np.testing.assert_allclose(layer(x), layer.weight @ x.ravel() + layer.bias, atol=1e-6)


def test_layers_refuse_the_wrong_number_of_channels():
    x = jnp.zeros((3, 16))
    for layer in [
        eqs.Pointwise(2, 2, key=jr.key(0)),
        eqs.Conv(2, 2, 3, key=jr.key(0)),
        eqs.SpectralConv(2, 2, 4, key=jr.key(0)),
    ]:
        with pytest.raises(ValueError, match="in_channels=2"):
            layer(x)


def test_layers_refuse_the_wrong_dimension():
    with pytest.raises(ValueError, match="1-D"):
        eqs.SpectralConv(1, 1, 4, key=jr.key(0))(jnp.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="axes"):
        eqs.Conv(1, 1, 3, key=jr.key(0))(jnp.zeros((1, 8, 8)))
    with pytest.raises(ValueError, match="at least"):
        eqs.Conv(1, 1, 9, key=jr.key(0))(jnp.zeros((1, 8)))


@pytest.mark.parametrize("modes", [0, (3, -1)])
def test_modes_must_be_positive(modes):
    with pytest.raises(ValueError, match="modes"):
        eqs.SpectralConv(1, 1, modes, key=jr.key(0))


def test_spectral_weights_are_real_so_optimisers_descend():
    """JAX's gradient for a complex parameter is the conjugate of the descent direction."""
    layer = eqs.SpectralConv(1, 1, 4, key=jr.key(0))
    assert not jnp.iscomplexobj(layer.weight)
    x = jr.normal(jr.key(1), (1, 16))
    target = jr.normal(jr.key(2), (1, 16))

    def loss(layer):
        return jnp.sum((layer(x) - target) ** 2)

    grads = jax.grad(loss)(layer)
    stepped = eqx_set_weight(layer, layer.weight - 1e-3 * grads.weight)
    assert loss(stepped) < loss(layer)
    assert relative_error(layer.complex_weight.real, layer.weight[0]) == 0.0


@pytest.mark.parametrize("spatial,modes", [((256,), (16,)), ((64, 32), (5, 4))])
def test_truncated_transforms_by_fourier_matrices_equal_the_fft(spatial, modes):
    """With few modes kept, `to_modes`/`from_modes` use products with Fourier matrices; they
    give the numbers of the FFT followed by a gather (and of the scatter and inverse FFT)."""
    layer = eqs.SpectralConv(2, 3, modes, key=jr.key(0))
    x = jr.normal(jr.key(1), (2,) + spatial)
    expected = jnp.fft.rfftn(x, axes=tuple(range(1, x.ndim)), norm="forward")
    for axis, (spectrum, _) in enumerate(layer._indices(spatial)):
        expected = jnp.take(expected, spectrum, axis=1 + axis)
    x_hat = layer.to_modes(x)
    np.testing.assert_allclose(x_hat, expected, atol=1e-6)
    half = spatial[:-1] + (spatial[-1] // 2 + 1,)
    full = x_hat
    for axis, ((spectrum, _), n) in enumerate(zip(layer._indices(spatial), half)):
        moved = jnp.moveaxis(full, 1 + axis, 0)
        full = jnp.moveaxis(
            jnp.zeros((n,) + moved.shape[1:], full.dtype).at[spectrum].add(moved), 0, 1 + axis
        )
    expected_back = jnp.fft.irfftn(full, s=spatial, axes=tuple(range(1, x.ndim)), norm="forward")
    np.testing.assert_allclose(layer.from_modes(x_hat, spatial), expected_back, atol=1e-5)
