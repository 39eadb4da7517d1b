"""What an attacker or a careless client sends: every case is a 4xx that says what is wrong, never a 500.

Each case here is one found by probing the service (issue "Hardening"); the fuzz suite looks for
the rest of each class.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import struct
import threading
import time
from collections.abc import Awaitable
from typing import TypeVar

import grpc
import numpy as np
import pytest

from features import FrontEndConfig
from features.stream import AudioStream
from service.adapters.grpc.messages import SERVICE, message
from service.adapters.grpc.server import start_grpc_server
from service.adapters.jobs import JobGate
from service.local_server import free_port
from tests.conftest import encode
from tests.fuzzing import HOSTILE_NUMBERS

pytestmark = pytest.mark.anyio
T = TypeVar("T")
DEEP = "[" * 10_000 + "]" * 10_000


def status_of(response, status: int, words: str) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    message_text = body["error"] if isinstance(body["error"], str) else body["error"]["message"]
    assert words in message_text, body


async def test_multipart_with_two_audio_fields_is_a_400(http, wav):
    files = [("audio", ("a.wav", wav)), ("audio", ("b.wav", wav))]
    status_of(await http.post("/classify", files=files), 400, "Too many files")


async def test_multipart_without_a_boundary_is_a_400(http, wav):
    response = await http.post("/classify", content=wav, headers={"content-type": "multipart/form-data"})
    status_of(response, 400, "boundary")


async def test_a_chunked_multipart_body_over_the_limit_is_refused_while_it_streams(plane, http, wav):
    plane.settings.max_upload_bytes = 200_000
    sent = 0

    async def body():
        nonlocal sent
        head = b'--x\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n' + wav
        for chunk in [head, *(b"\0" * 65_536 for _ in range(100))]:  # 6.5 MB of padding, no Content-Length
            sent += len(chunk)
            yield chunk

    response = await http.post("/classify", content=body(), headers={"content-type": "multipart/form-data; boundary=x"})
    status_of(response, 413, "200000")
    assert sent < 1_000_000  # the server stopped reading long before the end


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b'{"steps": Infinity}', 400, "Infinity is not a JSON value"),
        (b'{"steps": 1e400}', 422, "steps must be an integer"),
        (b'{"steps": NaN}', 400, "NaN"),
        (b'{"count": true}', 422, "count must be an integer"),
        (b'{"steps": 5.5}', 422, "steps must be an integer"),
        (b'{"seed": null}', 422, "seed must be an integer"),
        (b'{"format": {}}', 422, "format must be one of"),
        (DEEP.encode(), 400, "nests too deeply"),
        (b"\xff\xfe\x00garbage", 400, "not valid JSON"),
        (b'{"steps": "' + b"9" * 5000 + b'"}', 422, "steps must be an integer"),
    ],
)
async def test_generate_refuses_hostile_json(http, body, status, words):
    status_of(await http.post("/generate", content=body, headers={"content-type": "application/json"}), status, words)


async def test_generate_refuses_a_huge_body_while_it_streams(http):
    body = b'{"seed": 1, "pad": "' + b"x" * 1_000_000 + b'"}'
    status_of(await http.post("/generate", content=body, headers={"content-type": "application/json"}), 413, "bytes")


def kserve(inputs, **extra) -> bytes:
    return json.dumps({"inputs": inputs, **extra}).encode()


WAVE = {"name": "waveform", "datatype": "FP32", "shape": [4], "data": [0, 0, 0, 0]}


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (kserve([WAVE], parameters="x"), 400, "'parameters' must be a JSON object"),
        (kserve([{**WAVE, "parameters": "x"}]), 400, "must be a JSON object"),
        (kserve([{**WAVE, "shape": [-1, -2], "data": [0, 0]}]), 422, "negative dimension"),
        (kserve([{**WAVE, "shape": [2**32, 2**32]}]), 422, "do not fill shape"),
        (kserve([{**WAVE, "shape": [True, 3]}]), 422, "list of integers"),
        (kserve([{**WAVE, "shape": "4"}]), 422, "list of integers"),
        (kserve([{**WAVE, "datatype": "BYTES", "data": ["a", "b", "c", "d"]}]), 422, "must be FP32 samples"),
        (kserve([{**WAVE, "data": "0000"}]), 422, "data must be a list"),
        (kserve([{**WAVE, "data": [[0, 0], [0]]}]), 422, "does not fit FP32"),
        (
            kserve([{**WAVE, "datatype": "INT64", "data": [2**70, 0, 0, 0]}]),
            422,
            "INT64 data must be numbers (not strings, booleans or nulls) within its range",
        ),
        (kserve([WAVE], outputs=["probabilities"]), 400, 'string "name"'),
        (kserve([WAVE], outputs=[{"name": "labels", "parameters": {"binary_data": "yes"}}]), 400, "binary_data"),
        (kserve([WAVE, WAVE]), 400, "given twice"),
        (kserve([42]), 400, "each input must be a JSON object"),
        (kserve([{**WAVE, "parameters": {"binary_data_size": -4}}]), 400, "binary_data_size"),
        (DEEP.encode(), 400, "nests too deeply"),
        (kserve([{**WAVE, "shape": [0, 2**63], "data": []}]), 422, "dimension too large"),  # 0 values fill it
        (kserve([{**WAVE, "shape": [0, 2**40, 2**40], "data": []}]), 422, "dimension too large"),
        (kserve([{**WAVE, "data": [True] * 4}]), 422, "not strings, booleans or nulls"),
        (kserve([{**WAVE, "data": [True, 0.5, 0.5, 0.5]}]), 422, "not strings, booleans or nulls"),  # numpy: [1.0, 0.5, ...]
        (kserve([{**WAVE, "shape": [2, 2], "data": [[0.5, 0.5], [False, 0.5]]}]), 422, "booleans"),
    ],
)
async def test_kserve_refuses_hostile_requests_before_inference(http, engine, body, status, words):
    status_of(await http.post("/v2/models/birdcall/infer", content=body), status, words)
    assert engine.calls == []


async def test_kserve_binary_data_that_no_input_claims_is_a_400(http):
    head = kserve([{"name": "waveform", "datatype": "FP32", "shape": [2], "parameters": {"binary_data_size": 8}}])
    body = head + np.zeros(2, np.float32).tobytes() + b"extra"
    response = await http.post("/v2/models/birdcall/infer", content=body, headers={"inference-header-content-length": str(len(head))})
    status_of(response, 400, "no input claims")


async def test_kserve_bytes_items_that_run_past_their_data_are_a_422(http):
    head = kserve([{"name": "waveform", "datatype": "BYTES", "shape": [1], "parameters": {"binary_data_size": 6}}])
    body = head + b"\xff\xff\x00\x00ab"
    response = await http.post("/v2/models/birdcall/infer", content=body, headers={"inference-header-content-length": str(len(head))})
    status_of(response, 422, "runs past the end")


async def test_denoiser_timesteps_outside_the_schedule_are_a_422(http):
    x_t = {"name": "x_t", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192}
    t = {"name": "t", "datatype": "FP32", "shape": [1], "data": [1e9]}
    status_of(await http.post("/v2/models/frames-denoiser/infer", content=kserve([x_t, t])), 422, "timesteps from 0 to 999")


@pytest.mark.parametrize("shape", [[1, 1], [1, 1, 1]])
async def test_denoiser_timesteps_of_another_shape_than_the_metadata_states_are_a_422(http, shape):
    """The metadata says t is [-1], one per image: a [1, 1] t is refused, not flattened."""
    x_t = {"name": "x_t", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [0.0] * 192}
    t = {"name": "t", "datatype": "FP32", "shape": shape, "data": [10.0]}
    status_of(await http.post("/v2/models/frames-denoiser/infer", content=kserve([x_t, t])), 422, f"and {shape}")


@pytest.fixture
async def grpc_call(plane):
    port = free_port()
    server = await start_grpc_server(plane, "127.0.0.1", port)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{port}")
    infer = channel.unary_unary(
        f"/{SERVICE}/ModelInfer",
        request_serializer=lambda m: m.SerializeToString(),
        response_deserializer=message("ModelInferResponse").FromString,
    )
    yield infer
    await channel.close()
    await server.stop(grace=None)


def infer_request(**inputs) -> object:
    request = message("ModelInferRequest")(model_name="birdcall")
    for name, (datatype, shape) in inputs.items():
        request.inputs.add(name=name, datatype=datatype, shape=shape)
    return request


@pytest.mark.parametrize(
    ("request_of", "words"),
    [
        (lambda: infer_request(waveform=("FP32", [-1, -2])), "negative dimension"),
        (lambda: infer_request(waveform=("FP32", [2**32, 2**32])), "do not fill shape"),
        (lambda: infer_request(waveform=("FP16", [1])), "needs raw_input_contents"),
        (lambda: infer_request(waveform=("COMPLEX", [1])), "needs raw_input_contents or is unknown"),
        (lambda: infer_request(waveform=("FP32", [0, 2**40, 2**40])), "dimension too large"),
    ],
)
async def test_grpc_client_mistakes_are_invalid_argument_never_unknown(grpc_call, request_of, words):
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_call(request_of())
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in info.value.details()


async def test_grpc_bytes_waveform_is_invalid_argument(grpc_call):
    request = infer_request(waveform=("BYTES", [2]))
    request.raw_input_contents.append(b"\x01\x00\x00\x00a\x01\x00\x00\x00b")
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_call(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "must be FP32 samples" in info.value.details()


async def test_a_grpc_message_past_the_bytes_of_bodies_in_flight_is_unavailable(plane, grpc_call):
    plane.admission.max_body_bytes = 1000
    request = infer_request(waveform=("FP32", [1, 1000]))
    request.raw_input_contents.append(np.zeros(1000, np.float32).tobytes())
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_call(request)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "CHORUS_MAX_BODY_BYTES_IN_FLIGHT" in info.value.details()
    assert plane.admission.body_bytes == 0


async def test_grpc_typed_contents_count_at_their_decoded_size(plane, grpc_call):
    """A UINT8 value is a byte or two on the wire and ~16-48 in decoding: 32 MiB of them took ~570 MB
    while only the message's 32 MiB was counted."""
    plane.settings.max_upload_bytes = 48_000  # room for 1,000 typed values
    request = infer_request(log_mel=("UINT8", [1001]))
    request.inputs[0].contents.uint_contents.extend([1] * 1001)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_call(request)
    assert info.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "at most 1000 values" in info.value.details()
    assert "raw_input_contents" in info.value.details()
    plane.admission.max_body_bytes = 40_000  # the room left is less than 1,000 values decode to
    request = infer_request(log_mel=("UINT8", [1000]))
    request.inputs[0].contents.uint_contents.extend([1] * 1000)
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_call(request)
    assert info.value.code() == grpc.StatusCode.UNAVAILABLE and "CHORUS_MAX_BODY_BYTES_IN_FLIGHT" in info.value.details()
    assert plane.admission.body_bytes == 0


