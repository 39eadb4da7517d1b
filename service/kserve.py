"""KServe v2 (Open Inference Protocol) over HTTP under /v2, thin over the same inference cores as REST.

Models: `birdcall` takes `waveform` (FP32 mono samples at 16 kHz, any length) or `log_mel` (FP32
normalized windows [n, 1, 64, 157]) and returns `probabilities` [n_windows, n_classes] and `labels`;
`frames-denoiser` takes `x_t` [n, 3, H, W] and `t` [n] (FP32) and returns `v`. The binary tensor data
extension works both ways (tritonclient.http uses it by default).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from service.errors import InvalidParameter, NotFound, NotReady
from service.http_common import authorize, deadline_seconds, kserve_errors, read_body
from service.kserve_codec import HEADER_LENGTH, build_response, parse_request

if TYPE_CHECKING:
    from service.service import Chorus

SERVER = {"name": "chorus", "version": "0.1.0", "extensions": ["binary_tensor_data", "model_repository"]}
BIRDCALL, DENOISER = "birdcall", "frames-denoiser"


def _chorus(request: Request) -> Chorus:
    return request.app.state.chorus


async def is_ready(chorus: Chorus) -> bool:
    try:
        await chorus.ready_birdcall()
        return True
    except NotReady:
        return False


def check_model_name(name: str) -> None:
    if name not in (BIRDCALL, DENOISER):
        raise NotFound(f"no model named {name!r}; models: {[BIRDCALL, DENOISER]}")


async def model_metadata_for(chorus: Chorus, name: str) -> dict[str, Any]:
    check_model_name(name)
    if not await is_ready(chorus):
        raise NotReady("the models are still loading; retry shortly", chorus.settings.retry_after_seconds)
    return _metadata(chorus, name)


def _metadata(chorus: Chorus, name: str) -> dict[str, Any]:
    if name == BIRDCALL:
        core = chorus.birdcall_core()
        n_classes = len(core.labels)
        return {
            "name": BIRDCALL,
            "versions": [core.model_info["version"]],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": "waveform", "datatype": "FP32", "shape": [-1]},
                {"name": "log_mel", "datatype": "FP32", "shape": [-1, *core.frontend.config.feature_shape]},
            ],
            "outputs": [
                {"name": "probabilities", "datatype": "FP32", "shape": [-1, n_classes]},
                {"name": "labels", "datatype": "BYTES", "shape": [n_classes]},
            ],
            "parameters": {
                "inputs": "send exactly one: waveform = mono FP32 samples at "
                f"{core.frontend.config.sample_rate} Hz (cut into 5 s windows, 2.5 s apart), "
                "or log_mel = normalized log-mel windows",
                "sample_rate": core.frontend.config.sample_rate,
            },
        }
    if name == DENOISER:
        core = chorus.frames_core()
        size = core.image_size
        return {
            "name": DENOISER,
            "versions": [core.model_info["version"]],
            "platform": "onnxruntime_onnx",
            "inputs": [
                {"name": "x_t", "datatype": "FP32", "shape": [-1, 3, size, size]},
                {"name": "t", "datatype": "FP32", "shape": [-1]},
            ],
            "outputs": [{"name": "v", "datatype": "FP32", "shape": [-1, 3, size, size]}],
            "parameters": {"objective": "pred_v", "timesteps": len(core.alphas_cumprod)},
        }
    raise NotFound(f"no model named {name!r}; models: {[BIRDCALL, DENOISER]}")


async def server_metadata(request: Request) -> Response:
    return JSONResponse(SERVER)


async def server_live(request: Request) -> Response:
    return JSONResponse({"live": True})


async def server_ready(request: Request) -> Response:
    ready = await is_ready(_chorus(request))
    return JSONResponse({"ready": ready}, status_code=200 if ready else 503)


@kserve_errors
async def model_metadata(request: Request) -> Response:
    return JSONResponse(await model_metadata_for(_chorus(request), request.path_params["name"]))


@kserve_errors
async def model_ready(request: Request) -> Response:
    name = request.path_params["name"]
    check_model_name(name)
    ready = await is_ready(_chorus(request))
    return JSONResponse({"name": name, "ready": ready}, status_code=200 if ready else 503)


async def _infer_birdcall(chorus: Chorus, tensors: dict) -> dict[str, np.ndarray]:
    core = await chorus.ready_birdcall()
    if set(tensors) == {"waveform"}:
        probs = await core.probabilities_from_waveform(tensors["waveform"].data.reshape(-1).astype(np.float32))
    elif set(tensors) == {"log_mel"}:
        probs = await core.probabilities_from_features(tensors["log_mel"].data.astype(np.float32))
    else:
        raise InvalidParameter(f"send exactly one input, 'waveform' or 'log_mel'; got {sorted(tensors)}")
    return {"probabilities": probs.astype(np.float32), "labels": np.array([x.encode() for x in core.labels], dtype=object)}


async def _infer_denoiser(chorus: Chorus, tensors: dict) -> dict[str, np.ndarray]:
    core = await chorus.ready_frames()
    if set(tensors) != {"x_t", "t"}:
        raise InvalidParameter(f"send inputs 'x_t' and 't'; got {sorted(tensors)}")
    x_t = tensors["x_t"].data.astype(np.float32)
    t = tensors["t"].data.reshape(-1).astype(np.float32)
    return {"v": await core.denoise_batch(x_t, t, chorus.settings.frames_max_batch_size)}


async def run_inference(chorus: Chorus, name: str, tensors: dict, deadline: float) -> tuple[str, dict[str, np.ndarray]]:
    """What every KServe protocol (HTTP, gRPC) calls: (model version, output tensors by name)."""
    handlers = {BIRDCALL: _infer_birdcall, DENOISER: _infer_denoiser}
    check_model_name(name)
    outputs = await chorus.admission.run(handlers[name](chorus, tensors), deadline)
    core = chorus.birdcall_core() if name == BIRDCALL else chorus.frames_core()
    return core.model_info["version"], outputs


@kserve_errors
async def infer(request: Request) -> Response:
    chorus = _chorus(request)
    authorize(request, chorus.settings)
    name = request.path_params["name"]
    check_model_name(name)
    body = await read_body(request, chorus.settings.max_upload_bytes, "kserve_infer")
    kserve_request, tensors = parse_request(body, request.headers.get(HEADER_LENGTH))
    version, outputs = await run_inference(chorus, name, tensors, deadline_seconds(request, chorus.settings))
    content, headers = build_response(kserve_request, name, version, outputs)
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
