"""One training step of the same 1-D SAE-FNO in equisae and in PyTorch with `neuraloperator`'s
`SpectralConv`, on the CPU, in one process.

The model on both sides: a spectral dictionary $D$ with $p$ concepts of $K$ Fourier modes
($D z = F^{-1} W F z$, a `SpectralConv` from $p$ channels to one), codes inferred by $T$ unrolled
ISTA steps $z \\leftarrow S_{t\\lambda}(z - t D^*(D z - x))$ from $z = 0$ with $t$ from 30
steps of power iteration, the loss $\\frac12\\|x - Dz\\|^2 + \\lambda\\|z\\|_1$ averaged over the
batch, one Adam update and the atoms renormalised. PyTorch runs eagerly (what a user writes);
the adjoint is written out with the layer's own weights and checked against the forward map
before timing. Needs `pip install -e '.[bench]'` (scikit-learn, `torch==2.13.0` CPU,
neuraloperator).

    python benchmarks/torch_sae_fno.py
"""

import argparse
import os
import warnings

import equinox as eqx
import jax
import jax.random as jr
import optax
import torch
from _common import append, interleaved_best

import equisae as eqs

warnings.filterwarnings("ignore", module="neuralop")
from neuralop.layers.spectral_convolution import SpectralConv  # noqa: E402


class TorchSAEFNO(torch.nn.Module):
    """The SAE-FNO above: `neuralop` `SpectralConv(p -> 1)` as the dictionary, unrolled ISTA."""

    def __init__(self, n: int, concepts: int, modes: int, steps: int, lam: float):
        super().__init__()
        # neuralop keeps n_modes // 2 + 1 coefficients of a real FFT; ask for K of them
        self.dictionary = SpectralConv(concepts, 1, n_modes=(2 * (modes - 1),), bias=False)
        self.n, self.concepts, self.modes, self.steps, self.lam = n, concepts, modes, steps, lam

    def decode(self, z):
        return self.dictionary(z)

    def adjoint(self, r):
        """$D^* r = F^{-1} W^H F r$, the exact adjoint of `decode` (checked in `check_adjoint`)."""
        weight = self.dictionary.weight.to_tensor()
        r_hat = torch.fft.rfft(r, norm="forward")[..., : self.modes]
        z_hat = torch.einsum("bok,iok->bik", r_hat, weight.conj())
        return torch.fft.irfft(z_hat, n=self.n, norm="forward")

    def lipschitz(self):
        with torch.no_grad():
            z = torch.randn(1, self.concepts, self.n, generator=torch.Generator().manual_seed(0))
            for _ in range(30):
                z = self.adjoint(self.decode(z))
                z = z / z.norm()
            return (z * self.adjoint(self.decode(z))).sum()

    def forward(self, x):
        step = 1.0 / (1.1 * self.lipschitz())
        target = self.adjoint(x)
        z = torch.zeros(x.shape[0], self.concepts, self.n)
        for _ in range(self.steps):
            v = z - step * (self.adjoint(self.decode(z)) - target)
            z = torch.sign(v) * torch.relu(v.abs() - step * self.lam)
        reconstruction = self.decode(z)
        return (
            0.5 * ((x - reconstruction) ** 2).sum((1, 2)).mean()
            + self.lam * z.abs().sum((1, 2)).mean()
        )

    def normalise(self):
        with torch.no_grad():
            spikes = torch.eye(self.concepts)[:, :, None] * torch.nn.functional.one_hot(
                torch.zeros((), dtype=torch.long), self.n
            )
            norms = self.decode(spikes).norm(dim=(1, 2))
            self.dictionary.weight.tensor.data /= norms[:, None, None]


def check_adjoint(model: TorchSAEFNO) -> None:
    g = torch.Generator().manual_seed(1)
    z = torch.randn(2, model.concepts, model.n, generator=g)
    r = torch.randn(2, 1, model.n, generator=g)
    left = (model.decode(z) * r).sum()
    right = (z * model.adjoint(r)).sum()
    assert torch.allclose(left, right, rtol=1e-4), (left, right)


def torch_step(n, concepts, modes, steps, batch, lam):
    """One PyTorch training step, as a callable, after checking the adjoint."""
    torch.manual_seed(0)
    model = TorchSAEFNO(n, concepts, modes, steps, lam)
    model.normalise()
    check_adjoint(model)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
    x = torch.randn(batch, 1, n, generator=torch.Generator().manual_seed(2))

    def step():
        optimizer.zero_grad()
        loss = model(x)
        loss.backward()
        optimizer.step()
        model.normalise()
        return loss

    return step


def equisae_step(n, concepts, modes, steps, batch, lam):
    """One equisae training step (`eqs.train.make_step`), as a callable that blocks."""
    grid = eqs.Grid((n,))
    sae = eqs.SAE(
        eqs.Unrolled(eqs.SoftThreshold(lam), steps, method="ista"),
        eqs.Spectral(grid, 1, concepts, modes, key=jr.key(0)),
    )
    optimizer = optax.adam(1e-3)
    opt_state = optimizer.init(eqx.filter(sae, eqx.is_inexact_array))
    step = eqs.train.make_step(eqs.SAELoss(), optimizer)
    x = jr.normal(jr.key(1), (batch, 1, n))
    return lambda: jax.block_until_ready(step(sae, opt_state, x, grid)[2])


def main(args) -> None:
    torch.set_num_threads(os.cpu_count())
    print(f"{jax.devices()[0]}; torch {torch.__version__} with {torch.get_num_threads()} threads")
    lines = [
        "| n | p | modes | T | batch | equisae (ms) | PyTorch + neuraloperator (ms) | speed-up |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, concepts in args.configs:
        shape = (n, concepts, args.modes, args.steps, args.batch, 0.1)
        ours, theirs = interleaved_best([equisae_step(*shape), torch_step(*shape)], args.repeats)
        lines.append(
            f"| {n} | {concepts} | {args.modes} | {args.steps} | {args.batch} | "
            f"{1e3 * ours:.1f} | {1e3 * theirs:.1f} | {theirs / ours:.1f}× |"
        )
        print(lines[-1])
    table = "\n".join(lines)
    if args.record:
        note = f"PyTorch {torch.__version__} (eager, {torch.get_num_threads()} threads)."
        append("SAE-FNO training step: equisae against PyTorch + neuraloperator",
               "python benchmarks/torch_sae_fno.py", note + "\n\n" + table)  # fmt: skip


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--configs", type=lambda s: tuple(map(int, s.split(","))), nargs="+",
                        default=[(256, 16), (1024, 16), (1024, 64)],
                        help="n,p pairs")  # fmt: skip
    parser.add_argument("--modes", type=int, default=16)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--no-record", dest="record", action="store_false")
    main(parser.parse_args())