# Found by the fuzz suite (tests/api/test_fuzz_*.py), one case of each class.


async def test_a_header_length_of_non_ascii_digits_is_a_400(http):
    head = kserve([{"name": "waveform", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}])
    # Starlette decodes headers as latin-1: b"\xb2" is "²", a digit to str.isdigit() but not to int().
    response = await http.post("/v2/models/birdcall/infer", content=head + bytes(4), headers={"inference-header-content-length": b"\xb2"})
    status_of(response, 400, "must be an integer")


def test_a_content_length_of_non_ascii_digits_is_no_error():
    from starlette.requests import Request

    from service.adapters.http import check_content_length

    check_content_length(Request({"type": "http", "headers": [(b"content-length", b"\xb2")]}), 10)  # left to the body's own count


async def test_kserve_shapes_of_more_dimensions_than_numpy_holds_are_a_422(http):
    status_of(await http.post("/v2/models/birdcall/infer", content=kserve([{**WAVE, "shape": [1] * 70 + [4]}])), 422, "dimensions")


@pytest.mark.parametrize(
    ("body", "words"),
    [
        (kserve([WAVE], id=7), "'id' must be a string"),
        (kserve([WAVE], parameters={"binary_data_output": "yes"}), "binary_data_output must be true or false"),
    ],
)
async def test_kserve_request_fields_of_the_wrong_type_are_a_400(http, engine, body, words):
    status_of(await http.post("/v2/models/birdcall/infer", content=body), 400, words)
    assert engine.calls == []


