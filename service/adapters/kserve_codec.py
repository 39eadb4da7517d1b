"""KServe v2 / Open Inference Protocol request and response bodies over HTTP: JSON data and the
binary tensor data extension."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from service.errors import BadRequest
from service.tensors import Tensor, check_datatype, datatype_of, raw_bytes, tensor_from_raw, tensor_from_values

HEADER_LENGTH = "inference-header-content-length"


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
        if "data" not in spec:
            check_datatype(name, datatype)
            raise BadRequest(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        tensors[name] = tensor_from_values(name, datatype, shape, spec["data"])
    return request, tensors


def requested_outputs(request: dict[str, Any]) -> list[str]:
    return [spec.get("name") for spec in request.get("outputs") or []]


def wants_binary(request: dict[str, Any], name: str) -> bool:
    for spec in request.get("outputs") or []:
        if spec.get("name") == name:
            return bool((spec.get("parameters") or {}).get("binary_data", False))
    return bool((request.get("parameters") or {}).get("binary_data_output", False))


def build_response(request: dict[str, Any], model: str, version: str, outputs: dict[str, np.ndarray]) -> tuple[bytes, dict[str, str]]:
    """(body, headers). Outputs asked for as binary go after the JSON header, in order."""
    entries, blobs = [], []
    for name, array in outputs.items():
        entry: dict[str, Any] = {"name": name, "datatype": datatype_of(array), "shape": list(array.shape)}
        if wants_binary(request, name):
            blob = raw_bytes(array)
            entry["parameters"] = {"binary_data_size": len(blob)}
            blobs.append(blob)
        else:
            entry["data"] = [x.decode() if isinstance(x, bytes) else x for x in array.reshape(-1).tolist()]
        entries.append(entry)
    response = {"model_name": model, "model_version": version, "outputs": entries}
    if "id" in request:
        response["id"] = request["id"]
    head = json.dumps(response).encode()
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
