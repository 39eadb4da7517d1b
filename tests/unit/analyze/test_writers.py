"""The outputs: Raven tables (per file and combined), Audacity labels, CSV, NDJSON, Parquet, errors."""

from __future__ import annotations

import csv
import io
import json
import os
from datetime import datetime, timedelta
from pathlib import Path

import pytest

from analyze.detections import Detection
from analyze.records import FileFailure, FileResult, ModelInfo
from analyze.writers import (
    DEFAULT_FORMATS,
    FORMATS,
    OutputError,
    check_formats,
    check_out_dir,
    common_root,
    remove_outputs,
    table_name,
    write_combined_outputs,
    write_file_outputs,
)
from analyze.writers.text import species_names

MODEL = ModelInfo("birdcall", "3.1.0", ("owl", "robin"), low_hz=20.0, high_hz=8000.0)
START = datetime(2024, 5, 17, 5, 30, 0)


def det(path: Path, begin: float, end: float, species: str, score: float, *, channel=None, windows=1, clock=False) -> Detection:
    clock_begin = datetime(2024, 5, 17, 5, 30, 0) if clock else None
    return Detection(
        path=path,
        channel=channel,
        begin_s=begin,
        end_s=end,
        species=species,
        score=score,
        windows=windows,
        clock_begin=None if clock_begin is None else clock_begin.replace(second=int(begin)),
        clock_end=None if clock_begin is None else clock_begin.replace(second=int(end)),
    )


def result(path: Path, duration: float, *detections: Detection, rate: int = 48_000, channels: int = 1) -> FileResult:
    return FileResult(path, duration, rate, channels, tuple(detections))


@pytest.fixture
def files(tmp_path):
    """Three files: clock-named with two detections, silent, and a stereo 8 kHz one analyzed per channel."""
    a = tmp_path / "in" / "site1" / "20240517_053000.WAV"
    b = tmp_path / "in" / "site2" / "quiet.flac"
    c = tmp_path / "in" / "site2" / "stereo.wav"
    return [
        result(a, 60.0, det(a, 0.0, 5.0, "owl", 0.91234, clock=True), det(a, 2.5, 10.0, "robin", 0.5, windows=2, clock=True)),
        result(b, 30.5),
        result(c, 12.0, det(c, 5.0, 10.0, "owl", 0.75, channel=1), rate=8_000, channels=2),
    ]


def read_tsv(path: Path) -> list[dict[str, str]]:
    lines = path.read_text(encoding="utf-8").splitlines()
    header = lines[0].split("\t")
    rows = [line.split("\t") for line in lines[1:]]
    assert all(len(row) == len(header) for row in rows)
    return [dict(zip(header, row, strict=True)) for row in rows]


