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

import contextlib
import ctypes
import multiprocessing
import os
import queue
import signal
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
from threadpoolctl import threadpool_limits

from analyze.analyzer import AnalysisFailed, FileScores, Outcome
from analyze.detections import Span
from features import DEFAULT_BLOCK_SAMPLES, AudioError, AudioStream, Channels, FrontEnd, FrontEndConfig, NormStats
from layout.machine import usable_cores

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


MESSAGE_WINDOWS = 8
"""Windows per message from a worker to the consumer (fewer only in a file's last message), so
that the results queue's bound in messages is a bound in windows: a block of a 48 kHz file
completes one window, one of an 8 kHz file up to 13 (or more with a short stride)."""


class _Outbox:
    """One file's windows, sent on in messages of MESSAGE_WINDOWS as they complete."""

    def __init__(self, results: Any, index: int):
        self._results, self._index = results, index
        self._features: list[np.ndarray] = []
        self._spans: list[tuple[int, int, int]] = []

    def add(self, features: np.ndarray, spans: list[tuple[int, int, int]]) -> None:
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


def _die_with(parent: int) -> None:
    """End this worker when the run that started it ends, SIGKILL included: an orphan would decode
    on into a queue nobody reads and then wait on it forever. Linux's PR_SET_PDEATHSIG, which
    follows the thread that started the worker: here always the one that closes it. Elsewhere
    orphans remain possible."""
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return
    prctl(1, signal.SIGKILL)  # 1: PR_SET_PDEATHSIG
    if os.getppid() != parent:  # it died before the line above
        os._exit(1)


def featurize_files(specs: Any, tasks: Any, results: Any, background: bool = False, parent: int | None = None, number: int = 0) -> None:
    """Worker `number`: its front end's spec in (from its own queue: it may be started before the
    spec is known), then (index, path) tasks; for each, started, windows, then done or failed, out
    (until a None task, then exit)."""
    if parent is not None:
        _die_with(parent)
    if background:
        _yield_the_cores()
    # One worker per core already: BLAS's own pool of a thread per core in every worker made them
    # spin against each other (the same 2-hour folder: 352x real time with it, ~800x without).
    threadpool_limits(1)
    spec = specs.get()
    if spec is None:  # closed before any work
        return
    frontend = spec.frontend()
    while (task := tasks.get()) is not None:
        index, path = task
        results.put(("started", index, number))  # whose file it is, should this process die on it
        try:
            outbox = _Outbox(results, index)
            with spec.open(frontend, path) as stream:
                for batch in stream:
                    outbox.add(batch.features, [(s.start, s.end, s.channel) for s in batch.spans])
                facts = stream.facts()
            outbox.flush()
            results.put(("done", index, (facts.duration_seconds, facts.sample_rate, facts.channels)))
        except AudioError as error:
            results.put(("failed", index, ("decode", str(error))))
        except OSError as error:
            results.put(("failed", index, ("read", str(error))))
        except Exception as error:  # a fault of ours, not the file's: reported for this file, retried next run
            results.put(("error", index, f"{type(error).__name__}: {error}"))
    results.put(("exit", number, None))


def worker_count(requested: int = 0) -> int:
    """Decode processes for `requested` (0: one per core this process may run on)."""
    return requested or usable_cores()


