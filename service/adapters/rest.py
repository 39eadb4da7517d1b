"""REST adapter: /classify, /classify/batch, /generate and the web page, thin over the data plane."""

from __future__ import annotations

import base64
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from starlette.datastructures import FormData, UploadFile
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from service.adapters.http import (
    authorize,
    body_chunks,
    check_known,
    deadline_seconds,
    has_body,
    json_errors,
    media_type,
    once_each,
    parse_bool,
    parse_choice,
    parse_float,
    parse_int,
    parse_json,
    plane_of,
    read_body,
    read_form,
)
from service.adapters.openapi import openapi
from service.concurrency import gather_or_cancel
from service.errors import BadRequest, InvalidParameter, ServiceError, UnsupportedMedia
from service.models.tasks import AudioClassifier, ClassifyOptions, GenerateRequest
from service.settings import ServiceSettings

STATIC = Path(__file__).resolve().parent.parent / "static"
MAX_GENERATE_BODY_BYTES = 64 * 1024
"""A /generate body holds a few parameters: anything longer is refused (413) while it streams in."""
GENERATE_PARAMETERS = ("count", "steps", "seed", "format")
CLASSIFY_PARAMETERS = ("top_k", "timeline", "min_confidence", "embeddings", "spectrogram")


def _is_multipart(request: Request) -> bool:
    return media_type(request) == "multipart/form-data"


async def _upload_bytes(upload: Any, field: str) -> bytes:
    if not isinstance(upload, UploadFile):
        raise BadRequest(f"multipart requests need a file field {field!r} holding the recording")
    data = await upload.read()
    if not data:
        raise BadRequest(f"the file in field {field!r} ({upload.filename}) is empty")
    return data


def _parameters(request: Request, form: FormData | None = None) -> dict[str, Any]:
    """The query's parameters and a form's text fields, each name given once (a second value of a
    name, or a query value the form would override, would otherwise win or lose without a word)."""
    pairs: list[tuple[str, Any]] = list(request.query_params.multi_items())
    if form is not None:
        strays = sorted({name for name, value in form.multi_items() if not isinstance(value, str) and name != "audio"})
        if strays:
            raise BadRequest(f"file field(s) {strays} are not read; send each recording in a file field named 'audio'")
        pairs += [(name, value) for name, value in form.multi_items() if isinstance(value, str)]
    return once_each(pairs)


def _classify_options(model: AudioClassifier, params: Mapping[str, Any], route: str) -> ClassifyOptions:
    check_known(params, CLASSIFY_PARAMETERS, route)
    n_labels = len(model.labels)
    return ClassifyOptions(
        top_k=parse_int(params, "top_k", min(model.default_top_k, n_labels), 1, n_labels),
        timeline=parse_bool(params, "timeline", True),
        min_confidence=parse_float(params, "min_confidence", model.threshold, 0.0, 1.0),
        embeddings=parse_bool(params, "embeddings", False),
        spectrogram=parse_bool(params, "spectrogram", False),
    )


@json_errors
async def classify(request: Request) -> Response:
    plane = plane_of(request)
    authorize(request)
    limit = plane.settings.max_upload_bytes
    async with plane.admitted(deadline_seconds(request)):
        if _is_multipart(request):
            form = await read_form(request, limit, 1, "classify")
            params = _parameters(request, form)
            data = await _upload_bytes(form.get("audio"), "audio")
        else:
            params = _parameters(request)
            data = await read_body(request, limit, "classify")
        model = await plane.classifier()
        return JSONResponse(await model.classify(data, _classify_options(model, params, "/classify")))


