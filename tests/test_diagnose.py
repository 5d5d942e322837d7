"""`ppvae diagnose`: InferenceData export, PSIS k-hat, gaps, collapse, NUTS, on real runs."""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
from click.testing import CliRunner

import ppvae
from ppvae.inference.checkpoints import load_arrays, save_arrays
from ppvae.cli import cli
from ppvae.analysis.diagnostics import diagnose
from ppvae.analysis.diagnostics.arviz_io import read_netcdf

from conftest import FAST

pytest.importorskip("numpyro")


@pytest.fixture(scope="module")
def ppca_run(tmp_path_factory):
    """Probabilistic PCA fitted by the Pyro backend: its posterior is Gaussian, q can be exact."""
    root = tmp_path_factory.mktemp("ppca")
    rng = np.random.default_rng(0)
    W, b = rng.normal(size=(6, 2)), rng.normal(size=6)
    x = (rng.normal(size=(1500, 2)) @ W.T + b + 0.5 * rng.normal(size=(1500, 6))).astype(np.float32)
    np.save(root / "ppca.npy", x)
    ppvae.fit(
        out=root / "run",
        data=str(root / "ppca.npy"),
        likelihood="normal",
        decoder="linear",
        latent_dim=2,
        epochs=40,
        batch_size=256,
        lr=0.02,
        pictures=False,
        overrides={"model.encoder_options.hidden": [], "train.eval_num_samples": 10, "train.device": "cpu"},
    )
    return root / "run"


def shrink_encoder_scales(run_dir, factor=10.0):
    """Make q(z|x) 10x too narrow: a deliberately poor encoder (weights edited in the checkpoint)."""
    import torch

    arrays, meta = load_arrays(run_dir / "checkpoint.safetensors")
    run = ppvae.load(run_dir)
    _, scale = run.encode(run.heldout()[:200])
    target = scale.mean(0) / factor
    arrays["model.encoder.head.raw_scale.weight"] = np.zeros_like(arrays["model.encoder.head.raw_scale.weight"])
    # softplus^{-1}(s - 1e-5): the encoder's scale is softplus(raw) + 1e-5.
    raw = torch.log(torch.expm1(torch.as_tensor(target - 1e-5, dtype=torch.float64))).numpy()
    arrays["model.encoder.head.raw_scale.bias"] = raw.astype(np.float32)
    save_arrays(run_dir / "checkpoint.safetensors", arrays, meta)


def test_a_well_fit_q_on_ppca_has_small_khat_and_gaps(ppca_run, tmp_path):
    d = diagnose(ppvae.load(ppca_run), num_points=60, num_draws=500, gap_points=10, out=tmp_path / "d")
    psis = d.numbers["psis"]
    assert psis["share_below_0.5"] > 0.5  # k-hat < 0.5 for most points
    gaps = d.numbers["gaps"]
    # A linear encoder can represent the exact posterior: both gaps near zero (nats per point).
    assert abs(np.mean(gaps["amortization_gap"])) < 0.2
    assert abs(np.mean(gaps["approximation_gap"])) < 0.2
    for name in ("report.md", "khat.png", "kl_per_dim.png", "gaps.png", "inference_data.nc", "diagnostics.json"):
        assert (tmp_path / "d" / name).is_file()
    report = (tmp_path / "d" / "report.md").read_text()
    assert "reliable importance proposal" in report or "usable everywhere" in report


def test_a_poor_encoder_is_flagged(ppca_run, tmp_path):
    poor = tmp_path / "poor"
    shutil.copytree(ppca_run, poor)
    shrink_encoder_scales(poor)
    d = diagnose(ppvae.load(poor), num_points=60, num_draws=500, gap_points=10, out=tmp_path / "d")
    assert d.numbers["psis"]["share_above_0.7"] > 0.5  # most k-hat > 0.7
    gaps = d.numbers["gaps"]
    assert np.mean(gaps["amortization_gap"]) > 1.0  # nats: the optimized q recovers what the encoder lost
    assert abs(np.mean(gaps["approximation_gap"])) < 0.2
    assert "unreliable importance proposal" in (tmp_path / "d" / "report.md").read_text()


def test_nuts_reference_through_diagnose(ppca_run, tmp_path):
    d = diagnose(
        ppvae.load(ppca_run),
        num_points=3,
        num_draws=200,
        gap_points=0,
        reference="nuts",
        reference_points=2,
        out=tmp_path / "d",
    )
    ref = d.numbers["reference"]
    assert ref["chains"] >= 4 and ref["max_rhat"] < 1.01
    assert (tmp_path / "d" / "q_vs_nuts.png").is_file()
    assert "Reference posterior by NUTS" in (tmp_path / "d" / "report.md").read_text()


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_inference_data_round_trips_through_arviz(tmp_path, digits_npy, backend):
    run = ppvae.fit(
        out=tmp_path / "run",
        backend=backend,
        latent_dim=2,
        epochs=1,
        data=str(digits_npy),
        pictures=False,
        overrides={**FAST, "train.batch_size": 100},
    )
    d = diagnose(run, num_points=12, num_draws=40, gap_points=0, out=tmp_path / "d")
    idata = read_netcdf(tmp_path / "d" / "inference_data.nc")
    for group in ("posterior", "posterior_predictive", "observed_data", "log_likelihood", "sample_stats"):
        assert hasattr(idata, group), group
    assert idata.posterior["z"].dims == ("chain", "draw", "point", "latent")
    assert idata.posterior["z"].shape == (1, 40, 12, 2)
    assert idata.log_likelihood["x"].dims == ("chain", "draw", "point")
    assert idata.posterior_predictive["x"].dims[:3] == ("chain", "draw", "point")
    assert idata.observed_data["x"].shape == (12, 28, 28)
    lw = idata.sample_stats["log_importance_weight"].values[0]
    assert np.isfinite(lw).all()
    assert len(d.numbers["psis"]["khat"]) == 12
    assert idata.attrs["backend"] == backend


def test_cli_diagnose_json_and_bad_input(tiny_run):
    runner = CliRunner()
    result = runner.invoke(
        cli, ["diagnose", str(tiny_run), "-n", "10", "-s", "50", "--gap-points", "0", "--json", "-q"]
    )
    assert result.exit_code == 0, result.output
    numbers = json.loads(result.stdout)
    assert numbers["num_points"] == 10 and math.isfinite(numbers["psis"]["median"])
    bad = runner.invoke(cli, ["diagnose", str(tiny_run), "-s", "5"])
    assert bad.exit_code == 2 and "at least 20" in bad.stderr and "Traceback" not in bad.output
    missing = runner.invoke(cli, ["diagnose", str(tiny_run / "nope")])
    assert missing.exit_code == 1 and "does not exist" in missing.stderr


def test_a_guide_without_per_dimension_kl_says_so(tmp_path, digits_npy):
    """A low-rank q has no per-dimension KL: no NaN bar chart, and the report says why."""
    run = ppvae.fit(
        out=tmp_path / "run",
        guide="lowrank",
        latent_dim=3,
        epochs=1,
        data=str(digits_npy),
        pictures=False,
        overrides={**FAST, "train.device": "cpu"},
    )
    diagnose(run, num_points=10, num_draws=20, gap_points=0, out=tmp_path / "d")
    report = (tmp_path / "d" / "report.md").read_text()
    assert "does not split into per-dimension terms" in report and "nan" not in report.lower()
    assert not (tmp_path / "d" / "kl_per_dim.png").exists()
