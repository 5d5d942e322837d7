"""``ppvae compare``: run folders, the table, its statistics and marking, its files, and bad input.

One small comparison (pyro; meanfield and iwae with K = 2; seeds 0 and 1; one epoch on
600 digits) is run once through the command line and checked from several sides. The
statistics are recomputed from the run folders' own summary.json files; the marking rule
is tested on synthetic numbers chosen so that a wrong rule (or a population standard
deviation) fails. Bad input must give one line, exit code 2, no traceback, and train
nothing.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import tomllib
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ppvae
from ppvae import api
from ppvae.spec import registry
from ppvae.cli import cli
from ppvae.analysis.compare import (
    METRICS_SHOWN,
    ComparisonResult,
    add_marks,
    aggregate,
    compare,
    mark_vs_best,
    parse_seeds,
)
from ppvae.errors import TrainingError

from conftest import FAST

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1)
ELBOS = ("meanfield", "iwae")
RUN_NAMES = [f"pyro-{e}-seed{s}" for e in ELBOS for s in SEEDS]


def small_settings(digits_npy) -> list[str]:
    """--set options for tiny runs: FAST, 2-D latent, batch 64, K = 2 for iwae."""
    values = {
        **FAST,
        "data.source": str(digits_npy),
        "model.latent_dim": 2,
        "train.batch_size": 64,
        "train.num_particles": 2,
    }
    return [arg for key, value in values.items() for arg in ("--set", f"{key}={json.dumps(value)}")]


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_one_line_error(result, code, *words):
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}\n{result.output}"
    assert "Traceback" not in result.output
    assert result.exit_code == code, f"exit {result.exit_code}:\n{result.output}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in {lines[0]}"
    return lines[0]


@pytest.fixture
def no_training(monkeypatch):
    """Fail the test if anything is trained."""

    def refuse(*args, **kwargs):
        raise AssertionError("compare trained a run although its input was bad")

    monkeypatch.setattr(api, "fit", refuse)


@pytest.fixture(scope="module")
def compared(tmp_path_factory, digits_npy):
    """One CLI comparison: 2 estimators x 2 seeds, 1 epoch each."""
    out = tmp_path_factory.mktemp("compare") / "cmp"
    result = invoke(
        "compare",
        "--backends",
        "pyro",
        "--elbos",
        ",".join(ELBOS),
        "--seeds",
        "0,1",
        "--epochs",
        1,
        "--device",
        "cpu",
        "--out",
        out,
        "-q",
        *small_settings(digits_npy),
    )
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result, out


# -- the happy path ----------------------------------------------------------------------------


def test_run_folders_and_result_files(compared):
    result, out = compared
    assert result.stderr == ""  # -q: no progress
    for name in RUN_NAMES:
        for f in ("config.toml", "metrics.jsonl", "summary.json", "checkpoint.safetensors"):
            assert (out / name / f).is_file(), f"{name}/{f} missing"
    for f in ("comparison.json", "comparison.md", "comparison.png"):
        assert (out / f).is_file()
    assert (out / "comparison.png").read_bytes()[:8] == PNG_MAGIC
    from matplotlib.image import imread

    assert imread(out / "comparison.png").shape[0] >= 400
    # Every run trained what its folder name says, on the same split.
    infos = []
    for e in ELBOS:
        for s in SEEDS:
            folder = out / f"pyro-{e}-seed{s}"
            cfg = tomllib.loads((folder / "config.toml").read_text())["train"]
            assert (cfg["backend"], cfg["elbo"], cfg["seed"], cfg["epochs"]) == ("pyro", e, s, 1)
            assert cfg["num_particles"] == 2  # the spec's K, also for iwae
            infos.append(json.loads((folder / "data.json").read_text()))
    assert all(i == infos[0] for i in infos)


def test_table_rows_and_columns(compared):
    result, out = compared
    text = result.stdout
    lines = [line for line in text.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    assert header == [
        "backend",
        "estimator",
        "device",
        "epochs",
        "wall time (s)",
        "s/epoch",
        "images/s",
        "held-out ELBO",
        "log p(x) (K=20)",
        "KL",
        "active units",
        "ELBO vs best",
        "log p(x) vs best",
    ]
    rows = [[c.strip() for c in line.strip("|").split("|")] for line in lines[2:]]
    assert [r[:4] for r in rows] == [["pyro", "meanfield", "cpu", "1"], ["pyro", "iwae (K=2)", "cpu", "1"]]
    for r in rows:
        assert all(" ± " in c for c in r[4:11]), r
    assert sorted(r[11] == "best" for r in rows) == [False, True]
    # The footnotes name the estimators, K and the marking rule; the files hold the same table.
    for words in (
        "Held-out ELBO: mean over held-out points",
        "analytic",
        "IWAE",
        "K samples",
        "spread(row) + spread(best)",
        "sample standard deviation",
    ):
        assert words in text
    md = (out / "comparison.md").read_text()
    assert [line for line in md.splitlines() if line.startswith("|")] == lines
    assert str(out / "comparison.json") in text


def test_mean_and_spread_recomputed_from_run_folders(compared):
    result, out = compared
    data = json.loads((out / "comparison.json").read_text())
    assert [(r["backend"], r["elbo"], r["num_particles"]) for r in data["rows"]] == [
        ("pyro", "meanfield", 2),
        ("pyro", "iwae", 2),
    ]
    table = {
        line.split("|")[2].strip(): [c.strip() for c in line.strip("|").split("|")]
        for line in result.stdout.splitlines()
        if line.startswith("| pyro")
    }
    for row in data["rows"]:
        summaries = [json.loads((out / f"pyro-{row['elbo']}-seed{s}" / "summary.json").read_text()) for s in SEEDS]
        metrics = [
            [
                json.loads(line)
                for line in (out / f"pyro-{row['elbo']}-seed{s}" / "metrics.jsonl").read_text().splitlines()
            ]
            for s in SEEDS
        ]
        expected = {
            "heldout_elbo": [s["evaluation"]["heldout_elbo"] for s in summaries],
            "heldout_log_px": [s["evaluation"]["heldout_log_px"] for s in summaries],
            "kl": [s["evaluation"]["kl"] for s in summaries],
            "active_units": [s["evaluation"]["active_units"] for s in summaries],
            "train_seconds": [s["train_seconds"] for s in summaries],
            "seconds_per_epoch": [m[0]["seconds"] for m in metrics],  # one epoch: that epoch
            "images_per_s": [m[0]["images_per_s"] for m in metrics],
        }
        assert set(expected) == set(METRICS_SHOWN)
        for key, values in expected.items():
            got = row["metrics"][key]
            assert got["values"] == pytest.approx(values), key
            assert got["mean"] == pytest.approx(np.mean(values)), key
            assert got["spread"] == pytest.approx(np.std(values, ddof=1)), key
            assert got["n"] == 2 and got["spread_known"]
        label = "meanfield" if row["elbo"] == "meanfield" else "iwae (K=2)"
        ev = row["metrics"]["heldout_elbo"]
        assert table[label][7] == f"{ev['mean']:.2f} ± {ev['spread']:.2f}"
        # vs best agrees with the numbers.
        others = [r["metrics"]["heldout_elbo"]["mean"] for r in data["rows"]]
        assert row["vs_best"]["heldout_elbo"]["diff"] == pytest.approx(ev["mean"] - max(others))
    # Header facts of the JSON.
    assert data["seeds"] == [0, 1] and data["backends"] == ["pyro"] and data["elbos"] == list(ELBOS)
    assert data["protocol"]["name"] is None and "differs" in data["protocol"]["note"]
    assert data["machine"]["cpu_count"] >= 1 and data["versions"]["torch"]
    assert data["config"]["model"]["latent_dim"] == 2
    assert "K" in data["log_px_estimator"] and data["marking_rule"]
    series = data["rows"][0]["runs"][0]["series"]
    assert len(series["heldout_elbo"]) == 1 and series["seconds_cumulative"][0] > 0


def test_json_output_one_seed_and_iwae_default_k(tmp_path, digits_npy):
    settings = small_settings(digits_npy)
    k = settings.index("train.num_particles=2")
    del settings[k - 1 : k + 1]  # the spec's K is 1 again
    out = tmp_path / "one"
    result = invoke(
        "compare", "--elbos", "iwae", "--seeds", "3", "--epochs", 1, "--out", out, "--json", "-q", *settings
    )
    assert result.exit_code == 0, result.output
    data = json.loads(result.stdout)
    assert data == json.loads((out / "comparison.json").read_text())
    (row,) = data["rows"]
    assert row["num_particles"] == 5
    assert tomllib.loads((out / "pyro-iwae-seed3" / "config.toml").read_text())["train"]["num_particles"] == 5
    assert any("K = 5" in n and "num_particles is 1" in n for n in data["notes"])
    assert row["metrics"]["heldout_elbo"]["spread_known"] is False
    assert row["vs_best"]["heldout_elbo"]["best"] is True
    md = (out / "comparison.md").read_text()
    assert "± n/a" in md and "iwae (K=5)" in md and "One seed" in md


def test_failed_run_is_reported_and_left_out(tmp_path, digits_npy, monkeypatch):
    real_fit = api.fit

    def fit(cfg, **kwargs):
        if cfg.train.seed == 1:
            raise TrainingError("the loss became NaN at step 3; lower --lr")
        return real_fit(cfg, **kwargs)

    monkeypatch.setattr(api, "fit", fit)
    out = tmp_path / "failing"
    result = invoke("compare", "--seeds", "0,1", "--epochs", 1, "--out", out, "-q", *small_settings(digits_npy))
    assert_one_line_error(result, 1, "1 of 2 runs", "pyro-meanfield-seed1")
    assert "| pyro" in result.stdout  # the table is still printed
    data = json.loads((out / "comparison.json").read_text())
    (row,) = data["rows"]
    assert row["metrics"]["heldout_elbo"]["n"] == 1
    assert [r["error"] for r in row["runs"]] == [None, "the loss became NaN at step 3; lower --lr"]


# -- statistics and marking on synthetic numbers --------------------------------------------------


def test_aggregate():
    a = aggregate([1.0, 2.0, 3.0, 6.0])
    assert a["mean"] == 3.0 and a["spread"] == pytest.approx(np.std([1, 2, 3, 6], ddof=1)) and a["n"] == 4
    one = aggregate([5.0])
    assert (one["mean"], one["spread"], one["n"], one["spread_known"]) == (5.0, 0.0, 1, False)
    gaps = aggregate([1.0, None, math.nan, 3.0])
    assert (gaps["mean"], gaps["n"]) == (2.0, 2) and gaps["spread"] == pytest.approx(math.sqrt(2))
    assert math.isnan(aggregate([])["mean"]) and aggregate([])["n"] == 0


def test_mark_vs_best_rule():
    best = aggregate([-100.0, -101.0, -99.0])  # mean -100, sd 1
    close = aggregate([-101.9, -102.9, -100.9])  # diff -1.9 <= 1 + 1 (a population sd would mark it)
    far = aggregate([-105.0, -106.0, -104.0])  # diff -5 > 2
    edge = aggregate([-102.0, -103.0, -101.0])  # diff -2 == 2: not marked (strictly greater)
    one_seed = aggregate([-130.0])  # no spread: cannot tell
    marks = mark_vs_best([close, far, best, edge, one_seed])
    assert [m["best"] for m in marks] == [False, False, True, False, False]
    assert [m["marked"] for m in marks] == [False, True, False, False, None]
    assert marks[0]["diff"] == pytest.approx(-1.9) and marks[0]["threshold"] == pytest.approx(2.0)
    assert marks[1]["diff"] == pytest.approx(-5.0)
    # A row without a value is never best.
    marks = mark_vs_best([aggregate([]), best])
    assert marks[1]["best"] and marks[0]["marked"] is None


def _synthetic_row(elbo: str, elbo_values, log_px_values) -> dict:
    metrics = {k: aggregate([1.0] * len(elbo_values)) for k in METRICS_SHOWN}
    metrics["heldout_elbo"] = aggregate(elbo_values)
    metrics["heldout_log_px"] = aggregate(log_px_values)
    return {
        "backend": "pyro",
        "elbo": elbo,
        "num_particles": 5,
        "device": "cpu",
        "eval_num_samples": 1000,
        "runs": [{"epochs": 3}],
        "metrics": metrics,
    }


def test_table_marks_only_differences_beyond_the_spreads(tmp_path):
    rows = [
        _synthetic_row("meanfield", [-100.0, -101.0, -99.0], [-95.0, -96.0, -94.0]),
        _synthetic_row("trace", [-101.9, -102.9, -100.9], [-90.0, -90.5, -89.5]),
        _synthetic_row("iwae", [-105.0, -106.0, -104.0], [-90.2, -90.7, -89.7]),
    ]
    add_marks(rows)
    result = ComparisonResult(out=tmp_path, rows=rows, info={"seeds": [0, 1, 2]})
    lines = {
        line.split("|")[2].strip(): [c.strip() for c in line.strip("|").split("|")]
        for line in result.to_markdown().splitlines()
        if line.startswith("| pyro")
    }
    assert lines["meanfield"][11:] == ["best", "-5.00 *"]
    assert lines["trace"][11:] == ["-1.90", "best"]
    assert lines["iwae (K=5)"][11:] == ["-5.00 *", "-0.20"]
    assert "log p(x) (K=1000)" in result.to_markdown()


# -- bad input: one line, exit 2, nothing trained ----------------------------------------------------


@pytest.mark.parametrize(
    "args, words",
    [
        (["--backends", "pyro,jax"], ["unknown backend 'jax'", "valid backends: pyro"]),
        (["--elbos", "meanfield,elbo2"], ["unknown estimator 'elbo2'", "meanfield, trace, iwae"]),
        (["--elbos", ""], ["--elbos needs at least one estimator"]),
        (["--seeds", ""], ["--seeds needs at least one seed"]),
        (["--seeds", "0,x"], ["'x' is not a non-negative integer", "--seeds 0,1,2"]),
        (["--seeds", "0,-1"], ["'-1'"]),
        (["--seeds", "1,1"], ["more than once"]),
        (["--backends", "pyro,pyro"], ["more than once"]),
        (["--device", "gpu"], ["--device 'gpu' is not valid"]),
        (["--set", "train.nope=1"], ["unknown key 'nope'"]),
        (["no-such-spec.toml"], ["does not exist"]),
        (["--epochs", "0"], ["train.epochs must be a positive integer"]),
    ],
)
def test_bad_input_one_line_exit_2_nothing_trained(tmp_path, no_training, args, words):
    out = tmp_path / "never"
    result = invoke("compare", "--out", out, *args)
    assert_one_line_error(result, 2, *words)
    assert not out.exists()


def test_existing_out_is_refused_and_untouched(tmp_path, no_training):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    assert_one_line_error(invoke("compare", "--out", out), 2, "already exists", "--force")
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]
    file_out = tmp_path / "file"
    file_out.write_text("x")
    assert_one_line_error(invoke("compare", "--out", file_out), 2, "is a file")


def test_force_lets_an_existing_out_through(tmp_path, monkeypatch):
    out = tmp_path / "taken"
    out.mkdir()
    (out / "keep.txt").write_text("mine")
    calls = []

    def fake_fit(cfg, **kwargs):
        calls.append((cfg.train.seed, kwargs["out"], kwargs["force"]))
        raise ppvae.errors.UsageError("stop here")

    monkeypatch.setattr(api, "fit", fake_fit)
    assert_one_line_error(invoke("compare", "--out", out, "--force", "--seeds", "7", "-q"), 2, "stop here")
    assert calls == [(7, out / "pyro-meanfield-seed7", True)]
    assert sorted(p.name for p in out.iterdir()) == ["keep.txt"]  # the unused run folder was not left behind


def test_backend_not_installed(tmp_path, no_training, monkeypatch):
    monkeypatch.setitem(registry.BACKENDS, "numpyro", ("ppvae_no_such_module_for_tests", "ppvae[numpyro]"))
    result = invoke("compare", "--backends", "pyro,numpyro", "--out", tmp_path / "never")
    assert_one_line_error(
        result, 2, "numpyro backend needs libraries", "pip install 'ppvae[numpyro]'", "leave numpyro out of --backends"
    )
    assert not (tmp_path / "never").exists()


def test_spec_one_backend_cannot_run(tmp_path, no_training, monkeypatch):
    # A backend that loads but registers no components cannot run the default spec.
    monkeypatch.setitem(registry.BACKENDS, "bare", ("ppvae.backends", "ppvae"))
    # A bare backend still implements the interface: it hosts Portable components unchanged.
    import ppvae.backends

    monkeypatch.setattr(ppvae.backends, "adapt_portable", lambda kind, cls: cls, raising=False)
    result = invoke("compare", "--backends", "pyro,bare", "--out", tmp_path / "never")
    assert_one_line_error(result, 2, "the bare backend cannot run this spec", "leave bare out of --backends")
    assert not (tmp_path / "never").exists()


def test_api_accepts_lists_and_checks_names_first(tmp_path, no_training):
    assert parse_seeds("0, 2,5") == (0, 2, 5) and parse_seeds([1, 2]) == (1, 2) and parse_seeds(4) == (4,)
    with pytest.raises(ppvae.errors.UsageError, match="unknown estimator"):
        compare(elbos=["meanfield", "nope"], out=tmp_path / "never", spec="no-such-spec.toml")
    with pytest.raises(ppvae.errors.UsageError, match="seed True"):
        compare(seeds=[True], out=tmp_path / "never")
    assert not (tmp_path / "never").exists()


def test_real_process_error_and_lazy_imports(tmp_path):
    root = Path(__file__).parents[1]
    proc = subprocess.run(
        [sys.executable, "-m", "ppvae", "compare", "--backends", "jax", "--out", tmp_path / "x"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.strip().splitlines() == [
        "Error: unknown backend 'jax' in --backends; valid backends: " + ", ".join(registry.BACKENDS)
    ]
    code = (
        "import sys, ppvae.analysis.compare, ppvae.cli\n"
        "bad = [m for m in ('torch', 'jax', 'pyro', 'numpyro', 'matplotlib') if m in sys.modules]\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=120)


# -- numpyro (runs once the backend is registered) -------------------------------------------------


def test_pyro_and_numpyro_side_by_side(tmp_path, digits_npy):
    if "numpyro" not in registry.BACKENDS:
        pytest.skip("the numpyro backend is not registered in ppvae.spec.registry.BACKENDS yet")
    pytest.importorskip("numpyro")
    out = tmp_path / "backends"
    # One estimator (iwae: the one whose K compare sets) keeps this quick: NumPyro compiles per run.
    result = invoke(
        "compare",
        "--backends",
        "pyro,numpyro",
        "--elbos",
        "iwae",
        "--seeds",
        "0",
        "--epochs",
        1,
        "--out",
        out,
        "-q",
        *small_settings(digits_npy),
    )
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    data = json.loads((out / "comparison.json").read_text())
    assert [(r["backend"], r["elbo"]) for r in data["rows"]] == [("pyro", "iwae"), ("numpyro", "iwae")]
    infos = []
    for row in data["rows"]:
        folder = out / f"{row['backend']}-{row['elbo']}-seed0"
        summary = json.loads((folder / "summary.json").read_text())
        assert (summary["backend"], summary["elbo"]) == (row["backend"], "iwae")
        assert tomllib.loads((folder / "config.toml").read_text())["train"]["num_particles"] == 2
        for key in ("heldout_elbo", "heldout_log_px", "kl"):
            assert math.isfinite(row["metrics"][key]["mean"]), (row["backend"], key)
        assert row["metrics"]["images_per_s"]["mean"] > 0
        infos.append(json.loads((folder / "data.json").read_text()))
    assert all(i == infos[0] for i in infos)  # the same split for both backends
    assert "| numpyro" in result.stdout and (out / "comparison.png").read_bytes()[:8] == PNG_MAGIC
