"""Training at scale: sparsity variants, dead concepts, sweeps, checkpoints, sharding, data
larger than memory."""

import os
import pathlib
import subprocess
import sys
import textwrap

import equinox as eqx
import hypothesis
import hypothesis.strategies as st
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest
from helpers import FAMILIES, dictionary as build

import equisae as eqs
from equisae import _io

VECTOR = eqs.Grid(())


def _amortised(k_or_sparsity, m=10, p=20, key=jr.key(0)):
    sparsity = k_or_sparsity
    k1, k2 = jr.split(key)
    return eqs.SAE(
        eqs.Amortised(eqs.Linear((m,), p, key=k1), sparsity), eqs.Dense(VECTOR, m, p, key=k2)
    )


@pytest.fixture(scope="module")
def signals():
    return eqs.data.VectorModel(jr.key(0), 10, 20, 2).sample(jr.key(1), 256).signals


def _fit(sae, data, **kwargs):
    settings = dict(
        optimizer=optax.adam(1e-2), steps=10, batch_size=32, key=jr.key(3), progress=False
    )
    return eqs.fit(sae, data, **(settings | kwargs))


# ---- sparsity variants


def test_jumprelu_thresholds_get_gradients_and_move_under_adam(signals):
    sae = _amortised(eqs.JumpReLU(jnp.full(20, 0.1), bandwidth=0.05))
    loss = eqs.SAELoss(l0=0.01)
    grads = eqx.filter_grad(lambda m: loss(m, signals[:64], VECTOR)[0])(sae)
    assert jnp.any(grads.encoder.sparsity.threshold != 0)
    trained, _ = _fit(sae, signals, loss=loss, steps=30)
    moved = trained.encoder.sparsity.threshold - sae.encoder.sparsity.threshold
    assert jnp.any(jnp.abs(moved) > 1e-3)
    assert trained.encoder.sparsity.threshold.dtype == jnp.float32


def test_jumprelu_is_hard_thresholding_and_its_straight_through_gradient_is_local():
    jump = eqs.JumpReLU(0.5, bandwidth=0.1)
    u = jnp.array([0.2, 0.49, 0.52, 1.0])
    np.testing.assert_allclose(jump(u), [0.0, 0.0, 0.52, 1.0])
    np.testing.assert_allclose(
        jump(u, 4.0), [0.0, 0.0, 0.0, 1.0 * (1.0 > 1.0)]
    )  # keeps u > 0.5 * 2
    grad = jax.grad(lambda t: jnp.sum(eqs.JumpReLU(t, bandwidth=0.1)(u)))(0.5)
    # only the entries within half a bandwidth of the threshold contribute: -theta/eps each
    np.testing.assert_allclose(grad, -2 * 0.5 / 0.1, rtol=1e-5)


def test_batch_topk_keeps_k_times_batch_codes_per_batch(signals):
    sae = _amortised(eqs.BatchTopK(3))
    _, codes = jax.vmap(sae, in_axes=(0, None), axis_name="batch")(signals[:16], VECTOR)
    assert int(jnp.sum(codes != 0)) == 3 * 16
    assert not jnp.all(jnp.sum(codes != 0, axis=1) == 3)  # per example it varies


def test_batch_topk_needs_the_batch_and_refuses_per_example_solvers(signals):
    with pytest.raises(ValueError, match="axis_name='batch'"):
        _amortised(eqs.BatchTopK(3))(signals[0], VECTOR)
    for encoder in (eqs.FixedPoint, eqs.ODEFlow):
        with pytest.raises(ValueError, match="couples the examples"):
            encoder(eqs.BatchTopK(3))


def test_a_topk_sweep_over_k_runs_as_one_program(signals):
    models = eqs.stack([_amortised(eqs.TopK(k, nonnegative=True)) for k in (1, 2, 4)])
    _, codes = eqx.filter_vmap(lambda m: jax.vmap(m, in_axes=(0, None))(signals[:8], VECTOR))(
        models
    )
    np.testing.assert_array_equal(jnp.max(jnp.sum(codes != 0, axis=-1), axis=-1), [1, 2, 4])


# ---- dead concepts


def _with_dead_concepts():
    """A standard SAE whose concepts 3 and 7 are dead: their encoder rows never fire."""
    sae = _amortised(eqs.NonNegSoftThreshold(0.0))
    weight = sae.encoder.layer.weight.at[jnp.array([3, 7])].set(0.0)
    bias = sae.encoder.layer.bias.at[jnp.array([3, 7])].set(-10.0)
    sae = eqx.tree_at(lambda m: (m.encoder.layer.weight, m.encoder.layer.bias), sae, (weight, bias))
    return sae


