"""The data plane: readiness, metadata and inference by model name, plus admission.

Protocol-neutral, as MLServer's DataPlane is: REST, KServe v2 over HTTP and KServe v2 over gRPC are
thin adapters over it and never over each other. Model cores are built on first use, once the
engine is ready, from the exact model versions the engine loaded, so what a response reports is
what ran.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any, NamedTuple, TypeVar

import numpy as np

from service.admission import Admission
from service.engine.client import EngineClient
from service.errors import InvalidParameter, ModelsFailed, NotFound, NotReady, Overloaded, ServiceError
from service.metrics import Metrics
from service.models import MODELS, ServedModel
from service.models.tasks import AudioClassifier, ImageGenerator
from service.settings import ServiceSettings
from service.store import StoredModel
from service.tensors import Tensor

T = TypeVar("T")
SERVER_NAME, SERVER_VERSION = "chorus", "0.1.0"
EXTENSIONS = ("binary_tensor_data", "model_repository")


@dataclass(frozen=True)
class InferenceResult:
    model_name: str
    model_version: str
    outputs: dict[str, np.ndarray]
    """The requested outputs (every output when none was named), in the requested order."""


class Readiness(NamedTuple):
    ready: bool
    reason: str | None = None
    """Why not, when not."""
    for_good: bool = False
    """Not ready, and no wait will change that: the models failed to load (export them again)."""


class DataPlane:
    def __init__(
        self,
        engine: EngineClient,
        settings: ServiceSettings,
        metrics: Metrics,
        kinds: Sequence[type[ServedModel]] = MODELS,
        open_stored: Callable[[str], StoredModel] = StoredModel.resolve,
    ):
        """`open_stored` finds a stored model by tag (name:version): the BentoML store unless a test says otherwise."""
        self.engine = engine
        self.settings = settings
        self.metrics = metrics
        self.admission = Admission(settings.max_in_flight, settings.retry_after_seconds, metrics, settings.max_body_bytes_in_flight)
        self._kinds = {kind.name: kind for kind in kinds}
        self._open_stored = open_stored
        self._models: dict[str, ServedModel] = {}
        self._loading = asyncio.Lock()

    # Models

    @property
    def model_names(self) -> list[str]:
        return list(self._kinds)

    async def _load(self) -> dict[str, ServedModel]:
        if self._models:
            return self._models
        async with self._loading:
            if not self._models:
                info = await self._engine_models()
                self._models = {name: self._build(kind, info[kind.store_name]) for name, kind in self._kinds.items()}
        return self._models

    async def _engine_models(self) -> dict[str, dict[str, str]]:
        """What the engine loaded, once it is ready; its readiness, status and model list asked within engine_check_seconds in all."""
        wait = self.settings.engine_check_seconds
        try:
            async with asyncio.timeout(wait):
                if not await self.engine.is_ready():
                    raise await self._why_not_ready()
                return await self.engine.models()
        except TimeoutError:
            message = f"the inference engine did not answer within {wait:g} s; retry shortly"
            raise NotReady(message, self.settings.retry_after_seconds) from None

    def _build(self, kind: type[ServedModel], info: dict[str, str]) -> ServedModel:
        stored = self._open_stored(f"{info['name']}:{info['version']}")
        return kind.build(stored, info, self.engine, self.settings, self.metrics)

    async def _why_not_ready(self) -> ServiceError:
        status = await self.engine.status()
        if status.error:
            return ModelsFailed(f"the models failed to load and the server will not become ready: {status.error}")
        return NotReady("the models are still loading; retry shortly (GET /readyz says when)", self.settings.retry_after_seconds)

    @property
    def draining(self) -> bool:
        return self.admission.closed

    def start_draining(self) -> None:
        """From now on refuse new requests (503 + Retry-After); those in flight go on."""
        self.admission.closed = True

    async def readiness(self) -> Readiness:
        """What /readyz and the KServe health routes answer."""
        if self.draining:
            return Readiness(False, "the server is shutting down")
        try:
            await self._load()
        except ModelsFailed as exc:
            return Readiness(False, exc.message, for_good=True)
        except Overloaded as exc:  # loading, or the engine not reachable yet
            return Readiness(False, exc.message)
        return Readiness(True)

    def check_name(self, name: str) -> None:
        if name not in self._kinds:
            raise NotFound(f"no model named {name!r}; models: {self.model_names}")

    async def get(self, name: str, version: str | None = None) -> ServedModel:
        """The ready model of this name (and version, when given); NotFound or NotReady otherwise."""
        self.check_name(name)
        model = (await self._load())[name]
        if version is not None and version != model.version:
            raise NotFound(f"model {name!r} has no version {version!r}; versions: [{model.version!r}]")
        return model

    async def classifier(self) -> AudioClassifier:
        """The ready model that classifies recordings (/classify)."""
        return await self._doing(AudioClassifier)

    async def generator(self) -> ImageGenerator:
        """The ready model that generates images (/generate)."""
        return await self._doing(ImageGenerator)

    async def _doing(self, task: type[Any]) -> Any:
        """The ready model that does a task (models/tasks.py): the REST routes find models so, never by name."""
        for model in (await self._load()).values():
            if isinstance(model, task):
                return model
        raise NotFound(f"no served model does {task.__name__}; models: {self.model_names}")

    # Health and metadata

    async def ready(self) -> bool:
        return (await self.readiness()).ready

    async def model_ready(self, name: str, version: str | None = None) -> bool:
        self.check_name(name)
        if not await self.ready():
            return False
        await self.get(name, version)
        return True

    def server_metadata(self) -> dict[str, Any]:
        return {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": list(EXTENSIONS)}

    async def model_metadata(self, name: str, version: str | None = None) -> dict[str, Any]:
        return (await self.get(name, version)).metadata()

    # Inference

    def deadline(self, requested_seconds: float | None) -> float:
        """A client's deadline can shorten, never lengthen, the server's default."""
        default = self.settings.default_deadline_seconds
        return default if requested_seconds is None else min(requested_seconds, default)

    def admitted(self, deadline_seconds: float) -> AbstractAsyncContextManager[None]:
        """A request's admission, held while it runs: refused at once (503) past the in-flight bound,
        504 past its deadline. Adapters enter it before they read a body, so overload costs no upload."""
        return self.admission.admitted(deadline_seconds)

    async def infer(
        self,
        name: str,
        inputs: dict[str, Tensor],
        *,
        version: str | None = None,
        outputs: Sequence[str] = (),
    ) -> InferenceResult:
        """KServe v2 inference of a model; `outputs` names the outputs wanted (all when empty).
        Run it inside `admitted`, entered before the request was read and parsed."""
        model = await self.get(name, version)
        unknown = [o for o in outputs if o not in model.outputs]
        if unknown:
            raise InvalidParameter(f"unknown output(s) {unknown}; this model has {sorted(model.outputs)}")
        produced = await model.infer(inputs)
        return InferenceResult(model.name, model.version, {o: produced[o] for o in (outputs or model.outputs)})
