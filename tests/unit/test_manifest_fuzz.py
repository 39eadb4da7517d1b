"""A user's labels and events CSVs, fuzzed: whatever the bytes, read_manifest takes them or says why (DataError)."""

from __future__ import annotations

import tempfile
from pathlib import Path

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from training.birdcall_data import DataError, check_trainable, events_path, read_manifest

_PIECES = [*',;"\n\r \t0123456789.-:é\x00\ufeffxX', "path", "label", "split", "start", "end", "snr_db", "train", "val", "test"]
_PIECES += ["background", "nan", "-inf", "1e400", "owl", "Owl", "a.wav"]
_TEXT = st.lists(st.sampled_from(_PIECES), max_size=60).map("".join)
_LABELS_HEADERS = ["path,label\n", "path,label,split\n", "\ufeffPath , Label\r\n", ""]
_EVENTS_HEADERS = ["path,label,start,end\n", "path,label,start,end,snr_db\n", ""]


@settings(max_examples=400, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(
    labels=_TEXT,
    events=st.one_of(st.none(), _TEXT),
    labels_header=st.sampled_from(_LABELS_HEADERS),
    events_header=st.sampled_from(_EVENTS_HEADERS),
)
def test_any_labels_and_events_text_is_read_or_refused_with_a_data_error(labels, events, labels_header, events_header):
    with tempfile.TemporaryDirectory(prefix="chorus-manifest-fuzz-") as folder:
        csv_path = Path(folder) / "labels.csv"
        csv_path.write_text(labels_header + labels, encoding="utf-8")
        if events is not None:
            events_path(csv_path).write_text(events_header + events, encoding="utf-8")
        try:
            items = read_manifest(csv_path)
            check_trainable(csv_path, items)
        except DataError as error:
            assert folder in str(error)  # says which file
