"""The robustness evaluation degrades the test split and measures it like the training report."""

from __future__ import annotations

import json
import os
import shutil

import pytest

from training.evaluate_birdcall import evaluate


def test_robustness_conditions_are_measured_and_written(tiny_birdcall, tiny_workspace):
    # CI installs ffmpeg, so there the MP3 condition always runs (and fails loudly without it).
    with_mp3 = shutil.which("ffmpeg") is not None or bool(os.environ.get("CI"))
    conditions = ("clean", "pink_0db", *(("mp3_16k_32kbps",) if with_mp3 else ()))
    report = evaluate(tiny_workspace, conditions)
    assert tuple(report["conditions"]) == conditions
    # The clean copy is the test split itself: the same figures as the training report.
    clean = report["conditions"]["clean"]
    for key in ("recording_accuracy", "micro_f1", "background_false_detection_rate", "windows"):
        assert clean[key] == pytest.approx(tiny_birdcall["test"][key], abs=1e-4), key
    # Noise keeps every sample's place; MP3's encoder delay may shift a window boundary, so only pink is held to it.
    assert report["conditions"]["pink_0db"]["windows"] == clean["windows"]
    for figures in report["conditions"].values():
        assert 0.0 <= figures["recording_accuracy"] <= 1.0
    reports = tiny_workspace.reports_dir("birdcall")
    assert json.loads((reports / "robustness.json").read_text())["threshold"] == report["threshold"]
    assert "| recording accuracy |" in (reports / "robustness.md").read_text()
