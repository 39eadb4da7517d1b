"""Scores to detections: threshold, top-k, species lists, merging, clock times, and bad input."""

from __future__ import annotations

from datetime import datetime
from pathlib import Path

import numpy as np
import pytest

from analyze.detections import DetectionSettings, Span, UnknownSpeciesError, detect, read_species_list

LABELS = ("owl", "robin", "wren", "finch")
PATH = Path("/data/20240517_053000.WAV")


def spans(n: int, stride: float = 2.5, length: float = 5.0, channel: int | None = None) -> list[Span]:
    return [Span(i * stride, i * stride + length, channel) for i in range(n)]


def found(detections) -> list[tuple]:
    return [(d.begin_s, d.end_s, d.species, round(d.score, 3), d.windows, d.channel) for d in detections]


def test_species_at_or_above_min_confidence_are_detected():
    scores = np.array([[0.9, 0.5, 0.49, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    detections = detect(scores, spans(2), LABELS, DetectionSettings(min_confidence=0.5, top_k=None), path=PATH)
    assert found(detections) == [(0.0, 5.0, "owl", 0.9, 1, None), (0.0, 5.0, "robin", 0.5, 1, None)]
    assert all(d.path == PATH for d in detections)


def test_zero_detections_is_an_empty_list():
    assert detect(np.zeros((3, 4)), spans(3), LABELS, DetectionSettings(), path=PATH) == []
    assert detect(np.zeros((0, 4)), [], LABELS, DetectionSettings(), path=PATH) == []


def test_top_k_keeps_the_highest_scores_and_breaks_ties_by_label_order():
    scores = np.array([[0.7, 0.9, 0.7, 0.8]])
    detections = detect(scores, spans(1), LABELS, DetectionSettings(min_confidence=0.1, top_k=3), path=PATH)
    assert [d.species for d in detections] == ["robin", "finch", "owl"]  # owl before wren: same score, earlier label


def test_top_k_counts_only_species_that_pass_the_filter():
    scores = np.array([[0.9, 0.8, 0.7, 0.6]])
    settings = DetectionSettings(min_confidence=0.5, top_k=1, exclude=frozenset({"owl", "robin"}))
    assert [d.species for d in detect(scores, spans(1), LABELS, settings, path=PATH)] == ["wren"]


def test_species_keeps_only_those_and_exclude_drops_from_them():
    scores = np.full((1, 4), 0.9)
    settings = DetectionSettings(top_k=None, species=frozenset({"owl", "wren", "finch"}), exclude=frozenset({"finch"}))
    assert [d.species for d in detect(scores, spans(1), LABELS, settings, path=PATH)] == ["owl", "wren"]


def test_unknown_species_are_an_error_listing_the_known_ones():
    settings = DetectionSettings(species=frozenset({"Owl", "eagle"}))
    with pytest.raises(UnknownSpeciesError) as error:
        detect(np.zeros((1, 4)), spans(1), LABELS, settings, path=PATH)
    message = str(error.value)
    assert "'Owl' (did you mean 'owl'?)" in message
    assert "'eagle'" in message
    assert "the model knows: finch, owl, robin, wren" in message


class TestSpeciesListFile:
    def test_names_comments_and_blank_lines(self, tmp_path):
        listing = tmp_path / "species.txt"
        listing.write_text("\ufeff# night survey\nowl\n\n  wren  # the loud one\n#robin\nowl\n", encoding="utf-8")
        assert read_species_list(listing, LABELS) == frozenset({"owl", "wren"})

    def test_an_unknown_name_is_an_error_naming_the_file_and_the_known_species(self, tmp_path):
        listing = tmp_path / "species.txt"
        listing.write_text("owl\nrobinn\n")
        with pytest.raises(UnknownSpeciesError, match=r"species\.txt: unknown species 'robinn' \(did you mean 'robin'\?\)"):
            read_species_list(listing, LABELS)

    def test_an_empty_or_unreadable_list_is_an_error_not_a_run_without_detections(self, tmp_path):
        listing = tmp_path / "species.txt"
        listing.write_text("# to fill in\n\n")
        with pytest.raises(UnknownSpeciesError, match=r"species\.txt: the species list names no species"):
            read_species_list(listing, LABELS)
        with pytest.raises(UnknownSpeciesError, match=r"gone\.txt: the species list cannot be read \(No such file or directory\)"):
            read_species_list(tmp_path / "gone.txt", LABELS)
        listing.write_bytes(b"owl\n\xff\xfe\x00")
        with pytest.raises(UnknownSpeciesError, match="not UTF-8 text"):
            read_species_list(listing, LABELS)


class TestMerge:
    def test_consecutive_windows_of_one_species_become_one_detection_with_the_max_score(self):
        # owl in windows 0-2, then absent in 3, then back in 4; robin only in window 1.
        scores = np.zeros((5, 4))
        scores[[0, 1, 2, 4], 0] = [0.6, 0.95, 0.7, 0.8]
        scores[1, 1] = 0.9
        detections = detect(scores, spans(5), LABELS, DetectionSettings(merge=True), path=PATH)
        assert found(detections) == [
            (0.0, 10.0, "owl", 0.95, 3, None),
            (2.5, 7.5, "robin", 0.9, 1, None),
            (10.0, 15.0, "owl", 0.8, 1, None),
        ]

    def test_windows_that_merely_touch_across_a_miss_stay_apart(self):
        # At a 2.5 s stride, windows 0 [0, 5] and 2 [5, 10] touch, but window 1 between them said no.
        scores = np.zeros((3, 4))
        scores[[0, 2], 0] = 0.9
        detections = detect(scores, spans(3), LABELS, DetectionSettings(merge=True), path=PATH)
        assert [(d.begin_s, d.end_s) for d in detections] == [(0.0, 5.0), (5.0, 10.0)]

    def test_back_to_back_windows_without_overlap_merge(self):
        scores = np.full((3, 1), 0.9)
        detections = detect(scores, spans(3, stride=5.0), ("owl",), DetectionSettings(merge=True), path=PATH)
        assert found(detections) == [(0.0, 15.0, "owl", 0.9, 3, None)]

    def test_the_clipped_last_window_ends_the_merged_span(self):
        windows = [Span(0.0, 5.0), Span(2.5, 6.2)]
        detections = detect(np.full((2, 1), 0.9), windows, ("owl",), DetectionSettings(merge=True), path=PATH)
        assert found(detections) == [(0.0, 6.2, "owl", 0.9, 2, None)]

    def test_without_merge_each_window_is_its_own_detection(self):
        detections = detect(np.full((3, 1), 0.9), spans(3), ("owl",), DetectionSettings(merge=False), path=PATH)
        assert [d.windows for d in detections] == [1, 1, 1]


def test_channels_are_kept_apart_and_merged_separately():
    # Two channels, rows interleaved as an engine might batch them.
    windows = [Span(0.0, 5.0, 0), Span(0.0, 5.0, 1), Span(2.5, 7.5, 0), Span(2.5, 7.5, 1)]
    scores = np.array([[0.9], [0.0], [0.8], [0.7]])
    detections = detect(scores, windows, ("owl",), DetectionSettings(merge=True), path=PATH)
    assert found(detections) == [(0.0, 7.5, "owl", 0.9, 2, 0), (2.5, 7.5, "owl", 0.7, 1, 1)]


def test_clock_times_follow_the_recording_start():
    scores = np.zeros((4, 1))
    scores[[1, 2], 0] = 0.9
    start = datetime(2024, 5, 17, 5, 30, 0)
    [d] = detect(scores, spans(4), ("owl",), DetectionSettings(merge=True), path=PATH, clock_start=start)
    assert (d.clock_begin, d.clock_end) == (datetime(2024, 5, 17, 5, 30, 2, 500000), datetime(2024, 5, 17, 5, 30, 10))
    [d] = detect(scores[:2], spans(2), ("owl",), DetectionSettings(), path=PATH)
    assert d.clock_begin is None and d.clock_end is None


def test_results_are_sorted_by_begin_channel_and_score():
    windows = [Span(2.5, 7.5), Span(0.0, 5.0)]  # rows out of time order
    scores = np.array([[0.6, 0.9, 0.0, 0.0], [0.7, 0.0, 0.8, 0.0]])
    detections = detect(scores, windows, LABELS, DetectionSettings(top_k=None), path=PATH)
    assert [(d.begin_s, d.species) for d in detections] == [(0.0, "wren"), (0.0, "owl"), (2.5, "robin"), (2.5, "owl")]


@pytest.mark.parametrize(
    ("scores", "message"),
    [
        (np.zeros((2, 4)), "expected \\(3 windows, 4 labels\\)"),
        (np.zeros((3, 3)), "expected \\(3 windows, 4 labels\\)"),
        (np.array([[0.5, np.nan, 0.1, 0.1]] * 3), "within \\[0, 1\\]"),
        (np.array([[0.5, 1.5, 0.1, 0.1]] * 3), "within \\[0, 1\\]"),
        (np.array([[0.5, -0.1, 0.1, 0.1]] * 3), "within \\[0, 1\\]"),
    ],
)
def test_scores_of_the_wrong_shape_or_range_are_refused(scores, message):
    with pytest.raises(ValueError, match=message):
        detect(scores, spans(3), LABELS, DetectionSettings(), path=PATH)


@pytest.mark.parametrize("kwargs", [{"min_confidence": 1.5}, {"min_confidence": -0.1}, {"top_k": 0}])
def test_settings_out_of_range_are_refused(kwargs):
    with pytest.raises(ValueError):
        DetectionSettings(**kwargs)


def test_float32_scores_keep_their_short_decimal_spelling():
    [d] = detect(np.array([[0.91]], dtype=np.float32), spans(1), ("owl",), DetectionSettings(), path=PATH)
    assert d.score == 0.91 and np.float32(d.score) == np.float32(0.91)
