"""Runs analysis jobs inside an API worker: the run of `chorus analyze`, fed by the engine at the
lower priority, decoding in a process that runs on idle CPU time, its state on disk as it goes.

One job at a time per worker (a job already saturates what a server should give to bulk work);
others wait as "queued". A job that a restart interrupted is resumed by whichever worker takes its
lock first, from its journal: the files it finished are not analyzed again.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import functools
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from analyze.detections import DetectionSettings
from analyze.pipeline import FrontEndSpec, LocalPipeline
from analyze.records import ModelInfo
from analyze.run import Progress, RunConfig, Start, Summary, run
from analyze.sources import expand_sources
from features.decode import AudioReader
from features.errors import AudioError
from service.dataplane import DataPlane
from service.jobs.store import FINISHED, JobRequest, JobState, JobStore
from service.jobs.submit import in_client_terms, outside
from service.metrics import Metrics
from service.models.tasks import AudioClassifier

log = logging.getLogger("chorus.jobs")
SAVE_EVERY_SECONDS = 1.0
POLL_SECONDS = 1.0
"""How often a job that waits (for a lock another process holds, for the models) looks again: no
event crosses processes, and a second is soon enough for a cancel or a stop to be seen."""


class JobCancelled(BaseException):
    """Raised inside a run when its cancel was asked: nothing catches it on the way out."""


class ServerStopping(BaseException):
    """Raised inside a run when the server stops: the job stays running on disk, for the next start."""


def audio_seconds(paths: list[Path], most: float) -> float:
    """Total duration from the files' headers, each at most `most` (the limit a run holds it to),
    read as a run opens them (AudioReader: containers checked by their bytes before libsndfile
    parses them); 0 for a file that would fail, or whose header states no length."""
    total = 0.0
    for path in paths:
        try:
            with AudioReader(path) as reader:
                total += min(reader.header_seconds or 0.0, most)
        except (AudioError, OSError):
            continue
    return total


def job_files(sources: list[str], allowed: list[Path], most_seconds: float) -> tuple[list[Path], float]:
    """The job's files and their audio seconds from the headers. Their links are checked again
    here, at run time: one leading outside the allowed folders may have been made since the
    submission was checked. File-system work that may take a while: run it off the event loop."""
    paths = expand_sources(sources)
    escaping = outside(paths, allowed)
    if escaping:
        raise PermissionError(f"{len(escaping)} file(s) of the job lead outside the analyze root, through links made since its submission")
    return paths, audio_seconds(paths, most_seconds)


_COUNTING = threading.Lock()
"""One recount at a time, so one that began earlier cannot set the gauge after a later one has."""


def count_jobs(store: JobStore, metrics: Metrics) -> None:
    """The jobs gauge, by state, from the folders on disk (any process may have changed them). It
    lists every job's folder: from the event loop, run it in a thread (recount_jobs)."""
    with _COUNTING:
        for status, count in store.counts().items():
            metrics.jobs.labels(status).set(count)


async def recount_jobs(store: JobStore, metrics: Metrics) -> None:
    """count_jobs off the event loop, which serves interactive calls meanwhile."""
    await asyncio.to_thread(count_jobs, store, metrics)


async def expire_periodically(store: JobStore, keep_hours: float | None, metrics: Metrics, uploads_keep_hours: float | None = None) -> None:
    """Delete finished jobs kept `keep_hours` and uploads no job took kept `uploads_keep_hours` (the
    jobs' when None; JobStore.expire), checking 20 times in the shorter span and at least every 10
    minutes, until cancelled; nothing when both are None."""
    keeps = [None if hours is None else hours * 3600 for hours in (keep_hours, uploads_keep_hours)]
    if keeps == [None, None]:
        return
    while True:
        try:
            # Off the event loop: it reads every job's state and may remove many files.
            jobs_before, uploads_before = (None if keep is None else time.time() - keep for keep in keeps)
            deleted = await asyncio.to_thread(store.expire, jobs_before, uploads_before)  # uploads None: the jobs' time
            if deleted:
                log.info("deleted %d expired job(s) and upload(s): %s", len(deleted), ", ".join(deleted))
                await recount_jobs(store, metrics)
        except Exception:  # one pass failing (a file system error) must not end the expiry for good
            log.exception("expiring jobs and uploads failed; trying again later")
        await asyncio.sleep(min(600.0, *(keep / 20 for keep in keeps if keep is not None)))


