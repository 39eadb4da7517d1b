"""REST over the data plane: /classify, /classify/batch, /generate, the page and /openapi.json."""

from __future__ import annotations

import asyncio
import base64
import re
import time

import numpy as np
import pytest
from prometheus_client import REGISTRY

from service.adapters import HTTP_ROUTES
from service.settings import ServiceSettings
from tests.api.conftest import EMBEDDING_DIM, LABELS, THRESHOLD, counted_errors
from tests.conftest import encode

pytestmark = pytest.mark.anyio


def error_of(response, status: int, words: str) -> dict:
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["status"] == status and words in error["message"], error
    return error


async def test_classify_raw_and_multipart_agree(http, wav, engine):
    raw = await http.post("/classify", content=wav, params={"top_k": 2})
    multipart = await http.post("/classify", files={"audio": ("tone.wav", wav)}, data={"top_k": "2"})
    assert raw.status_code == multipart.status_code == 200, raw.text
    body = raw.json()
    assert body["audio"] == {"duration_seconds": 7.5, "sample_rate": 16_000, "channels": 1, "format": "WAV", "windows": 2}
    assert [w["start"] for w in body["windows"]] == [0.0, 2.5]
    assert body["threshold"] == THRESHOLD and body["model"] == {"name": "birdcall", "version": "b1", "variant": "fp32", "provider": "fake"}
    assert all(len(w["detections"]) <= 2 for w in body["windows"])
    assert {s["label"] for s in body["summary"]} <= set(LABELS) and body["summary"]
    assert {"decode", "resample", "features", "inference", "model", "postprocess", "total"} <= set(body["timings_ms"])
    assert multipart.json()["summary"] == body["summary"]
    assert engine.calls == [("birdcall_windows", 2), ("birdcall_windows", 2)]


async def test_detections_follow_the_threshold_and_windows_may_hold_none(http, wav):
    everything = (await http.post("/classify", content=wav, params={"min_confidence": 0, "top_k": 4})).json()
    assert all(len(w["detections"]) == 4 for w in everything["windows"])
    first = everything["summary"][0]
    assert first["windows"] == 2 and first["first_seconds"] == 0.0 and first["last_seconds"] == 7.5
    assert first["max_score"] >= first["mean_score"] > 0 and everything["summary"] == sorted(
        everything["summary"], key=lambda s: -s["max_score"]
    )
    nothing = (await http.post("/classify", content=wav, params={"min_confidence": 1})).json()
    assert nothing["summary"] == [] and [w["detections"] for w in nothing["windows"]] == [[], []]
    assert "embeddings" not in nothing
    with_embeddings = (await http.post("/classify", content=wav, params={"embeddings": "true"})).json()
    assert [len(e) for e in with_embeddings["embeddings"]] == [EMBEDDING_DIM, EMBEDDING_DIM]


async def test_the_detection_metrics_count_at_the_calibrated_threshold_whatever_the_request_asks(http, wav):
    """The drift alert compares them with the validation mix, counted at the calibrated threshold."""

    def counted() -> tuple[float, float]:
        windows = REGISTRY.get_sample_value("chorus_windows_total", {"model": "birdcall"}) or 0.0
        empty = REGISTRY.get_sample_value("chorus_windows_without_detection_total", {"model": "birdcall"}) or 0.0
        return windows, empty

    before = counted()
    calibrated = (await http.post("/classify", content=wav)).json()
    middle = counted()
    nothing = (await http.post("/classify", content=wav, params={"min_confidence": 1})).json()
    after = counted()
    empty_at_calibration = sum(not w["detections"] for w in calibrated["windows"])
    assert empty_at_calibration < 2 and not any(w["detections"] for w in nothing["windows"])  # the request saw none ...
    assert middle[1] - before[1] == empty_at_calibration == after[1] - middle[1]  # ... the metrics count as calibrated
    assert after[0] - middle[0] == middle[0] - before[0] == 2


