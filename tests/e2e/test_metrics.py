"""/metrics after real traffic: chorus' own metrics with their names, labels and counts."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import encode, scrape, value


@pytest.fixture(scope="module")
def client(server_url):
    with httpx.Client(base_url=server_url, timeout=120) as c:
        yield c


def test_metrics_after_traffic(client, chirp):
    before = scrape(client)
    wav = encode(chirp, 44_100, "WAV", "PCM_16")  # 3 s -> one window
    answers = []
    for threshold in (0.0, 1.0, None):  # every species detected; none; the calibrated threshold's
        params = {"top_k": 12} if threshold is None else {"min_confidence": threshold, "top_k": 12}
        response = client.post("/classify", content=wav, params=params)
        assert response.status_code == 200
        answers.append(response.json())
    assert client.post("/classify", content=b"not audio at all").status_code == 415
    assert client.post("/generate", json={"steps": 5, "count": 2}).status_code == 200
    assert client.post("/generate", json={"steps": 500}).status_code == 422
    after = scrape(client)

    def delta(metric: str, **labels: str) -> float:
        return value(after, metric, **labels) - value(before, metric, **labels)

    for stage in ("decode", "resample", "features", "inference", "model", "postprocess", "total"):
        assert delta("chorus_stage_duration_seconds_count", model="birdcall", variant="fp32", stage=stage) == 3, stage
    assert delta("chorus_stage_duration_seconds_count", model="frames", stage="total") == 1
    assert delta("chorus_windows_total", model="birdcall") == 3
    # The metrics count at the calibrated threshold whatever each request asked (the drift alert's
    # reference was counted so): three times what the calibrated answer detected.
    assert [len(a["windows"][0]["detections"]) for a in answers[:2]] == [12, 0]
    calibrated = answers[2]["windows"][0]["detections"]
    for label in answers[0]["windows"][0]["detections"]:
        count = 3 * sum(d["label"] == label["label"] for d in calibrated)
        assert delta("chorus_detections_total", model="birdcall", label=label["label"]) == count, label
    assert delta("chorus_windows_without_detection_total", model="birdcall") == (0 if calibrated else 3)
    assert value(after, "chorus_validation_detection_share", model="birdcall", label="(none)") > 0
    assert delta("chorus_audio_duration_seconds_count") == 3
    assert delta("chorus_audio_sample_rate_hertz_bucket", le="44100.0") == 3
    assert delta("chorus_audio_sample_rate_hertz_bucket", le="32000.0") == 0
    assert delta("chorus_errors_total", route="classify", type="unsupported_media", status="415") == 1
    assert delta("chorus_errors_total", route="generate", type="invalid_parameter", status="422") == 1
    assert delta("chorus_request_body_bytes_count", route="classify") == 4
    # Engine side: batch sizes in items (windows; images per DDIM step) and ORT time per batch.
    assert delta("chorus_batch_size_sum", model="birdcall") == 3
    assert delta("chorus_batch_size_sum", model="frames") == 2 * 5
    assert delta("chorus_batch_duration_seconds_count", model="birdcall", variant="fp32") >= 1
    # Queue wait per request (birdcall: per engine call, one each here; frames: one per /generate).
    assert delta("chorus_queue_wait_seconds_count", model="birdcall") == 3
    assert delta("chorus_queue_wait_seconds_count", model="frames") == 1
    assert (
        0
        <= delta("chorus_queue_wait_seconds_sum", model="birdcall")
        < delta("chorus_stage_duration_seconds_sum", model="birdcall", variant="fp32", stage="inference")
    )
    # Gauges: every model announced once, nothing left in flight.
    assert value(after, "chorus_model_info", name="birdcall", variant="fp32", provider="CPUExecutionProvider") == 1
    assert value(after, "chorus_model_info", name="frames") == 1
    assert value(after, "chorus_in_flight_requests") == 0
    assert value(after, "chorus_engine_pending_items") == 0
    # Sub-millisecond buckets exist where stages are that fast.
    assert (
        "chorus_stage_duration_seconds_bucket",
        (("le", "0.0001"), ("model", "birdcall"), ("stage", "postprocess"), ("variant", "fp32")),
    ) in after


def test_rejections_and_timeouts_are_counted(client, chirp):
    before = scrape(client)
    wav = encode(chirp, 16_000, "WAV", "PCM_16")
    assert client.post("/generate", json={"steps": 250, "count": 16}, headers={"X-Request-Timeout": "0.05"}).status_code == 504
    assert client.post("/classify", content=wav).status_code == 200
    after = scrape(client)
    assert value(after, "chorus_timeouts_total", route="generate") - value(before, "chorus_timeouts_total", route="generate") == 1
    assert value(after, "chorus_errors_total", status="504") - value(before, "chorus_errors_total", status="504") == 1


def test_request_metrics_are_labelled_by_route_not_by_path(client):
    """Random paths and per-job URLs must not each add series (they never go away: a client could
    grow /metrics and the worker without bound)."""
    for i in range(20):
        assert client.get(f"/no/such/path/{i}").status_code == 404
        assert client.get(f"/jobs/not-a-job-{i}").status_code == 404
    endpoints = {dict(labels).get("endpoint") for name, labels in scrape(client) if name.startswith("bentoml_service_request_total")}
    assert "unmatched" in endpoints and "/jobs/{job_id}" in endpoints, " ".join(sorted(map(str, endpoints)))
    assert not [e for e in endpoints if e and ("/no/such" in e or "not-a-job" in e)], endpoints


def test_the_api_requests_carry_the_label_the_error_ratio_rule_selects(client):
    """monitoring/alerts.yml selects runner_name="chorus": BentoML's service_name is the Bento's name."""
    assert client.get("/no/such/route").status_code == 404
    runners = {dict(labels).get("runner_name") for name, labels in scrape(client) if name.startswith("bentoml_service_request_total")}
    assert "chorus" in runners, runners
