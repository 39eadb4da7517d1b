"""A corpus of malformed audio files, made by the tests (no binaries in the repository).

Each accepted container (WAV, FLAC, OGG/Vorbis, OGG/Opus, MP3, AIFF, AU, W64) is encoded from a short tone, then
truncated at several offsets, has bytes flipped in its header and in its data, and random bytes
behind its magic; WAV and FLAC headers are rewritten to claim what the data is not (zero or huge
lengths, sample rates and channel counts); and a few files are odd on purpose: one sample, NaN and
infinite float samples, 8 channels at 192 kHz, text named like audio, nothing at all.

The service must answer each with 200 or a 4xx that says what is wrong (400, 413, 415, 422),
never a 5xx, and in bounded time: tests/api/test_fuzz_audio.py sends all of it over the real
front end, tests/e2e/test_fuzz_served.py a sample to the real server.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

import httpx
import numpy as np

from tests.conftest import encode

ANSWERS = frozenset({200, 400, 413, 415, 422})
"""What a recording may be answered with: classified, or refused as empty, too long, not audio, or invalid."""
REFUSED = frozenset({400, 413, 415, 422})


@dataclass(frozen=True)
class Specimen:
    name: str
    data: bytes
    filename: str
    """The name a multipart upload gives it (its extension may lie)."""
    expect: frozenset[int] = ANSWERS
    """The statuses that are right for it (the whole of ANSWERS when it depends on the decoder)."""


def tone(seconds: float, rate: int, channels: int = 1, seed: int = 0) -> np.ndarray:
    """A 1.2 kHz tone with a little noise, [frames, channels] float32 in [-0.5, 0.5]."""
    t = np.arange(int(seconds * rate)) / rate
    noise = np.random.default_rng(seed).standard_normal((len(t), channels))
    return (0.3 * np.sin(2 * np.pi * 1200 * t)[:, None] + 0.05 * noise).astype(np.float32)


def bases() -> dict[str, tuple[bytes, str]]:
    """One valid file per accepted container: {format: (bytes, file extension)}."""
    return {
        "WAV": (encode(tone(1.0, 16_000), 16_000, "WAV", "PCM_16"), "wav"),
        "FLAC": (encode(tone(1.0, 44_100, 2), 44_100, "FLAC", "PCM_16"), "flac"),
        "OGG/Vorbis": (encode(tone(1.0, 22_050), 22_050, "OGG", "VORBIS"), "ogg"),
        "OGG/Opus": (encode(tone(1.0, 48_000), 48_000, "OGG", "OPUS"), "opus"),
        "MP3": (encode(tone(1.0, 44_100), 44_100, "MP3", "MPEG_LAYER_III"), "mp3"),
        "AIFF": (encode(tone(1.0, 32_000, 2), 32_000, "AIFF", "PCM_24"), "aiff"),
        "AU": (encode(tone(1.0, 8_000), 8_000, "AU", "ULAW"), "au"),
        "W64": (encode(tone(1.0, 48_000), 48_000, "W64", "FLOAT"), "w64"),
    }


def flipped(data: bytes, start: int, stop: int, count: int, seed: int) -> bytes:
    """`count` bytes between start and stop inverted, at places a seeded generator picks."""
    out = bytearray(data)
    stop = min(stop, len(out))
    if stop <= start:
        return bytes(out)
    for i in np.random.default_rng(seed).integers(start, stop, count):
        out[i] ^= 0xFF
    return bytes(out)


def wav(
    samples: bytes,
    *,
    rate: int = 16_000,
    channels: int = 1,
    bits: int = 16,
    tag: int = 1,
    block_align: int | None = None,
    data_size: int | None = None,
    riff_size: int | None = None,
) -> bytes:
    """A RIFF/WAVE file whose header fields say whatever they are told (sizes and rates as unsigned 32 bits)."""
    align = block_align if block_align is not None else channels * bits // 8
    fmt = struct.pack(
        "<HHIIHH", tag & 0xFFFF, channels & 0xFFFF, rate & 0xFFFFFFFF, (rate * align) & 0xFFFFFFFF, align & 0xFFFF, bits & 0xFFFF
    )
    data_size = len(samples) if data_size is None else data_size
    body = b"WAVE" + b"fmt " + struct.pack("<I", len(fmt)) + fmt + b"data" + struct.pack("<I", data_size & 0xFFFFFFFF) + samples
    size = len(body) if riff_size is None else riff_size
    return b"RIFF" + struct.pack("<I", size & 0xFFFFFFFF) + body


def pcm16(seconds: float = 0.5, rate: int = 16_000, channels: int = 1) -> bytes:
    return (tone(seconds, rate, channels) * 32767).astype("<i2").tobytes()


def flac_streaminfo(data: bytes, *, rate: int | None = None, channels: int | None = None, total: int | None = None) -> bytes:
    """A FLAC file whose STREAMINFO claims another sample rate (20 bits), channel count (3 bits) or length (36 bits)."""
    out = bytearray(data)
    (packed,) = struct.unpack(">Q", bytes(out[18:26]))  # rate 20 | channels-1 3 | bits-1 5 | total samples 36
    if rate is not None:
        packed = (packed & ~(0xFFFFF << 44)) | ((rate & 0xFFFFF) << 44)
    if channels is not None:
        packed = (packed & ~(0x7 << 41)) | (((channels - 1) & 0x7) << 41)
    if total is not None:
        packed = (packed & ~0xFFFFFFFFF) | (total & 0xFFFFFFFFF)
    out[18:26] = struct.pack(">Q", packed)
    return bytes(out)


def _container_cases(fmt: str, data: bytes, ext: str) -> list[Specimen]:
    seed = sum(fmt.encode())
    cases = [Specimen(f"{fmt} valid", data, f"a.{ext}", frozenset({200}))]
    for cut in sorted({1, 4, 8, 12, 26, 44, 64, 200, len(data) // 3, len(data) // 2, len(data) - 1}):
        if cut < len(data):
            cases.append(Specimen(f"{fmt} truncated at {cut}", data[:cut], f"a.{ext}"))
    for i in range(3):
        cases.append(Specimen(f"{fmt} header flips #{i}", flipped(data, 4, 64, 2 + i, seed + i), f"a.{ext}"))
        cases.append(Specimen(f"{fmt} data flips #{i}", flipped(data, 64, len(data), 8 * (i + 1), seed + 10 + i), f"a.{ext}"))
    magic = data[:4] if fmt != "MP3" else data[:2]
    noise = np.random.default_rng(seed).bytes(4096)
    cases.append(Specimen(f"{fmt} magic then random bytes", magic + noise, f"a.{ext}", REFUSED | {200}))
    return cases


def _wav_cases() -> list[Specimen]:
    samples = pcm16()
    rates = {"zero": 0, "one": 1, "3": 3, "1 MHz": 1_000_000, "2^24": 2**24, "2^30": 2**30, "2^31": 2**31, "2^32-1": 2**32 - 1}
    channels = {"zero": 0, "1024": 1024, "65535": 65535}
    cases = [
        Specimen("WAV data chunk of 0 bytes", wav(b""), "a.wav", REFUSED),
        Specimen("WAV data chunk claiming 4 GB", wav(samples, data_size=2**32 - 1), "a.wav"),
        Specimen("WAV RIFF size claiming 4 GB", wav(samples, riff_size=2**32 - 1), "a.wav"),
        Specimen("WAV RIFF size 0", wav(samples, riff_size=0), "a.wav"),
        Specimen("WAV block align 0", wav(samples, block_align=0), "a.wav"),
        Specimen("WAV one sample", wav(pcm16()[:2]), "a.wav"),
        Specimen("WAV float NaN", encode(np.full((800, 1), np.nan, np.float32), 16_000, "WAV", "FLOAT"), "a.wav", frozenset({415})),
        Specimen("WAV float +inf", encode(np.full((800, 1), np.inf, np.float32), 16_000, "WAV", "FLOAT"), "a.wav", frozenset({415})),
        Specimen("WAV float 1e30", encode(np.full((800, 1), 1e30, np.float32), 16_000, "WAV", "FLOAT"), "a.wav", frozenset({415})),
        Specimen("WAV float 1e5", encode(np.full((800, 1), 1e5, np.float32), 16_000, "WAV", "FLOAT"), "a.wav"),
        Specimen("WAV 8 channels 192 kHz", encode(tone(1.0, 192_000, 8), 192_000, "WAV", "PCM_16"), "a.wav", frozenset({200})),
        Specimen("WAV format tag 0x1234", wav(samples, tag=0x1234), "a.wav", REFUSED),
        Specimen("WAV extensible without its extension", wav(samples, tag=0xFFFE), "a.wav"),
        Specimen("WAV float tag with 16 bits", wav(samples, tag=3), "a.wav"),
    ]
    cases += [Specimen(f"WAV sample rate {k}", wav(samples, rate=v), "a.wav") for k, v in rates.items()]
    cases += [Specimen(f"WAV {k} channels", wav(samples, channels=v), "a.wav") for k, v in channels.items()]
    cases += [Specimen(f"WAV {bits} bits per sample", wav(samples, bits=bits), "a.wav") for bits in (0, 7, 12, 64)]
    return cases


def _flac_cases(data: bytes) -> list[Specimen]:
    return [
        Specimen("FLAC claiming 2^36 samples", flac_streaminfo(data, total=2**36 - 1), "a.flac"),
        Specimen("FLAC claiming 0 samples", flac_streaminfo(data, total=0), "a.flac"),
        Specimen("FLAC claiming 655350 Hz", flac_streaminfo(data, rate=655_350), "a.flac"),
        Specimen("FLAC claiming 0 Hz", flac_streaminfo(data, rate=0), "a.flac"),
        Specimen("FLAC claiming 8 channels", flac_streaminfo(data, channels=8), "a.flac"),
        Specimen("FLAC 8 channels 192 kHz silence", encode(np.zeros((2 * 192_000, 8), np.float32), 192_000, "FLAC", "PCM_24"), "a.flac"),
        Specimen("FLAC one sample", encode(np.zeros((1, 1), np.float32), 16_000, "FLAC", "PCM_16"), "a.flac"),
    ]


def _odd_cases() -> list[Specimen]:
    text = b"This is not a recording, only text with an audio file name.\n" * 20
    return [
        Specimen("empty", b"", "a.wav", frozenset({400})),
        Specimen("text named .wav", text, "song.wav", frozenset({415})),
        Specimen("text named .mp3", text, "song.mp3", frozenset({415})),
        Specimen("RIFF WAVE and nothing else", b"RIFF\x04\x00\x00\x00WAVE", "a.wav", REFUSED),
        Specimen("ID3 tag claiming 256 MB, then nothing", b"ID3\x04\x00\x00\x7f\x7f\x7f\x7f", "a.mp3", REFUSED),
        Specimen("MP3 frame syncs only", b"\xff\xfb\x90\x00" * 512, "a.mp3", REFUSED | {200}),
        Specimen("OggS pages of zeros", (b"OggS" + b"\x00" * 60) * 8, "a.ogg", REFUSED),
        Specimen("one NUL byte", b"\x00", "a.wav", frozenset({415})),
    ]


def corpus() -> list[Specimen]:
    """Every specimen, in a fixed order (the same bytes on every run)."""
    made = bases()
    cases = [case for fmt, (data, ext) in made.items() for case in _container_cases(fmt, data, ext)]
    return [*cases, *_wav_cases(), *_flac_cases(made["FLAC"][0]), *_odd_cases()]


def check_answer(response: httpx.Response, specimen: Specimen) -> None:
    """A status right for the specimen; a refusal in the REST error shape; a classification with windows."""
    where = f"{specimen.name}: {response.status_code} {response.text[:300]}"
    assert response.status_code in specimen.expect, where
    if response.status_code != 200:
        error = response.json()["error"]
        assert error["status"] == response.status_code and error["message"] and error["type"], where
    else:
        assert response.json()["audio"]["windows"] >= 1, where
