"""Recording start times from recorder file names: real ones parsed, anything doubtful None."""

from __future__ import annotations

from datetime import datetime

import pytest

from analyze.clock import recording_start


@pytest.mark.parametrize(
    ("name", "start"),
    [
        ("20240517_053000.WAV", datetime(2024, 5, 17, 5, 30, 0)),  # AudioMoth
        ("/cards/moth3/20241231_235959.wav", datetime(2024, 12, 31, 23, 59, 59)),
        ("SMU01234_20240517_053000.wav", datetime(2024, 5, 17, 5, 30, 0)),  # Song Meter Mini / SM4
        ("SITE_A_north_20240517_053000.flac", datetime(2024, 5, 17, 5, 30, 0)),  # prefix with underscores
        ("Mill-Pond-CA_20210506_082400.wav", datetime(2021, 5, 6, 8, 24, 0)),
        ("SM3_0+1_20240517_053000.wav", datetime(2024, 5, 17, 5, 30, 0)),  # SM3 channel indicator
        ("SM3_1_20240517_053000.wav", datetime(2024, 5, 17, 5, 30, 0)),
        ("ARIZONA-1_20161023$195550.wac", datetime(2016, 10, 23, 19, 55, 50)),  # GPS-synced
        ("MIC7_20240517_053000_250000.wav", datetime(2024, 5, 17, 5, 30, 0, 250000)),  # SMART microseconds
        ("20240229_120000.wav", datetime(2024, 2, 29, 12, 0, 0)),  # a real leap day
        ("odd\tprefix\nhere_20240517_053000.wav", datetime(2024, 5, 17, 5, 30, 0)),
    ],
)
def test_recorder_names_give_their_start_time(name, start):
    assert recording_start(name) == start
    assert recording_start(name).tzinfo is None  # the recorder's own clock: no zone is claimed


@pytest.mark.parametrize(
    "name",
    [
        "recording.wav",
        "20240517.wav",
        "20240517_0530.wav",
        "20240517_053000T.WAV",  # AudioMoth triggered: silences compressed, offsets are not clock offsets
        "x20240517_053000.wav",  # no separator before the date
        "20240517_053000_extra.wav",
        "20240517-053000.wav",
        "20241301_053000.wav",  # month 13 (strptime would read it as January 30)
        "20230229_120000.wav",  # not a leap year
        "20240517_240000.wav",
        "20240517_236000.wav",
        "20240517_235960.wav",
        "19700101_000000.WAV",  # AudioMoth whose clock was never set
        "21240517_053000.wav",
        "\uff12\uff10\uff12\uff14\uff10\uff15\uff11\uff17_\uff10\uff15\uff13\uff10\uff10\uff10.wav",  # fullwidth digits: \d matches them
        "20240517_053000.wav/inner.wav",
        "20240601_053000_20240602_060000.wav",  # two stamps: which is the start would be a guess
        "SITE_20240601_053000_SMU_20240602_060000.wav",
    ],
)
def test_anything_else_gives_none_never_a_guess(name):
    assert recording_start(name) is None
