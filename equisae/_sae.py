import dataclasses
import math

import equinox as eqx
import numpy as np
from jaxtyping import Array, Float

from ._dictionaries import AbstractDictionary
from ._encoders import AbstractEncoder, Diagnostics
from ._grid import Grid
from ._scale import data_scale


class SAE(eqx.Module):
    """A sparse autoencoder: an encoder for sparse inference and a dictionary as decoder.

    `sae(x, grid)` takes one signal of shape `(channels, *grid.shape)` and returns
    `(reconstruction, codes)` with $z = E(x)$ and $\\hat x = D z$. For a lifted dictionary the
    encoder works in the lifted space, $z = E(P x; D_l)$, and $\\hat x = Q D_l z$.
    Batches go through `jax.vmap(sae, in_axes=(0, None))`.

    `scale` is the data's scale $s$ (1 by default, set from the data by `with_scale_of`): the
    encoder sees $x / s$ and the reconstruction is $s\\,D z$, so the codes, $\\lambda$ and the
    losses of `SAELoss` are those of data with unit mean energy whatever the data's units. It is
    a constant of the model (a static field: no optimiser or device placement touches it) that
    `equisae.save` writes into the checkpoint's header and `equisae.load` restores.
    """

    encoder: AbstractEncoder
    dictionary: AbstractDictionary
    scale: float = eqx.field(default=1.0, static=True)

    def __check_init__(self):
        if not (isinstance(self.scale, (int, float, np.floating)) and math.isfinite(self.scale)):
            raise ValueError(f"SAE scale must be a finite Python number, got {self.scale!r}.")
        if not self.scale > 0:
            raise ValueError(f"SAE scale must be > 0, got {self.scale}.")

    def infer(
        self,
        x: Float[Array, " c *spatial"],
        grid: Grid,
        init: Float[Array, " p *code_spatial"] | None = None,
    ) -> tuple[Float[Array, " c *spatial"], Float[Array, " p *code_spatial"], Diagnostics]:
        """`(reconstruction, codes, diagnostics)`: the codes with how their inference went.
        `init` is a warm start for an iterative encoder (see `AbstractEncoder.infer`)."""
        grid.check(x, "x", self.dictionary.channels)
        lifted, dictionary = self.dictionary.lift(x / self.scale, grid)
        codes, diagnostics = self.encoder.infer(lifted, dictionary, grid, init)
        return self.decode(codes, grid), codes, diagnostics

    def with_encoder(self, encoder: AbstractEncoder) -> "SAE":
        """A copy with another encoder and the same dictionary: e.g. train with `Unrolled`,
        then infer on new grids to a tolerance with
        `sae.with_encoder(FixedPoint.from_encoder(sae.encoder, tol=1e-5))`."""
        return eqx.tree_at(lambda m: m.encoder, self, encoder)

    def encode(
        self, x: Float[Array, " c *spatial"], grid: Grid
    ) -> Float[Array, " p *code_spatial"]:
        """The codes $z$ of one signal."""
        return self.infer(x, grid)[1]

    def decode(
        self, codes: Float[Array, " p *code_spatial"], grid: Grid
    ) -> Float[Array, " c *spatial"]:
        """The reconstruction $s\\,D z$ of one code ($s$ = `scale`)."""
        return self.scale * self.dictionary(codes, grid)

    def with_scale_of(
        self,
        data: Float[Array, " examples c *spatial"] | Float[np.ndarray, " examples c *spatial"],
        grid: Grid | None = None,
    ) -> "SAE":
        """A copy whose `scale` is `data_scale(data, grid)`, the root of the data's mean
        energy: call it before `fit`, and the same hyperparameters work at any scale of the
        data (`sae.with_scale_of(100 * data)` trains on `100 * data` as `sae.with_scale_of(data)`
        trains on `data`). Raises `ValueError` for data with zero energy."""
        return dataclasses.replace(self, scale=data_scale(data, grid))

    def __call__(
        self, x: Float[Array, " c *spatial"], grid: Grid
    ) -> tuple[Float[Array, " c *spatial"], Float[Array, " p *code_spatial"]]:
        reconstruction, codes, _ = self.infer(x, grid)
        return reconstruction, codes
