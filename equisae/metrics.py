"""Metrics of model recovery: matching learned atoms to true ones, code supports, coherence,
explained variance, sparsity and dead concepts. Batched inputs carry a leading batch axis."""

import equinox as eqx
import jax.numpy as jnp
import numpy as np
import scipy.ndimage
import scipy.optimize
from jaxtyping import Array, Float, Int, Shaped

from ._grid import Grid, resample

ArrayLike = Array | np.ndarray


def explained_variance(
    x: Float[ArrayLike, " batch *shape"], reconstruction: Float[ArrayLike, " batch *shape"]
) -> Float[Array, " "]:
    """$1 - \\sum_b \\|x_b - \\hat x_b\\|^2 / \\sum_b \\|x_b - \\bar x\\|^2$, with $\\bar x$ the
    batch mean: the fraction of the variance about the mean that the reconstruction explains."""
    x, reconstruction = jnp.asarray(x), jnp.asarray(reconstruction)
    residual = jnp.sum((x - reconstruction) ** 2)
    spread = jnp.sum((x - jnp.mean(x, axis=0)) ** 2)
    return 1.0 - residual / spread


def l0(codes: Float[ArrayLike, " batch p *code_spatial"]) -> Float[Array, " "]:
    """The mean number of non-zero code entries per example (over concepts and, for function
    codes, grid points)."""
    codes = jnp.asarray(codes)
    return jnp.mean(jnp.sum(codes != 0, axis=tuple(range(1, codes.ndim))))


def dead_fraction(codes: Float[ArrayLike, " batch p *code_spatial"]) -> Float[Array, " "]:
    """The fraction of concepts whose code is zero on every example of the batch."""
    codes = jnp.asarray(codes)
    active = jnp.any(codes != 0, axis=(0,) + tuple(range(2, codes.ndim)))
    return 1.0 - jnp.mean(active)


def _unit(atoms: np.ndarray) -> np.ndarray:
    flat = atoms.reshape(atoms.shape[0], -1)
    norms = np.linalg.norm(flat, axis=1)
    if np.any(norms == 0) or not np.all(np.isfinite(norms)):
        raise ValueError("atoms must be finite and non-zero to compare their directions.")
    return atoms / norms.reshape((-1,) + (1,) * (atoms.ndim - 1))


def cosine_similarity(
    a: Float[ArrayLike, " p *shape"],
    b: Float[ArrayLike, " q *shape"],
    *,
    shift_invariant: bool = False,
    upsample: int = 1,
) -> tuple[Float[np.ndarray, " p q"], Float[np.ndarray, " p q d"]]:
    """The cosine $\\langle a_i, b_j \\rangle / \\|a_i\\|\\|b_j\\|$ between every pair of atoms.

    Atoms have shape `(channels, *spatial)`. With `shift_invariant`, the cosine is maximised in
    absolute value over circular shifts $\\sigma$ of $b_j$:
    $\\max_\\sigma |\\langle a_i, b_j(\\cdot + \\sigma) \\rangle|$ with its sign kept. The shifts
    run over the grid, or with `upsample` $= u > 1$ over a grid $u$ times finer, the
    cross-correlation being Fourier-interpolated there (exact for band-limited atoms): atoms of
    neural operators are continuous functions, and the best shift need not be a grid shift.
    Returns the cosines and the shifts $\\sigma$ in grid points of the atoms' grid (one per
    spatial axis, multiples of $1/u$; zeros without shifts).
    """
    a, b = _unit(np.asarray(a, dtype=np.float64)), _unit(np.asarray(b, dtype=np.float64))
    if a.shape[1:] != b.shape[1:]:
        raise ValueError(f"atoms of shape {a.shape[1:]} and {b.shape[1:]} cannot be compared.")
    spatial = a.shape[2:]
    if int(upsample) != upsample or upsample < 1:
        raise ValueError(f"upsample must be a positive whole number, got {upsample}.")
    if not shift_invariant or not spatial:
        cos = a.reshape(len(a), -1) @ b.reshape(len(b), -1).T
        return cos, np.zeros(cos.shape + (len(spatial),))
    axes = tuple(range(-len(spatial), 0))
    fa = np.fft.rfftn(a, axes=axes)
    fb = np.fft.rfftn(b, axes=axes)
    # corr[i, j, sigma] = sum_{c, s} a_i(s) b_j(s + sigma)
    corr = np.fft.irfftn(np.einsum("ic...,jc...->ij...", np.conj(fa), fb), s=spatial, axes=axes)
    fine = tuple(upsample * n for n in spatial)
    if upsample > 1:
        pairs = corr.reshape((-1,) + spatial)
        corr = np.asarray(resample(jnp.asarray(pairs), Grid(spatial), Grid(fine))).astype(
            np.float64
        )
    flat = corr.reshape(len(a), len(b), -1)
    best = np.argmax(np.abs(flat), axis=-1)
    cos = np.take_along_axis(flat, best[..., None], axis=-1)[..., 0]
    shifts = np.stack(np.unravel_index(best, fine), axis=-1) / upsample
    spatial_array = np.asarray(spatial)
    shifts = np.where(shifts > spatial_array / 2, shifts - spatial_array, shifts)
    return np.clip(cos, -1.0, 1.0), shifts


