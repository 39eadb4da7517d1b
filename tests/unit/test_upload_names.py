"""Upload names: what a recording's name becomes on the server's disk (service.adapters.jobs.upload_name)."""

from __future__ import annotations

import unicodedata
from pathlib import Path

import hypothesis
import hypothesis.strategies
import pytest

from service.adapters.jobs import MAX_NAME_BYTES, upload_name


@pytest.mark.parametrize(
    ("raw", "kept"),
    [
        (None, "recording"),
        ("..", "recording"),
        (".hidden.wav", "hidden.wav"),
        ("a\\b:c*?.flac", "a_b_c__.flac"),
        ("\u0441\u043e\u0432\u0430 2024.mp3", "\u0441\u043e\u0432\u0430_2024.mp3"),
        ("e\u0301te\u0301.wav", "\u00e9t\u00e9.wav"),  # decomposed accents come out composed
        ("nul\x00byte\n.wav", "nul_byte_.wav"),
        ("\u0915\u093f\u0928\u093e\u0930\u093e.wav", "\u0915\u093f\u0928\u093e\u0930\u093e.wav"),  # marks with no composed form stay
        (".wav", "recording.wav"),
        ("..WAV", "recording.WAV"),
        ("site/.flac", "recording.flac"),
    ],
)
def test_upload_names_are_file_names_of_letters_digits_and_safe_marks(raw, kept):
    assert upload_name(raw) == kept


@hypothesis.settings(max_examples=500, deadline=None, derandomize=True)
@hypothesis.given(hypothesis.strategies.text(max_size=400))
def test_any_upload_name_becomes_one_plain_file_name(raw):
    name = upload_name(raw)
    assert name and not name.startswith(".") and len(name.encode()) <= MAX_NAME_BYTES
    assert all(unicodedata.category(c)[0] in "LMN" or c in "._+-" for c in name)  # no separator, NUL, space or control
    assert Path(name).name == name and name not in (".", "..")


def test_a_long_upload_name_is_cut_to_whole_characters_and_keeps_its_extension():
    name = upload_name("\u00e9" * 300 + ".WAV")
    assert name.endswith(".WAV") and len(name.encode()) <= MAX_NAME_BYTES
    assert name[:-4] == "\u00e9" * ((MAX_NAME_BYTES - 4) // 2)
    dotted = upload_name("x" * 250 + ".not an extension at all")
    assert len(dotted.encode()) == MAX_NAME_BYTES and dotted.startswith("x" * 200)
