"""The audio front end alone: old per-window path vs the global frame grid, real-time factors, peak RSS.

    uv run python -m benchmarks.frontend    # about a minute on 2 cores; --hours 0 --bomb-seconds 0 for the quick part

One core (BLAS and FFT limited to one thread). Prints tables and ratios; the last stdout line is one
JSON object. The 3-hour WAV and issue 15's FLAC bomb are written under /tmp and deleted afterwards;
each is streamed in a fresh interpreter, so its peak RSS is the front end's own.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

import numpy as np
import scipy.fft
import soundfile as sf
import soxr
from threadpoolctl import threadpool_limits
from tqdm import tqdm

from features import FrontEnd, FrontEndConfig
from features.mel import mel_filterbank, periodic_hann
from features.windows import window_count

RATE, SECONDS = 44_100, 60.0
OLD_HOP = 512  # the per-window front end before the grid: 157 frames per window, reflect-padded
T = TypeVar("T")


class OldFrontEnd:
    """The previous front end, kept here only as the baseline: whole-file decode, mono, soxr, then
    every 5 s window as its own reflect-padded STFT with hop 512."""

    def __init__(self, config: FrontEndConfig):
        self.config = config
        self.filterbank = mel_filterbank(config)
        self.window = periodic_hann(config.n_fft)

    def windows(self, waveform: np.ndarray) -> np.ndarray:
        cfg = self.config
        n = window_count(len(waveform), cfg)
        padded = np.zeros((n - 1) * cfg.stride_samples + cfg.clip_samples, np.float32)
        padded[: len(waveform)] = waveform
        return np.lib.stride_tricks.sliding_window_view(padded, cfg.clip_samples)[:: cfg.stride_samples][:n]

    def log_mel(self, windows: np.ndarray) -> np.ndarray:
        cfg, half = self.config, self.config.n_fft // 2
        padded = np.pad(windows, ((0, 0), (half, half)), mode="reflect")
        frames = np.lib.stride_tricks.sliding_window_view(padded, cfg.n_fft, axis=-1)[:, ::OLD_HOP]
        spectrum = scipy.fft.rfft(frames * self.window, axis=-1, workers=1)
        power = spectrum.real**2 + spectrum.imag**2
        mel = (power.reshape(-1, power.shape[-1]) @ self.filterbank).reshape(*power.shape[:-1], -1)
        return np.ascontiguousarray(np.log(mel + cfg.log_eps).transpose(0, 2, 1)[:, None], dtype=np.float32)

    def analyze(self, data: bytes) -> np.ndarray:
        with sf.SoundFile(io.BytesIO(data)) as f:
            rate, samples = f.samplerate, f.read(dtype="float32", always_2d=True)
        mono = samples.mean(axis=1, dtype=np.float32)
        waveform = soxr.resample(mono, rate, self.config.sample_rate, quality="HQ").astype(np.float32, copy=False)
        return self.log_mel(self.windows(waveform))


def recording(seconds: float, rate: int, seed: int = 0) -> np.ndarray:
    """Stereo noise with call-like sweeps: enough texture that MP3 is not trivially small."""
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    calls = 0.2 * np.sin(2 * np.pi * (2500 + 800 * np.sin(2 * np.pi * 3 * t)) * t) * (np.sin(2 * np.pi * 0.4 * t) > 0.3)
    left = calls + 0.03 * rng.standard_normal(len(t))
    return np.stack([left, 0.7 * calls + 0.03 * rng.standard_normal(len(t))], axis=1).astype(np.float32)


def encode(audio: np.ndarray, rate: int, fmt: str, subtype: str) -> bytes:
    buffer = io.BytesIO()
    sf.write(buffer, audio, rate, format=fmt, subtype=subtype)
    return buffer.getvalue()


def best_run(work: Callable[[], T], repeats: int) -> tuple[float, T]:
    """Seconds and result of the fastest of `repeats` runs after a warm-up: the least disturbed by other work on shared cores."""
    work()
    runs = []
    for _ in range(repeats):
        start = time.perf_counter()
        result = work()
        runs.append((time.perf_counter() - start, result))
    return min(runs, key=lambda run: run[0])


def best_seconds(work: Callable[[], object], repeats: int) -> float:
    return best_run(work, repeats)[0]


def per_window_vs_grid(repeats: int) -> dict:
    old, new = OldFrontEnd(FrontEndConfig()), FrontEnd()
    audio = recording(SECONDS, RATE)
    data = encode(audio, RATE, "WAV", "PCM_16")
    waveform = soxr.resample(audio.mean(axis=1), RATE, 16_000, quality="HQ").astype(np.float32)
    n = len(new.waveform_windows(waveform))
    assert len(old.windows(waveform)) == n
    features = {
        "old": best_seconds(lambda: old.log_mel(old.windows(waveform)), repeats),
        "new": best_seconds(lambda: new.waveform_windows(waveform), repeats),
    }
    end_to_end = {"old": best_seconds(lambda: old.analyze(data), repeats), "new": best_seconds(lambda: new.analyze(data), repeats)}
    return {
        "windows": n,
        "features_windows_per_s": {k: n / v for k, v in features.items()},
        "end_to_end_windows_per_s": {k: n / v for k, v in end_to_end.items()},
    }


def real_time_factors(repeats: int) -> dict:
    audio, frontend = recording(SECONDS, RATE), FrontEnd()
    out = {}
    for name, fmt, subtype in (("WAV", "WAV", "PCM_16"), ("FLAC", "FLAC", "PCM_16"), ("MP3", "MP3", "MPEG_LAYER_III")):
        data = encode(audio, RATE, fmt, subtype)
        seconds, stages = best_run(lambda data=data: frontend.analyze(data).timings, repeats)
        out[name] = {"rtf": SECONDS / seconds, "ms": {k: round(v * 1e3, 1) for k, v in stages.items()}}
    return out


def write_long_wav(path: Path, hours: float) -> None:
    """A long 48 kHz stereo PCM_16 WAV, one minute at a time (the writer never holds the file)."""
    minute = recording(60.0, 48_000, seed=1)
    with sf.SoundFile(path, "w", 48_000, 2, format="WAV", subtype="PCM_16") as f:
        for _ in tqdm(range(round(hours * 60)), desc="write WAV", unit="min"):
            f.write(minute)


def peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: Linux carries that over from the parent process."""
    with open("/proc/self/status") as status:
        return next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024


