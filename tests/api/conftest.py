"""The API layer: the real adapters and data plane in-process, over a fake engine and a fake model store.

The fake engine does arithmetic in place of the models (deterministic, instant, per item), so these
tests check what the adapters and the data plane do with requests, not what the models answer.
"""

from __future__ import annotations

import inspect
import json
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from prometheus_client import REGISTRY
from starlette.applications import Starlette

from features import FrontEndConfig, NormStats
from layout import artifacts
from service import adapters
from service.dataplane import DataPlane
from service.engine.client import EngineStatus
from service.engine.contracts import StepPlanes, TimedRows
from service.jobs.store import JobStore
from service.metrics import Metrics
from service.settings import ServiceSettings
from service.store import StoredModel
from tests.conftest import encode

LABELS = ["alpha_warbler", "beta_finch", "gamma_owl", "delta_wren"]
IMAGE_SIZE = 8
EMBEDDING_DIM = 4
THRESHOLD = 0.5
VERSIONS = {"birdcall": "b1", "frames": "f1"}


@dataclass
class FakeEngine:
    """An EngineClient: logits from the mean of each window's features, v = x_t / 2, seeded images."""

    ready: bool = True
    fail: Exception | None = None
    """Raised by every model call when set (an engine that breaks in an unexpected way)."""
    calls: list[tuple[str, int]] = field(default_factory=list)

    load_error: str | None = None
    """What the engine reports when its models failed to load."""

    async def is_ready(self) -> bool:
        return self.ready and self.load_error is None

    async def status(self) -> EngineStatus:
        return EngineStatus(self.ready and self.load_error is None, self.load_error)

    async def models(self) -> dict[str, dict[str, str]]:
        return {name: {"name": name, "version": version, "variant": "fp32", "provider": "fake"} for name, version in VERSIONS.items()}

    def _record(self, method: str, items: int) -> None:
        self.calls.append((method, items))
        if self.fail is not None:
            raise self.fail

    @staticmethod
    def birdcall_rows(windows: np.ndarray) -> np.ndarray:
        """[scores | embedding]: species j scores sigmoid(level * (j - 1.5)) squeezed into [0.01, 0.99]
        (calibrated scores are never certain), the embedding is level * [1..4]."""
        level = windows.astype(np.float64).mean(axis=(1, 2, 3))[:, None]
        scores = 0.01 + 0.98 / (1 + np.exp(-level * (np.arange(len(LABELS)) - 1.5)))
        return np.concatenate([scores, level * np.arange(1, EMBEDDING_DIM + 1)], axis=1).astype(np.float32)

    def batched(self, method: str, model: str, max_items: int) -> Callable[[np.ndarray], Any]:
        async def call(items: np.ndarray) -> np.ndarray:
            assert len(items) <= max_items
            self._record(method, len(items))
            if method == "birdcall_job_windows":
                return TimedRows.pack(self.birdcall_rows(items), 0.001)
            x_t, _ = StepPlanes.unpack(items)
            return x_t / 2

        return call

    def timed(self, method: str, model: str, max_items: int) -> Callable[[np.ndarray], Any]:
        async def call(windows: np.ndarray) -> tuple[np.ndarray, float]:
            assert len(windows) <= max_items
            self._record(method, len(windows))
            return self.birdcall_rows(windows), 0.001

        return call

    async def call(self, method: str, model: str, items: int, **kwargs: Any) -> np.ndarray:
        self._record(method, items)
        rng = np.random.default_rng(kwargs["seed"])
        return rng.integers(0, 256, (kwargs["count"], IMAGE_SIZE, IMAGE_SIZE, 3), dtype=np.uint8)


def _write(directory: Path, files: dict[str, Any]) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    for name, content in files.items():
        (directory / name).write_text(json.dumps(content))
    return directory


@pytest.fixture(scope="session")
def fake_store(tmp_path_factory) -> Callable[[str], StoredModel]:
    """The artifacts each model module reads, in the model-artifact layout, keyed by tag."""
    root = tmp_path_factory.mktemp("fake-store")
    frontend = FrontEndConfig()
    folders = {
        "birdcall": _write(
            root / "birdcall",
            {
                artifacts.CONFIG: {artifacts.FRONTEND: frontend.to_dict(), artifacts.ARCH: {}},
                artifacts.LABELS: LABELS,
                artifacts.NORM_STATS: NormStats.identity(frontend.n_mels).to_dict(),
                artifacts.CALIBRATION: {"method": "temperature", "temperature": 1.0, "threshold": THRESHOLD},
            },
        ),
        "frames": _write(
            root / "frames",
            {
                artifacts.CONFIG: {
                    artifacts.ALPHAS_CUMPROD: np.linspace(0.999, 0.01, 1000).tolist(),
                    artifacts.ARCH: {artifacts.IMAGE_SIZE: IMAGE_SIZE},
                }
            },
        ),
    }

    def open_stored(tag: str) -> StoredModel:
        name, version = tag.split(":")
        assert version == VERSIONS[name], tag
        return StoredModel(name, version, folders[name])

    return open_stored


@pytest.fixture(scope="session")
def metrics() -> Metrics:
    """One set per process: prometheus_client refuses to register a metric twice."""
    return Metrics()


@pytest.fixture
def engine() -> FakeEngine:
    return FakeEngine()


@pytest.fixture
def settings() -> ServiceSettings:
    return ServiceSettings(grpc_port=0)


@pytest.fixture
def plane(engine, settings, metrics, fake_store) -> DataPlane:
    return DataPlane(engine, settings, metrics, open_stored=fake_store)


@pytest.fixture(scope="session")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="session")
async def one_event_loop() -> AsyncIterator[None]:
    """Holds anyio's test runner, so every async test of this layer runs on one event loop.

    grpc.aio binds its completion-queue poller to the loop it first ran on: with a new loop per test,
    a later test's server got "Event loop is closed" from the poller now and then.
    """
    yield


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Every anyio test of this layer asks for one_event_loop first (sync tests cannot ask for an async fixture)."""
    here = Path(__file__).parent
    for item in items:  # the hook sees the items of every layer
        if (
            here in item.path.parents
            and item.get_closest_marker("anyio")
            and isinstance(item, pytest.Function)
            and inspect.iscoroutinefunction(item.obj)  # a sync test of an anyio module has no loop to hold
        ):
            item.fixturenames.insert(0, "one_event_loop")


def http_app(plane: DataPlane, jobs: JobStore) -> Starlette:
    """The HTTP adapters (REST, KServe v2, jobs) as the service mounts them, over `plane` and `jobs`."""
    app = adapters.http_app()
    app.state.plane, app.state.jobs = plane, jobs
    return app


@pytest.fixture
def store(tmp_path) -> JobStore:
    return JobStore(tmp_path / "jobs")


@pytest.fixture
async def http(plane, store) -> AsyncIterator[httpx.AsyncClient]:
    app = http_app(plane, store)
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://chorus.test") as client:
        yield client


def counted_errors(route: str, kind: str, status: int) -> float:
    labels = {"route": route, "type": kind, "status": str(status)}
    return REGISTRY.get_sample_value("chorus_errors_total", labels) or 0.0


@pytest.fixture
def wav() -> bytes:
    """7.5 s of a 2 kHz tone at 16 kHz: two windows."""
    t = np.arange(int(7.5 * 16_000)) / 16_000
    return encode((0.3 * np.sin(2 * np.pi * 2000 * t)).astype(np.float32), 16_000, "WAV", "PCM_16")
