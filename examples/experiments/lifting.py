"""Experiment 1: lifting as a preconditioner.

The paper reports that lifting acts as a preconditioner: less correlated atoms and faster
recovery. Two forms are compared with the unlifted model:

- untied (`eqs.Lifted`): encode P x in a lifted space with a dictionary D_l, decode through a
  projection Q; P, D_l and Q are learned freely;
- tied (`eqs.Tied`): the concepts D stay in data space, decoding is D z, and a lift A enters
  only the metric of inference (on A x with A D). Four ways to choose A: set from the
  training data by `eqs.whitening` (the inverse square root of the data's second moment, for
  functions per Fourier mode, scaled to keep the data's energy) and kept fixed; random and
  fixed (a Gaussian matrix, or random Fourier multipliers); learned with the dictionary from
  the identity; set from the current dictionary by `eqs.gram_whitening` (A = (D D*)^{-1/2},
  per Fourier mode for functions) and rebuilt every `REFRESH` steps.

An SAE and its lifted forms (and an SAE-FNO and its lifted forms) are trained on the same
data, with the same defaults (a start from the data, `eqs.init_from_data`, and the data's scale,
`sae.with_scale_of`, one per problem), encoder (unrolled FISTA), penalty, optimiser (Adam; a
refreshed lift changes between steps, the optimiser's state carries on), batches and number of
steps, on three problems:

- vectors: the sparse vector model, m = 32, p = 64, s = 3, Gaussian atoms; lifted to h = 32
  and h = 64 channels;
- coherent vectors: the same, but the true atoms share a common direction (|cos| about 0.5);
- functions: shifted copies of 4 smooth concepts on a grid of 64 points (SAE-FNO, modes up to
  the concepts' band); lifted pointwise from 1 to h = 2 and h = 4 channels.

Recorded, per seed: recovery of the effective atoms (Q D_l e_k for untied models, D e_k for
tied ones) against the training step (mean sine distance and fraction with |cos| > 0.99), the
steps and wall time to 90% and 99% recovered, the mutual coherence and the condition number of
the Gram matrix of the effective atoms and of the atoms inference works with (D, D_l in the
lifted space, or A D), and the iterations sparse inference needs to reach a tolerance
(FixedPoint, FISTA with restarts, relative tolerance 1e-5), before and after training, against
the condition number of the metric-weighted Gram D* M D of inference (for functions per
Fourier mode: max_f lambda_max / min_f lambda_min over the kept modes, on the range) and
against kappa_S = lambda_max(D* M D) / lambda_min(D_S* M D_S) on the support S of each
converged code (median over the test signals).

    python examples/experiments/lifting.py           # about 26 minutes on 2 busy CPU cores
    python examples/experiments/lifting.py --quick   # the vector problem only, 100 steps (CI)
"""

import dataclasses
import sys

import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

import equisae as eqs

if __package__ in (None, ""):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import _common as common

SETTINGS = {
    # penalty, unrolled FISTA steps, l1 weight of the loss, batch size, learning rate; lam and
    # l1 refer to data of unit mean energy (the models carry the data's scale, 2.65 for the
    # vectors and 1.53 for the functions): the same penalties as 0.3 and 0.1 (l1 0.03) in the
    # data's units
    "vectors": dict(lam=0.11, unrolled=30, l1=0.0, batch=128, lr=1e-2),
    "coherent vectors": dict(lam=0.11, unrolled=30, l1=0.0, batch=128, lr=1e-2),
    "functions": dict(lam=0.065, unrolled=50, l1=0.02, batch=32, lr=1e-2),
}
M, P, S = 32, 64, 3  # vector problem: dimension, atoms, active atoms per sample
N, CONCEPTS, BANDWIDTH = 64, 4, 8  # function problem: grid, concepts, their band
# the models compared: the unlifted one (0), untied lifts to width h (for vectors h = 2m = p
# makes the lifted dictionary square), and tied lifts chosen four ways
TIED = ("whitened", "random", "learned", "gram")
REFRESH = 100  # steps between the rebuilds of the "gram" lift from the current dictionary
VARIANTS = {
    "vectors": [0, M, 2 * M, *TIED],
    "coherent vectors": [0, M, 2 * M, *TIED],
    "functions": [0, 2, CONCEPTS, *TIED],
}


