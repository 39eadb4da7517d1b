"""One `chorus analyze` run: skip what the journal has, analyze the rest, then rebuild every output.

The outputs are always rebuilt from the journal's stored results, in the order of the paths
given, never from the order in which files finished: an interrupted run followed by a rerun,
or a pool of workers finishing files in any order, gives the same bytes as one serial run.

Failures come in two kinds. `AnalysisFailed` (the file is unreadable, empty, corrupt) is
journaled: the file stays in the errors table of every later run and is not analyzed again
until it changes on disk or the run asks `retry_failed`, since the same bytes would fail the
same way. Any other exception from one file is listed for this run only, and retried on the
next. BaseException (Ctrl-C, SystemExit) stops the run; the journal keeps what was finished.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from analyze.analyzer import READ_STAGE, AnalysisFailed, Execute, FileScores
from analyze.atomic import remove_leftovers
from analyze.clock import recording_start
from analyze.detections import DetectionSettings, detect
from analyze.journal import FOLDER, FileKey, Journal, settings_digest
from analyze.records import FileFailure, FileResult, ModelInfo
from analyze.writers import (
    DEFAULT_FORMATS,
    FORMATS,
    check_formats,
    common_root,
    per_file_tables,
    remove_outputs,
    remove_stale_tables,
    write_combined_outputs,
    write_file_outputs,
)


@dataclass(frozen=True)
class RunConfig:
    out_dir: Path
    model: ModelInfo
    detection: DetectionSettings = field(default_factory=DetectionSettings)
    formats: frozenset[str] = DEFAULT_FORMATS
    """Outputs to write; see analyze.writers.FORMATS."""
    analyzer_settings: Mapping[str, Any] = field(default_factory=dict)
    """The engine's settings that change its scores (stride, channel mode, ...): part of the resume key."""
    retry_failed: bool = False
    """Analyze again the files the journal lists as failed, even if they did not change."""


@dataclass(frozen=True)
class Progress:
    """Handed to the progress callback each time a file finishes."""

    finished: FileResult | FileFailure
    done: int
    """Files finished in this run, this one included."""
    total: int
    """Files to analyze in this run (those taken from the journal are not counted)."""
    audio_s: float
    """Seconds of audio analyzed in this run so far."""
    wall_s: float


@dataclass(frozen=True)
class Start:
    """Handed to the start callback once, before the first file is analyzed."""

    to_analyze: int
    """Files to analyze in this run."""
    from_journal: int
    """Files finished in an earlier run (analyzed or failed there), taken from the journal."""
    audio_s_from_journal: float
    """Seconds of audio of those of them that were analyzed."""


@dataclass(frozen=True)
class Summary:
    """The run in numbers; the CLI prints it as the last stdout line."""

    files: int
    files_ok: int
    """Files in the outputs, analyzed now or earlier."""
    files_failed: int
    """Rows of the errors table."""
    files_skipped: int
    """Files whose result (ok or failed) came from the journal of an earlier run."""
    audio_hours: float
    """Audio in the outputs."""
    detections: int
    files_band_limited: int
    """Files in the outputs recorded below twice the model's top frequency: nothing in its top bands,
    where no species can then be found (features.FrontEndConfig.band_limited)."""
    audio_formats: int
    """Distinct (sample rate, channels) among the files in the outputs. Raven opens a file sequence
    (combined.selections.txt over combined.list.txt) only when there is one."""
    wall_s: float
    realtime_factor: float
    """Seconds of audio analyzed in this run per wall-clock second."""

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def run(
    paths: Sequence[Path],
    execute: Execute,
    config: RunConfig,
    *,
    progress: Callable[[Progress], None] | None = None,
    on_start: Callable[[Start], None] | None = None,
) -> Summary:
    """Analyze `paths` (unique, in output order, as expand_sources returns them) into config.out_dir."""
    started = time.monotonic()
    if not paths or len(set(paths)) != len(paths):
        raise ValueError("paths must be given, each once")
    formats = check_formats(config.formats, config.analyzer_settings.get("channels", "mix"))
    config.detection.species_mask(config.model.labels)  # unknown species names fail before any work
    config.out_dir.mkdir(parents=True, exist_ok=True)
    settings = settings_digest({"detection": asdict(config.detection), "analyzer": dict(config.analyzer_settings)})
    root = common_root(paths)

    with Journal.open(config.out_dir) as journal, _stopped_part_way(config.out_dir):
        remove_leftovers(config.out_dir, fenced=FOLDER)  # under the journal's lock: no other run writes here, but in its own folder
        written_with = {"model": [config.model.name, config.model.version], "settings": settings}
        last = journal.outputs_written_with()
        if last is not None and {name: last.get(name) for name in written_with} != written_with:
            # Tables of the formats not asked now were made with other settings or another model.
            remove_outputs(config.out_dir, paths, root, frozenset(FORMATS) - formats)
        elif last is not None:
            # The formats earlier runs wrote here are kept current too: left as they were, they would
            # still hold files deleted or changed since, contradicting this run's tables.
            formats |= frozenset(last.get("formats", ())) & frozenset(FORMATS)
        recorded = journal.recorded_tables() | per_file_tables(config.out_dir, paths, root, formats)
        journal.record_tables(recorded)  # before any is written: a kill leaves none unrecorded
        keys: dict[Path, FileKey] = {}
        transient: dict[Path, FileFailure] = {}  # not journaled: the next run tries these again
        todo = []
        audio_s_from_journal = 0.0
        for path in paths:
            try:
                keys[path] = FileKey.of(path, config.model, settings)
            except OSError as error:
                transient[path] = FileFailure(path, READ_STAGE, str(error))
                continue
            taken = _from_journal(journal, keys[path], config.retry_failed)
            if taken is None:
                todo.append(path)
            else:
                audio_s_from_journal += taken
        if on_start is not None:
            on_start(Start(len(todo), len(keys) - len(todo), audio_s_from_journal))

        audio_s = 0.0
        for done, (path, outcome) in enumerate(execute(todo), start=1):
            finished, journaled = _record(path, outcome, keys[path], journal, config)
            if isinstance(finished, FileResult):
                write_file_outputs(config.out_dir, finished, root, config.model, formats)
                audio_s += finished.duration_s
            elif not journaled:
                transient[path] = finished
            if progress is not None:
                progress(Progress(finished, done, len(todo), audio_s, time.monotonic() - started))

        ok_keys, failures = _rebuild_lists(paths, keys, transient, journal)
        results = _StoredResults(journal, ok_keys)
        fresh = set(todo)
        audio_total, detections, band_limited, audio_formats = 0.0, 0, 0, set()
        for result in results:
            if result.path not in fresh:  # finished in an earlier run: its files may be missing or of other formats
                write_file_outputs(config.out_dir, result, root, config.model, formats)
            audio_total += result.duration_s
            detections += len(result.detections)
            band_limited += result.sample_rate < 2 * config.model.high_hz
            audio_formats.add((result.sample_rate, result.channels))
        kept = per_file_tables(config.out_dir, [Path(key.path) for key in ok_keys], root, formats)
        remove_stale_tables(config.out_dir, recorded, kept)
        journal.record_tables(kept)
        write_combined_outputs(config.out_dir, results, failures, config.model, formats)
        journal.record_outputs_written_with({**written_with, "formats": sorted(formats)})

    wall_s = time.monotonic() - started
    return Summary(
        files=len(paths),
        files_ok=len(ok_keys),
        files_failed=len(failures),
        files_skipped=len(keys) - len(todo),
        audio_hours=audio_total / 3600,
        detections=detections,
        files_band_limited=band_limited,
        audio_formats=len(audio_formats),
        wall_s=wall_s,
        realtime_factor=audio_s / wall_s if wall_s > 0 else 0.0,
    )


