"""Hypothesis strategies for hostile KServe v2 inference requests, in their HTTP and gRPC forms, and
the invariants their answers keep; shared by the fuzzers of tests/api (fake engine) and tests/e2e.

A request starts from a valid one (a short waveform, log-mel windows, a denoiser step) and gets a
few mutations, so most examples pass the early checks and reach the later ones (shapes against
data, datatypes against models, outputs, the model itself) instead of all dying at the first.
Hypothesis is derandomized where these are used: the same examples on every run.
"""

from __future__ import annotations

import contextlib
import json
import math
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote

import grpc
import httpx
import numpy as np
from google.protobuf.message import Message
from hypothesis import strategies as st

from features import FrontEndConfig
from service.adapters.grpc.messages import SERVICE, message, methods
from service.errors import InvalidParameter
from service.models import MODELS
from service.tensors import DATATYPES, DTYPES, MAX_DIMENSIONS, decode_bytes_tensor, encode_bytes_tensor
from tests.api.conftest import IMAGE_SIZE, VERSIONS


@dataclass(frozen=True)
class Served:
    """What valid requests depend on: the served models' versions, log-mel window and image size."""

    versions: dict[str, str]
    """KServe model name -> its version."""
    window: tuple[int, ...]
    """One log-mel window (birdcall's log_mel input without its batch axis)."""
    image_size: int
    """The denoiser's image side."""

    @classmethod
    def from_metadata(cls, birdcall: dict[str, Any], denoiser: dict[str, Any]) -> Served:
        """From the KServe model metadata of the two models (a real server's)."""
        inputs = {t["name"]: t["shape"] for t in (*birdcall["inputs"], *denoiser["inputs"])}
        versions = {birdcall["name"]: birdcall["versions"][0], denoiser["name"]: denoiser["versions"][0]}
        return cls(versions, tuple(inputs["log_mel"][1:]), int(inputs["x_t"][-1]))


FAKE = Served({"birdcall": VERSIONS["birdcall"], "frames-denoiser": VERSIONS["frames"]}, FrontEndConfig().feature_shape, IMAGE_SIZE)
"""The models of tests/api/conftest.py's fake store (the default front end's window)."""
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


def valid_inputs(served: Served, kind: str, n: int) -> tuple[str, list[Input]]:
    """A valid request's model and inputs: `n` samples, windows or images."""
    if kind == "waveform":
        wave = (0.1 * np.sin(np.arange(n) / 7)).astype(np.float32)
        return "birdcall", [Input("waveform", "FP32", [n], data=[round(float(x), 6) for x in wave])]
    if kind == "log_mel":
        return "birdcall", [Input("log_mel", "FP32", [n, *served.window], raw=fp32_raw(np.zeros((n, *served.window))))]
    images = np.zeros((n, 3, served.image_size, served.image_size), np.float32)
    return "frames-denoiser", [
        Input("x_t", "FP32", list(images.shape), raw=fp32_raw(images)),
        Input("t", "FP32", [n], data=[float(i) for i in range(n)]),
    ]


def base_requests(served: Served = FAKE) -> list[Request]:
    """The valid requests the fuzzers start from, one of each kind, unmutated."""
    made = []
    for kind, n in {"waveform": 400, "log_mel": 2, "denoiser": 2}.items():
        model, inputs = valid_inputs(served, kind, n)
        made.append(Request(model, None, inputs, notes=[kind]))
    return made


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
def requests(draw: st.DrawFn, served: Served = FAKE) -> Request:
    """A valid request with 0-3 mutations of its inputs, outputs, parameters, id, model or version."""
    kind = draw(st.sampled_from(["waveform", "log_mel", "denoiser"]))
    model, inputs = valid_inputs(served, kind, draw(st.integers(1, 3)) if kind != "waveform" else draw(st.integers(1, 40)))
    request = Request(model, served.versions[model] if draw(st.booleans()) else None, inputs, notes=[kind])
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
                st.sampled_from([*served.versions, "Birdcall", "birdcall ", "🐦"]) | TEXT.filter(lambda s: "/" not in s and s.strip("."))
            )
        else:
            version = served.versions["birdcall"]
            request.version = draw(st.sampled_from([*served.versions.values(), "0", "-1", f"{version}\u0000", "🐦", "1" * 200]))
    return request


