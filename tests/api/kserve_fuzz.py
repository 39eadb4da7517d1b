"""Hypothesis strategies for hostile KServe v2 inference requests, shared by the HTTP and gRPC fuzzers.

A request starts from a valid one (a short waveform, one log-mel window, a denoiser step) and gets
a few mutations, so most examples pass the early checks and reach the later ones (shapes against
data, datatypes against models, outputs, the model itself) instead of all dying at the first.
"""

from __future__ import annotations

import math
import struct
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from hypothesis import strategies as st

from features import FrontEndConfig
from service.tensors import DATATYPES, DTYPES, encode_bytes_tensor
from tests.api.conftest import IMAGE_SIZE, VERSIONS

MODELS = {"birdcall": VERSIONS["birdcall"], "frames-denoiser": VERSIONS["frames"]}
WINDOW = FrontEndConfig().feature_shape
"""One log-mel window of the default front end, which tests/api/conftest.py's fake store holds."""
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

HOSTILE_DIMS = [-1, -2, -(2**31), 2**31, 2**32, 2**62, INT64_MAX, INT64_MIN]
HOSTILE_DATATYPES = ["fp32", "FP8", "UINT16", "UINT64", "COMPLEX64", "BF16", "", "FP32 ", "\uff26\uff3032"]  # the last: fullwidth "FP32"
INPUT_NAMES = ["waveform", "log_mel", "x_t", "t", "", "probabilities", "wave\u0000form", "wavé", "🐦" * 3]
OUTPUT_NAMES = ["probabilities", "labels", "v", "", "nope", "🐦"]

# Text of any kind but surrogates (not encodable as UTF-8, so neither JSON on the wire nor protobuf).
TEXT = st.text(st.characters(exclude_categories=("Cs",)), max_size=12)
HUGE_INTS = st.sampled_from([2**31, 2**32, 2**53 + 1, INT64_MAX, 2**64, 10**30, -(10**30)])
JSON_SCALARS = st.none() | st.booleans() | st.integers() | HUGE_INTS | st.floats(allow_nan=False, allow_infinity=False) | TEXT
JSON_VALUES = st.recursive(JSON_SCALARS, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(TEXT, inner, max_size=3), max_leaves=8)


def nested(depth: int, leaf: Any = 0) -> Any:
    """`depth` lists inside each other (json.dumps recurses: built as text where it must be deep)."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


@dataclass
class Input:
    """One input tensor as a client describes it: JSON `data` or raw bytes (binary extension / raw contents)."""

    name: Any
    datatype: Any
    shape: Any
    data: Any = None
    raw: bytes | None = field(default=None, repr=False)
    parameters: Any = None
    drop: set[str] = field(default_factory=set)
    """JSON fields left out of the request."""

    def json(self) -> dict[str, Any]:
        spec: dict[str, Any] = {"name": self.name, "datatype": self.datatype, "shape": self.shape}
        parameters = self.parameters
        if self.raw is not None:
            parameters = {**(parameters if isinstance(parameters, dict) else {}), "binary_data_size": len(self.raw)}
        elif self.data is not None:
            spec["data"] = self.data
        if parameters is not None:
            spec["parameters"] = parameters
        return {k: v for k, v in spec.items() if k not in self.drop}


@dataclass
class Request:
    """A KServe inference request before it is put in a protocol's form."""

    model: str
    version: str | None
    inputs: list[Input]
    outputs: Any = None
    parameters: Any = None
    id: Any = None
    notes: list[str] = field(default_factory=list)
    """The mutations applied: a failure's report says what the request was made of."""


def fp32_raw(values: np.ndarray) -> bytes:
    return np.ascontiguousarray(values, np.float32).tobytes()


