"""Grids of images: samples, reconstructions beside their inputs, labelled rows, panels, tables.

Examples
--------
>>> import numpy as np
>>> from ppvae.plotting import image_grid
>>> rng = np.random.default_rng(0)
>>> image_grid(rng.random((16, 28, 28)), "samples.png", title="16 samples")  # doctest: +SKIP
PosixPath('samples.png')
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from ppvae.errors import DataError, UsageError
from ppvae.plotting.style import (
    CHAR_WIDTH,
    MARGIN,
    MIN_TITLED_WIDTH,
    TITLE_FONTSIZE,
    as_images,
    compose_title,
    draw_tiles,
    needs_scaling,
    new_figure,
    save_figure,
    tile_width,
    to_unit,
    wrap_text,
)


def image_grid(
    images: Any,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    ncols: int | None = None,
    labels: Sequence[Any] | None = None,
) -> Path:
    """Draw images in a grid (grey colormap, no axes) and write it as a PNG.

    Parameters
    ----------
    images : array_like
        Shape ``(n, H, W)`` or ``(n, C, H, W)`` with ``C`` in {1, 3} (channel-last
        ``(n, H, W, C)`` is accepted too), values in ``[0, 1]``. Values slightly outside
        are clipped; data clearly outside (e.g. standardized pixels) is min-max scaled
        per image, and the title says so. ``uint8`` data is divided by 255.
    path : str or path-like
        Destination PNG.
    title : str, optional
        Title above the grid (wrapped to the figure width).
    ncols : int, optional
        Number of columns; default ``ceil(sqrt(n))``, a square-ish grid.
    labels : sequence, optional
        One short label per image, drawn small above it (e.g. digit classes).

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ppvae.errors.DataError
        If ``images`` has the wrong shape, is empty or holds NaN/inf, or ``labels``
        does not have one entry per image.
    ppvae.errors.UsageError
        If ``ncols`` is not a positive integer.
    """
    arr = as_images(images, "image_grid")
    n = arr.shape[0]
    if ncols is None:
        ncols = math.ceil(math.sqrt(n))
    elif isinstance(ncols, bool) or not isinstance(ncols, (int, np.integer)) or ncols < 1:
        raise UsageError(f"image_grid: ncols must be a positive integer, got {ncols!r}")
    ncols = int(min(ncols, n))
    if labels is not None:
        labels = list(labels)
        if len(labels) != n:
            raise DataError(f"image_grid: got {len(labels)} labels for {n} images; give one per image")
    scaled = needs_scaling(arr)
    arr = to_unit(arr, scaled)
    nrows = math.ceil(n / ncols)
    positions = [(k // ncols, k % ncols) for k in range(n)]
    fig = draw_tiles(
        arr,
        positions,
        nrows=nrows,
        ncols=ncols,
        title=compose_title(title, scaled),
        tile_labels=labels,
    )
    return save_figure(fig, path)


def reconstruction_grid(
    originals: Any,
    reconstructions: Any,
    path: str | os.PathLike,
    *,
    title: str | None = None,
) -> Path:
    """Draw data and reconstructions as alternating rows and write them as a PNG.

    Each pair of rows shows a run of originals ("data") above their reconstructions
    ("reconstruction"), column by column; pairs of rows are separated by a wider gap.

    Parameters
    ----------
    originals, reconstructions : array_like
        Same shape, ``(n, H, W)`` or ``(n, C, H, W)``; same conventions as
        :func:`image_grid`. If either is clearly outside ``[0, 1]``, both are min-max
        scaled per image (and the title says so).
    path : str or path-like
        Destination PNG.
    title : str, optional
        Title above the grid.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ppvae.errors.DataError
        If either array has the wrong shape, is empty or holds NaN/inf, or the two
        shapes differ.
    """
    orig = as_images(originals, "reconstruction_grid (originals)")
    recon = as_images(reconstructions, "reconstruction_grid (reconstructions)")
    if orig.shape != recon.shape:
        raise DataError(
            f"reconstruction_grid: originals {orig.shape} and reconstructions {recon.shape} must have the same shape"
        )
    n = orig.shape[0]
    ncols = n if n <= 10 else math.ceil(math.sqrt(2 * n))
    npairs = math.ceil(n / ncols)
    scaled = needs_scaling(orig, recon)
    orig = to_unit(orig, scaled)
    recon = to_unit(recon, scaled)

    tiles = []
    positions = []
    for p in range(npairs):
        chunk = range(p * ncols, min(n, (p + 1) * ncols))
        for k in chunk:
            tiles.append(orig[k])
            positions.append((2 * p, k - p * ncols))
        for k in chunk:
            tiles.append(recon[k])
            positions.append((2 * p + 1, k - p * ncols))
    nrows = 2 * npairs
    tile_w = tile_width(ncols, nrows, orig.shape[1] / orig.shape[2])
    small = max(0.03, 0.06 * tile_w)
    gaps = [0.0] + [small if r % 2 else 4 * small for r in range(1, nrows)]
    fig = draw_tiles(
        np.stack(tiles),
        positions,
        nrows=nrows,
        ncols=ncols,
        title=compose_title(title, scaled),
        row_labels=["data", "reconstruction"] * npairs,
        gap_before_row=gaps,
    )
    return save_figure(fig, path)


# ------------------------------------------------------------------ rows and panels of images


def _mosaic(images: np.ndarray, ncols: int, pad: int = 2) -> np.ndarray:
    """Tile ``(n, H, W)`` images into one array, ``ncols`` per row, separated by white lines."""
    n, h, w = images.shape
    nrows = math.ceil(n / ncols)
    canvas = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad))
    for k, image in enumerate(images):
        r, c = divmod(k, ncols)
        canvas[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = image
    return canvas


def labelled_rows(rows: Mapping[str, Any], path: str | os.PathLike, title: str | None = None) -> Path:
    """One row of images per entry of ``rows``, its label on the left, and write a PNG.

    For comparing models side by side: ``{"data": x, "model A": recon_a, "model B": recon_b}``.

    Parameters
    ----------
    rows : mapping of str to array_like
        Label -> ``(n, H, W)`` images with values in [0, 1] (shown as grey levels, not rescaled).
    path : str or path-like
        Destination PNG.
    title : str, optional
        Title above the rows.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from matplotlib.figure import Figure

    rows = {str(k): np.asarray(v, dtype=float) for k, v in rows.items()}
    ncols = max(len(v) for v in rows.values())
    # Laid out in inches, so that long row labels always fit to the left of the images.
    tile, gap, top = 0.62, 0.06, 0.38
    label_w = 0.15 + 0.075 * max(len(k) for k in rows)  # about 0.075 inch per character at 9 pt
    width, height = label_w + tile * ncols + 0.15, top + (tile + gap) * len(rows)
    fig = Figure(figsize=(width, height))
    for i, (label, images) in enumerate(rows.items()):
        bottom = height - top - (i + 1) * (tile + gap)
        ax = fig.add_axes((label_w / width, bottom / height, tile * ncols / width, tile / height))
        ax.imshow(_mosaic(images, ncols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        fig.text((label_w - 0.1) / width, (bottom + tile / 2) / height, label, ha="right", va="center", fontsize=9)
    if title:
        fig.suptitle(title, fontsize=11, y=1 - 0.1 / height, va="top")
    return save_figure(fig, path)


def side_by_side(panels: Mapping[str, Any], path: str | os.PathLike, title: str | None = None, ncols: int = 8) -> Path:
    """Image mosaics next to each other, one per entry of ``panels``, and write a PNG.

    For comparing samples of several models: ``{"model A": run_a.sample(64), ...}``.

    Parameters
    ----------
    panels : mapping of str to array_like
        Panel title -> ``(n, H, W)`` images with values in [0, 1].
    path : str or path-like
        Destination PNG.
    title : str, optional
        Title above the panels.
    ncols : int
        Images per row in each panel.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    from matplotlib.figure import Figure

    fig = Figure(figsize=(0.2 + 3.6 * len(panels), 4.3), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, images) in zip(axes, panels.items()):
        ax.imshow(_mosaic(np.asarray(images, dtype=float), ncols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(name, fontsize=10)
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- tables


def table_grid(
    rows: Any,
    path: str | os.PathLike,
    *,
    title: str | None = None,
    feature_names: Sequence[Any] | None = None,
) -> Path:
    """Draw tabular data (rows x features) as a heatmap with a colorbar.

    Meant for samples or reconstructions of non-image data. Data with both signs (e.g.
    standardized features) uses a diverging colormap centred at 0; otherwise viridis.

    Parameters
    ----------
    rows : array_like
        Shape ``(n, d)``: ``n`` rows (datapoints) of ``d`` features.
    path : str or path-like
        Destination PNG.
    title : str, optional
        Title above the heatmap.
    feature_names : sequence, optional
        One name per feature, shown along the x axis.

    Returns
    -------
    pathlib.Path
        The path written.

    Raises
    ------
    ppvae.errors.DataError
        If ``rows`` is not 2-D, is empty, holds NaN/inf, or ``feature_names`` does not
        have one entry per feature.
    """
    try:
        arr = np.asarray(rows)
    except Exception as exc:
        raise DataError(f"table_grid: cannot read the rows as an array ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)):
        raise DataError(f"table_grid: rows must be numeric, got an array of dtype {arr.dtype}")
    if arr.ndim != 2:
        raise DataError(f"table_grid: expected rows of shape (n, d), got shape {arr.shape}")
    if arr.size == 0:
        raise DataError(f"table_grid: no rows to draw (shape {arr.shape})")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise DataError(f"table_grid: {bad} value(s) are NaN or infinite")
    n, d = arr.shape
    names = None
    if feature_names is not None:
        names = [str(f) for f in feature_names]
        if len(names) != d:
            raise DataError(f"table_grid: got {len(names)} feature names for {d} features; give one per column")

    from matplotlib.ticker import FixedLocator, MaxNLocator

    # Colour limits from the 1st/99th percentiles, so one outlier does not wash out the
    # rest; values beyond them saturate and the colorbar shows arrows for them.
    lo, hi = float(arr.min()), float(arr.max())
    if lo < 0.0 < hi:
        cmap = "RdBu_r"
        vmax = float(np.percentile(np.abs(arr), 99)) if arr.size >= 100 else max(-lo, hi)
        vmax = vmax if vmax > 0 else max(-lo, hi)
        vmin = -vmax
    else:
        cmap = "viridis"
        vmin, vmax = (float(np.percentile(arr, 1)), float(np.percentile(arr, 99))) if arr.size >= 100 else (lo, hi)
        if vmin >= vmax:
            vmin, vmax = lo, hi
        if vmin == vmax:
            vmin, vmax = vmin - 0.5, vmax + 0.5
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max", (True, True): "both"}[
        (lo < vmin, hi > vmax)
    ]

    longest = max((len(s) for s in names), default=0) if names else 0
    shown_every = 1
    if names is not None and d > 30:
        shown_every = math.ceil(d / 30)
    rotate = names is not None and (longest > 3 or d > 12)
    label_room = (min(longest, 25) * CHAR_WIDTH * 8.0 / 72.0 * 0.75) if rotate else 0.0
    width = min(10.0, max(3.0, 0.35 * d)) + 1.8
    height = min(7.0, max(2.0, 0.25 * n)) + 1.0 + label_room + (0.5 if title else 0.0)
    if title is not None:
        width = max(width, MIN_TITLED_WIDTH)
    fig = new_figure(width, height, layout="constrained")
    ax = fig.add_subplot()
    interp = "nearest" if (n <= 300 and d <= 300) else "auto"
    im = ax.imshow(arr, cmap=cmap, vmin=vmin, vmax=vmax, aspect="auto", interpolation=interp)
    fig.colorbar(im, ax=ax, fraction=0.05, pad=0.02, label="value", extend=extend)
    ax.set_ylabel("row")
    ax.yaxis.set_major_locator(MaxNLocator(nbins=min(n, 12), integer=True))
    if names is not None:
        ticks = list(range(0, d, shown_every))
        ax.xaxis.set_major_locator(FixedLocator(ticks))
        shown = [names[i] if len(names[i]) <= 25 else names[i][:24] + "…" for i in ticks]
        ax.set_xticklabels(
            shown,
            fontsize=8,
            rotation=45 if rotate else 0,
            ha="right" if rotate else "center",
            rotation_mode="anchor" if rotate else "default",
        )
        ax.set_xlabel("feature")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=min(d, 12), integer=True))
        ax.set_xlabel("feature index")
    if title is not None:
        fig.suptitle(wrap_text(title, width - 2 * MARGIN, TITLE_FONTSIZE), fontsize=TITLE_FONTSIZE)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- training
