"""Robustness of the trained birdcall detector: its test split degraded, then measured like the original.

Conditions (each a copy of the test recordings, labels and events unchanged):
- `clean`: the test split as generated.
- `mp3_16k_32kbps`: decoded, resampled to 16 kHz and re-encoded as 32 kbps MP3 (ffmpeg/LAME),
  what a phone upload or a low-bitrate archive does (the top band above ~7.2 kHz is gone).
- `pink_0db`: mixed with pink noise at 0 dB SNR in the audio band: from 20 Hz up, where the front
  end's mel bands start, the noise holds as much power as the recording (pink_noise_for).
- `narrowband_8k`: resampled to 8 kHz (an old recorder, a phone line): nothing above 4 kHz. Labels
  stay those of the full band, so calls above 4 kHz count as misses; its false detections on
  background-only windows are the figure to read (a model that never heard such audio fires there).

The copies go through the same loader and front end as training, and the figures are the
training report's (training.birdcall_report.split_figures) at the calibrated threshold.

    uv run python -m training.evaluate_birdcall            # all conditions; JSON as the last stdout line
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import scipy.fft
import soundfile as sf
import soxr
import torch
from tqdm import tqdm

from features import FrontEndConfig, NormStats
from layout import artifacts
from layout.machine import worker_pool
from layout.workspace import Workspace
from training.background_synth import colored_noise
from training.birdcall_data import featurize, read_manifest, write_events
from training.birdcall_generate import NARROWBAND_RATE
from training.birdcall_model import BirdCallArch, BirdCallNet
from training.birdcall_report import recording_targets, split_figures
from training.calibration import sigmoid
from training.checkpoint import load_checkpoint, load_weights
from training.train_birdcall import predict_logits

SNR_DB = 0.0
AUDIO_BAND_LOW_HZ = 20.0
"""Where the audio band, in which the SNR is measured, starts: the front end's lowest mel band
(features.FrontEndConfig.f_min), and the edge of hearing. Under it lie DC and infrasound, which
nobody hears and the model does not see: they were 99% of one test recording's power (wind
generated as brown noise), and half of the noise's own (pink over 20 s has as many octaves under
20 Hz as over it)."""
MP3_RATE, MP3_BITRATE = 16_000, "32k"


def audio_band(audio: np.ndarray, rate: int) -> np.ndarray:
    """`audio` without what lies under AUDIO_BAND_LOW_HZ (zeroed in its spectrum)."""
    spectrum = scipy.fft.rfft(audio)
    spectrum[: int(np.ceil(AUDIO_BAND_LOW_HZ * len(audio) / rate))] = 0
    return scipy.fft.irfft(spectrum, len(audio))


def pink_noise_for(audio: np.ndarray, rate: int, seed: int) -> np.ndarray:
    """Pink noise over the audio band (AUDIO_BAND_LOW_HZ to Nyquist) whose power is the audio's
    there, SNR_DB under it: the noise of the `pink_0db` condition, to be added to `audio`."""
    noise = audio_band(colored_noise(np.random.default_rng(seed), len(audio), 1.0), rate)
    power = np.mean(audio_band(audio.astype(np.float64), rate) ** 2) / 10 ** (SNR_DB / 10)
    return noise * np.sqrt(power / np.mean(noise**2))


def _read_mono(source: Path) -> tuple[np.ndarray, int]:
    """A whole file as mono float32 at its own rate (these copies are inputs to the front end, not features)."""
    samples, rate = sf.read(source, dtype="float32", always_2d=True)
    return samples.mean(axis=1), int(rate)


def _mp3(source: Path, target_dir: Path, index: int) -> Path:
    audio, rate = _read_mono(source)
    audio = soxr.resample(audio, rate, MP3_RATE, quality="HQ").astype(np.float32)
    target = target_dir / f"{source.stem}.mp3"
    command = ["ffmpeg", "-nostdin", "-y", "-loglevel", "error", "-f", "f32le", "-ar", str(MP3_RATE), "-ac", "1", "-i", "pipe:0"]
    subprocess.run([*command, "-c:a", "libmp3lame", "-b:a", MP3_BITRATE, str(target)], input=audio.tobytes(), check=True)
    return target


def _flac_copy(source: Path, target_dir: Path, audio: np.ndarray, rate: int) -> Path:
    """source's degraded copy in target_dir: 16-bit FLAC, named after it."""
    target = target_dir / f"{source.stem}.flac"
    sf.write(target, audio, rate, subtype="PCM_16")
    return target


def _pink(source: Path, target_dir: Path, index: int) -> Path:
    audio, rate = _read_mono(source)
    mixed = audio.astype(np.float64) + pink_noise_for(audio, rate, index)
    mixed /= max(1.0, np.abs(mixed).max() / 0.99)  # scale both together: the SNR stays
    return _flac_copy(source, target_dir, mixed.astype(np.float32), rate)


def _narrowband(source: Path, target_dir: Path, index: int) -> Path:
    audio, rate = _read_mono(source)
    audio = soxr.resample(audio, rate, NARROWBAND_RATE, quality="HQ").astype(np.float32)
    return _flac_copy(source, target_dir, np.clip(audio, -1, 1), NARROWBAND_RATE)