class TestRaven:
    def test_per_file_table_columns_and_values(self, tmp_path, files):
        out = tmp_path / "out"
        [table] = write_file_outputs(out, files[0], common_root([f.path for f in files]), MODEL, {"raven"})
        assert table == out / "raven" / "site1" / "20240517_053000.WAV.selections.txt"
        header = table.read_text().splitlines()[0].split("\t")
        # BirdNET-Analyzer's twelve columns, in its order, in per-file tables as in the combined one.
        assert header[:12] == [
            *("Selection", "View", "Channel", "Begin Time (s)", "End Time (s)", "Low Freq (Hz)", "High Freq (Hz)"),
            *("Common Name", "Species Code", "Confidence", "Begin Path", "File Offset (s)"),
        ]
        combined = write_combined_outputs(out, files, [], MODEL, {"raven-combined"})[0]
        assert combined.read_text().splitlines()[0].split("\t") == header
        rows = read_tsv(table)
        assert [r["Selection"] for r in rows] == ["1", "2"]
        assert rows[0] == {
            "Selection": "1",
            "View": "Spectrogram 1",
            "Channel": "1",
            "Begin Time (s)": "0.000000",
            "End Time (s)": "5.000000",
            "Low Freq (Hz)": "20",
            "High Freq (Hz)": "8000",
            "Common Name": "owl",
            "Species Code": "owl",
            "Confidence": "0.9123",
            "Begin Path": str(files[0].path),
            "File Offset (s)": "0.000000",
            "Clock Begin": "2024-05-17T05:30:00.000",
            "Clock End": "2024-05-17T05:30:05.000",
            "Model": "birdcall",
            "Model Version": "3.1.0",
        }

    def test_a_label_of_birdnets_form_gives_its_common_name_and_keeps_itself_as_the_code(self, tmp_path):
        path = tmp_path / "in" / "moth.wav"
        found = result(path, 10.0, det(path, 0.0, 5.0, "Turdus merula_Eurasian Blackbird", 0.8))
        [table] = write_file_outputs(tmp_path / "out", found, path.parent, MODEL, {"raven"})
        [row] = read_tsv(table)
        assert (row["Common Name"], row["Species Code"]) == ("Eurasian Blackbird", "Turdus merula_Eurasian Blackbird")

    def test_channels_count_from_one_and_high_freq_stops_at_nyquist(self, tmp_path, files):
        [table] = write_file_outputs(tmp_path, files[2], files[2].path.parent, MODEL, {"raven"})
        [row] = read_tsv(table)
        assert (row["Channel"], row["High Freq (Hz)"], row["Clock Begin"]) == ("2", "4000", "")

    def test_a_file_without_detections_gets_a_header_only_table(self, tmp_path, files):
        [table] = write_file_outputs(tmp_path, files[1], files[1].path.parent, MODEL, {"raven"})
        assert table.read_text().count("\n") == 1

    def test_combined_table_places_every_file_in_one_sequence(self, tmp_path, files):
        write_combined_outputs(tmp_path, files, [], MODEL, {"raven-combined"})
        rows = read_tsv(tmp_path / "combined.selections.txt")
        assert [r["Selection"] for r in rows] == ["1", "2", "3"]
        assert [(r["Begin Time (s)"], r["End Time (s)"], r["File Offset (s)"]) for r in rows] == [
            ("0.000000", "5.000000", "0.000000"),
            ("2.500000", "10.000000", "2.500000"),
            # 60 s of the first file and 30.5 s of the silent one come before it in the sequence
            ("95.500000", "100.500000", "5.000000"),
        ]
        assert [r["Begin Path"] for r in rows] == [str(files[0].path)] * 2 + [str(files[2].path)]
        listed = (tmp_path / "combined.list.txt").read_text().splitlines()
        assert listed == [str(f.path) for f in files]  # the silent file too: it takes its place in the sequence

    def test_tabs_and_line_breaks_in_names_cannot_break_columns(self, tmp_path):
        path = tmp_path / "tab\there\nand newline.wav"
        odd = ModelInfo("bird\tcall", "1", ("a\tb",), 0.0, 8000.0)
        files = [result(path, 10.0, det(path, 0.0, 5.0, "a\tb", 0.9))]
        write_combined_outputs(tmp_path, files, [], odd, {"raven-combined"})
        [row] = read_tsv(tmp_path / "combined.selections.txt")
        assert (row["Begin Path"], row["Common Name"], row["Model"]) == (
            str(path).replace("\t", " ").replace("\n", " "),
            "a b",
            "bird call",
        )


def test_audacity_labels(tmp_path, files):
    root = common_root([f.path for f in files])
    [labels] = write_file_outputs(tmp_path, files[0], root, MODEL, {"audacity"})
    assert labels == tmp_path / "audacity" / "site1" / "20240517_053000.WAV.labels.txt"
    assert labels.read_text() == "0.000000\t5.000000\towl 0.9123\n2.500000\t10.000000\trobin 0.5000\n"
    [labels] = write_file_outputs(tmp_path, files[2], root, MODEL, {"audacity"})
    assert labels.read_text() == "5.000000\t10.000000\towl 0.7500 ch2\n"
    [labels] = write_file_outputs(tmp_path, files[1], root, MODEL, {"audacity"})
    assert labels.read_text() == ""


