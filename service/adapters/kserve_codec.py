"""KServe v2 / Open Inference Protocol request and response bodies over HTTP: JSON data and the
binary tensor data extension."""

from __future__ import annotations

import json
from typing import Any

import numpy as np

from service.adapters.http import HEADER_INTEGER_DIGITS, header_integer, parse_json
from service.errors import BadRequest, InternalError, PayloadTooLarge
from service.tensors import Tensor, check_datatype, datatype_of, raw_bytes, tensor_from_raw, tensor_from_values

HEADER_LENGTH = "inference-header-content-length"


def _object(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise BadRequest(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


def _binary_size(value: Any, name: str) -> int | None:
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise BadRequest(f"input {name!r}: binary_data_size must be a non-negative integer, got {value!r}")
    return value


def json_too_large(limit: int) -> PayloadTooLarge:
    return PayloadTooLarge(
        f"the request's JSON passes {limit} bytes, the limit for JSON; send tensor data with the binary tensor data"
        f" extension (Inference-Header-Content-Length, tritonclient's default), which takes whole bodies up to the upload limit",
        max_bytes=limit,
    )


def header_split(header_length: str | None) -> int | None:
    """Inference-Header-Content-Length as a number (None without one): 400 unless it is an integer."""
    if header_length is None:
        return None
    split = header_integer(header_length)
    if split is None:
        raise BadRequest(
            f"Inference-Header-Content-Length must be an integer of at most {HEADER_INTEGER_DIGITS} digits, got {header_length[:40]!r}"
        )
    return split


def parse_request(body: bytes, split: int | None, json_limit: int) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """Body -> (the JSON request, input tensors by name). Raises 400/413/422 with what is wrong.

    `split` is the JSON's length when binary data follows it (header_split of the request's
    Inference-Header-Content-Length), None when the whole body is JSON. Everything a client sends
    is checked here, before any model work: the JSON's size (at most `json_limit` bytes), its
    shape, each input's name, datatype, shape and data, the requested outputs and their parameters.
    """
    if split is not None:
        if not 0 < split <= len(body):
            raise BadRequest(f"Inference-Header-Content-Length {split} does not fit the {len(body)}-byte body")
        head, binary = body[:split], body[split:]
    else:
        head, binary = body, b""
    if len(head) > json_limit:
        raise json_too_large(json_limit)
    request = parse_json(head, "the inference request")
    if not isinstance(request, dict) or not isinstance(request.get("inputs"), list) or not request["inputs"]:
        raise BadRequest("an inference request is a JSON object with a non-empty 'inputs' list")
    if not isinstance(request.get("id", ""), str):  # echoed in the response, where clients read a string
        raise BadRequest(f"'id' must be a string, got {type(request['id']).__name__}")
    binary_output = _object(request.get("parameters"), "'parameters'").get("binary_data_output", False)
    if not isinstance(binary_output, bool):
        raise BadRequest(f"parameters.binary_data_output must be true or false, got {binary_output!r}")
    requested_outputs(request)
    tensors, offset = {}, 0
    for spec in request["inputs"]:
        spec = _object(spec, "each input")
        name, datatype = spec.get("name"), spec.get("datatype")
        if not isinstance(name, str) or not isinstance(datatype, str) or "shape" not in spec:
            raise BadRequest("each input needs a string 'name', a string 'datatype' and a 'shape'")
        if name in tensors:
            raise BadRequest(f"input {name!r} is given twice")
        size = _binary_size(_object(spec.get("parameters"), f"input {name!r}: 'parameters'").get("binary_data_size"), name)
        if size is not None:
            raw = binary[offset : offset + size]
            if len(raw) != size:
                raise BadRequest(f"input {name!r}: binary_data_size {size} runs past the end of the body")
            offset += size
            tensors[name] = tensor_from_raw(name, datatype, spec["shape"], raw)
            continue
        if "data" not in spec:
            check_datatype(name, datatype)
            raise BadRequest(f"input {name!r} has neither 'data' nor parameters.binary_data_size")
        tensors[name] = tensor_from_values(name, datatype, spec["shape"], spec["data"])
    if offset != len(binary):
        raise BadRequest(f"the body has {len(binary) - offset} bytes of binary data that no input claims")
    return request, tensors


def requested_outputs(request: dict[str, Any]) -> list[str]:
    """The output names a request asks for, in order (none: every output)."""
    outputs = request.get("outputs")
    if outputs is None:
        return []
    if not isinstance(outputs, list):
        raise BadRequest(f'\'outputs\' must be a list of objects like {{"name": "..."}}, got {type(outputs).__name__}')
    names = []
    for spec in outputs:
        if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
            raise BadRequest(f'each requested output is an object with a string "name", like {{"name": "..."}}; got {spec!r}')
        binary = _object(spec.get("parameters"), f"output {spec['name']!r}: 'parameters'").get("binary_data", False)
        if not isinstance(binary, bool):
            raise BadRequest(f"output {spec['name']!r}: binary_data must be true or false, got {binary!r}")
        names.append(spec["name"])
    return names


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
    try:
        head = json.dumps(response, allow_nan=False).encode()
    except ValueError:  # NaN or infinity in an output: JSON cannot carry it, and it means a broken model
        raise InternalError(f"model {model!r} produced non-finite values") from None
    if not blobs:
        return head, {"content-type": "application/json"}
    return head + b"".join(blobs), {"content-type": "application/octet-stream", HEADER_LENGTH: str(len(head))}