async def test_long_recordings_go_to_the_engine_in_chunks_of_the_batch_limit(plane, http, engine, wav):
    plane.settings.birdcall_max_batch_size = 1
    assert (await http.post("/classify", content=wav)).status_code == 200
    assert engine.calls == [("birdcall_windows", 1), ("birdcall_windows", 1)]


@pytest.mark.parametrize(
    ("kwargs", "status", "words"),
    [
        ({"content": b""}, 400, "empty"),
        ({"files": {"wrong_field": ("a.wav", b"RIFF")}}, 400, "'audio'"),
        ({"content": b"plain text, not audio"}, 415, "unsupported audio format"),
        ({"content": b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 8}, 415, "could not be decoded"),
        ({"content": b"fLaC\x00", "params": {"top_k": "0"}}, 422, "top_k"),
        ({"content": b"fLaC\x00", "params": {"timeline": "maybe"}}, 422, "timeline"),
        ({"content": b"fLaC\x00", "headers": {"X-Request-Timeout": "-1"}}, 422, "X-Request-Timeout"),
    ],
)
async def test_classify_errors(http, kwargs, status, words):
    error_of(await http.post("/classify", **kwargs), status, words)


async def test_classify_batch_names_the_file_that_failed(http, wav):
    files = [("audio", ("a.wav", wav)), ("audio", ("b.bin", b"junk" * 10))]
    error = error_of(await http.post("/classify/batch", files=files), 415, "b.bin")
    assert error["file"] == "b.bin"
    ok = await http.post("/classify/batch", files=[("audio", ("a.wav", wav)), ("audio", ("c.wav", wav))])
    assert [r["file"] for r in ok.json()["results"]] == ["a.wav", "c.wav"]


async def test_generate_png_and_json(http, engine):
    png = await http.post("/generate", json={"seed": 3, "steps": 5})
    assert png.status_code == 200 and png.headers["content-type"] == "image/png"
    assert png.headers["x-model-version"] == "f1" and png.content.startswith(b"\x89PNG")
    many = (await http.post("/generate", json={"count": 2, "steps": 5, "seed": 3})).json()
    assert len(many["images"]) == 2 and base64.b64decode(many["images"][0]) == png.content
    assert engine.calls[0] == ("frames_sample", 1)


@pytest.mark.parametrize(
    ("body", "words"),
    [({"count": 17}, "count"), ({"steps": 4}, "steps"), ({"seed": -1}, "seed"), ({"count": 2, "format": "png"}, "format")],
)
async def test_generate_refuses_what_the_default_limits_refuse(http, body, words):
    error_of(await http.post("/generate", json=body), 422, words)


async def test_generate_limits_come_from_settings(plane, http):
    # Not the defaults (16 images, 5-250 steps), so a limit written into the code fails here.
    plane.settings.max_images, plane.settings.min_steps, plane.settings.max_steps = 3, 2, 7
    for body in ({"count": 3, "steps": 2}, {"count": 1, "steps": 7}):
        assert (await http.post("/generate", json={**body, "format": "json"})).status_code == 200, body
    error_of(await http.post("/generate", json={"count": 4, "steps": 5}), 422, "count")
    error_of(await http.post("/generate", json={"steps": 1}), 422, "steps")
    error_of(await http.post("/generate", json={"steps": 8}), 422, "steps")


async def test_token_is_checked_and_a_non_ascii_token_is_a_401(plane, http, wav):
    plane.settings.api_token = "s3cret"
    error_of(await http.post("/classify", content=wav), 401, "API token")
    error_of(await http.post("/classify", content=wav, headers={"Authorization": "Bearer wrong"}), 401, "API token")
    latin1 = "Bearer caf\u00e9".encode("latin-1")
    error_of(await http.post("/classify", content=wav, headers=[(b"authorization", latin1)]), 401, "API token")
    assert (await http.post("/classify", content=wav, headers={"Authorization": "Bearer s3cret"})).status_code == 200


