"""The export's parity gates, run again on the device that serves: each stored variant on the CUDA
provider against fp32 on the CPU, over the held-out inputs the export gates use.

ORT's CUDA kernels are not its CPU kernels (TF32 matrix products and convolutions, cuDNN's choice
of algorithm, half-precision kernels), so a variant that passed its gate when it was exported on a
CPU is checked on the GPU before its GPU figures are believed.

Here, with the training data at hand: `python -m benchmarks.gpu.parity save FILE` (the inputs, as
FILE.npz); on the GPU host: `python -m benchmarks.gpu.parity check FILE OUT_JSON` (exits 1 when a
gate fails, after checking every variant).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from export import birdcall as birdcall_export
from export import frames as frames_export
from export.onnx_tools import run_batched
from export.parity import ParityError, check_parity
from layout import artifacts
from layout.workspace import Workspace
from service.engine.runtime import CPU, CUDA, choose_providers, make_session
from service.models.birdcall import stored_threshold
from service.store import StoredModel
from training.checkpoint import load_checkpoint
from training.train_frames import FramesArch

EXPORTS = {"birdcall": birdcall_export, "frames": frames_export}
# Every variant on the GPU is held to CPU fp32 by what serving needs: the gate each model's fp16
# variant passed at export (birdcall's detections at the calibrated threshold and its embeddings,
# the denoiser's outputs within 0.05).
GPU_TOLERANCES = {name: export.TOLERANCES["fp16"] for name, export in EXPORTS.items()}
BIRDCALL_WINDOWS = 512
"""Test-split windows carried to the GPU host (stored as float16 to travel light; both sides read the same values)."""


def save_inputs(path: Path) -> None:
    """The export gates' held-out inputs of the checkpoints in CHORUS_HOME, spread over the test split."""
    workspace = Workspace.from_env()
    windows = birdcall_export.held_out_inputs(load_checkpoint(workspace.checkpoint_dir("birdcall")))
    picked = np.linspace(0, len(windows) - 1, min(BIRDCALL_WINDOWS, len(windows))).astype(int)
    frames = load_checkpoint(workspace.checkpoint_dir("frames"))
    arch = FramesArch(**frames.config[artifacts.ARCH])
    denoiser = frames_export.held_out_inputs(arch, np.asarray(frames.config[artifacts.ALPHAS_CUMPROD]))
    np.savez(path, features=windows[picked].astype(np.float16), x_t=denoiser["x_t"], t=denoiser["t"])


def check_on_gpu(inputs_path: Path) -> list[dict]:
    """One row per (model, variant, output): the measures, and the gate's verdict."""
    saved = np.load(inputs_path)
    feeds = {
        "birdcall": {"features": saved["features"].astype(np.float32)},
        "frames": {"x_t": saved["x_t"], "t": saved["t"]},
    }
    providers = choose_providers("cuda")
    rows = []
    for name, inputs in feeds.items():
        stored = StoredModel.resolve(f"{name}:latest")
        threshold = stored_threshold(stored) if name == "birdcall" else None
        reference = run_batched(make_session(stored.onnx_path("fp32"), [CPU], 0), inputs)
        for variant in EXPORTS[name].VARIANTS:
            session = make_session(stored.onnx_path(variant), providers, 1)
            if session.get_providers()[0] != CUDA:
                raise SystemExit(f"{name} {variant} did not open on the CUDA provider ({session.get_providers()})")
            outputs = run_batched(session, inputs)
            for (output, kind), ref, out in zip(EXPORTS[name].OUTPUTS.items(), reference, outputs, strict=True):
                try:
                    result, failure = check_parity(variant, output, ref, out, GPU_TOLERANCES[name], kind, threshold).to_dict(), None
                except ParityError as exc:
                    result, failure = {"variant": variant, "output": output, exc.measure: exc.value}, str(exc)
                rows.append({"model": name, **result, "passed": failure is None, "failure": failure})
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("action", choices=("save", "check"))
    parser.add_argument("inputs", type=Path, help="the .npz of held-out inputs")
    parser.add_argument("out", type=Path, nargs="?", help="check: where the results go (JSON)")
    args = parser.parse_args(argv)
    if args.action == "save":
        save_inputs(args.inputs)
        return 0
    rows = check_on_gpu(args.inputs)
    for row in rows:
        print(json.dumps(row), flush=True)
    if args.out is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(rows, indent=2))
    return 0 if all(row["passed"] for row in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
