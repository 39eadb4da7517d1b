"""Packaging: the Bento builds without torch, its Dockerfile is right, it serves; compose is sound."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import httpx
import pytest
import yaml

from service.local_server import ROOT, serve_process
from tests.conftest import encode, isolated_bentoml_home

TRAINING_ONLY = re.compile(r"^(torch|torchaudio|torchvision|denoising-diffusion-pytorch|onnxscript|matplotlib)==", re.M)


@pytest.mark.parametrize("name", ["requirements.txt", "requirements-gpu.txt"])
def test_serving_requirements_have_no_training_packages(name):
    text = (ROOT / "docker" / name).read_text()
    assert not TRAINING_ONLY.search(text), TRAINING_ONLY.findall(text)
    assert re.search(r"^bentoml==1\.4\.39$", text, re.M)
    runtime = "onnxruntime-gpu" if "gpu" in name else "onnxruntime"
    assert re.search(rf"^{runtime}==", text, re.M)


@pytest.fixture(scope="module")
def bento(tiny_exports):
    import bentoml

    return bentoml.bentos.build_bentofile("bentofile.yaml", build_ctx=str(ROOT))


def test_bento_contents_and_dockerfile(bento):
    path = Path(bento.path)
    requirements = (path / "env" / "python" / "requirements.txt").read_text()
    assert not TRAINING_ONLY.search(requirements)
    assert "torch" not in requirements.lower()
    src = path / "src"
    assert (src / "service" / "service.py").exists() and (src / "features" / "frontend.py").exists()
    assert (src / "service" / "adapters" / "grpc" / "kserve_v2.desc").exists() and (src / "layout" / "artifacts.py").exists()
    assert not (src / "training").exists() and not (src / "tests").exists()
    # The venv's editable install makes every project package importable while testing, so a
    # package the service needs but the Bento left out would only fail in the container: check
    # that each project module the shipped code imports was shipped.
    missing = sorted(m for m in project_imports_of(src) if not any((src / p).exists() for p in module_files(m)))
    assert not missing, f"imported by the Bento's code but not included (bentofile include): {missing}"
    assert {m.tag.name for m in bento.info.models} == {"birdcall", "frames"}
    dockerfile = (path / "env" / "docker" / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim", dockerfile, re.M), dockerfile[:500]
    assert "libsndfile1" in dockerfile
    assert "EXPOSE 3000" in dockerfile and "EXPOSE 3001" in dockerfile


def project_imports_of(src: Path) -> set[str]:
    packages = {p.name for p in ROOT.iterdir() if (p / "__init__.py").exists()}
    names: set[str] = set()
    for path in src.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                names.add(node.module)
    return {n for n in names if n.split(".")[0] in packages}


def module_files(module: str) -> list[str]:
    base = module.replace(".", "/")
    return [f"{base}.py", f"{base}/__init__.py"]


def test_built_bento_serves(bento, chirp, tmp_path):
    home = isolated_bentoml_home(tmp_path / "bentoml")
    with serve_process(str(bento.tag), tmp_path / "server.log", BENTOML_HOME=home) as served:
        response = httpx.post(f"{served.url}/classify", content=encode(chirp, 44_100, "WAV", "PCM_16"), timeout=60)
        assert response.status_code == 200, response.text
        assert response.json()["model"]["name"] == "birdcall"


def test_compose_file_is_consistent():
    compose = yaml.safe_load((ROOT / "docker" / "compose.yaml").read_text())
    services = compose["services"]
    assert {"chorus", "prometheus", "grafana", "chorus-gpu"} <= set(services)
    for name, service in services.items():
        assert "image" in service, name
        for volume in service.get("volumes", []):
            host = volume.split(":", 1)[0]
            assert (ROOT / "docker" / host).resolve().exists(), f"{name} mounts missing {host}"
    published = [p.split(":")[0] for name, s in services.items() if not s.get("profiles") for p in s.get("ports", [])]
    assert len(published) == len(set(published)), published
    # Prometheus scrapes the compose service by name and port.
    prometheus = yaml.safe_load((ROOT / "monitoring" / "prometheus.yml").read_text())
    target = prometheus["scrape_configs"][0]["static_configs"][0]["targets"][0]
    assert target == "chorus:3000" and "3000:3000" in services["chorus"]["ports"]
    assert services["chorus-gpu"]["deploy"]["resources"]["reservations"]["devices"][0]["capabilities"] == ["gpu"]


def test_gpu_bentofile_differs_only_where_it_must():
    cpu = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    gpu = yaml.safe_load((ROOT / "bentofile.gpu.yaml").read_text())
    assert gpu["service"] == cpu["service"] and gpu["include"] == cpu["include"]
    assert gpu["python"]["requirements_txt"].endswith("requirements-gpu.txt")
    assert gpu["docker"]["cuda_version"].startswith("12.")
