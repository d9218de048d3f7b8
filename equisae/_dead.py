import equinox as eqx
import jax
import jax.numpy as jnp
import jax.random as jr
from jaxtyping import Array, Bool, Float, PRNGKeyArray, PyTree

from ._dictionaries import AbstractDictionary
from ._encoders import Amortised
from ._grid import Grid
from ._layers import Linear
from ._sae import SAE


def concept_mask(dictionary: AbstractDictionary, concepts: Bool[Array, " p"]) -> PyTree:
    """A pytree shaped like the dictionary's parameters: `True` on the entries that belong to
    the selected concepts. Found with `rescale` (the entries it scales for a concept are that
    concept's), so it works for every dictionary, lifted ones included."""
    params, static = eqx.partition(dictionary, eqx.is_inexact_array)
    ones = jax.tree.map(jnp.ones_like, params)
    factors = jnp.where(concepts, 2.0, 1.0)
    scaled, _ = eqx.partition(eqx.combine(ones, static).rescale(factors), eqx.is_inexact_array)
    return jax.tree.map(lambda a, b: a != b, scaled, ones)


def _reset_like(opt_state: PyTree, params: PyTree, mask: PyTree) -> PyTree:
    """Zero the masked entries of every part of the optimiser state shaped like the params
    (Adam's first and second moments, for instance); leave the rest (step counts) alone."""
    structure = jax.tree.structure(params)

    def is_params_like(node) -> bool:
        return jax.tree.structure(node) == structure

    def reset(node):
        if is_params_like(node):
            return jax.tree.map(
                lambda leaf, m: jnp.where(m, jnp.zeros_like(leaf), leaf), node, mask
            )
        return node

    return jax.tree.map(reset, opt_state, is_leaf=is_params_like)


def resample_dead(
    model: SAE,
    opt_state: PyTree,
    batch: Float[Array, " batch c *spatial"],
    grid: Grid,
    dead: Bool[Array, " p"],
    key: PRNGKeyArray,
) -> tuple[SAE, PyTree]:
    """Re-initialise dead concepts from poorly reconstructed examples, as a pure function.

    Each dead concept draws an example of `batch` with probability proportional to its squared
    reconstruction error; its atom becomes that example's residual $x - \\hat x$, projected onto
    the dictionary's family (the adjoint of the map from the concept's parameters to its atom:
    the residual itself for `Dense`, its lowest modes for `Spectral`, a crop to the filter for
    `Convolutional`) and scaled to unit $L^2(\\Omega)$ norm. An `Amortised` encoder with a
    `Linear` layer gets, for that concept, the atom as its weights (so that it responds with 1 to
    the atom) and a zero bias; model-based encoders need nothing. The optimiser moments of
    exactly the re-initialised entries are zeroed; every other parameter and moment is left
    bit-identical.

    **Returns:** `(model, opt_state)`.
    """
    reconstruction, _ = jax.vmap(model, in_axes=(0, None), axis_name="batch")(batch, grid)
    residual = batch - reconstruction
    energy = jax.vmap(grid.inner)(residual, residual)
    weights = energy / jnp.maximum(jnp.sum(energy), jnp.finfo(energy.dtype).tiny)
    p = dead.shape[0]
    choice = jr.choice(key, batch.shape[0], (p,), p=weights)
    targets = residual[choice]
    shape = (-1,) + (1,) * (targets.ndim - 1)
    targets = jnp.where(dead.reshape(shape), targets, 0.0)

    dictionary = model.dictionary
    params, static = eqx.partition(dictionary, eqx.is_inexact_array)
    _, pullback = jax.vjp(lambda q: eqx.combine(q, static).atoms(grid), params)
    (direction,) = pullback(targets)
    dict_mask = concept_mask(dictionary, dead)
    new_params = jax.tree.map(lambda m, d, q: jnp.where(m, d, q), dict_mask, direction, params)
    new_dictionary = eqx.combine(new_params, static)
    norms = new_dictionary.atom_norms(grid)
    new_dictionary = new_dictionary.rescale(jnp.where(dead, 1.0 / jnp.maximum(norms, 1e-30), 1.0))
    model = eqx.tree_at(lambda m: m.dictionary, model, new_dictionary)

    full_mask = jax.tree.map(lambda _: False, eqx.filter(model, eqx.is_inexact_array))
    full_mask = eqx.tree_at(
        lambda m: m.dictionary, full_mask, dict_mask, is_leaf=lambda x: x is None
    )
    model, full_mask = _reset_encoder(model, full_mask, dead, grid)
    opt_state = _reset_like(opt_state, eqx.filter(model, eqx.is_inexact_array), full_mask)
    return model, opt_state


def _reset_encoder(model: SAE, mask: PyTree, dead: Array, grid: Grid):
    encoder = model.encoder
    if not isinstance(encoder, Amortised):
        return model, mask
    if not isinstance(encoder.layer, Linear):
        raise ValueError(
            "resample_dead re-initialises the encoder of an Amortised SAE with a Linear layer; "
            f"for a {type(encoder.layer).__name__} layer, write the reset for your layer (the "
            "dictionary part of this function is generic)."
        )
    layer = encoder.layer
    atoms = model.dictionary.atoms(grid)
    # the encoder sees the (lifted) signal: its row for concept k answers 1 to atom k
    rows = jax.vmap(lambda a: model.dictionary.lift(a, grid)[0])(atoms).reshape(dead.shape[0], -1)
    rows = rows / jnp.maximum(jnp.sum(rows * rows, axis=1, keepdims=True), 1e-30)
    weight = jnp.where(dead[:, None], rows, layer.weight)
    layer = eqx.tree_at(lambda lay: lay.weight, layer, weight)
    row_mask = jnp.broadcast_to(dead[:, None], weight.shape)
    mask = eqx.tree_at(lambda m: m.encoder.layer.weight, mask, row_mask)
    if layer.bias is not None:
        layer = eqx.tree_at(lambda lay: lay.bias, layer, jnp.where(dead, 0.0, layer.bias))
        mask = eqx.tree_at(lambda m: m.encoder.layer.bias, mask, dead)
    return eqx.tree_at(lambda m: m.encoder.layer, model, layer), mask
