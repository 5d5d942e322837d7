"""The house style of every picture: figures, fonts, margins, image tiles, and the atomic PNG write.

Everything in ``ppvae.plotting`` uses matplotlib's object-oriented API (:class:`matplotlib.figure.Figure`
with an Agg canvas), never :mod:`matplotlib.pyplot`: there is no global figure
registry, no interactive backend is ever selected, and matplotlib is imported only
when a picture is drawn, so importing a picture module is cheap and has no side effects.

Every picture validates its input before drawing anything and is written through
:func:`save_figure` (an atomic write), so a failure (bad input, an error while drawing, Ctrl-C)
never leaves a half-written picture or replaces an existing one.

Image conventions
-----------------
Images are float arrays of shape ``(n, H, W)`` or ``(n, C, H, W)`` with ``C`` = 1
(grey) or 3 (RGB); channel-last ``(n, H, W, C)`` is accepted too, and ``uint8`` arrays
are divided by 255. Values are expected in ``[0, 1]``: small excursions (up to
``0.05`` outside) are clipped. Data further outside, such as standardized pixels, is
min-max scaled to ``[0, 1]`` image by image, and the picture's title says so.
"""

from __future__ import annotations

import os
import textwrap
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ppvae.errors import DataError
from ppvae.runs.atomic import atomic_path

if TYPE_CHECKING:  # pragma: no cover - typing only
    from matplotlib.figure import Figure


#: Resolution of every PNG written here (dots per inch).
DPI = 100

# How far outside [0, 1] image values may stray and still be clipped rather than scaled.
CLIP_TOLERANCE = 0.05
# Note added to the title when images had to be min-max scaled.
SCALED_NOTE = "(each image min-max scaled to [0, 1] for display)"

# The house style: every picture module of ppvae.plotting draws with these sizes and helpers.
TITLE_FONTSIZE = 12.0
NOTE_FONTSIZE = 9.0
LABEL_FONTSIZE_MAX = 9.0
LABEL_FONTSIZE_MIN = 5.0
ROW_LABEL_FONTSIZE = 9.0
# Rough width of one character, as a fraction of the font size (DejaVu Sans).
CHAR_WIDTH = 0.58
MARGIN = 0.12  # inches around the whole picture
MIN_TITLED_WIDTH = 4.0  # inches; a figure with a title is at least this wide


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
    chars = max(10, int(width_in * 72.0 / (CHAR_WIDTH * fontsize)))
    lines = []
    for line in str(text).splitlines() or [""]:
        lines.extend(textwrap.wrap(line, chars) or [""])
    return "\n".join(lines)


def text_width(text: str, fontsize: float) -> float:
    """Approximate width of ``text`` in inches."""
    return len(text) * CHAR_WIDTH * fontsize / 72.0


# --------------------------------------------------------------------------- images


def as_images(images: Any, what: str) -> np.ndarray:
    """Validate ``images`` and return float64 ``(n, H, W)`` or ``(n, H, W, 3)``."""
    try:
        arr = np.asarray(images)
    except Exception as exc:  # ragged lists and the like
        raise DataError(f"{what}: cannot read the images as an array ({exc})") from None
    if arr.dtype == object or not (np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.bool_)):
        raise DataError(f"{what}: images must be numeric, got an array of dtype {arr.dtype}")
    if arr.ndim == 4:
        if arr.shape[1] in (1, 3):
            arr = np.moveaxis(arr, 1, -1)
        elif arr.shape[-1] not in (1, 3):
            raise DataError(
                f"{what}: 4-D images must have 1 or 3 channels, as (n, C, H, W) or (n, H, W, C); got shape {arr.shape}"
            )
        if arr.shape[-1] == 1:
            arr = arr[..., 0]
    elif arr.ndim != 3:
        hint = " (reshape flat vectors to (n, H, W), or use table_grid)" if arr.ndim == 2 else ""
        raise DataError(f"{what}: expected images of shape (n, H, W) or (n, C, H, W), got shape {arr.shape}{hint}")
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
    return lo < -CLIP_TOLERANCE or hi > 1.0 + CLIP_TOLERANCE


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
        return SCALED_NOTE if title is None else f"{title}\n{SCALED_NOTE}"
    return None if title is None else str(title)


def tile_width(ncols: int, nrows: int, aspect: float) -> float:
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
    tile_w = tile_width(ncols, nrows, aspect)
    tile_h = tile_w * aspect
    col_gap = max(0.03, 0.06 * tile_w)
    row_gap = col_gap
    if gap_before_row is None:
        gap_before_row = [0.0] + [row_gap] * (nrows - 1)

    # Labels above each tile: pick a font size that fits the tile, truncate if needed.
    label_h = 0.0
    label_fs = LABEL_FONTSIZE_MAX
    labels: list[str] | None = None
    if tile_labels is not None:
        labels = [str(lab) for lab in tile_labels]
        longest = max((len(lab) for lab in labels), default=0)
        room = tile_w + 0.8 * col_gap
        if longest:
            label_fs = room * 72.0 / (CHAR_WIDTH * longest)
            label_fs = min(LABEL_FONTSIZE_MAX, max(LABEL_FONTSIZE_MIN, label_fs))
            max_chars = max(2, int(room * 72.0 / (CHAR_WIDTH * label_fs)))
            labels = [lab if len(lab) <= max_chars else lab[: max_chars - 1] + "…" for lab in labels]
            label_h = (label_fs * 1.3 + 2.0) / 72.0

    # Row labels to the left of the grid.
    left = MARGIN
    if row_labels is not None:
        widest = max((text_width(str(lab), ROW_LABEL_FONTSIZE) for lab in row_labels), default=0)
        left += widest + 0.12

    grid_w = ncols * tile_w + (ncols - 1) * col_gap
    fig_w = left + grid_w + MARGIN
    if title is not None:
        fig_w = max(fig_w, MIN_TITLED_WIDTH)
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
            title_text,
            x=0.5,
            y=1.0 - MARGIN / fig_h,
            ha="center",
            va="top",
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
            images[k],
            cmap="gray",
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
            extent=(x0, x0 + tile_w, y0, y0 + tile_h),
            origin="upper",
        )
        if labels is not None:
            ax.text(
                x0 + tile_w / 2.0,
                y0 + tile_h + 1.5 / 72.0,
                labels[k],
                ha="center",
                va="bottom",
                fontsize=label_fs,
            )
    if row_labels is not None:
        for r, lab in enumerate(row_labels):
            centre = fig_h - row_tops[r] - tile_h / 2.0
            ax.text(left - 0.1, centre, str(lab), ha="right", va="center", fontsize=ROW_LABEL_FONTSIZE)
    ax.set_xlim(0.0, fig_w)
    ax.set_ylim(0.0, fig_h)
    ax.set_aspect("auto")
    return fig