@eqx.filter_jit
def ground_truth(setting: str, key, examples: int):
    """`(grid, train signals, test signals, true atoms)` of one seed."""
    kd, ks, kt, kc = jr.split(key, 4)
    if setting == "functions":
        grid = eqs.Grid(N)
        model = eqs.data.FunctionalModel(
            eqs.data.smooth(kd, CONCEPTS, bandwidth=BANDWIDTH), spikes=1, lattice=N
        )
        return (
            grid,
            model.sample(ks, examples, grid).signals,
            model.sample(kt, 64, grid).signals,
            model.concepts(grid),
        )
    grid = eqs.Grid(())
    model = eqs.data.VectorModel(kd, dim=M, concepts=P, sparsity=S)
    atoms = model.dictionary.T
    if setting == "coherent vectors":
        # every atom = a Gaussian direction plus a shared one of the same size: |cos| ~ 0.5
        shared = jr.normal(kc, (M,))
        atoms = jr.normal(kd, (P, M)) + shared
        atoms = atoms / jnp.linalg.norm(atoms, axis=1, keepdims=True)
    train, test = model.sample(ks, examples).codes, model.sample(kt, 64).codes
    return grid, train @ atoms, test @ atoms, atoms


def name_of(setting: str, variant) -> str:
    base = "SAE-FNO" if setting == "functions" else "SAE"
    if variant == "gram":
        return base + f", tied, Gram (every {REFRESH})"
    if variant in TIED:
        return base + f", tied, {variant}"
    return base + (f", lifted h={variant}" if variant else "")


def tied_lift(setting: str, how: str, grid: eqs.Grid, train, key):
    """The tied lift A of one seed: whitening its training data (fixed), random (fixed), the
    identity (learned), or the identity (fixed) that `start` replaces by the Gram whitening of
    the started dictionary ("gram"). For functions A acts per Fourier mode (a pointwise lift of
    one channel is a scalar and cannot precondition)."""
    modes = BANDWIDTH + 1 if setting == "functions" else None
    if how == "whitened":
        # exact whitening (floor 1e-6): the kept modes are the data's band, none of them
        # near zero (the default spectral floor, 0.1, is for lifts of every mode)
        return eqs.whitening(train, grid, modes=modes, floor=1e-6)
    if modes is None:
        lift = eqs.Pointwise(M, M, key=key)
        weight = jr.normal(key, (M, M)) / np.sqrt(M) if how == "random" else jnp.eye(M)
    else:
        lift = eqs.SpectralConv(1, 1, modes, key=key)
        identity = jnp.zeros_like(lift.weight).at[0].set(1.0)
        weight = lift.weight if how == "random" else identity
    lift = eqx.tree_at(lambda layer: layer.weight, lift, weight)
    return lift if how == "learned" else eqs.Frozen(lift)


@eqx.filter_jit
def build(setting: str, variant, grid: eqs.Grid, key, lift=None) -> eqs.SAE:
    """An SAE (SAE-FNO for functions): unlifted (`variant` 0), lifted to `variant` channels
    (untied), or tied with `lift` (`variant` one of `TIED`)."""
    k1, k2, k3 = jr.split(key, 3)
    config = SETTINGS[setting]
    channels = 1 if setting == "functions" else M
    h = variant if isinstance(variant, int) else 0
    if setting == "functions":
        inner = eqs.Spectral(grid, h or channels, CONCEPTS, BANDWIDTH + 1, key=k1)
    else:
        inner = eqs.Dense(grid, h or channels, P, key=k1)
    if variant in TIED:
        dictionary = eqs.Tied(inner, lift)
    elif h:
        lifting, projection = eqs.Pointwise(channels, h, key=k2), eqs.Pointwise(h, channels, key=k3)
        dictionary = eqs.Lifted(lifting, inner, projection)
    else:
        dictionary = inner
    encoder = eqs.Unrolled(eqs.SoftThreshold(config["lam"]), config["unrolled"])
    return eqs.SAE(encoder, dictionary.normalise(grid))


