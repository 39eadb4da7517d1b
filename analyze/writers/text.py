"""How values are spelled in the text outputs, in one place so every table agrees."""

from __future__ import annotations

import os
import re
from datetime import datetime
from pathlib import Path


def cell(text: str) -> str:
    """A text value safe in a tab-separated row: tabs and line breaks become spaces.

    Raven and Audacity files have no quoting, so a tab in a file name would shift every column
    after it. The exact path is in the CSV, NDJSON and Parquet outputs.
    """
    return printable(text).replace("\t", " ").replace("\r", " ").replace("\n", " ")


def printable(text: str) -> str:
    """`text` as valid UTF-8: bytes of a file name that are not UTF-8 become U+FFFD."""
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "replace")


def path_text(path: Path) -> str:
    return printable(os.fspath(path))


def seconds(value: float) -> str:
    """Microseconds, as Audacity writes them: enough that rounding never moves a time across a file boundary."""
    return f"{value:.6f}"


def score(value: float) -> str:
    return f"{value:.4f}"


def clock(value: datetime | None) -> str:
    """ISO 8601 without a zone (the recorder's clock), to the millisecond, or to the microsecond where
    the time has one (a SMART recorder's name): every table then says what Parquet's timestamps say.
    Empty when the file name gave no start time."""
    if value is None:
        return ""
    return value.isoformat(timespec="milliseconds" if value.microsecond % 1000 == 0 else "microseconds")


def channel(value: int | None) -> str:
    """Channels are numbered from 1 in every output, as Raven and Audacity do; empty when channels were mixed."""
    return "" if value is None else str(value + 1)


_BIRDNET_LABEL = re.compile(r"([A-Z][a-z]+(?: [a-z][a-z.-]+){1,2})_(\S.*)")
"""BirdNET's `Genus species_Common Name` (a trinomial too): a model trained on such labels keeps them."""


def species_names(label: str) -> tuple[str, str]:
    """(scientific name, common name) of a label: split where it has BirdNET's form
    (`Turdus merula_Eurasian Blackbird`, and its non-bird `Engine_Engine`: BirdNET's common names
    start with a capital where the script has capitals), else the label for both (`hooting_owl`: an
    underscore alone does not make a label BirdNET's)."""
    found = _BIRDNET_LABEL.fullmatch(label)
    if found and not found.group(2)[0].islower():  # `Parus major_song`: a call type, not a common name
        return found.group(1), found.group(2)
    head, _, tail = label.partition("_")
    return (head, tail) if head and head == tail else (label, label)
