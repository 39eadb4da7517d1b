"""OpenAPI 3.1 description of chorus' HTTP routes (REST + KServe v2), served at /openapi.json.

The routes are a Starlette app mounted in the BentoML service, so BentoML's generated spec does not
list them; this one does, and a test fails when a route is missing from it. Limits come from the
settings and model names from the data plane, so the document states what this server accepts.

The document is precise enough to fuzz with (tests/api/test_fuzz_schema.py runs schemathesis over
it): every request a schema describes as invalid is refused with a 4xx, and every status, content
type and body a route answers is listed here. Two error shapes exist: the REST one
({"error": {"type", "status", "message", ...}}) and the Open Inference Protocol's under /v2
({"error": "message", "type": ...}, as tritonclient reads it).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from service.adapters.jobs import MAX_LIST_LIMIT
from service.dataplane import DataPlane
from service.tensors import DATATYPES

_REF = "#/components/schemas/"
_JSON = "application/json"


def _ref(name: str) -> dict[str, str]:
    return {"$ref": _REF + name}


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"content": {_JSON: {"schema": schema}}}


_STRING = {"type": "string"}
_NUMBER = {"type": "number"}
_INTEGER = {"type": "integer"}
_TEXT_NOT_FOUND = {"text/plain": {"schema": _STRING}}
"""The HTTP framework's own 404 for a path no route matches (a model name holding '/', say)."""

_SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "description": "REST error: the message says what is wrong and what is accepted; more fields may follow",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["type", "status", "message"],
                "properties": {"type": _STRING, "status": {"type": "integer", "minimum": 400, "maximum": 599}, "message": _STRING},
            }
        },
    },
    "KServeError": {
        "type": "object",
        "description": "Open Inference Protocol error: 'error' is the message",
        "required": ["error"],
        "properties": {"error": _STRING, "type": _STRING},
    },
    "Detection": {
        "type": "object",
        "required": ["label", "score"],
        "properties": {"label": _STRING, "score": {"type": "number", "minimum": 0, "maximum": 1}},
    },
    "SpeciesSummary": {
        "type": "object",
        "required": ["label", "windows", "max_score", "mean_score", "first_seconds", "last_seconds"],
        "properties": {
            "label": _STRING,
            "windows": {"type": "integer", "minimum": 1, "description": "windows the species was detected in"},
            "max_score": {"type": "number", "minimum": 0, "maximum": 1},
            "mean_score": {"type": "number", "minimum": 0, "maximum": 1, "description": "over the windows it was detected in"},
            "first_seconds": _NUMBER,
            "last_seconds": _NUMBER,
        },
    },
    "Classification": {
        "type": "object",
        "required": ["model", "audio", "threshold", "summary", "timings_ms"],
        "properties": {
            "model": _ref("ModelInfo"),
            "audio": {
                "type": "object",
                "required": ["duration_seconds", "sample_rate", "channels", "format", "windows"],
                "properties": {
                    "duration_seconds": {"type": "number", "minimum": 0},
                    "sample_rate": {"type": "integer", "minimum": 1},
                    "channels": {"type": "integer", "minimum": 1},
                    "format": _STRING,
                    "windows": {"type": "integer", "minimum": 1},
                },
            },
            "threshold": {"type": "number", "minimum": 0, "maximum": 1, "description": "the min_confidence used"},
            "warnings": {
                "type": "array",
                "items": _STRING,
                "description": "present when the result is less than it seems: a recording below 16 kHz holds nothing in the"
                " model's top bands, where no species can then be found",
            },
            "summary": {
                "type": "array",
                "items": _ref("SpeciesSummary"),
                "description": "every species detected in any window, the highest score first (empty: no bird)",
            },
            "windows": {
                "type": "array",
                "description": "present unless timeline=false",
                "items": {
                    "type": "object",
                    "required": ["start", "end", "detections"],
                    "properties": {
                        "start": _NUMBER,
                        "end": _NUMBER,
                        "detections": {"type": "array", "items": _ref("Detection"), "description": "possibly none; at most top_k"},
                    },
                },
            },
            "embeddings": {"type": "array", "items": {"type": "array", "items": _NUMBER}, "description": "with embeddings=true"},
            "spectrogram": {
                "type": "object",
                "description": "with spectrogram=true: the log-mel grid the model heard, as a PNG",
                "required": ["png_base64", "seconds_per_column"],
                "properties": {
                    "png_base64": _STRING,
                    "seconds_per_column": _NUMBER,
                    "f_min": _NUMBER,
                    "f_max": _NUMBER,
                    "frequency_scale": _STRING,
                },
            },
            "timings_ms": {"type": "object", "additionalProperties": _NUMBER},
        },
    },
    "ModelInfo": {
        "type": "object",
        "required": ["name", "version"],
        "properties": {"name": _STRING, "version": _STRING, "variant": _STRING, "provider": _STRING},
    },
    "Images": {
        "type": "object",
        "required": ["model", "count", "steps", "seed", "images", "timings_ms"],
        "properties": {
            "model": _ref("ModelInfo"),
            "count": _INTEGER,
            "steps": _INTEGER,
            "seed": _INTEGER,
            "images": {"type": "array", "items": {"type": "string", "contentEncoding": "base64", "contentMediaType": "image/png"}},
            "timings_ms": {"type": "object", "additionalProperties": _NUMBER},
        },
    },
    "TensorMetadata": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "properties": {"name": _STRING, "datatype": _STRING, "shape": {"type": "array", "items": _INTEGER}},
    },
    "ModelMetadata": {
        "type": "object",
        "required": ["name", "versions", "platform", "inputs", "outputs"],
        "properties": {
            "name": _STRING,
            "versions": {"type": "array", "items": _STRING},
            "platform": _STRING,
            "inputs": {"type": "array", "items": _ref("TensorMetadata")},
            "outputs": {"type": "array", "items": _ref("TensorMetadata")},
            "parameters": {"type": "object"},
        },
    },
    "InferenceRequest": {
        "type": "object",
        "description": "Open Inference Protocol request. Each input carries its values in 'data' (row-major, "
        "flat or nested) or, with the binary tensor data extension, parameters.binary_data_size bytes after the "
        "JSON header (see the Inference-Header-Content-Length header).",
        "required": ["inputs"],
        "properties": {
            "id": _STRING,
            "parameters": {"type": "object", "properties": {"binary_data_output": {"type": "boolean"}}},
            "inputs": {"type": "array", "minItems": 1, "items": _ref("InferenceInput")},
            "outputs": {"type": "array", "items": _ref("RequestedOutput")},
        },
    },
    "InferenceInput": {
        "type": "object",
        "required": ["name", "datatype", "shape"],
        "anyOf": [
            {"required": ["data"]},
            {"required": ["parameters"], "properties": {"parameters": {"required": ["binary_data_size"]}}},
        ],
        "properties": {
            "name": _STRING,
            "datatype": {"enum": list(DATATYPES)},
            "shape": {"type": "array", "items": {"type": "integer", "minimum": 0}},
            "parameters": {"type": "object", "properties": {"binary_data_size": {"type": "integer", "minimum": 0}}},
            "data": {"type": "array"},
        },
    },
    "RequestedOutput": {
        "type": "object",
        "required": ["name"],
        "properties": {"name": _STRING, "parameters": {"type": "object", "properties": {"binary_data": {"type": "boolean"}}}},
    },
    "InferenceResponse": {
        "type": "object",
        "required": ["model_name", "model_version", "outputs"],
        "properties": {
            "model_name": _STRING,
            "model_version": _STRING,
            "id": _STRING,
            "outputs": {
                "type": "array",
                "items": {
                    "type": "object",
                    "required": ["name", "datatype", "shape"],
                    "properties": {
                        "name": _STRING,
                        "datatype": _STRING,
                        "shape": {"type": "array", "items": _INTEGER},
                        "data": {"type": "array"},
                        "parameters": {"type": "object", "properties": {"binary_data_size": _INTEGER}},
                    },
                },
            },
        },
    },
}

