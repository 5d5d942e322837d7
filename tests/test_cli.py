"""The command line: every command's wiring and happy path on a small trained run, and the
reliability contract.

The contract: a user error gives ONE line on stderr that names the problem and the fix,
a non-zero exit code (2 for usage errors), no traceback, and nothing overwritten. Most
checks use click's CliRunner; a few run ``python -m ppvae`` in a real subprocess, where a
traceback or a wrong exit code cannot be hidden by the test harness.
"""

from __future__ import annotations

import gzip
import json
import math
import os
import pickle
import re
import shutil
import subprocess
import sys
from importlib import resources
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from ppvae.cli import cli

from conftest import FAST

#: FAST as command-line options (values as TOML, which --set parses).
SET = [arg for key, value in FAST.items() for arg in ("--set", f"{key}={json.dumps(value)}")]
#: Everything a test's `ppvae fit` needs to be quick.
SMALL = ["--epochs", "1", "--batch-size", "64", "--latent-dim", "2", "-q", *SET]
RUN_FILES = (
    "config.toml",
    "data.json",
    "metrics.jsonl",
    "checkpoint.safetensors",
    "summary.json",
    "samples.png",
    "reconstructions.png",
    "loss.png",
)
TIMING = {"seconds", "images_per_s"}
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
EMBEDDED = resources.files("ppvae.data") / "embedded"


# -- helpers ---------------------------------------------------------------------------------


def invoke(*args):
    """Run the CLI in-process; stdout and stderr are kept apart."""
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output
    return result


def _check_error(code, expected, stderr, everything, words):
    assert "Traceback" not in everything, everything
    assert code == expected, f"exit code {code}, expected {expected}:\n{everything}"
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected one line on stderr, got:\n{stderr}"
    line = lines[0]
    assert line.startswith("Error: "), line
    low = line.lower()
    for word in words:
        assert word.lower() in low, f"{word!r} not in: {line}"
    return line


def assert_error(result, code, *words):
    """One ``Error: ...`` line on stderr holding every word, the exit code, no traceback."""
    # Any exception other than SystemExit escaped the CLI's handler: a traceback for a user.
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}\n{result.output}"
    return _check_error(result.exit_code, code, result.stderr, result.output, words)