@HOSTILE_NUMBERS
@pytest.mark.parametrize("gain", [1e19, 1e30, -3e38])
async def test_kserve_waveform_samples_too_large_to_analyze_are_a_422(http, gain):
    body = kserve([{**WAVE, "shape": [400], "data": [gain] * 400}])
    status_of(await http.post("/v2/models/birdcall/infer", content=body), 422, "too large to analyze")


@HOSTILE_NUMBERS
async def test_kserve_log_mel_that_drives_the_model_past_finite_numbers_is_a_422(http):
    shape = [1, *FrontEndConfig().feature_shape]
    body = kserve([{"name": "log_mel", "datatype": "FP32", "shape": shape, "data": [-3e38] * math.prod(shape)}])
    status_of(await http.post("/v2/models/birdcall/infer", content=body), 422, "not finite")


async def test_kserve_log_mel_of_more_windows_than_the_longest_recording_makes_is_a_413(http, plane, monkeypatch):
    """Bounded by the windows of max_audio_seconds, not by what fits the body (32 MiB of UINT8 log_mel
    was 1,633 windows, 7 times the longest /classify, and 134 MB once made float32)."""
    model = await plane.classifier()
    monkeypatch.setattr(model, "limits", dataclasses.replace(model.limits, max_seconds=7.5))  # 2 windows
    shape = [3, *FrontEndConfig().feature_shape]
    head = kserve([{"name": "log_mel", "datatype": "UINT8", "shape": shape, "parameters": {"binary_data_size": math.prod(shape)}}])
    response = await http.post(
        "/v2/models/birdcall/infer", content=head + bytes(math.prod(shape)), headers={"inference-header-content-length": str(len(head))}
    )
    status_of(response, 413, "log_mel has 3 windows; at most 2 are accepted")


