"""The arrays that carry more than one thing between the API workers and the engine."""

from __future__ import annotations

import numpy as np
import pytest

from service.engine.contracts import StepPlanes, TimedRows


def test_timed_rows_round_trip():
    logits = np.arange(12, dtype=np.float32).reshape(3, 4)
    rows = TimedRows.pack(logits, 0.25)
    assert rows.shape == (3, 5) and rows.dtype == np.float32
    outputs, seconds = TimedRows.unpack(rows)
    np.testing.assert_array_equal(outputs, logits)
    assert seconds == 0.25


def test_timed_rows_of_a_call_split_over_batches_report_the_slowest():
    rows = np.concatenate([TimedRows.pack(np.zeros((2, 3)), 0.1), TimedRows.pack(np.ones((1, 3)), 0.4)])
    assert TimedRows.unpack(rows)[1] == pytest.approx(0.4)


def test_step_planes_round_trip_images_at_different_steps():
    x_t = np.random.default_rng(0).standard_normal((3, 3, 4, 4)).astype(np.float32)
    t = np.array([999, 500, 0], np.float32)
    packed = StepPlanes.pack(x_t, t)
    assert packed.shape == (3, 4, 4, 4)
    x_back, t_back = StepPlanes.unpack(packed)
    np.testing.assert_array_equal(x_back, x_t)
    np.testing.assert_array_equal(t_back, t)


@pytest.mark.parametrize(
    "bad",
    [
        lambda: TimedRows.unpack(np.zeros((2, 1), np.float32)),
        lambda: StepPlanes.pack(np.zeros((2, 3, 4, 4)), np.zeros(3)),
        lambda: StepPlanes.unpack(np.zeros((2, 4, 4))),
    ],
)
def test_wrong_shapes_are_refused(bad):
    with pytest.raises(ValueError):
        bad()
