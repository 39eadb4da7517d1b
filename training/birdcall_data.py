"""birdcall data: read any folder + CSV of labels, turn it into labelled windows.

The labels CSV has columns `path,label` and optionally `split` (train/val/test). Paths are relative
to the CSV's folder. `label` names the species heard in the recording, several separated by `;`;
`background` (or an empty label) marks a recording without any. Without a split column,
recordings are split deterministically by a hash of their path (80/10/10, the seed's
proportions), never window by window, so no recording leaks across splits.

Window labels: when an events CSV sits beside the labels CSV (`labels.events.csv` for
`labels.csv`, columns `path,label,start,end` in seconds, one row per call, as a Raven selection
table holds them; an optional `snr_db` column gives each call's level), a window is labelled with
a species when it holds at least MIN_CALL_SECONDS of its calls or most of one whole call, and not
labelled when it holds none (less than NO_CALL_SECONDS). A call cut by the window's edge in between is neither: that (window, species)
pair is left out of the loss and the figures, like the collar of event-based sound-event metrics.
So is a window whose calls of the species are all under the noise (snr_db below AUDIBLE_DB): there
is a call, but none the audio shows.
Recordings without events rows get their CSV labels on every window (weak labels).
Generated data and a user's real recordings take exactly the same path.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import re
import sys
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import numpy as np
from tqdm import tqdm

from features import AudioError, FrontEnd, FrontEndConfig, WindowSpan
from layout.machine import worker_pool
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
AUDIBLE_DB = 0.0
"""A call whose events row gives a level (`snr_db`) below this is under the noise: it makes no window
present, and a window holding only such calls is neither (left out, like a cut call)."""


LONG_WHOLE_LABEL_SECONDS = 60.0
"""A labelled recording without events longer than this gets a warning: its species cover every window."""
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
"""Control characters but tab and line ends (which csv quoting may carry inside a field)."""


class DataError(ValueError):
    """The user's data (labels CSV, events file, a recording) cannot be trained on: says where and why."""


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
    """'a;b' -> ('a', 'b'); 'background' (any case) or '' -> (); runs of spaces inside a name are one.
    ValueError for a background label beside species, or a comma in a name (two species, mistyped)."""
    names = {" ".join(part.split()) for part in text.split(LABEL_SEPARATOR)} - {""}
    species = {name for name in names if name.lower() != BACKGROUND_LABEL}
    if species and species != names:
        raise ValueError(f"{text!r} names {BACKGROUND_LABEL!r} beside species: a window holds species or none")
    if any("," in name for name in species):
        raise ValueError(f"{text!r} has a comma in a species name; separate species with {LABEL_SEPARATOR!r} (owl{LABEL_SEPARATOR}wren)")
    return tuple(sorted(species))


