"""The environment chorus servers start with: the same locally and in the Bento's image."""

from __future__ import annotations

import pytest
import yaml

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
