"""The shared audio front end: formats, typed errors, the window grid, torchaudio parity, normalization."""

from __future__ import annotations

import itertools
import os

import numpy as np
import pytest
import torch
import torchaudio

from features import (
    AudioError,
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioError,
    FrontEnd,
    FrontEndConfig,
    FrontEndConfigError,
    InvalidSamplesError,
    NormStats,
    UnsupportedFormatError,
    WindowSpan,
    decode,
    window_count,
)
from features.containers import Sniffed, ogg_page_end
from features.decode import AudioReader
from tests.conftest import encode
from training.ogg_pages import with_serial

# Max |difference| of ln-mel values vs torchaudio (run in float64: the exact values) on the same audio.
# Measured 1.3e-5 on noise at amplitude 0.1, and 1.1e-3 on the loud sine's abrupt start at t=0
# (8.2e-4 with the seed's 1024-point STFT), where float32 FFT error meets a power floor near
# log_eps (torchaudio's own float32 is off by 6.7e-4 there with 1024 points). A real mismatch
# (wrong window, padding, grid offset or filterbank) shows up as >0.1.
LOG_MEL_ATOL = 2e-3


def noise(seconds: float, rate: int = 16_000, seed: int = 0) -> np.ndarray:
    return (0.1 * np.random.default_rng(seed).standard_normal(round(seconds * rate))).astype(np.float32)


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
def test_every_accepted_format_is_mixed_to_mono_and_windowed(chirp, fmt, subtype, rate):
    analysis = FrontEnd().analyze(encode(chirp, rate, fmt, subtype))
    assert (analysis.audio.sample_rate, analysis.audio.channels, analysis.audio.format) == (rate, 2, fmt)
    seconds = len(chirp) / rate  # the 44.1 kHz chirp written at another rate lasts longer or shorter
    assert analysis.audio.duration_seconds == pytest.approx(seconds, abs=0.1)
    windows = analysis.windows
    assert windows.features.shape == (window_count(round(seconds * 16_000), FrontEndConfig()), 1, 64, 321)
    assert np.isfinite(windows.features).all()
    assert windows.spans[-1].end == pytest.approx(seconds, abs=0.1) and windows.spans[0].channel is None
    # Mixed as the mean: the channels (0.3 and 0.15 peak) average to a 0.225 sine, RMS 0.159 while
    # it lasts in the first 5 s window. A sum would double it, one channel alone make it 1.33x.
    assert windows.rms[0] == pytest.approx(0.225 / np.sqrt(2) * np.sqrt(min(seconds, 5.0) / 5.0), rel=0.05)


@pytest.mark.parametrize("name", ["a.wav", os.fsdecode(b"caf\xe9 \xff.wav")], ids=["utf8", "latin1-name"])
def test_a_path_and_its_bytes_give_the_same_windows(tmp_path, chirp, name):
    data = encode(chirp, 44_100, "WAV", "PCM_16")
    path = tmp_path / name
    path.write_bytes(data)
    frontend = FrontEnd()
    from_path, from_bytes = frontend.analyze(path), frontend.analyze(data)
    assert from_path.audio == from_bytes.audio
    np.testing.assert_array_equal(from_path.windows.features, from_bytes.windows.features)


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
        FrontEnd().analyze(data)


@pytest.mark.timeout(20)  # the failure this guards against is a read that never returns
def test_a_fifo_or_folder_named_like_a_recording_is_refused_without_blocking(tmp_path):
    os.mkfifo(tmp_path / "live.wav")
    (tmp_path / "folder.wav").mkdir()
    for path in (tmp_path / "live.wav", tmp_path / "folder.wav"):
        with pytest.raises(OSError, match="not a regular file"):
            AudioReader(path)


