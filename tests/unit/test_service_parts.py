"""Service pieces without a server: DDIM time pairs, KServe codec, admission, providers, coalescing."""

from __future__ import annotations

import asyncio
import contextvars
import json
import struct

import numpy as np
import pytest

from service.adapters.kserve_codec import HEADER_LENGTH, build_response, header_split, parse_request
from service.admission import Admission, hold_body
from service.engine.ddim import time_pairs
from service.engine.runtime import choose_providers
from service.errors import BadRequest, DeadlineExceeded, InvalidParameter, Overloaded


def test_time_pairs_end_at_minus_one():
    pairs = time_pairs(1000, 5)
    assert pairs[0][0] == 999 and pairs[-1][1] == -1 and len(pairs) == 5
    assert all(a > b for a, b in pairs)


def test_kserve_binary_round_trip():
    head = json.dumps(
        {
            "inputs": [
                {"name": "a", "datatype": "FP32", "shape": [2, 2], "parameters": {"binary_data_size": 16}},
                {"name": "s", "datatype": "BYTES", "shape": [2], "parameters": {"binary_data_size": 13}},
            ],
            "outputs": [{"name": "y", "parameters": {"binary_data": True}}, {"name": "z"}],
        }
    ).encode()
    strings = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 3) + b"abc"
    body = head + np.arange(4, dtype=np.float32).tobytes() + strings
    request, tensors = parse_request(body, len(head), 1 << 20)
    np.testing.assert_array_equal(tensors["a"].data, [[0, 1], [2, 3]])
    assert list(tensors["s"].data) == [b"hi", b"abc"]
    content, headers = build_response(request, "m", "1", {"y": np.ones((2,), np.float32), "z": np.array([b"x"], dtype=object)})
    split = int(headers[HEADER_LENGTH])
    meta = json.loads(content[:split])
    assert meta["outputs"][0]["parameters"]["binary_data_size"] == 8 and meta["outputs"][1]["data"] == ["x"]
    np.testing.assert_array_equal(np.frombuffer(content[split:], np.float32), [1, 1])


@pytest.mark.parametrize(
    ("body", "header", "error"),
    [
        (b'{"inputs": []}', None, BadRequest),
        (b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [3], "data": [1]}]}', None, InvalidParameter),
        (b'{"inputs": [{"name": "a", "datatype": "FP32", "shape": [1], "parameters": {"binary_data_size": 4}}]}', "90", BadRequest),
    ],
)
def test_kserve_bad_requests(body, header, error):
    with pytest.raises(error):
        parse_request(body, header_split(header), 1 << 20)


def test_admission_bounds_and_deadline():
    async def scenario() -> None:
        admission = Admission(max_in_flight=1, retry_after=2)

        async def run(seconds: float, deadline: float) -> None:
            async with admission.admitted(deadline):
                await asyncio.sleep(seconds)

        slow = asyncio.create_task(run(0.2, 5))
        await asyncio.sleep(0.01)
        with pytest.raises(Overloaded) as info:
            await run(0, 5)
        assert info.value.headers == {"Retry-After": "2"}
        await slow
        with pytest.raises(DeadlineExceeded):
            await run(1, 0.05)
        assert admission.in_flight == 0

    asyncio.run(scenario())


