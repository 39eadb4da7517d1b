"""The run over a fake engine: outputs, resume after a kill, arrival order, failures, progress."""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import sys
from pathlib import Path

import pytest

import analyze.journal
import analyze.run
import analyze.writers
from analyze.analyzer import READ_STAGE, AnalysisFailed, in_order
from analyze.atomic import TMP_SUFFIX
from analyze.detections import DetectionSettings, UnknownSpeciesError
from analyze.journal import FOLDER
from analyze.records import FileFailure, FileResult, ModelInfo
from analyze.run import Progress, RunConfig, Start, run
from analyze.sources import expand_sources
from analyze.writers import FORMATS, tables
from tests.unit.analyze.fakes import FakeAnalyzer, Killed, decode_error, write_recordings

LABELS = ("owl", "robin", "wren", "finch", "thrush")
MODEL = ModelInfo("birdcall", "2.0.0", LABELS, 20.0, 8000.0)
ALL = frozenset(FORMATS)


def config(out: Path, **kwargs) -> RunConfig:
    kwargs.setdefault("detection", DetectionSettings(min_confidence=0.3, merge=True))
    kwargs.setdefault("formats", ALL)
    return RunConfig(out_dir=out, model=kwargs.pop("model", MODEL), **kwargs)


def outputs(out: Path) -> dict[str, bytes]:
    """Every output file under `out` (the journal's folder aside), by relative path."""
    return {
        os.path.relpath(os.path.join(folder, name), out): Path(folder, name).read_bytes()
        for folder, dirs, names in os.walk(out)
        if FOLDER not in Path(folder).relative_to(out).parts
        for name in names
    }


@pytest.fixture
def recordings(tmp_path) -> list[Path]:
    write_recordings(tmp_path / "in" / "moth1", 5)
    write_recordings(tmp_path / "in" / "moth2", 3, seconds=7.0)
    (tmp_path / "in" / "moth2" / "broken.wav").write_bytes(b"")
    return expand_sources([tmp_path / "in"])


def broken(recordings: list[Path]) -> Path:
    return next(p for p in recordings if p.name == "broken.wav")


@pytest.fixture
def reference(tmp_path, recordings) -> dict[str, bytes]:
    """The outputs of one uninterrupted run."""
    analyzer = FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})
    run(recordings, in_order(analyzer), config(tmp_path / "reference"))
    return outputs(tmp_path / "reference")


def test_a_run_writes_every_output_and_sums_up(tmp_path, recordings, reference):
    assert set(reference) == {
        "combined.selections.txt",
        "combined.list.txt",
        "detections.csv",
        "detections.ndjson",
        "detections.parquet",
        "detections.birdnet.csv",
        "errors.csv",
        *(f"raven/{p.parent.name}/{p.name}.selections.txt" for p in recordings if p.name != "broken.wav"),
        *(f"audacity/{p.parent.name}/{p.name}.labels.txt" for p in recordings if p.name != "broken.wav"),
    }
    summary = run(
        recordings, in_order(FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})), config(tmp_path / "again", retry_failed=True)
    )
    assert (summary.files, summary.files_ok, summary.files_failed, summary.files_skipped) == (9, 8, 1, 0)
    assert summary.audio_hours == pytest.approx((5 * 20 + 10 + 3 * 7 + 3) / 3600)
    assert summary.detections == reference["detections.ndjson"].count(b"\n") > 0
    assert summary.realtime_factor > 0 and summary.wall_s > 0
    json.dumps(summary.as_dict())  # the CLI prints it as its last line
    errors = reference["errors.csv"].decode()
    assert errors == f"path,stage,reason\n{broken(recordings)},decode,not a WAV file: RIFF header missing\n"


def kill_between_files(monkeypatch, after: int) -> FakeAnalyzer:
    return FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()}, kill_after=after)


