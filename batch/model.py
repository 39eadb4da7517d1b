"""The birdcall model as a batch analysis uses it: the exported model from the model store, checked
and opened by the service's runtime module, its front end and labels from the stored files."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np

from analyze.records import ModelInfo
from features import FrontEnd
from layout import artifacts
from service.engine.loaded import LoadedModel, load_model
from service.engine.runtime import choose_providers
from service.models.birdcall import BirdcallModel, stored_frontend

SCORES = "scores"
"""The exported model's output of independent calibrated per-species scores."""
DEFAULT_THRESHOLD = 0.5


@dataclass(frozen=True)
class AnalysisModel:
    loaded: LoadedModel
    frontend: FrontEnd
    labels: tuple[str, ...]
    threshold: float
    """The calibrated decision threshold stored with the model: the default min_confidence."""

    def score(self, windows: np.ndarray) -> np.ndarray:
        """Normalized log-mel windows -> [n, n_labels] scores."""
        names = [spec.name for spec in self.loaded.runner.outputs]
        return self.loaded.run({"features": windows})[names.index(SCORES)]

    def info(self) -> ModelInfo:
        config = self.frontend.config
        stored = self.loaded.stored
        return ModelInfo(stored.name, stored.version, self.labels, low_hz=config.f_min, high_hz=config.f_max)


def load_analysis_model(
    tag: str = "birdcall:latest", variant: str = "fp32", providers: str = "auto", stride_seconds: float | None = None
) -> AnalysisModel:
    """Open the model as the engine does (digests checked), on one runtime thread: the decode
    workers have the other cores. `stride_seconds` moves the windows (a whole number of hops)."""
    loaded = load_model(tag, variant, choose_providers(providers), required=BirdcallModel.stored_files, threads=1, lanes=1, max_run_items=8)
    if SCORES not in [spec.name for spec in loaded.runner.outputs]:
        raise ValueError(
            f"{loaded.stored.name}:{loaded.stored.version} has no {SCORES!r} output; export it again with chorus export birdcall"
        )
    frontend = stored_frontend(loaded.stored)
    if stride_seconds is not None:
        frontend = FrontEnd(dataclasses.replace(frontend.config, stride_seconds=stride_seconds), frontend.stats)
    labels = tuple(loaded.stored.read_json(artifacts.LABELS))
    calibration = artifacts.read_json(loaded.stored.path, artifacts.CALIBRATION, default={})
    return AnalysisModel(loaded, frontend, labels, float(calibration.get("threshold", DEFAULT_THRESHOLD)))