_REST_ERRORS = {
    "400": "empty or malformed body",
    "401": "missing or wrong API token (only when the server has one: CHORUS_API_TOKEN)",
    "408": "the body stopped arriving (read timeout)",
    "409": "the job is queued or running: cancel it first",
    "413": "body or audio too long",
    "415": "unsupported or corrupt audio (the body lists accepted_formats), or a body of a media type the route does not take",
    "422": "invalid parameter",
    "429": "too many uploads waiting for a job, or too many jobs unfinished (CHORUS_MAX_PENDING_UPLOADS, CHORUS_MAX_UNFINISHED_JOBS)",
    "503": "overloaded, shutting down or still loading (Retry-After header), or the models failed to load",
    "504": "past the request deadline (X-Request-Timeout header or the server's default)",
}
_RETRY_AFTER = {"Retry-After": {"description": "seconds to wait before retrying", "schema": {"type": "integer", "minimum": 1}}}


def _errors(codes: str, schema: str) -> dict[str, Any]:
    """The error responses of `codes` (e.g. '400 413 422'), each a JSON body of `schema`."""
    responses: dict[str, Any] = {}
    for code in codes.split():
        response: dict[str, Any] = {"description": _REST_ERRORS.get(code, "see the message"), **_json(_ref(schema))}
        if code == "503":
            response["headers"] = _RETRY_AFTER
        responses[code] = response
    return responses


def _query(name: str, schema: dict[str, Any]) -> dict[str, Any]:
    # An empty value counts as not sent (HTML forms send empty fields): allowEmptyValue says so.
    return {"name": name, "in": "query", "schema": schema, "allowEmptyValue": True}


_DEADLINE = {
    "name": "X-Request-Timeout",
    "in": "header",
    "description": "seconds; shortens (never lengthens) the server's default deadline; 504 past it",
    "schema": {"type": "number", "exclusiveMinimum": 0},
}


def _classify_fields() -> dict[str, dict[str, Any]]:
    return {
        "top_k": {"type": "integer", "minimum": 1, "description": "most species listed per window; at most the model's label count"},
        "timeline": {"type": "boolean", "default": True, "description": "include the per-window detections"},
        "min_confidence": {
            "type": "number",
            "minimum": 0,
            "maximum": 1,
            "description": "a species is detected where its score is at least this; default: the model's calibrated threshold",
        },
        "embeddings": {"type": "boolean", "default": False, "description": "include each window's embedding"},
        "spectrogram": {"type": "boolean", "default": False, "description": "include the spectrogram the model heard (PNG)"},
    }


def _classify_params() -> list[dict[str, Any]]:
    return [*(_query(name, schema) for name, schema in _classify_fields().items()), _DEADLINE]


def _generate_fields(plane: DataPlane) -> dict[str, dict[str, Any]]:
    s = plane.settings
    return {
        "count": {"type": "integer", "minimum": 1, "maximum": s.max_images, "default": 1},
        "steps": {"type": "integer", "minimum": s.min_steps, "maximum": s.max_steps, "default": 50},
        "seed": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1, "default": 0},
        "format": {"enum": ["png", "json"], "description": "png (count 1 only; the default then) or json (the default for count > 1)"},
    }


def _rest(summary: str, parameters: list[dict[str, Any]], body: dict[str, Any] | None, ok: dict[str, Any], errors: str) -> dict[str, Any]:
    operation: dict[str, Any] = {"summary": summary, "tags": ["REST"], "parameters": parameters, "responses": {"200": ok}}
    if body is not None:
        operation["requestBody"] = body
    operation["responses"].update(_errors(errors, "Error"))
    return {"post": operation}


