"""torch -> ONNX with a dynamic batch axis, quantized/half variants, and ORT sessions and timing."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import torch

from service.engine.runtime import make_session

OPSET = 18


def export_onnx(module: torch.nn.Module, example: dict[str, torch.Tensor], output_names: list[str], path: Path) -> Path:
    """Export with the dynamo exporter (the legacy one fails on parts of these models), batch axis dynamic.

    `example` maps ONNX input names to tensors, in forward()'s argument order.
    """
    batch = torch.export.Dim("batch", min=1, max=4096)
    dynamic = tuple({0: batch} for _ in example)
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.onnx.export(
        module.eval(),
        tuple(example.values()),
        str(path),
        dynamo=True,
        opset_version=OPSET,
        input_names=list(example),
        output_names=output_names,
        dynamic_shapes=dynamic,
        external_data=False,
        verbose=False,
    )
    onnx.checker.check_model(str(path), full_check=True)
    return path


def quantize_int8(source: Path, target: Path) -> Path:
    """Dynamic per-channel QInt8 weights of the MatMul/Gemm layers (where most weights are).

    Static QDQ measured worse here (0.984 agreement). Convs stay fp32: ORT's ConvInteger ran
    4x slower than the fp32 Conv on this CPU. Weights use 7 bits (reduce_range): on x86 CPUs
    without VNNI (AVX2 only: most laptops, AMD before Zen 4) ORT's u8 x s8 kernel adds pairs of
    products in 16 bits, which full-range per-channel weights overflow. A birdcall model trained on
    such a host failed the gate there with embedding cosine 0.963; 7-bit weights: 0.998.
    """
    from onnxruntime.quantization import QuantType, quantize_dynamic

    quantize_dynamic(
        str(source),
        str(target),
        per_channel=True,
        reduce_range=True,
        weight_type=QuantType.QInt8,
        op_types_to_quantize=["MatMul", "Gemm"],
    )
    return target


def convert_fp16(source: Path, target: Path) -> Path:
    """Half-precision weights and compute for GPUs; inputs and outputs stay float32."""
    from onnxruntime.transformers.float16 import convert_float_to_float16

    model = convert_float_to_float16(onnx.load(str(source)), keep_io_types=True)
    onnx.save(model, str(target))
    return target


def cpu_session(path: Path, threads: int = 0) -> ort.InferenceSession:
    """A CPU session configured exactly as the service makes them, so export timings match serving."""
    return make_session(path, ["CPUExecutionProvider"], threads)


def run_batched(session: ort.InferenceSession, inputs: dict[str, np.ndarray], batch_size: int = 64) -> list[np.ndarray]:
    """Every output of the session, in order, over inputs split into batches."""
    n = len(next(iter(inputs.values())))
    batches = [session.run(None, {k: v[i : i + batch_size] for k, v in inputs.items()}) for i in range(0, n, batch_size)]
    return [np.concatenate(parts) for parts in zip(*batches, strict=True)]


def time_session(session: ort.InferenceSession, make_inputs, batch_sizes: tuple[int, ...], min_seconds: float = 0.5) -> list[dict]:
    """p50 latency (ms) and items/s per batch size, after one warm-up run each."""
    rows = []
    for batch in batch_sizes:
        feed = make_inputs(batch)
        session.run(None, feed)
        times: list[float] = []
        deadline = time.perf_counter() + min_seconds
        while time.perf_counter() < deadline or len(times) < 3:
            start = time.perf_counter()
            session.run(None, feed)
            times.append(time.perf_counter() - start)
        p50 = float(np.median(times))
        rows.append({"batch": batch, "p50_ms": round(p50 * 1e3, 3), "items_per_s": round(batch / p50, 1)})
    return rows
