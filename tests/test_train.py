import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pytest

import equisae as eqs

GRID = eqs.Grid(())


@pytest.fixture(scope="module")
def small():
    model = eqs.data.VectorModel(jr.key(0), dim=10, concepts=20, sparsity=2)
    sample = model.sample(jr.key(1), 256)
    sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.1), 10), eqs.Dense(GRID, 10, 20, key=jr.key(2)))
    return sae, sample.signals


def _fit(sae, signals, **kwargs):
    settings = dict(
        optimizer=optax.adam(1e-2), steps=12, batch_size=32, key=jr.key(3), progress=False
    )
    settings.update(kwargs)
    return eqs.fit(sae, signals, **settings)


def test_make_step_lowers_the_loss_and_keeps_unit_atoms(small):
    sae, signals = small
    loss = eqs.SAELoss(l1=0.1)
    optimizer = optax.sgd(1e-2)
    step = eqs.make_step(loss, optimizer)
    opt_state = optimizer.init(eqx.filter(sae, eqx.is_inexact_array))
    batch = signals[:64]
    before, _ = loss(sae, batch, GRID)
    new, opt_state, value, aux = step(sae, opt_state, batch, GRID)
    after, _ = loss(new, batch, GRID)
    assert float(value) == pytest.approx(float(before))
    assert after < before
    np.testing.assert_allclose(new.dictionary.atom_norms(GRID), 1.0, rtol=1e-5)
    assert set(aux) == {
        "reconstruction",
        "l1",
        "l0",
        "explained_variance",
        "inference_steps",
        "converged",
        "firing",
    }
    assert aux["firing"].shape == (20,)


def test_fit_records_a_history_of_every_step(small):
    sae, signals = small
    _, history = _fit(sae, signals)
    assert set(history) == {
        "step",
        "loss",
        "seconds",
        "reconstruction",
        "l1",
        "l0",
        "explained_variance",
        "inference_steps",
        "converged",
        "resampled",
        "firing",
    }
    assert history["firing"].shape == (20,)
    assert np.all((history["firing"] >= 0) & (history["firing"] <= 1))
    assert all(len(v) == 12 for name, v in history.items() if name != "firing")
    assert np.all(np.diff(history["seconds"]) >= 0)
    assert history["loss"][-1] < history["loss"][0]


def test_same_key_same_model_and_another_key_another(small):
    sae, signals = small
    a, _ = _fit(sae, signals)
    b, _ = _fit(sae, signals)
    c, _ = _fit(sae, signals, key=jr.key(4))
    np.testing.assert_array_equal(a.dictionary.weight, b.dictionary.weight)
    assert not np.array_equal(a.dictionary.weight, c.dictionary.weight)


def test_fit_goes_through_several_epochs(small):
    sae, signals = small
    _, history = _fit(sae, signals[:64], steps=9, batch_size=16)
    assert len(history["loss"]) == 9


def _poison_after(count: int) -> optax.GradientTransformation:
    """Updates that turn into NaN from the `count`-th call on."""

    def init(params):
        return jnp.zeros((), jnp.int32)

    def update(updates, state, params=None):
        bad = state >= count
        updates = jax.tree.map(lambda u: jnp.where(bad, jnp.nan, u), updates)
        return updates, state + 1

    return optax.GradientTransformation(init, update)


def test_a_nan_stops_training_with_the_step_and_the_last_good_model(small):
    sae, signals = small
    optimizer = optax.chain(optax.sgd(1e-2), _poison_after(5))
    with pytest.raises(eqs.NonFiniteLossError, match="at step 5") as info:
        _fit(sae, signals, optimizer=optimizer)
    assert info.value.step == 5
    good = info.value.model
    assert jnp.all(jnp.isfinite(good.dictionary.weight))
    # the last good model is the one after five clean steps
    clean, _ = _fit(sae, signals, optimizer=optax.sgd(1e-2), steps=5)
    np.testing.assert_allclose(good.dictionary.weight, clean.dictionary.weight, atol=1e-6)