def start(model: eqs.SAE, variant, train, grid: eqs.Grid, scale: float, key) -> eqs.SAE:
    """The robust-recovery defaults, for every variant alike: atoms from the data
    (`init_from_data`: the concepts D of a tied model, the effective atoms of an untied one)
    and the data's scale; for "gram" the lift is then set from the started dictionary."""
    dictionary = eqs.init_from_data(model.dictionary, train, grid, key=key)
    if variant == "gram":
        dictionary = regram(dictionary, grid)
    return dataclasses.replace(model, dictionary=dictionary, scale=scale)


def regram(dictionary: eqs.Tied, grid: eqs.Grid) -> eqs.Tied:
    """The tied dictionary with its lift rebuilt from its concepts: (D D*)^{-1/2}, fixed."""
    return eqx.tree_at(lambda d: d.lifting, dictionary, eqs.gram_whitening(dictionary, grid))


def regram_model(model: eqs.SAE, grid: eqs.Grid) -> eqs.SAE:
    return dataclasses.replace(model, dictionary=regram(model.dictionary, grid))


@eqx.filter_jit
def atom_sets(models: eqs.SAE, grid: eqs.Grid):
    """The effective atoms of every member, and the atoms that sparse inference works with."""

    def one(model):
        dictionary = model.dictionary
        signal = jnp.zeros((dictionary.channels, *grid.shape))
        _, inference = dictionary.lift(signal, grid)  # D, D_l or A D
        return dictionary.atoms(grid), inference.atoms(grid)

    return eqx.filter_vmap(one)(models)


@eqx.filter_jit
def inference_matrices(models: eqs.SAE, grid: eqs.Grid):
    """The matrix of the operator that sparse inference works with (D, D_l or A D, not
    normalised) for every member: one row per code entry (concept, and for functions position),
    shape (members, code entries, signal entries)."""

    def one(model):
        dictionary = model.dictionary
        _, inference = dictionary.lift(jnp.zeros((dictionary.channels, *grid.shape)), grid)
        shape = inference.code_shape(grid)
        units = jnp.eye(int(np.prod(shape))).reshape(-1, *shape)
        return jax.vmap(lambda z: inference(z, grid).ravel())(units)

    return eqx.filter_vmap(one)(models)


