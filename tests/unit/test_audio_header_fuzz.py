"""Headers rewritten at random, for the containers whose data size chorus reads from the header itself
(WAV, RF64, RIFX, AIFF, AU, W64), MP3 (found by its frame headers) and Ogg (its last page): each is decoded or refused
with a typed AudioError, never another exception,
and nothing is printed from inside libsndfile's callbacks (an error raised there is lost, and its
traceback lands on the server's stderr, one per request)."""

from __future__ import annotations

import contextlib
from typing import get_args

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import AudioError, FrontEnd
from features.containers import OGG_TAIL_BYTES, OggEnding, declared_data_end, ogg_ending, sniff
from tests.conftest import encode

_TONE = (0.3 * np.sin(np.arange(4_000) * 0.3)).astype(np.float32)
_FILES = {
    "WAV": encode(_TONE, 8_000, "WAV", "PCM_16"),
    "AIFF": encode(_TONE, 8_000, "AIFF", "PCM_16"),
    "AU": encode(_TONE, 8_000, "AU", "PCM_16"),
    "W64": encode(_TONE, 8_000, "W64", "PCM_16"),
    "RF64": encode(_TONE, 8_000, "RF64", "PCM_16"),
    "RIFX": encode(_TONE, 8_000, "WAV", "PCM_16", endian="BIG"),
    "MP3": encode(_TONE, 8_000, "MP3", "MPEG_LAYER_III"),
    "OGG": encode(_TONE, 8_000, "OGG", "VORBIS"),
}
pytestmark = pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
_HOSTILE_WORDS = [b"\x00\x00\x00\x00", b"\xff\xff\xff\xff", b"\x7f\xff\xff\xff", b"\x00\x00\x00\x18", b"\x01\x00\x00\x00"]


@pytest.mark.parametrize("container", sorted(_FILES))
@settings(max_examples=150, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    edits=st.lists(
        st.tuples(st.integers(0, 127), st.one_of(st.binary(min_size=1, max_size=4), st.sampled_from(_HOSTILE_WORDS))),
        min_size=1,
        max_size=6,
    ),
    keep=st.one_of(st.none(), st.integers(0, 6_000)),
)
def test_a_rewritten_header_is_decoded_or_refused_with_an_audio_error(container, edits, keep):
    data = bytearray(_FILES[container])
    for at, value in edits:
        data[at : at + len(value)] = value
    if keep is not None:
        del data[keep:]
    with contextlib.suppress(AudioError):
        FrontEnd().analyze(bytes(data))


@settings(max_examples=2_000, deadline=None, derandomize=True)
@given(
    head=st.one_of(st.binary(max_size=512), st.sampled_from(sorted(_FILES)).flatmap(lambda name: st.just(_FILES[name][:64]))),
    tail=st.binary(max_size=256),
)
def test_the_container_parsers_answer_any_bytes(head, tail):
    """sniff, declared_data_end and ogg_ending on any bytes: an answer, no exception, no endless walk."""
    data = head + tail
    sniffed = sniff(data)
    if sniffed is not None:
        end = declared_data_end(sniffed, data)
        assert end is None or end >= 0
    assert ogg_ending(data, data[-OGG_TAIL_BYTES:]) in get_args(OggEnding)
