"""Turn a data source into the prepared train/held-out :class:`Dataset`, and prepare new data.

The pipeline, in order: read the source, split it, scale (``unit``/``minmax``),
standardize, binarize, check the likelihood's support. Every statistic comes from the
training split and is recorded in ``Dataset.transform`` (plain JSON), so that
:func:`prepare_new` prepares new data exactly like the held-out split.
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np

from ..config import DataSpec
from ..errors import DataError, UsageError
from .arrays import check_array, is_8bit_image, read_array_file
from .dataset import Dataset
from .standard import (
    STANDARD_DATASETS,
    RawData,
    is_idx_folder,
    load_embedded,
    load_idx_folder,
    load_standard,
)

__all__ = ["load_dataset", "prepare_new", "load_source", "SUPPORTS"]

#: Supports a likelihood can declare: data in [0, 1], any finite value, or counts
#: (non-negative integers, never rescaled).
SUPPORTS = ("unit_interval", "real", "count")
#: Rows checked at a time for integer counts, so the check never copies a whole large array.
_COUNT_CHECK_ROWS = 4096
_TRANSFORM_VERSION = 1


# -- reading and splitting ------------------------------------------------------------


def _standard_name(source: str) -> str | None:
    key = source.lower()
    if key == "embedded" or key in STANDARD_DATASETS:
        return key
    return None


def _read_source(spec: DataSpec) -> RawData:
    """Read ``spec.source`` without any preprocessing."""
    name = _standard_name(spec.source)
    path = Path(spec.source).expanduser()
    if name is not None or path.is_dir():
        if name == "embedded":
            raw = load_embedded()
        elif name is not None:
            raw = load_standard(name, spec.cache_dir, spec.mirror)
        else:
            raw = load_idx_folder(path)
        # Array files are checked as they are read; the IDX sources are checked here.
        check_array(raw.x, raw.name)
        if raw.x_test is not None:
            check_array(raw.x_test, raw.name)
        return raw
    if not path.exists():
        raise DataError(
            f"data source {spec.source!r} does not exist; use embedded, mnist, fashion-mnist, "
            "a folder of MNIST-format files, or a .npy, .npz or .csv file"
        )
    # Memory-mapped: splitting copies the rows anyway, so the file is never held twice.
    x, labels = read_array_file(path, mmap_mode="r")
    return RawData(str(path), x, labels)


def _split_indices(n: int, spec: DataSpec, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Row numbers ``(train, heldout)`` of the seeded split of ``n`` datapoints, in split order."""
    n_heldout = round(spec.heldout_fraction * n)  # an int already; halves round to even
    n_train = n - n_heldout
    if n_train < 1 or n_heldout < 1:
        raise DataError(
            f"{name} has {n} datapoint(s): data.heldout_fraction = {spec.heldout_fraction} leaves "
            f"{n_train} for training and {n_heldout} held out; need at least 1 of each: "
            "add data or change data.heldout_fraction"
        )
    perm = np.random.default_rng(spec.split_seed).permutation(n)
    return perm[:n_train], perm[n_train:]


def _split(raw: RawData, spec: DataSpec):
    """Return ``(x_train, y_train, x_heldout, y_heldout)``.

    The official test set is the held-out split where the source has one; otherwise a
    seeded permutation holds out ``round(heldout_fraction * n)`` datapoints (the recipe of
    the benchmark protocol).
    """
    if raw.x_test is not None:
        return raw.x, raw.labels, raw.x_test, raw.labels_test
    train_idx, heldout_idx = _split_indices(raw.x.shape[0], spec, raw.name)
    labels = raw.labels
    return (
        raw.x[train_idx],
        None if labels is None else labels[train_idx],
        raw.x[heldout_idx],
        None if labels is None else labels[heldout_idx],
    )


# -- the transform --------------------------------------------------------------------


def _range(*arrays: np.ndarray) -> tuple[float, float]:
    return (min(float(a.min()) for a in arrays), max(float(a.max()) for a in arrays))


