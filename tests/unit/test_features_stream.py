"""Streaming never changes the features: any block size gives the windows of the whole-recording call.

Bit for bit, on every format, rate and channel count: libsndfile decodes the same samples however
they are read (as long as nothing seeks between reads: see features.decode._read_into), the mix sums
channels in a fixed order, soxr's stream equals its one-shot output (measured: 0.0 difference at
8-192 kHz), and the mel grid computes frames in fixed groups whatever the blocks.
"""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from features import DEFAULT_BLOCK_SAMPLES, FrontEnd
from features.decode import AudioReader
from features.stream import mix_down
from tests.conftest import encode

SECONDS = 8.7  # three windows at 16 kHz (0, 2.5, 5.0 s), the last one zero-padded from 8.7 s
# Frames per read: less than one 16 kHz hop even at 8 kHz, a few hops, the serving default, and the whole file.
BLOCK_FRAMES = (331, 4099, None, 10**7)

# Every format at the rates it can hold (Opus: 8/12/16/24/48 kHz; MP3: up to 48 kHz and 2 channels),
# each rate and channel count (1, 2, 8) appearing with several formats.
CASES = [
    ("WAV", "PCM_16", 8_000, 1),
    ("WAV", "PCM_16", 22_050, 2),
    ("WAV", "PCM_16", 44_100, 8),
    ("WAV", "PCM_16", 48_000, 1),
    ("WAV", "PCM_16", 96_000, 2),
    ("WAV", "PCM_16", 192_000, 8),
    ("FLAC", "PCM_24", 8_000, 2),
    ("FLAC", "PCM_24", 22_050, 8),
    ("FLAC", "PCM_24", 44_100, 1),
    ("FLAC", "PCM_24", 48_000, 2),
    ("FLAC", "PCM_24", 96_000, 8),
    ("FLAC", "PCM_24", 192_000, 1),
    ("OGG", "VORBIS", 8_000, 8),
    ("OGG", "VORBIS", 22_050, 1),
    ("OGG", "VORBIS", 44_100, 2),
    ("OGG", "VORBIS", 48_000, 8),
    ("OGG", "VORBIS", 96_000, 1),
    ("OGG", "VORBIS", 192_000, 2),
    ("OGG", "OPUS", 8_000, 1),
    ("OGG", "OPUS", 48_000, 2),
    ("OGG", "OPUS", 48_000, 8),
    ("MP3", "MPEG_LAYER_III", 8_000, 2),
    ("MP3", "MPEG_LAYER_III", 22_050, 1),
    ("MP3", "MPEG_LAYER_III", 44_100, 2),
    ("MP3", "MPEG_LAYER_III", 48_000, 1),
]


def recording(rate: int, channels: int, seconds: float = SECONDS) -> np.ndarray:
    """A different tone, sweep and noise per channel, so a wrong mix or channel order shows."""
    rng = np.random.default_rng(rate + channels)
    t = np.arange(round(seconds * rate)) / rate
    sweep = 0.1 * np.sin(2 * np.pi * (500 * t + 200 * t**2))
    columns = [0.2 * np.sin(2 * np.pi * (300 + 450 * c) * t) + sweep + 0.05 * rng.standard_normal(len(t)) for c in range(channels)]
    return np.stack(columns, axis=1).astype(np.float32)


def block_samples(frames: int | None, channels: int) -> int:
    return DEFAULT_BLOCK_SAMPLES if frames is None else frames * channels


@pytest.mark.parametrize(("fmt", "subtype", "rate", "channels"), CASES, ids=[f"{c[1]}-{c[2]}Hz-{c[3]}ch" for c in CASES])
def test_any_block_size_gives_the_whole_recording_windows(fmt, subtype, rate, channels):
    data = encode(recording(rate, channels), rate, fmt, subtype)
    frontend = FrontEnd()
    results = [frontend.analyze(data, block_samples=block_samples(frames, channels)) for frames in BLOCK_FRAMES]
    whole = results[-1]
    assert len(whole.windows) == 3 and whole.audio.channels == channels
    assert whole.audio.duration_seconds == pytest.approx(SECONDS, abs=0.01)
    for result in results[:-1]:
        assert result.audio == whole.audio
        assert result.windows.spans == whole.windows.spans
        np.testing.assert_array_equal(result.windows.features, whole.windows.features)
        np.testing.assert_array_equal(result.windows.rms, whole.windows.rms)


def test_each_channel_mode_is_block_size_invariant_too():
    data = encode(recording(96_000, 8), 96_000, "FLAC", "PCM_16")
    frontend = FrontEnd()
    results = [frontend.analyze(data, channels="each", block_samples=block_samples(frames, 8)) for frames in BLOCK_FRAMES]
    whole = results[-1]
    assert [span.channel for span in whole.windows.spans] == [c for c in range(8) for _ in range(3)]
    for result in results[:-1]:
        assert result.windows.spans == whole.windows.spans
        np.testing.assert_array_equal(result.windows.features, whole.windows.features)


def test_a_vbr_mp3_of_a_clean_tone_streams_intact():
    """soundfile's read() seeks after every read, which garbles VBR MP3 (a tone is the hardest case)."""
    rate = 44_100
    t = np.arange(round(SECONDS * rate)) / rate
    tone = (0.2 * np.sin(2 * np.pi * 300 * t) + 0.1 * np.sin(2 * np.pi * (500 * t + 200 * t**2))).astype(np.float32)
    data = encode(tone, rate, "MP3", "MPEG_LAYER_III")  # libsndfile writes VBR by default
    frontend = FrontEnd()
    whole = frontend.analyze(data, block_samples=10**7).windows
    np.testing.assert_array_equal(frontend.analyze(data, block_samples=4099).windows.features, whole.features)
    # And the whole read is the tone itself: its RMS over the first, full window is the tone's.
    assert whole.rms[0] == pytest.approx(np.sqrt(0.2**2 / 2 + 0.1**2 / 2), rel=0.02)


@pytest.mark.parametrize("container", ["WAV", "WAVEX", "RF64", "W64"])
@pytest.mark.parametrize("channels", [1, 2, 8])
def test_16_bit_pcm_read_raw_and_scaled_equals_libsndfile_float_conversion(container, channels):
    """The fast path for recorders' 16-bit WAV (features.decode._read_pcm16_into) against
    libsndfile's own float read, full scale included, through blocks that do not divide the file."""
    rng = np.random.default_rng(channels)
    samples = rng.integers(-(2**15), 2**15, size=(20_011, channels), dtype=np.int16)
    samples[:2] = [[-(2**15)] * channels, [2**15 - 1] * channels]
    data = encode(samples, 16_000, container, "PCM_16")
    expected, _ = sf.read(io.BytesIO(data), dtype="float32", always_2d=True)
    reader = AudioReader(data, block_samples=4099 * channels)
    decoded = np.concatenate([block.copy() for block in reader.blocks()])
    assert reader.format == container
    np.testing.assert_array_equal(decoded.view(np.uint32), expected.view(np.uint32))


@pytest.mark.parametrize("channels", [1, 2, 3, 8])
def test_the_mix_is_the_mean_of_the_channels_summed_in_order(channels):
    """The order fixed (channel 0, then 1, ...) so that a frame's mix never depends on its block."""
    block = np.random.default_rng(channels).standard_normal((5_001, channels)).astype(np.float32)
    expected = block[:, 0].copy()
    for channel in range(1, channels):
        expected += block[:, channel]
    expected /= np.float32(channels)
    np.testing.assert_array_equal(mix_down(block), expected)
