"""The web page, driven in headless Chromium (playwright with the Debian chromium binary)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

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
            args=["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"],
        )
        page = browser.new_page(viewport={"width": 1100, "height": 800})
        page.goto(server_url)
        yield page
        browser.close()


def test_upload_shows_ranking_and_timeline(page, chirp, tmp_path):
    audio = tmp_path / "chirp.flac"
    audio.write_bytes(encode(chirp, 44_100, "FLAC", "PCM_16"))
    page.set_input_files("#audio-file", str(audio))
    page.click("#classify-button")
    page.wait_for_selector("#ranking .bar", timeout=60_000)
    assert page.locator("#ranking .bar").count() == 3
    assert page.locator("#timeline tbody tr").count() == 1
    assert "44100 Hz" in page.inner_text("#classify-status")


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
