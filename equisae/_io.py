import dataclasses
import hashlib
import io
import json
import os
import pathlib
from typing import Any, NamedTuple

import equinox as eqx
import jax
import numpy as np
from jaxtyping import PyTree

from ._sae import SAE

MAGIC = b"EQUISAE-CHECKPOINT\n"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is corrupt, truncated, of another format version, or holds a model
    that does not match the one it is loaded into."""


class Checkpoint(NamedTuple):
    """What `load` returns: the model, the optimiser state (or `None`) and the
    hyperparameters saved with them."""

    model: PyTree
    opt_state: PyTree | None
    hyperparameters: dict[str, Any]


def _leaves(tree: PyTree) -> list[list]:
    """Path, shape and dtype of every array leaf: what must match when loading."""
    flat, _ = jax.tree_util.tree_flatten_with_path(eqx.filter(tree, eqx.is_array_like))
    described = []
    for path, leaf in flat:
        array = np.asarray(leaf)
        described.append([jax.tree_util.keystr(path), list(array.shape), str(array.dtype)])
    return described


def save(
    path: str | os.PathLike, model: PyTree, opt_state: PyTree | None = None, **hyperparameters
) -> None:
    """Save a model (and optionally its optimiser state) with its hyperparameters.

    The file is a header (format version, library version, hyperparameters as JSON, the path,
    shape and dtype of every array, the payload's length and SHA-256) followed by the leaves
    written by `equinox.tree_serialise_leaves`. It is written to a temporary file and renamed,
    so a crash during a save leaves any previous file at `path` intact. An `SAE`'s `scale` (a
    constant of the model, not an array) is written into the header and restored by `load`.

    **Arguments:**

    - `path`: the file.
    - `model`: any pytree of arrays, usually an `SAE`.
    - `opt_state`: the optax state, for resuming training.
    - `hyperparameters`: JSON-serialisable values saved alongside (e.g. `lam=0.1`).
    """
    _write(path, model, opt_state, {"hyperparameters": hyperparameters})


def save_training(path, model: PyTree, opt_state: PyTree, training: dict) -> None:
    """What `fit` checkpoints: the model, the optimiser state and the training state."""
    _write(path, model, opt_state, {"hyperparameters": {}, "training": training})


def _write(path, model: PyTree, opt_state: PyTree | None, extra: dict) -> None:
    from . import __version__

    state = {"model": model, "opt_state": opt_state}
    buffer = io.BytesIO()
    eqx.tree_serialise_leaves(buffer, state)
    payload = buffer.getvalue()
    header = {
        "format_version": FORMAT_VERSION,
        "equisae_version": __version__,
        "model": type(model).__name__,
        "has_opt_state": opt_state is not None,
        "leaves": _leaves(state),
        "payload_bytes": len(payload),
        "sha256": hashlib.sha256(payload).hexdigest(),
    } | extra
    if isinstance(model, SAE):
        header["scale"] = model.scale
    try:
        encoded = json.dumps(header).encode()
    except TypeError as error:
        raise TypeError(f"hyperparameters must be JSON-serialisable: {error}") from error
    path = pathlib.Path(path)
    temporary = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(temporary, "wb") as f:
            f.write(MAGIC)
            f.write(len(encoded).to_bytes(8, "little"))
            f.write(encoded)
            _write_payload(f, payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    finally:
        if temporary.exists():
            temporary.unlink()


def _write_payload(f, payload: bytes) -> None:
    # a seam of its own, so that the tests can make a save crash halfway through
    f.write(payload)


def _read_header(f, path) -> dict:
    if f.read(len(MAGIC)) != MAGIC:
        raise CheckpointError(f"{path} is not an equisae checkpoint (no header).")
    size = f.read(8)
    if len(size) != 8:
        raise CheckpointError(f"{path} is truncated: the header is incomplete.")
    raw = f.read(int.from_bytes(size, "little"))
    try:
        header = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise CheckpointError(f"{path} has a corrupt header: {error}.") from error
    version = header.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}; this equisae reads version "
            f"{FORMAT_VERSION}."
        )
    return header


def load_hyperparameters(path: str | os.PathLike) -> dict[str, Any]:
    """The hyperparameters saved in a checkpoint, without loading the arrays."""
    with open(path, "rb") as f:
        return _read_header(f, path)["hyperparameters"]


def load(path: str | os.PathLike, like: PyTree, opt_state: PyTree | None = None) -> Checkpoint:
    """Load a checkpoint written by `save` into the structure of `like` (a model of the same
    family and sizes, e.g. freshly built with any key) and, if given, of `opt_state`.

    The model's arrays come from the file and so does an `SAE`'s `scale` (from the header);
    everything else that is not an array (sizes, modes, static settings) comes from `like`.
    Every check happens before anything is returned: a file that is not a checkpoint, is
    truncated or corrupt (its SHA-256 does not match), has another format version, or holds
    arrays whose paths, shapes or dtypes differ from `like`'s raises `CheckpointError` (a
    `ValueError`) naming the problem. Nothing is half-loaded.
    """
    model, opt_state, header = _read(path, like, opt_state)
    return Checkpoint(model, opt_state, header["hyperparameters"])


def read_training(path, like: PyTree, opt_state: PyTree) -> tuple[PyTree, PyTree, dict]:
    """The model, optimiser state and training state of a checkpoint written by `fit`."""
    model, opt_state, header = _read(path, like, opt_state)
    if "training" not in header:
        raise CheckpointError(f"{path} was not written by fit: it holds no training state.")
    return model, opt_state, header["training"]


def _read(path, like: PyTree, opt_state: PyTree | None):
    path = pathlib.Path(path)
    with open(path, "rb") as f:
        header = _read_header(f, path)
        payload = f.read()
    if len(payload) != header["payload_bytes"]:
        raise CheckpointError(
            f"{path} is truncated: {len(payload)} of {header['payload_bytes']} payload bytes."
        )
    if hashlib.sha256(payload).hexdigest() != header["sha256"]:
        raise CheckpointError(f"{path} is corrupt: its payload does not match its checksum.")
    if opt_state is not None and not header["has_opt_state"]:
        raise CheckpointError(f"{path} holds no optimiser state, but one was asked for.")
    saved = header["leaves"]
    if opt_state is None:  # the model's leaves come first in the payload: read just those
        saved = [leaf for leaf in saved if leaf[0].startswith("['model']")]
    state = {"model": like, "opt_state": opt_state}
    expected = _leaves(state)
    if saved != expected:
        raise CheckpointError(_difference(path, header, saved, expected))
    loaded = eqx.tree_deserialise_leaves(io.BytesIO(payload), state)
    model = loaded["model"]
    if "scale" in header and isinstance(model, SAE):
        model = dataclasses.replace(model, scale=header["scale"])
    return model, loaded["opt_state"], header


def _difference(path, header, saved, expected) -> str:
    for got, want in zip(saved, expected):
        if got != want:
            return (
                f"{path} holds a {header['model']} that does not match the model given to load: "
                f"{got[0]} has shape {tuple(got[1])} and dtype {got[2]} in the file, but "
                f"{want[0]} has shape {tuple(want[1])} and dtype {want[2]} in the model (another "
                "family or other sizes?)."
            )
    return (
        f"{path} holds a {header['model']} with {len(saved)} arrays; the model given to load has "
        f"{len(expected)}: another family or other sizes?"
    )
