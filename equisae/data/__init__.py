"""Synthetic data from sparse generative models with known concepts and codes."""

from ._generative import (
    AbstractGenerativeModel as AbstractGenerativeModel,
    FourierConcepts as FourierConcepts,
    FunctionalModel as FunctionalModel,
    Sample as Sample,
    VectorModel as VectorModel,
    bumps as bumps,
    concept_family as concept_family,
    gabor as gabor,
    rough as rough,
    smooth as smooth,
)
