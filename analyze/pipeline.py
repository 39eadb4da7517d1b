"""Batch analysis: decode + features in worker processes, and one model consumer in this process
that batches windows across files. `chorus analyze` runs it on every core with the model in this
process; the service's analysis jobs run it with a background worker and the engine as the model.

The workers stream each file (features.FrontEnd.stream: bounded memory whatever its length) and
send its windows as they complete; the consumer runs the model on batches of up to
`batch_windows` windows, whichever files they come from, and hands each file's scores on as soon
as its last window is scored. A bounded queue between them keeps memory bounded: workers wait
when the model falls behind. A worker that dies on a file (a decoder crashing on its bytes) fails
that file, and a new worker takes up the rest.
"""

from __future__ import annotations

import collections
import contextlib
import logging
import multiprocessing
import os
import queue
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from multiprocessing.connection import Connection, wait
from pathlib import Path
from typing import Any, Literal, Protocol

import numpy as np

from analyze.analyzer import READ_STAGE, AnalysisFailed, FileScores, Outcome
from analyze.chatter import StderrCapture
from analyze.detections import Span
from features import DEFAULT_BLOCK_SAMPLES, AudioError, AudioStream, Channels, FrontEnd, FrontEndConfig, NormStats
from layout.machine import die_with_parent, hold_blas_to_one_thread, usable_cores

_log = logging.getLogger(__name__)
StartMethod = Literal["spawn", "fork"]
Score = Callable[[np.ndarray], np.ndarray]
"""Normalized log-mel windows [n, 1, n_mels, n_frames] -> scores [n, n_labels]."""


@dataclass(frozen=True)
class FrontEndSpec:
    """What a worker needs to rebuild the model's front end (picklable)."""

    config: dict[str, Any]
    stats: dict[str, list[float]]
    channels: Channels = "mix"
    max_seconds: float | None = None
    max_samples: int | None = None
    block_samples: int = DEFAULT_BLOCK_SAMPLES

    def frontend(self) -> FrontEnd:
        return FrontEnd(FrontEndConfig.from_dict(self.config), NormStats.from_dict(self.stats))

    def open(self, frontend: FrontEnd, path: str | Path) -> AudioStream:
        """A recording opened for streaming with these options and limits."""
        return frontend.stream(
            path, channels=self.channels, max_seconds=self.max_seconds, max_samples=self.max_samples, block_samples=self.block_samples
        )

    @classmethod
    def of(cls, frontend: FrontEnd, **options: Any) -> FrontEndSpec:
        return cls(frontend.config.to_dict(), frontend.stats.to_dict(), **options)


def _yield_the_cores() -> None:
    """Run only on CPU time nothing else wants: Linux's SCHED_IDLE (a niced process still takes a
    share of a busy core, ~10% at nice 10, and that share lands on interactive latency), else nice 19."""
    if hasattr(os, "sched_setscheduler") and hasattr(os, "SCHED_IDLE"):
        os.sched_setscheduler(0, os.SCHED_IDLE, os.sched_param(0))
    else:
        os.nice(19)


WORKER_NICENESS = 10
"""Added to a local run's decode workers' nice value, so that the model runs first."""

MESSAGE_WINDOWS = 8
"""Windows per message from a worker to the consumer (fewer only in a file's last message), so
that the results queue's bound in messages is a bound in windows: a block of a 48 kHz file
completes one window, one of an 8 kHz file up to 13 (or more with a short stride)."""


class _Outbox:
    """One file's windows, sent on in messages of MESSAGE_WINDOWS as they complete."""

    def __init__(self, results: Any, index: int):
        self._results, self._index = results, index
        self._features: list[np.ndarray] = []
        self._spans: list[tuple[float, float, int | None]] = []

    def add(self, features: np.ndarray, spans: list[tuple[float, float, int | None]]) -> None:
        self._features.append(features)
        self._spans.extend(spans)
        while len(self._spans) >= MESSAGE_WINDOWS:
            self._send(MESSAGE_WINDOWS)

    def flush(self) -> None:
        if self._spans:
            self._send(len(self._spans))

    def _send(self, count: int) -> None:
        features = np.concatenate(self._features) if len(self._features) > 1 else self._features[0]
        self._results.put(("windows", self._index, features[:count], self._spans[:count]))
        self._features = [features[count:]] if count < len(features) else []
        del self._spans[:count]


