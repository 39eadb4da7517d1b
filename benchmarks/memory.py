"""`chorus bench memory`: the server's resident memory under decompression bombs and over a soak.

- bombs: 8 copies of a 71 KB FLAC that holds 599 s of 8-channel 192 kHz silence (4.9 GB decoded)
  arrive at once; the API worker's and the engine's peak RSS are read from the kernel (VmHWM).
  Twice: with the default limits (refused from the header) and with the decoded-sample limit
  lifted, so every bomb is decoded in full (streamed block by block) and classified.
- held bodies: 24 clients each send a 30 MB recording but its last byte, so the server holds what
  it has read of each while it waits for the rest; the API worker's RSS once they all wait, and
  its peak, with CHORUS_MAX_BODY_BYTES_IN_FLIGHT at 128 MiB (on the bombs' first server) and
  lifted (on their second), and how many were answered and how many refused (503 before their
  body was read).
- soak: the load test's mix for N minutes; RSS of every server process sampled every few seconds;
  growth from the first minute after the warm-up to the last minute (medians: the API worker's RSS
  swings by tens of MB from one sample to the next as requests come and go), the least-squares
  slope after the warm-up, and a plot.
"""

from __future__ import annotations

import json
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from pathlib import Path

import httpx
import numpy as np
import psutil
import soundfile as sf
from tqdm import tqdm

from benchmarks.frontend import encode
from service.local_server import ServedProcess, serve_process

BOMB = (599, 192_000, 8)
"""Seconds, sample rate, channels of the bomb (issue "Hardening")."""


def write_bomb(path: Path) -> Path:
    """Silence, written in chunks so that making the bomb does not take the memory it would decode to."""
    seconds, rate, channels = BOMB
    with sf.SoundFile(path, "w", samplerate=rate, channels=channels, format="FLAC", subtype="PCM_16") as out:
        chunk = np.zeros((rate, channels), np.int16)
        for _ in range(seconds):
            out.write(chunk)
    return path


def server_processes(served: ServedProcess) -> dict[str, psutil.Process]:
    """{"engine": ..., "api": ...}: the server's two process kinds (one API worker by default)."""
    found = {}
    for child in psutil.Process(served.process.pid).children(recursive=True):
        found["engine" if "chorus-engine" in " ".join(child.cmdline()) else "api"] = child
    return found


def peak_rss_mb(process: psutil.Process) -> float:
    """The kernel's high-water mark of the process's resident memory (VmHWM), in MB."""
    status = Path(f"/proc/{process.pid}/status").read_text()
    return int(status.split("VmHWM:")[1].split()[0]) / 1024


def rss_mb(process: psutil.Process) -> float:
    return process.memory_info().rss / 2**20


def settled_rss_mb(process: psutil.Process, interval: float = 0.5, within_mb: float = 1.0, at_most: float = 30.0) -> float:
    """The RSS once it stops moving: three readings `interval` apart, each within `within_mb` of the
    one before (or the last reading after `at_most` seconds)."""
    last, steady, deadline = rss_mb(process), 0, time.monotonic() + at_most
    while time.monotonic() < deadline:
        time.sleep(interval)
        now = rss_mb(process)
        steady = steady + 1 if abs(now - last) <= within_mb else 0
        last = now
        if steady == 2:
            break
    return last


def reset_peak_rss(process: psutil.Process) -> None:
    """Start the process's VmHWM afresh from its RSS now (Linux's clear_refs), so a second scenario on the
    same server reads its own peak."""
    Path(f"/proc/{process.pid}/clear_refs").write_text("5")


def bombs(served: ServedProcess, data: bytes, count: int) -> dict:
    """`count` bombs posted at once: their answers, and each process's RSS before and at its peak."""
    processes = server_processes(served)
    before = {kind: rss_mb(p) for kind, p in processes.items()}
    started = time.perf_counter()
    with ThreadPoolExecutor(count) as pool:
        statuses = list(pool.map(lambda _: httpx.post(f"{served.url}/classify", content=data, timeout=600).status_code, range(count)))
    return {
        "statuses": statuses,
        "seconds": round(time.perf_counter() - started, 2),
        "rss_before_mb": {k: round(v) for k, v in before.items()},
        "peak_rss_mb": {kind: round(peak_rss_mb(p)) for kind, p in processes.items()},
    }