async def test_not_ready_is_a_503_with_retry_after(http, engine, wav):
    engine.ready = False
    response = await http.post("/classify", content=wav)
    error_of(response, 503, "still loading")
    assert response.headers["retry-after"] == "1"


async def test_an_engine_that_does_not_answer_is_not_ready_within_the_check_bound(plane, http, engine, wav):
    """A wedged engine (a readiness question that never returns) makes a 503 after engine_check_seconds,
    not a request held for the 300 s request timeout; once it answers, requests are served."""
    plane.settings.engine_check_seconds = 0.2
    answering = asyncio.Event()

    async def wedged() -> bool:
        await answering.wait()
        return True

    engine.is_ready = wedged  # type: ignore[method-assign]
    started = time.perf_counter()
    async with asyncio.timeout(10):  # without the bound this request would wait for ever
        response = await http.post("/classify", content=wav)
    error_of(response, 503, "the inference engine did not answer within 0.2 s")
    assert response.headers["retry-after"] == "1" and time.perf_counter() - started < 5
    readiness = await plane.readiness()
    assert not readiness.ready and not readiness.for_good and "did not answer" in (readiness.reason or "")
    answering.set()
    assert (await http.post("/classify", content=wav)).status_code == 200


async def test_an_unexpected_engine_error_is_a_logged_counted_500(http, engine, wav, caplog):
    engine.fail = KeyError("secret internals")
    before = counted_errors("classify", "internal_error", 500)
    response = await http.post("/classify", content=wav)
    error = error_of(response, 500, "internal error")
    assert "secret" not in response.text and error["type"] == "internal_error"
    assert counted_errors("classify", "internal_error", 500) == before + 1
    assert any("unhandled error on POST /classify" in r.message and r.exc_info for r in caplog.records)


async def test_openapi_lists_every_route_with_limits_from_settings(plane, http):
    plane.settings = ServiceSettings(grpc_port=0, max_images=8, min_steps=3, max_steps=40)
    spec = (await http.get("/openapi.json")).json()
    for route in HTTP_ROUTES:
        path = re.sub(r":\w+}", "}", route.path)  # OpenAPI names no convertors ({name:path} is {name})
        assert {m.lower() for m in route.methods} - {"head"} <= set(spec["paths"][path]), route.path
    schema = spec["paths"]["/generate"]["post"]["requestBody"]["content"]["application/json"]["schema"]["properties"]
    assert schema["count"]["maximum"] == 8 and (schema["steps"]["minimum"], schema["steps"]["maximum"]) == (3, 40)
    assert "birdcall, frames-denoiser" in spec["paths"]["/v2/models/{name}"]["get"]["summary"]


@pytest.mark.parametrize(
    ("method", "path", "status", "words"),
    [
        ("GET", "/nope", 404, "no route /nope; the routes are listed in /openapi.json"),
        ("GET", "/jobs/uploads/..%2Fjob1", 404, "no route /jobs/uploads/../job1"),
        ("GET", "/classify", 405, "GET is not allowed on /classify; it takes POST"),
        ("PUT", "/jobs/uploads", 405, "PUT is not allowed on /jobs/uploads; it takes"),
        ("TRACE", "/classify", 405, "TRACE is not allowed on /classify; it takes POST"),
        ("TRACE", "/nope", 404, "no route /nope"),
    ],
)
async def test_a_path_or_method_no_route_takes_is_a_json_error(http, method, path, status, words):
    response = await http.request(method, path)
    error = error_of(response, status, words)
    assert error["type"] == ("not_found" if status == 404 else "method_not_allowed")
    if status == 405:
        assert "POST" in response.headers["allow"]


async def test_page(http):
    response = await http.get("/")
    assert response.status_code == 200 and "chorus" in response.text