def _in_unit(lo: float, hi: float) -> bool:
    return lo >= 0.0 and hi <= 1.0


def _check_unit(lo: float, hi: float, is_float: bool, name: str, new_data: bool) -> None:
    """``data.scale = "unit"`` needs 0-255 grey levels: raw values in [0, 255], not already in [0, 1]."""
    if lo < 0 or hi > 255:
        raise DataError(
            f'data.scale = "unit" divides 0-255 grey levels by 255, but {name} has values in '
            f'[{lo:g}, {hi:g}]; use data.scale = "minmax" or "none"'
        )
    if is_float and hi <= 1.0:
        # Dividing [0, 1] data by 255 again would silently make it nearly all zero.
        fix = ("pass the raw 0-255 grey levels, as the run was trained on" if new_data
               else 'use data.scale = "none"')
        raise DataError(
            f'data.scale = "unit" divides 0-255 grey levels by 255, but {name} already lies in '
            f"[0, 1] (max {hi:g}); {fix}"
        )


def _scale(x: np.ndarray, t: dict, dtype, name: str, new_data: bool, check: bool = True) -> np.ndarray:
    """Apply the scale step; returns a fresh array of ``dtype``.

    ``check = False`` skips the range check, for chunks of data checked as a whole already.
    """
    out = np.array(x, dtype=dtype)  # always a copy: the steps below work in place
    if t["scale"] == "unit":
        if check:
            _check_unit(*_range(x), x.dtype.kind == "f", name, new_data)
        out /= 255.0
    elif t["scale"] == "minmax":
        event = tuple(t["event_shape"])
        lo = np.asarray(t["minmax_min"], dtype=dtype).reshape(event)
        hi = np.asarray(t["minmax_max"], dtype=dtype).reshape(event)
        # Constant features map to 0; data beyond the training range is clipped so that
        # held-out and new data stay in [0, 1] like the training split.
        width = np.where(hi > lo, hi - lo, 1.0).astype(dtype)
        out -= lo
        out /= width
        np.clip(out, 0.0, 1.0, out=out)
    return out


def floor_sd(sd: np.ndarray, t: dict) -> np.ndarray:
    """The sd each feature is divided by: 1 for constant features, never below ``min_sd``."""
    return np.maximum(np.where(sd > 0, sd, 1.0), t.get("min_sd", 0.0))


def _standardize(x: np.ndarray, t: dict) -> np.ndarray:
    if t["standardize"]:
        event = tuple(t["event_shape"])
        x -= np.asarray(t["mean"], dtype=x.dtype).reshape(event)
        x /= np.asarray(t["sd"], dtype=x.dtype).reshape(event)
    return x


def _binarize(x: np.ndarray, seed: int) -> np.ndarray:
    """One Bernoulli(x) draw per value, in C order (the benchmark protocol's recipe)."""
    return (np.random.default_rng(seed).random(x.shape) < x).astype(np.float32)


def _check_binarizable(lo: float, hi: float, mode: str, name: str) -> None:
    if not _in_unit(lo, hi):
        raise DataError(
            f"data.binarize = {mode!r} draws Bernoulli(value) bits, so it needs data in [0, 1], but {name} "
            f'lies in [{lo:g}, {hi:g}]; set data.scale = "unit" (8-bit images) or "minmax", or data.binarize = "none"'
        )


def _check_support(lo: float, hi: float, t: dict, name: str) -> None:
    if t.get("support") != "unit_interval" or _in_unit(lo, hi):
        return
    likelihood = t.get("likelihood", "?")
    if t.get("standardize"):
        fix = "set data.standardize = false, or use a 'normal' likelihood"
    else:
        fix = "use --set data.scale=\"unit\" (8-bit images) or \"minmax\", or a 'normal' likelihood"
    raise DataError(
        f"{name} has values outside [0, 1] (min {lo:.3g}, max {hi:.3g}) but likelihood "
        f"{likelihood!r} needs [0, 1]; {fix}"
    )


