"""The pictures of a run: samples, reconstructions and loss curves."""

from __future__ import annotations

import math

import numpy as np

from ppvae.plotting import curves, images

__all__ = ["write_run_pictures", "save_array_picture", "samples_by_class"]


def save_array_picture(array: np.ndarray, path, *, is_image: bool, title: str | None = None, ncols: int | None = None):
    """Draw datapoints as an image grid (images, ``ncols`` per row) or a heatmap (tables)."""
    if is_image:
        return images.image_grid(array, path, title=title, ncols=ncols)
    return images.table_grid(array.reshape(len(array), -1), path, title=title)


def samples_by_class(run, per_class: int, seed: int = 0) -> np.ndarray:
    """``per_class`` samples of every class of a conditional run, class 0's first, then class 1's, ..."""
    labels = np.repeat(np.arange(run.num_classes), per_class)
    return run.sample(len(labels), seed=seed, labels=labels)


def write_run_pictures(run, records: list[dict], num_samples: int = 64, num_pairs: int = 8) -> None:
    """Write ``samples.png``, ``reconstructions.png`` and ``loss.png`` into the run folder."""
    is_image = bool(run.data_info.get("is_image"))
    name = run.config.train.backend
    if run.num_classes:
        per_class = max(1, math.ceil(num_samples / run.num_classes))
        save_array_picture(
            samples_by_class(run, per_class),
            run.path / "samples.png",
            is_image=is_image,
            ncols=per_class,
            title=f"samples from p(x|z,y), z ~ p(z), one row per class y = 0 .. {run.num_classes - 1} ({name})",
        )
    else:
        samples = run.sample(num_samples, seed=0)
        save_array_picture(
            samples,
            run.path / "samples.png",
            is_image=is_image,
            title=f"{num_samples} samples from p(x|z), z ~ p(z) ({name})",
        )
    x = run.heldout()[:num_pairs]
    labels = run.dataset().heldout_labels[:num_pairs] if run.num_classes else None
    recon = run.reconstruct(x, labels)
    if is_image:
        images.reconstruction_grid(
            x, recon, run.path / "reconstructions.png", title="held-out data and reconstructions (posterior mean)"
        )
    else:
        rows = np.concatenate([x.reshape(len(x), -1), recon.reshape(len(recon), -1)])
        images.table_grid(
            rows,
            run.path / "reconstructions.png",
            title=f"top {len(x)} rows: held-out data; bottom {len(x)}: reconstructions",
        )
    if records:
        split = "validation" if any("validation_elbo" in r for r in records) else "held-out"
        curves.loss_curves(records, run.path / "loss.png", title=f"training loss and {split} ELBO")
