"""Generated Ogg Vorbis files are the same bytes for the same audio, and still decode to it."""

from __future__ import annotations

import io

import numpy as np
import pytest
import soundfile as sf

from training.birdcall_synth import write_audio
from training.ogg_pages import SERIAL, with_serial


def _ogg(audio: np.ndarray, rate: int) -> bytes:
    buffer = io.BytesIO()
    write_audio(buffer, audio, rate, "OGG", "VORBIS")
    return buffer.getvalue()


def test_the_same_audio_makes_the_same_ogg_bytes(tmp_path):
    audio = np.random.default_rng(0).uniform(-0.3, 0.3, 3 * 16_000).astype(np.float32)
    first, second = _ogg(audio, 16_000), _ogg(audio, 16_000)
    assert first == second
    write_audio(tmp_path / "a.ogg", audio, 16_000, "OGG", "VORBIS")
    assert (tmp_path / "a.ogg").read_bytes() == first
    assert int.from_bytes(first[14:18], "little") == SERIAL


def test_a_new_serial_keeps_the_audio_and_valid_page_checksums():
    audio = np.random.default_rng(1).uniform(-0.3, 0.3, 2 * 22_050).astype(np.float32)
    buffer = io.BytesIO()
    with sf.SoundFile(buffer, "w", 22_050, 1, format="OGG", subtype="VORBIS") as f:  # libsndfile's own serial
        f.write(audio)
    original = buffer.getvalue()
    rewritten = with_serial(original, serial=7)
    assert rewritten != original and len(rewritten) == len(original)
    # libogg drops pages whose CRC does not match: equal samples mean every page's checksum is right.
    before, _ = sf.read(io.BytesIO(original), dtype="float32")
    after, _ = sf.read(io.BytesIO(rewritten), dtype="float32")
    np.testing.assert_array_equal(after, before)
    assert len(after) == len(audio)


def test_only_whole_ogg_pages_are_rewritten():
    with pytest.raises(ValueError, match="not a whole Ogg page at byte 0"):
        with_serial(b"RIFF" + bytes(40))
    whole = _ogg(np.zeros(16_000, np.float32), 16_000)
    with pytest.raises(ValueError, match=f"not a whole Ogg page at byte {whole.rindex(b'OggS')}"):
        with_serial(whole[:-1])


@pytest.mark.parametrize("container, subtype", [("WAV", "PCM_16"), ("FLAC", "PCM_16")])
def test_other_containers_go_to_a_file_object_untouched(container, subtype):
    audio = np.random.default_rng(2).uniform(-0.3, 0.3, 8_000).astype(np.float32)
    buffer = io.BytesIO()
    write_audio(buffer, audio, 16_000, container, subtype)
    decoded, rate = sf.read(io.BytesIO(buffer.getvalue()), dtype="float32")
    assert rate == 16_000 and len(decoded) == len(audio)