async def test_denoiser_outputs_past_finite_numbers_are_a_422(http, engine, monkeypatch):
    def overflowing(method, model, max_items):
        async def call(items):
            return np.full((len(items), 3, 8, 8), np.inf, np.float32)

        return call

    monkeypatch.setattr(engine, "batched", overflowing)
    x_t = {"name": "x_t", "datatype": "FP32", "shape": [1, 3, 8, 8], "data": [3e38] * 192}
    t = {"name": "t", "datatype": "FP32", "shape": [1], "data": [10]}
    status_of(await http.post("/v2/models/frames-denoiser/infer", content=kserve([x_t, t])), 422, "not finite")


@HOSTILE_NUMBERS
async def test_a_recording_whose_samples_overflow_the_analysis_is_a_415(http):
    loud = encode(np.full((8000, 1), 1e30, np.float32), 16_000, "WAV", "FLOAT")
    status_of(await http.post("/classify", content=loud), 415, "too large to analyze")


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"json": {"steps": 10, "stpes": 20}}, "unknown parameter(s) ['stpes']"),
        ({"json": {"steps": 10}, "params": {"steps": "0"}}, "steps must be from"),  # the body overrides, the query is still checked
        ({"json": {"steps": "10"}}, "a JSON number, not a string"),
    ],
)
async def test_generate_refuses_unknown_and_invalid_overridden_parameters(http, engine, kwargs, words):
    status_of(await http.post("/generate", **kwargs), 422, words)
    assert engine.calls == []


@pytest.mark.parametrize("rpc", ["ModelInfer", "ModelMetadata", "ServerLive"])
async def test_grpc_bytes_that_are_no_protobuf_are_invalid_argument(plane, rpc):
    port = free_port()
    server = await start_grpc_server(plane, "127.0.0.1", port)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
            call = channel.unary_unary(f"/{SERVICE}/{rpc}")  # no serializers: the bytes go as they are
            with pytest.raises(grpc.aio.AioRpcError) as info:
                await call(b"\x00", timeout=10)
    finally:
        await server.stop(grace=None)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a valid inference." in info.value.details()


