"""What a recording's first bytes say: which container it is, where it starts, and where its header
says the audio data ends. Pure byte parsing, before libsndfile sees the file.

Only the containers named here are opened: each is one whose cut copy can be told from a whole one
(libsndfile clips a header's length to the bytes present, so a cut WAV, AIFF, AU or W64 reads as a
shorter valid file; FLAC and MP3 keep their stated length, checked after decoding; an Ogg stream's
last page says it is the last), and libsndfile's twenty-odd other parsers never meet a hostile byte.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

FAMILIES = {
    "WAV": frozenset({"WAV", "WAVEX", "RF64"}),
    "AIFF": frozenset({"AIFF"}),
    "AU": frozenset({"AU"}),
    "W64": frozenset({"W64"}),
    "FLAC": frozenset({"FLAC"}),
    "OGG": frozenset({"OGG"}),
    "MP3": frozenset({"MP3"}),
}
"""Each container sniffed here -> the major formats libsndfile may name it by once opened."""

WAV_UNKNOWN_SIZES = (0, 0xFFFFFFFF)
"""Data sizes a recorder writes while it streams (or when it died before closing the file): no claim."""
_STREAMED_32 = range(0x7F000000, 0x7F000100)
"""The 32-bit sizes sox writes into an AIFF header it streams to a pipe (it cannot seek back): no claim."""
_W64_RIFF = b"riff\x2e\x91\xcf\x11\xa5\xd6\x28\xdb\x04\xc1\x00\x00"
"""Sony Wave64's RIFF GUID (its chunks are named by GUIDs whose first four bytes spell the RIFF id)."""
_W64_HEADER = 24
"""Bytes of a Wave64 chunk's GUID and size; its size counts them."""


@dataclass(frozen=True)
class Sniffed:
    """A container recognised by its magic bytes."""

    name: str
    """WAV, AIFF, AU, W64, FLAC, OGG or MP3 (keys of FAMILIES)."""
    offset: int = 0
    """Where the container starts in the file: after an ID3 tag put in front of a WAV or AIFF, or at an
    MP3's first frame after junk (libsndfile finds such frames only in a file named .mp3)."""


def sniff(head: bytes) -> Sniffed | None:
    """The container the first bytes name, or None when they name none of the accepted ones."""
    name = _magic(head)
    if name is not None:
        return Sniffed(name)
    if head[:3] == b"ID3":
        after = _id3_end(head)
        inner = _magic(head[after:]) if after < len(head) else None
        # Some tools put an ID3 tag in front of a WAV or AIFF; libsndfile reads the container behind it.
        return Sniffed(inner, after) if inner is not None else Sniffed("MP3")
    if (first_frame := _mpeg_frames_at(head)) is not None:  # junk, padding or an APE tag before the first frame
        return Sniffed("MP3", first_frame)
    return None


def _magic(head: bytes) -> str | None:
    if head[:4] in (b"RIFF", b"RIFX", b"RF64") and head[8:12] == b"WAVE":
        return "WAV"
    if head[:4] == b"FORM" and head[8:12] in (b"AIFF", b"AIFC"):
        return "AIFF"
    if head[:4] in (b".snd", b"dns."):
        return "AU"
    if head[:16] == _W64_RIFF and head[24:28] == b"wave":
        return "W64"
    if head[:4] == b"fLaC":
        return "FLAC"
    if head[:4] == b"OggS":
        return "OGG"
    if head[:1] == b"\xff" and head[1:2] >= b"\xe0":  # a frame sync at the start, as before any check of its fields
        return "MP3"
    return None


def _id3_end(head: bytes) -> int:
    """Bytes an ID3v2 tag at the start takes: 10, its sync-safe size, and a footer if flagged."""
    size = 0
    for byte in head[6:10]:
        size = (size << 7) | (byte & 0x7F)
    return 10 + size + (10 if len(head) > 5 and head[5] & 0x10 else 0)


# MPEG audio frame headers: kbit/s by (MPEG-1?, layer) and bitrate index 1-14; Hz by version.
_KBPS = {
    (True, 1): (32, 64, 96, 128, 160, 192, 224, 256, 288, 320, 352, 384, 416, 448),
    (True, 2): (32, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320, 384),
    (True, 3): (32, 40, 48, 56, 64, 80, 96, 112, 128, 160, 192, 224, 256, 320),
    (False, 1): (32, 48, 56, 64, 80, 96, 112, 128, 144, 160, 176, 192, 224, 256),
    (False, 2): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
    (False, 3): (8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160),
}
_HZ = {3: (44_100, 48_000, 32_000), 2: (22_050, 24_000, 16_000), 0: (11_025, 12_000, 8_000)}


