"""Interpreting a neural operator: train an FNO on a PDE, capture its hidden fields, find their
concepts with an SAE-FNO (and a plain SAE for comparison), and splice the SAE back in.

1-D viscous Burgers (u0 -> u(T)), trained at n = 128 and evaluated at n = 128 and n = 256; and
2-D Darcy flow (a -> u), trained at 32 x 32 and evaluated at 32 x 32 and 64 x 64. For the hidden
field v_b of one block b the SAEs are trained on the fields of the training inputs and evaluated
on those of the test inputs:

- explained variance of the field, L0 (active code entries per example, and per grid point),
  fraction of dead concepts (never active on the test set);
- the splice metric: the relative L2 error of the FNO's output when v_b is replaced by the
  SAE's reconstruction, against the FNO's own output and against the PDE's solution, next to
  replacing v_b by its mean over the training set (mean ablation). "Recovered" is
  (E_mean - E_sae) / (E_mean - E_fno) with E the error against the PDE's solution, the analogue
  of "loss recovered" in language-model SAEs.

The SAEs work on the centred, scaled field (v - mean) / scale with one scalar scale; the
reconstruction spliced in is mean + scale * D z.

    python examples/interpret_fno.py            # about 11 minutes on 2 CPU cores (+ data, once)
    python examples/interpret_fno.py --quick    # a smaller run
"""

import argparse
import json
import pathlib
import time

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np
import optax

import equisae as eqs

BATCH = 32


def train_fno(fno, inputs, outputs, steps: int, key, learning_rate: float = 3e-3):
    """Adam with a cosine schedule on the mean relative L2 error."""
    optimizer = optax.adamw(optax.cosine_decay_schedule(learning_rate, steps), weight_decay=1e-4)
    state = optimizer.init(eqx.filter(fno, eqx.is_array))

    @eqx.filter_jit
    def step(fno, state, index):
        def loss(model):
            prediction = jax.vmap(model)(inputs[index])
            return eqs.operators.relative_l2_error(prediction, outputs[index])

        value, grads = eqx.filter_value_and_grad(loss)(fno)
        updates, state = optimizer.update(grads, state, eqx.filter(fno, eqx.is_array))
        return eqx.apply_updates(fno, updates), state, value

    for i in range(steps):
        index = jr.choice(jr.fold_in(key, i), len(inputs), (BATCH,), replace=False)
        fno, state, value = step(fno, state, index)
    return fno


@eqx.filter_jit
def predict(fno, inputs):
    return jax.vmap(fno)(inputs)


def fields_of(fno, inputs, block: int):
    """The hidden field of one block, captured by its path (the same call works for any
    Equinox model, e.g. a pdequinox ClassicFNO with `lambda m: m.blocks[1]`)."""
    return eqs.operators.capture(fno, fno.where(block), inputs)


class MeanField(eqx.Module):
    """Mean ablation: every field replaced by the training mean."""

    mean: jax.Array

    def __call__(self, v):
        return self.mean


@eqx.filter_jit
def encode(sae, signals, grid):
    return jax.vmap(sae, in_axes=(0, None))(signals, grid)


def train_sae(dictionary, signals, lam: float, unrolled: int, steps: int, key) -> eqs.SAE:
    sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(lam), unrolled), dictionary)
    sae, _ = eqs.fit(
        sae,
        signals,
        optimizer=optax.adam(optax.cosine_decay_schedule(3e-3, steps)),
        steps=steps,
        batch_size=BATCH,
        key=key,
        loss=eqs.SAELoss(l1=0.3 * lam),
        progress=False,
    )
    return sae


def sae_numbers(fno, block, sae, mean, scale, grid, inputs, targets, fno_error, mean_error):
    """Explained variance, L0, dead fraction and splice errors of one SAE on one grid."""
    fields = fields_of(fno, inputs, block)
    centred = (fields - mean) / scale
    reconstruction, codes = encode(sae, centred, grid)
    replace = eqs.operators.Reconstruction(sae, mean, scale)
    to_output = eqs.operators.splice_error(fno, block, inputs, replace)
    to_truth = eqs.operators.splice_error(fno, block, inputs, replace, targets=targets)
    l0 = float(eqs.metrics.l0(codes))
    points = grid.size if codes.ndim > 2 else 1
    return {
        "explained_variance": float(eqs.metrics.explained_variance(centred, reconstruction)),
        "l0": l0,
        "l0_per_point": l0 / points,
        "dead_fraction": float(eqs.metrics.dead_fraction(codes)),
        "splice_vs_fno": float(to_output),
        "splice_vs_truth": float(to_truth),
        "recovered": float((mean_error - to_truth) / (mean_error - fno_error)),
        "codes": np.asarray(codes),
    }


