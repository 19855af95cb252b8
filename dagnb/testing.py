"""Test doubles for code that builds and runs dagnb graphs, as httpx ships ``MockTransport``.

dagnb's own tests use them, and so can yours::

    from dagnb.testing import Clock, FakeExecutor, isolated, wait_until

    def test_my_pipeline_retries_a_lost_engine(tmp_path):
        engine = FakeExecutor()
        engine.script("load", TransientError("engine went away"), 0)
        clock = Clock()
        with isolated(cache_directory=tmp_path / "cache"):
            run = my_graph().run(executor=engine, sleep=clock.async_sleep)
        assert run.states()["load"] == "succeeded" and engine.calls == ["load", "load"]

- :func:`isolated` runs a block in a fresh :class:`~dagnb.config.Context`: settings read
  afresh, a temporary cache folder (unless ``cache_directory`` is given), and none of the
  executors, circuit breakers, notebook session or other process-wide objects made
  before it; the previous context is back afterwards.
- :class:`Clock` is a clock moved by hand, with a ``sleep`` that moves it instead of
  waiting: pass it wherever dagnb takes ``clock=`` or ``sleep=``.
- :class:`FakeExecutor` runs nothing: each attempt of a step ends as its script says
  (an exit code, an :class:`~dagnb.executors.base.Outcome` or an exception), and it can
  be taken "down" to make every attempt lose the engine, which trips the circuit breaker.
  What it scripts is never stored in the cache.
- :func:`wait_until` polls a condition that another thread makes true (a background
  run, a widget), up to a timeout, instead of a fixed ``time.sleep``.

This module imports neither IPython nor ipywidgets, nor pytest.
"""

from __future__ import annotations

import atexit
import shutil
import signal
import subprocess
import tempfile
import time
from collections import defaultdict, deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any, TypeVar

from dagnb.config import Context, configure, use_context
from dagnb.errors import TransientError
from dagnb.executors.base import SIMULATED, Availability, Outcome, Task

__all__ = ["Clock", "FakeExecutor", "isolated", "signalled_once", "terminal_signals",
           "wait_until"]

T = TypeVar("T")
Scripted = int | Outcome | BaseException


@contextmanager
def isolated(**settings: Any) -> Iterator[Context]:
    """Run the block in a fresh dagnb context, then put the previous one back.

    Inside, settings are read again from the config file and the environment (then
    changed by ``settings``, as :func:`dagnb.configure` would), and every process-wide
    object (executors, circuit breakers, the notebook session...) is made anew on first
    use. Nothing made inside leaks out. The cache is a fresh temporary folder, removed
    when the process ends (a run made in the block can still be read after it: its
    logs, its outputs), unless ``cache_directory`` is given: the project's cache (from
    its config file or ``DAGNB_CACHE_DIRECTORY``) is never read or written.

    Parameters
    ----------
    **settings
        Settings to :func:`dagnb.configure` in the fresh context, for example
        ``executor="local"``, or ``cache_directory=tmp_path / "cache"`` to keep the
        cache after the block (or share it between blocks).

    Yields
    ------
    Context
        The fresh context (``context.names()`` lists what was made in it).

    Examples
    --------
    >>> with isolated(max_retries=2):
    ...     dagnb.settings().max_retries
    2
    """
    with use_context() as fresh, _scratch_cache(settings) as scratch:
        configure(**scratch, **settings)
        yield fresh


@contextmanager
def _scratch_cache(settings: dict[str, Any]) -> Iterator[dict[str, str]]:
    """A temporary ``cache_directory`` for the block, unless the caller names one: what
    a test runs must never land in the project's cache. Removed at exit, not at the
    block's end: a run's logs and outputs are read from it after the block too (they
    would read as empty), and a background run the test left may still write there."""
    if "cache_directory" in settings:
        yield {}
        return
    folder = tempfile.mkdtemp(prefix="dagnb-isolated-")
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    yield {"cache_directory": folder}


class Clock:
    """A clock moved by hand, and a ``sleep`` that moves it instead of waiting.

    Parameters
    ----------
    now
        The time the clock starts at, in seconds.

    Attributes
    ----------
    now : float
        The current time; set it or add to it (``clock.now += 60``).
    slept : list of float
        Every delay asked of :meth:`sleep` or :meth:`async_sleep`, in order.

    Examples
    --------
    >>> clock = Clock(now=100.0)
    >>> clock.sleep(5)
    >>> clock(), clock.slept
    (105.0, [5])
    """

    def __init__(self, now: float = 1_000_000.0) -> None:
        self.now = now
        self.slept: list[float] = []

    def __call__(self) -> float:
        """The current time (use the clock itself where a ``clock=`` callable is asked)."""
        return self.now

    def advance(self, seconds: float) -> float:
        """Move the clock forward by ``seconds``; the new time."""
        self.now += seconds
        return self.now

    def sleep(self, seconds: float) -> None:
        """Record the delay and move the clock by it, at once (a ``time.sleep`` twin)."""
        self.slept.append(seconds)
        self.advance(seconds)

    async def async_sleep(self, seconds: float) -> None:
        """:meth:`sleep` for async callers (an ``asyncio.sleep`` twin, as ``run(sleep=)``)."""
        self.sleep(seconds)


