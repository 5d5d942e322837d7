"""The standard image datasets: MNIST and Fashion-MNIST, downloaded, local or embedded.

Three ways to the same four MNIST-format files (train/t10k images/labels):

* ``"mnist"`` / ``"fashion-mnist"``: downloaded once with pooch into the cache folder,
  md5-verified on every use;
* a local folder holding the files (``*-ubyte.gz`` or uncompressed ``*-ubyte``), for
  machines without network: all four files, or only the two ``t10k`` files;
* ``"embedded"``: the MNIST test files shipped inside the package (no network).
"""

from __future__ import annotations

import hashlib
import importlib.resources
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit

import numpy as np

from ppvae.errors import DataError, UsageError
from ppvae.data.idx import parse_idx, read_idx

__all__ = [
    "save_embedded_sample",
    "STANDARD_DATASETS",
    "StandardDataset",
    "RawData",
    "FILE_NAMES",
    "cache_folder",
    "download_standard",
    "load_standard",
    "load_embedded",
    "load_idx_folder",
    "is_idx_folder",
]

#: The four files of an MNIST-format dataset, by role; both datasets use these names.
FILE_NAMES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


@dataclass(frozen=True)
class StandardDataset:
    """One downloadable dataset.

    Attributes
    ----------
    name : str
        The data source name (``"mnist"``), also the cache subfolder.
    title : str
        Human-readable name (``"MNIST"``).
    base_url : str
        Default mirror; a file's URL is ``base_url + file name``.
    md5 : dict
        Expected md5 of each file, by file name (see :data:`FILE_NAMES`).
    """

    name: str
    title: str
    base_url: str
    md5: dict = field(default_factory=dict)


#: The standard datasets, by source name.
STANDARD_DATASETS: dict[str, StandardDataset] = {
    "mnist": StandardDataset(
        name="mnist",
        title="MNIST",
        base_url="https://ossci-datasets.s3.amazonaws.com/mnist/",
        md5={
            "train-images-idx3-ubyte.gz": "f68b3c2dcbeaaa9fbdd348bbdeb94873",
            "train-labels-idx1-ubyte.gz": "d53e105ee54ea40749a09fcbcd1e9432",
            "t10k-images-idx3-ubyte.gz": "9fb629c4189551a2d022fa330f9573f3",
            "t10k-labels-idx1-ubyte.gz": "ec29112dd5afa0611ce80d1b7f02629c",
        },
    ),
    "fashion-mnist": StandardDataset(
        name="fashion-mnist",
        title="Fashion-MNIST",
        base_url="http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        md5={
            "train-images-idx3-ubyte.gz": "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
            "train-labels-idx1-ubyte.gz": "25c81989df183df01b3e8a0aad5dffbe",
            "t10k-images-idx3-ubyte.gz": "bef4ecab320f06d8554ea6380940ec79",
            "t10k-labels-idx1-ubyte.gz": "bb300cfdad3c16e7a12a480ee83cd310",
        },
    ),
}

_EMBEDDED_TITLE = "embedded MNIST test digits"
_DOWNLOAD_CHUNK = 64 * 1024


class RawData(NamedTuple):
    """Data as read from its source, before any splitting or preprocessing.

    ``x_test``/``labels_test`` are set only when the source has an official test set;
    then ``x``/``labels`` are its official training set.
    """

    name: str
    x: np.ndarray
    labels: np.ndarray | None
    x_test: np.ndarray | None = None
    labels_test: np.ndarray | None = None


