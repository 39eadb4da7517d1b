"""`chorus analyze` end to end on the exported tiny model: a folder with good and broken files, the
tables, the errors table, the summary line and the exit status; then the same run on a Ray cluster of
two nodes, resumed from its journal, gives the same rows."""

from __future__ import annotations

import collections
import csv
import dataclasses
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from analyze.analyzer import AnalysisFailed
from analyze.journal import Journal
from batch.command import AnalyzeOptions, analyze
from layout import artifacts
from layout.artifacts import ArtifactError
from service.store import StoredModel
from tests.conftest import ROOT, encode

FORMATS = frozenset({"csv", "raven", "raven-combined", "audacity", "ndjson", "parquet"})


@pytest.fixture(scope="module")
def field(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("field")
    rng = np.random.default_rng(3)
    (folder / "site1").mkdir()
    (folder / "site2").mkdir()
    for i, (rate, fmt, subtype, suffix) in enumerate(
        [
            (16_000, "WAV", "PCM_16", "wav"),
            (44_100, "FLAC", "PCM_16", "flac"),
            (22_050, "MP3", "MPEG_LAYER_III", "mp3"),
            (48_000, "WAV", "PCM_24", "wav"),
        ]
    ):
        audio = (0.05 * rng.standard_normal((rate * (20 + 7 * i), 2))).astype(np.float32)
        (folder / f"site{1 + i % 2}" / f"SMU01234_20240517_0{i}3000.{suffix}").write_bytes(encode(audio, rate, fmt, subtype))
    (folder / "site2" / "broken.wav").write_bytes(encode(np.zeros(16_000, np.float32), 16_000, "WAV", "PCM_16")[:30])
    nan = np.zeros(16_000, np.float32)
    nan[100] = np.nan
    (folder / "site2" / "nan.wav").write_bytes(encode(nan, 16_000, "WAV", "FLOAT"))
    return folder


def rows(out: Path) -> list[dict[str, str]]:
    with open(out / "detections.csv", newline="") as table:
        return sorted(csv.DictReader(table), key=lambda r: (r["path"], r["channel"], float(r["begin_s"]), r["species"]))


def test_a_folder_with_broken_files(tiny_exports, field, tmp_path):
    summary = analyze(AnalyzeOptions(sources=[str(field)], out=tmp_path / "out", formats=FORMATS, min_confidence=0.0, top_k=2, workers=2))
    assert (summary.files, summary.files_ok, summary.files_failed) == (6, 4, 2)
    errors = (tmp_path / "out" / "errors.csv").read_text()
    assert "broken.wav" in errors and "nan.wav" in errors and "NaN" in errors
    found = rows(tmp_path / "out")
    assert found and {r["model"] for r in found} == {"birdcall"}
    assert all(r["clock_begin"].startswith("2024-05-17T0") for r in found)  # Song Meter names give clock times
    windows_per_file = {r["path"]: 0 for r in found}
    for r in found:
        windows_per_file[r["path"]] += 1
    assert len(windows_per_file) == 4 and all(count % 2 == 0 for count in windows_per_file.values())  # top_k 2 at threshold 0
    for name in ("combined.selections.txt", "detections.ndjson", "detections.parquet"):
        assert (tmp_path / "out" / name).stat().st_size > 0
    assert len(list((tmp_path / "out" / "raven").rglob("*.selections.txt"))) == 4


def test_a_stride_longer_than_the_windows_is_refused_before_any_work(tiny_exports, field, tmp_path):
    with pytest.raises(ValueError, match=r"longer than the model's .* windows: the audio between them would never be analyzed"):
        analyze(AnalyzeOptions(sources=[str(field)], out=tmp_path / "out", stride_seconds=600.0))
    with pytest.raises(ValueError, match=r"stride 0.01 s is not a whole number of the model's [\d.]+ ms frames; give one that is"):
        analyze(AnalyzeOptions(sources=[str(field)], out=tmp_path / "out", stride_seconds=0.01))
    assert not (tmp_path / "out").exists()


def test_the_command_line_exit_status_and_summary_line(tiny_exports, field, tmp_path):
    command = [
        sys.executable,
        "-m",
        "chorus.cli",
        "analyze",
        str(field / "site1"),
        "--out",
        str(tmp_path / "cli"),
        "--min-confidence",
        "0.5",
    ]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300, env={**os.environ})
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["files_ok"] == 2 and summary["files_failed"] == 0 and summary["realtime_factor"] > 0
    species = tmp_path / "species.txt"
    species.write_text("a_bird_nobody_knows\n")
    refused = subprocess.run([*command, "--species", str(species)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert refused.returncode == 2 and "a_bird_nobody_knows" in refused.stderr
    refused = subprocess.run([*command, "--workers", "-1"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "argument --workers: must be 0 (one per core) or more, got -1" in refused.stderr
    # Nothing runs, and each says why in one line (no traceback), exit status 2.
    for extra, words in [
        (["--model", "nosuch:latest"], "no model 'nosuch:latest' in the model store"),
        (["--formats", " , "], "choose at least one output format"),
        (["--out", ""], "an empty folder name"),
        (["--top-k", "-1"], "argument --top-k: must be 0 or more, got -1"),
        (["--min-confidence", "1.5"], "argument --min-confidence: must be from 0 to 1, got 1.5"),
        (["--stride", "nan"], "argument --stride: must be 0.001 or more, got nan"),
    ]:
        refused = subprocess.run([*command, *extra], cwd=ROOT, capture_output=True, text=True, timeout=60)
        assert refused.returncode == 2 and words in refused.stderr and "Traceback" not in refused.stderr, refused.stderr
    # --top-k 0: every species over the threshold, as BirdNET-Analyzer lists them without --top_n.
    every = [*command[:5], "--out", str(tmp_path / "every"), "--top-k", "0", "--min-confidence", "0", "--formats", "csv"]
    assert subprocess.run(every, cwd=ROOT, capture_output=True, timeout=300).returncode == 0
    with (tmp_path / "every" / "detections.csv").open() as table:
        rows = list(csv.DictReader(table))
    species = {row["species"] for row in rows}
    per_window = collections.Counter((row["path"], row["begin_s"]) for row in rows)
    assert len(species) > 3 and set(per_window.values()) == {len(species)}
    with Journal.open(tmp_path / "cli"):  # another run writing to the same folder
        refused = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert refused.returncode == 2 and "another chorus analyze is writing to" in refused.stderr and "Traceback" not in refused.stderr
    failing = subprocess.run(
        [*command[:4], str(field / "site2"), "--out", str(tmp_path / "cli2")], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert failing.returncode == 1 and json.loads(failing.stdout.strip().splitlines()[-1])["files_failed"] == 2


def test_ray_on_two_nodes_resumes_and_gives_the_rows_of_the_local_run(tiny_exports, field, tmp_path, monkeypatch):
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")  # workers run this very interpreter, not `uv run`
    options = {"sources": [str(field)], "formats": frozenset({"csv"}), "min_confidence": 0.0, "top_k": 3}
    analyze(AnalyzeOptions(out=tmp_path / "local", **options))
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    cluster.add_node(num_cpus=1)
    try:
        # A first Ray run that covers one site, as a run stopped half way would; the second run
        # over everything takes that site's files from the journal.
        first = analyze(AnalyzeOptions(out=tmp_path / "ray", ray=cluster.address, **{**options, "sources": [str(field / "site1")]}))
        remote = analyze(AnalyzeOptions(out=tmp_path / "ray", ray=cluster.address, **options))
    finally:
        ray.shutdown()
        cluster.shutdown()
    # Ray's usage reporting stays off: with it on, Ray Data leaves a thread here that polls a
    # Prometheus for ever and formats tracebacks (ast.parse, racy on Python 3.11.7) as tests run.
    assert "data-usage-metrics-poller" not in {t.name for t in threading.enumerate()}
    assert (first.files_ok, first.files_failed, first.files_skipped) == (2, 0, 0)
    assert (remote.files_ok, remote.files_failed, remote.files_skipped) == (4, 2, 2)
    local_rows, ray_rows = rows(tmp_path / "local"), rows(tmp_path / "ray")
    assert [{k: v for k, v in r.items() if k != "score"} for r in local_rows] == [
        {k: v for k, v in r.items() if k != "score"} for r in ray_rows
    ]
    np.testing.assert_allclose([float(r["score"]) for r in local_rows], [float(r["score"]) for r in ray_rows], atol=2e-4)
    assert (tmp_path / "local" / "errors.csv").read_text() == (tmp_path / "ray" / "errors.csv").read_text()


def test_a_file_whose_decoder_kills_its_ray_worker_fails_alone_and_the_run_ends(tiny_exports, field, tmp_path, monkeypatch):
    """Ray Data retries a task whose worker died for ever by default: the run would never end."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    from analyze.pipeline import FrontEndSpec
    from batch.ray import DECODE_RETRIES, RayPipeline
    from features import FrontEnd
    from service.models.birdcall import stored_frontend

    @dataclasses.dataclass(frozen=True)
    class CrashingSpec(FrontEndSpec):  # local: pickled by value, so Ray's workers need not import the tests
        def open(self, frontend, path):
            if Path(path).name.startswith("crash"):
                os.kill(os.getpid(), signal.SIGSEGV)  # what a decoder does on hostile bytes
            return super().open(frontend, path)

    monkeypatch.setenv("RAY_ENABLE_UV_RUN_RUNTIME_ENV", "0")
    crash = tmp_path / "crash.wav"
    shutil.copy(next((field / "site1").iterdir()), crash)
    paths = [*sorted((field / "site1").iterdir()), crash]
    stored = StoredModel.resolve(tiny_exports["birdcall"]["tag"])
    frontend: FrontEnd = stored_frontend(stored)
    spec = CrashingSpec(frontend.config.to_dict(), frontend.stats.to_dict())
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 2})
    try:
        pipeline = RayPipeline(cluster.address, stored.path, stored.name, stored.version, "fp32", spec)
        outcomes = dict(pipeline(paths))
    finally:
        ray.shutdown()
        cluster.shutdown()
    assert set(outcomes) == set(paths)
    assert isinstance(outcomes[crash], AnalysisFailed) and f"died {DECODE_RETRIES + 1} times" in str(outcomes[crash])
    assert all(not isinstance(outcomes[p], Exception) for p in paths[:-1])


def test_a_damaged_model_stops_the_run_before_any_file_is_recorded(tiny_exports, field, tmp_path):
    """The model's files are checked while the workers decode the first files (the check overlaps
    them): a damaged model still fails the run before any outcome, even the broken files' failures."""
    stored = StoredModel.resolve(tiny_exports["birdcall"]["tag"])
    damaged = stored.path.parent / "damagedcopy0001"
    shutil.copytree(stored.path, damaged)
    try:
        onnx = damaged / artifacts.onnx_file(stored.name, "fp32")
        data = bytearray(onnx.read_bytes())
        data[len(data) // 2] ^= 0xFF
        onnx.write_bytes(bytes(data))
        with pytest.raises(ArtifactError):
            analyze(AnalyzeOptions(sources=[str(field / "site2")], out=tmp_path / "out", model=f"{stored.name}:{damaged.name}"))
        assert (tmp_path / "out" / ".chorus-analyze" / "journal.ndjson").read_text() == ""
    finally:
        shutil.rmtree(damaged)


def test_ctrl_c_stops_with_one_line_and_the_rerun_resumes(tiny_exports, field, tmp_path):
    many = tmp_path / "many"
    many.mkdir()
    one = field / "site1" / "SMU01234_20240517_003000.wav"
    for i in range(150):  # long enough that the interrupt lands mid-run
        os.link(one, many / f"SMU01234_20240517_{i // 60:02d}{i % 60:02d}00.wav")
    out = tmp_path / "out"
    command = [sys.executable, "-m", "chorus.cli", "analyze", str(many), "--out", str(out)]
    process = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    journal = out / ".chorus-analyze" / "journal.ndjson"
    deadline = time.monotonic() + 120
    while not (journal.exists() and journal.read_bytes().count(b"\n") >= 5) and process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)  # waits on the journal's progress: a readiness poll, not a fixed sleep
    os.killpg(process.pid, signal.SIGINT)  # as a terminal sends it: to the whole process group
    _, stderr = process.communicate(timeout=60)
    assert process.returncode == 130, stderr
    assert "stopped; the same command again resumes" in stderr and "Traceback" not in stderr
    # Format names as people type them: spaces, capitals, a trailing comma.
    done = subprocess.run([*command, "--formats", " CSV, ndjson ,"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert done.returncode == 0 and summary["files_ok"] == 150 and summary["files_skipped"] >= 5
    assert (out / "detections.csv").exists() and (out / "detections.ndjson").exists()


def test_a_windows_scores_do_not_depend_on_the_windows_scored_with_it(tiny_exports):
    """Which windows share a call depends on timing (the queue, the tail's lanes); their scores must
    not, or a resumed run's tables would differ from an uninterrupted run's in the last bits."""
    from batch.model import load_analysis_model

    model = load_analysis_model()
    config = model.frontend.config
    windows = np.random.default_rng(0).standard_normal((24, 1, config.n_mels, config.n_frames)).astype(np.float32)
    whole = model.score(windows)
    for sizes in ([1, 2, 3, 18], [7, 17], [5, 19], [24]):
        for score in (model.score, model.score_on_every_core):
            bounds = np.cumsum([0, *sizes])
            pieces = np.concatenate([score(windows[a:b]) for a, b in itertools.pairwise(bounds)])
            assert np.array_equal(pieces, whole), (sizes, score.__name__, float(np.abs(pieces - whole).max()))
    assert model.score(windows[:0]).shape == (0, len(model.labels))


def test_files_below_the_models_band_are_counted_and_named_a_risk(tiny_exports, field, tmp_path):
    low = tmp_path / "low"
    low.mkdir()
    (low / "phone.wav").write_bytes(encode((0.05 * np.random.default_rng(0).standard_normal(8_000 * 12)).astype(np.float32), 8_000, "WAV"))
    summary = analyze(AnalyzeOptions(sources=[str(low), str(field / "site1")], out=tmp_path / "out"))
    assert summary.files_ok == 3 and summary.files_band_limited == 1 and summary.audio_formats >= 2
    command = [sys.executable, "-m", "chorus.cli", "analyze", str(low), "--out", str(tmp_path / "cli")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and "1 file(s) recorded below twice the model's top frequency" in done.stderr
    assert "sample-rate/channel formats" not in done.stderr  # one file: one format, a sequence Raven opens
    assert json.loads(done.stdout.strip().splitlines()[-1])["files_band_limited"] == 1
    # 8 kHz beside the field recordings: the combined table's sequence is one Raven cannot open.
    done = subprocess.run([*command[:5], str(field / "site1"), "--out", str(tmp_path / "mixed")], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0 and "sample-rate/channel formats, and Raven opens a file sequence" in done.stderr


def test_what_the_decoders_print_goes_to_the_log_with_each_files_path_not_between_the_bars_lines(tiny_exports, field, tmp_path):
    damaged = tmp_path / "damaged"
    damaged.mkdir()
    mp3 = next((field / "site1").glob("*.mp3")).read_bytes()
    middle = len(mp3) // 3
    (damaged / "resynced.mp3").write_bytes(mp3[:middle] + np.random.default_rng(1).bytes(3000) + mp3[middle + 3000 :])
    command = [sys.executable, "-m", "chorus.cli", "analyze", str(damaged), str(field / "site1"), "--out", str(tmp_path / "cli")]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert "Note: " not in done.stderr and "the audio decoders printed notes on 1 file(s)" in done.stderr, done.stderr
    log = (tmp_path / "cli" / "decoders.log").read_text().splitlines()
    assert log[0].startswith("# chorus analyze, ") and len(log) > 1
    assert all(line.startswith(f"{damaged / 'resynced.mp3'}: ") for line in log[1:]), log
