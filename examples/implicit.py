"""Sparse inference to convergence: the standard vector recovery problem trained with FixedPoint
(FISTA to tolerance, implicit gradients) and ODEFlow (the locally competitive algorithm to
steady state, implicit gradients), next to Unrolled (30 FISTA steps, backpropagation).

m = 50, p = 100, s = 5, amplitudes U[1, 2] with random sign, 20 000 samples; each model from the
same random dictionary, Adam 1e-2, batch 256.

    python examples/implicit.py                # about 4 minutes on 2 CPU cores
    python examples/implicit.py --steps 200    # shorter
"""

import argparse
import json
import pathlib
import time

import jax.random as jr
import numpy as np
import optax

import equisae as eqs

LAMBDA = 0.3


def main(steps: int, out: pathlib.Path) -> dict:
    truth = eqs.data.VectorModel(jr.key(0), dim=50, concepts=100, sparsity=5)
    data = truth.sample(jr.key(1), 20_000)
    grid = eqs.Grid(())
    encoders = {
        "Unrolled (T=30)": eqs.Unrolled(eqs.SoftThreshold(LAMBDA), 30),
        "FixedPoint": eqs.FixedPoint(eqs.SoftThreshold(LAMBDA), rtol=1e-4, atol=1e-4),
        "ODEFlow": eqs.ODEFlow(eqs.SoftThreshold(LAMBDA), rtol=1e-4, atol=1e-4),
    }
    rows = {}
    for name, encoder in encoders.items():
        sae = eqs.SAE(encoder, eqs.Dense(grid, 50, 100, key=jr.key(2)))
        start = time.perf_counter()
        sae, history = eqs.fit(
            sae,
            data.signals,
            optimizer=optax.adam(1e-2),
            steps=steps,
            batch_size=256,
            key=jr.key(3),
            progress=False,
        )
        total = time.perf_counter() - start
        result = eqs.metrics.recovery(data.concepts, sae.dictionary.atoms(grid))
        # the first steps pay the compilation; time the rest
        warm = history["seconds"][-1] - history["seconds"][min(10, steps - 1)]
        rows[name] = {
            "recovered": result.fraction,
            "mean_sine_distance": result.mean_sine_distance,
            "ms_per_step": 1000 * warm / max(steps - 11, 1),
            "total_seconds": total,
            "inference_steps": float(np.mean(history["inference_steps"][-50:])),
            "converged": float(np.mean(history["converged"])),
        }
    columns = [
        ("recovered", 10),
        ("sine dist", 11),
        ("ms/step", 9),
        ("inference steps", 17),
        ("converged", 11),
    ]
    header = f"{'encoder':<17}" + "".join(f"{name:>{width}}" for name, width in columns)
    print(header)
    print("-" * len(header))
    for name, r in rows.items():
        print(
            f"{name:<17}{r['recovered']:>10.2f}{r['mean_sine_distance']:>11.3f}{r['ms_per_step']:>9.1f}"
            f"{r['inference_steps']:>17.1f}{r['converged']:>11.2f}"
        )
    out.mkdir(parents=True, exist_ok=True)
    (out / "implicit.json").write_text(json.dumps(rows, indent=2))
    return rows


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, default=1000)
    parser.add_argument("--out", type=pathlib.Path, default=pathlib.Path("outputs"))
    args = parser.parse_args()
    main(args.steps, args.out)
