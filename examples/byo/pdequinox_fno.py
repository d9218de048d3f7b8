"""Route 2: any Equinox model, here pdequinox's ClassicFNO on exponax Kuramoto-Sivashinsky
data. A submodule is named by its path, as for `eqx.tree_at`."""

import jax
import jax.random as jr
import optax
import pdequinox as pdeqx

import equisae as eqs

data = eqs.data.kuramoto_sivashinsky(jr.key(0), 32, 32, fine=64, length=22.0, warmup=40)
model = pdeqx.arch.ClassicFNO(
    1, 1, 1, hidden_channels=8, num_modes=8, num_blocks=3, key=jr.key(1)
)  # train it as you like


def where(m):
    return m.blocks[1]


fields = eqs.operators.capture(model, where, data.inputs)  # (32, 8, 32)
mean = fields.mean(axis=0)

grid = eqs.Grid(32)
sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.05), 5), eqs.Spectral(grid, 8, 16, 8, key=jr.key(2)))
sae = sae.with_scale_of(fields - mean, grid)
sae, _ = eqs.fit(
    sae, fields - mean, optimizer=optax.adam(1e-2), steps=30, batch_size=16, key=jr.key(3)
)

replace = eqs.operators.Reconstruction(sae, mean)
spliced = eqs.operators.splice(model, where, replace)  # an Equinox model, called like `model`
outputs = jax.vmap(spliced)(data.inputs)
print("splice error:", float(eqs.operators.splice_error(model, where, data.inputs, replace)))
