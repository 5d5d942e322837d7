"""The pictures of a run: samples, reconstructions and loss curves."""

from __future__ import annotations

import numpy as np

from . import plots

__all__ = ["write_run_pictures", "save_array_picture"]


def save_array_picture(array: np.ndarray, path, *, is_image: bool, title: str | None = None):
    """Draw datapoints as an image grid (images) or a heatmap (tables)."""
    if is_image:
        return plots.image_grid(array, path, title=title)
    return plots.table_grid(array.reshape(len(array), -1), path, title=title)


def write_run_pictures(run, records: list[dict], num_samples: int = 64, num_pairs: int = 8) -> None:
    """Write ``samples.png``, ``reconstructions.png`` and ``loss.png`` into the run folder."""
    is_image = bool(run.data_info.get("is_image"))
    name = run.config.train.backend
    samples = run.sample(num_samples, seed=0)
    save_array_picture(samples, run.path / "samples.png", is_image=is_image,
                       title=f"{num_samples} samples from p(x|z), z ~ p(z) ({name})")
    x = run.heldout()[:num_pairs]
    recon = run.reconstruct(x)
    if is_image:
        plots.reconstruction_grid(x, recon, run.path / "reconstructions.png",
                                  title="held-out data and reconstructions (posterior mean)")
    else:
        rows = np.concatenate([x.reshape(len(x), -1), recon.reshape(len(recon), -1)])
        plots.table_grid(rows, run.path / "reconstructions.png",
                         title=f"top {len(x)} rows: held-out data; bottom {len(x)}: reconstructions")
    if records:
        plots.loss_curves(records, run.path / "loss.png", title="training loss and held-out ELBO")