async def test_grpc_shapes_of_more_dimensions_than_numpy_holds_are_invalid_argument(grpc_call):
    request = infer_request(waveform=("FP32", [1] * 70 + [1]))
    request.raw_input_contents.append(bytes(4))
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await grpc_call(request)
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "dimensions" in info.value.details()


@pytest.mark.parametrize("path", ["/classify", "/v2/models/birdcall/infer", "/jobs/uploads", "/analyze/submit"])
async def test_a_client_that_leaves_mid_body_is_no_server_error(plane, store, metrics, caplog, path):
    """A cancelled upload is the client's doing: counted as 499, never a 500 with a traceback
    (the error-rate alert counts 5xx)."""
    from tests.api.conftest import http_app

    app = http_app(plane, store)
    headers = [(b"content-type", b"application/json" if path == "/analyze/submit" else b"audio/wav"), (b"content-length", b"2000")]
    scope = {"type": "http", "method": "POST", "path": path, "raw_path": path.encode(), "query_string": b"", "headers": headers}
    scope |= {"http_version": "1.1", "scheme": "http", "server": ("chorus.test", 80), "client": ("127.0.0.1", 5), "root_path": ""}
    incoming = [{"type": "http.request", "body": b"x" * 100, "more_body": True}, {"type": "http.disconnect"}]
    sent: list[dict] = []

    async def receive() -> dict:
        return incoming.pop(0) if incoming else {"type": "http.disconnect"}

    async def send(message: dict) -> None:
        sent.append(message)

    gate = JobGate(app, state=app.state) if path.startswith("/analyze") else app
    with caplog.at_level("ERROR"):
        await gate(scope, receive, send)
    assert sent[0]["status"] == 499, sent
    body = json.loads(sent[1]["body"])
    assert (body["type"] if path.startswith("/v2") else body["error"]["type"]) == "client_closed_request"
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_a_multipart_body_cut_short_says_so(http, wav):
    request = http.build_request("POST", "/classify", files={"audio": ("tone.wav", wav)})
    body = request.read()
    response = await http.post("/classify", content=body[: len(body) // 2], headers={"content-type": request.headers["content-type"]})
    status_of(response, 400, "ends before its closing boundary")
    assert (await http.post("/classify", content=body, headers={"content-type": request.headers["content-type"]})).status_code == 200


# Found by a review (2026-11-30): one case of each.


async def test_kserve_binary_zero_values_in_a_huge_shape_are_a_422(http):
    head = kserve([{"name": "waveform", "datatype": "FP32", "shape": [0, 2**63], "parameters": {"binary_data_size": 0}}])
    response = await http.post("/v2/models/birdcall/infer", content=head, headers={"inference-header-content-length": str(len(head))})
    status_of(response, 422, "dimension too large")


async def test_a_header_length_of_thousands_of_digits_is_a_400(http):
    """int() refuses a string of over 4,300 digits with its own ValueError: it must not be reached."""
    response = await http.post("/v2/models/birdcall/infer", content=kserve([WAVE]), headers={"inference-header-content-length": "9" * 5000})
    status_of(response, 400, "Inference-Header-Content-Length must be an integer")


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("/classify", {"params": {"top_k": "9" * 5000}}),
        ("/classify", {"files": {"audio": ("a.wav", b"")}, "data": {"top_k": "9" * 5000}}),
        ("/generate", {"params": {"count": "9" * 5000}}),
    ],
)
async def test_query_and_form_integers_of_thousands_of_digits_are_a_422(http, wav, path, kwargs):
    if "files" in kwargs:
        kwargs = {**kwargs, "files": {"audio": ("a.wav", wav)}}
    response = await http.post(path, content=wav if "params" in kwargs and path == "/classify" else None, **kwargs)
    status_of(response, 422, "must be an integer")


