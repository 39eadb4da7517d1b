"""The real service (bentoml.serve on a free port, tiny models): REST endpoints and every error path."""

from __future__ import annotations

import base64
import io
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import httpx
import numpy as np
import pytest
from PIL import Image

from tests.conftest import encode, scrape, serve, value

pytestmark = pytest.mark.timeout(900)


@pytest.fixture(scope="module")
def client(server_url):
    with httpx.Client(base_url=server_url, timeout=120) as c:
        yield c


@pytest.fixture(scope="module")
def mp3_44k_stereo(chirp) -> bytes:
    return encode(np.tile(chirp, (3, 1)), 44_100, "MP3", "MPEG_LAYER_III")  # 9 s


def assert_error(response: httpx.Response, status: int, words: str) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith("application/json")
    error = response.json()["error"]
    assert error["status"] == status and words in error["message"], error
    return error


def test_health_endpoints(client):
    assert client.get("/livez").status_code == 200
    assert client.get("/readyz").status_code == 200
    assert client.get("/v2/health/live").json() == {"live": True}
    assert client.get("/v2/health/ready").json() == {"ready": True}


def test_classify_multipart_mp3(client, mp3_44k_stereo):
    response = client.post("/classify", files={"audio": ("song.mp3", mp3_44k_stereo, "audio/mpeg")}, params={"top_k": 2})
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["audio"]["sample_rate"] == 44_100 and body["audio"]["channels"] == 2
    assert body["audio"]["duration_seconds"] == pytest.approx(9.0, abs=0.1)
    assert body["audio"]["windows"] == 3
    assert 0 < body["threshold"] < 1  # the calibrated one, stored with the model
    assert all(len(w["detections"]) <= 2 for w in body["windows"])  # top_k caps what a window lists
    for species in body["summary"]:
        assert species["label"] and 1 <= species["windows"] <= 3 and species["max_score"] >= species["mean_score"] >= body["threshold"]
    assert [w["start"] for w in body["windows"]] == [0.0, 2.5, 5.0]
    assert body["windows"][-1]["end"] == pytest.approx(9.0, abs=0.1)
    assert body["model"]["name"] == "birdcall" and body["model"]["variant"] == "fp32" and body["model"]["version"]
    timings = body["timings_ms"]
    assert {"decode", "resample", "features", "inference", "model", "total"} <= set(timings)
    assert 0 < timings["model"] < timings["inference"] < timings["total"]


def test_classify_raw_body_and_options(client, chirp):
    data = encode(chirp, 22_050, "FLAC", "PCM_16")
    body = client.post("/classify?timeline=false&min_confidence=0", content=data).json()
    assert "windows" not in body and len(body["summary"]) == 12  # every species at a threshold of 0
    listed = client.post("/classify?top_k=1&min_confidence=0&embeddings=true", content=data).json()
    assert [len(w["detections"]) for w in listed["windows"]] == [1, 1] and len(listed["embeddings"]) == 2  # 6 s: two windows
    strict = client.post("/classify?min_confidence=1.0", content=data).json()
    assert all(species["max_score"] >= 1.0 for species in strict["summary"])


def test_silence_is_classified(client):
    response = client.post("/classify", content=encode(np.zeros(8000, np.float32), 8000, "WAV", "PCM_16"))
    assert response.status_code == 200 and response.json()["audio"]["windows"] == 1


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"content": b""}, 400, "empty"),
        ({"files": {"wrong_field": ("a.wav", b"RIFF")}}, 400, "'audio'"),
        ({"content": b"this is not audio at all, just text"}, 415, "unsupported audio format"),
        ({"content": b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 8}, 415, "could not be decoded"),
        ({"content": b"fLaC\x00", "params": {"top_k": "0"}}, 422, "top_k"),
        ({"content": b"fLaC\x00", "params": {"timeline": "maybe"}}, 422, "timeline"),
        ({"content": b"fLaC\x00", "params": {"min_confidence": "2"}}, 422, "min_confidence"),
    ],
)
def test_classify_errors(client, kwargs, status, words):
    error = assert_error(client.post("/classify", **kwargs), status, words)
    if status == 415:
        assert "MP3" in error["accepted_formats"]


