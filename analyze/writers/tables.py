"""The flat detection tables: one CSV, NDJSON (one JSON object per line), Parquet; and the errors table.

All three carry the same columns, one row per detection, in the order of the results given:

path, channel (from 1; empty/null when mixed), begin_s, end_s (offsets in the file), species,
score, windows (merged), clock_begin, clock_end (recorder clock, ISO 8601 without zone; empty/null
when the file name holds no start time), model, model_version.

NDJSON and Parquet keep full-precision numbers; CSV spells them as the Raven tables do.

BirdNET's CSV (`birdnet-csv`) has BirdNET-Analyzer's own columns instead, for the tools that read
its tables: Start (s), End (s), Scientific name, Common name, Confidence, File.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from analyze.atomic import atomic_path, atomic_text
from analyze.detections import Detection
from analyze.records import FileFailure, FileResult, ModelInfo
from analyze.writers import text

COLUMNS = ("path", "channel", "begin_s", "end_s", "species", "score", "windows", "clock_begin", "clock_end", "model", "model_version")
ERROR_COLUMNS = ("path", "stage", "reason")
BIRDNET_COLUMNS = ("Start (s)", "End (s)", "Scientific name", "Common name", "Confidence", "File")


def records(results: Iterable[FileResult], model: ModelInfo) -> Iterator[dict[str, Any]]:
    """One dict per detection with typed values (None where empty), in COLUMNS order."""
    for result in results:
        for d in result.detections:
            yield _record(d, model)


def _record(d: Detection, model: ModelInfo) -> dict[str, Any]:
    return {
        "path": text.path_text(d.path),
        "channel": None if d.channel is None else d.channel + 1,
        "begin_s": d.begin_s,
        "end_s": d.end_s,
        "species": d.species,
        "score": d.score,
        "windows": d.windows,
        "clock_begin": d.clock_begin,
        "clock_end": d.clock_end,
        "model": model.name,
        "model_version": model.version,
    }


def ndjson_lines(results: Iterable[FileResult], model: ModelInfo) -> Iterator[str]:
    """The NDJSON lines of `results`, each ending in a newline; usable as a live stream, file by file."""
    for record in records(results, model):
        record["clock_begin"] = text.clock(record["clock_begin"]) or None
        record["clock_end"] = text.clock(record["clock_end"]) or None
        yield json.dumps(record, ensure_ascii=False) + "\n"


def write_ndjson(path: Path, results: Iterable[FileResult], model: ModelInfo) -> None:
    with atomic_text(path) as f:
        f.writelines(ndjson_lines(results, model))


def write_csv(path: Path, results: Iterable[FileResult], model: ModelInfo) -> None:
    with atomic_text(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(COLUMNS)
        for r in records(results, model):
            writer.writerow(
                [
                    r["path"],
                    "" if r["channel"] is None else r["channel"],
                    text.seconds(r["begin_s"]),
                    text.seconds(r["end_s"]),
                    r["species"],
                    text.score(r["score"]),
                    r["windows"],
                    text.clock(r["clock_begin"]),
                    text.clock(r["clock_end"]),
                    r["model"],
                    r["model_version"],
                ]
            )


def write_birdnet_csv(path: Path, results: Iterable[FileResult], model: ModelInfo) -> None:
    """BirdNET-Analyzer's CSV over every file (its combined table's layout): a label of BirdNET's form
    gives its two names, any other label both. It has no channel column, as BirdNET analyzes a mix."""
    with atomic_text(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(BIRDNET_COLUMNS)
        for result in results:
            for d in result.detections:
                writer.writerow(
                    [
                        text.seconds(d.begin_s),
                        text.seconds(d.end_s),
                        *text.species_names(d.species),
                        text.score(d.score),
                        text.path_text(d.path),
                    ]
                )


PARQUET_ROW_GROUP = 100_000
"""Rows buffered per Parquet row group: memory stays bounded however many detections a run has."""


def write_parquet(path: Path, results: Iterable[FileResult], model: ModelInfo) -> None:
    """Parquet through pyarrow, imported only here: the other outputs must not need it."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = pa.schema(
        [
            ("path", pa.string()),
            ("channel", pa.int32()),
            ("begin_s", pa.float64()),
            ("end_s", pa.float64()),
            ("species", pa.string()),
            ("score", pa.float64()),
            ("windows", pa.int32()),
            # Naive timestamps: the recorder's clock, zone unknown; microseconds keep SMART names exact.
            ("clock_begin", pa.timestamp("us")),
            ("clock_end", pa.timestamp("us")),
            ("model", pa.string()),
            ("model_version", pa.string()),
        ]
    )
    with atomic_path(path) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        batch: list[dict[str, Any]] = []
        for record in records(results, model):
            batch.append(record)
            if len(batch) == PARQUET_ROW_GROUP:
                writer.write_table(pa.Table.from_pylist(batch, schema=schema))
                batch = []
        if batch:
            writer.write_table(pa.Table.from_pylist(batch, schema=schema))


def write_errors(path: Path, failures: Sequence[FileFailure]) -> None:
    """The errors table, always written (a header alone says: no file failed)."""
    with atomic_text(path) as f:
        writer = csv.writer(f, lineterminator="\n")
        writer.writerow(ERROR_COLUMNS)
        writer.writerows([text.path_text(e.path), e.stage, text.printable(e.reason)] for e in failures)