def ppvae_subprocess(*args, cwd):
    """``python -m ppvae ARGS`` in a real process."""
    return subprocess.run(
        [sys.executable, "-m", "ppvae", *map(str, args)],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def assert_subprocess_error(proc, code, *words):
    return _check_error(proc.returncode, code, proc.stderr, proc.stdout + proc.stderr, words)


def snapshot(folder: Path) -> dict:
    """Bytes and modification time of every file in ``folder``."""
    return {p.name: (p.read_bytes(), p.stat().st_mtime_ns) for p in sorted(folder.iterdir()) if p.is_file()}


def file_state(path: Path):
    return path.read_bytes(), path.stat().st_mtime_ns


def strip_timing(records):
    return [{k: v for k, v in r.items() if k not in TIMING} for r in records]


def read_metrics(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines() if line.strip()]


def set_latent_dim(run: Path, dim: int) -> None:
    cfg = run / "config.toml"
    text = cfg.read_text()
    assert "latent_dim = 2\n" in text
    cfg.write_text(text.replace("latent_dim = 2\n", f"latent_dim = {dim}\n"))


class _RunsShell:
    """A pickle payload: unpickling it runs ``touch MARKER``."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch '{self.marker}'",))


@pytest.fixture
def digits_here(digits_npy, tmp_path, monkeypatch) -> Path:
    """Work in a fresh folder holding digits.npz."""
    work = tmp_path / "work"
    work.mkdir()
    shutil.copy(digits_npy, work / "digits.npz")
    monkeypatch.chdir(work)
    return work


@pytest.fixture(scope="module")
def cli_run(tmp_path_factory, digits_npy) -> Path:
    """A run made by `ppvae fit SPEC` with a spec file whose data path is relative to it."""
    base = tmp_path_factory.mktemp("cli")
    (base / "specs").mkdir()
    shutil.copy(digits_npy, base / "specs" / "digits.npz")
    spec = base / "specs" / "tiny.toml"
    spec.write_text(
        "[model]\nlatent_dim = 2\n"
        "[model.encoder_options]\nhidden = [64]\n"
        "[model.decoder_options]\nhidden = [64]\n"
        '[data]\nsource = "digits.npz"\n'
        '[train]\nepochs = 1\nbatch_size = 64\neval_num_samples = 20\ndevice = "cpu"\n'
    )
    out = base / "run"
    result = assert_ok(invoke("fit", spec, "--out", out, "-q"))
    assert f"run folder: {out}" in result.stdout
    assert "held-out ELBO" in result.stdout and "active units: " in result.stdout
    return out


# -- help ------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["fit", "evaluate", "sample", "reconstruct", "encode", "decode"])
def test_help_of_every_command_has_examples(command):
    result = assert_ok(invoke(command, "--help"))
    assert "Examples" in result.stdout
    assert f"ppvae {command}" in result.stdout
    assert_ok(invoke(command, "-h"))


def test_top_level_help_and_version():
    result = assert_ok(invoke("--help"))
    for command in ("fit", "evaluate", "sample", "reconstruct", "encode", "decode"):
        assert command in result.stdout
    assert "0.1.0" in assert_ok(invoke("--version")).stdout


# -- happy paths on a trained run ----------------------------------------------------------


def test_evaluate_json(tiny_run):
    before = snapshot(tiny_run)
    result = assert_ok(invoke("evaluate", tiny_run, "-k", 20, "--json"))
    ev = json.loads(result.stdout)
    for key in (
        "heldout_elbo",
        "heldout_log_px",
        "num_samples",
        "reconstruction",
        "kl",
        "active_units",
        "bits_per_dim",
    ):
        assert key in ev, key
    assert ev["num_samples"] == 20
    assert ev["num_points"] == json.loads((tiny_run / "data.json").read_text())["num_heldout"]
    assert all(math.isfinite(ev[k]) for k in ("heldout_elbo", "heldout_log_px", "reconstruction", "kl"))
    assert ev["heldout_elbo"] == pytest.approx(-(ev["reconstruction"] + ev["kl"]))
    assert ev["kl"] >= 0 and 0 <= ev["active_units"] <= 2 and len(ev["kl_per_dim"]) == 2
    assert ev["bits_per_dim"] == pytest.approx(-ev["heldout_log_px"] / (28 * 28 * math.log(2)))
    # Same seed, same numbers; the text output shows them too.
    again = json.loads(assert_ok(invoke("evaluate", tiny_run, "-k", 20, "--json")).stdout)
    assert again == ev
    text = assert_ok(invoke("evaluate", tiny_run, "-k", 20)).stdout
    assert "held-out ELBO" in text and "log p(x) (K=20)" in text and "bits per dimension" in text
    assert snapshot(tiny_run) == before  # evaluating writes nothing into the run


def test_evaluate_on_a_data_file(tiny_run, digits_npy):
    ev = json.loads(assert_ok(invoke("evaluate", tiny_run, "-k", 5, "--json", "--data", digits_npy)).stdout)
    assert ev["num_points"] == 600 and math.isfinite(ev["heldout_log_px"])


def test_sample_png_and_npy(tiny_run, tmp_path):
    png, npy = tmp_path / "x.png", tmp_path / "x.npy"
    result = assert_ok(invoke("sample", tiny_run, "-n", 16, "--out", png))
    assert "wrote 16 samples" in result.stdout
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert_ok(invoke("sample", tiny_run, "-n", 16, "--out", npy))
    x = np.load(npy)
    assert x.shape == (16, 28, 28) and x.dtype == np.float32
    assert np.isfinite(x).all() and x.min() >= 0 and x.max() <= 1
    # Seeded: the same seed gives the same samples, another seed others.
    assert_ok(invoke("sample", tiny_run, "-n", 16, "--out", npy, "--force"))
    np.testing.assert_array_equal(np.load(npy), x)
    assert_ok(invoke("sample", tiny_run, "-n", 16, "--out", npy, "--force", "--seed", 1))
    assert not np.array_equal(np.load(npy), x)
    assert not list(tmp_path.glob(".*.tmp"))  # no temporary files left behind


def test_reconstruct_png_and_npy(tiny_run, tmp_path):
    png, npy = tmp_path / "r.png", tmp_path / "r.npy"
    assert "wrote 8 reconstructions" in assert_ok(invoke("reconstruct", tiny_run, "-n", 8, "--out", png)).stdout
    assert png.read_bytes()[:8] == PNG_MAGIC
    assert_ok(invoke("reconstruct", tiny_run, "-n", 8, "--out", npy))
    r = np.load(npy)
    assert r.shape == (8, 28, 28) and np.isfinite(r).all() and r.min() >= 0 and r.max() <= 1


def test_encode_npz_npy_and_decode_round_trip(tiny_run, tmp_path):
    n = json.loads((tiny_run / "data.json").read_text())["num_heldout"]
    znpz, znpy = tmp_path / "z.npz", tmp_path / "z.npy"
    result = assert_ok(invoke("encode", tiny_run, "--out", znpz))
    assert f"{n} points (2 latent dimensions)" in result.stdout
    with np.load(znpz) as f:
        assert set(f.files) == {"loc", "scale", "labels"}
        loc, scale, labels = f["loc"], f["scale"], f["labels"]
    assert loc.shape == (n, 2) and scale.shape == (n, 2)
    assert np.isfinite(loc).all() and (scale > 0).all()
    assert labels.shape == (n,) and labels.dtype.kind == "i" and set(np.unique(labels)) <= set(range(10))
    assert_ok(invoke("encode", tiny_run, "--out", znpy))
    stacked = np.load(znpy)
    assert stacked.shape == (n, 2, 2)
    np.testing.assert_array_equal(stacked[:, 0], loc)
    np.testing.assert_array_equal(stacked[:, 1], scale)

    # decode(loc) is the reconstruction (posterior mean), from either file.
    d1, d2, rec = tmp_path / "d1.npy", tmp_path / "d2.npy", tmp_path / "rec.npy"
    assert f"wrote {n} decoded points" in assert_ok(invoke("decode", tiny_run, "--latents", znpz, "--out", d1)).stdout
    assert_ok(invoke("decode", tiny_run, "--latents", znpy, "--out", d2))
    assert_ok(invoke("reconstruct", tiny_run, "--out", rec))
    decoded = np.load(d1)
    assert decoded.shape == (n, 28, 28) and decoded.min() >= 0 and decoded.max() <= 1
    np.testing.assert_array_equal(np.load(d2), decoded)
    np.testing.assert_allclose(np.load(rec), decoded, atol=1e-6)
    # A plain (n, latent_dim) grid decodes to a picture.
    grid = tmp_path / "grid.npy"
    np.save(grid, np.mgrid[-2:2:4j, -2:2:4j].reshape(2, -1).T)
    assert_ok(invoke("decode", tiny_run, "--latents", grid, "--out", tmp_path / "manifold.png"))
    assert (tmp_path / "manifold.png").read_bytes()[:8] == PNG_MAGIC


# -- fit -------------------------------------------------------------------------------------


def test_fit_with_spec_file_writes_a_complete_run_folder(cli_run, digits_npy):
    for name in RUN_FILES:
        assert (cli_run / name).is_file(), name
    for name in ("samples.png", "reconstructions.png", "loss.png"):
        assert (cli_run / name).read_bytes()[:8] == PNG_MAGIC
    config = (cli_run / "config.toml").read_text()
    assert "latent_dim = 2" in config
    # The spec's relative data path was resolved against the spec file and recorded absolute.
    assert f'source = "{(cli_run.parent / "specs" / "digits.npz").resolve()}"' in config
    records = read_metrics(cli_run)
    assert len(records) == 1 and records[0]["epoch"] == 1
    assert all(math.isfinite(v) for v in records[0].values() if isinstance(v, float))
    summary = json.loads((cli_run / "summary.json").read_text())
    assert summary["epochs"] == 1 and summary["evaluation"]["num_samples"] == 20
    assert not list(cli_run.glob(".*.tmp"))


def test_fit_of_a_runs_config_reproduces_it(cli_run, tmp_path):
    other = tmp_path / "other"
    assert_ok(invoke("fit", cli_run / "config.toml", "--out", other, "-q"))
    a, b = read_metrics(cli_run), read_metrics(other)
    assert strip_timing(a) == strip_timing(b)
    for key in ("loss", "reconstruction", "kl", "heldout_elbo"):
        assert a[-1][key] == b[-1][key], key
    ev_a = json.loads((cli_run / "summary.json").read_text())["evaluation"]
    ev_b = json.loads((other / "summary.json").read_text())["evaluation"]
    assert ev_a == ev_b
    assert (other / "config.toml").read_text() == (cli_run / "config.toml").read_text()


def test_relative_data_path_keeps_working_from_another_folder(digits_here, tmp_path, monkeypatch):
    # `--data digits.npz` is relative to the current folder; the run must not depend on it.
    assert_ok(invoke("fit", "--data", "digits.npz", "--out", "run", *SMALL))
    run = digits_here / "run"
    assert f'source = "{digits_here / "digits.npz"}"' in (run / "config.toml").read_text()
    monkeypatch.chdir(tmp_path)
    ev = json.loads(assert_ok(invoke("evaluate", run, "-k", 5, "--json")).stdout)
    assert math.isfinite(ev["heldout_elbo"])
    assert_ok(invoke("fit", run / "config.toml", "--out", tmp_path / "again", "-q"))
    assert strip_timing(read_metrics(tmp_path / "again")) == strip_timing(read_metrics(run))


def test_force_overwrites_an_existing_run(tiny_run, digits_npy):
    (tiny_run / "notes.txt").write_text("mine")
    assert len(read_metrics(tiny_run)) == 2
    assert_ok(invoke("fit", "--data", digits_npy, "--out", tiny_run, "--force", *SMALL))
    assert len(read_metrics(tiny_run)) == 1  # the new run's one epoch
    assert all((tiny_run / name).is_file() for name in RUN_FILES)
    assert (tiny_run / "notes.txt").read_text() == "mine"  # not a run file: kept


# -- 1-5: data errors ----------------------------------------------------------------------


def test_missing_data_file_subprocess(tmp_path):
    proc = ppvae_subprocess("fit", "--data", "nope.npy", "--out", "run", *SMALL, cwd=tmp_path)
    assert_subprocess_error(proc, 1, "'nope.npy'", "does not exist", ".npy, .npz or .csv")
    assert not (tmp_path / "run").exists()


def _corrupt_gz_folder(folder: Path, images: bytes) -> Path:
    folder.mkdir()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(images)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes((EMBEDDED / "t10k-labels-idx1-ubyte.gz").read_bytes())
    return folder


def _bad_data(tmp_path: Path, kind: str) -> tuple[Path, tuple[str, ...]]:
    """A broken data source and words its error must contain."""
    real_gz = (EMBEDDED / "t10k-images-idx3-ubyte.gz").read_bytes()
    if kind == "garbage.npy":
        path = tmp_path / "garbage.npy"
        path.write_bytes(b"\x93NUMPY\x01\x00garbage, not an array" * 4)
        return path, ("garbage.npy", "cannot read", "numpy.save")
    if kind == "empty.npy":
        path = tmp_path / "empty.npy"
        path.write_bytes(b"")
        return path, ("empty.npy", "cannot read")
    if kind == "corrupt.npz":
        path = tmp_path / "corrupt.npz"
        path.write_bytes(b"PK\x03\x04 this is no zip archive")
        return path, ("corrupt.npz", "cannot read", "numpy.savez")
    if kind == "gz-folder":
        folder = _corrupt_gz_folder(tmp_path / "idx", b"\x1f\x8bnot really gzip")
        return folder, ("t10k-images-idx3-ubyte.gz", "corrupt", "download it again")
    if kind == "truncated-gz-folder":
        folder = _corrupt_gz_folder(tmp_path / "idx", real_gz[: len(real_gz) // 3])
        return folder, ("t10k-images-idx3-ubyte.gz", "corrupt", "download it again")
    if kind == "bad-idx-folder":
        folder = tmp_path / "idx"
        folder.mkdir()
        (folder / "t10k-images-idx3-ubyte").write_bytes(b"\x00\x00\x99\x03garbage")
        (folder / "t10k-labels-idx1-ubyte").write_bytes(
            gzip.decompress((EMBEDDED / "t10k-labels-idx1-ubyte.gz").read_bytes())
        )
        return folder, ("t10k-images-idx3-ubyte", "corrupt", "download it again")
    if kind == "ragged.csv":
        path = tmp_path / "ragged.csv"
        path.write_text("1,2,3\n4,5,6\n7,8\n" + "1,2,3\n" * 10)
        return path, ("ragged.csv", "line 3 has 2 values", "same number of columns")
    if kind == "text.csv":
        path = tmp_path / "text.csv"
        path.write_text("a,b\n1,2\n3,oops\n" + "1,2\n" * 10)
        return path, ("text.csv", "line 3, column 2", "'oops'", "not a number")
    if kind == "1d.npy":
        path = tmp_path / "1d.npy"
        np.save(path, np.zeros(50))
        return path, ("1d.npy", "shape (50,)", "expected a 2-d table")
    if kind == "5d.npy":
        path = tmp_path / "5d.npy"
        np.save(path, np.zeros((10, 1, 2, 3, 4)))
        return path, ("5d.npy", "shape (10, 1, 2, 3, 4)", "expected a 2-d table")
    if kind in ("nan.npy", "inf.npy"):
        path = tmp_path / kind
        x = np.random.default_rng(0).random((50, 10))
        x[3, 4] = np.nan if kind == "nan.npy" else -np.inf
        np.save(path, x)
        return path, (kind, "nan or infinite", "row 3", "clean or impute")
    raise AssertionError(kind)


DATA_ERRORS = [
    "garbage.npy",
    "empty.npy",
    "corrupt.npz",
    "gz-folder",
    "truncated-gz-folder",
    "bad-idx-folder",
    "ragged.csv",
    "text.csv",
    "1d.npy",
    "5d.npy",
    "nan.npy",
    "inf.npy",
]


@pytest.mark.parametrize("kind", DATA_ERRORS)
def test_fit_on_bad_data(tmp_path, kind):
    source, words = _bad_data(tmp_path, kind)
    out = tmp_path / "run"
    assert_error(invoke("fit", "--data", source, "--out", out, *SMALL), 1, *words)
    assert not out.exists()


@pytest.mark.parametrize("kind", ["garbage.npy", "corrupt.npz", "ragged.csv", "nan.npy"])
@pytest.mark.parametrize("command", ["evaluate", "encode", "reconstruct"])
def test_commands_on_bad_data(tiny_run, tmp_path, kind, command):
    source, words = _bad_data(tmp_path, kind)
    extra = [] if command == "evaluate" else ["--out", tmp_path / "out.npy"]
    before = snapshot(tiny_run)
    assert_error(invoke(command, tiny_run, "--data", source, *extra), 1, *words)
    assert not (tmp_path / "out.npy").exists()
    assert snapshot(tiny_run) == before


def test_data_of_the_wrong_shape_for_a_run(tiny_run, tmp_path):
    path = tmp_path / "table.npy"
    np.save(path, np.random.default_rng(0).random((20, 10)))
    assert_error(
        invoke("evaluate", tiny_run, "--data", path),
        1,
        "table.npy",
        "expected datapoints of shape (28, 28)",
        "got (10,)",
    )


def test_data_outside_unit_interval_for_bernoulli(tmp_path):
    path = tmp_path / "wide.npy"
    np.save(path, np.linspace(-1, 3, 50 * 10).reshape(50, 10))
    line = assert_error(
        invoke("fit", "--data", path, "--set", "data.scale=none", "--out", tmp_path / "run", *SMALL),
        1,
        "wide.npy",
        "outside [0, 1]",
        "'bernoulli'",
        "minmax",
        "'normal'",
    )
    assert "min -1" in line and "max 3" in line
    assert not (tmp_path / "run").exists()


# -- 6-8: bad settings ---------------------------------------------------------------------


@pytest.mark.parametrize("beta", ["0", "-1"])
def test_beta_must_be_positive(tmp_path, digits_npy, beta):
    assert_error(
        invoke("fit", "--data", digits_npy, "--beta", beta, "--out", tmp_path / "run", *SMALL),
        2,
        "beta must be > 0",
        "--beta-schedule linear",
    )
    assert not (tmp_path / "run").exists()


def test_beta_zero_subprocess(tmp_path):
    proc = ppvae_subprocess("fit", "--beta", "0", cwd=tmp_path)
    assert_subprocess_error(proc, 2, "beta must be > 0")
    assert not (tmp_path / "runs").exists()


@pytest.mark.parametrize("dim", ["0", "-3"])
def test_latent_dim_must_be_positive(tmp_path, digits_npy, dim):
    args = ["--data", digits_npy, "--out", tmp_path / "run", *SMALL, "--latent-dim", dim]
    assert_error(invoke("fit", *args), 2, "latent_dim", "positive integer", f"got {dim}", "--latent-dim 2")


def test_unknown_likelihood_subprocess(tmp_path):
    proc = ppvae_subprocess("fit", "--likelihood", "gaussian", "--out", "run", cwd=tmp_path)
    assert_subprocess_error(proc, 2, "unknown likelihood 'gaussian'", "bernoulli", "continuous_bernoulli", "normal")
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "option, value, words",
    [
        (
            "--likelihood",
            "gaussian",
            (
                "unknown likelihood 'gaussian'",
                "valid likelihood names: ",
                "continuous_bernoulli",
                "negative_binomial",
                "zinb",
            ),
        ),
        ("--prior", "cauchy", ("unknown prior 'cauchy'", "normal")),
        ("--encoder", "resnet", ("unknown encoder 'resnet'", "conv", "mlp")),
        ("--decoder", "resnet", ("unknown decoder 'resnet'", "conv", "linear", "mlp")),
        ("--backend", "stan", ("unknown backend 'stan'", "pyro")),
    ],
)
def test_unknown_component_names_list_the_valid_ones(tmp_path, digits_npy, option, value, words):
    assert_error(invoke("fit", "--data", digits_npy, option, value, "--out", tmp_path / "run", *SMALL), 2, *words)


@pytest.mark.parametrize(
    "setting, words",
    [
        ("train.bogus=1", ("unknown key 'bogus' in [train]", "valid keys", "batch_size", "lr")),
        ("bogus=1", ("--set key 'bogus'", "section.key", "model, data, train")),
        ("model.encoder_options.bogus=1", ("encoder 'mlp' has no setting bogus", "valid settings", "hidden")),
        ("nokey", ("--set expects key=value", "'nokey'")),
        ("train.elbo=exact", ("train.elbo = 'exact' is not valid", "meanfield, trace, iwae")),
    ],
)
def test_bad_set_settings(tmp_path, digits_npy, setting, words):
    assert_error(invoke("fit", "--data", digits_npy, "--set", setting, "--out", tmp_path / "run", *SMALL), 2, *words)


@pytest.mark.parametrize(
    "text, words",
    [
        ("[model]\nlatent_dim = 2\nbogus = 3\n", ("unknown key(s) in [model]: bogus", "valid keys", "latent_dim")),
        ("[modle]\nlatent_dim = 2\n", ("unknown table(s) modle", "valid tables: model, data, train")),
        ("[model\nlatent_dim = 2\n", ("not valid toml", "line 1", "fix the file")),
    ],
)
def test_bad_spec_files(tmp_path, text, words):
    spec = tmp_path / "spec.toml"
    spec.write_text(text)
    assert_error(invoke("fit", spec, "--out", tmp_path / "run", "-q"), 2, *words)
    assert not (tmp_path / "run").exists()


def test_missing_spec_file(tmp_path):
    assert_error(invoke("fit", tmp_path / "nope.toml", "-q"), 2, "nope.toml", "does not exist", "check the path")


def test_resume_takes_no_spec_or_out(tiny_run, tmp_path):
    before = snapshot(tiny_run)
    assert_error(invoke("fit", "--resume", tiny_run, "--out", tmp_path / "x"), 2, "--resume", "drop spec and --out")
    assert_error(invoke("fit", tiny_run / "config.toml", "--resume", tiny_run), 2, "drop spec and --out")
    assert snapshot(tiny_run) == before


# -- 9-11: existing runs and checkpoints ---------------------------------------------------


def test_out_on_an_existing_run_is_refused(tiny_run, digits_npy):
    before = snapshot(tiny_run)
    line = assert_error(
        invoke("fit", "--data", digits_npy, "--out", tiny_run, *SMALL),
        2,
        "already exists",
        f"--resume {tiny_run}",
        "--force",
        "another --out",
    )
    assert str(tiny_run) in line
    assert snapshot(tiny_run) == before


def test_resume_with_an_edited_config_is_refused(tiny_run):
    set_latent_dim(tiny_run, 3)
    before = snapshot(tiny_run)
    assert_error(invoke("fit", "--resume", tiny_run, "-q"), 1, "checkpoint.safetensors", "different model")
    after = snapshot(tiny_run)
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}  # bytes
    for name in ("checkpoint.safetensors", "metrics.jsonl", "summary.json", "samples.png"):
        assert after[name] == before[name], name  # not even rewritten


@pytest.mark.parametrize("command", ["evaluate", "sample", "encode", "decode"])
def test_commands_on_a_run_with_an_edited_config(tiny_run, tmp_path, command):
    set_latent_dim(tiny_run, 3)
    before = snapshot(tiny_run)
    np.save(tmp_path / "z.npy", np.zeros((4, 3)))
    extra = {
        "evaluate": ["-k", 5],
        "sample": ["--out", tmp_path / "o.npy"],
        "encode": ["--out", tmp_path / "o.npy"],
        "decode": ["--latents", tmp_path / "z.npy", "--out", tmp_path / "o.npy"],
    }[command]
    assert_error(invoke(command, tiny_run, *extra), 1, "checkpoint.safetensors", "different model")
    assert snapshot(tiny_run) == before
    assert not (tmp_path / "o.npy").exists()


@pytest.mark.parametrize("case", ["new-latent-dim", "edited-config-and-new-epochs"])
def test_refused_resume_leaves_the_run_intact(tiny_run, case):
    if case == "new-latent-dim":
        options = ["--latent-dim", 3]
    else:
        set_latent_dim(tiny_run, 3)
        options = ["--epochs", 3]
    before = snapshot(tiny_run)
    if case == "new-latent-dim":  # a usage error: --resume cannot change the model
        assert_error(invoke("fit", "--resume", tiny_run, *options, "-q"), 2, "model.latent_dim", "--out")
    else:  # the config was edited behind the checkpoint's back
        assert_error(invoke("fit", "--resume", tiny_run, *options, "-q"), 1, "different model")
    assert {k: v[0] for k, v in snapshot(tiny_run).items()} == {k: v[0] for k, v in before.items()}
    if case == "new-latent-dim":
        assert_ok(invoke("evaluate", tiny_run, "-k", 5))  # the run still works


def test_resume_uses_a_new_learning_rate(tiny_run):
    from safetensors import safe_open

    assert_ok(invoke("fit", "--resume", tiny_run, "--epochs", 3, "--lr", 0.05, "-q"))
    assert "lr = 0.05" in (tiny_run / "config.toml").read_text()
    with safe_open(str(tiny_run / "checkpoint.safetensors"), framework="pt") as fh:
        groups = json.loads(fh.metadata()["meta"])["param_groups"]
    assert groups[0]["lr"] == 0.05


def test_hostile_pickle_checkpoint_is_not_loaded_subprocess(tiny_run, tmp_path):
    # The payload works: unpickling it really does create a file.
    control = tmp_path / "CONTROL"
    pickle.loads(pickle.dumps(_RunsShell(control)))
    assert control.exists()

    marker = tmp_path / "MARKER"
    (tiny_run / "checkpoint.safetensors").write_bytes(pickle.dumps(_RunsShell(marker)))
    before = snapshot(tiny_run)
    proc = ppvae_subprocess("evaluate", tiny_run, "-k", 5, cwd=tmp_path)
    assert_subprocess_error(
        proc, 1, "checkpoint.safetensors", "not a readable ppvae checkpoint", "was not loaded", "re-run ppvae fit"
    )
    assert not marker.exists()
    assert snapshot(tiny_run) == before


def _torch_pickle(path: Path, marker: Path) -> None:
    import torch

    torch.save({"model": _RunsShell(marker)}, path)


@pytest.mark.parametrize("kind", ["pickle", "torch.save", "truncated", "garbage", "empty", "foreign"])
@pytest.mark.parametrize("command", ["evaluate", "sample", "resume"])
def test_damaged_or_foreign_checkpoints(tiny_run, tmp_path, kind, command):
    from safetensors.torch import save_file
    import torch

    ckpt = tiny_run / "checkpoint.safetensors"
    marker = tmp_path / "MARKER"
    words = ("checkpoint.safetensors", "not a readable ppvae checkpoint", "was not loaded")
    if kind == "pickle":
        ckpt.write_bytes(pickle.dumps(_RunsShell(marker)))
    elif kind == "torch.save":
        _torch_pickle(ckpt, marker)
    elif kind == "truncated":
        data = ckpt.read_bytes()
        ckpt.write_bytes(data[: len(data) // 2])
    elif kind == "garbage":
        ckpt.write_bytes(b"garbage")
    elif kind == "empty":
        ckpt.write_bytes(b"")
    else:
        save_file({"weights": torch.zeros(3)}, str(ckpt))
        words = ("checkpoint.safetensors", "not a ppvae checkpoint", "was not loaded")
    before = snapshot(tiny_run)
    args = {
        "evaluate": ["evaluate", tiny_run, "-k", 5],
        "sample": ["sample", tiny_run, "--out", tmp_path / "s.png"],
        "resume": ["fit", "--resume", tiny_run, "-q"],
    }[command]
    assert_error(invoke(*args), 1, *words)
    assert not marker.exists()
    assert not (tmp_path / "s.png").exists()
    after = snapshot(tiny_run)
    assert after["checkpoint.safetensors"] == before["checkpoint.safetensors"]
    assert {k: v[0] for k, v in after.items()} == {k: v[0] for k, v in before.items()}


def test_checkpoint_with_tensors_that_do_not_fit(tiny_run):
    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    ckpt = tiny_run / "checkpoint.safetensors"
    tensors = load_file(str(ckpt))
    with safe_open(str(ckpt), framework="pt") as fh:
        header = fh.metadata()
    tensors["model.decoder.net.0.bias"] = tensors["model.decoder.net.0.bias"][:1].clone()
    save_file(tensors, str(ckpt), metadata=header)
    assert_error(invoke("evaluate", tiny_run, "-k", 5), 1, "checkpoint.safetensors")


# -- 12: a non-finite loss -----------------------------------------------------------------


def _finite_weights(run: Path) -> bool:
    from safetensors.torch import load_file

    return all(
        bool(v.isfinite().all())
        for k, v in load_file(str(run / "checkpoint.safetensors")).items()
        if k.startswith("model.")
    )


def test_nonfinite_loss_keeps_the_last_good_checkpoint_subprocess(tiny_run, tmp_path):
    # A real divergence, no monkeypatching: resume the 2-epoch run with a β so large that
    # β·KL overflows float32. Logging every step stops training at the first bad step.
    ckpt_before = file_state(tiny_run / "checkpoint.safetensors")
    metrics_before = (tiny_run / "metrics.jsonl").read_bytes()
    steps = read_metrics(tiny_run)[-1]["step"]
    proc = ppvae_subprocess(
        "fit", "--resume", tiny_run, "--epochs", 3, "--beta", "1e300", "--set", "train.log_every=1", "-q", cwd=tmp_path
    )
    line = assert_subprocess_error(
        proc, 1, "non-finite", "(epoch 3)", "kept the last good checkpoint (epoch 2", str(tiny_run), "--lr", "--beta"
    )
    # The first bad step is the one after the good epochs (0- or 1-based).
    assert int(re.search(r"at step (\d+)", line).group(1)) in (steps, steps + 1), line
    # The checkpoint on disk is the last good one, untouched, loadable and finite.
    assert file_state(tiny_run / "checkpoint.safetensors") == ckpt_before
    assert _finite_weights(tiny_run)
    # metrics.jsonl holds only the finite records of the good epochs.
    assert (tiny_run / "metrics.jsonl").read_bytes() == metrics_before
    for record in read_metrics(tiny_run):
        assert all(math.isfinite(v) for v in record.values() if isinstance(v, (int, float)))
    ev = json.loads(assert_ok(invoke("evaluate", tiny_run, "-k", 5, "--json")).stdout)
    assert math.isfinite(ev["heldout_elbo"]) and math.isfinite(ev["heldout_log_px"])
    # ... and training goes on from it once the setting is fixed.
    assert_ok(invoke("fit", "--resume", tiny_run, "--epochs", 3, "--beta", 1, "-q"))
    assert [r["epoch"] for r in read_metrics(tiny_run)] == [1, 2, 3]


@pytest.mark.parametrize("case", ["resume-huge-beta", "normal-huge-lr"])
def test_nonfinite_loss_with_default_logging(tiny_run, tmp_path, digits_npy, case):
    if case == "resume-huge-beta":
        args = ["fit", "--resume", tiny_run, "--epochs", 3, "--beta", "1e300", "-q"]
    else:
        args = [
            "fit",
            "--data",
            digits_npy,
            "--likelihood",
            "normal",
            "--lr",
            "1e4",
            "--out",
            tmp_path / "diverge",
            *SMALL,
        ]
    ckpt_before = file_state(tiny_run / "checkpoint.safetensors")
    assert_error(invoke(*args), 1, "non-finite", "step", "--lr")
    assert file_state(tiny_run / "checkpoint.safetensors") == ckpt_before


# -- 13: not a run ---------------------------------------------------------------------------


def _command_args(command: str, run: Path, tmp_path: Path) -> list:
    latents = tmp_path / "z.npy"
    np.save(latents, np.zeros((3, 2)))
    return {
        "evaluate": ["evaluate", run],
        "sample": ["sample", run, "--out", tmp_path / "o.png"],
        "encode": ["encode", run, "--out", tmp_path / "o.npz"],
        "reconstruct": ["reconstruct", run, "--out", tmp_path / "o.png"],
        "decode": ["decode", run, "--latents", latents, "--out", tmp_path / "o.png"],
        "resume": ["fit", "--resume", run, "-q"],
    }[command]


COMMANDS = ["evaluate", "sample", "encode", "reconstruct", "decode", "resume"]


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_on_a_missing_folder(tmp_path, command):
    missing = tmp_path / "nothere"
    assert_error(
        invoke(*_command_args(command, missing, tmp_path)),
        1,
        str(missing),
        "does not exist",
        "the folder `ppvae fit` wrote",
    )
    assert not missing.exists()
    assert not list(tmp_path.glob("o.*"))


@pytest.mark.parametrize("command", COMMANDS)
def test_commands_on_a_folder_that_is_not_a_run(tmp_path, command):
    folder = tmp_path / "photos"
    folder.mkdir()
    (folder / "a.txt").write_text("hello")
    assert_error(invoke(*_command_args(command, folder, tmp_path)), 1, "not a ppvae run folder", "config.toml")
    assert sorted(p.name for p in folder.iterdir()) == ["a.txt"]
    assert not list(tmp_path.glob("o.*"))


def test_evaluate_on_a_run_without_checkpoint(tiny_run, tmp_path):
    (tiny_run / "checkpoint.safetensors").unlink()
    assert_error(invoke("evaluate", tiny_run), 1, "has no checkpoint yet", "ppvae fit")


def test_evaluate_not_a_run_subprocess(tmp_path):
    proc = ppvae_subprocess("evaluate", tmp_path, cwd=tmp_path)
    assert_subprocess_error(proc, 1, "not a ppvae run folder")


# -- 14: output files ------------------------------------------------------------------------


@pytest.mark.parametrize("command", ["sample", "reconstruct", "encode", "decode"])
def test_existing_output_is_not_overwritten_without_force(tiny_run, tmp_path, command):
    suffix = ".npz" if command == "encode" else ".npy"
    out = tmp_path / f"mine{suffix}"
    out.write_bytes(b"precious")
    os.utime(out, ns=(1_000_000_000, 1_000_000_000))
    before = file_state(out)
    args = _command_args(command, tiny_run, tmp_path)
    args[args.index("--out") + 1] = out
    assert_error(invoke(*args), 2, str(out), "already exists", "--force")
    assert file_state(out) == before
    assert_ok(invoke(*args, "--force"))
    assert out.read_bytes() != b"precious"


@pytest.mark.parametrize(
    "command, name, words",
    [
        ("sample", "s.jpg", ("'", "s.jpg", ".png", ".npy")),
        ("sample", "s", (".png", ".npy")),
        ("reconstruct", "r.txt", ("r.txt", ".png", ".npy")),
        ("encode", "z.txt", ("z.txt", ".npz", ".npy")),
        ("encode", "z.png", ("z.png", ".npz", ".npy")),
        ("decode", "d.csv", ("d.csv", ".png", ".npy")),
    ],
)
def test_bad_output_extension(tiny_run, tmp_path, command, name, words):
    args = _command_args(command, tiny_run, tmp_path)
    args[args.index("--out") + 1] = tmp_path / name
    assert_error(invoke(*args), 2, "--out", "file name", *words)
    assert not (tmp_path / name).exists()


@pytest.mark.parametrize(
    "args, words",
    [
        (["sample", "-n", "0", "--out", "x.npy"], ("number of samples", "positive", "got 0")),
        (["reconstruct", "-n", "-2", "--out", "x.npy"], ("-n must be positive", "got -2")),
        (["evaluate", "-k", "0"], ("--num-samples", "positive", "got 0")),
    ],
)
def test_bad_counts(tiny_run, tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    assert_error(invoke(args[0], tiny_run, *args[1:]), 2, *words)
    assert not (tmp_path / "x.npy").exists()


# -- 15: decode's latents --------------------------------------------------------------------


def _latents(tmp_path: Path, kind: str) -> tuple[Path, tuple[str, ...]]:
    if kind == "wide":
        path = tmp_path / "wide.npy"
        np.save(path, np.zeros((5, 3)))
        return path, ("latents must have shape (n, 2)", "got (5, 3)")
    if kind == "flat":
        path = tmp_path / "flat.npy"
        np.save(path, np.zeros(5))
        return path, ("latents must have shape (n, 2)", "got (5,)")
    if kind == "missing":
        return tmp_path / "nope.npz", ("latents file", "nope.npz", "does not exist")
    if kind == "nan":
        path = tmp_path / "nan.npy"
        np.save(path, np.full((4, 2), np.nan))
        return path, ("nan or inf", "finite")
    if kind == "no-loc":
        path = tmp_path / "codes.npz"
        np.savez(path, mean=np.zeros((4, 2)))
        return path, ("codes.npz", "no array 'loc'", "mean")
    if kind == "corrupt-npz":
        path = tmp_path / "codes.npz"
        path.write_bytes(b"PK\x03\x04 not a zip archive")
        return path, ("cannot read latents", "codes.npz", "ppvae encode")
    if kind == "empty":
        path = tmp_path / "empty.npy"
        path.write_bytes(b"")
        return path, ("cannot read latents", "empty.npy")
    if kind == "pickle":
        path = tmp_path / "obj.npy"
        np.save(path, np.array([{"a": 1}], dtype=object), allow_pickle=True)
        return path, ("cannot read latents", "obj.npy")
    raise AssertionError(kind)


@pytest.mark.parametrize("kind", ["wide", "flat", "missing", "nan", "no-loc", "corrupt-npz", "empty", "pickle"])
def test_decode_bad_latents(tiny_run, tmp_path, kind):
    latents, words = _latents(tmp_path, kind)
    out = tmp_path / "d.npy"
    assert_error(invoke("decode", tiny_run, "--latents", latents, "--out", out), 2, *words)
    assert not out.exists()


# -- devices ---------------------------------------------------------------------------------


@pytest.mark.parametrize("device", ["gpu", "mps", "cuda:x"])
@pytest.mark.parametrize("command", ["evaluate", "sample", "encode", "reconstruct", "decode"])
def test_unknown_device_name(tiny_run, tmp_path, command, device):
    args = _command_args(command, tiny_run, tmp_path)
    assert_error(invoke(*args, "--device", device), 2, f"--device '{device}' is not valid", "cpu, cuda or cuda:n")
    assert not list(tmp_path.glob("o.*"))


def test_unknown_device_name_in_fit(tmp_path):
    assert_error(
        invoke("fit", "--device", "gpu", "--out", tmp_path / "run", "-q"),
        2,
        "train.device = 'gpu' is not valid",
        "cpu, cuda or cuda:n",
    )


def test_cuda_where_there_is_none(tiny_run, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("CUDA is available here")
    assert_error(invoke("evaluate", tiny_run, "--device", "cuda"), 2, "cuda is not available", "--device cpu")
    assert_error(invoke("fit", "--resume", tiny_run, "--device", "cuda:0", "-q"), 2, "cuda is not available")
