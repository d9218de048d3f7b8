"""The examples run end to end (the slow ones are left to their own commands)."""

import pathlib
import runpy

import pytest

EXAMPLES = pathlib.Path(__file__).parents[1] / "examples"


@pytest.mark.slow
def test_the_custom_dictionary_example_runs(capsys):
    runpy.run_path(str(EXAMPLES / "custom_operator.py"), run_name="__main__")
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split(":")[0] for line in lines] == ["n =  32", "n =  64", "n = 256"]
    assert all("% of concepts recovered" in line for line in lines)


@pytest.mark.slow
def test_the_main_job_prints_one_table_with_a_reason_under_every_failure(tmp_path, capsys):
    """`examples/recovery.py --quick` (a few steps: most rows fail): one row per family and
    problem, and a reason line for every row below 90% recovered at |cos| > 0.95."""
    example = runpy.run_path(str(EXAMPLES / "recovery.py"))
    rows = example["main"](tmp_path, quick=True)
    lines = capsys.readouterr().out.splitlines()
    assert [(r["family"], r["where"]) for r in rows] == [
        ("SAE", "vectors"),
        ("lifted SAE", "vectors"),
        ("SAE-CNN", "bumps, n=128 (train)"),
        ("SAE-CNN", "bumps, n=256"),
        ("SAE-FNO", "smooth, n=128 (train)"),
        ("SAE-FNO", "smooth, n=64"),
        ("SAE-FNO", "smooth, n=256"),
    ]
    failures = [r for r in rows if r["at 0.95"] < 0.9]
    reasons = [line for line in lines if " fails: " in line]
    assert len(reasons) == len(failures)
    assert (tmp_path / "recovery.png").exists()