def valid_inputs(kind: str, n: int) -> tuple[str, list[Input]]:
    """A valid request's model and inputs: `n` samples, windows or images."""
    if kind == "waveform":
        wave = (0.1 * np.sin(np.arange(n) / 7)).astype(np.float32)
        return "birdcall", [Input("waveform", "FP32", [n], data=[round(float(x), 6) for x in wave])]
    if kind == "log_mel":
        return "birdcall", [Input("log_mel", "FP32", [n, *WINDOW], raw=fp32_raw(np.zeros((n, *WINDOW))))]
    images = np.zeros((n, 3, IMAGE_SIZE, IMAGE_SIZE), np.float32)
    return "frames-denoiser", [
        Input("x_t", "FP32", list(images.shape), raw=fp32_raw(images)),
        Input("t", "FP32", [n], data=[float(i) for i in range(n)]),
    ]


def values_for(datatype: str, count: int) -> st.SearchStrategy[list[Any]]:
    """`count` JSON values of a datatype, in range or not."""
    if datatype == "BYTES":
        element: st.SearchStrategy[Any] = TEXT
    elif datatype == "BOOL":
        element = st.booleans() | st.integers(-2, 2)
    elif datatype.startswith(("INT", "UINT")):
        element = st.integers(-300, 300) | HUGE_INTS
    else:
        element = st.floats(allow_nan=False, allow_infinity=False) | st.integers(-(10**6), 10**6) | st.sampled_from([1e308, -1e308, 5e-324])
    return st.lists(element, min_size=count, max_size=count)


def raw_for(datatype: str, count: int) -> st.SearchStrategy[bytes]:
    """`count` values' raw bytes, NaN and infinities included; BYTES length-prefixed, or not quite."""
    if datatype == "BYTES":
        items = st.lists(st.binary(max_size=6), min_size=count, max_size=count).map(
            lambda xs: encode_bytes_tensor(np.array(xs, dtype=object))
        )
        return items | st.sampled_from([b"\xff\xff\xff\xff", b"\x05\x00\x00\x00ab", b"\x01\x00"])
    itemsize = np.dtype(DTYPES.get(datatype, np.float32)).itemsize
    special = st.sampled_from([struct.pack("<f", math.nan) * count, struct.pack("<f", math.inf) * count, b"\0" * (itemsize * count)])
    return st.binary(min_size=itemsize * count, max_size=itemsize * count) | special


DIMS = st.integers(0, 6) | st.sampled_from(HOSTILE_DIMS)
SHAPES = st.lists(DIMS, max_size=5) | st.just([1] * 70)  # 70 dims: past numpy's 64
HOSTILE_SHAPES = st.sampled_from(["4", 4, None, [1.5], [True], [[2]], {"0": 4}, ["4"], [1e400]])


