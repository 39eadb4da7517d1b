"""The shared audio front end: decoding, windows, log-mel parity with torchaudio, typed errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchaudio

from features import (
    CorruptAudioError,
    EmptyAudioError,
    FrontEnd,
    FrontEndConfig,
    InvalidSamplesError,
    NormStats,
    UnsupportedFormatError,
    decode_audio,
    split_windows,
    window_spans,
)
from features.errors import AudioTooLongError
from tests.conftest import encode

# Max |difference| of ln-mel values vs torchaudio on the same audio. Both run float32 FFTs;
# measured ~1e-5 on noise at amplitude 0.1, so 1e-3 leaves room without hiding a real mismatch
# (a wrong window, padding or filterbank shows up as >0.1).
LOG_MEL_ATOL = 1e-3


@pytest.mark.parametrize(
    ("fmt", "subtype", "rate"),
    [
        ("WAV", "PCM_16", 44_100),
        ("WAV", "PCM_24", 22_050),
        ("WAV", "FLOAT", 16_000),
        ("FLAC", "PCM_16", 48_000),
        ("OGG", "VORBIS", 32_000),
        ("OGG", "OPUS", 48_000),
        ("MP3", "MPEG_LAYER_III", 44_100),
    ],
)
def test_decodes_every_accepted_format_to_mono(chirp, fmt, subtype, rate):
    data = encode(chirp, rate, fmt, subtype)
    decoded = decode_audio(data)
    assert decoded.sample_rate == rate
    assert decoded.channels == 2
    assert decoded.waveform.ndim == 1 and decoded.waveform.dtype == np.float32
    assert decoded.duration_seconds == pytest.approx(len(chirp) / rate, abs=0.1)
    # Mixed to mono: the mean of the two channels (0.3 and 0.15 peak) has peak ~0.225.
    assert 0.15 < np.abs(decoded.waveform).max() < 0.3


def test_decodes_a_path_and_int_samples(tmp_path, chirp):
    path = tmp_path / "a.wav"
    path.write_bytes(encode(chirp, 44_100, "WAV", "PCM_16"))
    decoded = decode_audio(path)
    assert decoded.waveform.dtype == np.float32 and np.abs(decoded.waveform).max() <= 1.0


def test_frontend_load_resamples_to_16k(chirp):
    decoded, waveform = FrontEnd().load(encode(chirp, 44_100, "FLAC", "PCM_16"))
    assert decoded.sample_rate == 44_100
    assert len(waveform) == pytest.approx(3 * 16_000, abs=2)


@pytest.mark.parametrize(
    ("data", "error", "words"),
    [
        (b"", EmptyAudioError, "empty"),
        (b"hello, this is plain text and no audio at all", UnsupportedFormatError, "accepted"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 100, UnsupportedFormatError, "MP3"),
        (b"RIFF\x24\x00\x00\x00WAVEfmt " + b"\x00" * 8, CorruptAudioError, "WAV"),
        (b"fLaC" + b"\x07" * 64, CorruptAudioError, "FLAC"),
    ],
)
def test_bad_bytes_raise_typed_errors_that_say_what_to_do(data, error, words):
    with pytest.raises(error, match=words):
        decode_audio(data)


def test_zero_sample_file_is_empty():
    with pytest.raises(EmptyAudioError):
        decode_audio(encode(np.zeros((0, 1), np.float32), 16_000, "WAV", "PCM_16"))


def test_nan_samples_are_rejected():
    audio = np.zeros(16_000, np.float32)
    audio[100] = np.nan
    with pytest.raises(InvalidSamplesError, match="NaN"):
        decode_audio(encode(audio, 16_000, "WAV", "FLOAT"))


def test_too_long_is_refused_before_decoding():
    audio = np.zeros(16_000 * 4, np.float32)
    with pytest.raises(AudioTooLongError, match="at most 3 s"):
        decode_audio(encode(audio, 16_000, "WAV", "PCM_16"), max_seconds=3)


def test_silence_is_classifiable_not_an_error():
    frontend = FrontEnd()
    _, waveform = frontend.load(encode(np.zeros(16_000, np.float32), 16_000, "WAV", "PCM_16"))
    windows, _ = frontend.windows(waveform)
    features = frontend.features(windows)
    assert features.shape == (1, 1, 64, 157) and np.isfinite(features).all()


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(1.0, 1), (5.0, 1), (5.1, 2), (7.5, 2), (7.6, 3), (30.0, 11)],
)
def test_window_count_and_padding(seconds, expected):
    config = FrontEndConfig()
    n = int(seconds * config.sample_rate)
    waveform = np.arange(1, n + 1, dtype=np.float32)
    windows = split_windows(waveform, config)
    assert windows.shape == (expected, config.clip_samples)
    spans = window_spans(n, config)
    assert len(spans) == expected
    assert spans[-1].end == pytest.approx(seconds)
    # Each window starts 2.5 s after the previous one; the tail is zero-padded.
    for i, window in enumerate(windows):
        start = i * config.stride_samples
        real = min(config.clip_samples, n - start)
        np.testing.assert_array_equal(window[:real], waveform[start : start + real])
        assert not window[real:].any()


def test_log_mel_matches_torchaudio():
    config = FrontEndConfig()
    rng = np.random.default_rng(0)
    t = np.arange(config.clip_samples) / config.sample_rate
    windows = np.stack(
        [
            0.1 * rng.standard_normal(config.clip_samples),
            0.5 * np.sin(2 * np.pi * 3000 * t),
            np.zeros(config.clip_samples),
        ]
    ).astype(np.float32)
    ours = FrontEnd(config).log_mel(windows)
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        f_min=config.f_min,
        f_max=config.f_max,
        n_mels=config.n_mels,
        power=2.0,
    )
    theirs = torch.log(reference(torch.from_numpy(windows)) + config.log_eps).numpy()[:, None]
    assert ours.shape == theirs.shape == (3, 1, 64, 157)
    np.testing.assert_allclose(ours, theirs, atol=LOG_MEL_ATOL, rtol=0)


def test_normalization_uses_stored_stats():
    config = FrontEndConfig()
    stats = NormStats(np.full(64, 2.0, np.float32), np.full(64, 4.0, np.float32))
    frontend = FrontEnd(config, stats)
    log_mel = np.full((1, 1, 64, 157), 10.0, np.float32)
    np.testing.assert_allclose(frontend.normalize(log_mel), 2.0)
    fitted = NormStats.fit(np.stack([np.zeros((1, 64, 157)), np.full((1, 64, 157), 2.0)]).astype(np.float32))
    np.testing.assert_allclose(fitted.mean, 1.0)
    np.testing.assert_allclose(fitted.std, 1.0)
    assert NormStats.from_dict(fitted.to_dict()).mean.tolist() == fitted.mean.tolist()
