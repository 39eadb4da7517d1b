"""Headers rewritten at random, for the containers whose length chorus reads from the header itself
(WAV, AIFF, AU, W64): each is decoded or refused with a typed AudioError, never another exception,
and nothing is printed from inside libsndfile's callbacks (an error raised there is lost, and its
traceback lands on the server's stderr, one per request)."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from features import AudioError, FrontEnd
from tests.conftest import encode

_TONE = (0.3 * np.sin(np.arange(4_000) * 0.3)).astype(np.float32)
_FILES = {
    "WAV": encode(_TONE, 8_000, "WAV", "PCM_16"),
    "AIFF": encode(_TONE, 8_000, "AIFF", "PCM_16"),
    "AU": encode(_TONE, 8_000, "AU", "PCM_16"),
    "W64": encode(_TONE, 8_000, "W64", "PCM_16"),
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
