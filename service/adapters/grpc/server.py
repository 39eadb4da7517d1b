"""KServe v2 gRPC (`inference.GRPCInferenceService`) on its own port, thin over the data plane.

It runs on the API worker's event loop (started by a BentoML startup hook), so gRPC requests
join the same engine batches as REST and KServe HTTP requests. Errors map from the same typed
errors as HTTP: the status of each ServiceError picks the gRPC code; anything unexpected is
INTERNAL with a fixed message, logged with its traceback and counted.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np
from google.protobuf.message import DecodeError, Message

from service.adapters.grpc.messages import SERVICE, message, methods
from service.admission import hold_body, off_loop
from service.auth import check_bearer
from service.dataplane import DataPlane
from service.errors import BadRequest, InvalidParameter, PayloadTooLarge, ServiceError, as_service_error
from service.settings import ServiceSettings
from service.tensors import Tensor, datatype_of, raw_bytes, tensor_from_raw, tensor_from_values

log = logging.getLogger("chorus.grpc")
Response = TypeVar("Response", bound=Message)
ServerLiveResponse = message("ServerLiveResponse")
ServerReadyResponse = message("ServerReadyResponse")
ModelReadyResponse = message("ModelReadyResponse")
ServerMetadataResponse = message("ServerMetadataResponse")
ModelMetadataResponse = message("ModelMetadataResponse")
TensorMetadata = message("ModelMetadataResponse.TensorMetadata")
ModelInferResponse = message("ModelInferResponse")

_STATUS = {
    400: grpc.StatusCode.INVALID_ARGUMENT,
    401: grpc.StatusCode.UNAUTHENTICATED,
    404: grpc.StatusCode.NOT_FOUND,
    413: grpc.StatusCode.RESOURCE_EXHAUSTED,
    415: grpc.StatusCode.INVALID_ARGUMENT,
    422: grpc.StatusCode.INVALID_ARGUMENT,
    503: grpc.StatusCode.UNAVAILABLE,
    504: grpc.StatusCode.DEADLINE_EXCEEDED,
}
# InferTensorContents field holding each datatype when raw contents are not used (FP16 has none).
_CONTENTS_FIELD = {
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


def grpc_status(error: ServiceError) -> grpc.StatusCode:
    return _STATUS.get(error.status, grpc.StatusCode.INTERNAL)


TYPED_VALUE_BYTES = 48
"""Memory one typed-contents value takes while it is decoded, at most: a Python object (a float is
24 bytes; small ints are shared), its list slot and its numpy copies. A message's typed values are
held at this size (hold_body), not at their 1-5 bytes on the wire: 32 MiB of small UINT8 values
decoded to ~570 MB when only the message's size was counted."""


def typed_values(request: Any) -> int:
    """How many typed-contents values the request's inputs carry (repeated fields know their length)."""
    count = 0
    for spec in request.inputs:
        field = _CONTENTS_FIELD.get(spec.datatype)
        if field is not None and spec.HasField("contents"):
            count += len(getattr(spec.contents, field))
    return count


def hold_typed_values(request: Any, max_bytes: int) -> None:
    """Count what decoding the request's typed contents will hold: 413 past max_bytes (the request
    body limit) however much room there is, 503 past the room left (hold_body)."""
    decoded = typed_values(request) * TYPED_VALUE_BYTES
    if decoded > max_bytes:
        raise PayloadTooLarge(
            f"typed contents of {decoded // TYPED_VALUE_BYTES} values take ~{decoded} bytes to decode, past the limit of"
            f" {max_bytes}; send at most {max_bytes // TYPED_VALUE_BYTES} values this way, or the data as raw_input_contents",
            max_bytes=max_bytes,
        )
    hold_body(decoded)


def _contents_values(name: str, datatype: str, contents: Any) -> list[Any]:
    field = _CONTENTS_FIELD.get(datatype)
    if field is None:
        raise InvalidParameter(f"input {name!r}: datatype {datatype!r} needs raw_input_contents or is unknown")
    return list(getattr(contents, field))


