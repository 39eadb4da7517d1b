"""KServe v2 over HTTP over the data plane: health, metadata, versions, JSON and binary inference."""

from __future__ import annotations

import json
from unittest.mock import ANY

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
