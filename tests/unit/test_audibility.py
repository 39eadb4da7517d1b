"""The audibility ceiling: calls measured where the model looks, clean and under the robustness check's noise."""

from __future__ import annotations

from pathlib import Path

from training.audibility import loudest_calls
from training.birdcall_generate import PlannedRecording
from training.birdcall_synth import SceneSpec


def _planned(backgrounds: tuple[str, ...]) -> PlannedRecording:
    scene = SceneSpec(("hooting_owl", "pulsing_nightjar"), backgrounds, 6.0)
    return PlannedRecording(Path("audio/x.flac"), "hooting_owl;pulsing_nightjar", "test", scene, 16_000, 0, seed=4)


def test_noise_as_loud_as_the_recording_lowers_its_loudest_call():
    clean, noisy = loudest_calls(_planned(("wind",)), 0)
    assert -20 < noisy < clean < 60
    assert loudest_calls(_planned(("wind",)), 0) == (clean, noisy)  # the plan rebuilds the same scene


def test_over_silence_the_noise_alone_covers_the_calls():
    clean, noisy = loudest_calls(_planned(("silence",)), 0)
    assert clean > 40  # nothing under the calls but digital silence or self-noise
    assert noisy < clean - 20