# The HTTP form: JSON, or the binary tensor data extension.

STATUSES = {200, 400, 404, 408, 413, 415, 422, 503, 504}
HEADER = "inference-header-content-length"
# Header values as bytes: latin-1 text the server decodes ("²" is a digit to str.isdigit, not to int).
HOSTILE_LENGTHS = [b"0", b"-5", b"abc", b"", b" 12", b"\xb2", b"\xd9\xa3", b"9" * 40, b"1e3", b"0x10"]


def path_of(request: Request) -> str:
    version = f"/versions/{quote(request.version, safe='')}" if request.version is not None else ""
    return f"/v2/models/{quote(request.model, safe='')}{version}/infer"


def http_form(request: Request) -> tuple[bytes, bytes, dict[str, bytes]]:
    """(JSON header, binary data, headers) of a request as a client following the protocol sends it."""
    body: dict[str, Any] = {"inputs": [item.json() for item in request.inputs]}
    for key in ("outputs", "parameters", "id"):
        if getattr(request, key) is not None:
            body[key] = getattr(request, key)
    head = json.dumps(body).encode()
    blobs = b"".join(item.raw for item in request.inputs if item.raw is not None)
    if not blobs:
        return head, blobs, {"content-type": b"application/json"}
    return head, blobs, {"content-type": b"application/octet-stream", HEADER: str(len(head)).encode()}


@st.composite
def http_requests(draw: st.DrawFn, served: Served = FAKE) -> tuple[Request, bytes, dict[str, bytes]]:
    """(the request, its body, its headers): binary inputs after the JSON header, with a length header that may lie."""
    request = draw(requests(served))
    head, blobs, headers = http_form(request)
    headers.pop(HEADER, None)
    length = str(len(head)).encode()
    if blobs or draw(st.sampled_from(range(10))) == 0:  # integers() would favour 0
        choice = draw(st.sampled_from(["right", "right", "off", "hostile", "none"]))
        request.notes.append(f"length:{choice}")
        if choice == "right":
            headers[HEADER] = length
        elif choice == "off":
            headers[HEADER] = str(max(0, len(head) + draw(st.integers(-40, 40)))).encode()
        elif choice == "hostile":
            headers[HEADER] = draw(st.sampled_from(HOSTILE_LENGTHS))
    if draw(st.sampled_from(range(10))) == 0:
        headers["x-request-timeout"] = draw(st.sampled_from([b"0", b"-1", b"nan", b"inf", b"1e-300", b"\xb2", b"30"]))
        request.notes.append("timeout")
    return request, head + blobs, headers


def violations(request: Request) -> list[str]:
    """What makes a request invalid by the document's InferenceRequest schema (those that are easy to tell)."""
    found = []
    if request.id is not None and not isinstance(request.id, str):
        found.append("id")
    if request.parameters is not None and not (
        isinstance(request.parameters, dict) and isinstance(request.parameters.get("binary_data_output", False), bool)
    ):
        found.append("parameters")
    outputs = request.outputs
    if outputs is not None and not (
        isinstance(outputs, list) and all(isinstance(o, dict) and isinstance(o.get("name"), str) for o in outputs)
    ):
        found.append("outputs")
    for item in request.inputs:
        spec = item.json()
        shape = spec.get("shape")
        if spec.get("datatype") not in DATATYPES or not isinstance(spec.get("name"), str):
            found.append("input datatype or name")
        if not (isinstance(shape, list) and all(isinstance(d, int) and not isinstance(d, bool) and d >= 0 for d in shape)):
            found.append("input shape")
    names = [item.name for item in request.inputs]
    if not names or len(names) != len({repr(n) for n in names}):
        found.append("inputs")
    return found


def check_http_answer(response: httpx.Response, request: Request) -> None:
    """A documented status; errors in the KServe shape; a 200 whose outputs can be read back; what
    breaks the schema never answered 200."""
    where = f"{request.notes} -> {response.status_code} {response.text[:300]!r}"
    assert response.status_code in STATUSES, where
    if response.status_code == 200:
        assert not violations(request), f"accepted a request with invalid {violations(request)}: {where}"
    if response.status_code != 200:
        body = response.json()
        assert isinstance(body.get("error"), str) and isinstance(body.get("type"), str), where
        return
    header_length = response.headers.get(HEADER)
    head = response.content[: int(header_length)] if header_length else response.content
    answer = json.loads(head)
    assert answer["model_name"] == request.model and answer["outputs"], where
    sizes = sum(out.get("parameters", {}).get("binary_data_size", 0) for out in answer["outputs"])
    assert len(response.content) == len(head) + sizes, where