def input_tensors(request: Any) -> dict[str, Tensor]:
    """A ModelInferRequest's inputs, from raw_input_contents or typed contents."""
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidParameter(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    tensors: dict[str, Tensor] = {}
    for i, spec in enumerate(request.inputs):
        if spec.name in tensors:
            raise InvalidParameter(f"input {spec.name!r} is given twice; send each input once")
        if raw and spec.HasField("contents"):
            raise InvalidParameter(f"input {spec.name!r} has typed contents beside raw_input_contents; send its data one way")
        shape = list(spec.shape)
        if raw:
            tensors[spec.name] = tensor_from_raw(spec.name, spec.datatype, shape, raw[i])
        else:
            values = _contents_values(spec.name, spec.datatype, spec.contents)
            tensors[spec.name] = tensor_from_values(spec.name, spec.datatype, shape, values)
    return tensors


class Malformed:
    """What the deserializer hands on for bytes that are no message of the RPC's request type: grpc
    itself would answer UNKNOWN with the parser's exception text; the RPC answers INVALID_ARGUMENT."""

    def __init__(self, type_name: str):
        self.type_name = type_name


def _parser(message_type: type[Message]) -> Callable[[bytes], Message | Malformed]:
    def parse(data: bytes) -> Message | Malformed:
        try:
            return message_type.FromString(data)
        except DecodeError:
            return Malformed(message_type.DESCRIPTOR.full_name)

    return parse


def _mapped_errors(
    method: Callable[[InferenceServicer, Any, grpc.aio.ServicerContext], Awaitable[Response]],
) -> Callable[[InferenceServicer, Any, grpc.aio.ServicerContext], Awaitable[Response]]:
    """Every RPC answers a typed error with its status and message; an unexpected one with INTERNAL."""

    @functools.wraps(method)
    async def wrapped(self: InferenceServicer, request: Any, context: grpc.aio.ServicerContext) -> Response:
        try:
            if isinstance(request, Malformed):
                raise BadRequest(f"the request is not a valid {request.type_name} message")
            return await method(self, request, context)
        except Exception as exc:
            error = as_service_error(exc, log, f"gRPC {method.__name__}")
        self.plane.metrics.record_error("grpc", error.kind, error.status)
        return await context.abort(grpc_status(error), error.message)  # abort raises: the RPC ends here

    return wrapped


class InferenceServicer:
    """One method per RPC of `inference.GRPCInferenceService`; requests are messages of kserve_v2.proto."""

    def __init__(self, plane: DataPlane):
        self.plane = plane

    def handler(self) -> grpc.GenericRpcHandler:
        """This servicer's RPCs, with the proto's request types, for a grpc server."""
        handlers = {
            name: grpc.unary_unary_rpc_method_handler(
                getattr(self, name),
                request_deserializer=_parser(message(method.input_type.name)),
                response_serializer=lambda response: response.SerializeToString(),
            )
            for name, method in methods().items()
        }
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        metadata = dict(context.invocation_metadata() or ())
        credentials = metadata.get("authorization")
        token = self.plane.settings.api_token
        check_bearer(credentials if isinstance(credentials, str) else None, token, "metadata 'authorization: Bearer <token>'")

    @_mapped_errors
    async def ServerLive(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        return ServerLiveResponse(live=True)

    @_mapped_errors
    async def ServerReady(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        return ServerReadyResponse(ready=await self.plane.ready())

    @_mapped_errors
    async def ModelReady(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        return ModelReadyResponse(ready=await self.plane.model_ready(request.name, request.version or None))

    @_mapped_errors
    async def ServerMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        return ServerMetadataResponse(**self.plane.server_metadata())

    @_mapped_errors
    async def ModelMetadata(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        meta = await self.plane.model_metadata(request.name, request.version or None)

        def tensors(items: list[dict[str, Any]]) -> list[Message]:
            return [TensorMetadata(**t) for t in items]

        return ModelMetadataResponse(
            name=meta["name"],
            versions=meta["versions"],
            platform=meta["platform"],
            inputs=tensors(meta["inputs"]),
            outputs=tensors(meta["outputs"]),
        )

    @_mapped_errors
    async def ModelInfer(self, request: Any, context: grpc.aio.ServicerContext) -> Message:
        self._authorize(context)
        self.plane.check_name(request.model_name)
        async with self.plane.admitted(self.plane.deadline(context.time_remaining())):
            hold_body(request.ByteSize())  # gRPC has the whole message already: refusing it frees it sooner
            hold_typed_values(request, self.plane.settings.max_upload_bytes)
            # Off the event loop: decoding up to the upload limit of values takes seconds (BYTES items one by one).
            tensors = await off_loop(input_tensors, request)
            result = await self.plane.infer(
                request.model_name, tensors, version=request.model_version or None, outputs=[o.name for o in request.outputs]
            )
        response = ModelInferResponse(model_name=result.model_name, model_version=result.model_version, id=request.id)
        for name, array in result.outputs.items():
            response.outputs.add(name=name, datatype=datatype_of(np.asarray(array)), shape=list(array.shape))
            response.raw_output_contents.append(raw_bytes(array))
        return response


EXTRA_RPCS = 32
"""RPCs gRPC takes at once beyond max_in_flight: metadata, health and readiness calls, and inference
calls for the data plane to refuse with its own UNAVAILABLE rather than gRPC's RESOURCE_EXHAUSTED.
The bound counts calls whose message is still arriving, which admission cannot see: without it one
connection held 20 unfinished 30 MiB messages (600 MiB) for as long as it stayed open."""
CONNECTION_AGE_SECONDS = 60
"""After this a connection is asked to go (GOAWAY: clients reconnect by themselves), and it is cut
once its calls have had the longest deadline and a body read timeout more: a call whose message
never comes holds its place ~2.5 minutes at the defaults, not for as long as its connection stays
open (an HTTP body that stops coming is cut after the read timeout)."""
STREAMS_PER_CONNECTION = 64
"""Most calls one connection may have open at once (HTTP/2 SETTINGS_MAX_CONCURRENT_STREAMS; a client
queues the rest), and at most half the places of maximum_concurrent_rpcs: one connection alone
cannot take them all."""


def server_options(settings: ServiceSettings) -> list[tuple[str, int]]:
    grace = settings.default_deadline_seconds + settings.read_timeout_seconds
    return [
        ("grpc.max_receive_message_length", settings.max_upload_bytes),
        ("grpc.max_connection_age_ms", CONNECTION_AGE_SECONDS * 1000),
        ("grpc.max_connection_age_grace_ms", int(grace * 1000)),
        ("grpc.max_concurrent_streams", max(1, min(STREAMS_PER_CONNECTION, (settings.max_in_flight + EXTRA_RPCS) // 2))),
    ]


async def start_grpc_server(plane: DataPlane, host: str, port: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=server_options(plane.settings), maximum_concurrent_rpcs=plane.settings.max_in_flight + EXTRA_RPCS)
    server.add_generic_rpc_handlers((InferenceServicer(plane).handler(),))
    server.add_insecure_port(f"{host}:{port}")
    await server.start()
    log.info("KServe v2 gRPC listening on %s:%d", host, port)
    return server
