"""Synthetic non-bird sound: what field recordings hold besides the target birds.

Each kind is a function (rng, n_samples, sample_rate) -> float64 samples at unit RMS (silence is
the exception: it returns near-zero self-noise). Several of them are deliberately close to some
species (rain clicks vs the kingfisher's rattle, cricket trills vs the wren's trill, music notes
and machine whine vs whistles, voices vs the crow's harmonic caw), so the model has to learn the
call structures instead of "anything tonal is a bird". Deterministic for a seed.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import scipy.fft
import scipy.signal

Rng = np.random.Generator
BackgroundFn = Callable[[Rng, int, int], np.ndarray]


def _unit_rms(x: np.ndarray) -> np.ndarray:
    return x / (np.sqrt(np.mean(x**2)) + 1e-12)


def _filtered_noise(rng: Rng, n: int, sr: int, band: tuple[float | None, float | None], order: int = 4) -> np.ndarray:
    """White noise through a Butterworth low-, high- or band-pass (None leaves that edge open)."""
    low, high = band
    high = None if high is None or high >= sr / 2 - 50 else high
    noise = rng.standard_normal(n)
    if low and high:
        sos = scipy.signal.butter(order, [low, high], "bandpass", fs=sr, output="sos")
    elif low:
        sos = scipy.signal.butter(order, low, "highpass", fs=sr, output="sos")
    elif high:
        sos = scipy.signal.butter(order, high, "lowpass", fs=sr, output="sos")
    else:
        return noise
    return scipy.signal.sosfilt(sos, noise)


def colored_noise(rng: Rng, n: int, exponent: float = 1.0) -> np.ndarray:
    """Noise with power ~ 1/f**exponent (1: pink, 2: brown), by spectral shaping; unit RMS."""
    size = scipy.fft.next_fast_len(n, real=True)  # an awkward n can make the FFT 10x slower
    spectrum = scipy.fft.rfft(rng.standard_normal(size).astype(np.float32))
    spectrum /= np.maximum(np.arange(len(spectrum), dtype=np.float32), 1) ** (exponent / 2)
    return _unit_rms(scipy.fft.irfft(spectrum, size)[:n].astype(np.float64))


def _slow_envelope(rng: Rng, n: int, sr: int, rate_hz: float, low: float, high: float) -> np.ndarray:
    """A smooth random envelope between low and high that changes about rate_hz times a second."""
    points = rng.uniform(low, high, size=max(2, int(n / sr * rate_hz) + 2))
    return np.interp(np.linspace(0, len(points) - 1, n), np.arange(len(points)), points)


def _tone(freqs: np.ndarray, sr: int, phase: float = 0.0) -> np.ndarray:
    return np.sin(2 * np.pi * np.cumsum(freqs) / sr + phase)


def _periodic(f0: np.ndarray, sr: int, amplitudes: np.ndarray, rng: Rng) -> np.ndarray:
    """A waveform with harmonic k at amplitudes[k - 1] following fundamental f0 (Hz per sample).

    One cycle goes into a table that the phase indexes, so the cost does not grow with the
    number of harmonics (summing sines did: music took seconds per recording).
    """
    size = 2048
    theta = 2 * np.pi * np.arange(size) / size
    k = np.arange(1, len(amplitudes) + 1)[:, None]
    table = (amplitudes[:, None] * np.sin(k * theta + rng.uniform(0, 2 * np.pi, size=(len(amplitudes), 1)))).sum(axis=0)
    cycles = np.cumsum(f0) / sr
    return table[((cycles % 1.0) * size).astype(np.int64)]


def _harmonics(f0: np.ndarray, sr: int, rolloff: float, rng: Rng, max_hz: float = 7_500.0) -> np.ndarray:
    """Harmonics of a (time-varying) fundamental, amplitude k**-rolloff, up to max_hz."""
    count = max(1, int(max_hz // max(float(np.max(f0)), 1.0)))
    return _periodic(f0, sr, 1.0 / np.arange(1, count + 1) ** rolloff, rng)


def _resonator(freq: float, bandwidth: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    """A two-pole resonance (a formant) as lfilter coefficients; designing a Butterworth per syllable was slow."""
    r = np.exp(-np.pi * bandwidth / sr)
    a = np.array([1.0, -2 * r * np.cos(2 * np.pi * min(freq, sr / 2 - 100) / sr), r * r])
    return np.array([1 - r]), a


def _place(out: np.ndarray, start: int, part: np.ndarray) -> None:
    end = min(len(out), start + len(part))
    if start < end:
        out[start:end] += part[: end - start]


def _decay(n: int, sr: int, seconds: float) -> np.ndarray:
    return np.exp(-np.arange(n) / (seconds * sr))


def wind(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Low rumble under slow gusts, with leaf rustle (high-passed hiss) rising in the gusts."""
    gusts = _slow_envelope(rng, n, sr, rng.uniform(0.3, 1.5), 0.1, 1.0)
    rumble = _unit_rms(_filtered_noise(rng, n, sr, (None, rng.uniform(150, 500)), order=2))
    rustle = _unit_rms(_filtered_noise(rng, n, sr, (rng.uniform(800, 2000), rng.uniform(5000, 8000)), order=2))
    return _unit_rms(rumble * gusts + rng.uniform(0.0, 0.6) * rustle * gusts**2)


