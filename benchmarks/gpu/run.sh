#!/usr/bin/env bash
# On the GPU host, from the repository root: install the bundle's wheels beside the host's torch,
# check that the engine opens the CUDA provider in a process without torch (as the servers run
# it), check the export's parity gates on the GPU, then run the serving bench with the arguments
# given (e.g. --device cuda --api-workers 8).
# Results: $BENCH_OUT.
set -uo pipefail
bundle=$(cd "$(dirname "$0")" && pwd)
site=${BUNDLE_SITE:-/tmp/chorus-site}
python3 -m pip install -q --no-index --no-deps --no-compile --upgrade --target "$site" "$bundle"/wheels/*.whl || exit 1
export PYTHONPATH="$site:$PWD" PYTHONUNBUFFERED=1 BENTOML_DO_NOT_TRACK=true
export BENTOML_HOME="$bundle/bentoml" CHORUS_HOME="$bundle/home"
python3 - <<'PY' || exit 1
from service.engine.runtime import choose_providers, make_session
from service.store import StoredModel

session = make_session(StoredModel.resolve("birdcall:latest").onnx_path("fp32"), choose_providers("cuda"), 1)
print("the engine's providers:", session.get_providers())
if session.get_providers()[0] != "CUDAExecutionProvider":
    raise SystemExit("the engine cannot open the CUDA provider without torch here (see ORT's messages above)")
PY
out=${BENCH_OUT:-$PWD/gpu-bench}
mkdir -p "$out"
# The export's parity gates on this GPU; reported, and the bench runs either way.
python3 -m benchmarks.gpu.parity check "$bundle/parity.npz" "$out/gpu_parity.json" > "$out/gpu_parity.log" 2>&1 \
  && echo "GPU parity: every variant passed" || echo "GPU parity: FAILED (see $out/gpu_parity.json and .log)"
python3 -m chorus.cli bench "$@" --out "$out"
