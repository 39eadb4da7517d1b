"""Lanes and padding: a batch split across cores, or padded to a fixed size, gives the same answer as
one run, and knows when not to split or pad."""

from __future__ import annotations

import threading
import time

import numpy as np
import onnx
import pytest
from onnx import TensorProto, helper

from service.engine.runtime import Runner, make_session, padded_size, padded_sizes, plan_lanes


@pytest.fixture(scope="module")
def row_sum_session(tmp_path_factory):
    """y[n] = sum of x[n, :] * w: per-row, so slicing the batch must not change it."""
    weights = helper.make_tensor("w", TensorProto.FLOAT, [4], [1.0, 2.0, 3.0, 4.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "w"], ["xw"]), helper.make_node("ReduceSum", ["xw", "axes"], ["y"], keepdims=0)],
        "row_sum",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch"])],
        [weights, helper.make_tensor("axes", TensorProto.INT64, [1], [1])],
    )
    path = tmp_path_factory.mktemp("lanes") / "row_sum.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), path)
    return make_session(path, ["CPUExecutionProvider"], 1)


@pytest.mark.parametrize("n", [1, 2, 3, 7, 64])
@pytest.mark.parametrize("max_run_items", [0, 1, 5])
def test_split_batches_equal_one_run(row_sum_session, n, max_run_items):
    x = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
    whole = row_sum_session.run(None, {"x": x})[0]
    np.testing.assert_array_equal(Runner(row_sum_session, lanes=3, max_run_items=max_run_items).run({"x": x})[0], whole)


def test_runs_are_bounded_by_max_run_items(row_sum_session):
    runner = Runner(row_sum_session, lanes=2, max_run_items=4)
    sizes: list[int] = []
    real = runner._run
    runner._run = lambda feeds: (sizes.append(len(feeds["x"])), real(feeds))[1]  # type: ignore[method-assign]
    runner.run({"x": np.zeros((10, 4), np.float32)})
    assert sorted(sizes) == [2, 4, 4]


@pytest.mark.parametrize(("lanes", "threads_used"), [(1, 1), (2, 2), (None, 3), (9, 3)])
def test_a_run_may_use_fewer_lanes_than_the_runner_has(row_sum_session, lanes, threads_used):
    """`chorus analyze` runs one lane while its decode workers hold the other cores, all at the end."""
    runner = Runner(row_sum_session, lanes=3, max_run_items=2)
    threads: set[str] = set()
    real = runner._run

    def slow_run(feeds):  # a run as long as a real model's, so that every lane allowed takes slices
        threads.add(threading.current_thread().name)
        time.sleep(0.005)
        return real(feeds)

    runner._run = slow_run  # type: ignore[method-assign]
    x = np.random.default_rng(0).standard_normal((12, 4)).astype(np.float32)
    np.testing.assert_array_equal(runner.run({"x": x}, lanes)[0], row_sum_session.run(None, {"x": x})[0])
    assert len(threads) == threads_used
    assert (threads == {threading.current_thread().name}) == (threads_used == 1)


def test_lane_plan():
    assert plan_lanes(0, 0, on_gpu=True) == (1, 1)
    assert plan_lanes(2, 0, on_gpu=False)[0] == 2 and plan_lanes(2, 0, on_gpu=False)[1] >= 1
    assert plan_lanes(1, 3, on_gpu=False) == (1, 3)


def test_padded_sizes():
    assert padded_sizes(32) == (1, 2, 4, 8, 16, 32)
    assert padded_sizes(24) == (1, 2, 4, 8, 16, 24)
    assert padded_sizes(1) == (1,)
    assert [padded_size(n, 24) for n in (1, 3, 5, 16, 17, 24, 30)] == [1, 4, 8, 16, 24, 24, 30]


@pytest.mark.parametrize("n", [1, 3, 5, 17, 32, 40])
def test_padded_batches_run_few_shapes_and_keep_the_answer(row_sum_session, n):
    runner = Runner(row_sum_session, lanes=1, pad_limit=32)
    sizes: list[int] = []
    real = runner._run
    runner._run = lambda feeds: (sizes.append(len(feeds["x"])), real(feeds))[1]  # type: ignore[method-assign]
    x = np.random.default_rng(n).standard_normal((n, 4)).astype(np.float32)
    out = runner.run({"x": x})[0]
    np.testing.assert_array_equal(out, row_sum_session.run(None, {"x": x})[0])
    assert sizes == [padded_size(n, 32)]
