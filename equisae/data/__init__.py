"""Synthetic data from sparse generative models with known concepts and codes, and PDE data
for host neural operators (from exponax where it has the equation)."""

from ._burgers import (
    burgers as burgers,
    burgers_steps as burgers_steps,
    solve_burgers as solve_burgers,
)
from ._darcy import (
    darcy as darcy,
    darcy_operator as darcy_operator,
    darcy_residual as darcy_residual,
    solve_darcy as solve_darcy,
)
from ._exponax import (
    exponax_pairs as exponax_pairs,
    korteweg_de_vries as korteweg_de_vries,
    kuramoto_sivashinsky as kuramoto_sivashinsky,
    navier_stokes as navier_stokes,
)
from ._generative import (
    AbstractGenerativeModel as AbstractGenerativeModel,
    FourierConcepts as FourierConcepts,
    FunctionalModel as FunctionalModel,
    Sample as Sample,
    VectorModel as VectorModel,
    asymmetric as asymmetric,
    bumps as bumps,
    concept_family as concept_family,
    gabor as gabor,
    rough as rough,
    smooth as smooth,
)
from ._incoherent import incoherent as incoherent
from ._pde import PDEData as PDEData, gaussian_random_field as gaussian_random_field
