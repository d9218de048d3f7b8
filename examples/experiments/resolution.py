"""Experiment 4: resolution.

The study of `examples/resolution.py` (see its page), repeated over seeds: an SAE-FNO and an
SAE-CNN trained at one grid and run on coarser and finer grids of the same continuous functions,
scored on every grid by the explained variance, the fraction of concepts recovered (|cos| > 0.99,
sign- and shift-aware) and the F1 of the code supports. The functions of that example are
imported, not copied; seed 0 is the run documented there.

The 2-D study is much more expensive than the 1-D one, so it runs on the first half of the seeds
(at least one).

    python examples/experiments/resolution.py           # about 9 minutes on 2 CPU cores
    python examples/experiments/resolution.py --quick   # 1-D, one seed, 100 steps (CI)
"""

import importlib.util
import pathlib
import sys

import jax.random as jr
import matplotlib.pyplot as plt
import numpy as np

if __package__ in (None, ""):
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
import _common as common


def _example():
    """`examples/resolution.py`, imported under another name (this file has the same one)."""
    path = pathlib.Path(__file__).parents[1] / "resolution.py"
    spec = importlib.util.spec_from_file_location("resolution_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


example = _example()
METRICS = [
    ("explained_variance", "explained variance"),
    ("recovered", "fraction recovered"),
    ("code_f1", "code F1"),
]


def main(argv=None) -> dict:
    p = common.parser(__doc__)
    p.add_argument("--dims", type=int, nargs="+", default=None, help="1 and/or 2 (both)")
    args = p.parse_args(argv)
    if args.replot:
        return common.replot(args.out, "resolution", lambda n: figure(n["dims"]))
    seeds = args.seeds if args.seeds is not None else (1 if args.quick else 3)
    dims = args.dims or ([1] if args.quick else [1, 2])
    timer = common.Timer()
    results, lines = {}, []
    for ndim in dims:
        runs = seeds if ndim == 1 else max(1, seeds // 2)
        studies = [
            example.study(
                ndim, args.quick, jr.fold_in(jr.key(seed), ndim), 100 if args.quick else None
            )
            for seed in range(runs)
        ]
        lines += example.report(ndim, studies[0]) + [""]
        first = studies[0]
        results[f"{ndim}d"] = {
            "train_n": first["train_n"],
            "sizes": first["sizes"],
            "seeds": runs,
            "models": {
                name: {
                    "train_seconds": common.summary(
                        [s["models"][name]["train_seconds"] for s in studies]
                    ),
                    "grids": {
                        n: {
                            key: common.summary(
                                [s["models"][name]["grids"][n][key] for s in studies]
                            )
                            for key, _ in METRICS
                        }
                        for n in first["sizes"]
                    },
                }
                for name in first["models"]
            },
        }
    print("seed 0:\n" + "\n".join(lines))
    rows = rows_of(results)
    print(f"mean over seeds (1-D: {seeds}, 2-D: {max(1, seeds // 2)}):")
    print(common.table(rows, COLUMNS))
    numbers = {"seeds": seeds, "quick": args.quick, "dims": results, "table": rows}
    return common.write(args.out, "resolution", numbers, figure(results), timer())


COLUMNS = [
    ("dim", "dim", ""),
    ("model", "model", ""),
    ("n", "n", ""),
    ("explained_variance", "expl. var", ".3f"),
    ("recovered", "recovered", ".2f"),
    ("code_f1", "code F1", ".2f"),
]


def rows_of(results: dict) -> list[dict]:
    rows = []
    for dim, r in results.items():
        for name, model in r["models"].items():
            for n, numbers in model["grids"].items():
                rows.append(
                    {
                        "dim": dim,
                        "model": name,
                        "n": f"{n}" + (" (train)" if n == r["train_n"] else ""),
                    }
                    | {key: numbers[key]["mean"] for key, _ in METRICS}
                )
    return rows


def figure(results: dict):
    fig, axes = plt.subplots(
        len(results), len(METRICS), figsize=(4.5 * len(METRICS), 3.4 * len(results)), squeeze=False
    )
    for row, (dim, r) in zip(axes, results.items()):
        for ax, (key, title) in zip(row, METRICS):
            for i, (name, model) in enumerate(r["models"].items()):
                sizes = r["sizes"]
                grids = {int(n): g for n, g in model["grids"].items()}  # str keys from JSON
                mean = np.array([grids[n][key]["mean"] for n in sizes])
                low = np.array([grids[n][key]["min"] for n in sizes])
                high = np.array([grids[n][key]["max"] for n in sizes])
                ax.plot(sizes, mean, "o-", color=f"C{i}", label=name)
                ax.fill_between(sizes, low, high, color=f"C{i}", alpha=0.2)
            ax.axvline(r["train_n"], color="0.6", ls=":", lw=1)
            ax.set_xscale("log", base=2)
            ax.set_xlabel("grid points per axis (dotted: training grid)")
            ax.set_title(f"{dim}, {r['seeds']} seed(s): {title}", fontsize=9)
        row[0].legend(fontsize=8)
    fig.suptitle("resolution: trained at one grid, run on others (band: seed range)")
    fig.tight_layout()
    return fig


if __name__ == "__main__":
    main()