@json_errors
async def classify_batch(request: Request) -> Response:
    plane = plane_of(request)
    authorize(request)
    if not _is_multipart(request):
        raise BadRequest("send the recordings as multipart/form-data, each in a file field named 'audio'")
    max_files = plane.settings.max_batch_files
    async with plane.admitted(deadline_seconds(request)):
        form = await read_form(request, plane.settings.max_upload_bytes, max_files, "classify_batch")
        params = _parameters(request, form)
        uploads = form.getlist("audio")
        if not uploads:
            raise BadRequest(f"no file fields named 'audio'; send 1-{max_files} recordings")
        files = [(getattr(u, "filename", None) or f"audio[{i}]", await _upload_bytes(u, "audio")) for i, u in enumerate(uploads)]
        model = await plane.classifier()
        options = _classify_options(model, params, "/classify/batch")

        async def one(name: str, data: bytes) -> dict[str, Any]:
            try:
                return {"file": name, **await model.classify(data, options)}
            except ServiceError as exc:
                exc.details["file"] = name
                exc.message = f"{name}: {exc.message}"
                raise

        return JSONResponse({"results": await gather_or_cancel(*(one(name, data) for name, data in files))})


async def _generate_params(request: Request) -> list[dict[str, Any]]:
    """The parameters' sources in order: the query, then a JSON object body when one is sent (it overrides)."""
    sources: list[dict[str, Any]] = [_parameters(request)]
    check_known(sources[0], GENERATE_PARAMETERS, "/generate")
    media = media_type(request)
    if media != "application/json" and has_body(request):
        # A form or text body would be ignored without a word, its parameters with it.
        sent = media or "a body without a type"
        raise UnsupportedMedia(f"send the parameters as a JSON object (Content-Type: application/json) or in the query, not as {sent!r}")
    raw = b"".join([chunk async for chunk in body_chunks(request, MAX_GENERATE_BODY_BYTES)]) if media == "application/json" else b""
    if raw.strip():  # many clients send 'Content-Type: application/json' with no body: no parameters
        body = parse_json(raw, "the body")
        if not isinstance(body, dict):
            raise BadRequest('the JSON body must be an object like {"count": 1, "steps": 50, "seed": 0}')
        check_known(body, GENERATE_PARAMETERS, "/generate")
        for name in ("count", "steps", "seed"):  # numbers come as text in a query only: JSON has numbers
            if isinstance(body.get(name), str):
                raise InvalidParameter(f"{name} must be an integer (a JSON number, not a string), got {body[name]!r}")
        sources.append(body)
    return sources


def _generate_request(params: Mapping[str, Any], s: ServiceSettings) -> tuple[GenerateRequest, str]:
    req = GenerateRequest(
        count=parse_int(params, "count", 1, 1, s.max_images),
        steps=parse_int(params, "steps", 50, s.min_steps, s.max_steps),
        seed=parse_int(params, "seed", 0, 0, 2**63 - 1),
    )
    fmt = parse_choice(params, "format", "png" if req.count == 1 else "json", ("png", "json"))
    if fmt == "png" and req.count != 1:
        raise InvalidParameter("format 'png' returns one image; use format 'json' for count > 1")
    return req, fmt


@json_errors
async def generate(request: Request) -> Response:
    plane = plane_of(request)
    authorize(request)
    deadline = deadline_seconds(request)
    async with plane.admitted(deadline):
        query, *body = await _generate_params(request)
        if body:  # the body overrides the query, whose values must still be valid on their own
            _generate_request(query, plane.settings)
        req, fmt = _generate_request({**query, **(body[0] if body else {})}, plane.settings)
        model = await plane.generator()
        images, timings = await model.generate(req, deadline)
    headers = {"X-Seed": str(req.seed), "X-Steps": str(req.steps), "X-Model-Version": model.info["version"]}
    if fmt == "png":
        return Response(encode_png(images[0]), media_type="image/png", headers=headers)
    return JSONResponse(
        {
            "model": model.info,
            "count": req.count,
            "steps": req.steps,
            "seed": req.seed,
            "images": [base64.b64encode(encode_png(img)).decode() for img in images],
            "timings_ms": timings,
        }
    )


def encode_png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


async def index(request: Request) -> Response:
    return FileResponse(STATIC / "index.html", media_type="text/html")


ROUTES = [
    Route("/classify", classify, methods=["POST"]),
    Route("/classify/batch", classify_batch, methods=["POST"]),
    Route("/generate", generate, methods=["POST"]),
    Route("/", index, methods=["GET"]),
    Route("/openapi.json", openapi, methods=["GET"]),
]
