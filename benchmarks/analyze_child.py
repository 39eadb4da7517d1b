"""`chorus analyze` as benchmarks.analyze measures it, in a fresh process of its own:

    python -m benchmarks.analyze_child timed SOURCE OUT    # audio and wall seconds of analyze()
    python -m benchmarks.analyze_child memory SOURCE OUT   # peak RSS of the command and its largest worker

The last stdout line is a JSON object. Like the command, the process runs OpenBLAS on one thread.
"""

from __future__ import annotations

import contextlib
import json
import sys
import threading
import time
from pathlib import Path

from layout.machine import one_blas_thread


def timed(source: Path, out: Path) -> dict:
    """The command's run as `chorus analyze` makes it (decode workers forked), timed from its
    analyze() call: workers, model, every file and the tables; not the interpreter's imports."""
    from batch.command import AnalyzeOptions, analyze

    options = AnalyzeOptions(sources=[str(source)], out=out, formats=frozenset({"csv"}))
    started = time.perf_counter()
    summary = analyze(options, fork_workers=True)
    return {"audio_seconds": summary.audio_hours * 3600, "wall_seconds": time.perf_counter() - started}


def memory(source: Path, out: Path) -> dict:
    """The command's own VmHWM, and its workers' largest RSS sampled by a thread (getrusage's
    ru_maxrss would not do: a process started by fork + exec carries its parent's RSS at the fork
    into its maximum). The sampling thread rules out forking the workers: they are spawned."""
    import psutil

    from batch.command import AnalyzeOptions, analyze

    me, largest, stop = psutil.Process(), [0], threading.Event()

    def watch() -> None:
        while not stop.wait(0.1):
            for child in me.children(recursive=True):
                with contextlib.suppress(psutil.Error):  # it ended between the listing and the reading
                    largest[0] = max(largest[0], child.memory_info().rss)

    threading.Thread(target=watch, daemon=True).start()
    options = AnalyzeOptions(sources=[str(source)], out=out, formats=frozenset({"csv"}), min_confidence=0.0, top_k=3)
    summary = analyze(options)
    stop.set()
    mine = int(Path("/proc/self/status").read_text().split("VmHWM:")[1].split()[0]) / 1024
    return {"summary": summary.as_dict(), "peak_rss_mb": round(mine), "largest_worker_peak_rss_mb": round(largest[0] / 2**20)}


MODES = {"timed": timed, "memory": memory}


def main(argv: list[str] | None = None) -> None:
    mode, source, out = argv if argv is not None else sys.argv[1:]
    one_blas_thread()  # before numpy loads (the modes import it)
    print(json.dumps(MODES[mode](Path(source), Path(out))), flush=True)


if __name__ == "__main__":
    main()
