"""Host neural operators to interpret: capture and splice for any Equinox model by the path
of a submodule, an Equinox Fourier neural operator, the splice metric, and PyTorch models
through the optional `torch` extra."""

from ._atlas import atlas as atlas
from ._capture import (
    Record as Record,
    Spliced as Spliced,
    capture as capture,
    splice as splice,
    submodule as submodule,
)
from ._fno import FNO as FNO, FourierBlock as FourierBlock
from ._splice import (
    Reconstruction as Reconstruction,
    relative_l2_error as relative_l2_error,
    splice_error as splice_error,
)
from ._torch import (
    capture_torch as capture_torch,
    splice_error_torch as splice_error_torch,
    splice_torch as splice_torch,
    torch_module as torch_module,
)
