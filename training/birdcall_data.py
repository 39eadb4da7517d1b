"""birdcall data: read any folder + CSV of labels, turn it into labelled windows.

The labels CSV has columns `path,label` and optionally `split` (train/val/test). Paths are relative
to the CSV's folder. `label` names the species heard in the recording, several separated by `;`;
`background` (or an empty label) marks a recording without any. Without a split column,
recordings are split deterministically by a hash of their path (80/10/10, the seed's
proportions), never window by window, so no recording leaks across splits.

Window labels: when an events CSV sits beside the labels CSV (`labels.events.csv` for
`labels.csv`, columns `path,label,start,end` in seconds, one row per call, as a Raven selection
table holds them; an optional `snr_db` column is kept for the figures), a window is labelled with
a species when it holds at least MIN_CALL_SECONDS of its calls or most of one whole call, and not
labelled when it holds none (less than NO_CALL_SECONDS). A call cut by the window's edge in between is neither: that (window, species)
pair is left out of the loss and the figures, like the collar of event-based sound-event metrics.
Recordings without events rows get their CSV labels on every window (weak labels).
Generated data and a user's real recordings take exactly the same path.
"""

from __future__ import annotations

import csv
import hashlib
import os
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from features import FrontEnd, FrontEndConfig, WindowSpan
from training.birdcall_synth import CallEvent

SPLITS = ("train", "val", "test")
LABEL_SEPARATOR = ";"
BACKGROUND_LABEL = "background"
MIN_CALL_SECONDS = 0.2
"""A window holding at least this much of a species' calls is labelled with it."""
WHOLE_CALL_SHARE = 0.8
"""... as is one holding this share of any one call (short calls)."""
NO_CALL_SECONDS = 0.02
"""A window holding less than this of a species' calls is labelled without it."""


@dataclass(frozen=True)
class Item:
    path: Path
    labels: tuple[str, ...]
    """Species heard in the recording (empty: background only)."""
    split: str
    events: tuple[CallEvent, ...] | None = None
    """Where each call sits, when the data says so; None: the labels hold for every window."""


def events_path(csv_path: Path) -> Path:
    """The events CSV that belongs to a labels CSV: labels.csv -> labels.events.csv."""
    return csv_path.with_name(f"{csv_path.stem}.events.csv")


def parse_labels(text: str) -> tuple[str, ...]:
    """'a;b' -> ('a', 'b'); 'background' or '' -> ()."""
    names = {part.strip() for part in text.split(LABEL_SEPARATOR)} - {"", BACKGROUND_LABEL}
    return tuple(sorted(names))


