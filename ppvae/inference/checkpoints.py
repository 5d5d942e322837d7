"""The checkpoint file format shared by every backend: safetensors with a JSON header.

A checkpoint is named numpy arrays (weights, optimizer state, RNG state) plus a JSON
``meta`` record (step, epoch, fingerprint of the model, metrics so far). safetensors
holds only arrays and a string-to-string header, so loading a checkpoint never unpickles
anything: a hostile file can fail to load but cannot run code. Writes are atomic.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np

from ppvae.errors import CheckpointError
from ppvae.runs.atomic import atomic_path

__all__ = ["FILENAME", "BEST_FILENAME", "CHOICES", "checkpoint_file", "FORMAT", "save_arrays", "load_arrays"]

FORMAT = "ppvae-checkpoint"
VERSION = "1"
#: The last checkpoint: where training stands, what ``--resume`` continues.
FILENAME = "checkpoint.safetensors"
#: The weights of the epoch with the best validation ELBO (:mod:`ppvae.inference.selection`),
#: written beside the last checkpoint by runs that have a validation split.
BEST_FILENAME = "checkpoint-best.safetensors"
#: ``--checkpoint`` choices: the file of each.
CHOICES = {"last": FILENAME, "best": BEST_FILENAME}


def checkpoint_file(run_dir: str | Path, which: str = "last") -> Path:
    """The path of a run folder's ``"last"`` or ``"best"`` checkpoint."""
    return Path(run_dir) / CHOICES[which]


def save_arrays(path: str | Path, arrays: dict[str, np.ndarray], meta: dict[str, Any]) -> None:
    """Write named arrays and a JSON-serializable ``meta`` record atomically."""
    from safetensors.numpy import save_file

    header = {"format": FORMAT, "version": VERSION, "meta": json.dumps(meta, allow_nan=True)}
    clean = {k: np.ascontiguousarray(v) for k, v in arrays.items()}
    with atomic_path(path) as tmp:
        save_file(clean, str(tmp), metadata=header)


def load_arrays(path: str | Path, fingerprint: str | None = None) -> tuple[dict[str, np.ndarray], dict]:
    """Read a checkpoint without unpickling anything.

    Parameters
    ----------
    path : path-like
        The checkpoint file.
    fingerprint : str, optional
        When given, the checkpoint must have been written for this model layout.

    Raises
    ------
    CheckpointError
        Missing, corrupt or foreign file, or one written for a different model.
    """
    from safetensors import SafetensorError, safe_open

    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}; is this a ppvae run folder?")
    try:
        with safe_open(str(path), framework="numpy") as fh:
            header = fh.metadata() or {}
            arrays = {k: fh.get_tensor(k) for k in fh.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable ppvae checkpoint ({str(exc).splitlines()[0]}); "
            "it was not loaded. Restore it from a backup or re-run ppvae fit"
        ) from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is a safetensors file but not a ppvae checkpoint; it was not loaded")
    try:
        meta = json.loads(header["meta"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{str(path)!r} has a damaged header; it was not loaded") from None
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written for a different model (components, settings, "
            "latent size or data shape) than the config it is loaded with; restore the run's "
            "original config.toml, or train a new run with --out"
        )
    return arrays, meta