class RunStoppedError(Exception):
    """A run stopped part-way by what no file's failure explains (the output disk full or gone, a
    name the output folder cannot hold): what finished is in the journal, the outputs are not written."""


@contextlib.contextmanager
def _stopped_part_way(out_dir: Path) -> Iterator[None]:
    try:
        yield
    except (OSError, ValueError) as error:
        raise RunStoppedError(
            f"the run stopped part-way ({type(error).__name__}: {error}); the files finished so far are kept in"
            f" {out_dir / FOLDER}, and the same command resumes from them once the cause is fixed"
        ) from error


def _from_journal(journal: Journal, key: FileKey, retry_failed: bool) -> float | None:
    """Seconds of audio of a file an earlier run finished (0 for one that failed there), or None
    when this run must analyze it."""
    entry = journal.entry(key)
    if entry is None:
        return None
    if entry.status == "failed":
        return None if retry_failed else 0.0
    result = journal.load_result(key)
    return None if result is None else result.duration_s


def _record(
    path: Path, outcome: FileScores | Exception, key: FileKey, journal: Journal, config: RunConfig
) -> tuple[FileResult | FileFailure, bool]:
    """Journal one file's outcome if it is final; returns its result or failure, and whether it was journaled."""
    if isinstance(outcome, AnalysisFailed):
        failure = FileFailure(path, outcome.stage, outcome.reason)
        if outcome.stage == READ_STAGE:  # the file could not be opened or read (a card reader dropped out)
            return failure, False
        journal.record_failure(key, failure)
        return failure, True
    if not isinstance(outcome, FileScores):
        return FileFailure(path, "internal", f"{type(outcome).__name__}: {outcome}"), False
    labels, clock_start = config.model.labels, recording_start(path)
    try:
        detections = detect(outcome.scores, outcome.spans, labels, config.detection, path=path, clock_start=clock_start)
    except ValueError as error:  # scores of the wrong shape or range: the engine's fault, not the file's
        return FileFailure(path, "internal", str(error)), False
    result = FileResult(path, outcome.duration_s, outcome.sample_rate, outcome.channels, tuple(detections))
    journal.record_result(key, result)
    return result, True


def _rebuild_lists(
    paths: Sequence[Path], keys: dict[Path, FileKey], transient: dict[Path, FileFailure], journal: Journal
) -> tuple[list[FileKey], list[FileFailure]]:
    """The ok files' keys and the failures, both in the order of `paths`."""
    ok_keys, failures = [], []
    for path in paths:
        entry = journal.entry(keys[path]) if path in keys else None
        if path in transient:
            failures.append(transient[path])
        elif entry is None:
            raise RuntimeError(f"the analyzer gave no outcome for {path}")
        elif entry.status == "ok":
            ok_keys.append(entry.key)
        else:
            failures.append(FileFailure(path, entry.stage, entry.reason))
    return ok_keys, failures


@dataclass(frozen=True)
class _StoredResults:
    """The ok files' results, loaded from the journal afresh on each iteration: one file in memory at a time."""

    journal: Journal
    keys: Sequence[FileKey]

    def __iter__(self) -> Iterator[FileResult]:
        for key in self.keys:
            result = self.journal.load_result(key)
            if result is None:
                raise RuntimeError(f"the stored result of {key.path} is gone or unreadable; run again to analyze it anew")
            yield result