def study(name: str, setup: dict, quick: bool, cache: pathlib.Path, key) -> dict:
    """Train the FNO, then the SAEs on one block's fields; numbers on every evaluation grid."""
    kd, kf, kt, ks, kp = jr.split(key, 5)
    start = time.perf_counter()
    data = setup["data"](kd, cache)
    data_seconds = time.perf_counter() - start
    train_n, eval_n = setup["train_n"], setup["eval_n"]
    stride = eval_n // train_n
    sub = (Ellipsis,) + (slice(None, None, stride),) * setup["ndim"]
    num_train = setup["num_train"]
    x_eval, y_eval = setup["normalise"](data.inputs, data.outputs)
    x_train, y_train = x_eval[sub], y_eval[sub]
    grids = {n: eqs.Grid((n,) * setup["ndim"]) for n in (train_n, eval_n)}
    tests = {
        train_n: (x_train[num_train:], y_train[num_train:]),
        eval_n: (x_eval[num_train:], y_eval[num_train:]),
    }

    fno = eqs.operators.FNO(key=kf, **setup["fno"])
    start = time.perf_counter()
    fno = train_fno(fno, x_train[:num_train], y_train[:num_train], setup["fno_steps"], kt)
    jax.block_until_ready(fno)
    fno_seconds = time.perf_counter() - start
    result = {"data_seconds": data_seconds, "fno_seconds": fno_seconds, "grids": {}}
    print(f"{name}: data {data_seconds:.0f} s, FNO trained in {fno_seconds:.0f} s", flush=True)

    block = setup["block"]
    fields = fields_of(fno, x_train[:num_train], block)
    mean = jnp.mean(fields, axis=0)
    scale = jnp.sqrt(jnp.mean((fields - mean) ** 2))
    signals = (fields - mean) / scale
    grid = grids[train_n]
    saes, sae_seconds = {}, {}
    kspec, kdense = jr.split(ks)
    for family, dictionary in (
        ("SAE-FNO", eqs.Spectral(grid, fno.width, setup["concepts"], setup["sae_modes"], key=kp)),
        ("SAE", eqs.Dense(grid, fno.width, setup["dense_concepts"], key=kp)),
    ):
        lam = setup["lambda"][family]
        start = time.perf_counter()
        saes[family] = train_sae(
            dictionary, signals, lam, setup["unrolled"], setup["sae_steps"], kspec
        )
        sae_seconds[family] = time.perf_counter() - start
        print(f"{name}: {family} trained in {sae_seconds[family]:.0f} s", flush=True)
    result["sae_seconds"] = sae_seconds

    for n, (inputs, targets) in tests.items():
        grid = grids[n]
        prediction = predict(fno, inputs)
        fno_error = float(eqs.operators.relative_l2_error(prediction, targets))
        mean_n = mean if n == train_n else eqs.resample(mean, grids[train_n], grid)
        mean_error = float(
            eqs.operators.splice_error(fno, block, inputs, MeanField(mean_n), targets=targets)
        )
        numbers = {
            "fno_error": fno_error,
            "mean_ablation_vs_fno": float(
                eqs.operators.splice_error(fno, block, inputs, MeanField(mean_n))
            ),
            "mean_ablation_vs_truth": mean_error,
            "models": {},
        }
        for family, sae in saes.items():
            if family == "SAE" and n != train_n:
                continue  # a dense dictionary lives on its training grid
            numbers["models"][family] = sae_numbers(
                fno, block, sae, mean_n, scale, grid, inputs, targets, fno_error, mean_error
            )
        result["grids"][n] = numbers
    result.update(fno=fno, saes=saes, mean=mean, scale=scale, tests=tests)
    return result