def kill_after_part_before_journal_line(monkeypatch, after: int) -> FakeAnalyzer:
    append = analyze.journal.Journal._append
    count = {"n": 0}

    def dying_append(self, entry):
        count["n"] += 1
        if count["n"] > after:
            raise Killed
        append(self, entry)

    monkeypatch.setattr(analyze.journal.Journal, "_append", dying_append)
    return FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})


def kill_while_writing_combined_outputs(monkeypatch, after: int) -> FakeAnalyzer:
    def dying_write_ndjson(path, results, model):
        # What kill -9 leaves mid-write: a temporary that nothing got to clean up.
        (path.parent / f".{path.name}.x1y2z3{TMP_SUFFIX}").write_text('{"half a line')
        raise Killed

    monkeypatch.setitem(analyze.writers._TABLES, "ndjson", ("detections.ndjson", dying_write_ndjson))
    return FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})


@pytest.mark.parametrize("kill", [kill_between_files, kill_after_part_before_journal_line, kill_while_writing_combined_outputs])
@pytest.mark.parametrize("after", [0, 3, 7])
def test_kill_then_rerun_gives_the_bytes_of_an_uninterrupted_run(tmp_path, monkeypatch, recordings, reference, kill, after):
    out = tmp_path / "out"
    with monkeypatch.context() as patch, pytest.raises(Killed):
        run(recordings, in_order(kill(patch, after)), config(out))

    resumed = FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})
    summary = run(recordings, in_order(resumed), config(out))
    assert outputs(out) == reference  # hidden leftovers included: a kill leaves nothing behind after the rerun
    if kill is not kill_while_writing_combined_outputs:
        assert len(resumed.calls) == len(recordings) - after  # only the unfinished files were analyzed again
        assert summary.files_skipped == after


KILL_9 = """
import json, os, signal, sys
from pathlib import Path
from analyze.analyzer import READ_STAGE, AnalysisFailed, in_order
from analyze.run import run
from tests.unit.analyze.fakes import FakeAnalyzer, decode_error
from tests.unit.analyze.test_run import LABELS, config

paths, out, after = [Path(p) for p in json.loads(sys.argv[1])], Path(sys.argv[2]), int(sys.argv[3])
fake = FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})

def analyzer(path):
    if len(fake.calls) == after:
        os.kill(os.getpid(), signal.SIGKILL)
    return fake(path)

run(paths, in_order(analyzer), config(out))
"""


def test_a_real_kill_9_then_rerun_gives_the_bytes_of_an_uninterrupted_run(tmp_path, recordings, reference):
    out = tmp_path / "out"
    argv = [sys.executable, "-c", KILL_9, json.dumps([str(p) for p in recordings]), str(out), "4"]
    killed = subprocess.run(argv, cwd=Path(__file__).parents[3], env={**os.environ, "PYTHONPATH": ""}, capture_output=True)
    assert killed.returncode == -signal.SIGKILL, killed.stderr.decode()
    assert not (out / "detections.csv").exists()  # it died before any combined output

    resumed = FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})
    run(recordings, in_order(resumed), config(out))
    assert len(resumed.calls) == len(recordings) - 4
    assert outputs(out) == reference


def shuffled(analyzer):
    """Outcomes in a random order, as a pool of workers would deliver them."""

    def execute(paths):
        paths = list(paths)
        random.Random(7).shuffle(paths)
        return in_order(analyzer)(paths)

    return execute


def test_outputs_do_not_depend_on_the_order_files_finish_in(tmp_path, recordings, reference):
    run(recordings, shuffled(FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})), config(tmp_path / "out"))
    assert outputs(tmp_path / "out") == reference


