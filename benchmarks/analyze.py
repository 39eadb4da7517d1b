"""`chorus bench analyze`: how fast `chorus analyze` goes on this machine, against what the pipeline
allows and against the served path, how little memory a 3-hour file takes, and a folder of 1,000
files with broken ones, killed half way and resumed.

Recordings are generated field scenes (bird calls over rain, wind, traffic, voices...), so decoding
and the model see what they would in a real deployment; formats and rates as recorders write them.
"""

from __future__ import annotations

import csv
import json
import multiprocessing
import os
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import soundfile as sf
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from analyze.pipeline import worker_count
from batch.model import AnalysisModel, load_analysis_model
from service.local_server import ROOT, serve_process
from training.background_synth import BACKGROUNDS
from training.birdcall_synth import SPECIES, SceneSpec, synthesize_scene

FIELD_FORMATS = (("WAV", "PCM_16", "wav"), ("FLAC", "PCM_16", "flac"), ("MP3", "MPEG_LAYER_III", "mp3"))


def scene(seconds: float, rate: int, seed: int) -> np.ndarray:
    """A field minute: 0-2 species over one or two kinds of background noise, mono float32."""
    rng = np.random.default_rng(seed)
    species = tuple(rng.choice(list(SPECIES), size=int(rng.integers(0, 3)), replace=False))
    backgrounds = tuple(rng.choice([k for k in BACKGROUNDS if k != "silence"], size=int(rng.integers(1, 3)), replace=False))
    return synthesize_scene(SceneSpec(species, backgrounds, seconds, sparse=True), rate, rng).audio.astype(np.float32)


def write(path: Path, audio: np.ndarray, rate: int, container: str, subtype: str) -> Path:
    with sf.SoundFile(
        path, "w", samplerate=rate, channels=audio.shape[1] if audio.ndim > 1 else 1, format=container, subtype=subtype
    ) as out:
        # Chunked: libsndfile's Vorbis and MP3 writers fail on one huge write.
        for start in range(0, len(audio), rate * 10):
            out.write(audio[start : start + rate * 10])
    return path


def field_folder(folder: Path, files: int, seconds: float, rate: int, stereo: bool) -> list[Path]:
    """Recorder-named files (AudioMoth) cycling WAV, FLAC and MP3."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in tqdm(range(files), desc="field recordings", leave=False):
        container, subtype, suffix = FIELD_FORMATS[i % len(FIELD_FORMATS)]
        audio = scene(seconds, rate, i)
        if stereo:
            audio = np.stack([audio, 0.8 * audio], axis=1)
        paths.append(write(folder / f"202405{17 + i // 24:02d}_{i % 24:02d}0000.{suffix}", audio, rate, container, subtype))
    return paths


def two_hours_of(scenes: list[Path], folder: Path, copies: int = 10) -> list[Path]:
    """The scenes copied under recorder names until the folder holds `copies` times them: enough audio
    that starting the workers and loading the model are a small part of the run, as on a real folder."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for copy in range(copies):
        for i, scene_path in enumerate(scenes):
            path = folder / f"202406{copy + 1:02d}_{i:02d}0000{scene_path.suffix}"
            path.write_bytes(scene_path.read_bytes())
            paths.append(path)
    return paths


def _stage_seconds(model: AnalysisModel, paths: list[Path]) -> dict[str, float]:
    """The pipeline's work on `paths` done in line on this thread: audio seconds and each stage's seconds."""
    seconds = dict.fromkeys(("audio", "decode", "features", "model"), 0.0)
    for path in paths:
        analysis = model.frontend.analyze(path)
        seconds["audio"] += analysis.audio.duration_seconds
        seconds["decode"] += analysis.timings["decode"] + analysis.timings["resample"]
        seconds["features"] += analysis.timings["features"]
        started = time.perf_counter()
        for i in range(0, len(analysis.windows.features), 64):
            model.score(analysis.windows.features[i : i + 64])
        seconds["model"] += time.perf_counter() - started
    return seconds


