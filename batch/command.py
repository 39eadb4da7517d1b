"""`chorus analyze`: sources in, tables out, on this machine (LocalPipeline) or on a Ray cluster (RayPipeline)."""

from __future__ import annotations

import contextlib
import math
import sys
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tqdm import tqdm

from analyze.analyzer import Execute
from analyze.chatter import DecoderLog
from analyze.detections import DetectionSettings, read_species_list
from analyze.pipeline import DecodeWorkers, FrontEndSpec, LocalPipeline, StartMethod, worker_count
from analyze.run import Progress, RunConfig, Summary, run
from analyze.sources import expand_sources
from analyze.writers import DEFAULT_FORMATS, check_formats, check_out_dir
from batch.model import RUN_WINDOWS, AnalysisModel, load_analysis_model
from features import Channels


@dataclass(frozen=True)
class AnalyzeOptions:
    sources: Sequence[str]
    """Files, folders, globs or CSV manifests."""
    out: Path
    model: str = "birdcall:latest"
    variant: str = "fp32"
    providers: str = "auto"
    min_confidence: float | None = None
    """None: the calibrated threshold stored with the model."""
    top_k: int | None = 3
    stride_seconds: float | None = None
    """None: the model's own stride."""
    species_file: Path | None = None
    exclude_file: Path | None = None
    merge: bool = False
    channels: Channels = "mix"
    formats: frozenset[str] = DEFAULT_FORMATS
    retry_failed: bool = False
    workers: int = 0
    """Decode processes; 0: one per core."""
    batch_windows: int = 64
    ray: str | None = None
    """A Ray cluster's address ("auto": the one this machine belongs to): run there instead."""
    ray_actors: int = 1
    """Model actors on the Ray cluster."""
    ray_gpus_per_actor: float = 0.0

    def __post_init__(self) -> None:
        problems = [
            message
            for bad, message in (
                (self.workers < 0, f"workers must be 0 (one per core) or more, got {self.workers}"),
                (self.batch_windows < 1, f"batch_windows must be at least 1, got {self.batch_windows}"),
                (self.ray_actors < 1, f"ray_actors must be at least 1, got {self.ray_actors}"),
                (not 0 <= self.ray_gpus_per_actor < math.inf, f"ray_gpus_per_actor must be 0 or more, got {self.ray_gpus_per_actor}"),
                (
                    self.ray_gpus_per_actor > 1 and not float(self.ray_gpus_per_actor).is_integer(),
                    f"ray_gpus_per_actor above 1 must be a whole number of GPUs (Ray's rule), got {self.ray_gpus_per_actor}",
                ),
            )
            if bad
        ]
        if problems:
            raise ValueError("; ".join(problems))


def detection_settings(options: AnalyzeOptions, model: AnalysisModel) -> DetectionSettings:
    labels = model.labels
    return DetectionSettings(
        min_confidence=model.threshold if options.min_confidence is None else options.min_confidence,
        top_k=options.top_k,
        merge=options.merge,
        species=read_species_list(options.species_file, labels) if options.species_file else None,
        exclude=read_species_list(options.exclude_file, labels) if options.exclude_file else frozenset(),
    )


def executor(
    options: AnalyzeOptions, model: AnalysisModel, prestarted: DecodeWorkers | None = None, on_output: DecoderLog | None = None
) -> Execute:
    spec = FrontEndSpec.of(model.frontend, channels=options.channels)
    if options.ray is not None:
        from batch.ray import RayPipeline

        stored = model.stored
        return RayPipeline(
            options.ray,
            stored.path,
            stored.name,
            stored.version,
            options.variant,
            spec,
            batch_windows=options.batch_windows,
            actors=options.ray_actors,
            gpus_per_actor=options.ray_gpus_per_actor,
            providers=options.providers,
        )
    return LocalPipeline(
        model.score,
        spec,
        workers=options.workers,
        batch_windows=options.batch_windows,
        run_windows=RUN_WINDOWS,
        prestarted=prestarted,
        tail_score=model.score_on_every_core,
        prepare=model.open,
        on_output=on_output,
    )


def progress_bar() -> tuple[Callable[[Progress], None], Callable[[], None]]:
    """A callback that shows files done, hours of audio, the real-time factor and the ETA; and its closer."""
    bar: list[tqdm] = []

    def update(progress: Progress) -> None:
        if not bar:
            bar.append(tqdm(total=progress.total, unit="file", desc="analyze", dynamic_ncols=True))
        rate = progress.audio_s / progress.wall_s if progress.wall_s > 0 else 0.0
        bar[0].set_postfix_str(f"{progress.audio_s / 3600:.2f} h of audio, {rate:,.0f}x real time", refresh=False)
        bar[0].update(progress.done - bar[0].n)

    def close() -> None:
        if bar:
            bar[0].close()

    return update, close


def analyze(options: AnalyzeOptions, *, fork_workers: bool = False) -> Summary:
    """Everything is checked (model, species lists, formats, sources) before any file is analyzed.

    fork_workers: start the local decode workers as forks of this process, which has imported the
    front end already, instead of fresh interpreters that import it (~0.8 s of CPU each, start-up
    time on 2 cores). Only for a process that runs no threads of its own yet, as the `chorus
    analyze` command (it falls back to spawning while other Python threads run): a fork copies the
    locks other threads hold. The model's runtime session opens after the workers have their files."""
    # Local decode workers start first, before any model is opened; they get their work once
    # everything is checked.
    start_method: StartMethod = "fork" if fork_workers and threading.active_count() == 1 else "spawn"
    ahead = DecodeWorkers(worker_count(options.workers), start_method=start_method) if options.ray is None else contextlib.nullcontext()
    with ahead as prestarted:
        return _analyze(options, prestarted)


def _analyze(options: AnalyzeOptions, prestarted: DecodeWorkers | None) -> Summary:
    # The runtime session opens once the workers have their files (LocalPipeline.prepare), overlapping
    # their first decoding; a Ray run opens it on the cluster.
    model = load_analysis_model(options.model, options.variant, options.providers, options.stride_seconds, open_now=False)
    detection = detection_settings(options, model)
    formats = check_formats(options.formats, options.channels)
    paths = expand_sources(options.sources)
    check_out_dir(options.out)
    config = RunConfig(
        out_dir=options.out,
        model=model.info(),
        detection=detection,
        formats=formats,
        analyzer_settings={
            "variant": options.variant,
            "stride_seconds": model.frontend.config.stride_seconds,
            "channels": options.channels,
        },
        retry_failed=options.retry_failed,
    )
    update, close = progress_bar()
    said = DecoderLog(options.out)
    try:
        return run(paths, executor(options, model, prestarted, said), config, progress=update)
    finally:
        close()
        said.close()
        if said.files:
            notes = f"the audio decoders printed notes on {said.files} file(s) (damaged frames, most often)"
            print(f"chorus analyze: {notes}: {said.path}", file=sys.stderr)