@pytest.mark.parametrize(
    ("path", "kwargs"),
    [
        ("/classify?top_k=banana&top_k=2", {}),
        ("/generate?steps=-5&steps=10&format=json", {}),
        # A form field that would override the query's value: which one was meant?
        ("/classify?top_k=banana", {"data": {"top_k": "1"}}),
        ("/classify/batch?min_confidence=nan", {"data": {"min_confidence": "0.5"}}),
    ],
)
async def test_a_parameter_given_twice_is_a_422_not_the_last_one_silently(http, engine, wav, path, kwargs):
    files = {"files": {"audio": ("a.wav", wav)}} if "data" in kwargs else {"content": wav}
    status_of(await http.post(path, **kwargs, **files), 422, "given more than once")
    assert engine.calls == []


async def test_batch_file_fields_not_named_audio_are_a_400_not_skipped(http, engine, wav):
    files = [("audio", ("a.wav", wav)), ("audios", ("b.wav", wav)), ("top_k", ("c.wav", b"\0"))]
    status_of(await http.post("/classify/batch", files=files), 400, "file field(s) ['audios', 'top_k'] are not read")
    assert engine.calls == []


def _multipart(wav: bytes, tail: bytes) -> bytes:
    return b'--x\r\nContent-Disposition: form-data; name="audio"; filename="a.wav"\r\n\r\n' + wav + b"\r\n--x--" + tail


@pytest.mark.parametrize(
    ("tail", "content_type"),
    [
        (b"\r\nan epilogue\r\n", "multipart/form-data; boundary=x"),  # RFC 2046 5.1.1 allows both
        (b"  \r\n", "multipart/form-data; boundary=x"),
        (b"\r\n", 'multipart/form-data; x-boundary="y"; boundary=x'),  # boundary is the parameter of that name
    ],
    ids=["epilogue", "transport-padding", "another-parameter-ending-in-boundary"],
)
async def test_complete_multipart_bodies_are_read_whatever_follows_the_close_delimiter(http, wav, tail, content_type):
    response = await http.post("/classify", content=_multipart(wav, tail), headers={"content-type": content_type})
    assert response.status_code == 200, response.text


