"""Peak memory and time of one training step (value and gradient) with sparse inference
unrolled for T steps, against inference to convergence with implicit gradients.

Memory is XLA's own account of the compiled step (`Compiled.memory_analysis()`: temporaries
plus arguments plus outputs), exact and the same on every run; time is the best of five.
Two problems: the standard vector SAE (m=50, p=100, batch 256) and a 1-D SAE-FNO (n=256, p=8,
32 modes, batch 32). Appends a table to benchmarks/RESULTS.md.

    python benchmarks/inference_memory.py
    python benchmarks/inference_memory.py --steps 10 50    # a subset of T
"""

import argparse
import sys

import equinox as eqx
import jax.random as jr

import equisae as eqs

sys.path.insert(0, __file__.rsplit("/", 1)[0])
from _common import append, best_of  # noqa: E402

TOLERANCE = 1e-4


def problems():
    vector = eqs.data.VectorModel(jr.key(0))
    grid = eqs.Grid(256)
    functions = eqs.data.FunctionalModel(eqs.data.smooth(jr.key(0), 8, bandwidth=24), spikes=2)
    return {
        "vector SAE (m=50, p=100, batch 256)": (
            eqs.Grid(()),
            eqs.Dense(eqs.Grid(()), 50, 100, key=jr.key(1)),
            vector.sample(jr.key(2), 256).signals,
        ),
        "SAE-FNO (n=256, p=8, 32 modes, batch 32)": (
            grid,
            eqs.Spectral(grid, 1, 8, 32, key=jr.key(1)),
            functions.sample(jr.key(2), 32, grid).signals,
        ),
    }


def measure(encoder, grid, dictionary, batch):
    sae = eqs.SAE(encoder, dictionary)
    loss = eqs.SAELoss(l1=0.03)

    @eqx.filter_jit
    def step(model, batch):
        return eqx.filter_value_and_grad(lambda m: loss(m, batch, grid)[0])(model)

    stats = step.lower(sae, batch).compile().compiled.memory_analysis()
    peak = stats.temp_size_in_bytes + stats.argument_size_in_bytes + stats.output_size_in_bytes
    seconds = best_of(lambda: step(sae, batch))
    return peak, seconds


def main(steps: list[int], record: bool = True) -> str:
    encoders = {f"Unrolled T={t}": eqs.Unrolled(eqs.SoftThreshold(0.1), t) for t in steps}
    encoders["FixedPoint"] = eqs.FixedPoint(eqs.SoftThreshold(0.1), rtol=TOLERANCE, atol=TOLERANCE)
    encoders["ODEFlow"] = eqs.ODEFlow(eqs.SoftThreshold(0.1), rtol=TOLERANCE, atol=TOLERANCE)
    lines = []
    for problem, (grid, dictionary, batch) in problems().items():
        lines += [
            f"**{problem}**",
            "",
            "| inference | peak memory (MB) | step time (ms) |",
            "|---|---:|---:|",
        ]
        for name, encoder in encoders.items():
            peak, seconds = measure(encoder, grid, dictionary, batch)
            lines.append(f"| {name} | {peak / 2**20:.2f} | {1000 * seconds:.1f} |")
            print(lines[-1], flush=True)
        lines.append("")
    table = "\n".join(lines)
    if not record:
        return table
    append(
        "Inference memory: unrolled against implicit",
        "python benchmarks/inference_memory.py",
        f"Implicit solvers at rtol = atol = {TOLERANCE}.\n\n{table}",
    )
    return table


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--steps", type=int, nargs="+", default=[10, 50, 200, 1000])
    parser.add_argument("--no-record", dest="record", action="store_false")
    args = parser.parse_args()
    print(main(args.steps, args.record))
