"""The resume journal: keys, stored results, crash leftovers, compaction, and the lock."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

import pytest

from analyze.atomic import TMP_SUFFIX
from analyze.detections import Detection
from analyze.journal import FOLDER, FileKey, Journal, JournalBusyError, settings_digest
from analyze.records import FileFailure, FileResult, ModelInfo

MODEL = ModelInfo("birdcall", "1.0", ("owl",), 20.0, 8000.0)


def audio(tmp_path: Path, name: str = "a.wav", data: bytes = b"RIFF....") -> Path:
    path = tmp_path / "in" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def a_result(path: Path) -> FileResult:
    clock = datetime(2024, 5, 17, 5, 30, 0, 123456)
    detection = Detection(path, 1, 2.5, 7.5, "owl", 0.1 + 0.2, 2, clock, clock.replace(second=5))
    return FileResult(path, 61.25, 48_000, 2, (detection,))


def test_a_recorded_result_is_found_by_its_key_and_survives_reopening(tmp_path):
    path = audio(tmp_path)
    key = FileKey.of(path, MODEL, "s1")
    with Journal.open(tmp_path / "out") as journal:
        assert journal.entry(key) is None
        journal.record_result(key, a_result(path))
        assert journal.entry(key).status == "ok"
    with Journal.open(tmp_path / "out") as journal:
        assert journal.entry(key).status == "ok"
        assert journal.load_result(key) == a_result(path)  # floats, datetimes and channel exactly as stored


def test_a_changed_file_model_version_or_settings_misses(tmp_path):
    path = audio(tmp_path)
    key = FileKey.of(path, MODEL, "s1")
    with Journal.open(tmp_path / "out") as journal:
        journal.record_result(key, a_result(path))
        assert journal.entry(FileKey.of(path, ModelInfo("birdcall", "1.1", ("owl",), 20.0, 8000.0), "s1")) is None
        assert journal.entry(FileKey.of(path, MODEL, "s2")) is None
        os.utime(path, ns=(1, key.mtime_ns + 1))
        assert journal.entry(FileKey.of(path, MODEL, "s1")) is None
        path.write_bytes(b"RIFF.....")
        assert journal.entry(FileKey.of(path, MODEL, "s1")) is None


def test_failures_are_recorded_with_stage_and_reason(tmp_path):
    path = audio(tmp_path)
    key = FileKey.of(path, MODEL, "s")
    with Journal.open(tmp_path / "out") as journal:
        journal.record_failure(key, FileFailure(path, "decode", "truncated FLAC frame"))
    with Journal.open(tmp_path / "out") as journal:
        entry = journal.entry(key)
        assert (entry.status, entry.stage, entry.reason) == ("failed", "decode", "truncated FLAC frame")


def test_a_torn_last_line_from_a_kill_is_dropped(tmp_path):
    a, b = audio(tmp_path, "a.wav"), audio(tmp_path, "b.wav")
    with Journal.open(tmp_path / "out") as journal:
        journal.record_result(FileKey.of(a, MODEL, "s"), a_result(a))
    log = tmp_path / "out" / FOLDER / "journal.ndjson"
    with open(log, "ab") as f:
        f.write(b'{"path": "' + os.fsencode(b) + b'", "size": 8, "mtime')  # killed mid-write
    with Journal.open(tmp_path / "out") as journal:
        assert journal.entry(FileKey.of(a, MODEL, "s")).status == "ok"
        journal.record_result(FileKey.of(b, MODEL, "s"), a_result(b))
    assert log.read_text().count("\n") == 2
    with Journal.open(tmp_path / "out") as journal:
        assert journal.entry(FileKey.of(b, MODEL, "s")).status == "ok"


def test_a_part_without_a_journal_line_is_deleted_and_a_missing_part_reads_as_none(tmp_path):
    a = audio(tmp_path)
    key = FileKey.of(a, MODEL, "s")
    parts = tmp_path / "out" / FOLDER / "parts"
    parts.mkdir(parents=True)
    (parts / key.part_name).write_text("{}")  # written, then killed before its journal line
    (parts / f".{key.part_name}.x{TMP_SUFFIX}").write_text("{")  # killed mid-write
    with Journal.open(tmp_path / "out") as journal:
        assert list(parts.iterdir()) == []
        journal.record_result(key, a_result(a))
        (parts / key.part_name).unlink()
        assert journal.load_result(key) is None


def test_opening_compacts_to_the_latest_entry_per_path_and_its_part(tmp_path):
    a = audio(tmp_path)
    old, new = FileKey.of(a, MODEL, "s1"), FileKey.of(a, MODEL, "s2")
    with Journal.open(tmp_path / "out") as journal:
        journal.record_result(old, a_result(a))
        journal.record_result(new, a_result(a))
    with Journal.open(tmp_path / "out") as journal:
        assert journal.entry(old) is None and journal.entry(new) is not None
    assert [p.name for p in (tmp_path / "out" / FOLDER / "parts").iterdir()] == [new.part_name]
    assert (tmp_path / "out" / FOLDER / "journal.ndjson").read_text().count("\n") == 1


def test_a_path_that_is_not_utf8_round_trips(tmp_path):
    raw = os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav")
    with open(raw, "wb") as f:
        f.write(b"x")
    path = Path(os.fsdecode(raw))
    key = FileKey.of(path, MODEL, "s")
    with Journal.open(tmp_path / "out") as journal:
        journal.record_result(key, a_result(path))
    with Journal.open(tmp_path / "out") as journal:
        assert journal.load_result(key).path == path


def test_two_runs_cannot_share_an_output_folder(tmp_path):
    with Journal.open(tmp_path / "out"), pytest.raises(JournalBusyError, match="another chorus analyze"), Journal.open(tmp_path / "out"):
        pass
    with Journal.open(tmp_path / "out"):  # released when the first closed
        pass


def test_settings_digest_ignores_key_order_and_sorts_sets():
    assert settings_digest({"a": 1, "b": frozenset({"y", "x"})}) == settings_digest({"b": {"x", "y"}, "a": 1})
    assert settings_digest({"a": 1}) != settings_digest({"a": 2})
