"""Route 1: equisae's own FNO. Its fields are reached by `fno.where(i)`."""

import jax.random as jr
import optax

import equisae as eqs

data = eqs.data.burgers(jr.key(0), 32, 32, fine=64, viscosity=0.05, time=0.5)
fno = eqs.operators.FNO(1, 1, 8, 8, 2, key=jr.key(1))  # in, out, width, modes, depth; train it
fields = eqs.operators.capture(fno, fno.where(1), data.inputs)  # the field of block 1
mean = fields.mean(axis=0)

grid = eqs.Grid(32)
sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.05), 5), eqs.Spectral(grid, 8, 16, 8, key=jr.key(2)))
sae = sae.with_scale_of(fields - mean, grid)
sae, _ = eqs.fit(
    sae, fields - mean, optimizer=optax.adam(1e-2), steps=30, batch_size=16, key=jr.key(3)
)

replace = eqs.operators.Reconstruction(sae, mean)  # v -> mean + D z*(v - mean)
print("splice error:", float(eqs.operators.splice_error(fno, 1, data.inputs, replace)))