def test_per_file_names_keep_folders_and_extensions_apart(tmp_path):
    same = [tmp_path / "moth1" / "20240517_053000.WAV", tmp_path / "moth2" / "20240517_053000.WAV", tmp_path / "moth1" / "a.flac"]
    same.append(tmp_path / "moth1" / "a.wav")
    root = common_root(same)
    tables = {t for p in same for t in write_file_outputs(tmp_path / "out", result(p, 1.0), root, MODEL, {"raven"})}
    assert len(tables) == 4


class TestTables:
    def test_csv_has_every_column_and_the_exact_path(self, tmp_path, files):
        path = tmp_path / 'in, "quoted"\tname.wav'
        rows_in = [*files, result(path, 5.0, det(path, 0.0, 5.0, "owl", 0.5))]
        write_combined_outputs(tmp_path, rows_in, [], MODEL, {"csv"})
        rows = list(csv.DictReader(io.StringIO((tmp_path / "detections.csv").read_text(), newline="")))
        assert list(rows[0]) == [
            "path",
            "channel",
            "begin_s",
            "end_s",
            "species",
            "score",
            "windows",
            "clock_begin",
            "clock_end",
            "model",
            "model_version",
        ]
        assert rows[0] == {
            "path": str(files[0].path),
            "channel": "",
            "begin_s": "0.000000",
            "end_s": "5.000000",
            "species": "owl",
            "score": "0.9123",
            "windows": "1",
            "clock_begin": "2024-05-17T05:30:00.000",
            "clock_end": "2024-05-17T05:30:05.000",
            "model": "birdcall",
            "model_version": "3.1.0",
        }
        assert rows[2]["channel"] == "2" and rows[2]["clock_begin"] == ""
        assert rows[3]["path"] == str(path)

    def test_ndjson_is_one_object_per_detection_with_full_precision(self, tmp_path, files):
        write_combined_outputs(tmp_path, files, [], MODEL, {"ndjson"})
        lines = (tmp_path / "detections.ndjson").read_text(encoding="utf-8").splitlines()
        objects = [json.loads(line) for line in lines]
        assert len(objects) == 3
        assert objects[0]["score"] == 0.91234 and objects[0]["clock_begin"] == "2024-05-17T05:30:00.000"
        assert objects[2] == {
            "path": str(files[2].path),
            "channel": 2,
            "begin_s": 5.0,
            "end_s": 10.0,
            "species": "owl",
            "score": 0.75,
            "windows": 1,
            "clock_begin": None,
            "clock_end": None,
            "model": "birdcall",
            "model_version": "3.1.0",
        }

    def test_parquet_has_typed_columns(self, tmp_path, files):
        pq = pytest.importorskip("pyarrow.parquet")
        write_combined_outputs(tmp_path, files, [], MODEL, {"parquet"})
        table = pq.read_table(tmp_path / "detections.parquet")
        assert table.column_names[:4] == ["path", "channel", "begin_s", "end_s"]
        assert str(table.schema.field("clock_begin").type) == "timestamp[us]"
        rows = table.to_pylist()
        assert rows[0]["clock_begin"] == datetime(2024, 5, 17, 5, 30, 0) and rows[0]["channel"] is None
        assert rows[2]["channel"] == 2 and rows[2]["model_version"] == "3.1.0"

    def test_birdnet_csv_has_birdnet_analyzers_columns_and_names(self, tmp_path, files):
        path = tmp_path / "in" / "moth.wav"
        birdnet = result(
            path,
            30.0,
            det(path, 0.0, 5.0, "Turdus merula_Eurasian Blackbird", 0.8),
            det(path, 5.0, 10.0, "Engine_Engine", 0.6),
            det(path, 10.0, 15.0, "Junco hyemalis oreganus_Oregon Junco", 0.7),
        )
        write_combined_outputs(tmp_path, [files[0], birdnet], [], MODEL, {"birdnet-csv"})
        rows = list(csv.DictReader(io.StringIO((tmp_path / "detections.birdnet.csv").read_text(), newline="")))
        assert list(rows[0]) == ["Start (s)", "End (s)", "Scientific name", "Common name", "Confidence", "File"]
        assert rows[0] == {
            "Start (s)": "0.000000",
            "End (s)": "5.000000",
            "Scientific name": "owl",  # a label not in BirdNET's form: both names
            "Common name": "owl",
            "Confidence": "0.9123",
            "File": str(files[0].path),
        }
        assert [(r["Scientific name"], r["Common name"]) for r in rows[2:]] == [
            ("Turdus merula", "Eurasian Blackbird"),
            ("Engine", "Engine"),
            ("Junco hyemalis oreganus", "Oregon Junco"),
        ]

    def test_no_detections_still_gives_tables_with_their_headers(self, tmp_path, files):
        pq = pytest.importorskip("pyarrow.parquet")
        write_combined_outputs(tmp_path, [files[1]], [], MODEL, set(FORMATS))
        assert (tmp_path / "detections.csv").read_text().startswith("path,channel,")
        assert (tmp_path / "detections.csv").read_text().count("\n") == 1
        assert (tmp_path / "detections.ndjson").read_text() == ""
        assert (tmp_path / "combined.selections.txt").read_text().count("\n") == 1
        assert pq.read_table(tmp_path / "detections.parquet").num_rows == 0
        assert (tmp_path / "detections.birdnet.csv").read_text() == "Start (s),End (s),Scientific name,Common name,Confidence,File\n"


