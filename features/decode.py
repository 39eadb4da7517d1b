"""Read a recording block by block with soundfile (libsndfile), with the limits enforced on what is decoded.

Nothing here holds more than one block: the decoded working set is `block_samples` float32 samples
(all channels together) whatever the file's length, rate or channel count.
"""

from __future__ import annotations

import errno
import io
import os
import stat
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import soundfile as sf
from soundfile import _ffi, _snd

from features.containers import FAMILIES, OGG_TAIL_BYTES, declared_data_end, ogg_ending, sniff, wav_data_size
from features.errors import (
    AudioTooLargeError,
    AudioTooLongError,
    CorruptAudioError,
    EmptyAudioError,
    InvalidSamplesError,
    UnsupportedFormatError,
)

ACCEPTED_FORMATS = ("WAV", "FLAC", "OGG/Vorbis", "OGG/Opus", "MP3", "AIFF", "AU", "W64")
_ACCEPTED_TEXT = ", ".join(ACCEPTED_FORMATS)
DEFAULT_BLOCK_SAMPLES = 1 << 18
"""Decoded samples per read, all channels together: 1 MiB of float32 (about 2.7 s of 48 kHz stereo)."""
# libsndfile reports SF_COUNT_MAX frames when it cannot tell the length (e.g. a chained Ogg).
_UNKNOWN_FRAMES = 1 << 62
_LIBSNDFILE_ERRORS = (sf.LibsndfileError, RuntimeError, TypeError, ValueError)
_HEADER_BYTES = 1 << 16
"""Bytes read ahead of libsndfile: the magic, and the WAV chunks before `data` (metadata chunks included)."""

Source = bytes | str | Path


@dataclass(frozen=True)
class AudioFacts:
    """What a decoded recording was, as the service and the analysis tables report it."""

    duration_seconds: float
    """Decoded frames / sample_rate: what was actually decoded, not what the header claimed."""
    sample_rate: int
    """Rate the file was recorded at, in Hz."""
    channels: int
    """Channel count of the file."""
    format: str
    """Container as libsndfile names it, e.g. WAV, FLAC, OGG, MP3."""


def _read_into(file: sf.SoundFile, out: np.ndarray) -> int:
    """Decode the next len(out) frames into out (C-contiguous float32); returns the frames read.

    Calls libsndfile directly: SoundFile.read (and .blocks) seeks back to its own count after every
    read, and libsndfile's MP3 seek is approximate on VBR files (it lands elsewhere and the next reads
    return zeros and shifted audio, measured 0.36 off); Opus and MPEG-2 reads drift by 1 ULP. Without
    the seek every format decodes the same samples whatever the block size.
    """
    frames = _snd.sf_readf_float(file._file, _ffi.cast("float *", _ffi.from_buffer(out)), len(out))
    _raise_on_error(file)
    return int(frames)


def _raise_on_error(file: sf.SoundFile) -> None:
    if error := _snd.sf_error(file._file):
        raise sf.LibsndfileError(error)


def _read_pcm16_into(file: sf.SoundFile, raw: np.ndarray, out: np.ndarray) -> int:
    """_read_into for 16-bit PCM WAV, the recorders' format: the raw samples in one read, then scaled
    here. libsndfile's own conversion reads 8 KB at a time and converts sample by sample, ~8x the
    time of this; both compute short * 2**-15 in float32, so the samples are the same bit for bit."""
    frames = _snd.sf_readf_short(file._file, _ffi.cast("short *", _ffi.from_buffer(raw)), len(raw))
    _raise_on_error(file)
    np.multiply(raw[:frames], _PCM16_SCALE, out=out[:frames])
    return int(frames)


_PCM16_SCALE = np.float32(1 / 0x8000)
_RAW_PCM16_CONTAINERS = frozenset({"WAV", "WAVEX", "RF64", "W64"})
"""Containers whose 16-bit PCM libsndfile hands over as stored (FLAC decodes to int32 either way)."""


MP3_FRAME_SLACK = 4 * 1152
"""MP3 lengths in a header are estimates (encoder delay, padding): a shortfall within this many frames
(plus 1%) is not called truncation."""


def _unwritten_wav_size(head: bytes, size: int) -> tuple[int, bytes] | None:
    """Where a WAVE header (RIFF, RIFX, RF64) left its data size unwritten (0), and the bytes that say
    "to the end of the file" there; None when the size is written or no data chunk is in `head`.

    A recorder that loses power before closing its file leaves the size at 0, which libsndfile reads
    as no samples at all. RIFF's 32-bit field reads to the end as 0xFFFFFFFF; RF64 keeps the size in
    its ds64 chunk (64 bits), given here as the bytes from the data's start to the file's end."""
    stated = wav_data_size(head)
    if stated is None or stated.value != 0:
        return None
    to_the_end = b"\xff" * 4 if stated.width == 4 else max(0, size - stated.data_start).to_bytes(8, "little")
    return stated.at, to_the_end