def test_gpu_request_falls_back_to_cpu_without_cuda(monkeypatch):
    import service.engine.runtime

    warnings: list[str] = []
    monkeypatch.setattr(service.engine.runtime.log, "warning", lambda msg, *args: warnings.append(msg % args))
    monkeypatch.setattr(service.engine.runtime.ort, "get_available_providers", lambda: ["CPUExecutionProvider"])
    assert choose_providers("cuda") == ["CPUExecutionProvider"]
    assert warnings and "using CPU" in warnings[0]
    assert choose_providers("auto") == ["CPUExecutionProvider"]
    monkeypatch.setattr(service.engine.runtime.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    assert choose_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert choose_providers("cpu") == ["CPUExecutionProvider"]


def test_choosing_cuda_loads_the_cuda_libraries_of_the_nvidia_packages(monkeypatch):
    import service.engine.runtime

    preloads: list[str] = []
    monkeypatch.setattr(service.engine.runtime.ort, "get_available_providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    monkeypatch.setattr(service.engine.runtime.ort, "preload_dlls", lambda: preloads.append("cuda"), raising=False)
    assert choose_providers("cpu") == ["CPUExecutionProvider"]
    assert preloads == []
    assert choose_providers("cuda") == ["CUDAExecutionProvider", "CPUExecutionProvider"]
    assert preloads == ["cuda"]
    monkeypatch.delattr(service.engine.runtime.ort, "preload_dlls", raising=False)  # onnxruntime-gpu < 1.21
    assert choose_providers("auto") == ["CUDAExecutionProvider", "CPUExecutionProvider"]


def test_the_cuda_provider_picks_convolutions_by_heuristic_not_by_timing_each_new_batch_size(monkeypatch, tmp_path):
    import service.engine.runtime
    from service.engine.runtime import make_session

    opened: list[list] = []
    monkeypatch.setattr(service.engine.runtime.ort, "InferenceSession", lambda path, options, providers: opened.append(providers))
    make_session(tmp_path / "model.onnx", ["CUDAExecutionProvider", "CPUExecutionProvider"], 1)
    make_session(tmp_path / "model.onnx", ["CPUExecutionProvider"], 1)
    assert opened == [
        [("CUDAExecutionProvider", {"cudnn_conv_algo_search": "HEURISTIC"}), "CPUExecutionProvider"],
        ["CPUExecutionProvider"],
    ]


def test_coalescer_merges_calls_made_while_one_is_in_flight():
    from service.engine.coalesce import Coalescer

    calls: list[int] = []

    async def engine(items: np.ndarray) -> np.ndarray:
        calls.append(len(items))
        await asyncio.sleep(0.02)
        return items * 10

    async def scenario() -> list[np.ndarray]:
        coalesce = Coalescer(engine, max_items=5)
        return await asyncio.gather(*(coalesce(np.full(2, i)) for i in range(4)))

    results = asyncio.run(scenario())
    # All four arrive in one event-loop tick, before the first engine call starts: they go out
    # as whole requests of at most 5 items, so two calls of 2 + 2.
    assert calls == [4, 4]
    for i, out in enumerate(results):
        np.testing.assert_array_equal(out, np.full(2, i * 10))


def test_coalescer_passes_errors_to_every_caller_and_skips_cancelled():
    from service.engine.coalesce import Coalescer

    sizes = []

    async def failing(items: np.ndarray) -> np.ndarray:
        sizes.append(len(items))
        await asyncio.sleep(0.01)
        raise RuntimeError("engine down")

    async def scenario() -> None:
        coalesce = Coalescer(failing, max_items=8)
        first = asyncio.create_task(coalesce(np.zeros(1)))
        await asyncio.sleep(0)
        cancelled = asyncio.create_task(coalesce(np.zeros(1)))
        waiting = asyncio.create_task(coalesce(np.zeros(1)))
        await asyncio.sleep(0)
        cancelled.cancel()
        for task in (first, waiting):
            with pytest.raises(RuntimeError, match="engine down"):
                await task
        assert cancelled.cancelled()

    asyncio.run(scenario())
    assert sizes == [1, 1]  # the cancelled call's item never went to the engine


def test_engine_calls_stay_out_of_access_logs_and_traces_by_default():
    from service.engine_service import Engine

    assert Engine.config["logging"]["access"]["enabled"] is False
    assert Engine.config["tracing"]["excluded_urls"] == ["."]


def test_body_bytes_are_given_back_once_and_a_task_that_outlives_its_request_holds_none():
    async def scenario() -> None:
        admission = Admission(max_in_flight=4, retry_after=1, max_body_bytes=100)
        async with admission.slot():
            hold_body(60)
            with pytest.raises(Overloaded, match="CHORUS_MAX_BODY_BYTES_IN_FLIGHT"):
                hold_body(41)
            assert admission.body_bytes == 60  # the refused bytes were not counted
            late = contextvars.copy_context()  # what a task made inside the request carries
        assert admission.body_bytes == 0
        late.run(hold_body, 30)
        assert admission.body_bytes == 0

    asyncio.run(scenario())
