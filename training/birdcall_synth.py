"""Synthetic bird-call recordings: stand-ins for the xeno-canto data the seed project trained on.

Each species has its own call structure (sweeps, trills at a set rate, harmonic stacks, two-note
calls, buzzes, warbles, ...). Every recording varies pitch, tempo and loudness, sits in pink and
wind noise, may carry faint calls of other species, has random gaps between bouts, and part of the
data is low-passed at 5-8 kHz the way 16 kHz MP3 cuts the top band. Deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import scipy.fft
import scipy.signal
import soundfile as sf

Rng = np.random.Generator
# (rng, sample_rate, pitch factor, tempo factor) -> one call (or phrase), float64, peak ~1
CallFn = Callable[[Rng, int, float, float], np.ndarray]


def _tone(freqs: np.ndarray, sr: int) -> np.ndarray:
    """A sine that follows an instantaneous-frequency track (Hz per sample)."""
    return np.sin(2 * np.pi * np.cumsum(freqs) / sr)


def _envelope(n: int, attack: float = 0.1) -> np.ndarray:
    """Smooth rise and fall: a tapered (Tukey) window."""
    return scipy.signal.windows.tukey(n, alpha=min(1.0, 2 * attack)) if n > 2 else np.ones(n)


def _samples(seconds: float, sr: int) -> int:
    return max(8, int(seconds * sr))


def _sweep(f0: float, f1: float, seconds: float) -> Callable[[int, float, float], np.ndarray]:
    def make(sr: int, p: float, t: float) -> np.ndarray:
        n = _samples(seconds * t, sr)
        return _tone(np.geomspace(f0 * p, f1 * p, n), sr) * _envelope(n)

    return make


def _repeat(parts: list[np.ndarray], gap: float, sr: int) -> np.ndarray:
    silence = np.zeros(_samples(gap, sr))
    out: list[np.ndarray] = []
    for part in parts:
        out += [part, silence]
    return np.concatenate(out[:-1])


def upsweep(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    note = _sweep(2000, 5000, 0.3)(sr, p, t)
    return _repeat([note] * int(rng.integers(2, 5)), 0.2 * t, sr)


def downsweep(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    note = _sweep(6000, 2500, 0.25)(sr, p, t)
    return _repeat([note] * int(rng.integers(2, 5)), 0.15 * t, sr)


def _pips(freq: float, rate_hz: float, pip_seconds: float, total: float, sr: int, p: float, t: float) -> np.ndarray:
    n_pips = max(2, int(total * t * rate_hz))
    n = _samples(pip_seconds, sr)
    pip = _tone(np.full(n, freq * p), sr) * _envelope(n, 0.3)
    return _repeat([pip] * n_pips, max(0.0, 1 / rate_hz - pip_seconds), sr)


def fast_trill(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    return _pips(3500, 25, 0.02, 1.2, sr, p, t)


def slow_trill(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    return _pips(2800, 8, 0.05, 1.5, sr, p, t)


def harmonic_caw(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    n = _samples(0.5 * t, sr)
    f0 = np.linspace(650, 520, n) * p
    call = sum(_tone(f0 * k, sr) / k for k in range(1, 7))
    note = call * _envelope(n, 0.05)
    return _repeat([note] * int(rng.integers(1, 4)), 0.3 * t, sr)


def two_note(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    hi = _tone(np.full(_samples(0.2 * t, sr), 4200 * p), sr)
    lo = _tone(np.full(_samples(0.25 * t, sr), 3100 * p), sr)
    return _repeat([hi * _envelope(len(hi)), lo * _envelope(len(lo))], 0.08 * t, sr)


def buzz(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    n = _samples(0.8 * t, sr)
    time = np.arange(n) / sr
    am = 0.5 * (1 + np.sign(np.sin(2 * np.pi * 120 * time)))
    return _tone(np.full(n, 5000 * p), sr) * am * _envelope(n)


def warble(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    n = _samples(1.0 * t, sr)
    time = np.arange(n) / sr
    freqs = (3000 + 800 * np.sin(2 * np.pi * 12 * time + rng.uniform(0, 2 * np.pi))) * p
    return _tone(freqs, sr) * _envelope(n)


def whistle(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    n = _samples(0.8 * t, sr)
    return _tone(np.full(n, 2200 * p), sr) * _envelope(n, 0.2)


def hoot(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    n = _samples(0.4 * t, sr)
    f0 = np.full(n, 450 * p)
    note = (_tone(f0, sr) + 0.4 * _tone(2 * f0, sr)) * _envelope(n, 0.3)
    return _repeat([note, note], 0.25 * t, sr)


def chirp_series(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    notes = []
    for f in np.linspace(5200, 3000, 8):
        n = _samples(0.045 * t, sr)
        notes.append(_tone(np.linspace(f * 1.1, f * 0.9, n) * p, sr) * _envelope(n, 0.2))
    return _repeat(notes, 0.02 * t, sr)


def rattle(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    sos = scipy.signal.butter(4, [min(2000 * p, sr / 2 - 200), min(6000 * p, sr / 2 - 100)], "bandpass", fs=sr, output="sos")
    clicks = [rng.standard_normal(_samples(0.006, sr)) * _envelope(_samples(0.006, sr)) for _ in range(int(40 * t))]
    burst = _repeat(clicks, 1 / 40 - 0.006, sr)
    out = scipy.signal.sosfilt(sos, burst)
    return out / (np.abs(out).max() + 1e-9)


def overslur(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    n = _samples(0.4 * t, sr)
    arc = 3000 + 2000 * np.sin(np.linspace(0, np.pi, n))
    note = _tone(arc * p, sr) * _envelope(n)
    return _repeat([note] * int(rng.integers(1, 4)), 0.25 * t, sr)


def vibrato_whistle(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    n = _samples(1.2 * t, sr)
    time = np.arange(n) / sr
    return _tone((3800 + 150 * np.sin(2 * np.pi * 5 * time)) * p, sr) * _envelope(n)


def cricket_pulse(rng: Rng, sr: int, p: float, t: float) -> np.ndarray:
    # Triplets of 6.5 kHz pulses, a chirp pattern no other species has.
    triplet = _pips(6500, 30, 0.015, 0.1, sr, p, 1.0)
    return _repeat([triplet] * 4, 0.12 * t, sr)


SPECIES: dict[str, CallFn] = {
    "upsweep_finch": upsweep,
    "downsweep_warbler": downsweep,
    "fast_trill_wren": fast_trill,
    "slow_trill_sparrow": slow_trill,
    "harmonic_crow": harmonic_caw,
    "two_note_chickadee": two_note,
    "buzzing_bunting": buzz,
    "warbling_vireo": warble,
    "whistling_thrush": whistle,
    "hooting_owl": hoot,
    "chirping_swallow": chirp_series,
    "rattling_kingfisher": rattle,
    "overslur_oriole": overslur,
    "vibrato_robin": vibrato_whistle,
    "pulsing_nightjar": cricket_pulse,
}


def pink_noise(rng: Rng, n: int) -> np.ndarray:
    """1/f noise by spectral shaping of white noise."""
    size = scipy.fft.next_fast_len(n, real=True)  # an awkward n can make the FFT 10x slower
    spectrum = scipy.fft.rfft(rng.standard_normal(size).astype(np.float32))
    spectrum /= np.sqrt(np.maximum(np.arange(len(spectrum), dtype=np.float32), 1))
    out = scipy.fft.irfft(spectrum, size)[:n]
    return out / (out.std() + 1e-12)


def wind_noise(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Low rumble with slow gusts: low-passed noise under a slowly varying envelope."""
    sos = scipy.signal.butter(2, 300, "lowpass", fs=sr, output="sos")
    rumble = scipy.signal.sosfilt(sos, rng.standard_normal(n))
    gust_points = rng.uniform(0.2, 1.0, size=max(2, n // sr + 2))
    gusts = np.interp(np.linspace(0, len(gust_points) - 1, n), np.arange(len(gust_points)), gust_points)
    out = rumble * gusts
    return out / (out.std() + 1e-12)


@dataclass(frozen=True)
class Recording:
    audio: np.ndarray
    """float32 mono samples in [-1, 1]."""
    sample_rate: int
    lowpassed_hz: float | None
    """Cut-off of the simulated low-pass, or None."""


def synthesize_recording(
    species: str,
    seconds: float,
    sample_rate: int,
    rng: Rng,
    lowpass_probability: float = 0.4,
) -> Recording:
    """One field recording of `species`: bouts of its call over noise, with gaps and distractors."""
    n = int(seconds * sample_rate)
    call = SPECIES[species]
    pitch, tempo = rng.uniform(0.92, 1.08), rng.uniform(0.85, 1.15)
    signal = np.zeros(n)
    # Bouts start at random gaps of 0.3-2.2 s, so every 5 s window holds at least one call.
    pos = int(rng.uniform(0.0, 0.8) * sample_rate)
    while pos < n:
        bout = call(rng, sample_rate, pitch * rng.uniform(0.98, 1.02), tempo) * rng.uniform(0.5, 1.0)
        end = min(n, pos + len(bout))
        signal[pos:end] += bout[: end - pos]
        pos = end + int(rng.uniform(0.3, 2.2) * sample_rate)
    # Faint calls of other species in the background.
    others = [s for s in SPECIES if s != species]
    for _ in range(int(rng.poisson(0.6 * seconds / 10))):
        other = SPECIES[others[rng.integers(len(others))]](rng, sample_rate, rng.uniform(0.92, 1.08), 1.0)
        start = int(rng.integers(0, max(1, n - len(other))))
        end = min(n, start + len(other))
        signal[start:end] += other[: end - start] * rng.uniform(0.05, 0.15)
    peak = rng.uniform(0.1, 0.6)
    signal *= peak / (np.abs(signal).max() + 1e-12)
    noise_level = peak * rng.uniform(0.01, 0.12)
    signal += noise_level * (pink_noise(rng, n) * rng.uniform(0.3, 1.0) + wind_noise(rng, n, sample_rate) * rng.uniform(0.0, 1.0))
    cutoff = None
    if rng.random() < lowpass_probability:
        cutoff = float(rng.uniform(5000, 8000))
        if cutoff < sample_rate / 2 - 100:
            sos = scipy.signal.butter(8, cutoff, "lowpass", fs=sample_rate, output="sos")
            signal = scipy.signal.sosfilt(sos, signal)
        else:
            cutoff = None
    return Recording(np.clip(signal, -1, 1).astype(np.float32), sample_rate, cutoff)


def write_audio(target, audio: np.ndarray, rate: int, container: str, subtype: str) -> None:
    """Write mono [n] or multichannel [n, c] audio to a path or file object.

    In chunks: libsndfile's Vorbis encoder crashed on one 50 s write at 44.1/48 kHz.
    """
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    with sf.SoundFile(target, "w", rate, channels, format=container, subtype=subtype) as f:
        for start in range(0, len(audio), 1 << 15):
            f.write(audio[start : start + (1 << 15)])
