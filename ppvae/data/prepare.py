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

from ppvae.spec.config import DataSpec
from ppvae.errors import DataError, UsageError
from ppvae.data.arrays import check_array, is_8bit_image, read_array_file, supported_suffixes
from ppvae.data.dataset import Dataset
from ppvae.data.transform import (
    SUPPORTS,
    binarize_values,
    check_counts,
    check_support,
    check_support_name,
    finish_values,
    fit_transform,
    resolve_binarize,
    floor_sd,
    scale_values,
    split_indices,
    standard_name,
    standardize_values,
    value_range,
)
from ppvae.data.standard import (
    RawData,
    is_idx_folder,
    load_embedded,
    load_idx_folder,
    load_standard,
)

__all__ = ["load_dataset", "prepare_new", "load_source", "SUPPORTS"]


# -- reading and splitting ------------------------------------------------------------


def _one_of(names) -> str:
    """``.npy, .npz or .csv``."""
    return ", ".join(names[:-1]) + " or " + names[-1] if len(names) > 1 else "".join(names)


def _read_source(spec: DataSpec) -> RawData:
    """Read ``spec.source`` without any preprocessing."""
    name = standard_name(spec.source)
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
            f"a folder of MNIST-format files, or a {_one_of(supported_suffixes())} file"
        )
    # Memory-mapped: splitting copies the rows anyway, so the file is never held twice.
    x, labels = read_array_file(path, mmap_mode="r")
    return RawData(str(path), x, labels)


def _split(raw: RawData, spec: DataSpec):
    """Return ``(x_train, y_train, x_heldout, y_heldout)``.

    The official test set is the held-out split where the source has one; otherwise a
    seeded permutation holds out ``round(heldout_fraction * n)`` datapoints (the recipe of
    the benchmark protocol).
    """
    if raw.x_test is not None:
        return raw.x, raw.labels, raw.x_test, raw.labels_test
    train_idx, heldout_idx = split_indices(raw.x.shape[0], spec, raw.name)
    labels = raw.labels
    return (
        raw.x[train_idx],
        None if labels is None else labels[train_idx],
        raw.x[heldout_idx],
        None if labels is None else labels[heldout_idx],
    )


def _carve_validation(x_train, y_train, spec: DataSpec, name: str):
    """``(x_train, y_train, x_validation, y_validation)``: ``data.validation_fraction`` of the training rows set aside.

    A seeded permutation of the training rows (``default_rng([split_seed, 2])``) picks
    ``round(fraction * n)`` of them (at least one); the held-out split is not touched.
    """
    if not spec.validation_fraction:
        return x_train, y_train, None, None
    n = x_train.shape[0]
    n_val = max(1, round(spec.validation_fraction * n))
    if n_val >= n:
        raise DataError(
            f"{name}: data.validation_fraction = {spec.validation_fraction:g} of {n} training rows leaves no "
            "training data; use a smaller fraction"
        )
    order = np.random.default_rng([spec.split_seed, 2]).permutation(n)
    val_idx, train_idx = np.sort(order[:n_val]), np.sort(order[n_val:])
    if y_train is None:
        return x_train[train_idx], None, x_train[val_idx], None
    return x_train[train_idx], y_train[train_idx], x_train[val_idx], y_train[val_idx]


# -- the transform --------------------------------------------------------------------


# -- public API -------------------------------------------------------------------------


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
    >>> from ppvae.spec.config import DataSpec
    >>> ds = load_dataset(DataSpec(), "bernoulli", "unit_interval")  # doctest: +SKIP
    >>> ds.train.shape, ds.heldout.shape, ds.binarize  # doctest: +SKIP
    ((8000, 28, 28), (2000, 28, 28), 'dynamic')
    """
    check_support_name(support)
    likelihood = likelihood.lower()
    from ppvae.data.streaming import load_streaming_dataset, wants_streaming  # loaded only when needed

    if wants_streaming(spec):
        return load_streaming_dataset(spec, likelihood, support)
    raw = _read_source(spec)
    x_train, y_train, x_heldout, y_heldout = _split(raw, spec)
    x_train, y_train, x_val, y_val = _carve_validation(x_train, y_train, spec, raw.name)
    if x_train.shape[1:] != x_heldout.shape[1:]:
        raise DataError(
            f"{raw.name}: training datapoints have shape {x_train.shape[1:]} but held-out ones "
            f"{x_heldout.shape[1:]}; use files from the same dataset"
        )
    eight_bit = is_8bit_image(x_train) and is_8bit_image(x_heldout)
    t = fit_transform(x_train, eight_bit, spec, likelihood, support)

    # Binarization compares float64 uniforms with the data, so the data is float64 too
    # wherever it gets binarized: that is what reproduces the protocol's draws exactly.
    train_dtype = np.float64 if spec.binarize == "static" else np.float32
    train = scale_values(x_train, t, train_dtype, raw.name, new_data=False)
    if t["standardize"]:
        sd = train.std(axis=0, dtype=np.float64)
        t["mean"] = train.mean(axis=0, dtype=np.float64).ravel().tolist()
        t["sd"] = floor_sd(sd, t).ravel().tolist()
        train = standardize_values(train, t)
    heldout = standardize_values(scale_values(x_heldout, t, np.float64, raw.name, new_data=False), t)

    lo, hi = value_range(train, heldout)
    t["binarize"] = resolve_binarize(spec.binarize, likelihood, t, lo, hi, raw.name)
    # The held-out split goes through exactly the steps prepare_new() takes.
    heldout = finish_values(heldout, t, spec.split_seed + 1, raw.name)
    validation = None
    if x_val is not None:  # prepared like the held-out split, with noise of its own
        validation = standardize_values(scale_values(x_val, t, np.float64, raw.name, new_data=False), t)
        validation = finish_values(validation, t, spec.split_seed + 3, raw.name)
    if t["binarize"] == "static":
        train = binarize_values(train, spec.split_seed + 2)
    else:
        train = np.ascontiguousarray(train, dtype=np.float32)
    check_support(*value_range(train, heldout), t, raw.name)
    check_counts(t, raw.name, train, heldout)
    if validation is not None:
        check_support(*value_range(validation, validation), t, raw.name)
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
        validation=validation,
        validation_labels=None if y_val is None else np.asarray(y_val, dtype=np.int64),
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
    out = standardize_values(scale_values(x, transform, np.float64, name, new_data=True), transform)
    out = finish_values(out, transform, split_seed + 1, name)
    check_support(*value_range(out), transform, name)
    check_counts(transform, name, out)
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
    if standard_name(source) is not None or is_idx_folder(path):
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
    if standard_name(source) is not None or not path.exists():
        return source
    return str(path.resolve())
