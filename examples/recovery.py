"""Model recovery on synthetic function data with the four model families.

Data: x(s) = sum_j a_j kappa_{k_j}(s - t_j) on the periodic interval, sampled at n = 128 points:
six smooth band-limited concepts (Fourier modes up to 24), one spike per sample at a grid
position, signed amplitude in [1, 2]. Each family is trained from a random start and compared
with the true concepts after the best one-to-one matching (sign- and shift-invariant; shifts
are searched on a grid 8 times finer, since an atom may match a concept moved by part of a
grid point).

    python examples/recovery.py            # about 2-3 minutes on 2 CPU cores
    python examples/recovery.py --out DIR  # where the figure goes (default: outputs/)
"""

import argparse
import pathlib
import time

import equinox as eqx
import jax
import jax.random as jr
import matplotlib.pyplot as plt
import optax

import equisae as eqs

N, CONCEPTS, SPIKES, BANDWIDTH, LAMBDA = 128, 6, 1, 24, 0.1


def build(family: str, grid: eqs.Grid, key) -> eqs.SAE:
    """One SAE per family, all with unrolled FISTA on the lasso with penalty LAMBDA."""
    k = jr.split(key, 3)
    if family == "SAE":
        # a plain SAE treats each function as a vector of 128 numbers; it needs an atom for every
        # shift it sees, so it gets more atoms than there are concepts
        dictionary = eqs.Dense(grid, 1, 8 * CONCEPTS, key=k[0])
    elif family == "lifted SAE":
        # lifting: each point's value goes to 4 channels, the dictionary lives there, Q projects
        h = 4
        dictionary = eqs.Lifted(
            eqs.Pointwise(1, h, key=k[1]),
            eqs.Dense(grid, h, 8 * CONCEPTS, key=k[0]),
            eqs.Pointwise(h, 1, key=k[2]),
        )
    elif family == "SAE-CNN":
        # full-width filters: the same model as an SAE-FNO that keeps every mode
        dictionary = eqs.Convolutional(grid, 1, CONCEPTS, N, key=k[0])
    elif family == "SAE-FNO":
        # the lowest BANDWIDTH + 1 modes: the concepts' band, nothing above
        dictionary = eqs.Spectral(grid, 1, CONCEPTS, BANDWIDTH + 1, key=k[0])
    else:
        raise ValueError(family)
    return eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(LAMBDA), 100), dictionary)


def main(out: pathlib.Path, steps: int) -> None:
    key_concepts, key_data, key_model, key_fit = jr.split(jr.key(0), 4)
    grid = eqs.Grid(N)
    concepts = eqs.data.smooth(key_concepts, CONCEPTS, bandwidth=BANDWIDTH)
    model = eqs.data.FunctionalModel(concepts, spikes=SPIKES, lattice=N)
    train = model.sample(key_data, 4000, grid)
    test = model.sample(jr.fold_in(key_data, 1), 500, grid)

    families = ["SAE", "lifted SAE", "SAE-CNN", "SAE-FNO"]
    rows, aligned = [], {}
    for family in families:
        sae = build(family, grid, key_model)
        start = time.perf_counter()
        sae, history = eqs.fit(
            sae,
            train.signals,
            optimizer=optax.adam(optax.cosine_decay_schedule(1e-2, steps)),
            steps=steps,
            batch_size=32,
            key=key_fit,
            loss=eqs.SAELoss(l1=0.5 * LAMBDA),
            progress=False,
        )
        seconds = time.perf_counter() - start
        reconstruction, _ = evaluate(sae, test.signals, grid)
        atoms = sae.dictionary.atoms(grid)
        result = eqs.metrics.recovery(train.concepts, atoms, shift_invariant=True, upsample=8)
        aligned[family] = result.align_atoms(atoms)
        rows.append(
            (
                family,
                steps,
                seconds,
                result.fraction,
                result.mean_sine_distance,
                float(eqs.metrics.explained_variance(test.signals, reconstruction)),
            )
        )

    columns = ("steps", "seconds", "recovered", "sine dist", "expl. var")
    header = f"{'family':<12}" + "".join(f"{c:>11}" for c in columns)
    print(header)
    print("-" * len(header))
    for family, n_steps, seconds, fraction, sine, ev in rows:
        print(f"{family:<12}{n_steps:>11}{seconds:>11.1f}{fraction:>11.2f}{sine:>11.3f}{ev:>11.3f}")

    fig, axes = plt.subplots(
        len(families), CONCEPTS, figsize=(2 * CONCEPTS, 1.6 * len(families)), squeeze=False
    )
    for row, family in zip(axes, families):
        eqs.plotting.plot_atoms(row, aligned[family], grid, reference=train.concepts, color="C3")
        row[0].set_ylabel(family, rotation=0, ha="right", va="center")
    fig.suptitle("true concepts (grey) and learned atoms (red), matched up to sign and shift")
    fig.tight_layout()
    out.mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "recovery.png", dpi=120)
    print(f"figure: {out / 'recovery.png'}")


@eqx.filter_jit
def evaluate(sae: eqs.SAE, signals, grid: eqs.Grid):
    """Reconstructions and codes of a batch."""
    return jax.vmap(sae, in_axes=(0, None))(signals, grid)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs"))
    parser.add_argument("--steps", type=int, default=1000)
    args = parser.parse_args()
    main(args.out, args.steps)
