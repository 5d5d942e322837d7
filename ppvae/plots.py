"""Pictures of samples, reconstructions and training curves, written as PNG files.

Everything here uses matplotlib's object-oriented API (:class:`matplotlib.figure.Figure`
with an Agg canvas), never :mod:`matplotlib.pyplot`: there is no global figure
registry, no interactive backend is ever selected, and matplotlib is imported only
when a picture is drawn, so ``import ppvae.plots`` is cheap and has no side effects.

Every function validates its input before drawing anything and writes the PNG through
:func:`ppvae.io.atomic_path`, so a failure (bad input, an error while drawing, Ctrl-C)
never leaves a half-written picture or replaces an existing one.

Image conventions
-----------------
Images are float arrays of shape ``(n, H, W)`` or ``(n, C, H, W)`` with ``C`` = 1
(grey) or 3 (RGB); channel-last ``(n, H, W, C)`` is accepted too, and ``uint8`` arrays
are divided by 255. Values are expected in ``[0, 1]``: small excursions (up to
``0.05`` outside) are clipped. Data further outside, such as standardized pixels, is
min-max scaled to ``[0, 1]`` image by image, and the picture's title says so.

Examples
--------
>>> import numpy as np
>>> from ppvae.plots import image_grid
>>> rng = np.random.default_rng(0)
>>> image_grid(rng.random((16, 28, 28)), "samples.png", title="16 samples")  # doctest: +SKIP
PosixPath('samples.png')
"""

from __future__ import annotations

import math
import os
import textwrap
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import DataError, UsageError
from .io import atomic_path

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure

__all__ = [
    "image_grid",
    "reconstruction_grid",
    "labelled_rows",
    "side_by_side",
    "table_grid",
    "loss_curves",
    "elbo_vs_time",
    "save_figure",
]

#: Resolution of every PNG written here (dots per inch).
DPI = 100

# How far outside [0, 1] image values may stray and still be clipped rather than scaled.
_CLIP_TOLERANCE = 0.05
# Note added to the title when images had to be min-max scaled.
_SCALED_NOTE = "(each image min-max scaled to [0, 1] for display)"

# The house style. TITLE_FONTSIZE, MARGIN and the helpers new_figure, wrap_text, as_images,
# needs_scaling, to_unit, compose_title and draw_tiles are public so that the other picture
# modules (latent_plots, score_plots, diagnostics.figures) draw in the same style; they are
# left out of __all__, which lists the pictures a user asks for.
TITLE_FONTSIZE = 12.0
_NOTE_FONTSIZE = 9.0
_LABEL_FONTSIZE_MAX = 9.0
_LABEL_FONTSIZE_MIN = 5.0
_ROW_LABEL_FONTSIZE = 9.0
# Rough width of one character, as a fraction of the font size (DejaVu Sans).
_CHAR_WIDTH = 0.58
MARGIN = 0.12  # inches around the whole picture
_MIN_TITLED_WIDTH = 4.0  # inches; a figure with a title is at least this wide


# --------------------------------------------------------------------------- saving


def save_figure(fig: "Figure", path: str | os.PathLike) -> Path:
    """Write ``fig`` to ``path`` as a PNG, atomically.

    The picture is rendered into a temporary file beside ``path`` and renamed into
    place only when rendering succeeded, so an existing file is never replaced by a
    half-written one. The format is always PNG, whatever the suffix of ``path``.

    Parameters
    ----------
    fig : matplotlib.figure.Figure
        The figure to write.
    path : str or path-like
        Destination; missing parent folders are created.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    path = Path(path)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, format="png", dpi=DPI, facecolor="white")
    return path


def new_figure(width: float, height: float, *, layout: str | None = None) -> "Figure":
    """A free-standing figure with an Agg canvas (no pyplot, no global state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=DPI, layout=layout, facecolor="white")
    FigureCanvasAgg(fig)
    return fig


