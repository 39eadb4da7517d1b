"""The resume journal: which files are finished, and what each gave, kept under `--out`.

Layout, in a hidden folder `OUT/.chorus-analyze/`:

- `journal.ndjson`: one JSON line per finished file, appended and fsynced before the next file
  counts as done. A line holds the file's key (path, size, mtime, ctime, model name and version, and a
  digest of the analysis settings) and its status, `ok` or `failed` with the stage and reason.
- `parts/<digest of the key>.json`: the detections and audio facts of each `ok` file, written
  atomically *before* its journal line, so a line never points to a missing part.
- `outputs.json`: the model, settings and formats the last finished run wrote its outputs with.
- `tables.json`: every per-file table chorus may have written here (recorded before it writes
  one), so that cleaning up stale tables never touches a file of the user's.

A kill at any moment leaves at worst a torn last line (dropped on the next open) or a part
without a line (deleted on the next open, and the file redone). Opening also compacts: only the
latest line per path is kept, with its part. A lock file stops two runs from sharing one journal.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, Literal

from analyze.atomic import write_text
from analyze.detections import Detection
from analyze.records import FileFailure, FileResult, ModelInfo

FOLDER = ".chorus-analyze"
"""The journal's folder inside the output folder; hidden, so source expansion never reads it."""


class JournalBusyError(RuntimeError):
    """Another run holds the journal of this output folder."""


@dataclass(frozen=True)
class FileKey:
    """What a finished file's result depends on: if any of it changes, the file is analyzed again."""

    path: str
    size: int
    mtime_ns: int
    ctime_ns: int
    """The inode's change time: a recording copied over another of the same size with its mtime kept
    (`cp -p`, `rsync -a`, two recorders on one schedule) changes it, as does `touch -r`."""
    model: str
    version: str
    settings: str
    """Digest of the analysis settings (see settings_digest)."""

    @classmethod
    def of(cls, path: Path, model: ModelInfo, settings: str) -> FileKey:
        """The key of `path` as it is on disk now (raises OSError when it cannot be stat'ed)."""
        stat = path.stat()
        return cls(os.fspath(path), stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, model.name, model.version, settings)

    @property
    def part_name(self) -> str:
        blob = json.dumps(asdict(self), sort_keys=True).encode()
        return hashlib.sha256(blob).hexdigest()[:32] + ".json"


@dataclass(frozen=True)
class Entry:
    """The journal's word on one file."""

    key: FileKey
    status: Literal["ok", "failed"]
    stage: str = ""
    reason: str = ""


def settings_digest(settings: Mapping[str, Any]) -> str:
    """A short stable digest of JSON-able settings (key order does not matter)."""
    blob = json.dumps(settings, sort_keys=True, default=_jsonable).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


def _jsonable(value: Any) -> Any:
    if isinstance(value, frozenset | set):
        return sorted(value)
    raise TypeError(f"not JSON-able: {value!r}")


