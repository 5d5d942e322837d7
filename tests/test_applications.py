"""The everyday applications: anomaly scores (``ppvae score``), latent maps and
interpolations (``ppvae plot``), and the linear probe of ``ppvae evaluate``.

Numbers are checked through the Python API, wiring and messages through the CLI. The
Pyro run is conftest's ``tiny_run`` (2-D latent); one small NumPyro run with a 3-D
latent covers the other backend and the PCA projection.
"""

from __future__ import annotations

import json
import math
import struct
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

import ppvae
from ppvae.cli import cli
from ppvae.errors import DataError, UsageError
from ppvae.analysis.scoring import positives_from_labels, read_labels, roc_auc

from conftest import FAST, embedded_digits

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


# -- helpers ---------------------------------------------------------------------------------


def invoke(*args):
    return CliRunner().invoke(cli, [str(a) for a in args])


def assert_ok(result):
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.output}\n{result.exception!r}"
    assert "Traceback" not in result.output
    return result


def assert_error(result, code, *words):
    """One ``Error: ...`` line on stderr holding every word, the exit code, no traceback."""
    assert isinstance(result.exception, SystemExit), f"uncaught {result.exception!r}\n{result.output}"
    assert "Traceback" not in result.output
    assert result.exit_code == code, f"exit code {result.exit_code}, expected {code}:\n{result.output}"
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    for word in words:
        assert word.lower() in lines[0].lower(), f"{word!r} not in: {lines[0]}"


