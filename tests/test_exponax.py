"""PDE data from exponax: Kuramoto-Sivashinsky, Korteweg-de Vries, 2-D Navier-Stokes, and the
generic exponax_pairs with its cache."""

import exponax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import equisae as eqs


def test_kuramoto_sivashinsky_pairs_are_keyed_subsampled_and_cached(tmp_path):
    path = tmp_path / "ks.npz"
    options = dict(fine=64, length=22.0, warmup=40, cache=path)
    data = eqs.data.kuramoto_sivashinsky(jr.key(0), 3, 32, **options)
    assert data.inputs.shape == data.outputs.shape == (3, 1, 32)
    assert data.inputs.dtype == jnp.float32 and bool(jnp.all(jnp.isfinite(data.outputs)))
    stamp = path.stat().st_mtime_ns
    again = eqs.data.kuramoto_sivashinsky(jr.key(0), 3, 32, **options)
    assert path.stat().st_mtime_ns == stamp  # read, not rewritten
    np.testing.assert_array_equal(again.outputs, data.outputs)
    coarse = eqs.data.kuramoto_sivashinsky(jr.key(0), 3, 16, **options)  # recomputed
    assert path.stat().st_mtime_ns != stamp
    np.testing.assert_allclose(coarse.inputs, data.inputs[..., ::2], rtol=1e-5, atol=1e-5)
    other = eqs.data.kuramoto_sivashinsky(jr.key(1), 3, 32, fine=64, length=22.0, warmup=40)
    assert not np.allclose(other.inputs, data.inputs)
    # after the warm-up the state is on the attractor: order-one values, mean kept at zero
    assert 0.3 < float(jnp.std(data.inputs)) < 5.0
    np.testing.assert_allclose(jnp.mean(data.outputs, axis=-1), 0.0, atol=1e-4)
    assert not np.allclose(data.outputs, data.inputs, atol=1e-2)


def test_korteweg_de_vries_conserves_mass_and_never_gains_energy():
    """KdV conserves the mean and the energy of u; the hyper-diffusion that damps the grid
    scales only removes energy (much of it, once the waves have steepened into solitons)."""
    data = eqs.data.korteweg_de_vries(jr.key(0), 3, 64, fine=128, steps=20)
    assert data.inputs.shape == (3, 1, 64)
    np.testing.assert_allclose(
        jnp.mean(data.outputs, axis=-1), jnp.mean(data.inputs, axis=-1), atol=1e-5
    )
    before = jnp.mean(data.inputs**2, axis=(1, 2))
    after = jnp.mean(data.outputs**2, axis=(1, 2))
    assert bool(jnp.all(after <= before * (1 + 1e-4))) and bool(jnp.all(after > 0.1 * before))
    assert not np.allclose(data.outputs, data.inputs, atol=1e-2)


def test_navier_stokes_vorticity_decays_in_two_dimensions():
    data = eqs.data.navier_stokes(jr.key(0), 2, 16, fine=32, steps=10, viscosity=1e-2)
    assert data.inputs.shape == data.outputs.shape == (2, 1, 16, 16)
    np.testing.assert_allclose(jnp.mean(data.outputs, axis=(1, 2, 3)), 0.0, atol=1e-5)
    before = jnp.mean(data.inputs**2, axis=(1, 2, 3))
    after = jnp.mean(data.outputs**2, axis=(1, 2, 3))
    assert bool(jnp.all(after < before))


def test_exponax_pairs_takes_any_stepper_and_refuses_bad_input():
    stepper = exponax.stepper.Diffusion(1, 1.0, 32, 0.01, diffusivity=0.1)
    ic = exponax.ic.RandomTruncatedFourierSeries(1, cutoff=3)
    data = eqs.data.exponax_pairs(jr.key(0), stepper, ic, 2, 16, steps=5)
    # the heat equation damps mode f by exp(-nu (2 pi f)^2 t)
    spectrum_in = jnp.abs(jnp.fft.rfft(data.inputs[:, 0], axis=-1))
    spectrum_out = jnp.abs(jnp.fft.rfft(data.outputs[:, 0], axis=-1))
    decay = np.exp(-0.1 * (2 * np.pi * np.arange(1, 4)) ** 2 * 0.05)
    np.testing.assert_allclose(spectrum_out[:, 1:4], spectrum_in[:, 1:4] * decay, rtol=1e-3)
    with pytest.raises(ValueError, match="multiple"):
        eqs.data.exponax_pairs(jr.key(0), stepper, ic, 2, 12, steps=5)
    with pytest.raises(ValueError, match="exponax stepper"):
        eqs.data.exponax_pairs(jr.key(0), lambda u: u, ic, 2, 16, steps=5)
    with pytest.raises(ValueError, match="steps"):
        eqs.data.exponax_pairs(jr.key(0), stepper, ic, 2, 16, steps=0)
    with pytest.raises(ValueError, match="viscosity"):
        eqs.data.navier_stokes(jr.key(0), 2, 16, viscosity=0.0)
