"""The int8 variant's quantization: its arithmetic holds on every x86 CPU, VNNI or not."""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from export.onnx_tools import cpu_session, quantize_int8


def test_full_scale_activations_and_weights_do_not_overflow_the_int8_kernel(tmp_path):
    """Activations at the top of their uint8 range against weights at the top of int8's: without
    VNNI, ORT's kernel sums pairs of such products in 16 bits (255 x 127 x 2 > 32767), so
    full-range weights come out about half their value there. 7-bit weights cannot overflow."""
    weights = np.ones((64, 8), np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])],
        "matmul",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["n", 64])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["n", 8])],
        [numpy_helper.from_array(weights, "w")],
    )
    source = tmp_path / "fp32.onnx"
    onnx.save(helper.make_model(graph, opset_imports=[helper.make_opsetid("", 18)]), source)
    x = np.ones((4, 64), np.float32)
    x[:, 0] = 0.0  # the activations' range starts at 0, so the others quantize to 255
    quantized = cpu_session(quantize_int8(source, tmp_path / "int8.onnx")).run(None, {"x": x})[0]
    np.testing.assert_allclose(quantized, x @ weights, rtol=0.02)