@pytest.mark.parametrize(
    "signals,match",
    [
        (jnp.zeros((0, 10)), "empty"),
        (jnp.ones((8, 10)).at[3, 2].set(jnp.nan), "NaN or inf in 1 example.*index 3"),
        (jnp.ones((8, 10)).at[5, 0].set(jnp.inf), "index 5"),
        (jnp.ones((8, 12)), r"expected \(10\)|expected \(c\)|expected"),
        (jnp.ones(8), "shape"),
    ],
)
def test_fit_refuses_bad_data(small, signals, match):
    sae, _ = small
    with pytest.raises(ValueError, match=match):
        _fit(sae, signals, batch_size=4)


def test_fit_refuses_integer_data(small):
    sae, _ = small
    with pytest.raises(TypeError, match="floating"):
        _fit(sae, jnp.ones((8, 10), dtype=jnp.int32), batch_size=4)


@pytest.mark.parametrize(
    "kwargs,match", [(dict(steps=0), "steps"), (dict(batch_size=1000), "batch_size")]
)
def test_fit_refuses_bad_settings(small, kwargs, match):
    sae, signals = small
    with pytest.raises(ValueError, match=match):
        _fit(sae, signals, **kwargs)


def test_a_negative_l1_weight_is_refused():
    with pytest.raises(ValueError, match="l1"):
        eqs.SAELoss(l1=-1.0)


# ---- chunks: many steps per dispatch


def _same_run(a, b):
    """Two `fit` results are the same run: the same model and the same history (wall times
    aside)."""
    (model_a, history_a), (model_b, history_b) = a, b
    assert bool(eqx.tree_equal(model_a, model_b))
    assert set(history_a) == set(history_b)
    for name in history_a:
        if name != "seconds":
            np.testing.assert_array_equal(history_a[name], history_b[name], err_msg=name)


@pytest.mark.parametrize("chunk", [None, 5, 12])
def test_how_the_steps_are_chunked_changes_nothing(small, chunk):
    sae, signals = small
    _same_run(_fit(sae, signals, chunk=1), _fit(sae, signals, chunk=chunk))


def test_chunks_change_nothing_for_host_data_and_iterators(small):
    sae, signals = small
    host = np.asarray(signals)

    def batches():
        for i in range(12):
            yield host[32 * (i % 8) : 32 * (i % 8 + 1)]

    _same_run(_fit(sae, host, chunk=1), _fit(sae, host, chunk=5))
    _same_run(_fit(sae, batches(), batch_size=None, chunk=1), _fit(sae, batches(), chunk=5))


def test_chunks_change_nothing_with_resampling_and_checkpoints(small, tmp_path):
    sae, signals = small
    sae = eqx.tree_at(lambda m: m.encoder.sparsity.threshold, sae, jnp.asarray(1.5))  # dead ones
    settings = dict(steps=14, resample_every=4, checkpoint_every=6)
    one = _fit(sae, signals, chunk=1, checkpoint_path=tmp_path / "a.eqx", **settings)
    many = _fit(sae, signals, chunk=10, checkpoint_path=tmp_path / "b.eqx", **settings)
    _same_run(one, many)
    assert one[1]["resampled"].sum() > 0  # the comparison covers a resampling
    a = eqs.load(tmp_path / "a.eqx", sae).model
    b = eqs.load(tmp_path / "b.eqx", sae).model
    assert bool(eqx.tree_equal(a, b))  # both checkpointed at step 12


def test_a_nan_inside_a_chunk_stops_at_its_step_with_the_last_good_model(small):
    sae, signals = small
    optimizer = optax.chain(optax.sgd(1e-2), _poison_after(5))
    with pytest.raises(eqs.NonFiniteLossError, match="at step 5") as info:
        _fit(sae, signals, optimizer=optimizer, chunk=12)
    clean, _ = _fit(sae, signals, optimizer=optax.sgd(1e-2), steps=5, chunk=1)
    assert bool(eqx.tree_equal(info.value.model, clean))