class Channel(Protocol):
    """A worker's line to the run."""

    def spec(self) -> FrontEndSpec | None:
        """The front end to build (None: stop); waits for it, since a worker may start before the run does."""

    def next_task(self) -> tuple[int, Path] | None:
        """The next file to analyze, as (index, path); None: no more."""

    def put(self, message: tuple[Any, ...]) -> None:
        """Send a message about the file in hand (or the worker's exit) to the run."""


def featurize_files(channel: Channel, background: bool = False, take_output: Callable[[], str] | None = None) -> None:
    """A worker: its front end's spec in, then files one by one; for each, its windows, then done or
    failed, out; exit when no file is left. take_output: what the decoders printed since it was last
    called (StderrCapture.take), sent as ("said", index, text) before each file's done or failed."""
    if background:
        _yield_the_cores()
    else:
        # The model's consumer is the run's critical path. With every process runnable, the
        # scheduler shared the cores equally and the model got ~70% of one; behind it, the workers
        # take what it leaves (6 paired runs on a 2-hour folder: 5.97 s at nice 0, 5.83 at 8, 5.77 at 19).
        os.nice(WORKER_NICENESS)
    hold_blas_to_one_thread()
    spec = channel.spec()
    if spec is None:
        return
    frontend = spec.frontend()
    while (task := channel.next_task()) is not None:
        index, path = task
        try:
            outbox = _Outbox(channel, index)
            with spec.open(frontend, path) as stream:
                for batch in stream:
                    outbox.add(batch.features, [(s.start, s.end, s.channel) for s in batch.spans])
                facts = stream.facts()
            outbox.flush()
            result: tuple[Any, ...] = ("done", index, (facts.duration_seconds, facts.sample_rate, facts.channels))
        except AudioError as error:
            result = ("failed", index, ("decode", str(error)))
        except OSError as error:
            result = ("failed", index, (READ_STAGE, str(error)))
        except Exception as error:  # a fault of ours, not the file's: reported for this file, retried next run
            result = ("error", index, f"{type(error).__name__}: {error}")
        if take_output is not None and (said := take_output()):
            channel.put(("said", index, said))
        channel.put(result)
    channel.put(("exit", None, None))


def worker_count(requested: int = 0) -> int:
    """Decode processes for `requested` (0: one per core this process may run on)."""
    return requested or usable_cores()


class _PipeChannel:
    """A worker's end of its own pipe, used from its decoding thread only: nothing (no lock, no
    queue) is shared with the other workers, so one that dies, even half way through a message,
    stops only its own pipe. It asks for each file as it is ready for it."""

    def __init__(self, connection: Connection):
        self._connection = connection

    def spec(self) -> FrontEndSpec | None:
        spec: FrontEndSpec | None = self._connection.recv()
        return spec

    def next_task(self) -> tuple[int, Path] | None:
        self._connection.send(("ready", None, None))
        task: tuple[int, Path] | None = self._connection.recv()
        return task

    def put(self, message: tuple[Any, ...]) -> None:
        self._connection.send(message)


def _decode_worker(connection: Connection, background: bool, parent: int) -> None:
    """A worker process's entry: the pipe tells the run which worker it is."""
    # Ctrl-C reaches every process of the terminal's group: the run handles it and stops its workers,
    # which would otherwise each print a traceback of wherever they were.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # An orphan would decode on into a queue nobody reads, then wait on it for ever. The thread
    # that starts a worker is the one that closes it (DecodeWorkers).
    die_with_parent(signal.SIGKILL, parent)
    with StderrCapture() as capture:
        featurize_files(_PipeChannel(connection), background, capture.take)


