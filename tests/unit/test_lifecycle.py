"""service/lifecycle.py's Drain: what happens after SIGTERM, up to handing it on.

The tests call the handler Drain installs directly, so no signal reaches the test process (only the
child of the last test gets a real one), and SIGTERM's handler is put back after every test.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from typing import Any

import pytest

from service.lifecycle import Activity, Drain

LOGGER = "chorus.lifecycle"
ROOT = Path(__file__).parents[2]
BOUND = 5.0
"""The longest any test waits for something the drain should do within milliseconds."""


@pytest.fixture(autouse=True)
def sigterm_restored():
    """Drain.install replaces SIGTERM's handler; leave the test process's as it was."""
    before = signal.getsignal(signal.SIGTERM)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, before)


class Previous:
    """Who held SIGTERM before the drain (uvicorn, in the service): records what it was handed."""

    def __init__(self) -> None:
        self.calls: list[tuple[int, FrameType | None]] = []
        self.called = asyncio.Event()

    def __call__(self, sig: int, frame: FrameType | None) -> None:
        self.calls.append((sig, frame))
        self.called.set()


def installed(drain: Drain, previous: Any) -> Any:
    """Install `drain` over `previous`; its SIGTERM handler."""
    signal.signal(signal.SIGTERM, previous)
    drain.install()
    handler = signal.getsignal(signal.SIGTERM)
    assert callable(handler) and handler is not previous
    return handler


@pytest.fixture
def log(caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch) -> Iterator[pytest.LogCaptureFixture]:
    """The drain's log lines, also after a test in this session applied BentoML's logging config
    (a dictConfig that disables the loggers existing then, and stops some propagating)."""
    logger = logging.getLogger(LOGGER)
    monkeypatch.setattr(logger, "disabled", False)
    monkeypatch.setattr(logger, "propagate", False)  # caught here, once, not again through the root
    caplog.set_level(logging.INFO, logger=LOGGER)
    logger.addHandler(caplog.handler)
    yield caplog
    logger.removeHandler(caplog.handler)


def lifecycle_lines(caplog: pytest.LogCaptureFixture, level: int) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.name == LOGGER and r.levelno == level]


def test_grace_running_out_hands_over_with_work_in_flight_and_warns(log):
    """A request that outlives the grace must not hold the shutdown: the signal goes on, and the
    log says work was cut off (an operator's only trace of requests that were dropped)."""
    grace = 0.05
    waited: list[float] = []

    async def scenario() -> Previous:
        previous, work, starts = Previous(), Activity(), []

        async def is_idle() -> bool:
            return work.active == 0

        drain = Drain("test", is_idle, grace, on_start=lambda: starts.append(1), poll_seconds=0.01)
        handler = installed(drain, previous)
        frame = sys._getframe()
        with work:  # in flight for the whole test: never finishes
            began = time.monotonic()
            handler(signal.SIGTERM, frame)
            assert drain.draining and previous.calls == []  # it waits before handing on
            await asyncio.wait_for(previous.called.wait(), BOUND)
            waited.append(time.monotonic() - began)
        assert starts == [1]
        assert previous.calls == [(signal.SIGTERM, frame)]  # the very signal and frame it took
        return previous

    asyncio.run(scenario())
    assert waited[0] >= grace  # it did wait the grace out
    assert len(lifecycle_lines(log, logging.WARNING)) == 1
    assert "grace ran out with work in flight" in lifecycle_lines(log, logging.WARNING)[0]


def test_work_that_finishes_within_the_grace_hands_over_without_a_warning(log):
    """The counterpart of the test above: the warning is for work cut off, not for every drain."""

    async def scenario() -> Previous:
        previous, polls = Previous(), []

        async def is_idle() -> bool:  # the last request ends at the third look
            polls.append(1)
            return len(polls) >= 3

        handler = installed(Drain("test", is_idle, grace_seconds=BOUND, poll_seconds=0.01), previous)
        handler(signal.SIGTERM, None)
        await asyncio.wait_for(previous.called.wait(), BOUND)
        assert len(polls) == 3  # handed on as soon as idle, not at the end of the grace
        return previous

    assert asyncio.run(scenario()).calls == [(signal.SIGTERM, None)]
    assert lifecycle_lines(log, logging.WARNING) == []
    assert any("drained in" in line for line in lifecycle_lines(log, logging.INFO))


def test_a_second_sigterm_hands_over_at_once():
    """An operator (or the kubelet past its grace) who sends SIGTERM again wants the process gone
    now, not after the rest of a long grace."""

    async def scenario() -> Previous:
        previous, started = Previous(), asyncio.Event()

        async def never_idle() -> bool:
            return False

        drain = Drain("test", never_idle, grace_seconds=60, on_start=started.set, poll_seconds=0.01)
        handler = installed(drain, previous)
        handler(signal.SIGTERM, None)
        await asyncio.wait_for(started.wait(), BOUND)
        assert previous.calls == []
        handler(signal.SIGTERM, None)
        # Handed on inside the handler itself, with no turn of the event loop, let alone 60 s.
        assert previous.calls == [(signal.SIGTERM, None)]
        return previous  # asyncio.run cancels the first drain, still waiting out its grace

    assert asyncio.run(scenario()).calls == [(signal.SIGTERM, None)]


def test_the_signal_is_handed_on_once_even_when_the_first_drain_ends_after_a_second_sigterm():
    async def scenario() -> Previous:
        previous, started, work_done = Previous(), asyncio.Event(), asyncio.Event()

        async def idle() -> bool:
            return work_done.is_set()

        drain = Drain("test", idle, grace_seconds=60, on_start=started.set, poll_seconds=0.01)
        handler = installed(drain, previous)
        handler(signal.SIGTERM, None)
        await asyncio.wait_for(started.wait(), BOUND)
        handler(signal.SIGTERM, None)
        work_done.set()  # the first drain now finishes: it must not hand the signal on again
        assert drain._task is not None
        await asyncio.wait_for(drain._task, BOUND)
        return previous

    assert asyncio.run(scenario()).calls == [(signal.SIGTERM, None)]


def test_a_process_that_ignored_sigterm_still_ignores_it_once_drained(monkeypatch):
    raised: list[int] = []
    monkeypatch.setattr(signal, "raise_signal", raised.append)

    async def scenario() -> Drain:
        async def idle() -> bool:
            return True

        drain = Drain("test", idle, grace_seconds=1, poll_seconds=0.01)
        installed(drain, signal.SIG_IGN)(signal.SIGTERM, None)
        await asyncio.sleep(0)  # the drain starts on the loop's next turn
        assert drain._task is not None
        await asyncio.wait_for(drain._task, BOUND)
        return drain

    asyncio.run(scenario())
    assert raised == []


def test_with_no_previous_handler_sigterm_is_raised_again_at_its_default(monkeypatch):
    """Nobody held SIGTERM before (SIG_DFL): once drained, the process must end as SIGTERM would
    have ended it. raise_signal is faked here (the real one would end the test run); what matters
    is that the default disposition is back when it is raised, or the drain's own handler would
    take the signal again and nothing would stop the process."""
    raised: list[tuple[int, object]] = []

    async def scenario() -> None:
        done = asyncio.Event()

        def raise_signal(sig: int) -> None:
            raised.append((sig, signal.getsignal(signal.SIGTERM)))
            done.set()

        monkeypatch.setattr(signal, "raise_signal", raise_signal)

        async def idle() -> bool:
            return True

        handler = installed(Drain("test", idle, grace_seconds=0.05, poll_seconds=0.01), signal.SIG_DFL)
        handler(signal.SIGTERM, None)
        await asyncio.wait_for(done.wait(), BOUND)

    asyncio.run(scenario())
    assert raised == [(signal.SIGTERM, signal.SIG_DFL)]


def test_with_no_previous_handler_a_drained_process_ends_by_sigterm():
    """The same for real, in a child process: a process that drained ends killed by SIGTERM (exit
    status -15, what a supervisor expects), not by an exception, and not left running."""
    child = textwrap.dedent(
        """
        import asyncio, os, signal
        from service.lifecycle import Drain

        async def main():
            async def idle():
                return True

            Drain("child", idle, grace_seconds=0.05, poll_seconds=0.01).install()
            os.kill(os.getpid(), signal.SIGTERM)
            await asyncio.Event().wait()  # only the drain's hand-over ends this

        asyncio.run(main())
        """
    )
    result = subprocess.run([sys.executable, "-c", child], capture_output=True, text=True, timeout=15, cwd=ROOT)
    assert result.returncode == -signal.SIGTERM, result.stderr
