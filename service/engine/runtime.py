"""ONNX Runtime, in one place: providers, session options and lanes.

The only module of the serving path that imports onnxruntime: the seam where the CUDA or
TensorRT execution providers, or another runtime, plug in. Everything else holds a `Runner`.

Lanes: on CPU, ONNX Runtime's intra-op threads scale poorly on these small networks. Measured on
2 cores, two 1-thread runs side by side beat one 2-thread run by ~30% (the classifier, 1.3k vs 1.0k
windows/s) and ~70% (frames denoiser, 12 vs 7 images/s). So batching stays in one place and each
batch is split into `lanes` slices along the batch axis, run concurrently on one session (ORT
sessions are thread-safe; each run uses the calling thread). On a GPU one lane is right: the
device is the parallelism.
"""

from __future__ import annotations

import logging
import math
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from layout.machine import usable_cores

log = logging.getLogger("chorus.runtime")

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
_NUMPY_TYPES: dict[str, type[np.generic]] = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(int64)": np.int64,
    "tensor(int32)": np.int32,
}


def choose_providers(preference: str) -> list[str]:
    """CUDA first when asked for (or 'auto') and available; CPU always last, so a GPU-less host falls back."""
    available = ort.get_available_providers()
    if preference in ("auto", "cuda") and CUDA in available:
        _load_cuda_libraries()
        return [CUDA, CPU]
    if preference == "cuda":
        log.warning("CUDA requested but onnxruntime has no CUDAExecutionProvider (%s): using CPU", available)
    return [CPU]


def _load_cuda_libraries() -> None:
    """Load CUDA and cuDNN from pip's nvidia-* packages where they are installed (onnxruntime-gpu
    next to a CUDA torch, say), then from the system's search path. Without this, ORT opens its CUDA
    provider only in a process that imported torch first (torch loads them), and elsewhere quietly
    runs on the CPU. A library it cannot find it reports on stdout; ORT's own search still follows."""
    preload = getattr(ort, "preload_dlls", None)  # onnxruntime-gpu >= 1.21
    if preload is not None:
        preload()


