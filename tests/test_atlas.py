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
    shape = (16,) if ndim == 1 else (8, 8)
    fno = eqx.filter_jit(lambda k: eqs.operators.FNO(1, 1, 4, 4, 2, num_spatial_dims=ndim, key=k))(
        jr.key(0)
    )
    inputs = jr.normal(jr.key(1), (6, 1) + shape)
    sae = _sae(4, shape, jr.key(2))
    path = tmp_path / "atlas.png"
    result = eqs.operators.atlas(fno, fno.where(1), sae, inputs, path, concepts=4, top=2)
    image = matplotlib.image.imread(path)
    assert image.shape[0] > 700 and image.shape[1] > 1000  # four rows of four panels
    shown, usage = result["concepts"], result["usage"]
    assert sorted(shown) == [0, 1, 2, 3] and shown[-1] == 0  # most used first, the silent last
    assert [usage[k] for k in shown] == sorted(usage.values(), reverse=True)
    assert usage[0] == 0.0 and result["ablation"][0] == 0.0
    assert all(usage[k] > 0 and result["ablation"][k] > 0 for k in shown[:-1])
    assert np.isfinite(jnp.asarray(list(result["ablation"].values()))).all()
    if ndim == 2:
        return
    with pytest.raises(ValueError, match="expects fields of 3 channels"):
        eqs.operators.atlas(fno, fno.where(1), _sae(3, shape, jr.key(2)), inputs, path)
    with pytest.raises(ValueError, match="concepts must lie"):
        eqs.operators.atlas(fno, fno.where(1), sae, inputs, path, concepts=[7])