def rain(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Drops as damped resonances at random times and pitches (hundreds a second) over a hiss bed."""
    out = np.zeros(n)
    rate = rng.uniform(100, 2000)
    # Drops grouped into a few pitch classes, so each class is one sparse train convolved once.
    for freq in rng.uniform(800, 7000, size=4):
        train = np.zeros(n)
        hits = rng.integers(0, n, size=int(rate / 4 * n / sr))
        train[hits] = rng.pareto(2.5, size=len(hits))
        k = max(8, int(rng.uniform(0.001, 0.006) * sr))
        kernel = np.sin(2 * np.pi * freq * np.arange(k) / sr) * _decay(k, sr, k / sr / 4)
        out += scipy.signal.oaconvolve(train, kernel)[:n]
    bed = _filtered_noise(rng, n, sr, (rng.uniform(500, 2000), None), order=2)
    return _unit_rms(_unit_rms(out) + rng.uniform(0.1, 1.0) * _unit_rms(bed))


def water(rng: Rng, n: int, sr: int) -> np.ndarray:
    """A stream: band-limited murmur that swells, plus bubbles (short rising resonances)."""
    murmur = _filtered_noise(rng, n, sr, (rng.uniform(100, 400), rng.uniform(1500, 4000)), order=2)
    murmur = _unit_rms(murmur) * _slow_envelope(rng, n, sr, 4.0, 0.5, 1.0)
    bubbles = np.zeros(n)
    for start in rng.integers(0, n, size=int(rng.uniform(10, 80) * n / sr)):
        k = int(rng.uniform(0.005, 0.03) * sr)
        f0 = rng.uniform(300, 3000)
        freqs = f0 * (1 + rng.uniform(0.5, 3.0) * np.arange(k) / sr)
        _place(bubbles, int(start), _tone(freqs, sr) * _decay(k, sr, k / sr / 3) * rng.uniform(0.2, 1.0))
    return _unit_rms(murmur + rng.uniform(0.2, 1.0) * _unit_rms(bubbles))


def insects(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Crickets (continuous 4-4.8 kHz pulse trains or chirps), a cicada buzz, or a bee's hum."""
    kind = rng.choice(["cricket", "cicada", "bee"], p=[0.5, 0.3, 0.2])
    t = np.arange(n) / sr
    if kind == "cricket":
        carrier = np.sin(2 * np.pi * rng.uniform(4000, 4800) * t)
        pulse_rate, duty = rng.uniform(40, 70), rng.uniform(0.3, 0.6)
        pulses = (np.mod(t * pulse_rate, 1.0) < duty).astype(float)
        if rng.random() < 0.5:  # chirps: bursts of pulses a few times a second
            chirp_rate = rng.uniform(1.0, 4.0)
            pulses *= np.mod(t * chirp_rate, 1.0) < rng.uniform(0.2, 0.5)
        smooth = scipy.signal.windows.hann(max(3, int(0.003 * sr)))
        out = carrier * np.convolve(pulses, smooth / smooth.sum(), mode="same")
    elif kind == "cicada":
        hiss = _filtered_noise(rng, n, sr, (rng.uniform(4500, 5500), rng.uniform(6500, 7800)))
        out = hiss * (1 + 0.8 * np.sign(np.sin(2 * np.pi * rng.uniform(150, 300) * t)))
    else:
        f0 = rng.uniform(180, 260) * (1 + 0.05 * np.sin(2 * np.pi * rng.uniform(0.1, 0.5) * t))
        out = _harmonics(f0, sr, 1.2, rng, max_hz=3000.0)
    return _unit_rms(out * _slow_envelope(rng, n, sr, 0.3, 0.5, 1.0))


def traffic(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Engine harmonics with wandering revs, tyre/road noise, and cars passing (swell and fade)."""
    f0 = rng.uniform(25, 90) * _slow_envelope(rng, n, sr, 0.5, 0.8, 1.3)
    engine = _unit_rms(_harmonics(f0, sr, rng.uniform(0.8, 1.5), rng, max_hz=2500.0))
    road = _unit_rms(_filtered_noise(rng, n, sr, (None, rng.uniform(600, 2000)), order=2))
    t = np.arange(n) / sr
    swell = np.full(n, 0.3)
    for centre in rng.uniform(0, n / sr, size=rng.integers(1, 4)):
        swell += np.exp(-(((t - centre) / rng.uniform(1.0, 4.0)) ** 2))
    return _unit_rms((engine * rng.uniform(0.3, 1.0) + road) * swell)


def hum(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Mains hum and transformer buzz (50/60 Hz family), a fan, sometimes a steady machine whine."""
    mains = rng.choice([50.0, 60.0])
    t = np.arange(n) / sr
    buzz = _periodic(np.full(n, mains), sr, rng.uniform(0.1, 1.0, size=19) / np.arange(1, 20), rng)
    fan = _unit_rms(_filtered_noise(rng, n, sr, (None, rng.uniform(300, 1200)), order=2))
    blade = np.sin(2 * np.pi * rng.uniform(80, 400) * t)
    out = _unit_rms(buzz) + rng.uniform(0, 1) * fan + rng.uniform(0, 0.5) * blade
    if rng.random() < 0.4:
        out += rng.uniform(0.1, 0.5) * np.sin(2 * np.pi * rng.uniform(700, 1800) * t)
    return _unit_rms(out)


_VOWELS = np.array([[730, 1090, 2440], [270, 2290, 3010], [530, 1840, 2480], [570, 840, 2410], [300, 870, 2240], [660, 1720, 2410]])


def voices(rng: Rng, n: int, sr: int) -> np.ndarray:
    """One to three talkers: glottal pulses through vowel formants, syllables at ~4/s, fricatives, pauses."""
    out = np.zeros(n)
    for _ in range(int(rng.integers(1, 4))):
        talker = np.zeros(n)
        # One glottal source per talker with a wandering intonation; syllables filter slices of it.
        glottal = _harmonics(rng.uniform(90, 240) * _slow_envelope(rng, n, sr, 3.0, 0.8, 1.2), sr, 1.0, rng, max_hz=4000.0)
        pos = int(rng.uniform(0, 1.0) * sr)
        while pos < n:
            syllable = min(n - pos, int(rng.uniform(0.12, 0.35) * sr))
            source = glottal[pos : pos + syllable]
            formants = _VOWELS[rng.integers(len(_VOWELS))] * rng.uniform(0.9, 1.15)
            voiced = np.zeros(syllable)
            for k, f in enumerate(formants):
                voiced += scipy.signal.lfilter(*_resonator(f, f * 0.15, sr), source) / (k + 1)
            _place(talker, pos, voiced * scipy.signal.windows.tukey(syllable, 0.4))
            pos += syllable
            if rng.random() < 0.3:  # a fricative (s, sh, f)
                k = int(rng.uniform(0.05, 0.12) * sr)
                hiss = _filtered_noise(rng, k, sr, (rng.uniform(2500, 4500), None), order=2)
                _place(talker, pos, 0.5 * hiss * scipy.signal.windows.tukey(k, 0.5) * np.std(voiced) / (np.std(hiss) + 1e-12))
                pos += k
            pos += int(rng.uniform(0.02, 0.1) * sr if rng.random() < 0.85 else rng.uniform(0.3, 1.5) * sr)
        out += _unit_rms(talker) * rng.uniform(0.3, 1.0)
    return _unit_rms(out)


def music(rng: Rng, n: int, sr: int) -> np.ndarray:
    """A melody and chords of harmonic-rich notes on a scale, with a kick and hi-hat beat half the time."""
    beat = 60 / rng.uniform(70, 160)
    scale = np.array([0, 2, 4, 5, 7, 9, 11, 12, 14, 16])
    root = rng.uniform(130, 330)
    rolloff = rng.uniform(0.7, 2.0)
    # The chord sounds under every note, so it is made once for the whole recording.
    chord = sum(_harmonics(np.full(n, root * 2 ** (step / 12)), sr, rolloff, rng) for step in (0, 4, 7))
    out = np.zeros(n)
    pos = 0
    while pos < n:
        length = min(n - pos, int(beat * rng.choice([0.5, 1, 1, 2]) * sr))
        env = _decay(length, sr, rng.uniform(0.1, 0.6)) * np.minimum(1, np.arange(length) / (0.01 * sr))
        melody = root * 2 ** (scale[rng.integers(len(scale))] / 12) * 2
        note = _harmonics(np.full(length, melody), sr, rolloff, rng) + 0.3 * chord[pos : pos + length]
        _place(out, pos, note * env)
        pos += length
    if rng.random() < 0.5:
        k = int(0.15 * sr)
        kick = np.sin(2 * np.pi * 60 * np.arange(k) / sr) * _decay(k, sr, 0.05)
        h = int(0.03 * sr)
        hat = _filtered_noise(rng, h, sr, (6000, None)) * _decay(h, sr, 0.008)
        drums = np.zeros(n)
        for i, start in enumerate(np.arange(0, n, int(beat * sr / 2))):
            _place(drums, int(start), kick if i % 2 == 0 else 0.5 * hat / (np.abs(hat).max() + 1e-12))
        out = _unit_rms(out) + rng.uniform(0.2, 0.6) * _unit_rms(drums)
    return _unit_rms(out)


def handling(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Recorder handling: low thumps, rubbing and scratching bursts, button clicks, over a faint floor."""
    out = 0.02 * colored_noise(rng, n)
    for start in rng.integers(0, n, size=max(1, int(rng.uniform(0.3, 2.0) * n / sr))):
        kind = rng.integers(3)
        if kind == 0:
            k = int(rng.uniform(0.05, 0.3) * sr)
            part = np.sin(2 * np.pi * rng.uniform(20, 150) * np.arange(k) / sr) * _decay(k, sr, k / sr / 4) * rng.uniform(1, 5)
        elif kind == 1:
            k = int(rng.uniform(0.1, 0.8) * sr)
            rough = np.abs(_filtered_noise(rng, k, sr, (None, 30.0), order=2))
            part = _filtered_noise(rng, k, sr, (rng.uniform(100, 500), rng.uniform(2000, 6000))) * rough / (rough.max() + 1e-12)
        else:
            k = int(0.004 * sr)
            part = rng.standard_normal(k) * _decay(k, sr, 0.001) * rng.uniform(1, 3)
        _place(out, int(start), part)
    return _unit_rms(out)


def hiss(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Broadband noise (a recorder's preamp, distant surf, a far-off road): white to brown, slowly swelling."""
    return _unit_rms(colored_noise(rng, n, rng.uniform(0.0, 2.0)) * _slow_envelope(rng, n, sr, 0.2, 0.7, 1.0))


def silence(rng: Rng, n: int, sr: int) -> np.ndarray:
    """Digital silence or a quiet recorder's self-noise (-90 to -60 dBFS): NOT unit RMS."""
    if rng.random() < 0.3:
        return np.zeros(n)
    return colored_noise(rng, n, rng.uniform(0.0, 1.0)) * 10 ** (rng.uniform(-90, -60) / 20)


BACKGROUNDS: dict[str, BackgroundFn] = {
    "wind": wind,
    "rain": rain,
    "water": water,
    "insects": insects,
    "traffic": traffic,
    "hum": hum,
    "voices": voices,
    "music": music,
    "handling": handling,
    "hiss": hiss,
    "silence": silence,
}
"""Sound kinds. Clipping is not a sound but what a too-loud scene does: see `clip`."""


def clip(audio: np.ndarray, rng: Rng) -> np.ndarray:
    """Drive the scene 6-20 dB past full scale and hard-clip it, as an overloaded recorder does."""
    gain = 10 ** (rng.uniform(6, 20) / 20) / (np.abs(audio).max() + 1e-12)
    return np.clip(audio * gain, -1.0, 1.0) * rng.uniform(0.5, 1.0)
