"""The export steps every model shares: ONNX variants -> parity gate -> CPU timing -> registration -> report."""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bentoml
import numpy as np
import onnx
import onnxruntime
import torch

from export.onnx_tools import OPSET, convert_fp16, cpu_session, export_onnx, quantize_int8, run_batched, time_session
from export.parity import OutputKind, Tolerance, check_parity
from export.registry import content_hash, git_sha, register, reuse_registered
from export.report import write_report
from layout.artifacts import onnx_file
from training.checkpoint import Checkpoint

BATCH_SIZES = (1, 8, 32, 128)
_BUILDERS: dict[str, Callable[[Path, Path], Path]] = {"int8": quantize_int8, "fp16": convert_fp16}


@dataclass
class ExportJob:
    """Everything one model's export needs; the model modules fill it in."""

    name: str
    checkpoint: Checkpoint
    module: torch.nn.Module
    inputs: dict[str, np.ndarray]
    """Held-out inputs, keyed by ONNX input name in forward()'s argument order, batch first."""
    outputs: dict[str, OutputKind]
    """ONNX output names in the order forward() returns them, with what each holds."""
    variants: tuple[str, ...]
    tolerances: dict[str, Tolerance]
    digest: str
    decision_threshold: float | None = None
    """Where a score output becomes a detection, for the decision-agreement gate."""
    store_labels: dict[str, str] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    checkpoint_files: tuple[str, ...] = ()
    """Checkpoint files copied next to the ONNX files (config, labels, stats, metrics)."""
    bench_batch_sizes: tuple[int, ...] = BATCH_SIZES


def export_digest(checkpoint: Checkpoint, files: tuple[str, ...], variants: tuple[str, ...], tolerances: dict[str, Tolerance]) -> str:
    """Same checkpoint, settings, export and model code and tool versions -> same digest -> no new model version."""
    settings = {
        "opset": OPSET,
        "variants": list(variants),
        "tolerances": {k: vars(tolerances[k]) for k in variants},
        # They make the graph, the quantized and the fp16 variants as much as the weights do.
        "versions": _tool_versions(),
    }
    code = sorted(Path(__file__).parent.glob("*.py")) + [Path(__file__).parents[1] / "training" / name for name in _MODEL_CODE]
    return content_hash([checkpoint.directory / name for name in files] + code, settings)


def _tool_versions() -> dict[str, str]:
    # From the modules, not the distributions: onnxruntime-gpu installs the onnxruntime module.
    return {
        "torch": torch.__version__,
        "onnx": onnx.__version__,
        "onnxruntime": onnxruntime.__version__,
        "denoising-diffusion-pytorch": importlib.metadata.version("denoising-diffusion-pytorch"),
    }


_MODEL_CODE = ("birdcall_model.py", "train_frames.py")
"""training/ modules whose classes the exported graphs are traced from (the frames Unet is the library's)."""


def already_registered(name: str, digest: str, reports_dir: Path) -> dict[str, Any] | None:
    """The stored report when this exact export is in the model store already (registry.reuse_registered)."""
    reused = reuse_registered(name, digest)
    if reused is None:
        return None
    tag, created = reused
    stored: dict[str, Any] = bentoml.models.get(tag).info.metadata["report"]  # type: ignore[assignment]
    report = {**stored, "tag": tag, "created": created}
    write_report(report, reports_dir)
    return report


def _torch_reference(module: torch.nn.Module, inputs: dict[str, np.ndarray], batch_size: int = 64) -> list[np.ndarray]:
    """Every output of forward() over the inputs, in batches."""
    n = len(next(iter(inputs.values())))
    batches = []
    with torch.inference_mode():
        for i in range(0, n, batch_size):
            out = module(*(torch.from_numpy(v[i : i + batch_size]) for v in inputs.values()))
            batches.append(out if isinstance(out, tuple) else (out,))
    return [torch.cat(parts).numpy() for parts in zip(*batches, strict=True)]


def _tile(inputs: dict[str, np.ndarray], batch: int) -> dict[str, np.ndarray]:
    return {k: np.resize(v, (batch, *v.shape[1:])) for k, v in inputs.items()}


def run_export(job: ExportJob, reports_dir: Path) -> dict[str, Any]:
    """Export every variant, gate it, time it and register the lot. A ParityError registers nothing."""
    reference = _torch_reference(job.module.eval(), job.inputs)
    staging = Path(tempfile.mkdtemp(prefix=f"chorus-export-{job.name}-"))
    try:
        # Two rows, even from one held-out window: from a batch of one the exporter fixes the batch size at 1.
        example = {k: torch.from_numpy(np.resize(v, (2, *v.shape[1:]))) for k, v in job.inputs.items()}
        paths = {"fp32": export_onnx(job.module, example, list(job.outputs), staging / onnx_file(job.name, "fp32"))}
        for variant in job.variants:
            if variant != "fp32":
                paths[variant] = _BUILDERS[variant](paths["fp32"], staging / onnx_file(job.name, variant))
        outputs: dict[str, list[np.ndarray]] = {}
        variants: dict[str, Any] = {}
        for variant in job.variants:
            session = cpu_session(paths[variant])
            outputs[variant] = run_batched(session, job.inputs)
            # fp32 is held to torch; the other variants to fp32 ONNX, whose decisions they must keep.
            against = reference if variant == "fp32" else outputs["fp32"]
            parity = {
                name: check_parity(variant, name, ref, out, job.tolerances[variant], kind, job.decision_threshold).to_dict()
                for (name, kind), ref, out in zip(job.outputs.items(), against, outputs[variant], strict=True)
            }
            variants[variant] = {
                "file": paths[variant].name,
                "size_bytes": paths[variant].stat().st_size,
                "parity": parity,
                "tolerance": vars(job.tolerances[variant]),
                "cpu_timing": time_session(session, lambda b: _tile(job.inputs, b), job.bench_batch_sizes),
            }
        for name in job.checkpoint_files:
            shutil.copy2(job.checkpoint.directory / name, staging / name)
        report: dict[str, Any] = {
            "model": job.name,
            "tag": None,
            "created": True,
            "checkpoint": str(job.checkpoint.directory),
            "reference": "torch eager (fp32); fp32 ONNX (other variants)",
            "held_out_inputs": len(reference[0]),
            "git_sha": git_sha(),
            "data_hash": job.checkpoint.metrics.get("data_hash"),
            "inputs": {k: {"shape": ["batch", *v.shape[1:]], "dtype": str(v.dtype)} for k, v in job.inputs.items()},
            "outputs": {
                name: {"shape": ["batch", *ref.shape[1:]], "dtype": "float32", "kind": kind.value}
                for (name, kind), ref in zip(job.outputs.items(), reference, strict=True)
            },
            "decision_threshold": job.decision_threshold,
            "variants": variants,
        }
        sha = report["git_sha"]
        short = sha[:12] + ("-dirty" if sha.endswith("-dirty") else "")  # an uncommitted tree must not read as a commit
        store_labels = {"framework": "onnx", "variants": ",".join(job.variants), "git_sha": short, **job.store_labels}
        tag, created = register(job.name, staging, store_labels, {"report": report, **job.metadata}, job.digest)
        report.update(tag=tag, created=created)
        write_report(report, reports_dir)
        return report
    finally:
        shutil.rmtree(staging, ignore_errors=True)