def _check_counts(t: dict, name: str, *arrays: np.ndarray) -> None:
    """Count likelihoods (support ``"count"``) need non-negative integers after preprocessing."""
    if t.get("support") != "count":
        return
    negative = fraction = None
    for x in arrays:
        for start in range(0, x.shape[0], _COUNT_CHECK_ROWS):
            block = x[start:start + _COUNT_CHECK_ROWS]
            if negative is None and (block < 0).any():
                negative = float(block.min())
            if fraction is None:
                off = block[block != np.round(block)]
                fraction = float(off.flat[0]) if off.size else None
    if negative is None and fraction is None:
        return
    found = (f"negative values (min {negative:.3g})" if negative is not None
             else f"non-integer values (e.g. {fraction:.4g})")
    fixes = []
    if t.get("scale") in ("unit", "minmax"):
        fixes.append(f'set data.scale = "none" (data.scale = "{t["scale"]}" rescales the counts)')
    if t.get("standardize"):
        fixes.append("set data.standardize = false")
    fix = " and ".join(fixes) or "pass non-negative integer counts, or use a 'normal' likelihood"
    raise DataError(
        f"{name} has {found} but likelihood {t.get('likelihood', '?')!r} models counts "
        f"(non-negative integers); {fix}"
    )


def _finish(x: np.ndarray, t: dict, seed: int, name: str) -> np.ndarray:
    """Binarize (when on) with ``seed`` and return float32, C-contiguous."""
    if t["binarize"] != "none":
        _check_binarizable(*_range(x), t["binarize"], name)
        return _binarize(x, seed)
    return np.ascontiguousarray(x, dtype=np.float32)


def _fit_transform(x_train: np.ndarray, eight_bit: bool, spec: DataSpec, likelihood: str,
                   support: str) -> dict:
    """The transform with its training statistics; ``binarize`` is resolved later."""
    scale = spec.scale
    if scale == "auto":
        # Counts stay counts: 8-bit data is divided by 255 only for the other supports.
        scale = "unit" if eight_bit and support != "count" else "none"
    t = {
        "version": _TRANSFORM_VERSION,
        "event_shape": list(x_train.shape[1:]),
        "is_image": x_train.ndim in (3, 4),
        "scale": scale,
        "minmax_min": None,
        "minmax_max": None,
        "standardize": bool(spec.standardize),
        "mean": None,
        "sd": None,
        "min_sd": float(spec.min_sd),
        "binarize": spec.binarize,
        "likelihood": likelihood,
        "support": support,
    }
    if scale == "minmax":
        t["minmax_min"] = x_train.min(axis=0).astype(np.float64).ravel().tolist()
        t["minmax_max"] = x_train.max(axis=0).astype(np.float64).ravel().tolist()
    return t


# -- public API -------------------------------------------------------------------------


def _check_support_name(support: str) -> None:
    if support not in SUPPORTS:
        raise UsageError(f"unknown likelihood support {support!r}; expected one of: {', '.join(SUPPORTS)}")


