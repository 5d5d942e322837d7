"""One transform for every data path: the preparation steps and the checks they rest on.

The in-memory loader (:mod:`.prepare`) and the streamed one (:mod:`.streaming`) both
prepare data through these functions, so a feature and its training statistics (the
``transform`` dict recorded in ``data.json``) mean the same on either path. numpy only.
"""

from __future__ import annotations

import numpy as np

from ppvae.spec.config import DataSpec
from ppvae.errors import DataError, UsageError
from ppvae.data.standard import STANDARD_DATASETS

__all__ = [
    "standard_name",
    "split_indices",
    "value_range",
    "in_unit",
    "check_unit",
    "scale_values",
    "floor_sd",
    "standardize_values",
    "binarize_values",
    "check_binarizable",
    "check_support",
    "check_counts",
    "finish_values",
    "fit_transform",
    "check_support_name",
    "COUNT_CHECK_ROWS",
    "TRANSFORM_VERSION",
    "SUPPORTS",
    "resolve_binarize",
]


#: Supports a likelihood can declare: data in [0, 1], any finite value, or counts
#: (non-negative integers, never rescaled).
SUPPORTS = ("unit_interval", "real", "count")
#: Rows checked at a time for integer counts, so the check never copies a whole large array.
COUNT_CHECK_ROWS = 4096
#: The version of the transform dict that data.json records.
TRANSFORM_VERSION = 1


def standard_name(source: str) -> str | None:
    """The standard dataset's key when ``source`` names one (``"embedded"``, ``"mnist"``, ...), else None."""
    key = source.lower()
    if key == "embedded" or key in STANDARD_DATASETS:
        return key
    return None


def split_indices(n: int, spec: DataSpec, name: str) -> tuple[np.ndarray, np.ndarray]:
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


def value_range(*arrays: np.ndarray) -> tuple[float, float]:
    """The smallest and largest value over all ``arrays``."""
    return (min(float(a.min()) for a in arrays), max(float(a.max()) for a in arrays))


def in_unit(lo: float, hi: float) -> bool:
    """Whether the range ``[lo, hi]`` lies in [0, 1]."""
    return lo >= 0.0 and hi <= 1.0


def check_unit(lo: float, hi: float, is_float: bool, name: str, new_data: bool) -> None:
    """``data.scale = "unit"`` needs 0-255 grey levels: raw values in [0, 255], not already in [0, 1]."""
    if lo < 0 or hi > 255:
        raise DataError(
            f'data.scale = "unit" divides 0-255 grey levels by 255, but {name} has values in '
            f'[{lo:g}, {hi:g}]; use data.scale = "minmax" or "none"'
        )
    if is_float and hi <= 1.0:
        # Dividing [0, 1] data by 255 again would silently make it nearly all zero.
        fix = "pass the raw 0-255 grey levels, as the run was trained on" if new_data else 'use data.scale = "none"'
        raise DataError(
            f'data.scale = "unit" divides 0-255 grey levels by 255, but {name} already lies in '
            f"[0, 1] (max {hi:g}); {fix}"
        )


def scale_values(x: np.ndarray, t: dict, dtype, name: str, new_data: bool, check: bool = True) -> np.ndarray:
    """Apply the scale step; returns a fresh array of ``dtype``.

    ``check = False`` skips the range check, for chunks of data checked as a whole already.
    """
    out = np.array(x, dtype=dtype)  # always a copy: the steps below work in place
    if t["scale"] == "unit":
        if check:
            check_unit(*value_range(x), x.dtype.kind == "f", name, new_data)
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


def standardize_values(x: np.ndarray, t: dict) -> np.ndarray:
    """Subtract the training mean and divide by the floored sd, in place, when the transform standardizes."""
    if t["standardize"]:
        event = tuple(t["event_shape"])
        x -= np.asarray(t["mean"], dtype=x.dtype).reshape(event)
        x /= np.asarray(t["sd"], dtype=x.dtype).reshape(event)
    return x


def binarize_values(x: np.ndarray, seed: int) -> np.ndarray:
    """One Bernoulli(x) draw per value, in C order (the benchmark protocol's recipe)."""
    return (np.random.default_rng(seed).random(x.shape) < x).astype(np.float32)


