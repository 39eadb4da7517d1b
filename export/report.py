"""Export reports: one JSON and one markdown table per export."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any


def markdown_table(report: dict[str, Any]) -> str:
    """variant | size | parity | accuracy | agreement | ORT CPU latency / throughput per batch size."""
    variants = report["variants"]
    batches = [row["batch"] for row in next(iter(variants.values()))["cpu_timing"]]
    head = ["variant", "size (KB)", "max abs diff", "accuracy", "top-1 agreement"]
    head += [f"b{b} p50 ms / items/s" for b in batches]
    lines = [
        f"# {report['model']} export ({report['tag']})",
        "",
        f"checkpoint {report['checkpoint']}, git {report['git_sha']}, reference: {report['reference']}",
        "",
        "| " + " | ".join(head) + " |",
        "|" + "---|" * len(head),
    ]
    for name, v in variants.items():
        parity = v["parity"]
        cells = [
            name,
            f"{v['size_bytes'] / 1024:.0f}",
            f"{parity['max_abs_diff']:.2e}",
            "-" if parity.get("accuracy") is None else f"{parity['accuracy']:.4f}",
            "-" if parity.get("top1_agreement") is None else f"{parity['top1_agreement']:.4f}",
        ]
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
