"""equisae: sparse autoencoders and sparse autoencoder neural operators for model recovery in
function spaces, in JAX and Equinox."""

from . import (
    data as data,
    metrics as metrics,
    operators as operators,
    plotting as plotting,
    train as train,
)
from ._dead import resample_dead as resample_dead
from ._debiased import Debiased as Debiased
from ._dictionaries import (
    AbstractDictionary as AbstractDictionary,
    Convolutional as Convolutional,
    Dense as Dense,
    Lifted as Lifted,
    Spectral as Spectral,
    operator_norm as operator_norm,
)
from ._encoders import (
    AbstractEncoder as AbstractEncoder,
    Alternating as Alternating,
    Amortised as Amortised,
    Diagnostics as Diagnostics,
    FixedPoint as FixedPoint,
    ODEFlow as ODEFlow,
    Unrolled as Unrolled,
)
from ._from_data import init_from_data as init_from_data
from ._grid import Grid as Grid, resample as resample, resample_codes as resample_codes
from ._io import (
    Checkpoint as Checkpoint,
    CheckpointError as CheckpointError,
    load as load,
    load_hyperparameters as load_hyperparameters,
    save as save,
)
from ._layers import (
    AbstractOperator as AbstractOperator,
    Conv as Conv,
    Linear as Linear,
    Pointwise as Pointwise,
    SpectralConv as SpectralConv,
)
from ._lifting import (
    Frozen as Frozen,
    Tied as Tied,
    gram_whitening as gram_whitening,
    whitening as whitening,
)
from ._losses import (
    SAELoss as SAELoss,
    l1_norm as l1_norm,
    reconstruction_error as reconstruction_error,
)
from ._multigrid import (
    MultigridDiagnostics as MultigridDiagnostics,
    coarse_grids as coarse_grids,
    multigrid_infer as multigrid_infer,
)
from ._sae import SAE as SAE
from ._scale import data_scale as data_scale
from ._solvers import AcceleratedFixedPoint as AcceleratedFixedPoint
from ._sparsity import (
    AbstractSparsity as AbstractSparsity,
    BatchTopK as BatchTopK,
    JumpReLU as JumpReLU,
    NonNegSoftThreshold as NonNegSoftThreshold,
    SoftThreshold as SoftThreshold,
    TopK as TopK,
)
from ._stopping import DictionarySettled as DictionarySettled
from ._windowed import Windowed as Windowed
from ._working_set import (
    WorkingSet as WorkingSet,
)
from .train import (
    InferenceWarning as InferenceWarning,
    NonFiniteLossError as NonFiniteLossError,
    dead_concepts as dead_concepts,
    fit as fit,
    make_step as make_step,
    stack as stack,
    unstack as unstack,
)

__version__ = "0.1.0"
