"""Shared fixtures: tiny trained models and synthetic audio, made once per test session.

The tests come in layers, one folder each, and each test is marked with its layer (see
docs/testing.md): unit (pure functions), api (the adapters in-process over the data plane with a
fake engine), integration (training, export, external tools), e2e (the real service).
"""

from __future__ import annotations

import atexit
import functools
import io
import os
import shutil
import tempfile
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf
from prometheus_client.parser import text_string_to_metric_families

from export.parity import Tolerance
from service.local_server import ROOT, free_port, serve  # noqa: F401  (tests import them from here)

os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
# A private model store: BentoML reads BENTOML_HOME once, at import, so set it before anything imports it.
os.environ["BENTOML_HOME"] = tempfile.mkdtemp(prefix="chorus-test-bentoml-")
atexit.register(shutil.rmtree, os.environ["BENTOML_HOME"], ignore_errors=True)


LAYERS = ("unit", "api", "integration", "e2e")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark every test with the layer its top folder under tests/ names (tests/unit/analyze is unit),
    so `-m unit` and the like select by layer."""
    tests = Path(__file__).parent
    for item in items:
        parts = item.path.relative_to(tests).parts
        if len(parts) > 1 and parts[0] in LAYERS:
            item.add_marker(getattr(pytest.mark, parts[0]))


def scrape(client: httpx.Client) -> dict[tuple[str, tuple], float]:
    """{(sample name, sorted labels without worker/pid ids): value}, summed across processes."""
    samples: dict[tuple[str, tuple], float] = {}
    for family in text_string_to_metric_families(client.get("/metrics").text):
        for s in family.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k not in ("pid", "worker_index")))
            samples[(s.name, labels)] = samples.get((s.name, labels), 0.0) + s.value
    return samples


def value(samples, metric: str, **labels: str) -> float:
    """Sum of the samples of `metric` whose labels include `labels`."""
    want = set(labels.items())
    return sum(v for (name, sample_labels), v in samples.items() if name == metric and want <= set(sample_labels))


def encode(audio: np.ndarray, rate: int, fmt: str, subtype: str | None = None, endian: str = "FILE") -> bytes:
    """Audio -> bytes of a file in the given libsndfile format (and byte order: WAV BIG is RIFX, AU LITTLE 'dns.')."""
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=fmt, subtype=subtype, endian=endian)
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
    from layout.workspace import Workspace

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


# The tiny test model is barely trained: its logits are near ties, so int8/fp16 argmax flips
# are expected there. The real tolerances (export.birdcall.TOLERANCES) hold for trained models.
TINY_TOLERANCES = {
    "int8": Tolerance(min_top1_agreement=0.5),
    "fp16": Tolerance(max_abs_diff=0.1, min_top1_agreement=0.5),
}


@pytest.fixture(scope="session")
def tiny_exports(tiny_birdcall, tiny_frames, tiny_workspace):
    """Both tiny models exported and registered in the test model store: {model: report}."""
    from export import pipeline
    from export.birdcall import export_birdcall
    from export.frames import export_frames

    # The CPU timing table keeps every batch size's row, from 3 runs each instead of half a second:
    # ~10 s of the session's start, and no test reads the speeds.
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(pipeline, "time_session", functools.partial(pipeline.time_session, min_seconds=0))
        return {
            "birdcall": export_birdcall(tiny_workspace, tolerances=TINY_TOLERANCES),
            "frames": export_frames(tiny_workspace),
        }


def isolated_bentoml_home(target) -> str:
    """A copy of the test model store for a server started as a subprocess (`bentoml serve TAG`):
    every BentoML server empties the metrics directory under its BENTOML_HOME at start, which
    would blank the session server's /metrics."""
    source = os.environ["BENTOML_HOME"]
    shutil.copytree(source, target, ignore=shutil.ignore_patterns("prometheus_multiproc_dir"))
    return str(target)


_GRPC_PORTS: dict[str, int] = {}


def server_grpc_port(url: str) -> int:
    return _GRPC_PORTS[url]


@pytest.fixture(scope="session")
def server_url(tiny_exports):
    grpc_port = free_port()
    with serve(CHORUS_GRPC_PORT=str(grpc_port)) as url:
        _GRPC_PORTS[url] = grpc_port
        yield url