def load_dataset(spec: DataSpec, likelihood: str, support: str) -> Dataset:
    """Read, split and prepare the data that ``spec`` describes.

    Parameters
    ----------
    spec : DataSpec
        Source and preprocessing settings. ``"embedded"``, ``"mnist"`` and
        ``"fashion-mnist"`` are matched case-insensitively and take precedence over a
        file or folder of that name (write ``./mnist`` for a folder).
    likelihood : str
        Name of the model's likelihood; ``"auto"`` binarization is on only for
        ``"bernoulli"``.
    support : {"unit_interval", "real", "count"}
        The likelihood's support: ``"unit_interval"`` requires the prepared data in [0, 1];
        ``"count"`` requires non-negative integers, and ``data.scale = "auto"`` then leaves
        8-bit data as it is (grey levels 0-255 are counts) instead of dividing it by 255.

    Returns
    -------
    Dataset
        float32 C-contiguous splits, int64 labels (or ``None``) and the JSON ``transform``.
        With ``data.stream`` on (see :func:`~ppvae.data.streaming.wants_streaming`) the
        splits are :class:`~ppvae.data.streaming.StreamingRows` read from the ``.npy`` file.

    Raises
    ------
    DataError
        If the data is missing, corrupt, of an unusable shape, too small to split, or
        outside the likelihood's support after preprocessing.
    UsageError
        If ``support`` is not one of :data:`SUPPORTS`.

    Examples
    --------
    >>> from ppvae.config import DataSpec
    >>> ds = load_dataset(DataSpec(), "bernoulli", "unit_interval")  # doctest: +SKIP
    >>> ds.train.shape, ds.heldout.shape, ds.binarize  # doctest: +SKIP
    ((8000, 28, 28), (2000, 28, 28), 'dynamic')
    """
    _check_support_name(support)
    likelihood = likelihood.lower()
    from .streaming import load_streaming_dataset, wants_streaming  # it builds on this module

    if wants_streaming(spec):
        return load_streaming_dataset(spec, likelihood, support)
    raw = _read_source(spec)
    x_train, y_train, x_heldout, y_heldout = _split(raw, spec)
    if x_train.shape[1:] != x_heldout.shape[1:]:
        raise DataError(
            f"{raw.name}: training datapoints have shape {x_train.shape[1:]} but held-out ones "
            f"{x_heldout.shape[1:]}; use files from the same dataset"
        )
    eight_bit = is_8bit_image(x_train) and is_8bit_image(x_heldout)
    t = _fit_transform(x_train, eight_bit, spec, likelihood, support)

    # Binarization compares float64 uniforms with the data, so the data is float64 too
    # wherever it gets binarized: that is what reproduces the protocol's draws exactly.
    train_dtype = np.float64 if spec.binarize == "static" else np.float32
    train = _scale(x_train, t, train_dtype, raw.name, new_data=False)
    if t["standardize"]:
        sd = train.std(axis=0, dtype=np.float64)
        t["mean"] = train.mean(axis=0, dtype=np.float64).ravel().tolist()
        t["sd"] = floor_sd(sd, t).ravel().tolist()
        train = _standardize(train, t)
    heldout = _standardize(_scale(x_heldout, t, np.float64, raw.name, new_data=False), t)

    lo, hi = _range(train, heldout)
    if spec.binarize == "auto":
        binarizable = likelihood == "bernoulli" and not t["standardize"] and _in_unit(lo, hi)
        t["binarize"] = "dynamic" if binarizable else "none"
    elif spec.binarize != "none":
        _check_binarizable(lo, hi, spec.binarize, raw.name)
    # The held-out split goes through exactly the steps prepare_new() takes.
    heldout = _finish(heldout, t, spec.split_seed + 1, raw.name)
    if t["binarize"] == "static":
        train = _binarize(train, spec.split_seed + 2)
    else:
        train = np.ascontiguousarray(train, dtype=np.float32)
    _check_support(*_range(train, heldout), t, raw.name)
    _check_counts(t, raw.name, train, heldout)
    return Dataset(
        name=raw.name,
        train=train,
        heldout=heldout,
        event_shape=tuple(x_train.shape[1:]),
        is_image=t["is_image"],
        binarize=t["binarize"],
        train_labels=None if y_train is None else np.asarray(y_train, dtype=np.int64),
        heldout_labels=None if y_heldout is None else np.asarray(y_heldout, dtype=np.int64),
        transform=t,
    )


def _shape_error(name: str, event: tuple, got) -> DataError:
    return DataError(
        f"{name} does not fit this run: expected datapoints of shape {event}, got {got}; "
        "pass an array shaped (N, *datapoint shape) like the training data, or flat (N, d)"
    )


