"""Training curves: loss, reconstruction, KL and β per epoch, and the held-out ELBO against time."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ppvae.errors import DataError
from ppvae.plotting.style import MARGIN, TITLE_FONTSIZE, new_figure, save_figure, wrap_text


_RECORD_KEYS = ("epoch", "loss", "reconstruction", "kl", "beta", "heldout_elbo", "validation_elbo")


def _as_float(value: Any, index: int, key: str) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(f"loss_curves: record {index} has a non-numeric {key!r} value {value!r}") from None


def _columns(records: Any) -> dict[str, np.ndarray]:
    """Validate ``records`` and return one float column per key (NaN where missing)."""
    if isinstance(records, (Mapping, str, bytes)) or not hasattr(records, "__iter__"):
        raise DataError(f"loss_curves: expected a list of per-epoch dicts, got {type(records).__name__}")
    records = list(records)
    if not records:
        raise DataError("loss_curves: no records to draw (the list of epochs is empty)")
    cols: dict[str, list[float]] = {k: [] for k in _RECORD_KEYS}
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise DataError(f"loss_curves: record {i} is a {type(rec).__name__}, expected a dict")
        for key in _RECORD_KEYS:
            cols[key].append(_as_float(rec.get(key), i, key))
    out = {k: np.asarray(v, dtype=np.float64) for k, v in cols.items()}
    epoch = out["epoch"]
    missing = ~np.isfinite(epoch)
    epoch[missing] = np.arange(1, len(epoch) + 1, dtype=np.float64)[missing]
    return out


def _fmt(value: float) -> str:
    return f"{value:.4g}"


def _plot_series(ax, x: np.ndarray, y: np.ndarray, label: str, **style) -> bool:
    """Plot the finite points of ``y`` against ``x``; return whether anything was drawn."""
    ok = np.isfinite(y) & np.isfinite(x)
    if not ok.any():
        return False
    xs, ys = x[ok], y[ok]
    marker = "o" if len(xs) <= 40 else None
    ax.plot(xs, ys, marker=marker, markersize=4, linewidth=1.6, label=f"{label} (last {_fmt(ys[-1])})", **style)
    return True


def _finish_panel(ax, drew: bool, ylabel: str, panel_title: str) -> None:
    ax.set_title(panel_title, fontsize=10, loc="left")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if drew:
        ax.legend(fontsize=8, loc="best", frameon=False)
    else:
        ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center", va="center", color="0.5")


def loss_curves(records: Sequence[Mapping[str, Any]], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw training curves, one panel per kind of quantity, and write them as a PNG.

    Panels, sharing the epoch axis:

    1. training loss and held-out ``-ELBO`` (nats per datapoint);
    2. the reconstruction term and the KL term;
    3. β, only when it varies over the run (a constant β is noted in panel 2's title).

    Missing values (``None``, NaN, absent keys) are skipped and the remaining points
    joined, so a held-out ELBO computed every few epochs is still drawn as a line;
    points carry markers when there are few of them, so a single epoch shows up.

    Parameters
    ----------
    records : sequence of dict
        One dict per epoch with keys ``epoch``, ``loss``, ``reconstruction``, ``kl``,
        ``beta`` and ``heldout_elbo`` (or ``validation_elbo``, for a run with a validation
        split); any value may be ``None`` or NaN. A missing
        ``epoch`` is taken as the record's 1-based position.
    path : str or path-like
        Destination PNG.
    title : str, optional
        Title above the panels.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ppvae.errors.DataError
        If ``records`` is empty, not a list of dicts, or holds non-numeric values.
    """
    cols = _columns(records)
    epoch = cols["epoch"]
    beta = cols["beta"]
    beta_finite = beta[np.isfinite(beta)]
    beta_varies = beta_finite.size > 0 and bool(np.ptp(beta_finite) > 0)

    from matplotlib.ticker import MaxNLocator

    npanels = 3 if beta_varies else 2
    heights = [3.0, 2.6] + ([1.6] if beta_varies else [])
    fig_h = sum(heights) + 0.4 + (0.4 if title else 0.0)
    fig = new_figure(8.0, fig_h, layout="constrained")
    axes = fig.subplots(npanels, 1, sharex=True, squeeze=False, gridspec_kw={"height_ratios": heights})[:, 0]

    ax = axes[0]
    drew = _plot_series(ax, epoch, cols["loss"], "training loss", color="C0")
    drew |= _plot_series(ax, epoch, -cols["heldout_elbo"], "held-out −ELBO", color="C3")
    drew |= _plot_series(ax, epoch, -cols["validation_elbo"], "validation −ELBO", color="C4")
    _finish_panel(ax, drew, "nats per datapoint", "loss")

    ax = axes[1]
    drew = _plot_series(ax, epoch, cols["reconstruction"], "reconstruction", color="C2")
    drew |= _plot_series(ax, epoch, cols["kl"], "KL", color="C1")
    panel = "reconstruction and KL terms"
    if beta_finite.size and not beta_varies:
        panel += f" (β = {_fmt(beta_finite[0])} throughout)"
    _finish_panel(ax, drew, "nats per datapoint", panel)

    if beta_varies:
        ax = axes[2]
        drew = _plot_series(ax, epoch, beta, "β", color="C4")
        _finish_panel(ax, drew, "β", "KL weight β")

    axes[-1].set_xlabel("epoch")
    axes[-1].xaxis.set_major_locator(MaxNLocator(integer=True))
    finite_epochs = epoch[np.isfinite(epoch)]
    if np.ptp(finite_epochs) < 4:  # few epochs: integer ticks, not 0.945 ... 1.05
        first, last = float(finite_epochs.min()), float(finite_epochs.max())
        axes[-1].set_xlim(first - 0.5, last + 0.5)
        if np.all(finite_epochs == np.round(finite_epochs)):
            axes[-1].set_xticks(np.arange(first, last + 1.0))
    if title is not None:
        fig.suptitle(wrap_text(title, 8.0 - 2 * MARGIN, TITLE_FONTSIZE), fontsize=TITLE_FONTSIZE)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- comparisons


