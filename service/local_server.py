"""Start the real chorus service (bentoml.serve, production mode) on a free local port.

Tests and benchmarks share this, so both measure exactly what `chorus serve` runs.
"""

from __future__ import annotations

import contextlib
import os
import random
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent

SERVER_ENV = {"MALLOC_ARENA_MAX": "2"}
"""Environment every chorus server starts with unless the caller's environment says otherwise (the
Bento's image sets the same through bentofile.yaml's `envs`). glibc gives each thread that
allocates its own malloc arena, up to 8 per core, and freed blocks stay in them: under the load
test's mix the API worker's decoding threads took its RSS from ~200 to ~400 MB in 10 minutes while
the Python objects it held stayed level (docs/benchmarks.md, "Memory")."""


def server_settings(**env: str) -> dict[str, str]:
    """What a server process gets on top of this process's environment: SERVER_ENV where that
    environment does not say otherwise, then `env`."""
    return {**{key: os.environ.get(key, default) for key, default in SERVER_ENV.items()}, **env}


def server_environment(**env: str) -> dict[str, str]:
    """The whole environment of a server process started from this one."""
    return {**os.environ, **server_settings(**env)}


def free_port() -> int:
    """A local port nothing is bound to, below the kernel's ephemeral range. A port from that range
    (what binding port 0 gives) is also where outgoing connections get their local ports, so one
    can take it before the server binds it (seen in the test suite: a server's gRPC port)."""
    first = _first_ephemeral_port()
    for _ in range(200 if first - _LOWEST_PORT >= 1_000 else 0):
        port = random.randrange(_LOWEST_PORT, first)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:  # no room below the range: the kernel's choice, race and all
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


_LOWEST_PORT = 20_000
"""Below this lie the registered ports of well-known services (Prometheus 9090, Ray 6379, ...)."""


def _first_ephemeral_port() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):  # not Linux: the IANA dynamic range starts at 49152
        return 49_152


def wait_ready(url: str, timeout: float = 180.0, path: str = "/readyz", process: subprocess.Popen | None = None) -> None:
    """Poll a readiness endpoint (a readiness check, not a sleep) until it answers 200; raise at
    once if `process` (the server, when started here) has ended, or if the server says it never
    will be ready (its models failed to load)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process is not None and process.poll() is not None:
            raise RuntimeError(f"the server at {url} exited with status {process.returncode} before it was ready")
        try:
            response = httpx.get(f"{url}{path}", timeout=5)
        except httpx.HTTPError:
            response = None
        if response is not None and response.status_code == 200:
            return
        if response is not None and (reason := _never_ready(response)) is not None:
            raise RuntimeError(f"the server at {url} will not become ready: {reason}")
        time.sleep(0.2)
    raise TimeoutError(f"{url}{path} was not ready within {timeout} s")


def _never_ready(response: httpx.Response) -> str | None:
    """The reason of a not-ready answer that says no wait will help (service.adapters.http.readiness_body)."""
    if response.status_code != 503:
        return None
    try:
        body = response.json()
    except ValueError:  # not JSON: another server, or BentoML's own text while it starts
        return None
    return str(body.get("reason")) if isinstance(body, dict) and body.get("permanent") is True else None


@contextlib.contextmanager
def serve(target: str = "service.service:Chorus", **env: str) -> Iterator[str]:
    """Yield the base URL of a running chorus (or another service of this repo, `target`);
    CHORUS_* settings come from `env` (gRPC on a free port)."""
    import bentoml
    from bentoml._internal.configuration.containers import BentoMLContainer

    # bentoml.serve runs the server's arbiter in this process, and every arbiter empties the
    # metrics directory under BENTOML_HOME at start and deletes and re-creates the task store
    # (task_result.db) there: give each server its own of both, or a second server blanks the first
    # one's /metrics and swaps its task store for a new file under its open SQLite connections (the
    # first one's next write, or the second's start, fails with "disk I/O error"). They go when the
    # server has stopped.
    with tempfile.TemporaryDirectory(prefix="chorus-server-", ignore_cleanup_errors=True) as own:
        metrics_dir = os.path.join(own, "metrics")
        os.mkdir(metrics_dir)
        BentoMLContainer.prometheus_multiproc_dir.set(metrics_dir)
        task_store = os.path.join(own, "task_result.db")
        BentoMLContainer.result_store_file.set(task_store)  # this process (the deployment hook)
        env.setdefault("BENTOML_RESULT_STORE", task_store)  # the workers, which read it at their start
        port = free_port()
        env.setdefault("CHORUS_GRPC_PORT", str(free_port()))
        env = server_settings(**env)
        saved = {k: os.environ.get(k) for k in env}
        os.environ.update(env)
        try:
            server = bentoml.serve(target, host="127.0.0.1", port=port, working_dir=str(ROOT))
        finally:
            for key, value in saved.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
        url = f"http://127.0.0.1:{port}"
        try:
            wait_ready(url)
            yield url
        finally:
            stop_arbiter(server)


def stop_arbiter(server: Any, attempt_seconds: float = 10.0, attempts: int = 12) -> None:
    """Stop a server that bentoml.serve runs in this process, asking again until it stops.

    Its `stop` schedules circus's arbiter stop once, then waits for the arbiter's thread forever;
    circus refuses a stop that overlaps another of its commands (say, the periodic watcher check)
    with a ConflictError that only its loop sees, and the wait never ends (seen once in the suite).
    """
    for _ in range(attempts):
        stopping = threading.Thread(target=server.stop, daemon=True)  # each call schedules one more stop
        stopping.start()
        stopping.join(attempt_seconds)
        if not stopping.is_alive():
            return
    raise RuntimeError(f"the BentoML server did not stop in {attempts * attempt_seconds:.0f} s")


@dataclass(frozen=True)
class ServedProcess:
    url: str
    process: subprocess.Popen
    grpc_port: int
    log: Path


@contextlib.contextmanager
def serve_process(target: str, log: Path, *, ready: bool = True, **env: str) -> Iterator[ServedProcess]:
    """`bentoml serve target` in a process of its own (its own BENTOML_HOME, say), output to `log`;
    yields once /readyz answers 200 (unless `ready` is False). Stopped with SIGTERM, as a
    container runtime stops it, if it still runs at the end."""
    port = free_port()
    env.setdefault("CHORUS_GRPC_PORT", str(free_port()))
    command = [sys.executable, "-m", "bentoml", "serve", target, "--host", "127.0.0.1", "--port", str(port)]
    with log.open("wb") as output:
        process = subprocess.Popen(command, env=server_environment(**env), stdout=output, stderr=subprocess.STDOUT, cwd=ROOT)
    served = ServedProcess(f"http://127.0.0.1:{port}", process, int(env["CHORUS_GRPC_PORT"]), log)
    try:
        if ready:
            wait_ready(served.url, process=process)
        yield served
    finally:
        if process.poll() is None:
            process.terminate()
        process.wait(timeout=120)
