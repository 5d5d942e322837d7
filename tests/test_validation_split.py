"""A validation split carved from the training rows, so the held-out split waits for the final evaluation."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from click.testing import CliRunner

import ppvae
from conftest import FAST
from ppvae.data import load_dataset
from ppvae.errors import DataError, UsageError
from ppvae.spec import registry
from ppvae.spec.config import Config, DataSpec


def _rows(a: np.ndarray) -> set[bytes]:
    return {r.tobytes() for r in a.reshape(len(a), -1)}


def test_validation_rows_come_from_the_training_rows_only(digits_npy):
    plain = load_dataset(DataSpec(source=str(digits_npy), binarize="none"), "bernoulli", "unit_interval")
    split = load_dataset(
        DataSpec(source=str(digits_npy), binarize="none", validation_fraction=0.25), "bernoulli", "unit_interval"
    )
    # 600 digits: 120 held out as always; 480 training rows of which round(0.25 * 480) = 120 validate.
    assert plain.validation is None and plain.monitor[0] == "heldout"
    assert split.validation.shape == (120, 28, 28) and split.train.shape == (360, 28, 28)
    np.testing.assert_array_equal(split.heldout, plain.heldout)  # the held-out split does not change
    assert _rows(split.train) | _rows(split.validation) == _rows(plain.train)
    assert not _rows(split.validation) & _rows(split.train)
    assert split.monitor[0] == "validation" and split.validation_labels.shape == (120,)
    # Labels travel with their rows: each validation row's label is its label in the training split.
    by_row = {r.tobytes(): y for r, y in zip(plain.train.reshape(480, -1), plain.train_labels)}
    assert [by_row[r.tobytes()] for r in split.validation.reshape(120, -1)] == list(split.validation_labels)
    again = load_dataset(
        DataSpec(source=str(digits_npy), binarize="none", validation_fraction=0.25), "bernoulli", "unit_interval"
    )
    np.testing.assert_array_equal(again.validation, split.validation)  # seeded
    assert split.info()["num_validation"] == 120


@pytest.mark.parametrize("backend", ["pyro", "numpyro"])
def test_training_reports_on_validation_and_never_reads_the_heldout_split(tmp_path, digits_npy, backend):
    cfg = ppvae.api.resolve_config(
        Config.from_dict(
            {
                "data": {"source": str(digits_npy), "validation_fraction": 0.2},
                "model": {"latent_dim": 2, "encoder_options": {"hidden": [32]}, "decoder_options": {"hidden": [32]}},
                "train": {"backend": backend, "epochs": 2, "device": "cpu"},
            }
        )
    )
    ds = load_dataset(cfg.data, "bernoulli", "unit_interval")
    # Poison the held-out split: any read of it during training would make a figure NaN.
    poisoned = dataclasses.replace(ds, heldout=np.full_like(ds.heldout, np.nan))
    for dataset, split in ((poisoned, "validation"), (dataclasses.replace(poisoned, validation=None), "heldout")):
        run_dir = tmp_path / f"{backend}-{split}"
        run_dir.mkdir()
        if split == "heldout":
            # Without a validation split the poisoned held-out rows are read each epoch: the
            # check can fail (Pyro's argument checks refuse them, NumPyro's ELBO is NaN).
            try:
                _, records = registry.load_backend(backend).fit(cfg, dataset, run_dir, progress=False)
            except ValueError:
                continue
            assert not any(math.isfinite(r["heldout_elbo"]) for r in records)
            continue
        _, records = registry.load_backend(backend).fit(cfg, dataset, run_dir, progress=False)
        assert len(records) == 2
        for record in records:
            assert "heldout_elbo" not in record and math.isfinite(record["validation_elbo"])


def test_fit_records_and_plots_the_validation_curve(tmp_path, digits_npy):
    run = ppvae.fit(
        out=tmp_path / "r",
        data=str(digits_npy),
        latent_dim=2,
        epochs=2,
        overrides={**FAST, "data.validation_fraction": 0.2},
    )
    assert all("validation_elbo" in r and "heldout_elbo" not in r for r in run.metrics())
    assert json.loads((tmp_path / "r" / "data.json").read_text())["num_validation"] == 96
    assert ppvae.load(tmp_path / "r").config.data.validation_fraction == 0.2  # in config.toml
    assert (tmp_path / "r" / "loss.png").stat().st_size > 0
    # The final evaluation is on the held-out split, as without a validation split.
    assert run.summary["evaluation"]["num_points"] == 120


@pytest.mark.parametrize("value", [1.0, -0.1, "x"])
def test_a_bad_validation_fraction_is_one_line(value, tmp_path):
    with pytest.raises(UsageError, match="data.validation_fraction must be at least 0 and below 1"):
        DataSpec(validation_fraction=value)
    from ppvae.cli import cli

    res = CliRunner().invoke(cli, ["fit", "--set", f"data.validation_fraction={value}", "--out", str(tmp_path / "r")])
    assert res.exit_code == 2 and len(res.output.strip().splitlines()) == 1, res.output
    assert not (tmp_path / "r").exists()


def test_a_fraction_that_leaves_no_training_data_and_streaming_are_refused(tmp_path):
    np.save(tmp_path / "tiny.npy", np.random.default_rng(0).random((10, 4)).astype(np.float32))
    with pytest.raises(DataError, match="leaves no training data"):
        load_dataset(DataSpec(source=str(tmp_path / "tiny.npy"), validation_fraction=0.95), "normal", "real")
    with pytest.raises(UsageError, match="data.validation_fraction needs the training data in memory"):
        load_dataset(
            DataSpec(source=str(tmp_path / "tiny.npy"), validation_fraction=0.2, stream=True), "normal", "real"
        )
