"""Limits hold on what is decoded, and memory stays bounded by the block size, whatever the header says.

The bombs are made here: a 60 s, 8-channel, 192 kHz FLAC of silence (92 KB that decode to 369 MB of
float32), a WAV whose header claims 4 GB of data, and a FLAC whose stream info says its length is
unknown (0 samples, as an encoder that streams writes it).
"""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from features import AudioTooLongError, FrontEnd
from tests.audio_corpus import flac_streaminfo
from tests.conftest import ROOT, encode

BOMB_SECONDS, BOMB_RATE, BOMB_CHANNELS = 60, 192_000, 8
# Peak RSS growth allowed while analyzing a bomb after a warm-up: generous next to the default
# block (1 MiB) and the windows (23 x 41 KB), tiny next to the 369 MB the old whole decode held.
RSS_BOUND_MB = 48

# Runs in a fresh interpreter and reads the kernel's peak RSS of this process (VmHWM, libsndfile and
# soxr memory included), reset before each file. Not ru_maxrss: Linux carries it over from the parent.
_MEASURE = """
import json, sys
from features import FrontEnd

def rss_mb(field):
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith(field)) / 1024

frontend = FrontEnd()
frontend.analyze(sys.argv[1])  # warm-up: imports, FFT setup, first buffers
results = []
for path in sys.argv[2:]:
    with open("/proc/self/clear_refs", "w") as refs:
        refs.write("5")  # the peak becomes the current RSS
    before = rss_mb("VmRSS:")
    analysis = frontend.analyze(path)
    grown = rss_mb("VmHWM:") - before
    results.append({"seconds": analysis.audio.duration_seconds, "windows": len(analysis.windows), "rss_growth_mb": grown})
print(json.dumps(results))
"""


def silent_file(path: Path, seconds: float, rate: int, channels: int, fmt: str, subtype: str) -> Path:
    """Written one second at a time: the test itself must not hold the decoded size either."""
    with sf.SoundFile(path, "w", rate, channels, format=fmt, subtype=subtype) as f:
        second = np.zeros((rate, channels), np.float32)
        for _ in range(int(seconds)):
            f.write(second)
    return path


@pytest.fixture(scope="module")
def flac_bomb(tmp_path_factory) -> Path:
    path = silent_file(tmp_path_factory.mktemp("bomb") / "bomb.flac", BOMB_SECONDS, BOMB_RATE, BOMB_CHANNELS, "FLAC", "PCM_16")
    assert path.stat().st_size < 200_000
    return path


def lying_wav(path: Path, seconds: float, claimed_data_bytes: int) -> Path:
    """An 8-channel 48 kHz WAV whose RIFF and data sizes say claimed_data_bytes."""
    silent_file(path, seconds, 48_000, 8, "WAV", "PCM_16")
    data = bytearray(path.read_bytes())
    at = data.find(b"data")
    data[4:8] = struct.pack("<I", min(claimed_data_bytes + at, 0xFFFFFFFF))
    data[at + 4 : at + 8] = struct.pack("<I", claimed_data_bytes)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.skipif(not Path("/proc/self/clear_refs").exists(), reason="measures peak RSS through Linux's /proc")
