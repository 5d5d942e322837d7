"""Held-out metrics assembled the same way for every backend (numpy only)."""

from __future__ import annotations

import math

import numpy as np

__all__ = [
    "active_units",
    "layer_records",
    "evaluation_summary",
    "linear_probe_accuracy",
    "COLLAPSE_KL",
    "collapse_warning",
]

#: Training points of the linear probe at most (a seeded subset beyond): bounds its cost.
PROBE_MAX_TRAIN = 10_000


def active_units(loc: np.ndarray, threshold: float = 0.01) -> int:
    """Latent dimensions whose posterior mean varies across data: Cov_x(E_q[z]) > threshold.

    The definition of Burda et al. (2016); a collapsed dimension has variance near 0.
    """
    loc = np.asarray(loc)
    if loc.shape[0] < 2:
        return 0
    return int((loc.var(axis=0, ddof=1) > threshold).sum())


def evaluation_summary(
    *,
    reconstruction: np.ndarray,
    kl: np.ndarray,
    kl_per_dim: np.ndarray,
    loc: np.ndarray,
    log_px: np.ndarray,
    num_samples: int,
    num_features: int,
    is_image: bool,
    exact_log_px: np.ndarray | None = None,
) -> dict:
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


def linear_probe_accuracy(
    train_loc: np.ndarray,
    train_labels: np.ndarray,
    test_loc: np.ndarray,
    test_labels: np.ndarray,
    *,
    max_train: int = PROBE_MAX_TRAIN,
    seed: int = 0,
) -> dict | None:
    """How linearly decodable the labels are from the latent means: a logistic-regression probe.

    A multinomial logistic regression (scikit-learn, features standardized) is trained on
    ``train_loc`` (at most ``max_train`` points, a seeded subset beyond) and scored on
    ``test_loc``. The features a VAE learns are useful downstream when a linear classifier
    on them does well.

    Parameters
    ----------
    train_loc, test_loc : numpy.ndarray
        Posterior means E_q[z], ``(n, latent_dim)``.
    train_labels, test_labels : numpy.ndarray
        Integer labels, one per row.
    max_train : int
        Cap on the training points.
    seed : int
        Seed of the subset.

    Returns
    -------
    dict or None
        ``accuracy`` (fraction of test points classified correctly), ``num_train``,
        ``num_test``, ``num_classes``; ``None`` when the training labels hold fewer than
        two classes (nothing to learn).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    train_loc, test_loc = np.asarray(train_loc, np.float64), np.asarray(test_loc, np.float64)
    train_labels, test_labels = np.asarray(train_labels), np.asarray(test_labels)
    if len(train_loc) > max_train:
        keep = np.sort(np.random.default_rng(seed).choice(len(train_loc), max_train, replace=False))
        train_loc, train_labels = train_loc[keep], train_labels[keep]
    classes = np.unique(train_labels)
    if len(classes) < 2 or len(test_loc) == 0:
        return None
    probe = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    probe.fit(train_loc, train_labels)
    return {
        "accuracy": float(np.mean(probe.predict(test_loc) == test_labels)),
        "num_train": int(len(train_loc)),
        "num_test": int(len(test_loc)),
        "num_classes": int(len(classes)),
    }


def layer_records(split: str, terms: dict) -> dict[str, float]:
    """A hierarchical VAE's per-layer entries of an epoch record, from either backend's ELBO terms.

    ``terms["kl_sites"]`` (each latent site's KL per point) gives ``<split>_kl_<site>``, and
    ``terms["loc_sites"]`` (the codes of the layers above z_1) gives
    ``<split>_active_units_<site>``: a collapsed top layer hides behind an active z_1. Empty
    for a one-layer VAE.
    """
    record = {f"{split}_kl_{site}": float(np.mean(kl)) for site, kl in terms.get("kl_sites", {}).items()}
    for site, loc in terms.get("loc_sites", {}).items():
        record[f"{split}_active_units_{site}"] = active_units(np.asarray(loc))
    return record


#: A KL below this many nats per datapoint in the last epoch means a collapsed posterior.
COLLAPSE_KL = 0.1


def collapse_warning(records: list[dict]) -> str | None:
    """One line when the last epoch's KL says the posterior collapsed (the decoder ignores z), else ``None``."""
    if not records or records[-1].get("kl") is None:
        return None
    kl = float(records[-1]["kl"])
    if not kl < COLLAPSE_KL:
        return None
    return (
        f"the KL of the last epoch is {kl:.3g} nats per datapoint (below {COLLAPSE_KL:g}): the posterior has "
        "collapsed and the decoder ignores z. Recipes that help: --init-decoder-bias (a Bernoulli decoder "
        "that starts at the average image: what frees tanh networks and VampPriors), --free-bits 0.5, a KL "
        "warm-up (--beta-schedule linear --set train.warmup_steps=5000), a smaller --beta, a lower --lr, "
        "or a smaller decoder"
    )