def operator_condition(matrix, grid: eqs.Grid, modes: int | None) -> float:
    """The condition number of the metric-weighted Gram D* M D of inference on its range. On
    vectors, of the p x p Gram of the rows (lambda_max / lambda_r, r = min(p, h)). On 1-D
    functions (shift-invariant atoms, `modes` kept) the Gram acts per Fourier mode f as
    K(f)^H K(f) with K(f) the h x p matrix of the atoms' Fourier coefficients: max_f
    lambda_max / min_f lambda_r over the kept modes, r = min(h, p). (The Gram of the unshifted
    atoms, `common.gram_condition`, cannot see a preconditioner that varies with frequency.)
    lambda_r is floored at 1e-16 lambda_max: a singular Gram reads 1e16."""
    matrix = np.asarray(matrix, np.float64)
    if grid.ndim == 0:
        values = np.linalg.eigvalsh(matrix @ matrix.T)[::-1]
        return float(values[0] / max(values[min(matrix.shape) - 1], 1e-16 * values[0]))
    n = grid.shape[0]
    atoms = matrix.reshape(-1, n, matrix.shape[1] // n, n)[:, 0]  # (p, h, n): at position 0
    coefficients = np.fft.rfft(atoms, axis=-1)[..., :modes]  # (p, h, K)
    per_mode = np.moveaxis(coefficients, -1, 0)  # (K, p, h)
    gram = np.conj(np.swapaxes(per_mode, -1, -2)) @ per_mode  # (K, h, h): same non-zero spectrum
    values = np.linalg.eigvalsh(gram)[:, ::-1][:, : min(atoms.shape[:2])]
    return float(values.max() / max(values.min(), 1e-16 * values.max()))


def support_condition(matrix, codes) -> float:
    """Median over signals of kappa_S = lambda_max(D* M D) / lambda_min(D_S* M D_S), S the
    support of the signal's converged code (lambda_min floored at 1e-12 lambda_max)."""
    matrix = np.asarray(matrix, np.float64)
    gram = matrix @ matrix.T
    top = np.linalg.eigvalsh(gram)[-1]
    kappas = []
    for code in np.asarray(codes).reshape(len(codes), -1):
        support = np.flatnonzero(code != 0)
        if support.size:
            low = np.linalg.eigvalsh(gram[np.ix_(support, support)])[0]
            kappas.append(top / max(low, 1e-12 * top))
    return float(np.median(kappas)) if kappas else float("nan")


def conditioning(models: eqs.SAE, seeds: int, grid: eqs.Grid, codes) -> list[dict]:
    effective, inference = (np.asarray(a) for a in atom_sets(models, grid))
    matrices = np.asarray(inference_matrices(models, grid))
    shifts = grid.ndim > 0
    modes = BANDWIDTH + 1 if shifts else None
    return [
        {
            "coherence": eqs.metrics.mutual_coherence(effective[s], shift_invariant=shifts),
            "gram_condition": common.gram_condition(effective[s]),
            "inference_coherence": eqs.metrics.mutual_coherence(
                inference[s], shift_invariant=shifts
            ),
            "inference_gram_condition": common.gram_condition(inference[s]),
            "inference_condition": operator_condition(matrices[s], grid, modes),
            "support_condition": support_condition(matrices[s], codes[s]),
        }
        for s in range(seeds)
    ]


def iterations(models: eqs.SAE, count: int, test, grid: eqs.Grid, lam: float):
    """Mean iterations of FISTA with restarts to a relative tolerance of 1e-5, the fraction
    converged, per member, and the codes."""
    encoder = eqs.FixedPoint(eqs.SoftThreshold(lam), rtol=1e-5, atol=1e-5, max_steps=3000)
    solvers = eqs.stack(
        [dataclasses.replace(common.member(models, i), encoder=encoder) for i in range(count)]
    )
    _, codes, diagnostics = common.infer(solvers, test, grid)
    return (
        np.asarray(jnp.mean(diagnostics.steps, axis=1)),
        np.asarray(jnp.mean(diagnostics.converged, axis=1)),
        np.asarray(codes),
    )


def run(
    setting: str, variants: list, seeds: int, steps: int, every: int, examples: int, key
) -> dict:
    config = SETTINGS[setting]
    truths = [ground_truth(setting, jr.fold_in(key, s), examples) for s in range(seeds)]
    grid = truths[0][0]
    train = jnp.stack([t[1] for t in truths])
    test = jnp.stack([t[2] for t in truths])
    scale = float(eqs.data_scale(train.reshape(-1, *train.shape[2:]), grid))  # one per problem
    true_atoms = [np.asarray(t[3]).reshape((len(t[3]), -1) + grid.shape) for t in truths]
    if grid.ndim == 0:
        true_atoms = [a.reshape(len(a), -1) for a in true_atoms]
    results = {
        "truth": {
            "coherence": common.summary(
                [eqs.metrics.mutual_coherence(a, shift_invariant=grid.ndim > 0) for a in true_atoms]
            ),
            "gram_condition": common.summary([common.gram_condition(a) for a in true_atoms]),
        }
    }
    for variant in variants:
        name = name_of(setting, variant)
        lifts = [
            tied_lift(setting, variant, grid, train[s], jr.fold_in(jr.fold_in(key, 3000), s))
            if variant in TIED
            else None
            for s in range(seeds)
        ]
        models = eqs.stack(
            [
                start(
                    build(setting, variant, grid, jr.fold_in(jr.fold_in(key, 1000), s), lifts[s]),
                    variant,
                    train[s],
                    grid,
                    scale,
                    jr.fold_in(jr.fold_in(key, 4000), s),
                )
                for s in range(seeds)
            ]
        )
        curve = {"step": [], "sine_distance": [], "recovered": []}

        def evaluate(step, models):
            atoms = np.asarray(atom_sets(models, grid)[0])
            found = [common.recovery(true_atoms[s], atoms[s], grid) for s in range(seeds)]
            curve["step"].append(step)
            curve["sine_distance"].append([r.mean_sine_distance for r in found])
            curve["recovered"].append([r.fraction for r in found])

        def refresh(step, models):
            if variant != "gram" or step % REFRESH:
                return models
            return eqs.stack([regram_model(common.member(models, s), grid) for s in range(seeds)])

        iterations_before, _, codes = iterations(models, seeds, test, grid, config["lam"])
        before = conditioning(models, seeds, grid, codes)
        timer = common.Timer()
        models, history = common.train(
            models,
            train,
            range(seeds),
            grid,
            loss=eqs.SAELoss(l1=config["l1"]),
            steps=steps,
            batch_size=config["batch"],
            learning_rate=config["lr"],
            key=jr.fold_in(key, 2000),
            every=every,
            evaluate=evaluate,
            refresh=refresh,
        )
        seconds = timer()
        iterations_after, converged, codes = iterations(models, seeds, test, grid, config["lam"])
        after = conditioning(models, seeds, grid, codes)
        recovered = np.asarray(curve["recovered"])  # (evaluations, seeds)
        reach, reach99 = (
            [common.first_reaching(curve["step"], recovered[:, s], level) for s in range(seeds)]
            for level in (0.9, 0.99)
        )
        results[name] = {
            "curve": curve,
            "train_seconds": seconds,
            # every step costs the same, so the wall time to a step is its share of the run's
            "seconds_per_step": seconds / steps,
            "final_recovered": common.summary(recovered[-1]),
            "final_sine_distance": common.summary(np.asarray(curve["sine_distance"])[-1]),
            "steps_to_90_percent": reach,
            "steps_to_99_percent": reach99,
            "explained_variance": common.summary(history["explained_variance"][-every:].mean(0)),
            "before": {k: common.summary([b[k] for b in before]) for k in before[0]},
            "after": {k: common.summary([a[k] for a in after]) for k in after[0]},
            "iterations_before": common.summary(iterations_before),
            "iterations_after": common.summary(iterations_after),
            "converged_after": common.summary(converged),
        }
    return results


def rows_of(results: dict) -> list[dict]:
    rows = []
    for setting, result in results.items():
        for name, r in result.items():
            if name == "truth":
                continue
            rows.append(
                {
                    "setting": setting,
                    "model": name,
                    "recovered": r["final_recovered"]["mean"],
                    "sine": r["final_sine_distance"]["mean"],
                    "reach": _reach(r["steps_to_90_percent"], r["seconds_per_step"]),
                    "reach99": _reach(r["steps_to_99_percent"], r["seconds_per_step"]),
                    "mu": r["after"]["coherence"]["mean"],
                    "cond": r["after"]["gram_condition"]["mean"],
                    "mu_inf": r["after"]["inference_coherence"]["mean"],
                    "cond_inf": r["after"]["inference_gram_condition"]["mean"],
                    "kappa0": r["before"]["inference_condition"]["mean"],
                    "kappa": r["after"]["inference_condition"]["mean"],
                    "kappa_s0": r["before"]["support_condition"]["mean"],
                    "kappa_s": r["after"]["support_condition"]["mean"],
                    "it0": r["iterations_before"]["mean"],
                    "it": r["iterations_after"]["mean"],
                    "seconds": r["train_seconds"],
                }
            )
    return rows


def theory_rows(results: dict) -> list[dict]:
    """The rate check: for every tied model, the iteration ratio (plain / tied) that
    iterations ~ sqrt(kappa) log(1/eps) predicts from the full condition number and from
    kappa_S, against the measured ratio, at the start and after training (means over seeds)."""
    rows = []
    for setting, result in results.items():
        plain = result[name_of(setting, 0)]
        for variant in TIED:
            r = result.get(name_of(setting, variant))
            if r is None:
                continue
            row = {"setting": setting, "model": name_of(setting, variant)}
            for when, suffix in (("before", "0"), ("after", "")):
                full = [x[when]["inference_condition"]["mean"] for x in (plain, r)]
                support = [x[when]["support_condition"]["mean"] for x in (plain, r)]
                its = [x[f"iterations_{when}"]["mean"] for x in (plain, r)]
                row["full" + suffix] = float(np.sqrt(full[0] / full[1]))
                row["support" + suffix] = float(np.sqrt(support[0] / support[1]))
                row["measured" + suffix] = its[0] / its[1]
            rows.append(row)
    return rows


THEORY_COLUMNS = [
    ("setting", "setting", ""),
    ("model", "model", ""),
    ("full0", "sqrt cond ratio (start)", ".2f"),
    ("support0", "sqrt kappa_S ratio (start)", ".2f"),
    ("measured0", "iteration ratio (start)", ".2f"),
    ("full", "sqrt cond ratio (trained)", ".2f"),
    ("support", "sqrt kappa_S ratio (trained)", ".2f"),
    ("measured", "iteration ratio (trained)", ".2f"),
]


def _reach(steps: list, seconds_per_step: float) -> str:
    """Mean steps (and seconds) to a level over the seeds that reached it, and how many did."""
    reached = [s for s in steps if s is not None]
    if not reached:
        return f"- (0/{len(steps)})"
    mean = np.mean(reached)
    return f"{mean:.0f}, {mean * seconds_per_step:.1f} s ({len(reached)}/{len(steps)})"


COLUMNS = [
    ("setting", "setting", ""),
    ("model", "model", ""),
    ("recovered", "recovered", ".2f"),
    ("sine", "sine dist", ".3f"),
    ("reach", "steps to 90%", ""),
    ("reach99", "steps to 99%", ""),
    ("mu", "coherence", ".3f"),
    ("kappa0", "cond (start)", ".3g"),
    ("kappa", "cond (trained)", ".3g"),
    ("kappa_s0", "kappa_S (start)", ".3g"),
    ("kappa_s", "kappa_S (trained)", ".3g"),
    ("it0", "iters (start)", ".0f"),
    ("it", "iters (trained)", ".0f"),
    ("seconds", "train s", ".0f"),
]


def figure(results: dict):
    fig, axes = plt.subplots(2, len(results), figsize=(4.2 * len(results), 6.5), squeeze=False)
    for column, (setting, result) in enumerate(results.items()):
        for i, (name, r) in enumerate((n, r) for n, r in result.items() if n != "truth"):
            steps = np.asarray(r["curve"]["step"])
            for row, key in enumerate(("sine_distance", "recovered")):
                values = np.asarray(r["curve"][key])
                ax = axes[row, column]
                ax.plot(steps, values, color=f"C{i}", lw=0.6, alpha=0.5)
                ax.plot(steps, values.mean(1), color=f"C{i}", lw=2, label=name)
                ax.set_xlabel("training step")
        axes[0, column].set_title(setting)
        axes[0, column].set_ylabel("mean sine distance")
        axes[1, column].set_ylabel("fraction recovered (|cos| > 0.99)")
        axes[0, column].legend(fontsize=8)
    fig.suptitle("lifting: recovery against training step (thin: seeds, thick: mean)")
    fig.tight_layout()
    return fig


def main(argv=None) -> dict:
    args = common.parser(__doc__).parse_args(argv)
    if args.replot:
        numbers = common.replot(args.out, "lifting", lambda n: figure(n["settings"]))
        print(common.table(theory_rows(numbers["settings"]), THEORY_COLUMNS))
        return numbers
    seeds = common.seeds_of(args, default=5)
    timer = common.Timer()
    key = jr.key(0)
    results = {}
    for i, setting in enumerate(SETTINGS):
        if args.quick and setting != "vectors":
            continue  # the quick run (CI) checks the pipeline on the cheapest problem only
        vector = setting != "functions"
        if args.quick:
            steps, every, examples = (100, 50, 1000) if vector else (100, 50, 500)
        else:
            steps, every, examples = (1500, 50, 8000) if vector else (1000, 50, 2000)
        variants = [0, 2 * M, *TIED] if args.quick else VARIANTS[setting]
        results[setting] = run(setting, variants, seeds, steps, every, examples, jr.fold_in(key, i))
    rows = rows_of(results)
    theory = theory_rows(results)
    print(common.table(rows, COLUMNS))
    print(common.table(theory, THEORY_COLUMNS))
    numbers = {
        "seeds": seeds,
        "quick": args.quick,
        "settings": results,
        "table": rows,
        "theory": theory,
    }
    return common.write(args.out, "lifting", numbers, figure(results), timer())


if __name__ == "__main__":
    main()
