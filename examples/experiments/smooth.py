"""Experiment 2: smooth concepts.

The paper argues that an SAE-FNO, whose kernels are given by their lowest K Fourier modes, is
biased towards smooth concepts, and that this helps recovery when the concepts are smooth. Here
SAE-FNOs with K = 4, 8, 16 and all modes, and an SAE-CNN with full-width filters (the same model
as the SAE-FNO with all modes, parameterised by grid values), are trained on data made of
shifted copies of 4 concepts from five families, from smooth to rough, on a grid of 64 points:

- smooth f<=3, smooth f<=7, smooth f<=15: random Fourier series with every frequency up to 3, 7,
  15 and none above;
- gabor: Gaussian envelopes times cosines of frequency 2 to 20;
- rough: random Fourier series up to frequency 31 (the grid's limit) decaying like (1+f)^-1/2.

A model keeps frequencies |f| < K, so the SAE-FNO with K = 4 can represent only the first family
exactly. Recorded per family and seed: the fraction of concepts recovered (|cos| > 0.99, sign-
and shift-aware), the mean sine distance, the explained variance in training, and the error of
the matched atoms per frequency band (the share of the unit-norm error energy
||aligned atom - true atom||^2 in f < 4, 4 <= f < 8, 8 <= f < 16 and f >= 16).

    python examples/experiments/smooth.py           # about 9 minutes on 2 CPU cores
    python examples/experiments/smooth.py --quick   # two families, two models (CI)
"""

import sys

import equinox as eqx
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

import equisae as eqs

if __package__ in (None, ""):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import _common as common

