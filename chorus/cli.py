"""The `chorus` command: train, export, serve, up, analyze, loadtest, bench."""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

from layout import artifacts
from layout.workspace import Workspace


def _print_result(result: dict) -> None:
    """Scripts that other programs read end with one JSON object on the last stdout line."""
    sys.stdout.flush()
    print(json.dumps(result), flush=True)


def _train(args: argparse.Namespace) -> int:
    """Exit 2, with the reason on stderr, when the user's data cannot be trained on."""
    workspace = Workspace.from_env()
    if args.model == "birdcall":
        from training import train_birdcall as birdcall
        from training.birdcall_data import DataError

        profile = birdcall.PROFILES[args.profile]
        if args.epochs is not None:
            profile = birdcall.with_epochs(profile, args.epochs)
        try:
            result = birdcall.train_birdcall(profile, workspace, data_csv=args.data)
        except DataError as error:
            print(f"chorus train: {error}", file=sys.stderr)
            return 2
        if result["short_budget_note"]:
            print(f"chorus train: note: {result['short_budget_note']}", file=sys.stderr, flush=True)
    else:
        from training import train_frames as frames

        if args.epochs is not None:
            print("chorus train: --epochs is for birdcall; frames trains its profile's steps within its time budget", file=sys.stderr)
            return 2
        result = frames.train_frames(frames.PROFILES[args.profile], workspace, data_dir=args.data)
    _print_result(result)
    return 0


EXPORT_VARIANTS = {"birdcall": ("fp32", "int8", "fp16"), "frames": ("fp32", "fp16")}
"""Each model's ONNX variants (export.birdcall.VARIANTS, export.frames.VARIANTS: checked by a test),
here so the command line is checked before torch is imported."""


def _export_model(model: str, variants: tuple[str, ...]) -> dict:
    """Export, gate and register `variants` of a trained model; ParityError when one fails its gate."""
    workspace = Workspace.from_env()
    if model == "birdcall":
        from export.birdcall import export_birdcall

        return export_birdcall(workspace, variants=variants)
    from export.frames import export_frames

    return export_frames(workspace, variants=variants)


def _export(args: argparse.Namespace) -> int:
    """Exit 1, with the gate's measure on stderr, when a variant fails its parity gate (nothing is registered)."""
    from export.parity import ParityError

    known = EXPORT_VARIANTS[args.model]
    variants = known if args.variants is None else tuple(v.strip() for v in args.variants.split(",") if v.strip())
    unknown = sorted(set(variants) - set(known))
    if unknown or "fp32" not in variants:
        print(
            f"chorus export: --variants takes {', '.join(known)} for {args.model}, fp32 among them (the others are gated"
            f" against it); got {args.variants!r}",
            file=sys.stderr,
        )
        return 2
    try:
        report = _export_model(args.model, variants)
    except ParityError as error:
        others = ",".join(v for v in variants if v != error.variant)
        hint = f"; to register the others without it: chorus export {args.model} --variants {others}" if error.variant != "fp32" else ""
        print(f"chorus export: {error}{hint}", file=sys.stderr)
        return 1
    _print_result(report)
    return 0


def _serve(args: argparse.Namespace) -> int:
    """`bentoml serve` of the chorus service from the repo root, with the gRPC port passed as a setting.

    The server replaces this process: signals reach it directly (a `kill` of chorus stops the
    server rather than orphaning it), and `chorus up` does not keep torch in memory while serving.
    """
    from service.local_server import server_environment

    env = server_environment(CHORUS_GRPC_PORT=str(args.grpc_port))
    command = [sys.executable, "-m", "bentoml", "serve", "service.service:Chorus", "--host", args.host, "--port", str(args.port)]
    print(f"chorus: serving HTTP on http://{args.host}:{args.port} and KServe v2 gRPC on port {args.grpc_port}", flush=True)
    os.chdir(Path(__file__).resolve().parent.parent)
    os.execve(sys.executable, command, env)


def _up(args: argparse.Namespace) -> int:
    """Train what has no checkpoint yet, export what is not in the model store yet, then serve."""
    from service.settings import ServiceSettings

    workspace = Workspace.from_env()
    settings = ServiceSettings()
    served = {"birdcall": settings.birdcall_variant, "frames": settings.frames_variant}
    parser = build_parser()  # `chorus train MODEL` as typed: every option at its default
    for model in ("birdcall", "frames"):
        if not (workspace.checkpoint_dir(model) / artifacts.WEIGHTS).exists():
            print(f"chorus up: no {model} checkpoint in {workspace.home}; training the default profile", flush=True)
            _train(parser.parse_args(["train", model]))
        if not _export_serving(model, served[model]):
            return 1
    return _serve(args)


