"""The audibility ceiling: calls measured where the model looks, clean and under the robustness check's noise."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from training.audibility import loudest_calls
from training.birdcall_generate import PlannedRecording
from training.birdcall_synth import SceneSpec
from training.evaluate_birdcall import AUDIO_BAND_LOW_HZ, pink_noise_for


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


def _power_under(audio: np.ndarray, rate: int, hz: float) -> float:
    spectrum = np.abs(np.fft.rfft(audio)) ** 2
    return float(spectrum[np.fft.rfftfreq(len(audio), 1 / rate) < hz].sum() / spectrum.sum())


def test_the_pink_noise_matches_the_recordings_power_in_the_audio_band_alone():
    """Power under 20 Hz (DC, a wind's infrasound) is neither heard nor in the model's mel bands: a
    recording that held 99% of its power there got noise 16 dB over its audible part."""
    rate, n = 16_000, 16_000 * 4 + 1  # odd, and 20 Hz between two of its bins
    t = np.arange(n) / rate
    call = 0.01 * np.sin(2 * np.pi * 3000 * t)
    rumble = 0.3 + np.sin(2 * np.pi * 3 * t)  # DC and 3 Hz: most of the power
    noise = pink_noise_for(call + rumble, rate, seed=0)
    assert len(noise) == n and np.mean(noise**2) == pytest.approx(np.mean(call**2), rel=1e-3)
    assert _power_under(noise, rate, AUDIO_BAND_LOW_HZ) < 1e-12
    assert np.array_equal(noise, pink_noise_for(call + rumble, rate, seed=0))
    pink = noise[: n // 2]  # still pink: each octave about as loud as the next (a slope of -3 dB an octave in density)
    octave = [_power_under(pink, rate, hz) for hz in (500, 1000, 2000)]
    assert octave[1] - octave[0] == pytest.approx(octave[2] - octave[1], rel=0.3)
