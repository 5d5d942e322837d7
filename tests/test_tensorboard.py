"""TensorBoard event files of the epoch records, on both backends (train.log = "tensorboard")."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest
from click.testing import CliRunner

import ppvae
from conftest import FAST
from ppvae.cli import cli
from ppvae.runs import tensorboard

pytest.importorskip("tensorboardX")


def read_scalars(folder: Path) -> dict[str, dict[int, float]]:
    """Every scalar of every event file in ``folder``: tag -> {epoch: value} (the TFRecord framing read by hand)."""
    from tensorboardX.proto import event_pb2

    scalars: dict[str, dict[int, float]] = {}
    for path in sorted(folder.glob("events.out.tfevents.*")):
        data, i = path.read_bytes(), 0
        while i < len(data):
            (length,) = struct.unpack("<Q", data[i : i + 8])  # length, its CRC, the record, its CRC
            event = event_pb2.Event()
            event.ParseFromString(data[i + 12 : i + 12 + length])
            i += 12 + length + 4
            for value in event.summary.value:
                scalars.setdefault(value.tag, {})[event.step] = value.simple_value
    return scalars


@pytest.mark.parametrize("backend", ["pyro", pytest.param("numpyro", marks=pytest.mark.slow)])
def test_every_epoch_record_becomes_scalars_by_epoch(tmp_path, digits_npy, backend):
    run = ppvae.fit(
        data=str(digits_npy),
        out=tmp_path / "run",
        backend=backend,
        latent_dim=2,
        epochs=2,
        log="tensorboard",
        validation_fraction=0.2,
        overrides={**FAST, "train.eval_num_samples": 2},
        pictures=False,
    )
    scalars = read_scalars(run.path / "tensorboard")
    records = run.metrics()
    for tag in (
        "train/loss",
        "train/elbo",
        "validation/elbo",
        "kl/z",
        "validation/kl",
        "validation/active_units",
        "optimizer/lr",
        "optimizer/grad_norm",
    ):
        assert sorted(scalars[tag]) == [1, 2], tag
    for r in records:
        e = r["epoch"]
        assert scalars["train/loss"][e] == pytest.approx(r["loss"], rel=1e-6)  # stored as float32
        assert scalars["validation/elbo"][e] == pytest.approx(r["validation_elbo"], rel=1e-6)
        assert scalars["train/elbo"][e] == pytest.approx(-(r["reconstruction"] + r["kl"]), rel=1e-6)
        assert scalars["optimizer/grad_norm"][e] == pytest.approx(r["grad_norm"], rel=1e-6) and r["grad_norm"] > 0
        assert scalars["validation/active_units"][e] == r["validation_active_units"] <= 2
        assert scalars["optimizer/lr"][e] == pytest.approx(1e-3)
    # A resume writes only the epochs it trains, in a file of its own.
    resumed = ppvae.fit(resume=run.path, epochs=3, pictures=False)
    scalars = read_scalars(resumed.path / "tensorboard")
    assert sorted(scalars["train/loss"]) == [1, 2, 3]
    assert len(list((run.path / "tensorboard").glob("events.out.tfevents.*"))) == 2


def test_without_log_no_event_files_and_no_gradient_norm(tiny_run):
    assert not (tiny_run / "tensorboard").exists()
    assert "grad_norm" not in ppvae.load(tiny_run).metrics()[0]


def test_tags_name_the_split_and_the_latent_site():
    assert [tensorboard.tag(k) for k in ("loss", "validation_elbo", "heldout_kl", "kl", "kl_z2", "grad_norm")] == [
        "train/loss",
        "validation/elbo",
        "heldout/kl",
        "kl/z",
        "kl/z2",
        "optimizer/grad_norm",
    ]


def test_log_tensorboard_without_the_extra_is_one_line_and_writes_nothing(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "tensorboardX" else real(name, *a)
    )
    result = CliRunner().invoke(cli, ["fit", "--log", "tensorboard", "--out", str(tmp_path / "r")])
    assert result.exit_code == 2
    assert result.output.strip().splitlines() == [
        'Error: train.log = "tensorboard" writes TensorBoard event files with tensorboardX, which is not '
        "installed: pip install 'ppvae[tensorboard]' (or train without --log tensorboard)"
    ]
    assert not (tmp_path / "r").exists()


def test_a_resume_in_the_same_second_keeps_the_earlier_sessions_file(tmp_path, monkeypatch):
    import time

    monkeypatch.setattr(time, "time", lambda: 1_800_000_000.0)  # the second tensorboardX names its files by
    first = tensorboard.TensorBoardLog(tmp_path)
    first([{"epoch": 1, "loss": 3.0}])
    first.close()
    second = tensorboard.TensorBoardLog(tmp_path, logged=1)
    second([{"epoch": 1, "loss": 3.0}, {"epoch": 2, "loss": 2.0}])
    second.close()
    assert read_scalars(tmp_path / "tensorboard")["train/loss"] == {1: 3.0, 2: 2.0}
