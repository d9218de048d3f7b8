"""The experiments of `examples/experiments/` run end to end in their `--quick` versions and
write a figure and finite numbers. No scientific claim is asserted here: measuring those is
the experiments' job."""

import importlib.util
import json
import math
import pathlib

import pytest

EXPERIMENTS = pathlib.Path(__file__).parents[1] / "examples" / "experiments"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(f"experiments_{name}", EXPERIMENTS / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _numbers(value):
    if isinstance(value, dict):
        return [x for v in value.values() for x in _numbers(v)]
    if isinstance(value, list):
        return [x for v in value for x in _numbers(v)]
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return [value]
    return []


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    return tmp_path_factory.mktemp("experiments")


@pytest.mark.slow
@pytest.mark.parametrize("name", ["lifting", "smooth", "sparsity", "resolution"])
def test_the_quick_experiment_writes_a_figure_and_finite_numbers(name, out):
    _load(name).main(["--quick", "--out", str(out)])
    figure, numbers = out / f"{name}.png", out / f"{name}.json"
    assert figure.stat().st_size > 10_000
    assert figure.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    values = _numbers(json.loads(numbers.read_text()))
    assert len(values) > 10
    assert all(math.isfinite(v) for v in values)


@pytest.mark.slow
def test_run_all_writes_the_summary_table(out):
    if not all(
        (out / f"{n}.json").exists() for n in ("lifting", "smooth", "sparsity", "resolution")
    ):
        pytest.skip("needs the four quick experiments of this module")
    _load("run_all").main(["--quick", "--out", str(out), "--summary-only"])
    summary = (out / "summary.md").read_text()
    for heading in ("Lifting", "Smooth concepts", "Sparsity", "Resolution"):
        assert heading in summary
    assert summary.count("|---") >= 4
