"""A worked study on real hosts: neural operators trained with other libraries, interpreted
with an SAE-FNO spliced into a middle block.

Three hosts, each trained here once and cached on disk:

- a pdequinox `ClassicFNO` on exponax Kuramoto–Sivashinsky data (one step of the chaotic
  dynamics, $L = 60$), the field after block 2 of 4 captured by its path `m.blocks[1]`;
- a neuraloperator `FNO` (PyTorch) on the same data, the field after layer 2 of 4 captured by
  a forward hook (`capture_torch`, `splice_torch`, module `fno_blocks`, `call=1`);
- a pdequinox `ClassicFNO` in 2-D on Darcy flow (equisae's own solver: exponax has no
  elliptic problem), with the grid coordinates as two extra input channels.

For each host an SAE-FNO (`Spectral` dictionary, unrolled FISTA) is trained on the centred
fields $v - \\bar v$ of the training inputs; on the test inputs, at the training grid and at
2x finer, the study reports the explained variance of the field, L0 per grid point (active
concepts per point), the fraction of dead concepts, the splice error (relative L2 error of
the host's output with the field replaced by $\\bar v + D z$) against the host's output and
against the PDE, next to the mean ablation ($v \\to \\bar v$), and

    recovered = (E_mean - E_sae) / (E_mean - E_host)

with E the test error against the PDE's solution: the fraction of the host's accuracy
(over the mean ablation) the SAE keeps, the analogue of "loss recovered" of language-model
SAEs.

    python examples/real_hosts.py            # the three hosts (first run trains and caches them)
    python examples/real_hosts.py --quick    # a smaller run
    python examples/real_hosts.py --only ks-pdequinox ks-torch
"""

import argparse
import json
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import pdequinox as pdeqx

import equisae as eqs

BATCH = 32


class MeanField(eqx.Module):
    """Mean ablation: every field replaced by the training mean (resampled to its grid)."""

    mean: jax.Array

    def __call__(self, v):
        grid = eqs.Grid(tuple(v.shape[1:]))
        if self.mean.shape == v.shape:
            return self.mean
        return eqs.resample(self.mean, eqs.Grid(tuple(self.mean.shape[1:])), grid)


@eqx.filter_jit
def _predict(model, inputs):
    return jax.vmap(model)(inputs)


class EquinoxHost:
    """An Equinox model and the path of the submodule whose output is studied."""

    def __init__(self, model, where):
        self.model, self.where = model, where

    def predict(self, inputs):
        return np.asarray(_predict(self.model, jnp.asarray(inputs)))

    def fields(self, inputs):
        return eqs.operators.capture(self.model, self.where, inputs, batch_size=100)

    def error(self, inputs, replace, targets):
        return float(
            eqs.operators.splice_error(self.model, self.where, inputs, replace, targets=targets)
        )


class TorchHost:
    """A PyTorch model and the name (and call) of the module whose output is studied."""

    def __init__(self, model, name, call):
        self.model, self.name, self.call = model, name, call

    def predict(self, inputs):
        import torch

        with torch.no_grad():
            return self.model(torch.as_tensor(np.asarray(inputs))).numpy()

    def fields(self, inputs):
        return jnp.asarray(
            eqs.operators.capture_torch(self.model, self.name, inputs, call=self.call)
        )

    def error(self, inputs, replace, targets):
        return float(
            eqs.operators.splice_error_torch(
                self.model, self.name, inputs, replace, call=self.call, targets=targets
            )
        )


def train_equinox(model, inputs, outputs, steps: int, key, learning_rate=3e-3):
    """Adam with a cosine schedule on the mean relative L2 error."""
    inputs, outputs = jnp.asarray(inputs), jnp.asarray(outputs)
    batch = min(BATCH, len(inputs))
    optimizer = optax.adam(optax.cosine_decay_schedule(learning_rate, steps))
    state = optimizer.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, state, index):
        def loss(m):
            return eqs.operators.relative_l2_error(jax.vmap(m)(inputs[index]), outputs[index])

        value, grads = eqx.filter_value_and_grad(loss)(model)
        updates, state = optimizer.update(grads, state)
        return eqx.apply_updates(model, updates), state, value

    for i in range(steps):
        index = jr.choice(jr.fold_in(key, i), len(inputs), (batch,), replace=False)
        model, state, _ = step(model, state, index)
    return model