_SERIES_MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")


def _series_column(value: Any, label: str, key: str) -> np.ndarray:
    """One 1-D float column of a series (``None`` -> NaN); DataError when not numeric."""
    if isinstance(value, (str, bytes, Mapping)) or not hasattr(value, "__iter__"):
        raise DataError(
            f"elbo_vs_time: series {label!r}: {key!r} must be a sequence of numbers, got {type(value).__name__}"
        )
    out = []
    for i, v in enumerate(value):
        if v is None:
            out.append(math.nan)
            continue
        if isinstance(v, (bool, np.bool_)):
            raise DataError(f"elbo_vs_time: series {label!r}: {key}[{i}] is {v!r}, not a number")
        try:
            out.append(float(v))
        except (TypeError, ValueError):
            raise DataError(f"elbo_vs_time: series {label!r}: {key}[{i}] = {v!r} is not a number") from None
    return np.asarray(out, dtype=np.float64)


def _as_series(series: Any) -> list[tuple[str, np.ndarray, np.ndarray, np.ndarray | None]]:
    """Validate ``series``; return ``(label, seconds, elbo, spread or None)`` per line."""
    if not isinstance(series, Mapping):
        raise DataError(
            "elbo_vs_time: expected a mapping of label -> {'seconds': [...], 'elbo': [...]}, "
            f"got {type(series).__name__}"
        )
    if not series:
        raise DataError("elbo_vs_time: no series to draw (the mapping is empty)")
    out = []
    for label, value in series.items():
        label = str(label)
        if isinstance(value, Mapping):
            missing = [k for k in ("seconds", "elbo") if k not in value]
            if missing:
                raise DataError(
                    f"elbo_vs_time: series {label!r} has no {' or '.join(map(repr, missing))}; "
                    "give cumulative seconds and held-out ELBO per point"
                )
            seconds, elbo, spread = value["seconds"], value["elbo"], value.get("spread")
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 2:
            (seconds, elbo), spread = value, None
        else:
            raise DataError(
                f"elbo_vs_time: series {label!r} must be a mapping with 'seconds' and 'elbo' "
                f"(or a (seconds, elbo) pair), got {type(value).__name__}"
            )
        x = _series_column(seconds, label, "seconds")
        y = _series_column(elbo, label, "elbo")
        s = None if spread is None else _series_column(spread, label, "spread")
        if len(x) != len(y) or (s is not None and len(s) != len(y)):
            lengths = f"{len(x)} seconds and {len(y)} ELBO values" + ("" if s is None else f" and {len(s)} spreads")
            raise DataError(f"elbo_vs_time: series {label!r} has {lengths}; give one of each per point")
        if np.any(np.isinf(x)) or np.any(np.isinf(y)):
            raise DataError(
                f"elbo_vs_time: series {label!r} holds infinite values; use None or NaN for a missing point"
            )
        if np.any(x[np.isfinite(x)] < 0):
            raise DataError(f"elbo_vs_time: series {label!r} has negative seconds; give cumulative wall time")
        out.append((label, x, y, s))
    if not any(np.any(np.isfinite(x) & np.isfinite(y)) for _, x, y, _ in out):
        raise DataError("elbo_vs_time: no series has a finite (seconds, elbo) point to draw")
    return out


