"""The concept atlas of a pdequinox FNO: train the host on exponax Burgers data, capture the
field after its second block, find its concepts with an SAE-FNO, and write one page with, for
each of the most used concepts, its kernel and spectrum, where it fires on the inputs that
activate it most, and what ablating it does to the host's output.

    python examples/atlas.py            # about a minute on 2 CPU cores (data and host cached)
    python examples/atlas.py --out docs/figures   # the figure of the docs
    python examples/atlas.py --quick    # a smaller run
"""

import argparse
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import optax
import pdequinox as pdeqx

import equisae as eqs


def second_block(model):
    return model.blocks[1]


@eqx.filter_jit
def predict(model, inputs):
    return jax.vmap(model)(inputs)


def train_host(model, inputs, outputs, steps: int, key):
    optimizer = optax.adam(optax.cosine_decay_schedule(3e-3, steps))
    state = optimizer.init(eqx.filter(model, eqx.is_array))

    @eqx.filter_jit
    def step(model, state, index):
        def loss(m):
            return eqs.operators.relative_l2_error(jax.vmap(m)(inputs[index]), outputs[index])

        value, grads = eqx.filter_value_and_grad(loss)(model)
        updates, state = optimizer.update(grads, state)
        return eqx.apply_updates(model, updates), state, value

    for i in range(steps):
        index = jr.choice(jr.fold_in(key, i), len(inputs), (32,), replace=False)
        model, state, _ = step(model, state, index)
    return model


@eqx.filter_jit
def reconstruct(sae, signals, grid):
    return jax.vmap(sae, in_axes=(0, None))(signals, grid)[0]


def main(out: pathlib.Path, cache: pathlib.Path, quick: bool, lam: float = 0.02) -> dict:
    kd, kh, kt, ks, kf = jr.split(jr.key(0), 5)
    num, steps, sae_steps = (240, 300, 150) if quick else (600, 1500, 600)
    data = eqs.data.burgers(kd, num, 128, fine=256, cache=cache / f"atlas_burgers_{num}.npz")
    train, test = slice(0, num - 40), slice(num - 40, num)
    host = pdeqx.arch.ClassicFNO(1, 1, 1, hidden_channels=16, num_modes=16, key=kh)
    stored = cache / f"atlas_host_{num}_{steps}.eqx"
    start = time.perf_counter()
    if stored.exists():
        host = eqx.tree_deserialise_leaves(stored, host)
    else:
        host = train_host(host, data.inputs[train], data.outputs[train], steps, kt)
        stored.parent.mkdir(parents=True, exist_ok=True)
        eqx.tree_serialise_leaves(stored, host)
    prediction = predict(host, data.inputs[test])
    host_error = float(eqs.operators.relative_l2_error(prediction, data.outputs[test]))
    print(f"host: ClassicFNO, test error {host_error:.4f} ({time.perf_counter() - start:.0f} s)")

    fields = eqs.operators.capture(host, second_block, data.inputs[train])
    mean = jnp.mean(fields, axis=0)
    grid = eqs.Grid(128)
    signals = fields - mean
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(lam), 10), eqs.Spectral(grid, 16, 16, 17, key=kf)
    ).with_scale_of(signals, grid)
    sae, _ = eqs.fit(
        sae,
        signals,
        optimizer=optax.adam(optax.cosine_decay_schedule(3e-3, sae_steps)),
        steps=sae_steps,
        batch_size=32,
        key=ks,
        loss=eqs.SAELoss(l1=0.3 * lam),
        progress=False,
    )
    explained = float(eqs.metrics.explained_variance(signals, reconstruct(sae, signals, grid)))
    print(f"SAE-FNO: explained variance {explained:.3f}")
    replace = eqs.operators.Reconstruction(sae, mean)
    spliced = float(
        eqs.operators.splice_error(
            host, second_block, data.inputs[test], replace, targets=data.outputs[test]
        )
    )
    print(f"SAE-FNO spliced into block 2: test error {spliced:.4f}")
    out.mkdir(parents=True, exist_ok=True)
    result = eqs.operators.atlas(
        host,
        second_block,
        sae,
        data.inputs[test],
        out / "atlas_burgers.png",
        mean=mean,
        concepts=5,
        title=(
            f"Concept atlas: pdequinox ClassicFNO on Burgers, field after block 2 "
            f"(host error {host_error:.3f}, with the SAE-FNO spliced in {spliced:.3f})"
        ),
    )
    for k in result["concepts"]:
        print(
            f"concept {k:2d}: use {result['usage'][k]:.3f}, "
            f"output change when ablated {result['ablation'][k]:.3f}"
        )
    print(f"atlas in {out / 'atlas_burgers.png'}")
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs"))
    parser.add_argument("--cache", type=pathlib.Path, default=pathlib.Path("outputs/cache"))
    parser.add_argument("--quick", action="store_true", help="fewer samples and steps")
    parser.add_argument("--lam", type=float, default=0.02, help="the SAE's threshold")
    args = parser.parse_args()
    main(args.out, args.cache, args.quick, args.lam)