@pytest.mark.timeout(20)
def test_a_file_swapped_after_its_checks_is_not_what_gets_decoded(tmp_path, monkeypatch):
    """The checks (regular file, container, size) and the decoding read one descriptor: a file
    replaced by another recording, or by a FIFO that would block for ever, between the checks
    and libsndfile's open is not opened again by name."""
    import features.decode

    path = tmp_path / "swapped.wav"
    path.write_bytes(encode(noise(3.0), 16_000, "WAV", "PCM_16"))
    (tmp_path / "other.wav").write_bytes(encode(noise(7.0), 16_000, "WAV", "PCM_16"))
    checked = features.decode.sniff

    def sniff_then_swap(head: bytes) -> Sniffed | None:
        if replacement == "fifo":
            path.unlink()
            os.mkfifo(path)
        else:
            os.replace(tmp_path / "other.wav", path)
        return checked(head)

    monkeypatch.setattr(features.decode, "sniff", sniff_then_swap)
    for replacement in ("recording", "fifo"):
        with AudioReader(path) as reader:
            assert sum(len(block) for block in reader.blocks()) == 3 * 16_000, replacement
        path.unlink()
        path.write_bytes(encode(noise(3.0), 16_000, "WAV", "PCM_16"))


def test_every_file_opened_is_closed_whether_it_is_read_or_refused(tmp_path):
    good = tmp_path / "good.flac"
    good.write_bytes(encode(noise(1.0), 16_000, "FLAC", "PCM_16"))
    wav = encode(noise(1.0), 16_000, "WAV", "PCM_16")
    unwritten = tmp_path / "unwritten.wav"  # read through the size overlay
    unwritten.write_bytes(wav[:40] + bytes(4) + wav[44:])
    cut = tmp_path / "cut.wav"
    cut.write_bytes(wav[: len(wav) // 2])
    junk = tmp_path / "junk.wav"
    junk.write_bytes(b"not audio" * 100)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        for path in (good, unwritten):
            assert len(FrontEnd().analyze(path).windows.features) >= 1
        for path in (cut, junk):
            with pytest.raises(AudioError):
                FrontEnd().analyze(path)
        with AudioReader(good) as reader:
            next(reader.blocks())  # left part way
    assert len(os.listdir("/proc/self/fd")) == before


def test_zero_sample_file_is_empty():
    with pytest.raises(EmptyAudioError):
        FrontEnd().analyze(encode(np.zeros((0, 1), np.float32), 16_000, "WAV", "PCM_16"))


def test_nan_in_a_late_block_is_rejected_after_earlier_windows_were_emitted():
    audio = noise(20.0)
    audio[-100] = np.nan
    emitted = 0
    data = encode(audio, 16_000, "WAV", "FLOAT")
    with pytest.raises(InvalidSamplesError, match="NaN"), FrontEnd().stream(data, block_samples=8_000) as stream:
        for batch in stream:
            emitted += len(batch)
    assert emitted > 0  # checked per block: nothing made the whole recording wait for the check


@pytest.mark.parametrize(
    ("container", "subtype"),
    [
        ("WAV", "PCM_16"),
        ("WAV", "FLOAT"),
        ("FLAC", "PCM_16"),
        ("MP3", "MPEG_LAYER_III"),
        ("AIFF", "PCM_16"),
        ("AIFF", "ULAW"),
        ("AU", "PCM_24"),
        ("W64", "FLOAT"),
    ],
)
def test_a_file_cut_short_is_refused_as_truncated_not_read_as_a_shorter_recording(container, subtype):
    whole = encode(noise(6.0), 16_000, container, subtype)
    assert len(FrontEnd().analyze(whole).windows.features) >= 1  # the whole file is fine
    # In seconds where the header states frames (FLAC, MP3), in bytes where it states the data's size.
    declared = "6.00 s" if container in ("FLAC", "MP3") else r"[\d,]+ bytes, the file holds [\d,]+ \(33%\)"
    with pytest.raises(CorruptAudioError, match=rf"file is truncated: its header declares {declared}"):
        FrontEnd().analyze(whole[: len(whole) // 3])


def _cut(data: bytes) -> bytes:
    return data[: len(data) // 2]


def _id3(data: bytes) -> bytes:
    return b"ID3\x03\x00\x00\x00\x00\x00\x64" + bytes(100) + data


def _streamed(container: str, data: bytes) -> bytes:
    """The header a tool writes when it streams to a pipe and cannot seek back to fill in the sizes."""
    out = bytearray(data)
    if container == "AIFF":  # sox: FORM, COMM's frames and SSND's size near 2^31
        at = out.index(b"SSND") + 4
        out[at : at + 4] = (0x7F000008).to_bytes(4, "big")
    else:  # W64, ffmpeg: the data chunk's size 2^63 - 1
        at = out.index(b"data") + 16
        out[at : at + 8] = (2**63 - 1).to_bytes(8, "little")
    return bytes(out)


@pytest.mark.parametrize(
    ("made", "cut"),
    [
        (lambda: encode(noise(3.0), 16_000, "RF64", "PCM_16"), True),  # ds64's 64-bit size
        (lambda: encode(noise(3.0), 16_000, "WAV", "PCM_16", endian="BIG"), True),  # RIFX
        (lambda: encode(noise(3.0), 16_000, "W64", "IMA_ADPCM"), True),  # block align is a block, not a frame
        (lambda: encode(noise(3.0), 16_000, "WAV", "MS_ADPCM"), True),
        (lambda: encode(noise(3.0), 16_000, "AU", "G721_32"), True),
        (lambda: encode(noise(3.0), 16_000, "AU", "PCM_16", endian="LITTLE"), True),  # 'dns.'
        (lambda: _id3(encode(noise(3.0), 16_000, "WAV", "PCM_16")), True),
        (lambda: _id3(encode(noise(3.0), 16_000, "AIFF", "PCM_16")), True),
        (lambda: _streamed("AIFF", encode(noise(3.0), 16_000, "AIFF", "PCM_16")), False),
        (lambda: _streamed("W64", encode(noise(3.0), 16_000, "W64", "PCM_16")), False),
    ],
    ids=[
        "RF64",
        "RIFX",
        "W64 IMA ADPCM",
        "WAV MS ADPCM",
        "AU G.721",
        "AU little-endian",
        "ID3 + WAV",
        "ID3 + AIFF",
        "AIFF sox streamed",
        "W64 ffmpeg streamed",
    ],
)
def test_whole_files_decode_and_cut_ones_are_refused_whatever_the_codec_or_the_writer(tmp_path, made, cut):
    """The check reads the data's size from the header, not a frame count: ADPCM and G.72x count
    blocks, not frames. A writer streaming to a pipe leaves a marker instead of a size: no claim."""
    data = made()
    path = tmp_path / "recording.bin"
    path.write_bytes(data)
    assert len(FrontEnd().analyze(path).windows.features) >= 1
    path.write_bytes(_cut(data))
    if cut:
        with pytest.raises(CorruptAudioError, match="truncated"):
            FrontEnd().analyze(path)
    else:
        assert len(FrontEnd().analyze(path).windows.features) >= 1


def test_an_mp3_whose_frames_start_after_junk_is_found_by_its_frames(tmp_path):
    """Zero padding or a stream captured mid-frame before the first frame header: two frame headers
    a frame apart say MPEG audio, and it is read from that frame on, uploaded or from a file of any
    name (libsndfile alone finds such frames only in a file named .mp3)."""
    mp3 = encode(noise(3.0), 16_000, "MP3", "MPEG_LAYER_III")
    whole = FrontEnd().analyze(mp3).audio.duration_seconds
    for name, data in {"padded": bytes(500) + mp3, "mid-frame": mp3[1001:]}.items():
        for file_name in (f"{name}.mp3", f"{name}.bin"):
            (tmp_path / file_name).write_bytes(data)
        for source in (data, tmp_path / f"{name}.mp3", tmp_path / f"{name}.bin"):
            analysis = FrontEnd().analyze(source)
            assert len(analysis.windows.features) >= 1, (name, source)
            assert whole - 0.2 < analysis.audio.duration_seconds <= whole, (name, source)  # mid-frame loses its cut frames


def test_a_container_libsndfile_reads_as_another_than_its_bytes_named_is_refused(monkeypatch):
    """The checks made on the first bytes hold only for the container they name; should libsndfile
    find another behind them (it reads some containers behind an ID3 tag), the file is refused."""
    monkeypatch.setattr(decode, "sniff", lambda head: Sniffed("FLAC"))
    with pytest.raises(UnsupportedFormatError, match="starts as FLAC but decodes as WAV"):
        FrontEnd().analyze(encode(noise(1.0), 16_000, "WAV", "PCM_16"))
    id3_then_caf = _id3(encode(noise(1.0), 16_000, "CAF", "PCM_16"))
    monkeypatch.undo()
    with pytest.raises(AudioError):
        FrontEnd().analyze(id3_then_caf)


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_an_ogg_cut_short_even_at_a_page_boundary_is_refused_as_truncated(subtype):
    """libsndfile reads an Ogg's length from its last page, so a cut one read as a shorter recording;
    every finished Ogg stream's last page says it is the last."""
    whole = encode(noise(6.0), 48_000, "OGG", subtype)
    assert len(FrontEnd().analyze(whole).windows.features) >= 1
    last_page = whole.rindex(b"OggS")
    for cut in (last_page, len(whole) // 2, len(whole) - 1):
        with pytest.raises(CorruptAudioError, match="OGG file is truncated: its last page does not end its stream"):
            FrontEnd().analyze(whole[:cut])


def _ogg_pages(data: bytes) -> list[bytes]:
    pages, at = [], 0
    while (end := ogg_page_end(data, at)) is not None:
        pages.append(data[at:end])
        at = end
    return pages


@pytest.mark.parametrize("subtype", ["VORBIS", "OPUS"])
def test_an_ogg_of_headers_alone_is_refused_as_empty_not_as_truncated(subtype):
    """An encoder given no audio (ffmpeg -t 0) writes the header pages and no last page: nothing was
    cut, there is nothing to analyze."""
    pages = _ogg_pages(encode(noise(3.0), 48_000, "OGG", subtype))
    headers = b"".join(itertools.takewhile(lambda page: page[6:14] == bytes(8), pages))
    assert 0 < len(headers) < sum(map(len, pages))
    with pytest.raises(EmptyAudioError, match="the OGG file holds no audio, only its headers"):
        FrontEnd().analyze(headers)


def test_an_ogg_of_several_streams_is_refused_since_only_its_first_would_be_read():
    """libsndfile decodes an Ogg's first stream only: the rest of a chained file (two recordings one
    after the other) or a multiplexed one (two tracks) would be left unread, without a word."""
    first = with_serial(encode(noise(3.0), 48_000, "OGG", "VORBIS"), 1)
    second = with_serial(encode(noise(2.0), 48_000, "OGG", "VORBIS"), 2)
    assert len(FrontEnd().analyze(first).windows.features) >= 1
    a, b = _ogg_pages(first), _ogg_pages(second)
    multiplexed = a[0] + b[0] + b"".join(a[1:]) + b"".join(b[1:])  # every stream's first page before the others
    for chained_or_multiplexed in (first + second, multiplexed):
        with pytest.raises(UnsupportedFormatError, match="holds more than one stream"):
            FrontEnd().analyze(chained_or_multiplexed)


@pytest.mark.parametrize("container", ["AU", "W64"])
def test_a_header_that_claims_no_length_is_read_as_far_as_it_goes(container):
    """AU's 'unknown' size (0xFFFFFFFF) and a W64 data chunk whose size was never written (0): a
    recorder that streamed and never closed the file. No claim, so no truncation."""
    data = bytearray(encode(noise(6.0), 16_000, container, "PCM_16"))
    if container == "AU":
        data[8:12] = (0xFFFFFFFF).to_bytes(4, "big")
    else:
        at = data.index(b"data") + 16
        data[at : at + 8] = (0).to_bytes(8, "little")
    assert len(FrontEnd().analyze(bytes(data[: len(data) // 2])).windows.features) >= 1


@pytest.mark.parametrize("container", ["CAF", "VOC", "IRCAM"])
def test_a_container_libsndfile_reads_but_nothing_here_checks_is_refused_saying_what_is_accepted(container):
    with pytest.raises(UnsupportedFormatError, match=r"accepted: WAV, FLAC, .*AIFF"):
        FrontEnd().analyze(encode(noise(1.0), 16_000, container, "PCM_16"))


def test_a_decode_error_gives_the_decoder_reason_without_python_object_names():
    data = bytearray(encode(noise(1.0), 16_000, "WAV", "PCM_16"))
    data[24:28] = (0).to_bytes(4, "little")  # sample rate 0
    with pytest.raises(AudioError) as refused:
        FrontEnd().analyze(bytes(data))
    assert "object at 0x" not in str(refused.value) and "Error opening" not in str(refused.value), refused.value


@pytest.mark.parametrize("size", [0xFFFFFFFF, 0])
@pytest.mark.parametrize("endian", ["LITTLE", "BIG"])  # RIFF, RIFX
def test_a_wav_whose_header_claims_no_length_is_read_as_far_as_it_goes(endian, size):
    """A recorder that streams writes 0xFFFFFFFF; one that lost power before closing the file leaves 0."""
    data = bytearray(encode(noise(6.0), 16_000, "WAV", "PCM_16", endian=endian))
    at = data.index(b"data") + 4
    data[at : at + 4] = size.to_bytes(4, "little" if endian == "LITTLE" else "big")
    analysis = FrontEnd().analyze(bytes(data[: len(data) // 2]))
    assert 2.9 < analysis.audio.duration_seconds <= 3.0


def test_too_long_is_refused_from_the_header_before_decoding():
    with pytest.raises(AudioTooLongError, match="at most 3 s"):
        FrontEnd().stream(encode(np.zeros(16_000 * 4, np.float32), 16_000, "WAV", "PCM_16"), max_seconds=3)


def test_silence_is_classifiable_not_an_error():
    features = FrontEnd().analyze(encode(np.zeros(16_000, np.float32), 16_000, "WAV", "PCM_16")).windows.features
    assert features.shape == (1, 1, 64, 321) and np.isfinite(features).all()


@pytest.mark.parametrize(
    ("seconds", "expected"),
    [(1.0, 1), (5.0, 1), (5.1, 2), (7.5, 2), (7.6, 3), (30.0, 11)],
)
def test_window_count_spans_and_zero_tail(seconds, expected):
    config = FrontEndConfig()
    audio = noise(seconds)
    windows = FrontEnd(config).waveform_windows(audio)
    assert len(windows) == window_count(len(audio), config) == expected
    assert windows.features.shape == (expected, 1, 64, 321)
    assert [span.start for span in windows.spans] == [2.5 * i for i in range(expected)]
    assert windows.spans[-1].end == pytest.approx(seconds)
    # Past the recording the signal is zero: frames centred more than n_fft/2 after the end hold ln(eps) exactly.
    silent_from = -(-(len(audio) + config.n_fft // 2) // config.hop_length)
    last_start = (expected - 1) * config.stride_hops
    tail = windows.features[-1, 0, :, max(0, silent_from - last_start) :]
    np.testing.assert_array_equal(tail, np.float32(np.log(np.float32(config.log_eps))))


def test_windows_are_slices_of_one_frame_grid():
    config = FrontEndConfig()
    features = FrontEnd(config).waveform_windows(noise(13.0)).features
    overlap = config.n_frames - config.stride_hops
    for i in range(len(features) - 1):
        np.testing.assert_array_equal(features[i, 0, :, config.stride_hops :], features[i + 1, 0, :, :overlap])


def test_log_mel_matches_torchaudio_on_the_padded_recording():
    config = FrontEndConfig()
    t = np.arange(round(12.3 * config.sample_rate)) / config.sample_rate
    signals = [noise(12.3), (0.5 * np.sin(2 * np.pi * 3000 * t)).astype(np.float32), np.zeros(len(t), np.float32)]
    reference = torchaudio.transforms.MelSpectrogram(
        sample_rate=config.sample_rate,
        n_fft=config.n_fft,
        hop_length=config.hop_length,
        f_min=config.f_min,
        f_max=config.f_max,
        n_mels=config.n_mels,
        power=2.0,
        center=True,
        pad_mode="constant",
    ).double()
    for audio in signals:
        ours = FrontEnd(config).waveform_windows(audio).features
        padded = np.zeros((len(ours) - 1) * config.stride_samples + config.clip_samples, np.float32)
        padded[: len(audio)] = audio
        grid = torch.log(reference(torch.from_numpy(padded).double()) + config.log_eps).numpy()
        assert grid.shape == (64, padded.size // config.hop_length + 1)
        theirs = np.stack([grid[:, i * config.stride_hops : i * config.stride_hops + config.n_frames] for i in range(len(ours))])
        assert ours.shape == (4, 1, 64, 321)
        np.testing.assert_allclose(ours[:, 0], theirs, atol=LOG_MEL_ATOL, rtol=0)


def test_rms_is_over_each_zero_padded_window():
    config = FrontEndConfig()
    audio = noise(9.0) * np.linspace(0, 2, round(9.0 * config.sample_rate), dtype=np.float32)
    windows = FrontEnd(config).waveform_windows(audio)
    padded = np.zeros((len(windows) - 1) * config.stride_samples + config.clip_samples, np.float64)
    padded[: len(audio)] = audio
    expected = [np.sqrt(np.mean(padded[i * config.stride_samples :][: config.clip_samples] ** 2)) for i in range(len(windows))]
    np.testing.assert_allclose(windows.rms, expected, rtol=1e-6)


def test_stored_stats_normalize_exactly_as_training_does():
    config = FrontEndConfig()
    stats = NormStats(np.linspace(-12, -2, 64, dtype=np.float32), np.linspace(1, 3, 64, dtype=np.float32))
    audio = noise(8.0)
    plain = FrontEnd(config).waveform_windows(audio).features
    served = FrontEnd(config, stats).waveform_windows(audio).features
    # Training normalizes plain windows with FrontEnd.normalize; serving normalizes frames: bit for bit the same.
    np.testing.assert_array_equal(served, FrontEnd(config, stats).normalize(plain))
    flat = FrontEnd(config, NormStats(np.full(64, 2.0, np.float32), np.full(64, 4.0, np.float32)))
    np.testing.assert_allclose(flat.normalize(np.full((1, 1, 64, 321), 10.0, np.float32)), 2.0)
    fitted = NormStats.fit(np.stack([np.zeros((1, 64, 321)), np.full((1, 64, 321), 2.0)]).astype(np.float32))
    np.testing.assert_allclose(fitted.mean, 1.0)
    np.testing.assert_allclose(fitted.std, 1.0)
    assert NormStats.from_dict(fitted.to_dict()).mean.tolist() == fitted.mean.tolist()


def test_config_keeps_windows_on_the_hop_grid():
    config = FrontEndConfig()
    assert (config.hop_length, config.stride_hops, config.clip_hops, config.n_frames) == (250, 160, 320, 321)
    assert config.feature_shape == (1, 64, 321)
    assert FrontEndConfig.from_dict(config.to_dict()) == config
    old = {**config.to_dict(), "hop_length": 512}  # what models trained before the frame grid stored
    with pytest.raises(FrontEndConfigError, match="retrain it with `chorus train birdcall`"):
        FrontEndConfig.from_dict(old)
    with pytest.raises(FrontEndConfigError, match=r"stride_seconds=2\.51"):
        FrontEndConfig(stride_seconds=2.51)


def test_each_channel_is_analyzed_on_its_own(chirp):
    left, right = chirp[:, 0], noise(len(chirp) / 44_100, 44_100)
    frontend = FrontEnd()
    each = frontend.analyze(encode(np.stack([left, right], axis=1), 44_100, "WAV", "FLOAT"), channels="each")
    assert [span.channel for span in each.windows.spans] == [0, 1]
    for channel, audio in enumerate((left, right)):
        alone = frontend.analyze(encode(audio, 44_100, "WAV", "FLOAT")).windows
        np.testing.assert_array_equal(each.windows.features[channel], alone.features[0])
        assert each.windows.spans[channel] == WindowSpan(alone.spans[0].start, alone.spans[0].end, channel)


def test_windows_stream_out_before_the_recording_ends_with_stage_timings():
    audio = noise(30.0, 44_100)
    frontend = FrontEnd()
    data = encode(audio, 44_100, "FLAC", "PCM_16")
    batches, decoded_at = [], []
    with frontend.stream(data, block_samples=44_100) as stream:
        for batch in stream:
            batches.append(batch)
            decoded_at.append(stream.facts().duration_seconds)
    assert decoded_at[0] < 8.0  # the first window (0-5 s) left long before the 30 s were decoded
    assert set(stream.timings) == {"decode", "resample", "features"} and all(v > 0 for v in stream.timings.values())
    whole = frontend.analyze(data)
    np.testing.assert_array_equal(np.concatenate([b.features for b in batches]), whole.windows.features)
    assert whole.audio.duration_seconds == pytest.approx(30.0) and set(whole.timings) == set(stream.timings)


def test_a_waveform_at_the_model_rate_takes_the_same_path_as_a_file():
    audio = noise(11.0)
    frontend = FrontEnd()
    from_file = frontend.analyze(encode(audio, 16_000, "WAV", "FLOAT")).windows
    from_waveform = frontend.waveform_windows(audio)
    np.testing.assert_array_equal(from_file.features, from_waveform.features)
    assert from_file.spans == from_waveform.spans


def test_decoded_size_is_limited_from_the_header_and_rates_and_channels_are_bounded():
    from features import AudioTooLargeError, UnsupportedFormatError

    eight_channels = encode(np.zeros((4_000, 8), np.float32), 16_000, "WAV", "PCM_16")  # 32,000 samples
    with pytest.raises(AudioTooLargeError, match="32,000 samples over its 8 channel"):
        FrontEnd().analyze(eight_channels, max_samples=10_000)
    assert FrontEnd().analyze(eight_channels, max_samples=32_000).audio.channels == 8
    with pytest.raises(UnsupportedFormatError, match="accepted: 8000-384000 Hz"):
        FrontEnd().analyze(encode(np.zeros(400, np.float32), 4_000, "WAV", "PCM_16"))


def test_the_grid_rebuilt_from_windows_holds_every_window():
    from features import grid_frames

    config = FrontEnd().config
    waveform = (0.1 * np.random.default_rng(3).standard_normal(16_000 * 13)).astype(np.float32)
    features = FrontEnd().waveform_windows(waveform).features
    grid = grid_frames(features, config)
    assert grid.shape == (config.n_mels, (len(features) - 1) * config.stride_hops + config.n_frames)
    for i, window in enumerate(features):
        start = i * config.stride_hops
        np.testing.assert_array_equal(grid[:, start : start + config.n_frames], window[0])


def test_a_rate_below_twice_the_top_band_is_named_band_limited():
    config = FrontEndConfig()
    assert config.band_limited(16_000) is None and config.band_limited(48_000) is None
    assert "holds nothing above 5512.5 Hz" in (config.band_limited(11_025) or "")
