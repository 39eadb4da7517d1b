"""Batch analysis on a Ray cluster, with Ray Data: the same outcomes as the local pipeline.

Files are a dataset (one block each, so they spread over the nodes); decoding and features run
as CPU tasks (`flat_map`: one row per window, then one closing row per file with its facts or its
failure); the model runs in a pool of actors (`map_batches`, ONNX Runtime, a GPU each when the
cluster has them) on batches of windows from any files; the driver regroups the scored windows by
file and hands each file on once all of its windows are back. The run around it (journal,
outputs) stays on the driver, so resuming and the tables work as they do locally.

The stored model's folder must be readable at the same path on every node (a shared volume on
Kubernetes, see deploy/ray/); each actor checks its digests before it runs.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from analyze.analyzer import READ_STAGE, AnalysisFailed, FileScores, Outcome
from analyze.detections import Span
from analyze.pipeline import FrontEndSpec
from features import AudioError

NO_CHANNEL = -1


def _row(index: int, kind: str, n_features: tuple[int, ...], **values: Any) -> dict[str, Any]:
    """Every row has every column (Ray Data batches need one schema); features only in window rows."""
    row = {
        "index": index,
        "kind": kind,
        "seq": 0,
        "start": 0.0,
        "end": 0.0,
        "channel": NO_CHANNEL,
        "duration": 0.0,
        "rate": 0,
        "channels": 0,
        "windows": 0,
        "message": "",
        "features": np.zeros(n_features, np.float32),
    }
    row.update(values)
    return row


def featurize_rows(row: dict[str, Any], spec: FrontEndSpec) -> Iterator[dict[str, Any]]:
    """One file -> a row per window, then a row with the file's facts (or its failure)."""
    index, path = int(row["index"]), str(row["path"])
    frontend = spec.frontend()
    shape = frontend.config.feature_shape
    seq = 0
    try:
        with spec.open(frontend, path) as stream:
            for batch in stream:
                for features, span in zip(batch.features, batch.spans, strict=True):
                    channel = NO_CHANNEL if span.channel is None else span.channel
                    yield _row(index, "window", shape, seq=seq, start=span.start, end=span.end, channel=channel, features=features)
                    seq += 1
            facts = stream.facts()
        yield _row(index, "done", shape, windows=seq, duration=facts.duration_seconds, rate=facts.sample_rate, channels=facts.channels)
    except AudioError as error:
        yield _row(index, "failed", shape, message=f"decode\t{error}")
    except OSError as error:
        yield _row(index, "failed", shape, message=f"{READ_STAGE}\t{error}")
    except Exception as error:  # a fault of ours: reported for this file, retried next run
        yield _row(index, "error", shape, message=f"{type(error).__name__}: {error}")


class ScoreWindows:
    """A Ray actor: opens the stored model once (digests checked), then scores batches of window rows."""

    def __init__(self, model_dir: str, name: str, version: str, variant: str, providers: str):
        from batch.model import SCORES
        from layout import artifacts
        from service.engine.loaded import open_model
        from service.engine.runtime import CUDA, choose_providers
        from service.models.birdcall import BirdcallModel
        from service.store import StoredModel

        stored = StoredModel(name, version, Path(model_dir))
        chosen = choose_providers(providers)  # in the actor: its GPU, its onnxruntime, CUDA's libraries loaded
        if providers == "cuda" and CUDA not in chosen:
            raise RuntimeError(f"--providers cuda, but this actor's onnxruntime offers no CUDA (a CPU image on a GPU node?): {chosen}")
        self.model = open_model(
            stored, variant, chosen, required=BirdcallModel.stored_files, outputs=(SCORES,), threads=1, lanes=1, max_run_items=8
        )
        self.scores_output = SCORES
        self.n_labels = len(stored.read_json(artifacts.LABELS))

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """The batch's rows with a `scores` column (zeros on the rows that are not windows) and without features."""
        windows = batch["kind"] == "window"
        features = batch.pop("features")
        scores = np.zeros((len(windows), self.n_labels), np.float32)
        if windows.any():
            scores[windows] = self.model.outputs_named({"features": np.ascontiguousarray(features[windows])}, (self.scores_output,))[0]
        batch["scores"] = scores
        return batch


@dataclass
class _File:
    windows: dict[int, tuple[np.ndarray, Span]] = field(default_factory=dict)
    """By seq: a retried task sends the windows it had sent again."""
    expected: int | None = None
    facts: tuple[float, int, int] | None = None


DECODE_RETRIES = 1
"""Tries after the first of a file's decode task whose worker died."""


class ClusterUnavailableError(RuntimeError):
    """`--ray` names a cluster this machine cannot reach."""


