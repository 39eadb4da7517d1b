"""Generate the birdcall stand-in dataset: audio files, a labels CSV and an events CSV.

Three kinds of recording, each split by position within its group (70/15/15 unless the spec says
otherwise), so every split holds every kind: focal recordings (one species, sometimes a second one sparsely), mixed recordings (two
or three species singing together) and background-only recordings (every non-bird kind, and
clipping). The CSVs are the same format a user's real data comes in (training.birdcall_data).
"""

from __future__ import annotations

import csv
import hashlib
import json
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from layout.machine import worker_pool
from training.background_synth import BACKGROUNDS
from training.birdcall_data import BACKGROUND_LABEL, LABEL_SEPARATOR, write_events
from training.birdcall_synth import SPECIES, CallEvent, SceneSpec, synthesize_scene, write_audio

# Container, libsndfile subtype and file suffix, with their share of generated recordings.
_FORMATS = [
    ("FLAC", "PCM_16", "flac", 0.65),
    ("WAV", "PCM_16", "wav", 0.1),
    ("OGG", "VORBIS", "ogg", 0.1),
    ("MP3", "MPEG_LAYER_III", "mp3", 0.15),
]
_RATES = (16_000, 22_050, 24_000)  # synthesis cost grows with the rate; these still exercise the resampler
NARROWBAND_RATE = 8_000
# MP3s are what a phone upload or a low-bitrate archive holds: 16 kHz, 24-41 kbps constant bitrate
# (libsndfile compression level 0.8-0.9), the band above ~7 kHz gone and coding artifacts in.
_MP3_RATE, _MP3_COMPRESSION = 16_000, (0.8, 0.9)
# Background-only recordings cycle through these; "clipping" is a loud scene driven past full scale.
BACKGROUND_GROUPS = (*BACKGROUNDS, "clipping")


@dataclass(frozen=True)
class GenerateSpec:
    """What `generate_dataset` makes."""

    recordings_per_species: int = 24
    """Focal recordings per species."""
    mixed_recordings: int = 120
    """Recordings with two or three species at once."""
    background_recordings: int = 192
    """Recordings without any bird (spread evenly over BACKGROUND_GROUPS)."""
    min_seconds: float = 3.0
    max_seconds: float = 30.0
    n_species: int = len(SPECIES)
    val_share: float = 0.15
    test_share: float = 0.15
    seed: int = 0
    narrowband_share: float = 0.1
    """Share of recordings written at NARROWBAND_RATE (old recorders, phone lines: nothing above 4 kHz),
    MP3s excepted; calls above the band read as under the noise (birdcall_synth.call_levels)."""


@dataclass(frozen=True)
class PlannedRecording:
    """One recording a spec asks for, with all that makes its bytes."""

    path: Path
    """Relative to the dataset folder."""
    label: str
    split: str
    scene: SceneSpec
    rate: int
    format_index: int
    seed: int
    compression_level: float | None = None
    file_rate: int | None = None
    """Written at this rate, below the one it is synthesized at (a narrowband recording); None: the same."""


def _split_for(index: int, n: int, spec: GenerateSpec) -> str:
    """By position within a group of n: the last recordings test, the ones before them validate.

    Rounded, with at least one of each once a group has three, so small specs still test.
    """
    n_test = max(1, round(n * spec.test_share)) if n >= 3 else 0
    n_val = max(1, round(n * spec.val_share)) if n >= 3 else 0
    if index >= n - n_test:
        return "test"
    return "val" if index >= n - n_test - n_val else "train"


def _pick_backgrounds(rng: np.random.Generator) -> tuple[str, ...]:
    """One or two kinds under the calls; silence alone now and then."""
    if rng.random() < 0.08:
        return ("silence",)
    kinds = [k for k in BACKGROUNDS if k != "silence"]
    count = 1 if rng.random() < 0.6 else 2
    return tuple(str(k) for k in rng.choice(kinds, size=count, replace=False))