def cached_equinox(path: pathlib.Path, model, train):
    if path.exists():
        return eqx.tree_deserialise_leaves(path, model), 0.0
    start = time.perf_counter()
    model = jax.block_until_ready(train(model))
    path.parent.mkdir(parents=True, exist_ok=True)
    eqx.tree_serialise_leaves(path, model)
    return model, time.perf_counter() - start


def train_torch(model, inputs, outputs, steps: int, seed: int, learning_rate=3e-3):
    import torch

    torch.manual_seed(seed)
    # one thread: on shared, busy cores torch's spinning thread pool ran 4x slower than this
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    x, y = torch.tensor(np.asarray(inputs)), torch.tensor(np.asarray(outputs))
    batch = min(BATCH, len(x))
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, steps)
    model.train()
    for _ in range(steps):
        index = torch.randperm(len(x))[:batch]
        prediction = model(x[index])
        error = torch.linalg.vector_norm(prediction - y[index], dim=(1, 2))
        loss = torch.mean(error / torch.linalg.vector_norm(y[index], dim=(1, 2)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    model.eval()
    torch.set_num_threads(threads)
    return model


def ks_data(setup: dict, cache: pathlib.Path, key):
    """Kuramoto–Sivashinsky pairs on the finer grid (the training grid is every second
    point)."""
    num, n = setup["num"], setup["n"]
    path = cache / f"hosts_ks_{num}_{n}.npz"
    data = eqs.data.kuramoto_sivashinsky(key, num, n, fine=n, cache=path)
    return np.asarray(data.inputs), np.asarray(data.outputs)


def darcy_data(setup: dict, cache: pathlib.Path, key):
    """Darcy pairs on the finer grid (the training grid is every second point per axis),
    coefficients mapped to +-1 and the solution to order one, the coordinates appended as two
    input channels (the problem is not translation invariant: u = 0 on the boundary)."""
    num, n = setup["num"], setup["n"]
    path = cache / f"hosts_darcy_{num}_{n}.npz"
    data = eqs.data.darcy(key, num, n, fine=2 * n, cache=path)
    a, u = np.asarray(data.inputs), np.asarray(data.outputs)
    s = np.arange(n) / n
    coordinates = np.broadcast_to(np.stack(np.meshgrid(s, s, indexing="ij")), (num, 2, n, n))
    inputs = np.concatenate([(a - 7.5) / 4.5, coordinates], axis=1).astype(np.float32)
    return inputs, (100.0 * u).astype(np.float32)


def setups(quick: bool) -> dict:
    """Hosts and SAEs. `n` is the finer (evaluation) grid, the hosts train at n / 2; `num`
    samples of which the last `num_test` are the test set. `--quick` shrinks everything to a
    smoke test (its numbers mean little)."""
    ks = dict(
        data=ks_data,
        ndim=1,
        n=64 if quick else 256,
        num=60 if quick else 600,
        num_test=20 if quick else 100,
        width=8 if quick else 32,
        host_modes=8 if quick else 16,
        concepts=8 if quick else 32,
        modes=None,
        lam=0.02,
        unrolled=10,
        sae_steps=20 if quick else 600,
    )
    return {
        "ks-pdequinox": ks | dict(host_steps=40 if quick else 2000),
        "ks-torch": ks | dict(host_steps=40 if quick else 600, data_of="ks-pdequinox"),
        "darcy-pdequinox": dict(
            data=darcy_data,
            ndim=2,
            n=16 if quick else 64,
            num=40 if quick else 500,
            num_test=20 if quick else 100,
            width=4 if quick else 16,
            host_modes=4 if quick else 8,
            host_steps=20 if quick else 1200,
            concepts=4 if quick else 16,
            modes=None,
            lam=0.003,
            unrolled=20,
            sae_steps=10 if quick else 200,
        ),
    }


def make_host(name: str, setup: dict, x, y, cache: pathlib.Path, key):
    """The host, trained on (x, y) or read from the cache, and the time its training took."""
    steps, width, modes = setup["host_steps"], setup["width"], setup["host_modes"]
    stem = f"host_{name}_{len(x)}_{x.shape[-1]}_{width}_{steps}"
    if name.endswith("pdequinox"):
        ndim, channels = setup["ndim"], x.shape[1]
        model = pdeqx.arch.ClassicFNO(
            ndim, channels, 1, hidden_channels=width, num_modes=modes, key=key
        )
        model, seconds = cached_equinox(
            cache / f"{stem}.eqx",
            model,
            lambda m: train_equinox(m, x, y, steps, jr.fold_in(key, 1)),
        )
        return EquinoxHost(model, lambda m: m.blocks[1]), seconds
    import torch
    from neuralop.models import FNO

    torch.manual_seed(0)
    model = FNO(n_modes=(modes,), in_channels=1, out_channels=1, hidden_channels=width, n_layers=4)
    path = cache / f"{stem}.npz"  # the weights only (neuraloperator's state also holds functions)
    seconds = 0.0
    if path.exists():
        with np.load(path) as stored:
            weights = {k: torch.as_tensor(v) for k, v in stored.items()}
        missing = model.load_state_dict(weights, strict=False).missing_keys
        if missing:
            raise ValueError(f"the cached host {path} lacks the weights {missing}.")
        model.eval()
    else:
        start = time.perf_counter()
        model = train_torch(model, x, y, steps, seed=1)
        seconds = time.perf_counter() - start
        path.parent.mkdir(parents=True, exist_ok=True)
        weights = {k: v for k, v in model.state_dict().items() if isinstance(v, torch.Tensor)}
        np.savez(path, **{k: v.detach().numpy() for k, v in weights.items()})
    return TorchHost(model, "fno_blocks", call=1), seconds


@eqx.filter_jit
def _encode(sae, signals, grid):
    return jax.vmap(sae, in_axes=(0, None))(signals, grid)


def encode(sae, signals, grid, batch: int = 100):
    parts = [_encode(sae, signals[i : i + batch], grid) for i in range(0, len(signals), batch)]
    return tuple(jnp.concatenate(p) for p in zip(*parts))


def train_sae(signals, grid, setup: dict, key) -> eqs.SAE:
    kd, ki, kf = jr.split(key, 3)
    dictionary = eqs.Spectral(grid, signals.shape[1], setup["concepts"], setup["modes"], key=kd)
    dictionary = eqs.init_from_data(dictionary, signals, grid, key=ki)
    sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(setup["lam"]), setup["unrolled"]), dictionary)
    sae = sae.with_scale_of(signals, grid)
    steps = setup["sae_steps"]
    sae, _ = eqs.fit(
        sae,
        signals,
        optimizer=optax.adam(optax.cosine_decay_schedule(3e-3, steps)),
        steps=steps,
        batch_size=min(BATCH, len(signals)),
        key=kf,
        loss=eqs.SAELoss(l1=0.3 * setup["lam"]),
        progress=False,
    )
    return sae


