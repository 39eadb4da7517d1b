"""A hypothesis fuzzer of KServe v2 over gRPC: raw protobuf messages to an in-process grpc.aio server.

ModelInfer requests start valid and get mutated as over HTTP (tests/api/kserve_fuzz.py), then the
gRPC forms add theirs: raw_input_contents too many, too few or of the wrong length, typed contents
in another datatype's field (or in both forms at once), request and output parameters of every
InferParameter kind; model names and versions go to ModelMetadata and ModelReady too, and bytes
that are no protobuf at all to every RPC.
Invariant: OK or a client-error code (never UNKNOWN or INTERNAL), within a bound.
"""

from __future__ import annotations

import contextlib
import math
from collections.abc import AsyncIterator
from typing import Any

import anyio
import grpc
import numpy as np
import pytest
from google.protobuf.message import Message
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from service.adapters.grpc.messages import SERVICE, message, methods
from service.adapters.grpc.server import start_grpc_server
from service.local_server import free_port
from service.tensors import DTYPES
from tests.api.kserve_fuzz import INT64_MAX, INT64_MIN, MODELS, TEXT, Input, Request, requests
from tests.fuzzing import HOSTILE_NUMBERS

pytestmark = [pytest.mark.anyio, HOSTILE_NUMBERS]
EXAMPLES = 600
BOUND_SECONDS = 10.0
"""No call may take longer (the fake engine is instant): past it the server hangs on something."""
CLIENT_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
CONTENTS_FIELDS = [
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
]
# The field tritonclient fills for each datatype (FP16 has none: raw contents only).
FIELD_OF = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
InferRequest = message("ModelInferRequest")


class Calls:
    """Each RPC of the service on one channel, taking and giving messages, or raw bytes (`raw=True`)."""

    def __init__(self, channel: grpc.aio.Channel):
        self.channel = channel

    def __call__(self, rpc: str, request: Message | bytes) -> Any:
        if isinstance(request, bytes):
            serialize: Any = None  # bytes go as they are
        else:
            serialize = type(request).SerializeToString
        deserialize = message(methods()[rpc].output_type.name).FromString
        return self.channel.unary_unary(f"/{SERVICE}/{rpc}", request_serializer=serialize, response_deserializer=deserialize)(
            request, timeout=2 * BOUND_SECONDS
        )


@pytest.fixture
async def calls(plane) -> AsyncIterator[Calls]:
    port = free_port()
    server = await start_grpc_server(plane, "127.0.0.1", port)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        yield Calls(channel)
    await server.stop(grace=None)


def _text(value: Any) -> str:
    """A protobuf string field holds text only: anything else goes as its JSON-ish text."""
    return value if isinstance(value, str) else str(value)


def _shape(shape: Any) -> list[int]:
    if not isinstance(shape, list):
        return []
    return [d for d in shape if isinstance(d, int) and not isinstance(d, bool) and INT64_MIN <= d <= INT64_MAX]


def _raw(item: Input) -> bytes:
    """An input's values as raw contents: its raw bytes, or its data in its datatype where numpy can."""
    if item.raw is not None:
        return item.raw
    try:
        return np.asarray(item.data, dtype=DTYPES.get(_text(item.datatype), np.float32)).tobytes()
    except (TypeError, ValueError, OverflowError):
        return b""


def _fill(contents: Any, field_name: str, data: Any) -> None:
    """Put values in a typed contents field, each value the field cannot hold dropped."""
    values = data if isinstance(data, list) else [data]
    target = getattr(contents, field_name)
    for value in values:
        with contextlib.suppress(TypeError, ValueError):  # out of the field's range, or not its type
            target.append(_text(value).encode() if field_name == "bytes_contents" else value)


def _parameters(target: Any, values: Any) -> None:
    """JSON parameters into an InferParameter map, as far as its kinds (bool, int64, string) go."""
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        parameter = target[_text(key)]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
            parameter.int64_param = value
        else:
            parameter.string_param = _text(value)


