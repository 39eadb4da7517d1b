"""Settings: every knob typed and documented; a CHORUS_* typo is an error at start, not ignored."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from service import settings as settings_module
from service.settings import OTHER_VARIABLES, PREFIX, ServiceSettings, UnknownSettingError, settings_table


def test_an_unknown_variable_is_an_error_with_a_suggestion(monkeypatch):
    monkeypatch.setenv("CHORUS_BIRDCAL_MAX_BATCH_SIZE", "8")
    with pytest.raises(UnknownSettingError, match=r"CHORUS_BIRDCAL_MAX_BATCH_SIZE \(did you mean CHORUS_BIRDCALL_MAX_BATCH_SIZE"):
        ServiceSettings()


def test_other_chorus_tools_variables_are_allowed(monkeypatch):
    for name in OTHER_VARIABLES:
        monkeypatch.setenv(name, "x")
    monkeypatch.setenv("CHORUS_MAX_IMAGES", "4")
    assert ServiceSettings().max_images == 4


def test_every_setting_is_documented():
    for name, field in ServiceSettings.model_fields.items():
        assert field.description, name


def test_the_settings_table_in_the_docs_is_the_codes():
    text = (Path(__file__).parents[2] / "docs" / "serving.md").read_text()
    documented = text.split("<!-- settings: begin -->\n")[1].split("<!-- settings: end -->")[0]
    assert documented == settings_table(), "paste `uv run python -m service.settings` between the markers in docs/serving.md"


def test_the_docstring_example_names_a_real_setting():
    named = re.findall(r"CHORUS_[A-Z_]+", settings_module.__doc__ or "")
    assert named and all(n.removeprefix(PREFIX).lower() in ServiceSettings.model_fields for n in named), named


def test_settings_refuse_requests_larger_than_a_denoiser_batch(monkeypatch):
    monkeypatch.setenv("CHORUS_MAX_IMAGES", "40")
    with pytest.raises(ValueError, match="CHORUS_MAX_IMAGES"):
        ServiceSettings()


def test_settings_refuse_a_bodies_budget_that_the_largest_upload_would_never_pass(monkeypatch):
    monkeypatch.setenv("CHORUS_MAX_UPLOAD_BYTES", "1000")
    monkeypatch.setenv("CHORUS_MAX_BODY_BYTES_IN_FLIGHT", "999")
    with pytest.raises(ValueError, match="CHORUS_MAX_BODY_BYTES_IN_FLIGHT"):
        ServiceSettings()
    monkeypatch.setenv("CHORUS_MAX_BODY_BYTES_IN_FLIGHT", "1000")
    monkeypatch.setenv("CHORUS_MAX_KSERVE_JSON_BYTES", "1001")
    with pytest.raises(ValueError, match="CHORUS_MAX_KSERVE_JSON_BYTES"):
        ServiceSettings()
    monkeypatch.setenv("CHORUS_MAX_KSERVE_JSON_BYTES", "1000")
    assert ServiceSettings().max_body_bytes_in_flight == 1000


def test_an_unset_bodies_budget_follows_a_raised_body_limit(monkeypatch):
    """A deployment that raised only its upload limit past the budget's default keeps starting."""
    default = ServiceSettings.model_fields["max_body_bytes_in_flight"].default
    assert ServiceSettings().max_body_bytes_in_flight == default
    monkeypatch.setenv("CHORUS_MAX_UPLOAD_BYTES", str(default + 1))
    assert ServiceSettings().max_body_bytes_in_flight == default + 1
    monkeypatch.setenv("CHORUS_MAX_KSERVE_JSON_BYTES", str(default + 7))
    assert ServiceSettings().max_body_bytes_in_flight == default + 7
