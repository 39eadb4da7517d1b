"""Every output of a run, written atomically from the finished files' results.

Layout under the output folder (each detection output selectable, see FORMATS):

    raven/<path>.selections.txt   Raven selection table of each file        (raven)
    combined.selections.txt       one Raven table for the whole sequence    (raven-combined)
    combined.list.txt             the sound files of that sequence, for Raven (raven-combined)
    audacity/<path>.labels.txt    Audacity label track of each file         (audacity)
    detections.csv                                                          (csv)
    detections.ndjson                                                       (ndjson)
    detections.parquet                                                      (parquet)
    detections.birdnet.csv        BirdNET-Analyzer's CSV columns            (birdnet-csv)
    errors.csv                    files that could not be analyzed          (always)

`<path>` is the audio file's path below the folder common to all sources, with its full file
name kept (`site1/20240517_053000.WAV.selections.txt`): recorders in different folders reuse
the same names, and `a.wav` next to `a.flac` must not share one table.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
from collections.abc import Collection, Iterable, Sequence
from pathlib import Path

from analyze.atomic import atomic_text, write_text
from analyze.records import FileFailure, FileResult, ModelInfo
from analyze.writers import audacity, raven, tables

FORMATS = ("raven", "raven-combined", "audacity", "csv", "ndjson", "parquet", "birdnet-csv")
DEFAULT_FORMATS = frozenset({"raven", "raven-combined", "csv"})


class OutputError(ValueError):
    """An output cannot be written as asked (unknown format, missing library); said before any work starts."""


def check_out_dir(out_dir: Path) -> None:
    """Make the output folder (and its parents) now, so that a path that cannot be one (a file, a
    read-only place) is said before any work, not as a traceback."""
    if out_dir.exists() and not out_dir.is_dir():
        raise OutputError(f"{out_dir}: is a file, not a folder; give a folder for the tables (it is made if missing)")
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise OutputError(f"{out_dir}: cannot be the output folder ({error.strerror}); give a folder that can be written") from error


def check_formats(formats: Collection[str], channels: str = "mix") -> frozenset[str]:
    """Validate the selected formats up front, so a long run cannot fail at its very end."""
    if not formats:  # a run that writes no table would still delete the tables of other settings
        raise OutputError(f"choose at least one output format: {', '.join(FORMATS)}")
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise OutputError(f"unknown output format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    if "birdnet-csv" in formats and channels != "mix":
        raise OutputError(
            "birdnet-csv has no channel column (BirdNET analyzes a mix): with channels analyzed one by one"
            " choose csv, ndjson, parquet or raven"
        )
    if "parquet" in formats and importlib.util.find_spec("pyarrow") is None:
        raise OutputError("Parquet output needs pyarrow, which is not installed (pip install pyarrow)")
    return frozenset(formats)


def common_root(paths: Sequence[Path]) -> Path:
    """The deepest folder holding every path: per-file outputs mirror the paths below it."""
    return Path(os.path.commonpath([p.parent for p in paths]))


NAME_MAX = 255
"""Bytes in one file name, on Linux's file systems and most others."""


def _per_file_path(out_dir: Path, path: Path, root: Path, format_name: str) -> Path:
    relative = path.relative_to(root)
    folder, suffix = _PER_FILE[format_name]
    return out_dir / folder / relative.parent / table_name(relative.name, suffix)


def table_name(recording: str, suffix: str) -> str:
    """`<recording>.<suffix>.txt`, or, where that passes NAME_MAX bytes (a recording's own name may
    be 255 bytes: ~80 characters of Chinese), the name cut short with a digest of the whole so
    that two long names sharing their start still get two tables."""
    full = f"{recording}.{suffix}.txt"
    if len(os.fsencode(full)) <= NAME_MAX:
        return full
    tail = f"~{hashlib.sha256(os.fsencode(recording)).hexdigest()[:12]}.{suffix}.txt"
    room, head = NAME_MAX - len(tail), ""
    for character in recording:  # whole characters: a cut inside one would make bytes no name decodes to
        if len(os.fsencode(head + character)) > room:
            break
        head += character
    return head + tail


