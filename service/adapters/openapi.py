"""OpenAPI 3.1 description of chorus' HTTP routes (REST + KServe v2), served at /openapi.json.

The routes are a Starlette app mounted in the BentoML service, so BentoML's generated spec does not
list them; this one does, and a test fails when a route is missing from it. Limits come from the
settings and model names from the data plane, so the document states what this server accepts.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.dataplane import DataPlane

_ERROR = {
    "type": "object",
    "properties": {
        "error": {
            "type": "object",
            "properties": {"type": {"type": "string"}, "status": {"type": "integer"}, "message": {"type": "string"}},
            "required": ["type", "status", "message"],
        }
    },
}
_ERRORS = {
    code: {"description": text, "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}}
    for code, text in {
        "400": "empty or malformed body",
        "401": "missing or wrong API token (when CHORUS_API_TOKEN is set)",
        "413": "body or audio too long",
        "415": "unsupported or corrupt audio (lists accepted_formats)",
        "422": "invalid parameter",
        "503": "overloaded or still loading (Retry-After header)",
        "504": "past the request deadline (X-Request-Timeout header or server default)",
    }.items()
}
_CLASSIFY_PARAMS = [
    {"name": "top_k", "in": "query", "schema": {"type": "integer", "minimum": 1, "default": 3}},
    {"name": "timeline", "in": "query", "schema": {"type": "boolean", "default": True}},
    {"name": "min_confidence", "in": "query", "schema": {"type": "number", "minimum": 0, "maximum": 1, "default": 0}},
    {"name": "X-Request-Timeout", "in": "header", "schema": {"type": "number"}, "description": "seconds"},
]
_AUDIO_BODY = {
    "required": True,
    "content": {
        "multipart/form-data": {"schema": {"type": "object", "properties": {"audio": {"type": "string", "format": "binary"}}}},
        "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
    },
}
_KSERVE_JSON = {"content": {"application/json": {"schema": {"type": "object"}}}}


def _kserve(summary: str, method: str = "get") -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": ["KServe v2"], "responses": {"200": {"description": "OK", **_KSERVE_JSON}}}
    if method == "post":
        operation["requestBody"] = {"required": True, **_KSERVE_JSON}
    return {method: operation}


def _job(summary: str, method: str = "get") -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": ["analysis jobs"], "responses": {"200": {"description": "OK"}, **_ERRORS}}
    return {method: operation}


def build_spec(plane: DataPlane) -> dict[str, Any]:
    s = plane.settings
    models = ", ".join(plane.model_names)
    return {
        "openapi": "3.1.0",
        "info": {"title": "chorus", "version": "0.1.0", "description": "Bird-call classification and piano-frame generation."},
        "paths": {
            "/classify": {
                "post": {
                    "summary": "Classify every 5 s window of a recording (WAV, FLAC, OGG/Vorbis, Opus, MP3; any rate and channels)",
                    "tags": ["REST"],
                    "parameters": _CLASSIFY_PARAMS,
                    "requestBody": _AUDIO_BODY,
                    "responses": {"200": {"description": "ranking, window timeline, audio facts, model, timings"}, **_ERRORS},
                }
            },
            "/classify/batch": {
                "post": {
                    "summary": "Classify several recordings (multipart, repeated field 'audio')",
                    "tags": ["REST"],
                    "parameters": _CLASSIFY_PARAMS,
                    "requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object"}}}},
                    "responses": {"200": {"description": "{'results': [...]}, one per file"}, **_ERRORS},
                }
            },
            "/generate": {
                "post": {
                    "summary": "Generate piano frames (DDIM); same seed and settings give the same image",
                    "tags": ["REST"],
                    "requestBody": {
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "properties": {
                                        "count": {"type": "integer", "minimum": 1, "maximum": s.max_images, "default": 1},
                                        "steps": {"type": "integer", "minimum": s.min_steps, "maximum": s.max_steps, "default": 50},
                                        "seed": {"type": "integer", "minimum": 0, "default": 0},
                                        "format": {"enum": ["png", "json"]},
                                    },
                                }
                            }
                        }
                    },
                    "responses": {
                        "200": {
                            "description": "image/png (count 1) or JSON with base64 PNGs",
                            "content": {"image/png": {}, "application/json": {}},
                        },
                        **_ERRORS,
                    },
                }
            },
            "/": {"get": {"summary": "The web page", "tags": ["page"], "responses": {"200": {"description": "HTML"}}}},
            "/openapi.json": {"get": {"summary": "This document", "tags": ["meta"], "responses": {"200": {"description": "OpenAPI"}}}},
            "/v2": _kserve("Server metadata"),
            "/v2/health/live": _kserve("Server liveness"),
            "/v2/health/ready": _kserve("Server readiness (503 until models are warmed up)"),
            "/v2/models/{name}": _kserve(f"Model metadata: {models}"),
            "/v2/models/{name}/versions/{version}": _kserve("Model metadata of a version"),
            "/v2/models/{name}/ready": _kserve("Model readiness"),
            "/v2/models/{name}/versions/{version}/ready": _kserve("Model readiness of a version"),
            "/v2/models/{name}/infer": _kserve("Inference (JSON tensors or the binary tensor data extension)", "post"),
            "/v2/models/{name}/versions/{version}/infer": _kserve("Inference on a version", "post"),
            "/jobs": _job("List analysis jobs with their state and progress"),
            "/jobs/uploads": _job(
                "Upload a recording for an analysis job: the raw file as the body, ?name=<file name>; "
                f"at most {s.max_job_upload_bytes} bytes, refused while it streams",
                "post",
            ),
            "/jobs/{job_id}": _job("A job's state, progress (audio seconds done of total) and tables"),
            "/jobs/{job_id}/cancel": _job("Cancel a job: its work stops and the engine is freed", "post"),
            "/jobs/{job_id}/outputs/{name}": _job("Download one of a job's tables (Raven, Audacity, CSV, NDJSON, Parquet, errors)"),
        },
        "components": {"schemas": {"Error": _ERROR}},
    }


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(build_spec(request.app.state.plane))
