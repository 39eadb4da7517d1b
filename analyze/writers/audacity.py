"""Audacity label tracks: `begin<TAB>end<TAB>label` per line, times in seconds within the file.

A label track has no room for columns, so the model name and version are not in it (every
other output carries them); the label is the species and its score, with the channel when
channels were analyzed one by one.
"""

from __future__ import annotations

from analyze.records import FileResult
from analyze.writers.text import cell, score, seconds


def label_track(result: FileResult) -> str:
    lines = []
    for d in result.detections:
        label = f"{d.species} {score(d.score)}" + ("" if d.channel is None else f" ch{d.channel + 1}")
        lines.append(f"{seconds(d.begin_s)}\t{seconds(d.end_s)}\t{cell(label)}\n")
    return "".join(lines)
