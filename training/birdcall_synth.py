"""Synthetic bird-call recordings: stand-ins for the xeno-canto data the seed project trained on.

Each species has its own call structure (sweeps, trills at a set rate, harmonic stacks, two-note
calls, buzzes, warbles, ...). A recording is a scene: zero to three species, each in bouts with
random gaps, at a random level relative to non-bird sound under them (background_synth), with
pitch, tempo, overall loudness and band varied (part is low-passed the way 16 kHz MP3 cuts the
top band) and some scenes clipped. Every call placed is recorded as an event (species, start,
end, and how far it stands out of the rest where the model looks), so labels can follow the audio
window by window. Deterministic for a seed.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import cached_property
from pathlib import Path

import numpy as np
import scipy.fft
import scipy.signal
import soundfile as sf
import soxr

from features import FrontEndConfig
from features.mel import mel_filterbank, periodic_hann
from training.background_synth import BACKGROUNDS, clip, colored_noise
from training.ogg_pages import with_serial

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


@dataclass(frozen=True)
class CallEvent:
    """One stretch of audible call: the species and where it sits in the recording, in seconds."""

    label: str
    start: float
    end: float
    snr_db: float | None = None
    """How far the call stands out where the model looks, when known (None in real data without it):
    its power over everything else's (background, other species, the front end's floor) in the front
    end's mel cells it fills, in dB (see call_levels). Below 0 dB it is under the noise there."""


@dataclass(frozen=True)
class Recording:
    audio: np.ndarray
    """float32 mono samples in [-1, 1]."""
    sample_rate: int
    lowpassed_hz: float | None
    """Top of the band: the simulated low-pass's cut-off, or half a narrowband file's rate; None: the full band."""
    events: tuple[CallEvent, ...] = ()
    """Every call placed in the recording (the ground truth that window labels come from)."""
    backgrounds: tuple[str, ...] = ()
    """Kinds of non-bird sound under the calls (see background_synth.BACKGROUNDS)."""
    clipped: bool = False


@dataclass(frozen=True)
class SceneSpec:
    """What one generated recording holds."""

    species: tuple[str, ...]
    """Species singing in it (none: a background-only recording)."""
    backgrounds: tuple[str, ...]
    seconds: float
    sparse: bool = False
    """Bouts far apart (gaps up to 8 s), so some windows of the recording hold no call."""
    clipped: bool = False

    @property
    def loud_backgrounds(self) -> list[str]:
        """The background kinds but silence, which keeps its absolute level."""
        return [kind for kind in self.backgrounds if kind != "silence"]


# A species' level is drawn as a local SNR: the call's power over the background's in the spectrogram
# cells the call fills (within 20 dB of its loudest). A broadband ratio would say little: a 450 Hz
# hoot at 0 dB broadband vanishes under wind, while a 6 kHz call at -6 dB stands far out of pink
# noise. These are cells of a 32 ms STFT, finer than the model's mel bands, where calls read ~4 dB
# lower; the events carry the level measured there, call by call (call_levels).
SNR_DB = (4.0, 30.0)
_SNR_CELL_RANGE_DB = 20.0
_ACTIVE_FRAME_SECONDS = 0.005
_MERGE_GAP_SECONDS = 0.03


def _active_segments(bout: np.ndarray, sr: int) -> list[tuple[int, int]]:
    """Sample spans where a bout is audible: 5 ms frames above 5% of its loudest frame, gaps < 30 ms merged."""
    hop = max(1, int(_ACTIVE_FRAME_SECONDS * sr))
    frames = len(bout) // hop
    if frames == 0:
        # A bout cut by the recording's end after less than one frame: too short to be heard, and an
        # event of a few samples would round to zero length in the events file.
        return []
    rms = np.sqrt(np.mean(bout[: frames * hop].reshape(frames, hop) ** 2, axis=1))
    active = rms > 0.05 * rms.max()
    segments: list[list[int]] = []
    for i in np.flatnonzero(active):
        if segments and i - segments[-1][1] <= _MERGE_GAP_SECONDS / _ACTIVE_FRAME_SECONDS:
            segments[-1][1] = i + 1
        else:
            segments.append([int(i), int(i) + 1])
    return [(a * hop, min(len(bout), b * hop)) for a, b in segments]