HOSTS = ("ks-pdequinox", "ks-torch", "darcy-pdequinox")


def keys(name: str, setup: dict):
    """The keys of a host's data, training and SAE: fixed by its name (not by the order of
    `--only`), and the data's shared by hosts with the same `data_of` (one cached file)."""
    _, kh, ks = jr.split(jr.fold_in(jr.key(0), HOSTS.index(name)), 3)
    shared = setup.get("data_of", name)
    return jr.split(jr.fold_in(jr.key(0), HOSTS.index(shared)), 3)[0], kh, ks


def study(name: str, setup: dict, cache: pathlib.Path) -> dict:
    kd, kh, ks = keys(name, setup)
    x_fine, y_fine = setup["data"](setup, cache, kd)
    num_train = setup["num"] - setup["num_test"]
    sub = (Ellipsis,) + (slice(None, None, 2),) * setup["ndim"]
    x_train, y_train = x_fine[sub], y_fine[sub]
    host, host_seconds = make_host(name, setup, x_train[:num_train], y_train[:num_train], cache, kh)
    fields = host.fields(x_train[:num_train])
    mean = jnp.mean(fields, axis=0)
    signals = fields - mean
    grid = eqs.Grid(signals.shape[2:])
    start = time.perf_counter()
    sae = train_sae(signals, grid, setup, ks)
    sae_seconds = time.perf_counter() - start
    rows = {}
    for label, x, y in (
        ("train grid", x_train[num_train:], y_train[num_train:]),
        ("2x finer", x_fine[num_train:], y_fine[num_train:]),
    ):
        host_error = float(eqs.operators.relative_l2_error(host.predict(x), y))
        mean_error = host.error(x, MeanField(mean), y)
        test_fields = host.fields(x)
        centred = test_fields - MeanField(mean)(test_fields[0])
        reconstruction, codes = encode(sae, centred, eqs.Grid(centred.shape[2:]))
        replace = eqs.operators.Reconstruction(sae, mean)
        spliced = host.error(x, replace, y)
        rows[label] = {
            "n": int(x.shape[-1]),
            "host_error": host_error,
            "mean_ablation_error": mean_error,
            "explained_variance": float(eqs.metrics.explained_variance(centred, reconstruction)),
            "l0_per_point": float(eqs.metrics.l0(codes)) / np.prod(codes.shape[2:]),
            "dead_fraction": float(eqs.metrics.dead_fraction(codes)),
            "splice_vs_host": host.error(x, replace, None),
            "splice_error": spliced,
            "recovered": (mean_error - spliced) / (mean_error - host_error),
        }
    return {
        "host_seconds": host_seconds,
        "sae_seconds": sae_seconds,
        "channels": int(signals.shape[1]),
        "concepts": setup["concepts"],
        "rows": rows,
    }


