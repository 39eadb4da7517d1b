"""What the audio decoders print while they read a file, kept with that file.

libsndfile's MP3 decoder (mpg123) writes its notes on damaged frames straight to the process's
stderr ("Note: Illegal Audio-MPEG-Header 0x770915b5 at offset 20124. Note: Trying to resync..."):
over a folder of thousands of files they came between the progress bar's redraws, naming no file.
A decode worker's stderr is a file of its own instead (StderrCapture); after each recording the
worker sends what was written there with the recording's index, and the run keeps it with the
recording's path: `chorus analyze` in OUT/decoders.log (DecoderLog), a server's jobs in its log.
"""

from __future__ import annotations

import datetime
import fcntl
import os
import sys
import tempfile
from pathlib import Path
from typing import IO

from analyze.writers.text import path_text

MAX_BYTES_PER_FILE = 4096
"""What is kept of one recording's output; a decoder may print a line per damaged frame."""


class StderrCapture:
    """This process's stderr (fd 2: C libraries' and Python's alike) into an unnamed file, read
    and emptied by `take`. On leaving, stderr is restored, and what was not taken goes to it."""

    def __enter__(self) -> StderrCapture:
        _flush()
        self._file = tempfile.TemporaryFile(buffering=0)
        # O_APPEND (which the file's "a" mode would not set on it): every write lands at the end, so
        # emptying the file rewinds the writers too.
        fcntl.fcntl(self._file.fileno(), fcntl.F_SETFL, fcntl.fcntl(self._file.fileno(), fcntl.F_GETFL) | os.O_APPEND)
        self._stderr = os.dup(2)
        os.dup2(self._file.fileno(), 2)
        return self

    def take(self) -> str:
        """What was written since the last take (its first MAX_BYTES_PER_FILE, and how much more); "" if nothing."""
        _flush()
        fd = self._file.fileno()
        size = os.fstat(fd).st_size
        if size == 0:
            return ""
        said = os.pread(fd, min(size, MAX_BYTES_PER_FILE), 0)
        os.ftruncate(fd, 0)
        text = said.decode("utf-8", errors="replace")
        if size > MAX_BYTES_PER_FILE:
            text += f"\n[{size - MAX_BYTES_PER_FILE} more bytes not kept]"
        return text

    def __exit__(self, *exc: object) -> None:
        left = self.take()  # a traceback on the way out, say
        os.dup2(self._stderr, 2)
        os.close(self._stderr)
        self._file.close()
        if left:
            os.write(2, left.encode())


def _flush() -> None:
    """Python's buffered stderr out to fd 2 (sys.stderr may be another stream, pytest's say)."""
    for stream in {id(s): s for s in (sys.stderr, sys.__stderr__) if s is not None}.values():
        stream.flush()


class DecoderLog:
    """OUT/decoders.log of `chorus analyze`: each line a decoder printed, after the path of the
    recording it printed it about; each run's lines after a line with its start time."""

    NAME = "decoders.log"

    def __init__(self, out_dir: Path):
        self.path = out_dir / self.NAME
        self.files = 0
        """Recordings something was said about, in this run."""
        self._log: IO[str] | None = None

    def __call__(self, recording: Path, text: str) -> None:
        if self._log is None:
            # A decoder's bytes in a line it printed must not stop the run either.
            self._log = self.path.open("a", encoding="utf-8", errors="backslashreplace")
            self._log.write(f"# chorus analyze, {datetime.datetime.now().astimezone().isoformat(timespec='seconds')}\n")
        # path_text: a name in another encoding than UTF-8 (Latin-1 from an old recorder) is printable, not an error.
        self._log.writelines(f"{path_text(recording)}: {line.strip()}\n" for line in text.splitlines() if line.strip())
        self._log.flush()
        self.files += 1

    def close(self) -> None:
        if self._log is not None:
            self._log.close()
