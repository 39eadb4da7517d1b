"""KServe v2 / Open Inference Protocol tensors over HTTP: JSON data and the binary tensor data extension."""

from __future__ import annotations

import json
import struct
from dataclasses import dataclass
from typing import Any

import numpy as np

from service.errors import BadRequest, InvalidParameter

DTYPES = {
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
HEADER_LENGTH = "inference-header-content-length"


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


def decode_bytes_tensor(raw: bytes) -> np.ndarray:
    items, offset = [], 0
    while offset < len(raw):
        (length,) = struct.unpack_from("<I", raw, offset)
        offset += 4
        items.append(raw[offset : offset + length])
        offset += length
    return np.array(items, dtype=object)


def encode_bytes_tensor(array: np.ndarray) -> bytes:
    out = bytearray()
    for item in array.reshape(-1):
        data = item if isinstance(item, bytes) else str(item).encode()
        out += struct.pack("<I", len(data)) + data
    return bytes(out)


def tensor_from_raw(name: str, datatype: str, shape: list[int], raw: bytes) -> Tensor:
    """Flat row-major bytes (binary extension, gRPC raw contents) -> a checked Tensor."""
    if datatype != "BYTES" and datatype not in DTYPES:
        raise InvalidParameter(f"input {name!r}: datatype {datatype!r} is not one of {sorted(DTYPES) + ['BYTES']}")
    if datatype == "BYTES":
        array = decode_bytes_tensor(raw)
    else:
        itemsize = np.dtype(DTYPES[datatype]).itemsize
        if len(raw) % itemsize:
            raise InvalidParameter(f"input {name!r}: {len(raw)} bytes are not a whole number of {datatype} values")
        array = np.frombuffer(raw, dtype=DTYPES[datatype])
    if array.size != int(np.prod(shape)):
        raise InvalidParameter(f"input {name!r}: {array.size} values do not fill shape {shape}")
    return Tensor(name, datatype, list(shape), array.reshape(shape))


def raw_bytes(array: np.ndarray) -> bytes:
    """A tensor's flat row-major bytes, BYTES tensors length-prefixed."""
    return encode_bytes_tensor(array) if datatype_of(array) == "BYTES" else np.ascontiguousarray(array).tobytes()


def parse_request(body: bytes, header_length: str | None) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Body -> (the JSON request, input tensors by name). Raises 400/422 with what is wrong."""
    if header_length is not None:
        try:
            split = int(header_length)
        except ValueError:
            raise BadRequest(f"Inference-Header-Content-Length must be an integer, got {header_length!r}") from None
        if not 0 < split <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {split} does not fit the {len(body)}-byte body")
        head, binary = body[:split], body[split:]
    else:
        head, binary = body, b""
    try:
        request = json.loads(head)
    except ValueError as exc:
        raise BadRequest(f"the inference request is not valid JSON: {exc}") from None
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise BadRequest("an inference request is a JSON object with a non-empty 'inputs' list")
    tensors, offset = {}, 0
    for spec in request["inputs"]:
        try:
            name, datatype, shape = spec["name"], spec["datatype"], [int(d) for d in spec["shape"]]
        except (KeyError, TypeError, ValueError):
            raise BadRequest("each input needs 'name', 'datatype' and an integer 'shape'") from None
        size = (spec.get("parameters") or {}).get("binary_data_size")
        if size is not None:
            raw = binary[offset : offset + int(size)]
            if len(raw) != int(size):
                raise BadRequest(f"input {name!r}: binary_data_size {size} runs past the end of the body")
            offset += int(size)
            tensors[name] = tensor_from_raw(name, datatype, shape, raw)
            continue
        if datatype != "BYTES" and datatype not in DTYPES:
            raise InvalidParameter(f"input {name!r}: datatype {datatype!r} is not one of {sorted(DTYPES) + ['BYTES']}")
        if "data" not in spec:
            raise BadRequest(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        try:
            dtype = object if datatype == "BYTES" else DTYPES[datatype]
            array = np.asarray(spec["data"], dtype=dtype).reshape(-1)
        except (TypeError, ValueError) as exc:
            raise InvalidParameter(f"input {name!r}: data does not fit {datatype}: {exc}") from None
        if array.size != int(np.prod(shape)):
            raise InvalidParameter(f"input {name!r}: {array.size} values do not fill shape {shape}")
        tensors[name] = Tensor(name, datatype, shape, array.reshape(shape))
    return request, tensors


def wants_binary(request: dict[str, Any], name: str) -> bool:
    for spec in request.get("outputs") or []:
        if spec.get("name") == name:
            return bool((spec.get("parameters") or {}).get("binary_data", False))
    return bool((request.get("parameters") or {}).get("binary_data_output", False))


def build_response(
    request: dict[str, Any], model: str, version: str, outputs: dict[str, np.ndarray]
) -> tuple[bytes, dict[str, str]]:
    """(body, headers). Outputs asked for as binary go after the JSON header, in order."""
    requested = [spec.get("name") for spec in request.get("outputs") or []]
    unknown = [n for n in requested if n not in outputs]
    if unknown:
        raise InvalidParameter(f"unknown output(s) {unknown}; this model has {sorted(outputs)}")
    names = requested or list(outputs)
    entries, blobs = [], []
    for name in names:
        array = outputs[name]
        datatype = datatype_of(array)
        entry: dict[str, Any] = {"name": name, "datatype": datatype, "shape": list(array.shape)}
        if wants_binary(request, name):
            blob = raw_bytes(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            flat = array.reshape(-1)
            entry["data"] = [x.decode() if isinstance(x, bytes) else x for x in flat.tolist()]
        entries.append(entry)
    response = {"model_name": model, "model_version": version, "outputs": entries}
    if "id" in request:
        response["id"] = request["id"]
    head = json.dumps(response).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
