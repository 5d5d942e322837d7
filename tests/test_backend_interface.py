"""Both backends implement the Backend interface, and a run records its backend's versions."""

from __future__ import annotations

import importlib
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
    overrides = {
        **FAST,
        "data.source": str(digits_npy),
        "model.latent_dim": 2,
        "train.epochs": 1,
        "train.batch_size": 64,
        "train.backend": "numpyro",
    }
    ppvae.fit(out=tmp_path / "r", overrides=overrides, pictures=False)
    versions = json.loads((tmp_path / "r" / "summary.json").read_text())["versions"]
    assert {"jax", "jaxlib", "numpyro", "equinox", "optax"} <= set(versions)
    assert versions["numpyro"] == md.version("numpyro")
    assert "pyro-ppl" not in versions


def test_nothing_probes_a_backend_with_getattr_or_hasattr():
    # The API and the registry use a backend through the Backend interface only; a probe
    # (hasattr(module, ...), getattr(trained, ..., default)) would hide a missing name.
    import ast
    from pathlib import Path

    root = Path(__file__).resolve().parents[1] / "ppvae"
    for path in (root / "api.py", root / "run.py", root / "spec" / "registry.py"):
        tree = ast.parse(path.read_text())
        probes = [
            n.lineno
            for n in ast.walk(tree)
            if isinstance(n, ast.Call)
            and isinstance(n.func, ast.Name)
            and (n.func.id == "hasattr" or (n.func.id == "getattr" and len(n.args) == 3))
            and not (isinstance(n.args[0], ast.Attribute) and n.args[0].attr in ("factory", "model"))
            and not (isinstance(n.args[0], ast.Name) and n.args[0].id in ("factory", "cfg"))
        ]
        assert probes == [], f"{path.name} lines {probes}"


@pytest.mark.parametrize("name", ["pyro", "numpyro"])
def test_trained_models_say_how_long_they_compiled(name):
    backend = registry.load_backend(name)
    trained = importlib.import_module(f"ppvae.backends.{name}.trained").TrainedVAE
    assert trained.compile_seconds == 0.0 and callable(backend.adapt_portable)