N, CONCEPTS, LAMBDA, UNROLLED = 64, 4, 0.1, 50
GRID = eqs.Grid(N)
FAMILIES = {
    "smooth f<=3": lambda key: eqs.data.smooth(key, CONCEPTS, bandwidth=3),
    "smooth f<=7": lambda key: eqs.data.smooth(key, CONCEPTS, bandwidth=7),
    "smooth f<=15": lambda key: eqs.data.smooth(key, CONCEPTS, bandwidth=15),
    "gabor": lambda key: eqs.data.gabor(key, CONCEPTS, frequency=(2.0, 20.0)),
    "rough": lambda key: eqs.data.rough(key, CONCEPTS, bandwidth=N // 2 - 1),
}
MODELS = ["SAE-FNO K=4", "SAE-FNO K=8", "SAE-FNO K=16", "SAE-FNO all", "SAE-CNN"]
BANDS = [(0, 4), (4, 8), (8, 16), (16, N // 2 + 1)]


def padded(concepts: eqs.data.FourierConcepts, bandwidth: int) -> eqs.data.FourierConcepts:
    """The same functions with zero coefficients up to `bandwidth`, so that every family has
    arrays of one shape (and the data are sampled by one compiled program)."""
    extra = bandwidth - concepts.bandwidth
    return eqs.data.FourierConcepts(
        jnp.pad(concepts.coefficients, ((0, 0), (0, 0), (extra, extra)))
    )


@eqx.filter_jit
def sample(model: eqs.data.FunctionalModel, key, examples: int):
    return model.sample(key, examples, GRID).signals


@eqx.filter_jit
def build(name: str, key) -> eqs.SAE:
    if name == "SAE-CNN":
        dictionary = eqs.Convolutional(GRID, 1, CONCEPTS, N, key=key)
    else:
        modes = None if name.endswith("all") else int(name.split("=")[1])
        dictionary = eqs.Spectral(GRID, 1, CONCEPTS, modes, key=key)
    return eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(LAMBDA), UNROLLED), dictionary)


@eqx.filter_jit
def atoms_of(models: eqs.SAE):
    return eqx.filter_vmap(lambda m: m.dictionary.atoms(GRID))(models)


def band_energy(functions: np.ndarray) -> np.ndarray:
    """Energy of 1-D functions `(..., n)` in each band of `BANDS` (Parseval, L2 on [0, 1))."""
    spectrum = np.abs(np.fft.rfft(functions, axis=-1) / functions.shape[-1]) ** 2
    spectrum[..., 1 : (N + 1) // 2] *= 2  # the negative frequencies
    return np.stack([spectrum[..., lo:hi].sum(-1) for lo, hi in BANDS], axis=-1)


def main(argv=None) -> dict:
    args = common.parser(__doc__).parse_args(argv)
    if args.replot:
        return common.replot(args.out, "smooth", figure)
    seeds = common.seeds_of(args)
    timer = common.Timer()
    families = ["smooth f<=3", "rough"] if args.quick else list(FAMILIES)
    models_run = ["SAE-FNO K=8", "SAE-CNN"] if args.quick else MODELS
    steps, examples = (60, 300) if args.quick else (1000, 2000)
    key = jr.key(0)
    bandwidth = max(FAMILIES[name](key).bandwidth for name in families)
    # data set (family f, seed s) is number f * seeds + s; its concepts are drawn per seed
    truths, signals = [], []
    for f, family in enumerate(families):
        for s in range(seeds):
            concepts = FAMILIES[family](jr.fold_in(jr.fold_in(key, 10 + f), s))
            model = eqs.data.FunctionalModel(padded(concepts, bandwidth), spikes=1, lattice=N)
            truths.append(np.asarray(concepts(GRID)))
            signals.append(sample(model, jr.fold_in(jr.fold_in(key, 100 + f), s), examples))
    signals = jnp.stack(signals)
    truth_bands = band_energy(np.stack(truths)[:, :, 0])  # (sets, p, bands)
    results = {
        "families": families,
        "bands": [f"{lo}<=f<{hi}" for lo, hi in BANDS],
        "truth_band_energy": {
            family: truth_bands[f * seeds : (f + 1) * seeds].mean((0, 1))
            for f, family in enumerate(families)
        },
        "models": {},
    }
    for m, name in enumerate(models_run):
        members = len(families) * seeds
        stack = eqs.stack(
            [build(name, jr.fold_in(jr.fold_in(key, 1000 + m), i)) for i in range(members)]
        )
        start = common.Timer()
        stack, history = common.train(
            stack,
            signals,
            range(members),
            GRID,
            loss=eqs.SAELoss(l1=0.3 * LAMBDA),
            steps=steps,
            batch_size=32,
            learning_rate=1e-2,
            key=jr.fold_in(key, 2000),
        )
        seconds = start()
        atoms = np.asarray(atoms_of(stack))
        per_family = {}
        for f, family in enumerate(families):
            found, sine, bands = [], [], []
            for s in range(seeds):
                i = f * seeds + s
                r = common.recovery(truths[i], atoms[i], GRID)
                error = r.align_atoms(atoms[i]) - truths[i]
                found.append(r.fraction)
                sine.append(r.mean_sine_distance)
                bands.append(band_energy(error[:, 0]).mean(0))
            ev = history["explained_variance"][-50:, f * seeds : (f + 1) * seeds].mean(0)
            per_family[family] = {
                "recovered": common.summary(found),
                "sine_distance": common.summary(sine),
                "explained_variance": common.summary(ev),
                "band_error": np.mean(bands, axis=0),
            }
        results["models"][name] = {"train_seconds": seconds, "families": per_family}
        print(f"{name}: trained {members} members in {seconds:.0f} s")

    rows = [
        {
            "family": family,
            "model": name,
            "recovered": r["families"][family]["recovered"]["mean"],
            "sine": r["families"][family]["sine_distance"]["mean"],
            "ev": r["families"][family]["explained_variance"]["mean"],
        }
        | {f"b{j}": v for j, v in enumerate(r["families"][family]["band_error"])}
        for family in families
        for name, r in results["models"].items()
    ]
    print(common.table(rows, COLUMNS))
    numbers = {"seeds": seeds, "quick": args.quick, "steps": steps} | results | {"table": rows}
    return common.write(args.out, "smooth", numbers, figure(results), timer())


COLUMNS = [
    ("family", "family", ""),
    ("model", "model", ""),
    ("recovered", "recovered", ".2f"),
    ("sine", "sine dist", ".3f"),
    ("ev", "expl. var", ".3f"),
] + [(f"b{j}", f"err {lo}<=f<{hi}", ".3f") for j, (lo, hi) in enumerate(BANDS)]


def figure(results: dict):
    families, models = results["families"], list(results["models"])
    fig, axes = plt.subplots(2, 2, figsize=(13, 8))
    axes = axes.ravel()
    x = np.arange(len(families))
    width = 0.8 / len(models)
    for i, name in enumerate(models):
        r = results["models"][name]["families"]
        for ax, key in zip(axes[:2], ("sine_distance", "recovered")):
            mean = np.array([r[f][key]["mean"] for f in families])
            low = mean - np.array([r[f][key]["min"] for f in families])
            high = np.array([r[f][key]["max"] for f in families]) - mean
            offset = (i - (len(models) - 1) / 2) * width
            ax.bar(x + offset, mean, width, yerr=(low, high), label=name, capsize=2)
        errors = np.array([r[f]["band_error"] for f in families])  # (families, bands)
        axes[2].plot(x, errors[:, :2].sum(1), "o-", label=name)
        axes[3].plot(x, errors[:, 2:].sum(1), "o-", label=name)
    titles = (
        "mean sine distance (lower is better)",
        "fraction recovered (|cos| > 0.99)",
        "error energy of matched atoms at f < 8",
        "error energy of matched atoms at f >= 8",
    )
    for ax, title in zip(axes, titles):
        ax.set_xticks(x, families, rotation=20, fontsize=8)
        ax.set_title(title, fontsize=10)
    axes[1].set_ylim(0, 1.05)
    axes[0].legend(fontsize=7)
    fig.suptitle("smooth concepts: families from smooth (left) to rough (right); bars: seed range")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