ADOPT_SECONDS = 30.0
"""How often each API worker looks for orphaned jobs (JobStore.orphans): the longest a job whose
pod went away waits for another to take it up."""


async def adopt_orphans_periodically(runner: JobRunner, every: float = ADOPT_SECONDS) -> None:
    """Every `every` seconds, while this worker runs no job, start here the oldest job no process
    means to run (JobStore.orphans): one at a time, and only when idle, so that a busy worker does
    not take up (follow) a lost pod's jobs that idle workers would run at once."""
    while True:
        await asyncio.sleep(every)
        if not runner.idle:
            continue
        try:
            orphans = await asyncio.to_thread(runner.orphans)  # a flock per unfinished job: the file system's time
        except Exception:  # one pass failing (a file system error) must not end the adoption for good
            log.exception("looking for orphaned jobs failed; trying again later")
            continue
        if orphans and runner.idle:
            log.info("taking up job %s, which no worker meant to run any more (%d such)", orphans[0], len(orphans))
            runner.start(orphans[0])


def model_info(model: AudioClassifier) -> ModelInfo:
    config = model.frontend.config
    return ModelInfo(model.info["name"], model.info["version"], tuple(model.labels), low_hz=config.f_min, high_hz=config.f_max)


class JobRunner:
    def __init__(self, store: JobStore, plane: DataPlane):
        self.store = store
        self.plane = plane
        self._one_at_a_time = asyncio.Lock()
        self._stopping = threading.Event()
        self._running: dict[str, asyncio.Task] = {}

    def detection(self, request: JobRequest, model: AudioClassifier) -> DetectionSettings:
        """The request's detection options, species names checked against the model (UnknownSpeciesError)."""
        settings = DetectionSettings(
            min_confidence=model.threshold if request.min_confidence is None else request.min_confidence,
            top_k=request.top_k,
            merge=request.merge,
            species=frozenset(request.species) if request.species is not None else None,
            exclude=frozenset(request.exclude),
        )
        settings.species_mask(model.labels)
        return settings

    def stop(self) -> None:
        """The server is stopping: each running job stops at its next batch of windows, before the
        engine goes (it waits for the API workers to drain), and stays "running" on disk, so the
        next start resumes it from its journal. Safe from a signal handler: it only sets a flag."""
        self._stopping.set()

    def start(self, job_id: str) -> asyncio.Task:
        """The job's run, started once per process."""
        if job_id not in self._running or self._running[job_id].done():
            task = asyncio.create_task(self.run(job_id), name=f"chorus-job-{job_id}")
            self._running[job_id] = task
            # Forgotten once it ends: a long-lived server runs thousands of jobs.
            task.add_done_callback(lambda _: self._running.pop(job_id, None) if self._running.get(job_id) is task else None)
        return self._running[job_id]

    def resume_all(self) -> None:
        """Start every job a restart left queued or running (the others' locks decide who runs it)."""
        for job_id in self.store.reindex():
            with contextlib.suppress(FileNotFoundError):  # deleted since it was listed (by a client, or expired)
                self.store.requeue_if_abandoned(job_id)
                self.start(job_id)
        count_jobs(self.store, self.plane.metrics)

    @property
    def idle(self) -> bool:
        """No job runs here, nor waits for its turn to."""
        return not self._one_at_a_time.locked()

    def orphans(self) -> list[str]:
        """JobStore.orphans, or none while this server stops (it would take up what it leaves)."""
        return [] if self._stopping.is_set() else self.store.orphans()

    async def run(self, job_id: str) -> JobState:
        try:
            # Held until the run ends: while any process holds it the job is not an orphan.
            followers = await asyncio.to_thread(self.store.follow, job_id)
        except FileNotFoundError:
            return JobState(status="failed", error="the job was deleted")
        try:
            while True:
                # One job at a time runs here; a job another process holds is waited for outside that
                # turn, so that after a restart, when every worker starts every job left, each worker
                # runs one while the others' are followed, rather than all waiting on the same one.
                async with self._one_at_a_time:
                    if self._stopping.is_set():  # queued behind a job the stop ended: the next start runs it
                        return self.store.state(job_id)
                    with self.store.running(job_id) as mine:
                        if mine:
                            return await self._run(job_id)
                # Another process holds the job: it runs it (follow its state on disk: no event crosses
                # processes), or only looks at it a moment (a cancel, a delete, a restart's check), so
                # the lock is tried again each time.
                state = self.store.state(job_id)
                if state.status in FINISHED:
                    return state
                await asyncio.sleep(POLL_SECONDS)
        except FileNotFoundError:  # deleted by a client once it had finished elsewhere
            return JobState(status="failed", error="the job was deleted")
        finally:
            followers.close()

    async def _run(self, job_id: str) -> JobState:
        state = self.store.state(job_id)
        if state.status in FINISHED:
            return state
        request = self.store.request(job_id)
        try:
            while True:  # a job resumed at start waits for the models
                if self.store.cancel_asked(job_id):  # asked while it waited, or while another process held its lock
                    raise JobCancelled
                if self._stopping.is_set():  # the models will not come: an engine that stopped never gets ready
                    raise ServerStopping
                if (await self.plane.readiness()).ready:
                    break
                await asyncio.sleep(POLL_SECONDS)
            model = await self.plane.classifier()
            root = self.plane.settings.analyze_root
            allowed = [self.store.home, *([Path(root)] if root else [])]
            paths, seconds = await asyncio.to_thread(job_files, request.sources, allowed, self.plane.settings.max_job_audio_seconds)
            if self.store.cancel_asked(job_id):  # asked while a large folder was listed: never shown running
                raise JobCancelled
            state.status = "running"
            state.files_total = len(paths)
            state.audio_seconds_total = round(seconds, 3)
            self.store.save_state(job_id, state)
            await recount_jobs(self.store, self.plane.metrics)  # never raises: counts() skips jobs deleted meanwhile
            config = RunConfig(
                out_dir=self.store.folder(job_id) / "out",
                model=model_info(model),
                detection=self.detection(request, model),
                formats=frozenset(request.formats),
                analyzer_settings={"stride_seconds": model.frontend.config.stride_seconds, "channels": request.channels},
            )
            pipeline = LocalPipeline(
                self._scorer(job_id, model, state, asyncio.get_running_loop()),
                FrontEndSpec.of(
                    model.frontend,
                    channels=request.channels,
                    max_seconds=self.plane.settings.max_job_audio_seconds,
                    max_samples=self.plane.settings.max_job_audio_samples,
                ),
                workers=1,
                batch_windows=model.max_batch,
                background=True,  # decoding on idle CPU time only: interactive requests first
            )
            progress, started = self._progress(job_id, state), self._started(job_id, state)
            summary = await self._to_its_end(functools.partial(run, paths, pipeline, config, progress=progress, on_start=started))
            state.status, state.summary = "done", summary.as_dict()
            state.audio_seconds_done, state.files_done = state.audio_seconds_total, state.files_total
            log.info("job %s done: %s", job_id, state.summary)
        except ServerStopping:
            log.info("job %s stopped with the server; the next start resumes it", job_id)
            return state  # not saved: "running" on disk is what the next start requeues
        except JobCancelled:
            state.status = "cancelled"
            log.info("job %s cancelled", job_id)
        except Exception as exc:  # the job fails; the server goes on
            state.status, state.error = "failed", in_client_terms(f"{type(exc).__name__}: {exc}", self._server_folders())
            log.exception("job %s failed", job_id)
        self.store.save_state(job_id, state)
        await recount_jobs(self.store, self.plane.metrics)
        return state

    def _server_folders(self) -> dict[Path, str]:
        """The folders whose place on the server a failed job's error does not tell (in_client_terms)."""
        root = self.plane.settings.analyze_root
        roots = [Path(root), Path(root).resolve()] if root else []
        homes = [self.store.home, self.store.home.resolve()]
        # The longer first: a jobs folder may lie under the analyze root.
        folders = {**dict.fromkeys(homes, "the jobs folder"), **dict.fromkeys(roots, "the analyze root")}
        return dict(sorted(folders.items(), key=lambda item: -len(str(item[0]))))

    async def _to_its_end(self, work: Callable[[], Summary]) -> Summary:
        """`work` (a job's run) in a thread. When this is cancelled (the server stops) the run goes
        on in its thread: it is told to stop at its next batch and waited for, so that the job's
        lock is held until nothing writes to the job's folder any more; otherwise another server on
        the same jobs volume (a rolling update) would take the job and fail it on its journal."""
        in_thread = asyncio.ensure_future(asyncio.to_thread(work))
        try:
            return await asyncio.shield(in_thread)
        except asyncio.CancelledError:
            self.stop()
            with contextlib.suppress(BaseException):  # ServerStopping, or whatever the stop caused
                await in_thread
            raise

    def _scorer(
        self, job_id: str, model: AudioClassifier, state: JobState, loop: asyncio.AbstractEventLoop
    ) -> Callable[[np.ndarray], np.ndarray]:
        """Scores through the engine at the lower priority, from the run's thread; progress by the window."""
        stride = model.frontend.config.stride_seconds
        saved = [time.monotonic()]
        lock = threading.Lock()

        def score(windows: np.ndarray) -> np.ndarray:
            if self._stopping.is_set():
                raise ServerStopping
            if self.store.cancel_asked(job_id):
                raise JobCancelled
            pending = asyncio.run_coroutine_threadsafe(model.job_scores(windows), loop)
            while True:  # an engine that stopped first never answers: look up now and then
                try:
                    scores = pending.result(timeout=0.5)
                    break
                except concurrent.futures.TimeoutError:
                    if self._stopping.is_set():
                        pending.cancel()
                        raise ServerStopping from None
            with lock:
                state.audio_seconds_done = min(state.audio_seconds_total, state.audio_seconds_done + len(windows) * stride)
                self.plane.metrics.job_audio_seconds.inc(len(windows) * stride)
                if time.monotonic() - saved[0] > SAVE_EVERY_SECONDS:
                    self.store.save_state(job_id, state)
                    saved[0] = time.monotonic()
            return scores

        return score

    def _started(self, job_id: str, state: JobState) -> Callable[[Start], None]:
        def started(start: Start) -> None:
            # A resumed job starts from what its journal holds, not from the progress its last run
            # saved (which counted windows of files cut short, scored again now).
            # Counted as _progress counts: a file this run does not analyze (from the journal, or unreadable) is done.
            state.files_done = state.files_total - start.to_analyze
            state.audio_seconds_done = min(state.audio_seconds_total, start.audio_s_from_journal)
            self.store.save_state(job_id, state)

        return started

    def _progress(self, job_id: str, state: JobState) -> Callable[[Progress], None]:
        def progress(update: Progress) -> None:
            # A resumed job's files taken from its journal are done too (Progress counts this run's).
            state.files_done = state.files_total - update.total + update.done
            self.store.save_state(job_id, state)

        return progress
