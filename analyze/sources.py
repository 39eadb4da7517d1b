"""Turn the PATH arguments of `chorus analyze` into the sorted list of audio files to analyze.

An argument is a file, a folder (searched recursively), a glob (`site*/**/*.wav`), or a CSV
manifest with a `path` column whose relative paths are relative to the manifest's folder.
Paths stay as the user named them (absolute, `..` folded, symlinks not resolved), because a
symlink's own name may be what carries the recording time.
"""

from __future__ import annotations

import csv
import glob
import io
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import NoReturn

AUDIO_EXTENSIONS = frozenset({".wav", ".flac", ".ogg", ".opus", ".mp3", ".aif", ".aiff", ".aifc", ".au", ".snd", ".w64"})
"""What folders and globs pick up, compared case-insensitively (AudioMoth writes `.WAV`)."""
MANIFEST_EXTENSION = ".csv"
MANIFEST_COLUMN = "path"


class SourceError(ValueError):
    """A PATH argument cannot be used; the message names it."""


def expand_sources(arguments: Sequence[str | os.PathLike[str]]) -> list[Path]:
    """Audio files named by `arguments`: absolute, each file once, sorted by path components.

    Folders and globs yield files with an audio extension, skipping hidden files and folders.
    The output folder is not skipped: chorus writes no audio there, and results kept next to the
    recordings (`--out .`) are common. A file named directly or listed in a manifest is taken as
    given, whatever its extension: the user asked for it, and if it is not audio the run lists
    it in the errors table. A `.csv` file named directly is read as a manifest.
    """
    found: set[Path] = set()
    empty = []
    for argument in arguments:
        files = list(_expand_one(os.fspath(argument)))
        if not files:
            empty.append(os.fspath(argument))
        found.update(files)
    if empty:
        # A folder or pattern given on purpose that holds no recording is most likely the wrong one;
        # among others, it would otherwise vanish from the results without a word.
        extensions = " ".join(sorted(AUDIO_EXTENSIONS))
        raise SourceError(f"no audio files ({extensions}, in any case) found in: {', '.join(empty)}")
    return _each_recording_once(sorted(found, key=lambda p: p.parts))


def _each_recording_once(paths: list[Path]) -> list[Path]:
    """One path per file of a folder: a folder named twice (directly and through a link, or inside
    another argument) would double its detections. A file is its real folder and its name, so
    links with names of their own (which may carry the recording time) stay apart. The first path
    in order is kept, so every run keeps the same."""
    seen: set[tuple[int, int, str]] = set()
    kept = []
    for path in paths:
        try:
            folder = os.stat(path.parent)
        except OSError:  # kept, for the run to list with its reason
            kept.append(path)
            continue
        key = (folder.st_dev, folder.st_ino, path.name)
        if key not in seen:
            seen.add(key)
            kept.append(path)
    return kept


def _expand_one(argument: str) -> Iterable[Path]:
    path = Path(argument)
    if path.is_dir():
        return _walk(_absolute(path))
    if path.is_file():
        return read_manifest(path) if path.suffix.lower() == MANIFEST_EXTENSION else [_absolute(path)]
    if _has_magic(argument):
        matches = sorted(glob.glob(argument, recursive=True))
        if not matches:
            raise SourceError(f"{argument}: the pattern matches no file or folder")
        return [f for m in matches for f in _from_match(_absolute(Path(m)))]
    if path.exists():
        raise SourceError(f"{argument}: not a regular file or folder (a FIFO, socket or device); name recordings stored as files")
    raise SourceError(f"{argument}: no such file or folder")


def _from_match(path: Path) -> Iterable[Path]:
    """A glob match: folders are searched, files kept if they look like audio (a glob is a search, not a choice)."""
    if path.is_dir():
        return _walk(path)
    return [path] if _is_audio(path) else []


def _has_magic(text: str) -> bool:
    return any(c in text for c in "*?[")


def _walk(root: Path) -> Iterable[Path]:
    """Audio files under root. Symlinked folders are followed (a card's folder linked into a
    project), each real folder once, so a link loop ends; a folder that cannot be listed stops
    the command rather than leaving its recordings out unsaid."""
    seen: set[tuple[int, int]] = set()
    for folder, dirs, files in os.walk(root, onerror=_unlistable, followlinks=True):
        base = Path(folder)
        try:
            status = os.stat(folder)
        except OSError as error:
            _unlistable(error)
        if (status.st_dev, status.st_ino) in seen:
            dirs[:] = []
            continue
        seen.add((status.st_dev, status.st_ino))
        # Pruning `dirs` in place is how os.walk is told not to descend; sorted, so that of two
        # links to one folder the same one is taken every run.
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in files:
            if not name.startswith(".") and _is_audio(base / name):
                yield base / name


def _unlistable(error: OSError) -> NoReturn:
    raise SourceError(f"{error.filename}: the folder cannot be listed ({error.strerror})") from error


def read_manifest(manifest: Path) -> list[Path]:
    """Files listed in the `path` column of a CSV manifest; relative entries are relative to its folder.

    Every entry must exist: a manifest is a promise about what is there, so a missing file is
    an error naming the file and the row, not a silent gap in the results.
    """
    folder = _absolute(manifest).parent
    # utf-8-sig: spreadsheets save CSV with a byte-order mark that would otherwise stick to the first header.
    try:
        text = manifest.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError:
        raise SourceError(f"{manifest}: not UTF-8 text; save the manifest as CSV UTF-8") from None
    reader = csv.DictReader(io.StringIO(text, newline=""))
    columns = {name.strip().lower(): name for name in reader.fieldnames or []}
    if MANIFEST_COLUMN not in columns:
        found = ", ".join(reader.fieldnames or []) or "none"
        raise SourceError(f"{manifest}: a manifest needs a '{MANIFEST_COLUMN}' column (columns found: {found})")
    column = columns[MANIFEST_COLUMN]
    paths = []
    for row in reader:
        if not any(isinstance(value, str) and value.strip() for value in row.values()):
            continue  # a blank row a spreadsheet left at the end (",,")
        entry = (row[column] or "").strip()
        if not entry:
            raise SourceError(f"{manifest}, line {reader.line_num}: empty '{MANIFEST_COLUMN}'")
        path = _absolute(folder / entry)
        if not path.is_file():
            problem = "not a file" if path.exists() else "no such file"
            raise SourceError(f"{manifest}, line {reader.line_num}: {problem}: {entry}")
        paths.append(path)
    return paths


def _is_audio(path: Path) -> bool:
    return path.suffix.lower() in AUDIO_EXTENSIONS


def _absolute(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.abspath(path))
