"""A hypothesis fuzzer of KServe v2 inference over HTTP: JSON tensors and the binary tensor data extension.

Requests start valid and get mutated (tests/api/kserve_fuzz.py): names, datatypes, shapes, data of
the wrong type or count, raw bytes (NaN included) behind binary_data_size, outputs, parameters and
ids of every JSON type, duplicate and missing inputs, deep nesting, model names and versions; the
binary body's Inference-Header-Content-Length is right, off by some, or not a number at all.
Invariant: 200 or a 4xx (503/504 allowed) in the KServe error shape, never a 500, within a bound.
"""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.tensors import DATATYPES
from tests.api.kserve_fuzz import Request, requests
from tests.fuzzing import HOSTILE_NUMBERS

pytestmark = [pytest.mark.anyio, HOSTILE_NUMBERS]
EXAMPLES = 1000
BOUND_SECONDS = 10.0
"""No request may take longer (the fake engine is instant): past it the server hangs on something."""
STATUSES = {200, 400, 404, 408, 413, 415, 422, 503, 504}
HEADER = "inference-header-content-length"
# Header values as bytes: latin-1 text the server decodes ("²" is a digit to str.isdigit, not to int).
HOSTILE_LENGTHS = [b"0", b"-5", b"abc", b"", b" 12", b"\xb2", b"\xd9\xa3", b"9" * 40, b"1e3", b"0x10"]


def path_of(request: Request) -> str:
    version = f"/versions/{quote(request.version, safe='')}" if request.version is not None else ""
    return f"/v2/models/{quote(request.model, safe='')}{version}/infer"


@st.composite
def http_requests(draw: st.DrawFn) -> tuple[Request, bytes, dict[str, bytes]]:
    """(the request, its body, its headers): binary inputs after the JSON header, with a length header that may lie."""
    request = draw(requests())
    body: dict[str, Any] = {"inputs": [item.json() for item in request.inputs]}
    for key in ("outputs", "parameters", "id"):
        if getattr(request, key) is not None:
            body[key] = getattr(request, key)
    head = json.dumps(body).encode()
    blobs = b"".join(item.raw for item in request.inputs if item.raw is not None)
    headers: dict[str, bytes] = {"content-type": b"application/octet-stream" if blobs else b"application/json"}
    length = str(len(head)).encode()
    if blobs or draw(st.sampled_from(range(10))) == 0:  # integers() would favour 0
        choice = draw(st.sampled_from(["right", "right", "off", "hostile", "none"]))
        request.notes.append(f"length:{choice}")
        if choice == "right":
            headers[HEADER] = length
        elif choice == "off":
            headers[HEADER] = str(max(0, len(head) + draw(st.integers(-40, 40)))).encode()
        elif choice == "hostile":
            headers[HEADER] = draw(st.sampled_from(HOSTILE_LENGTHS))
    if draw(st.sampled_from(range(10))) == 0:
        headers["x-request-timeout"] = draw(st.sampled_from([b"0", b"-1", b"nan", b"inf", b"1e-300", b"\xb2", b"30"]))
        request.notes.append("timeout")
    return request, head + blobs, headers


def violations(request: Request) -> list[str]:
    """What makes a request invalid by the document's InferenceRequest schema (those that are easy to tell)."""
    found = []
    if request.id is not None and not isinstance(request.id, str):
        found.append("id")
    if request.parameters is not None and not (
        isinstance(request.parameters, dict) and isinstance(request.parameters.get("binary_data_output", False), bool)
    ):
        found.append("parameters")
    outputs = request.outputs
    if outputs is not None and not (
        isinstance(outputs, list) and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        found.append("outputs")
    for item in request.inputs:
        spec = item.json()
        shape = spec.get("shape")
        if spec.get("datatype") not in DATATYPES or not isinstance(spec.get("name"), str):
            found.append("input datatype or name")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            found.append("input shape")
    names = [item.name for item in request.inputs]
    if not names or len(names) != len({repr(n) for n in names}):
        found.append("inputs")
    return found


def check_answer(response: httpx.Response, request: Request) -> None:
    """A documented status; errors in the KServe shape; a 200 whose outputs can be read back; what
    breaks the schema never answered 200."""
    where = f"{request.notes} -> {response.status_code} {response.text[:300]!r}"
    assert response.status_code in STATUSES, where
    if response.status_code == 200:
        assert not violations(request), f"accepted a request with invalid {violations(request)}: {where}"
    if response.status_code != 200:
        body = response.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("type"), str), where
        return
    header_length = response.headers.get(HEADER)
    head = response.content[: int(header_length)] if header_length else response.content
    answer = json.loads(head)
    assert answer["model_name"] == request.model and answer["outputs"], where
    sizes = sum(out.get("parameters", {}).get("binary_data_size", 0) for out in answer["outputs"])
    assert len(response.content) == len(head) + sizes, where


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=http_requests())
async def test_kserve_http_answers_every_request_with_a_documented_status(http, case) -> None:
    request, body, headers = case
    with anyio.fail_after(BOUND_SECONDS):
        response = await http.post(path_of(request), content=body, headers=headers)
    check_answer(response, request)


@pytest.mark.parametrize("depth", [500, 5_000, 100_000])
async def test_kserve_http_deeply_nested_data_is_a_4xx(http, depth) -> None:
    head = b'{"inputs": [{"name": "waveform", "datatype": "FP32", "shape": [1], "data": ' + b"[" * depth + b"0" + b"]" * depth + b"}]}"
    with anyio.fail_after(BOUND_SECONDS):
        response = await http.post("/v2/models/birdcall/infer", content=head)
    assert response.status_code in (400, 422) and isinstance(response.json()["error"], str), response.text[:300]