def test_a_path_or_method_no_route_takes_is_a_json_error_on_the_real_server(client):
    """BentoML mounts the adapters at /: its own routes first, then every other path reaches ours."""
    assert_error(client.get("/nope"), 404, "no route /nope")
    assert_error(client.get("/classify"), 405, "it takes POST")


def test_bentoml_file_routes_answer_a_missing_file_in_json_and_serve_the_rest(client):
    assert_error(client.get("/static_content/nope.js"), 404, "no file /static_content/nope.js")
    assert_error(client.get("/assets/nope.png"), 404, "no file /assets/nope.png")
    css = client.get("/static_content/swagger-ui.css")
    assert css.status_code == 200 and css.headers["content-type"].startswith("text/css") and len(css.content) > 1000


def test_nan_samples_are_415(client):
    audio = np.zeros(16_000, np.float32)
    audio[5] = np.inf
    assert_error(client.post("/classify", content=encode(audio, 16_000, "WAV", "FLOAT")), 415, "NaN or infinite")


def test_classify_batch(client, chirp, mp3_44k_stereo):
    files = [("audio", ("a.mp3", mp3_44k_stereo)), ("audio", ("b.wav", encode(chirp, 16_000, "WAV", "PCM_16")))]
    response = client.post("/classify/batch", files=files, params={"top_k": 1})
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert [r["file"] for r in results] == ["a.mp3", "b.wav"]
    assert all("summary" in r and all(len(w["detections"]) <= 1 for w in r["windows"]) for r in results)
    bad = [("audio", ("good.wav", encode(chirp, 16_000, "WAV", "PCM_16"))), ("audio", ("bad.bin", b"junk" * 10))]
    error = assert_error(client.post("/classify/batch", files=bad), 415, "bad.bin")
    assert error["file"] == "bad.bin"
    assert_error(client.post("/classify/batch", content=b"x"), 400, "multipart")


def test_concurrent_classify_all_succeed_and_batch(client, server_url):
    data = [
        encode(np.tile(chirp_piece, 2), 16_000, "WAV", "PCM_16")
        for chirp_piece in [np.random.default_rng(i).standard_normal(40_000).astype(np.float32) * 0.1 for i in range(4)]
    ]

    def call(i: int) -> int:
        with httpx.Client(base_url=server_url, timeout=120) as c:
            return c.post("/classify", content=data[i % 4]).status_code

    before = scrape(client)
    with ThreadPoolExecutor(64) as pool:
        codes = list(pool.map(call, range(64)))
    assert codes == [200] * 64
    after = scrape(client)
    # Deltas, and our own items-per-batch histogram: other servers sharing the metrics directory
    # (the Bento test's) must not count.
    windows = value(after, "chorus_batch_size_sum", model="birdcall") - value(before, "chorus_batch_size_sum", model="birdcall")
    batches = value(after, "chorus_batch_size_count", model="birdcall") - value(before, "chorus_batch_size_count", model="birdcall")
    assert windows >= 64 and windows / batches > 1.0, (windows, batches)
    # BentoML's own histogram counts engine calls per batch; the API worker coalesces concurrent
    # requests into one call first, so that one can read 1 while every batch holds many windows.


def test_generate_png_is_deterministic(client):
    first = client.post("/generate", params={"seed": 7, "steps": 5})
    second = client.post("/generate", json={"seed": 7, "steps": 5})
    assert first.status_code == 200 and first.headers["content-type"] == "image/png"
    assert first.content == second.content
    image = Image.open(io.BytesIO(first.content))
    assert image.size == (16, 16) and image.mode == "RGB"
    other = client.post("/generate", params={"seed": 8, "steps": 5})
    assert other.content != first.content


