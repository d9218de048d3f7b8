"""PyTorch hosts through the optional extra `torch`: a small neuraloperator FNO trained here on
Burgers data; capture by forward hooks, splice an SAE's reconstruction computed in JAX."""

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import equisae as eqs

torch = pytest.importorskip("torch")
neuralop = pytest.importorskip("neuralop")


def _identity(v):
    return v


@pytest.fixture(scope="module")
def host():
    """A neuraloperator FNO (width 8, 8 modes, 2 layers) trained for 300 Adam steps (about
    three seconds on one thread) on 64 Burgers pairs at n = 32; its relative test error
    falls below 0.2."""
    data = eqs.data.burgers(jr.key(0), 80, 32, fine=64, viscosity=0.05, time=0.5)
    x, y = np.array(data.inputs), np.array(data.outputs)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a tiny model: two threads on busy cores are 10x slower
    torch.manual_seed(0)
    model = neuralop.models.FNO(
        n_modes=(8,), in_channels=1, out_channels=1, hidden_channels=8, n_layers=2
    )
    optimiser = torch.optim.Adam(model.parameters(), lr=1e-2)
    xt, yt = torch.as_tensor(x[:64]), torch.as_tensor(y[:64])
    for _ in range(300):
        optimiser.zero_grad()
        loss = torch.mean(torch.linalg.norm(model(xt) - yt, dim=-1) / torch.linalg.norm(yt, dim=-1))
        loss.backward()
        optimiser.step()
    model.eval()
    with torch.no_grad():
        test_error = eqs.operators.relative_l2_error(model(torch.as_tensor(x[64:])).numpy(), y[64:])
    assert float(test_error) < 0.2
    yield model, x, y
    torch.set_num_threads(threads)


def test_capturing_a_named_module_by_hooks_into_host_or_memory_mapped_arrays(host, tmp_path):
    """The field after layer 0 of `fno_blocks` (called once per layer: call=0) has the
    width's channels; the memory-mapped capture is the same array on disk; the output of the
    last call of fno_blocks, projected, is the model's output."""
    model, x, _ = host
    fields = eqs.operators.capture_torch(model, "fno_blocks", x, call=0, batch_size=24)
    assert isinstance(fields, np.ndarray) and fields.shape == (80, 8, 32)
    path = tmp_path / "fields.npy"
    mapped = eqs.operators.capture_torch(model, "fno_blocks", x, call=0, batch_size=24, out=path)
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(np.load(path, mmap_mode="r"), fields)
    last = eqs.operators.capture_torch(model, "fno_blocks", x, call=1)
    with torch.no_grad():
        projected = model.projection(torch.as_tensor(last)).numpy()
        plain = model(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(projected, plain, rtol=1e-5, atol=1e-6)


def test_splicing_the_identity_through_jax_gives_the_models_own_output_exactly(host):
    model, x, _ = host
    with torch.no_grad():
        plain = model(torch.as_tensor(x)).numpy()
        with eqs.operators.splice_torch(model, "fno_blocks", _identity, call=0):
            spliced = model(torch.as_tensor(x)).numpy()
        after = model(torch.as_tensor(x)).numpy()  # the hook is gone
    np.testing.assert_array_equal(spliced, plain)
    np.testing.assert_array_equal(after, plain)
    error = eqs.operators.splice_error_torch(model, "fno_blocks", x, _identity, call=0)
    assert float(error) == 0.0


class _Mean(eqx.Module):
    mean: jnp.ndarray

    def __call__(self, v):
        return self.mean


def test_an_sae_fno_spliced_into_a_torch_fno_beats_mean_ablation(host):
    """An SAE-FNO trained (in JAX) on the captured fields after layer 0; spliced back by the
    hook, the FNO's error is far below the mean ablation's."""
    model, x, y = host
    fields = jnp.asarray(eqs.operators.capture_torch(model, "fno_blocks", x[:64], call=0))
    mean = jnp.mean(fields, axis=0)
    scale = jnp.sqrt(jnp.mean((fields - mean) ** 2))
    grid = eqs.Grid(32)
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.01), 10),
        eqx.filter_jit(lambda key: eqs.Spectral(grid, 8, 16, 8, key=key))(jr.key(2)),
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
    replace = eqs.operators.Reconstruction(sae, mean, scale)
    spliced = float(eqs.operators.splice_error_torch(model, "fno_blocks", x, replace, call=0))
    ablated = float(eqs.operators.splice_error_torch(model, "fno_blocks", x, _Mean(mean), call=0))
    assert np.isfinite(spliced) and 0 < spliced < 0.5 * ablated
    against_truth = eqs.operators.splice_error_torch(
        model, "fno_blocks", x, replace, call=0, targets=y
    )
    assert np.isfinite(float(against_truth))
    with pytest.raises(ValueError, match="expects fields of 4 channels"):
        bad = eqs.SAE(
            eqs.Unrolled(eqs.SoftThreshold(0.01), 2), eqs.Spectral(grid, 4, 2, 3, key=jr.key(0))
        )
        eqs.operators.splice_error_torch(
            model, "fno_blocks", x[:4], eqs.operators.Reconstruction(bad), call=0
        )


def test_a_missing_module_or_call_is_refused_with_its_name(host):
    model, x, _ = host
    with pytest.raises(ValueError, match="no module named 'fno_block'.*'fno_blocks'"):
        eqs.operators.capture_torch(model, "fno_block", x)
    with pytest.raises(ValueError, match="called 2 times.*call=i"):
        eqs.operators.capture_torch(model, "fno_blocks", x)
    with pytest.raises(ValueError, match="call=5.*0..1"):
        eqs.operators.capture_torch(model, "fno_blocks", x, call=5)
    with pytest.raises(ValueError, match="call=5"):
        with eqs.operators.splice_torch(model, "fno_blocks", _identity, call=5):
            model(torch.as_tensor(x[:2]))
    with pytest.raises(ValueError, match="no module named"):
        eqs.operators.splice_error_torch(model, "nothing", x, _identity)
