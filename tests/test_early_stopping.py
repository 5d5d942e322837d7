"""Early stopping and the best checkpoint, both chosen on the validation split."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest
from click.testing import CliRunner

import ppvae
from conftest import FAST
from ppvae.cli import cli
from ppvae.errors import UsageError
from ppvae.inference.selection import best_epoch, is_new_best, should_stop

SMALL = {**FAST, "model.encoder_options.hidden": [16], "model.decoder_options.hidden": [16], "train.batch_size": 64}


def _records(values):
    return [{"epoch": e, "validation_elbo": v} for e, v in enumerate(values, 1)]


def test_the_choice_is_the_last_gain_of_more_than_min_delta():
    records = _records([-120.0, -110.0, -110.2, -109.95, -109.0])
    assert best_epoch(records) == 5
    assert best_epoch(records[:4]) == 4
    assert best_epoch(records[:4], min_delta=0.1) == 2  # -109.95 gains only 0.05 on -110
    assert is_new_best(records[:2]) and not is_new_best(records[:3])
    assert not should_stop(records[:3], patience=2) and should_stop(records[:4], patience=2, min_delta=0.1)
    assert not should_stop(records, patience=0)  # 0: never
    # A non-finite validation ELBO is never the best; no validation split: no choice at all.
    assert best_epoch(_records([-120.0, math.nan, -130.0])) == 1
    assert best_epoch([{"epoch": 1, "heldout_elbo": -100.0}]) is None
    assert not should_stop([{"epoch": 9, "heldout_elbo": -100.0}], patience=1)


def _fit(tmp_path, name, backend, digits_npy, **overrides):
    return ppvae.fit(
        data=str(digits_npy),
        out=tmp_path / name,
        backend=backend,
        latent_dim=2,
        overrides={**SMALL, "data.validation_fraction": 0.2, **overrides},
        pictures=False,
    )


@pytest.mark.parametrize("backend", ["pyro", pytest.param("numpyro", marks=pytest.mark.slow)])
def test_training_stops_after_patience_and_the_best_epoch_is_what_is_reported(tmp_path, digits_npy, backend):
    # min_delta larger than any gain: epoch 1 stays the best, and patience 2 stops after epoch 3.
    run = _fit(
        tmp_path,
        "stopped",
        backend,
        digits_npy,
        **{"train.epochs": 20, "train.early_stopping_patience": 2, "train.early_stopping_min_delta": 1e6},
    )
    assert [r["epoch"] for r in run.metrics()] == [1, 2, 3]
    assert run.summary["stopped_early"] and run.summary["checkpoint"] == {"which": "best", "epoch": 1}
    assert run.checkpoint == "best" and (run.path / "checkpoint-best.safetensors").is_file()
    # The best checkpoint holds exactly the weights after epoch 1: a one-epoch run of the same seed.
    one = _fit(tmp_path, "one", backend, digits_npy, **{"train.epochs": 1})
    x = one.heldout()[:16]
    best = ppvae.load(run.path)
    assert best.checkpoint == "best"
    np.testing.assert_array_equal(best.encode(x)[0], one.encode(x)[0])
    last = ppvae.load(run.path, checkpoint="last")
    assert not np.array_equal(last.encode(x)[0], one.encode(x)[0])
    # The summary's figures are the best checkpoint's (evaluated with the same K and seed).
    assert run.summary["evaluation"]["heldout_elbo"] == pytest.approx(one.summary["evaluation"]["heldout_elbo"])
    # A resumed run that stopped early stays stopped, even when asked for more epochs.
    again = ppvae.fit(resume=run.path, epochs=30, pictures=False)
    assert len(again.metrics()) == 3


def test_a_run_interrupted_between_improvements_makes_the_same_choices(tmp_path, digits_npy):
    settings = {"train.epochs": 6, "train.early_stopping_patience": 1, "train.early_stopping_min_delta": 2.0}
    straight = _fit(tmp_path, "straight", "pyro", digits_npy, **settings)
    steps_per_epoch = straight.metrics()[0]["step"]
    ppvae.fit(
        data=str(digits_npy),
        out=tmp_path / "resumed",
        latent_dim=2,
        overrides={**SMALL, "data.validation_fraction": 0.2, **settings},
        pictures=False,
        stop_after_steps=steps_per_epoch + 2,  # inside epoch 2
    )
    resumed = ppvae.fit(resume=tmp_path / "resumed", pictures=False)
    strip = lambda records: [{k: v for k, v in r.items() if k not in ("seconds", "images_per_s")} for r in records]  # noqa: E731
    assert strip(resumed.metrics()) == strip(straight.metrics())
    assert resumed.summary["checkpoint"] == straight.summary["checkpoint"]
    assert resumed.summary["stopped_early"] == straight.summary["stopped_early"]


def test_without_a_validation_split_there_is_no_best_checkpoint(tiny_run):
    run = ppvae.load(tiny_run)
    assert run.checkpoint == "last" and not (tiny_run / "checkpoint-best.safetensors").exists()
    assert run.summary["checkpoint"]["which"] == "last"
    with pytest.raises(UsageError, match="has no best checkpoint .* use --checkpoint last"):
        ppvae.load(tiny_run, checkpoint="best")
    result = CliRunner().invoke(cli, ["evaluate", str(tiny_run), "--checkpoint", "best", "--num-samples", "5"])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        f"Error: run folder {str(tiny_run)!r} has no best checkpoint (it was trained without a validation "
        "split: data.validation_fraction); use --checkpoint last"
    ]


def test_early_stopping_without_a_validation_split_is_refused_in_one_line(tmp_path):
    result = CliRunner().invoke(cli, ["fit", "--early-stopping-patience", "5", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        "Error: train.early_stopping_patience needs a validation split to watch: set data.validation_fraction "
        "(e.g. --validation-fraction 0.1); the held-out split is kept for the final figures"
    ]
    assert not (tmp_path / "r").exists()
    for option, value, key in (
        ("--early-stopping-patience", "-1", "train.early_stopping_patience"),
        ("--set", "train.early_stopping_min_delta=-1", "train.early_stopping_min_delta"),
    ):
        result = CliRunner().invoke(cli, ["fit", option, value, "--out", str(tmp_path / "r")])
        assert result.exit_code == 2 and result.output.startswith(f"Error: {key} must be"), result.output


@pytest.mark.parametrize("command", ["evaluate", "sample", "encode", "decode", "reconstruct", "score", "diagnose"])
def test_every_command_that_opens_a_run_takes_checkpoint(command):
    result = CliRunner().invoke(cli, [command, "--help"])
    assert "--checkpoint [best|last]" in result.output
    result = CliRunner().invoke(cli, ["plot", "latent", "--help"])
    assert "--checkpoint [best|last]" in result.output


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="torchrun's gloo on Linux")
def test_two_processes_stop_together_on_rank_0s_choice(tmp_path, digits_npy):
    # Only rank 0 computes the validation ELBO; a rank that did not hear its choice would wait
    # for its partner's next step forever (the timeout below would end the test).
    cmd = [sys.executable, "-m", "ppvae", "fit", "--num-processes", "2", "--data", str(digits_npy)]
    cmd += ["--epochs", "20", "--validation-fraction", "0.2", "--early-stopping-patience", "1", "--latent-dim", "2"]
    cmd += ["--device", "cpu", "-q", "--out", str(tmp_path / "run")]
    for key, value in {**SMALL, "train.early_stopping_min_delta": 1e6}.items():
        cmd += ["--set", f"{key}={json.dumps(value)}"]
    done = subprocess.run(
        cmd, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert (
        summary["epochs"] == 2 and summary["stopped_early"] and summary["checkpoint"] == {"which": "best", "epoch": 1}
    )
