"""Checkpoints in safetensors: weights, optimizer state, RNG states and the step.

safetensors holds only named tensors and a string-to-string header, so loading a
checkpoint never unpickles anything: a hostile file can fail to load but cannot run
code. Non-tensor state (step, optimizer hyper-parameters, metrics so far) travels as
JSON in the header. Writes go to a temporary file that is renamed into place.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file

from ...errors import CheckpointError
from ...io import atomic_path

FORMAT = "ppvae-checkpoint"
VERSION = "1"
FILENAME = "checkpoint.safetensors"


def _flatten_optimizer(state: dict) -> tuple[dict[str, torch.Tensor], list]:
    tensors = {}
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            if not torch.is_tensor(value):
                value = torch.tensor(value)
            tensors[f"optim.{idx}.{key}"] = value.detach().cpu().contiguous()
    return tensors, state["param_groups"]


def _unflatten_optimizer(tensors: dict[str, torch.Tensor], param_groups: list) -> dict:
    state: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            state.setdefault(int(idx), {})[key] = value
    return {"state": state, "param_groups": param_groups}


def save(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer,
         meta: dict[str, Any]) -> None:
    """Write a checkpoint atomically.

    Parameters
    ----------
    path : path-like
        Destination file.
    model, optimizer
        Their state dicts are saved.
    meta : dict
        JSON-serializable state: step, epoch, fingerprint, metrics so far, ...
    """
    tensors = {f"model.{k}": v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    optim_tensors, groups = _flatten_optimizer(optimizer.state_dict())
    tensors.update(optim_tensors)
    tensors["rng.torch_cpu"] = torch.get_rng_state()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng.cuda.{i}"] = s
    header = {
        "format": FORMAT,
        "version": VERSION,
        "meta": json.dumps(meta, allow_nan=True),
        "param_groups": json.dumps(groups),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=header)


def load(path: str | Path, fingerprint: str | None = None) -> tuple[dict, dict, dict, dict]:
    """Read a checkpoint without unpickling anything.

    Returns
    -------
    model_state, optimizer_state, rng_state, meta : dict
        ``rng_state`` maps ``"torch_cpu"`` and ``"cuda.N"`` to state tensors.

    Raises
    ------
    CheckpointError
        Missing, corrupt or foreign file, or one written for a different model spec.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"no checkpoint at {str(path)!r}; is this a ppvae run folder?")
    try:
        tensors = load_file(str(path), device="cpu")
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as fh:
            header = fh.metadata() or {}
    except (SafetensorError, OSError, ValueError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is not a readable ppvae checkpoint ({str(exc).splitlines()[0]}); "
            "it was not loaded. Restore it from a backup or re-run ppvae fit"
        ) from None
    if header.get("format") != FORMAT:
        raise CheckpointError(f"{str(path)!r} is a safetensors file but not a ppvae checkpoint; it was not loaded")
    try:
        meta = json.loads(header["meta"])
        groups = json.loads(header["param_groups"])
    except (KeyError, json.JSONDecodeError):
        raise CheckpointError(f"{str(path)!r} has a damaged header; it was not loaded") from None
    if fingerprint is not None and meta.get("fingerprint") != fingerprint:
        raise CheckpointError(
            f"checkpoint {str(path)!r} was written for a different model (components, settings, "
            "latent size or data shape) than the config it is loaded with; restore the run's "
            "original config.toml, or train a new run with --out"
        )
    model_state = {k[len("model."):]: v for k, v in tensors.items() if k.startswith("model.")}
    rng = {k[len("rng."):]: v for k, v in tensors.items() if k.startswith("rng.")}
    return model_state, _unflatten_optimizer(tensors, groups), rng, meta


def restore_rng(rng: dict[str, torch.Tensor]) -> None:
    """Put the saved RNG states back so training continues with the same draws."""
    if "torch_cpu" in rng:
        torch.set_rng_state(rng["torch_cpu"])
    cuda = [rng[k] for k in sorted(rng) if k.startswith("cuda.")]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda[: torch.cuda.device_count()])


def describe_mismatch(exc: Exception) -> str:
    """The first concrete line of torch's load_state_dict error, e.g. a size mismatch."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    detail = [line for line in lines[1:] if line]
    return (detail[0] if detail else lines[0] if lines else type(exc).__name__).rstrip(".")
