"""Recording start times read from recorder file names, so detections can carry clock times.

Recognized names (the stem, i.e. the file name without its extension):

- AudioMoth: `YYYYMMDD_HHMMSS` (e.g. `20240517_053000.WAV`).
- Song Meter SM2, SM4, Mini, Micro: `PREFIX_YYYYMMDD_HHMMSS`; the prefix may itself hold
  underscores (e.g. `SMU01234_20240517_053000.wav`, `SITE_A_20240517_053000.wav`).
- Song Meter SM3: `PREFIX_CHANNELS_YYYYMMDD_HHMMSS`, where CHANNELS is `0`, `1` or `0+1`
  (e.g. `SM3_0+1_20240517_053000.wav`); it is part of the prefix here.
- Song Meter with GPS sync: a `$` instead of `_` between date and time (`SM3_0+1_20240517$053000.wav`).
- Wildlife Acoustics SMART: `PREFIX_YYYYMMDD_HHMMSS_uuuuuu` (microseconds).

The time is the recorder's clock as written, with no time zone: naive local time of whatever
zone the recorder was set to (AudioMoth's default is UTC). Anything else gives None, never a
guess: no match, two stamps in one name (`20240601_053000_20240602_060000`), an impossible date
or time (`20240230`, `256100`), a year outside 2000-2099
(an AudioMoth whose clock was never set names its files `19700101_...`), or an AudioMoth
triggered `...T.WAV` file, whose silent stretches are stored compressed, so offsets within it
are not clock offsets.
"""

from __future__ import annotations

import re
from datetime import datetime
from pathlib import PurePath

# ASCII: \d would otherwise match any Unicode digit, and int() would accept fullwidth ones.
_STAMP = re.compile(
    r"(?:.*_)?(?P<year>\d{4})(?P<month>\d{2})(?P<day>\d{2})[_$](?P<hour>\d{2})(?P<minute>\d{2})(?P<second>\d{2})(?:_(?P<micro>\d{6}))?",
    re.ASCII | re.DOTALL,  # DOTALL: a prefix may hold any character, even a line break
)
_ANY_STAMP = re.compile(r"\d{8}[_$]\d{6}", re.ASCII)
_YEARS = range(2000, 2100)


def recording_start(path: str | PurePath) -> datetime | None:
    """The naive start time encoded in a recorder file name, or None when the name does not hold one."""
    stem = PurePath(path).stem
    match = _STAMP.fullmatch(stem)
    if match is None or int(match["year"]) not in _YEARS or _ANY_STAMP.search(stem, 0, match.start("year")):
        return None  # no stamp, or two (`START_END`): which one the recording starts at would be a guess
    # Fixed-width fields into datetime() itself: strptime would read month "13" as "1" and shift the rest.
    try:
        return datetime(
            int(match["year"]),
            int(match["month"]),
            int(match["day"]),
            int(match["hour"]),
            int(match["minute"]),
            int(match["second"]),
            int(match["micro"] or 0),
        )
    except ValueError:
        return None
