#!/usr/bin/env bash
# Everything `chorus bench --device cuda` needs on a GPU host that cannot download: the project's
# Python wheels (for the host's Python), onnxruntime-gpu, the served models, the checkpoints the
# torch baselines load and the parity gates' held-out inputs (benchmarks/gpu/parity.py). Run from
# the repository root, after `make up` (or train + export):
#
#   benchmarks/gpu/bundle.sh DIR [PYTHON_VERSION] [SKIP_FILE]
#
# PYTHON_VERSION: the GPU host's (default 3.12). SKIP_FILE: package names the host has already,
# one per line (torch, CUDA and triton are always left to the host). Then copy DIR and this
# checkout to the host and run `bash DIR/run.sh --device cuda` from the checkout there.
set -euo pipefail
out=${1:?usage: benchmarks/gpu/bundle.sh DIR [PYTHON_VERSION] [SKIP_FILE]}
python_version=${2:-3.12}
skip_file=${3:-/dev/null}
ort_version=${ORT_GPU_VERSION:-1.31.1}
rm -rf "$out/wheels" && mkdir -p "$out/wheels" "$out/bentoml/models" "$out/home"
out=$(cd "$out" && pwd)

# The serving and training requirements as uv.lock pins them, for Linux x86-64 and that Python,
# less torch, CUDA, triton and CPU onnxruntime (the host's, or onnxruntime-gpu) and what the host has.
uv export --frozen --no-hashes --no-dev --group train --no-emit-project --quiet \
  | uv run --frozen python -c '
import re, sys
from packaging.markers import Marker
version, skip_file = sys.argv[1], sys.argv[2]
target = {"python_version": version, "python_full_version": version + ".0", "sys_platform": "linux", "platform_system": "Linux",
          "platform_machine": "x86_64", "os_name": "posix", "implementation_name": "cpython", "platform_python_implementation": "CPython"}
norm = lambda name: re.sub(r"[-_.]+", "-", name.strip().lower())
host = {norm(line) for line in open(skip_file) if line.strip()}
for line in sys.stdin:
    if line.startswith((" ", "#")) or "==" not in line:
        continue
    pin, _, marker = line.strip().partition(";")
    name = norm(pin.split("==")[0])
    if marker.strip() and not Marker(marker).evaluate(target):
        continue
    if name not in host and not re.fullmatch(r"torch|torchaudio|torchvision|triton|onnxruntime|nvidia-.*|cuda-.*", name):
        print(pin.strip())
' "$python_version" "$skip_file" > "$out/requirements.txt"
platforms=(--platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64)
python3 -m pip download -q --no-deps --only-binary=:all: --python-version "$python_version" --implementation cp "${platforms[@]}" \
  -d "$out/wheels" -r "$out/requirements.txt" "onnxruntime-gpu==$ort_version"

# The latest version of each served model, as the store holds it, and the training checkpoints.
store=$(uv run python -c "from bentoml._internal.configuration.containers import BentoMLContainer as c; print(c.model_store_dir.get())")
for model in birdcall frames; do
  version=$(cat "$store/$model/latest")
  mkdir -p "$out/bentoml/models/$model"
  cp -r "$store/$model/$version" "$out/bentoml/models/$model/"
  cp "$store/$model/latest" "$out/bentoml/models/$model/"
done
cp -r "${CHORUS_HOME:-artifacts}/checkpoints" "$out/home/"
uv run python -m benchmarks.gpu.parity save "$out/parity.npz"  # the parity gates' held-out inputs
cp "$(dirname "$0")/run.sh" "$out/"
du -sh "$out"
