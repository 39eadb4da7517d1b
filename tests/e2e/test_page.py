"""The web page, driven in headless Chromium (playwright with the Debian chromium binary)."""

from __future__ import annotations

import os
import shutil
import wave
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import ROOT, encode

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ARTIFACTS = Path(os.environ.get("CHORUS_TEST_ARTIFACTS", ROOT / "artifacts" / "test-artifacts"))

pytestmark = pytest.mark.skipif(
    CHROMIUM is None and not os.environ.get("CI"),
    reason="no chromium binary (apt-get install chromium); .ci/run installs it",
)


@pytest.fixture(scope="module")
def page(server_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            args=[
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--no-first-run",
                "--autoplay-policy=no-user-gesture-required",
            ],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(server_url)
        yield page
        browser.close()


def test_upload_shows_detections_over_the_spectrogram_and_a_cursor_that_follows_the_audio(page, chirp, tmp_path):
    audio = tmp_path / "chirp_then_silence.wav"
    recording = np.concatenate([chirp, np.zeros((4 * 44_100, 2), np.float32), chirp])  # 10 s: three windows
    audio.write_bytes(encode(recording, 44_100, "WAV", "PCM_16"))
    page.fill("#min-confidence", "0.5")
    page.set_input_files("#audio-file", str(audio))
    with page.expect_response(lambda r: "/classify" in r.url) as answer:
        page.click("#classify-button")
    result = answer.value.json()
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert result["threshold"] == 0.5 and len(result["windows"]) == 3
    # One lane per species detected anywhere; hatched marks for the windows without any.
    assert page.locator("#lanes .lane").count() == len(result["summary"])
    assert page.locator("#empty-lane .empty").count() == sum(1 for w in result["windows"] if not w["detections"])
    assert page.locator("#summary tbody tr").count() == max(1, len(result["summary"]))
    assert page.evaluate("document.getElementById('spectrogram').naturalHeight") == 64
    assert "44100 Hz" in page.inner_text("#classify-status")
    # The cursor sits where the audio is: seek to the middle, then play on.
    width = page.evaluate("document.getElementById('view').clientWidth")
    page.evaluate("document.getElementById('player').currentTime = 5")
    page.wait_for_function(f"Math.abs(parseFloat(document.getElementById('cursor').style.left) - {width / 2}) < 3", timeout=10_000)
    page.evaluate("document.getElementById('player').play()")
    page.wait_for_function(f"parseFloat(document.getElementById('cursor').style.left) > {width / 2 + 5}", timeout=15_000)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page_detections.png"), full_page=True)


def test_an_empty_recording_reads_as_no_bird(page, tmp_path):
    audio = tmp_path / "silence.wav"
    audio.write_bytes(encode(np.zeros(16_000 * 6, np.float32), 16_000, "WAV", "PCM_16"))
    page.fill("#min-confidence", "1")
    page.set_input_files("#audio-file", str(audio))
    page.click("#classify-button")
    page.wait_for_selector("#result:not([hidden])", timeout=60_000)
    assert page.locator("#lanes .lane").count() == 0
    assert page.locator("#empty-lane .empty").count() == 2
    assert "no species detected" in page.inner_text("#summary")


def test_a_job_from_the_page_shows_progress_and_its_tables(page, tmp_path):
    audio = tmp_path / "20240517_053000.wav"
    audio.write_bytes(encode((0.05 * np.random.default_rng(2).standard_normal(16_000 * 40)).astype(np.float32), 16_000, "WAV", "PCM_16"))
    page.set_input_files("#job-file", str(audio))
    page.click("#job-button")
    page.wait_for_selector("#job-outputs a", timeout=120_000)
    links = page.locator("#job-outputs a").all_inner_texts()
    assert "detections.csv" in links and "combined.selections.txt" in links
    assert "done" in page.inner_text("#job-status") and "0.7 of 0.7 min, 1/1 files" in page.inner_text("#job-progress")
    assert page.is_hidden("#job-cancel")
    # A table downloads from its link; with a token set, the page fetches it with the token (a link
    # cannot carry one) and hands the browser the bytes. This server takes either.
    authorizations: list[str | None] = []

    def record(route) -> None:
        authorizations.append(route.request.headers.get("authorization"))
        route.continue_()

    page.route("**/outputs/**", record)
    try:
        for token in ("", "t0ken"):
            page.fill("#token", token)
            with page.expect_download() as download:
                page.click("#job-outputs a:text-is('detections.csv')")
            assert download.value.suggested_filename == "detections.csv"
            assert Path(download.value.path()).read_text().startswith("path,channel,begin_s,end_s,species,score")
    finally:
        page.fill("#token", "")
        page.unroute("**/outputs/**", record)
    assert authorizations == ["Bearer t0ken"]  # page.route sees the page's fetch, not a link's own download
    task_id = page.inner_text("#job-status").split()[1]
    page.click("#job-delete")
    page.wait_for_selector("#job-delete", state="hidden")
    assert "deleted" in page.inner_text("#job-status") and page.locator("#job-outputs a").count() == 0
    assert page.request.get(f"{page.url.rstrip('/')}/jobs/{task_id}").status == 404


def test_a_job_can_be_cancelled_from_the_page(page, tmp_path):
    # Two hours at 8 kHz: far longer to analyze than the click takes.
    audio = tmp_path / "20240517_060000.wav"
    block = (3000 * np.random.default_rng(3).standard_normal(8_000 * 60)).astype("<i2").tobytes()
    with wave.open(str(audio), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(8_000)
        for _ in range(120):
            out.writeframes(block)
    page.set_input_files("#job-file", str(audio))
    page.evaluate(  # every text the progress bar shows, however briefly
        """() => {
            const label = document.querySelector("#job-progress em");
            window.progressTexts = [];
            new MutationObserver(() => window.progressTexts.push(label.textContent))
                .observe(label, { childList: true, characterData: true, subtree: true });
        }"""
    )
    page.click("#job-button")
    page.wait_for_selector("#job-cancel:not([hidden])", timeout=120_000)
    assert "uploading: 115.2 of 115.2 MB" in page.evaluate("window.progressTexts")  # the upload's own progress
    page.click("#job-cancel")
    page.wait_for_selector("#job-delete:not([hidden])", timeout=120_000)  # the job has ended
    assert "cancelled" in page.inner_text("#job-status") and page.is_hidden("#job-cancel")
    page.click("#job-delete")
    page.wait_for_selector("#job-delete", state="hidden")
    assert "deleted" in page.inner_text("#job-status")


def test_generate_shows_images(page):
    page.fill("#count", "2")
    page.fill("#steps", "5")
    page.fill("#seed", "11")
    page.click("#generate-button")
    page.wait_for_selector("#images img", timeout=60_000)
    assert page.locator("#images img").count() == 2
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=str(ARTIFACTS / "page.png"), full_page=True)


def test_errors_are_shown(page, tmp_path):
    bad = tmp_path / "notes.txt"
    bad.write_text("not audio")
    page.set_input_files("#audio-file", str(bad))
    page.click("#classify-button")
    page.wait_for_selector("#classify-error:not(:empty)", timeout=30_000)
    assert "415" in page.inner_text("#classify-error")


def test_a_lost_connection_is_said_not_swallowed(page, tmp_path):
    """fetch rejects when the server is gone: the page must say so, not stay at "classifying..."."""
    recording = tmp_path / "tone.wav"
    recording.write_bytes(encode(np.zeros(16_000, np.float32), 16_000, "WAV"))
    page.route("**/classify?*", lambda route: route.abort())
    try:
        page.set_input_files("#audio-file", str(recording))
        page.click("#classify-button")
        page.wait_for_selector("#classify-error:not(:empty)", timeout=30_000)
        assert "could not be reached" in page.inner_text("#classify-error")
        assert page.inner_text("#classify-status") == ""
    finally:
        page.unroute("**/classify?*")