class DecodeWorkers:
    """The decode + features processes of one run, started before they are given work.

    Spawning one and importing the front end takes ~0.8 s of CPU; `chorus analyze` forks them
    instead, before it loads the model. `start` hands every worker the spec and the paths once;
    `close` stops them whatever state they are in."""

    def __init__(self, count: int, background: bool = False, queue_windows: int = 256, start_method: StartMethod = "spawn"):
        """start_method "fork" only where no model runs in this process yet: a fork of a process that
        runs ONNX Runtime threads may copy a lock one of them holds."""
        self._context: Any = multiprocessing.get_context(start_method)  # typeshed: a BaseContext without Process
        self._background = background
        self.count = count
        self.started = False
        self._spec: FrontEndSpec | None = None
        self._specs = [self._context.SimpleQueue() for _ in range(count)]
        self._tasks: Any = self._context.Queue()
        # Workers write to the pipe from their decoding thread (no feeder thread): one that crashes
        # while decoding holds no lock on it and leaves no half-written message in it.
        self._pipe: Any = self._context.SimpleQueue()
        self.results: queue.Queue[tuple[Any, ...]] = queue.Queue(maxsize=max(1, queue_windows // MESSAGE_WINDOWS))
        self._processes = [self._worker(number, specs) for number, specs in enumerate(self._specs)]
        for process in self._processes:
            process.start()
        self._reader = threading.Thread(target=self._read, name="chorus-decode-results", daemon=True)
        self._reader.start()  # after the forks: a forked worker gets no copy of it

    def _read(self) -> None:
        """Move the workers' messages from the pipe to `results` as they come: a pipe holds ~1.5
        windows, and the workers must go on decoding while the model scores a batch."""
        try:
            while True:
                self.results.put(self._pipe.get())
        except (EOFError, OSError):  # closed
            return

    def _worker(self, number: int, specs: Any) -> Any:
        args = (specs, self._tasks, self._pipe, self._background, os.getpid(), number)
        return self._context.Process(target=featurize_files, args=args, daemon=True)

    def start(self, spec: FrontEndSpec, paths: Sequence[Path]) -> None:
        if self.started:
            raise RuntimeError("these workers have had their run already")
        self.started = True
        self._spec = spec
        for item in enumerate(paths):
            self._tasks.put(item)
        for specs in self._specs:
            self._tasks.put(None)
            specs.put(spec)

    def ended(self, exited: set[int]) -> list[tuple[int, int]]:
        """Workers that ended without saying so (killed, crashed), other than `exited`: number, exit code."""
        return [(n, p.exitcode) for n, p in enumerate(self._processes) if n not in exited and p.exitcode is not None]

    def replace(self, number: int) -> None:
        """Start a worker in the place of `number`, which ended without saying so: it takes up the
        tasks left. Started as the first ones were: a spawned process cannot share queues made
        for forked ones. One more end-of-tasks mark, in case the dead one had taken its own."""
        specs = self._context.SimpleQueue()
        specs.put(self._spec)
        self._processes[number] = self._worker(number, specs)
        self._processes[number].start()
        self._tasks.put(None)

    @property
    def pids(self) -> list[int]:
        return [process.pid for process in self._processes if process.pid is not None]

    @property
    def alive(self) -> int:
        """Worker processes still running."""
        return sum(process.is_alive() for process in self._processes)

    def close(self) -> None:
        for process in self._processes:
            if process.is_alive():
                process.terminate()
            process.join()
        self._pipe.close()  # no writer is left: the reader thread gets to the pipe's end
        deadline = time.monotonic() + 5
        while self._reader.is_alive() and time.monotonic() < deadline:  # free it, should it wait on a full `results`
            with contextlib.suppress(queue.Empty):
                self.results.get(timeout=0.05)

    def __enter__(self) -> DecodeWorkers:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _death(exit_code: int) -> Exception:
    """What a worker's unannounced end means for the file it was decoding. SIGKILL comes from outside
    (the kernel out of memory, a user): not the file's fault, tried again next run. A crash (SIGSEGV
    in a decoder library, say) would come again on the same bytes: the file is failed and journaled."""
    if exit_code == -signal.SIGKILL:
        return RuntimeError("its decoding process was killed (SIGKILL: out of memory?)")
    if exit_code < 0:
        with contextlib.suppress(ValueError):
            return AnalysisFailed("decode", f"the decoder crashed on this file (signal {signal.Signals(-exit_code).name})")
    return AnalysisFailed("decode", f"the decoder crashed on this file (exit status {exit_code})")


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
    queue_windows: int = 256
    """Windows decoded and waiting for the consumer at most, all workers together (~41 KB each for
    birdcall). Several batches' worth, so the workers go on decoding while the model scores a
    batch: with room for 16 windows only, they waited on it and left the cores 22% idle."""
    background: bool = False
    """Workers run on idle CPU time only: a job in a server yields the cores to interactive requests."""
    prestarted: DecodeWorkers | None = None
    """Workers started ahead of the first call (batch.command starts them before it loads the model);
    that call uses them, later ones start their own."""

    def __call__(self, paths: Sequence[Path]) -> Iterator[Outcome]:
        if not paths:
            return
        if self.prestarted is not None and not self.prestarted.started:
            workers = self.prestarted
        else:
            workers = DecodeWorkers(min(worker_count(self.workers), len(paths)), self.background, self.queue_windows)
        with workers:
            workers.start(self.spec, paths)
            yield from self._consume(paths, workers)

    def _consume(self, paths: Sequence[Path], workers: DecodeWorkers) -> Iterator[Outcome]:
        files = {i: _File(Path(p)) for i, p in enumerate(paths)}
        waiting: list[tuple[int, np.ndarray]] = []  # (file index, windows) not scored yet, oldest first
        running, exited = workers.count, set[int]()
        decoding: dict[int, int] = {}  # worker number -> index of the file it decodes
        while running or waiting:
            block = not waiting or sum(len(w) for _, w in waiting) < self.batch_windows
            try:
                message = workers.results.get(block=block, timeout=0.02)
            except queue.Empty:
                message = None
                for number, code in workers.ended(exited) if block else ():  # nothing came for 20 ms: all it sent is in
                    index = decoding.pop(number, None)
                    if index in files:
                        waiting = [(i, w) for i, w in waiting if i != index]
                        yield files.pop(index).path, _death(code)
                    workers.replace(number)
            if message is not None:
                kind, index, payload = message[0], message[1], message[2:]
                if kind in ("windows", "done", "failed", "error") and index not in files:
                    continue  # a file given up on already: its worker died
                if kind == "exit":
                    running -= 1
                    exited.add(index)
                elif kind == "started":
                    decoding[payload[0]] = index
                elif kind == "windows":
                    features, spans = payload
                    files[index].spans.extend(Span(*s) for s in spans)
                    files[index].unscored += len(features)
                    waiting.append((index, features))
                elif kind == "done":
                    files[index].facts = payload[0]
                    decoding = {n: i for n, i in decoding.items() if i != index}
                else:  # failed or error: drop what was queued of the file, report it
                    decoding = {n: i for n, i in decoding.items() if i != index}
                    waiting = [(i, w) for i, w in waiting if i != index]
                    failed = files.pop(index)
                    yield failed.path, AnalysisFailed(*payload[0]) if kind == "failed" else RuntimeError(payload[0])
                    continue
            if waiting and (message is None or sum(len(w) for _, w in waiting) >= self.batch_windows or not running):
                waiting = self._score_some(files, waiting)
            for index in [i for i, f in files.items() if f.facts is not None and f.unscored == 0]:
                yield self._finished(files.pop(index))
        for file in files.values():  # its worker died before saying it had started it: the next run tries again
            yield file.path, RuntimeError("its decoding process ended without a result")

    def _score_some(self, files: dict[int, _File], waiting: list[tuple[int, np.ndarray]]) -> list[tuple[int, np.ndarray]]:
        """Run the model on up to batch_windows of the oldest waiting windows; returns what is left waiting."""
        taken, rest, count = [], [], 0
        for index, windows in waiting:
            room = self.batch_windows - count
            if room <= 0:
                rest.append((index, windows))
                continue
            taken.append((index, windows[:room]))
            if len(windows) > room:
                rest.append((index, windows[room:]))
            count += min(room, len(windows))
        scores = self.score(np.concatenate([w for _, w in taken]))
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