@pytest.mark.parametrize("name", FORMATS)
def test_each_format_alone_writes_its_own_outputs_and_removing_it_removes_them(tmp_path, files, name):
    if name == "parquet":
        pytest.importorskip("pyarrow")
    out, root = tmp_path / "out", tmp_path / "in"
    written = [p for f in files for p in write_file_outputs(out, f, root, MODEL, {name})]
    written += write_combined_outputs(out, files, [], MODEL, {name})
    assert {p.relative_to(out).as_posix() for p in written} - {"errors.csv"}, f"{name} wrote nothing"
    remove_outputs(out, [f.path for f in files], root, {name})
    assert [p for p in out.rglob("*") if p.is_file()] == [out / "errors.csv"]


def test_errors_table_is_always_written(tmp_path):
    write_combined_outputs(tmp_path, [], [], MODEL, set())
    assert (tmp_path / "errors.csv").read_text() == "path,stage,reason\n"
    failures = [FileFailure(tmp_path / "bad, file.wav", "decode", "not an audio file: 'RIFF' header missing")]
    write_combined_outputs(tmp_path, [], failures, MODEL, set())
    rows = list(csv.DictReader(io.StringIO((tmp_path / "errors.csv").read_text(), newline="")))
    assert rows == [{"path": str(tmp_path / "bad, file.wav"), "stage": "decode", "reason": "not an audio file: 'RIFF' header missing"}]


def test_a_file_name_that_is_not_utf8_is_written_with_a_replacement_character(tmp_path):
    path = Path(os.fsdecode(os.path.join(os.fsencode(tmp_path), b"caf\xe9.wav")))
    files = [result(path, 5.0, det(path, 0.0, 5.0, "owl", 0.9))]
    write_combined_outputs(tmp_path, files, [FileFailure(path, "decode", "x")], MODEL, {"raven-combined", "csv", "ndjson"})
    assert json.loads((tmp_path / "detections.ndjson").read_text(encoding="utf-8"))["path"].endswith("caf\ufffd.wav")
    assert "caf\ufffd.wav" in (tmp_path / "combined.selections.txt").read_text(encoding="utf-8")
    assert "caf\ufffd.wav" in (tmp_path / "errors.csv").read_text(encoding="utf-8")


def test_formats_are_checked_before_any_work(monkeypatch):
    assert check_formats(DEFAULT_FORMATS) == DEFAULT_FORMATS
    with pytest.raises(OutputError, match="unknown output format\\(s\\) kaleidoscope; choose from raven, "):
        check_formats({"raven", "kaleidoscope"})
    import analyze.writers

    monkeypatch.setattr(analyze.writers.importlib.util, "find_spec", lambda name: None)
    with pytest.raises(OutputError, match="needs pyarrow"):
        check_formats({"parquet"})
    assert check_formats({"csv"}) == {"csv"}
    assert check_formats({"birdnet-csv"}) == {"birdnet-csv"}
    with pytest.raises(OutputError, match="birdnet-csv has no channel column"):
        check_formats({"csv", "birdnet-csv"}, channels="each")