def test_a_rerun_skips_finished_files_and_redoes_changed_ones(tmp_path, recordings, reference):
    out = tmp_path / "out"
    starts: list[Start] = []
    seconds: dict[Path, float] = {}

    def progress(update: Progress) -> None:
        seconds[update.finished.path] = getattr(update.finished, "duration_s", 0.0)

    first = FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})
    run(recordings, in_order(first), config(out), progress=progress, on_start=starts.append)
    again = FakeAnalyzer(LABELS)
    summary = run(recordings, in_order(again), config(out), on_start=starts.append)
    assert again.calls == [] and summary.files_skipped == len(recordings)
    assert outputs(out) == reference
    audio_s = sum(seconds.values())  # the broken file has none
    assert starts == [Start(len(recordings), 0, 0.0), Start(0, len(recordings), pytest.approx(audio_s))]

    changed = recordings[1]
    changed_s = seconds[changed]
    changed.write_bytes(changed.read_bytes()[:-100])  # one second shorter
    again = FakeAnalyzer(LABELS)
    run(recordings, in_order(again), config(out), on_start=starts.append)
    assert again.calls == [changed]
    assert starts[-1] == Start(1, len(recordings) - 1, pytest.approx(audio_s - changed_s))
    assert outputs(out) != reference

    # Another recording of the same size moved over it with the old modification time (cp -p, rsync -a).
    before = changed.stat()
    other = changed.with_name("other.tmp")
    other.write_bytes(bytes(255 - b for b in changed.read_bytes()))
    os.utime(other, ns=(before.st_atime_ns, before.st_mtime_ns))
    other.replace(changed)
    assert (changed.stat().st_size, changed.stat().st_mtime_ns) == (before.st_size, before.st_mtime_ns)
    again = FakeAnalyzer(LABELS)
    run(recordings, in_order(again), config(out))
    assert again.calls == [changed]


@pytest.mark.parametrize(
    "change",
    [
        {"model": ModelInfo("birdcall", "2.0.1", LABELS, 20.0, 8000.0)},
        {"detection": DetectionSettings(min_confidence=0.4, merge=True)},
        {"analyzer_settings": {"stride_s": 1.0}},
    ],
)
def test_a_new_model_version_or_new_settings_redo_every_file(tmp_path, recordings, change):
    out = tmp_path / "out"
    run(recordings, in_order(FakeAnalyzer(LABELS)), config(out))
    again = FakeAnalyzer(LABELS)
    run(recordings, in_order(again), config(out, **change))
    assert again.calls == recordings


def test_a_file_that_fails_is_listed_every_run_and_retried_only_when_asked_or_changed(tmp_path, recordings):
    out = tmp_path / "out"
    bad = broken(recordings)
    summary = run(recordings, in_order(FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})), config(out))
    assert (summary.files_ok, summary.files_failed) == (8, 1)

    again = FakeAnalyzer(LABELS)
    summary = run(recordings, in_order(again), config(out))
    assert again.calls == [] and summary.files_failed == 1
    assert "broken.wav,decode" in (out / "errors.csv").read_text()

    again = FakeAnalyzer(LABELS, fail={"broken.wav": decode_error("still broken")})
    run(recordings, in_order(again), config(out, retry_failed=True))
    assert again.calls == [bad]
    assert "still broken" in (out / "errors.csv").read_text()

    bad.write_bytes(b"\0" * 1000)  # repaired: now 10 s of audio
    again = FakeAnalyzer(LABELS)
    summary = run(recordings, in_order(again), config(out))
    assert again.calls == [bad] and summary.files_failed == 0
    assert (out / "errors.csv").read_text() == "path,stage,reason\n"


def test_an_unexpected_error_is_listed_for_this_run_and_retried_on_the_next(tmp_path, recordings):
    out = tmp_path / "out"
    flaky = recordings[4]  # moth1/20240517_040000.WAV: the only file of that name
    summary = run(
        recordings,
        in_order(FakeAnalyzer(LABELS, fail={flaky.name: MemoryError("out of memory"), "broken.wav": decode_error()})),
        config(out),
    )
    assert summary.files_failed == 2
    assert f"{flaky},internal,MemoryError: out of memory" in (out / "errors.csv").read_text()
    again = FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})
    summary = run(recordings, in_order(again), config(out))
    assert again.calls == [flaky] and summary.files_failed == 1