def png_size(path: Path) -> tuple[int, int]:
    """(width, height) in pixels, read from the PNG header."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    return struct.unpack(">II", data[16:24])


def read_csv(path: Path) -> tuple[list[str], np.ndarray]:
    lines = path.read_text().splitlines()
    return lines[0].split(","), np.asarray([[float(v) for v in ln.split(",")] for ln in lines[1:]])


def heldout_labels(run: Path) -> np.ndarray:
    return ppvae.load(run).load_data(None)[1]


@pytest.fixture(scope="module")
def mixed_npz(tmp_path_factory) -> Path:
    """60 real digits (label 0) and 30 salt-and-pepper noise images (label 1), as 0-255 grey levels."""
    rng = np.random.default_rng(0)
    noise = (rng.random((30, 28, 28)) < 0.5).astype(np.uint8) * 255
    path = tmp_path_factory.mktemp("mixed") / "mixed.npz"
    np.savez(path, x=np.concatenate([embedded_digits(60), noise]), y=np.r_[np.zeros(60, int), np.ones(30, int)])
    return path


@pytest.fixture(scope="module")
def numpyro_run(tmp_path_factory, digits_npy) -> Path:
    """A small NumPyro run with a 3-D latent (one compile for the module)."""
    pytest.importorskip("numpyro")
    out = tmp_path_factory.mktemp("runs") / "numpyro3"
    ppvae.fit(
        out=out,
        backend="numpyro",
        pictures=False,
        overrides={
            **FAST,
            "data.source": str(digits_npy),
            "model.latent_dim": 3,
            "train.epochs": 1,
            "train.batch_size": 64,
        },
    )
    return out


# -- scores through the API ------------------------------------------------------------------


def test_iwae_score_is_below_elbo_score_and_matches_the_backend_estimator(tiny_run):
    run = ppvae.load(tiny_run)
    x = run.heldout()
    k = 50
    s = run.score(x, num_samples=k, seed=0)
    assert set(s) == {"neg_elbo", "neg_log_px", "neg_elbo_stderr"}
    assert all(v.shape == (len(x),) and v.dtype == np.float64 and np.isfinite(v).all() for v in s.values())
    # Same draws for both: log-mean-exp >= mean (Jensen) holds point by point, not only on average.
    assert np.all(s["neg_log_px"] <= s["neg_elbo"] + 1e-9)
    assert np.mean(s["neg_elbo"] - s["neg_log_px"]) > 0
    # The IWAE part is the backend's own estimator with independent draws: per-point differences
    # have mean 0; tolerance 4 standard errors of their mean (a false alarm about 1 in 16,000).
    other = -np.asarray(run.trained.per_point_log_px(x, k, seed=123), dtype=np.float64)
    diff = s["neg_log_px"] - other
    assert abs(diff.mean()) < 4 * diff.std(ddof=1) / math.sqrt(len(diff))
    # The per-point standard error of -ELBO is that of a mean of K draws.
    assert np.all(s["neg_elbo_stderr"] > 0)
    # Seeded: the same seed gives the same scores, another seed others.
    assert np.array_equal(run.score(x, num_samples=k, seed=0)["neg_elbo"], s["neg_elbo"])
    assert not np.array_equal(run.score(x, num_samples=k, seed=1)["neg_elbo"], s["neg_elbo"])


def test_one_draw_scores_are_equal(tiny_run):
    # K = 1: the IWAE bound is the one-sample ELBO, exactly.
    s = ppvae.load(tiny_run).score(num_samples=1)
    np.testing.assert_allclose(s["neg_log_px"], s["neg_elbo"], rtol=0, atol=1e-9)
    assert np.all(s["neg_elbo_stderr"] == 0)


def test_scores_separate_noise_from_digits(tiny_run, mixed_npz):
    run = ppvae.load(tiny_run)
    x, y = run.load_data(str(mixed_npz))
    s = run.score(x, num_samples=10)
    positives = positives_from_labels(y)
    for name in ("neg_elbo", "neg_log_px"):
        assert roc_auc(s[name], positives) > 0.95, name
    # AUC is a ranking statistic: reversing the scores gives 1 - AUC.
    assert roc_auc(-s["neg_log_px"], positives) == pytest.approx(1 - roc_auc(s["neg_log_px"], positives))


def test_latent_density_scores_rank_far_points_higher():
    from ppvae.analysis.scoring import latent_density_scores

    train = np.random.default_rng(0).normal(size=(200, 2))
    points = np.array([[0.0, 0.0], [1.5, 0.0], [5.0, 5.0]])
    s = latent_density_scores(train, points, components=2)
    assert s[0] < s[1] < s[2]
    # Seeded: the same fit twice gives the same numbers.
    assert np.array_equal(s, latent_density_scores(train, points, components=2))


def test_score_with_latent_density(tiny_run, mixed_npz, tmp_path):
    run = ppvae.load(tiny_run)
    x, y = run.load_data(str(mixed_npz))
    s = run.score(x, num_samples=5, latent_density=True)
    assert s["neg_log_latent_density"].shape == (len(x),) and np.isfinite(s["neg_log_latent_density"]).all()
    assert "neg_log_latent_density" not in run.score(x, num_samples=5)
    out = tmp_path / "s.csv"
    d = json.loads(
        assert_ok(
            invoke("score", tiny_run, "--data", mixed_npz, "--latent-density", "--out", out, "-k", 5, "--json")
        ).stdout
    )
    assert 0.0 <= d["roc_auc"]["neg_log_latent_density"] <= 1.0 and "mean_neg_log_latent_density" in d
    assert read_csv(out)[0] == ["index", "label", "anomalous", "neg_elbo", "neg_log_px", "neg_log_latent_density"]
    width, height = png_size(out.with_suffix(".png"))
    assert 0.8 < width / height < 1.25  # four panels as a 2 x 2 grid


def test_positives_from_labels():
    y = np.array([0, 3, 9, 9, 1])
    assert positives_from_labels(y, [9]).tolist() == [False, False, True, True, False]
    assert positives_from_labels(y, [1, 3]).tolist() == [False, True, False, False, True]
    assert positives_from_labels(np.array([0, 1, 1])).tolist() == [False, True, True]
    assert positives_from_labels(y) is None  # not 0/1 and no anomalous class: no AUC
    with pytest.raises(DataError, match="no point has label"):
        positives_from_labels(y, [7])
    with pytest.raises(DataError, match="every point"):
        positives_from_labels(np.array([9, 9]), [9])


def test_read_labels(tmp_path):
    (tmp_path / "y.csv").write_text("label\n1\n0\n1\n")
    assert read_labels(tmp_path / "y.csv", 3).tolist() == [1, 0, 1]
    np.save(tmp_path / "y.npy", np.array([2.0, 3.0]))
    assert read_labels(tmp_path / "y.npy", 2).tolist() == [2, 3]
    with pytest.raises(DataError, match=r"shape \(2,\); expected one label per datapoint, shape \(3,\)"):
        read_labels(tmp_path / "y.npy", 3)
    with pytest.raises(DataError, match="does not exist"):
        read_labels(tmp_path / "none.npy", 3)
    np.save(tmp_path / "f.npy", np.array([0.5, 1.0]))
    with pytest.raises(DataError, match="integer"):
        read_labels(tmp_path / "f.npy", 2)


def test_score_rejects_bad_num_samples(tiny_run):
    with pytest.raises(UsageError, match="positive integer"):
        ppvae.load(tiny_run).score(num_samples=0)


# -- ppvae score -----------------------------------------------------------------------------


def test_score_cli_writes_csv_auc_and_picture(tiny_run, tmp_path):
    out = tmp_path / "scores.csv"
    result = assert_ok(invoke("score", tiny_run, "--anomalous", "9", "--out", out, "-k", 10))
    assert "ROC AUC" in result.stdout and str(out) in result.stdout
    header, rows = read_csv(out)
    assert header == ["index", "label", "anomalous", "neg_elbo", "neg_log_px"]
    labels = heldout_labels(tiny_run)
    assert rows.shape == (len(labels), 5)
    assert rows[:, 0].tolist() == list(range(len(labels)))
    assert rows[:, 1].astype(int).tolist() == labels.tolist()
    assert rows[:, 2].astype(int).tolist() == (labels == 9).astype(int).tolist()
    assert np.all(rows[:, 4] <= rows[:, 3] + 1e-6)  # -log p(x) <= -ELBO, same draws
    width, height = png_size(out.with_suffix(".png"))
    assert width > 1000 and 300 < height < width  # three panels side by side


def test_score_cli_json_auc_of_noise_vs_digits(tiny_run, mixed_npz, tmp_path):
    # 0/1 labels from a separate file, no --anomalous needed.
    labels = tmp_path / "is_noise.npy"
    np.save(labels, np.r_[np.zeros(60, int), np.ones(30, int)])
    out = tmp_path / "s.csv"
    result = assert_ok(
        invoke("score", tiny_run, "--data", mixed_npz, "--labels", labels, "--out", out, "-k", 10, "--json")
    )
    d = json.loads(result.stdout)
    assert d["num_points"] == 90 and d["num_anomalous"] == 30 and d["num_normal"] == 60
    assert d["roc_auc"]["neg_log_px"] > 0.95 and d["roc_auc"]["neg_elbo"] > 0.95
    assert d["mean_neg_log_px"] <= d["mean_neg_elbo"]
    assert Path(d["csv"]) == out and Path(d["picture"]).is_file()


def test_score_without_positives_writes_scores_only(tiny_run, tmp_path, digits_npy):
    # Labels 0-9 and no --anomalous: scores, no AUC, a hint; no labels at all: no label column.
    out = tmp_path / "s.csv"
    result = assert_ok(invoke("score", tiny_run, "--out", out, "-k", 5))
    assert "--anomalous" in result.stdout and not out.with_suffix(".png").exists()
    assert read_csv(out)[0] == ["index", "label", "neg_elbo", "neg_log_px"]
    bare = tmp_path / "bare.npy"
    np.save(bare, embedded_digits(20))
    out2 = tmp_path / "bare.csv"
    assert_ok(invoke("score", tiny_run, "--data", bare, "--out", out2, "-k", 5))
    header, rows = read_csv(out2)
    assert header == ["index", "neg_elbo", "neg_log_px"] and rows.shape == (20, 3)


def test_score_refuses_to_overwrite(tiny_run, tmp_path):
    out = tmp_path / "scores.csv"
    out.write_text("precious")
    assert_error(invoke("score", tiny_run, "--out", out, "-k", 2), 2, str(out), "already exists", "--force")
    assert out.read_text() == "precious"
    # The picture beside it is protected too.
    out2, picture = tmp_path / "other.csv", tmp_path / "other.png"
    picture.write_bytes(b"precious")
    assert_error(invoke("score", tiny_run, "--anomalous", "9", "--out", out2, "-k", 2), 2, "other.png", "--force")
    assert picture.read_bytes() == b"precious" and not out2.exists()
    assert_ok(invoke("score", tiny_run, "--anomalous", "9", "--out", out2, "-k", 2, "--force"))
    assert picture.read_bytes()[:8] == PNG_MAGIC and out2.is_file()


@pytest.mark.parametrize(
    "case", ["no labels", "absent class", "bad classes", "labels length", "out suffix", "wrong shape"]
)
def test_score_errors_are_one_line(tiny_run, tmp_path, case):
    bare = tmp_path / "bare.npy"
    np.save(bare, embedded_digits(10))
    out = tmp_path / "s.csv"
    args = {
        "no labels": (["--data", bare, "--anomalous", "9"], 2, ("--anomalous needs labels", "--labels")),
        "absent class": (["--anomalous", "42"], 1, ("label(s) 42", "labels present")),
        "bad classes": (["--anomalous", "nine"], 2, ("--anomalous", "integer")),
        "labels length": (["--data", bare, "--labels", tmp_path / "y.npy"], 1, ("shape (3,)", "(10,)")),
        "out suffix": (["--out", tmp_path / "s.txt"], 2, ("s.txt", ".csv")),
        "wrong shape": (["--data", tmp_path / "flat.npy"], 1, ("expected datapoints of shape (28, 28)",)),
    }[case]
    np.save(tmp_path / "y.npy", np.array([0, 1, 1]))
    np.save(tmp_path / "flat.npy", np.zeros((4, 10), np.uint8))
    extra, code, words = args
    command = ["score", tiny_run, *extra]
    if "--out" not in extra:
        command += ["--out", out]
    assert_error(invoke(*command, "-k", 2), code, *words)
    assert not out.exists()


# -- ppvae plot ------------------------------------------------------------------------------


def test_plot_help_has_examples():
    for args in (["plot"], ["plot", "latent"], ["plot", "interpolate"], ["score"]):
        text = assert_ok(invoke(*args, "--help")).stdout
        assert "Examples" in text and f"ppvae {' '.join(args)}" in text, args
    assert "score" in assert_ok(invoke("--help")).stdout


def test_plot_latent_2d_with_manifold(tiny_run, tmp_path, digits_npy):
    out = tmp_path / "latent.png"
    result = assert_ok(invoke("plot", "latent", tiny_run, "--out", out, "--grid-size", 6))
    assert str(out) in result.stdout
    width, height = png_size(out)
    assert width > 1.6 * height > 500  # scatter and manifold side by side
    # On a data file (all 600 points) too; an existing picture needs --force.
    assert_error(invoke("plot", "latent", tiny_run, "--data", digits_npy, "--out", out), 2, "--force")
    assert_ok(invoke("plot", "latent", tiny_run, "--data", digits_npy, "--out", out, "--force"))
    assert "600 points" in invoke("plot", "latent", tiny_run, "--data", digits_npy, "--out", out, "--force").stdout


def test_plot_interpolate(tiny_run, tmp_path):
    out = tmp_path / "line.png"
    result = assert_ok(invoke("plot", "interpolate", tiny_run, "--between", 0, 5, "--steps", 6, "--out", out))
    assert "between points 0 and 5" in result.stdout
    width, height = png_size(out)
    assert width > 3 * height  # one strip of 8 tiles
    more = tmp_path / "more.png"
    assert_ok(invoke("plot", "interpolate", tiny_run, "--between", 0, 5, "--steps", 14, "--out", more))
    assert png_size(more)[0] > width


@pytest.mark.parametrize(
    "args, code, words",
    [
        (["--between", 0, 999], 2, ("J = 999", "has 120 points", "from 0 to 119")),
        (["--between", -1, 3], 2, ("I = -1", "from 0 to 119")),
        (["--between", 4, 4], 2, ("two different points",)),
        (["--between", 0, 1, "--steps", 1], 2, ("--steps", "at least 2")),
    ],
)
def test_plot_interpolate_errors(tiny_run, tmp_path, args, code, words):
    out = tmp_path / "line.png"
    assert_error(invoke("plot", "interpolate", tiny_run, *args, "--out", out), code, *words)
    assert not out.exists()


def test_plot_out_must_be_png(tiny_run, tmp_path):
    assert_error(invoke("plot", "latent", tiny_run, "--out", tmp_path / "x.jpg"), 2, "x.jpg", ".png")


# -- linear probe ----------------------------------------------------------------------------


def test_linear_probe_in_evaluate_with_labels(tiny_run):
    ev = json.loads(assert_ok(invoke("evaluate", tiny_run, "-k", 5, "--json")).stdout)
    assert 0.0 <= ev["linear_probe_accuracy"] <= 1.0
    # Even a 2-epoch, 2-D latent beats guessing among 10 digits (0.1); 120 points give an
    # accuracy with standard error <= 0.046, so 0.2 is over 2 standard errors above chance.
    assert ev["linear_probe_accuracy"] > 0.2
    assert "training split" in ev["linear_probe"]["trained_on"]
    assert "held-out split, 120 points" == ev["linear_probe"]["scored_on"]
    text = assert_ok(invoke("evaluate", tiny_run, "-k", 5)).stdout
    assert "linear probe" in text and "held-out split" in text


def test_linear_probe_absent_without_labels(tiny_run, tmp_path):
    bare = tmp_path / "bare.npy"
    np.save(bare, embedded_digits(30))
    ev = json.loads(assert_ok(invoke("evaluate", tiny_run, "--data", bare, "-k", 5, "--json")).stdout)
    assert "linear_probe_accuracy" not in ev and "linear_probe" not in ev
    assert "linear probe" not in assert_ok(invoke("evaluate", tiny_run, "--data", bare, "-k", 5)).stdout


def test_linear_probe_api_matches_a_direct_fit(tiny_run):
    from ppvae.inference.metrics import linear_probe_accuracy

    run = ppvae.load(tiny_run)
    ds = run.dataset()
    direct = linear_probe_accuracy(
        run.encode(ds.heldout)[0], ds.heldout_labels, run.encode(ds.heldout)[0], ds.heldout_labels
    )
    assert direct["num_train"] == direct["num_test"] == len(ds.heldout)
    # Too few classes to learn: no probe.
    assert linear_probe_accuracy(np.zeros((5, 2)), np.zeros(5, int), np.zeros((3, 2)), np.zeros(3, int)) is None


# -- the NumPyro backend ---------------------------------------------------------------------


@pytest.mark.slow  # a NumPyro fit and its compiles: ~25 s on 2 idle cores
def test_numpyro_scores_latent_pca_and_probe(numpyro_run, tmp_path):
    run = ppvae.load(numpyro_run)
    x, labels = run.load_data(None)
    s = run.score(x, num_samples=20, seed=0)
    assert np.all(np.isfinite(s["neg_elbo"])) and np.all(s["neg_log_px"] <= s["neg_elbo"] + 1e-6)
    ev = run.evaluate(num_samples=5)
    assert 0.0 <= ev["linear_probe_accuracy"] <= 1.0
    out = tmp_path / "latent.png"
    from ppvae.plotting.latents import plot_latent, project_2d

    points, axis_labels, note = project_2d(run.encode(x)[0])
    assert points.shape == (len(x), 2) and "PC 1" in axis_labels[0] and "3-D" in note
    plot_latent(run, x, out, labels=labels)
    width, height = png_size(out)
    assert width < 1.6 * height  # no manifold panel for a 3-D latent
