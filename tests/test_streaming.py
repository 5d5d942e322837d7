"""Datasets larger than memory (``data.stream``): streamed rows equal the in-memory ones,
block shuffling, the auto decision, training on both backends, exact resume, messages.

Peak-memory figures are measured in ``bench/memory.py``, not here (they are too noisy for
a test).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from click.testing import CliRunner
from conftest import FAST, embedded_digits

import ppvae
from ppvae.cli import cli
from ppvae.spec.config import DataSpec
from ppvae.data import load_dataset
from ppvae.data.block_shuffle import BlockShuffle
from ppvae.data.npy_rows import NpyRows
from ppvae.data.prefetch import Prefetcher
from ppvae.errors import UsageError
from ppvae.inference.metrics import evaluation_summary

N = 300  # rows in the small .npy file: 240 train, 60 held out


@pytest.fixture(scope="module")
def digits_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("stream") / "digits.npy"
    np.save(path, embedded_digits(N))
    return path


@pytest.fixture(scope="module")
def table_file(tmp_path_factory):
    """A float table with a constant column (sd 1 after standardizing) and a wide range."""
    rng = np.random.default_rng(3)
    x = rng.normal(5.0, 3.0, size=(N, 6))
    x[:, 2] = 7.0
    path = tmp_path_factory.mktemp("stream") / "table.npy"
    np.save(path, x)
    return path


def _train_order(n: int, spec: DataSpec) -> np.ndarray:
    """In-memory training position of every streamed training row (streamed rows are sorted)."""
    n_train = n - round(spec.heldout_fraction * n)
    perm = np.random.default_rng(spec.split_seed).permutation(n)[:n_train]
    return np.argsort(perm, kind="stable")


CASES = [  # (settings, likelihood, support, exact)
    ({}, "bernoulli", "unit_interval", True),  # dynamic: probabilities
    ({"binarize": "static"}, "bernoulli", "unit_interval", True),  # the same Bernoulli draws
    ({"binarize": "none", "scale": "minmax"}, "normal", "real", True),
    ({}, "poisson", "count", True),  # counts left as they are
]


@pytest.mark.parametrize("settings,likelihood,support,exact", CASES)
def test_streamed_rows_equal_the_in_memory_rows(digits_file, settings, likelihood, support, exact):
    memory = load_dataset(DataSpec(source=str(digits_file), stream=False, **settings), likelihood, support)
    spec = DataSpec(source=str(digits_file), stream=True, **settings)
    streamed = load_dataset(spec, likelihood, support)
    assert streamed.streaming and not memory.streaming
    assert streamed.binarize == memory.binarize and streamed.transform == memory.transform
    assert streamed.train.shape == memory.train.shape and streamed.heldout.shape == memory.heldout.shape
    order = _train_order(N, spec)
    np.testing.assert_array_equal(streamed.train[:], memory.train[order])
    np.testing.assert_array_equal(streamed.heldout[:], memory.heldout)
    # Any index array: the same rows, however they are asked for.
    idx = np.array([17, 3, 3, 200, 0, 239])
    np.testing.assert_array_equal(streamed.train[idx], memory.train[order[idx]])
    np.testing.assert_array_equal(streamed.heldout[-5:], memory.heldout[-5:])
    assert streamed.train[5].shape == memory.train[5].shape and streamed.train[:4].dtype == np.float32


@pytest.mark.parametrize("min_sd", [0.0, 0.8])
def test_standardized_streamed_rows_match_to_float_rounding(table_file, min_sd):
    settings = {"binarize": "none", "standardize": True, "min_sd": min_sd}
    memory = load_dataset(DataSpec(source=str(table_file), stream=False, **settings), "normal", "real")
    spec = DataSpec(source=str(table_file), stream=True, **settings)
    streamed = load_dataset(spec, "normal", "real")
    # Mean and sd come from chunked float64 sums instead of numpy's pairwise ones: equal
    # to about 1e-15 relative, far below the float32 rows' resolution (1.2e-7 relative).
    np.testing.assert_allclose(streamed.transform["mean"], memory.transform["mean"], rtol=1e-12)
    np.testing.assert_allclose(streamed.transform["sd"], memory.transform["sd"], rtol=1e-12)
    assert streamed.transform["sd"][2] == max(1.0, min_sd)  # the constant column
    np.testing.assert_allclose(streamed.train[:], memory.train[_train_order(N, spec)], rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(streamed.heldout[:], memory.heldout, rtol=1e-6, atol=1e-6)


def test_streaming_statistics_span_chunks(tmp_path, monkeypatch):
    # 4096-row chunks would cover this file in one: shrink them to test the merging.
    import ppvae.data.streaming as streaming

    monkeypatch.setattr(streaming, "CHUNK_ROWS", 7)
    rng = np.random.default_rng(1)
    path = tmp_path / "t.npy"
    np.save(path, rng.gamma(2.0, 2.0, size=(100, 4)).astype(np.float32))
    for settings in ({"binarize": "none", "standardize": True}, {"binarize": "none", "scale": "minmax"}):
        memory = load_dataset(DataSpec(source=str(path), stream=False, **settings), "normal", "real")
        streamed = load_dataset(DataSpec(source=str(path), stream=True, **settings), "normal", "real")
        for key in ("mean", "sd", "minmax_min", "minmax_max"):
            if memory.transform[key] is not None:
                np.testing.assert_allclose(streamed.transform[key], memory.transform[key], rtol=1e-10)


def test_streamed_splits_index_like_arrays(digits_file):
    ds = load_dataset(DataSpec(source=str(digits_file), stream=True), "bernoulli", "unit_interval")
    train = ds.train
    np.testing.assert_array_equal(train[-1], train[len(train) - 1])
    mask = np.zeros(len(train), dtype=bool)
    mask[[4, 9]] = True
    np.testing.assert_array_equal(train[mask], train[np.array([4, 9])])
    with pytest.raises(IndexError):
        train[len(train)]
    chunks = list(train.chunks(100))
    assert [len(c) for c in chunks] == [100, 100, 40]
    np.testing.assert_array_equal(np.concatenate(chunks), np.asarray(train))


def test_npy_rows_reads_any_order_with_repeats(tmp_path):
    x = np.arange(60, dtype=np.int16).reshape(20, 3)
    np.save(tmp_path / "a.npy", x)
    rows = NpyRows(tmp_path / "a.npy")
    idx = np.array([5, 4, 4, 19, 0, 6, 7])
    np.testing.assert_array_equal(rows.read(idx), x[idx])
    np.testing.assert_array_equal(rows.read_range(18, 25), x[18:])


# -- block shuffling ----------------------------------------------------------------------------


def test_block_shuffle_is_a_block_local_permutation_fixed_by_seed_and_epoch():
    n, block, window = 1000, 32, 3
    order = BlockShuffle(n, seed=4, epoch=2, block_rows=block, window_blocks=window).positions(0, n)
    assert np.array_equal(np.sort(order), np.arange(n))
    # Every window of the order draws its rows from `window` blocks only.
    starts = BlockShuffle(n, 4, 2, block, window).window_starts
    for a, b in zip(starts[:-1], starts[1:]):
        assert len(np.unique(order[a:b] // block)) <= window
    # Rows do move within a window, and whole blocks move across the epoch.
    assert not np.array_equal(order, np.arange(n))
    # A function of (seed, epoch) only; any cut into batches gives the same order.
    again = BlockShuffle(n, 4, 2, block, window)
    assert np.array_equal(np.concatenate([again.positions(s, s + 64) for s in range(0, n, 64)]), order)
    assert not np.array_equal(BlockShuffle(n, 4, 3, block, window).positions(0, n), order)
    assert not np.array_equal(BlockShuffle(n, 5, 2, block, window).positions(0, n), order)


def test_prefetcher_keeps_order_and_passes_errors_on():
    with Prefetcher(iter(range(50)), convert=lambda v: v * 2, depth=3) as p:
        assert list(p) == [2 * v for v in range(50)]

    def broken():
        yield 1
        raise RuntimeError("disk gone")

    with Prefetcher(broken()) as p, pytest.raises(RuntimeError, match="disk gone"):
        list(p)


# -- deciding --------------------------------------------------------------------------------------


def test_auto_streams_above_the_memory_budget_only(digits_file):
    # 240 training rows x 784 float32 values = 0.72 MiB prepared.
    small = load_dataset(DataSpec(source=str(digits_file), memory_budget_mb=0.5), "bernoulli", "unit_interval")
    large = load_dataset(DataSpec(source=str(digits_file), memory_budget_mb=1.0), "bernoulli", "unit_interval")
    assert small.streaming and not large.streaming


def test_auto_never_streams_a_source_that_cannot(digits_npy):
    ds = load_dataset(DataSpec(source=str(digits_npy), memory_budget_mb=0.01), "bernoulli", "unit_interval")
    assert not ds.streaming


@pytest.mark.parametrize("kind", ["csv", "npz", "embedded"])
def test_stream_true_on_a_source_that_cannot_stream_says_how_to_convert(tmp_path, kind):
    if kind == "embedded":
        source = "embedded"
    else:
        source = str(tmp_path / f"d.{kind}")
        x = np.random.default_rng(0).random((10, 3))
        np.savetxt(source, x, delimiter=",") if kind == "csv" else np.savez(source, x=x)
    with pytest.raises(UsageError) as err:
        load_dataset(DataSpec(source=source, stream=True), "normal", "real")
    message = str(err.value)
    assert "\n" not in message and "data.stream = true" in message
    assert ("np.save" in message) if kind != "embedded" else ('"auto"' in message)


def test_cli_stream_on_csv_is_one_line(tmp_path):
    source = tmp_path / "d.csv"
    np.savetxt(source, np.random.default_rng(0).random((10, 3)), delimiter=",")
    result = CliRunner().invoke(
        cli, ["fit", "--data", str(source), "--set", "data.stream=true", "--out", str(tmp_path / "run")]
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code == 2 and len(lines) == 1 and "Traceback" not in result.output
    assert "np.loadtxt" in lines[0] and ".npy" in lines[0]


def test_stream_true_on_a_missing_file_says_it_does_not_exist(tmp_path):
    result = CliRunner().invoke(
        cli,
        ["fit", "--data", str(tmp_path / "missing.npy"), "--set", "data.stream=true", "--out", str(tmp_path / "run")],
    )
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.exit_code != 0 and len(lines) == 1 and "does not exist" in lines[0]
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("value", ["yes", 2])
def test_bad_stream_setting_lists_the_choices(value):
    with pytest.raises(UsageError, match='choose one of: "auto", true, false'):
        DataSpec(stream=value)


# -- training and evaluation ------------------------------------------------------------------------


def _overrides(source, **extra):
    return {
        **FAST,
        "data.source": str(source),
        "data.stream": True,
        "model.latent_dim": 2,
        "train.epochs": 1,
        "train.batch_size": 64,
        **extra,
    }


# NumPyro compiles the chunk, the last step and the evaluation: about 30 s.
@pytest.mark.parametrize("backend", ["pyro", pytest.param("numpyro", marks=pytest.mark.slow)])
def test_training_streams_on_both_backends(tmp_path, digits_file, backend, monkeypatch):
    if backend == "numpyro":
        import ppvae.backends.numpyro.streaming as jax_streaming

        # Two minibatches per compiled call: the 3 full batches run as chunks of 2 and 1.
        monkeypatch.setattr(jax_streaming, "CHUNK_BYTES", 2 * 64 * 28 * 28 * 4)
    run = ppvae.fit(
        out=tmp_path / "run",
        overrides=_overrides(digits_file, **{"train.backend": backend}),
        pictures=backend == "pyro",
    )
    assert run.config.data.stream is True
    (record,) = run.metrics()
    assert record["step"] == math.ceil(240 / 64) and math.isfinite(record["loss"])
    assert math.isfinite(record["heldout_elbo"])
    files = {p.name for p in run.path.iterdir()}
    assert {"config.toml", "metrics.jsonl", "summary.json", "data.json", "checkpoint.safetensors"} <= files
    if backend == "pyro":
        assert {"samples.png", "reconstructions.png"} <= files
    ev = run.summary["evaluation"]
    assert ev["num_points"] == 60 and math.isfinite(ev["heldout_log_px"])
    # The run reopens from its folder and is still a streamed one.
    again = ppvae.load(run.path)
    assert again.dataset().streaming and again.heldout()[:3].shape == (3, 28, 28)


def test_streamed_pyro_run_resumes_to_the_same_parameters(tmp_path, digits_file):
    from safetensors.torch import load_file

    overrides = _overrides(digits_file, **{"train.epochs": 2, "data.block_rows": 16})
    whole = ppvae.fit(out=tmp_path / "whole", overrides=overrides, pictures=False)
    ppvae.fit(out=tmp_path / "part", overrides=overrides, stop_after_steps=6, pictures=False)  # mid-epoch 2
    resumed = ppvae.fit(resume=tmp_path / "part", pictures=False)
    wa = load_file(str(whole.path / "checkpoint.safetensors"))
    wb = load_file(str(resumed.path / "checkpoint.safetensors"))
    assert all(np.array_equal(wa[k].numpy(), wb[k].numpy()) for k in wa if k.startswith("model."))


class _FixedTrained:
    """Per-point values fixed by the data, so chunked and whole evaluations must agree exactly."""

    def _points(self, x):
        flat = x.reshape(len(x), -1).astype(np.float64)
        loc = np.stack([flat[:, :5].sum(1), 0.001 * flat[:, 5]], axis=1)
        return {
            "reconstruction": flat.sum(1),
            "kl": flat[:, 0] + 1.0,
            "kl_per_dim": np.abs(loc),
            "loc": loc,
            "log_px": -flat.sum(1) - flat[:, 1] ** 2,
        }

    def evaluate(self, x, num_samples, seed, is_image):
        return evaluation_summary(
            **self._points(x), num_samples=num_samples, num_features=int(np.prod(x.shape[1:])), is_image=is_image
        )

    def encode(self, x):
        return self._points(x)["loc"], None


def test_chunked_evaluation_merges_to_the_whole_record(table_file):
    from ppvae.inference.chunked_evaluation import evaluate_in_chunks

    ds = load_dataset(DataSpec(source=str(table_file), stream=True, binarize="none"), "normal", "real")
    trained = _FixedTrained()
    whole = trained.evaluate(np.asarray(ds.heldout), num_samples=3, seed=0, is_image=True)
    chunked = evaluate_in_chunks(trained, ds.heldout, num_samples=3, seed=0, is_image=True, chunk_rows=7)
    assert chunked.pop("chunks") == math.ceil(60 / 7)
    assert chunked.keys() == whole.keys()
    for key, value in whole.items():
        np.testing.assert_allclose(chunked[key], value, rtol=1e-9, err_msg=key)