def check_binarizable(lo: float, hi: float, mode: str, name: str) -> None:
    """Binarizing draws Bernoulli(value) bits: the prepared values must lie in [0, 1]."""
    if not in_unit(lo, hi):
        raise DataError(
            f"data.binarize = {mode!r} draws Bernoulli(value) bits, so it needs data in [0, 1], but {name} "
            f'lies in [{lo:g}, {hi:g}]; set data.scale = "unit" (8-bit images) or "minmax", or data.binarize = "none"'
        )


def check_support(lo: float, hi: float, t: dict, name: str) -> None:
    """A likelihood on [0, 1] (support ``"unit_interval"``) needs the prepared values in [0, 1]."""
    if t.get("support") != "unit_interval" or in_unit(lo, hi):
        return
    likelihood = t.get("likelihood", "?")
    if t.get("standardize"):
        fix = "set data.standardize = false, or use a 'normal' likelihood"
    else:
        fix = 'use --set data.scale="unit" (8-bit images) or "minmax", or a \'normal\' likelihood'
    raise DataError(
        f"{name} has values outside [0, 1] (min {lo:.3g}, max {hi:.3g}) but likelihood "
        f"{likelihood!r} needs [0, 1]; {fix}"
    )


def check_counts(t: dict, name: str, *arrays: np.ndarray) -> None:
    """Count likelihoods (support ``"count"``) need non-negative integers after preprocessing."""
    if t.get("support") != "count":
        return
    negative = fraction = None
    for x in arrays:
        for start in range(0, x.shape[0], COUNT_CHECK_ROWS):
            block = x[start : start + COUNT_CHECK_ROWS]
            if negative is None and (block < 0).any():
                negative = float(block.min())
            if fraction is None:
                off = block[block != np.round(block)]
                fraction = float(off.flat[0]) if off.size else None
    if negative is None and fraction is None:
        return
    found = (
        f"negative values (min {negative:.3g})" if negative is not None else f"non-integer values (e.g. {fraction:.4g})"
    )
    fixes = []
    if t.get("scale") in ("unit", "minmax"):
        fixes.append(f'set data.scale = "none" (data.scale = "{t["scale"]}" rescales the counts)')
    if t.get("standardize"):
        fixes.append("set data.standardize = false")
    fix = " and ".join(fixes) or "pass non-negative integer counts, or use a 'normal' likelihood"
    raise DataError(
        f"{name} has {found} but likelihood {t.get('likelihood', '?')!r} models counts (non-negative integers); {fix}"
    )


def finish_values(x: np.ndarray, t: dict, seed: int, name: str) -> np.ndarray:
    """Binarize (when on) with ``seed`` and return float32, C-contiguous."""
    if t["binarize"] != "none":
        check_binarizable(*value_range(x), t["binarize"], name)
        return binarize_values(x, seed)
    return np.ascontiguousarray(x, dtype=np.float32)


def fit_transform(x_train: np.ndarray, eight_bit: bool, spec: DataSpec, likelihood: str, support: str) -> dict:
    """The transform with its training statistics; ``binarize`` is resolved later."""
    scale = spec.scale
    if scale == "auto":
        # Counts stay counts: 8-bit data is divided by 255 only for the other supports.
        scale = "unit" if eight_bit and support != "count" else "none"
    t = {
        "version": TRANSFORM_VERSION,
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


def resolve_binarize(mode: str, likelihood: str, t: dict, lo: float, hi: float, name: str) -> str:
    """The binarization a split gets, from ``data.binarize`` and the prepared range ``[lo, hi]``.

    ``"auto"`` binarizes (dynamically) only a Bernoulli likelihood on unstandardized data in
    [0, 1]; an explicit mode is checked against the range. Both loaders decide it here.
    """
    if mode == "auto":
        binarizable = likelihood == "bernoulli" and not t["standardize"] and in_unit(lo, hi)
        return "dynamic" if binarizable else "none"
    if mode != "none":
        check_binarizable(lo, hi, mode, name)
    return mode


def check_support_name(support: str) -> None:
    """An unknown likelihood support is a usage error naming the valid ones."""
    if support not in SUPPORTS:
        raise UsageError(f"unknown likelihood support {support!r}; expected one of: {', '.join(SUPPORTS)}")