def _csv_rows(path: Path, required: set[str], expected: str) -> list[tuple[int, dict[str, str]]]:
    """(line number, row) of a CSV with a header: column names trimmed and lower-cased, a UTF-8 BOM
    (Excel's "CSV UTF-8") dropped, blank rows skipped; a row with more or fewer fields than the
    header refused (an unquoted comma in a label, a label not yet typed)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise DataError(f"{path} is not UTF-8 text; save it as CSV UTF-8") from None
    except OSError as error:
        raise DataError(f"cannot read {path}: {error.strerror or error}") from None
    # strict: a quote left open or text after a closing quote is an error, not a field swallowing the rest.
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = [name.strip().lower() for name in next(reader, [])]
        missing = required - set(header)
        if missing:
            found = ",".join(header) if header else "nothing (the file is empty)"
            raise DataError(f"{path} lacks column(s) {sorted(missing)}: its header has {found}; expected {expected}")
        rows = []
        for fields in reader:
            if not any(field.strip() for field in fields):
                continue
            line = reader.line_num
            if len(fields) != len(header):
                many = len(fields) > len(header)
                hint = f"; separate several species with {LABEL_SEPARATOR!r} (owl{LABEL_SEPARATOR}wren)" if many else ""
                raise DataError(f"{path} line {line}: {len(fields)} fields where the header has {len(header)} ({expected}){hint}")
            if any(_CONTROL.search(field) for field in fields):
                raise DataError(f"{path} line {line}: a field holds a control character (a NUL, an escape...); only text is taken")
            rows.append((line, dict(zip(header, fields, strict=True))))
    except csv.Error as error:  # a quote left open, a field past the csv module's 128 KiB
        raise DataError(f"{path} line {reader.line_num}: not CSV as {expected} ({error}); check its quotes") from None
    return rows


def _seconds(path: Path, line: int, column: str, value: str) -> float:
    try:
        return float(value)
    except ValueError:
        raise DataError(f"{path} line {line}: {column} {value!r} is not a number of seconds (e.g. 12.5)") from None


def _decibels(path: Path, line: int, value: str) -> float:
    try:
        level = float(value)
    except ValueError:
        level = float("nan")
    if not np.isfinite(level):
        raise DataError(f"{path} line {line}: snr_db {value!r} is not a number of dB (e.g. 6.5, or -3 for a call under the noise)")
    return level


def _hash_split(path: str) -> str:
    bucket = int(hashlib.sha1(path.encode()).hexdigest()[:8], 16) % 10
    return "train" if bucket < 8 else ("val" if bucket == 8 else "test")


def write_events(csv_path: Path, rows: Iterable[tuple[str, CallEvent]]) -> None:
    """The events file beside csv_path (what _read_events reads): one (recording path as the CSV lists
    it, call) per row, times in ms, the level when there is one."""
    with events_path(csv_path).open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["path", "label", "start", "end", "snr_db"])
        for path, e in rows:
            writer.writerow((path, e.label, f"{e.start:.3f}", f"{e.end:.3f}", "" if e.snr_db is None else e.snr_db))


def _read_events(csv_path: Path) -> dict[str, list[CallEvent]]:
    """{path as written in the CSV: its calls}, or {} when there is no events file."""
    path = events_path(csv_path)
    if not path.exists():
        return {}
    events: dict[str, list[CallEvent]] = {}
    for line, row in _csv_rows(path, {"path", "label", "start", "end"}, "path,label,start,end[,snr_db]"):
        start, end = _seconds(path, line, "start", row["start"]), _seconds(path, line, "end", row["end"])
        if not 0 <= start < end:
            raise DataError(f"{path} line {line}: event {row['label']} of {row['path']} has start {start} and end {end}")
        level = row.get("snr_db", "").strip()  # optional: generated data records each call's level
        snr = _decibels(path, line, level) if level else None
        events.setdefault(row["path"], []).append(CallEvent(row["label"].strip(), start, end, snr))
    return events


_EVENT_COLUMNS = {"start", "end", "begin", "onset", "offset", "begin time (s)", "end time (s)"}
"""Columns that say where a call sits: they belong in the events file, one row per call."""


def read_manifest(csv_path: Path) -> list[Item]:
    """Read `path,label[,split]` rows (and the events file beside it); paths are relative to the CSV's folder.

    Raises DataError naming the file and line of anything it cannot take: a file that is not there
    is said now, not after the splits before it were decoded."""
    root = csv_path.parent
    events = {name.strip(): calls for name, calls in _read_events(csv_path).items()}
    items: list[Item] = []
    lines: dict[str, int] = {}
    rows = _csv_rows(csv_path, {"path", "label"}, "path,label[,split]")
    timed = sorted(_EVENT_COLUMNS & set(rows[0][1]) if rows else ())
    if timed:
        raise DataError(
            f"{csv_path} has column(s) {timed}: where calls sit goes in {events_path(csv_path).name} (path,label,start,end, a row"
            f" per call); {csv_path.name} lists each recording once, as path,label[,split]"
        )
    for line, row in rows:
        name = row["path"].strip()
        if "\\" in name:
            raise DataError(f"{csv_path} line {line}: {name} has a backslash; write paths with '/' (relative to {root})")
        key = os.path.normpath(name)  # ./a.wav and a.wav are one recording
        if key in lines:
            raise DataError(f"{csv_path} line {line}: {name} is listed already on line {lines[key]}; list each recording once")
        lines[key] = line
        if not name or not (root / name).is_file():
            raise DataError(f"{csv_path} line {line}: {name!r} is not a file under {root} (paths are relative to the CSV's folder)")
        split = (row.get("split") or _hash_split(name)).strip()
        if split not in SPLITS:
            raise DataError(f"{csv_path} line {line}: split {split!r} for {name} is not one of {SPLITS}")
        try:
            labels = parse_labels(row["label"])
        except ValueError as error:
            raise DataError(f"{csv_path} line {line}: label {error}") from None
        calls = events.pop(name, None)
        if calls is not None:
            foreign = sorted({e.label for e in calls} - set(labels))
            if foreign:
                raise DataError(f"{events_path(csv_path)}: events of {name} name {foreign}, which its label {row['label']!r} does not")
        # With an events file, a background recording's windows are known to hold no call.
        known = tuple(calls) if calls is not None else (() if events_path(csv_path).exists() and not labels else None)
        items.append(Item(root / name, labels, split, known))
    if not items:
        raise DataError(f"{csv_path} lists no recordings")
    if events:
        raise DataError(f"{events_path(csv_path)} has events for recordings {csv_path} does not list: {sorted(events)[:3]}")
    _refuse_names_differing_in_case(csv_path, species_of(items))
    return items


def _refuse_names_differing_in_case(csv_path: Path, species: list[str]) -> None:
    by_folded: dict[str, list[str]] = {}
    for name in species:
        by_folded.setdefault(name.casefold(), []).append(name)
    clashes = [names for names in by_folded.values() if len(names) > 1]
    if clashes:
        raise DataError(f"{csv_path}: species names that differ only in case would be separate species: {clashes[:3]}; spell each one way")


def check_trainable(csv_path: Path, items: Sequence[Item]) -> None:
    """Refuse, before any audio is read, data that would train nothing or measure nothing."""
    if not species_of(items):
        raise DataError(f"{csv_path} names no species (every row is background); label the recordings that hold birds")
    empty = [name for name in SPLITS if not any(item.split == name for item in items)]
    if empty:
        raise DataError(
            f"{csv_path}: no recordings in split(s) {empty}: training needs train, val and test; give some rows "
            f"split={empty[0]} in a split column (rows without one are split by a hash of the path, 80/10/10, which can"
            f" leave a small data set without some split)"
        )
    unmeasured = sorted(set(species_of(items)) - {name for item in items if item.split == "test" for name in item.labels})
    if unmeasured:
        warn(f"{unmeasured[:5]} have no recording in the test split: their figures will read support 0, not measured")
    unseen = sorted(set(species_of(items)) - {name for item in items if item.split == "train" for name in item.labels})
    if unseen:
        raise DataError(
            f"{csv_path}: {unseen[:5]} never sing in the train split, so the model could not learn them; put some of "
            f"their recordings in split=train, or leave them out"
        )


def species_of(items: Sequence[Item]) -> list[str]:
    """The label list (output order of the model): every species named anywhere, sorted."""
    return sorted({name for item in items for name in item.labels})


def dataset_hash(csv_path: Path, items: Sequence[Item]) -> str:
    """sha256 over the manifest, its events and every listed file (`items`, read_manifest's of
    csv_path: the ones trained on, not the CSV read again): names the exact data a model was trained on."""
    digest = hashlib.sha256(csv_path.read_bytes())
    if events_path(csv_path).exists():
        digest.update(events_path(csv_path).read_bytes())
    for item in items:
        with item.path.open("rb") as f:  # in blocks: a recording may be hours, gigabytes
            while block := f.read(1 << 20):
                digest.update(block)
    return digest.hexdigest()


def window_targets(item: Item, spans: Sequence[WindowSpan], index: dict[str, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """[n, classes] 0/1 targets, known mask and the loudest heard call's level (NaN: unknown) of one recording's windows."""
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
        if not calls:  # labelled, but where it calls is not written down: no window can be told either way
            known[:, index[name]] = False
            continue
        call_start = np.array([e.start for e in calls])[None, :]
        call_end = np.array([e.end for e in calls])[None, :]
        levels = np.array([np.nan if e.snr_db is None else e.snr_db for e in calls])[None, :]
        audible = ~(levels < AUDIBLE_DB)  # a call without a level counts as heard
        overlap = np.clip(np.minimum(ends, call_end) - np.maximum(starts, call_start), 0, None)  # [windows, calls]
        heard = np.where(audible, overlap, 0.0)
        whole = (heard >= WHOLE_CALL_SHARE * (call_end - call_start)).any(axis=1)
        present = (heard.sum(axis=1) >= MIN_CALL_SECONDS) | whole
        targets[:, index[name]] = present
        known[:, index[name]] = present | (overlap.sum(axis=1) < NO_CALL_SECONDS)
        if np.isfinite(levels).any():
            loudest = np.where(heard > 0, levels, -np.inf).max(axis=1)
            snr[:, index[name]] = np.where(present & np.isfinite(loudest), loudest, np.nan)
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

    def __len__(self) -> int:
        return len(self.targets)


_worker_frontend: FrontEnd | None = None


def _featurize_one(args: tuple[Path, dict]) -> tuple[np.ndarray, list[WindowSpan], float, int]:
    """One recording's plain ln-mel windows (identity stats: training fits its own), where they sit,
    its length in seconds and its sample rate. A recording that cannot be read is a DataError naming it."""
    global _worker_frontend
    path, config = args
    if _worker_frontend is None:
        _worker_frontend = FrontEnd(FrontEndConfig.from_dict(config))
    try:
        analysis = _worker_frontend.analyze(path)
    except (AudioError, OSError) as error:
        raise DataError(f"{path}: {error}") from None
    return analysis.windows.features, analysis.windows.spans, analysis.audio.duration_seconds, analysis.audio.sample_rate


def _check_events_inside(item: Item, duration: float) -> None:
    late = [e for e in item.events or () if e.start >= duration]
    if late:
        event = late[0]
        raise DataError(f"{item.path}: the event of {event.label} at {event.start}-{event.end} s starts after its end ({duration:.2f} s)")


def featurize(
    items: Sequence[Item],
    labels: Sequence[str],
    config: FrontEndConfig,
    workers: int | None = None,
    desc: str = "features",
    spill_dir: Path | None = None,
) -> WindowSet:
    """Every recording's windows, exactly as serving computes them (FrontEnd.analyze), before normalization;
    each labelled from the recording's events (window_targets).

    With `spill_dir`, the features go to a file there as they come and come back memory-mapped
    (the file unlinked at once: the mapping keeps it), so hours of training audio (82 KB a
    window) need disk, not RAM; without it they are one array in memory."""
    index = {name: i for i, name in enumerate(labels)}
    jobs = [(item.path, config.to_dict()) for item in items]
    mels, targets, known, rec, snr = [], [], [], [], []
    spill = tempfile.NamedTemporaryFile(dir=spill_dir, prefix="features-", suffix=".f32", delete=False) if spill_dir else None  # noqa: SIM115
    long_labelled, band_limited = [], []
    with worker_pool(workers) as pool:
        # One recording per task: with a few long ones, chunks would put them all on one worker.
        results = pool.map(_featurize_one, jobs, chunksize=1)
        for i, (item, (m, spans, duration, rate)) in enumerate(
            tqdm(zip(items, results, strict=True), total=len(items), desc=desc, unit="rec")
        ):
            _check_events_inside(item, duration)
            if item.events is None and item.labels and duration > LONG_WHOLE_LABEL_SECONDS:
                long_labelled.append(item.path.name)
            if config.band_limited(rate):
                band_limited.append(item)
            t, k, level = window_targets(item, spans, index)
            if spill is not None:
                spill.write(np.ascontiguousarray(m, np.float32).tobytes())
            else:
                mels.append(m)
            targets.append(t)
            known.append(k)
            snr.append(level)
            rec.append(np.full(len(m), i))
    if long_labelled:
        warn(
            f"{desc}: {len(long_labelled)} recording(s) over {LONG_WHOLE_LABEL_SECONDS:g} s have no events ({long_labelled[:3]}...), so"
            " every 5 s window of them is labelled with all their species, pauses and noise included; list where the calls"
            " sit in the events file (docs/training.md, 'Your own recordings') to train on the calls"
        )
    mostly_narrow = [name for name in labels if _count(band_limited, name) > _count(items, name) / 2]
    if mostly_narrow:
        warn(
            f"{desc}: most recordings of {mostly_narrow[:5]} are below {2 * config.f_max:g} Hz, so they hold nothing in the model's"
            " top bands: it may learn empty top bands as those species (8 kHz noise would then read as them); add full-band ones"
        )
    window_rec = np.concatenate(rec)
    log_mels = _mapped(spill, (len(window_rec), *config.feature_shape)) if spill is not None else np.concatenate(mels)
    return WindowSet(log_mels, np.concatenate(targets), np.concatenate(known), window_rec, np.concatenate(snr))


def _mapped(spill: IO[bytes], shape: tuple[int, ...]) -> np.ndarray:
    """The spilled features as a copy-on-write memory map; the file is unlinked (the map keeps it)."""
    spill.close()
    try:
        return np.memmap(spill.name, np.float32, mode="c", shape=shape)
    finally:
        os.unlink(spill.name)


def _count(items: Iterable[Item], species: str) -> int:
    return sum(species in item.labels for item in items)


def warn(message: str) -> None:
    """A note on the data that does not stop training, on stderr beside the progress bars."""
    tqdm.write(f"warning: {message}", file=sys.stderr)
