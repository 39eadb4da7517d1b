"""The tasks the REST routes serve, each an interface a model implements.

/classify and /classify/batch need an AudioClassifier, /generate an ImageGenerator; the data plane
finds the registered model that does the task, so the REST adapter never names a model.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np

from features import FrontEnd


@dataclass(frozen=True)
class ClassifyOptions:
    top_k: int = 3
    """Most species listed per window (every detection still counts in the summary)."""
    timeline: bool = True
    """Include the per-window detections."""
    min_confidence: float | None = None
    """A species is detected in a window where its score is at least this; None: the model's calibrated threshold."""
    embeddings: bool = False
    """Include each window's embedding."""
    spectrogram: bool = False
    """Include the recording's spectrogram as the model heard it (a PNG)."""


class AudioClassifier(ABC):
    info: dict[str, str]
    """name, version, variant, provider of the model that answers."""
    labels: list[str]
    default_top_k: int
    threshold: float
    """The calibrated decision threshold, the default min_confidence."""
    frontend: FrontEnd
    """How recordings become windows: the model's own front-end config and statistics."""
    max_batch: int
    """Most windows of one engine call."""

    @abstractmethod
    async def classify(self, data: bytes, options: ClassifyOptions) -> dict[str, Any]:
        """A recording's file bytes -> detections per window and per recording, audio facts, model and timings."""

    @abstractmethod
    async def job_scores(self, features: np.ndarray) -> np.ndarray:
        """Scores of an analysis job's windows, at the lower priority: they never delay classify."""


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
