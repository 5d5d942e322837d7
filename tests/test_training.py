"""Training: reproducibility, resume, signals, metrics identities, devices."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

import ppvae
from ppvae.errors import CheckpointError
from ppvae.inference.schedules import beta_at
from ppvae.spec.config import TrainSpec

from conftest import FAST

TIMING = {"seconds", "images_per_s"}


def fit_small(out, digits, **extra):
    overrides = {
        **FAST,
        "data.source": str(digits),
        "model.latent_dim": 2,
        "train.epochs": 2,
        "train.batch_size": 64,
        **extra,
    }
    return ppvae.fit(out=out, overrides=overrides, pictures=False)


def strip_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def weights(run_dir):
    return {k: v for k, v in load_file(str(run_dir / "checkpoint.safetensors")).items() if k.startswith("model.")}


def test_same_seed_and_config_give_identical_metrics(tmp_path, digits_npy):
    a = fit_small(tmp_path / "a", digits_npy)
    b = fit_small(tmp_path / "b", digits_npy)
    assert strip_timing(a.metrics()) == strip_timing(b.metrics())
    assert a.summary["evaluation"] == b.summary["evaluation"]
    wa, wb = weights(a.path), weights(b.path)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    c = fit_small(tmp_path / "c", digits_npy, **{"train.seed": 1})
    assert strip_timing(c.metrics()) != strip_timing(a.metrics())


@pytest.mark.parametrize("elbo", ["meanfield", "trace"])
def test_metrics_identity_loss_equals_reconstruction_plus_beta_kl(tmp_path, digits_npy, elbo):
    run = fit_small(tmp_path / "r", digits_npy, **{"train.beta": 0.5, "train.elbo": elbo})
    records = [json.loads(line) for line in (run.path / "metrics.jsonl").read_text().splitlines()]
    assert len(records) == 2
    required = {"epoch", "step", "loss", "reconstruction", "kl", "beta", "heldout_elbo", "seconds", "images_per_s"}
    for r in records:
        assert required <= set(r)
        assert r["beta"] == 0.5
        # float32 terms accumulated in float64: identical up to float32 rounding.
        assert r["loss"] == pytest.approx(r["reconstruction"] + 0.5 * r["kl"], rel=1e-6)


@pytest.mark.parametrize("stop_at", [5, 9, 12])  # mid-epoch, end of epoch 1 (9 batches), epoch 2
def test_interrupted_and_resumed_run_ends_with_the_same_parameters(tmp_path, digits_npy, stop_at):
    # 480 training digits at batch 64: 8 batches per epoch.
    whole = fit_small(tmp_path / "whole", digits_npy)
    overrides = {
        **FAST,
        "data.source": str(digits_npy),
        "model.latent_dim": 2,
        "train.epochs": 2,
        "train.batch_size": 64,
    }
    ppvae.fit(out=tmp_path / "part", overrides=overrides, stop_after_steps=stop_at, pictures=False)
    resumed = ppvae.fit(resume=tmp_path / "part", pictures=False)
    wa, wb = weights(whole.path), weights(resumed.path)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)
    assert strip_timing(resumed.metrics()) == strip_timing(whole.metrics())


def test_resume_can_extend_training(tmp_path, digits_npy):
    fit_small(tmp_path / "r", digits_npy)
    run = ppvae.fit(resume=tmp_path / "r", epochs=3, pictures=False)
    assert [r["epoch"] for r in run.metrics()] == [1, 2, 3]


def test_sigterm_saves_a_checkpoint_and_resume_matches_an_uninterrupted_run(tmp_path, digits_npy):
    args = ["--data", str(digits_npy), "--latent-dim", "2", "--epochs", "6", "--batch-size", "64", "-q"]
    for key, value in FAST.items():
        args += ["--set", f"{key}={json.dumps(value)}"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ppvae", "fit", *args, "--out", str(tmp_path / "cut")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    metrics = tmp_path / "cut" / "metrics.jsonl"
    deadline = time.time() + 120
    while not metrics.exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.02)
    assert proc.poll() is None, "training finished before it could be interrupted"
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    assert "SIGTERM" in err and "--resume" in err and "Traceback" not in err
    cut_meta = json.loads(
        __import__("safetensors")
        .safe_open(str(tmp_path / "cut" / "checkpoint.safetensors"), framework="pt")
        .metadata()["meta"]
    )
    assert 1 <= cut_meta["epoch"] < 6
    done = subprocess.run(
        [sys.executable, "-m", "ppvae", "fit", "--resume", str(tmp_path / "cut"), "-q"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    whole = subprocess.run(
        [sys.executable, "-m", "ppvae", "fit", *args, "--out", str(tmp_path / "whole")],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
    )
    assert whole.returncode == 0, whole.stderr
    wa, wb = weights(tmp_path / "whole"), weights(tmp_path / "cut")
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_checkpoint_records_optimizer_and_rng_state(tmp_path, digits_npy):
    run = fit_small(tmp_path / "r", digits_npy)
    tensors = load_file(str(run.path / "checkpoint.safetensors"))
    assert any(k.startswith("optim.") and k.endswith("exp_avg") for k in tensors)
    assert "rng.torch_cpu" in tensors
    from ppvae.backends.pyro import checkpoint

    _, optim_state, rng, meta = checkpoint.load(run.path / "checkpoint.safetensors")
    assert meta["step"] == run.metrics()[-1]["step"] and meta["epoch"] == 2
    assert optim_state["param_groups"][0]["lr"] == pytest.approx(1e-3)


def test_a_hostile_checkpoint_is_never_unpickled(tmp_path, tiny_run):
    import pickle

    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    (tiny_run / "checkpoint.safetensors").write_bytes(pickle.dumps(Evil()))
    with pytest.raises(CheckpointError, match="not a readable ppvae checkpoint"):
        ppvae.load(tiny_run).sample(2)
    assert not marker.exists()
    # torch.save's zip-pickle format is refused the same way.
    torch.save({"evil": Evil()}, tiny_run / "checkpoint.safetensors")
    with pytest.raises(CheckpointError):
        ppvae.load(tiny_run).sample(2)
    assert not marker.exists()


def test_run_api_round_trip(tiny_run):
    run = ppvae.load(tiny_run)
    x = run.heldout()[:10]
    loc, scale = run.encode(x)
    assert loc.shape == (10, 2) and (scale > 0).all()
    recon = run.reconstruct(x)
    assert recon.shape == x.shape and recon.min() >= 0 and recon.max() <= 1
    np.testing.assert_allclose(run.decode(loc), recon, rtol=1e-5, atol=1e-6)
    s1, s2 = run.sample(4, seed=3), run.sample(4, seed=3)
    np.testing.assert_array_equal(s1, s2)
    ev = run.evaluate(num_samples=10)
    assert {
        "heldout_elbo",
        "heldout_log_px",
        "num_samples",
        "reconstruction",
        "kl",
        "active_units",
        "bits_per_dim",
    } <= set(ev)
    assert ev["heldout_log_px"] >= ev["heldout_elbo"] - 5 * ev["heldout_log_px_stderr"]


def test_beta_schedules_are_positive_and_reach_beta():
    lin = TrainSpec(beta=2.0, beta_schedule="linear", warmup_steps=10)
    values = [beta_at(s, lin) for s in range(20)]
    assert values[0] == pytest.approx(0.2) and values[9] == 2.0 and values[-1] == 2.0
    assert all(b > 0 for b in values) and values == sorted(values)
    cyc = TrainSpec(beta=1.0, beta_schedule="cyclical", cycle_steps=8)
    values = [beta_at(s, cyc) for s in range(16)]
    assert values[:8] == values[8:] and min(values) == pytest.approx(0.25) and max(values) == 1.0
    assert beta_at(123, TrainSpec(beta=0.7)) == 0.7


def test_linear_warmup_is_recorded_per_epoch(tmp_path, digits_npy):
    run = fit_small(tmp_path / "w", digits_npy, **{"train.beta_schedule": "linear", "train.warmup_steps": 12})
    betas = [r["beta"] for r in run.metrics()]
    assert betas[0] == pytest.approx(8 / 12) and betas[1] == 1.0


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_training_on_cuda_matches_cpu_closely(tmp_path, digits_npy):
    gpu = fit_small(tmp_path / "gpu", digits_npy, **{"train.device": "cuda"})
    cpu = fit_small(tmp_path / "cpu", digits_npy)
    assert gpu.summary["device"].startswith("cuda")
    # Different RNG streams on the two devices: compare quality, not bits.
    assert gpu.metrics()[-1]["heldout_elbo"] == pytest.approx(cpu.metrics()[-1]["heldout_elbo"], rel=0.1)
    assert ppvae.load(gpu.path, device="cuda").sample(4).shape == (4, 28, 28)
