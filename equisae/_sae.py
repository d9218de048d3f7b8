import equinox as eqx
from jaxtyping import Array, Float

from ._dictionaries import AbstractDictionary
from ._encoders import AbstractEncoder, Diagnostics
from ._grid import Grid


class SAE(eqx.Module):
    """A sparse autoencoder: an encoder for sparse inference and a dictionary as decoder.

    `sae(x, grid)` takes one signal of shape `(channels, *grid.shape)` and returns
    `(reconstruction, codes)` with $z = E(x)$ and $\\hat x = D z$. For a lifted dictionary the
    encoder works in the lifted space, $z = E(P x; D_l)$, and $\\hat x = Q D_l z$.
    Batches go through `jax.vmap(sae, in_axes=(0, None))`.
    """

    encoder: AbstractEncoder
    dictionary: AbstractDictionary

    def infer(
        self,
        x: Float[Array, " c *spatial"],
        grid: Grid,
        init: Float[Array, " p *code_spatial"] | None = None,
    ) -> tuple[Float[Array, " c *spatial"], Float[Array, " p *code_spatial"], Diagnostics]:
        """`(reconstruction, codes, diagnostics)`: the codes with how their inference went.
        `init` is a warm start for an iterative encoder (see `AbstractEncoder.infer`)."""
        grid.check(x, "x", self.dictionary.channels)
        lifted, dictionary = self.dictionary.lift(x, grid)
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
        """The reconstruction $D z$ of one code."""
        return self.dictionary(codes, grid)

    def __call__(
        self, x: Float[Array, " c *spatial"], grid: Grid
    ) -> tuple[Float[Array, " c *spatial"], Float[Array, " p *code_spatial"]]:
        reconstruction, codes, _ = self.infer(x, grid)
        return reconstruction, codes
