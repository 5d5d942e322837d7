"""Read a user's data file (``.npy``, ``.npz`` or ``.csv``) and check that it is usable.

Every check raises :class:`~ppvae.errors.DataError` with a one-line message that
names the file, says what is wrong and how to fix it.

A file format is one reader in :data:`READERS`, under its suffix: ``reader(path,
mmap_mode)`` returns the raw data and its labels (or ``None``); the checks here and the
shared preparation (:mod:`ppvae.data.transform`) do the rest, for every command that reads
data.
"""

from __future__ import annotations

import csv
import os
import warnings
import zipfile
from pathlib import Path
from typing import Callable

import numpy as np

from ppvae.errors import DataError

__all__ = ["read_array_file", "check_array", "check_labels", "is_8bit_image", "READERS", "supported_suffixes"]

_X_KEY = "x"
_LABEL_KEYS = ("y", "labels")
_EXPECTED_SHAPES = "a 2-D table (N, d), 3-D images (N, H, W) or 4-D images (N, C, H, W)"


def check_array(x: np.ndarray, name: str) -> np.ndarray:
    """Check that ``x`` is a finite numeric array of datapoints.

    Parameters
    ----------
    x : numpy.ndarray
        Candidate data, one datapoint per row along the first axis.
    name : str
        How to refer to the data in error messages (usually the file path).

    Returns
    -------
    numpy.ndarray
        ``x`` itself (not copied, so a memory-mapped array stays memory-mapped).

    Raises
    ------
    DataError
        If ``x`` is not numeric, not 2-D/3-D/4-D, empty, or holds NaN or infinite values.
    """
    if not isinstance(x, np.ndarray):
        x = np.asarray(x)
    if x.dtype.kind not in "biuf":
        raise DataError(f"{name} holds {x.dtype} values; ppvae needs a numeric (integer or float) array")
    if x.ndim not in (2, 3, 4):
        raise DataError(f"{name} has shape {tuple(x.shape)}; expected {_EXPECTED_SHAPES}")
    if x.shape[0] == 0 or x.size == 0:
        raise DataError(f"{name} holds no data (shape {tuple(x.shape)}); expected at least one datapoint")
    if x.dtype.kind == "f":
        # Integer data is always finite, so only floats need the (full-pass) check.
        finite = np.isfinite(x).reshape(x.shape[0], -1)
        bad_rows = ~finite.all(axis=1)
        if bad_rows.any():
            count = int(finite.size - np.count_nonzero(finite))
            first = int(np.argmax(bad_rows))
            raise DataError(
                f"{name} has {count} NaN or infinite value(s) (first in row {first}); clean or impute it first"
            )
    return x


def check_labels(labels, n: int, name: str) -> np.ndarray:
    """Return ``labels`` as an int64 vector of length ``n``, or raise :class:`DataError`.

    Parameters
    ----------
    labels : array-like
        One integer label per datapoint (integral floats are accepted).
    n : int
        The number of datapoints.
    name : str
        How to refer to the labels in error messages.
    """
    labels = np.asarray(labels)
    if labels.ndim != 1 or labels.shape[0] != n:
        raise DataError(f"{name} has shape {tuple(labels.shape)}; expected one label per datapoint, shape ({n},)")
    if labels.dtype.kind in "iub":
        return labels.astype(np.int64)
    if labels.dtype.kind == "f" and np.all(np.isfinite(labels)) and np.all(labels == np.round(labels)):
        return labels.astype(np.int64)
    raise DataError(f"{name} must hold integer class labels, got {labels.dtype} values; store them as integers")


def is_8bit_image(x: np.ndarray) -> bool:
    """Whether ``x`` holds 8-bit grey levels: integers in 0..255, shape (N, H, W) or (N, C, H, W).

    Parameters
    ----------
    x : numpy.ndarray
        Data as read from its source.
    """
    if x.ndim not in (3, 4) or x.dtype.kind not in "iu":
        return False
    if x.dtype == np.uint8:
        return True
    return bool(x.min() >= 0 and x.max() <= 255)