def stream_child(path: str) -> None:
    """In a fresh interpreter: stream the file, dropping windows as analysis would after inference."""
    frontend = FrontEnd()
    frontend.analyze(encode(recording(6.0, 48_000), 48_000, "WAV", "PCM_16"))  # warm-up
    before = peak_rss_mb()
    windows, start = 0, time.perf_counter()
    with frontend.stream(path) as stream:
        for batch in stream:
            windows += len(batch)
        seconds = stream.facts().duration_seconds
    elapsed = time.perf_counter() - start
    result = {"windows": windows, "audio_s": seconds, "rtf": seconds / elapsed, "rss_before_mb": before, "peak_rss_mb": peak_rss_mb()}
    print(json.dumps(result))


def write_bomb(path: Path, seconds: int) -> None:
    """Issue 15's decompression bomb: 8-channel 192 kHz FLAC of silence, ~70 KB for 10 minutes."""
    second = np.zeros((192_000, 8), np.float32)
    with sf.SoundFile(path, "w", 192_000, 8, format="FLAC", subtype="PCM_16") as f:
        for _ in tqdm(range(seconds), desc="write bomb", unit="s"):
            f.write(second)


def streamed(write: Callable[[Path], None], name: str) -> dict:
    """Write a file under /tmp, stream it in a fresh one-core interpreter, delete it."""
    with tempfile.TemporaryDirectory(dir="/tmp") as tmp:
        path = Path(tmp) / name
        write(path)
        size = path.stat().st_size
        print(f"streaming {name} ({size / 1e6:.1f} MB) ...", flush=True)
        env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
        command = [sys.executable, "-m", "benchmarks.frontend", "--stream-child", str(path)]
        out = subprocess.run(command, capture_output=True, text=True, env=env, check=True)
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["file_mb"] = size / 1e6
    # What a caller that kept every window (FrontEnd.analyze) would hold on top:
    result["all_features_mb"] = result["windows"] * int(np.prod(FrontEndConfig().feature_shape)) * 4 / 2**20
    return result


def report(grid: dict, rtf: dict, streams: dict[str, dict]) -> str:
    f, e = grid["features_windows_per_s"], grid["end_to_end_windows_per_s"]
    lines = [
        f"front end, one core, {SECONDS:.0f} s {RATE / 1000:g} kHz stereo ({grid['windows']} windows)",
        "| path | features windows/s | decode+resample+features windows/s |",
        "|---|---|---|",
        f"| old: per-window STFT, hop 512 | {f['old']:.0f} | {e['old']:.0f} |",
        f"| new: one grid, hop {FrontEndConfig().hop_length} | {f['new']:.0f} | {e['new']:.0f} |",
        f"| ratio new/old | {f['new'] / f['old']:.2f}x | {e['new'] / e['old']:.2f}x |",
        "",
        "| format | real-time factor | decode ms | resample ms | features ms |",
        "|---|---|---|---|---|",
    ]
    for name, r in rtf.items():
        lines.append(f"| {name} | {r['rtf']:.0f}x | {r['ms']['decode']} | {r['ms']['resample']} | {r['ms']['features']} |")
    if streams:
        lines += [
            "",
            "| streamed | MB | audio s | windows | real-time factor | peak RSS MB | of it after warm-up | all windows would hold MB |",
            "|---|---|---|---|---|---|---|---|",
        ]
    for name, r in streams.items():
        lines.append(
            f"| {name} | {r['file_mb']:.1f} | {r['audio_s']:.0f} | {r['windows']} | {r['rtf']:.0f}x | {r['peak_rss_mb']:.0f} | "
            f"+{r['peak_rss_mb'] - r['rss_before_mb']:.0f} | {r['all_features_mb']:.0f} |"
        )
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=15, help="timed runs per figure (the best counts)")
    parser.add_argument("--hours", type=float, default=3.0, help="length of the streamed WAV; 0 skips it")
    parser.add_argument("--bomb-seconds", type=int, default=599, help="length of the streamed FLAC bomb; 0 skips it")
    parser.add_argument("--stream-child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stream_child:
        stream_child(args.stream_child)
        return
    with threadpool_limits(1):
        grid = per_window_vs_grid(args.repeats)
        rtf = real_time_factors(args.repeats)
    streams = {}
    if args.hours > 0:
        streams[f"{args.hours:g} h 48 kHz stereo WAV"] = streamed(lambda path: write_long_wav(path, args.hours), "long.wav")
    if args.bomb_seconds > 0:
        streams[f"{args.bomb_seconds} s 8-ch 192 kHz FLAC bomb"] = streamed(lambda path: write_bomb(path, args.bomb_seconds), "bomb.flac")
    print(report(grid, rtf, streams))
    print(json.dumps({"per_window_vs_grid": grid, "real_time_factor": rtf, "streamed": streams}))


if __name__ == "__main__":
    main()