# The gRPC form: a ModelInferRequest.

CLIENT_CODES = {
    grpc.StatusCode.OK,
    grpc.StatusCode.INVALID_ARGUMENT,
    grpc.StatusCode.NOT_FOUND,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
    grpc.StatusCode.UNAUTHENTICATED,
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
}
CONTENTS_FIELDS = [
    "bool_contents",
    "int_contents",
    "int64_contents",
    "uint_contents",
    "uint64_contents",
    "fp32_contents",
    "fp64_contents",
    "bytes_contents",
]
# The field tritonclient fills for each datatype (FP16 has none: raw contents only).
FIELD_OF = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
InferRequest = message("ModelInferRequest")
NON_FINITE = [math.nan, math.inf, -math.inf]


def _text(value: Any) -> str:
    """A protobuf string field holds text only: anything else goes as its JSON-ish text."""
    return value if isinstance(value, str) else str(value)


def _shape(shape: Any) -> list[int]:
    if not isinstance(shape, list):
        return []
    return [d for d in shape if isinstance(d, int) and not isinstance(d, bool) and INT64_MIN <= d <= INT64_MAX]


def raw_contents(item: Input) -> bytes:
    """An input's values as raw contents: its raw bytes, or its data in its datatype where numpy can."""
    if item.raw is not None:
        return item.raw
    try:
        return np.asarray(item.data, dtype=DTYPES.get(_text(item.datatype), np.float32)).tobytes()
    except (TypeError, ValueError, OverflowError):
        return b""


def _fill(contents: Any, field_name: str, data: Any) -> None:
    """Put values in a typed contents field, each value the field cannot hold dropped."""
    values = data if isinstance(data, list) else [data]
    target = getattr(contents, field_name)
    for value in values:
        with contextlib.suppress(TypeError, ValueError):  # out of the field's range, or not its type
            target.append(_text(value).encode() if field_name == "bytes_contents" else value)


def _parameters(target: Any, values: Any) -> None:
    """JSON parameters into an InferParameter map, as far as its kinds (bool, int64, string) go."""
    if not isinstance(values, dict):
        return
    for key, value in values.items():
        parameter = target[_text(key)]
        if isinstance(value, bool):
            parameter.bool_param = value
        elif isinstance(value, int) and INT64_MIN <= value <= INT64_MAX:
            parameter.int64_param = value
        else:
            parameter.string_param = _text(value)


def _values(item: Input) -> list[Any]:
    """An input's values as a list: its data, or its raw bytes read in its datatype (FP32 when it has none)."""
    if item.data is not None:
        return item.data if isinstance(item.data, list) else [item.data]
    raw, dtype = item.raw or b"", np.dtype(DTYPES.get(_text(item.datatype), np.float32))
    return np.frombuffer(raw[: len(raw) - len(raw) % dtype.itemsize], dtype).tolist()


def typed_field(datatype: str) -> str:
    """The typed contents field of a datatype, as tritonclient fills it (FP32's for those without one)."""
    return FIELD_OF.get(datatype, "fp32_contents")


def grpc_message(request: Request, form: str = "raw", field_of: Callable[[str], str] = typed_field) -> Message:
    """A request as a ModelInferRequest: values in raw_input_contents ("raw"), in the typed contents field
    `field_of(datatype)` names ("typed"), or both."""
    proto = InferRequest(model_name=request.model, model_version=request.version or "", id=_text(request.id or ""))
    _parameters(proto.parameters, request.parameters)
    for output in request.outputs if isinstance(request.outputs, list) else []:
        spec = proto.outputs.add(name=_text(output.get("name") if isinstance(output, dict) else output))
        _parameters(spec.parameters, output.get("parameters") if isinstance(output, dict) else None)
    for item in request.inputs:
        spec = proto.inputs.add(name=_text(item.name), datatype=_text(item.datatype), shape=_shape(item.shape))
        _parameters(spec.parameters, item.parameters)
        if form in ("typed", "both"):
            _fill(spec.contents, field_of(_text(item.datatype)), _values(item))
        if form in ("raw", "both"):
            proto.raw_input_contents.append(raw_contents(item))
    return proto