def plan_scenes(spec: GenerateSpec) -> list[tuple[str, SceneSpec, str]]:
    """(file stem, scene, split) for every recording the spec asks for. Same spec, same plan."""
    rng = np.random.default_rng(spec.seed)
    species = list(SPECIES)[: spec.n_species]
    plan: list[tuple[str, SceneSpec, str]] = []

    def seconds(high: float) -> float:
        return float(rng.uniform(spec.min_seconds, max(spec.min_seconds, high)))

    for name in species:
        for i in range(spec.recordings_per_species):
            singing = (name,)
            if rng.random() < 0.25:  # another species now and then, a few bouts only
                others = [s for s in species if s != name]
                singing = (name, others[rng.integers(len(others))])
            sparse, clipped = rng.random() < 0.4, rng.random() < 0.04
            scene = SceneSpec(singing, _pick_backgrounds(rng), seconds(spec.max_seconds), sparse=sparse, clipped=clipped)
            plan.append((f"{name}_{i:04d}", scene, _split_for(i, spec.recordings_per_species, spec)))
    for i in range(spec.mixed_recordings):
        count = 2 if rng.random() < 0.7 else 3
        singing = tuple(str(s) for s in rng.choice(species, size=min(count, len(species)), replace=False))
        scene = SceneSpec(singing, _pick_backgrounds(rng), seconds(min(spec.max_seconds, 20.0)))
        plan.append((f"mixed_{i:04d}", scene, _split_for(i, spec.mixed_recordings, spec)))
    per_group = max(1, spec.background_recordings // len(BACKGROUND_GROUPS))
    for group in BACKGROUND_GROUPS:
        for i in range(per_group):
            if group == "clipping":
                kinds: tuple[str, ...] = (str(rng.choice(["wind", "handling", "traffic", "voices", "music"])),)
            elif group != "silence" and rng.random() < 0.4:
                kinds = (group, str(rng.choice([k for k in BACKGROUNDS if k not in (group, "silence")])))
            else:
                kinds = (group,)
            scene = SceneSpec((), kinds, seconds(spec.max_seconds), clipped=group == "clipping")
            plan.append((f"background_{group}_{i:04d}", scene, _split_for(i, per_group, spec)))
    return plan


def _write_one(job: tuple[Path, PlannedRecording]) -> list[CallEvent]:
    out_dir, planned = job
    recording = synthesize_scene(planned.scene, planned.rate, np.random.default_rng(planned.seed), file_rate=planned.file_rate)
    fmt, subtype, _, _ = _FORMATS[planned.format_index]
    write_audio(out_dir / planned.path, recording.audio, recording.sample_rate, fmt, subtype, planned.compression_level)
    return list(recording.events)


def _fingerprint(spec: GenerateSpec) -> str:
    """The spec and the generator's source: equal fingerprints make equal audio and events. The front
    end's config and mel bands count too: the events' levels are measured in its cells."""
    digest = hashlib.sha256(json.dumps(asdict(spec), sort_keys=True).encode())
    here = Path(__file__).parent
    sources = [here / name for name in ("background_synth.py", "birdcall_synth.py", "birdcall_generate.py", "ogg_pages.py")]
    for source in (*sources, here.parent / "features" / "config.py", here.parent / "features" / "mel.py"):
        digest.update(source.read_bytes())
    return digest.hexdigest()


def ensure_dataset(out_dir: Path, spec: GenerateSpec, workers: int | None = None) -> Path:
    """The labels CSV of out_dir, generating it first unless the folder already holds this spec's data."""
    stamp = out_dir / "generator.json"
    csv_path = out_dir / "labels.csv"
    fingerprint = _fingerprint(spec)
    if csv_path.exists() and stamp.exists() and json.loads(stamp.read_text()).get("fingerprint") == fingerprint:
        return csv_path
    if out_dir.exists():
        shutil.rmtree(out_dir)
    generate_dataset(out_dir, spec, workers)
    stamp.write_text(json.dumps({"spec": asdict(spec), "fingerprint": fingerprint}, indent=2) + "\n")
    return csv_path


def plan_recordings(spec: GenerateSpec) -> list[PlannedRecording]:
    """Every recording of the dataset: scene, split, format, rate and seed. Same spec, same plan."""
    rng = np.random.default_rng(spec.seed + 1)
    narrow = np.random.default_rng(spec.seed + 2)  # a stream of its own: the other draws stay as they were
    shares = np.array([f[3] for f in _FORMATS])
    planned = []
    for stem, scene, split in plan_scenes(spec):
        fmt_index = int(rng.choice(len(_FORMATS), p=shares / shares.sum()))
        rel = Path("audio") / f"{stem}.{_FORMATS[fmt_index][2]}"
        rate, seed = int(rng.choice(_RATES)), int(rng.integers(2**31))
        label = LABEL_SEPARATOR.join(sorted(scene.species)) or BACKGROUND_LABEL
        narrowband = narrow.random() < spec.narrowband_share
        if _FORMATS[fmt_index][0] == "MP3":
            compression = float(rng.uniform(*_MP3_COMPRESSION))
            planned.append(PlannedRecording(rel, label, split, scene, _MP3_RATE, fmt_index, seed, compression))
        else:
            file_rate = NARROWBAND_RATE if narrowband else None
            planned.append(PlannedRecording(rel, label, split, scene, rate, fmt_index, seed, file_rate=file_rate))
    return planned


def generate_dataset(out_dir: Path, spec: GenerateSpec = GenerateSpec(), workers: int | None = None) -> Path:
    """Write audio files, labels.csv and its events file under out_dir; returns the labels CSV path."""
    (out_dir / "audio").mkdir(parents=True, exist_ok=True)
    planned = plan_recordings(spec)
    jobs = [(out_dir, p) for p in planned]
    with worker_pool(workers) as pool:
        events = list(tqdm(pool.map(_write_one, jobs, chunksize=4), total=len(jobs), desc="generate birdcall", unit="rec"))
    csv_path = out_dir / "labels.csv"
    write_events(csv_path, ((p.path.as_posix(), e) for p, calls in zip(planned, events, strict=True) for e in calls))
    # The labels CSV last: its presence means the folder is complete.
    with csv_path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "split"])
        writer.writerows((p.path.as_posix(), p.label, p.split) for p in planned)
    return csv_path