def _md5_bytes(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def _md5_file(path: Path) -> str:
    digest = hashlib.md5()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def _images_and_labels(images: np.ndarray, labels: np.ndarray, images_name: str, labels_name: str):
    """Check that an images/labels pair fits together; return labels as int64."""
    if images.ndim != 3:
        raise DataError(
            f"{images_name} holds an array of shape {images.shape}, not images (N, H, W); "
            "it is not an MNIST-format images file"
        )
    if labels.ndim != 1 or labels.shape[0] != images.shape[0]:
        raise DataError(
            f"{labels_name} holds {labels.shape} labels for {images.shape[0]} images in {images_name}; "
            "the two files do not belong together: download both again"
        )
    return labels.astype(np.int64)


# -- cache and download ---------------------------------------------------------------


def cache_folder(cache_dir: str | None, dataset: str) -> Path:
    """Return the folder that downloads of ``dataset`` are kept in.

    Parameters
    ----------
    cache_dir : str or None
        ``DataSpec.cache_dir``; when ``None``, ``$PPVAE_CACHE``, else the user cache
        folder ``pooch.os_cache("ppvae")``.
    dataset : str
        Standard dataset name; each dataset has its own subfolder.
    """
    if cache_dir:
        base = Path(cache_dir).expanduser()
    elif os.environ.get("PPVAE_CACHE"):
        base = Path(os.environ["PPVAE_CACHE"]).expanduser()
    else:
        import pooch  # imported here: only downloads need it

        base = Path(pooch.os_cache("ppvae"))
    return base / dataset


class _RecordingDownloader:
    """pooch's HTTP(S)/FTP downloader, remembering the md5 of what it downloaded.

    pooch reports a checksum mismatch only as a ValueError with prose; keeping the
    actual hash lets the error say exactly what arrived, and tells a mismatch apart
    from pooch's other ValueErrors.
    """

    def __init__(self, url: str) -> None:
        from pooch.downloaders import choose_downloader

        self._inner = choose_downloader(url, progressbar=True)
        if hasattr(self._inner, "chunk_size"):
            self._inner.chunk_size = _DOWNLOAD_CHUNK
        self.md5: str | None = None

    def __call__(self, url, output_file, pooch, check_only=False):
        result = self._inner(url, output_file, pooch, check_only=check_only)
        if not check_only:
            self.md5 = _md5_file(Path(output_file))
        return result


def _check_mirror(mirror: str) -> str:
    if not mirror.startswith(("http://", "https://", "ftp://")):
        raise UsageError(
            f"data.mirror = {mirror!r} is not an http(s) or ftp URL; "
            "for files already on disk pass their folder as the data source instead"
        )
    return mirror if mirror.endswith("/") else mirror + "/"


def _retrieve(url: str, fname: str, md5: str, folder: Path, dataset: StandardDataset) -> Path:
    """Download one file with pooch (a no-op when a verified copy is cached)."""
    import pooch
    import requests

    target = folder / fname
    downloader = _RecordingDownloader(url)
    manual = (
        f"download {', '.join(FILE_NAMES.values())} from {dataset.base_url} by hand into a folder "
        "and pass that folder as the data source (--data FOLDER), or set data.mirror"
    )
    try:
        return Path(
            pooch.retrieve(
                url, known_hash=f"md5:{md5}", fname=fname, path=folder, downloader=downloader, progressbar=True
            )
        )
    except ValueError as exc:
        if downloader.md5 is None or downloader.md5 == md5:
            raise DataError(f"could not download {url} ({_one_line(exc)}); {manual}") from None
        # pooch deletes its temporary download on a mismatch, but an older bad copy under
        # the final name (it tried to replace it) would stay; remove it so nothing bad is cached.
        _remove_if_bad(target, md5)
        raise DataError(
            f"checksum mismatch for {url}: expected md5 {md5}, got {downloader.md5}; "
            "nothing was cached; retry or set data.mirror"
        ) from None
    except requests.exceptions.RequestException as exc:
        _remove_if_bad(target, md5)
        raise DataError(f"could not download {url} ({_network_reason(exc, url)}); {manual}") from None
    except OSError as exc:
        raise DataError(
            f"cannot write {fname} to the cache folder {folder} ({_one_line(exc)}); "
            "set data.cache_dir or PPVAE_CACHE to a writable folder"
        ) from None


def _network_reason(exc, url: str) -> str:
    """A short reason for a requests failure (its own messages run to several nested reprs)."""
    import requests

    response = getattr(exc, "response", None)
    if isinstance(exc, requests.exceptions.HTTPError) and response is not None:
        return f"HTTP {response.status_code} {response.reason}".strip()
    host = urlsplit(url).netloc
    if isinstance(exc, requests.exceptions.Timeout):
        return f"no answer from {host}: timed out"
    if isinstance(exc, requests.exceptions.ConnectionError):
        return f"cannot connect to {host}: no network, or the server is down"
    return _one_line(exc)


def _remove_if_bad(path: Path, md5: str) -> None:
    try:
        if path.is_file() and _md5_file(path) != md5:
            path.unlink()
    except OSError:
        pass


def download_standard(name: str, cache_dir: str | None = None, mirror: str | None = None) -> Path:
    """Make sure the four files of a standard dataset are in the cache; return their folder.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
        The dataset.
    cache_dir : str, optional
        ``DataSpec.cache_dir`` (see :func:`cache_folder`).
    mirror : str, optional
        Base URL to download from instead of the dataset's default mirror.

    Raises
    ------
    DataError
        On a network failure (the message explains how to download by hand) or a checksum
        mismatch (nothing is left in the cache).
    """
    dataset = STANDARD_DATASETS[name]
    base = _check_mirror(mirror) if mirror else dataset.base_url
    folder = cache_folder(cache_dir, name)
    for fname in FILE_NAMES.values():
        _retrieve(base + fname, fname, dataset.md5[fname], folder, dataset)
    return folder


def load_standard(name: str, cache_dir: str | None = None, mirror: str | None = None) -> RawData:
    """Load a standard dataset (downloading it on first use) with its official split.

    Parameters
    ----------
    name : {"mnist", "fashion-mnist"}
        The dataset.
    cache_dir, mirror : str, optional
        See :func:`download_standard`.

    Returns
    -------
    RawData
        uint8 images (N, 28, 28) and int64 labels; the official test set in ``x_test``.
    """
    folder = download_standard(name, cache_dir, mirror)
    paths = {role: folder / fname for role, fname in FILE_NAMES.items()}
    arrays = {role: read_idx(path) for role, path in paths.items()}
    y = _images_and_labels(
        arrays["train_images"], arrays["train_labels"], str(paths["train_images"]), str(paths["train_labels"])
    )
    y_test = _images_and_labels(
        arrays["test_images"], arrays["test_labels"], str(paths["test_images"]), str(paths["test_labels"])
    )
    title = STANDARD_DATASETS[name].title
    return RawData(f"{title} (official train/test split)", arrays["train_images"], y, arrays["test_images"], y_test)


# -- embedded ------------------------------------------------------------------------


def load_embedded() -> RawData:
    """Load the MNIST test set shipped inside the package (10,000 images, no network).

    Raises
    ------
    DataError
        If a shipped file is damaged (md5 mismatch); reinstalling ppvae fixes it.
    """
    md5 = STANDARD_DATASETS["mnist"].md5
    arrays = {}
    for role in ("test_images", "test_labels"):
        fname = FILE_NAMES[role]
        resource = importlib.resources.files("ppvae.data").joinpath("embedded").joinpath(fname)
        try:
            data = resource.read_bytes()
        except OSError as exc:
            raise DataError(
                f"the embedded file {fname} is missing from the ppvae installation ({_one_line(exc)}); reinstall ppvae"
            ) from None
        if _md5_bytes(data) != md5[fname]:
            raise DataError(
                f"the embedded file {fname} is damaged (md5 {_md5_bytes(data)}, expected {md5[fname]}); reinstall ppvae"
            )
        arrays[role] = parse_idx(data, f"embedded {fname}")
    labels = _images_and_labels(
        arrays["test_images"], arrays["test_labels"], FILE_NAMES["test_images"], FILE_NAMES["test_labels"]
    )
    return RawData(_EMBEDDED_TITLE, arrays["test_images"], labels)


# -- local folder --------------------------------------------------------------------


def _candidates(fname: str) -> list[str]:
    """Names a standard file may have on disk: as distributed, or uncompressed.

    Some copies (e.g. on Kaggle) write ``train-images.idx3-ubyte`` with a dot.
    """
    stem = fname[: -len(".gz")]
    dotted = stem.replace("-idx", ".idx")
    return [fname, stem, dotted]


def _find(folder: Path, fname: str) -> Path | None:
    for candidate in _candidates(fname):
        path = folder / candidate
        if path.is_file():
            return path
    return None


def is_idx_folder(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a folder holding at least one standard MNIST-format file."""
    folder = Path(path)
    return folder.is_dir() and any(_find(folder, fname) for fname in FILE_NAMES.values())


def _known_md5s(fname: str) -> dict[str, str]:
    """md5 -> dataset title, for every standard dataset that has a file of this name."""
    return {ds.md5[fname]: ds.title for ds in STANDARD_DATASETS.values() if fname in ds.md5}


def _read_local(path: Path, fname: str) -> tuple[np.ndarray, str | None]:
    """Read one local file, verifying a compressed file against the known checksums."""
    title = None
    if path.name == fname:
        known = _known_md5s(fname)
        actual = _md5_file(path)
        if actual not in known:
            raise DataError(
                f"{path} does not match the md5 of the official MNIST or Fashion-MNIST {fname} "
                f"(got {actual}); it is corrupt or incomplete: download it again "
                "(a different MNIST-format dataset is accepted uncompressed, as "
                f"{fname[: -len('.gz')]})"
            )
        title = known[actual]
    return read_idx(path), title


def load_idx_folder(path: str | os.PathLike) -> RawData:
    """Load MNIST-format files from a local folder.

    With all four files the official split is kept (``x_test`` set); with only one
    images/labels pair (usually the two ``t10k`` files) the data is returned whole,
    to be split at random.

    Parameters
    ----------
    path : path-like
        The folder.

    Raises
    ------
    DataError
        If no usable pair of files is there, a file is corrupt, or a ``.gz`` file with a
        standard name does not match the official checksum.
    """
    folder = Path(path)
    found = {role: _find(folder, fname) for role, fname in FILE_NAMES.items()}
    pairs = {}
    for split in ("train", "test"):
        images, labels = found[f"{split}_images"], found[f"{split}_labels"]
        if (images is None) != (labels is None):
            have, missing = (
                (images, FILE_NAMES[f"{split}_labels"]) if labels is None else (labels, FILE_NAMES[f"{split}_images"])
            )
            raise DataError(f"{folder} has {have.name} but not {missing}; put both files of the pair in the folder")
        if images is not None:
            pairs[split] = (images, labels)
    if not pairs:
        raise DataError(
            f"{folder} holds no MNIST-format files; expected {FILE_NAMES['test_images']} and "
            f"{FILE_NAMES['test_labels']} (optionally the two train-* files too), or pass a .npy, .npz or .csv file"
        )
    loaded = {}
    titles = set()
    for split, (images_path, labels_path) in pairs.items():
        images, t1 = _read_local(images_path, FILE_NAMES[f"{split}_images"])
        labels, t2 = _read_local(labels_path, FILE_NAMES[f"{split}_labels"])
        titles.update(t for t in (t1, t2) if t)
        loaded[split] = (images, _images_and_labels(images, labels, str(images_path), str(labels_path)))
    title = titles.pop() if len(titles) == 1 else "MNIST-format"
    if len(loaded) == 2:
        (x, y), (x_test, y_test) = loaded["train"], loaded["test"]
        if x.shape[1:] != x_test.shape[1:]:
            raise DataError(
                f"the train images in {folder} are {x.shape[1:]} but the test images are "
                f"{x_test.shape[1:]}; the files come from different datasets"
            )
        return RawData(f"{title} files in {folder} (official train/test split)", x, y, x_test, y_test)
    split, (x, y) = next(iter(loaded.items()))
    which = "test" if split == "test" else "training"
    return RawData(f"{title} {which} files in {folder}", x, y)


def save_embedded_sample(folder: str | os.PathLike, n: int = 300) -> str:
    """Write the first ``n`` embedded digits with their labels as ``folder/tiny-digits.npz``.

    A small real dataset that ``data.source`` can name, for smoke runs (the examples'
    ``--tiny`` mode) and tests.

    Returns
    -------
    str
        The path of the ``.npz`` file.
    """
    raw = load_embedded()
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "tiny-digits.npz"
    np.savez(path, x=raw.x[:n], y=raw.labels[:n])
    return str(path)