def wrap_text(text: str, width_in: float, fontsize: float) -> str:
    """Wrap ``text`` so that each line fits in ``width_in`` inches at ``fontsize``."""
    chars = max(10, int(width_in * 72.0 / (_CHAR_WIDTH * fontsize)))
    lines = []
    for line in str(text).splitlines() or [""]:
        lines.extend(textwrap.wrap(line, chars) or [""])
    return "\n".join(lines)


def _text_width(text: str, fontsize: float) -> float:
    """Approximate width of ``text`` in inches."""
    return len(text) * _CHAR_WIDTH * fontsize / 72.0


# --------------------------------------------------------------------------- images


def as_images(images: Any, what: str) -> np.ndarray:
    """Validate ``images`` and return float64 ``(n, H, W)`` or ``(n, H, W, 3)``."""
    try:
        arr = np.asarray(images)
    except Exception as exc:  # ragged lists and the like
        raise DataError(f"{what}: cannot read the images as an array ({exc})") from None
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
        raise DataError(f"{what}: images must be numeric, got an array of dtype {arr.dtype}")
    if arr.ndim == 4:
        if arr.shape[1] in (1, 3):
            arr = np.moveaxis(arr, 1, -1)
        elif arr.shape[-1] not in (1, 3):
            raise DataError(
                f"{what}: 4-D images must have 1 or 3 channels, as (n, C, H, W) or "
                f"(n, H, W, C); got shape {arr.shape}"
            )
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    elif arr.ndim != 3:
        hint = " (reshape flat vectors to (n, H, W), or use table_grid)" if arr.ndim == 2 else ""
        raise DataError(
            f"{what}: expected images of shape (n, H, W) or (n, C, H, W), "
            f"got shape {arr.shape}{hint}"
        )
    if arr.size == 0:
        raise DataError(f"{what}: no images to draw (shape {arr.shape})")
    if arr.dtype == np.uint8:
        arr = arr / 255.0
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        bad = int(np.sum(~np.isfinite(arr)))
        raise DataError(f"{what}: {bad} image value(s) are NaN or infinite")
    return arr


def needs_scaling(*arrays: np.ndarray) -> bool:
    """Whether any value lies clearly outside [0, 1] (beyond clipping tolerance)."""
    lo = min(float(a.min()) for a in arrays)
    hi = max(float(a.max()) for a in arrays)
    return lo < -_CLIP_TOLERANCE or hi > 1.0 + _CLIP_TOLERANCE


def to_unit(arr: np.ndarray, scale: bool) -> np.ndarray:
    """Clip to [0, 1], or min-max scale each image to [0, 1] when ``scale``."""
    if not scale:
        return np.clip(arr, 0.0, 1.0)
    axes = tuple(range(1, arr.ndim))
    lo = arr.min(axis=axes, keepdims=True)
    hi = arr.max(axis=axes, keepdims=True)
    span = hi - lo
    out = np.where(span > 0, (arr - lo) / np.where(span > 0, span, 1.0), 0.5)
    return np.clip(out, 0.0, 1.0)


def compose_title(title: str | None, scaled: bool) -> str | None:
    if scaled:
        return _SCALED_NOTE if title is None else f"{title}\n{_SCALED_NOTE}"
    return None if title is None else str(title)


def _tile_width(ncols: int, nrows: int, aspect: float) -> float:
    """Width in inches of one tile: about 8 inches of grid, within sensible bounds."""
    s = min(1.5, max(0.5, 8.0 / ncols))
    grid_h = nrows * s * aspect
    if grid_h > 11.0:  # very tall grids: shrink, but keep the tiles readable
        s = max(0.4, s * 11.0 / grid_h)
    s = min(s, 20.0 / ncols, 3.0 / aspect)  # huge grids, very tall images: cap the size
    return s


