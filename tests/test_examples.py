"""Every example script runs in its tiny mode."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import numpy as np
import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_custom_prior_runs_on_both_backends(tmp_path):
    pytest.importorskip("numpyro")
    results = load("custom_prior").main(["--tiny", "--out", str(tmp_path)])
    assert set(results) == {"pyro", "numpyro"}
    assert all(math.isfinite(r["heldout_log_px"]) for r in results.values())
    assert (tmp_path / "numpyro" / "samples.png").is_file()


SCRIPTS = sorted(p.stem for p in EXAMPLES.glob("*.py") if not p.stem.startswith("_"))


@pytest.mark.parametrize("name", SCRIPTS)
def test_every_example_says_what_it_shows_and_has_tiny_and_out(name, capsys):
    module = load(name)
    assert module.__doc__ and f"examples/{name}.py" in module.__doc__, "the docstring says how to run it"
    with pytest.raises(SystemExit) as stop:
        module.main(["--help"])
    assert stop.value.code == 0
    usage = capsys.readouterr().out
    assert "--tiny" in usage and "--out" in usage


def test_conv_2d_latent_compresses_to_two_numbers(tmp_path):
    result = load("conv_2d_latent").main(["--tiny", "--out", str(tmp_path)])
    assert result["loc"].shape == (60, 2) and np.isfinite(result["loc"]).all()  # 300 digits, 20 % held out
    assert math.isfinite(result["evaluation"]["heldout_log_px"])
    codes = np.load(tmp_path / "codes.npz")
    assert codes["loc"].shape == codes["scale"].shape == (60, 2) and (codes["scale"] > 0).all()
    for picture in ("conv-reconstructions.png", "conv-samples.png", "conv-latent.png"):
        assert (tmp_path / picture).stat().st_size > 0


def test_dense_200_sums_versus_averages_the_kl(tmp_path):
    results = load("dense_200").main(["--tiny", "--out", str(tmp_path)])
    assert [r["beta"] for r in results.values()] == [1.0, 1.0 / 20]  # tiny mode: a 20-D latent
    assert all(math.isfinite(r["heldout_log_px"]) and len(r["kl_per_dim"]) == 20 for r in results.values())
    for picture in ("dense-kl-per-dim.png", "dense-reconstructions.png", "dense-samples.png"):
        assert (tmp_path / picture).stat().st_size > 0


def test_mlp_400_200_scores_with_growing_k(tmp_path):
    result = load("mlp_400_200").main(["--tiny", "--out", str(tmp_path)])
    assert [r["num_samples"] for r in result["bounds"]] == [1, 10, 20]  # tiny mode evaluates with K = 20
    assert len(result["neg_log_px"]) == 60 and np.isfinite(result["neg_log_px"]).all()
    for picture in ("mlp-iwae-vs-k.png", "mlp-reconstructions.png", "mlp-samples.png", "mlp-least-likely.png"):
        assert (tmp_path / picture).stat().st_size > 0


def test_mlp_mse_learns_the_gaussian_scale(tmp_path):
    results = load("mlp_mse").main(["--tiny", "--out", str(tmp_path)])
    assert results["fixed σ = 1"]["sigma"] == 1.0
    assert results["learned σ"]["sigma"] != 1.0  # trained away from its initial value
    assert all(math.isfinite(r["train_mse"]) and math.isfinite(r["median_log_px"]) for r in results.values())
    assert (tmp_path / "mse-reconstructions.png").is_file() and (tmp_path / "mse-samples.png").is_file()


def test_beta_vae_trains_beta_1_and_the_spec_beta(tmp_path):
    results = load("beta_vae").main(["--tiny", "--out", str(tmp_path)])
    assert [r["beta"] for r in results.values()] == [1.0, 4.0]
    assert all(math.isfinite(r["heldout_elbo"]) for r in results.values())
    for picture in ("beta-kl-per-dim.png", "beta-reconstructions.png", "beta-samples.png"):
        assert (tmp_path / picture).stat().st_size > 0


@pytest.mark.slow
def test_custom_count_likelihood_on_both_backends_and_builtins(tmp_path):
    pytest.importorskip("numpyro")
    results = load("custom_count_likelihood").main(["--tiny", "--out", str(tmp_path)])
    assert {(r["likelihood"], r["backend"]) for r in results.values()} == {
        ("grey_binomial", "pyro"),
        ("grey_binomial", "numpyro"),
        ("poisson", "pyro"),
        ("negative_binomial", "pyro"),
    }
    assert all(math.isfinite(r["heldout_log_px"]) for r in results.values())
    assert (tmp_path / "counts-reconstructions.png").is_file() and (tmp_path / "counts-samples.png").is_file()


@pytest.mark.slow
def test_backend_comparison_tabulates_both_backends(tmp_path):
    pytest.importorskip("numpyro")
    result = load("backend_comparison").main(["--tiny", "--out", str(tmp_path)])
    assert [row["backend"] for row in result.rows] == ["pyro", "numpyro"]
    assert all(math.isfinite(row["metrics"]["heldout_log_px"]["mean"]) for row in result.rows)
    assert result.plot_path.is_file() and result.markdown_path.is_file()


def test_anomaly_detection_scores_nines_against_zero_to_eight(tmp_path):
    result = load("anomaly_detection").main(["--tiny", "--out", str(tmp_path)])
    assert result["num_anomalous"] == 50 and result["num_normal"] == 100  # tiny mode's test set
    assert set(result["roc_auc"]) == {"neg_elbo", "neg_log_px", "neg_log_latent_density"}
    assert all(0.0 <= v <= 1.0 for v in result["roc_auc"].values())
    rows = (tmp_path / "scores.csv").read_text().splitlines()
    assert len(rows) == 151 and rows[0].startswith("index,label,anomalous,neg_elbo,neg_log_px")
    for picture in ("scores.png", "latent.png"):
        assert (tmp_path / picture).stat().st_size > 0
