"""A Gaussian VAE on standardized pixels, and why its scale should be learned.

Many VAEs are trained with a "mean squared error" reconstruction loss. That is a
Gaussian likelihood p(x|z) = N(decoder(z), σ²) with σ fixed (σ = 1 up to constants),
and the fixed σ silently sets how much the KL weighs against the reconstruction. This
script trains models/mlp-mse.toml (Gaussian likelihood with one learned scale σ,
pixels standardized to mean 0, sd 1) and the same VAE with σ fixed at 1, then shows:

- the learned σ, and that σ² matches the held-out mean squared reconstruction error
  (the maximum-likelihood scale of a Gaussian is the RMS of its residuals);
- held-out ELBO, log p(x), KL and active units of both: with σ = 1 the reconstruction
  term is too weak, the KL wins, few latent dimensions are used, and log p(x) is much
  lower (σ = 1 is a poor density for standardized pixels whose residuals are smaller);
- reconstructions and samples of both, mapped back to grey levels
  (``mse-reconstructions.png``, ``mse-samples.png`` in ``--out``).

    python examples/mlp_mse.py                # two runs, a couple of minutes on 2 cores
    python examples/mlp_mse.py --tiny         # a smoke run (300 digits, 1 epoch), seconds
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path

import numpy as np

import ppvae
from ppvae import plots

SPEC = Path(__file__).resolve().parents[1] / "models" / "mlp-mse.toml"


def tiny_digits(folder: Path, n: int = 300) -> str:
    """The first ``n`` embedded MNIST digits with labels, as an .npz that ``data.source`` can name."""
    from ppvae.data.standard import load_embedded

    raw = load_embedded()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny-digits.npz"
    np.savez(path, x=raw.x[:n], y=raw.labels[:n])
    return str(path)


def to_grey(run: ppvae.Run, x: np.ndarray) -> np.ndarray:
    """Undo the standardization (and the ÷255) so pictures show grey levels in [0, 1]."""
    t = run.data_info["transform"]
    shape = tuple(t["event_shape"])
    if t.get("standardize"):
        x = x * np.asarray(t["sd"]).reshape(shape) + np.asarray(t["mean"]).reshape(shape)
    return np.clip(x, 0.0, 1.0)


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
    fig = Figure(figsize=(1.6 + 0.6 * ncols, 0.5 + 0.68 * len(rows)), layout="constrained")
    axes = fig.subplots(len(rows), 1, squeeze=False)[:, 0]
    for ax, (label, images) in zip(axes, rows.items()):
        ax.imshow(mosaic(images, ncols), cmap="gray", vmin=0, vmax=1, interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_ylabel(label, rotation=0, ha="right", va="center", fontsize=9)
        for spine in ax.spines.values():
            spine.set_visible(False)
    fig.suptitle(title, fontsize=11)
    return plots.save_figure(fig, path)


def side_by_side(panels: dict, path: Path, title: str, ncols: int = 8) -> Path:
    """Image mosaics next to each other, one per entry of ``panels`` (title -> images)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(0.2 + 3.6 * len(panels), 4.3), layout="constrained")
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
    parser.add_argument("--out", default="runs/mlp-mse", help="folder for the two runs and the pictures")
    args = parser.parse_args(argv)
    out = Path(args.out)

    overrides = {"train.eval_num_samples": 500}
    if args.tiny:
        overrides = {"data.source": tiny_digits(out), "train.epochs": 1, "train.batch_size": 64,
                     "train.eval_num_samples": 10, "model.latent_dim": 4,
                     "model.encoder_options.hidden": [32], "model.decoder_options.hidden": [32]}
    variants = {
        "learned σ": {},
        # The "MSE" VAE: σ fixed at 1, so the reconstruction term is ½‖x - μ‖² + const.
        "fixed σ = 1": {"model.likelihood_options.scale_mode": "fixed", "model.likelihood_options.scale": 1.0},
    }
    runs, results = {}, {}
    for name, extra in variants.items():
        folder = out / ("learned-scale" if extra == {} else "fixed-scale")
        run = ppvae.fit(SPEC, out=folder, force=True, overrides={**overrides, **extra})
        runs[name] = run
        ev = run.summary["evaluation"]
        x = run.heldout()
        recon = run.reconstruct(x)
        # Held-out mean squared error per standardized pixel of the posterior-mean reconstruction.
        mse = float(np.mean((recon - x) ** 2))
        sigma = float(np.exp(run.trained.state_arrays()["likelihood.log_scale"]).mean())
        results[name] = {**ev, "sigma": sigma, "mse": mse, "train_seconds": run.summary["train_seconds"]}

    print(f"\n{'':14s} {'σ':>7s} {'σ²':>7s} {'MSE':>7s} {'ELBO':>10s} {'log p(x)':>10s} {'KL':>7s} {'active':>7s}")
    for name, r in results.items():
        print(f"{name:14s} {r['sigma']:7.3f} {r['sigma'] ** 2:7.3f} {r['mse']:7.3f} {r['heldout_elbo']:10.1f} "
              f"{r['heldout_log_px']:10.1f} {r['kl']:7.2f} {r['active_units']:4d}/{len(r['kl_per_dim'])}")
    learned, fixed = results["learned σ"], results["fixed σ = 1"]
    print(f"\nThe learned σ² = {learned['sigma'] ** 2:.3f} is close to its own held-out MSE {learned['mse']:.3f}: "
          "a learned Gaussian scale is the RMS of the residuals.\nWith σ fixed at 1 the reconstruction term counts "
          f"{1 / max(learned['sigma'] ** 2, 1e-12):.0f}x less, so the KL wins: {fixed['active_units']} active units "
          f"against {learned['active_units']}, reconstruction MSE {fixed['mse']:.3f} against {learned['mse']:.3f}, "
          f"and log p(x) {fixed['heldout_log_px']:.0f} against {learned['heldout_log_px']:.0f} nats.")

    first = next(iter(runs.values()))
    x = first.heldout()[:10]
    rows = {"data": to_grey(first, x)}
    rows.update({name: to_grey(run, run.reconstruct(x)) for name, run in runs.items()})
    recon_png = labelled_rows(rows, out / "mse-reconstructions.png",
                              "held-out digits and their reconstructions (posterior mean, grey levels)")
    samples_png = side_by_side({name: to_grey(run, run.sample(64, seed=0)) for name, run in runs.items()},
                               out / "mse-samples.png", "64 samples: means of p(x|z), z ~ N(0, I)")
    print(f"pictures: {recon_png}, {samples_png}")
    return results


if __name__ == "__main__":
    main()
