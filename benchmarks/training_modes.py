"""Which gradient finds the true concepts: unrolled backpropagation, implicit gradients or
alternating minimisation, on the same problems, starts and data order.

- `unrolled`: `Unrolled(SoftThreshold(lam), T)`, backpropagation through the T FISTA steps
  (the recommended recipe of `examples/recovery.py`).
- `implicit`: `FixedPoint(SoftThreshold(lam), ridge=1e-3)` to 1e-4, differentiated by the
  implicit function theorem.
- `alternating`: `Alternating(FixedPoint(...))`, the codes solved to 1e-4 and held constant,
  so a step moves the dictionary through the decoding only (classical dictionary learning
  with an Adam step on the dictionary).

Problems (each from a start from the data, Adam with a cosine decay, an l1 term of half of
lambda in the outer loss; lambda in the data's units):

- `vectors`: m = 50, p = 100, s = 5, 8000 samples, 800 steps of batch 256 (lambda 0.3);
- `smooth`: 6 band-limited concepts (modes <= 24) at n = 128, one event, an SAE-FNO with the
  25 lowest modes, 600 steps of batch 32 (lambda 0.1);
- `bumps`: 4 localized concepts at n = 128, two events, an SAE-CNN with 8 filters of 64 taps,
  1000 steps of batch 32 (lambda 0.1).

Reported per problem and mode, over `--seeds`: the fraction recovered at |cos| > 0.95 and
0.99 (shift-aware for functions), the mean matched |cos| and the training wall time.

    python benchmarks/training_modes.py                  # 3 seeds, every problem and mode
    python benchmarks/training_modes.py --quick --no-record
"""

import argparse
import sys
import time

import jax.random as jr
import numpy as np
import optax
from _common import append

import equisae as eqs


def problem(name: str, key, quick: bool):
    """`(truth, data, grid, dictionary, settings)` of one problem."""
    k_truth, k_data, k_model = jr.split(key, 3)
    num = 500 if quick else (8000 if name == "vectors" else 4000)
    if name == "vectors":
        grid = eqs.Grid(())
        truth = eqs.data.VectorModel(k_truth, dim=50, concepts=100, sparsity=5)
        data = truth.sample(k_data, num)
        dictionary = eqs.Dense(grid, 50, 100, key=k_model)
        return truth, data, grid, dictionary, dict(lam=0.3, steps=800, batch=256, unrolled=30)
    grid = eqs.Grid(128)
    if name == "smooth":
        concepts, spikes = eqs.data.smooth(k_truth, 6, bandwidth=24), 1
        dictionary = eqs.Spectral(grid, 1, 6, 25, key=k_model)
        settings = dict(lam=0.1, steps=600, batch=32, unrolled=100)
    else:
        concepts, spikes = eqs.data.bumps(k_truth, 4, spread=0.1), 2
        dictionary = eqs.Convolutional(grid, 1, 8, 64, key=k_model)
        settings = dict(lam=0.1, steps=1000, batch=32, unrolled=100)
    truth = eqs.data.FunctionalModel(concepts, spikes=spikes, lattice=64)
    return truth, truth.sample(k_data, num, grid), grid, dictionary, settings


def encoder(mode: str, lam: float, unrolled: int, quick: bool) -> eqs.AbstractEncoder:
    sparsity = eqs.SoftThreshold(lam)
    if mode == "unrolled":
        return eqs.Unrolled(sparsity, 10 if quick else unrolled)
    exact = eqs.FixedPoint(sparsity, ridge=1e-3, rtol=1e-4, atol=1e-4, max_steps=500)
    return exact if mode == "implicit" else eqs.Alternating(exact)


def run(name: str, mode: str, seed: int, quick: bool) -> dict:
    key = jr.key(seed)
    truth, data, grid, dictionary, s = problem(name, jr.fold_in(key, 0), quick)
    dictionary = eqs.init_from_data(dictionary, data.signals, key=jr.fold_in(key, 1))
    sae = eqs.SAE(encoder(mode, s["lam"], s["unrolled"], quick), dictionary)
    steps = 30 if quick else s["steps"]
    start = time.perf_counter()
    sae, _ = eqs.fit(
        sae,
        data.signals,
        optimizer=optax.adam(optax.cosine_decay_schedule(1e-2, steps)),
        steps=steps,
        batch_size=s["batch"],
        key=jr.fold_in(key, 2),
        loss=eqs.SAELoss(l1=s["lam"] / 2),
        progress=False,
    )
    seconds = time.perf_counter() - start
    functions = grid.ndim > 0
    result = eqs.metrics.recovery(
        data.concepts,
        sae.dictionary.atoms(grid),
        shift_invariant=functions,
        upsample=8 if functions else 1,
    )
    return {
        "0.95": float(np.mean(result.cosine > 0.95)),
        "0.99": float(np.mean(result.cosine > 0.99)),
        "cos": float(np.mean(result.cosine)),
        "seconds": seconds,
    }


def table(results: dict) -> str:
    lines = [
        "| problem | gradient | at 0.95 (mean, min) | at 0.99 (mean) | mean \\|cos\\| | seconds |",
        "|---|---|---|---:|---:|---:|",
    ]
    for (name, mode), runs in results.items():
        at95 = [r["0.95"] for r in runs]
        lines.append(
            f"| {name} | {mode} | {np.mean(at95):.2f}, {np.min(at95):.2f} "
            f"| {np.mean([r['0.99'] for r in runs]):.2f} "
            f"| {np.mean([r['cos'] for r in runs]):.3f} "
            f"| {np.mean([r['seconds'] for r in runs]):.1f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--problems", nargs="+", default=["vectors", "smooth", "bumps"])
    parser.add_argument("--modes", nargs="+", default=["unrolled", "implicit", "alternating"])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--quick", action="store_true", help="a smoke run: numbers meaningless")
    parser.add_argument("--no-record", action="store_true", help="do not append to RESULTS.md")
    args = parser.parse_args()
    results = {}
    for name in args.problems:
        for mode in args.modes:
            runs = [run(name, mode, seed, args.quick) for seed in args.seeds]
            results[(name, mode)] = runs
            print(name, mode, runs, flush=True)
    text = table(results)
    print(text)
    if not args.no_record:
        note = (
            f"Seeds {args.seeds}; each run from a start from the data, the same data, start "
            "and order for every gradient. Seconds: training only, compile included."
        )
        append(
            "Training modes: unrolled, implicit and alternating minimisation",
            " ".join(["python", *sys.argv]),
            note + "\n\n" + text,
        )


if __name__ == "__main__":
    main()