def test_scores_the_engine_gets_wrong_are_an_internal_failure_not_a_crash(tmp_path, recordings):
    def wrong_shape(path):
        scores = FakeAnalyzer(LABELS)(path)
        return type(scores)(scores.scores[:, :2], scores.spans, scores.duration_s, scores.sample_rate, scores.channels)

    summary = run(recordings[:2], in_order(wrong_shape), config(tmp_path / "out"))
    assert summary.files_failed == 2
    assert 'internal,"scores have shape (8, 2), expected (8 windows, 5 labels)"' in (tmp_path / "out" / "errors.csv").read_text()


def test_unknown_species_fail_before_any_file_is_analyzed(tmp_path, recordings):
    analyzer = FakeAnalyzer(LABELS)
    with pytest.raises(UnknownSpeciesError, match="'eagle'"):
        run(recordings, in_order(analyzer), config(tmp_path / "out", detection=DetectionSettings(species=frozenset({"eagle"}))))
    assert analyzer.calls == []


def test_no_detections_anywhere_still_writes_every_table(tmp_path, recordings):
    out = tmp_path / "out"
    summary = run(recordings[:3], in_order(FakeAnalyzer(LABELS)), config(out, detection=DetectionSettings(min_confidence=1.0)))
    assert summary.detections == 0 and summary.files_ok == 3
    assert (out / "combined.selections.txt").read_text().count("\n") == 1
    assert (out / "combined.list.txt").read_text().count("\n") == 3
    assert (out / "detections.ndjson").read_text() == ""


def test_a_file_that_vanished_before_the_run_is_a_read_failure(tmp_path, recordings):
    recordings[0].unlink()
    summary = run(recordings, in_order(FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})), config(tmp_path / "out"))
    assert summary.files_failed == 2
    assert f"{recordings[0]},read," in (tmp_path / "out" / "errors.csv").read_text()


def test_a_file_that_could_not_be_read_is_tried_again_on_the_next_run(tmp_path, recordings):
    """A card reader that drops out mid-run: the file is listed as failed for this run only."""
    out = tmp_path / "out"
    gone = recordings[4]  # moth1/20240517_040000.WAV: the only file of that name
    fail = {gone.name: AnalysisFailed(READ_STAGE, "[Errno 2] No such file or directory"), "broken.wav": decode_error()}
    summary = run(recordings, in_order(FakeAnalyzer(LABELS, fail=fail)), config(out))
    assert summary.files_failed == 2
    assert f"{gone},read," in (out / "errors.csv").read_text()
    again = FakeAnalyzer(LABELS)
    summary = run(recordings, in_order(again), config(out))
    assert again.calls == [gone] and (summary.files_failed, summary.files_skipped) == (1, 8)
    assert f"{gone}," not in (out / "errors.csv").read_text()


def test_per_file_outputs_of_earlier_files_follow_the_formats_asked_now(tmp_path, recordings):
    out = tmp_path / "out"
    run(recordings, in_order(FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})), config(out, formats=frozenset({"csv"})))
    assert not (out / "audacity").exists()
    again = FakeAnalyzer(LABELS)
    run(recordings, in_order(again), config(out, formats=frozenset({"audacity"})))
    assert again.calls == []
    assert len(list((out / "audacity").rglob("*.labels.txt"))) == 8