class DecodeWorkers:
    """The decode + features processes of one run, started before they are given work.

    Spawning one and importing the front end takes ~0.8 s of CPU; `chorus analyze` forks them
    instead, before it loads the model. `start` hands every worker the spec and the paths once;
    `close` stops them whatever state they are in.

    Each worker has a pipe of its own, on which it asks for files one at a time. A thread here
    hands them out, saying ("started", index, number) in `results` for each, and moves the
    workers' messages into `results` (a pipe holds ~1.5 windows: the workers must go on decoding
    while the model scores a batch). When a worker's pipe ends without its exit message, it adds
    ("ended", number, exit code) after the last message that worker sent."""

    def __init__(self, count: int, background: bool = False, queue_windows: int = 256, start_method: StartMethod = "spawn"):
        """start_method "fork" only where no model runs in this process yet: a fork of a process that
        runs ONNX Runtime threads may copy a lock one of them holds. Replacements are always spawned."""
        self._start_context: Any = multiprocessing.get_context(start_method)  # typeshed: a BaseContext without Process
        self._spawn: Any = multiprocessing.get_context("spawn")  # for replacements: by then model threads may run here
        self._background = background
        self.count = count
        self.started = False
        self.released = 0
        """Workers told that no file is left: they are leaving, and their cores with them."""
        self._spec: FrontEndSpec | None = None
        self._todo: collections.deque[tuple[int, Path]] = collections.deque()
        self.results: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=max(1, queue_windows // MESSAGE_WINDOWS))
        self._lock = threading.Lock()
        self._processes: dict[int, Any] = {}
        self._pipes: dict[Connection, int] = {}
        self._closing = threading.Event()
        # Wakes the reader thread out of its wait for the pipes: a new pipe to watch, or the run closes.
        self._wake_wait, self._wake = multiprocessing.Pipe(duplex=False)
        for number in range(count):
            self._launch(number, self._start_context)
        self._reader = threading.Thread(target=self._read, name="chorus-decode-results", daemon=True)
        self._reader.start()  # after the forks: a forked worker gets no copy of it

    def _launch(self, number: int, context: Any) -> None:
        mine, theirs = multiprocessing.Pipe()
        process = context.Process(target=_decode_worker, args=(theirs, self._background, os.getpid()), daemon=True)
        process.start()
        theirs.close()  # the worker's copy is the only one left: its end is the pipe's end
        with self._lock:
            self._processes[number], self._pipes[mine] = process, number
            if self._spec is not None:
                mine.send(self._spec)
        self._wake.send_bytes(b"")

    def _read(self) -> None:
        try:
            self._read_pipes()
        except Exception as error:  # a fault of ours: the run must stop, not wait for ever
            self._put(("broken", None, f"{type(error).__name__}: {error}"))

    def _read_pipes(self) -> None:
        exited: set[int] = set()
        while not self._closing.is_set():
            with self._lock:
                pipes = dict(self._pipes)
            ready = wait([*pipes, self._wake_wait])
            if self._wake_wait in ready:
                self._wake_wait.recv_bytes()
            for pipe, number in pipes.items():
                if pipe not in ready:
                    continue
                try:
                    message: tuple[Any, ...] = pipe.recv()
                except (EOFError, OSError):  # the worker is gone (half a message, if any, is dropped)
                    with self._lock:
                        del self._pipes[pipe]
                        process = self._processes[number]
                    pipe.close()
                    if number in exited:
                        exited.discard(number)
                        continue
                    process.join(timeout=5)
                    message = ("ended", number, process.exitcode)
                if message[0] == "ready":
                    self._hand_out(pipe, number)
                    continue
                if message[0] == "exit":
                    exited.add(number)
                self._put(message)

    def _hand_out(self, pipe: Connection, number: int) -> None:
        with self._lock:
            task = self._todo.popleft() if self._todo else None
        try:
            pipe.send(task)
        except OSError:  # it died since it asked: the file goes to the next that asks
            if task is not None:
                with self._lock:
                    self._todo.appendleft(task)
            return
        if task is None:
            self.released += 1  # only this thread writes it
        else:
            self._put(("started", task[0], number))  # before anything the worker says of it

    def _put(self, message: tuple[Any, ...]) -> None:
        while not self._closing.is_set():
            with contextlib.suppress(queue.Full):
                self.results.put(message, timeout=0.1)
                return

    def start(self, spec: FrontEndSpec, paths: Sequence[Path]) -> None:
        if self.started:
            raise RuntimeError("these workers have had their run already")
        self.started = True
        with self._lock:
            self._spec = spec
            self._todo.extend(enumerate(paths))
            for pipe in self._pipes:
                pipe.send(spec)

    def replace(self, number: int) -> None:
        """Spawn a worker in the place of `number`, which died on a file: it takes up the files left."""
        self._launch(number, self._spawn)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes.values() if process.pid is not None]

    @property
    def alive(self) -> int:
        """Worker processes still running."""
        return sum(process.is_alive() for process in self._processes.values())

    def close(self) -> None:
        """Stop the workers and the reader thread; a second call does nothing."""
        if self._closing.is_set():
            return
        for process in self._processes.values():
            if process.is_alive():
                process.terminate()
            process.join()
        self._closing.set()
        self._wake.send_bytes(b"")
        self._reader.join()
        for pipe in (*self._pipes, self._wake, self._wake_wait):
            pipe.close()

    def __enter__(self) -> DecodeWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