def bird_track(species: str, n: int, sample_rate: int, rng: Rng, sparse: bool = False) -> tuple[np.ndarray, list[CallEvent]]:
    """Bouts of one species' call after random gaps, at active-RMS 1, with the call events in seconds."""
    call = SPECIES[species]
    pitch, tempo = rng.uniform(0.92, 1.08), rng.uniform(0.85, 1.15)
    signal = np.zeros(n)
    events: list[CallEvent] = []
    gap = (0.5, 8.0) if sparse else (0.3, 2.2)
    pos = int(rng.uniform(0.0, 2.0 if sparse else 0.8) * sample_rate)
    while pos < n:
        bout = call(rng, sample_rate, pitch * rng.uniform(0.98, 1.02), tempo) * rng.uniform(0.5, 1.0)
        end = min(n, pos + len(bout))
        signal[pos:end] += bout[: end - pos]
        for a, b in _active_segments(bout[: end - pos], sample_rate):
            events.append(CallEvent(species, (pos + a) / sample_rate, (pos + b) / sample_rate))
        pos = end + int(rng.uniform(*gap) * sample_rate)
    active = np.zeros(n, dtype=bool)
    for event in events:
        active[int(event.start * sample_rate) : int(event.end * sample_rate)] = True
    rms = np.sqrt(np.mean(signal[active] ** 2)) if active.any() else 1.0
    return signal / (rms + 1e-12), events


