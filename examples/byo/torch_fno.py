"""Route 3: a PyTorch model, here neuraloperator's FNO (pip install 'equisae[torch]'). A
module is named as in `model.named_modules()`; forward hooks capture and splice, and the SAE
runs in JAX."""

import jax.numpy as jnp
import jax.random as jr
import numpy as np
import optax
import torch
from neuralop.models import FNO

import equisae as eqs

data = eqs.data.burgers(jr.key(0), 32, 32, fine=64, viscosity=0.05, time=0.5)
x = np.asarray(data.inputs)
model = FNO(n_modes=(8,), in_channels=1, out_channels=1, hidden_channels=8, n_layers=2)
model.eval()  # train it as you like

# neuraloperator runs `fno_blocks` once per layer: call=0 is the field after layer 0
fields = jnp.asarray(eqs.operators.capture_torch(model, "fno_blocks", x, call=0))
mean = fields.mean(axis=0)

grid = eqs.Grid(32)
sae = eqs.SAE(eqs.Unrolled(eqs.SoftThreshold(0.05), 5), eqs.Spectral(grid, 8, 16, 8, key=jr.key(2)))
sae = sae.with_scale_of(fields - mean, grid)
sae, _ = eqs.fit(
    sae, fields - mean, optimizer=optax.adam(1e-2), steps=30, batch_size=16, key=jr.key(3)
)

replace = eqs.operators.Reconstruction(sae, mean)
with torch.no_grad(), eqs.operators.splice_torch(model, "fno_blocks", replace, call=0):
    outputs = model(torch.as_tensor(x))  # the FNO with the SAE's reconstruction spliced in
error = eqs.operators.splice_error_torch(model, "fno_blocks", x, replace, call=0)
print("splice error:", float(error))