HELD_BODY = (160, 48_000)
"""Seconds and rate of the recording each held body carries: float32 mono, 30.7 MB, under the
32 MiB upload limit and the 600 s length limit."""


def _held_body_recording() -> bytes:
    seconds, rate = HELD_BODY
    return encode(np.random.default_rng(0).normal(0, 0.05, seconds * rate).astype(np.float32), rate, "WAV", "FLOAT")


def _status(connection: socket.socket) -> str:
    """The status of the answer the server sends (then closes) on this connection; "closed" when none comes."""
    answer = b""
    try:
        while chunk := connection.recv(1 << 16):
            answer += chunk
    except OSError:
        pass
    return answer.split(b" ", 2)[1].decode() if answer.startswith(b"HTTP/") else "closed"


def _send_all_but_the_last_byte(url: str, data: bytes, waiting: threading.Semaphore, release: threading.Event) -> str:
    """POST /classify with data, holding its last byte back until `release`; the answer's status."""
    host, port = url.removeprefix("http://").split(":")
    head = (
        f"POST /classify HTTP/1.1\r\nHost: {host}\r\nContent-Type: audio/wav\r\nContent-Length: {len(data)}\r\nConnection: close\r\n\r\n"
    ).encode()
    with socket.create_connection((host, int(port)), timeout=300) as connection:
        try:
            connection.sendall(head)
            for start in range(0, len(data) - 1, 1 << 20):
                connection.sendall(data[start : min(start + (1 << 20), len(data) - 1)])
        except OSError:  # answered and closed before the body was read
            return _status(connection)
        finally:
            waiting.release()
        release.wait()
        with suppress(OSError):
            connection.sendall(data[-1:])
        return _status(connection)


def held_bodies(served: ServedProcess, data: bytes, clients: int) -> dict:
    """`clients` bodies held but their last byte: their answers, and the API worker's RSS before,
    once all wait, and at its peak."""
    api = server_processes(served)["api"]
    reset_peak_rss(api)
    before = rss_mb(api)
    waiting, release = threading.Semaphore(0), threading.Event()
    with ThreadPoolExecutor(clients) as pool:
        sent = [pool.submit(_send_all_but_the_last_byte, served.url, data, waiting, release) for _ in range(clients)]
        for _ in range(clients):  # every client has sent all it will send before the last byte
            waiting.acquire(timeout=300)
        waiting_rss = settled_rss_mb(api)  # once the server has read what is in its sockets' buffers
        release.set()
        statuses = [future.result() for future in sent]
    return {
        "statuses": {status: statuses.count(status) for status in sorted(set(statuses))},
        "rss_before_mb": round(before),
        "rss_all_waiting_mb": round(waiting_rss),
        "peak_rss_mb": round(peak_rss_mb(api)),
    }


HELD_BODIES_BOUND_MIB = 128
"""CHORUS_MAX_BODY_BYTES_IN_FLIGHT for the held bodies (the default, 512 MiB, would need 17 of them
to refuse one)."""

CONFIGURATIONS = {
    # (name of the bombs' run, name of the held bodies' run): the server's settings
    ("default limits", f"bound {HELD_BODIES_BOUND_MIB} MiB"): {"CHORUS_MAX_BODY_BYTES_IN_FLIGHT": str(HELD_BODIES_BOUND_MIB << 20)},
    ("decoded-sample limit lifted", "bound lifted"): {
        "CHORUS_MAX_AUDIO_SAMPLES": str(10**12),
        "CHORUS_MAX_BODY_BYTES_IN_FLIGHT": str(1 << 40),
    },
}
"""One server per configuration, the bombs then the held bodies against it: the body bound does not
touch a bomb (it is 0.95 MB), nor the sample limit a held body (160 s)."""


def bombs_and_held_bodies(out_dir: Path, home: str | None, bombs_at_once: int, held_clients: int) -> dict:
    bomb = write_bomb(out_dir / "bomb.flac").read_bytes()
    body = _held_body_recording()
    results: dict = {
        "bombs": {"bomb": {"bytes": len(bomb), "seconds": BOMB[0], "rate": BOMB[1], "channels": BOMB[2]}},
        "held_bodies": {"body_bytes": len(body), "clients": held_clients},
    }
    for (bombs_name, bodies_name), env in CONFIGURATIONS.items():
        with serve_process("service.service:Chorus", out_dir / "server.log", **env, **({"BENTOML_HOME": home} if home else {})) as served:
            results["bombs"][bombs_name] = bombs(served, bomb, bombs_at_once)
            results["held_bodies"][bodies_name] = held_bodies(served, body, held_clients)
    return results