def _mpeg_header(head: bytes, at: int) -> tuple[int, int, int] | None:
    """(frame length in bytes, version, rate) of a valid MPEG audio frame header at `at`, else None."""
    if at + 4 > len(head) or head[at] != 0xFF or head[at + 1] & 0xE0 != 0xE0:
        return None
    version, layer_bits = (head[at + 1] >> 3) & 3, (head[at + 1] >> 1) & 3
    bitrate_index, rate_index, padding = head[at + 2] >> 4, (head[at + 2] >> 2) & 3, (head[at + 2] >> 1) & 1
    if version == 1 or layer_bits == 0 or not 1 <= bitrate_index <= 14 or rate_index == 3:
        return None  # reserved, or free format (no length to follow)
    layer, mpeg1 = 4 - layer_bits, version == 3
    bits_per_second, rate = _KBPS[mpeg1, layer][bitrate_index - 1] * 1000, _HZ[version][rate_index]
    if layer == 1:
        return (12 * bits_per_second // rate + padding) * 4, version, rate
    per_frame = 72 if layer == 3 and not mpeg1 else 144
    return per_frame * bits_per_second // rate + padding, version, rate


def _mpeg_frames_at(head: bytes) -> int | None:
    """Where, in `head`, a frame header is followed by another of the same stream: MPEG audio."""
    at = head.find(b"\xff")
    while at != -1:
        first = _mpeg_header(head, at)
        if first is not None:
            second = _mpeg_header(head, at + first[0])
            if second is not None and second[1:] == first[1:]:
                return at
        at = head.find(b"\xff", at + 1)
    return None


def declared_data_end(sniffed: Sniffed, head: bytes) -> int | None:
    """The byte offset, in the file, where the header says the audio data ends; None where it makes
    no claim (a stream's marker, RF64's 64-bit sizes, a chunk beyond `head`) or states lengths in
    frames (FLAC, MP3) or pages (Ogg). A file shorter than this was cut."""
    body = head[sniffed.offset :]
    end = {"WAV": _wav_data_end, "AIFF": _aiff_data_end, "AU": _au_data_end, "W64": _w64_data_end}.get(sniffed.name, _no_claim)(body)
    return None if end is None else sniffed.offset + end


def _no_claim(head: bytes) -> None:
    return None


def _iff_chunks(head: bytes, order: Literal["big", "little"], last: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(id, offset, declared size) of each chunk after the 12-byte header of an IFF-style file (RIFF
    WAVE, AIFF) within `head`, up to the chunk `last` (the audio data's)."""
    offset = 12
    while offset + 8 <= len(head):
        chunk, size = head[offset : offset + 4], int.from_bytes(head[offset + 4 : offset + 8], order)
        yield chunk, offset, size
        if chunk == last:
            return
        offset += 8 + size + (size & 1)


def _wav_chunks(head: bytes) -> Iterator[tuple[bytes, int, int]]:
    """(id, offset, declared size) of each chunk a RIFF, RIFX (big-endian sizes) or RF64 WAVE header
    holds within `head`, up to `data`."""
    if head[:4] not in (b"RIFF", b"RIFX", b"RF64") or head[8:12] != b"WAVE":
        return
    yield from _iff_chunks(head, "big" if head[:4] == b"RIFX" else "little", b"data")


@dataclass(frozen=True)
class WavDataSize:
    """Where a WAVE header states its data's size, and what it states."""

    at: int
    """Offset of the size field in the header."""
    width: int
    """8: RF64's ds64 chunk (64 bits, for recordings past 4 GiB); 4: the data chunk's own field."""
    value: int
    """The size it states, in bytes (0 where a writer never came back to fill it in)."""
    data_start: int
    """Offset of the data's first byte."""


def wav_data_size(head: bytes) -> WavDataSize | None:
    """The field of a RIFF, RIFX or RF64 WAVE header that states its data's size: RF64's ds64 chunk
    where the header has one (the data chunk's own field then says 0xFFFFFFFF), else the data chunk's.
    None when no data chunk lies within `head`."""
    ds64_at = None
    for chunk, offset, size in _wav_chunks(head):
        if chunk == b"ds64" and head[:4] == b"RF64" and offset + 24 <= len(head):
            ds64_at = offset + 16
        if chunk == b"data":
            if ds64_at is not None:
                return WavDataSize(ds64_at, 8, int.from_bytes(head[ds64_at : ds64_at + 8], "little"), offset + 8)
            return WavDataSize(offset + 4, 4, size, offset + 8)
    return None


def _wav_data_end(head: bytes) -> int | None:
    """The data chunk's end, where the header states the data's size (wav_data_size)."""
    stated = wav_data_size(head)
    if stated is None or (stated.width == 4 and head[:4] == b"RF64"):  # an RF64 without its ds64: no usable size
        return None
    unknown = (stated.value == 0 or stated.value >= 1 << 62) if stated.width == 8 else stated.value in WAV_UNKNOWN_SIZES
    return None if unknown else stated.data_start + stated.value


def _aiff_data_end(head: bytes) -> int | None:
    """The SSND chunk's end: its size, not COMM's frame count, which counts packets for ima4."""
    for chunk, offset, size in _iff_chunks(head, "big", b"SSND"):
        if chunk == b"SSND":
            return offset + 8 + size if size != 0 and size not in _STREAMED_32 else None
    return None


def _au_data_end(head: bytes) -> int | None:
    """Data offset + data size ('.snd' big-endian, 'dns.' little); 0xFFFFFFFF says 'unknown'."""
    if len(head) < 12:
        return None
    order: Literal["big", "little"] = "big" if head[:4] == b".snd" else "little"
    offset, size = int.from_bytes(head[4:8], order), int.from_bytes(head[8:12], order)
    return offset + size if size != 0xFFFFFFFF else None


def _w64_data_end(head: bytes) -> int | None:
    """The data chunk's end (GUID-named chunks, 64-bit sizes counting their header, 8-byte aligned).
    ffmpeg streaming to a pipe writes 2^63 - 1, sox a size under the header's own: no claim."""
    offset = 40
    while offset + _W64_HEADER <= len(head):
        chunk, size = head[offset : offset + 4], int.from_bytes(head[offset + 16 : offset + 24], "little")
        if size < _W64_HEADER or size >= 1 << 62:
            return None
        if chunk == b"data":
            return offset + size
        offset += (size + 7) & ~7
    return None


OGG_TAIL_BYTES = 70_000
"""Bytes from a file's end that hold its last Ogg page's start (a page is at most 65,307 bytes)."""


OggEnding = Literal["ends", "cut", "headers only", "other stream"]


def ogg_ending(head: bytes, tail: bytes) -> OggEnding:
    """How an Ogg file ends, from its first bytes and its last (OGG_TAIL_BYTES).

    "ends": its last whole page ends the stream its first page began (the end-of-stream flag every
    finished Ogg stream's last page carries). "cut": no such flag, as in a file cut short or whose
    writer stopped early; libsndfile reads the length from the last page and decodes it as shorter.
    "headers only": no such flag, and the file ends with a page that ends before any audio (granule
    position 0), as an encoder given no audio leaves it (ffmpeg writes no last page then) or a copy
    cut just after the headers; a part of a page after it is a cut. "other stream": the last page
    belongs to another stream (chained or multiplexed files), of which libsndfile decodes only the
    first, leaving the rest unread.
    """
    if _ogg_streams_begun(head) > 1:  # multiplexed: every stream's first page comes before any other page
        return "other stream"
    at = tail.rfind(b"OggS")
    while at != -1:
        if (end := ogg_page_end(tail, at)) is not None:
            if tail[at + 14 : at + 18] != head[14:18]:
                return "other stream"
            if tail[at + 5] & 0x04:
                return "ends"
            return "headers only" if tail[at + 6 : at + 14] == bytes(8) and end == len(tail) else "cut"
        at = tail.rfind(b"OggS", 0, at)
    return "cut"


def _ogg_streams_begun(head: bytes) -> int:
    """The beginning-of-stream pages at the start of an Ogg file: one per stream it multiplexes."""
    at, count = 0, 0
    while (end := ogg_page_end(head, at)) is not None and head[at + 5] & 0x02:
        count += 1
        at = end
    return count


def ogg_page_end(data: bytes, at: int) -> int | None:
    """Where the Ogg page at `at` ends: a capture pattern and version 0 whose segment table and body
    lie within `data`; None otherwise."""
    if at + 27 > len(data) or data[at : at + 4] != b"OggS" or data[at + 4] != 0:
        return None
    count = data[at + 26]
    table = data[at + 27 : at + 27 + count]
    end = at + 27 + count + sum(table)
    return end if len(table) == count and end <= len(data) else None