def write_file_outputs(out_dir: Path, result: FileResult, root: Path, model: ModelInfo, formats: Collection[str]) -> list[Path]:
    """The per-file outputs of one finished file; returns their paths."""
    written = []
    if "raven" in formats:
        written.append(_write(_per_file_path(out_dir, result.path, root, "raven"), raven.selection_table(result, model)))
    if "audacity" in formats:
        written.append(_write(_per_file_path(out_dir, result.path, root, "audacity"), audacity.label_track(result)))
    return written


_TABLES = {
    "csv": ("detections.csv", tables.write_csv),
    "ndjson": ("detections.ndjson", tables.write_ndjson),
    "parquet": ("detections.parquet", tables.write_parquet),
    "birdnet-csv": ("detections.birdnet.csv", tables.write_birdnet_csv),
}
"""Formats of one table over all files: its file name and its writer."""

_COMBINED = {
    "raven-combined": ("combined.selections.txt", "combined.list.txt"),
    **{name: (file_name,) for name, (file_name, _) in _TABLES.items()},
}
"""Formats written over all files, and their files."""


_PER_FILE = {"raven": ("raven", "selections"), "audacity": ("audacity", "labels")}
"""Per-file formats: their folder under the output folder and their tables' suffix."""


def per_file_tables(out_dir: Path, paths: Iterable[Path], root: Path, formats: Collection[str]) -> set[Path]:
    """The per-file tables of `formats` for these files, at their places under `out_dir`."""
    return {_per_file_path(out_dir, path, root, name) for path in paths for name in _PER_FILE if name in formats}


def remove_stale_tables(out_dir: Path, recorded: Iterable[Path], keep: Collection[Path]) -> None:
    """Delete the tables chorus wrote here (`recorded`) but those of this run's outputs (`keep`): an
    earlier run's over other recordings, over the same ones from another common folder (their
    tables sit elsewhere then), or over a file that fails now, would stand next to this run's as if
    they were among its results. Files of the user's under raven/ and audacity/ are never touched,
    nor folders but those the deletions empty."""
    for table in set(recorded) - set(keep):
        table.unlink(missing_ok=True)
        folder = table.parent
        while folder != out_dir and folder.is_relative_to(out_dir):
            try:
                folder.rmdir()
            except OSError:  # not empty (or gone): something of the user's, or this run's
                break
            folder = folder.parent


def remove_outputs(out_dir: Path, paths: Iterable[Path], root: Path, formats: Collection[str]) -> None:
    """Delete the outputs of `formats` for these files and the combined ones.

    For a run whose settings or model differ from the last run's in the same folder: the tables of
    formats it does not write would otherwise stay as they were, contradicting those it does."""
    doomed = [out_dir / name for format_name in formats for name in _COMBINED.get(format_name, ())]
    doomed += [_per_file_path(out_dir, path, root, name) for path in paths for name in _PER_FILE if name in formats]
    for path in doomed:
        path.unlink(missing_ok=True)


def write_combined_outputs(
    out_dir: Path, results: Iterable[FileResult], failures: Sequence[FileFailure], model: ModelInfo, formats: Collection[str]
) -> list[Path]:
    """The outputs over all files, in the order of `results`; returns their paths.

    `results` is iterated once per output, so each is streamed to disk and memory stays bounded:
    pass a collection, or an object that loads the results afresh on each iteration.
    """
    written = []
    if "raven-combined" in formats:
        written.append(_write_lines(out_dir / "combined.selections.txt", raven.combined_lines(results, model)))
        written.append(_write_lines(out_dir / "combined.list.txt", raven.sequence_lines(results)))
    for name, (file_name, writer) in _TABLES.items():
        if name in formats:
            writer(out_dir / file_name, results, model)
            written.append(out_dir / file_name)
    tables.write_errors(out_dir / "errors.csv", failures)
    written.append(out_dir / "errors.csv")
    return written


def _write(path: Path, content: str) -> Path:
    # Every run rewrites every file's tables; leaving identical ones alone saves two fsyncs per
    # file, which on an SD card or a network disk adds up over thousands of files.
    data = content.encode("utf-8")
    try:
        if path.read_bytes() == data:
            return path
    except OSError:
        pass
    write_text(path, content)
    return path


def _write_lines(path: Path, lines: Iterable[str]) -> Path:
    with atomic_text(path) as f:
        f.writelines(lines)
    return path