_CRASHES = frozenset({signal.SIGSEGV, signal.SIGBUS, signal.SIGILL, signal.SIGFPE, signal.SIGABRT})


def _death(exit_code: int | None) -> Exception:
    """What a worker's unannounced end means for the file it was decoding. A crash (SIGSEGV in a
    decoder library on hostile bytes, say) would come again on the same bytes: the file fails and
    is journaled. Anything else (SIGKILL from the kernel out of memory, a signal from a user) is
    not the file's fault: it fails this run only and is tried again by the next."""
    if exit_code is not None and exit_code < 0:
        try:
            name = signal.Signals(-exit_code).name
        except ValueError:
            name = f"signal {-exit_code}"
        if -exit_code in _CRASHES:
            return AnalysisFailed("decode", f"the decoder crashed on this file ({name})")
        return RuntimeError(f"its decoding process ended on it ({name})")
    return RuntimeError(f"its decoding process ended on it (exit status {exit_code})")


def _log_output(path: Path, text: str) -> None:
    _log.warning("the decoder said, reading %s: %s", path, text.strip())


@dataclass
class _File:
    path: Path
    scores: list[np.ndarray] = field(default_factory=list)
    spans: list[Span] = field(default_factory=list)
    unscored: int = 0
    facts: tuple[float, int, int] | None = None


