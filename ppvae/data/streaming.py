"""Datasets larger than memory: a ``.npy`` file read by rows, prepared chunk by chunk.

In streaming mode (``data.stream``) nothing proportional to the dataset's size is held:

- the split is the same seeded permutation as in memory, but kept as row *numbers*
  (4 bytes per row next to a row's hundreds of bytes), the training rows sorted so that
  reading them is sequential;
- the preprocessing statistics (min/max, mean/sd) come from chunked passes, and every
  chunk is prepared with the very steps of the in-memory path, so a streamed row equals
  the in-memory row (exactly, up to the float rounding of chunked mean/sd sums where
  ``data.standardize`` is on); binarization draws the same uniforms, by seeking the
  random stream to the row's place in the in-memory split;
- :class:`StreamingRows` stands in for ``Dataset.train``/``Dataset.heldout``: it has a
  length, shape and dtype, and slicing or indexing it returns prepared float32 rows.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Iterator

import numpy as np

from ppvae.spec.config import DataSpec
from ppvae.errors import DataError, UsageError
from ppvae.data.arrays import is_8bit_image
from ppvae.data.dataset import Dataset
from ppvae.data.npy_rows import NpyRows, npy_header
from ppvae.data.transform import (
    check_counts,
    check_support,
    check_unit,
    fit_transform,
    resolve_binarize,
    floor_sd,
    scale_values,
    split_indices,
    standard_name,
    standardize_values,
)

__all__ = [
    "StreamingRows",
    "load_streaming_dataset",
    "wants_streaming",
    "CHUNK_ROWS",
    "EPOCH_HELDOUT_ROWS",
    "WINDOW_BLOCKS",
]

#: Rows read and prepared at a time in the statistics passes and in chunked evaluation.
CHUNK_ROWS = 4096
#: Held-out rows of the per-epoch held-out ELBO when streaming (the split's first rows:
#: a random sample, since the held-out split is in permutation order). The final
#: evaluation uses every held-out row, in chunks.
EPOCH_HELDOUT_ROWS = 10_000
#: Blocks whose rows are shuffled together each epoch (see :mod:`.block_shuffle`).
WINDOW_BLOCKS = 4


def _uniforms(seed: int, positions: np.ndarray, row_shape: tuple) -> np.ndarray:
    """The float64 uniforms ``default_rng(seed).random((n, *row_shape))`` gives rows ``positions``.

    PCG64 can jump ahead, and each float64 uses one 64-bit draw, so row ``p`` of the
    in-memory draw starts ``p * d`` draws in. Runs of consecutive positions share a jump.
    """
    d = int(np.prod(row_shape, dtype=np.int64))
    out = np.empty((len(positions),) + tuple(row_shape))
    if not len(positions):
        return out
    breaks = np.flatnonzero(np.diff(positions) != 1) + 1
    starts = np.concatenate([[0], breaks]).tolist()
    ends = np.concatenate([breaks, [len(positions)]]).tolist()
    for a, b in zip(starts, ends):
        bits = np.random.PCG64(seed)
        bits.advance(int(positions[a]) * d)
        out[a:b] = np.random.Generator(bits).random((b - a,) + tuple(row_shape))
    return out


class StreamingRows:
    """A prepared split of a ``.npy`` file, read and prepared on demand.

    Parameters
    ----------
    source : NpyRows
        The file's rows.
    rows : numpy.ndarray
        Row numbers in the file, in this split's order.
    transform : dict
        The fitted ``Dataset.transform``.
    work_dtype : numpy dtype
        The dtype the in-memory path prepares this split in (float64 where it binarizes).
    binarize_seed : int, optional
        Binarize the prepared rows with uniforms of ``default_rng(binarize_seed)``.
    positions : numpy.ndarray, optional
        Each row's place in the in-memory split (which the uniforms are drawn for); by
        default its place here.
    name : str
        For messages.

    Examples
    --------
    >>> ds = load_dataset(DataSpec(source="big.npy", stream=True), "bernoulli", "unit_interval")  # doctest: +SKIP
    >>> ds.train.shape, ds.train[:64].dtype  # doctest: +SKIP
    ((2040000, 28, 28), dtype('float32'))
    """

    dtype = np.dtype(np.float32)

    def __init__(
        self,
        source: NpyRows,
        rows: np.ndarray,
        transform: dict,
        work_dtype,
        *,
        binarize_seed: int | None = None,
        positions: np.ndarray | None = None,
        name: str = "data",
    ):
        self.source, self.rows, self.transform = source, rows, transform
        self.work_dtype, self.binarize_seed, self.positions, self.name = work_dtype, binarize_seed, positions, name

    @property
    def shape(self) -> tuple:
        return (len(self.rows),) + tuple(self.source.row_shape)

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    def __len__(self) -> int:
        return len(self.rows)

    def __repr__(self) -> str:
        return f"StreamingRows(shape={self.shape}, source={str(self.source.path)!r})"

    def __getitem__(self, key) -> np.ndarray:
        n = len(self)
        if isinstance(key, (int, np.integer)):
            i = int(key) + (n if key < 0 else 0)
            if not 0 <= i < n:
                raise IndexError(f"index {key} is out of range for {n} rows")
            return self.take(np.array([i]))[0]
        if isinstance(key, slice):
            return self.take(np.arange(*key.indices(n)))
        idx = np.asarray(key)
        if idx.dtype == bool:
            idx = np.flatnonzero(idx)
        idx = np.where(idx < 0, idx + n, idx).astype(np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n):
            raise IndexError(f"row index out of range for {n} rows")
        return self.take(idx)

    def take(self, idx: np.ndarray) -> np.ndarray:
        """Prepared float32 rows at positions ``idx`` of this split."""

        idx = np.asarray(idx, dtype=np.int64)
        raw = self.source.read(self.rows[idx])
        out = standardize_values(
            scale_values(raw, self.transform, self.work_dtype, self.name, new_data=False, check=False), self.transform
        )
        if self.binarize_seed is None:
            return np.ascontiguousarray(out, dtype=np.float32)
        pos = idx if self.positions is None else self.positions[idx]
        return (_uniforms(self.binarize_seed, pos, self.source.row_shape) < out).astype(np.float32)

    def head(self, n: int) -> np.ndarray:
        """The first ``n`` rows (all of them when fewer), prepared."""
        return self[:n]

    def chunks(self, chunk_rows: int = CHUNK_ROWS) -> Iterator[np.ndarray]:
        """The split in order, ``chunk_rows`` prepared rows at a time."""
        for start in range(0, len(self), chunk_rows):
            yield self[start : start + chunk_rows]

    def __array__(self, dtype=None, copy=None):
        # The whole split: only for callers that really need every row at once.
        out = np.concatenate(list(self.chunks())) if len(self) else np.zeros(self.shape, np.float32)
        return out if dtype is None else out.astype(dtype)


# -- deciding --------------------------------------------------------------------------


def _convert_hint(source: str) -> str:
    path = Path(source)
    npy = str(path.with_suffix(".npy"))
    suffix = path.suffix.lower()
    if suffix == ".csv":
        return (
            f'convert it to .npy once: python -c "import numpy as np; '
            f"np.save('{npy}', np.loadtxt('{source}', delimiter=',', skiprows=1))\" (drop skiprows=1 "
            "without a header line)"
        )
    if suffix == ".npz":
        return f"convert it to .npy once: python -c \"import numpy as np; np.save('{npy}', np.load('{source}')['x'])\""
    return (
        'it fits in memory, so set data.stream = "auto"; or save the array with '
        "python -c \"import numpy as np; np.save('data.npy', x)\""
    )


def wants_streaming(spec: DataSpec) -> bool:
    """Whether :func:`~ppvae.data.load_dataset` streams ``spec.source``.

    ``data.stream = true`` streams (and needs a ``.npy`` file), ``false`` never does, and
    ``"auto"`` streams a ``.npy`` file whose prepared float32 training split would exceed
    ``data.memory_budget_mb``.

    Raises
    ------
    UsageError
        If streaming is asked for on a source that cannot stream.
    """
    if spec.stream is False:
        return False

    path = Path(spec.source).expanduser()
    if standard_name(spec.source) is None and not path.exists():
        return False  # the loader's own message says the file does not exist
    is_npy = standard_name(spec.source) is None and path.is_file() and path.suffix.lower() == ".npy"
    if not is_npy:
        if spec.stream is True:
            what = (
                "a standard dataset"
                if standard_name(spec.source) is not None
                else "a folder"
                if path.is_dir()
                else f"a {path.suffix or 'file without extension'} file"
            )
            raise UsageError(
                f"data.stream = true reads rows of a .npy file, but {spec.source!r} is {what}; "
                f"{_convert_hint(spec.source)}"
            )
        return False
    if spec.stream is True:
        return True
    shape, _, fortran, _ = npy_header(path)
    if fortran or len(shape) < 2:
        return False
    n_train = shape[0] - round(spec.heldout_fraction * shape[0])
    prepared_bytes = n_train * math.prod(shape[1:]) * 4
    return prepared_bytes > spec.memory_budget_mb * 2**20


# -- preparing --------------------------------------------------------------------------


class _FeatureStats:
    """Per-feature min/max and (optionally) mean/M2 over chunks (Chan et al.'s merge)."""

    def __init__(self, moments: bool):
        self.moments, self.n = moments, 0
        self.lo = self.hi = self.mean = self.m2 = None

    def add(self, raw: np.ndarray, scaled: np.ndarray | None = None) -> None:
        flat = raw.reshape(len(raw), -1)
        lo, hi = flat.min(0).astype(np.float64), flat.max(0).astype(np.float64)
        self.lo = lo if self.lo is None else np.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else np.maximum(self.hi, hi)
        if self.moments and scaled is not None:
            x = scaled.reshape(len(scaled), -1).astype(np.float64)
            m, k = x.mean(0), len(x)
            m2 = ((x - m) ** 2).sum(0)
            if self.mean is None:
                self.mean, self.m2 = m, m2
            else:
                delta, total = m - self.mean, self.n + k
                self.mean = self.mean + delta * (k / total)
                self.m2 = self.m2 + m2 + delta**2 * (self.n * k / total)
        self.n += len(raw)


def _check_finite(chunk: np.ndarray, start: int, name: str) -> None:
    if chunk.dtype.kind != "f":
        return
    bad = ~np.isfinite(chunk.reshape(len(chunk), -1)).all(axis=1)
    if bad.any():
        raise DataError(
            f"{name} has NaN or infinite values (first in row {start + int(np.argmax(bad))} of the "
            "split's rows); clean or impute it first"
        )


def _chunked_stats(
    source: NpyRows,
    rows: np.ndarray,
    t: dict,
    work_dtype,
    name: str,
    moments: bool,
) -> _FeatureStats:
    """One pass over ``rows`` (sorted reads): per-feature raw min/max, and moments of the scaled rows."""

    stats = _FeatureStats(moments)
    for start in range(0, len(rows), CHUNK_ROWS):
        raw = source.read(rows[start : start + CHUNK_ROWS])
        _check_finite(raw, start, name)
        scaled = scale_values(raw, t, work_dtype, name, new_data=False, check=False) if moments else None
        stats.add(raw, scaled)
    return stats


def _prepared_range(lo: np.ndarray, hi: np.ndarray, t: dict) -> tuple[float, float]:
    """Range of the prepared data from the raw per-feature range: every step is increasing per feature."""
    ends = np.stack([lo, hi]).astype(np.float64)
    if t["scale"] == "unit":
        ends = ends / 255.0
    elif t["scale"] == "minmax":
        mn, mx = np.asarray(t["minmax_min"]), np.asarray(t["minmax_max"])
        ends = np.clip((ends - mn) / np.where(mx > mn, mx - mn, 1.0), 0.0, 1.0)
    if t["standardize"]:
        ends = (ends - np.asarray(t["mean"])) / np.asarray(t["sd"])
    return float(ends.min()), float(ends.max())


def load_streaming_dataset(spec: DataSpec, likelihood: str, support: str) -> Dataset:
    """:func:`~ppvae.data.load_dataset` for a ``.npy`` file, without reading it into memory.

    The same split, transform and checks as the in-memory path; ``Dataset.train`` and
    ``Dataset.heldout`` are :class:`StreamingRows`.
    """
    if spec.validation_fraction:
        raise UsageError(
            "data.validation_fraction needs the training data in memory; it does not work with streamed data "
            "yet: set data.stream = false (or leave data.validation_fraction at 0)"
        )

    path = Path(spec.source).expanduser()
    name = str(path)
    source = NpyRows(path)
    if len(source.shape) not in (2, 3, 4) or source.dtype.kind not in "biuf":
        from ppvae.data.arrays import check_array

        check_array(np.zeros((1,) + source.shape[1:], source.dtype) if source.shape else np.zeros(()), name)
    if len(source) == 0 or 0 in source.row_shape:
        raise DataError(f"{name} holds no data (shape {source.shape}); expected at least one datapoint")
    train_split, heldout_rows = split_indices(len(source), spec, name)
    index_dtype = np.int32 if len(source) < 2**31 else np.int64
    # Training rows sorted (sequential reads); ``order`` is each one's place in the in-memory split.
    order = np.argsort(train_split, kind="stable")
    train_rows = train_split[order].astype(index_dtype)
    heldout_rows = heldout_rows.astype(index_dtype)
    del train_split
    eight_bit = source.dtype == np.uint8 and len(source.shape) in (3, 4)
    if not eight_bit and source.dtype.kind in "iu" and len(source.shape) in (3, 4):
        eight_bit = all(is_8bit_image(source.read_range(s, s + CHUNK_ROWS)) for s in range(0, len(source), CHUNK_ROWS))
    t = fit_transform(source.read_range(0, 1), eight_bit, spec, likelihood, support)
    static = spec.binarize == "static"
    train_dtype = np.float64 if static else np.float32
    # Moments need the scale first; with minmax scaling that takes its own pass.
    one_pass = t["standardize"] and t["scale"] != "minmax"
    stats = _chunked_stats(source, train_rows, t, train_dtype, name, moments=one_pass)
    if t["scale"] == "unit":
        check_unit(float(stats.lo.min()), float(stats.hi.max()), source.dtype.kind == "f", name, new_data=False)
    if t["scale"] == "minmax":
        t["minmax_min"], t["minmax_max"] = stats.lo.tolist(), stats.hi.tolist()
    if t["standardize"]:
        moments = stats if one_pass else _chunked_stats(source, train_rows, t, train_dtype, name, moments=True)
        sd = np.sqrt(moments.m2 / moments.n)
        t["mean"] = moments.mean.tolist()
        t["sd"] = floor_sd(sd, t).tolist()
    held = _chunked_stats(source, np.sort(heldout_rows), t, np.float64, name, moments=False)
    if t["scale"] == "unit":
        check_unit(float(held.lo.min()), float(held.hi.max()), source.dtype.kind == "f", name, new_data=False)
    lo_t, hi_t = _prepared_range(stats.lo, stats.hi, t)
    lo_h, hi_h = _prepared_range(held.lo, held.hi, t)
    lo, hi = min(lo_t, lo_h), max(hi_t, hi_h)
    t["binarize"] = resolve_binarize(spec.binarize, likelihood, t, lo, hi, name)
    train = StreamingRows(
        source,
        train_rows,
        t,
        train_dtype,
        binarize_seed=spec.split_seed + 2 if static else None,
        positions=order.astype(index_dtype) if static else None,
        name=name,
    )
    heldout = StreamingRows(
        source,
        heldout_rows,
        t,
        np.float64,
        name=name,
        binarize_seed=None if t["binarize"] == "none" else spec.split_seed + 1,
    )
    # Binarized data is 0/1; otherwise the range follows from the per-feature one.
    check_support(*((0.0, 1.0) if t["binarize"] != "none" else (lo, hi)), t, name)
    check_counts(t, name, train, heldout)
    return Dataset(
        name=name,
        train=train,
        heldout=heldout,
        event_shape=tuple(source.row_shape),
        is_image=t["is_image"],
        binarize=t["binarize"],
        transform=t,
    )