def elbo_vs_time(series: Mapping[str, Any], path: str | os.PathLike, *, title: str | None = None) -> Path:
    """Draw held-out ELBO against cumulative training time, one line per series, as a PNG.

    Meant for comparing backends and estimators (``ppvae compare``): a line that rises
    faster reaches a better model sooner. Missing points (``None``, NaN) are skipped and
    the rest joined; points carry markers when there are few of them, so a one-epoch run
    still shows up. Each series has its own colour and marker shape.

    Parameters
    ----------
    series : mapping
        ``label -> {"seconds": [...], "elbo": [...], "spread": [...]}``: cumulative
        training seconds and held-out ELBO (nats per datapoint) at each point, e.g. at the
        end of each epoch; the optional ``spread`` (same length) is drawn as a shaded band
        ``elbo ± spread``. A ``(seconds, elbo)`` pair may stand for the mapping.
    path : str or path-like
        Destination PNG.
    title : str, optional
        Title above the plot.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ppvae.errors.DataError
        If ``series`` is empty or not a mapping, a series lacks ``seconds`` or ``elbo``,
        lengths differ, values are not numbers, infinite or negative seconds, or no
        series has a single finite point.
    """
    lines = _as_series(series)

    fig_h = 5.0 + (0.4 if title else 0.0)
    fig = new_figure(8.0, fig_h, layout="constrained")
    ax = fig.add_subplot()
    for i, (label, x, y, s) in enumerate(lines):
        color = f"C{i % 10}"
        marker = _SERIES_MARKERS[i % len(_SERIES_MARKERS)]
        ok = np.isfinite(x) & np.isfinite(y)
        if not ok.any():
            ax.plot([], [], color=color, marker=marker, linestyle="none", label=f"{label} (not recorded)")
            continue
        xs, ys = x[ok], y[ok]
        order = np.argsort(xs, kind="stable")
        xs, ys = xs[order], ys[order]
        # clip_on=False: a point at (almost) zero seconds still shows its whole marker.
        ax.plot(
            xs,
            ys,
            color=color,
            marker=marker if len(xs) <= 40 else None,
            markersize=5,
            linewidth=1.6,
            label=label,
            clip_on=False,
            zorder=3,
        )
        if s is not None:
            ss = s[ok][order]
            band = np.isfinite(ss) & (ss > 0)
            if band.any():
                ax.fill_between(
                    xs, np.where(band, ys - ss, ys), np.where(band, ys + ss, ys), color=color, alpha=0.15, linewidth=0
                )
    ax.set_xlim(left=0.0)
    ax.margins(y=0.08)
    ax.ticklabel_format(axis="both", useOffset=False, style="plain")  # -510.4, not 0.4 + -5.1e2
    ax.set_xlabel("cumulative training time (s)")
    ax.set_ylabel("held-out ELBO (nats per datapoint, higher is better)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, loc="best", frameon=False)
    if title is not None:
        fig.suptitle(wrap_text(title, 8.0 - 2 * MARGIN, TITLE_FONTSIZE), fontsize=TITLE_FONTSIZE)
    return save_figure(fig, path)
