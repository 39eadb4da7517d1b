"""KServe v2 (Open Inference Protocol) over HTTP under /v2, thin over the data plane.

Every served model is listed under its KServe name (service/models). The binary tensor data
extension works both ways (tritonclient.http uses it by default). Health and metadata routes are
open; inference needs the API token when one is set.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.adapters.http import authorize, deadline_seconds, kserve_errors, plane_of, read_body, readiness_body
from service.adapters.kserve_codec import HEADER_LENGTH, build_response, header_split, json_too_large, parse_request, requested_outputs
from service.admission import off_loop
from service.errors import PayloadTooLarge

KSERVE_BODY = "a KServe v2 inference request: a JSON object with 'inputs', optionally followed by binary tensor data"


async def server_metadata(request: Request) -> Response:
    return JSONResponse(plane_of(request).server_metadata())


async def server_live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def server_ready(request: Request) -> Response:
    state = await plane_of(request).readiness()
    return JSONResponse(readiness_body(state), status_code=200 if state.ready else 503)


@kserve_errors
async def model_metadata(request: Request) -> Response:
    name, version = request.path_params["name"], request.path_params.get("version")
    return JSONResponse(await plane_of(request).model_metadata(name, version))


@kserve_errors
async def model_ready(request: Request) -> Response:
    name, version = request.path_params["name"], request.path_params.get("version")
    ready = await plane_of(request).model_ready(name, version)
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


@kserve_errors
async def infer(request: Request) -> Response:
    plane = plane_of(request)
    authorize(request)
    name, version = request.path_params["name"], request.path_params.get("version")
    plane.check_name(name)
    settings, split = plane.settings, header_split(request.headers.get(HEADER_LENGTH))
    # All-JSON bodies stop at the JSON limit while they stream in; with binary data, at the upload limit.
    limit = settings.max_kserve_json_bytes if split is None else settings.max_upload_bytes
    async with plane.admitted(deadline_seconds(request)):  # before the body: overload costs no upload
        try:
            body = await read_body(request, limit, "kserve_infer", KSERVE_BODY)
        except PayloadTooLarge:
            if split is not None:
                raise
            raise json_too_large(limit) from None  # saying how to send more
        # Off the event loop: parsing JSON or BYTES items up to the limits takes seconds.
        kserve_request, tensors = await off_loop(parse_request, body, split, settings.max_kserve_json_bytes)
        result = await plane.infer(name, tensors, version=version, outputs=requested_outputs(kserve_request))
    content, headers = build_response(kserve_request, result.model_name, result.model_version, result.outputs)
    return Response(content, headers=headers)


ROUTES = [
    Route("/v2", server_metadata, methods=["GET"]),
    Route("/v2/health/live", server_live, methods=["GET"]),
    Route("/v2/health/ready", server_ready, methods=["GET"]),
    Route("/v2/models/{name}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}", model_metadata, methods=["GET"]),
    Route("/v2/models/{name}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/versions/{version}/ready", model_ready, methods=["GET"]),
    Route("/v2/models/{name}/infer", infer, methods=["POST"]),
    Route("/v2/models/{name}/versions/{version}/infer", infer, methods=["POST"]),
]