async def test_generate_takes_a_json_content_type_with_no_body(http):
    """What many clients send by default: no parameters, not an error telling them to send no body."""
    response = await http.post("/generate", params={"format": "json"}, headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text


async def test_a_grpc_input_given_twice_or_both_raw_and_typed_is_invalid_argument(grpc_call, engine):
    twice = infer_request(waveform=("FP32", [2]))
    twice.inputs[0].contents.fp32_contents.extend([math.nan, 0.0])  # refused on its own: must not be dropped unseen
    second = twice.inputs.add(name="waveform", datatype="FP32", shape=[4])
    second.contents.fp32_contents.extend([0.1] * 4)
    both = infer_request(waveform=("FP32", [4]))
    both.inputs[0].contents.fp32_contents.extend([math.nan] * 4)
    both.raw_input_contents.append(np.full(4, 0.1, np.float32).tobytes())
    for request, words in ((twice, "given twice"), (both, "beside raw_input_contents")):
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await grpc_call(request)
        assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT and words in info.value.details()
    assert engine.calls == []


async def test_a_large_bytes_tensor_is_decoded_off_the_event_loop(http, plane):
    """Millions of one-byte BYTES items take seconds to decode: other requests (health probes
    among them) must not wait for that. The loop's longest stall is measured, not the time."""
    count = 2_000_000
    blob = (struct.pack("<I", 1) + b"a") * count
    head = kserve([{"name": "waveform", "datatype": "BYTES", "shape": [count], "parameters": {"binary_data_size": len(blob)}}])
    response, longest = await with_longest_stall(
        http.post("/v2/models/birdcall/infer", content=head + blob, headers={"inference-header-content-length": str(len(head))})
    )
    status_of(response, 422, "must be FP32 samples")
    assert longest < 0.5, f"the event loop stalled {longest:.2f} s at once"


async def test_a_multipart_body_is_parsed_off_the_event_loop(http, wav, monkeypatch):
    """Parsing a multipart body of max_upload_bytes takes about a tenth of a second here (a slow
    host, more): other requests must not wait for it. The parse is slowed to make that visible."""
    from starlette.formparsers import MultiPartParser

    real_parse = MultiPartParser.parse

    async def slow_parse(self):
        time.sleep(0.5)  # noqa: ASYNC251 - a blocking stretch on purpose, as parsing a large body is
        return await real_parse(self)

    monkeypatch.setattr(MultiPartParser, "parse", slow_parse)
    response, longest = await with_longest_stall(http.post("/classify", files={"audio": ("a.wav", wav)}))
    assert response.status_code == 200, response.text
    assert longest < 0.25, f"the event loop stalled {longest:.2f} s at once"


async def with_longest_stall(request: Awaitable[T]) -> tuple[T, float]:
    """request's result, and the longest time the event loop went without running other tasks meanwhile."""
    longest, done = 0.0, asyncio.Event()

    async def watch() -> None:
        nonlocal longest
        last = time.perf_counter()
        while not done.is_set():
            await asyncio.sleep(0.01)
            now = time.perf_counter()
            longest, last = max(longest, now - last), now

    watcher = asyncio.create_task(watch())
    await asyncio.sleep(0.05)  # the watcher has taken its first time before the request starts
    try:
        result = await request
    finally:
        done.set()
        await watcher
    return result, longest


def hold_decodes(model, monkeypatch) -> tuple[threading.Event, threading.Event, object]:
    """The model's decodes wait, once started (`entered`), until `release` is set; returns both
    events and the real decode, to put back."""
    release, entered = threading.Event(), threading.Event()
    real_prepare = model._prepare

    def held_prepare(data: bytes):
        entered.set()
        release.wait(10)
        return real_prepare(data)

    monkeypatch.setattr(model, "_prepare", held_prepare)
    return release, entered, real_prepare


async def test_a_request_that_gives_up_keeps_its_slot_until_its_decode_thread_ends(plane, http, wav, monkeypatch):
    """A thread cannot be stopped: a client that sets a tiny deadline on every request would
    otherwise keep any number of decodes running past max_in_flight, each answered 504 at once."""
    plane.admission.max_in_flight = 1
    model = await plane.classifier()
    release, entered, real_prepare = hold_decodes(model, monkeypatch)
    status_of(await http.post("/classify", content=wav, headers={"X-Request-Timeout": "0.05"}), 504, "deadline")
    assert entered.is_set()
    # Its decode still runs: the slot is still taken, so the next request is refused, not decoded beside it.
    status_of(await http.post("/classify", content=wav), 503, "its limit")
    assert plane.admission.in_flight == 1
    release.set()
    for _ in range(500):  # the thread ends within milliseconds of its release, and gives the slot back
        if plane.admission.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert plane.admission.in_flight == 0
    monkeypatch.setattr(model, "_prepare", real_prepare)
    assert (await http.post("/classify", content=wav)).status_code == 200


async def test_a_decode_whose_request_gave_up_stops_at_its_next_block(plane, http, monkeypatch):
    """The decode loops block by block and asks between blocks whether its request still waits: a
    request given up part-way through a long recording frees its slot within a block, not at the
    recording's end."""
    plane.admission.max_in_flight = 1
    await plane.classifier()
    recording = encode(np.random.default_rng(0).normal(0, 0.1, 16_000 * 120).astype(np.float32), 16_000, "WAV")
    real_iter, emitted, ended = AudioStream.__iter__, [], threading.Event()

    def slow_iter(self):
        try:
            for batch in real_iter(self):
                time.sleep(0.1)  # each block as slow as a big one is
                emitted.append(batch)
                yield batch
        finally:
            ended.set()

    monkeypatch.setattr(AudioStream, "__iter__", slow_iter)
    # A deadline the decode starts well within (a loaded host may take tens of ms to start a thread).
    status_of(await http.post("/classify", content=recording, headers={"X-Request-Timeout": "0.3"}), 504, "deadline")
    for _ in range(500):
        if plane.admission.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert plane.admission.in_flight == 0 and ended.is_set()
    assert len(emitted) <= 5  # of 9: it stopped after the block it was in when the deadline passed


async def test_a_batch_that_gives_up_keeps_one_slot_and_work_not_yet_begun_never_runs(plane, http, wav, monkeypatch):
    """A /classify/batch decodes its files on several threads; given up, it keeps one slot (not one
    per file) while any runs, and the files still waiting for a thread are never decoded."""
    import anyio.to_thread

    monkeypatch.setattr(anyio.to_thread.current_default_thread_limiter(), "total_tokens", 1)
    model = await plane.classifier()
    release, started = threading.Event(), []
    real_prepare = model._prepare

    def held_prepare(data: bytes):
        started.append(data)
        release.wait(10)
        return real_prepare(data)

    monkeypatch.setattr(model, "_prepare", held_prepare)
    files = [("audio", (f"{i}.wav", wav)) for i in range(4)]
    status_of(await http.post("/classify/batch", files=files, headers={"X-Request-Timeout": "0.1"}), 504, "deadline")
    assert plane.admission.in_flight == 1 and len(started) == 1  # one thread at a time, by the limiter above
    release.set()
    for _ in range(500):
        if plane.admission.in_flight == 0:
            break
        await asyncio.sleep(0.01)
    assert plane.admission.in_flight == 0 and len(started) == 1  # the three waiting for a thread never ran


async def test_a_body_declared_large_and_sent_slowly_holds_only_what_has_arrived(plane, http, wav):
    """A client that declares 32 MiB and sends a byte now and then must not take the room honest
    bodies need (16 such connections filled the 512 MiB of bodies in flight when a declared length
    was counted before its body arrived)."""
    plane.admission.max_body_bytes = len(wav) + 1000  # room for one recording
    more = asyncio.Event()

    async def trickle():
        yield wav[:100]
        await more.wait()
        yield wav[100:]

    slow = asyncio.create_task(http.post("/classify", content=trickle(), headers={"content-length": str(len(wav))}))
    for _ in range(500):
        if plane.admission.body_bytes:
            break
        await asyncio.sleep(0.01)
    assert plane.admission.body_bytes == 100
    assert (await http.post("/classify", content=wav)).status_code == 200  # the room its declared length would have taken
    more.set()
    assert (await slow).status_code == 200 and plane.admission.body_bytes == 0


async def test_bodies_held_in_memory_are_bounded_per_worker_as_they_arrive(plane, http, wav, monkeypatch):
    """max_in_flight requests of max_upload_bytes each would be gigabytes: the bytes of bodies held
    are bounded too, counted as they arrive, and kept counted while a given-up request's thread
    still reads its body."""
    plane.admission.max_body_bytes = len(wav) + 1000  # room for one recording
    model = await plane.classifier()
    release, entered, real_prepare = hold_decodes(model, monkeypatch)
    status_of(await http.post("/classify", content=wav, headers={"X-Request-Timeout": "0.05"}), 504, "deadline")
    assert entered.is_set() and plane.admission.body_bytes == len(wav)  # its thread still holds the body
    # Declared: refused before any of it is read.
    status_of(await http.post("/classify", content=wav), 503, "CHORUS_MAX_BODY_BYTES_IN_FLIGHT")
    sent = 0

    async def chunked():
        nonlocal sent
        for start in range(0, len(wav), 500):
            sent += 500
            yield wav[start : start + 500]

    # Not declared: refused once its chunks pass the room, not after the whole body.
    status_of(await http.post("/classify", content=chunked()), 503, "bytes of request bodies")
    assert sent < len(wav)
    assert plane.admission.body_bytes == len(wav)  # the refused ones gave back what they had taken
    release.set()
    for _ in range(500):
        if plane.admission.body_bytes == 0:
            break
        await asyncio.sleep(0.01)
    assert plane.admission.body_bytes == 0 and plane.admission.in_flight == 0
    monkeypatch.setattr(model, "_prepare", real_prepare)
    assert (await http.post("/classify", content=wav)).status_code == 200
    assert plane.admission.body_bytes == 0
