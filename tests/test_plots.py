"""Tests for ppvae.plotting: valid PNGs, atomic writes, input checks, no global state."""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from ppvae import plotting as plots
from ppvae.plotting import style
from ppvae.errors import DataError, UsageError

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture
def rng():
    return np.random.default_rng(1234)


def read_png(path: Path) -> np.ndarray:
    """Check that ``path`` is a PNG matplotlib can read; return its pixels (H, W, C)."""
    from matplotlib.image import imread

    path = Path(path)
    assert path.read_bytes()[:8] == PNG_SIGNATURE
    pixels = imread(path)
    assert pixels.ndim == 3 and pixels.shape[2] in (3, 4)
    return pixels


def only_files(folder: Path) -> set[str]:
    """Names in ``folder``, temporary files included (they start with a dot)."""
    return {p.name for p in folder.iterdir()}


def capture_figure(monkeypatch):
    """Make save_figure record the figure (and still write it), in every picture module."""
    from ppvae.plotting import curves, images, latents, scores, style

    seen = []
    real = style.save_figure

    def fake(fig, path):
        seen.append(fig)
        return real(fig, path)

    for module in (curves, images, latents, scores):
        monkeypatch.setattr(module, "save_figure", fake)
    return seen


def fake_records(n: int, rng) -> list[dict]:
    out = []
    for e in range(1, n + 1):
        out.append(
            {
                "epoch": e,
                "loss": 200 * math.exp(-e / 3) + 100 + rng.normal(),
                "reconstruction": 180 * math.exp(-e / 3) + 80,
                "kl": 10 + 15 * (1 - math.exp(-e / 2)),
                "beta": min(1.0, e / 5),
                "heldout_elbo": -(200 * math.exp(-e / 3) + 104) if e % 2 == 0 else None,
            }
        )
    return out


# --------------------------------------------------------------------------- import


