"""The environment chorus servers start with: the same locally and in the Bento's image."""

from __future__ import annotations

import socket
import subprocess
import sys

import pytest
import yaml

from service import local_server
from service.local_server import ROOT, SERVER_ENV, server_environment, server_settings


@pytest.mark.parametrize("bentofile", ["bentofile.yaml", "bentofile.gpu.yaml"])
def test_the_bento_image_sets_what_local_servers_get(bentofile: str) -> None:
    envs = {e["name"]: e["value"] for e in yaml.safe_load((ROOT / bentofile).read_text())["envs"]}
    assert SERVER_ENV.items() <= envs.items()


def test_the_callers_environment_and_arguments_come_first(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
    assert server_environment()["MALLOC_ARENA_MAX"] == SERVER_ENV["MALLOC_ARENA_MAX"]
    monkeypatch.setenv("MALLOC_ARENA_MAX", "8")
    assert server_environment()["MALLOC_ARENA_MAX"] == "8"
    assert server_settings(CHORUS_GRPC_PORT="9") == {"MALLOC_ARENA_MAX": "8", "CHORUS_GRPC_PORT": "9"}  # serve()'s part
    assert server_environment(MALLOC_ARENA_MAX="1", CHORUS_GRPC_PORT="9")["MALLOC_ARENA_MAX"] == "1"


def test_free_ports_lie_below_the_ephemeral_range_and_can_be_bound() -> None:
    """Outgoing connections take their local ports from the ephemeral range: a server's port chosen
    there could be taken before the server binds it."""
    first = local_server._first_ephemeral_port()
    for _ in range(20):
        port = local_server.free_port()
        assert local_server._LOWEST_PORT <= port < first
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", port))


def test_waiting_for_a_server_that_exited_fails_at_once() -> None:
    exited = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    exited.wait()
    with pytest.raises(RuntimeError, match="exited with status 3"):  # not a TimeoutError a minute later
        local_server.wait_ready(f"http://127.0.0.1:{local_server.free_port()}", timeout=60, process=exited)
