"""Shared fixtures: tiny trained models and synthetic audio, made once per test session."""

from __future__ import annotations

import io
import os
import tempfile

import numpy as np
import pytest
import soundfile as sf

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# A private model store: BentoML reads BENTOML_HOME once, at import, so set it before anything imports it.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="chorus-test-bentoml-")


def encode(audio: np.ndarray, rate: int, fmt: str, subtype: str | None = None) -> bytes:
    """Audio -> bytes of a file in the given libsndfile format."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


@pytest.fixture(scope="session")
def chirp() -> np.ndarray:
    """3 s of a 1-4 kHz sweep at 44.1 kHz, stereo, amplitude 0.3."""
    rate = 44_100
    t = np.arange(3 * rate) / rate
    mono = 0.3 * np.sin(2 * np.pi * (1000 * t + 500 * t**2))
    return np.stack([mono, 0.5 * mono], axis=1).astype(np.float32)


@pytest.fixture(scope="session")
def tiny_workspace(tmp_path_factory):
    from chorus.workspace import Workspace

    return Workspace(tmp_path_factory.mktemp("chorus_home"))


@pytest.fixture(scope="session")
def tiny_birdcall(tiny_workspace):
    """Metrics of the birdcall `tiny` profile trained into tiny_workspace (seconds, not minutes)."""
    from training.train_birdcall import PROFILES, train_birdcall

    return train_birdcall(PROFILES["tiny"], tiny_workspace)


@pytest.fixture(scope="session")
def tiny_frames(tiny_workspace):
    from training.train_frames import PROFILES, train_frames

    return train_frames(PROFILES["tiny"], tiny_workspace)