def test_resampling_revives_dead_concepts_and_leaves_the_others_bit_identical(signals):
    sae = _with_dead_concepts()
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(eqx.filter(sae, eqx.is_inexact_array))
    step = eqs.make_step(eqs.SAELoss(l1=0.1), optimizer)
    for i in range(3):  # non-zero Adam moments
        sae, opt_state, _, aux = step(sae, opt_state, signals[32 * i : 32 * (i + 1)], VECTOR)
    assert aux["firing"][3] == 0 and aux["firing"][7] == 0
    # dead concepts get no gradient, so give every moment a value to see which are reset
    adam = opt_state[0]
    filled = adam._replace(
        mu=jax.tree.map(jnp.ones_like, adam.mu), nu=jax.tree.map(jnp.ones_like, adam.nu)
    )
    opt_state = (filled,) + tuple(opt_state[1:])
    dead = jnp.zeros(20, bool).at[jnp.array([3, 7])].set(True)
    new, new_state = eqs.resample_dead(sae, opt_state, signals[:64], VECTOR, dead, jr.key(5))
    alive = ~np.asarray(dead)
    np.testing.assert_array_equal(new.dictionary.weight[:, alive], sae.dictionary.weight[:, alive])
    np.testing.assert_array_equal(new.encoder.layer.weight[alive], sae.encoder.layer.weight[alive])
    np.testing.assert_allclose(new.dictionary.atom_norms(VECTOR)[~alive], 1.0, rtol=1e-5)
    adam, new_adam = opt_state[0], new_state[0]
    for old, fresh in [(adam.mu, new_adam.mu), (adam.nu, new_adam.nu)]:
        np.testing.assert_array_equal(
            fresh.dictionary.weight[:, alive], old.dictionary.weight[:, alive]
        )
        assert jnp.all(fresh.dictionary.weight[:, ~alive] == 0)
        assert jnp.any(old.dictionary.weight[:, ~alive] != 0)
        assert jnp.all(fresh.encoder.layer.weight[~alive] == 0)
        np.testing.assert_array_equal(
            fresh.encoder.layer.bias[alive], old.encoder.layer.bias[alive]
        )
    _, codes = jax.vmap(new, in_axes=(0, None))(signals, VECTOR)
    assert jnp.all(jnp.any(codes[:, ~alive] != 0, axis=0))  # they fire again


@pytest.mark.parametrize("family", ["spectral", "convolutional", "lifted_spectral"])
def test_resampling_works_for_function_dictionaries(family):
    grid = eqs.Grid(16)
    dictionary = build(family, grid, 1, 3, 4, jr.key(0))
    sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.05), 5), dictionary)
    optimizer = optax.adam(1e-2)
    opt_state = optimizer.init(eqx.filter(sae, eqx.is_inexact_array))
    batch = jr.normal(jr.key(1), (8, 1, 16))
    dead = jnp.array([False, True, False])
    new, _ = eqs.resample_dead(sae, opt_state, batch, grid, dead, jr.key(2))
    before, after = sae.dictionary.atoms(grid), new.dictionary.atoms(grid)
    np.testing.assert_array_equal(after[jnp.array([0, 2])], before[jnp.array([0, 2])])
    assert not np.allclose(after[1], before[1])
    np.testing.assert_allclose(new.dictionary.atom_norms(grid)[1], 1.0, rtol=1e-4)


def test_fit_tracks_firing_and_resamples_dead_concepts(signals):
    sae = _with_dead_concepts()
    _, history = _fit(sae, signals, loss=eqs.SAELoss(l1=0.1), steps=8, resample_every=4)
    assert history["resampled"][3] == 2  # at step 4, the two dead concepts
    assert history["firing"][3] > 0 and history["firing"][7] > 0
    assert eqs.dead_concepts(history).sum() < 2