def report(name: str, result: dict) -> list[str]:
    lines = [
        f"{name}: host trained in {result['host_seconds']:.0f} s (0: cached), SAE-FNO "
        f"({result['concepts']} concepts on {result['channels']} channels) in "
        f"{result['sae_seconds']:.0f} s"
    ]
    header = (
        f"{'grid':<11}{'n':>4}{'host err':>9}{'mean abl':>9}{'expl.var':>9}{'L0/pt':>7}"
        f"{'dead':>6}{'splice(host)':>13}{'splice err':>11}{'recovered':>10}"
    )
    lines += [header, "-" * len(header)]
    for label, r in result["rows"].items():
        lines.append(
            f"{label:<11}{r['n']:>4}{r['host_error']:>9.4f}{r['mean_ablation_error']:>9.4f}"
            f"{r['explained_variance']:>9.3f}{r['l0_per_point']:>7.2f}{r['dead_fraction']:>6.2f}"
            f"{r['splice_vs_host']:>13.4f}{r['splice_error']:>11.4f}{r['recovered']:>10.3f}"
        )
    return lines


def main(out: pathlib.Path, cache: pathlib.Path, quick: bool, only: list[str]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    results, lines = {}, []
    for name in only:
        start = time.perf_counter()
        results[name] = study(name, setups(quick)[name], cache)
        results[name]["seconds"] = time.perf_counter() - start
        block = report(name, results[name])
        print("\n".join(block) + f"\n({results[name]['seconds']:.0f} s)\n", flush=True)
        lines += block + [""]
    (out / "real_hosts.json").write_text(json.dumps(results, indent=2))
    (out / "real_hosts.txt").write_text("\n".join(lines))
    return results


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs"))
    parser.add_argument("--cache", type=pathlib.Path, default=pathlib.Path("outputs/cache"))
    parser.add_argument("--quick", action="store_true", help="fewer samples and steps")
    parser.add_argument("--only", nargs="+", default=list(HOSTS), choices=HOSTS)
    args = parser.parse_args()
    main(args.out, args.cache, args.quick, args.only)
