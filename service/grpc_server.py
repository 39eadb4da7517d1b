"""KServe v2 gRPC (`inference.GRPCInferenceService`) on its own port, thin over the same cores as HTTP.

It runs on the API worker's event loop (started by a BentoML startup hook), so gRPC requests
join the same engine batches as REST and KServe HTTP requests.
"""

from __future__ import annotations

import hmac
import logging
from typing import TYPE_CHECKING

import grpc
import numpy as np

from service import kserve
from service.errors import InvalidParameter, ServiceError, Unauthorized
from service.kserve_codec import DTYPES, Tensor, datatype_of, raw_bytes, tensor_from_raw
from service.kserve_v2_pb2 import (
    ModelInferRequest,
    ModelInferResponse,
    ModelMetadataResponse,
    ModelReadyResponse,
    ServerLiveResponse,
    ServerMetadataResponse,
    ServerReadyResponse,
)
from service.kserve_v2_pb2_grpc import GRPCInferenceServiceServicer, add_GRPCInferenceServiceServicer_to_server

if TYPE_CHECKING:
    from service.service import Chorus

log = logging.getLogger("chorus.grpc")

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
# InferTensorContents field holding each datatype when raw contents are not used.
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


def _input_tensors(request: ModelInferRequest) -> dict[str, Tensor]:
    tensors = {}
    raw = list(request.raw_input_contents)
    if raw and len(raw) != len(request.inputs):
        raise InvalidParameter(f"{len(raw)} raw_input_contents for {len(request.inputs)} inputs")
    for i, spec in enumerate(request.inputs):
        shape = list(spec.shape)
        if raw:
            tensors[spec.name] = tensor_from_raw(spec.name, spec.datatype, shape, raw[i])
            continue
        field = _CONTENTS_FIELD.get(spec.datatype)
        if field is None:
            raise InvalidParameter(f"input {spec.name!r}: datatype {spec.datatype!r} needs raw_input_contents or is unknown")
        values = getattr(spec.contents, field)
        dtype = object if spec.datatype == "BYTES" else DTYPES[spec.datatype]
        array = np.array(list(values), dtype=dtype)
        if array.size != int(np.prod(shape)):
            raise InvalidParameter(f"input {spec.name!r}: {array.size} values do not fill shape {shape}")
        tensors[spec.name] = Tensor(spec.name, spec.datatype, shape, array.reshape(shape))
    return tensors


class InferenceServicer(GRPCInferenceServiceServicer):
    def __init__(self, chorus: Chorus):
        self.chorus = chorus

    async def _fail(self, context: grpc.aio.ServicerContext, exc: ServiceError) -> None:
        self.chorus.metrics.record_error("grpc", exc.kind, exc.status)
        await context.abort(_STATUS.get(exc.status, grpc.StatusCode.INTERNAL), exc.message)

    def _authorize(self, context: grpc.aio.ServicerContext) -> None:
        token = self.chorus.settings.api_token
        if not token:
            return
        header = dict(context.invocation_metadata() or ()).get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not hmac.compare_digest(value.strip(), token):
            raise Unauthorized("missing or wrong API token; send metadata 'authorization: Bearer <token>'")

    async def ServerLive(self, request, context):
        return ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):
        return ServerReadyResponse(ready=await kserve.is_ready(self.chorus))

    async def ModelReady(self, request, context):
        try:
            kserve.check_model_name(request.name)
        except ServiceError as exc:
            await self._fail(context, exc)
        return ModelReadyResponse(ready=await kserve.is_ready(self.chorus))

    async def ServerMetadata(self, request, context):
        return ServerMetadataResponse(**kserve.SERVER)

    async def ModelMetadata(self, request, context):
        try:
            meta = await kserve.model_metadata_for(self.chorus, request.name)
        except ServiceError as exc:
            await self._fail(context, exc)
        tensors = lambda items: [ModelMetadataResponse.TensorMetadata(**t) for t in items]  # noqa: E731
        return ModelMetadataResponse(
            name=meta["name"], versions=meta["versions"], platform=meta["platform"],
            inputs=tensors(meta["inputs"]), outputs=tensors(meta["outputs"]),
        )

    async def ModelInfer(self, request: ModelInferRequest, context):
        try:
            self._authorize(context)
            tensors = _input_tensors(request)
            remaining = context.time_remaining()
            deadline = self.chorus.settings.default_deadline_seconds
            if remaining is not None:
                deadline = min(deadline, remaining)
            version, outputs = await kserve.run_inference(self.chorus, request.model_name, tensors, deadline)
            names = [o.name for o in request.outputs] or list(outputs)
            unknown = [n for n in names if n not in outputs]
            if unknown:
                raise InvalidParameter(f"unknown output(s) {unknown}; this model has {sorted(outputs)}")
        except ServiceError as exc:
            await self._fail(context, exc)
        response = ModelInferResponse(model_name=request.model_name, model_version=version, id=request.id)
        for name in names:
            array = outputs[name]
            response.outputs.add(name=name, datatype=datatype_of(array), shape=list(array.shape))
            response.raw_output_contents.append(raw_bytes(array))
        return response


async def start_grpc_server(chorus: Chorus, port: int) -> grpc.aio.Server:
    server = grpc.aio.server(options=[("grpc.max_receive_message_length", chorus.settings.max_upload_bytes)])
    add_GRPCInferenceServiceServicer_to_server(InferenceServicer(chorus), server)
    server.add_insecure_port(f"0.0.0.0:{port}")
    await server.start()
    log.info("KServe v2 gRPC listening on port %d", port)
    return server