@contextmanager
def sampling(processes: dict[str, psutil.Process], every: float) -> Iterator[list[dict[str, float]]]:
    """RSS of each process every `every` seconds while the block runs (a list of samples, growing)."""
    samples: list[dict[str, float]] = []
    stop = threading.Event()

    def sample() -> None:
        start = time.monotonic()
        while not stop.wait(every):
            samples.append({"t": time.monotonic() - start, **{kind: rss_mb(p) for kind, p in processes.items()}})

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield samples
    finally:
        stop.set()
        thread.join()


def soak(out_dir: Path, minutes: float, warmup_minutes: float, home: str | None = None, users: int = 8) -> dict:
    from loadtests.runner import read_summary, run_locust

    env = {"BENTOML_HOME": home} if home else {}
    with serve_process("service.service:Chorus", out_dir / "server.log", **env) as served:
        processes = server_processes(served)
        with sampling(processes, every=5.0) as samples:
            bar = tqdm(total=int(minutes * 60), desc="soak", unit="s")
            runner = threading.Thread(target=run_locust, args=(served.url, users, 4.0, int(minutes * 60), out_dir / "locust"), daemon=True)
            runner.start()
            while runner.is_alive():
                runner.join(timeout=5)
                bar.n = min(bar.total, int(samples[-1]["t"]) if samples else 0)
                bar.refresh()
            bar.close()
        summary = read_summary(out_dir / "locust" / "locust")
    warm = [s for s in samples if s["t"] >= warmup_minutes * 60]
    first = {k: _median_of(warm, k, warm[0]["t"], warm[0]["t"] + 60) for k in processes}
    last = {k: _median_of(warm, k, warm[-1]["t"] - 60, warm[-1]["t"]) for k in processes}
    _plot(samples, warmup_minutes, out_dir / "soak_rss.png")
    return {
        "minutes": minutes,
        "warmup_minutes": warmup_minutes,
        "users": users,
        "requests": summary["total"]["requests"],
        "failures": summary["total"]["failures"],
        "rss_after_warmup_mb": {k: round(v) for k, v in first.items()},
        "rss_at_end_mb": {k: round(v) for k, v in last.items()},
        "growth_after_warmup_percent": {k: round(100 * (last[k] - first[k]) / first[k], 2) for k in processes},
        "slope_after_warmup_mb_per_hour": {k: round(_slope_per_hour(warm, k), 1) for k in processes},
        "rss_range_after_warmup_mb": {k: [round(min(s[k] for s in warm)), round(max(s[k] for s in warm))] for k in processes},
        "plot": str(out_dir / "soak_rss.png"),
    }


def _median_of(samples: list[dict[str, float]], kind: str, start: float, end: float) -> float:
    return float(np.median([s[kind] for s in samples if start <= s["t"] <= end]))


def _slope_per_hour(samples: list[dict[str, float]], kind: str) -> float:
    """Least-squares slope of RSS over time, MB per hour."""
    return float(np.polyfit([s["t"] / 3600 for s in samples], [s[kind] for s in samples], 1)[0])


def _plot(samples: list[dict[str, float]], warmup_minutes: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 3.5))
    for kind in (k for k in samples[0] if k != "t"):
        ax.plot([s["t"] / 60 for s in samples], [s[kind] for s in samples], label=kind)
    ax.axvline(warmup_minutes, color="grey", linestyle=":", label="end of warm-up")
    ax.set_xlabel("minutes")
    ax.set_ylabel("RSS (MB)")
    ax.set_title("chorus under the load-test mix: resident memory per process")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def run_memory(
    out_dir: Path,
    soak_minutes: float = 30.0,
    warmup_minutes: float = 5.0,
    home: str | None = None,
    bombs_at_once: int = 8,
    held_clients: int = 24,
) -> dict:
    out_dir.mkdir(parents=True, exist_ok=True)
    result = bombs_and_held_bodies(out_dir, home, bombs_at_once, held_clients)
    if soak_minutes > 0:
        result["soak"] = soak(out_dir, soak_minutes, min(warmup_minutes, soak_minutes / 2), home)
    (out_dir / "memory.json").write_text(json.dumps(result, indent=2))
    return result