def _seek_within(file: io.BufferedReader | io.BytesIO, offset: int, whence: int) -> int:
    """Seek, with a position before the start taken as the start (as BytesIO takes a relative one).

    A hostile header can have libsndfile ask for a negative position; the error Python raises there
    is lost inside soundfile's C callback, which prints its traceback to the server's stderr, one
    per request."""
    base = 0 if whence == io.SEEK_SET else file.tell() if whence == io.SEEK_CUR else file.seek(0, io.SEEK_END)
    return file.seek(max(0, base + offset))


class _Bytes(io.BytesIO):
    """An in-memory recording for libsndfile, as if it began at `start` (no copy), seeking as _seek_within does."""

    def __init__(self, data: bytes, start: int = 0):
        super().__init__(data)
        self._start = start
        super().seek(start)

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        position = super().seek(self._start + max(0, offset) if whence == io.SEEK_SET else offset, whence)
        if position < self._start:
            position = super().seek(self._start)
        return position - self._start

    def tell(self) -> int:
        return super().tell() - self._start


class _DataToTheEnd(io.RawIOBase):
    """A WAV file read with its unwritten data size (_unwritten_wav_size) saying "to the end of the file"."""

    def __init__(self, file: io.BufferedReader | io.BytesIO, size_at: int, size_bytes: bytes):
        self._file, self._size_at, self._size_bytes = file, size_at, size_bytes

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = io.SEEK_SET) -> int:
        return _seek_within(self._file, offset, whence)

    def tell(self) -> int:
        return self._file.tell()

    def readinto(self, buffer: Any) -> int:
        start = self._file.tell()
        count = self._file.readinto(buffer)
        overlap_start, overlap_end = max(start, self._size_at), min(start + count, self._size_at + len(self._size_bytes))
        if overlap_start < overlap_end:
            patch = self._size_bytes[overlap_start - self._size_at : overlap_end - self._size_at]
            memoryview(buffer).cast("B")[overlap_start - start : overlap_end - start] = patch
        return count

    def close(self) -> None:
        self._file.close()
        super().close()


