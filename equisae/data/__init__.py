"""Synthetic data from sparse generative models with known concepts and codes."""

from ._generative import (
    AbstractGenerativeModel as AbstractGenerativeModel,
    concept_family as concept_family,
    FourierConcepts as FourierConcepts,
    FunctionalModel as FunctionalModel,
    Sample as Sample,
    VectorModel as VectorModel,
    bumps as bumps,
    gabor as gabor,
    rough as rough,
    smooth as smooth,
)
