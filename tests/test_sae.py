import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import pytest
from helpers import FAMILIES, dictionary as build

import equisae as eqs


def _encoder(kind, dictionary, grid, key):
    if kind == "unrolled":
        return eqs.Unrolled(eqs.SoftThreshold(0.05), 5)
    # amortised: a layer from the encoder's input space to codes
    signal, inner = dictionary.lift(jnp.zeros((dictionary.channels,) + grid.shape), grid)
    if len(inner.code_shape(grid)) == 1:
        layer = eqs.Linear(signal.shape, inner.concepts, key=key)
    else:
        layer = eqs.SpectralConv(signal.shape[0], inner.concepts, 3, key=key)
    return eqs.Amortised(layer, eqs.NonNegSoftThreshold(0.0))


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("kind", ["unrolled", "amortised"])
def test_every_family_encodes_and_decodes_one_example(family, kind):
    grid = eqs.Grid(16)
    dictionary = build(family, grid, 2, 3, 4, jr.key(0))
    sae = eqs.SAE(_encoder(kind, dictionary, grid, jr.key(1)), dictionary)
    x = jr.normal(jr.key(2), (2, 16))
    reconstruction, codes = sae(x, grid)
    assert reconstruction.shape == x.shape
    assert codes.shape == dictionary.code_shape(grid)
    np.testing.assert_allclose(reconstruction, dictionary(codes, grid), atol=1e-6)


def test_a_batch_goes_through_vmap_and_jit():
    grid = eqs.Grid(16)
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.05), 5), eqs.Spectral(grid, 1, 3, 4, key=jr.key(0))
    )
    batch = jr.normal(jr.key(1), (6, 1, 16))
    reconstruction, codes = eqx.filter_jit(lambda m, x: jax.vmap(m, in_axes=(0, None))(x, grid))(
        sae, batch
    )
    single, _ = sae(batch[4], grid)
    np.testing.assert_allclose(reconstruction[4], single, atol=1e-5)
    assert codes.shape == (6, 3, 16)


def test_lifted_models_infer_codes_in_the_lifted_space():
    grid = eqs.Grid(16)
    dictionary = build("lifted_spectral", grid, 1, 3, 4, jr.key(0))
    encoder = eqs.Unrolled(eqs.SoftThreshold(0.05), 5)
    sae = eqs.SAE(encoder, dictionary)
    x = jr.normal(jr.key(2), (1, 16))
    expected = encoder(dictionary.lifting(x), dictionary.inner, grid)
    np.testing.assert_allclose(sae.encode(x, grid), expected, atol=1e-6)


def test_the_input_shape_is_checked():
    grid = eqs.Grid(16)
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.05), 5), eqs.Spectral(grid, 2, 3, 4, key=jr.key(0))
    )
    with pytest.raises(ValueError, match=r"expected \(2, 16\)"):
        sae(jnp.zeros((1, 16)), grid)
    with pytest.raises(ValueError, match=r"expected \(2, 16\)"):
        sae(jnp.zeros((4, 2, 16)), grid)


def test_wrong_dtypes_are_refused_by_the_type_annotations():
    """Runtime type checking (jaxtyping + beartype) is on in the tests."""
    grid = eqs.Grid(16)
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.05), 5), eqs.Spectral(grid, 1, 3, 4, key=jr.key(0))
    )
    with pytest.raises(TypeError, match="Float"):
        sae(jnp.zeros((1, 16), dtype=jnp.int32), grid)


def test_mismatched_shapes_name_the_expected_dimensions():
    grid = eqs.Grid(16)
    with pytest.raises(TypeError, match="c \\*spatial"):
        eqs.reconstruction_error(jnp.zeros((1, 16)), jnp.zeros((1, 8)), grid)