@pytest.mark.parametrize(
    ("label", "names"),
    [
        ("Turdus merula_Eurasian Blackbird", ("Turdus merula", "Eurasian Blackbird")),
        ("Poecile atricapillus_Black-capped Chickadee", ("Poecile atricapillus", "Black-capped Chickadee")),
        ("Human vocal_Human vocal", ("Human vocal", "Human vocal")),
        ("Dog_Dog", ("Dog", "Dog")),
        ("hooting_owl", ("hooting_owl", "hooting_owl")),  # an underscore alone is not BirdNET's form
        ("Turdus merula", ("Turdus merula", "Turdus merula")),
        ("turdus merula_blackbird", ("turdus merula_blackbird", "turdus merula_blackbird")),
        ("Parus major_song", ("Parus major_song", "Parus major_song")),  # a call type, not a common name
        ("Turdus merula_Amsel", ("Turdus merula", "Amsel")),
        ("Turdus merula_クロウタドリ", ("Turdus merula", "クロウタドリ")),
    ],
)
def test_labels_of_birdnets_form_give_their_two_names(label, names):
    assert species_names(label) == names


def test_an_identical_per_file_table_is_left_alone(tmp_path, files):
    [table] = write_file_outputs(tmp_path, files[0], files[0].path.parent, MODEL, {"raven"})
    os.utime(table, ns=(1, 1))
    write_file_outputs(tmp_path, files[0], files[0].path.parent, MODEL, {"raven"})
    assert table.stat().st_mtime_ns == 1
    changed = result(files[0].path, 60.0)
    write_file_outputs(tmp_path, changed, files[0].path.parent, MODEL, {"raven"})
    assert table.stat().st_mtime_ns != 1 and table.read_text().count("\n") == 1


def test_the_output_folder_is_made_up_front_and_a_file_in_its_place_is_refused(tmp_path):
    check_out_dir(tmp_path / "survey" / "out")
    assert (tmp_path / "survey" / "out").is_dir()
    (tmp_path / "taken").write_text("x")
    with pytest.raises(OutputError, match=r"taken: is a file, not a folder"):
        check_out_dir(tmp_path / "taken")
    with pytest.raises(OutputError, match=r"cannot be the output folder \(Not a directory\)"):
        check_out_dir(tmp_path / "taken" / "out")


def test_clock_times_in_text_agree_with_parquet_to_the_microsecond(tmp_path):
    """A SMART recorder's name holds microseconds: the text tables keep them as Parquet does."""
    path = tmp_path / "MIC7_20240517_053000_123456.wav"
    start = datetime(2024, 5, 17, 5, 30, 0, 123456)
    detection = Detection(path, None, 5.0, 10.0, "owl", 0.9, 1, start + timedelta(seconds=5), start + timedelta(seconds=10))
    write_combined_outputs(tmp_path, [result(path, 60.0, detection)], [], MODEL, {"csv", "ndjson"})
    row = next(csv.DictReader(io.StringIO((tmp_path / "detections.csv").read_text())))
    assert row["clock_begin"] == "2024-05-17T05:30:05.123456"
    assert json.loads((tmp_path / "detections.ndjson").read_text())["clock_end"] == "2024-05-17T05:30:10.123456"


def test_table_names_past_the_file_systems_limit_are_cut_short_and_stay_apart():
    short = "20240517_053000.WAV"
    assert table_name(short, "selections") == f"{short}.selections.txt"
    one, other = "\u9ce5" * 80 + "_a.wav", "\u9ce5" * 80 + "_b.wav"  # 247 bytes each: the suffix passes 255
    cut = table_name(one, "selections")
    assert len(os.fsencode(cut)) <= 255 and cut.endswith(".selections.txt") and cut.startswith("\u9ce5" * 70)
    assert cut != table_name(other, "selections")  # the same first 200 bytes, two tables
    assert table_name(one, "selections") == cut  # the same name every run
