"""KServe v2 over HTTP with the real tritonclient, binary tensor data extension included."""

from __future__ import annotations

import json
from urllib.parse import urlparse

import httpx
import numpy as np
import pytest
import tritonclient.http as triton_http
from tritonclient.utils import InferenceServerException


@pytest.fixture(scope="module")
def triton(server_url):
    client = triton_http.InferenceServerClient(urlparse(server_url).netloc, network_timeout=120, connection_timeout=120)
    yield client
    client.close()


def test_server_and_model_metadata(triton):
    assert triton.is_server_live() and triton.is_server_ready()
    assert triton.is_model_ready("birdcall") and triton.is_model_ready("frames-denoiser")
    meta = triton.get_model_metadata("birdcall")
    assert {i["name"] for i in meta["inputs"]} == {"waveform", "log_mel"}
    assert "16000" in meta["parameters"]["inputs"]
    assert triton.get_server_metadata()["name"] == "chorus"


@pytest.mark.parametrize("binary", [True, False])
def test_birdcall_waveform(triton, binary):
    waveform = (0.1 * np.random.default_rng(0).standard_normal(16_000 * 7)).astype(np.float32)
    inp = triton_http.InferInput("waveform", list(waveform.shape), "FP32")
    inp.set_data_from_numpy(waveform, binary_data=binary)
    outputs = [triton_http.InferRequestedOutput(n, binary_data=binary) for n in ("probabilities", "embedding", "labels")]
    result = triton.infer("birdcall", [inp], outputs=outputs)
    probs = result.as_numpy("probabilities")
    assert probs.shape == (2, 12)  # 7 s -> windows at 0 and 2.5 s
    assert ((probs >= 0) & (probs <= 1)).all()  # independent per species: no row need sum to 1
    embedding = result.as_numpy("embedding")
    assert embedding.shape[0] == 2 and embedding.shape[1] > 0 and np.isfinite(embedding).all()
    assert len(result.as_numpy("labels")) == 12


def test_birdcall_log_mel_matches_waveform_path(triton, tiny_exports):
    from service.models.birdcall import stored_frontend
    from service.store import StoredModel

    # A client that computes the features itself, with the stored model's front end and stats,
    # gets the scores the server's own front end gives.
    waveform = (0.1 * np.random.default_rng(1).standard_normal(16_000 * 7)).astype(np.float32)
    inp = triton_http.InferInput("waveform", [len(waveform)], "FP32")
    inp.set_data_from_numpy(waveform)
    by_waveform = triton.infer("birdcall", [inp]).as_numpy("probabilities")
    assert by_waveform.shape == (2, 12)
    log_mel = stored_frontend(StoredModel.resolve(tiny_exports["birdcall"]["tag"])).waveform_windows(waveform).features
    inp = triton_http.InferInput("log_mel", list(log_mel.shape), "FP32")
    inp.set_data_from_numpy(log_mel)
    np.testing.assert_allclose(triton.infer("birdcall", [inp]).as_numpy("probabilities"), by_waveform, atol=1e-5)


def test_frames_denoiser_batch(triton):
    x_t = np.random.default_rng(0).standard_normal((5, 3, 16, 16)).astype(np.float32)
    t = np.array([999, 500, 100, 10, 0], np.float32)
    inputs = [triton_http.InferInput("x_t", list(x_t.shape), "FP32"), triton_http.InferInput("t", [5], "FP32")]
    inputs[0].set_data_from_numpy(x_t)
    inputs[1].set_data_from_numpy(t)
    v = triton.infer("frames-denoiser", inputs).as_numpy("v")
    assert v.shape == x_t.shape and np.isfinite(v).all()


def test_kserve_errors(triton, server_url):
    with pytest.raises(InferenceServerException, match="no model named"):
        triton.get_model_metadata("nope")
    bad = triton_http.InferInput("audio", [3], "FP32")
    bad.set_data_from_numpy(np.zeros(3, np.float32))
    with pytest.raises(InferenceServerException, match="exactly one input"):
        triton.infer("birdcall", [bad])
    with httpx.Client(base_url=server_url) as c:
        r = c.post("/v2/models/birdcall/infer", content=b"not json")
        assert r.status_code == 400 and "JSON" in r.json()["error"]
        body = {"inputs": [{"name": "waveform", "datatype": "FP32", "shape": [4], "data": [1, 2, 3]}]}
        r = c.post("/v2/models/birdcall/infer", content=json.dumps(body))
        assert r.status_code == 422 and "do not fill shape" in r.json()["error"]
        body = {"inputs": [{"name": "waveform", "datatype": "COMPLEX", "shape": [1], "data": [1]}]}
        assert c.post("/v2/models/birdcall/infer", content=json.dumps(body)).status_code == 422
        body = {"inputs": [{"name": "log_mel", "datatype": "FP32", "shape": [2, 2], "data": [1, 2, 3, 4]}]}
        r = c.post("/v2/models/birdcall/infer", content=json.dumps(body))
        assert r.status_code == 422 and "log_mel must have shape" in r.json()["error"]


@pytest.fixture(scope="module")
def triton_grpc(server_url):
    import tritonclient.grpc as triton_grpc_client

    from tests.conftest import server_grpc_port

    client = triton_grpc_client.InferenceServerClient(f"127.0.0.1:{server_grpc_port(server_url)}")
    yield triton_grpc_client, client
    client.close()


def test_grpc_metadata_and_readiness(triton_grpc):
    _, client = triton_grpc
    assert client.is_server_live() and client.is_server_ready()
    assert client.is_model_ready("birdcall")
    meta = client.get_model_metadata("birdcall", as_json=True)
    assert {i["name"] for i in meta["inputs"]} == {"waveform", "log_mel"}
    assert client.get_server_metadata(as_json=True)["name"] == "chorus"


def test_grpc_birdcall_and_denoiser(triton_grpc):
    module, client = triton_grpc
    waveform = (0.1 * np.random.default_rng(1).standard_normal(16_000 * 3)).astype(np.float32)
    inp = module.InferInput("waveform", [len(waveform)], "FP32")
    inp.set_data_from_numpy(waveform)
    result = client.infer("birdcall", [inp])
    assert result.as_numpy("probabilities").shape == (1, 12)
    assert result.as_numpy("labels").shape == (12,)
    x_t = np.zeros((2, 3, 16, 16), np.float32)
    inputs = [module.InferInput("x_t", [2, 3, 16, 16], "FP32"), module.InferInput("t", [2], "FP32")]
    inputs[0].set_data_from_numpy(x_t)
    inputs[1].set_data_from_numpy(np.array([10, 900], np.float32))
    assert client.infer("frames-denoiser", inputs).as_numpy("v").shape == (2, 3, 16, 16)


def test_grpc_errors_map_to_status_codes(triton_grpc):
    module, client = triton_grpc
    with pytest.raises(InferenceServerException, match="NOT_FOUND"):
        client.get_model_metadata("nope")
    bad = module.InferInput("waveform", [4], "FP32")
    bad.set_data_from_numpy(np.array([1, np.nan, 0, 0], np.float32))
    with pytest.raises(InferenceServerException, match=r"INVALID_ARGUMENT.*NaN"):
        client.infer("birdcall", [bad])
