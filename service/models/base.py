"""What the data plane knows about a served model, whatever it is."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any, ClassVar

import numpy as np

from service.engine.client import EngineClient
from service.metrics import Metrics
from service.settings import ServiceSettings
from service.store import StoredModel
from service.tensors import Tensor


class ServedModel(ABC):
    """One model as the protocols see it: its name, version, metadata and tensor inference.

    A subclass is one model module's core: its pre- and post-processing, what it reads from the
    model store, its KServe metadata and its limits. It reaches the engine only through the
    EngineClient it is built with, so the same core serves under BentoML and in-process.
    """

    store_name: ClassVar[str]
    """Name of the model in the BentoML store, as the engine's `models()` reports it."""
    name: ClassVar[str]
    """Name the protocols serve it under (KServe model name)."""
    outputs: ClassVar[tuple[str, ...]]
    """Output tensor names, in the order they are returned when a request names none."""
    stored_files: ClassVar[tuple[str, ...]]
    """Artifact files its readers need besides the ONNX file: the engine refuses a model without them."""

    def __init__(self, info: dict[str, str]):
        self.info = info
        """name, version, variant, provider: as the engine loaded it."""

    @property
    def version(self) -> str:
        return self.info["version"]

    @classmethod
    @abstractmethod
    def build(
        cls, stored: StoredModel, info: dict[str, str], engine: EngineClient, settings: ServiceSettings, metrics: Metrics
    ) -> ServedModel:
        """The core for the stored version the engine loaded (`info` as the engine reports it)."""

    @abstractmethod
    def metadata(self) -> dict[str, Any]:
        """KServe v2 model metadata: inputs, outputs, parameters."""

    @abstractmethod
    async def infer(self, inputs: dict[str, Tensor]) -> dict[str, np.ndarray]:
        """KServe v2 inference: checked input tensors by name -> every output by name."""