@dataclass(frozen=True)
class RayPipeline:
    """An analyze Execute that runs on a Ray cluster."""

    address: str
    """"auto" (the cluster this machine belongs to) or a Ray address."""
    model_dir: Path
    model_name: str
    model_version: str
    variant: str
    spec: FrontEndSpec
    batch_windows: int = 64
    actors: int = 1
    """Model actors; each takes one CPU, or one GPU when gpus_per_actor is set."""
    gpus_per_actor: float = 0.0
    providers: str = "auto"
    """The actors' ONNX Runtime preference (service.engine.runtime.choose_providers): "auto" takes
    CUDA where the actor has a GPU and onnxruntime-gpu, "cpu" never does."""

    def __call__(self, paths: Sequence[Path]) -> Iterator[Outcome]:
        if not paths:
            return
        import ray
        import ray.data

        # No usage reports to Anyscale unless the user opts in (as BentoML's DO_NOT_TRACK). With them
        # on, Ray Data also leaves a thread in this process polling a Prometheus on :9090 for ever.
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            ray.init(address=self.address, ignore_reinit_error=True, logging_level=logging.WARNING)
        except ConnectionError as exc:
            raise ClusterUnavailableError(
                f"no Ray cluster at {self.address!r} ({exc}); start one (`ray start --head`), name its address, or run without --ray"
            ) from None
        providers = self.providers if self.gpus_per_actor else "cpu"  # an actor without a GPU has no CUDA to use
        for problem in self.short_of(ray.cluster_resources()):
            print(f"chorus analyze: warning: {problem}", file=sys.stderr, flush=True)
        items = [{"index": i, "path": str(p)} for i, p in enumerate(paths)]
        spec = self.spec
        # One block per file: a file whose decoder kills its worker (a crash on hostile bytes, the
        # OOM killer) is tried once more, then its block is dropped, and the sweep below fails it
        # alone. Ray Data's defaults, infinite retries and no errored block, would hang the run.
        ray.data.DataContext.get_current().max_errored_blocks = -1
        rows = ray.data.from_items(items, override_num_blocks=len(items)).flat_map(
            lambda row: featurize_rows(row, spec), max_retries=DECODE_RETRIES
        )
        scored = rows.map_batches(
            ScoreWindows,
            fn_constructor_args=(str(self.model_dir), self.model_name, self.model_version, self.variant, providers),
            batch_size=self.batch_windows,
            batch_format="numpy",
            concurrency=self.actors,
            num_gpus=self.gpus_per_actor or None,
        )
        files: dict[int, _File] = {}
        answered: set[int] = set()
        for row in scored.iter_rows():
            index = int(row["index"])
            kind = str(row["kind"])
            if index in answered:  # rows of a retried task after its file's outcome
                continue
            if kind in ("failed", "error"):
                files.pop(index, None)
                answered.add(index)
                message = str(row["message"])
                yield paths[index], AnalysisFailed(*message.split("\t", 1)) if kind == "failed" else RuntimeError(message)
                continue
            file = files.setdefault(index, _File())
            if kind == "window":
                channel = None if int(row["channel"]) == NO_CHANNEL else int(row["channel"])
                file.windows[int(row["seq"])] = (np.asarray(row["scores"]), Span(float(row["start"]), float(row["end"]), channel))
            else:
                file.expected = int(row["windows"])
                file.facts = (float(row["duration"]), int(row["rate"]), int(row["channels"]))
            if file.expected is not None and len(file.windows) == file.expected:
                answered.add(index)
                yield self._finished(paths[index], files.pop(index))
        for index, path in enumerate(paths):
            if index not in answered:
                reason = f"the worker decoding it died {DECODE_RETRIES + 1} times (the decoder crashed, or memory ran out)"
                yield path, AnalysisFailed("decode", reason)

    def short_of(self, resources: dict[str, float]) -> list[str]:
        """What the cluster lacks now for this run. Not refused: an autoscaler (KubeRay's) adds the
        workers that pending actors and tasks ask for; a fixed cluster would wait for ever."""
        problems = []
        cpus, gpus = resources.get("CPU", 0.0), resources.get("GPU", 0.0)
        if self.actors >= cpus:
            problems.append(
                f"{self.actors} model actor(s) hold a CPU each and the cluster has {cpus:g}: none is left to decode, so the run"
                " waits for the autoscaler to add workers; on a cluster without one, use fewer --ray-actors"
            )
        if self.gpus_per_actor and gpus < self.gpus_per_actor:
            problems.append(
                f"the model actors ask for {self.gpus_per_actor:g} GPU(s) each and the cluster has {gpus:g}: they wait for the"
                " autoscaler to add a GPU worker; on a cluster without one, drop --ray-gpus-per-actor"
            )
        return problems

    @staticmethod
    def _finished(path: Path, file: _File) -> Outcome:
        assert file.facts is not None
        ordered = [file.windows[seq] for seq in sorted(file.windows)]
        duration, rate, channels = file.facts
        scores = np.stack([scores for scores, _ in ordered])
        spans = tuple(span for _, span in ordered)
        return path, FileScores(scores=scores, spans=spans, duration_s=duration, sample_rate=rate, channels=channels)
