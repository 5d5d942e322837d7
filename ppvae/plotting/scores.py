"""The picture of anomaly scores: their histograms by class and the ROC curves.

Drawn with matplotlib's object-oriented API through the helpers of :mod:`ppvae.plotting`
(no pyplot, atomic PNG writes).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Mapping

import numpy as np

from ppvae.errors import DataError
from ppvae.plotting.style import MARGIN, TITLE_FONTSIZE, new_figure, wrap_text, save_figure

__all__ = ["score_histograms"]

_NORMAL_COLOR = "C0"
_ANOMALOUS_COLOR = "C3"


def score_histograms(
    scores: Mapping[str, np.ndarray],
    positives: np.ndarray,
    path: str | os.PathLike,
    *,
    auc: Mapping[str, float] | None = None,
    class_names: tuple[str, str] = ("normal", "anomalous"),
    title: str | None = None,
) -> Path:
    """Histograms of each score by class, and the ROC curve of every score, as one PNG.

    Parameters
    ----------
    scores : mapping of str to numpy.ndarray
        Score name (e.g. ``"-log p(x)"``) -> one score per point, higher = more anomalous.
    positives : numpy.ndarray of bool
        Which points are anomalous.
    path : path-like
        Destination PNG.
    auc : mapping of str to float, optional
        ROC AUC per score name, shown in the legends.
    class_names : (str, str)
        Names of the normal and the anomalous class.
    title : str, optional
        Title above the panels.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from sklearn.metrics import roc_curve

    positives = np.asarray(positives, dtype=bool)
    if not scores:
        raise DataError("score_histograms: no scores to draw")
    for name, s in scores.items():
        if np.shape(s) != positives.shape:
            raise DataError(f"score_histograms: {name!r} has {np.shape(s)} values for {positives.shape} labels")
    if positives.all() or not positives.any():
        raise DataError("score_histograms: needs both normal and anomalous points")
    auc = dict(auc or {})
    k = len(scores)
    # Panels in one row up to three; four (three scores and the ROC) as a 2 x 2 grid.
    ncols = k + 1 if k + 1 <= 3 else 2
    nrows = -(-(k + 1) // ncols)
    width = 4.6 * ncols
    height = 4.2 * nrows + (0.5 if title else 0.0)
    fig = new_figure(width, height, layout="constrained")
    grid = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in grid[k + 1 :]:
        ax.set_visible(False)
    axes = grid[: k + 1]
    normal_name, anomalous_name = class_names
    n_pos, n_neg = int(positives.sum()), int((~positives).sum())
    for ax, (name, s) in zip(axes[:-1], scores.items()):
        s = np.asarray(s, dtype=np.float64)
        # Shared bins, so the two classes are directly comparable; densities, so a small
        # anomalous class is not dwarfed by a large normal one.
        edges = np.histogram_bin_edges(s, bins="auto")
        if len(edges) > 61:
            edges = np.linspace(s.min(), s.max(), 61)
        ax.hist(
            s[~positives], bins=edges, density=True, color=_NORMAL_COLOR, alpha=0.5, label=f"{normal_name}, n = {n_neg}"
        )
        ax.hist(
            s[positives],
            bins=edges,
            density=True,
            color=_ANOMALOUS_COLOR,
            alpha=0.5,
            label=f"{anomalous_name}, n = {n_pos}",
        )
        ax.set_xlabel(f"{name} (higher = more anomalous)")
        ax.set_ylabel("density")
        panel = f"{name} by class" + (f" (ROC AUC {auc[name]:.3f})" if name in auc else "")
        ax.set_title(panel, fontsize=10, loc="left")
        ax.legend(fontsize=8, frameon=False, loc="upper right")
        ax.grid(True, alpha=0.3)
    ax = axes[-1]
    for i, (name, s) in enumerate(scores.items()):
        fpr, tpr, _ = roc_curve(positives, np.asarray(s, dtype=np.float64))
        label = name + (f" (AUC {auc[name]:.3f})" if name in auc else "")
        # Not C0/C3: those are the classes' colours in the histograms.
        ax.plot(
            fpr,
            tpr,
            color=("C1", "C2", "C4", "C5")[i % 4],
            linewidth=1.8,
            linestyle=("-", "--", ":", "-.")[i % 4],
            label=label,
        )
    ax.plot([0, 1], [0, 1], color="0.6", linewidth=1, linestyle=":", label="chance (AUC 0.5)")
    # A little room beyond [0, 1], so a curve along the edge (AUC near 1) stays visible.
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel(f"false positive rate ({normal_name.split(' (')[0]} flagged)")
    ax.set_ylabel(f"true positive rate ({anomalous_name.split(' (')[0]} found)")
    ax.set_title("ROC curves", fontsize=10, loc="left")
    ax.legend(fontsize=8, frameon=False, loc="lower right")
    ax.grid(True, alpha=0.3)
    if title is not None:
        fig.suptitle(wrap_text(title, width - 2 * MARGIN, TITLE_FONTSIZE), fontsize=TITLE_FONTSIZE)
    return save_figure(fig, path)