def _hash_split(path: str) -> str:
    bucket = int(hashlib.sha1(path.encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


def _read_events(csv_path: Path) -> dict[str, list[CallEvent]]:
    """{path as written in the CSV: its calls}, or {} when there is no events file."""
    path = events_path(csv_path)
    if not path.exists():
        return {}
    events: dict[str, list[CallEvent]] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label", "start", "end"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{path} lacks column(s) {sorted(missing)}; expected path,label,start,end")
        for row in reader:
            start, end = float(row["start"]), float(row["end"])
            if not 0 <= start < end:
                raise ValueError(f"{path}: event {row['label']} of {row['path']} has start {start} and end {end}")
            snr = row.get("snr_db") or None  # optional: generated data records each call's level
            events.setdefault(row["path"], []).append(CallEvent(row["label"].strip(), start, end, None if snr is None else float(snr)))
    return events


def read_manifest(csv_path: Path) -> list[Item]:
    """Read `path,label[,split]` rows (and the events file beside it); paths are relative to the CSV's folder."""
    root = csv_path.parent
    events = _read_events(csv_path)
    items = []
    with csv_path.open(newline="") as f:
        reader = csv.DictReader(f)
        missing = {"path", "label"} - set(reader.fieldnames or [])
        if missing:
            raise ValueError(f"{csv_path} lacks column(s) {sorted(missing)}; expected path,label[,split]")
        for row in reader:
            split = (row.get("split") or _hash_split(row["path"])).strip()
            if split not in SPLITS:
                raise ValueError(f"{csv_path}: split {split!r} for {row['path']} is not one of {SPLITS}")
            labels = parse_labels(row["label"] or "")
            calls = events.pop(row["path"], None)
            if calls is not None and not {e.label for e in calls} <= set(labels):
                raise ValueError(f"{csv_path}: events of {row['path']} name species its label {row['label']!r} does not")
            # With an events file, a background recording's windows are known to hold no call.
            known = tuple(calls) if calls is not None else (() if events_path(csv_path).exists() and not labels else None)
            items.append(Item(root / row["path"], labels, split, known))
    if not items:
        raise ValueError(f"{csv_path} lists no recordings")
    if events:
        raise ValueError(f"{events_path(csv_path)} has events for recordings {csv_path} does not list: {sorted(events)[:3]}")
    return items


def species_of(items: Sequence[Item]) -> list[str]:
    """The label list (output order of the model): every species named anywhere, sorted."""
    return sorted({name for item in items for name in item.labels})


def dataset_hash(csv_path: Path) -> str:
    """sha256 over the manifest, its events and every listed file: names the exact data a model was trained on."""
    digest = hashlib.sha256(csv_path.read_bytes())
    if events_path(csv_path).exists():
        digest.update(events_path(csv_path).read_bytes())
    for item in read_manifest(csv_path):
        digest.update(item.path.read_bytes())
    return digest.hexdigest()


def window_targets(item: Item, spans: Sequence[WindowSpan], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n, classes] 0/1 targets, known mask and the loudest call's SNR (NaN: unknown) of one recording's windows."""
    targets = np.zeros((len(spans), len(index)), np.float32)
    known = np.ones_like(targets, dtype=bool)
    snr = np.full_like(targets, np.nan)
    columns = [index[name] for name in item.labels]
    if item.events is None:
        targets[:, columns] = 1.0
        return targets, known, snr
    starts = np.array([s.start for s in spans])[:, None]
    ends = np.array([s.end for s in spans])[:, None]
    for name in item.labels:
        calls = [e for e in item.events if e.label == name]
        if not calls:
            continue
        call_start = np.array([e.start for e in calls])[None, :]
        call_end = np.array([e.end for e in calls])[None, :]
        overlap = np.clip(np.minimum(ends, call_end) - np.maximum(starts, call_start), 0, None)  # [windows, calls]
        held = overlap.sum(axis=1)
        whole = (overlap >= WHOLE_CALL_SHARE * (call_end - call_start)).any(axis=1)
        present = (held >= MIN_CALL_SECONDS) | whole
        targets[:, index[name]] = present
        known[:, index[name]] = present | (held < NO_CALL_SECONDS)
        levels = np.array([np.nan if e.snr_db is None else e.snr_db for e in calls])[None, :]
        if np.isfinite(levels).any():
            heard = np.where(overlap > 0, levels, -np.inf).max(axis=1)
            snr[:, index[name]] = np.where(present & np.isfinite(heard), heard, np.nan)
    return targets, known, snr


@dataclass
class WindowSet:
    """All windows of a list of recordings, before normalization."""

    log_mels: np.ndarray
    """[n, 1, n_mels, n_frames] float32, unnormalized ln-mel."""
    targets: np.ndarray
    """[n, classes] float32: 1 where the window holds the species."""
    known: np.ndarray
    """[n, classes] bool: False where a cut call makes the target neither (left out of loss and figures)."""
    recording: np.ndarray
    """[n] int64 index of the source recording (for per-recording figures)."""
    snr_db: np.ndarray
    """[n, classes] float32: level of the loudest call of the species in the window, when the data says (else NaN)."""

    def select(self, mask: np.ndarray) -> WindowSet:
        return WindowSet(self.log_mels[mask], self.targets[mask], self.known[mask], self.recording[mask], self.snr_db[mask])

    def __len__(self) -> int:
        return len(self.targets)


_worker_frontend: FrontEnd | None = None


def _featurize_one(args: tuple[Path, dict]) -> tuple[np.ndarray, list[WindowSpan]]:
    """One recording's plain ln-mel windows (identity stats: training fits its own) and where they sit."""
    global _worker_frontend
    path, config = args
    if _worker_frontend is None:
        _worker_frontend = FrontEnd(FrontEndConfig.from_dict(config))
    windows = _worker_frontend.analyze(path).windows
    return windows.features, windows.spans


def featurize(
    items: Sequence[Item], labels: Sequence[str], config: FrontEndConfig, workers: int | None = None, desc: str = "features"
) -> WindowSet:
    """Every recording's windows, exactly as serving computes them (FrontEnd.analyze), before normalization;
    each labelled from the recording's events (window_targets)."""
    index = {name: i for i, name in enumerate(labels)}
    jobs = [(item.path, config.to_dict()) for item in items]
    mels, targets, known, rec, snr = [], [], [], [], []
    with ProcessPoolExecutor(max_workers=workers or os.cpu_count()) as pool:
        results = pool.map(_featurize_one, jobs, chunksize=4)
        for i, (item, (m, spans)) in enumerate(tqdm(zip(items, results, strict=True), total=len(items), desc=desc, unit="rec")):
            t, k, level = window_targets(item, spans, index)
            mels.append(m)
            targets.append(t)
            known.append(k)
            snr.append(level)
            rec.append(np.full(len(m), i))
    return WindowSet(np.concatenate(mels), np.concatenate(targets), np.concatenate(known), np.concatenate(rec), np.concatenate(snr))
