"""The fuzz suite, smaller, against the real server (the session's: real models on ONNX Runtime,
BentoML's HTTP server in front, the gRPC server on its own port).

- schemathesis over the served /openapi.json, with the checks of tests/fuzzing.py;
- the KServe v2 fuzzer (tests/api/kserve_fuzz.py) over HTTP and gRPC, built from the served models'
  metadata, so valid requests reach the real models (whose outputs for extreme inputs are checked);
- a sample of the malformed-audio corpus (tests/audio_corpus.py) through the real decoder.

The api layer runs each in full over a fake engine; here the point is what only the real stack does.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

import grpc
import httpx
import pytest
import schemathesis
from hypothesis import given
from hypothesis import strategies as st

from tests.api.kserve_fuzz import (
    Calls,
    Served,
    base_requests,
    check_grpc_answer,
    check_http_answer,
    grpc_message,
    grpc_requests,
    http_form,
    http_requests,
    path_of,
)
from tests.audio_corpus import ANSWERS, Specimen, check_answer, corpus
from tests.conftest import server_grpc_port
from tests.fuzzing import HOSTILE_NUMBERS, bounded, config, node_id_for_schemathesis  # noqa: F401  (an autouse fixture)

pytestmark = HOSTILE_NUMBERS
SCHEMA_EXAMPLES = 15
KSERVE_EXAMPLES = 150
BOUND_SECONDS = 30.0
"""No request may take longer on 2 busy cores: past it the server hangs on something."""
GENERATE_DEADLINE_SECONDS = 3.0
"""X-Request-Timeout for /generate: 16 images of 250 DDIM steps are valid, and would hold the run for long."""


@pytest.fixture
def served_schema(server_url: str) -> Any:
    return schemathesis.openapi.from_url(f"{server_url}/openapi.json", config=config())


schema = schemathesis.pytest.from_fixture("served_schema")


def cap_deadline(case: Any) -> None:
    """Give a valid /generate request a short deadline (504 past it, a documented answer); a case whose
    header is invalid on purpose keeps it, so that it is still refused for it."""
    if case.operation.path != "/generate":
        return
    headers = case.headers if case.headers is not None else {}
    raw = headers.get("X-Request-Timeout")
    try:
        valid = raw is None or (float(raw) > 0 and math.isfinite(float(raw)))
    except (TypeError, ValueError):
        valid = False
    if valid and (raw is None or float(raw) > GENERATE_DEADLINE_SECONDS):
        case.headers = {**headers, "X-Request-Timeout": str(GENERATE_DEADLINE_SECONDS)}


@schema.parametrize()
@bounded(SCHEMA_EXAMPLES)
def test_served_operations_answer_as_documented(case: Any) -> None:
    cap_deadline(case)
    case.call_and_validate(timeout=BOUND_SECONDS)


@pytest.fixture(scope="module")
def client(server_url: str) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server_url, timeout=BOUND_SECONDS) as client:
        yield client


@pytest.fixture(scope="module")
def served(client: httpx.Client) -> Served:
    return Served.from_metadata(client.get("/v2/models/birdcall").json(), client.get("/v2/models/frames-denoiser").json())


@pytest.fixture(scope="module")
def grpc_calls(server_url: str) -> Iterator[Calls]:
    with grpc.insecure_channel(f"127.0.0.1:{server_grpc_port(server_url)}") as channel:
        yield Calls(channel, BOUND_SECONDS)


@bounded(KSERVE_EXAMPLES)
@given(data=st.data())
def test_served_kserve_http_answers_every_request_with_a_documented_status(client, served, data) -> None:
    request, body, headers = data.draw(http_requests(served))
    check_http_answer(client.post(path_of(request), content=body, headers=headers), request)


@bounded(KSERVE_EXAMPLES)
@given(data=st.data())
def test_served_kserve_grpc_answers_ok_or_a_client_error(grpc_calls, served, data) -> None:
    request, proto = data.draw(grpc_requests(served))
    try:
        answer = grpc_calls("ModelInfer", proto)
    except grpc.RpcError as exc:
        answer = exc
    check_grpc_answer(answer, proto, request.notes, served)


@pytest.mark.parametrize("kind", ["waveform", "log_mel", "denoiser"])
def test_the_fuzzers_base_requests_are_valid_on_the_served_models(client, grpc_calls, served, kind) -> None:
    """The fuzzers start from requests the real models answer (built from their metadata), over both protocols."""
    (request,) = [r for r in base_requests(served) if r.notes == [kind]]
    head, blobs, headers = http_form(request)
    response = client.post(path_of(request), content=head + blobs, headers=headers)
    assert response.status_code == 200, response.text[:300]
    check_http_answer(response, request)
    for form in ("raw", "typed"):
        proto = grpc_message(request, form)
        check_grpc_answer(grpc_calls("ModelInfer", proto), proto, [*request.notes, form], served)


def _sample() -> list[Specimen]:
    """Every file with an exact expectation (the valid bases, NaN, empty, text...) and every third of the rest."""
    return [s for i, s in enumerate(corpus()) if s.expect != ANSWERS or i % 3 == 0]


SAMPLE = _sample()


@pytest.mark.parametrize("specimen", SAMPLE, ids=[s.name for s in SAMPLE])
def test_served_classify_answers_the_corpus(client, specimen: Specimen) -> None:
    check_answer(client.post("/classify", content=specimen.data), specimen)