def test_a_decompression_bomb_streams_in_bounded_memory(flac_bomb, tmp_path):
    warm_up = silent_file(tmp_path / "warm.flac", 2, BOMB_RATE, BOMB_CHANNELS, "FLAC", "PCM_16")
    unfinished = lying_wav(tmp_path / "unfinished.wav", 20, 0xFFFFFFFF)  # as a recorder that died leaves it
    out = subprocess.run(
        [sys.executable, "-c", _MEASURE, str(warm_up), str(flac_bomb), str(unfinished)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=300,
    )
    bomb, wav = json.loads(out.stdout.strip().splitlines()[-1])
    assert bomb["seconds"] == BOMB_SECONDS and bomb["windows"] == 23
    assert wav["seconds"] == 20.0  # what was decoded, not the 4 GB the header claims
    assert bomb["rss_growth_mb"] < RSS_BOUND_MB and wav["rss_growth_mb"] < RSS_BOUND_MB, (bomb, wav)


def test_the_header_refuses_a_long_bomb_before_decoding(flac_bomb):
    with pytest.raises(AudioTooLongError, match=r"lasts 60\.0 s; at most 30 s is accepted"):
        FrontEnd().stream(flac_bomb.read_bytes(), max_seconds=30)  # raised on opening, before any block


def test_a_header_that_claims_too_much_is_not_believed(tmp_path):
    unfinished = lying_wav(tmp_path / "unfinished.wav", 20, 0xFFFFFFFF)
    with pytest.raises(AudioTooLongError, match="at most 10 s"):
        FrontEnd().analyze(unfinished, max_seconds=10)
    assert FrontEnd().analyze(unfinished, max_seconds=30).audio.duration_seconds == 20.0


def test_a_header_that_claims_too_little_bounds_what_is_decoded(tmp_path):
    truncated_claim = lying_wav(tmp_path / "short.wav", 20, 48_000 * 8 * 2 * 2)  # says 2 s
    analysis = FrontEnd().analyze(truncated_claim)
    assert analysis.audio.duration_seconds == 2.0 and len(analysis.windows) == 1


def test_without_a_length_in_the_header_the_limit_holds_on_decoded_samples():
    audio = (0.01 * np.random.default_rng(0).standard_normal(8_000 * 20)).astype(np.float32)
    unknown = flac_streaminfo(encode(audio, 8_000, "FLAC", "PCM_16"), total=0)  # "unknown", as a streaming encoder writes
    with sf.SoundFile(io.BytesIO(unknown)) as f:
        assert f.frames >= 1 << 62  # SF_COUNT_MAX: "unknown"
    with pytest.raises(AudioTooLongError, match=r"lasts more than 10\.\d s \(decoding stopped there\); at most 10 s"):
        FrontEnd().analyze(unknown, max_seconds=10, block_samples=4_000)
    assert FrontEnd().analyze(unknown).audio.duration_seconds == 20.0


@pytest.mark.parametrize("as_bytes", [False, True])
def test_a_wav_whose_recorder_died_before_writing_its_size_is_read_to_the_end(tmp_path, as_bytes):
    """A recorder that loses power leaves the data size (and often the RIFF size) at 0."""
    complete = tmp_path / "complete.wav"
    sf.write(complete, np.random.default_rng(0).uniform(-0.5, 0.5, (20 * 48_000, 2)).astype(np.float32), 48_000, subtype="PCM_16")
    data = bytearray(complete.read_bytes())
    at = data.find(b"data")
    data[4:8] = data[at + 4 : at + 8] = b"\0\0\0\0"
    died = tmp_path / "died.wav"
    died.write_bytes(bytes(data))
    analysis = FrontEnd().analyze(bytes(data) if as_bytes else died)
    assert analysis.audio.duration_seconds == 20.0
    np.testing.assert_array_equal(analysis.windows.features, FrontEnd().analyze(complete).windows.features)


@pytest.mark.parametrize("as_bytes", [False, True])
def test_an_rf64_whose_recorder_died_before_writing_its_size_is_read_to_the_end(tmp_path, as_bytes):
    """RF64 (WAV past 4 GiB) keeps the data size in its ds64 chunk; a recorder that dies leaves it 0."""
    complete = tmp_path / "complete.wav"
    sf.write(complete, np.random.default_rng(0).uniform(-0.5, 0.5, 20 * 48_000).astype(np.float32), 48_000, "PCM_16", format="RF64")
    data = bytearray(complete.read_bytes())
    assert data[:4] == b"RF64" and data[12:16] == b"ds64"
    data[28:36] = bytes(8)  # ds64: RIFF size, then the data size
    died = tmp_path / "died.wav"
    died.write_bytes(bytes(data))
    with sf.SoundFile(died) as raw:
        assert raw.frames == 0  # what libsndfile alone reads of it
    analysis = FrontEnd().analyze(bytes(data) if as_bytes else died)
    assert analysis.audio.duration_seconds == 20.0
    np.testing.assert_array_equal(analysis.windows.features, FrontEnd().analyze(complete).windows.features)
