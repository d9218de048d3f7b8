"""Host neural operators to interpret: an Equinox Fourier neural operator whose hidden fields
can be read and replaced, and the splice metric."""

from ._fno import FNO as FNO
from ._splice import relative_l2_error as relative_l2_error, splice_error as splice_error