@st.composite
def grpc_requests(draw: st.DrawFn, served: Served = FAKE) -> tuple[Request, Message]:
    """(the request, its ModelInferRequest): raw contents or typed contents, each possibly wrong."""
    request = draw(requests(served))
    forms = ["raw", "raw", "typed", "typed", "wrong_field", "both", "raw_count", "raw_length", "non_finite_raw", "non_finite_typed"]
    form = draw(st.sampled_from(forms))
    request.notes.append(form)
    if form == "wrong_field":
        proto = grpc_message(request, "typed", lambda _: draw(st.sampled_from(CONTENTS_FIELDS)))
    else:
        proto = grpc_message(request, {"typed": "typed", "both": "both", "non_finite_typed": "typed"}.get(form, "raw"))
    raws = list(proto.raw_input_contents)
    if form == "raw_count":
        raws = raws[:-1] if raws and draw(st.booleans()) else [*raws, b"\0" * 4]
    elif form == "raw_length" and raws:
        i = draw(st.integers(0, len(raws) - 1))
        cut = draw(st.integers(-7, 7))
        raws[i] = raws[i][:cut] if cut < 0 else raws[i] + b"\x01" * cut
    elif form == "non_finite_raw" and raws:
        # One FP32 value made NaN or infinite in a request that may be valid otherwise (JSON cannot carry
        # them, and random bytes seldom are): the models must refuse it.
        i = draw(st.integers(0, len(raws) - 1))
        at = 4 * draw(st.integers(0, max(len(raws[i]) // 4 - 1, 0)))
        raws[i] = raws[i][:at] + struct.pack("<f", draw(st.sampled_from(NON_FINITE))) + raws[i][at + 4 :]
    elif form == "non_finite_typed":
        filled = [spec.contents.fp32_contents for spec in proto.inputs if spec.contents.fp32_contents]
        if filled:
            values = filled[draw(st.integers(0, len(filled) - 1))]
            values[draw(st.integers(0, len(values) - 1))] = draw(st.sampled_from(NON_FINITE))
    del proto.raw_input_contents[:]
    proto.raw_input_contents.extend(raws)
    return request, proto


# What the models read (service/models): birdcall exactly one of waveform and log_mel, the denoiser x_t
# and t, each a number (BOOL and BYTES refused) and finite; and the outputs each one can give.
MODEL_INPUTS = {"birdcall": [{"waveform"}, {"log_mel"}], "frames-denoiser": [{"x_t", "t"}]}
MODEL_OUTPUTS = {kind.name: set(kind.outputs) for kind in MODELS}
ERROR_CODES = CLIENT_CODES - {grpc.StatusCode.OK}


def _tensor_violations(spec: Any, raw: bytes | None) -> list[str]:
    """What makes one input of a ModelInferRequest unreadable, or refused by any model: `raw` its raw
    contents (None when the request has none)."""
    shape = list(spec.shape)
    if spec.datatype not in DATATYPES:
        return ["datatype"]
    if spec.datatype in ("BOOL", "BYTES"):
        return ["a datatype no model reads"]
    if any(d < 0 for d in shape) or len(shape) > MAX_DIMENSIONS:
        return ["shape"]
    dtype = np.dtype(DTYPES[spec.datatype])
    if raw is not None:
        if spec.HasField("contents"):
            return ["typed contents beside raw contents"]
        if len(raw) % dtype.itemsize:
            return ["raw contents not a whole number of values"]
        values = np.frombuffer(raw, dtype)
    elif spec.datatype not in FIELD_OF:
        return ["no typed contents field for its datatype"]
    else:
        values = np.asarray(list(getattr(spec.contents, FIELD_OF[spec.datatype])), dtype=np.float64)
    if values.size != math.prod(shape):
        return ["values do not fill the shape"]
    with np.errstate(over="ignore", invalid="ignore"):  # the models read float32: FP64's 1e300 is infinite to them
        if not np.isfinite(values.astype(np.float32)).all():
            return ["NaN or infinite values"]
    return []


def grpc_violations(proto: Any, served: Served = FAKE) -> list[str]:
    """What no server may accept in a ModelInferRequest as sent. Of violations(), what survives the
    conversion to protobuf (ids and parameters become text, which nothing checks; dims that are no
    integers are dropped, negative ones kept; names become text, so unknown or repeated ones stay);
    and what the gRPC form adds (raw contents of the wrong count or length, typed contents that do not
    fill the shape) or the models refuse (values not finite, inputs and outputs they do not have)."""
    if proto.model_name not in served.versions:
        return ["model"]
    found = []
    if proto.model_version and proto.model_version != served.versions[proto.model_name]:
        found.append("version")
    names = [spec.name for spec in proto.inputs]
    if len(names) != len(set(names)):
        found.append("an input given twice")
    elif set(names) not in MODEL_INPUTS[proto.model_name]:
        found.append(f"inputs {sorted(names)}")
    if any(output.name not in MODEL_OUTPUTS[proto.model_name] for output in proto.outputs):
        found.append("outputs")
    raws = list(proto.raw_input_contents)
    if raws and len(raws) != len(proto.inputs):
        return [*found, "raw_input_contents count"]
    for i, spec in enumerate(proto.inputs):
        found += [f"input {spec.name!r}: {what}" for what in _tensor_violations(spec, raws[i] if raws else None)]
    return found


def check_grpc_answer(answer: Any, proto: Any, notes: Any, served: Served = FAKE) -> None:
    """ModelInfer's answer (a ModelInferResponse, or the grpc.RpcError it ended with): an error with a
    client-error code and a message; a response whose outputs can be read back; what breaks the
    request's rules (grpc_violations) never answered OK."""
    if isinstance(answer, grpc.RpcError):
        check_grpc_error(answer, notes)
        return
    where = f"{notes} -> OK {str(answer)[:300]!r}"
    assert not grpc_violations(proto, served), f"accepted a request with invalid {grpc_violations(proto, served)}: {where}"
    assert answer.model_name == proto.model_name and answer.model_version == served.versions[proto.model_name], where
    assert answer.id == proto.id, where
    names = [output.name for output in answer.outputs]
    assert len(names) == len(set(names)) and set(names) == ({o.name for o in proto.outputs} or MODEL_OUTPUTS[proto.model_name]), where
    assert len(answer.raw_output_contents) == len(answer.outputs), where
    for output, raw in zip(answer.outputs, answer.raw_output_contents, strict=True):
        shape = list(output.shape)
        assert output.datatype in DATATYPES and shape and all(d >= 0 for d in shape), f"output {output.name!r}: {where}"
        if output.datatype == "BYTES":  # length-prefixed items, one per element
            try:
                count = len(decode_bytes_tensor(output.name, raw))
            except InvalidParameter as exc:
                raise AssertionError(f"output {output.name!r}: {exc}: {where}") from None
            assert count == math.prod(shape), f"output {output.name!r}: {where}"
        else:
            assert len(raw) == math.prod(shape) * np.dtype(DTYPES[output.datatype]).itemsize, f"output {output.name!r}: {where}"


def check_grpc_error(error: Any, notes: Any) -> None:
    """An RPC's error (a grpc.RpcError): a client-error code, never UNKNOWN or INTERNAL, and a message."""
    where = f"{notes} -> {error.code()} {error.details()!r}"
    assert error.code() in ERROR_CODES and (error.details() or "").strip(), where


class Calls:
    """Each RPC of the service on a channel (grpc or grpc.aio), taking and giving messages; bytes go as they are."""

    def __init__(self, channel: grpc.Channel | grpc.aio.Channel, timeout: float):
        self.channel = channel
        self.timeout = timeout

    def __call__(self, rpc: str, request: Message | bytes) -> Any:
        if isinstance(request, bytes):
            serialize: Any = None  # bytes go as they are
        else:
            serialize = type(request).SerializeToString
        deserialize = message(methods()[rpc].output_type.name).FromString
        return self.channel.unary_unary(f"/{SERVICE}/{rpc}", request_serializer=serialize, response_deserializer=deserialize)(
            request, timeout=self.timeout
        )