def draw_tiles(
    images: np.ndarray,
    positions: Sequence[tuple[int, int]],
    *,
    nrows: int,
    ncols: int,
    title: str | None,
    tile_labels: Sequence[str] | None = None,
    row_labels: Sequence[str] | None = None,
    gap_before_row: Sequence[float] | None = None,
) -> "Figure":
    """Lay out ``images[k]`` at grid cell ``positions[k]`` = (row, col), without axes.

    The layout is computed in inches (no tight_layout pass): tiles keep the images'
    aspect ratio, titles are wrapped to the figure width, and labels are sized to fit.
    """
    h, w = images.shape[1], images.shape[2]
    aspect = h / w
    tile_w = _tile_width(ncols, nrows, aspect)
    tile_h = tile_w * aspect
    col_gap = max(0.03, 0.06 * tile_w)
    row_gap = col_gap
    if gap_before_row is None:
        gap_before_row = [0.0] + [row_gap] * (nrows - 1)

    # Labels above each tile: pick a font size that fits the tile, truncate if needed.
    label_h = 0.0
    label_fs = _LABEL_FONTSIZE_MAX
    labels: list[str] | None = None
    if tile_labels is not None:
        labels = [str(lab) for lab in tile_labels]
        longest = max((len(lab) for lab in labels), default=0)
        room = tile_w + 0.8 * col_gap
        if longest:
            label_fs = room * 72.0 / (_CHAR_WIDTH * longest)
            label_fs = min(_LABEL_FONTSIZE_MAX, max(_LABEL_FONTSIZE_MIN, label_fs))
            max_chars = max(2, int(room * 72.0 / (_CHAR_WIDTH * label_fs)))
            labels = [
                lab if len(lab) <= max_chars else lab[: max_chars - 1] + "…" for lab in labels
            ]
            label_h = (label_fs * 1.3 + 2.0) / 72.0

    # Row labels to the left of the grid.
    left = MARGIN
    if row_labels is not None:
        widest = max((_text_width(str(lab), _ROW_LABEL_FONTSIZE) for lab in row_labels), default=0)
        left += widest + 0.12

    grid_w = ncols * tile_w + (ncols - 1) * col_gap
    fig_w = left + grid_w + MARGIN
    if title is not None:
        fig_w = max(fig_w, _MIN_TITLED_WIDTH)
    extra = fig_w - (left + grid_w + MARGIN)
    left += extra / 2.0  # centre the grid when the title forced a wider figure

    top = MARGIN
    title_text = None
    if title is not None:
        title_text = wrap_text(title, fig_w - 2 * MARGIN, TITLE_FONTSIZE)
        top += (title_text.count("\n") + 1) * TITLE_FONTSIZE * 1.3 / 72.0 + 0.1

    row_tops = []  # inches from the top of the figure to the top of each row's tiles
    y = top
    for r in range(nrows):
        y += gap_before_row[r] + label_h
        row_tops.append(y)
        y += tile_h
    fig_h = y + MARGIN

    fig = new_figure(fig_w, fig_h)
    if title_text is not None:
        fig.suptitle(
            title_text, x=0.5, y=1.0 - MARGIN / fig_h, ha="center", va="top",
            fontsize=TITLE_FONTSIZE,
        )
    # One axes spanning the figure, in inch coordinates; every tile is an image artist
    # placed by ``extent``. (One Axes per tile costs ~10 ms each; this is ~20x faster.)
    ax = fig.add_axes((0.0, 0.0, 1.0, 1.0))
    ax.set_axis_off()
    for k, (r, c) in enumerate(positions):
        x0 = left + c * (tile_w + col_gap)
        y0 = fig_h - row_tops[r] - tile_h
        ax.imshow(
            images[k], cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest",
            extent=(x0, x0 + tile_w, y0, y0 + tile_h), origin="upper",
        )
        if labels is not None:
            ax.text(
                x0 + tile_w / 2.0, y0 + tile_h + 1.5 / 72.0, labels[k], ha="center",
                va="bottom", fontsize=label_fs,
            )
    if row_labels is not None:
        for r, lab in enumerate(row_labels):
            centre = fig_h - row_tops[r] - tile_h / 2.0
            ax.text(left - 0.1, centre, str(lab), ha="right", va="center",
                    fontsize=_ROW_LABEL_FONTSIZE)
    ax.set_xlim(0.0, fig_w)
    ax.set_ylim(0.0, fig_h)
    ax.set_aspect("auto")
    return fig


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
            raise DataError(
                f"image_grid: got {len(labels)} labels for {n} images; give one per image"
            )
    scaled = needs_scaling(arr)
    arr = to_unit(arr, scaled)
    nrows = math.ceil(n / ncols)
    positions = [(k // ncols, k % ncols) for k in range(n)]
    fig = draw_tiles(
        arr, positions, nrows=nrows, ncols=ncols, title=compose_title(title, scaled),
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
            f"reconstruction_grid: originals {orig.shape} and reconstructions "
            f"{recon.shape} must have the same shape"
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
    tile_w = _tile_width(ncols, nrows, orig.shape[1] / orig.shape[2])
    small = max(0.03, 0.06 * tile_w)
    gaps = [0.0] + [small if r % 2 else 4 * small for r in range(1, nrows)]
    fig = draw_tiles(
        np.stack(tiles), positions, nrows=nrows, ncols=ncols,
        title=compose_title(title, scaled),
        row_labels=["data", "reconstruction"] * npairs, gap_before_row=gaps,
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
        canvas[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = image
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


def side_by_side(panels: Mapping[str, Any], path: str | os.PathLike, title: str | None = None,
                 ncols: int = 8) -> Path:
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
        ax.imshow(_mosaic(np.asarray(images, dtype=float), ncols), cmap="gray", vmin=0, vmax=1,
                  interpolation="nearest")
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
    if arr.dtype == object or not (
        np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)
    ):
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
            raise DataError(
                f"table_grid: got {len(names)} feature names for {d} features; give one per column"
            )

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
        vmin, vmax = (
            (float(np.percentile(arr, 1)), float(np.percentile(arr, 99)))
            if arr.size >= 100 else (lo, hi)
        )
        if vmin >= vmax:
            vmin, vmax = lo, hi
        if vmin == vmax:
            vmin, vmax = vmin - 0.5, vmax + 0.5
    extend = {(False, False): "neither", (True, False): "min", (False, True): "max",
              (True, True): "both"}[(lo < vmin, hi > vmax)]

    longest = max((len(s) for s in names), default=0) if names else 0
    shown_every = 1
    if names is not None and d > 30:
        shown_every = math.ceil(d / 30)
    rotate = names is not None and (longest > 3 or d > 12)
    label_room = (min(longest, 25) * _CHAR_WIDTH * 8.0 / 72.0 * 0.75) if rotate else 0.0
    width = min(10.0, max(3.0, 0.35 * d)) + 1.8
    height = min(7.0, max(2.0, 0.25 * n)) + 1.0 + label_room + (0.5 if title else 0.0)
    if title is not None:
        width = max(width, _MIN_TITLED_WIDTH)
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
        ax.set_xticklabels(shown, fontsize=8, rotation=45 if rotate else 0,
                           ha="right" if rotate else "center",
                           rotation_mode="anchor" if rotate else "default")
        ax.set_xlabel("feature")
    else:
        ax.xaxis.set_major_locator(MaxNLocator(nbins=min(d, 12), integer=True))
        ax.set_xlabel("feature index")
    if title is not None:
        fig.suptitle(wrap_text(title, width - 2 * MARGIN, TITLE_FONTSIZE), fontsize=TITLE_FONTSIZE)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- training


_RECORD_KEYS = ("epoch", "loss", "reconstruction", "kl", "beta", "heldout_elbo")


def _as_float(value: Any, index: int, key: str) -> float:
    if value is None:
        return math.nan
    try:
        return float(value)
    except (TypeError, ValueError):
        raise DataError(
            f"loss_curves: record {index} has a non-numeric {key!r} value {value!r}"
        ) from None


def _columns(records: Any) -> dict[str, np.ndarray]:
    """Validate ``records`` and return one float column per key (NaN where missing)."""
    if isinstance(records, (Mapping, str, bytes)) or not hasattr(records, "__iter__"):
        raise DataError(
            f"loss_curves: expected a list of per-epoch dicts, got {type(records).__name__}"
        )
    records = list(records)
    if not records:
        raise DataError("loss_curves: no records to draw (the list of epochs is empty)")
    cols: dict[str, list[float]] = {k: [] for k in _RECORD_KEYS}
    for i, rec in enumerate(records):
        if not isinstance(rec, Mapping):
            raise DataError(
                f"loss_curves: record {i} is a {type(rec).__name__}, expected a dict"
            )
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
    ax.plot(xs, ys, marker=marker, markersize=4, linewidth=1.6,
            label=f"{label} (last {_fmt(ys[-1])})", **style)
    return True


def _finish_panel(ax, drew: bool, ylabel: str, panel_title: str) -> None:
    ax.set_title(panel_title, fontsize=10, loc="left")
    ax.set_ylabel(ylabel)
    ax.grid(True, alpha=0.3)
    if drew:
        ax.legend(fontsize=8, loc="best", frameon=False)
    else:
        ax.text(0.5, 0.5, "not recorded", transform=ax.transAxes, ha="center",
                va="center", color="0.5")


def loss_curves(records: Sequence[Mapping[str, Any]], path: str | os.PathLike, *,
                title: str | None = None) -> Path:
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
        ``beta`` and ``heldout_elbo``; any value may be ``None`` or NaN. A missing
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
    axes = fig.subplots(npanels, 1, sharex=True, squeeze=False,
                        gridspec_kw={"height_ratios": heights})[:, 0]

    ax = axes[0]
    drew = _plot_series(ax, epoch, cols["loss"], "training loss", color="C0")
    drew |= _plot_series(ax, epoch, -cols["heldout_elbo"], "held-out −ELBO", color="C3")
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
        raise DataError(f"elbo_vs_time: series {label!r}: {key!r} must be a sequence of numbers, "
                        f"got {type(value).__name__}")
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
                raise DataError(f"elbo_vs_time: series {label!r} has no {' or '.join(map(repr, missing))}; "
                                "give cumulative seconds and held-out ELBO per point")
            seconds, elbo, spread = value["seconds"], value["elbo"], value.get("spread")
        elif isinstance(value, Sequence) and not isinstance(value, (str, bytes)) and len(value) == 2:
            (seconds, elbo), spread = value, None
        else:
            raise DataError(f"elbo_vs_time: series {label!r} must be a mapping with 'seconds' and 'elbo' "
                            f"(or a (seconds, elbo) pair), got {type(value).__name__}")
        x = _series_column(seconds, label, "seconds")
        y = _series_column(elbo, label, "elbo")
        s = None if spread is None else _series_column(spread, label, "spread")
        if len(x) != len(y) or (s is not None and len(s) != len(y)):
            lengths = f"{len(x)} seconds and {len(y)} ELBO values" + ("" if s is None else f" and {len(s)} spreads")
            raise DataError(f"elbo_vs_time: series {label!r} has {lengths}; give one of each per point")
        if np.any(np.isinf(x)) or np.any(np.isinf(y)):
            raise DataError(f"elbo_vs_time: series {label!r} holds infinite values; use None or NaN for a "
                            "missing point")
        if np.any(x[np.isfinite(x)] < 0):
            raise DataError(f"elbo_vs_time: series {label!r} has negative seconds; give cumulative wall time")
        out.append((label, x, y, s))
    if not any(np.any(np.isfinite(x) & np.isfinite(y)) for _, x, y, _ in out):
        raise DataError("elbo_vs_time: no series has a finite (seconds, elbo) point to draw")
    return out


def elbo_vs_time(series: Mapping[str, Any], path: str | os.PathLike, *,
                 title: str | None = None) -> Path:
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
        ax.plot(xs, ys, color=color, marker=marker if len(xs) <= 40 else None, markersize=5,
                linewidth=1.6, label=label, clip_on=False, zorder=3)
        if s is not None:
            ss = s[ok][order]
            band = np.isfinite(ss) & (ss > 0)
            if band.any():
                ax.fill_between(xs, np.where(band, ys - ss, ys), np.where(band, ys + ss, ys),
                                color=color, alpha=0.15, linewidth=0)
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
