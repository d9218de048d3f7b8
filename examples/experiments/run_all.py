"""Run the four experiments of the SAE-NO paper's claims and write a summary table.

    python examples/experiments/run_all.py           # about 35 minutes on 2 CPU cores
    python examples/experiments/run_all.py --quick   # smaller versions (CI), about 2 minutes

Each experiment writes `<name>.png` and `<name>.json` to `--out` (default
`outputs/experiments`; `--out docs/figures/experiments` regenerates the docs' figures); this
script then writes `summary.md` there, with the headline numbers of each. `--seeds` is
passed on to every experiment.
"""

import json
import sys

if __package__ in (None, ""):
    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
import _common as common
import lifting
import resolution
import smooth
import sparsity

EXPERIMENTS = {"lifting": lifting, "smooth": smooth, "sparsity": sparsity, "resolution": resolution}


def summary(numbers: dict) -> str:
    """The Markdown summary of the four experiments' numbers."""
    parts = ["# Experiments: summary", ""]
    quick = any(n["quick"] for n in numbers.values())
    if quick:
        parts += ["*Quick (smoke-test) run: the numbers are not meant to be read as results.*", ""]
    lift = numbers["lifting"]
    parts += [
        "## 1. Lifting as a preconditioner",
        "",
        f"Mean over {lift['seeds']} seeds; steps to 90%: mean over the seeds that got there "
        "(how many did). Coherence of the trained effective atoms; condition number of the "
        "metric-weighted Gram of inference (per Fourier mode for functions) and kappa_S on the "
        "support of the converged codes, at the start and after training; iterations of FISTA "
        "to tolerance at the start and after training.",
        "",
        common.markdown_table(lift["table"], lifting.COLUMNS),
        "",
    ]
    sm = numbers["smooth"]
    parts += [
        "## 2. Smooth concepts",
        "",
        f"Mean over {sm['seeds']} seeds; error energy of the matched atoms per frequency band.",
        "",
        common.markdown_table(sm["table"], smooth.COLUMNS),
        "",
    ]
    sp = numbers["sparsity"]
    parts += [
        "## 3. Sparsity level and concept utilisation",
        "",
        f"Mean over {sp['seeds']} seeds; every sweep trained as one vmapped program.",
        "",
        common.markdown_table(sp["table"], sparsity.COLUMNS),
        "",
    ]
    res = numbers["resolution"]
    parts += [
        "## 4. Resolution",
        "",
        "Mean over seeds ("
        + ", ".join(f"{d['seeds']} in {dim}" for dim, d in res["dims"].items())
        + ").",
        "",
        common.markdown_table(res["table"], resolution.COLUMNS),
        "",
    ]
    seconds = {name: n["wall_seconds"] for name, n in numbers.items()}
    parts += [
        "Wall time: " + ", ".join(f"{name} {s:.0f} s" for name, s in seconds.items()) + ".",
        "",
    ]
    return "\n".join(parts)


def main(argv=None) -> dict:
    p = common.parser(__doc__)
    p.add_argument(
        "--summary-only",
        action="store_true",
        help="only rewrite summary.md from the JSON files already in --out",
    )
    args = p.parse_args(argv)
    if args.summary_only:
        numbers = {
            name: json.loads((args.out / f"{name}.json").read_text()) for name in EXPERIMENTS
        }
        (args.out / "summary.md").write_text(summary(numbers))
        print(f"summary: {args.out / 'summary.md'}")
        return numbers
    passed = (["--quick"] if args.quick else []) + ["--out", str(args.out)]
    if args.seeds is not None:
        passed += ["--seeds", str(args.seeds)]
    numbers = {}
    for name, module in EXPERIMENTS.items():
        print(f"\n=== {name} ===")
        numbers[name] = module.main(passed)
    (args.out / "summary.md").write_text(summary(numbers))
    print(f"\nsummary: {args.out / 'summary.md'}")
    return numbers


if __name__ == "__main__":
    main()