def prepare_new(x, transform: dict, split_seed: int, *, name: str = "data") -> np.ndarray:
    """Prepare new data exactly like a run's held-out split.

    Parameters
    ----------
    x : array-like
        Datapoints along the first axis, shaped like the training data, or flat
        ``(N, d)`` for image data (reshaped to the run's ``event_shape``).
    transform : dict
        ``Dataset.transform`` of the run (as saved with it).
    split_seed : int
        ``DataSpec.split_seed`` of the run; binarization draws with ``split_seed + 1``.
    name : str
        How to refer to the data in error messages (e.g. its file path).

    Returns
    -------
    numpy.ndarray
        float32, C-contiguous, shape ``(N, *event_shape)``.

    Raises
    ------
    DataError
        On a shape mismatch, non-numeric, NaN or infinite values, or values outside what
        the run's preprocessing and likelihood accept.

    Examples
    --------
    >>> x_new = prepare_new(images_uint8, ds.transform, split_seed=0)  # doctest: +SKIP
    """
    try:
        event = tuple(int(d) for d in transform["event_shape"])
        for key in ("scale", "standardize", "binarize"):
            transform[key]
    except (KeyError, TypeError):
        raise UsageError(
            "the data transform is incomplete; it must be the Dataset.transform saved with the run"
        ) from None
    x = np.asarray(x)
    if x.ndim < 2:
        raise _shape_error(name, event, f"an array of shape {x.shape}")
    if x.shape[1:] != event:
        if len(event) > 1 and x.ndim == 2 and x.shape[1] == math.prod(event):
            x = x.reshape((x.shape[0],) + event)
        else:
            raise _shape_error(name, event, tuple(x.shape[1:]))
    check_array(x, name)
    out = _standardize(_scale(x, transform, np.float64, name, new_data=True), transform)
    out = _finish(out, transform, split_seed + 1, name)
    _check_support(*_range(out), transform, name)
    _check_counts(transform, name, out)
    return out


def load_source(source: str, spec: DataSpec, transform: dict) -> tuple[np.ndarray, np.ndarray | None]:
    """Data for ``ppvae evaluate/encode/reconstruct RUN --data SOURCE``, prepared like the run's.

    Parameters
    ----------
    source : str
        A standard name (``"embedded"``, ``"mnist"``, ``"fashion-mnist"``) or a folder of
        MNIST-format files: its held-out split is used (official test set, or the run's
        seeded split). A ``.npy``/``.npz``/``.csv`` file: all of it is used.
    spec : DataSpec
        The run's data settings (split seed, held-out fraction, cache, mirror).
    transform : dict
        The run's ``Dataset.transform``; its training statistics are applied unchanged.

    Returns
    -------
    x : numpy.ndarray
        float32 prepared data, shape ``(N, *event_shape)``.
    labels : numpy.ndarray or None
        int64 labels when the source has them.

    Raises
    ------
    DataError
        As :func:`load_dataset` and :func:`prepare_new`.
    """
    path = Path(source).expanduser()
    if _standard_name(source) is not None or is_idx_folder(path):
        sub = dataclasses.replace(spec, source=source)
        raw = _read_source(sub)
        _, _, x_heldout, y_heldout = _split(raw, sub)
        x = prepare_new(x_heldout, transform, spec.split_seed, name=raw.name)
        return x, None if y_heldout is None else np.asarray(y_heldout, dtype=np.int64)
    if path.is_dir():
        load_idx_folder(path)  # raises the "holds no MNIST-format files" error
    x, labels = read_array_file(path, mmap_mode="r")
    return prepare_new(x, transform, spec.split_seed, name=str(path)), labels


def absolute_source(source: str) -> str:
    """A data file or folder as an absolute path; standard names are kept as given.

    The run's config.toml records the source, and a path relative to the current folder
    would stop working as soon as the run is used from another folder.
    """
    path = Path(source).expanduser()
    if _standard_name(source) is not None or not path.exists():
        return source
    return str(path.resolve())
