"""A hypothesis fuzzer of KServe v2 over gRPC: raw protobuf messages to an in-process grpc.aio server.

ModelInfer requests start valid and get mutated as over HTTP (tests/api/kserve_fuzz.py), then the
gRPC forms add theirs: raw_input_contents too many, too few or of the wrong length, typed contents
in another datatype's field (or in both forms at once), NaN or infinite values in either, request
and output parameters of every InferParameter kind; model names and versions go to ModelMetadata
and ModelReady too, and bytes that are no protobuf at all to every RPC.
Invariant: within a bound, a client-error code (never UNKNOWN or INTERNAL) with a message, or OK with
outputs that read back, and never OK for a request that breaks the rules (kserve_fuzz.check_grpc_answer).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.adapters.grpc.messages import message, methods
from service.adapters.grpc.server import start_grpc_server
from service.local_server import free_port
from tests.api.kserve_fuzz import (
    FAKE,
    TEXT,
    Calls,
    Input,
    base_requests,
    check_grpc_answer,
    check_grpc_error,
    grpc_message,
    grpc_requests,
    raw_contents,
)
from tests.fuzzing import HOSTILE_NUMBERS

pytestmark = [pytest.mark.anyio, HOSTILE_NUMBERS]
EXAMPLES = 600
BOUND_SECONDS = 10.0
"""No call may take longer (the fake engine is instant): past it the server hangs on something."""


@pytest.fixture
async def calls(plane) -> AsyncIterator[Calls]:
    port = free_port()
    server = await start_grpc_server(plane, "127.0.0.1", port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Calls(channel, 2 * BOUND_SECONDS)
    await server.stop(grace=None)


async def answer_within_bound(calls: Calls, rpc: str, request: Message | bytes) -> Any:
    """The RPC's response, or the error it ended with. Bounded by asyncio.wait_for, which cancels a task
    of its own: an anyio scope cancelling the test's task inside a grpc.aio call lets the CancelledError
    out, and it takes the session's runner (every later test) with it."""
    try:
        return await asyncio.wait_for(calls(rpc, request), BOUND_SECONDS)
    except grpc.aio.AioRpcError as exc:
        return exc


async def call_within_bound(calls: Calls, rpc: str, request: Message | bytes, notes: Any) -> grpc.StatusCode:
    answer = await answer_within_bound(calls, rpc, request)
    if isinstance(answer, grpc.aio.AioRpcError):
        check_grpc_error(answer, notes)
        return answer.code()
    return grpc.StatusCode.OK


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=grpc_requests())
async def test_grpc_model_infer_answers_ok_or_a_client_error(calls, case) -> None:
    request, proto = case
    check_grpc_answer(await answer_within_bound(calls, "ModelInfer", proto), proto, request.notes)


NAMES = st.sampled_from([*FAKE.versions, "", "🐦", "birdcall\u0000"]) | TEXT
VERSIONS = st.sampled_from(["", "b1", "f1", "-1", "9" * 100]) | TEXT


@settings(max_examples=60, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(rpc=st.sampled_from(["ModelMetadata", "ModelReady"]), name=NAMES, version=VERSIONS)
async def test_grpc_model_rpcs_answer_any_name_and_version(calls, rpc, name, version) -> None:
    request = message(methods()[rpc].input_type.name)(name=name, version=version)
    code = await call_within_bound(calls, rpc, request, (rpc, name, version))
    if name not in FAKE.versions:
        assert code == grpc.StatusCode.NOT_FOUND


@settings(max_examples=60, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    rpc=st.sampled_from(sorted(methods())),
    data=st.binary(max_size=64) | st.sampled_from([b"\x0a\xff\xff\xff\xff\x0f", b"\xff" * 9, b"\x2a\x05"]),
)
async def test_grpc_bytes_that_are_no_protobuf_are_a_client_error(calls, rpc, data) -> None:
    """A message that does not parse is the client's mistake (INVALID_ARGUMENT), never INTERNAL."""
    await call_within_bound(calls, rpc, data, (rpc, data))


def test_the_fuzzer_keeps_json_data_as_raw_contents() -> None:
    """The conversion keeps valid requests valid: an unmutated waveform goes as raw FP32 samples."""
    item = Input("waveform", "FP32", [3], data=[0.0, 0.5, 1.0])
    assert np.frombuffer(raw_contents(item), np.float32).tolist() == [0.0, 0.5, 1.0]


@pytest.mark.parametrize("form", ["raw", "typed"])
@pytest.mark.parametrize("request_", base_requests(), ids=lambda r: r.notes[0])
async def test_the_fuzzers_base_requests_are_valid(calls, request_, form) -> None:
    """The requests the fuzzer mutates are answered as they are, in either form: mutations start from valid ones."""
    proto = grpc_message(request_, form)
    response = await calls("ModelInfer", proto)
    check_grpc_answer(response, proto, request_.notes)
