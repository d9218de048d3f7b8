"""Experiment 3: sparsity level and concept utilisation.

How the sparsity penalty lambda of the inner problem shapes what an SAE, an SAE-CNN and an
SAE-FNO learn. For each family, every lambda of the sweep and every seed is one member of a
stack of models, and all members train together in one jitted program: each training step is
one `eqx.filter_vmap` over the members (see `_common.train`). Each seed has its own ground truth;
the members of one seed see the same batches.

- SAE: the sparse vector model, m = 32, 48 true atoms, s = 3 active per sample; the SAE has 64
  atoms, so some may stay unused.
- SAE-CNN (full-width filters) and SAE-FNO (K = 8 modes): shifted copies of 4 smooth concepts
  (frequencies up to 7) on a grid of 64 points, two spikes per sample; the models have 6
  concepts.

Recorded against lambda, on held-out samples: recovery (fraction of true concepts with
|cos| > 0.99 and mean sine distance, sign- and shift-aware), L0 (non-zero code entries per
example: for function codes, over concepts and grid points), explained variance, and the
fraction of dead concepts (never active on the held-out samples).

    python examples/experiments/sparsity.py           # about 8 minutes on 2 CPU cores
    python examples/experiments/sparsity.py --quick   # SAE and SAE-FNO, few steps (CI)
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

M, TRUE_ATOMS, ATOMS, S = 32, 48, 64, 3  # vector problem
N, TRUE_CONCEPTS, CONCEPTS, MODES = 64, 4, 6, 8  # function problem
FAMILIES = {
    # lambdas, unrolled steps, l1 weight of the loss (fixed over the sweep), batch size
    "SAE": dict(lambdas=[0.03, 0.1, 0.2, 0.4, 0.8], unrolled=30, l1=0.0, batch=128),
    "SAE-CNN": dict(lambdas=[0.02, 0.05, 0.1, 0.2, 0.4], unrolled=50, l1=0.03, batch=32),
    "SAE-FNO": dict(lambdas=[0.02, 0.05, 0.1, 0.2, 0.4], unrolled=50, l1=0.03, batch=32),
}


@eqx.filter_jit
def ground_truth(vector: bool, key, examples: int):
    """`(train signals, test signals, true atoms)` of one seed."""
    kd, ks, kt = jr.split(key, 3)
    if vector:
        model = eqs.data.VectorModel(kd, dim=M, concepts=TRUE_ATOMS, sparsity=S)
        grid = eqs.Grid(())
    else:
        grid = eqs.Grid(N)
        concepts = eqs.data.smooth(kd, TRUE_CONCEPTS, bandwidth=7)
        model = eqs.data.FunctionalModel(concepts, spikes=2, lattice=N)
    return (
        model.sample(ks, examples, grid).signals,
        model.sample(kt, 128, grid).signals,
        model.concepts(grid),
    )


@eqx.filter_jit
def build(family: str, lam, key) -> eqs.SAE:
    config = FAMILIES[family]
    if family == "SAE":
        dictionary = eqs.Dense(eqs.Grid(()), M, ATOMS, key=key)
    elif family == "SAE-CNN":
        dictionary = eqs.Convolutional(eqs.Grid(N), 1, CONCEPTS, N, key=key)
    else:
        dictionary = eqs.Spectral(eqs.Grid(N), 1, CONCEPTS, MODES, key=key)
    return eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(lam), config["unrolled"]), dictionary)


@eqx.filter_jit
def evaluate(models: eqs.SAE, test, grid: eqs.Grid):
    """Per member: L0, explained variance, dead fraction on the test signals, and the atoms."""
    reconstruction, codes, _ = common.infer(models, test, grid)
    per_member = eqx.filter_vmap(
        lambda x, r, z: (
            eqs.metrics.l0(z),
            eqs.metrics.explained_variance(x, r),
            eqs.metrics.dead_fraction(z),
        )
    )
    atoms = eqx.filter_vmap(lambda m: m.dictionary.atoms(grid))(models)
    return per_member(test, reconstruction, codes) + (atoms,)


def run(family: str, seeds: int, steps: int, examples: int, key) -> dict:
    config = FAMILIES[family]
    vector = family == "SAE"
    grid = eqs.Grid(()) if vector else eqs.Grid(N)
    truths = [ground_truth(vector, jr.fold_in(key, s), examples) for s in range(seeds)]
    train = jnp.stack([t[0] for t in truths])
    lambdas = config["lambdas"]
    # member (lambda i, seed s) is number i * seeds + s and trains on data set s
    member_data = [s for _ in lambdas for s in range(seeds)]
    models = eqs.stack(
        [
            build(family, jnp.asarray(lam), jr.fold_in(jr.fold_in(key, 1000), s))
            for lam in lambdas
            for s in range(seeds)
        ]
    )
    timer = common.Timer()
    models, history = common.train(
        models,
        train,
        member_data,
        grid,
        loss=eqs.SAELoss(l1=config["l1"]),
        steps=steps,
        batch_size=config["batch"],
        learning_rate=1e-2,
        key=jr.fold_in(key, 2000),
    )
    seconds = timer()
    test = jnp.stack([truths[s][1] for s in member_data])
    l0, ev, dead, atoms = (np.asarray(a) for a in evaluate(models, test, grid))
    dead = np.clip(dead, 0.0, 1.0)
    found = [
        common.recovery(np.asarray(truths[s][2]), atoms[i], grid) for i, s in enumerate(member_data)
    ]

    def per_lambda(values):
        values = np.asarray(values).reshape(len(lambdas), seeds)
        return [common.summary(v) for v in values]

    return {
        "lambdas": lambdas,
        "train_seconds": seconds,
        "members": len(member_data),
        "recovered": per_lambda([r.fraction for r in found]),
        "sine_distance": per_lambda([r.mean_sine_distance for r in found]),
        "l0": per_lambda(l0),
        "explained_variance": per_lambda(ev),
        "dead_fraction": per_lambda(dead),
        "train_l0": per_lambda(history["l0"][-50:].mean(0)),
    }


METRICS = [
    ("recovered", "fraction recovered (|cos| > 0.99)"),
    ("sine_distance", "mean sine distance"),
    ("l0", "L0 (active code entries per example)"),
    ("explained_variance", "explained variance (held out)"),
    ("dead_fraction", "dead concepts (fraction)"),
]


COLUMNS = [
    ("family", "family", ""),
    ("lambda", "lambda", ".3g"),
    ("recovered", "recovered", ".2f"),
    ("sine_distance", "sine dist", ".3f"),
    ("l0", "L0", ".1f"),
    ("explained_variance", "expl. var", ".3f"),
    ("dead_fraction", "dead", ".2f"),
]


def figure(results: dict):
    fig, axes = plt.subplots(
        len(results), len(METRICS), figsize=(17, 3.2 * len(results)), squeeze=False
    )
    for row, (family, r) in zip(axes, results.items()):
        for ax, (key, title) in zip(row, METRICS):
            mean = np.array([v["mean"] for v in r[key]])
            low = np.array([v["min"] for v in r[key]])
            high = np.array([v["max"] for v in r[key]])
            ax.plot(r["lambdas"], mean, "o-")
            ax.fill_between(r["lambdas"], low, high, alpha=0.25)
            ax.set_xscale("log")
            ax.set_xticks(r["lambdas"], [f"{lam:g}" for lam in r["lambdas"]])
            ax.minorticks_off()
            if key in ("recovered", "dead_fraction"):
                ax.set_ylim(-0.05, 1.05)
            ax.set_title(f"{family}: {title}", fontsize=9)
            ax.set_xlabel("lambda")
            if key == "l0":
                ax.set_yscale("log")
    fig.suptitle("sparsity sweep: mean over seeds, band: seed range")
    fig.tight_layout()
    return fig


def main(argv=None) -> dict:
    args = common.parser(__doc__).parse_args(argv)
    if args.replot:
        return common.replot(args.out, "sparsity", lambda n: figure(n["families"]))
    seeds = common.seeds_of(args)
    timer = common.Timer()
    key = jr.key(0)
    results, rows = {}, []
    for i, family in enumerate(FAMILIES):
        if args.quick and family == "SAE-CNN":
            continue  # the quick run (CI) checks the pipeline on two families
        vector = family == "SAE"
        if args.quick:
            steps, examples = (60, 500) if vector else (40, 300)
        else:
            steps, examples = (1500, 8000) if vector else (1000, 2000)
        results[family] = run(family, seeds, steps, examples, jr.fold_in(key, i))
        r = results[family]
        print(f"{family}: {r['members']} members trained together in {r['train_seconds']:.0f} s")
        for j, lam in enumerate(r["lambdas"]):
            rows.append(
                {"family": family, "lambda": lam} | {key: r[key][j]["mean"] for key, _ in METRICS}
            )
    print(common.table(rows, COLUMNS))
    numbers = {"seeds": seeds, "quick": args.quick, "families": results, "table": rows}
    return common.write(args.out, "sparsity", numbers, figure(results), timer())


if __name__ == "__main__":
    main()