def test_auxk_gives_dead_concepts_a_gradient(signals):
    """Concepts 3 and 7 respond weakly but positively: never in the top 2, so dead."""
    sae = _amortised(eqs.TopK(2, nonnegative=True))
    layer = sae.encoder.layer
    weight = layer.weight.at[jnp.array([3, 7])].multiply(0.01)
    bias = layer.bias.at[jnp.array([3, 7])].set(0.01)
    sae = eqx.tree_at(lambda m: (m.encoder.layer.weight, m.encoder.layer.bias), sae, (weight, bias))
    _, aux = eqs.SAELoss()(sae, signals[:64], VECTOR)
    assert aux["firing"][3] == 0 and aux["firing"][7] == 0
    without = eqx.filter_grad(lambda m: eqs.SAELoss()(m, signals[:64], VECTOR)[0])(sae)
    with_aux = eqx.filter_grad(lambda m: eqs.SAELoss(aux_k=4)(m, signals[:64], VECTOR)[0])(sae)
    dead = jnp.array([3, 7])
    assert jnp.all(without.dictionary.weight[:, dead] == 0)
    assert jnp.any(with_aux.dictionary.weight[:, dead] != 0)
    with pytest.raises(ValueError, match="Amortised"):
        eqs.SAELoss(aux_k=4)(
            eqs.SAE(eqs.Unrolled(eqs.TopK(2), 5), sae.dictionary), signals[:8], VECTOR
        )


# ---- sweeps


def test_a_vmapped_sweep_equals_separate_runs(signals):
    lams = [0.02, 0.05, 0.1, 0.2]
    models = [
        eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(lam), 10), eqs.Dense(VECTOR, 10, 20, key=jr.key(2)))
        for lam in lams
    ]
    swept, histories = _fit(eqs.stack(models), signals, sweep=True)
    assert len(histories) == 4
    for i, model in enumerate(models):
        alone, history = _fit(model, signals)
        np.testing.assert_allclose(
            eqs.unstack(swept, i).dictionary.weight, alone.dictionary.weight, atol=1e-5
        )
        np.testing.assert_allclose(histories[i]["loss"], history["loss"], rtol=1e-5)


def test_stack_refuses_models_that_differ_in_structure():
    a = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.1), 10), eqs.Dense(VECTOR, 10, 20, key=jr.key(2)))
    b = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.1), 20), eqs.Dense(VECTOR, 10, 20, key=jr.key(2)))
    with pytest.raises(ValueError, match="more than its arrays"):
        eqs.stack([a, b])


# ---- checkpoints


@hypothesis.settings(max_examples=5)
@hypothesis.given(family=st.sampled_from(FAMILIES), seed=st.integers(0, 100))
def test_save_and_load_round_trip_bit_exactly(tmp_path_factory, family, seed):
    grid = eqs.Grid(8)
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.1), 5), build(family, grid, 1, 3, 3, jr.key(seed))
    )
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(eqx.filter(sae, eqx.is_inexact_array))
    path = tmp_path_factory.mktemp("ck") / "model.eqx"
    eqs.save(path, sae, opt_state, lam=0.1, family=family)
    like = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.1), 5), build(family, grid, 1, 3, 3, jr.key(seed + 1))
    )
    loaded = eqs.load(path, like, opt_state)
    assert bool(eqx.tree_equal(loaded.model, sae))
    assert bool(eqx.tree_equal(loaded.opt_state, opt_state))
    assert loaded.hyperparameters == {"lam": 0.1, "family": family}
    assert bool(eqx.tree_equal(eqs.load(path, like).model, sae))  # without the optimiser state


def _saved(tmp_path):
    sae = _amortised(eqs.NonNegSoftThreshold(0.0))
    path = tmp_path / "model.eqx"
    eqs.save(path, sae, lam=0.1)
    return sae, path


def test_a_corrupt_file_is_refused(tmp_path):
    sae, path = _saved(tmp_path)
    raw = bytearray(path.read_bytes())
    raw[-10] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(eqs.CheckpointError, match="corrupt"):
        eqs.load(path, sae)


def test_a_truncated_file_is_refused(tmp_path):
    sae, path = _saved(tmp_path)
    path.write_bytes(path.read_bytes()[:-100])
    with pytest.raises(eqs.CheckpointError, match="truncated"):
        eqs.load(path, sae)
    path.write_bytes(b"not a checkpoint at all")
    with pytest.raises(eqs.CheckpointError, match="not an equisae checkpoint"):
        eqs.load(path, sae)


def test_a_checkpoint_of_another_family_is_refused(tmp_path):
    _, path = _saved(tmp_path)
    other = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.1), 5), eqs.Spectral(eqs.Grid(10), 1, 20, 4, key=jr.key(0))
    )
    with pytest.raises(eqs.CheckpointError, match="does not match the model"):
        eqs.load(path, other)


