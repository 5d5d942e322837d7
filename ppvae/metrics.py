"""Held-out metrics assembled the same way for every backend (numpy only)."""

from __future__ import annotations

import math

import numpy as np

__all__ = ["active_units", "evaluation_summary"]


def active_units(loc: np.ndarray, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across data: Cov_x(E_q[z]) > threshold.

    The definition of Burda et al. (2016); a collapsed dimension has variance near 0.
    """
    loc = np.asarray(loc)
    if loc.shape[0] < 2:
        return 0
    return int((loc.var(axis=0, ddof=1) > threshold).sum())


def evaluation_summary(*, reconstruction: np.ndarray, kl: np.ndarray, kl_per_dim: np.ndarray, loc: np.ndarray,
                       log_px: np.ndarray, num_samples: int, num_features: int, is_image: bool,
                       exact_log_px: np.ndarray | None = None) -> dict:
    """The ``evaluate`` record from per-point arrays (nats per datapoint).

    Keys: ``num_points``, ``heldout_elbo``, ``reconstruction``, ``kl``, ``heldout_log_px``
    (IWAE bound) and its standard error over points, ``num_samples``, ``active_units``,
    ``kl_per_dim``, ``bits_per_dim`` for images, ``exact_log_px`` when known.
    """
    rec, kl, log_px = (np.asarray(a, dtype=np.float64) for a in (reconstruction, kl, log_px))
    n = len(log_px)
    out = {
        "num_points": int(n),
        "heldout_elbo": float(-(rec + kl).mean()),
        "reconstruction": float(rec.mean()),
        "kl": float(kl.mean()),
        "heldout_log_px": float(log_px.mean()),
        "heldout_log_px_stderr": float(log_px.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0,
        "num_samples": int(num_samples),
        "active_units": active_units(loc),
        "kl_per_dim": [float(v) for v in np.asarray(kl_per_dim, dtype=np.float64).mean(0)],
    }
    if is_image:
        out["bits_per_dim"] = float(-log_px.mean() / (num_features * math.log(2)))
    if exact_log_px is not None:
        out["exact_log_px"] = float(np.mean(exact_log_px))
    return out
