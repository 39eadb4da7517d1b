"""KServe v2 over HTTP over the data plane: health, metadata, versions, JSON and binary inference."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from unittest.mock import ANY

import anyio
import numpy as np
import pytest

from service.adapters.kserve_codec import HEADER_LENGTH
from tests.api.conftest import EMBEDDING_DIM, IMAGE_SIZE, LABELS, THRESHOLD

pytestmark = pytest.mark.anyio


async def test_health_and_server_metadata(http, engine):
    engine.ready = False
    assert (await http.get("/v2/health/live")).json() == {"live": True}
    not_ready = await http.get("/v2/health/ready")
    assert not_ready.status_code == 503 and not_ready.json() == {"ready": False, "reason": ANY, "permanent": False}
    assert "still loading" in not_ready.json()["reason"]
    assert (await http.get("/v2/models/birdcall/ready")).status_code == 503
    engine.ready = True
    assert (await http.get("/v2/health/ready")).json() == {"ready": True}
    assert (await http.get("/v2")).json()["name"] == "chorus"


async def test_model_metadata_and_versions(http):
    meta = (await http.get("/v2/models/birdcall")).json()
    assert meta["versions"] == ["b1"] and {i["name"] for i in meta["inputs"]} == {"waveform", "log_mel"}
    assert meta["parameters"]["threshold"] == THRESHOLD and "calibrated probability" in meta["parameters"]["probabilities"]
    assert meta["outputs"][0]["shape"] == [-1, len(LABELS)]
    assert (await http.get("/v2/models/birdcall/versions/b1")).json() == meta
    assert (await http.get("/v2/models/frames-denoiser/versions/f1/ready")).json() == {"name": "frames-denoiser", "ready": True}
    for path in ("/v2/models/birdcall/versions/nope", "/v2/models/birdcall/versions/nope/ready", "/v2/models/nope"):
        response = await http.get(path)
        assert response.status_code == 404 and "nope" in response.json()["error"], path


async def test_infer_json_with_a_version(http):
    waveform = np.zeros(16_000 * 3, np.float32).tolist()
    body = {"id": "r1", "inputs": [{"name": "waveform", "datatype": "FP32", "shape": [len(waveform)], "data": waveform}]}
    response = await http.post("/v2/models/birdcall/versions/b1/infer", content=json.dumps(body))
    assert response.status_code == 200, response.text
    result = response.json()
    assert result["id"] == "r1" and result["model_version"] == "b1"
    assert [o["name"] for o in result["outputs"]] == ["probabilities", "embedding", "labels"]
    assert result["outputs"][0]["shape"] == [1, len(LABELS)] and result["outputs"][1]["shape"] == [1, EMBEDDING_DIM]
    assert result["outputs"][2]["data"] == LABELS
    wrong = await http.post("/v2/models/birdcall/versions/b0/infer", content=json.dumps(body))
    assert wrong.status_code == 404 and "no version 'b0'" in wrong.json()["error"]


async def test_infer_binary_denoiser_with_requested_output(http):
    x_t = np.ones((3, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    t = np.array([10, 500, 999], np.float32)
    head = json.dumps(
        {
            "inputs": [
                {"name": "x_t", "datatype": "FP32", "shape": list(x_t.shape), "parameters": {"binary_data_size": x_t.nbytes}},
                {"name": "t", "datatype": "FP32", "shape": [3], "parameters": {"binary_data_size": t.nbytes}},
            ],
            "outputs": [{"name": "v", "parameters": {"binary_data": True}}],
        }
    ).encode()
    response = await http.post(
        "/v2/models/frames-denoiser/infer", content=head + x_t.tobytes() + t.tobytes(), headers={HEADER_LENGTH: str(len(head))}
    )
    assert response.status_code == 200, response.text
    split = int(response.headers[HEADER_LENGTH])
    v = np.frombuffer(response.content[split:], np.float32).reshape(x_t.shape)
    np.testing.assert_array_equal(v, x_t / 2)


async def test_unknown_outputs_are_refused_before_inference(http, engine):
    body = {
        "inputs": [{"name": "waveform", "datatype": "FP32", "shape": [4], "data": [0, 0, 0, 0]}],
        "outputs": [{"name": "logits"}],
    }
    response = await http.post("/v2/models/birdcall/infer", content=json.dumps(body))
    assert response.status_code == 422 and "unknown output(s) ['logits']" in response.json()["error"]
    assert engine.calls == []


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        (b"not json", 400, "JSON"),
        (json.dumps({"inputs": [{"name": "waveform", "datatype": "FP32", "shape": [4], "data": [1, 2, 3]}]}), 422, "do not fill shape"),
        (json.dumps({"inputs": [{"name": "waveform", "datatype": "COMPLEX", "shape": [1], "data": [1]}]}), 422, "datatype"),
        (json.dumps({"inputs": [{"name": "audio", "datatype": "FP32", "shape": [1], "data": [1]}]}), 422, "exactly one input"),
        (json.dumps({"inputs": [{"name": "log_mel", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}), 422, "log_mel"),
    ],
)
async def test_infer_errors_in_the_kserve_shape(http, body, status, words):
    response = await http.post("/v2/models/birdcall/infer", content=body)
    assert response.status_code == status and words in response.json()["error"], response.text


async def test_models_that_failed_to_load_say_why_everywhere(http, engine):
    engine.load_error = "birdcall.fp32.onnx does not match its exported sha256 (changed after export)"
    ready = await http.get("/v2/health/ready")
    assert ready.status_code == 503 and "does not match its exported sha256" in ready.json()["reason"]
    assert ready.json()["permanent"] is True  # no wait helps: a client waiting for readiness stops
    body = {"inputs": [{"name": "waveform", "datatype": "FP32", "shape": [2], "data": [0, 0]}]}
    infer = await http.post("/v2/models/birdcall/infer", content=json.dumps(body))
    assert infer.status_code == 503 and infer.json()["type"] == "models_failed"
    assert "failed to load" in infer.json()["error"] and "retry-after" not in infer.headers


async def test_inference_is_admitted_before_its_body_is_read(http, plane, monkeypatch):
    """An in-flight request holds the slot while its body streams in, so a full worker refuses the
    next one at once (503) instead of reading its upload, and the deadline covers the reading too."""
    plane.admission.max_in_flight = 1
    release, admitted = anyio.Event(), anyio.Event()
    admit = plane.admission.admitted

    @asynccontextmanager
    async def observed(deadline: float) -> AsyncIterator[None]:
        async with admit(deadline):
            admitted.set()
            yield

    monkeypatch.setattr(plane.admission, "admitted", observed)
    head = json.dumps({"inputs": [{"name": "waveform", "datatype": "FP32", "shape": [4], "data": [0.0, 0.1, 0.2, 0.3]}]}).encode()

    async def slow_body():
        yield head[:10]
        await release.wait()
        yield head[10:]

    async with anyio.create_task_group() as tasks:
        first: list = []
        tasks.start_soon(lambda: _post_into(http, slow_body(), first))
        with anyio.fail_after(5, shield=True):  # the slot is taken before the body has arrived
            await admitted.wait()
        refused = await http.post("/v2/models/birdcall/infer", content=head)
        release.set()
    assert refused.status_code == 503 and refused.json()["type"] == "overloaded"
    assert first[0].status_code == 200
    plane.admission.max_in_flight = 256

    async def stalled_body():
        yield head[:10]
        await anyio.sleep(5)

    late = await http.post("/v2/models/birdcall/infer", content=stalled_body(), headers={"x-request-timeout": "0.1"})
    assert late.status_code == 504 and late.json()["type"] == "deadline_exceeded"


async def _post_into(http, body, into: list) -> None:
    into.append(await http.post("/v2/models/birdcall/infer", content=body))


async def test_json_past_its_limit_is_a_413_that_names_the_binary_extension(http, plane):
    plane.settings.max_kserve_json_bytes = 1000
    data = [0.1] * 400  # ~2 KB of JSON
    body = json.dumps({"inputs": [{"name": "waveform", "datatype": "FP32", "shape": [400], "data": data}]}).encode()

    async def chunked():
        yield body

    for content in (body, chunked()):
        response = await http.post("/v2/models/birdcall/infer", content=content)
        assert response.status_code == 413 and "binary tensor data extension" in response.json()["error"]
    # The same tensor as binary data fits: only its JSON head counts against the JSON limit.
    head = json.dumps({"inputs": [{"name": "waveform", "datatype": "FP32", "shape": [400], "parameters": {"binary_data_size": 1600}}]})
    raw = head.encode() + np.full(400, 0.1, np.float32).tobytes()
    binary = await http.post("/v2/models/birdcall/infer", content=raw, headers={HEADER_LENGTH: str(len(head))})
    assert binary.status_code == 200
    too_long_head = await http.post("/v2/models/birdcall/infer", content=raw, headers={HEADER_LENGTH: "1001"})
    assert too_long_head.status_code == 413


@pytest.mark.parametrize(
    "datatype, shape, data, words",
    [
        ("FP32", [2], ["0.1", "nan"], "must be numbers"),
        ("FP32", [1], [1e300], "beyond FP32's range"),
        ("INT16", [2], [1.5, 2], "whole numbers"),
        ("INT16", [1], [40000], "within [-32768, 32767]"),
        ("FP32", [2, 2], [[0.1, 0.2], [0.3, 0.4]], "shape [n_samples]"),
        ("FP32", [2], [[0.1], [0.2, 0.3]], "does not fit"),
    ],
)
async def test_tensor_data_is_read_as_its_datatype_says_or_refused(http, engine, datatype, shape, data, words):
    body = {"inputs": [{"name": "waveform", "datatype": datatype, "shape": shape, "data": data}]}
    response = await http.post("/v2/models/birdcall/infer", json=body)
    assert response.status_code == 422 and words in response.json()["error"], response.text
    assert not engine.calls


async def test_a_waveform_batched_as_one_row_is_one_recording(http):
    samples = [0.1] * 800
    one_row = {"inputs": [{"name": "waveform", "datatype": "FP32", "shape": [1, 800], "data": [samples]}]}
    flat = {"inputs": [{"name": "waveform", "datatype": "FP32", "shape": [800], "data": samples}]}
    answers = [(await http.post("/v2/models/birdcall/infer", json=body)).json() for body in (one_row, flat)]
    assert answers[0]["outputs"] == answers[1]["outputs"]
