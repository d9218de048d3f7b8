"""Capture and splice for any Equinox model by the path of a submodule: equisae's FNO,
pdequinox's ClassicFNO (spectral) and DilatedResNet (convolutional)."""

import functools

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest

import equisae as eqs

pdeqx = pytest.importorskip("pdequinox")


def _identity(v):
    return v


@functools.cache
def _host(name: str):
    """A small host (1-D, 2 -> 3 channels, 8 hidden), built once under jit."""

    def build(key):
        if name == "ClassicFNO":
            return pdeqx.arch.ClassicFNO(
                1, 2, 3, hidden_channels=8, num_modes=6, num_blocks=3, key=key
            )
        if name == "DilatedResNet":
            return pdeqx.arch.DilatedResNet(
                1, 2, 3, hidden_channels=8, num_blocks=2, dilation_rates=(1, 2, 1), key=key
            )
        return eqs.operators.FNO(2, 3, 8, 6, 3, key=key)

    return eqx.filter_jit(build)(jr.key(0))


def _inputs(seed: int = 1, num: int = 4):
    return jr.normal(jr.key(seed), (num, 2, 16))


@eqx.filter_jit
def _apply(model, x):
    return jax.vmap(model)(x)


def _second_block(m):
    return m.blocks[1]


@eqx.filter_jit
def _rest(model, v):
    """The rest of a Sequential host after its second block (written out, for the test)."""

    def one(v):
        for block in model.blocks[2:]:
            v = block(v)
        return model.projection(v)

    return jax.vmap(one)(v)


@pytest.mark.parametrize("name", ["ClassicFNO", "DilatedResNet"])
def test_splicing_the_identity_gives_the_models_own_output_exactly(name):
    model = _host(name)
    x = _inputs()
    plain = _apply(model, x)
    spliced = eqs.operators.splice(model, _second_block, _identity)
    assert isinstance(spliced.blocks[1], eqs.operators.Spliced)
    np.testing.assert_array_equal(_apply(spliced, x), plain)
    assert float(eqs.operators.splice_error(model, _second_block, x, _identity)) == 0.0


@pytest.mark.parametrize("name", ["ClassicFNO", "DilatedResNet"])
def test_the_captured_field_is_the_submodules_output(name):
    """The rest of the network run from the captured field gives the model's output; the
    batch can be split into padded chunks without changing the result."""
    model = _host(name)
    x = _inputs(num=5)
    fields = eqs.operators.capture(model, _second_block, x)
    assert fields.shape == (5, 8, 16)
    plain = _apply(model, x)
    rest = _rest(model, fields)
    np.testing.assert_allclose(rest, plain, rtol=1e-5, atol=1e-5)
    chunked = eqs.operators.capture(model, _second_block, x, batch_size=2)
    np.testing.assert_allclose(chunked, fields, rtol=1e-6, atol=1e-6)


def test_the_fno_is_one_case_of_the_general_mechanism():
    """`fno.where(i)` names field i for capture; `hidden` agrees with it, splicing the
    identity there gives the FNO's own output exactly, and the integer block index of
    `splice_error` is the same as the path."""
    fno = _host("FNO")
    x = _inputs()
    hidden = _apply(fno.hidden, x)
    spliced = eqs.operators.splice(fno, fno.where(2), _identity)
    np.testing.assert_array_equal(_apply(spliced, x), _apply(fno, x))
    for i in (0, 2):  # the lifting and a block (each path is its own program)
        captured = eqs.operators.capture(fno, fno.where(i), x)
        np.testing.assert_allclose(captured, hidden[i], rtol=1e-5, atol=1e-6)
    mean = jnp.mean(hidden[2], axis=0)
    by_index = eqs.operators.splice_error(fno, 2, x, _Mean(mean))
    by_path = eqs.operators.splice_error(fno, fno.where(2), x, _Mean(mean))
    assert float(by_index) == float(by_path) > 0.01


class _Mean(eqx.Module):
    mean: jax.Array

    def __call__(self, v):
        return self.mean


def test_a_path_that_does_not_exist_is_refused_with_its_name():
    model = _host("ClassicFNO")
    x = _inputs()
    with pytest.raises(ValueError, match=r"m\.blocks\[7\].*does not exist.*blocks \(list of 3\)"):
        eqs.operators.capture(model, lambda m: m.blocks[7], x)
    with pytest.raises(ValueError, match="blokcs.*does not exist"):
        eqs.operators.splice(model, lambda m: m.blokcs[0], _identity)
    with pytest.raises(ValueError, match="not a callable"):
        eqs.operators.capture(model, lambda m: m.lifting.weight, x)
    with pytest.raises(ValueError, match="block index.*FNO only"):
        eqs.operators.splice_error(model, 1, x, _identity)
    with pytest.raises(ValueError, match="block must lie"):
        eqs.operators.splice_error(_host("FNO"), 9, x, _identity)


def test_a_submodule_called_twice_cannot_be_captured():
    class Twice(eqx.Module):
        inner: eqx.nn.Conv1d

        def __call__(self, x):
            return self.inner(self.inner(x))

    model = Twice(eqx.nn.Conv1d(2, 2, 3, padding=1, key=jr.key(0)))
    with pytest.raises(ValueError, match="called 2 times"):
        eqs.operators.capture(model, lambda m: m.inner, _inputs())


@functools.cache
def _sae(channels: int, n: int, dense: bool = False) -> eqs.SAE:
    grid = eqs.Grid(n)

    def build(key):
        if dense:
            dictionary = eqs.Dense(grid, channels, 6, key=key)
        else:
            dictionary = eqs.Spectral(grid, channels, 6, 5, key=key)
        return eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.05), 3), dictionary)

    return eqx.filter_jit(build)(jr.key(2))


def test_an_sae_splices_into_any_host_and_a_mismatched_field_is_refused():
    """A Reconstruction of the right channels splices in (finite error, larger than the
    identity's zero); a field of other channels, or on another grid for a dense dictionary,
    raises a ValueError naming both shapes."""
    model = _host("ClassicFNO")
    x = _inputs()
    fields = eqs.operators.capture(model, _second_block, x)
    mean = jnp.mean(fields, axis=0)
    replace = eqs.operators.Reconstruction(_sae(8, 16), mean, 2.0)
    error = float(eqs.operators.splice_error(model, _second_block, x, replace))
    assert np.isfinite(error) and error > 0
    with pytest.raises(ValueError, match=r"shape \(8, 16\).*expects fields of 4 channels"):
        eqs.operators.splice_error(
            model, _second_block, x, eqs.operators.Reconstruction(_sae(4, 16))
        )
    with pytest.raises(ValueError, match=r"grid of shape \(32,\)"):
        eqs.operators.splice_error(
            model, _second_block, x, eqs.operators.Reconstruction(_sae(8, 32, dense=True))
        )
    with pytest.raises(ValueError, match="scale must be positive"):
        eqs.operators.Reconstruction(_sae(8, 16), scale=0.0)


def test_a_submodule_inside_a_scan_of_the_model_is_refused_clearly():
    class Scanned(eqx.Module):
        inner: eqx.nn.Linear

        def __call__(self, x):
            def body(carry, _):
                return self.inner(carry), None

            return jax.lax.scan(body, x, None, length=3)[0]

    model = Scanned(eqx.nn.Linear(4, 4, key=jr.key(0)))
    with pytest.raises(ValueError, match="inside a JAX transformation"):
        eqs.operators.capture(model, lambda m: m.inner, jnp.ones((2, 4)))
