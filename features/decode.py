"""Decode audio bytes or files with soundfile (libsndfile), mix to mono, resample with soxr."""

from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soundfile as sf
import soxr

from features.errors import (
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioError,
    InvalidSamplesError,
    UnsupportedFormatError,
)

ACCEPTED_FORMATS = ("WAV", "FLAC", "OGG/Vorbis", "OGG/Opus", "MP3")
_ACCEPTED_TEXT = ", ".join(ACCEPTED_FORMATS)


@dataclass(frozen=True)
class DecodedAudio:
    """A decoded recording, mixed to mono but still at its own sample rate."""

    waveform: np.ndarray
    """Mono float32 samples in [-1, 1] (int formats are scaled by soundfile)."""
    sample_rate: int
    """Rate the file was recorded at, in Hz."""
    channels: int
    """Channel count before mixing to mono."""
    format: str
    """Container as libsndfile names it, e.g. WAV, FLAC, OGG, MP3."""

    @property
    def duration_seconds(self) -> float:
        return len(self.waveform) / self.sample_rate


def _sniff(head: bytes) -> str | None:
    """Name the container from its magic bytes, or None when it is none of the accepted ones."""
    if head[:4] in (b"RIFF", b"RF64") and head[8:12] == b"WAVE":
        return "WAV"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "OGG"
    if head[:3] == b"ID3" or (len(head) > 1 and head[0] == 0xFF and head[1] & 0xE0 == 0xE0):
        return "MP3"
    return None


def decode_audio(source: bytes | str | Path, *, max_seconds: float | None = None) -> DecodedAudio:
    """Decode a whole recording. Raises a typed AudioError that says what is wrong and what is accepted.

    max_seconds is checked from the header before any sample is decoded, so an hour-long upload
    costs nothing beyond its bytes.
    """
    if isinstance(source, (str, Path)):
        data = Path(source).read_bytes()
    else:
        data = bytes(source)
    if not data:
        raise EmptyAudioError(f"the audio is empty (0 bytes); send a recording in one of: {_ACCEPTED_TEXT}")
    sniffed = _sniff(data[:16])
    try:
        with sf.SoundFile(io.BytesIO(data)) as f:
            sample_rate, channels, fmt = f.samplerate, f.channels, f.format
            if max_seconds is not None and f.frames > 0 and f.frames / sample_rate > max_seconds:
                raise AudioTooLongError(
                    f"the recording lasts {f.frames / sample_rate:.1f} s; at most {max_seconds:g} s is accepted"
                )
            samples = f.read(dtype="float32", always_2d=True)
    except (sf.LibsndfileError, RuntimeError, TypeError, ValueError) as exc:
        if isinstance(exc, AudioTooLongError):
            raise
        if sniffed is None:
            raise UnsupportedFormatError(
                f"unsupported audio format (the bytes are not a recognised audio file); accepted: {_ACCEPTED_TEXT}"
            ) from exc
        raise CorruptAudioError(
            f"the {sniffed} data could not be decoded ({exc}); send a complete, valid file in one of: {_ACCEPTED_TEXT}"
        ) from exc
    if samples.shape[0] == 0:
        raise EmptyAudioError("the recording holds no samples; send audio at least a few milliseconds long")
    if not np.isfinite(samples).all():
        raise InvalidSamplesError("the recording contains NaN or infinite samples; send finite PCM or float audio")
    waveform = samples.mean(axis=1, dtype=np.float32) if channels > 1 else samples[:, 0]
    if max_seconds is not None and len(waveform) / sample_rate > max_seconds:
        raise AudioTooLongError(
            f"the recording lasts {len(waveform) / sample_rate:.1f} s; at most {max_seconds:g} s is accepted"
        )
    return DecodedAudio(np.ascontiguousarray(waveform), int(sample_rate), int(channels), str(fmt))


def resample(waveform: np.ndarray, from_rate: int, to_rate: int) -> np.ndarray:
    """soxr HQ resampling (the best aliasing of the options measured); a no-op at the same rate."""
    if from_rate == to_rate:
        return np.asarray(waveform, dtype=np.float32)
    return soxr.resample(waveform, from_rate, to_rate, quality="HQ").astype(np.float32, copy=False)