def test_import_is_lazy_and_never_uses_pyplot_torch_or_jax(tmp_path):
    code = (
        "import sys, numpy as np\n"
        "import ppvae.plotting as p\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import time'\n"
        f"p.image_grid(np.zeros((2, 4, 4)), {str(tmp_path / 'a.png')!r})\n"
        f"p.loss_curves([{{'epoch': 1, 'loss': 1.0}}], {str(tmp_path / 'b.png')!r})\n"
        "bad = [m for m in ('matplotlib.pyplot', 'torch', 'jax') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[1])


def test_all_names_exist():
    for name in plots.__all__:
        assert callable(getattr(plots, name))


# --------------------------------------------------------------------------- image_grid


@pytest.mark.parametrize("shape", [(10, 28, 28), (10, 1, 28, 28), (10, 3, 16, 16), (10, 16, 16, 3), (1, 8, 8)])
def test_image_grid_writes_png(tmp_path, rng, shape):
    out = plots.image_grid(rng.random(shape), tmp_path / "grid.png", title="samples")
    assert out == tmp_path / "grid.png" and isinstance(out, Path)
    pixels = read_png(out)
    assert 200 <= pixels.shape[0] <= 2000 and 200 <= pixels.shape[1] <= 2000
    assert only_files(tmp_path) == {"grid.png"}


def test_image_grid_hundred_digits_is_readable_size(tmp_path, rng):
    labels = [str(i % 10) for i in range(100)]
    out = plots.image_grid(rng.random((100, 28, 28)), str(tmp_path / "g.png"), labels=labels)
    h, w = read_png(out).shape[:2]
    # 10 x 10 grid at about 8 inches and 100 dpi: each digit gets ~75 pixels.
    assert 700 <= w <= 1000 and 700 <= h <= 1200


def test_image_grid_accepts_uint8_and_creates_parent_folders(tmp_path, rng):
    imgs = rng.integers(0, 256, size=(4, 28, 28), dtype=np.uint8)
    out = plots.image_grid(imgs, tmp_path / "deep" / "er" / "g.png", ncols=4)
    h, w = read_png(out).shape[:2]
    assert w > 2 * h  # one row of four


def test_image_grid_orientation_top_is_top(tmp_path):
    img = np.zeros((1, 20, 20))
    img[0, :10] = 1.0  # top half white
    pixels = read_png(plots.image_grid(img, tmp_path / "o.png"))
    h, w = pixels.shape[:2]
    grey = pixels[..., :3].mean(axis=2)
    assert grey[int(0.3 * h), w // 2] > 0.9  # upper part of the tile: white
    assert grey[int(0.7 * h), w // 2] < 0.1  # lower part: black


def test_image_grid_scales_standardized_data_and_says_so(tmp_path, rng, monkeypatch):
    seen = capture_figure(monkeypatch)
    plots.image_grid(rng.normal(size=(4, 8, 8)) * 3, tmp_path / "s.png", title="z")
    title = seen[-1]._suptitle.get_text()
    assert title.startswith("z") and "min-max" in title
    plots.image_grid(rng.normal(size=(4, 8, 8)) * 3, tmp_path / "s2.png")
    assert "min-max" in seen[-1]._suptitle.get_text()


def test_image_grid_clips_small_excursions_without_note(tmp_path, rng, monkeypatch):
    seen = capture_figure(monkeypatch)
    imgs = rng.uniform(-0.01, 1.01, size=(4, 8, 8))
    plots.image_grid(imgs, tmp_path / "c.png", title="clipped")
    assert seen[-1]._suptitle.get_text() == "clipped"
    plots.image_grid(imgs, tmp_path / "c2.png")
    assert seen[-1]._suptitle is None


def test_image_grid_long_labels_and_title_fit(tmp_path, rng):
    labels = [f"a rather long label number {i}" for i in range(6)]
    title = "a very long title " * 8
    read_png(plots.image_grid(rng.random((6, 12, 12)), tmp_path / "l.png", labels=labels, title=title))


@pytest.mark.parametrize(
    "bad",
    [
        np.zeros((28, 28)),  # one image without the n axis / flat rows
        np.zeros((5, 784)),
        np.zeros((2, 5, 8, 8)),  # 5 channels
        np.zeros((2, 1, 1, 8, 8)),  # 5-D
        np.zeros((0, 28, 28)),  # empty
        np.zeros((3, 0, 28)),
        np.full((2, 4, 4), np.nan),  # not finite
        np.array([["a", "b"]] * 2),  # not numeric
        7,
    ],
)
def test_image_grid_bad_input(tmp_path, bad):
    with pytest.raises(DataError) as err:
        plots.image_grid(bad, tmp_path / "x.png")
    assert "\n" not in str(err.value)
    assert only_files(tmp_path) == set()


def test_image_grid_bad_labels_and_ncols(tmp_path, rng):
    with pytest.raises(DataError, match="labels"):
        plots.image_grid(rng.random((3, 4, 4)), tmp_path / "x.png", labels=["a"])
    for ncols in (0, -1, 2.5, True):
        with pytest.raises(UsageError, match="ncols"):
            plots.image_grid(rng.random((3, 4, 4)), tmp_path / "x.png", ncols=ncols)
    assert only_files(tmp_path) == set()


# --------------------------------------------------------------------------- reconstructions


def test_reconstruction_grid_writes_png(tmp_path, rng):
    orig = rng.random((8, 28, 28))
    recon = np.clip(orig + rng.normal(0, 0.2, orig.shape), 0, 1)
    out = plots.reconstruction_grid(orig, recon, tmp_path / "r.png", title="recon")
    h, w = read_png(out).shape[:2]
    assert w > 2 * h  # two rows of eight
    assert only_files(tmp_path) == {"r.png"}


def test_reconstruction_grid_many_pairs_and_channels(tmp_path, rng):
    orig = rng.random((30, 1, 12, 12))
    out = plots.reconstruction_grid(orig, orig[:, 0] * 0.5, tmp_path / "r.png")
    read_png(out)


def test_reconstruction_grid_data_row_above_reconstruction_row(tmp_path):
    orig = np.ones((3, 10, 10))
    recon = np.zeros((3, 10, 10))
    pixels = read_png(plots.reconstruction_grid(orig, recon, tmp_path / "r.png"))
    grey = pixels[..., :3].mean(axis=2)
    h, w = grey.shape
    column = grey[:, int(0.9 * w)]  # through the last tile of each row
    dark = np.flatnonzero(column < 0.1)
    white_rows = np.flatnonzero(column > 0.99)
    assert dark.size and dark.min() > h // 2  # the black reconstructions are below
    assert white_rows.size


def test_reconstruction_grid_bad_input(tmp_path, rng):
    with pytest.raises(DataError, match="same shape"):
        plots.reconstruction_grid(rng.random((4, 8, 8)), rng.random((3, 8, 8)), tmp_path / "r.png")
    with pytest.raises(DataError):
        plots.reconstruction_grid(rng.random((4, 64)), rng.random((4, 64)), tmp_path / "r.png")
    with pytest.raises(DataError):
        plots.reconstruction_grid(np.zeros((0, 8, 8)), np.zeros((0, 8, 8)), tmp_path / "r.png")
    assert only_files(tmp_path) == set()


def test_reconstruction_grid_scales_both_when_one_is_out_of_range(tmp_path, rng, monkeypatch):
    seen = capture_figure(monkeypatch)
    plots.reconstruction_grid(rng.random((2, 8, 8)), rng.normal(size=(2, 8, 8)) * 4, tmp_path / "r.png")
    assert "min-max" in seen[-1]._suptitle.get_text()


# --------------------------------------------------------------------------- tables


def test_table_grid_writes_png(tmp_path, rng):
    rows = rng.normal(size=(20, 8))
    names = ["age", "income", "height_cm", "weight", "bp_sys", "bp_dia", "chol", "glucose"]
    out = plots.table_grid(rows, tmp_path / "t.png", title="table", feature_names=names)
    read_png(out)
    out = plots.table_grid(
        rng.random((200, 60)), tmp_path / "big.png", feature_names=[f"feature_{i}" for i in range(60)]
    )
    h, w = read_png(out).shape[:2]
    assert w <= 1400 and h <= 1100
    out = plots.table_grid(np.ones((1, 1)), tmp_path / "one.png")  # constant, 1 x 1
    read_png(out)
    assert only_files(tmp_path) == {"t.png", "big.png", "one.png"}


def test_table_grid_has_colorbar(tmp_path, rng, monkeypatch):
    seen = capture_figure(monkeypatch)
    plots.table_grid(rng.normal(size=(5, 3)), tmp_path / "t.png")
    assert len(seen[-1].axes) == 2  # heatmap + colorbar


@pytest.mark.parametrize(
    "bad",
    [np.zeros(5), np.zeros((2, 3, 4)), np.zeros((0, 3)), np.zeros((3, 0)), np.array([[1.0, np.inf]]), [["x", "y"]]],
)
def test_table_grid_bad_input(tmp_path, bad):
    with pytest.raises(DataError) as err:
        plots.table_grid(bad, tmp_path / "t.png")
    assert "\n" not in str(err.value)


def test_table_grid_bad_feature_names(tmp_path, rng):
    with pytest.raises(DataError, match="feature names"):
        plots.table_grid(rng.random((3, 4)), tmp_path / "t.png", feature_names=["a", "b"])


# --------------------------------------------------------------------------- loss curves


def test_loss_curves_ten_epochs_three_panels_when_beta_varies(tmp_path, rng, monkeypatch):
    seen = capture_figure(monkeypatch)
    out = plots.loss_curves(fake_records(10, rng), tmp_path / "loss.png", title="training")
    h, w = read_png(out).shape[:2]
    assert 500 <= w <= 1000 and 400 <= h <= 1200
    assert len(seen[-1].axes) == 3


def test_loss_curves_constant_beta_two_panels(tmp_path, rng, monkeypatch):
    seen = capture_figure(monkeypatch)
    records = [dict(r, beta=1.0) for r in fake_records(5, rng)]
    read_png(plots.loss_curves(records, tmp_path / "loss.png"))
    fig = seen[-1]
    assert len(fig.axes) == 2
    assert "β = 1" in fig.axes[1].get_title(loc="left")


def test_loss_curves_single_record_draws_markers(tmp_path, rng, monkeypatch):
    seen = capture_figure(monkeypatch)
    read_png(plots.loss_curves(fake_records(1, rng), tmp_path / "one.png"))
    line = seen[-1].axes[0].get_lines()[0]
    assert line.get_marker() == "o" and len(line.get_xdata()) == 1


def test_loss_curves_missing_values(tmp_path, monkeypatch):
    seen = capture_figure(monkeypatch)
    records = [
        {"epoch": 1, "loss": 3.0, "reconstruction": None, "kl": float("nan")},
        {"loss": np.float32(2.0), "heldout_elbo": -2.5, "beta": None},  # epoch missing -> 2
        {"epoch": 3, "loss": None, "heldout_elbo": None},
    ]
    read_png(plots.loss_curves(records, tmp_path / "m.png"))
    ax0 = seen[-1].axes[0]
    loss_line, heldout_line = ax0.get_lines()
    assert list(loss_line.get_xdata()) == [1.0, 2.0]
    assert list(heldout_line.get_ydata()) == [2.5]  # drawn as -ELBO
    assert len(seen[-1].axes) == 2


@pytest.mark.parametrize(
    "bad",
    [[], {"epoch": 1, "loss": 1.0}, [1.0, 2.0], [{"epoch": 1, "loss": "high"}], None, "abc"],
)
def test_loss_curves_bad_input(tmp_path, bad):
    with pytest.raises(DataError) as err:
        plots.loss_curves(bad, tmp_path / "l.png")
    assert "\n" not in str(err.value)
    assert only_files(tmp_path) == set()


# --------------------------------------------------------------------------- atomic writes


@pytest.mark.parametrize(
    "call",
    [
        lambda p: plots.image_grid(np.zeros((0, 8, 8)), p),
        lambda p: plots.reconstruction_grid(np.zeros((2, 8, 8)), np.zeros((3, 8, 8)), p),
        lambda p: plots.table_grid(np.zeros(4), p),
        lambda p: plots.loss_curves([], p),
    ],
)
def test_bad_input_leaves_existing_file_untouched(tmp_path, call):
    target = tmp_path / "picture.png"
    target.write_bytes(b"old bytes")
    with pytest.raises(DataError):
        call(target)
    assert target.read_bytes() == b"old bytes"
    assert only_files(tmp_path) == {"picture.png"}


def test_failure_while_writing_leaves_existing_file_untouched(tmp_path, rng, monkeypatch):
    from matplotlib.figure import Figure

    def broken_savefig(self, fname, **kwargs):
        Path(fname).write_bytes(PNG_SIGNATURE + b"half a picture")
        raise RuntimeError("renderer crashed")

    target = tmp_path / "picture.png"
    target.write_bytes(b"old bytes")
    monkeypatch.setattr(Figure, "savefig", broken_savefig)
    with pytest.raises(RuntimeError, match="renderer crashed"):
        plots.image_grid(rng.random((4, 8, 8)), target)
    with pytest.raises(RuntimeError):
        plots.loss_curves(fake_records(3, rng), target)
    assert target.read_bytes() == b"old bytes"
    assert only_files(tmp_path) == {"picture.png"}


def test_successful_write_replaces_existing_file(tmp_path, rng):
    target = tmp_path / "picture.png"
    target.write_bytes(b"old bytes")
    plots.image_grid(rng.random((4, 8, 8)), target)
    read_png(target)
    assert only_files(tmp_path) == {"picture.png"}


def test_written_file_has_ordinary_permissions(tmp_path, rng):
    if os.name != "posix":
        pytest.skip("POSIX permissions only")
    old = os.umask(0o022)
    try:
        out = plots.image_grid(rng.random((2, 4, 4)), tmp_path / "p.png")
    finally:
        os.umask(old)
    assert out.stat().st_mode & 0o777 == 0o644


def test_save_figure_with_foreign_figure_and_suffix(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))  # no canvas attached by the caller
    fig.add_subplot().plot([0, 1], [1, 0])
    out = plots.save_figure(fig, str(tmp_path / "figure.dat"))
    assert out == tmp_path / "figure.dat"
    assert read_png(out).shape[:2] == (2 * style.DPI, 2 * style.DPI)
    assert only_files(tmp_path) == {"figure.dat"}


# --------------------------------------------------------------------------- elbo_vs_time


def fake_series(rng, rows: int = 3, points: int = 6) -> dict:
    out = {}
    for i in range(rows):
        seconds = np.cumsum(rng.uniform(0.5, 1.5, points)) * (i + 1)
        elbo = -100 - 80 * np.exp(-np.arange(1, points + 1) / 2) - 3 * i
        out[f"pyro · row {i}"] = {
            "seconds": seconds.tolist(),
            "elbo": elbo.tolist(),
            "spread": [0.0] * points if i == 0 else [1.0 + i] * points,
        }
    return out


def test_elbo_vs_time_one_line_per_series_with_bands(tmp_path, rng, monkeypatch):
    seen = capture_figure(monkeypatch)
    out = plots.elbo_vs_time(fake_series(rng), tmp_path / "cmp.png", title="held-out ELBO against time")
    pixels = read_png(out)
    assert pixels.shape[1] == 8 * style.DPI
    (fig,) = seen
    (ax,) = fig.axes
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels == ["pyro · row 0", "pyro · row 1", "pyro · row 2"]
    assert len(ax.lines) == 3 and len({line.get_marker() for line in ax.lines}) == 3
    assert len(ax.collections) == 2  # bands only where the spread is positive
    assert ax.get_xlim()[0] == 0.0
    assert "held-out ELBO" in ax.get_ylabel() and "time" in ax.get_xlabel()


def test_elbo_vs_time_single_points_missing_values_and_pairs(tmp_path, monkeypatch):
    seen = capture_figure(monkeypatch)
    series = {
        "one epoch": {"seconds": [0.01], "elbo": [-510.4]},
        "gaps": ([1.0, 2.0, None, 4.0], [-200.0, None, -150.0, -140.0]),
        "never evaluated": {"seconds": [1.0, 2.0], "elbo": [None, math.nan]},
    }
    read_png(plots.elbo_vs_time(series, tmp_path / "p.png"))
    (ax,) = seen[0].axes
    one, gaps = ax.lines[0], ax.lines[1]
    assert one.get_marker() == "o" and list(one.get_xdata()) == [0.01]
    assert list(gaps.get_xdata()) == [1.0, 4.0]  # only points with both values
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert labels[2] == "never evaluated (not recorded)"
    assert ax.yaxis.get_major_formatter().get_useOffset() is False


@pytest.mark.parametrize(
    "bad, words",
    [
        ([], "mapping"),
        ({}, "empty"),
        ({"a": {"seconds": [1.0]}}, "'elbo'"),
        ({"a": {"seconds": [1.0, 2.0], "elbo": [-1.0]}}, "one of each"),
        ({"a": {"seconds": [1.0], "elbo": [-1.0], "spread": [1.0, 2.0]}}, "one of each"),
        ({"a": {"seconds": [1.0], "elbo": ["high"]}}, "not a number"),
        ({"a": {"seconds": "1, 2", "elbo": [-1.0, -2.0]}}, "sequence of numbers"),
        ({"a": {"seconds": [1.0], "elbo": [math.inf]}}, "infinite"),
        ({"a": {"seconds": [-1.0], "elbo": [-1.0]}}, "negative seconds"),
        ({"a": {"seconds": [1.0], "elbo": [None]}}, "no series has a finite"),
        ({"a": 3}, "mapping with 'seconds'"),
    ],
)
def test_elbo_vs_time_bad_input_leaves_file_untouched(tmp_path, bad, words):
    target = tmp_path / "picture.png"
    target.write_bytes(b"old bytes")
    with pytest.raises(DataError, match="elbo_vs_time") as info:
        plots.elbo_vs_time(bad, target)
    assert words in str(info.value)
    assert target.read_bytes() == b"old bytes"
    assert only_files(tmp_path) == {"picture.png"}


def test_labelled_rows_and_side_by_side_write_pngs(tmp_path):
    from ppvae.plotting import labelled_rows, side_by_side

    rng = np.random.default_rng(0)
    rows = {"data": rng.random((6, 8, 8)), "a much longer row label": rng.random((4, 8, 8))}
    out = labelled_rows(rows, tmp_path / "rows.png", "two rows")
    side = side_by_side({"A": rng.random((9, 8, 8)), "B": rng.random((9, 8, 8))}, tmp_path / "side.png", ncols=3)
    for path in (out, side):
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