def _open_regular(path: str | Path) -> tuple[int, int]:
    """A descriptor of a regular file, and its size; OSError for anything else. Opened without blocking and
    checked before reading: a FIFO or a device named like a recording (`mkfifo x.wav` in a folder)
    would otherwise block the reader, and the run waiting on it, for ever. Everything after reads
    this descriptor, never the name again: a file swapped for a FIFO or another recording after the
    check is not what gets decoded."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK)
    status = os.fstat(fd)
    if not stat.S_ISREG(status.st_mode):
        os.close(fd)
        reason = "not a regular file (a folder, FIFO, socket or device): only recordings stored as files are read"
        raise OSError(errno.EINVAL, reason, str(path))
    return fd, status.st_size


def _tail(source: bytes | int, size: int) -> bytes:
    """The last OGG_TAIL_BYTES of a recording (bytes, or a regular file's descriptor, `size` bytes long)."""
    if isinstance(source, bytes):
        return source[-OGG_TAIL_BYTES:]
    return os.pread(source, OGG_TAIL_BYTES, max(0, size - OGG_TAIL_BYTES))


RATES = (8_000, 384_000)
"""Sample rates accepted, in Hz (inclusive): what recorders write, with a bound a hostile header cannot pass."""
MAX_CHANNELS = 64


def _too_large(samples: int, channels: int, max_samples: int, *, so_far: bool) -> AudioTooLargeError:
    count = f"more than {samples:,} samples (decoding stopped there)" if so_far else f"{samples:,} samples"
    return AudioTooLargeError(
        f"the recording decodes to {count} over its {channels} channel(s); at most {max_samples:,} are accepted "
        "(frames x channels): fewer channels, a lower rate or a shorter recording would fit"
    )


def _too_long(seconds: float, max_seconds: float, *, so_far: bool) -> AudioTooLongError:
    lasts = f"more than {seconds:.1f} s (decoding stopped there)" if so_far else f"{seconds:.1f} s"
    return AudioTooLongError(f"the recording lasts {lasts}; at most {max_seconds:g} s is accepted")


class AudioReader:
    """An open recording. Opening checks the container and the header's length; `blocks()` decodes.

    Raises a typed AudioError that says what is wrong and what is accepted (a missing path: OSError).
    A path is read from disk as it decodes (never loaded whole); bytes are decoded in place.
    """

    def __init__(
        self,
        source: Source,
        *,
        max_seconds: float | None = None,
        max_samples: int | None = None,
        block_samples: int = DEFAULT_BLOCK_SAMPLES,
    ):
        """max_seconds bounds the duration, max_samples the decoded frames x channels (both: None = no limit)."""
        if block_samples < 1:
            raise ValueError(f"block_samples must be >= 1, got {block_samples}")
        self.max_seconds = max_seconds
        self.max_samples = max_samples
        # A path is opened once, here; libsndfile reads the same descriptor (so a name that is not
        # UTF-8, from an old card, needs no encoding either). Closed by close(), or here on a refusal.
        opened, size = _open_regular(source) if isinstance(source, (str, Path)) else (source, len(source))
        self._fd = opened if isinstance(opened, int) else None
        try:
            self._open(opened, size, block_samples)
        except BaseException:
            self._close_fd()
            raise

    def _open(self, source: bytes | int, size: int, block_samples: int) -> None:
        """The checks and libsndfile's open, on the recording's bytes or its file's descriptor (`size` bytes)."""
        if isinstance(source, int):
            head = os.pread(source, _HEADER_BYTES, 0)
            target: int | _Bytes | _DataToTheEnd = source
        else:
            head = bytes(source[:_HEADER_BYTES])
            target = _Bytes(source)
        if not head:
            raise EmptyAudioError(f"the audio is empty (0 bytes); a recording is needed, in one of: {_ACCEPTED_TEXT}")
        sniffed = sniff(head)
        if sniffed is None:  # features/containers.py: why only these
            raise UnsupportedFormatError(
                f"unsupported audio format (the bytes are not a recognised audio file); accepted: {_ACCEPTED_TEXT}"
            )
        self._sniffed = sniffed.name
        # Half a recording analyzed as if it were the whole would read as an hour without birds.
        data_end = declared_data_end(sniffed, head)
        if data_end is not None and data_end > size:
            raise CorruptAudioError(
                f"the {sniffed.name} file is truncated: its header declares {data_end:,} bytes, the file holds {size:,} "
                f"({size / data_end:.0%}); the complete file is needed"
            )
        ending = ogg_ending(head, _tail(source, size)) if sniffed.name == "OGG" else "ends"
        if ending == "cut":
            raise CorruptAudioError(
                "the OGG file is truncated: its last page does not end its stream, as a finished Ogg file's does; the complete "
                "file is needed (one whose writer stopped early reads as far as it goes once remuxed: ffmpeg -i in.ogg -c copy out.ogg)"
            )
        if ending == "headers only":
            raise EmptyAudioError(
                "the OGG file holds no audio, only its headers (its encoder was given none, or it was cut just after them); "
                "a recording at least a few milliseconds long is needed"
            )
        if ending == "other stream":
            raise UnsupportedFormatError(
                "the OGG file holds more than one stream (chained or multiplexed), and only its first would be read; one audio "
                "stream per file is accepted (ffmpeg -i in.ogg -map 0:a:0 -c copy out.ogg keeps the first)"
            )
        if sniffed.name == "MP3" and sniffed.offset:  # libsndfile reads from where its frames begin
            if isinstance(source, int):
                os.lseek(source, sniffed.offset, os.SEEK_SET)  # sf_open_fd takes the position as the file's start
            else:
                target = _Bytes(source, sniffed.offset)
        unwritten = _unwritten_wav_size(head[sniffed.offset :], size - sniffed.offset) if sniffed.name == "WAV" else None
        if unwritten is not None:
            raw = target if isinstance(target, _Bytes) else open(source, "rb", closefd=False)  # noqa: SIM115 (closed by close())
            target = _DataToTheEnd(raw, sniffed.offset + unwritten[0], unwritten[1])
        self._opened = target if isinstance(target, _DataToTheEnd) else None
        self._declared_frames: int | None = None  # FLAC's and MP3's, once the header is read (below)
        self.frames_decoded = 0
        try:
            self._file = sf.SoundFile(target, closefd=False)
        except _LIBSNDFILE_ERRORS as exc:
            if self._opened is not None:
                self._opened.close()
            raise self._decode_error(exc) from exc
        self.sample_rate = int(self._file.samplerate)
        self.channels = int(self._file.channels)
        self.format = str(self._file.format)
        if self.format not in FAMILIES[sniffed.name]:  # the checks above were made for what the bytes first said
            self.close()
            raise UnsupportedFormatError(
                f"the file starts as {sniffed.name} but decodes as {self.format}; accepted, each as itself: {_ACCEPTED_TEXT}"
            )
        if not RATES[0] <= self.sample_rate <= RATES[1] or not 1 <= self.channels <= MAX_CHANNELS:
            self.close()
            raise UnsupportedFormatError(
                f"the recording has {self.channels} channel(s) at {self.sample_rate} Hz; accepted: {RATES[0]}-{RATES[1]} Hz "
                f"and 1-{MAX_CHANNELS} channels"
            )
        header_frames = self._file.frames
        known = 0 < header_frames < _UNKNOWN_FRAMES
        if self.max_seconds is not None and known and header_frames / self.sample_rate > self.max_seconds:
            self.close()
            raise _too_long(header_frames / self.sample_rate, self.max_seconds, so_far=False)
        if self.max_samples is not None and known and header_frames * self.channels > self.max_samples:
            self.close()
            raise _too_large(header_frames * self.channels, self.channels, self.max_samples, so_far=False)
        self.header_seconds = header_frames / self.sample_rate if known else None
        """The duration the header states (None: it states none), before any decoding."""
        # Frames a cut FLAC or MP3 still claims (its stream info, its length header), checked once
        # decoded; the other containers' data sizes, and an Ogg's last page, were checked above.
        self._declared_frames = header_frames if known and sniffed.name in ("FLAC", "MP3") else None
        # No bigger than the file says it is: libsndfile zero-fills the unread rest of a read buffer.
        self.block_frames = max(1, block_samples // self.channels)
        if known:
            self.block_frames = min(self.block_frames, header_frames + 1)

    def _decode_error(self, exc: Exception) -> CorruptAudioError:
        if (truncated := self._truncation()) is not None:
            return truncated  # a decoder losing its way at the cut (FLAC: "lost sync") says less
        # libsndfile's own words, without soundfile's "Error opening <object at 0x...>" before them
        reason = getattr(exc, "error_string", None) or str(exc)
        return CorruptAudioError(
            f"the {self._sniffed} data could not be decoded ({reason}); a complete, valid file is needed, in one of: {_ACCEPTED_TEXT}"
        )

    def blocks(self) -> Iterator[np.ndarray]:
        """[frames, channels] float32 blocks in [-1, 1], each checked for NaN/inf and against max_seconds.

        Every block is a view of one reused buffer: it is valid until the next block is read.
        """
        buffer = np.empty((self.block_frames, self.channels), np.float32)
        # Integers scaled to float are finite: no NaN check needed.
        pcm16 = self.format in _RAW_PCM16_CONTAINERS and self._file.subtype == "PCM_16"
        raw = np.empty((self.block_frames, self.channels), np.int16) if pcm16 else None
        while True:
            try:
                frames = _read_into(self._file, buffer) if raw is None else _read_pcm16_into(self._file, raw, buffer)
            except sf.LibsndfileError as exc:
                raise self._decode_error(exc) from exc
            if frames == 0:
                break
            block = buffer[:frames]
            self.frames_decoded += len(block)
            if self.max_seconds is not None and self.frames_decoded > self.max_seconds * self.sample_rate:
                raise _too_long(self.frames_decoded / self.sample_rate, self.max_seconds, so_far=True)
            if self.max_samples is not None and self.frames_decoded * self.channels > self.max_samples:
                raise _too_large(self.frames_decoded * self.channels, self.channels, self.max_samples, so_far=True)
            if raw is None and not np.isfinite(block).all():
                raise InvalidSamplesError("the recording contains NaN or infinite samples; only finite PCM or float audio can be analyzed")
            yield block
        if self.frames_decoded == 0:
            raise EmptyAudioError("the recording holds no samples; audio at least a few milliseconds long is needed")
        self._check_complete()

    def _check_complete(self) -> None:
        """Refuse a file whose data stops before its header's length (a recorder or a copy cut short):
        half a recording analyzed as if it were the whole would read as an hour without birds."""
        truncated = self._truncation()
        if truncated is not None:
            raise truncated

    def _truncation(self) -> CorruptAudioError | None:
        declared = self._declared_frames
        if declared is None:
            return None
        slack = MP3_FRAME_SLACK + declared // 100 if self._sniffed == "MP3" else 0
        if self.frames_decoded >= declared - slack:
            return None
        return CorruptAudioError(
            f"the {self._sniffed} file is truncated: its header declares {declared / self.sample_rate:.2f} s, "
            f"its data holds {self.frames_decoded / self.sample_rate:.2f} s; the complete file is needed"
        )

    def facts(self) -> AudioFacts:
        """The recording's facts; duration counts the frames decoded so far (all of them once blocks() is done)."""
        return AudioFacts(self.frames_decoded / self.sample_rate, self.sample_rate, self.channels, self.format)

    def close(self) -> None:
        self._file.close()
        if self._opened is not None:
            self._opened.close()
        self._close_fd()

    def _close_fd(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __enter__(self) -> AudioReader:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()
