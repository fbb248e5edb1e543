"""numpy arrays <-> ``edgecl.v1.Tensor``, with every check a receiver needs."""

from __future__ import annotations

import zlib
from typing import Any

import numpy as np

from edgecl._exceptions import InvalidInput

_DTYPES = {1: np.dtype("<f4"), 2: np.dtype("<f2"), 3: np.dtype("<f8"), 4: np.dtype("u1"),
           5: np.dtype("<i4"), 6: np.dtype("<i8")}
_CODES = {dt.newbyteorder("=") if dt.kind != "u" else dt: code for code, dt in _DTYPES.items()}
COMPRESSION_NONE, COMPRESSION_ZLIB = 0, 1
#: Largest decoded tensor accepted by default (guards against zlib bombs).
MAX_TENSOR_BYTES = 64 << 20
MAX_RANK = 8


def _code(dtype: np.dtype) -> int:
    code = _CODES.get(dtype.newbyteorder("=") if dtype.kind != "u" else dtype)
    if code is None:
        raise InvalidInput(f"dtype {dtype} cannot travel on the wire; use one of "
                           f"{sorted(str(d) for d in _DTYPES.values())}")
    return code


def tensor_to_proto(array: np.ndarray, *, compress: bool = False, out: Any = None) -> Any:
    """Encode ``array`` as a ``Tensor`` message (little-endian, C order)."""
    from edgecl._proto import tensor_pb2

    arr = np.asarray(array)
    code = _code(arr.dtype)
    data = np.ascontiguousarray(arr, dtype=_DTYPES[code]).tobytes()
    msg = out if out is not None else tensor_pb2.Tensor()
    msg.dtype = code
    del msg.shape[:]
    msg.shape.extend(int(d) for d in arr.shape)
    if compress:
        msg.data = zlib.compress(data, 6)
        msg.compression = COMPRESSION_ZLIB
    else:
        msg.data = data
        msg.compression = COMPRESSION_NONE
    return msg


def check_shape(shape: tuple[int, ...], itemsize: int, max_bytes: int, name: str) -> int:
    """Bytes a tensor of ``shape`` takes, or :class:`InvalidInput` when the rank, a dim or
    the total exceeds what ``max_bytes`` allows (plain ints: no overflow, no allocation)."""
    if len(shape) > MAX_RANK or any(d < 0 for d in shape):
        raise InvalidInput(f"{name}: invalid shape (rank {len(shape)}, at most {MAX_RANK})")
    limit = max(1, max_bytes // itemsize)  # elements; bounds every dim, even beside a 0
    if any(d > limit for d in shape):
        raise InvalidInput(f"{name}: a dimension exceeds the limit of {max_bytes} bytes")
    total = itemsize
    for d in shape:
        total *= d
    if total > max_bytes:
        raise InvalidInput(f"{name}: {total} bytes exceeds the limit of {max_bytes}")
    return total


def _inflate(data: bytes, expected: int, name: str) -> bytes:
    """zlib-inflate at most ``expected + 1`` bytes; the stream must end exactly there."""
    try:
        inflater = zlib.decompressobj()
        out = inflater.decompress(data, expected + 1)
    except zlib.error as exc:
        raise InvalidInput(f"{name}: corrupt zlib data") from exc
    if inflater.unconsumed_tail or not inflater.eof or inflater.unused_data:
        raise InvalidInput(f"{name}: compressed data does not match its shape "
                           f"(or has trailing bytes)")
    return out


def tensor_from_proto(msg: Any, *, name: str = "tensor",
                      max_bytes: int = MAX_TENSOR_BYTES) -> np.ndarray:
    """Decode a ``Tensor`` message into a new native-endian array.

    Raises :class:`InvalidInput` naming ``name`` for an unknown dtype or compression, a
    negative or too large shape (checked before anything is allocated), zlib data that
    does not end exactly at the declared size, or data whose length does not match.
    """
    dtype = _DTYPES.get(int(msg.dtype))
    if dtype is None:
        raise InvalidInput(f"{name}: unknown or unspecified dtype {int(msg.dtype)}")
    shape = tuple(int(d) for d in msg.shape)
    expected = check_shape(shape, dtype.itemsize, max_bytes, name)
    data = bytes(msg.data)
    if msg.compression == COMPRESSION_ZLIB:
        data = _inflate(data, expected, name)
    elif msg.compression != COMPRESSION_NONE:
        raise InvalidInput(f"{name}: unknown compression {int(msg.compression)}")
    if len(data) != expected:
        raise InvalidInput(f"{name}: {len(data)} bytes of data for shape {shape} "
                           f"and dtype {dtype} ({expected} expected)")
    return np.frombuffer(data, dtype=dtype).reshape(shape).astype(dtype.newbyteorder("="))
