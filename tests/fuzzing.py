"""What the schemathesis runs share: the checks, the statuses that are no failure, the bounds.

tests/api/test_fuzz_schema.py runs them in-process over a fake engine (many examples),
tests/e2e/test_fuzz_served.py against the real server (fewer).
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from schemathesis.config import SchemathesisConfig

ALLOWED_SERVER_ERRORS = ("503", "504")
"""Overloaded or past a deadline: answers the document lists, not failures."""
CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "unsupported_method",
)


def config(*, checks: tuple[str, ...] = CHECKS, **more: Any) -> SchemathesisConfig:
    """Deterministic runs (a failure reproduces) with `checks`; nothing kept between runs. `more`: other
    sections of schemathesis' configuration (as in schemathesis.toml), such as auth."""
    return SchemathesisConfig.from_dict(
        {
            "checks": {
                "enabled": False,
                **{name: {"enabled": True} for name in checks},
                "not_a_server_error": {"enabled": True, "expected-statuses": ["2xx", "3xx", "4xx", *ALLOWED_SERVER_ERRORS]},
            },
            "generation": {"deterministic": True, "database": "none"},
            **more,
        }
    )


def bounded(examples: int) -> settings:
    """Hypothesis settings of a run: `examples` per operation in the fuzzing phase (the coverage phase adds its own)."""
    return settings(max_examples=examples, derandomize=True, database=None, deadline=None, suppress_health_check=list(HealthCheck))


@pytest.fixture(autouse=True)
def node_id_for_schemathesis(request: pytest.FixtureRequest) -> None:
    """schemathesis 4.32's from_fixture reads and renames `node._nodeid`, which pytest 9 no longer has.

    A test module using from_fixture imports this fixture (autouse: it runs before each test).
    """
    request.node._nodeid = request.node.nodeid


HOSTILE_NUMBERS = pytest.mark.filterwarnings(
    "ignore:overflow encountered:RuntimeWarning", "ignore:invalid value encountered:RuntimeWarning"
)
"""The inputs are hostile on purpose: numpy warns as it computes the inf and NaN that the service then refuses."""