def test_tables_of_formats_not_asked_are_removed_when_the_settings_change(tmp_path, recordings):
    """They would keep the old settings' detections next to tables with the new ones."""
    out = tmp_path / "out"
    fail = {"broken.wav": decode_error()}
    run(recordings, in_order(FakeAnalyzer(LABELS, fail=fail)), config(out, formats=frozenset({"csv", "parquet", "audacity"})))
    # The same settings: a rerun with fewer formats keeps the others current.
    run(recordings, in_order(FakeAnalyzer(LABELS)), config(out, formats=frozenset({"csv"})))
    assert (out / "detections.parquet").exists() and len(list((out / "audacity").rglob("*.labels.txt"))) == 8
    stricter = DetectionSettings(min_confidence=0.9, merge=True)
    run(recordings, in_order(FakeAnalyzer(LABELS, fail=fail)), config(out, formats=frozenset({"csv"}), detection=stricter))
    assert not (out / "detections.parquet").exists() and list((out / "audacity").rglob("*.labels.txt")) == []
    assert (out / "detections.csv").exists()


def test_progress_reports_each_file_and_can_stream_ndjson(tmp_path, recordings, reference):
    events = []
    run(recordings, in_order(FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})), config(tmp_path / "out"), progress=events.append)
    assert [e.done for e in events] == list(range(1, 10)) and {e.total for e in events} == {9}
    assert [e.finished.path for e in events if isinstance(e.finished, FileFailure)] == [broken(recordings)]
    assert events[-1].audio_s == pytest.approx(5 * 20 + 10 + 3 * 7 + 3)
    streamed = [line for e in events if isinstance(e.finished, FileResult) for line in tables.ndjson_lines([e.finished], MODEL)]
    assert "".join(streamed).encode() == reference["detections.ndjson"]


@pytest.mark.parametrize("pick", [lambda r: [r[0], r[0]], lambda r: []])
def test_paths_must_be_given_each_once(tmp_path, recordings, pick):
    with pytest.raises(ValueError, match="each once"):
        run(pick(recordings), in_order(FakeAnalyzer(LABELS)), config(tmp_path / "out"))


def test_outputs_follow_the_order_of_the_paths_given(tmp_path, recordings):
    assert analyze.run.common_root(recordings) == tmp_path / "in"
    run(recordings[::-1], in_order(FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})), config(tmp_path / "out"))
    listed = (tmp_path / "out" / "combined.list.txt").read_text().splitlines()
    assert listed == [str(p) for p in recordings[::-1] if p.name != "broken.wav"]


def test_only_the_files_of_this_run_have_per_file_tables_at_their_places(tmp_path, recordings):
    """A run over moth1 alone, then over in/ (another common folder: the tables move one level down),
    then a file that breaks: no table may stand for a file, or at a place, that this run did not give."""
    out = tmp_path / "out"
    moth1 = [p for p in recordings if p.parent.name == "moth1"]
    run(moth1, in_order(FakeAnalyzer(LABELS)), config(out))
    assert {t.parent.name for t in (out / "raven").rglob("*.selections.txt")} == {"raven"}
    run(recordings, in_order(FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})), config(out))
    tables_now = sorted(t.relative_to(out / "raven") for t in (out / "raven").rglob("*.selections.txt"))
    assert len(tables_now) == 8 and all(t.parts[0] in ("moth1", "moth2") for t in tables_now), tables_now
    assert sorted(d.name for d in (out / "raven").iterdir()) == ["moth1", "moth2"]
    gone = moth1[0]
    gone.write_bytes(b"not audio any more")
    run(recordings, in_order(FakeAnalyzer(LABELS, fail={"broken.wav": decode_error(), gone.name: decode_error()})), config(out))
    assert not (out / "raven" / "moth1" / f"{gone.name}.selections.txt").exists()
    assert len(list((out / "audacity").rglob("*.labels.txt"))) == 7


