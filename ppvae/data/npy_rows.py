"""Read chosen rows of a ``.npy`` file with positional reads, never holding the whole array.

A memory map would do the same job, but every page it touches counts towards the
process's resident memory until the kernel takes it back, so one pass over a 2 GB file
shows a 2 GB peak. Positional reads (``preadv``) go through the page cache too, without
mapping anything into the process: memory stays at the rows asked for.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from ppvae.errors import DataError

__all__ = ["NpyRows", "npy_header"]


def npy_header(path: str | os.PathLike) -> tuple[tuple, np.dtype, bool, int]:
    """``(shape, dtype, fortran_order, data_offset)`` of a ``.npy`` file, reading only its header."""
    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, fortran, dtype = read(fh)
            return tuple(shape), np.dtype(dtype), bool(fortran), fh.tell()
    except (ValueError, OSError, EOFError) as exc:
        reason = " ".join(str(exc).split())
        raise DataError(f"cannot read {path} as a .npy array ({reason}); save it with numpy.save") from None


class NpyRows:
    """Rows of a C-ordered ``.npy`` array, read on demand.

    Parameters
    ----------
    path : path-like
        The ``.npy`` file.

    Attributes
    ----------
    shape : tuple of int
        The whole array's shape.
    dtype : numpy.dtype
        The stored dtype (rows come back in it).
    """

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        self.shape, self.dtype, fortran, self.offset = npy_header(self.path)
        if fortran:
            raise DataError(
                f"{self.path} is stored in Fortran order, which cannot be read by rows; save it "
                "with numpy.save(file, numpy.ascontiguousarray(x))"
            )
        if self.dtype.hasobject:
            raise DataError(f"{self.path} holds {self.dtype} values; ppvae needs a numeric (integer or float) array")
        self.row_shape = self.shape[1:]
        self.row_bytes = int(np.prod(self.row_shape, dtype=np.int64)) * self.dtype.itemsize
        expected = self.offset + self.row_bytes * (self.shape[0] if self.shape else 0)
        if self.path.stat().st_size < expected:
            raise DataError(
                f"{self.path} is truncated: its header promises {expected} bytes, the file has "
                f"{self.path.stat().st_size}; write it again with numpy.save"
            )
        self._fd: int | None = None

    def __len__(self) -> int:
        return int(self.shape[0])

    def _file(self) -> int:
        if self._fd is None:
            self._fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_BINARY", 0))
        return self._fd

    def close(self) -> None:
        """Close the file (it reopens on the next read)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self):
        try:
            self.close()
        except Exception:  # interpreter shutdown: nothing left to do
            pass

    def __getstate__(self):
        # A file descriptor does not travel to another process; the path does.
        return {**self.__dict__, "_fd": None}

    def _read_into(self, buf: np.ndarray, start: int) -> None:
        view = memoryview(buf).cast("B")
        offset = self.offset + start * self.row_bytes
        fd = self._file()
        done = 0
        while done < len(view):
            if hasattr(os, "preadv"):
                got = os.preadv(fd, [view[done:]], offset + done)
            else:  # pragma: no cover - platforms without preadv
                data = os.pread(fd, len(view) - done, offset + done)
                view[done : done + len(data)] = data
                got = len(data)
            if got == 0:
                raise DataError(f"{self.path} ended early while reading rows; write it again with numpy.save")
            done += got

    def read(self, rows: np.ndarray) -> np.ndarray:
        """The rows numbered ``rows`` (any order, repeats allowed), as a new array.

        Consecutive row numbers are read with one call, so sorted, contiguous requests
        read sequentially.
        """
        rows = np.asarray(rows, dtype=np.int64).ravel()
        out = np.empty((len(rows),) + self.row_shape, dtype=self.dtype)
        if not len(rows):
            return out
        order = np.argsort(rows, kind="stable")
        s = rows[order]
        if s[0] < 0 or s[-1] >= len(self):
            raise IndexError(f"row index out of range for {len(self)} rows")
        tmp = out if np.all(order[1:] > order[:-1]) else np.empty_like(out)
        breaks = np.flatnonzero(np.diff(s) != 1) + 1
        starts = np.concatenate([[0], breaks])
        ends = np.concatenate([breaks, [len(s)]])
        for a, b in zip(starts.tolist(), ends.tolist()):
            # A repeated row (diff 0) starts a new run of its own.
            self._read_into(tmp[a:b], int(s[a]))
        if tmp is not out:
            out[order] = tmp
        return out

    def read_range(self, start: int, stop: int) -> np.ndarray:
        """Rows ``start`` to ``stop - 1``, one sequential read."""
        stop = min(stop, len(self))
        out = np.empty((max(0, stop - start),) + self.row_shape, dtype=self.dtype)
        if len(out):
            self._read_into(out, start)
        return out
