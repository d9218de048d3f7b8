"""The concept atlas: one page per host, a row per concept (kernel, spectrum, where it fires,
what ablating it does)."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import matplotlib.image
import numpy as np
import pytest

import equisae as eqs


def _sae(channels: int, shape: tuple[int, ...], key) -> eqs.SAE:
    """A random SAE-FNO whose concept 0 has a zero kernel, so it never fires."""

    def build(key):
        dictionary = eqs.Spectral(eqs.Grid(shape), channels, 4, 4, key=key)
        weight = dictionary.conv.weight.at[:, 0].set(0.0)
        dictionary = eqx.tree_at(lambda d: d.conv.weight, dictionary, weight)
        return eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.02), 5), dictionary)

    return eqx.filter_jit(build)(key)


@pytest.mark.parametrize("ndim", [1, 2])
def test_the_atlas_writes_a_page_and_ablating_a_silent_concept_changes_nothing(ndim, tmp_path):
    shape = (16,) * ndim
    fno = eqx.filter_jit(lambda k: eqs.operators.FNO(1, 1, 4, 4, 2, num_spatial_dims=ndim, key=k))(
        jr.key(0)
    )
    inputs = jr.normal(jr.key(1), (6, 1) + shape)
    sae = _sae(4, shape, jr.key(2))
    path = tmp_path / "atlas.png"
    result = eqs.operators.atlas(fno, fno.where(1), sae, inputs, path, concepts=[0, 1, 2], top=2)
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 300 and image.shape[1] > 1000  # three rows of four panels
    assert result["concepts"] == [0, 1, 2]
    assert result["usage"][0] == 0.0 and result["ablation"][0] == 0.0
    assert result["usage"][1] > 0 and result["ablation"][1] > 0
    assert np.isfinite(jnp.asarray(list(result["ablation"].values()))).all()
    if ndim == 2:
        return
    most_used = eqs.operators.atlas(
        fno, fno.where(1), sae, inputs, tmp_path / "b.png", concepts=2, top=2
    )
    first, second = most_used["concepts"]
    assert 0 not in (first, second)
    assert most_used["usage"][first] >= most_used["usage"][second] > 0
    with pytest.raises(ValueError, match="expects fields of 3 channels"):
        eqs.operators.atlas(fno, fno.where(1), _sae(3, shape, jr.key(2)), inputs, path)
    with pytest.raises(ValueError, match="concepts must lie"):
        eqs.operators.atlas(fno, fno.where(1), sae, inputs, path, concepts=[7])
