"""How commands write their results: refuse to overwrite, check the suffix first, write atomically."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np

from ppvae.errors import UsageError
from ppvae.runs.atomic import atomic_path

__all__ = ["refuse_existing", "check_out", "write_array", "fmt"]


def refuse_existing(path: Path, force: bool) -> None:
    """The one refusal to overwrite an existing output without ``--force``."""
    if path.exists() and not force:
        raise UsageError(f"{str(path)!r} already exists; pass --force to overwrite it or choose another --out")


def check_out(path: Path, force: bool, suffixes: tuple[str, ...]) -> None:
    """Reject a bad ``--out`` before any work is done (the writers check again)."""
    if path.suffix.lower() not in suffixes:
        raise UsageError(f"--out {str(path)!r}: use a {' or '.join(suffixes)} file name")
    refuse_existing(path, force)


def write_array(
    path: Path,
    array: np.ndarray,
    force: bool,
    *,
    is_image: bool = True,
    title: str | None = None,
    ncols: int | None = None,
) -> None:
    """Save as .npy or a picture (.png), atomically, refusing to overwrite unless forced."""
    refuse_existing(path, force)
    suffix = path.suffix.lower()
    if suffix == ".npy":
        with atomic_path(path) as tmp, open(tmp, "wb") as fh:
            np.save(fh, array)
    elif suffix == ".png":
        from ppvae.plotting.run_pictures import save_array_picture

        save_array_picture(array, path, is_image=is_image, title=title, ncols=ncols)
    else:
        raise UsageError(f"--out {str(path)!r}: use a .png (picture) or .npy (array) file name")


def fmt(value, digits: int = 2) -> str:
    """A number for the terminal; ``n/a`` for a metric that could not be computed."""
    return "n/a" if value is None or (isinstance(value, float) and math.isnan(value)) else f"{value:.{digits}f}"
