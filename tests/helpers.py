"""Shared builders for the tests: one small model of every family."""

import jax.numpy as jnp
import jax.random as jr

import equisae as eqs

FAMILIES = [
    "dense",
    "convolutional",
    "spectral",
    "lifted_dense",
    "lifted_spectral",
    "tied_spectral",
    "windowed_spectral",
]


def dictionary(family: str, grid: eqs.Grid, channels: int, concepts: int, modes, key):
    """A small dictionary of the named family on `grid` (d >= 1)."""
    k = jr.split(key, 3)
    width = tuple(min(5, n) for n in grid.shape)
    h = channels + 2
    if family == "dense":
        return eqs.Dense(grid, channels, concepts, key=k[0])
    if family == "convolutional":
        return eqs.Convolutional(grid, channels, concepts, width, key=k[0])
    if family == "spectral":
        return eqs.Spectral(grid, channels, concepts, modes, key=k[0])
    if family == "windowed_spectral":  # localized concepts: half the domain per axis
        return eqs.Windowed(eqs.Spectral(grid, channels, concepts, modes, key=k[0]), 0.5)
    if family == "tied_spectral":  # a learned lift per Fourier mode, c -> h, the same modes
        inner = eqs.Spectral(grid, channels, concepts, modes, key=k[0])
        return eqs.Tied(inner, eqs.SpectralConv(channels, h, inner.modes, key=k[1]))
    inner = dictionary(family.removeprefix("lifted_"), grid, h, concepts, modes, k[0])
    return eqs.Lifted(
        eqs.Pointwise(channels, h, key=k[1]), inner, eqs.Pointwise(h, channels, key=k[2])
    )


def random_codes(dictionary: eqs.AbstractDictionary, grid: eqs.Grid, key) -> jnp.ndarray:
    return jr.normal(key, dictionary.code_shape(grid))


def relative_error(a, b) -> float:
    return float(
        jnp.linalg.norm(jnp.ravel(a - b)) / jnp.maximum(jnp.linalg.norm(jnp.ravel(b)), 1e-30)
    )
