"""Pictures of the latent space: a map of the data's codes, the decoded manifold, interpolations.

Drawn with matplotlib's object-oriented API through the helpers of :mod:`ppvae.plotting`
(no pyplot, atomic PNG writes); numpy in, a PNG out.

Examples
--------
>>> from ppvae.plotting.latents import latent_scatter, project_2d
>>> points, axis_labels, note = project_2d(loc)                              # doctest: +SKIP
>>> latent_scatter(points, "latent.png", labels=y, axis_labels=axis_labels)   # doctest: +SKIP
"""

from __future__ import annotations

import os
from pathlib import Path
from statistics import NormalDist
from typing import Any, Sequence

import numpy as np

from ppvae.errors import DataError, UsageError
from ppvae.plotting.images import table_grid
from ppvae.plotting.style import (
    MARGIN,
    TITLE_FONTSIZE,
    as_images,
    compose_title,
    draw_tiles,
    needs_scaling,
    new_figure,
    save_figure,
    to_unit,
    wrap_text,
)

__all__ = [
    "project_2d",
    "normal_quantile_grid",
    "latent_scatter",
    "interpolation_strip",
    "plot_latent",
    "plot_interpolation",
]

# Up to this many distinct labels get a colour and a legend entry each; more get a colour scale.
_MAX_DISCRETE_CLASSES = 20


def project_2d(loc: np.ndarray) -> tuple[np.ndarray, tuple[str, str], str]:
    """Latent means as 2-D points: themselves for a 2-D latent, else their first two principal components.

    Returns
    -------
    points : numpy.ndarray
        ``(n, 2)``.
    axis_labels : (str, str)
        Names of the two axes, saying which projection was used.
    note : str
        A short phrase for a title (``"2-D latent"`` or ``"PCA of the 20-D latent"``).
    """
    loc = np.asarray(loc, dtype=np.float64)
    if loc.ndim != 2 or loc.shape[0] == 0:
        raise DataError(f"latent means must have shape (n, latent_dim) with n > 0, got {loc.shape}")
    dim = loc.shape[1]
    if dim == 1:
        return (
            np.column_stack([loc[:, 0], np.zeros(len(loc))]),
            ("z1 (posterior mean)", "(1-D latent: no second axis)"),
            "1-D latent",
        )
    if dim == 2:
        return loc, ("z1 (posterior mean)", "z2 (posterior mean)"), "2-D latent"
    centred = loc - loc.mean(axis=0)
    _, s, vt = np.linalg.svd(centred, full_matrices=False)
    share = s**2 / max(float((s**2).sum()), 1e-300)
    points = centred @ vt[:2].T
    labels = tuple(f"PC {i + 1} of the {dim}-D posterior means ({share[i]:.0%} of variance)" for i in range(2))
    return points, labels, f"PCA of the {dim}-D latent to 2-D"


def normal_quantile_grid(size: int, low: float = 0.05, high: float = 0.95) -> np.ndarray:
    """``size`` values of z at evenly spaced standard Normal quantiles from ``low`` to ``high``.

    Under a N(0, 1) prior every cell of the grid they span holds about the same prior mass.
    """
    if not (isinstance(size, (int, np.integer)) and size >= 2):
        raise UsageError(f"the manifold grid needs at least 2 values per axis, got {size!r}")
    nd = NormalDist()
    return np.asarray([nd.inv_cdf(p) for p in np.linspace(low, high, int(size))])


def _draw_scatter(
    fig, ax, points: np.ndarray, labels: np.ndarray | None, axis_labels: Sequence[str], class_names: dict | None = None
) -> None:
    n = len(points)
    # A seeded shuffle of the drawing order: no class is painted over all the others.
    order = np.random.default_rng(0).permutation(n)
    size = float(np.clip(12000.0 / max(n, 1), 4.0, 30.0))  # smaller markers as points crowd
    if labels is None:
        ax.scatter(points[order, 0], points[order, 1], s=size, alpha=0.6, color="C0", linewidths=0)
    else:
        labels = np.asarray(labels)
        classes = np.unique(labels)
        if len(classes) <= _MAX_DISCRETE_CLASSES:
            from matplotlib import colormaps

            cmap = colormaps["tab10" if len(classes) <= 10 else "tab20"]
            index = {c: i for i, c in enumerate(classes)}
            colors = np.asarray([cmap(index[v] % cmap.N) for v in labels[order]])
            ax.scatter(points[order, 0], points[order, 1], s=size, c=colors, alpha=0.7, linewidths=0)
            for c in classes:
                name = (class_names or {}).get(c, str(c))
                ax.scatter([], [], s=30, color=cmap(index[c] % cmap.N), label=name)
            ax.legend(
                title="label",
                fontsize=8,
                title_fontsize=9,
                frameon=False,
                loc="upper left",
                bbox_to_anchor=(1.01, 1.0),
                borderaxespad=0.0,
                handletextpad=0.2,
            )
        else:
            sc = ax.scatter(
                points[order, 0], points[order, 1], s=size, c=labels[order], cmap="viridis", alpha=0.7, linewidths=0
            )
            fig.colorbar(sc, ax=ax, label="label", fraction=0.05, pad=0.02)
    ax.set_xlabel(axis_labels[0])
    ax.set_ylabel(axis_labels[1])
    ax.grid(True, alpha=0.3)