def mutual_coherence(
    atoms: Float[ArrayLike, " p *shape"], *, shift_invariant: bool = False
) -> float:
    """$\\max_{i \\ne j} |\\cos(d_i, d_j)|$ (over shifts too with `shift_invariant`)."""
    cos, _ = cosine_similarity(atoms, atoms, shift_invariant=shift_invariant)
    np.fill_diagonal(cos, 0.0)
    return float(np.max(np.abs(cos)))


class Recovery(eqx.Module):
    """How well learned atoms recover true ones after the best one-to-one matching.

    For true atom $i$: `match[i]` is the learned atom assigned to it (`-1` if there are fewer
    learned atoms than true ones), `cosine[i]` $\\ge 0$ the absolute cosine, `sign[i]` and
    `shift[i]` the sign and circular shift that align the learned atom with it, and
    `sine_distance[i]` $= \\sqrt{1 - \\cos^2}$.
    """

    cosine: Float[np.ndarray, " p"]
    match: Int[np.ndarray, " p"]
    sign: Float[np.ndarray, " p"]
    shift: Float[np.ndarray, " p d"]
    threshold: float = eqx.field(static=True)

    @property
    def sine_distance(self) -> Float[np.ndarray, " p"]:
        """$\\sqrt{1 - \\cos^2}$ per true atom."""
        return np.sqrt(np.clip(1.0 - self.cosine**2, 0.0, 1.0))

    @property
    def fraction(self) -> float:
        """The fraction of true atoms recovered with $|\\cos| >$ `threshold`."""
        return float(np.mean(self.cosine > self.threshold))

    @property
    def mean_sine_distance(self) -> float:
        """The mean sine distance over true atoms."""
        return float(np.mean(self.sine_distance))

    def align_atoms(self, atoms: Float[ArrayLike, " q *shape"]) -> Float[np.ndarray, " p *shape"]:
        """Put learned atoms in the order, sign and position of the true atoms they match
        (zeros for unmatched true atoms), for plotting them on top of each other. A shift that
        is not a whole number of grid points is applied in Fourier (exact for band-limited
        atoms)."""
        atoms = np.asarray(atoms)
        out = np.zeros((len(self.match),) + atoms.shape[1:], dtype=atoms.dtype)
        for i, j in enumerate(self.match):
            if j >= 0:
                out[i] = self.sign[i] * _shift(atoms[j], -self.shift[i])
        return out

    def align(
        self, codes: Shaped[ArrayLike, " batch q *code_spatial"]
    ) -> Float[np.ndarray, " batch p *code_spatial"]:
        """Put learned codes in the order, sign and position of the true concepts: the learned
        code matched to true concept $i$, times its sign, shifted by its shift (the shift that
        moves a learned atom onto the true one moves its code the other way, rounded to whole
        grid points). Unmatched true concepts get zero codes."""
        codes = np.asarray(codes)
        out = np.zeros((codes.shape[0], len(self.match)) + codes.shape[2:], dtype=codes.dtype)
        axes = tuple(range(1, codes.ndim - 1))
        for i, j in enumerate(self.match):
            if j >= 0:
                whole = tuple(int(v) for v in np.round(self.shift[i]))
                out[:, i] = self.sign[i] * np.roll(codes[:, j], whole, axis=axes)
        return out