class FakeExecutor:
    """An executor that runs nothing: each attempt of a step ends as scripted.

    An attempt with nothing scripted succeeds (exit code 0). Every attempt is recorded
    in :attr:`calls`, and the step's output folder is made, as a real executor would.

    Parameters
    ----------
    name
        The executor's name (its circuit breaker and status rows use it).
    up
        False makes every attempt raise :class:`~dagnb.errors.TransientError`, as an
        engine that went away does, until :attr:`up` is set again.
    capabilities
        What it claims to run (``"shell"``, ``"argv"``, ``"python"``, ``"containers"``).
        :data:`~dagnb.executors.base.SIMULATED` is always added: what it scripts is
        never stored in the cache, where a real run of the same step would find it.

    Attributes
    ----------
    calls : list of str
        The step name of every attempt, in the order they were made.
    up : bool
        Whether the fake engine answers.

    Examples
    --------
    >>> engine = FakeExecutor().script("train", 1, 0)  # fails once, then succeeds
    >>> graph.run(executor=engine, retries={"max_retries": 1})  # doctest: +SKIP
    """

    def __init__(
        self,
        name: str = "fake",
        *,
        up: bool = True,
        capabilities: Iterable[str] = ("shell", "argv", "python"),
    ) -> None:
        self.name = name
        self.up = up
        # a cache hit made of a scripted outcome would pass for the step's real result
        self.capabilities = frozenset(capabilities) | {SIMULATED}
        self.calls: list[str] = []
        self._scripts: defaultdict[str, deque[Scripted]] = defaultdict(deque)

    def script(self, step: str, *attempts: Scripted) -> FakeExecutor:
        """Queue how the next attempts of ``step`` end; the executor itself (to chain).

        Parameters
        ----------
        step
            The step's name.
        *attempts
            One per attempt, in order: an exit code, an :class:`Outcome`, or an
            exception instance to raise (``TransientError(...)`` is retried).
        """
        self._scripts[step].extend(attempts)
        return self

    def availability(self) -> Availability:
        """Always available: the fake never needs an engine to be found."""
        return Availability(True, "a test double (dagnb.testing.FakeExecutor)")

    async def execute(self, task: Task) -> Outcome:
        """End this attempt of ``task.step`` as scripted."""
        self.calls.append(task.step.name)
        if not self.up:
            raise TransientError(f"{self.name}: lost the engine (FakeExecutor.up is False)")
        task.out_dir.mkdir(parents=True, exist_ok=True)
        queued = self._scripts[task.step.name]
        scripted = queued.popleft() if queued else 0
        if isinstance(scripted, BaseException):
            raise scripted
        return scripted if isinstance(scripted, Outcome) else Outcome(exit_code=scripted)

    async def aclose(self) -> None:
        """Nothing to release."""


def wait_until(
    predicate: Callable[[], T],
    timeout: float = 5.0,
    *,
    interval: float = 0.01,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> T:
    """Call ``predicate`` until it returns something true, or ``timeout`` seconds pass.

    For a condition another thread makes true: a background run reaching a state, a
    widget showing it. Like :meth:`threading.Condition.wait_for`, it returns the last
    value, so ``assert wait_until(...)`` fails when time runs out.

    Parameters
    ----------
    predicate
        Called with no arguments, first at once, then every ``interval`` seconds.
    timeout
        Seconds to keep trying.
    interval
        Seconds between calls.
    clock, sleep
        Where time comes from and how to wait; inject a :class:`Clock` and its
        ``sleep`` to test code that uses this without waiting.

    Returns
    -------
    object
        The predicate's last value: true, or false when the timeout passed.

    Examples
    --------
    >>> run = graph.run(background=True)  # doctest: +SKIP
    >>> assert wait_until(lambda: run.states()["train"] == "running", timeout=10)  # doctest: +SKIP
    """
    deadline = clock() + timeout
    while not (value := predicate()) and clock() < deadline:
        sleep(interval)
    return value


def terminal_signals() -> None:
    """``subprocess.Popen(..., preexec_fn=terminal_signals)``: the child takes SIGINT,
    SIGTERM and SIGHUP as a command a shell starts does, whatever this process ignores
    (a CI job run under ``nohup`` ignores SIGHUP, which ``dagnb run`` then keeps
    ignoring, as a job started so must)."""
    for number in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(number, signal.SIG_DFL)


def signalled_once(process: subprocess.Popen[str], ready: Callable[[], object],
                   number: int, *, wait: float = 30.0,
                   timeout: float = 60.0) -> tuple[str, str, float]:
    """Send signal ``number`` to ``process`` once ``ready()`` is true (``wait`` seconds at
    most; an AssertionError after), and wait for it to end: its stdout, its stderr, and
    the seconds from the signal to its exit. A process still running then is killed."""
    try:
        assert wait_until(ready, timeout=wait), "the process never got there"
        assert process.poll() is None, "the process ended before the signal"
        sent = time.monotonic()
        process.send_signal(number)
        out, err = process.communicate(timeout=timeout)
        return out, err, time.monotonic() - sent
    finally:
        if process.poll() is None:
            process.kill()
            process.communicate()
