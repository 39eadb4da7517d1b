"""`chorus bench jobs`: interactive /classify latency while an analysis job runs, against none.

The same closed loop of `concurrency` clients (the serving bench's recordings) runs twice on one
server: alone, then while a job analyzes hours of field audio. The job's windows run behind
interactive ones in the engine and its decoding runs on idle CPU time; the goal is p99 with the job <= 1.5x
p99 without it. The job's own speed in that time is reported too (it is not the point: it gets
what interactive traffic leaves).

Then, in a jobs folder that keeps 10,000 finished jobs (no CHORUS_JOBS_KEEP_HOURS): a submission's
count against CHORUS_MAX_UNFINISHED_JOBS through the index of unfinished jobs, against a read of
every job's state (what the count and the jobs gauge's recount at each job's start and end were
before); the gauge's recount now (the finished states read once); the sweep of half-made job
folders and the look for orphaned jobs; and GET /jobs's work for every job unpaged, its default
page, a page of 100, and the queued and running jobs.
"""

from __future__ import annotations

import json
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from benchmarks.analyze import field_folder
from benchmarks.birdcall import bench_pool
from benchmarks.load import sweep
from service.adapters.jobs import Listing, job_page
from service.jobs.store import JobRequest, JobState, JobStore
from service.local_server import serve_process


def run_jobs_bench(out_dir: Path, seconds: float = 60.0, concurrency: int = 4, home: str | None = None) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    folder = out_dir / "field"
    field_folder(folder, 12, 30 * 60, 16_000, stereo=False)  # six hours: the job outlasts the measurement
    requests = [("/classify", {"content": r.data}) for r in bench_pool()]
    env = {"CHORUS_ANALYZE_ROOT": str(folder), "CHORUS_HOME": str(out_dir / "home")}
    if home:
        env["BENTOML_HOME"] = home
    with serve_process("service.service:Chorus", out_dir / "server.log", **env) as server:
        alone = sweep(server.url, requests, (concurrency,), seconds)[0]
        submitted = httpx.post(f"{server.url}/analyze/submit", json={"path": ".", "formats": ["csv"]}, timeout=60).json()
        job = submitted["task_id"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and httpx.get(f"{server.url}/jobs/{job}", timeout=30).json()["state"] != "running":
            time.sleep(0.2)
        before = httpx.get(f"{server.url}/jobs/{job}", timeout=30).json()["progress"]["audio_seconds_done"]
        with_job = sweep(server.url, requests, (concurrency,), seconds)[0]
        view = httpx.get(f"{server.url}/jobs/{job}", timeout=30).json()
        httpx.post(f"{server.url}/jobs/{job}/cancel", timeout=30)
    job_audio = view["progress"]["audio_seconds_done"] - before
    result = {
        "concurrency": concurrency,
        "seconds": seconds,
        "without_job": alone.row(),
        "with_job": with_job.row(),
        "p99_ratio": round(with_job.percentile(99) / alone.percentile(99), 3),
        "p50_ratio": round(with_job.percentile(50) / alone.percentile(50), 3),
        "job_state_at_end": view["state"],
        "job_realtime_factor_meanwhile": round(job_audio / seconds, 1),
        "with_kept_jobs": with_kept_jobs(10_000),
    }
    (out_dir / "jobs.json").write_text(json.dumps(result, indent=2))
    return result


def _median_ms(call, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        times.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(times), 2)


def with_kept_jobs(kept: int, unfinished: int = 8) -> dict:
    """Milliseconds a submission's count and the job listings take with `kept` finished jobs on disk."""
    with tempfile.TemporaryDirectory(prefix="chorus-kept-") as folder:
        store = JobStore(Path(folder))
        for i in range(kept + unfinished):
            job_id = f"job{i:06d}"
            store.create(job_id, JobRequest(sources=[], formats=["csv"]))
            if i < kept:
                store.save_state(job_id, JobState(status="done"))
        # The tightest bound they pass: a count that took in a finished job would raise TooManyJobs.
        index = _median_ms(lambda: store.give_back_place(store.take_place(unfinished + 1)))
        every_state = _median_ms(lambda: JobStore(Path(folder)).counts())  # a fresh store reads every state
        store.counts()
        gauge = _median_ms(store.counts)  # then only the unfinished ones
        sweep = _median_ms(store.sweep_half_made)  # each worker's start and expiry pass
        orphans = _median_ms(store.orphans)  # each idle worker's look, every 30 s
        listings = {
            name: _median_ms(lambda listing=listing: job_page(store, listing), repeats=3)
            for name, listing in [
                ("all, unpaged (what GET /jobs answered before it paged)", Listing(limit=kept + unfinished)),
                ("default page (1000)", Listing()),
                ("limit=100", Listing(limit=100)),
                ("state=queued,running", Listing(frozenset({"queued", "running"}))),
            ]
        }
    return {
        "finished_jobs_kept": kept,
        "unfinished": unfinished,
        "take_place_ms": index,
        "every_state_read_ms": every_state,
        "ratio": round(every_state / max(index, 0.01), 1),
        "gauge_recount_ms": gauge,
        "half_made_sweep_ms": sweep,
        "orphans_look_ms": orphans,
        "list_jobs_ms": listings,
    }
