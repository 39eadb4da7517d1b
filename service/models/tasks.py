"""The tasks the REST routes serve, each an interface a model implements.

/classify and /classify/batch need an AudioClassifier, /generate an ImageGenerator; the data plane
finds the registered model that does the task, so the REST adapter never names a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClassifyOptions:
    top_k: int = 3
    """Labels per window and overall."""
    timeline: bool = True
    """Include the per-window timeline."""
    min_confidence: float = 0.0
    """Leave out labels scored below this."""


class AudioClassifier(ABC):
    info: dict[str, str]
    """name, version, variant, provider of the model that answers."""
    labels: list[str]
    default_top_k: int

    @abstractmethod
    async def classify(self, data: bytes, options: ClassifyOptions) -> dict[str, Any]:
        """A recording's file bytes -> ranking, per-window timeline, audio facts, model and timings."""


@dataclass(frozen=True)
class GenerateRequest:
    count: int = 1
    steps: int = 50
    seed: int = 0


class ImageGenerator(ABC):
    info: dict[str, str]
    """name, version, variant, provider of the model that answers."""

    @abstractmethod
    async def generate(self, request: GenerateRequest, timeout_seconds: float) -> tuple[np.ndarray, dict[str, float]]:
        """[count, H, W, 3] uint8 images and timings (ms); work past timeout_seconds is dropped."""