def pipeline_limit(paths: list[Path], tag: str) -> dict:
    """Single-core seconds per audio second of each stage, and the real-time factor every core could give.

    Measured on one thread (BLAS included), as each of the pipeline's processes runs."""
    threadpool_limits(1)
    seconds = _stage_seconds(load_analysis_model(tag), paths)
    audio = seconds["audio"]
    per_audio_second = (seconds["decode"] + seconds["features"] + seconds["model"]) / audio
    cores = worker_count()  # the cores chorus analyze runs a decode worker on
    return {
        "audio_seconds": round(audio, 1),
        "single_core_seconds_per_audio_second": {
            "decode_resample": round(seconds["decode"] / audio, 6),
            "features": round(seconds["features"] / audio, 6),
            "model": round(seconds["model"] / audio, 6),
        },
        "cores": cores,
        "limit_realtime_factor": round(cores / per_audio_second, 1),
    }


def _timed_stage_work(tag: str, paths: list[Path], start: Any, done: Any) -> None:
    """One process of parallel_scaling: the limit's work on `paths`, timed from a start shared with the others."""
    threadpool_limits(1)
    model = load_analysis_model(tag)
    _stage_seconds(model, paths[:1])  # warm: first calls allocate
    start.wait()
    started = time.perf_counter()
    _stage_seconds(model, paths)
    done.put(time.perf_counter() - started)


def parallel_scaling(paths: list[Path], tag: str) -> dict:
    """What "times the cores" is worth here: the limit's single-thread work run by one process alone,
    then by one process per core at once (each on its own copy of the work). Perfect cores: the same
    time; `efficiency` is alone / together, the share of a core each process really gets."""
    context = multiprocessing.get_context("spawn")
    cores = worker_count()

    def run(processes: int) -> list[float]:
        start, done = context.Barrier(processes), context.Queue()
        workers = [context.Process(target=_timed_stage_work, args=(tag, paths, start, done)) for _ in range(processes)]
        for worker in workers:
            worker.start()
        seconds = [done.get(timeout=600) for _ in workers]
        for worker in workers:
            worker.join()
        return seconds

    alone = run(1)[0]
    together = run(cores)
    return {
        "processes": cores,
        "alone_seconds": round(alone, 2),
        "together_seconds": [round(t, 2) for t in together],
        "efficiency": round(alone / (sum(together) / len(together)), 3),
    }


def analyze_in_a_process(source: Path, out: Path) -> float:
    """`chorus analyze` of `source` in a fresh process, as the command runs it (decode workers forked,
    start-up and writing the tables included; the interpreter's imports not): audio seconds per wall second."""
    shutil.rmtree(out, ignore_errors=True)  # a journal would skip the files
    timed = _in_a_process("timed", source, out)
    return timed["audio_seconds"] / timed["wall_seconds"]


def _in_a_process(mode: str, source: Path, out: Path) -> dict:
    """benchmarks.analyze_child's `mode` in a fresh interpreter: its JSON answer."""
    command = [sys.executable, "-m", "benchmarks.analyze_child", mode, str(source), str(out)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=True)
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