def _export_serving(model: str, served: str) -> bool:
    """Export a model's variants for `chorus up`. A variant that fails its gate and is not the one to
    serve is left out, loudly, rather than keep the server from starting (a CPU's int8 arithmetic
    can be what fails: docs/export.md); False, said on stderr, when the one to serve fails."""
    from export.parity import ParityError

    variants = EXPORT_VARIANTS[model]
    while True:
        try:
            _print_result(_export_model(model, variants))
            return True
        except ParityError as error:
            if error.variant in (served, "fp32"):
                print(f"chorus up: {error}; {model} {served} cannot be served", file=sys.stderr)
                return False
            variants = tuple(v for v in variants if v != error.variant)
            print(f"chorus up: warning: {error}; registering {model} without {error.variant}", file=sys.stderr, flush=True)


def _loadtest(args: argparse.Namespace) -> int:
    """Locust headless against a running server; exit 1 when the SLO is broken."""
    from loadtests.runner import SLO, read_summary, run_locust, verdict

    out_dir = args.out or Workspace.from_env().reports_dir("loadtest")
    prefix = run_locust(args.host, args.users, args.spawn_rate, args.duration, out_dir)
    summary = read_summary(prefix)
    result = {**summary, **verdict(summary, SLO(args.p99_ms, args.max_error_ratio)), "reports": str(out_dir)}
    _print_result(result)
    return 0 if result["slo_held"] else 1


def _number(kind: type[int] | type[float], low: float, high: float = math.inf, note: str = "") -> Callable[[str], float]:
    """An argparse type: a finite number of `kind` within [low, high], refused in the flag's own terms."""

    def parse(text: str) -> float:
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {'whole number' if kind is int else 'number'}") from None
        if not low <= value <= high:  # NaN fails this too
            bound = f"from {low:g} to {high:g}" if high < math.inf else f"{low:g}{note} or more"
            raise argparse.ArgumentTypeError(f"must be {bound}, got {text}")
        return value

    return parse


def _named_folder(text: str) -> Path:
    """A folder given by name: an empty one (an unset shell variable) would be the current folder."""
    if not text.strip():
        raise argparse.ArgumentTypeError("an empty folder name; name the output folder (e.g. --out results)")
    return Path(text)


