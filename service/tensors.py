"""Protocol-neutral tensors (KServe v2 / Open Inference Protocol datatypes) and their raw bytes.

The KServe HTTP codec (JSON data or the binary tensor data extension) and the gRPC adapter (typed
contents or raw_input_contents) both build their input tensors here, so the checks on datatype,
shape and size exist once.
"""

from __future__ import annotations

import math
import struct
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import InvalidParameter

DTYPES: dict[str, type[np.generic]] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
DATATYPES = (*DTYPES, "BYTES")
MAX_DIMENSIONS = 32
"""Most dimensions of a tensor: numpy holds at most 64 (32 before numpy 2), and no model here needs more than 4."""


@dataclass
class Tensor:
    name: str
    datatype: str
    shape: list[int]
    data: np.ndarray


def datatype_of(array: np.ndarray) -> str:
    if array.dtype.kind in ("U", "S", "O"):
        return "BYTES"
    for name, dtype in DTYPES.items():
        if array.dtype == dtype:
            return name
    raise TypeError(f"no KServe datatype for {array.dtype}")


def check_datatype(name: str, datatype: Any) -> None:
    if not isinstance(datatype, str) or datatype not in DATATYPES:
        raise InvalidParameter(f"input {name!r}: datatype {datatype!r} is not one of {sorted(DATATYPES)}")


def check_shape(name: str, shape: Any) -> list[int]:
    """A shape is a list of non-negative integers (JSON booleans are not integers)."""
    if not isinstance(shape, (list, tuple)) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise InvalidParameter(f"input {name!r}: shape must be a list of integers, got {shape!r}")
    if any(d < 0 for d in shape):
        raise InvalidParameter(f"input {name!r}: shape {list(shape)} has a negative dimension; send the actual sizes")
    if len(shape) > MAX_DIMENSIONS:
        raise InvalidParameter(f"input {name!r}: shape has {len(shape)} dimensions; at most {MAX_DIMENSIONS} are accepted")
    return list(shape)


def _fill(name: str, datatype: str, shape: Sequence[int], array: np.ndarray) -> Tensor:
    # Python integers: a hostile shape such as [2**32, 2**32] must not wrap around to a small product.
    if array.size != math.prod(shape):
        raise InvalidParameter(f"input {name!r}: {array.size} values do not fill shape {list(shape)}")
    try:
        return Tensor(name, datatype, list(shape), array.reshape(shape))
    except ValueError:  # no values, but a dimension past what numpy can index: [0, 2**63]
        raise InvalidParameter(f"input {name!r}: shape {list(shape)} has a dimension too large for any tensor") from None


def decode_bytes_tensor(name: str, raw: bytes) -> np.ndarray:
    """Length-prefixed (uint32 little-endian) items -> an object array of bytes."""
    items, offset = [], 0
    while offset < len(raw):
        if offset + 4 > len(raw):
            raise InvalidParameter(f"input {name!r}: BYTES data ends inside an item's length prefix")
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        if offset + length > len(raw):
            raise InvalidParameter(f"input {name!r}: a BYTES item of {length} bytes runs past the end of the data")
        items.append(raw[offset : offset + length])
        offset += length
    array = np.empty(len(items), dtype=object)
    array[:] = items
    return array


def encode_bytes_tensor(array: np.ndarray) -> bytes:
    out = bytearray()
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        out += struct.pack("<I", len(data)) + data
    return bytes(out)


def tensor_from_raw(name: str, datatype: str, shape: Sequence[int], raw: bytes) -> Tensor:
    """Flat row-major bytes (HTTP binary extension, gRPC raw contents) -> a checked Tensor."""
    check_datatype(name, datatype)
    shape = check_shape(name, shape)
    if datatype == "BYTES":
        array = decode_bytes_tensor(name, raw)
    else:
        itemsize = np.dtype(DTYPES[datatype]).itemsize
        if len(raw) % itemsize:
            raise InvalidParameter(f"input {name!r}: {len(raw)} bytes are not a whole number of {datatype} values")
        array = np.frombuffer(raw, dtype=DTYPES[datatype])
    return _fill(name, datatype, shape, array)