@st.composite
def mutated_input(draw: st.DrawFn, base: Input) -> Input:
    """One field of an input made wrong (or a different valid-looking value that no longer fits)."""
    what = draw(
        st.sampled_from(
            ["name", "datatype", "shape", "refit", "refit", "hostile_shape", "data", "loud", "raw", "parameters", "drop", "deep"]
        )
    )
    item = Input(base.name, base.datatype, base.shape, base.data, base.raw, base.parameters, set(base.drop))
    if what == "name":
        item.name = draw(st.sampled_from(INPUT_NAMES) | TEXT | JSON_SCALARS)
    elif what == "datatype":
        item.datatype = draw(st.sampled_from([*DATATYPES, *HOSTILE_DATATYPES]) | JSON_SCALARS)
    elif what == "shape":
        item.shape = draw(SHAPES)
    elif what == "refit":
        # Another shape of the same size: past the checks of shape against data, into the model's.
        size = len(item.data) if isinstance(item.data, list) else (len(item.raw or b"") // 4)
        ones = draw(st.sampled_from([0, 2, 31, 64, 70]))  # numpy holds at most 64 dimensions
        at = draw(st.integers(0, ones))
        item.shape = [1] * at + [size] + [1] * (ones - at)
    elif what == "hostile_shape":
        item.shape = draw(HOSTILE_SHAPES)
    elif what == "data":
        # Values of another datatype, or a count that does not fill the shape.
        datatype = draw(st.sampled_from(DATATYPES))
        count = draw(st.integers(0, 12))
        item.raw, item.data = None, draw(values_for(datatype, count) | JSON_VALUES)
    elif what == "loud":
        # Finite values far past what the model expects: their squares overflow float32.
        gain = draw(st.sampled_from([1e19, 1e30, -3e38, 1e6]))
        if item.raw is not None:
            item.raw = fp32_raw(np.frombuffer(item.raw, np.uint8).astype(np.float32)[: len(item.raw) // 4] * 0 + gain)
        elif isinstance(item.data, list):
            item.data = [gain * (1 + i % 3) for i in range(len(item.data))]
    elif what == "raw":
        datatype = item.datatype if isinstance(item.datatype, str) else "FP32"
        size = math.prod(d for d in item.shape if isinstance(d, int)) if isinstance(item.shape, list) else 1
        item.data, item.raw = None, draw(raw_for(datatype, min(max(size, 0), 64)) | st.binary(max_size=64))
    elif what == "parameters":
        item.parameters = draw(JSON_VALUES | st.fixed_dictionaries({"binary_data_size": JSON_SCALARS}))
        item.raw = None if isinstance(item.parameters, dict) and "binary_data_size" in item.parameters else item.raw
    elif what == "drop":
        item.drop.add(draw(st.sampled_from(["name", "datatype", "shape", "data", "parameters"])))
    else:
        item.raw, item.data = None, nested(draw(st.integers(40, 80)))  # past numpy's 64 dimensions
    return item


def _outputs() -> st.SearchStrategy[Any]:
    output = st.fixed_dictionaries(
        {"name": st.sampled_from(OUTPUT_NAMES) | JSON_SCALARS},
        optional={"parameters": st.fixed_dictionaries({}, optional={"binary_data": JSON_SCALARS}) | JSON_VALUES},
    )
    return st.none() | st.lists(output, max_size=3) | st.lists(st.sampled_from(OUTPUT_NAMES), min_size=1, max_size=2) | JSON_VALUES


@st.composite
def requests(draw: st.DrawFn) -> Request:
    """A valid request with 0-3 mutations of its inputs, outputs, parameters, id, model or version."""
    kind = draw(st.sampled_from(["waveform", "log_mel", "denoiser"]))
    model, inputs = valid_inputs(kind, draw(st.integers(1, 3)) if kind != "waveform" else draw(st.integers(1, 40)))
    request = Request(model, MODELS[model] if draw(st.booleans()) else None, inputs, notes=[kind])
    if kind != "denoiser" and draw(st.booleans()):  # binary outputs, by request parameter or per output
        binary = st.fixed_dictionaries({"binary_data": st.booleans()})
        request.outputs = draw(
            st.lists(st.fixed_dictionaries({"name": st.sampled_from(["probabilities", "labels"]), "parameters": binary}))
        )
    # Mostly one mutation, so that the request gets past every check but the one it breaks.
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 1, 2, 2, 3]))):
        what = draw(
            st.sampled_from([*["input"] * 5, "extra", "duplicate", "drop_input", "outputs", "parameters", "id", "model", "version"])
        )
        request.notes.append(what)
        if what == "input" and request.inputs:
            i = draw(st.integers(0, len(request.inputs) - 1))
            request.inputs[i] = draw(mutated_input(request.inputs[i]))
        elif what == "extra":
            request.inputs.append(draw(mutated_input(Input("extra", "FP32", [1], data=[0.0]))))
        elif what == "duplicate" and request.inputs:
            request.inputs.append(request.inputs[0])
        elif what == "drop_input" and request.inputs:
            request.inputs.pop(draw(st.integers(0, len(request.inputs) - 1)))
        elif what == "outputs":
            request.outputs = draw(_outputs())
        elif what == "parameters":
            request.parameters = draw(JSON_VALUES | st.fixed_dictionaries({"binary_data_output": JSON_SCALARS}))
        elif what == "id":
            request.id = draw(JSON_VALUES)
        elif what == "model":
            request.model = draw(
                st.sampled_from([*MODELS, "Birdcall", "birdcall ", "🐦"]) | TEXT.filter(lambda s: "/" not in s and s.strip("."))
            )
        else:
            request.version = draw(st.sampled_from(["b1", "f1", "0", "-1", "b1\u0000", "🐦", "1" * 200]))
    return request