CONDITIONS: dict[str, Callable[[Path, Path, int], Path] | None] = {
    "clean": None,
    "mp3_16k_32kbps": _mp3,
    "pink_0db": _pink,
    "narrowband_8k": _narrowband,
}


def _degrade(args: tuple[str, Path, Path, int]) -> Path:
    condition, source, target_dir, index = args
    transform = CONDITIONS[condition]
    assert transform is not None
    return transform(source, target_dir, index)


def degraded_manifest(csv_path: Path, condition: str, out_dir: Path) -> Path:
    """A labels CSV (+ events) of the test split under out_dir, its audio degraded by `condition`."""
    items = [item for item in read_manifest(csv_path) if item.split == "test"]
    out_dir.mkdir(parents=True, exist_ok=True)
    if CONDITIONS[condition] is None:
        sources = {item.path: item.path for item in items}
    else:
        audio_dir = out_dir / "audio"
        audio_dir.mkdir(parents=True, exist_ok=True)
        jobs = [(condition, item.path, audio_dir, i) for i, item in enumerate(items)]
        with worker_pool() as pool:
            made = list(tqdm(pool.map(_degrade, jobs, chunksize=2), total=len(jobs), desc=condition, unit="rec"))
        sources = {item.path: path for item, path in zip(items, made, strict=True)}
    manifest = out_dir / "labels.csv"
    with manifest.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows((str(sources[item.path]), ";".join(item.labels) or "background", "test") for item in items)
    # The clean audio's levels: the same calls count in every condition, so conditions compare.
    write_events(manifest, ((str(sources[item.path]), e) for item in items for e in item.events or ()))
    return manifest


def evaluate(workspace: Workspace, conditions: tuple[str, ...] = tuple(CONDITIONS)) -> dict[str, Any]:
    """Figures per condition on the test split of the data the checkpoint was trained on."""
    checkpoint = load_checkpoint(workspace.checkpoint_dir("birdcall"))
    if checkpoint.calibration is None:
        raise FileNotFoundError(f"{checkpoint.directory} has no {artifacts.CALIBRATION}: retrain with this version")
    torch.set_num_threads(os.cpu_count() or 1)
    model = load_weights(BirdCallNet(BirdCallArch(**checkpoint.config[artifacts.ARCH])), checkpoint)
    config = FrontEndConfig.from_dict(checkpoint.config[artifacts.FRONTEND])
    stats = NormStats.from_dict(checkpoint.norm_stats)
    temperature, threshold = checkpoint.calibration["temperature"], checkpoint.calibration["threshold"]
    labels = checkpoint.labels
    results: dict[str, Any] = {}
    scratch = Path(tempfile.mkdtemp(prefix="chorus-robustness-"))
    try:
        for condition in conditions:
            manifest = degraded_manifest(Path(checkpoint.metrics["data_csv"]), condition, scratch / condition)
            items = read_manifest(manifest)
            windows = featurize(items, labels, config, desc=f"features {condition}")
            x = (windows.log_mels - stats.mean.reshape(1, 1, -1, 1)) / stats.std.reshape(1, 1, -1, 1)
            scores = sigmoid(predict_logits(model, torch.from_numpy(x.astype(np.float32))) / temperature)
            figures = split_figures(scores, windows, recording_targets(items, labels), threshold, labels)
            results[condition] = {k: v for k, v in figures.items() if k != "per_class"}
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    report = {"model": "birdcall", "checkpoint": str(checkpoint.directory), "threshold": threshold, "conditions": results}
    reports = workspace.reports_dir("birdcall")
    (reports / "robustness.json").write_text(json.dumps(report, indent=2) + "\n")
    (reports / "robustness.md").write_text(markdown(report))
    return report


def markdown(report: dict[str, Any]) -> str:
    conditions = report["conditions"]
    keys = [
        ("recording accuracy", "recording_accuracy"),
        ("window micro-F1", "micro_f1"),
        ("false detections, background-only windows", "background_false_detection_rate"),
        ("2-species windows: both found", "two_species_both_found"),
        ("ECE", "ece"),
    ]
    lines = [f"# birdcall robustness (threshold {report['threshold']})", "", "| figure | " + " | ".join(conditions) + " |"]
    lines.append("|---|" + "---|" * len(conditions))
    for name, key in keys:
        lines.append(f"| {name} | " + " | ".join(f"{c[key]:.4f}" for c in conditions.values()) + " |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.evaluate_birdcall", description=__doc__.split("\n")[0])
    parser.add_argument("--conditions", nargs="+", choices=list(CONDITIONS), default=list(CONDITIONS))
    args = parser.parse_args(argv)
    if any(CONDITIONS[c] is _mp3 for c in args.conditions) and shutil.which("ffmpeg") is None:
        parser.error("the mp3 condition needs ffmpeg on PATH (apt-get install ffmpeg)")
    report = evaluate(Workspace.from_env(), tuple(args.conditions))
    sys.stdout.flush()
    print(json.dumps(report), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
