"""Anomaly scores per datapoint: -ELBO and -log p(x), and how well they separate classes.

A VAE trained on normal data gives unusual inputs a low ELBO and a low marginal
likelihood, so ``-ELBO`` and ``-log p(x)`` are anomaly scores: higher means more
anomalous. Both come from the same ``K`` draws ``z_k ~ q(z|x)`` per point, with log
weights ``w_k = log p(x, z_k) - log q(z_k|x)``:

- ``neg_elbo = -mean_k w_k`` (an unbiased estimate of -ELBO, standard error reported),
- ``neg_log_px = -log mean_k exp(w_k)`` (the IWAE bound with K samples).

Because the two share their draws, ``neg_log_px <= neg_elbo`` holds for every point
(Jensen's inequality), not only on average.

Likelihoods measure how *simple* an input is as much as how *familiar*: on binarized
digits a 1 gets a far higher log p(x) than an 8 whatever the training data, so an unseen
class of similar complexity (9s after training on 0-8) is not flagged by them. The
optional third score looks at *where* the encoder puts a point instead:

- ``neg_log_latent_density``: -log density of the point's posterior mean under a
  Gaussian mixture fit to the posterior means of the training split (full covariances,
  :data:`LATENT_COMPONENTS` components).

With labels, :func:`roc_auc` measures how well a score ranks the anomalous class(es)
above the rest (1 = perfectly, 0.5 = no better than chance).

Examples
--------
>>> import ppvae
>>> run = ppvae.load("runs/digits0-8")                                       # doctest: +SKIP
>>> s = run.score(x, num_samples=1000)                                      # doctest: +SKIP
>>> roc_auc(s["neg_log_px"], positives_from_labels(y, anomalous=[9]))      # doctest: +SKIP
0.87
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import numpy as np

from ppvae.data.arrays import check_labels
from ppvae.errors import DataError, UsageError
from ppvae.runs.atomic import atomic_write_text

__all__ = [
    "SCORES",
    "LATENT_COMPONENTS",
    "score_points",
    "latent_density_scores",
    "positives_from_labels",
    "roc_auc",
    "read_labels",
    "write_scores_csv",
    "picture_path",
    "ScoreReport",
    "score_data",
]

#: The score columns, in CSV order, with their names in pictures (higher = more anomalous).
SCORES = {"neg_elbo": "-ELBO", "neg_log_px": "-log p(x)", "neg_log_latent_density": "-log latent density"}

#: Components of the latent-density mixture (one per class of a 10-class dataset).
LATENT_COMPONENTS = 10

# Bound on the elements of the largest array one call to ``draws`` returns, z of shape
# (K, points, latent_dim): 2**24 float32 values are 64 MiB. Fewer, larger calls matter
# because each call may compile its program anew (NumPyro).
MAX_ELEMENTS = 2**24


def _chunk_seed(seed: int, chunk: int) -> int:
    """An independent seed per chunk of points (seed + i would reuse draws across seeds)."""
    return int(np.random.SeedSequence([int(seed), int(chunk)]).generate_state(1)[0] >> 1)


def score_points(
    trained,
    x: np.ndarray,
    *,
    latent_dim: int,
    num_samples: int = 1000,
    seed: int = 0,
    max_elements: int = MAX_ELEMENTS,
    y: np.ndarray | None = None,
) -> dict[str, np.ndarray]:
    """Per-point -ELBO and -log p(x) from ``num_samples`` draws of q(z|x) each.

    Parameters
    ----------
    trained : object
        A backend's trained VAE (``Run.trained``); its ``draws`` method supplies
        ``log p(x|z)``, ``log p(z)`` and ``log q(z|x)`` for draws ``z ~ q(z|x)``.
    x : numpy.ndarray
        Prepared data, ``(n, *event_shape)``.
    latent_dim : int
        Size of z (sets how many points go into one call).
    num_samples : int
        K, draws per point; the IWAE bound tightens as K grows.
    seed : int
        Seed of the draws.
    max_elements : int
        Bound on ``K * points * latent_dim`` per call (memory).
    y : numpy.ndarray, optional
        Class labels of a conditional run's points (scores of log p(x|y)).

    Returns
    -------
    dict of numpy.ndarray
        float64 arrays of shape ``(n,)``: ``neg_elbo``, ``neg_log_px`` and
        ``neg_elbo_stderr`` (the Monte-Carlo standard error of ``neg_elbo``; 0 when K = 1).
    """
    if not (isinstance(num_samples, (int, np.integer)) and not isinstance(num_samples, bool) and num_samples > 0):
        raise UsageError(f"--num-samples must be a positive integer, got {num_samples!r}")
    num_samples = int(num_samples)
    n = len(x)
    per_call = max(1, min(n, max_elements // (num_samples * max(1, latent_dim))))
    parts: dict[str, list[np.ndarray]] = {"neg_elbo": [], "neg_log_px": [], "neg_elbo_stderr": []}
    for i, start in enumerate(range(0, n, per_call)):
        extra = {} if y is None else {"y": y[start : start + per_call]}
        d = trained.draws(x[start : start + per_call], num_samples, seed=_chunk_seed(seed, i), **extra)
        lw = (
            np.asarray(d["log_lik"], np.float64)
            + np.asarray(d["log_prior"], np.float64)
            - np.asarray(d["log_q"], np.float64)
        )  # (K, m)
        top = lw.max(axis=0)
        log_mean_w = top + np.log(np.exp(lw - top).mean(axis=0))  # log-mean-exp, stable
        parts["neg_elbo"].append(-lw.mean(axis=0))
        parts["neg_log_px"].append(-log_mean_w)
        sd = lw.std(axis=0, ddof=1) if num_samples > 1 else np.zeros(lw.shape[1])
        parts["neg_elbo_stderr"].append(sd / math.sqrt(num_samples))
    out = {k: np.concatenate(v) if v else np.zeros(0) for k, v in parts.items()}
    bad = ~(np.isfinite(out["neg_elbo"]) & np.isfinite(out["neg_log_px"]))
    if bad.any():
        raise DataError(
            f"{int(bad.sum())} of {n} points got a non-finite score (first: point {int(np.argmax(bad))}); "
            "the data may lie outside what the run's likelihood supports"
        )
    return out


def latent_density_scores(
    train_loc: np.ndarray, loc: np.ndarray, *, components: int = LATENT_COMPONENTS, seed: int = 0
) -> np.ndarray:
    """-log density of ``loc`` under a Gaussian mixture fit to ``train_loc``.

    Parameters
    ----------
    train_loc : numpy.ndarray
        Posterior means of normal (training) data, ``(m, latent_dim)``.
    loc : numpy.ndarray
        Posterior means of the points to score, ``(n, latent_dim)``.
    components : int
        Mixture components (full covariances); fewer when there are few training points.
    seed : int
        Seed of the mixture's initialization.

    Returns
    -------
    numpy.ndarray
        float64 ``(n,)``; higher = farther from where the encoder puts normal data.
    """
    from sklearn.mixture import GaussianMixture

    train_loc = np.asarray(train_loc, np.float64)
    # A full covariance has Z(Z+1)/2 numbers: ask for some 5Z points per component at least.
    k = max(1, min(int(components), len(train_loc) // (5 * train_loc.shape[1] + 5)))
    # reg_covar keeps a component on a collapsed (near-constant) latent dimension invertible.
    gmm = GaussianMixture(k, covariance_type="full", reg_covar=1e-4, random_state=seed).fit(train_loc)
    return -gmm.score_samples(np.asarray(loc, np.float64))


def _describe_classes(classes) -> str:
    classes = [int(c) for c in classes]
    return (
        ", ".join(map(str, classes))
        if len(classes) <= 12
        else f"{len(classes)} classes ({min(classes)}-{max(classes)})"
    )


def positives_from_labels(labels: np.ndarray, anomalous: Sequence[int] | None = None) -> np.ndarray | None:
    """Which points are anomalous: labels in ``anomalous``, or labels that are already 0/1.

    Parameters
    ----------
    labels : numpy.ndarray
        One integer label per point.
    anomalous : sequence of int, optional
        The class(es) to treat as anomalies (positives). Without it, labels that take only
        the values 0 and 1 are used as they are (1 = anomalous).

    Returns
    -------
    numpy.ndarray of bool or None
        ``None`` when the labels are not 0/1 and no ``anomalous`` class is given.

    Raises
    ------
    DataError
        If the positives or the negatives would be empty (ROC AUC needs both).
    """
    labels = np.asarray(labels)
    present = np.unique(labels)
    if anomalous is None or len(anomalous) == 0:
        if not set(present.tolist()) <= {0, 1}:
            return None
        positives = labels == 1
        what = "label 1"
    else:
        wanted = sorted({int(a) for a in anomalous})
        positives = np.isin(labels, wanted)
        what = f"label(s) {_describe_classes(wanted)}"
    if positives.all() or not positives.any():
        side = "every" if positives.all() else "no"
        raise DataError(
            f"{side} point has {what} (labels present: {_describe_classes(present)}); ROC AUC needs "
            "anomalous and normal points: choose --anomalous among the labels present, or score "
            "data that mixes both"
        )
    return positives


def roc_auc(scores: np.ndarray, positives: np.ndarray) -> float:
    """Area under the ROC curve of ``scores`` (higher = more anomalous) for ``positives``."""
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(np.asarray(positives, dtype=bool), np.asarray(scores, dtype=np.float64)))


def read_labels(path: str | Path, n: int) -> np.ndarray:
    """Read one integer label per point from a ``.npy``, ``.npz`` or ``.csv``/``.txt`` file.

    An ``.npz`` holds them under ``"y"`` or ``"labels"`` (or as its only array); a text
    file holds one label per line, optionally under a header line.
    """
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"labels file {str(path)!r} does not exist; give one integer label per point (.npy, .npz, .csv or .txt)"
        )
    suffix = path.suffix.lower()
    try:
        if suffix == ".npy":
            labels = np.load(path, allow_pickle=False)
        elif suffix == ".npz":
            with np.load(path, allow_pickle=False) as archive:
                key = next((k for k in ("y", "labels") if k in archive.files), None)
                if key is None and len(archive.files) == 1:
                    key = archive.files[0]
                if key is None:
                    raise DataError(
                        f"{path} holds arrays {', '.join(archive.files) or '(none)'}; store the labels "
                        "under 'y' or 'labels'"
                    )
                labels = archive[key]
        elif suffix in (".csv", ".txt"):
            lines = [ln.strip().split(",")[0] for ln in path.read_text().splitlines() if ln.strip()]
            if lines and not lines[0].lstrip("+-").replace(".", "", 1).isdigit():
                lines = lines[1:]  # a header line
            labels = np.asarray([float(v) for v in lines])
        else:
            raise DataError(
                f"unsupported labels file type {path.suffix or '(none)'!r} for {path}; use .npy, .npz, .csv or .txt"
            )
    except DataError:
        raise
    except (ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split()) or type(exc).__name__
        raise DataError(f"cannot read labels from {path} ({reason}); give one integer per point") from None
    labels = np.asarray(labels)
    if labels.ndim == 2 and 1 in labels.shape:
        labels = labels.reshape(-1)
    return check_labels(labels, n, f"the labels in {path}")


def write_scores_csv(
    path: str | Path,
    scores: dict[str, np.ndarray],
    labels: np.ndarray | None = None,
    positives: np.ndarray | None = None,
) -> Path:
    """Write one row per point (index, label, anomalous, then every score in ``scores``), atomically."""
    path = Path(path)
    n = len(scores["neg_elbo"])
    header = ["index"] + (["label"] if labels is not None else []) + (["anomalous"] if positives is not None else [])
    columns = [k for k in SCORES if k in scores]
    header += columns
    rows = [",".join(header)]
    for i in range(n):
        row = [str(i)]
        if labels is not None:
            row.append(str(int(labels[i])))
        if positives is not None:
            row.append(str(int(bool(positives[i]))))
        row += [f"{scores[k][i]:.6f}" for k in columns]
        rows.append(",".join(row))
    atomic_write_text(path, "\n".join(rows) + "\n")
    return path


@dataclass
class ScoreReport:
    """What :func:`score_data` computed and wrote.

    Attributes
    ----------
    scores : dict of numpy.ndarray
        ``neg_elbo``, ``neg_log_px``, ``neg_elbo_stderr`` per point.
    labels, positives : numpy.ndarray or None
        The labels, and which points count as anomalous.
    roc_auc : dict of float
        ROC AUC per score (empty without positives).
    csv, picture : pathlib.Path or None
        The files written.
    """

    scores: dict[str, np.ndarray]
    num_samples: int
    labels: np.ndarray | None = None
    positives: np.ndarray | None = None
    roc_auc: dict[str, float] = field(default_factory=dict)
    csv: Path | None = None
    picture: Path | None = None

    def to_dict(self) -> dict:
        """Plain-JSON numbers (means, AUCs, counts, file names)."""
        out = {
            "num_points": int(len(self.scores["neg_elbo"])),
            "num_samples": self.num_samples,
            **{f"mean_{k}": float(np.mean(self.scores[k])) for k in SCORES if k in self.scores},
            "roc_auc": dict(self.roc_auc),
            "csv": None if self.csv is None else str(self.csv),
            "picture": None if self.picture is None else str(self.picture),
        }
        if self.positives is not None:
            out["num_anomalous"] = int(self.positives.sum())
            out["num_normal"] = int((~self.positives).sum())
        return out


def picture_path(csv: str | Path) -> Path:
    """The histogram/ROC picture written beside ``csv`` (``scores.csv`` -> ``scores.png``)."""
    return Path(csv).with_suffix(".png")


def score_data(
    run,
    x: np.ndarray,
    *,
    labels: np.ndarray | None = None,
    anomalous: Sequence[int] | None = None,
    out: str | Path | None = None,
    force: bool = False,
    num_samples: int = 1000,
    seed: int = 0,
    latent_density: bool = False,
    class_names: tuple[str, str] | None = None,
) -> ScoreReport:
    """Score ``x`` with a run, compute ROC AUCs where labels allow, and write the CSV and picture.

    Parameters
    ----------
    run : ppvae.Run
        The trained run.
    x : numpy.ndarray
        Prepared data (``Run.load_data``).
    labels : numpy.ndarray, optional
        One integer label per point.
    anomalous : sequence of int, optional
        The class(es) that count as anomalies; without it, 0/1 labels are used as they are.
    out : path, optional
        The ``.csv`` to write; the picture goes beside it (``.png``) when there are positives.
    force : bool
        Overwrite existing files.
    num_samples, seed : int
        Draws per point (K) and their seed.
    latent_density : bool
        Also compute ``neg_log_latent_density``.
    class_names : (str, str), optional
        Legend names of the normal and the anomalous class.

    Returns
    -------
    ScoreReport
    """
    if anomalous and labels is None:
        raise UsageError(
            "--anomalous needs labels: pass --labels FILE, or data whose file holds labels "
            "(an .npz with 'y' or 'labels')"
        )
    if labels is not None:
        labels = check_labels(labels, len(x), "the labels")
    if out is not None:
        out = Path(out)
        if out.suffix.lower() != ".csv":
            raise UsageError(f"--out {str(out)!r}: use a .csv file name")
        for p in (out, picture_path(out)):
            if p.exists() and not force:
                raise UsageError(f"{str(p)!r} already exists; pass --force to overwrite it or choose another --out")
    positives = None if labels is None else positives_from_labels(labels, anomalous)
    scores = run.score(x, num_samples=num_samples, seed=seed, labels=labels, latent_density=latent_density)
    report = ScoreReport(scores=scores, num_samples=int(num_samples), labels=labels, positives=positives)
    if positives is not None:
        report.roc_auc = {k: roc_auc(scores[k], positives) for k in SCORES if k in scores}
    if out is not None:
        report.csv = write_scores_csv(out, scores, labels, positives)
        if positives is not None:
            from ppvae.plotting.scores import score_histograms

            if class_names is None:
                if anomalous:
                    wanted = sorted({int(a) for a in anomalous})
                    rest = sorted(set(np.unique(labels).tolist()) - set(wanted))
                    class_names = (
                        f"normal (labels {_describe_classes(rest)})",
                        f"anomalous (label{'s' if len(wanted) > 1 else ''} {_describe_classes(wanted)})",
                    )
                else:
                    class_names = ("normal (label 0)", "anomalous (label 1)")
            report.picture = score_histograms(
                {SCORES[k]: scores[k] for k in SCORES if k in scores},
                positives,
                picture_path(out),
                auc={SCORES[k]: v for k, v in report.roc_auc.items()},
                class_names=class_names,
                title=f"anomaly scores of {len(x)} points (K = {num_samples} draws each)",
            )
    return report
