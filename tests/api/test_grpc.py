"""KServe v2 over gRPC over the data plane: an in-process aio server, driven by tritonclient's aio client."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

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


@dataclass
class Held:
    """Birdcall's engine calls, held: each waits for `release`, which nothing sets unless a test does."""

    entered: asyncio.Event = field(default_factory=asyncio.Event)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    cancelled: asyncio.Event = field(default_factory=asyncio.Event)


@pytest.fixture
def held(engine, monkeypatch) -> Held:
    """Requests to birdcall stay in flight until the test releases them (an event, not a sleep: nothing
    finishes by itself). The models are built on the first request, after this is in place."""
    held, timed = Held(), engine.timed

    def waiting(method, model, max_items):
        call = timed(method, model, max_items)

        async def wait_then_call(windows):
            held.entered.set()
            try:
                await held.release.wait()
            except asyncio.CancelledError:
                held.cancelled.set()
                raise
            return await call(windows)

        return wait_then_call

    monkeypatch.setattr(engine, "timed", waiting)
    return held


# Bounds by asyncio.wait_for, which cancels a task of its own: an anyio scope cancelling the test's
# task inside a grpc.aio call lets the CancelledError out, and it takes the session's runner (every
# later test) with it.
BOUND_SECONDS = 5.0


@asynccontextmanager
async def one_in_flight(client, held: Held) -> AsyncIterator[asyncio.Task]:
    """A birdcall request held in the engine while the block runs, let go after it (a failing test too)."""
    first = asyncio.create_task(client.infer("birdcall", [waveform_input()]))
    try:
        await asyncio.wait_for(held.entered.wait(), BOUND_SECONDS)
        yield first
    finally:
        held.release.set()
        if not (await asyncio.wait([first], timeout=BOUND_SECONDS))[0]:
            first.cancel()


async def _refused(client, **kwargs) -> InferenceServerException:
    """The error a ModelInfer ends with, within a bound: one queued behind a held request would wait forever."""
    with pytest.raises(InferenceServerException) as info:
        await asyncio.wait_for(client.infer("birdcall", [waveform_input()], **kwargs), BOUND_SECONDS)
    return info.value


async def test_infer_past_the_in_flight_limit_is_unavailable(client, plane, held):
    """A worker holding its limit of requests refuses the next at once with UNAVAILABLE (a client's cue to
    retry, maybe elsewhere), never queues it; once the slot is free it admits again."""
    plane.admission.max_in_flight = 1
    async with one_in_flight(client, held) as first:
        refused = await _refused(client)
    assert refused.status() == "StatusCode.UNAVAILABLE" and "its limit" in refused.message()
    assert first.result().as_numpy("probabilities").shape == (1, len(LABELS))
    assert (await client.infer("birdcall", [waveform_input()])).as_numpy("probabilities").shape == (1, len(LABELS))


async def test_infer_while_draining_is_unavailable(client, plane, held):
    """A draining server refuses new requests with UNAVAILABLE; the one in flight still gets its answer."""
    async with one_in_flight(client, held) as first:
        plane.start_draining()
        refused = await _refused(client)
    assert refused.status() == "StatusCode.UNAVAILABLE" and "shutting down" in refused.message()
    assert first.result().as_numpy("probabilities").shape == (1, len(LABELS))


async def test_infer_past_the_clients_deadline_is_deadline_exceeded(client, plane, held, monkeypatch):
    """The client's timeout is the request's deadline on the server too: past it the work is cancelled
    (here it would wait forever), the slot freed, and the client answered DEADLINE_EXCEEDED."""
    deadlines: list[float] = []
    admitted = plane.admission.admitted

    def observed(seconds: float):
        deadlines.append(seconds)
        return admitted(seconds)

    monkeypatch.setattr(plane.admission, "admitted", observed)
    refused = await _refused(client, client_timeout=0.2)
    assert refused.status() == "StatusCode.DEADLINE_EXCEEDED"
    # grpc ends the client's call at its deadline whatever the server does, and the message is the
    # server's or grpc's as they race: that the server kept the deadline shows in the one it ran under.
    assert len(deadlines) == 1 and 0 < deadlines[0] <= 0.2
    await asyncio.wait_for(held.cancelled.wait(), BOUND_SECONDS)
    for _ in range(100):  # the slot is let go as the cancelled handler unwinds
        if not plane.admission.in_flight:
            break
        await asyncio.sleep(0.01)
    assert plane.admission.in_flight == 0


async def test_infer_past_the_servers_deadline_is_deadline_exceeded(client, plane, held):
    """The server's own deadline (the default, shorter here than the client's none) ends a request with
    DEADLINE_EXCEEDED and says so, counted as a deadline error."""
    plane.settings.default_deadline_seconds = 0.2
    before = counted_errors("grpc", "deadline_exceeded", 504)
    refused = await _refused(client)
    assert refused.status() == "StatusCode.DEADLINE_EXCEEDED" and "within its deadline of 0.2 s" in refused.message()
    assert held.cancelled.is_set() and counted_errors("grpc", "deadline_exceeded", 504) == before + 1


async def test_grpc_itself_bounds_the_calls_it_holds_beyond_the_in_flight_limit(plane, held, monkeypatch):
    """Calls whose message is still arriving are not admitted yet, so gRPC's own bound must hold
    them: max_in_flight + EXTRA_RPCS calls at once, the next RESOURCE_EXHAUSTED."""
    from service.adapters.grpc import server as grpc_server

    monkeypatch.setattr(grpc_server, "EXTRA_RPCS", 0)
    plane.settings.max_in_flight = 1
    port = free_port()
    server = await start_grpc_server(plane, "127.0.0.1", port)
    # Two connections: one alone may open at most half the places (here one), and queues the rest itself.
    client = triton.InferenceServerClient(f"127.0.0.1:{port}")
    other = triton.InferenceServerClient(f"127.0.0.1:{port}", channel_args=[("grpc.use_local_subchannel_pool", 1)])
    try:
        async with one_in_flight(client, held):
            refused = await _refused(other)
        assert refused.status() == "StatusCode.RESOURCE_EXHAUSTED"
    finally:
        await client.close()
        await other.close()
        await server.stop(grace=None)
