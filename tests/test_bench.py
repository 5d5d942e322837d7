"""The benchmark suite's quick mode runs end to end and writes what the full mode writes.

One subprocess (the suite itself starts one per configuration): tiny network, subsets of
the protocol's data, two epochs. The numbers are not checked (they are measurements); the
JSON's fields, the ratios' presence and that RESULTS.md is left alone are.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SUITE = ROOT / "bench" / "suite.py"


def run_suite(*args, timeout=300):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    return subprocess.run(
        [sys.executable, str(SUITE), *map(str, args)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env=env,
        timeout=timeout,
    )


@pytest.mark.slow
def test_quick_mode_writes_the_json_and_leaves_results_md_alone(tmp_path):
    results_md = (ROOT / "bench" / "RESULTS.md").read_bytes()
    proc = run_suite("--quick", "--out", tmp_path, "--backends", "pyro,numpyro", "--estimators", "meanfield")
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads((tmp_path / "suite.json").read_text())
    assert result["protocol"] == "MNIST-10k v1" and result["mode"] == "quick"
    assert result["device"] == "cpu" and result["gpu"]
    assert {"platform", "cpu_count"} <= set(result["machine"])
    assert {"torch", "pyro-ppl", "jax", "numpyro"} <= set(result["versions"])
    assert len(result["load_average_start"]) == 3 and len(result["load_average_end"]) == 3
    configs = {(c["backend"], c["estimator"]): c for c in result["configs"]}
    assert set(configs) == {("pyro", "meanfield"), ("numpyro", "meanfield")}
    for (backend, estimator), c in configs.items():
        assert c["num_particles"] == 1
        assert c["speed"]["ppvae"]["seconds_per_epoch"] > 0 and c["speed"]["ppvae"]["images_per_s"] > 0
        assert len(c["speed"]["ppvae"]["epoch_seconds"]) == c["timed_epochs"] == 1
        assert c["peak_rss_training_mib"] > 0
        small = c["evaluation"]["20"]
        assert small["log_px"] < 0 and small["seconds"] > 0 and small["peak_rss_added_mib"] >= 0
        assert "50" in c["evaluation"]  # the larger K for the default estimator
        assert small["log_px"] >= c["heldout_elbo"] - 5.0  # the bound sits above the ELBO (up to noise)
    # The Pyro row is timed beside the hand-written PyTorch loop.
    c = configs[("pyro", "meanfield")]
    assert c["ratio"]["wall"] > 0 and c["ratio"]["cpu"] > 0 and c["hand_heldout_elbo"] < 0
    assert "analytic KL" in c["hand_written"]
    assert (tmp_path / "suite.md").read_text().count("| pyro |") == 2
    assert (ROOT / "bench" / "RESULTS.md").read_bytes() == results_md


def test_quick_mode_needs_a_scratch_folder_and_names_are_checked():
    proc = run_suite("--quick", timeout=60)
    assert proc.returncode != 0 and "--out" in proc.stderr and "Traceback" not in proc.stderr
    proc = run_suite("--quick", "--out", "/tmp/unused", "--estimators", "elbo", timeout=60)
    assert proc.returncode != 0 and "meanfield" in proc.stderr and "Traceback" not in proc.stderr


@pytest.mark.parametrize("estimator", ["meanfield", "trace", "iwae"])
def test_the_hand_written_loop_computes_ppvaes_objective(estimator):
    # Same weights, batch and noise: the yardstick trains the same function as ppvae.
    sys.path.insert(0, str(ROOT / "bench"))
    import torch
    from handwritten_torch import same_function_check

    from ppvae.backends.pyro import build_vae
    from ppvae.spec.config import ModelSpec

    torch.manual_seed(0)
    vae = build_vae(ModelSpec(latent_dim=20), (28, 28), dataset_size=8000, register_params=False)
    xb = (torch.rand(32, 28, 28) < 0.3).float()
    # float32 sums of 784 pixels near 540 nats: rounding differs by ~1e-4 at most.
    assert same_function_check(vae, xb, estimator) < 1e-3
