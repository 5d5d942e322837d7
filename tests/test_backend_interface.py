"""Both backends implement the Backend interface, and a run records its backend's versions."""

from __future__ import annotations

import importlib.metadata as md
import json

import pytest

import ppvae
from conftest import FAST
from ppvae.spec import registry
from ppvae.backends.base import Backend


@pytest.mark.parametrize("name", ["pyro", "numpyro"])
def test_backend_modules_implement_the_interface(name):
    backend = registry.load_backend(name)
    assert isinstance(backend, Backend)
    assert backend.NAME == name
    for pkg in backend.PACKAGES:
        md.version(pkg)  # every recorded package is an installed distribution


def test_pyro_run_records_torch_and_pyro(tiny_run):
    versions = json.loads((tiny_run / "summary.json").read_text())["versions"]
    assert {"python", "ppvae", "numpy", "torch", "pyro-ppl"} <= set(versions)
    assert "jax" not in versions


def test_numpyro_run_records_its_own_packages(tmp_path, digits_npy):
    overrides = {**FAST, "data.source": str(digits_npy), "model.latent_dim": 2, "train.epochs": 1,
                 "train.batch_size": 64, "train.backend": "numpyro"}
    ppvae.fit(out=tmp_path / "r", overrides=overrides, pictures=False)
    versions = json.loads((tmp_path / "r" / "summary.json").read_text())["versions"]
    assert {"jax", "jaxlib", "numpyro", "equinox", "optax"} <= set(versions)
    assert versions["numpyro"] == md.version("numpyro")
    assert "pyro-ppl" not in versions