class Journal:
    """Open with `Journal.open(out_dir)` as a context manager; it holds the folder's lock while open."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._latest = _read_entries(folder / "journal.ndjson")
        self._compact()
        # Binary append: one write per line, so a line is either all there or a torn tail.
        self._log = open(self.folder / "journal.ndjson", "ab")  # noqa: SIM115 (closed when open() exits)

    @classmethod
    @contextlib.contextmanager
    def open(cls, out_dir: Path) -> Iterator[Journal]:
        folder = out_dir / FOLDER
        (folder / "parts").mkdir(parents=True, exist_ok=True)
        lock = os.open(folder / "lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise JournalBusyError(f"another chorus analyze is writing to {out_dir}") from None
            journal = cls(folder)
            try:
                yield journal
            finally:
                journal._log.close()
        finally:
            os.close(lock)  # closing the descriptor releases the lock

    def outputs_written_with(self) -> dict[str, Any] | None:
        """What the last run that finished here wrote its outputs with (see record_outputs_written_with)."""
        try:
            return dict(json.loads((self.folder / "outputs.json").read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError):
            return None

    def record_outputs_written_with(self, state: dict[str, Any]) -> None:
        write_text(self.folder / "outputs.json", json.dumps(state, sort_keys=True))

    def recorded_tables(self) -> set[Path]:
        """The per-file tables under the output folder that runs here wrote or were about to write."""
        try:
            names = json.loads((self.folder / "tables.json").read_text(encoding="utf-8"))
            return {self.folder.parent / name for name in names}
        except (OSError, ValueError, TypeError):
            return set()

    def record_tables(self, tables: Iterable[Path]) -> None:
        """Record these tables (paths under the output folder) as chorus's, replacing the record."""
        names = sorted(os.fspath(table.relative_to(self.folder.parent)) for table in tables)
        write_text(self.folder / "tables.json", json.dumps(names))  # ASCII: odd names are escaped

    def entry(self, key: FileKey) -> Entry | None:
        """The journal's entry for this exact key, or None when the file is new or changed since."""
        entry = self._latest.get(key.path)
        return entry if entry is not None and entry.key == key else None

    def record_result(self, key: FileKey, result: FileResult) -> None:
        write_text(self._parts / key.part_name, json.dumps(_result_to_json(result)))
        self._append(Entry(key, "ok"))

    def record_failure(self, key: FileKey, failure: FileFailure) -> None:
        self._append(Entry(key, "failed", failure.stage, failure.reason))

    def load_result(self, key: FileKey) -> FileResult | None:
        """The stored result of an `ok` entry; None if its part is gone or unreadable (then redo the file)."""
        try:
            return _result_from_json(json.loads((self._parts / key.part_name).read_text(encoding="utf-8")))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    @property
    def _parts(self) -> Path:
        return self.folder / "parts"

    def _append(self, entry: Entry) -> None:
        self._log.write(_entry_line(entry).encode())
        self._log.flush()
        os.fsync(self._log.fileno())
        self._latest[entry.key.path] = entry

    def _compact(self) -> None:
        """Keep only the latest entry per path (sorted, atomically rewritten) and the parts they name."""
        entries = [self._latest[path] for path in sorted(self._latest)]
        write_text(self.folder / "journal.ndjson", "".join(_entry_line(e) for e in entries))
        keep = {e.key.part_name for e in entries if e.status == "ok"}
        for part in self._parts.iterdir():
            if part.name not in keep:
                part.unlink()


def _entry_line(entry: Entry) -> str:
    return json.dumps({**asdict(entry.key), "status": entry.status, "stage": entry.stage, "reason": entry.reason}) + "\n"


def _read_entries(path: Path) -> dict[str, Entry]:
    """Latest entry per path. Lines that do not parse (a torn tail after a kill) are dropped."""
    latest: dict[str, Entry] = {}
    if not path.exists():
        return latest
    for line in path.read_bytes().split(b"\n"):
        try:
            fields = json.loads(line)
            key = FileKey(**{name: fields[name] for name in FileKey.__dataclass_fields__})
            entry = Entry(key, fields["status"], fields["stage"], fields["reason"])
        except (ValueError, KeyError, TypeError):
            continue
        latest[entry.key.path] = entry
    return latest


# Parts are JSON with ASCII escapes: a file name that is not valid UTF-8 round-trips exactly.
def _result_to_json(result: FileResult) -> dict[str, Any]:
    return {
        "path": os.fspath(result.path),
        "duration_s": result.duration_s,
        "sample_rate": result.sample_rate,
        "channels": result.channels,
        "detections": [
            {
                "channel": d.channel,
                "begin_s": d.begin_s,
                "end_s": d.end_s,
                "species": d.species,
                "score": d.score,
                "windows": d.windows,
                "clock_begin": None if d.clock_begin is None else d.clock_begin.isoformat(),
                "clock_end": None if d.clock_end is None else d.clock_end.isoformat(),
            }
            for d in result.detections
        ],
    }


def _result_from_json(data: dict[str, Any]) -> FileResult:
    path = Path(data["path"])
    return FileResult(
        path=path,
        duration_s=data["duration_s"],
        sample_rate=data["sample_rate"],
        channels=data["channels"],
        detections=tuple(
            Detection(
                path=path,
                channel=d["channel"],
                begin_s=d["begin_s"],
                end_s=d["end_s"],
                species=d["species"],
                score=d["score"],
                windows=d["windows"],
                clock_begin=None if d["clock_begin"] is None else datetime.fromisoformat(d["clock_begin"]),
                clock_end=None if d["clock_end"] is None else datetime.fromisoformat(d["clock_end"]),
            )
            for d in data["detections"]
        ),
    )
