"""Open Inference Protocol tensors: datatypes, JSON and binary encodings, checked against limits.

OIP datatypes map one to one to numpy dtypes, except ``BYTES``: an object array of ``bytes`` whose
binary form is each element as a 4-byte little-endian length followed by its bytes (the Triton
binary tensor data extension and ``raw_input_contents`` use the same layout).
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from typing import Any

import numpy as np

from kiln.errors import KilnError, PayloadTooLargeError

DATATYPES: dict[str, np.dtype[Any]] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(np.object_),
}
_BY_NUMPY = {str(dtype): name for name, dtype in DATATYPES.items() if name != "BYTES"}
_BY_DTYPE = {dtype: name for name, dtype in DATATYPES.items()}  # the hot path: no str(dtype)
# Names the engine manifest may use for string tensors (numpy's and ONNX Runtime's).
_STRING_DTYPES = {"object", "str", "bytes", "string", "tensor(string)"}
_BYTES_PREFIX = struct.Struct("<I")


def oip_datatype(dtype: str | np.dtype[Any]) -> str:
    """The OIP datatype name for a numpy dtype or an engine manifest dtype string."""
    if isinstance(dtype, np.dtype) and (known := _BY_DTYPE.get(dtype)) is not None:
        return known
    name = str(dtype)
    if name in _STRING_DTYPES or name.startswith("<U") or name.startswith("|S"):
        return "BYTES"
    if name == "bfloat16":
        return "BF16"
    if name not in _BY_NUMPY:
        raise KilnError(f"dtype {name} has no Open Inference Protocol datatype")
    return _BY_NUMPY[name]


def numpy_dtype(datatype: str, tensor: str) -> np.dtype[Any]:
    if datatype not in DATATYPES:
        raise KilnError(
            f"tensor {tensor!r}: unknown datatype {datatype!r}",
            hint="use one of " + ", ".join(DATATYPES),
        )
    return DATATYPES[datatype]


def check_shape(shape: Any, tensor: str, max_elements: int) -> tuple[int, ...]:
    """Validates a client-given shape and the element limit; returns it as a tuple."""
    if not isinstance(shape, list | tuple) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise KilnError(f"tensor {tensor!r}: shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise KilnError(f"tensor {tensor!r}: shape {list(shape)} has a negative dimension")
    count = math.prod(shape)
    if count > max_elements:
        raise PayloadTooLargeError(
            f"tensor {tensor!r}: shape {list(shape)} has {count} elements, over the limit of {max_elements}"
        )
    return tuple(shape)


def decode_bytes(buffer: bytes | memoryview, count: int, tensor: str) -> np.ndarray:
    """Length-prefixed elements → object array of ``bytes``; the lengths must fill the buffer exactly."""
    view = memoryview(buffer)
    out = np.empty(count, dtype=np.object_)
    offset = 0
    for i in range(count):
        if offset + 4 > len(view):
            raise KilnError(f"tensor {tensor!r}: BYTES data ends after {i} of {count} elements")
        (length,) = _BYTES_PREFIX.unpack_from(view, offset)
        offset += 4
        if offset + length > len(view):
            raise KilnError(f"tensor {tensor!r}: BYTES element {i} claims {length} bytes, only {len(view) - offset} remain")
        out[i] = bytes(view[offset : offset + length])
        offset += length
    if offset != len(view):
        raise KilnError(f"tensor {tensor!r}: {len(view) - offset} bytes left over after {count} BYTES elements")
    return out


def encode_bytes(array: np.ndarray) -> bytes:
    parts: list[bytes] = []
    for item in array.reshape(-1):
        data = item.encode("utf-8") if isinstance(item, str) else bytes(item)
        parts.append(_BYTES_PREFIX.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def from_raw(buffer: bytes | memoryview, datatype: str, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    """A tensor from its binary form (zero-copy for fixed-size types)."""
    dtype = numpy_dtype(datatype, tensor)
    count = math.prod(shape)
    if datatype == "BYTES":
        return decode_bytes(buffer, count, tensor).reshape(shape)
    expected = count * dtype.itemsize
    if len(buffer) != expected:
        raise KilnError(
            f"tensor {tensor!r}: {len(buffer)} bytes of binary data, but {datatype}{list(shape)} needs {expected}"
        )
    return np.frombuffer(buffer, dtype=dtype).reshape(shape)


def to_raw(array: np.ndarray) -> bytes | memoryview:
    """The binary form of a tensor (no copy when the array is already contiguous)."""
    if array.dtype == np.object_:
        return encode_bytes(array)
    contiguous = np.ascontiguousarray(array)
    return memoryview(contiguous).cast("B") if contiguous.size else b""  # type: ignore[arg-type]


def _flatten(data: Any) -> list[Any]:
    if isinstance(data, list) and data and isinstance(data[0], list):
        flat: list[Any] = []
        for row in data:
            if not isinstance(row, list):
                raise KilnError("tensor data mixes nested lists and scalars")
            flat.extend(_flatten(row))
        return flat
    if not isinstance(data, list):
        raise KilnError(f"tensor data must be a (nested) list, got {type(data).__name__}")
    return data


def from_json(data: Any, datatype: str, shape: tuple[int, ...], tensor: str) -> np.ndarray:
    """A tensor from the JSON ``data`` field: a flat or nested list in row-major order."""
    dtype = numpy_dtype(datatype, tensor)
    try:
        flat = _flatten(data)
    except KilnError as exc:
        raise KilnError(f"tensor {tensor!r}: {exc.message}") from None
    count = math.prod(shape)
    if len(flat) != count:
        raise KilnError(f"tensor {tensor!r}: {len(flat)} values in data, but shape {list(shape)} needs {count}")
    if datatype == "BYTES":
        out = np.empty(count, dtype=np.object_)
        for i, item in enumerate(flat):
            if not isinstance(item, str):
                raise KilnError(f"tensor {tensor!r}: BYTES data must be strings, element {i} is {type(item).__name__}")
            out[i] = item.encode("utf-8")
        return out.reshape(shape)
    if datatype == "BOOL":
        if not all(isinstance(v, bool) for v in flat):
            raise KilnError(f"tensor {tensor!r}: BOOL data must be true/false")
    elif any(isinstance(v, bool | str) or v is None for v in flat):
        raise KilnError(f"tensor {tensor!r}: {datatype} data must be numbers")
    try:
        with np.errstate(over="ignore", invalid="ignore"):  # out-of-range floats become inf: refused later as non-finite
            array = np.asarray(flat, dtype=dtype)
    except (OverflowError, ValueError, TypeError) as exc:
        raise KilnError(f"tensor {tensor!r}: data does not fit {datatype}: {exc}") from None
    if dtype.kind in "iu" and any(isinstance(v, float) for v in flat):
        raise KilnError(f"tensor {tensor!r}: {datatype} data must be integers")
    return array.reshape(shape)


def to_json(array: np.ndarray) -> list[Any]:
    """The JSON ``data`` field of an output tensor: a flat row-major list (BYTES as UTF-8 text)."""
    if array.dtype == np.object_:
        return [item.decode("utf-8", errors="replace") if isinstance(item, bytes) else str(item) for item in array.reshape(-1)]
    return array.reshape(-1).tolist()  # type: ignore[no-any-return]


def shape_list(shape: Sequence[int]) -> list[int]:
    return [int(d) for d in shape]