class _CountingLoss(eqx.Module):
    """`SAELoss` that counts how often it is traced (each call of it from Python)."""

    calls: list = eqx.field(static=True)

    def __call__(self, model, batch, grid):
        self.calls.append(None)
        return eqs.SAELoss()(model, batch, grid)


def test_chunks_of_every_count_share_the_compiled_programs(small):
    """Full chunks run one program and shorter ones another, whatever their count."""
    sae, signals = small
    short, longer = _CountingLoss([]), _CountingLoss([])
    _fit(sae, signals, steps=10, chunk=3, loss=short)  # chunks of 3, 3, 3 and 1 steps
    _fit(sae, signals, steps=17, chunk=3, loss=longer)  # 3, 3, 3, 3, 3 and 2
    assert len(short.calls) == len(longer.calls) <= 3


def test_a_sweep_runs_in_chunks_like_one_step_at_a_time(small):
    sae, signals = small
    models = eqs.stack(
        [
            eqx.tree_at(lambda m: m.encoder.sparsity.threshold, sae, jnp.asarray(lam))
            for lam in (0.05, 0.2)
        ]
    )
    one, many = _fit(models, signals, sweep=True, chunk=1), _fit(models, signals, sweep=True)
    assert bool(eqx.tree_equal(one[0], many[0]))
    for a, b in zip(one[1], many[1]):
        np.testing.assert_array_equal(a["loss"], b["loss"])


def test_a_bad_chunk_is_refused(small):
    sae, signals = small
    for chunk in (0, -1):
        with pytest.raises(ValueError, match="chunk"):
            _fit(sae, signals, chunk=chunk)


def test_an_iterator_of_batches_of_changing_shape_is_refused(small):
    sae, signals = small
    batches = iter([signals[:32], signals[:16]] + [signals[:32]] * 10)
    with pytest.raises(ValueError, match="shape"):
        _fit(sae, batches, batch_size=None, chunk=4)


# stopping when the dictionary settles


def test_training_stops_when_the_dictionary_stops_moving(small):
    """With a learning rate that decays to nothing the atoms settle: the run ends at a
    multiple of `every` before `steps`, with the history up to there and the model of that
    step (the same as training for exactly that many steps)."""
    sae, signals = small
    schedule = optax.exponential_decay(1e-2, 10, 0.3)
    stop = eqs.DictionarySettled(every=20, rtol=1e-3)
    stopped, history = _fit(sae, signals, optimizer=optax.adam(schedule), steps=400, stop=stop)
    ran = len(history["step"])
    assert ran < 400 and ran % 20 == 0
    same, _ = _fit(sae, signals, optimizer=optax.adam(schedule), steps=ran)
    assert eqx.tree_equal(stopped, same)


def test_a_dictionary_that_still_moves_trains_to_the_end(small):
    sae, signals = small
    stop = eqs.DictionarySettled(every=4, rtol=1e-6)
    _, history = _fit(sae, signals, stop=stop)
    assert len(history["step"]) == 12


def test_the_change_of_a_sweep_is_measured_per_member():
    stop = eqs.DictionarySettled(every=1, rtol=0.1)
    before = np.ones((2, 3, 4))
    after = before.copy()
    after[1] *= 1.5
    np.testing.assert_allclose(stop.change(before, after, members=1), [0.0, 0.5])
    assert not stop.settled(before, after, members=1)
    assert stop.settled(before, after[[0, 0]], members=1)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"every": 0}, "every must be a positive"),
        ({"rtol": 0.0}, "rtol must be > 0"),
        ({"rtol": float("nan")}, "rtol must be > 0"),
    ],  # fmt: skip
)
def test_bad_stopping_settings_are_refused(kwargs, match):
    with pytest.raises(ValueError, match=match):
        eqs.DictionarySettled(**kwargs)


def test_fit_refuses_a_stop_of_another_kind(small):
    sae, signals = small
    # the type check of the test run (jaxtyping + beartype) or fit's own, without it
    with pytest.raises((ValueError, TypeError), match="stop"):
        _fit(sae, signals, stop=100)