def read_array_file(path: str | os.PathLike, mmap_mode: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Read data (and labels, if the file has them) from a ``.npy``, ``.npz`` or ``.csv`` file.

    Parameters
    ----------
    path : path-like
        The file. ``.npy`` holds the data array; ``.npz`` holds it under ``"x"`` (or as its
        only array) with optional labels under ``"y"`` or ``"labels"``; ``.csv`` is a numeric
        table, one datapoint per line, with an optional header line.
    mmap_mode : {None, "r"}
        For ``.npy`` files, memory-map instead of reading into memory (ignored otherwise).

    Returns
    -------
    x : numpy.ndarray
        The data, checked with :func:`check_array`.
    labels : numpy.ndarray or None
        int64 labels, or ``None`` when the file has none.

    Raises
    ------
    DataError
        If the file is missing, of an unsupported type, unreadable, or its data is unusable.

    Examples
    --------
    >>> x, y = read_array_file("digits.npz")  # doctest: +SKIP
    """
    path = Path(path)
    name = str(path)
    if not path.is_file():
        what = "is a folder, not a file" if path.is_dir() else "does not exist"
        raise DataError(f"data file {name} {what}; check the path")
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"unsupported data file type {path.suffix or '(no extension)'!r} for {name}; "
            f"supported: {', '.join(supported_suffixes())} (or a folder of MNIST-format files)"
        )
    x, labels = reader(path, mmap_mode)
    x = check_array(x, name)
    if labels is not None:
        labels = check_labels(labels, x.shape[0], f"the labels in {name}")
    return x, labels


def _read_npy(path: Path, mmap_mode: str | None) -> np.ndarray:
    try:
        # allow_pickle=False: a data file must never be able to run code.
        return np.load(path, mmap_mode=mmap_mode, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"cannot read {path} as a .npy array ({reason}); save it with numpy.save") from None


def _read_npz(path: Path) -> tuple[np.ndarray, np.ndarray | None]:
    try:
        with np.load(path, allow_pickle=False) as archive:
            keys = list(archive.files)
            label_key = next((k for k in _LABEL_KEYS if k in keys), None)
            data_keys = [k for k in keys if k != label_key]
            if _X_KEY in keys:
                x_key = _X_KEY
            elif len(data_keys) == 1:
                x_key = data_keys[0]
            else:
                raise DataError(
                    f"{path} holds arrays {', '.join(map(repr, keys)) or '(none)'}; store the data "
                    f"under 'x' (labels optionally under 'y' or 'labels'), e.g. numpy.savez(file, x=x, y=y)"
                )
            x = archive[x_key]
            labels = archive[label_key] if label_key is not None else None
    except DataError:
        raise
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"cannot read {path} as a .npz archive ({reason}); save it with numpy.savez") from None
    return x, labels


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _read_csv(path: Path) -> np.ndarray:
    fast = _read_csv_fast(path)
    return fast if fast is not None else _read_csv_checked(path)


def _read_csv_fast(path: Path) -> np.ndarray | None:
    """numpy's C reader, for well-formed files; ``None`` sends any oddity to the checked reader."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            first = fh.readline()
        # Same header rule as the checked reader; a blank first line is left to that reader.
        cells = next(csv.reader([first]), [])
        if not any(cell.strip() for cell in cells):
            return None
        skip = 0 if any(_is_number(cell) for cell in cells) else 1
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "input contained no data": reported below instead
            out = np.loadtxt(
                path, delimiter=",", skiprows=skip, ndmin=2, comments=None, dtype=np.float64, encoding="utf-8-sig"
            )
    except (ValueError, OSError, UnicodeDecodeError, csv.Error):
        return None
    return out if out.size else None


def _read_csv_checked(path: Path) -> np.ndarray:
    """A cell-by-cell reader that names the line and column of any problem."""
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            rows = [
                (line_no, row)
                for line_no, row in enumerate(csv.reader(fh), start=1)
                if any(cell.strip() for cell in row)
            ]
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"cannot read {path} as a CSV text file ({reason}); save it as UTF-8 text") from None
    # A first line in which no cell is a number is a header (column names).
    if rows and not any(_is_number(cell) for cell in rows[0][1]):
        rows = rows[1:]
    if not rows:
        raise DataError(f"{path} has no data rows; expected one datapoint per line, comma-separated numbers")
    first_line, first_row = rows[0]
    width = len(first_row)
    out = np.empty((len(rows), width), dtype=np.float64)
    for i, (line_no, row) in enumerate(rows):
        if len(row) != width:
            raise DataError(
                f"{path}: line {line_no} has {len(row)} values but line {first_line} has {width}; "
                "every row needs the same number of columns"
            )
        try:
            # numpy converts a whole row in C, with the same rules as float().
            out[i] = np.array(row, dtype=np.float64)
        except ValueError:
            # Slow path, only to name the offending cell.
            for j, cell in enumerate(row):
                if not _is_number(cell):
                    raise DataError(
                        f"{path}: line {line_no}, column {j + 1} holds {cell.strip()!r}, which is not a number; "
                        "a CSV data file must be all numbers (one optional header line)"
                    ) from None
            raise
    return out


#: File suffix -> reader ``(path, mmap_mode) -> (x, labels or None)``: the one table of
#: file formats (``mmap_mode`` is ``"r"`` where a reader can memory-map, else ignored).
READERS: dict[str, Callable[[Path, str | None], tuple[np.ndarray, np.ndarray | None]]] = {
    ".npy": lambda path, mmap_mode: (_read_npy(path, mmap_mode), None),
    ".npz": lambda path, mmap_mode: _read_npz(path),
    ".csv": lambda path, mmap_mode: (_read_csv(path), None),
}


def supported_suffixes() -> tuple[str, ...]:
    """The data file suffixes :func:`read_array_file` reads (the keys of :data:`READERS`)."""
    return tuple(READERS)
