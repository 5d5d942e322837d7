"""The "where to add" recipes of docs/architecture.md, each done exactly as written there.

A prior or likelihood (tests/test_portable.py) and an estimator (tests/test_estimators.py)
have their own tests; this file adds a data format and a backend the way the page says,
and checks that each is one change: the rest of ppvae picks it up by itself.
"""

from __future__ import annotations

import json
import sys
import textwrap

import numpy as np
import pytest
from click.testing import CliRunner

import ppvae
from conftest import FAST
from ppvae.cli import cli
from ppvae.data import arrays
from ppvae.spec import registry


def _digits_table() -> np.ndarray:
    """scikit-learn's 8x8 digits as a real table: 1797 rows of 64 grey levels 0..16."""
    from sklearn.datasets import load_digits

    return load_digits().data.astype(np.float32)


def test_a_data_format_is_one_reader(tmp_path, monkeypatch):
    # The recipe: a reader that returns raw arrays, one entry in ppvae.data.arrays.READERS.
    def read_tsv(path, mmap_mode=None):
        return np.loadtxt(path, delimiter="\t", dtype=np.float32, ndmin=2), None

    monkeypatch.setitem(arrays.READERS, ".tsv", read_tsv)
    table = _digits_table()[:400]
    np.savetxt(tmp_path / "digits.tsv", table, delimiter="\t", fmt="%g")
    np.savetxt(tmp_path / "digits.csv", table, delimiter=",", fmt="%g")

    runs = {}
    for suffix in ("tsv", "csv"):
        runs[suffix] = ppvae.fit(
            out=tmp_path / f"run-{suffix}",
            data=str(tmp_path / f"digits.{suffix}"),
            latent_dim=2,
            epochs=1,
            pictures=False,
            overrides={**FAST, "data.scale": "minmax"},
        )  # grey levels 0..16
    # The shared preparation did the rest: the same scaling, split and checks as for CSV.
    np.testing.assert_array_equal(runs["tsv"].heldout(), runs["csv"].heldout())
    assert runs["tsv"].data_info["transform"] == runs["csv"].data_info["transform"]
    assert 0.0 <= runs["tsv"].heldout().min() and runs["tsv"].heldout().max() <= 1.0
    # Every command that reads data reads the new format, with the run's own preparation.
    res = CliRunner().invoke(
        cli,
        [
            "encode",
            str(tmp_path / "run-tsv"),
            "--data",
            str(tmp_path / "digits.tsv"),
            "--out",
            str(tmp_path / "codes.npz"),
        ],
    )
    assert res.exit_code == 0, res.output
    assert np.load(tmp_path / "codes.npz")["loc"].shape == (400, 2)
    # And the error for a file type nobody registered lists the new one.
    (tmp_path / "digits.dat").write_text("1\t2\n")
    res = CliRunner().invoke(cli, ["fit", "--data", str(tmp_path / "digits.dat"), "--out", str(tmp_path / "x")])
    assert res.exit_code != 0 and ".tsv" in res.output and "Traceback" not in res.output


TOY_BACKEND = '''
"""A backend called toy: the Pyro machinery under another name (the recipe's minimum)."""

from ppvae.backends import pyro as _pyro
from ppvae.spec.registry import components, register

NAME = "toy"
PACKAGES = ("numpy",)
adapt_portable = _pyro.adapt_portable

# Its own networks and guide families: here, the Pyro ones registered under this backend.
for _kind in ("encoder", "decoder", "guide"):
    for _name, _comp in components(_kind, "pyro").items():
        register(_kind, _name, backend=NAME)(_comp.factory)


def fit(cfg, dataset, run_dir, **kwargs):
    return _pyro.fit(cfg, dataset, run_dir, **kwargs)


def load(run_dir, cfg, event_shape, device="auto", which="last"):
    return _pyro.load(run_dir, cfg, event_shape, device, which)
'''


def test_a_backend_is_a_package_and_one_entry(tmp_path, monkeypatch, digits_npy):
    # The recipe: a package with the names of ppvae.backends.base.Backend, one entry in
    # ppvae.spec.registry.BACKENDS, its registered components, and its name in the
    # estimators it implements.
    import dataclasses

    from ppvae.backends.base import Backend
    from ppvae.inference import estimators

    (tmp_path / "toy_backend").mkdir()
    (tmp_path / "toy_backend" / "__init__.py").write_text(textwrap.dedent(TOY_BACKEND))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setitem(registry.BACKENDS, "toy", ("toy_backend", "toy-backend"))
    monkeypatch.delitem(sys.modules, "toy_backend", raising=False)
    # The toy's registrations go into a copy of the registry, dropped after the test.
    monkeypatch.setattr(registry, "_REGISTRY", {k: dict(v) for k, v in registry._REGISTRY.items()})
    for name, entry in estimators.ESTIMATORS.items():
        monkeypatch.setitem(estimators.ESTIMATORS, name, dataclasses.replace(entry, backends=(*entry.backends, "toy")))

    backend = registry.load_backend("toy")
    assert isinstance(backend, Backend)
    # The priors and likelihoods written once reach the new backend with no code of its own.
    for kind in ("prior", "likelihood"):
        written_once = set(registry.portable(kind))
        assert written_once and written_once <= set(registry.names(kind, "toy")), kind

    run = ppvae.fit(
        out=tmp_path / "run",
        backend="toy",
        data=str(digits_npy),
        latent_dim=2,
        epochs=1,
        pictures=False,
        overrides=FAST,
    )
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["versions"]["numpy"] == np.__version__ and "torch" not in summary["versions"]
    assert np.isfinite(run.evaluate(num_samples=5)["heldout_log_px"])
    # The listing and the backend choices know it.
    res = CliRunner().invoke(cli, ["models", "--json"])
    assert res.exit_code == 0, res.output
    listed = {c["name"]: c for c in json.loads(res.output)["components"]["prior"]}
    assert "toy" in listed["normal"]["backends"]
    res = CliRunner().invoke(cli, ["evaluate", str(tmp_path / "run"), "-k", "5", "--json"])
    assert res.exit_code == 0, res.output
    assert (
        pytest.approx(json.loads(res.output)["heldout_elbo"], rel=1e-5) == run.evaluate(num_samples=5)["heldout_elbo"]
    )