def _analyze(args: argparse.Namespace) -> int:
    """Exit 0: every file analyzed; 1: some files failed (listed in errors.csv and the summary); 2: nothing ran;
    3: the run stopped part-way (what finished is kept; the same command resumes)."""
    from layout.machine import one_blas_thread

    one_blas_thread()  # before numpy loads, below
    from analyze.detections import UnknownSpeciesError
    from analyze.journal import JournalBusyError
    from analyze.run import RunStoppedError
    from analyze.sources import SourceError
    from analyze.writers import OutputError
    from batch.command import AnalyzeOptions, analyze
    from batch.ray import ClusterUnavailableError
    from features import FrontEndConfigError
    from layout.artifacts import ArtifactError
    from service.store import ModelNotFoundError

    refusals: tuple[type[Exception], ...] = (SourceError, UnknownSpeciesError, OutputError, FrontEndConfigError, ArtifactError, ValueError)
    refusals += (JournalBusyError, ModelNotFoundError, ClusterUnavailableError)  # nothing ran: exit 2, as for the others

    try:
        options = AnalyzeOptions(
            sources=args.paths,
            out=args.out,
            model=args.model,
            variant=args.variant,
            providers=args.providers,
            min_confidence=args.min_confidence,
            top_k=args.top_k or None,
            stride_seconds=args.stride,
            species_file=args.species,
            exclude_file=args.exclude,
            merge=args.merge,
            channels=args.channels,
            formats=frozenset(name.strip().lower() for name in args.formats.split(",") if name.strip()),
            retry_failed=args.retry_failed,
            workers=args.workers,
            batch_windows=args.batch_windows,
            ray=args.ray,
            ray_actors=args.ray_actors,
            ray_gpus_per_actor=args.ray_gpus_per_actor,
        )
        summary = analyze(options, fork_workers=True)  # a fresh process: no threads yet
    except RunStoppedError as error:
        print(f"chorus analyze: {error}", file=sys.stderr)
        return 3
    except refusals as error:
        print(f"chorus analyze: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("chorus analyze: stopped; the same command again resumes (finished files are kept)", file=sys.stderr)
        return 130  # 128 + SIGINT, as shells report it
    if summary.files_band_limited:
        print(
            f"chorus analyze: warning: {summary.files_band_limited} file(s) recorded below twice the model's top frequency hold"
            " nothing in its top bands: species calling there cannot be detected in them (files_band_limited)",
            file=sys.stderr,
        )
    if summary.audio_formats > 1 and "raven-combined" in options.formats:
        print(
            f"chorus analyze: warning: the files come in {summary.audio_formats} sample-rate/channel formats, and Raven opens a"
            " file sequence (combined.list.txt) only when all share one: open the per-file tables (the raven format, under raven/)",
            file=sys.stderr,
        )
    _print_result(summary.as_dict())
    return 1 if summary.files_failed else 0


def _bench(args: argparse.Namespace) -> int:
    out_dir = args.out or Workspace.from_env().reports_dir("bench" if args.suite == "serving" else f"bench-{args.suite}")
    if args.suite == "memory":
        from benchmarks.memory import run_memory

        _print_result({**run_memory(out_dir, soak_minutes=args.soak_minutes), "reports": str(out_dir)})
        return 0
    if args.suite == "analyze":
        from benchmarks.analyze import run_analyze_bench

        _print_result({**run_analyze_bench(out_dir), "reports": str(out_dir)})
        return 0
    if args.suite == "jobs":
        from benchmarks.jobs import run_jobs_bench

        _print_result({**run_jobs_bench(out_dir, seconds=max(args.seconds, 30.0)), "reports": str(out_dir)})
        return 0
    from benchmarks.run import run_bench

    result = run_bench(out_dir, seconds=args.seconds, steps=args.steps, device=args.device, api_workers=args.api_workers)
    _print_result({"ratios": {"birdcall": result["birdcall"]["ratios"], "frames": result["frames"]["ratios"]}, "reports": str(out_dir)})
    return 0


def _add_serve_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--host", default="0.0.0.0", help="HTTP bind address (default 0.0.0.0)")
    parser.add_argument("--port", type=int, default=3000, help="HTTP port (default 3000)")
    parser.add_argument("--grpc-port", type=int, default=3001, help="KServe v2 gRPC port (default 3001; 0 disables)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="chorus", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    train = sub.add_parser("train", help="train a model (generates stand-in data unless --data is given)")
    train.add_argument("model", choices=["birdcall", "frames"])
    train.add_argument("--profile", default="default", choices=["tiny", "default", "full"], help="data and model size")
    train.add_argument(
        "--data",
        type=Path,
        default=None,
        help="real data: birdcall takes a labels CSV (path,label[,split]); frames takes a folder of images",
    )
    train.add_argument(
        "--epochs",
        type=_number(int, 1),
        default=None,
        help="birdcall: train this many epochs (fewer if validation loss stops improving), with no time budget:"
        " the same data and seed then give the same weights. Default: the profile's time budget ends the loop",
    )
    train.set_defaults(handler=_train)
    export = sub.add_parser("export", help="export a trained model to ONNX variants, gate parity, register in BentoML")
    export.add_argument("model", choices=["birdcall", "frames"])
    export.add_argument(
        "--variants", default=None, help="comma-separated, fp32 among them (default: all; birdcall fp32,int8,fp16, frames fp32,fp16)"
    )
    export.set_defaults(handler=_export)
    up = sub.add_parser("up", help="train if needed, export if needed, serve")
    _add_serve_options(up)
    up.set_defaults(handler=_up)
    serve = sub.add_parser("serve", help="serve the registered models (REST, KServe v2 HTTP + gRPC, web page)")
    _add_serve_options(serve)
    serve.set_defaults(handler=_serve)
    load = sub.add_parser("loadtest", help="Locust headless SLO run against a running server")
    load.add_argument("--host", default="http://localhost:3000", help="server URL (loopback or your own test hosts only)")
    load.add_argument("--users", type=int, default=16, help="concurrent simulated users")
    load.add_argument("--spawn-rate", type=float, default=4.0, help="users started per second")
    load.add_argument("--duration", type=int, default=60, help="run time in seconds")
    load.add_argument("--p99-ms", type=float, default=2000.0, help="SLO: aggregated p99 latency in ms")
    load.add_argument("--max-error-ratio", type=float, default=0.0, help="SLO: allowed share of failed requests")
    load.add_argument("--out", type=Path, default=None, help="report folder (CSV + HTML); default artifacts/reports/loadtest")
    load.set_defaults(handler=_loadtest)
    analyze = sub.add_parser(
        "analyze", help="analyze field recordings (files, folders, globs, CSV manifests) into Raven/Audacity/CSV/NDJSON/Parquet tables"
    )
    analyze.add_argument("paths", nargs="+", help="audio files, folders (searched recursively), globs or CSV manifests (a path column)")
    analyze.add_argument("--out", type=_named_folder, required=True, help="output folder (tables, errors.csv, the resume journal)")
    analyze.add_argument("--model", default="birdcall:latest", help="model store tag (default birdcall:latest)")
    analyze.add_argument("--variant", default="fp32", choices=["fp32", "int8", "fp16"], help="ONNX variant (default fp32)")
    analyze.add_argument("--providers", default="auto", choices=["auto", "cpu", "cuda"], help="ONNX Runtime providers")
    analyze.add_argument(
        "--min-confidence", type=_number(float, 0, 1), default=None, help="score threshold (default: the model's calibrated one)"
    )
    analyze.add_argument(
        "--top-k", type=_number(int, 0), default=3, help="most species per window (default 3; 0: every species over the threshold)"
    )
    analyze.add_argument(
        "--stride", type=_number(float, 1e-3), default=None, help="seconds between window starts (default: the model's, 2.5)"
    )
    analyze.add_argument("--species", type=Path, default=None, help="file of species to keep, one per line")
    analyze.add_argument("--exclude", type=Path, default=None, help="file of species to leave out, one per line")
    analyze.add_argument("--merge", action="store_true", help="merge consecutive windows of a species into one detection")
    analyze.add_argument("--channels", default="mix", choices=["mix", "each"], help="mix channels, or analyze each on its own")
    analyze.add_argument(
        "--formats",
        default="raven,raven-combined,csv",
        help="comma-separated: raven, raven-combined, audacity, csv, ndjson, parquet, birdnet-csv",
    )
    analyze.add_argument("--retry-failed", action="store_true", help="analyze again files an earlier run could not read")
    analyze.add_argument(
        "--workers", type=_number(int, 0, note=" (one per core)"), default=0, help="decode processes (default: one per core)"
    )
    analyze.add_argument("--batch-windows", type=_number(int, 1), default=64, help="most windows per model run (default 64)")
    analyze.add_argument("--ray", default=None, metavar="ADDRESS", help="run on a Ray cluster: auto, or its address (ray://host:10001)")
    analyze.add_argument("--ray-actors", type=_number(int, 1), default=1, help="with --ray: model actors (default 1)")
    analyze.add_argument(
        "--ray-gpus-per-actor", type=_number(float, 0), default=0.0, help="with --ray: GPUs per model actor (default 0: CPU)"
    )
    analyze.set_defaults(handler=_analyze)
    bench = sub.add_parser("bench", help="benchmarks: serving (default), memory, analyze, jobs; tables, plots, ratios")
    bench.add_argument(
        "suite",
        nargs="?",
        default="serving",
        choices=["serving", "memory", "analyze", "jobs"],
        help="serving: raw engine vs served (batching on/off) vs seed-style baseline; memory: bombs, held bodies and a soak; "
        "analyze: chorus analyze's speed, memory and robustness; jobs: /classify latency while a job runs",
    )
    bench.add_argument(
        "--soak-minutes",
        type=_number(float, 0),
        default=30.0,
        help="memory: minutes of the load-test mix (0: bombs and held bodies only)",
    )
    bench.add_argument(
        "--seconds",
        type=_number(float, 1),
        default=8.0,
        help="serving: seconds per concurrency level; jobs: seconds of /classify load while the job runs (30 or more)",
    )
    bench.add_argument("--steps", type=_number(int, 1), default=20, help="serving: DDIM steps for the frames runs")
    bench.add_argument("--out", type=Path, default=None, help="results folder; default artifacts/reports/bench")
    bench.add_argument(
        "--device",
        choices=("cpu", "cuda"),
        default="cpu",
        help="serving: where the engine and the torch baselines run (cuda needs onnxruntime-gpu)",
    )
    bench.add_argument(
        "--api-workers", type=_number(int, 0), default=0, help="serving: API worker processes of the servers (default: the server's own, 1)"
    )
    bench.set_defaults(handler=_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("BENTOML_DO_NOT_TRACK", "true")
    args = build_parser().parse_args(argv)
    return args.handler(args)


if __name__ == "__main__":
    raise SystemExit(main())
