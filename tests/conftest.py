"""Shared fixtures: seeding, small real datasets and a small trained run."""

from __future__ import annotations

import gzip
import shutil
from importlib import resources
from pathlib import Path

import numpy as np
import pytest

# Fast settings for runs made in tests: tiny networks, few importance samples.
FAST = {
    "model.encoder_options.hidden": [64],
    "model.decoder_options.hidden": [64],
    "train.eval_num_samples": 20,
    "train.device": "cpu",
}


def embedded_digits(n: int) -> np.ndarray:
    """The first ``n`` embedded MNIST test digits as uint8 (n, 28, 28)."""
    ref = resources.files("ppvae.data") / "embedded" / "t10k-images-idx3-ubyte.gz"
    with ref.open("rb") as fh:
        raw = gzip.decompress(fh.read())
    return np.frombuffer(raw, dtype=np.uint8, offset=16).reshape(-1, 28, 28)[:n].copy()


@pytest.fixture(autouse=True)
def _seeded():
    """Every test starts from the same RNG state, an empty param store and validation on."""
    import pyro
    import torch

    pyro.clear_param_store()
    pyro.set_rng_seed(0)
    pyro.enable_validation(True)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    yield
    pyro.clear_param_store()


@pytest.fixture(scope="session")
def digits_npy(tmp_path_factory) -> Path:
    """600 real MNIST digits (uint8) with labels, as an .npz file."""
    import gzip as gz

    path = tmp_path_factory.mktemp("data") / "digits.npz"
    ref = resources.files("ppvae.data") / "embedded" / "t10k-labels-idx1-ubyte.gz"
    with ref.open("rb") as fh:
        labels = np.frombuffer(gz.decompress(fh.read()), dtype=np.uint8, offset=8)[:600].astype(np.int64)
    np.savez(path, x=embedded_digits(600), y=labels)
    return path


@pytest.fixture(scope="session")
def _trained_run(tmp_path_factory, digits_npy) -> Path:
    import ppvae

    out = tmp_path_factory.mktemp("runs") / "tiny"
    overrides = {
        **FAST,
        "data.source": str(digits_npy),
        "model.latent_dim": 2,
        "train.epochs": 2,
        "train.batch_size": 64,
    }
    ppvae.fit(out=out, overrides=overrides)
    return out


@pytest.fixture
def tiny_run(_trained_run, tmp_path) -> Path:
    """A private copy of a small trained run (2-D latent, 2 epochs on 600 digits)."""
    dest = tmp_path / "run"
    shutil.copytree(_trained_run, dest)
    return dest


def fit_two_layer(out: Path, data: Path, backend: str = "pyro", epochs: int = 2, **overrides):
    """A small two-layer VAE (z1 of 6, z2 of 3) fitted on ``data``: the hierarchical tests' run.

    ``overrides`` are spec settings by dotted key, e.g. ``{"model.inference": "ladder"}``.
    """
    import ppvae

    settings = {**FAST, "model.latent_layers": [3], "model.latent_layer_options.hidden": [16], **overrides}
    return ppvae.fit(
        data=str(data), out=out, latent_dim=6, epochs=epochs, backend=backend, overrides=settings, pictures=False
    )
