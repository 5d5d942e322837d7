"""Tests of ppvae.data: IDX reading, downloads (against a real local HTTP server), local
folders, the embedded default, user array files, splitting and preprocessing."""

from __future__ import annotations

import functools
import gzip
import hashlib
import http.server
import json
import shutil
import socket
import threading
from pathlib import Path

import numpy as np
import pytest

import ppvae.data
from ppvae.spec.config import DataSpec
from ppvae.data import (
    STANDARD_DATASETS,
    load_dataset,
    load_source,
    prepare_new,
    read_array_file,
)
from ppvae.data.idx import read_idx
from ppvae.data.standard import cache_folder
from ppvae.errors import DataError, UsageError

T10K_IMAGES = "t10k-images-idx3-ubyte.gz"
T10K_LABELS = "t10k-labels-idx1-ubyte.gz"
TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"


def _mnist_dir() -> Path:
    """The MNIST test files: ../shared/data/mnist beside the clone, else the embedded copies."""
    shared = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
    if (shared / T10K_IMAGES).is_file() and (shared / T10K_LABELS).is_file():
        return shared
    return Path(ppvae.data.__file__).resolve().parent / "embedded"


MNIST_DIR = _mnist_dir()


def _md5(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


@functools.cache
def _reference_images() -> np.ndarray:
    """The 10,000 test images read independently of ppvae (16-byte IDX header), as uint8."""
    data = gzip.decompress((MNIST_DIR / T10K_IMAGES).read_bytes())
    return np.frombuffer(data, dtype=np.uint8, offset=16).reshape(10000, 28, 28)


def _reference_labels() -> np.ndarray:
    data = gzip.decompress((MNIST_DIR / T10K_LABELS).read_bytes())
    return np.frombuffer(data, dtype=np.uint8, offset=8).astype(np.int64)


def _protocol_split():
    """PROTOCOL.md (MNIST-10k v1), verbatim: split, and the held-out binarization."""
    x = _reference_images().reshape(10000, 784) / 255.0
    perm = np.random.default_rng(0).permutation(10000)
    train, heldout = x[perm[:8000]], x[perm[8000:]]
    heldout_bin = np.random.default_rng(1).random((2000, 784)) < heldout
    return perm, train, heldout_bin


# -- a real HTTP server on 127.0.0.1 --------------------------------------------------


class _Server:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.requests: list[str] = []
        log = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                log.append(self.path)
                super().do_GET()

            def log_message(self, *args):  # keep the test output quiet
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(Handler, directory=str(root)))
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def no_proxy(monkeypatch):
    # A proxy set in the environment must not intercept requests to 127.0.0.1.
    for var in ("http_proxy", "https_proxy", "all_proxy", "HTTP_PROXY", "HTTPS_PROXY", "ALL_PROXY"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("NO_PROXY", "127.0.0.1,localhost")
    monkeypatch.setenv("no_proxy", "127.0.0.1,localhost")


@pytest.fixture
def mirror(tmp_path, monkeypatch, no_proxy):
    """A server holding the four MNIST files; the train files are copies of the t10k files.

    Only the t10k files exist on these machines, so the train entries' md5 are patched to
    the t10k md5: the real pooch download and checksum path runs for all four files.
    """
    root = tmp_path / "served"
    root.mkdir()
    for src, dst in (
        (T10K_IMAGES, T10K_IMAGES),
        (T10K_LABELS, T10K_LABELS),
        (T10K_IMAGES, TRAIN_IMAGES),
        (T10K_LABELS, TRAIN_LABELS),
    ):
        shutil.copyfile(MNIST_DIR / src, root / dst)
    md5 = STANDARD_DATASETS["mnist"].md5
    monkeypatch.setitem(md5, TRAIN_IMAGES, md5[T10K_IMAGES])
    monkeypatch.setitem(md5, TRAIN_LABELS, md5[T10K_LABELS])
    server = _Server(root)
    yield server
    server.close()


def _mnist_spec(tmp_path, url, **kw) -> DataSpec:
    return DataSpec(source="mnist", mirror=url, cache_dir=str(tmp_path / "cache"), **kw)


# -- downloads --------------------------------------------------------------------------


def test_download_verifies_caches_and_uses_official_split(tmp_path, mirror):
    spec = _mnist_spec(tmp_path, mirror.url)
    ds = load_dataset(spec, "bernoulli", "unit_interval")
    assert len(mirror.requests) == 4
    cached = tmp_path / "cache" / "mnist"
    assert sorted(p.name for p in cached.iterdir()) == sorted([T10K_IMAGES, T10K_LABELS, TRAIN_IMAGES, TRAIN_LABELS])

    # Official split: train = the train files, held-out = the t10k files, both in file order.
    images = _reference_images()
    assert ds.train.shape == (10000, 28, 28) and ds.heldout.shape == (10000, 28, 28)
    assert ds.train.dtype == np.float32 and ds.heldout.dtype == np.float32
    assert ds.train.flags.c_contiguous and ds.heldout.flags.c_contiguous
    np.testing.assert_array_equal(ds.train, (images / 255.0).astype(np.float32))
    expected_heldout = np.random.default_rng(1).random((10000, 28, 28)) < images / 255.0
    np.testing.assert_array_equal(ds.heldout, expected_heldout.astype(np.float32))
    np.testing.assert_array_equal(ds.heldout_labels, _reference_labels())
    assert ds.train_labels.dtype == np.int64
    assert ds.binarize == "dynamic" and ds.event_shape == (28, 28) and ds.is_image
    assert "MNIST" in ds.name

    # Second call: served from the cache, the server is not contacted.
    again = load_dataset(spec, "bernoulli", "unit_interval")
    assert len(mirror.requests) == 4
    np.testing.assert_array_equal(again.heldout, ds.heldout)


def test_download_checksum_mismatch_caches_nothing(tmp_path, mirror):
    served = mirror.root / T10K_IMAGES
    data = bytearray(served.read_bytes())
    data[1000] ^= 0xFF
    served.write_bytes(bytes(data))
    cached = tmp_path / "cache" / "mnist"
    cached.mkdir(parents=True)
    # A stale bad copy in the cache must not survive either (pooch would try to replace it).
    (cached / T10K_IMAGES).write_bytes(b"stale")

    with pytest.raises(DataError) as err:
        load_dataset(_mnist_spec(tmp_path, mirror.url), "bernoulli", "unit_interval")
    message = str(err.value)
    assert "checksum mismatch for" in message and T10K_IMAGES in message
    assert f"expected md5 {STANDARD_DATASETS['mnist'].md5[T10K_IMAGES]}" in message
    assert f"got {hashlib.md5(bytes(data)).hexdigest()}" in message
    assert "nothing was cached" in message and "\n" not in message
    assert not (cached / T10K_IMAGES).exists()
    assert not any("tmp" in p.name for p in cached.iterdir())  # pooch's temporary file is gone


def test_download_404_is_a_data_error(tmp_path, mirror):
    (mirror.root / TRAIN_LABELS).unlink()
    with pytest.raises(DataError, match=r"could not download .*\(HTTP 404 .*by hand into a folder"):
        load_dataset(_mnist_spec(tmp_path, mirror.url), "bernoulli", "unit_interval")
    assert not (tmp_path / "cache" / "mnist" / TRAIN_LABELS).exists()


def test_download_server_down_is_a_data_error(tmp_path, no_proxy):
    with socket.socket() as sock:  # a port that nothing listens on
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(
        DataError,
        match=r"could not download http://127\.0\.0\.1:\d+/\S+ \(cannot connect to 127\.0\.0\.1:\d+.*pass that folder as the data source",
    ):
        load_dataset(_mnist_spec(tmp_path, f"http://127.0.0.1:{port}"), "bernoulli", "unit_interval")


def test_mirror_must_be_a_url(tmp_path):
    with pytest.raises(UsageError, match="data.mirror"):
        load_dataset(_mnist_spec(tmp_path, str(tmp_path)), "bernoulli", "unit_interval")


def test_cache_folder_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("PPVAE_CACHE", str(tmp_path / "env"))
    assert cache_folder(str(tmp_path / "spec"), "mnist") == tmp_path / "spec" / "mnist"
    assert cache_folder(None, "fashion-mnist") == tmp_path / "env" / "fashion-mnist"
    monkeypatch.delenv("PPVAE_CACHE")
    assert cache_folder(None, "mnist").name == "mnist"


def test_standard_table():
    assert set(STANDARD_DATASETS) == {"mnist", "fashion-mnist"}
    for ds in STANDARD_DATASETS.values():
        assert len(ds.md5) == 4 and ds.base_url.endswith("/")
    assert STANDARD_DATASETS["mnist"].md5[T10K_IMAGES] == _md5(MNIST_DIR / T10K_IMAGES)


# -- embedded and local folders -----------------------------------------------------------


def test_embedded_default_matches_protocol():
    ds = load_dataset(DataSpec(), "bernoulli", "unit_interval")
    perm, train, heldout_bin = _protocol_split()
    assert ds.train.shape == (8000, 28, 28) and ds.heldout.shape == (2000, 28, 28)
    np.testing.assert_array_equal(ds.train.reshape(8000, 784), train.astype(np.float32))
    np.testing.assert_array_equal(ds.heldout.reshape(2000, 784), heldout_bin.astype(np.float32))
    labels = _reference_labels()
    np.testing.assert_array_equal(ds.train_labels, labels[perm[:8000]])
    np.testing.assert_array_equal(ds.heldout_labels, labels[perm[8000:]])
    assert ds.binarize == "dynamic" and ds.name == "embedded MNIST test digits"
    assert ds.transform["scale"] == "unit" and ds.transform["event_shape"] == [28, 28]
    json.dumps(ds.transform)  # plain JSON


def test_local_folder_with_t10k_files_only(tmp_path):
    for name in (T10K_IMAGES, T10K_LABELS):
        shutil.copyfile(MNIST_DIR / name, tmp_path / name)
    ds = load_dataset(DataSpec(source=str(tmp_path)), "bernoulli", "unit_interval")
    embedded = load_dataset(DataSpec(), "bernoulli", "unit_interval")
    np.testing.assert_array_equal(ds.train, embedded.train)
    np.testing.assert_array_equal(ds.heldout, embedded.heldout)
    assert str(tmp_path) in ds.name


def test_local_folder_uncompressed_and_all_four(tmp_path):
    for src, dst in (
        (T10K_IMAGES, "t10k-images-idx3-ubyte"),
        (T10K_LABELS, "t10k-labels-idx1-ubyte"),
        (T10K_IMAGES, "train-images-idx3-ubyte"),
        (T10K_LABELS, "train-labels-idx1-ubyte"),
    ):
        (tmp_path / dst).write_bytes(gzip.decompress((MNIST_DIR / src).read_bytes()))
    ds = load_dataset(DataSpec(source=str(tmp_path)), "normal", "real")
    assert ds.train.shape == (10000, 28, 28) and ds.heldout.shape == (10000, 28, 28)  # official split
    assert ds.binarize == "none"
    np.testing.assert_array_equal(ds.heldout, (_reference_images() / 255.0).astype(np.float32))


def test_local_folder_corrupt_gz(tmp_path):
    shutil.copyfile(MNIST_DIR / T10K_LABELS, tmp_path / T10K_LABELS)
    data = (MNIST_DIR / T10K_IMAGES).read_bytes()
    (tmp_path / T10K_IMAGES).write_bytes(data[: len(data) // 2])  # truncated download
    with pytest.raises(DataError, match=rf"{T10K_IMAGES} does not match the md5 .*download it again"):
        load_dataset(DataSpec(source=str(tmp_path)), "bernoulli", "unit_interval")


def test_local_folder_missing_pair_or_empty(tmp_path):
    shutil.copyfile(MNIST_DIR / T10K_IMAGES, tmp_path / T10K_IMAGES)
    with pytest.raises(DataError, match=rf"has {T10K_IMAGES} but not {T10K_LABELS}"):
        load_dataset(DataSpec(source=str(tmp_path)), "bernoulli", "unit_interval")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match="holds no MNIST-format files"):
        load_dataset(DataSpec(source=str(empty)), "bernoulli", "unit_interval")


def test_missing_source():
    with pytest.raises(DataError, match="does not exist"):
        load_dataset(DataSpec(source="/nonexistent/digits.npy"), "normal", "real")


# -- IDX ----------------------------------------------------------------------------------


def test_idx_reader_validates(tmp_path):
    images = read_idx(MNIST_DIR / T10K_IMAGES)
    assert images.shape == (10000, 28, 28) and images.dtype == np.uint8 and images.flags.writeable
    raw = gzip.decompress((MNIST_DIR / T10K_LABELS).read_bytes())

    (tmp_path / "short-ubyte").write_bytes(raw[:-3])
    with pytest.raises(DataError, match=r"short-ubyte is corrupt or truncated \(dimensions .*delete it"):
        read_idx(tmp_path / "short-ubyte")
    (tmp_path / "magic-ubyte").write_bytes(b"\x01\x02" + raw[2:])
    with pytest.raises(DataError, match="bad IDX magic number"):
        read_idx(tmp_path / "magic-ubyte")
    (tmp_path / "html-ubyte.gz").write_bytes(b"<html>not found</html>")
    with pytest.raises(DataError, match="not a gzip file"):
        read_idx(tmp_path / "html-ubyte.gz")
    (tmp_path / "cut-ubyte.gz").write_bytes(gzip.compress(raw)[:-20])
    with pytest.raises(DataError, match="bad gzip data"):
        read_idx(tmp_path / "cut-ubyte.gz")
    # Other IDX types decode big-endian.
    (tmp_path / "ints-ubyte").write_bytes(
        b"\x00\x00\x0c\x01" + (2).to_bytes(4, "big") + np.array([1, -2], dtype=">i4").tobytes()
    )
    np.testing.assert_array_equal(read_idx(tmp_path / "ints-ubyte"), [1, -2])


# -- user array files ---------------------------------------------------------------------


def _table(n=50, d=6, seed=0):
    return np.random.default_rng(seed).normal(size=(n, d))


def test_npy_round_trip_and_mmap(tmp_path):
    x = _table()
    np.save(tmp_path / "x.npy", x)
    got, labels = read_array_file(tmp_path / "x.npy")
    np.testing.assert_array_equal(got, x)
    assert labels is None
    mapped, _ = read_array_file(tmp_path / "x.npy", mmap_mode="r")
    assert isinstance(mapped, np.memmap)
    np.testing.assert_array_equal(mapped, x)


def test_npz_keys(tmp_path):
    x, y = _table(), np.arange(50) % 3
    np.savez(tmp_path / "xy.npz", x=x, y=y)
    got, labels = read_array_file(tmp_path / "xy.npz")
    np.testing.assert_array_equal(got, x)
    assert labels.dtype == np.int64 and (labels == y).all()
    np.savez(tmp_path / "only.npz", data=x)
    assert read_array_file(tmp_path / "only.npz")[1] is None
    np.savez(tmp_path / "lab.npz", images=x, labels=y)
    np.testing.assert_array_equal(read_array_file(tmp_path / "lab.npz")[1], y)
    np.savez(tmp_path / "bad.npz", a=x, b=x)
    with pytest.raises(DataError, match=r"holds arrays 'a', 'b'; store the data under 'x'"):
        read_array_file(tmp_path / "bad.npz")
    np.savez(tmp_path / "badlabels.npz", x=x, y=np.arange(3))
    with pytest.raises(DataError, match=r"expected one label per datapoint, shape \(50,\)"):
        read_array_file(tmp_path / "badlabels.npz")


def test_csv_round_trip_and_header(tmp_path):
    x = np.round(_table(), 6)
    np.savetxt(tmp_path / "x.csv", x, delimiter=",", fmt="%.6f")
    np.testing.assert_allclose(read_array_file(tmp_path / "x.csv")[0], x)
    np.savetxt(
        tmp_path / "h.csv", x, delimiter=",", fmt="%.6f", header=",".join(f"f{i}" for i in range(6)), comments=""
    )
    got = read_array_file(tmp_path / "h.csv")[0]
    assert got.shape == (50, 6)
    np.testing.assert_allclose(got, x)
    # Quoted cells and blank lines go through the checked reader.
    (tmp_path / "q.csv").write_text('a,b\n"1",2\n\n3, 4\n')
    np.testing.assert_array_equal(read_array_file(tmp_path / "q.csv")[0], [[1, 2], [3, 4]])


def test_csv_errors(tmp_path):
    (tmp_path / "ragged.csv").write_text("a,b,c\n1,2,3\n4,5,6\n7,8\n")
    with pytest.raises(DataError, match=r"line 4 has 2 values but line 2 has 3"):
        read_array_file(tmp_path / "ragged.csv")
    (tmp_path / "text.csv").write_text("1,2,3\n4,five,6\n")
    with pytest.raises(DataError, match=r"line 2, column 2 holds 'five', which is not a number"):
        read_array_file(tmp_path / "text.csv")
    (tmp_path / "empty.csv").write_text("a,b\n")
    with pytest.raises(DataError, match="no data rows"):
        read_array_file(tmp_path / "empty.csv")


def test_non_finite_values(tmp_path):
    x = _table()
    x[7, 2] = np.nan
    x[9, 0] = np.inf
    x[9, 1] = -np.inf
    np.save(tmp_path / "nan.npy", x)
    with pytest.raises(
        DataError, match=r"has 3 NaN or infinite value\(s\) \(first in row 7\); clean or impute it first"
    ):
        read_array_file(tmp_path / "nan.npy")
    (tmp_path / "inf.csv").write_text("1,2\n3,inf\n")
    with pytest.raises(DataError, match=r"1 NaN or infinite value\(s\) \(first in row 1\)"):
        read_array_file(tmp_path / "inf.csv")


def test_bad_files(tmp_path):
    np.save(tmp_path / "vec.npy", np.arange(10.0))
    with pytest.raises(DataError, match=r"has shape \(10,\); expected a 2-D table \(N, d\), 3-D images"):
        read_array_file(tmp_path / "vec.npy")
    np.save(tmp_path / "five.npy", np.zeros((2, 1, 1, 1, 1)))
    with pytest.raises(DataError, match=r"has shape \(2, 1, 1, 1, 1\)"):
        read_array_file(tmp_path / "five.npy")
    with pytest.raises(DataError, match="missing.npy does not exist"):
        read_array_file(tmp_path / "missing.npy")
    (tmp_path / "x.txt").write_text("1,2\n")
    with pytest.raises(DataError, match=r"unsupported data file type '\.txt'.*\.npy, \.npz, \.csv"):
        read_array_file(tmp_path / "x.txt")
    np.save(tmp_path / "str.npy", np.array([["a", "b"]]))
    with pytest.raises(DataError, match="numeric"):
        read_array_file(tmp_path / "str.npy")


# -- preprocessing ------------------------------------------------------------------------


def _save(tmp_path, x, name="x.npy") -> str:
    np.save(tmp_path / name, x)
    return str(tmp_path / name)


def test_support_check_for_unit_interval(tmp_path):
    source = _save(tmp_path, _table())
    with pytest.raises(DataError) as err:
        load_dataset(DataSpec(source=source), "bernoulli", "unit_interval")
    message = str(err.value)
    assert "has values outside [0, 1] (min " in message and "likelihood 'bernoulli' needs [0, 1]" in message
    assert 'data.scale="unit"' in message and "\n" not in message
    ds = load_dataset(DataSpec(source=source), "normal", "real")
    assert ds.binarize == "none" and ds.transform["scale"] == "none" and not ds.is_image
    with pytest.raises(UsageError, match="support"):
        load_dataset(DataSpec(source=source), "normal", "positive")


def test_scale_modes(tmp_path):
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(40, 4, 5), dtype=np.int64)  # int64 but 0..255: 8-bit
    ds = load_dataset(DataSpec(source=_save(tmp_path, images, "img.npy")), "bernoulli", "unit_interval")
    assert ds.transform["scale"] == "unit" and ds.binarize == "dynamic" and ds.is_image

    table = rng.uniform(-3, 7, size=(40, 3))
    table[:, 1] = 2.5  # a constant feature
    source = _save(tmp_path, table, "t.npy")
    with pytest.raises(DataError, match=r'data.scale = "unit" divides 0-255 grey levels by 255, but .* \[-'):
        load_dataset(DataSpec(source=source, scale="unit"), "normal", "real")
    ds = load_dataset(DataSpec(source=source, scale="minmax"), "continuous_bernoulli", "unit_interval")
    assert ds.train.min() == 0.0 and ds.train.max() == 1.0 and ds.heldout.min() >= 0 and ds.heldout.max() <= 1
    assert (ds.train[:, 1] == 0).all() and (ds.heldout[:, 1] == 0).all()
    assert ds.binarize == "none"  # auto binarization is for 'bernoulli' only
    assert ds.transform["minmax_min"][1] == 2.5 and len(ds.transform["minmax_max"]) == 3
    json.dumps(ds.transform)

    # Float data already in [0, 1] is not 8-bit: auto means "none", and "unit" is refused.
    unit = rng.uniform(size=(30, 2))
    source = _save(tmp_path, unit, "u.npy")
    ds = load_dataset(DataSpec(source=source), "bernoulli", "unit_interval")
    assert ds.transform["scale"] == "none" and ds.binarize == "dynamic"
    with pytest.raises(DataError, match=r"already lies in \[0, 1\]"):
        load_dataset(DataSpec(source=source, scale="unit"), "bernoulli", "unit_interval")

    # A flat (N, 784) uint8 table is a table, not an image: the message says how to scale it.
    flat = _reference_images()[:50].reshape(50, 784)
    with pytest.raises(DataError, match=r"max 255\) .*data.scale=\"unit\""):
        load_dataset(DataSpec(source=_save(tmp_path, flat, "flat.npy")), "bernoulli", "unit_interval")


def test_standardize(tmp_path):
    x = np.random.default_rng(1).normal(loc=5, scale=[1, 2, 3, 0.5], size=(500, 4))
    x[:, 3] = 1.0  # constant: sd 0 becomes 1
    ds = load_dataset(DataSpec(source=_save(tmp_path, x), standardize=True), "normal", "real")
    np.testing.assert_allclose(ds.train[:, :3].mean(axis=0), 0, atol=1e-5)
    np.testing.assert_allclose(ds.train[:, :3].std(axis=0), 1, atol=1e-4)
    assert (ds.train[:, 3] == 0).all() and ds.transform["sd"][3] == 1.0
    with pytest.raises(DataError, match="set data.standardize = false"):
        load_dataset(DataSpec(source=_save(tmp_path, x), standardize=True), "bernoulli", "unit_interval")
    with pytest.raises(UsageError, match="standardize and data.binarize"):
        DataSpec(standardize=True, binarize="dynamic")


def test_min_sd_bounds_what_a_near_constant_feature_is_divided_by(tmp_path):
    rng = np.random.default_rng(2)
    x = rng.normal(loc=5, scale=[1.0, 0.01, 2.0], size=(400, 3))
    source = _save(tmp_path, x)
    ds = load_dataset(DataSpec(source=source, standardize=True, min_sd=0.5), "normal", "real")
    sd = x[: len(x)].std(axis=0)
    # Feature 1's sd (about 0.01) is raised to 0.5; the others keep their own sd.
    assert ds.transform["sd"][1] == 0.5 and ds.transform["min_sd"] == 0.5
    assert ds.transform["sd"][0] == pytest.approx(sd[0], rel=0.2) and ds.transform["sd"][2] > 1.5
    assert np.abs(ds.train[:, 1]).max() < 0.2  # residuals of 0.01 divided by 0.5, not by 0.01
    for bad in (-1, float("nan"), "x"):
        with pytest.raises(UsageError, match="data.min_sd must be a non-negative number"):
            DataSpec(standardize=True, min_sd=bad)


def test_binarize_modes(tmp_path):
    ds = load_dataset(DataSpec(binarize="static"), "bernoulli", "unit_interval")
    assert set(np.unique(ds.train)) == {0.0, 1.0} and ds.binarize == "static"
    _, train, heldout_bin = _protocol_split()
    expected = np.random.default_rng(2).random((8000, 784)) < train
    np.testing.assert_array_equal(ds.train.reshape(8000, 784), expected)
    np.testing.assert_array_equal(ds.heldout.reshape(2000, 784), heldout_bin)

    ds = load_dataset(DataSpec(binarize="none"), "bernoulli", "unit_interval")
    assert ds.binarize == "none" and len(np.unique(ds.heldout)) > 2
    source = _save(tmp_path, _table())
    with pytest.raises(DataError, match=r"data.binarize = 'dynamic' .*needs data in \[0, 1\]"):
        load_dataset(DataSpec(source=source, binarize="dynamic"), "bernoulli", "unit_interval")


def test_split_needs_both_parts(tmp_path):
    source = _save(tmp_path, _table(n=2))
    with pytest.raises(DataError, match="need at least 1 of each"):
        load_dataset(DataSpec(source=source, heldout_fraction=0.1), "normal", "real")
    ds = load_dataset(DataSpec(source=source, heldout_fraction=0.5), "normal", "real")
    assert ds.train.shape == (1, 6) and ds.heldout.shape == (1, 6)


def test_prepare_new_shapes_and_identity():
    ds = load_dataset(DataSpec(), "bernoulli", "unit_interval")
    perm, _, _ = _protocol_split()
    heldout_raw = _reference_images()[perm[8000:]]
    np.testing.assert_array_equal(prepare_new(heldout_raw, ds.transform, 0), ds.heldout)
    flat = prepare_new(heldout_raw.reshape(2000, 784), ds.transform, 0)
    assert flat.shape == (2000, 28, 28) and flat.dtype == np.float32
    np.testing.assert_array_equal(flat, ds.heldout)
    with pytest.raises(DataError, match=r"expected datapoints of shape \(28, 28\), got \(10,\)"):
        prepare_new(np.zeros((5, 10)), ds.transform, 0)
    with pytest.raises(DataError, match=r"expected datapoints of shape \(28, 28\)"):
        prepare_new(np.zeros(784), ds.transform, 0)
    bad = heldout_raw[:3].astype(np.float64)
    bad[1, 0, 0] = np.nan
    with pytest.raises(DataError, match=r"first in row 1"):
        prepare_new(bad, ds.transform, 0)
    with pytest.raises(DataError, match="0-255"):
        prepare_new(np.full((2, 28, 28), 300), ds.transform, 0)
    with pytest.raises(DataError, match="pass the raw 0-255 grey levels"):
        prepare_new(heldout_raw[:3] / 255.0, ds.transform, 0)


def test_load_source(tmp_path):
    ds = load_dataset(DataSpec(), "bernoulli", "unit_interval")
    x, labels = load_source("embedded", DataSpec(), ds.transform)
    np.testing.assert_array_equal(x, ds.heldout)
    np.testing.assert_array_equal(labels, ds.heldout_labels)

    images = _reference_images()[:20]
    np.savez(tmp_path / "new.npz", x=images.reshape(20, 784), y=np.arange(20))
    x, labels = load_source(str(tmp_path / "new.npz"), DataSpec(), ds.transform)
    assert x.shape == (20, 28, 28) and x.dtype == np.float32 and set(np.unique(x)) <= {0.0, 1.0}
    np.testing.assert_array_equal(labels, np.arange(20))
    with pytest.raises(DataError, match="does not exist"):
        load_source(str(tmp_path / "nope.npy"), DataSpec(), ds.transform)


def test_no_torch_or_jax_imports():
    source = Path(ppvae.data.__file__).parent
    for path in source.glob("*.py"):
        text = path.read_text()
        assert "import torch" not in text and "import jax" not in text, path
