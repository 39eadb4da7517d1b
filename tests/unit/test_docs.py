"""The reference docs list what the code has: every metric service/metrics.py makes."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).parents[2]


def test_every_chorus_metric_is_in_the_observability_table():
    made = set(re.findall(r'\(\s*"(chorus_[a-z_]+)"', (ROOT / "service" / "metrics.py").read_text()))
    listed = set(re.findall(r"^\| `(chorus_[a-z_]+)` \|", (ROOT / "docs" / "observability.md").read_text(), re.MULTILINE))
    assert len(made) > 20 and made == listed, {"not in docs/observability.md": made - listed, "not made": listed - made}