def report(name: str, result: dict, train_n: int) -> list[str]:
    lines = [
        f"{name}: FNO trained in {result['fno_seconds']:.0f} s at n = {train_n} "
        f"(data {result['data_seconds']:.0f} s); SAE-FNO {result['sae_seconds']['SAE-FNO']:.0f} s, "
        f"SAE {result['sae_seconds']['SAE']:.0f} s"
    ]
    header = (
        f"{'n':>4} {'model':<14}{'expl.var':>9}{'L0':>9}{'L0/pt':>7}{'dead':>6}"
        f"{'splice(FNO)':>12}{'error(PDE)':>11}{'recovered':>10}"
    )
    lines += [header, "-" * len(header)]
    for n, g in result["grids"].items():
        lines.append(
            f"{n:>4} {'FNO':<14}{'':>9}{'':>9}{'':>7}{'':>6}{0.0:>12.4f}{g['fno_error']:>11.4f}"
            f"{1.0:>10.3f}"
        )
        lines.append(
            f"{n:>4} {'mean ablation':<14}{0.0:>9.3f}{'':>9}{'':>7}{'':>6}"
            f"{g['mean_ablation_vs_fno']:>12.4f}{g['mean_ablation_vs_truth']:>11.4f}{0.0:>10.3f}"
        )
        for family, m in g["models"].items():
            lines.append(
                f"{n:>4} {family:<14}{m['explained_variance']:>9.3f}{m['l0']:>9.1f}"
                f"{m['l0_per_point']:>7.2f}{m['dead_fraction']:>6.2f}{m['splice_vs_fno']:>12.4f}"
                f"{m['splice_vs_truth']:>11.4f}{m['recovered']:>10.3f}"
            )
    return lines


def principal_profile(atom: np.ndarray) -> np.ndarray:
    """The concept's dominant spatial profile: its projection on the first left singular
    vector of the (channels, points) matrix, sign fixed so that the largest value is positive."""
    flat = atom.reshape(atom.shape[0], -1)
    u, _, _ = np.linalg.svd(flat, full_matrices=False)
    profile = (u[:, 0] @ flat).reshape(atom.shape[1:])
    return profile * np.sign(profile.flat[np.argmax(np.abs(profile))])