def _check_points(points: Any, labels: Any) -> tuple[np.ndarray, np.ndarray | None]:
    pts = np.asarray(points, dtype=np.float64)
    if pts.ndim != 2 or pts.shape[1] != 2 or len(pts) == 0:
        raise DataError(
            f"latent_scatter: points must have shape (n, 2) with n > 0, got {pts.shape}; "
            "project higher-dimensional latents with project_2d"
        )
    if not np.isfinite(pts).all():
        raise DataError("latent_scatter: points contain NaN or inf")
    if labels is not None:
        labels = np.asarray(labels)
        if labels.shape != (len(pts),):
            raise DataError(f"latent_scatter: got labels of shape {labels.shape} for {len(pts)} points; give one each")
    return pts, labels


def _tile_manifold(images: np.ndarray) -> tuple[np.ndarray, bool]:
    """(g, g, H, W[, 3]) images -> one big (g*H, g*W[, 3]) picture in [0, 1], with 1-pixel gaps."""
    g1, g2 = images.shape[:2]
    flat = as_images(images.reshape(g1 * g2, *images.shape[2:]), "manifold_grid")
    scaled = needs_scaling(flat)
    flat = to_unit(flat, scaled)
    h, w = flat.shape[1:3]
    gap = 1
    big = np.ones((g1 * (h + gap) - gap, g2 * (w + gap) - gap) + flat.shape[3:])
    for k in range(g1 * g2):
        r, c = divmod(k, g2)
        big[r * (h + gap) : r * (h + gap) + h, c * (w + gap) : c * (w + gap) + w] = flat[k]
    return big, scaled


def _draw_manifold(ax, images: np.ndarray, z1: np.ndarray, z2: np.ndarray) -> bool:
    """Draw decoded images ``images[i, j]`` at (z1[j], z2[i]); rows run from high z2 (top) to low."""
    big, scaled = _tile_manifold(images[::-1])  # first row drawn on top = highest z2
    g1, g2 = images.shape[:2]
    ax.imshow(big, cmap="gray", vmin=0.0, vmax=1.0, interpolation="nearest", extent=(0, g2, 0, g1), origin="upper")
    # Ticks at tile centres, labelled with the z value decoded there (every other one when many).
    step = 1 if g2 <= 9 else 2
    ax.set_xticks(np.arange(g2)[::step] + 0.5, [f"{v:.1f}" for v in z1[::step]], fontsize=8)
    step = 1 if g1 <= 9 else 2
    ax.set_yticks(np.arange(g1)[::step] + 0.5, [f"{v:.1f}" for v in z2[::step]], fontsize=8)
    ax.set_xlabel("z1 (decoded at Normal quantiles)")
    ax.set_ylabel("z2 (decoded at Normal quantiles)")
    for side in ax.spines.values():
        side.set_visible(False)
    return scaled


