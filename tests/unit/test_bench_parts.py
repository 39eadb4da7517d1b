"""What `chorus bench` hands its servers (benchmarks.run)."""

from __future__ import annotations

import time
import types

import pytest

from benchmarks.jobs import with_kept_jobs
from benchmarks.load import require_provider
from benchmarks.memory import settled_rss_mb
from benchmarks.run import served_settings
from chorus.cli import build_parser


def test_the_bench_servers_run_on_the_device_with_the_api_workers_asked_for():
    assert served_settings("cuda") == {"CHORUS_PROVIDERS": "cuda"}  # the server's own default of API workers
    assert served_settings("cuda", 8) == {"CHORUS_PROVIDERS": "cuda", "CHORUS_API_WORKERS": "8"}
    args = build_parser().parse_args(["bench", "--device", "cuda", "--api-workers", "8"])
    assert (args.device, args.api_workers) == ("cuda", 8)
    with pytest.raises(SystemExit):
        build_parser().parse_args(["bench", "--api-workers", "-1"])


def test_a_served_answer_from_another_provider_than_the_bench_device_stops_the_bench():
    on_cpu = {"model": {"name": "birdcall", "provider": "CPUExecutionProvider"}}
    require_provider(on_cpu, "cpu")
    require_provider(on_cpu, None)  # the server's own choice (auto): nothing to hold it to
    with pytest.raises(RuntimeError, match="runs on CPUExecutionProvider, not on cuda"):
        require_provider(on_cpu, "cuda")
    require_provider({"model": {"provider": "CUDAExecutionProvider"}}, "cuda")


def test_the_kept_jobs_bench_passes_the_tightest_bound_its_unfinished_jobs_allow():
    figures = with_kept_jobs(kept=12, unfinished=3)
    assert (figures["finished_jobs_kept"], figures["unfinished"]) == (12, 3)
    assert figures["take_place_ms"] > 0 and figures["every_state_read_ms"] > 0 and figures["gauge_recount_ms"] > 0
    assert [name.split(" ")[0] for name in figures["list_jobs_ms"]] == ["all,", "default", "limit=100", "state=queued,running"]


class _GrowingProcess:
    """RSS readings in MiB, the last repeated: what the held-bodies bench reads while bodies arrive."""

    def __init__(self, readings_mib):
        self.readings = iter(readings_mib)
        self.last = None

    def memory_info(self):
        self.last = next(self.readings, self.last)
        return types.SimpleNamespace(rss=self.last * 2**20)


def test_the_held_bodies_rss_is_read_once_it_stops_moving():
    assert settled_rss_mb(_GrowingProcess([100, 160, 230, 230.5, 300, 300.5, 300, 900]), interval=0.001) == 300
    never_settles = _GrowingProcess(range(100, 10**9, 10))
    started = time.monotonic()
    assert settled_rss_mb(never_settles, interval=0.001, at_most=0.05) == never_settles.last  # its last reading, once it gives up
    assert time.monotonic() - started >= 0.05