def test_outputs_of_formats_not_asked_now_do_not_keep_files_deleted_or_changed_since(tmp_path, recordings):
    """Earlier runs' formats are rewritten with this run's files, not left describing others."""
    out = tmp_path / "out"
    fail = {"broken.wav": decode_error()}
    run(recordings, in_order(FakeAnalyzer(LABELS, fail=fail)), config(out, formats=frozenset({"raven", "csv", "ndjson"})))
    deleted, changed = recordings[0], recordings[1]
    deleted.unlink()
    changed.write_bytes(changed.read_bytes() + b"\0" * 64)  # re-copied from the card: analyzed again
    remaining = expand_sources([tmp_path / "in"])
    run(remaining, in_order(FakeAnalyzer(LABELS, fail=fail)), config(out, formats=frozenset({"csv"})))
    csv_paths = {row.split(",")[0] for row in (out / "detections.csv").read_text().splitlines()[1:]}
    ndjson_paths = {json.loads(line)["path"] for line in (out / "detections.ndjson").read_text().splitlines()}
    assert str(deleted) not in ndjson_paths and ndjson_paths == csv_paths
    assert not (out / "raven" / "moth1" / f"{deleted.name}.selections.txt").exists()
    reference = tmp_path / "reference"
    run(remaining, in_order(FakeAnalyzer(LABELS, fail=fail)), config(reference, formats=frozenset({"raven", "csv", "ndjson"})))
    assert outputs(out) == outputs(reference)


def test_files_of_the_users_beside_the_tables_are_never_deleted(tmp_path, recordings):
    """`--out .` in a project folder that has its own raven/ annotations and folders."""
    out = tmp_path / "in"
    mine = out / "raven" / "site1_manual_annotations.selections.txt"
    mine.parent.mkdir(parents=True)
    mine.write_text("Selection\tView\n1\tSpectrogram 1\n")
    (out / "audacity" / "empty_user_folder").mkdir(parents=True)
    run(recordings, in_order(FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})), config(out))
    moth1 = [p for p in recordings if p.parent.name == "moth1"]
    run(moth1, in_order(FakeAnalyzer(LABELS)), config(out))  # moth1 alone: the tables of in/ are stale now
    assert mine.exists() and (out / "audacity" / "empty_user_folder").is_dir()
    assert not (out / "raven" / "moth1").exists() and not (out / "raven" / "moth2").exists()
    assert sorted(t.name for t in (out / "raven").glob("*.selections.txt")) == sorted(
        [mine.name] + [f"{p.name}.selections.txt" for p in moth1]
    )


def test_a_recording_whose_name_fills_the_file_systems_limit_gets_its_tables(tmp_path):
    """255 bytes of name (~80 characters of Chinese) and the table's suffix: the table's name is cut
    short with a digest, and the temporaries behind it fit too."""
    [recording] = write_recordings(tmp_path / "in", 1)
    long = recording.rename(recording.parent / ("SITE" + "\u9ce5" * 77 + "_20240517_053000.wav"))
    assert len(os.fsencode(long.name)) == 255
    out = tmp_path / "out"
    assert run([long], in_order(FakeAnalyzer(LABELS)), config(out)).files_ok == 1
    for folder, suffix in (("raven", "selections"), ("audacity", "labels")):
        [table] = list((out / folder).glob(f"*.{suffix}.txt"))
        assert len(os.fsencode(table.name)) <= 255 and table.name.startswith("SITE\u9ce5\u9ce5")
    assert run([long], in_order(FakeAnalyzer(LABELS)), config(out)).files_skipped == 1  # and reruns find them


def test_a_run_the_output_disk_stops_says_so_and_the_rerun_resumes(tmp_path, recordings, monkeypatch):
    out = tmp_path / "out"
    real = analyze.run.write_combined_outputs

    def disk_full(*args, **kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(analyze.run, "write_combined_outputs", disk_full)
    first = FakeAnalyzer(LABELS, fail={"broken.wav": decode_error()})
    with pytest.raises(analyze.run.RunStoppedError, match=r"stopped part-way .*No space left on device.*resumes"):
        run(recordings, in_order(first), config(out))
    monkeypatch.setattr(analyze.run, "write_combined_outputs", real)
    again = FakeAnalyzer(LABELS)
    assert run(recordings, in_order(again), config(out)).files_ok == 8 and again.calls == []