def _shift(atom: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """`atom` (channels, *spatial) moved by `shift` grid points: a roll, or a Fourier phase."""
    axes = tuple(range(1, atom.ndim))
    if np.all(np.round(shift) == shift):
        return np.roll(atom, tuple(int(v) for v in shift), axis=axes)
    spectrum = np.fft.fftn(atom, axes=axes)
    for a, (sigma, n) in enumerate(zip(shift, atom.shape[1:])):
        phase = np.exp(-2j * np.pi * np.fft.fftfreq(n) * sigma)
        spectrum = spectrum * phase.reshape((-1,) + (1,) * (atom.ndim - 2 - a))
    return np.fft.ifftn(spectrum, axes=axes).real


def recovery(
    true_atoms: Float[ArrayLike, " p *shape"],
    atoms: Float[ArrayLike, " q *shape"],
    *,
    shift_invariant: bool = False,
    upsample: int = 1,
    threshold: float = 0.99,
) -> Recovery:
    """Match learned atoms to true atoms one to one by the Hungarian algorithm
    (`scipy.optimize.linear_sum_assignment`) on $|\\cos|$, invariant to sign and, with
    `shift_invariant`, to circular shifts (the symmetry of convolutional dictionaries).

    Atoms have shape `(channels, *spatial)`; `atoms` may hold more or fewer than `true_atoms`.
    With `upsample` $> 1$ the shifts are searched on a finer grid (see `cosine_similarity`).
    The result is invariant to permuting either set.
    """
    if not 0 < threshold < 1:
        raise ValueError(f"threshold must lie in (0, 1), got {threshold}.")
    cos, shifts = cosine_similarity(
        true_atoms, atoms, shift_invariant=shift_invariant, upsample=upsample
    )
    rows, cols = scipy.optimize.linear_sum_assignment(-np.abs(cos))
    p = cos.shape[0]
    match = np.full(p, -1)
    match[rows] = cols
    matched = np.zeros(p)
    matched[rows] = cos[rows, cols]
    shift = np.zeros((p, shifts.shape[-1]))
    shift[rows] = shifts[rows, cols]
    return Recovery(
        cosine=np.abs(matched),
        match=match,
        sign=np.where(matched < 0, -1.0, 1.0),
        shift=shift,
        threshold=threshold,
    )


def support_f1(
    true_codes: Float[ArrayLike, " batch p *code_spatial"],
    codes: Float[ArrayLike, " batch p *code_spatial"],
    *,
    threshold: float = 0.0,
    tolerance: int = 0,
) -> dict[str, float]:
    """Precision, recall and F1 of the code supports $\\{|z| > \\text{threshold}\\}$ of codes
    already aligned with the true concepts (see `Recovery.align`).

    For function codes, `tolerance` (in grid points) counts a support point as found when one
    of the other support's points of the same concept lies within that circular distance.
    """
    true_codes, codes = np.asarray(true_codes), np.asarray(codes)
    if true_codes.shape != codes.shape:
        raise ValueError(f"code shapes differ: {true_codes.shape} and {codes.shape}.")
    truth = np.abs(true_codes) > threshold
    found = np.abs(codes) > threshold
    if tolerance and codes.ndim > 2:
        size = (1, 1) + (2 * tolerance + 1,) * (codes.ndim - 2)
        near_truth = scipy.ndimage.maximum_filter(truth, size=size, mode="wrap")
        near_found = scipy.ndimage.maximum_filter(found, size=size, mode="wrap")
    else:
        near_truth, near_found = truth, found
    precision = np.sum(found & near_truth) / max(np.sum(found), 1)
    recall = np.sum(truth & near_found) / max(np.sum(truth), 1)
    f1 = 2 * precision * recall / max(precision + recall, np.finfo(float).tiny)
    return {"precision": float(precision), "recall": float(recall), "f1": float(f1)}
