"""The serving code's shape, held by tests: models wired in by one module each, one runtime seam, no torch."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

from service.local_server import ROOT

SERVICE = ROOT / "service"
GENERATED = {"kserve_v2.desc"}


def service_files() -> list[Path]:
    return [p for p in SERVICE.rglob("*") if p.is_file() and "__pycache__" not in p.parts and p.name not in GENERATED]


def naming(word: str) -> list[str]:
    return sorted(str(p.relative_to(SERVICE)) for p in service_files() if word in p.read_text(errors="replace").lower())


def test_a_model_is_named_outside_its_own_module_and_the_engine_declaration_in_at_most_two_files():
    """Adding a model means its module plus an engine method, not edits across the service."""
    others = [f for f in naming("birdcall") if f not in ("models/birdcall.py", "engine_service.py")]
    assert len(others) <= 2, others


def test_exactly_one_module_imports_onnxruntime():
    importers = [
        str(p.relative_to(SERVICE))
        for p in SERVICE.rglob("*.py")
        if re.search(r"^\s*(import onnxruntime|from onnxruntime)", p.read_text(), re.MULTILINE)
    ]
    assert importers == ["engine/runtime.py"]


def test_the_serving_path_never_imports_torch():
    for package in ("service", "features", "layout"):
        for path in (ROOT / package).rglob("*.py"):
            assert not re.search(r"^\s*(import torch|from torch)", path.read_text(), re.MULTILINE), path


# Who may import whom: each package (and each part of service/) may import only what stands
# below it. docs/architecture.md draws the same picture.
PACKAGE_LAYERS = [
    {"layout", "features", "analyze"},
    {"training", "service"},
    {"export", "loadtests", "batch"},
    {"benchmarks"},
    {"chorus"},
]
SERVICE_LAYERS = [
    {"settings", "errors", "metrics", "tensors", "auth", "store", "admission", "lifecycle", "local_server", "concurrency", "heap"},
    {"engine"},
    {"models"},
    {"dataplane"},
    {"jobs"},
    {"adapters"},
    {"service", "engine_service"},
]


def project_imports(path: Path) -> set[str]:
    """Dotted names of the project modules a file imports (top-level and function-level imports alike)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def layer_of(part: str | None, layers: list[set[str]]) -> int | None:
    return next((i for i, layer in enumerate(layers) if part in layer), None)


def package_of(module: str) -> str:
    return module.split(".")[0]


def service_part_of(module: str) -> str | None:
    """The part of service/ a module belongs to (service.engine.client -> engine); None outside service/."""
    parts = module.split(".")
    return parts[1] if parts[0] == "service" and len(parts) > 1 else None


def upward_imports(
    files: list[Path],
    part_of_file: Callable[[Path], str],
    part_of_module: Callable[[str], str | None],
    layers: list[set[str]],
    imports_of: Callable[[Path], set[str]] = project_imports,
) -> list[str]:
    found = []
    for path in files:
        own = layer_of(part_of_file(path), layers)
        for name in imports_of(path):
            target = layer_of(part_of_module(name), layers)
            if own is not None and target is not None and target > own:
                found.append(f"{path.relative_to(ROOT)} imports {name}")
    return found


def test_no_package_imports_one_above_it():
    files = [p for package in set().union(*PACKAGE_LAYERS) for p in (ROOT / package).rglob("*.py")]
    assert upward_imports(files, lambda p: p.relative_to(ROOT).parts[0], package_of, PACKAGE_LAYERS) == []


def test_no_part_of_the_service_imports_one_above_it():
    files = [p for p in SERVICE.rglob("*.py") if p != SERVICE / "__init__.py"]
    assert upward_imports(files, lambda p: p.relative_to(SERVICE).parts[0].removesuffix(".py"), service_part_of, SERVICE_LAYERS) == []


def test_the_layer_check_finds_an_upward_import():
    store = SERVICE / "store.py"
    imports = {"service.dataplane", "service.errors", "numpy"}
    found = upward_imports([store], lambda p: "store", service_part_of, SERVICE_LAYERS, imports_of=lambda p: imports)
    assert found == ["service/store.py imports service.dataplane"]