async def test_the_spectrogram_is_the_grid_the_model_heard(http, wav):
    import io

    from PIL import Image

    body = (await http.post("/classify", content=wav, params={"spectrogram": "true"})).json()
    picture = body["spectrogram"]
    image = Image.open(io.BytesIO(base64.b64decode(picture["png_base64"])))
    # 7.5 s: 480 hops, one column each; the second window's frames past the end are not drawn.
    assert image.size == (480, 64) and image.mode == "RGB"
    assert picture["seconds_per_column"] == 250 / 16_000 and picture["frequency_scale"] == "mel"
    assert image.size[0] * picture["seconds_per_column"] == body["audio"]["duration_seconds"]  # what the page's lanes assume
    short = encode(np.zeros(16_000, np.float32), 16_000, "WAV")  # 1 s: one window of 5 s, the image of 1 s
    one_second = (await http.post("/classify", content=short, params={"spectrogram": "true"})).json()["spectrogram"]
    assert Image.open(io.BytesIO(base64.b64decode(one_second["png_base64"]))).size == (64, 64)


async def test_media_types_are_case_insensitive(http, wav):
    """RFC 9110: 'Multipart/Form-Data' is multipart/form-data."""
    request = http.build_request("POST", "/classify", files={"audio": ("tone.wav", wav)})
    boundary = request.headers["content-type"].split("boundary=")[1]
    headers = {"content-type": f"Multipart/Form-Data; boundary={boundary}"}
    assert (await http.post("/classify", content=request.read(), headers=headers)).status_code == 200
    assert (await http.post("/classify/batch", content=request.read(), headers=headers)).status_code == 200
    generated = await http.post("/generate", content=b'{"format": "json", "steps": 5}', headers={"content-type": "Application/JSON"})
    assert generated.status_code == 200 and generated.json()["steps"] == 5


@pytest.mark.parametrize(
    "path, params, words",
    [
        ("/classify", {"min_confidance": "0.9"}, "unknown parameter(s) ['min_confidance']"),
        ("/classify/batch", {"bogus": "1"}, "unknown parameter(s) ['bogus']"),
        ("/generate", {"stepz": "1000"}, "/generate takes"),
    ],
)
async def test_a_misspelt_query_parameter_is_a_422(http, wav, path, params, words):
    files = {"audio": ("tone.wav", wav)} if path != "/generate" else None
    error_of(await http.post(path, params=params, files=files), 422, words)


async def test_generate_refuses_parameters_in_a_body_it_would_ignore(http, engine):
    # curl -d '{"seed": 7}' sends application/x-www-form-urlencoded: the seed would have been lost.
    response = await http.post("/generate", content=b'{"seed": 7}', headers={"content-type": "application/x-www-form-urlencoded"})
    error_of(response, 415, "application/json")
    assert not engine.calls
    assert (await http.post("/generate", params={"format": "json"})).status_code == 200  # no body at all is fine


@pytest.mark.parametrize("params", [{"top_k": "1_0"}, {"top_k": "\u0663"}, {"min_confidence": "0_5"}, {"min_confidence": "1e"}])
async def test_query_numbers_are_ascii_decimal_numbers(http, wav, params):
    """int() and float() read "1_0" as 10 and Arabic-Indic digits as digits: no client means those."""
    error_of(await http.post("/classify", content=wav, params=params), 422, "must be")


@pytest.mark.parametrize("params", [{"top_k": " 2 "}, {"min_confidence": ".5"}, {"min_confidence": "5e-1"}, {"min_confidence": "+0.5"}])
async def test_query_numbers_in_their_usual_forms_are_fine(http, wav, params):
    assert (await http.post("/classify", content=wav, params=params)).status_code == 200


async def test_a_recording_below_the_models_band_says_what_it_cannot_hold(http, wav):
    """8 kHz audio holds nothing above 4 kHz, where the model also listens: the answer says so."""
    t = np.arange(5 * 8_000) / 8_000
    low = encode((0.3 * np.sin(2 * np.pi * 1000 * t)).astype(np.float32), 8_000, "WAV", "PCM_16")
    warned = (await http.post("/classify", content=low)).json()
    assert "holds nothing above 4000 Hz" in warned["warnings"][0] and "cannot be detected" in warned["warnings"][0]
    assert "warnings" not in (await http.post("/classify", content=wav)).json()
