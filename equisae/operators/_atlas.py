import os
import pathlib
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PyTree

from .._grid import Grid
from .._sae import SAE
from ._capture import capture, splice
from ._splice import Reconstruction

ArrayLike = Array | np.ndarray


class _Ablated(eqx.Module):
    """`Reconstruction` with the codes of some concepts set to zero before decoding."""

    sae: SAE
    mean: Array | float
    scale: Array | float
    keep: Float[Array, " p"]

    def __call__(self, v):
        grid = Grid(tuple(v.shape[1:]))
        codes = self.sae.encode((v - self.mean) / self.scale, grid)
        keep = self.keep.reshape(self.keep.shape + (1,) * (codes.ndim - 1))
        return self.mean + self.scale * self.sae.decode(codes * keep, grid)


@eqx.filter_jit
def _codes(sae: SAE, fields: Array, mean, scale) -> Array:
    grid = Grid(tuple(fields.shape[2:]))
    return jax.vmap(lambda v: sae.encode((v - mean) / scale, grid))(fields)


@eqx.filter_jit
def _outputs(model, inputs: Array) -> Array:
    return jax.vmap(model)(inputs)


def _profile(atom: np.ndarray) -> np.ndarray:
    """The dominant spatial profile of a multi-channel atom (first singular vector of its
    `(channels, points)` matrix), its sign fixed so that the largest value is positive."""
    flat = atom.reshape(atom.shape[0], -1)
    u, _, _ = np.linalg.svd(flat, full_matrices=False)
    profile = (u[:, 0] @ flat).reshape(atom.shape[1:])
    return profile * np.sign(profile.flat[np.argmax(np.abs(profile))])


