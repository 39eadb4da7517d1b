"""KServe v2 over gRPC over the data plane: an in-process aio server, driven by tritonclient's aio client."""

from __future__ import annotations

from collections.abc import AsyncIterator

import numpy as np
import pytest
import tritonclient.grpc.aio as triton
from tritonclient.utils import InferenceServerException

from service.adapters.grpc.server import start_grpc_server
from service.local_server import free_port
from tests.api.conftest import IMAGE_SIZE, LABELS, counted_errors

pytestmark = pytest.mark.anyio


@pytest.fixture
async def client(plane) -> AsyncIterator[triton.InferenceServerClient]:
    port = free_port()
    server = await start_grpc_server(plane, "127.0.0.1", port)
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    try:
        yield client
    finally:
        await client.close()
        await server.stop(grace=None)


def waveform_input(seconds: float = 3.0) -> triton.InferInput:
    waveform = (0.1 * np.random.default_rng(1).standard_normal(int(16_000 * seconds))).astype(np.float32)
    inp = triton.InferInput("waveform", [len(waveform)], "FP32")
    inp.set_data_from_numpy(waveform)
    return inp


async def test_health_and_metadata(client):
    assert await client.is_server_live() and await client.is_server_ready()
    assert await client.is_model_ready("birdcall") and await client.is_model_ready("frames-denoiser", "f1")
    meta = await client.get_model_metadata("birdcall", as_json=True)
    assert meta["versions"] == ["b1"] and {i["name"] for i in meta["inputs"]} == {"waveform", "log_mel"}
    assert (await client.get_server_metadata(as_json=True))["name"] == "chorus"


async def test_infer_raw_contents(client):
    result = await client.infer("birdcall", [waveform_input()], model_version="b1")
    assert result.as_numpy("probabilities").shape == (1, len(LABELS))
    assert [x.decode() for x in result.as_numpy("labels")] == LABELS
    x_t = np.ones((2, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    inputs = [triton.InferInput("x_t", list(x_t.shape), "FP32"), triton.InferInput("t", [2], "FP32")]
    inputs[0].set_data_from_numpy(x_t)
    inputs[1].set_data_from_numpy(np.array([10, 900], np.float32))
    np.testing.assert_array_equal((await client.infer("frames-denoiser", inputs)).as_numpy("v"), x_t / 2)


async def test_requested_outputs_only(client):
    result = await client.infer("birdcall", [waveform_input()], outputs=[triton.InferRequestedOutput("labels")])
    assert result.as_numpy("probabilities") is None and len(result.as_numpy("labels")) == len(LABELS)


@pytest.mark.parametrize(
    ("call", "code", "words"),
    [
        (lambda c: c.get_model_metadata("nope"), "NOT_FOUND", "no model named"),
        (lambda c: c.get_model_metadata("birdcall", "v9"), "NOT_FOUND", "no version 'v9'"),
        (lambda c: c.is_model_ready("birdcall", "v9"), "NOT_FOUND", "no version 'v9'"),
        (lambda c: c.infer("birdcall", [waveform_input()], model_version="v9"), "NOT_FOUND", "no version"),
        (
            lambda c: c.infer("birdcall", [waveform_input()], outputs=[triton.InferRequestedOutput("x")]),
            "INVALID_ARGUMENT",
            "unknown output",
        ),
    ],
)
async def test_client_mistakes_map_to_status_codes(client, call, code, words):
    with pytest.raises(InferenceServerException) as info:
        await call(client)
    assert info.value.status() == f"StatusCode.{code}" and words in info.value.message()


async def test_nan_waveform_is_invalid_argument(client):
    bad = triton.InferInput("waveform", [4], "FP32")
    bad.set_data_from_numpy(np.array([1, np.nan, 0, 0], np.float32))
    with pytest.raises(InferenceServerException, match="NaN"):
        await client.infer("birdcall", [bad])


async def test_unexpected_errors_are_internal_logged_and_counted(client, engine, caplog):
    engine.fail = RuntimeError("secret internals")
    before = counted_errors("grpc", "internal_error", 500)
    with pytest.raises(InferenceServerException) as info:
        await client.infer("birdcall", [waveform_input()])
    assert info.value.status() == "StatusCode.INTERNAL" and "internal error" in info.value.message()
    assert "secret" not in info.value.message()
    assert counted_errors("grpc", "internal_error", 500) == before + 1
    assert any("unhandled error on gRPC ModelInfer" in r.message and r.exc_info for r in caplog.records)


async def test_token_in_metadata(client, plane):
    plane.settings.api_token = "s3cret"
    with pytest.raises(InferenceServerException) as info:
        await client.infer("birdcall", [waveform_input()], headers={"authorization": "Bearer wrong"})
    assert info.value.status() == "StatusCode.UNAUTHENTICATED"
    result = await client.infer("birdcall", [waveform_input()], headers={"authorization": "Bearer s3cret"})
    assert result.as_numpy("probabilities").shape == (1, len(LABELS))