def figure_1d(result: dict, train_n: int, eval_n: int, path: pathlib.Path, top: int = 4):
    sae = result["saes"]["SAE-FNO"]
    codes = result["grids"][train_n]["models"]["SAE-FNO"]["codes"]
    usage = np.mean(np.abs(codes), axis=(0, 2))
    order = np.argsort(usage)[::-1][:top]
    fig, axes = plt.subplots(3, top, figsize=(3.2 * top, 7.5))
    for col, k in enumerate(order):
        ax = axes[0, col]
        for n, style in ((train_n, "-"), (eval_n, "--")):
            grid = eqs.Grid(n)
            atom = np.asarray(sae.dictionary.atoms(grid))[k]
            s = np.arange(n) / n - 0.5
            ax.plot(s, np.fft.fftshift(principal_profile(atom)), style, label=f"n = {n}")
        ax.set_title(f"concept {k} (use {usage[k]:.3f})", fontsize=9)
        ax.set_xlabel("s (centred)")
        if col == 0:
            ax.legend(fontsize=7)
    inputs, targets = result["tests"][train_n]
    s = np.arange(train_n) / train_n
    for row, example in zip(axes[1:], (0, 1)):
        for col, k in enumerate(order):
            ax = row[col]
            ax.plot(s, np.asarray(inputs[example, 0]), color="0.6", lw=1, label="u0")
            ax.plot(s, np.asarray(targets[example, 0]), color="k", lw=1, label="u(T)")
            z = codes[example, k]
            twin = ax.twinx()
            twin.fill_between(s, 0, z, color="C3", alpha=0.5, lw=0)
            reach = 1.05 * float(np.max(np.abs(codes[:2, k]))) or 1.0
            twin.set_ylim(-reach, reach)
            twin.axhline(0.0, color="C3", lw=0.5)
            twin.set_yticks([])
            ax.set_title(f"example {example}: code of concept {k}", fontsize=9)
            if col == 0:
                ax.legend(fontsize=7, loc="upper left")
    fig.suptitle(
        "Burgers FNO, hidden field of block 2. Top: the top SAE-FNO concepts (dominant channel "
        "profile) at both grids.\nBelow: where their codes are active on two test inputs (red, "
        "right axis, zero at its middle)",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    return [int(k) for k in order]


def figure_2d(result: dict, train_n: int, path: pathlib.Path, top: int = 3):
    codes = result["grids"][train_n]["models"]["SAE-FNO"]["codes"]
    sae = result["saes"]["SAE-FNO"]
    usage = np.mean(np.abs(codes), axis=(0, 2, 3))
    order = np.argsort(usage)[::-1][:top]
    inputs, targets = result["tests"][train_n]
    fig, axes = plt.subplots(2, top + 1, figsize=(3 * (top + 1), 6))
    axes[0, 0].imshow(np.asarray(inputs[0, 0]).T, origin="lower", cmap="gray")
    axes[0, 0].set_title("coefficient a", fontsize=9)
    axes[1, 0].imshow(np.asarray(targets[0, 0]).T, origin="lower")
    axes[1, 0].set_title("solution u", fontsize=9)
    for col, k in enumerate(order, 1):
        atom = np.asarray(sae.dictionary.atoms(eqs.Grid((train_n, train_n))))[k]
        axes[0, col].imshow(
            np.fft.fftshift(principal_profile(atom)).T, origin="lower", cmap="RdBu_r"
        )
        axes[0, col].set_title(f"concept {k}", fontsize=9)
        axes[1, col].imshow(np.abs(codes[0, k]).T, origin="lower", cmap="Reds")
        axes[1, col].set_title(f"|code| of concept {k}", fontsize=9)
    for ax in axes.flat:
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    fig.savefig(path, dpi=100)


def setups(quick: bool) -> dict:
    def burgers_data(key, cache):
        num = 240 if quick else 1200
        return eqs.data.burgers(key, num, 256, fine=512, cache=cache / f"burgers_{num}.npz")

    def darcy_data(key, cache):
        num = 120 if quick else 500
        return eqs.data.darcy(key, num, 64, fine=128, cache=cache / f"darcy_{num}.npz")

    def burgers_normalise(x, y):
        return x, y

    def darcy_normalise(a, u):
        # a in {3, 12} -> {-1, 1}; u is about 1e-2: scaled to order one (the relative error
        # does not see the scale)
        return (a - 7.5) / 4.5, 100.0 * u

    return {
        "Burgers": {
            "data": burgers_data,
            "normalise": burgers_normalise,
            "ndim": 1,
            "train_n": 128,
            "eval_n": 256,
            "num_train": 200 if quick else 1000,
            "fno": dict(in_channels=1, out_channels=1, width=32, modes=16, depth=4),
            "fno_steps": 300 if quick else 2500,
            "block": 2,
            "concepts": 32,
            "sae_modes": 17,
            "dense_concepts": 128,
            "lambda": {"SAE-FNO": 0.15, "SAE": 0.2},
            "unrolled": 20,
            "sae_steps": 100 if quick else 1500,
        },
        "Darcy": {
            "data": darcy_data,
            "normalise": darcy_normalise,
            "ndim": 2,
            "train_n": 32,
            "eval_n": 64,
            "num_train": 100 if quick else 400,
            "fno": dict(
                in_channels=1,
                out_channels=1,
                width=16,
                modes=(8, 8),
                depth=4,
                coordinates=True,
            ),
            "fno_steps": 200 if quick else 1200,
            "block": 2,
            "concepts": 16,
            "sae_modes": (9, 9),
            "dense_concepts": 64,
            "lambda": {"SAE-FNO": 0.1, "SAE": 0.1},
            "unrolled": 10,
            "sae_steps": 60 if quick else 400,
        },
    }


def main(out: pathlib.Path, quick: bool, cache: pathlib.Path, which: list[str]) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    key = jr.key(0)
    all_setups = setups(quick)
    numbers, lines = {}, []
    for i, name in enumerate(which):
        setup = all_setups[name]
        result = study(name, setup, quick, cache, jr.fold_in(key, i))
        lines += report(name, result, setup["train_n"]) + [""]
        print("\n".join(report(name, result, setup["train_n"])), flush=True)
        if name == "Burgers":
            top = figure_1d(result, setup["train_n"], setup["eval_n"], out / "interpret_fno.png")
            result["top_concepts"] = top
        else:
            figure_2d(result, setup["train_n"], out / "interpret_fno_darcy.png")
        numbers[name] = {
            k: v
            for k, v in result.items()
            if k in ("data_seconds", "fno_seconds", "sae_seconds", "top_concepts")
        } | {
            "grids": {
                str(n): {k: v for k, v in g.items() if k != "models"}
                | {f: {k: v for k, v in m.items() if k != "codes"} for f, m in g["models"].items()}
                for n, g in result["grids"].items()
            }
        }
    print("\n".join(lines))
    (out / "interpret_fno.json").write_text(json.dumps(numbers, indent=2))
    print(f"figures and numbers in {out}")
    return numbers


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs"))
    parser.add_argument("--cache", type=pathlib.Path, default=pathlib.Path("outputs/cache"))
    parser.add_argument("--quick", action="store_true", help="fewer samples and steps")
    parser.add_argument("--only", nargs="+", default=["Burgers", "Darcy"])
    args = parser.parse_args()
    main(args.out, args.quick, args.cache, args.only)
