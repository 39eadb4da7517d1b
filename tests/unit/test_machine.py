"""The machine facts chorus plans its processes and threads by."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from threadpoolctl import threadpool_info, threadpool_limits

from layout.machine import one_blas_thread, usable_cores, worker_pool


def test_usable_cores_are_this_process_affinity():
    assert usable_cores() == len(os.sched_getaffinity(0))


def test_one_blas_thread_sets_a_default_and_keeps_the_user_value(monkeypatch):
    monkeypatch.delenv("OPENBLAS_NUM_THREADS", raising=False)
    one_blas_thread()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "1"
    monkeypatch.setenv("OPENBLAS_NUM_THREADS", "3")
    one_blas_thread()
    assert os.environ["OPENBLAS_NUM_THREADS"] == "3"


def test_numpy_and_scipy_load_with_one_blas_thread_after_it():
    """What `chorus analyze` relies on: called before numpy loads, every OpenBLAS has one thread."""
    code = (
        "import json\n"
        "from layout.machine import one_blas_thread\n"
        "one_blas_thread()\n"
        "import numpy, scipy.linalg\n"
        "from threadpoolctl import threadpool_info\n"
        "print(json.dumps([p['num_threads'] for p in threadpool_info() if p['internal_api'] == 'openblas']))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "OPENBLAS_NUM_THREADS"}
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    threads = json.loads(done.stdout)
    assert threads and set(threads) == {1}


def _blas_threads() -> list[int]:
    import numpy  # noqa: F401  (loads OpenBLAS if the worker has not yet)

    return [p["num_threads"] for p in threadpool_info() if p["internal_api"] == "openblas"]


def test_worker_pool_workers_run_one_blas_thread():
    """The data work's pools: one worker per core, so each worker's BLAS must not start its own per core.
    The parent runs two BLAS threads here, which forked workers would otherwise inherit (on any host,
    whatever OPENBLAS_NUM_THREADS says)."""
    with threadpool_limits(2), worker_pool(2) as pool:
        threads = pool.submit(_blas_threads).result()
    assert threads and set(threads) == {1}