def test_a_crash_during_a_save_leaves_the_previous_checkpoint_loadable(tmp_path, monkeypatch):
    sae, path = _saved(tmp_path)
    before = path.read_bytes()

    def crash(f, payload):
        f.write(payload[: len(payload) // 2])
        raise KeyboardInterrupt("killed halfway through the save")

    monkeypatch.setattr(_io, "_write_payload", crash)
    other = _amortised(eqs.NonNegSoftThreshold(0.0), key=jr.key(9))
    with pytest.raises(KeyboardInterrupt):
        eqs.save(path, other)
    assert path.read_bytes() == before
    assert bool(eqx.tree_equal(eqs.load(path, sae).model, sae))
    assert [p.name for p in tmp_path.iterdir()] == ["model.eqx"]  # no temporary left behind


def test_a_resumed_run_equals_an_uninterrupted_one(signals, tmp_path):
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(0.1), 10), eqs.Dense(VECTOR, 10, 20, key=jr.key(2))
    )
    settings = dict(batch_size=48, loss=eqs.SAELoss(l1=0.1))  # 5 batches an epoch: resume mid-epoch
    full, full_history = _fit(sae, signals, steps=12, **settings)
    path = tmp_path / "run.eqx"
    _fit(sae, signals, steps=7, checkpoint_every=7, checkpoint_path=path, **settings)
    resumed, history = _fit(sae, signals, steps=12, resume_from=path, **settings)
    assert bool(eqx.tree_equal(resumed, full))
    np.testing.assert_array_equal(history["loss"], full_history["loss"])
    np.testing.assert_array_equal(history["firing"], full_history["firing"])


# ---- data larger than memory


def test_fit_reads_a_memory_mapped_file_and_any_iterator(signals, tmp_path):
    path = tmp_path / "signals.npy"
    np.save(path, np.asarray(signals))
    mapped = np.load(path, mmap_mode="r")
    sae = _amortised(eqs.NonNegSoftThreshold(0.0))
    from_memory, _ = _fit(sae, np.asarray(signals))
    from_file, _ = _fit(sae, mapped)
    assert bool(eqx.tree_equal(from_memory, from_file))

    def batches():
        for i in range(10):
            yield mapped[32 * (i % 8) : 32 * (i % 8 + 1)]

    trained, history = _fit(sae, batches(), batch_size=None)
    assert len(history["loss"]) == 10
    with pytest.raises(ValueError, match="ran out at step 10"):
        _fit(sae, batches(), batch_size=None, steps=11)
    bad = np.asarray(signals).copy()
    bad[40, 3] = np.nan
    np.save(path, bad)
    with pytest.raises(ValueError, match="NaN or inf"):
        _fit(sae, np.load(path, mmap_mode="r"), steps=20)


# ---- sharding


SHARDED = textwrap.dedent(
    """
    import jax, jax.numpy as jnp, jax.random as jr, numpy as np, optax
    import equisae as eqs
    assert len(jax.devices()) == 4, jax.devices()
    grid = eqs.Grid(16)
    concepts = eqs.data.smooth(jr.key(0), 3, bandwidth=4)
    data = eqs.data.FunctionalModel(concepts, spikes=1).sample(jr.key(1), 128, grid).signals
    dictionary = eqs.Spectral(grid, 1, 3, 5, key=jr.key(2))
    sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.1), 10), dictionary)
    kwargs = dict(optimizer=optax.adam(1e-2), steps=6, batch_size=32, key=jr.key(3), progress=False)
    single, h1 = eqs.fit(sae, data, **kwargs)
    mesh = jax.make_mesh((4,), ("batch",))
    sharded, h2 = eqs.fit(sae, data, mesh=mesh, **kwargs)
    w1, w2 = single.dictionary.conv.weight, sharded.dictionary.conv.weight
    assert len(w2.sharding.device_set) == 4
    np.testing.assert_allclose(np.asarray(w2), np.asarray(w1), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h2["loss"], h1["loss"], rtol=1e-5)
    print("sharded training matches")
    """
)


@pytest.mark.slow
def test_sharded_training_on_four_devices_matches_one_device(tmp_path):
    script = tmp_path / "sharded.py"
    script.write_text(SHARDED)
    env = os.environ | {
        "XLA_FLAGS": "--xla_force_host_platform_device_count=4",
        "JAX_PLATFORMS": "cpu",
    }
    result = subprocess.run(
        [sys.executable, str(script)],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        cwd=pathlib.Path(__file__).parents[1],
    )
    assert result.returncode == 0, result.stderr[-3000:]
    assert "sharded training matches" in result.stdout


def test_a_batch_that_the_mesh_cannot_split_is_refused(signals):
    mesh = jax.make_mesh((1,), ("batch",))
    with pytest.raises(ValueError, match="not 'data'"):
        _fit(_amortised(eqs.NonNegSoftThreshold(0.0)), signals, mesh=mesh, batch_axis="data")
