"""A stored model opened in the runtime: what the engine (and in-process callers) run."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from service.engine.runtime import Runner, open_runner
from service.store import StoredModel


@dataclass
class LoadedModel:
    stored: StoredModel
    variant: str
    """ONNX variant: fp32, int8 or fp16."""
    runner: Runner

    @property
    def name(self) -> str:
        return self.stored.name

    @property
    def config(self) -> dict[str, Any]:
        return self.stored.config

    def run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        """Every output of the model for a whole batch, its slices run on all lanes at once."""
        return self.runner.run(feeds)

    def info(self) -> dict[str, str]:
        """Name, version, variant and provider: what /v2 metadata, responses and metrics report."""
        return {"name": self.stored.name, "version": self.stored.version, "variant": self.variant, "provider": self.runner.provider}


def load_model(tag: str, variant: str, providers: list[str], threads: int = 0, lanes: int = 0) -> LoadedModel:
    """Resolve a tag (e.g. name:latest) and open the variant's ONNX file.

    threads and lanes as ServiceSettings.ort_threads / ort_lanes (0: automatic, see runtime.plan_lanes).
    """
    stored = StoredModel.resolve(tag)
    return LoadedModel(stored, variant, open_runner(stored.onnx_path(variant), providers, threads, lanes))