def test_generate_json_many(client):
    body = client.post("/generate", json={"count": 3, "steps": 5, "seed": 1}).json()
    assert body["count"] == 3 and len(body["images"]) == 3
    for item in body["images"]:
        assert Image.open(io.BytesIO(base64.b64decode(item))).size == (16, 16)


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"json": {"count": 17}}, 422, "count"),
        ({"json": {"count": 0}}, 422, "count"),
        ({"json": {"steps": 4}}, 422, "steps"),
        ({"json": {"steps": 251}}, 422, "steps"),
        ({"json": {"seed": -1}}, 422, "seed"),
        ({"json": {"steps": "many"}}, 422, "integer"),
        ({"json": {"count": 2, "format": "png"}}, 422, "format"),
        ({"json": {"format": "gif"}}, 422, "format"),
        ({"content": b"{not json", "headers": {"content-type": "application/json"}}, 400, "JSON"),
        ({"json": [1, 2]}, 400, "object"),
    ],
)
def test_generate_errors(client, kwargs, status, words):
    assert_error(client.post("/generate", **kwargs), status, words)


def test_deadline_header(client, chirp):
    data = encode(chirp, 16_000, "WAV", "PCM_16")
    assert_error(client.post("/classify", content=data, headers={"X-Request-Timeout": "abc"}), 422, "X-Request-Timeout")
    assert_error(client.post("/generate", json={"steps": 250, "count": 16}, headers={"X-Request-Timeout": "0.05"}), 504, "deadline")


def test_page_is_served(client):
    response = client.get("/")
    assert response.status_code == 200 and "chorus" in response.text


def test_openapi_lists_every_route(client):
    from service.adapters import kserve_http, rest

    spec = client.get("/openapi.json").json()
    assert spec["openapi"].startswith("3.")
    for route in [*rest.ROUTES, *kserve_http.ROUTES]:
        methods = {m.lower() for m in route.methods} - {"head"}
        assert route.path in spec["paths"], route.path
        assert methods <= set(spec["paths"][route.path]), route.path


def test_service_process_never_imports_torch():
    code = "import sys, service.service; assert 'torch' not in sys.modules, sorted(m for m in sys.modules if 'torch' in m)"
    subprocess.run([sys.executable, "-c", code], check=True)


def test_limits_and_token(tiny_exports, chirp):
    """A second server with tight limits and an API token: 401, 413 by size, 413 by duration, 503 overload."""
    token = "s3cret"
    env = {
        "CHORUS_API_TOKEN": token,
        "CHORUS_MAX_UPLOAD_BYTES": "200000",
        "CHORUS_MAX_AUDIO_SECONDS": "2",
        "CHORUS_MAX_IN_FLIGHT": "1",
        "CHORUS_RETRY_AFTER_SECONDS": "3",
    }
    with serve(**env) as url, httpx.Client(base_url=url, timeout=120) as c:
        short = encode(chirp[:22_050], 44_100, "WAV", "PCM_16")
        assert_error(c.post("/classify", content=short), 401, "API token")
        assert_error(c.post("/classify", content=short, headers={"Authorization": "Bearer nope"}), 401, "API token")
        kserve = c.post("/v2/models/birdcall/infer", content=b"{}")
        assert kserve.status_code == 401 and "API token" in kserve.json()["error"]
        assert c.get("/readyz").status_code == 200 and c.get("/metrics").status_code == 200
        auth = {"Authorization": f"Bearer {token}"}
        assert c.post("/classify", content=short, headers=auth).status_code == 200
        assert_error(c.post("/classify", content=b"\x00" * 300_000, headers=auth), 413, "at most 200000")
        long = encode(np.zeros(3 * 8_000, np.float32), 8_000, "WAV", "PCM_16")  # 3 s in 48 KB
        assert_error(c.post("/classify", content=long, headers=auth), 413, "at most 2 s")

        def slow(_: int) -> httpx.Response:
            with httpx.Client(base_url=url, timeout=120) as other:
                return other.post("/generate", json={"steps": 100, "count": 4}, headers=auth)

        with ThreadPoolExecutor(6) as pool:
            responses = list(pool.map(slow, range(6)))
        refused = [r for r in responses if r.status_code == 503]
        assert refused and all(r.status_code in (200, 503) for r in responses)
        assert refused[0].headers["retry-after"] == "3"
        assert refused[0].json()["error"]["type"] == "overloaded"