def plan_lanes(lanes: int, threads: int, on_gpu: bool) -> tuple[int, int]:
    """(lanes, ORT intra-op threads per run) from settings where 0 means automatic."""
    if on_gpu:
        return 1, threads or 1
    cores = usable_cores()
    lanes = lanes or cores
    return lanes, threads or max(1, cores // lanes)


CUDA_OPTIONS = {"cudnn_conv_algo_search": "HEURISTIC"}
"""The CUDA provider's options. ORT's default search (EXHAUSTIVE) times every cuDNN convolution
algorithm on the first run of each new input shape, and the engine's batches change size with the
load: on an H200 each new batch size of the frames denoiser stalled it for about a second, and
served /generate ran at 6 images/s against the raw engine's 128 (docs/benchmarks.md, "GPU")."""


def make_session(path: Path, providers: list[str], threads: int) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    # Spinning threads steal the cores numpy pre-processing needs (measured 4x lower throughput).
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    with_options = [(name, CUDA_OPTIONS) if name == CUDA else name for name in providers]
    return ort.InferenceSession(str(path), options, providers=with_options)


@dataclass(frozen=True)
class TensorSpec:
    """One model input or output as the runtime declares it; dynamic axes are None."""

    name: str
    shape: tuple[int | None, ...]
    dtype: type[np.generic]

    def example(self, batch: int) -> np.ndarray:
        """Zeros of this spec with `batch` on the first axis (and 1 on any other dynamic axis)."""
        return np.zeros((batch, *(d or 1 for d in self.shape[1:])), self.dtype)


def _specs(args: list[ort.NodeArg]) -> tuple[TensorSpec, ...]:
    return tuple(
        TensorSpec(a.name, tuple(d if isinstance(d, int) else None for d in a.shape), _NUMPY_TYPES.get(a.type, np.float32)) for a in args
    )


def padded_sizes(limit: int) -> tuple[int, ...]:
    """The batch sizes a padded runner runs: the powers of two below `limit`, then `limit`."""
    sizes = [1 << i for i in range(limit.bit_length()) if 1 << i < limit]
    return (*sizes, limit)


def padded_size(n: int, limit: int) -> int:
    """The smallest padded size that holds n items; n itself past `limit`."""
    return next((size for size in padded_sizes(limit) if size >= n), n)


class Runner:
    """A session run the way the engine runs it: every output, each batch split across lanes, in
    runs of at most `max_run_items` items, padded to one of a few sizes where `pad_limit` is set.

    ONNX Runtime's CPU arena keeps the peak of the activations it ever held, and a run's
    activations grow with its batch (a 64-window batch of the classifier holds ~85 MB per conv layer):
    bounding the run, not the batch, bounds the engine's memory, while BentoML still batches
    as many items per call as it is allowed to.

    A GPU runs a small network in the same time at batch 1 or 16 (kernel launches, not arithmetic),
    and ONNX Runtime's CUDA provider pays per new input shape (allocations, cuDNN's choices): served
    on an H200, the denoiser's step batches of changing size gave 27 images/s, padded 48
    (docs/benchmarks.md, "GPU"). So a padded runner fills each batch with zero rows up to the next of
    `padded_sizes(pad_limit)` and drops them from the outputs. Only for models whose rows are
    independent (no batch statistics), as both here are.
    """

    def __init__(self, session: ort.InferenceSession, lanes: int, max_run_items: int = 0, pad_limit: int = 0):
        """max_run_items 0: no bound (one run per lane). pad_limit 0: no padding."""
        self.session = session
        self.lanes = max(1, lanes)
        self.max_run_items = max_run_items
        self.pad_limit = pad_limit
        self.inputs = _specs(session.get_inputs())
        self.outputs = _specs(session.get_outputs())
        self._pool = ThreadPoolExecutor(self.lanes, thread_name_prefix="chorus-lane") if self.lanes > 1 else None

    @property
    def provider(self) -> str:
        return self.session.get_providers()[0]

    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, feeds)

    def run(self, feeds: dict[str, np.ndarray], lanes: int | None = None) -> list[np.ndarray]:
        """Every output for the whole batch, in the model's output order; every input's first axis is the batch axis.

        lanes: run on at most this many lanes at once (None: all of them)."""
        n = len(next(iter(feeds.values())))
        if self.pad_limit and (size := padded_size(n, self.pad_limit)) > n:
            padded = {k: np.concatenate([v, np.zeros((size - n, *v.shape[1:]), v.dtype)]) for k, v in feeds.items()}
            return [out[:n] for out in self._run_whole(padded, lanes)]
        return self._run_whole(feeds, lanes)

    def _run_whole(self, feeds: dict[str, np.ndarray], lanes: int | None) -> list[np.ndarray]:
        n = len(next(iter(feeds.values())))
        lanes = self.lanes if lanes is None else max(1, min(lanes, self.lanes))
        size = math.ceil(n / lanes)  # one run per lane when it is small enough
        if self.max_run_items:
            size = min(size, self.max_run_items)
        if size >= n:
            return self._run(feeds)
        slices = [{k: np.ascontiguousarray(v[a : a + size]) for k, v in feeds.items()} for a in range(0, n, size)]
        results = self._run_on_lanes(slices, lanes) if self._pool is not None and lanes > 1 else [self._run(part) for part in slices]
        return [np.concatenate([r[i] for r in results]) for i in range(len(results[0]))]

    def _run_on_lanes(self, slices: list[dict[str, np.ndarray]], lanes: int) -> list[list[np.ndarray]]:
        """Each slice's outputs, in order, from `lanes` threads of the pool that take the next slice
        as they finish one (never more runs at once than `lanes`)."""
        assert self._pool is not None
        results: list[list[np.ndarray]] = [[] for _ in slices]
        next_slice = iter(range(len(slices)))
        taking = threading.Lock()

        def lane(_: int) -> None:
            while True:
                with taking:
                    i = next(next_slice, None)
                if i is None:
                    return
                results[i] = self._run(slices[i])

        list(self._pool.map(lane, range(min(lanes, len(slices)))))
        return results


def open_runner(path: Path, providers: list[str], threads: int = 0, lanes: int = 0, max_run_items: int = 0, pad_limit: int = 0) -> Runner:
    """A model file ready to run; threads and lanes 0 mean automatic (see plan_lanes). max_run_items
    bounds a run on CPU only: a GPU wants its batches whole. pad_limit: see Runner."""
    on_gpu = providers[0] != CPU
    lanes, threads = plan_lanes(lanes, threads, on_gpu=on_gpu)
    return Runner(make_session(path, providers, threads), lanes, 0 if on_gpu else max_run_items, pad_limit)
