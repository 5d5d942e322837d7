"""Pyro-backend checkpoints: torch state in the shared safetensors format.

Weights (``model.*``), Adam state (``optim.<param>.<key>``) and RNG states (``rng.*``)
become arrays; the optimizer's hyper-parameters travel in the JSON meta record. See
:mod:`ppvae.inference.checkpoints` for the file format and its safety.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from ppvae.inference.checkpoints import FILENAME, load_arrays, save_arrays

__all__ = ["FILENAME", "save", "load", "restore_rng", "describe_mismatch"]


def save(path: str | Path, *, model: torch.nn.Module, optimizer: torch.optim.Optimizer, meta: dict[str, Any]) -> None:
    """Write weights, optimizer state, RNG states and ``meta`` atomically."""
    arrays = {f"model.{k}": v.detach().cpu().numpy() for k, v in model.state_dict().items()}
    state = optimizer.state_dict()
    for idx, per_param in state["state"].items():
        for key, value in per_param.items():
            arrays[f"optim.{idx}.{key}"] = torch.as_tensor(value).detach().cpu().numpy()
    arrays["rng.torch_cpu"] = torch.get_rng_state().numpy()
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            arrays[f"rng.cuda.{i}"] = s.numpy()
    save_arrays(path, arrays, {**meta, "param_groups": state["param_groups"]})


def load(path: str | Path, fingerprint: str | None = None) -> tuple[dict, dict, dict, dict]:
    """Read a checkpoint (no unpickling).

    Returns
    -------
    model_state, optimizer_state, rng_state, meta : dict
    """
    arrays, meta = load_arrays(path, fingerprint)
    tensors = {k: torch.from_numpy(v) for k, v in arrays.items()}
    model_state = {k[len("model.") :]: v for k, v in tensors.items() if k.startswith("model.")}
    rng = {k[len("rng.") :]: v for k, v in tensors.items() if k.startswith("rng.")}
    optim: dict[int, dict[str, torch.Tensor]] = {}
    for name, value in tensors.items():
        if name.startswith("optim."):
            _, idx, key = name.split(".", 2)
            optim.setdefault(int(idx), {})[key] = value
    return model_state, {"state": optim, "param_groups": meta.get("param_groups", [])}, rng, meta


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
    detail = lines[1:]
    return (detail[0] if detail else lines[0] if lines else type(exc).__name__).rstrip(".")