@st.composite
def grpc_requests(draw: st.DrawFn) -> tuple[Request, Message]:
    """(the request, its ModelInferRequest): raw contents or typed contents, each possibly wrong."""
    request = draw(requests())
    form = draw(st.sampled_from(["raw", "raw", "typed", "typed", "wrong_field", "both", "raw_count", "raw_length"]))
    request.notes.append(form)
    proto = InferRequest(model_name=request.model, model_version=request.version or "", id=_text(request.id or ""))
    _parameters(proto.parameters, request.parameters)
    for output in request.outputs if isinstance(request.outputs, list) else []:
        spec = proto.outputs.add(name=_text(output.get("name") if isinstance(output, dict) else output))
        _parameters(spec.parameters, output.get("parameters") if isinstance(output, dict) else None)
    raws = []
    for item in request.inputs:
        spec = proto.inputs.add(name=_text(item.name), datatype=_text(item.datatype), shape=_shape(item.shape))
        _parameters(spec.parameters, item.parameters)
        if form in ("typed", "wrong_field", "both"):
            right = FIELD_OF.get(_text(item.datatype), "fp32_contents")
            field_name = draw(st.sampled_from(CONTENTS_FIELDS)) if form == "wrong_field" else right
            data = item.data if item.data is not None else np.frombuffer(item.raw or b"", np.uint8)[: len(item.raw or b"") // 4].tolist()
            _fill(spec.contents, field_name, data)
        if form != "typed" and form != "wrong_field":
            raws.append(_raw(item))
    if form == "raw_count":
        raws = raws[:-1] if raws and draw(st.booleans()) else [*raws, b"\0" * 4]
    elif form == "raw_length" and raws:
        i = draw(st.integers(0, len(raws) - 1))
        cut = draw(st.integers(-7, 7))
        raws[i] = raws[i][:cut] if cut < 0 else raws[i] + b"\x01" * cut
    proto.raw_input_contents.extend(raws)
    return request, proto


async def call_within_bound(calls: Calls, rpc: str, request: Message | bytes, notes: Any) -> grpc.StatusCode:
    with anyio.fail_after(BOUND_SECONDS):
        try:
            await calls(rpc, request)
        except grpc.aio.AioRpcError as exc:
            assert exc.code() in CLIENT_CODES, f"{notes} -> {exc.code()} {exc.details()!r}"
            return exc.code()
    return grpc.StatusCode.OK


@settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(case=grpc_requests())
async def test_grpc_model_infer_answers_ok_or_a_client_error(calls, case) -> None:
    request, proto = case
    await call_within_bound(calls, "ModelInfer", proto, request.notes)


NAMES = st.sampled_from([*MODELS, "", "🐦", "birdcall\u0000"]) | TEXT
VERSIONS = st.sampled_from(["", "b1", "f1", "-1", "9" * 100]) | TEXT


@settings(max_examples=60, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(rpc=st.sampled_from(["ModelMetadata", "ModelReady"]), name=NAMES, version=VERSIONS)
async def test_grpc_model_rpcs_answer_any_name_and_version(calls, rpc, name, version) -> None:
    request = message(methods()[rpc].input_type.name)(name=name, version=version)
    code = await call_within_bound(calls, rpc, request, (rpc, name, version))
    if name not in MODELS:
        assert code == grpc.StatusCode.NOT_FOUND


@settings(max_examples=60, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))
@given(
    rpc=st.sampled_from(sorted(methods())),
    data=st.binary(max_size=64) | st.sampled_from([b"\x0a\xff\xff\xff\xff\x0f", b"\xff" * 9, b"\x2a\x05"]),
)
async def test_grpc_bytes_that_are_no_protobuf_are_a_client_error(calls, rpc, data) -> None:
    """A message that does not parse is the client's mistake (INVALID_ARGUMENT), never INTERNAL."""
    await call_within_bound(calls, rpc, data, (rpc, data))


def test_the_fuzzer_sends_every_raw_contents_form() -> None:
    """The conversion keeps the valid requests valid: an unmutated waveform goes as raw FP32 samples."""
    item = Input("waveform", "FP32", [3], data=[0.0, 0.5, 1.0])
    assert np.frombuffer(_raw(item), np.float32).tolist() == [0.0, 0.5, 1.0] and math.isclose(float(np.float32(0.5)), 0.5)
