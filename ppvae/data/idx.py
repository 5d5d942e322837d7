"""Read IDX files, the format of the MNIST and Fashion-MNIST distributions.

An IDX file is a 4-byte magic number (two zero bytes, a type code, the number of
dimensions), one big-endian ``uint32`` per dimension, then the values in C order,
big-endian. The files are usually distributed gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from pathlib import Path

import numpy as np

from ppvae.errors import DataError

__all__ = ["read_idx", "parse_idx"]

# Type codes of the IDX format and the big-endian numpy type each one stands for.
_IDX_TYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"


def _corrupt(name: str, reason: str) -> DataError:
    return DataError(
        f"{name} is corrupt or truncated ({reason}); delete it and download it again "
        "(for a file in the ppvae cache, deleting it is enough: it is re-downloaded on the next run)"
    )


def parse_idx(data: bytes, name: str = "IDX data") -> np.ndarray:
    """Decode the bytes of an IDX file (gzip-compressed or raw) into an array.

    Parameters
    ----------
    data : bytes
        The file's content. Gzip-compressed content is recognized by its magic bytes.
    name : str
        How to refer to the data in error messages (usually the file path).

    Returns
    -------
    numpy.ndarray
        A writable array in native byte order with the shape the header declares
        (``uint8`` for the MNIST files).

    Raises
    ------
    DataError
        If the content is not valid gzip, the magic number is wrong, or the number
        of bytes does not match the declared dimensions.
    """
    if data[:2] == _GZIP_MAGIC:
        try:
            data = gzip.decompress(data)
        except (OSError, EOFError, zlib.error) as exc:
            reason = " ".join(str(exc).split()) or type(exc).__name__
            raise _corrupt(name, f"bad gzip data: {reason}") from None
    elif str(name).endswith(".gz"):
        # A .gz name with other content is usually an HTML error page saved by a proxy.
        raise _corrupt(name, "not a gzip file")
    if len(data) < 4:
        raise _corrupt(name, f"only {len(data)} bytes, shorter than the 4-byte IDX header")
    zero, type_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or type_code not in _IDX_TYPES or ndim == 0:
        raise _corrupt(name, f"bad IDX magic number 0x{data[:4].hex()}")
    header_len = 4 + 4 * ndim
    if len(data) < header_len:
        raise _corrupt(name, f"header declares {ndim} dimensions but the file ends after {len(data)} bytes")
    dims = struct.unpack(f">{ndim}I", data[4:header_len])
    dtype = _IDX_TYPES[type_code]
    expected = header_len + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(data) != expected:
        raise _corrupt(name, f"dimensions {tuple(dims)} need {expected} bytes but the data has {len(data)}")
    values = np.frombuffer(data, dtype=dtype, offset=header_len).reshape(dims)
    # astype copies, so the result is writable and no longer pins the (large) bytes buffer.
    return values.astype(dtype.newbyteorder("="))


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (``*-ubyte`` or ``*-ubyte.gz``) into an array.

    Parameters
    ----------
    path : path-like
        The file to read.

    Returns
    -------
    numpy.ndarray
        The array the file holds, in native byte order.

    Raises
    ------
    DataError
        If the file does not exist, cannot be read or is not a valid IDX file; the
        message names the file.

    Examples
    --------
    >>> images = read_idx("t10k-images-idx3-ubyte.gz")  # doctest: +SKIP
    >>> images.shape, images.dtype
    ((10000, 28, 28), dtype('uint8'))
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise DataError(f"{path} does not exist; check the path or download the file again") from None
    except OSError as exc:
        raise DataError(f"cannot read {path} ({exc.strerror or exc}); check its permissions") from None
    return parse_idx(data, str(path))
