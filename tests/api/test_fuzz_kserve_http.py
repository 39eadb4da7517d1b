"""A hypothesis fuzzer of KServe v2 inference over HTTP: JSON tensors and the binary tensor data extension.

Requests start valid and get mutated (tests/api/kserve_fuzz.py): names, datatypes, shapes, data of
the wrong type or count, raw bytes (NaN included) behind binary_data_size, outputs, parameters and
ids of every JSON type, duplicate and missing inputs, deep nesting, model names and versions; the
binary body's Inference-Header-Content-Length is right, off by some, or not a number at all.
Invariant: 200 or a 4xx (503/504 allowed) in the KServe error shape, never a 500, within a bound.
"""

from __future__ import annotations

import anyio
import pytest
from hypothesis import HealthCheck, given, settings

from tests.api.kserve_fuzz import base_requests, check_http_answer, http_form, http_requests, path_of
from tests.fuzzing import HOSTILE_NUMBERS

pytestmark = [pytest.mark.anyio, HOSTILE_NUMBERS]
EXAMPLES = 1000
BOUND_SECONDS = 10.0
"""No request may take longer (the fake engine is instant): past it the server hangs on something."""


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=http_requests())
async def test_kserve_http_answers_every_request_with_a_documented_status(http, case) -> None:
    request, body, headers = case
    with anyio.fail_after(BOUND_SECONDS):
        response = await http.post(path_of(request), content=body, headers=headers)
    check_http_answer(response, request)


@pytest.mark.parametrize("depth", [500, 5_000, 100_000])
async def test_kserve_http_deeply_nested_data_is_a_4xx(http, depth) -> None:
    head = b'{"inputs": [{"name": "waveform", "datatype": "FP32", "shape": [1], "data": ' + b"[" * depth + b"0" + b"]" * depth + b"}]}"
    with anyio.fail_after(BOUND_SECONDS):
        response = await http.post("/v2/models/birdcall/infer", content=head)
    assert response.status_code in (400, 422) and isinstance(response.json()["error"], str), response.text[:300]


@pytest.mark.parametrize("request_", base_requests(), ids=lambda r: r.notes[0])
async def test_the_fuzzers_base_requests_are_valid(http, request_) -> None:
    """The requests the fuzzer mutates are answered 200 as they are: mutations start from valid ones."""
    head, blobs, headers = http_form(request_)
    response = await http.post(path_of(request_), content=head + blobs, headers=headers)
    assert response.status_code == 200, response.text[:300]
    check_http_answer(response, request_)
