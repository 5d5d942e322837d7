"""A custom count likelihood, written once, trained on both backends, against the built-ins.

MNIST grey levels are integers 0-255, so a digit can be modelled as 784 counts. A
Binomial over 255 trials per pixel fits that exactly: its support is 0-255 (no mass
wasted above 255) and its variance 255·p·(1 - p) vanishes for pixels that are surely
black or surely white. It is declared once as a ``ppvae.Portable`` likelihood (its
constants and its distribution, nothing backend-specific) and trained with Pyro and
with NumPyro; the built-in count likelihoods ``poisson`` (variance = mean) and
``negative_binomial`` (a learned dispersion per pixel) are trained on the same data.
All read raw counts (``data.scale = "none"``), so their held-out log p(x) are in the
same units and comparable. The script prints the table and writes, in ``--out``:

- ``counts-reconstructions.png``: held-out digits and their reconstructions under each likelihood;
- ``counts-samples.png``: samples of each likelihood, side by side.

    python examples/custom_count_likelihood.py            # four runs, a few minutes on 2 cores
    python examples/custom_count_likelihood.py --tiny     # a smoke run (300 digits, 1 epoch), seconds
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

import ppvae
from ppvae import plots

SPEC = Path(__file__).resolve().parents[1] / "models" / "mlp-400.toml"


@ppvae.register("likelihood", "grey_binomial")
class GreyLevelBinomial(ppvae.Portable):
    """Binomial(total_count, sigmoid(decoder output)) on every value: grey levels as counts of 0-255."""

    support = "count"

    def __init__(self, event_shape, total_count=255):
        self.event_rank = len(event_shape)
        self.constant("total_count", np.full(tuple(event_shape), float(total_count)))

    def distribution(self, dist, ops, p, out):
        return dist.Binomial(total_count=p["total_count"], logits=out).to_event(self.event_rank)

    def mean(self, dist, ops, p, out):
        return p["total_count"] * ops.sigmoid(out)


#: (row label, likelihood, backend) of every run.
RUNS = (
    ("grey_binomial (pyro)", "grey_binomial", "pyro"),
    ("grey_binomial (numpyro)", "grey_binomial", "numpyro"),
    ("poisson", "poisson", "pyro"),
    ("negative_binomial", "negative_binomial", "pyro"),
)


def tiny_digits(folder: Path, n: int = 300) -> str:
    """The first ``n`` embedded MNIST digits with labels, as an .npz that ``data.source`` can name."""
    from ppvae.data.standard import load_embedded

    raw = load_embedded()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny-digits.npz"
    np.savez(path, x=raw.x[:n], y=raw.labels[:n])
    return str(path)


def mosaic(images: np.ndarray, ncols: int, pad: int = 2) -> np.ndarray:
    """Tile ``(n, H, W)`` images into one array, ``ncols`` per row, separated by white lines."""
    n, h, w = images.shape
    nrows = math.ceil(n / ncols)
    canvas = np.ones((nrows * (h + pad) - pad, ncols * (w + pad) - pad))
    for k, image in enumerate(images):
        r, c = divmod(k, ncols)
        canvas[r * (h + pad):r * (h + pad) + h, c * (w + pad):c * (w + pad) + w] = image
    return canvas


def labelled_rows(rows: dict, path: Path, title: str) -> Path:
    """One row of images per entry of ``rows`` (label -> (n, H, W) in [0, 1]), label on the left."""
    from matplotlib.figure import Figure

    ncols = max(len(v) for v in rows.values())
    # Laid out in inches, so that long row labels always fit to the left of the images.
    tile, gap, top = 0.62, 0.06, 0.38
    label_w = 0.15 + 0.075 * max(len(k) for k in rows)  # about 0.075 inch per character at 9 pt
    width, height = label_w + tile * ncols + 0.15, top + (tile + gap) * len(rows)
    fig = Figure(figsize=(width, height))
    for i, (label, images) in enumerate(rows.items()):
        bottom = height - top - (i + 1) * (tile + gap)
        ax = fig.add_axes((label_w / width, bottom / height, tile * ncols / width, tile / height))
        ax.imshow(mosaic(images, ncols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        fig.text((label_w - 0.1) / width, (bottom + tile / 2) / height, label, ha="right", va="center", fontsize=9)
    fig.suptitle(title, fontsize=11, y=1 - 0.1 / height, va="top")
    return plots.save_figure(fig, path)


def side_by_side(panels: dict, path: Path, title: str, ncols: int = 6) -> Path:
    """Image mosaics next to each other, one per entry of ``panels`` (title -> images)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(0.2 + 2.9 * len(panels), 3.4), layout="constrained")
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (name, images) in zip(axes, panels.items()):
        ax.imshow(mosaic(images, ncols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(name, fontsize=10)
    fig.suptitle(title, fontsize=11)
    return plots.save_figure(fig, path)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tiny", action="store_true", help="300 digits, tiny networks, 1 epoch: seconds")
    parser.add_argument("--out", default="runs/count-likelihoods", help="folder for the runs and the pictures")
    args = parser.parse_args(argv)
    out = Path(args.out)

    # Raw grey levels as counts: no scaling, no binarization.
    overrides = {"data.scale": "none", "data.binarize": "none", "train.epochs": 10, "train.eval_num_samples": 200}
    if args.tiny:
        overrides.update({"data.source": tiny_digits(out), "train.epochs": 1, "train.batch_size": 64,
                          "train.eval_num_samples": 10, "model.latent_dim": 4,
                          "model.encoder_options.hidden": [32], "model.decoder_options.hidden": [32]})
    runs, results = {}, {}
    for label, likelihood, backend in RUNS:
        run = ppvae.fit(SPEC, out=out / f"{likelihood}-{backend}", force=True, likelihood=likelihood,
                        backend=backend, overrides=overrides)
        runs[label] = run
        results[label] = {**run.summary["evaluation"], "likelihood": likelihood, "backend": backend,
                          "train_seconds": run.summary["train_seconds"]}

    k = next(iter(results.values()))["num_samples"]
    print(f"\nheld-out, nats per digit of 784 grey-level counts (log p(x): IWAE bound, K = {k})")
    print(f"{'likelihood':26s} {'ELBO':>10s} {'log p(x)':>10s} {'± s.e.':>7s} {'bits/dim':>9s} {'active':>7s} "
          f"{'train s':>8s}")
    for label, r in sorted(results.items(), key=lambda kv: -kv[1]["heldout_log_px"]):
        print(f"{label:26s} {r['heldout_elbo']:10.1f} {r['heldout_log_px']:10.1f} {r['heldout_log_px_stderr']:7.1f} "
              f"{r['bits_per_dim']:9.3f} {r['active_units']:7d} {r['train_seconds']:8.1f}")
    a, b = results["grey_binomial (pyro)"], results["grey_binomial (numpyro)"]
    print(f"\nthe one Binomial definition gives {a['heldout_log_px']:.1f} (pyro) and {b['heldout_log_px']:.1f} "
          "(numpyro): the same model, trained by two backends from different random initial weights")

    first = next(iter(runs.values()))
    x = first.heldout()[:10]
    rows = {"data": x / 255.0, **{label: run.reconstruct(x) / 255.0 for label, run in runs.items()}}
    pictures = [
        labelled_rows(rows, out / "counts-reconstructions.png",
                      "held-out digits and their reconstructions (mean of p(x|z) / 255)"),
        side_by_side({label: run.sample(36, seed=0) / 255.0 for label, run in runs.items()},
                     out / "counts-samples.png", "36 samples each: means of p(x|z) / 255, z ~ N(0, I)"),
    ]
    print("pictures: " + ", ".join(map(str, pictures)))
    return results


if __name__ == "__main__":
    main()
