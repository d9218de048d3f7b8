"""`examples/real_hosts.py --quick`: the study of a pdequinox host runs end to end."""

import pathlib
import runpy

import numpy as np
import pytest

EXAMPLE = pathlib.Path(__file__).parents[1] / "examples" / "real_hosts.py"


@pytest.mark.slow
def test_the_real_host_study_reports_both_grids_and_caches_the_host(tmp_path):
    example = runpy.run_path(str(EXAMPLE))
    result = example["main"](tmp_path, tmp_path / "cache", quick=True, only=["ks-pdequinox"])
    rows = result["ks-pdequinox"]["rows"]
    assert [r["n"] for r in rows.values()] == [32, 64]
    for r in rows.values():
        assert all(np.isfinite(v) for v in r.values())
        # even the smoke test's SAE explains most of the field and keeps most of the accuracy
        assert r["explained_variance"] > 0.8 and r["recovered"] > 0.8
    assert len(list((tmp_path / "cache").glob("host_ks-pdequinox_*.eqx"))) == 1
    assert (tmp_path / "real_hosts.txt").read_text().startswith("ks-pdequinox: host trained")