def _check_manifold(images: Any, z1: Any, z2: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    images = np.asarray(images)
    z1, z2 = np.asarray(z1, np.float64), np.asarray(z2, np.float64)
    if images.ndim < 4 or images.shape[:2] != (len(z2), len(z1)):
        raise DataError(
            f"manifold_grid: expected images of shape ({len(z2)}, {len(z1)}, H, W) for a grid of "
            f"{len(z2)} z2 by {len(z1)} z1 values, got {images.shape}"
        )
    return images, z1, z2


def latent_scatter(
    points: Any,
    path: str | os.PathLike,
    *,
    labels: Any = None,
    axis_labels: Sequence[str] = ("z1", "z2"),
    title: str | None = None,
    class_names: dict | None = None,
    manifold: tuple[Any, Any, Any] | None = None,
) -> Path:
    """The data's latent codes as a scatter plot coloured by label, optionally beside the decoded manifold.

    Parameters
    ----------
    points : array_like
        ``(n, 2)``: the latent means themselves (2-D latent) or a projection
        (:func:`project_2d`).
    path : path-like
        Destination PNG.
    labels : array_like, optional
        One label per point: up to 20 classes get a colour each and a legend, more a colour scale.
    axis_labels : (str, str)
        What the axes are (say whether this is the latent itself or a projection).
    title : str, optional
        Title above the picture.
    class_names : dict, optional
        Legend names by label value.
    manifold : (images, z1, z2), optional
        Decoded images ``(len(z2), len(z1), H, W)`` of a grid of latents (a 2-D latent):
        drawn as a second panel, and the grid's extent marked on the scatter.

    Returns
    -------
    pathlib.Path
        The path written.
    """
    pts, labels = _check_points(points, labels)
    if manifold is not None:
        images, z1, z2 = _check_manifold(*manifold)
    width = 7.0 + (6.2 if manifold is not None else 0.0) + (1.0 if labels is not None else 0.0)
    height = 6.0 + (0.5 if title else 0.0)
    fig = new_figure(width, height, layout="constrained")
    if manifold is None:
        ax = fig.add_subplot()
    else:
        ax, ax_m = fig.subplots(1, 2, width_ratios=[1.15 if labels is not None else 1.0, 1.0])
    _draw_scatter(fig, ax, pts, labels, axis_labels, class_names)
    ax.set_title(f"posterior means of {len(pts)} points", fontsize=10, loc="left")
    scaled = False
    if manifold is not None:
        from matplotlib.patches import Rectangle

        ax.add_patch(
            Rectangle(
                (z1.min(), z2.min()),
                np.ptp(z1),
                np.ptp(z2),
                fill=False,
                linestyle="--",
                linewidth=1.2,
                edgecolor="0.2",
                label="decoded grid",
            )
        )
        ax.annotate(
            "decoded grid",
            (z1.min(), z2.max()),
            xytext=(2, 3),
            textcoords="offset points",
            fontsize=8,
            va="bottom",
            ha="left",
            color="0.2",
        )
        scaled = _draw_manifold(ax_m, images, z1, z2)
        ax_m.set_title(f"decoded means of p(x|z) on a {len(z2)} x {len(z1)} grid of z", fontsize=10, loc="left")
    full_title = compose_title(title, scaled)
    if full_title is not None:
        fig.suptitle(wrap_text(full_title, width - 2 * MARGIN, TITLE_FONTSIZE), fontsize=TITLE_FONTSIZE)
    return save_figure(fig, path)


def interpolation_strip(
    start: Any,
    decoded: Any,
    end: Any,
    path: str | os.PathLike,
    *,
    start_label: str = "start",
    end_label: str = "end",
    title: str | None = None,
    is_image: bool = True,
) -> Path:
    """Decoded points along a line in latent space, between the two originals it joins.

    Parameters
    ----------
    start, end : array_like
        The two original datapoints (one image ``(H, W)`` each, or one row of features).
    decoded : array_like
        ``(steps, ...)``: the decoded means along the line, from ``start``'s code to ``end``'s.
    path : path-like
        Destination PNG.
    start_label, end_label : str
        Labels of the two originals (e.g. ``"x[3]"``).
    title : str, optional
        Title above the strip.
    is_image : bool
        Images are drawn as one row of tiles (originals set apart by a gap); tabular data
        as a heatmap, one row per step.
    """
    decoded = np.asarray(decoded)
    start, end = np.asarray(start)[None], np.asarray(end)[None]
    if decoded.ndim < 2 or len(decoded) < 2:
        raise DataError(f"interpolation_strip: need at least 2 decoded steps, got shape {decoded.shape}")
    if start.shape[1:] != decoded.shape[1:] or end.shape[1:] != decoded.shape[1:]:
        raise DataError(
            f"interpolation_strip: originals of shape {start.shape[1:]} and {end.shape[1:]} do not "
            f"match the decoded points' {decoded.shape[1:]}"
        )
    steps = len(decoded)
    if not is_image:
        rows = np.concatenate([start, decoded, end]).reshape(steps + 2, -1)
        note = f"rows: {start_label}, {steps} decoded steps, {end_label}"
        return table_grid(rows, path, title=f"{title}\n{note}" if title else note)
    tiles = np.concatenate([start, decoded, end])
    scaled = needs_scaling(as_images(tiles, "interpolation_strip"))
    tiles = to_unit(as_images(tiles, "interpolation_strip"), scaled)
    t = np.linspace(0.0, 1.0, steps)
    positions = [(0, k) for k in range(steps + 2)]
    labels = [start_label] + [f"t={v:.2g}" for v in t] + [end_label]
    fig = draw_tiles(tiles, positions, nrows=1, ncols=steps + 2, title=compose_title(title, scaled), tile_labels=labels)
    return save_figure(fig, path)


# --------------------------------------------------------------------------- from a run


def _conditional_labels(run, labels: np.ndarray | None) -> np.ndarray | None:
    """The labels a conditional run's networks need (None for an unconditional run)."""
    if not getattr(run, "num_classes", 0):
        return None
    if labels is None:
        raise DataError(
            f"{run.path} is a conditional VAE: its encoder needs the class label of every point, but "
            "the data has none; use data with labels (an .npz with 'y')"
        )
    return np.asarray(labels)


def plot_latent(
    run,
    x: np.ndarray,
    path: str | os.PathLike,
    *,
    labels: np.ndarray | None = None,
    grid_size: int = 15,
    source: str = "held-out split",
) -> Path:
    """The latent map of a run: the data's posterior means coloured by label, and for a
    2-D latent (image data) the decoded manifold beside them.

    Parameters
    ----------
    run : ppvae.Run
        The trained run.
    x : numpy.ndarray
        Prepared data (``Run.load_data``).
    path : path-like
        Destination PNG.
    labels : numpy.ndarray, optional
        One label per point (colours).
    grid_size : int
        Values per axis of the manifold grid (z at Normal quantiles 5%-95%).
    source : str
        What ``x`` is, for the title.
    """
    cond = _conditional_labels(run, labels)
    loc, _ = run.encode(x, cond)
    points, axis_labels, note = project_2d(loc)
    manifold = None
    # A conditional decoder needs a class for every z: its manifold is one per class, not drawn here.
    if loc.shape[1] == 2 and run.data_info.get("is_image") and cond is None:
        z = normal_quantile_grid(grid_size)
        zz1, zz2 = np.meshgrid(z, z)  # rows: z2, columns: z1
        decoded = run.decode(np.column_stack([zz1.ravel(), zz2.ravel()]))
        manifold = (decoded.reshape(grid_size, grid_size, *decoded.shape[1:]), z, z)
    title = f"latent map of {run.path.name}: {len(x)} points of the {source} ({note})"
    return latent_scatter(points, path, labels=labels, axis_labels=axis_labels, title=title, manifold=manifold)


def plot_interpolation(
    run,
    x: np.ndarray,
    i: int,
    j: int,
    path: str | os.PathLike,
    *,
    steps: int = 10,
    labels: np.ndarray | None = None,
    source: str = "held-out split",
) -> Path:
    """Decode the straight line between the posterior means of points ``i`` and ``j`` of ``x``.

    The strip shows ``x[i]``, ``steps`` decoded points (both ends included) and ``x[j]``.
    """
    n = len(x)
    for name, k in (("I", i), ("J", j)):
        if not (isinstance(k, (int, np.integer)) and 0 <= k < n):
            raise UsageError(
                f"--between {i} {j}: {name} = {k} is not a point of the {source}, which has {n} "
                f"points; give indices from 0 to {n - 1}"
            )
    if i == j:
        raise UsageError(f"--between {i} {j}: give two different points")
    if not (isinstance(steps, (int, np.integer)) and steps >= 2):
        raise UsageError(f"--steps must be an integer of at least 2 (both ends are decoded), got {steps!r}")
    cond = _conditional_labels(run, labels)
    loc, _ = run.encode(x[[i, j]], None if cond is None else cond[[i, j]])
    t = np.linspace(0.0, 1.0, steps)[:, None]
    # A conditional decoder is given the first point's class all along the line.
    decoded = run.decode((1.0 - t) * loc[0] + t * loc[1], None if cond is None else int(cond[i]))

    def name(k):
        return f"x[{k}]" + (f" ({labels[k]})" if labels is not None else "")

    title = (
        f"{run.path.name}: decoding the line between the latent means of points {i} and {j} of the "
        f"{source} (originals at the ends{', labels in brackets' if labels is not None else ''})"
    )
    return interpolation_strip(
        x[i],
        decoded,
        x[j],
        path,
        start_label=name(i),
        end_label=name(j),
        title=title,
        is_image=bool(run.data_info.get("is_image")),
    )
