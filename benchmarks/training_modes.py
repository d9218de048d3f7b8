"""Which gradient finds the true concepts? Unrolled backpropagation, implicit gradients and
alternating minimisation, compared on the data of `recovery_families.py` with the same starts
and the same data order.

Every mode solves the same lasso (lambda = 0.5, the function SAEs' default, on data of unit
mean energy) and refits it on its support (`Debiased`, 10 CG steps). The modes differ in what
the gradient of the dictionary sees:

- `unrolled`: backpropagation through 50 FISTA steps and the refit, with an l1 term of 0.05 in
  the outer loss (the default until 2026-12-05);
- `refit only`: the FISTA codes are held constant and the gradient flows through the CG refit
  alone (`Debiased(Alternating(Unrolled(.., 100)))`), l1 0;
- `implicit`: the lasso solved to a tolerance (`FixedPoint`, rtol = atol = 1e-3, at most 500
  steps), differentiated by the implicit function theorem, then refitted; l1 0.05;
- `alternating` (**the default**): 100 FISTA steps and the refit, all held constant
  (`Alternating(Debiased(Unrolled(.., 100)))`), so a step moves the atoms on the
  reconstruction error at fixed codes, as classical dictionary learning does; l1 0 (an l1 term
  would have no gradient);
- `alternating, solved`: the same with the lasso solved to the tolerance of `implicit`.

Each mode runs 300 Adam steps of 32 (lr 1e-2, cosine decay), from the spread-out start from the
data (`init_from_data`), on the windowed SAE-FNO (`--model`) of `recovery_families.py`. The
report gives, per family and mode over `--seeds`: the fraction recovered at |cos| > 0.95 and
0.99 (up to shift and sign), the mean matched |cos|, and the wall time of the training call
(compilation included, no persistent cache).

    python benchmarks/training_modes.py       # bumps, Gabor, asymmetric; seeds 0-2; noiseless
    python benchmarks/training_modes.py --families bumps --modes unrolled alternating --no-record
    python benchmarks/training_modes.py --quick --no-record   # a smoke run, numbers meaningless
"""

import argparse
import sys

import jax
import numpy as np
from _common import append
from recovery_families import (
    NOISE,
    QUICK,
    SAE_FUNCTIONS,
    Sizes,
    learned_atoms,
    model_dictionary,
    problems,
    score,
    train_sae,
)

import equisae as eqs

LAMBDA = SAE_FUNCTIONS["lam"]
SOLVED = dict(rtol=1e-3, atol=1e-3, max_steps=500)  # `implicit` and `alternating, solved`
MODES = ("unrolled", "refit only", "implicit", "alternating", "alternating, solved")
L1 = {"unrolled": 0.05, "implicit": 0.05}  # the outer loss's l1 term (0 for the others)


def encoder(mode: str, quick: bool) -> eqs.AbstractEncoder:
    """The encoder of one training mode (every one ends in the 10-step refit)."""
    sparsity = eqs.SoftThreshold(LAMBDA)
    steps = 10 if quick else 100
    if mode == "unrolled":
        return eqs.Debiased(eqs.Unrolled(sparsity, steps // 2), 10)
    if mode == "refit only":
        return eqs.Debiased(eqs.Alternating(eqs.Unrolled(sparsity, steps)), 10)
    if mode == "implicit":
        return eqs.Debiased(eqs.FixedPoint(sparsity, **SOLVED), 10)
    if mode == "alternating":
        return eqs.Alternating(eqs.Debiased(eqs.Unrolled(sparsity, steps), 10))
    if mode == "alternating, solved":
        return eqs.Alternating(eqs.Debiased(eqs.FixedPoint(sparsity, **SOLVED), 10))
    raise ValueError(f"unknown mode {mode!r}; the modes are {', '.join(MODES)}.")


def run(model: str, family: str, mode: str, seed: int, sizes: Sizes, quick: bool) -> dict:
    problem = problems(family, seed, sizes)[NOISE.index("noiseless")]
    settings = sizes.sae | {"l1": L1.get(mode, 0.0)}
    dictionary = model_dictionary(model, problem, settings)
    sae, seconds = train_sae(dictionary, problem, settings, seed, encoder(mode, quick))
    jax.clear_caches()  # every fit compiles programs of its own (see recovery_families.py)
    return score(problem, learned_atoms(sae, problem.grid)) | {"seconds": seconds}


def table(results: dict) -> str:
    lines = [
        "| family | gradient | at 0.95 mean (min) | at 0.99 mean | mean \\|cos\\| | s (mean) |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for (family, mode), runs in results.items():
        at95 = [r["at 0.95"] for r in runs]
        lines.append(
            f"| {family} | {mode} | {np.mean(at95):.2f} ({np.min(at95):.2f}) "
            f"| {np.mean([r['at 0.99'] for r in runs]):.2f} "
            f"| {np.mean([r['mean cos'] for r in runs]):.3f} "
            f"| {np.mean([r['seconds'] for r in runs]):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--families", nargs="+", default=["bumps", "gabor", "asymmetric"])
    parser.add_argument("--modes", nargs="+", choices=MODES, default=list(MODES))
    models = ["SAE-FNO", "windowed SAE-FNO", "lifted SAE-FNO", "SAE-CNN"]
    parser.add_argument("--model", default="windowed SAE-FNO", choices=models)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="a smoke run: numbers meaningless")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    sizes = QUICK if args.quick else Sizes()
    results = {}
    for family in args.families:
        for mode in args.modes:
            runs = [run(args.model, family, mode, s, sizes, args.quick) for s in args.seeds]
            results[(family, mode)] = runs
            shown = ", ".join(f"{r['at 0.95']:.2f} ({r['seconds']:.0f} s)" for r in runs)
            print(f"{family}, {mode}: {shown}", flush=True)
    text = table(results)
    print(text)
    if not args.no_record and not args.quick:
        note = (
            f"{args.model}, noiseless data of `recovery_families.py` (8 concepts, asymmetric 5; "
            f"1 to 5 events at continuous positions), seeds {' '.join(map(str, args.seeds))}: "
            "the same start, data and order for every mode. Fractions of the concepts at "
            "|cos| > 0.95 (mean over seeds, the worst in brackets) and 0.99; s: the training "
            "call, compilation included."
        )
        append(
            "Training modes: unrolled, implicit and alternating minimisation",
            " ".join(["python", *sys.argv]),
            note + "\n\n" + text,
        )


if __name__ == "__main__":
    main()