def _name(models: list[str]) -> dict[str, Any]:
    return {"name": "name", "in": "path", "required": True, "schema": {"type": "string", "enum": models}, "description": "model name"}


_VERSION = {"name": "version", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}, "description": "model version"}


def _kserve(summary: str, ok: dict[str, Any], parameters: Sequence[dict[str, Any]] = (), errors: str = "") -> dict[str, Any]:
    responses: dict[str, Any] = {"200": ok, **_errors(errors, "KServeError")}
    if any(p["in"] == "path" for p in parameters):
        responses["404"] = {
            "description": "no such model or version (JSON), or no route for the path (text)",
            "content": {**_json(_ref("KServeError"))["content"], **_TEXT_NOT_FOUND},
        }
    operation: dict[str, Any] = {"summary": summary, "tags": ["KServe v2"], "responses": responses}
    if parameters:
        operation["parameters"] = list(parameters)
    return {"get": operation}


def _kserve_infer(summary: str, parameters: list[dict[str, Any]], errors: str) -> dict[str, Any]:
    operation = _kserve(summary, {}, parameters, errors)["get"]
    operation["parameters"] = [
        *parameters,
        _DEADLINE,
        {
            "name": "Inference-Header-Content-Length",
            "in": "header",
            "description": "binary tensor data extension: length of the JSON header at the start of the body; the tensors' bytes follow",
            "schema": {"type": "integer", "minimum": 1},
        },
    ]
    operation["requestBody"] = {
        "required": True,
        "description": "a JSON InferenceRequest; with the binary tensor data extension, an InferenceRequest of "
        "Inference-Header-Content-Length bytes, then the tensors' bytes (any content type)",
        "content": {
            _JSON: {"schema": _ref("InferenceRequest")},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    operation["responses"]["200"] = {
        "description": "the outputs; with binary outputs requested, the JSON header then their bytes (Inference-Header-Content-Length)",
        "content": {
            _JSON: {"schema": _ref("InferenceResponse")},
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
        },
    }
    return {"post": operation}


_JOB_ID = {"name": "job_id", "in": "path", "required": True, "schema": {"type": "string", "minLength": 1}, "description": "task_id"}


def _job(
    summary: str, ok: dict[str, Any], errors: str, method: str = "get", parameters: Sequence[dict[str, Any]] = (), status: str = "200"
) -> dict[str, Any]:
    responses: dict[str, Any] = {status: ok, **_errors(errors, "Error")}
    operation: dict[str, Any] = {"summary": summary, "tags": ["analysis jobs"], "responses": responses}
    if parameters:
        operation["parameters"] = list(parameters)
    return {method: operation}


def build_spec(plane: DataPlane) -> dict[str, Any]:
    s = plane.settings
    models = plane.model_names
    ready = {"type": "object", "required": ["ready"], "properties": {"ready": {"type": "boolean"}, "reason": _STRING}}
    model_ready = {"type": "object", "required": ["name", "ready"], "properties": {"name": _STRING, "ready": {"type": "boolean"}}}
    name, version = _name(models), _VERSION
    classify_fields = _classify_fields()
    generate_fields = _generate_fields(plane)
    audio_body = {
        "required": True,
        "description": f"the recording, at most {s.max_upload_bytes} bytes and {s.max_audio_seconds:g} s",
        "content": {
            "application/octet-stream": {"schema": {"type": "string", "format": "binary"}},
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["audio"],
                    "properties": {"audio": {"type": "string", "format": "binary"}, **classify_fields},
                }
            },
        },
    }
    batch_body = {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["audio"],
                    "properties": {
                        "audio": {
                            "type": "array",
                            "minItems": 1,
                            "maxItems": s.max_batch_files,
                            "items": {"type": "string", "format": "binary"},
                        },
                        **classify_fields,
                    },
                }
            }
        },
    }
    generate_body = {
        "required": False,
        "description": "the parameters as a JSON object (they override the query's)",
        "content": {_JSON: {"schema": {"type": "object", "properties": generate_fields, "additionalProperties": False}}},
    }
    audio_errors = "400 408 413 415 422 503 504" + (" 401" if s.api_token else "")
    generate_errors = "400 408 413 415 422 503 504" + (" 401" if s.api_token else "")
    infer_errors = "400 408 413 422 503 504" + (" 401" if s.api_token else "")
    spec: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "chorus", "version": "0.1.0", "description": "Bird-call classification and piano-frame generation."},
        "paths": {
            "/classify": _rest(
                "Classify every 5 s window of a recording (WAV, FLAC, OGG/Vorbis, Opus, MP3, AIFF, AU, W64; any rate and channels)",
                _classify_params(),
                audio_body,
                {"description": "detections per window and per species, audio facts, model, timings", **_json(_ref("Classification"))},
                audio_errors,
            ),
            "/classify/batch": _rest(
                "Classify several recordings (multipart, repeated file field 'audio')",
                _classify_params(),
                batch_body,
                {
                    "description": "one result per file, in order (a file that fails fails the request, naming it)",
                    **_json(
                        {
                            "type": "object",
                            "required": ["results"],
                            "properties": {
                                "results": {
                                    "type": "array",
                                    "items": {"allOf": [_ref("Classification"), {"required": ["file"], "properties": {"file": _STRING}}]},
                                }
                            },
                        }
                    ),
                },
                audio_errors,
            ),
            "/generate": _rest(
                "Generate piano frames (DDIM); same seed and settings give the same image",
                [*(_query(k, v) for k, v in generate_fields.items()), _DEADLINE],
                generate_body,
                {
                    "description": "image/png (format png) or JSON with base64 PNGs (format json)",
                    "headers": {k: {"schema": _STRING} for k in ("X-Seed", "X-Steps", "X-Model-Version")},
                    "content": {"image/png": {"schema": {"type": "string", "format": "binary"}}, _JSON: {"schema": _ref("Images")}},
                },
                generate_errors,
            ),
            "/": {
                "get": {
                    "summary": "The web page",
                    "tags": ["page"],
                    "responses": {"200": {"description": "HTML", "content": {"text/html": {}}}},
                }
            },
            "/openapi.json": {
                "get": {
                    "summary": "This document",
                    "tags": ["meta"],
                    "responses": {"200": {"description": "OpenAPI", **_json({"type": "object"})}},
                }
            },
            "/v2": _kserve(
                "Server metadata",
                {
                    "description": "name, version, extensions",
                    **_json(
                        {
                            "type": "object",
                            "required": ["name", "version", "extensions"],
                            "properties": {"name": _STRING, "version": _STRING, "extensions": {"type": "array", "items": _STRING}},
                        }
                    ),
                },
            ),
            "/v2/health/live": _kserve(
                "Server liveness",
                {"description": "live", **_json({"type": "object", "required": ["live"], "properties": {"live": {"type": "boolean"}}})},
            ),
            "/v2/health/ready": {
                "get": {
                    "summary": "Server readiness (503 with the reason until the models are loaded and warmed up)",
                    "tags": ["KServe v2"],
                    "responses": {
                        "200": {"description": "ready", **_json(ready)},
                        "503": {"description": "not ready, and why", **_json(ready)},
                    },
                }
            },
            "/v2/models/{name}": _kserve(
                f"Model metadata: {', '.join(models)}", {"description": "metadata", **_json(_ref("ModelMetadata"))}, [name], "503"
            ),
            "/v2/models/{name}/versions/{version}": _kserve(
                "Model metadata of a version", {"description": "metadata", **_json(_ref("ModelMetadata"))}, [name, version], "503"
            ),
            "/v2/models/{name}/ready": _kserve("Model readiness", {"description": "ready", **_json(model_ready)}, [name]),
            "/v2/models/{name}/versions/{version}/ready": _kserve(
                "Model readiness of a version", {"description": "ready", **_json(model_ready)}, [name, version]
            ),
            "/v2/models/{name}/infer": _kserve_infer("Inference (JSON tensors or the binary tensor data extension)", [name], infer_errors),
            "/v2/models/{name}/versions/{version}/infer": _kserve_infer("Inference on a version", [name, version], infer_errors),
            "/jobs": _job(
                "List analysis jobs with their state and progress, oldest first: a page of at most `limit` (1000 when not given) "
                "and the link to the next",
                {
                    "description": "jobs; `next`: the next page's link, null on the last; `poll`, on the last page too: where to"
                    " ask later for jobs that come to be listed (it may repeat some: skip the task_ids you have)",
                    **_json({"type": "object"}),
                },
                "401 422",
                parameters=[
                    _query("state", {**_STRING, "description": "comma-separated states to list: queued, running, done, failed, cancelled"}),
                    _query("limit", {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT, "default": MAX_LIST_LIMIT}),
                    _query("after", {**_STRING, "description": "the cursor of the `next` link of the page before"}),
                ],
            ),
            "/jobs/uploads": _job(
                "Upload a recording for an analysis job: the raw file as the body, ?name=<file name>; "
                f"at most {s.max_job_upload_bytes} bytes, refused while it streams",
                {"description": "the upload's id (for POST /analyze/submit), name and size", **_json({"type": "object"})},
                "400 401 408 413 429",
                "post",
                [_query("name", _STRING)],
                status="201",
            ),
            "/jobs/uploads/{upload_id}": _job(
                "Delete an upload that no job took (a submitted upload is deleted with its job)",
                {"description": "deleted"},
                "401 404",
                "delete",
                [{"name": "upload_id", "in": "path", "required": True, "schema": _STRING}],
                status="204",
            ),
            "/jobs/{job_id}": {
                **_job(
                    "A job's state, progress (audio seconds done of total) and tables",
                    {"description": "the job", **_json({"type": "object"})},
                    "401 404",
                    parameters=[_JOB_ID],
                ),
                **_job(
                    "Delete a finished job with its input, journal and tables (409 while it is queued or running)",
                    {"description": "deleted"},
                    "401 404 409",
                    "delete",
                    [_JOB_ID],
                    status="204",
                ),
            },
            "/jobs/{job_id}/cancel": _job(
                "Cancel a job: a queued one at once, a running one at its next batch of windows (the engine is freed)",
                {"description": "the job", **_json({"type": "object"})},
                "401 404",
                "post",
                [_JOB_ID],
            ),
            "/jobs/{job_id}/outputs/{name}": _job(
                "Download one of a job's tables (Raven, Audacity, CSV, NDJSON, Parquet, errors)",
                {"description": "the table", "content": {"application/octet-stream": {"schema": {"type": "string", "format": "binary"}}}},
                "401 404",
                parameters=[_JOB_ID, {"name": "name", "in": "path", "required": True, "schema": _STRING}],
            ),
        },
        "components": {"schemas": _SCHEMAS},
    }
    for path in ("/v2/models/{name}/ready", "/v2/models/{name}/versions/{version}/ready"):
        spec["paths"][path]["get"]["responses"]["503"] = {"description": "not ready", **_json(model_ready)}
    if s.api_token:
        spec["components"]["securitySchemes"] = {"bearer": {"type": "http", "scheme": "bearer"}}
        for path in ("/classify", "/classify/batch", "/generate", "/v2/models/{name}/infer", "/v2/models/{name}/versions/{version}/infer"):
            spec["paths"][path]["post"]["security"] = [{"bearer": []}]
    return spec


async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(build_spec(request.app.state.plane))