@dataclass(frozen=True)
class LocalPipeline:
    """An analyze Execute: paths in, each file's scores (or its failure) out, in the order files finish."""

    score: Score
    spec: FrontEndSpec
    workers: int = 0
    """Worker processes; 0: one per core (the consumer's model runs share them)."""
    batch_windows: int = 64
    """Most windows of one model run; smaller when nothing else is waiting."""
    run_windows: int = 1
    """While workers decode, windows are scored in whole multiples of this (the model's run size,
    batch.model.RUN_WINDOWS) and the rest wait for more: what shares a call then depends on timing,
    but not the size of the runs that make a window's scores. The last windows go at the end."""
    queue_windows: int = 256
    """Windows decoded and waiting for the consumer at most, all workers together (~41 KB each for
    birdcall). Several batches' worth, so the workers go on decoding while the model scores a
    batch: with room for 16 windows only, they waited on it and left the cores 22% idle."""
    background: bool = False
    """Workers run on idle CPU time only: a job in a server yields the cores to interactive requests."""
    prestarted: DecodeWorkers | None = None
    """Workers started ahead of the first call (batch.command starts them before it loads the model);
    that call uses them, later ones start their own."""
    tail_score: Score | None = None
    """Scores once a worker has been told that no file is left, on the cores the workers leave: the
    run's last windows, up to the queue's worth, would otherwise be scored on one core while the
    others idle. None: `score` throughout."""
    prepare: Callable[[], object] | None = None
    """Called once the workers have their files, before their first window is read: opening the model
    there overlaps the first files' decoding. What it raises ends the run before any outcome."""
    on_output: Callable[[Path, str], object] | None = None
    """Given what the decoders printed while reading a file (mpg123's notes on damaged MP3 frames,
    say), with the file's path (analyze.chatter). None: logged as a warning naming the file."""

    @property
    def _batch(self) -> int:
        """batch_windows, at least one run."""
        return max(self.batch_windows, self.run_windows)

    def __call__(self, paths: Sequence[Path]) -> Iterator[Outcome]:
        if not paths:
            return
        if self.prestarted is not None and not self.prestarted.started:
            workers = self.prestarted
        else:
            workers = DecodeWorkers(min(worker_count(self.workers), len(paths)), self.background, self.queue_windows)
        with workers:
            workers.start(self.spec, paths)
            if self.prepare is not None:
                self.prepare()
            yield from self._consume(paths, workers)

    def _consume(self, paths: Sequence[Path], workers: DecodeWorkers) -> Iterator[Outcome]:
        files = {i: _File(Path(p)) for i, p in enumerate(paths)}
        waiting: list[tuple[int, np.ndarray]] = []  # (file index, windows) not scored yet, oldest first
        queued = 0  # windows in `waiting`
        running = workers.count
        decoding: dict[int, int] = {}  # worker number -> index of the file it decodes

        def drop(index: int) -> tuple[list[tuple[int, np.ndarray]], int]:
            """`waiting` without the windows of file `index`, and their count."""
            kept = [(i, w) for i, w in waiting if i != index]
            return kept, sum(len(w) for _, w in kept)

        while running or waiting:
            try:
                message = workers.results.get(block=queued < self._batch, timeout=0.02)
            except queue.Empty:
                message = None
            if message is not None:
                kind, index, payload = message[0], message[1], message[2:]
                if kind == "exit":
                    running -= 1
                elif kind == "ended":  # worker `index` died; everything it sent came before this
                    running -= 1
                    dead_on = decoding.pop(index, None)
                    if dead_on in files:
                        waiting, queued = drop(dead_on)
                        yield files.pop(dead_on).path, _death(payload[0])
                    if dead_on is not None:  # it died on a file, not before any: a new one takes up the rest
                        workers.replace(index)
                        running += 1
                    continue
                elif kind == "started":
                    decoding[payload[0]] = index
                elif kind == "said":
                    (self.on_output or _log_output)(Path(paths[index]), payload[0])
                elif kind == "broken":
                    raise RuntimeError(f"reading the decode workers failed: {payload[0]}")
                elif kind == "windows":
                    features, spans = payload
                    files[index].spans.extend(Span(*s) for s in spans)
                    files[index].unscored += len(features)
                    waiting.append((index, features))
                    queued += len(features)
                else:  # done, failed or error: its worker has moved on
                    decoding = {n: i for n, i in decoding.items() if i != index}
                    if kind == "done":
                        files[index].facts = payload[0]
                    else:  # drop what was queued of the file, report it
                        waiting, queued = drop(index)
                        failed = files.pop(index)
                        yield failed.path, AnalysisFailed(*payload[0]) if kind == "failed" else RuntimeError(payload[0])
                        continue
            if waiting and (message is None or queued >= self._batch or not running):
                score = self.tail_score if self.tail_score is not None and workers.released else self.score
                waiting = self._score_some(files, waiting, score, whole_runs=running > 0)
                queued = sum(len(w) for _, w in waiting)
            for index in [i for i, f in files.items() if f.facts is not None and f.unscored == 0]:
                yield self._finished(files.pop(index))
        for file in files.values():  # its worker died before saying it had started it: the next run tries again
            yield file.path, RuntimeError("its decoding process ended without a result")

    def _score_some(
        self, files: dict[int, _File], waiting: list[tuple[int, np.ndarray]], score: Score, whole_runs: bool
    ) -> list[tuple[int, np.ndarray]]:
        """Run the model on up to batch_windows of the oldest waiting windows (whole runs of
        run_windows only, when asked); returns what is left waiting."""
        take = min(self._batch, sum(len(w) for _, w in waiting))
        if whole_runs:
            take -= take % self.run_windows
        if take == 0:
            return waiting
        taken, rest, count = [], [], 0
        for index, windows in waiting:
            room = take - count
            if room <= 0:
                rest.append((index, windows))
                continue
            taken.append((index, windows[:room]))
            if len(windows) > room:
                rest.append((index, windows[room:]))
            count += min(room, len(windows))
        scores = score(np.concatenate([w for _, w in taken]))
        offset = 0
        for index, windows in taken:
            files[index].scores.append(scores[offset : offset + len(windows)])
            files[index].unscored -= len(windows)
            offset += len(windows)
        return rest

    @staticmethod
    def _finished(file: _File) -> Outcome:
        assert file.facts is not None
        duration, rate, channels = file.facts
        scores = np.concatenate(file.scores) if file.scores else np.zeros((0, 0), np.float32)
        return file.path, FileScores(scores=scores, spans=tuple(file.spans), duration_s=duration, sample_rate=rate, channels=channels)