def realtime_against_limit_and_served(
    scenes: list[Path], field: list[Path], out: Path, tag: str, home: str | None, repeats: int = 3, clients: tuple[int, ...] = (4, 8)
) -> dict:
    """The command's real-time factor on `field`, the pipeline's limit and the served path's, measured
    in turn `repeats` times. All three move with the shared machine's speed (~10% within minutes), so
    each ratio pairs a run with the limit and the served pass measured next to it; the median run is
    the figure. One warm server for all rounds, idle while the command runs."""
    runs, limits = [], []
    env = {"BENTOML_HOME": home} if home else {}
    with serve_process("service.service:Chorus", Path("/tmp/chorus-bench-analyze-server.log"), **env) as server:
        httpx.post(f"{server.url}/classify", content=field[0].read_bytes(), timeout=120)  # warm
        for _ in tqdm(range(repeats), desc="analyze against the limit and the served path", leave=False):
            limits.append(pipeline_limit(scenes, tag))
            measured = analyze_in_a_process(field[0].parent, out)
            serving = served(server.url, field, clients)
            limit = limits[-1]["limit_realtime_factor"]
            runs.append(
                {
                    "limit_realtime_factor": limit,
                    "analyze_realtime_factor": round(measured, 1),
                    "ratio": round(measured / limit, 3),
                    "served": serving,
                    "over_served": round(measured / serving["realtime_factor"], 2),
                }
            )
    by_ratio = sorted(range(repeats), key=lambda i: runs[i]["ratio"])[repeats // 2]
    by_served = sorted(range(repeats), key=lambda i: runs[i]["over_served"])[repeats // 2]
    return {"runs": runs, "median": runs[by_ratio], "median_limit": limits[by_ratio], "median_over_served": runs[by_served]}


def served(url: str, paths: list[Path], clients: tuple[int, ...]) -> dict:
    """The same files posted to /classify by each count of clients at once on a warm server: audio
    seconds per wall second, and the best of them (the count that saturates it)."""
    audio = sum(sf.info(str(p)).duration for p in paths)
    by_clients = {}

    def post(path: Path) -> int:
        with httpx.Client(timeout=600) as client:
            return client.post(f"{url}/classify", content=path.read_bytes()).status_code

    for count in clients:
        started = time.perf_counter()
        with ThreadPoolExecutor(count) as pool:
            codes = list(pool.map(post, paths))
        wall = time.perf_counter() - started
        by_clients[count] = {"statuses": sorted(set(codes)), "realtime_factor": round(audio / wall, 1)}
    best = max(by_clients, key=lambda count: by_clients[count]["realtime_factor"])
    return {"clients": best, "realtime_factor": by_clients[best]["realtime_factor"], "by_clients": by_clients}


def peak_rss_of_analyze(path: Path, out: Path) -> dict:
    """`chorus analyze` on one file in a process of its own: its peak RSS and its largest worker's
    (see benchmarks.analyze_child.memory)."""
    return _in_a_process("memory", path, out)


def long_file(folder: Path, hours: float, rate: int = 48_000) -> Path:
    """A 48 kHz stereo WAV of `hours`, written minute by minute from ten generated field minutes."""
    path = folder / "20240517_000000.WAV"
    minutes = [scene(60, rate, 1000 + i) for i in range(10)]
    with sf.SoundFile(path, "w", samplerate=rate, channels=2, format="WAV", subtype="PCM_16") as out:
        for m in tqdm(range(int(hours * 60)), desc="3-hour recording", leave=False):
            minute = minutes[m % len(minutes)]
            out.write(np.stack([minute, 0.8 * minute], axis=1))
    return path


def same_detections_on_a_cut(path: Path, out: Path, minutes: float, tag: str) -> dict:
    """The analyze run's detections of the first `minutes` against the in-memory path (the whole cut
    decoded at once, as /classify does) on that cut."""
    rate = sf.info(str(path)).samplerate
    cut = path.with_name("cut.wav")
    audio, _ = sf.read(str(path), frames=int(minutes * 60 * rate), dtype="float32")
    write(cut, audio, rate, "WAV", "PCM_16")
    model = load_analysis_model(tag)
    analysis = model.frontend.analyze(cut.read_bytes())
    scores = np.concatenate([model.score(analysis.windows.features[i : i + 64]) for i in range(0, len(analysis.windows.features), 64)])
    with open(out / "detections.csv", newline="") as table:
        streamed = [r for r in csv.DictReader(table) if float(r["end_s"]) <= minutes * 60 - model.frontend.config.stride_seconds]
    in_memory = {
        (round(span.start, 3), model.labels[j])
        for span, row in zip(analysis.windows.spans, scores, strict=True)
        for j in np.argsort(-row)[:3]
        if span.end <= minutes * 60 - model.frontend.config.stride_seconds
    }
    from_stream = {(round(float(r["begin_s"]), 3), r["species"]) for r in streamed}
    cut.unlink()
    return {"cut_minutes": minutes, "windows_compared": len({s for s, _ in in_memory}), "same": in_memory == from_stream}


def thousand_files(folder: Path, work: Path, tag: str, broken_share: float = 0.02, files: int = 1000) -> dict:
    """1,000 one-minute files (a pool of scenes copied under recorder names), 2% broken; a run killed
    half way and resumed gives the bytes of an uninterrupted run."""
    pool = field_folder(work / "pool", 25, 60, 16_000, stereo=False)
    folder.mkdir(parents=True, exist_ok=True)
    broken = list(range(0, files, round(1 / broken_share)))
    for i in range(files):
        # Broken ones vary: cut short (each format in turn), empty, or not audio at all.
        source = pool[(i // len(broken)) % len(pool) if i in broken else i % len(pool)]
        name = folder / f"2024{5 + i // 744:02d}{1 + i // 24 % 31:02d}_{i % 24:02d}{i // 744 % 60:02d}00{source.suffix}"
        data = source.read_bytes()
        if i in broken:
            kind = broken.index(i) % 4
            data = b"" if kind == 2 else b"not audio, a text file named like one\n" * 100 if kind == 3 else data[: len(data) // 3]
        name.write_bytes(data)
    command = [sys.executable, "-m", "chorus.cli", "analyze", str(folder), "--model", tag, "--out"]
    started = time.perf_counter()
    reference = subprocess.run([*command, str(work / "reference")], cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - started
    summary = json.loads(reference.stdout.strip().splitlines()[-1])
    killed = subprocess.Popen([*command, str(work / "resumed")], cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(wall / 2)
    os.kill(killed.pid, signal.SIGKILL)
    killed.wait()
    resumed = subprocess.run([*command, str(work / "resumed")], cwd=ROOT, capture_output=True, text=True)
    again = json.loads(resumed.stdout.strip().splitlines()[-1])
    outputs = ("detections.csv", "combined.selections.txt", "errors.csv")
    equal = all((work / "reference" / n).read_bytes() == (work / "resumed" / n).read_bytes() for n in outputs)
    return {
        "files": files,
        "broken": len(broken),
        "exit_status": reference.returncode,
        "summary": summary,
        "broken_listed": sum(1 for _ in open(work / "reference" / "errors.csv")) - 1,
        "wall_seconds": round(wall, 1),
        "resumed_skipped": again["files_skipped"],
        "resumed_outputs_equal": equal,
    }


def run_analyze_bench(out_dir: Path, tag: str = "birdcall:latest", home: str | None = None, long_hours: float = 3.0) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    work = out_dir / "work"
    shutil.rmtree(work, ignore_errors=True)  # a journal left by an earlier run would skip its files
    scenes = field_folder(work / "scenes", 12, 60, 48_000, stereo=True)
    field = two_hours_of(scenes, work / "field")
    against = realtime_against_limit_and_served(scenes, field, work / "field-out", tag, home)
    limit, measured = against["median_limit"], against["median"]["analyze_realtime_factor"]
    scaling = parallel_scaling(scenes, tag)
    longest = long_file(work, long_hours)
    rss = peak_rss_of_analyze(longest, work / "long-out")
    cut = same_detections_on_a_cut(longest, work / "long-out", 10, tag)
    longest.unlink()
    result = {
        "pipeline": limit,
        "analyze_realtime_factor": measured,
        "ratio_to_limit": against["median"]["ratio"],
        "runs": against["runs"],
        "parallel_scaling": scaling,
        "ratio_to_limit_at_measured_scaling": round(measured / (limit["limit_realtime_factor"] * scaling["efficiency"]), 3),
        "served": against["median_over_served"]["served"],
        "analyze_over_served": against["median_over_served"]["over_served"],
        "long_file": {"hours": long_hours, **rss, "detections_match_in_memory_cut": cut},
        "thousand_files": thousand_files(work / "thousand", work / "thousand-work", tag),
    }
    (out_dir / "analyze.json").write_text(json.dumps(result, indent=2))
    return result
