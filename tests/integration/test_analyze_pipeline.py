"""The local batch pipeline: worker processes decode and featurize, one consumer scores windows
batched across files, and each file gets exactly the scores of its own windows."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import psutil
import pytest

from analyze.analyzer import AnalysisFailed, FileScores
from analyze.pipeline import MESSAGE_WINDOWS, WORKER_NICENESS, DecodeWorkers, FrontEndSpec, LocalPipeline, featurize_files
from features import FrontEnd
from tests.conftest import ROOT, encode


def fake_score(windows: np.ndarray) -> np.ndarray:
    """Per-window arithmetic only (in float64, so a batch's size cannot move the rounding): a
    window's scores cannot depend on its batch mates."""
    level = windows.astype(np.float64).mean(axis=(1, 2, 3))[:, None]
    return (level * np.arange(1, 4)).astype(np.float32)


@pytest.fixture(scope="module")
def recordings(tmp_path_factory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("recordings")
    rng = np.random.default_rng(0)

    def noise(seconds: float, rate: int, channels: int = 1) -> np.ndarray:
        return (0.1 * rng.standard_normal((int(seconds * rate), channels))).astype(np.float32)

    files = {
        "long.flac": encode(noise(47.0, 44_100, 2), 44_100, "FLAC", "PCM_16"),
        "short.wav": encode(noise(3.0, 16_000), 16_000, "WAV", "PCM_16"),
        "mid.mp3": encode(noise(12.0, 22_050), 22_050, "MP3", "MPEG_LAYER_III"),
        "stereo.ogg": encode(noise(9.0, 48_000, 2), 48_000, "OGG", "VORBIS"),
        "broken.wav": encode(noise(5.0, 16_000), 16_000, "WAV", "PCM_16")[:20],  # cut inside its header
        "text.mp3": b"not audio at all, only text",
    }
    paths = {}
    for name, data in files.items():
        (folder / name).write_bytes(data)
        paths[name] = folder / name
    return paths


def outcomes(pipeline: LocalPipeline, paths: list[Path]) -> dict[str, FileScores | Exception]:
    found = {path.name: outcome for path, outcome in pipeline(paths)}
    assert sorted(found) == sorted(p.name for p in paths)  # every file exactly once
    return found


@pytest.mark.parametrize("batch_windows", [1, 7, 64])
def test_each_file_gets_the_scores_of_its_own_windows(recordings, batch_windows):
    frontend = FrontEnd()
    # The tail's scorer (more lanes once the workers leave) is the same model: its batches land in the right files too.
    pipeline = LocalPipeline(fake_score, FrontEndSpec.of(frontend), workers=2, batch_windows=batch_windows, tail_score=fake_score)
    found = outcomes(pipeline, list(recordings.values()))
    for name in ("long.flac", "short.wav", "mid.mp3", "stereo.ogg"):
        analysis = frontend.analyze(recordings[name])
        result = found[name]
        assert isinstance(result, FileScores), result
        np.testing.assert_array_equal(result.scores, fake_score(analysis.windows.features))
        assert [(s.start, s.end) for s in result.spans] == [(s.start, s.end) for s in analysis.windows.spans]
        assert result.duration_s == analysis.audio.duration_seconds and result.channels == analysis.audio.channels
    for name in ("broken.wav", "text.mp3"):
        assert isinstance(found[name], AnalysisFailed) and found[name].stage == "decode", found[name]


@pytest.mark.parametrize("batch_windows", [5, 64])
def test_while_workers_decode_windows_are_scored_in_whole_runs(recordings, batch_windows):
    """Only the run's last call may hold a part of a run (batch.model pads it): which windows share
    a call depends on timing, the size of the runs that make their scores must not."""
    calls: list[int] = []

    def counting_score(windows: np.ndarray) -> np.ndarray:
        calls.append(len(windows))
        return fake_score(windows)

    frontend = FrontEnd()
    pipeline = LocalPipeline(counting_score, FrontEndSpec.of(frontend), workers=2, batch_windows=batch_windows, run_windows=8)
    found = outcomes(pipeline, list(recordings.values()))
    assert all(n % 8 == 0 for n in calls[:-1]) and max(calls) <= max(batch_windows, 8), calls
    np.testing.assert_array_equal(found["long.flac"].scores, fake_score(frontend.analyze(recordings["long.flac"]).windows.features))


class ListChannel:
    """A worker's line to the run, for a worker run in this process."""

    def __init__(self, spec: FrontEndSpec, tasks: list[tuple[int, Path]]):
        self._spec, self._tasks = spec, list(tasks)
        self.asked = 0
        self.sent: list[tuple] = []

    def spec(self) -> FrontEndSpec:
        return self._spec

    def next_task(self) -> tuple[int, Path] | None:
        self.asked += 1
        return self._tasks.pop(0) if self._tasks else None

    def put(self, message: tuple) -> None:
        self.sent.append(message)


def test_a_worker_sends_each_files_windows_in_order_in_messages_of_at_most_message_windows(recordings):
    # Blocks of ~12 s of the 44.1 kHz stereo file complete several windows each; 3 s makes one.
    names = ["long.flac", "short.wav"]
    channel = ListChannel(FrontEndSpec.of(FrontEnd(), block_samples=1 << 20), list(enumerate(recordings[n] for n in names)))
    featurize_files(channel)
    assert channel.sent[-1] == ("exit", None, None) and channel.asked == 3  # one file at a time, then "no more"
    for index, name in enumerate(names):
        *windows, done = [m for m in channel.sent[:-1] if m[1] == index]
        assert done[0] == "done" and all(m[0] == "windows" for m in windows)
        sizes = [len(m[2]) for m in windows]
        assert all(size == MESSAGE_WINDOWS for size in sizes[:-1]) and 0 < sizes[-1] <= MESSAGE_WINDOWS, sizes
        assert all(len(m[2]) == len(m[3]) for m in windows)
        expected = FrontEnd().analyze(recordings[name])
        np.testing.assert_array_equal(np.concatenate([m[2] for m in windows]), expected.windows.features)
        assert [tuple(s) for m in windows for s in m[3]] == [(s.start, s.end, s.channel) for s in expected.windows.spans]


def test_channels_each_are_analyzed_on_their_own(recordings):
    frontend = FrontEnd()
    pipeline = LocalPipeline(fake_score, FrontEndSpec.of(frontend, channels="each"), workers=1)
    result = outcomes(pipeline, [recordings["stereo.ogg"]])["stereo.ogg"]
    assert isinstance(result, FileScores)
    by_channel = {c: [s for s in result.spans if s.channel == c] for c in (0, 1)}
    assert len(by_channel[0]) == len(by_channel[1]) == len(result.spans) // 2 > 0
    expected = frontend.analyze(recordings["stereo.ogg"], channels="each")
    np.testing.assert_array_equal(np.sort(result.scores, axis=0), np.sort(fake_score(expected.windows.features), axis=0))


def test_what_a_decoder_prints_about_a_damaged_file_reaches_the_run_with_that_files_path(tmp_path, recordings):
    """mpg123 prints notes on damaged frames to stderr: in a worker they are kept per file, not
    written between the progress bar's redraws."""
    mp3 = recordings["mid.mp3"].read_bytes()
    middle = len(mp3) // 3
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(mp3[:middle] + np.random.default_rng(1).bytes(3000) + mp3[middle + 3000 :])
    said: list[tuple[str, str]] = []
    spec = FrontEndSpec.of(FrontEnd())
    pipeline = LocalPipeline(fake_score, spec, workers=2, on_output=lambda path, text: said.append((path.name, text)))
    found = outcomes(pipeline, [recordings["mid.mp3"], damaged, recordings["short.wav"]])
    assert isinstance(found["mid.mp3"], FileScores) and isinstance(found["short.wav"], FileScores)
    assert [name for name, _ in said] == ["damaged.mp3"]
    assert "resync" in said[0][1].lower() or "illegal" in said[0][1].lower(), said


def test_a_missing_file_is_a_read_failure(tmp_path):
    pipeline = LocalPipeline(fake_score, FrontEndSpec.of(FrontEnd()), workers=1)
    ((_, outcome),) = list(pipeline([tmp_path / "gone.wav"]))
    assert isinstance(outcome, AnalysisFailed) and outcome.stage == "read"


@pytest.mark.timeout(60)  # a worker reading the FIFO would wait for a writer for ever
def test_a_fifo_among_the_files_is_a_read_failure_and_the_run_goes_on(tmp_path, recordings):
    os.mkfifo(tmp_path / "live.wav")
    pipeline = LocalPipeline(fake_score, FrontEndSpec.of(FrontEnd()), workers=1)
    outcomes = dict(pipeline([tmp_path / "live.wav", recordings["short.wav"]]))
    fifo = outcomes[tmp_path / "live.wav"]
    assert isinstance(fifo, AnalysisFailed) and fifo.stage == "read" and "not a regular file" in fifo.reason
    assert isinstance(outcomes[recordings["short.wav"]], FileScores)


def test_workers_started_ahead_serve_the_first_call_and_later_calls_start_their_own(recordings):
    frontend = FrontEnd()
    paths = [recordings["short.wav"], recordings["mid.mp3"], recordings["text.mp3"]]
    with DecodeWorkers(2) as ahead:
        pipeline = LocalPipeline(fake_score, FrontEndSpec.of(frontend), prestarted=ahead)
        first = outcomes(pipeline, paths)
        assert ahead.started
        second = outcomes(pipeline, paths)  # the ahead ones are spent: this call starts its own
    for found in (first, second):
        result = found["mid.mp3"]
        assert isinstance(result, FileScores), result
        np.testing.assert_array_equal(result.scores, fake_score(frontend.analyze(recordings["mid.mp3"]).windows.features))
        assert isinstance(found["text.mp3"], AnalysisFailed)
    with pytest.raises(RuntimeError, match="had their run"):
        ahead.start(FrontEndSpec.of(frontend), paths)


def test_workers_closed_before_any_work_stop():
    workers = DecodeWorkers(2)
    assert workers.alive == 2
    workers.close()
    assert workers.alive == 0


@pytest.mark.parametrize("start_method", ["spawn", "fork"])
def test_workers_end_when_their_run_is_killed_with_sigkill(start_method):
    code = (
        "import time\n"
        "from analyze.pipeline import DecodeWorkers\n"
        f"workers = DecodeWorkers(2, start_method={start_method!r})\n"
        "print(*workers.pids, flush=True)\n"
        "time.sleep(600)\n"
    )
    run = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None
        workers = [psutil.Process(int(pid)) for pid in run.stdout.readline().split()]
        assert len(workers) == 2 and all(w.ppid() == run.pid for w in workers)
    finally:
        run.kill()
        run.wait()

    def ended(process: psutil.Process) -> bool:
        try:
            return process.status() == psutil.STATUS_ZOMBIE  # dead, waiting for whoever adopted it
        except psutil.NoSuchProcess:
            return True

    deadline = time.monotonic() + 30
    while not all(ended(w) for w in workers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(ended(w) for w in workers), "orphaned workers would decode on, then wait on a queue nobody reads"


_RUN_WITH_A_CRASH = """
import json, os, resource, sys
from pathlib import Path
import numpy as np
from analyze.pipeline import DecodeWorkers, FrontEndSpec, LocalPipeline
from features import FrontEnd

resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a SIGABRT leaves no core file behind
opened, made = FrontEndSpec.open, FrontEndSpec.frontend
die_on, signal_number = sys.argv[1], int(sys.argv[2])

def open_or_die(self, frontend, path):
    if Path(path).name == die_on:
        os.kill(os.getpid(), signal_number)
    return opened(self, frontend, path)

def frontend_or_die(self):
    if die_on == "the spec":
        os.kill(os.getpid(), signal_number)
    return made(self)

# Forked workers inherit both; replacements are spawned and do not.
FrontEndSpec.open, FrontEndSpec.frontend = open_or_die, frontend_or_die
with DecodeWorkers(1, start_method="fork") as ahead:
    pipeline = LocalPipeline(lambda w: np.zeros((len(w), 3), np.float32), FrontEndSpec.of(FrontEnd()), prestarted=ahead)
    found = {p.name: [type(o).__name__, str(o)] for p, o in pipeline([Path(a) for a in sys.argv[3:]])}
print(json.dumps(found))
"""

NAMES = ["long.flac", "mid.mp3", "short.wav", "stereo.ogg"]


def run_with_a_crash(recordings, die_on: str, signal_number: int) -> dict[str, list[str]]:
    command = [sys.executable, "-c", _RUN_WITH_A_CRASH, die_on, str(int(signal_number)), *(str(recordings[n]) for n in NAMES)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "signal_number, failure, reason",
    [
        (signal.SIGABRT, "AnalysisFailed", "decode: the decoder crashed on this file (SIGABRT)"),  # journaled
        (signal.SIGKILL, "RuntimeError", "its decoding process ended on it (SIGKILL)"),  # tried again next run
        (signal.SIGTERM, "RuntimeError", "its decoding process ended on it (SIGTERM)"),
    ],
)
def test_a_worker_dying_on_a_file_fails_that_file_and_a_new_worker_takes_up_the_rest(recordings, signal_number, failure, reason):
    found = run_with_a_crash(recordings, "mid.mp3", signal_number)
    assert found.pop("mid.mp3") == [failure, reason]
    assert found == {name: ["FileScores", found[name][1]] for name in ("long.flac", "short.wav", "stereo.ogg")}


def test_workers_dying_before_any_file_end_the_run_with_every_file_to_try_again(recordings):
    # Not replaced (it would die the same way, for ever): the files are failed for this run only.
    found = run_with_a_crash(recordings, "the spec", signal.SIGKILL)
    assert found == {name: ["RuntimeError", "its decoding process ended without a result"] for name in NAMES}


def test_a_fault_in_reading_the_workers_stops_the_run_instead_of_waiting_for_ever(recordings, monkeypatch):
    def broken(self) -> None:
        raise ValueError("boom")

    monkeypatch.setattr(DecodeWorkers, "_read_pipes", broken)
    pipeline = LocalPipeline(fake_score, FrontEndSpec.of(FrontEnd()), workers=1)
    with pytest.raises(RuntimeError, match="reading the decode workers failed: ValueError: boom"):
        list(pipeline([recordings["short.wav"]]))


def _once_set(read, expected, seconds: float = 60.0):
    """Poll `read()` until it gives `expected` (the worker sets it as it starts), or give its last value."""
    deadline = time.monotonic() + seconds
    while (value := read()) != expected and time.monotonic() < deadline:
        time.sleep(0.05)
    return value


@pytest.mark.parametrize("background", [False, True])
def test_workers_run_behind_the_model_and_a_server_job_on_idle_time_only(background):
    with DecodeWorkers(1, background=background) as workers:
        (pid,) = workers.pids
        if background:  # a job in a server: interactive requests first
            assert _once_set(lambda: os.sched_getscheduler(pid), os.SCHED_IDLE) == os.SCHED_IDLE
        else:  # chorus analyze: the model's consumer first
            expected = min(19, os.nice(0) + WORKER_NICENESS)
            assert _once_set(lambda: psutil.Process(pid).nice(), expected) == expected
