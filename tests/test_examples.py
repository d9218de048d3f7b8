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
