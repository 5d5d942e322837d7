"""Evaluate a run on a split read in chunks (a streamed dataset) and merge the records exactly.

``evaluate`` records are means over points; merged with point counts (and, for the
standard error of log p(x) and the active units, with the within-chunk variances by the
pairwise update of Chan et al.), the chunked record has the same keys and, up to each
chunk's own Monte-Carlo draws, the same values as one call on all the points.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["evaluate_in_chunks"]


class _Moments:
    """Running count, mean and sum of squared deviations (per column), merged chunk by chunk."""

    def __init__(self):
        self.n, self.mean, self.m2 = 0, 0.0, 0.0

    def merge(self, n: int, mean, m2) -> None:
        if n == 0:
            return
        total = self.n + n
        delta = np.asarray(mean, dtype=np.float64) - self.mean
        self.m2 = self.m2 + np.asarray(m2, dtype=np.float64) + delta**2 * (self.n * n / total)
        self.mean = self.mean + delta * (n / total)
        self.n = total

    def var(self):
        return self.m2 / (self.n - 1) if self.n > 1 else np.zeros_like(np.asarray(self.m2))


def evaluate_in_chunks(
    trained, rows, *, num_samples: int, seed: int, is_image: bool, chunk_rows: int = 4096, threshold: float = 0.01
) -> dict:
    """The ``evaluate`` record of every row of ``rows``, read ``chunk_rows`` at a time.

    Parameters
    ----------
    trained : TrainedVAE
        A backend's trained model (``evaluate`` and ``encode`` on arrays).
    rows : StreamingRows
        The prepared rows (anything with ``chunks(n)``).
    num_samples, is_image : int, bool
        As for ``evaluate``.
    seed : int
        Chunk ``i`` draws with ``seed + i``.
    threshold : float
        Variance of a latent mean over points above which its dimension counts as active
        (:func:`ppvae.inference.metrics.active_units`).

    Returns
    -------
    dict
        The keys of :func:`ppvae.inference.metrics.evaluation_summary`, plus ``chunks``.
    """
    weighted: dict[str, float] = {}
    log_px, loc = _Moments(), _Moments()
    kl_per_dim = None
    n = chunks = 0
    num_features = 0
    for i, x in enumerate(rows.chunks(chunk_rows)):
        ev = trained.evaluate(x, num_samples=num_samples, seed=seed + i, is_image=is_image)
        k = int(ev["num_points"])
        num_features = int(np.prod(x.shape[1:]))
        for key in ("heldout_elbo", "reconstruction", "kl", "exact_log_px"):
            if key in ev:
                weighted[key] = weighted.get(key, 0.0) + ev[key] * k
        std = ev["heldout_log_px_stderr"] * math.sqrt(k)  # stderr = sd / sqrt(k), sd with ddof 1
        log_px.merge(k, ev["heldout_log_px"], std**2 * (k - 1))
        kpd = np.asarray(ev["kl_per_dim"], dtype=np.float64) * k
        kl_per_dim = kpd if kl_per_dim is None else kl_per_dim + kpd
        codes = np.asarray(trained.encode(x)[0], dtype=np.float64)
        loc.merge(k, codes.mean(0), ((codes - codes.mean(0)) ** 2).sum(0))
        n += k
        chunks += 1
    out = {
        "num_points": n,
        "heldout_elbo": weighted["heldout_elbo"] / n,
        "reconstruction": weighted["reconstruction"] / n,
        "kl": weighted["kl"] / n,
        "heldout_log_px": float(log_px.mean),
        "heldout_log_px_stderr": float(math.sqrt(log_px.var() / n)) if n > 1 else 0.0,
        "num_samples": int(num_samples),
        "active_units": int((loc.var() > threshold).sum()) if n > 1 else 0,
        "kl_per_dim": [float(v) for v in kl_per_dim / n],
        "chunks": chunks,
    }
    if is_image:
        out["bits_per_dim"] = float(-log_px.mean / (num_features * math.log(2)))
    if "exact_log_px" in weighted:
        out["exact_log_px"] = weighted["exact_log_px"] / n
    return out