def _spectrum(atom: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """$|\\hat\\kappa(f)|$ summed over channels, against $|f|$ (radial in 2-D)."""
    axes = tuple(range(1, atom.ndim))
    power = np.sqrt(np.sum(np.abs(np.fft.fftn(atom, axes=axes, norm="forward")) ** 2, axis=0))
    freqs = np.meshgrid(*[np.fft.fftfreq(n, 1.0 / n) for n in atom.shape[1:]], indexing="ij")
    radius = np.rint(np.sqrt(sum(f**2 for f in freqs))).astype(int).ravel()
    amplitude = np.bincount(radius, power.ravel() ** 2) ** 0.5
    return np.arange(len(amplitude)), amplitude


def atlas(
    model: PyTree,
    where: Callable[[PyTree], Callable],
    sae: SAE,
    inputs: Float[ArrayLike, " batch in *spatial"],
    path: str | os.PathLike,
    *,
    mean: Float[ArrayLike, " c *spatial"] | float = 0.0,
    scale: float = 1.0,
    concepts: int | list[int] = 6,
    top: int = 3,
    title: str | None = None,
) -> dict:
    """The concept atlas of an SAE trained on the fields of one submodule of a host operator:
    one matplotlib page, written to `path`, with a row per concept and four panels,

    1. its kernel as a function (the dominant channel profile of the atom, centred);
    2. its spectrum $|\\hat\\kappa(f)|$ against the frequency $|f|$;
    3. where it fires: $|z_k(s)|$ over the domain on the `top` inputs that activate it most
       (1-D: overlaid curves; 2-D: the code of the top input);
    4. what ablating it does: the change of the host's output, $F_R(x) - F_{R \\setminus k}(x)$,
       with the SAE's reconstruction $R$ spliced in and with concept $k$'s code set to zero
       before decoding, on the same inputs (2-D: the top input).

    The host is any Equinox model and the submodule its path, as for `capture`; the SAE is
    spliced with `Reconstruction(sae, mean, scale)`.

    **Arguments:**

    - `model`, `where`: the host and the path of the submodule (e.g. `lambda m: m.blocks[1]`).
    - `sae`: an SAE with a convolutional or spectral dictionary (codes on the grid).
    - `inputs`: a batch of host inputs `(batch, in, *spatial)`, 1-D or 2-D.
    - `path`: the image file to write (`.png`, `.pdf`, ...).
    - `mean`, `scale`: the centring and scale the SAE was trained with.
    - `concepts`: how many of the most used concepts to show (by mean $|z_k|$), or a list.
    - `top`: the number of top-activating inputs per concept.
    - `title`: a title for the page.

    **Returns:** a dict with `concepts` (the indices shown), `usage` (mean $|z_k|$ of each),
    and `ablation` (the relative $L^2$ change of the output when each is ablated, over the
    top inputs).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    inputs = jnp.asarray(inputs)
    if inputs.ndim not in (3, 4):
        raise ValueError(f"atlas needs a batch of 1-D or 2-D inputs, got shape {inputs.shape}.")
    if int(top) != top or top < 1:
        raise ValueError(f"top must be a positive whole number, got {top}.")
    fields = capture(model, where, inputs)
    replace = Reconstruction(sae, mean, scale)
    jax.eval_shape(replace, fields[0])  # a field that does not match the SAE fails here
    codes = np.asarray(_codes(sae, fields, replace.mean, replace.scale))
    if codes.ndim != fields.ndim:
        raise ValueError(
            f"atlas needs codes on the grid (a convolutional or spectral dictionary), got codes "
            f"of shape {codes.shape[1:]} for fields of shape {fields.shape[1:]}."
        )
    p = codes.shape[1]
    spatial = tuple(range(2, codes.ndim))
    usage = np.mean(np.abs(codes), axis=(0,) + spatial)
    if isinstance(concepts, int):
        shown = [int(k) for k in np.argsort(usage)[::-1][: min(concepts, p)]]
    else:
        shown = [int(k) for k in concepts]
        if any(not 0 <= k < p for k in shown):
            raise ValueError(f"concepts must lie in 0..{p - 1}, got {shown}.")
    grid = Grid(tuple(fields.shape[2:]))
    atoms = np.asarray(sae.dictionary.atoms(grid))
    ndim = grid.ndim
    top = min(int(top), inputs.shape[0])

    fig, axes = plt.subplots(
        len(shown), 4, figsize=(15, 2.6 * len(shown)), squeeze=False, constrained_layout=True
    )
    ablation = {}
    for row, k in zip(axes, shown):
        strength = np.max(np.abs(codes[:, k]).reshape(codes.shape[0], -1), axis=1)
        best = np.argsort(strength)[::-1][:top]
        x_top = inputs[best]
        keep = jnp.ones(p).at[k].set(0.0)
        with_k = _outputs(splice(model, where, replace), x_top)
        without_k = _outputs(
            splice(model, where, _Ablated(sae, replace.mean, replace.scale, keep)), x_top
        )
        change = np.asarray(with_k - without_k)
        size = float(np.linalg.norm(np.asarray(with_k))) or 1.0
        ablation[k] = float(np.linalg.norm(change)) / size
        profile = np.fft.fftshift(_profile(atoms[k]))
        freq, amplitude = _spectrum(atoms[k])
        if ndim == 1:
            s = np.arange(grid.shape[0]) / grid.shape[0]
            row[0].plot(s - 0.5, profile, color="C0")
            row[0].set_xlabel("s (centred)", fontsize=8)
            for i, b in enumerate(best):
                row[2].plot(s, np.abs(codes[b, k]), color=f"C{i}", lw=1, label=f"input {b}")
                row[3].plot(s, change[i].reshape(-1, grid.shape[0]).T, color=f"C{i}", lw=1)
            row[2].legend(fontsize=6, loc="upper right")
            row[3].axhline(0.0, color="0.7", lw=0.5)
        else:
            row[0].imshow(profile.T, origin="lower", cmap="RdBu_r")
            row[2].imshow(np.abs(codes[best[0], k]).T, origin="lower", cmap="Reds")
            extent = np.max(np.abs(change[0])) or 1.0
            row[3].imshow(change[0, 0].T, origin="lower", cmap="RdBu_r", vmin=-extent, vmax=extent)
            for ax in (row[0], row[2], row[3]):
                ax.set_xticks([])
                ax.set_yticks([])
        content = np.nonzero(amplitude > 1e-5 * max(float(np.max(amplitude)), 1e-30))[0]
        shown_to = int(content[-1]) + 2 if len(content) else len(freq)
        row[1].semilogy(
            freq[:shown_to], np.maximum(amplitude[:shown_to], 1e-12), "o-", ms=3, color="C0"
        )
        row[1].set_xlabel("|f|", fontsize=8)
        row[0].set_title(f"concept {k} (use {usage[k]:.3g}): kernel", fontsize=9)
        row[1].set_title("spectrum", fontsize=9)
        row[2].set_title(f"|code| on its top {top} input(s)", fontsize=9)
        row[3].set_title(f"output change when ablated ({ablation[k]:.3g} rel.)", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11)
    path = pathlib.Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return {"concepts": shown, "usage": {k: float(usage[k]) for k in shown}, "ablation": ablation}
