"""Export reports: one JSON and one markdown table per export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def _parity_cells(parity: dict[str, dict[str, Any]]) -> str:
    """One cell per variant: each output's measured differences, named."""
    parts = []
    for output, result in parity.items():
        figures = [f"max abs diff {result['max_abs_diff']:.2e}"]
        if result.get("decision_agreement") is not None:
            figures.append(f"decision agreement {result['decision_agreement']:.4f} (windows {result['window_decision_agreement']:.4f})")
            if result.get("detection_agreement") is not None:
                figures.append(f"detection agreement {result['detection_agreement']:.4f}")
        elif result.get("top1_agreement") is not None:
            figures.append(f"top-1 agreement {result['top1_agreement']:.4f}")
        if result.get("min_cosine") is not None:
            figures.append(f"cosine min {result['min_cosine']:.4f} / mean {result['mean_cosine']:.4f}")
        parts.append(f"{output}: " + ", ".join(figures))
    return "<br>".join(parts)


def markdown_table(report: dict[str, Any]) -> str:
    """variant | size | parity per output | ORT CPU latency / throughput per batch size."""
    variants = report["variants"]
    batches = [row["batch"] for row in next(iter(variants.values()))["cpu_timing"]]
    head = ["variant", "size (KB)", "parity vs reference"]
    head += [f"b{b} p50 ms / items/s" for b in batches]
    threshold = report.get("decision_threshold")
    lines = [
        f"# {report['model']} export ({report['tag']})",
        "",
        f"checkpoint {report['checkpoint']}, git {report['git_sha']}, reference: {report['reference']}"
        + (f", decisions at the calibrated threshold {threshold}" if threshold is not None else ""),
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, v in variants.items():
        cells = [name, f"{v['size_bytes'] / 1024:.0f}", _parity_cells(v["parity"])]
        cells += [f"{row['p50_ms']:.2f} / {row['items_per_s']:.0f}" for row in v["cpu_timing"]]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_report(report: dict[str, Any], directory: Path) -> tuple[Path, Path]:
    directory.mkdir(parents=True, exist_ok=True)
    json_path = directory / "export_report.json"
    md_path = directory / "export_report.md"
    json_path.write_text(json.dumps(report, indent=2) + "\n")
    md_path.write_text(markdown_table(report))
    return json_path, md_path