def tensor_from_values(name: str, datatype: str, shape: Sequence[int], values: Any) -> Tensor:
    """A list of values (HTTP JSON `data`, gRPC typed contents) -> a checked Tensor."""
    check_datatype(name, datatype)
    shape = check_shape(name, shape)
    if not isinstance(values, (list, tuple)):
        raise InvalidParameter(f"input {name!r}: data must be a list of values, got {type(values).__name__}")
    try:
        # Inferred first, converted after checks: numpy's own conversion would read "0.1" as a
        # number, cut 1.5 to an INT8 1 and wrap 300 around.
        inferred = np.asarray(values, dtype=object if datatype == "BYTES" else None).reshape(-1)
    except (TypeError, ValueError, OverflowError, RecursionError) as exc:  # ragged nesting among them
        raise InvalidParameter(f"input {name!r}: data does not fit {datatype}: {exc}") from None
    if datatype == "BYTES":
        if not all(isinstance(v, (str, bytes)) for v in inferred):
            raise InvalidParameter(f"input {name!r}: BYTES data must be strings")
        return _fill(name, datatype, shape, inferred)
    return _fill(name, datatype, shape, _checked_numbers(name, datatype, inferred, values))


def _holds_bool(values: Any) -> bool:
    """Whether (nested) lists of values hold a boolean: numpy reads [true, 0.5] as [1.0, 0.5]."""
    kinds = set(map(type, values))
    return bool in kinds or (list in kinds and any(_holds_bool(v) for v in values if type(v) is list))


def _checked_numbers(name: str, datatype: str, inferred: np.ndarray, values: Any) -> np.ndarray:
    """Values numpy inferred -> the datatype's array, refused (422) where they are not its values."""
    target = np.dtype(DTYPES[datatype])
    if inferred.size == 0:
        return inferred.astype(target)
    kind = inferred.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise InvalidParameter(f"input {name!r}: BOOL data must be true or false")
        return inferred
    if kind not in "iuf" or _holds_bool(values):  # strings, nulls, booleans, numbers too large for 64 bits
        raise InvalidParameter(f"input {name!r}: {datatype} data must be numbers (not strings, booleans or nulls) within its range")
    if target.kind in "iu":
        if kind == "f" and not bool(np.all(np.mod(inferred, 1) == 0)):  # inf and NaN fail it too
            raise InvalidParameter(f"input {name!r}: {datatype} data must be whole numbers")
        info = np.iinfo(target)
        if inferred.min() < info.min or inferred.max() > info.max:
            raise InvalidParameter(f"input {name!r}: {datatype} data must lie within [{info.min}, {info.max}]")
        return inferred.astype(target)
    with np.errstate(over="ignore"):
        converted = inferred.astype(target)
    if bool(np.any(np.isinf(converted) & np.isfinite(inferred))):
        raise InvalidParameter(f"input {name!r}: values beyond {datatype}'s range (largest {float(np.finfo(target).max):.4g})")
    return converted


def numeric(tensor: Tensor, what: str) -> np.ndarray:
    """A tensor's data, refused (422) when its datatype is not a number; in its own dtype, so that
    the model checks its size before converting it to float32 (4 times a UINT8 tensor's bytes)."""
    if tensor.datatype in ("BYTES", "BOOL"):
        raise InvalidParameter(f"input {tensor.name!r} must be {what}, got datatype {tensor.datatype}")
    return tensor.data


def raw_bytes(array: np.ndarray) -> bytes:
    """A tensor's flat row-major bytes, BYTES tensors length-prefixed."""
    return encode_bytes_tensor(array) if datatype_of(array) == "BYTES" else np.ascontiguousarray(array).tobytes()
