"""The three routes of docs/byo_operator.md run as printed (their code is included from
examples/byo/)."""

import math
import pathlib
import runpy

import pytest

ROUTES = pathlib.Path(__file__).parents[1] / "examples" / "byo"


@pytest.mark.parametrize(
    "script,needs",
    [("equisae_fno.py", None), ("pdequinox_fno.py", "pdequinox"), ("torch_fno.py", "neuralop")],
)
def test_each_route_of_bring_your_own_operator_runs(script, needs, capsys):
    if needs is not None:
        pytest.importorskip(needs)
    runpy.run_path(str(ROUTES / script), run_name="__main__")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("splice error:")
    assert math.isfinite(float(line.split(":")[1]))
