"""The PyTorch route without PyTorch: a clear error that names the optional extra (this test
runs whether or not torch is installed)."""

import sys

import numpy as np
import pytest

import equisae as eqs


@pytest.mark.parametrize("function", ["capture_torch", "torch_module"])
def test_without_torch_the_error_names_the_extra(function, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch", None)  # `import torch` now raises ImportError
    with pytest.raises(ImportError, match=r"extra `torch`.*equisae\[torch\]"):
        if function == "capture_torch":
            eqs.operators.capture_torch(object(), "fno_blocks", np.zeros((1, 1, 8)))
        else:
            eqs.operators.torch_module(object(), "fno_blocks")
    with pytest.raises(ImportError, match="extra `torch`"):
        with eqs.operators.splice_torch(object(), "fno_blocks", abs):
            pass
