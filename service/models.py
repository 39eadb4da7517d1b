"""Load exported models from the BentoML model store into ONNX Runtime sessions (no torch)."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import bentoml
import numpy as np
import onnxruntime as ort

from features import FrontEnd, FrontEndConfig, NormStats
from service.lanes import LaneRunner, plan_lanes

log = logging.getLogger("chorus.models")


def choose_providers(preference: str) -> list[str]:
    """CUDA first when asked for (or 'auto') and available; CPU always last, so a GPU-less host falls back."""
    available = ort.get_available_providers()
    if preference in ("auto", "cuda") and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    if preference == "cuda":
        log.warning("CUDA requested but onnxruntime has no CUDAExecutionProvider (%s): using CPU", available)
    return ["CPUExecutionProvider"]


def make_session(path: Path, providers: list[str], threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Spinning threads steal the cores numpy pre-processing needs (measured 4x lower throughput).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    return ort.InferenceSession(str(path), options, providers=providers)


def open_runner(path: Path, providers: list[str], threads: int = 0, lanes: int = 0) -> LaneRunner:
    """A session run the way the engine runs it; threads and lanes 0 mean automatic (service.lanes)."""
    lanes, threads = plan_lanes(lanes, threads, on_gpu=providers[0] != "CPUExecutionProvider")
    return LaneRunner(make_session(path, providers, threads), lanes)


@dataclass
class LoadedModel:
    name: str
    """Model store name (birdcall, frames)."""
    version: str
    variant: str
    path: Path
    runner: LaneRunner
    config: dict
    training_metrics: dict

    @property
    def session(self) -> ort.InferenceSession:
        return self.runner.session

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def run(self, feeds: dict[str, np.ndarray]) -> np.ndarray:
        """The model's first output for a whole batch, its slices run on all lanes at once."""
        return self.runner.run(feeds)

    def info(self) -> dict[str, str]:
        return {"name": self.name, "version": self.version, "variant": self.variant, "provider": self.provider}


def load_model(tag: str, variant: str, providers: list[str], threads: int = 0, lanes: int = 0) -> LoadedModel:
    """Resolve a tag (e.g. birdcall:latest) and open the variant's ONNX file.

    threads and lanes as ServiceSettings.ort_threads / ort_lanes (0: automatic, see service.lanes).
    """
    model = bentoml.models.get(tag)
    path = Path(model.path)
    onnx_path = path / f"{model.tag.name}.{variant}.onnx"
    if not onnx_path.exists():
        raise FileNotFoundError(f"{model.tag} has no {variant} variant ({onnx_path.name}); re-export with it")
    config = json.loads((path / "config.json").read_text())
    metrics_path = path / "metrics.json"
    training_metrics = json.loads(metrics_path.read_text()) if metrics_path.exists() else {}
    runner = open_runner(onnx_path, providers, threads, lanes)
    return LoadedModel(model.tag.name, model.tag.version or "", variant, path, runner, config, training_metrics)


def stored_model_path(name: str, version: str) -> Path:
    return Path(bentoml.models.get(f"{name}:{version}").path)


def birdcall_frontend(path: Path) -> tuple[FrontEnd, list[str]]:
    """The front end and labels stored with the model, so serving features match training exactly."""
    config = json.loads((path / "config.json").read_text())
    labels = json.loads((path / "labels.json").read_text())
    stats = NormStats.load(path / "norm_stats.json")
    return FrontEnd(FrontEndConfig.from_dict(config["frontend"]), stats), labels


def frames_schedule(path: Path) -> tuple[np.ndarray, int]:
    """alphas_cumprod (float64, one per training timestep) and the image size."""
    config = json.loads((path / "config.json").read_text())
    return np.asarray(config["alphas_cumprod"], np.float64), int(config["arch"]["image_size"])
