"""schemathesis over /openapi.json, in-process: the real HTTP adapters over a fake engine.

Every operation of the document gets schema-valid and schema-violating requests (schemathesis'
examples, coverage and fuzzing phases). Checks (tests/fuzzing.py): no 5xx but 503/504, every
status, content type, header and body as the document says, schema-violating data refused with
a 4xx, undeclared methods answered 405. Deterministic, so a failure reproduces.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import schemathesis
from starlette.applications import Starlette

from service.dataplane import DataPlane
from service.jobs.store import JobStore
from service.settings import ServiceSettings
from tests.api.conftest import FakeEngine, http_app
from tests.fuzzing import CHECKS, bounded, config, node_id_for_schemathesis  # noqa: F401  (an autouse fixture)

EXAMPLES = 60


def app_with(settings: ServiceSettings, fake_store: Any, metrics: Any, jobs_dir: Path) -> Starlette:
    return http_app(DataPlane(FakeEngine(), settings, metrics, open_stored=fake_store), JobStore(jobs_dir))


@pytest.fixture
def api_schema(fake_store, metrics, tmp_path) -> Any:
    app = app_with(ServiceSettings(grpc_port=0), fake_store, metrics, tmp_path)
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=config())


schema = schemathesis.pytest.from_fixture("api_schema")


@schema.parametrize()
@bounded(EXAMPLES)
def test_every_operation_answers_as_documented(case: Any) -> None:
    case.call_and_validate()


TOKEN = "s3cret"


@pytest.fixture
def api_schema_with_token(fake_store, metrics, tmp_path) -> Any:
    """The document of a server with an API token: inference needs it (401 without), the rest stays open."""
    app = app_with(ServiceSettings(grpc_port=0, api_token=TOKEN), fake_store, metrics, tmp_path)
    # ignored_auth: each operation is sent without the token, and with a wrong one, too: 401 both times.
    settings = config(checks=(*CHECKS, "ignored_auth"), auth={"openapi": {"bearer": {"bearer": TOKEN}}})
    return schemathesis.openapi.from_asgi("/openapi.json", app, config=settings)


schema_with_token = schemathesis.pytest.from_fixture("api_schema_with_token").include(method="POST")


@schema_with_token.parametrize()
@bounded(EXAMPLES // 4)
def test_inference_with_a_token_answers_as_documented(case: Any) -> None:
    case.call_and_validate()
