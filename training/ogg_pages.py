"""Ogg files with a fixed stream serial number, so the same audio makes the same bytes.

libsndfile starts each Ogg stream with a serial number drawn from the clock, so two runs of the
generator wrote different Ogg Vorbis bytes for the same audio (only the serial and each page's CRC
differed), and the training's data_hash (training.birdcall_data.dataset_hash) named two datasets
where there was one. Rewriting the serial, and the CRC over it, leaves the decoded audio as it was.
"""

from __future__ import annotations

import struct

from features.containers import ogg_page_end

SERIAL = 0x63686F72
"""Every generated stream's serial number (b"chor" read big-endian): one stream per file, so any fixed value is valid."""

_HEADER = struct.Struct("<4sBBqIIIB")
"""capture pattern, version, header type, granule position, serial, page sequence, CRC, segment count."""
_CRC_OFFSET = struct.calcsize("<4sBBqII")
"""Where the CRC field starts: after the capture pattern .. page sequence."""


def _crc_table() -> list[int]:
    """Ogg's CRC-32: polynomial 0x04C11DB7, not reflected, initial value and final xor 0 (unlike zlib's)."""
    table = []
    for byte in range(256):
        crc = byte << 24
        for _ in range(8):
            crc = ((crc << 1) ^ 0x04C11DB7) if crc & 0x80000000 else crc << 1
        table.append(crc & 0xFFFFFFFF)
    return table


_CRC_TABLE = _crc_table()


def ogg_crc(data: bytes) -> int:
    crc = 0
    table = _CRC_TABLE
    for byte in data:
        crc = ((crc << 8) & 0xFFFFFFFF) ^ table[(crc >> 24) ^ byte]
    return crc


def with_serial(data: bytes, serial: int = SERIAL) -> bytes:
    """The Ogg stream `data` with every page's serial number set to `serial` and its CRC recomputed."""
    out = bytearray(data)
    position = 0
    while position < len(data):  # the pages of `data` are where `out`'s are: only serials and CRCs change
        end = ogg_page_end(data, position)
        if end is None:
            raise ValueError(f"not a whole Ogg page at byte {position}")
        capture, version, kind, granule, _, sequence, _, segments = _HEADER.unpack_from(out, position)
        _HEADER.pack_into(out, position, capture, version, kind, granule, serial, sequence, 0, segments)
        struct.pack_into("<I", out, position + _CRC_OFFSET, ogg_crc(bytes(out[position:end])))
        position = end
    return bytes(out)