def _cell_power(x: np.ndarray, sr: int) -> np.ndarray:
    """Power spectrogram, 32 ms frames (about the front end's), for the local SNR."""
    nperseg = 1 << int(np.log2(0.032 * sr))
    _, _, z = scipy.signal.stft(x.astype(np.float32), nperseg=nperseg, noverlap=nperseg // 2, boundary=None, padded=False)
    return np.abs(z) ** 2


def local_snr_gain(track: np.ndarray, background_cells: np.ndarray, sr: int, snr_db: float) -> float:
    """Amplitude gain that puts `track` at snr_db local SNR over the background (see SNR_DB)."""
    cells = _cell_power(track, sr)
    loud = cells >= cells.max() * 10 ** (-_SNR_CELL_RANGE_DB / 10)
    ratio = cells[loud].sum() / max(float(background_cells[loud].sum()), 1e-30)
    return float(np.sqrt(10 ** (snr_db / 10) / max(ratio, 1e-30)))


_FRONT_END = FrontEndConfig()
_MEL_BANDS = mel_filterbank(_FRONT_END)
_FFT_BINS_HZ = np.fft.rfftfreq(_FRONT_END.n_fft, 1 / _FRONT_END.sample_rate)
_HANN = periodic_hann(_FRONT_END.n_fft)


def mel_power(x: np.ndarray, sr: int, gain: np.ndarray | None = None) -> np.ndarray:
    """[frames, mels] power of x in the front end's own cells: resampled as it does, its STFT frames
    (centred, periodic Hann) and mel bands; gain: a power gain per FFT bin applied first (a filter's)."""
    cfg = _FRONT_END
    x = soxr.resample(x.astype(np.float32), sr, cfg.sample_rate, quality="HQ")
    half = cfg.n_fft // 2
    padded = np.pad(x, (half, half))
    n_frames = 1 + (len(padded) - cfg.n_fft) // cfg.hop_length
    frames = padded[np.arange(cfg.n_fft)[None, :] + cfg.hop_length * np.arange(n_frames)[:, None]]
    power = np.abs(scipy.fft.rfft(frames * _HANN, axis=1)) ** 2
    return (power if gain is None else power * gain) @ _MEL_BANDS


def call_levels(call: np.ndarray, masker: np.ndarray, events: list[CallEvent]) -> list[float]:
    """Each event's level where the model looks: the call's power over the masker's (background and
    other species), in dB, over the mel cells the call fills within its event (frames centred inside
    it, bands within 20 dB of its loudest cell there). call and masker: mel_power of each. The front
    end's floor (log_eps, under every cell of its ln-mel) counts with the masker: over digital
    silence it is all there is."""
    frame_seconds = _FRONT_END.hop_length / _FRONT_END.sample_rate
    levels = []
    for event in events:
        first = min(int(np.ceil(event.start / frame_seconds)), len(call) - 1)
        last = max(first, min(int(np.floor(event.end / frame_seconds)), len(call) - 1))
        cells, under = call[first : last + 1], masker[first : last + 1] + _FRONT_END.log_eps
        loud = cells >= cells.max() * 10 ** (-_SNR_CELL_RANGE_DB / 10)
        levels.append(round(float(10 * np.log10(max(cells[loud].sum(), 1e-30) / under[loud].sum())), 1))
    return levels


@dataclass
class SceneParts:
    """A scene before its parts are summed: what the recording is made of, and where the model can hear it."""

    background: np.ndarray
    """Non-bird sound, float64."""
    tracks: list[tuple[np.ndarray, list[CallEvent]]]
    """Each species' calls at their level, with their events (levels not yet measured)."""
    sample_rate: int
    lowpass: np.ndarray | None
    """The band limit's second-order sections, or None."""
    cutoff: float | None
    """Its cut-off in Hz."""
    file_rate: int | None = None
    """The rate the recording is written at, when below sample_rate (a narrowband recorder)."""

    def file_band_gain(self) -> np.ndarray | None:
        """A narrowband file's power gain at the front end's FFT bins: what anything written into it keeps."""
        if self.file_rate is None:
            return None
        # The resampler's stop band: nothing of the top survives it.
        return np.where(self.file_rate / 2 > _FFT_BINS_HZ, 1.0, 0.0)

    def band_gain(self) -> np.ndarray | None:
        """The band limits' power gain at the front end's FFT bins (None: none)."""
        gain = self.file_band_gain()
        if self.lowpass is not None:
            response = np.abs(scipy.signal.sosfreqz(self.lowpass, worN=_FFT_BINS_HZ, fs=self.sample_rate)[1]) ** 2
            gain = response if gain is None else gain * response
        return gain

    def signal(self) -> np.ndarray:
        """The parts summed, band-limited."""
        summed = self.background + sum((track for track, _ in self.tracks), np.zeros(len(self.background)))
        return summed if self.lowpass is None else scipy.signal.sosfilt(self.lowpass, summed)

    @cached_property
    def mel_powers(self) -> tuple[np.ndarray, list[np.ndarray]]:
        """mel_power of the background and of each track, band limit applied."""
        gain = self.band_gain()
        return mel_power(self.background, self.sample_rate, gain), [mel_power(t, self.sample_rate, gain) for t, _ in self.tracks]

    def track_levels(self, noise_power: np.ndarray | None = None) -> list[list[float]]:
        """Each track's call_levels over everything else, plus noise_power (a mel_power) when given."""
        background, powers = self.mel_powers
        everything = background + sum(powers) + (0.0 if noise_power is None else noise_power)
        return [call_levels(power, everything - power, events) for (_, events), power in zip(self.tracks, powers, strict=True)]

    def events(self) -> list[CallEvent]:
        """Every call's event, with its level measured over everything else."""
        if not self.tracks:
            return []
        events = []
        for (_, track_events), levels in zip(self.tracks, self.track_levels(), strict=True):
            events += [replace(e, snr_db=level) for e, level in zip(track_events, levels, strict=True)]
        return sorted(events, key=lambda e: e.start)


def scene_parts(scene: SceneSpec, sample_rate: int, rng: Rng, lowpass_probability: float = 0.3, file_rate: int | None = None) -> SceneParts:
    """The scene's backgrounds, its species' bouts at random levels, and a band limit now and then
    (file_rate: written at this lower rate, see SceneParts)."""
    n = int(scene.seconds * sample_rate)
    loud = scene.loud_backgrounds
    if loud:
        # A faint ambient floor under everything, then the named kinds at random relative levels.
        background = 10 ** (rng.uniform(-30, -15) / 20) * colored_noise(rng, n, rng.uniform(0.5, 1.5))
        for kind in loud:
            background += BACKGROUNDS[kind](rng, n, sample_rate) * 10 ** (rng.uniform(-10, 0) / 20)
        background /= np.sqrt(np.mean(background**2)) + 1e-12
    else:
        # Silence keeps its absolute level (digital zero or self-noise), and calls get one too.
        background = BACKGROUNDS["silence"](rng, n, sample_rate)
    background_cells = _cell_power(background, sample_rate) if loud and scene.species else None
    tracks: list[tuple[np.ndarray, list[CallEvent]]] = []
    for species in scene.species:
        track, track_events = bird_track(species, n, sample_rate, rng, scene.sparse)
        if background_cells is not None:
            track = track * local_snr_gain(track, background_cells, sample_rate, rng.uniform(*SNR_DB))
        else:  # over silence: an absolute level (dBFS of the call's active RMS)
            track = track * 10 ** (rng.uniform(-45, -12) / 20)
        tracks.append((track, track_events))
    sos, cutoff = None, None
    if rng.random() < lowpass_probability:
        # 6.5-7.8 kHz: about where 16 kHz MP3 at low bitrates cuts the top band (7.2 kHz at 32 kbps).
        cutoff = float(rng.uniform(6500, 7800))
        if cutoff < sample_rate / 2 - 100:
            sos = scipy.signal.butter(8, cutoff, "lowpass", fs=sample_rate, output="sos")
        else:
            cutoff = None
    narrow = file_rate if file_rate is not None and file_rate < sample_rate else None
    return SceneParts(background, tracks, sample_rate, sos, cutoff, narrow)


def synthesize_scene(
    scene: SceneSpec, sample_rate: int, rng: Rng, lowpass_probability: float = 0.3, file_rate: int | None = None
) -> Recording:
    """One field recording: the scene's parts summed, level varied, clipped when asked; synthesized at
    sample_rate and, when file_rate is lower, resampled to it (a narrowband recorder: nothing above
    file_rate / 2).

    Every call's event carries its level where the model looks (call_levels), measured on the parts
    before they are summed, with the band limits' response applied: a call the background or a
    louder species covers, or one above a narrowband recording's top, is written down as such, so
    that labels, like an annotator's selections, hold only what the audio shows."""
    parts = scene_parts(scene, sample_rate, rng, lowpass_probability, file_rate)
    signal = parts.signal()
    if scene.clipped:
        signal = clip(signal, rng)
    elif scene.loud_backgrounds:
        signal = signal * rng.uniform(0.03, 0.9) / (np.abs(signal).max() + 1e-12)
    audio = np.clip(signal, -1, 1).astype(np.float32)
    rate, top = sample_rate, parts.cutoff
    if parts.file_rate is not None:
        rate = parts.file_rate
        audio = np.clip(soxr.resample(audio, sample_rate, rate, quality="HQ"), -1, 1).astype(np.float32)
        top = min(top or np.inf, rate / 2)
    return Recording(audio, rate, top, tuple(parts.events()), scene.backgrounds, scene.clipped)


def synthesize_recording(
    species: str,
    seconds: float,
    sample_rate: int,
    rng: Rng,
    lowpass_probability: float = 0.3,
) -> Recording:
    """One recording of `species` singing over a random background kind."""
    kinds = [k for k in BACKGROUNDS if k != "silence"]
    scene = SceneSpec((species,), (kinds[rng.integers(len(kinds))],), seconds)
    return synthesize_scene(scene, sample_rate, rng, lowpass_probability)


def write_audio(target, audio: np.ndarray, rate: int, container: str, subtype: str, compression_level: float | None = None) -> None:
    """Write mono [n] or multichannel [n, c] audio to a path or file object.

    In chunks: libsndfile's Vorbis encoder crashed on one 50 s write at 44.1/48 kHz.
    compression_level: libsndfile's 0 (best) .. 1 (smallest), for lossy formats; None: its default.
    Ogg gets a fixed stream serial (training.ogg_pages), so the same audio always makes the same bytes.
    """
    channels = 1 if audio.ndim == 1 else audio.shape[1]
    ogg = container.upper() == "OGG"
    encoded = io.BytesIO() if ogg else target
    with sf.SoundFile(encoded, "w", rate, channels, format=container, subtype=subtype, compression_level=compression_level) as f:
        for start in range(0, len(audio), 1 << 15):
            f.write(audio[start : start + (1 << 15)])
    if ogg:
        data = with_serial(encoded.getvalue())
        if hasattr(target, "write"):
            target.write(data)
        else:
            Path(target).write_bytes(data)
