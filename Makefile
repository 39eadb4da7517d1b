# Two commands on a fresh machine with Python and pip: `make up`, `make test`.
# uv is bootstrapped with pip when missing; `python3 -m uv` works even where pip's bin dir is not on PATH.
UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
export BENTOML_DO_NOT_TRACK := true

.PHONY: up test lint sync bootstrap protos requirements

# Where the system Python is "externally managed" (PEP 668: Debian 12, Ubuntu 23.04 and later) pip
# refuses to install anywhere but a venv: uv then goes to the user's site (~/.local), which that
# rule is not about, as the one tool that makes the project's own venv.
bootstrap:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv \
		|| python3 -m pip install --quiet --user --break-system-packages uv

# Bytecode compiled at install (~20 s once, ~1 s after): where PYTHONDONTWRITEBYTECODE is set (CI
# images, many containers) every process would otherwise compile bentoml and its imports again,
# ~0.8 s of each command's start-up and of every server a test starts. Not in pyproject's tool.uv:
# there every `uv run` would pay the ~0.7 s check.
sync: bootstrap
	$(UV) sync --frozen --compile-bytecode

up: sync
	$(UV) run chorus up

# The lint gate runs first: style, formatting and types fail the build like a failing test.
test: lint
	$(UV) run pytest

lint: sync
	$(UV) run ruff check .
	$(UV) run ruff format --check .
	$(UV) run mypy

# Regenerate the KServe v2 gRPC descriptor set after editing service/adapters/grpc/kserve_v2.proto.
protos: sync
	$(UV) run python -m grpc_tools.protoc -I. --descriptor_set_out=service/adapters/grpc/kserve_v2.desc service/adapters/grpc/kserve_v2.proto

# The Bento's serving requirements (no torch, no training tools), pinned from uv.lock.
# The GPU Bento swaps onnxruntime for onnxruntime-gpu 1.22 (CUDA 12, cuDNN 9: bentofile.gpu.yaml's base image).
requirements: bootstrap
	$(UV) export --frozen --no-default-groups --no-hashes --no-emit-project --no-header -o docker/requirements.txt
	grep -v '^onnxruntime==' docker/requirements.txt > docker/requirements-gpu.txt
	echo 'onnxruntime-gpu==1.22.0' >> docker/requirements-gpu.txt
