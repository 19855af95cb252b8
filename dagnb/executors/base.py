"""The Executor protocol: what the runner hands an executor and what it gets back.

An executor runs one attempt of one step. The runner has already resolved everything
(environment, secrets, upstream outputs, the output directory); the executor only runs
the command or function, streams its output through ``task.log`` (an in-process Python
step's displays through ``task.show``, given to its output capture) and reports how it
ended. Timeouts and cancellation arrive as ``asyncio.CancelledError``: the executor must
stop what it started (kill the process group, close the call) before re-raising.

Errors: a non-zero exit is an :class:`Outcome`, not an exception; a failure of the
machinery that may pass (a dropped engine connection) raises
:class:`~dagnb.errors.TransientError`, which the executor's circuit breaker counts; an
exception in user Python code raises :class:`~dagnb.errors.StepFailed`, or, when it is
transient (a ``ConnectionError``), ``TransientError(..., in_step_code=True)``: retried,
but not counted against the executor.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

from dagnb.executors.capture import DisplaySink
from dagnb.model.results import NO_RESULT
from dagnb.model.step import Step

if TYPE_CHECKING:
    from dagnb.cache.secret_scan import SecretsInForce

__all__ = [
    "NO_RESULT", "QUEUES", "SIMULATED", "Availability", "Executor", "Input", "Outcome", "Task",
]

# The capability of an executor that runs nothing (a test double): the scheduler never
# stores its outcomes, which a real run with the same step key would be served as hits.
SIMULATED = "simulated"
# The capability of an executor whose attempts may wait in a queue of its own (a dask
# cluster's, for a free worker): it calls ``task.began()`` once one leaves it, and the
# runner says the step is running, and starts its timeout, then, not before.
QUEUES = "queues"


LogSink = Callable[[str, str], None]  # (stream, line) -> None


class Input:
    """One upstream step's outputs as a downstream step receives them."""

    __slots__ = ("_path", "handle", "name", "result")

    def __init__(
        self, name: str, path: Path | str, result: Any = NO_RESULT, handle: Any = None
    ) -> None:
        self.name = name
        self._path = path  # text until asked for: most Python steps never look
        self.result = result  # the upstream Python result, when it has one
        self.handle = handle  # the executor's own handle (a dagger Directory), if any

    @property
    def path(self) -> Path:
        """The host folder holding the upstream step's outputs."""
        if not isinstance(self._path, Path):
            self._path = Path(self._path)
        return self._path

    def __repr__(self) -> str:
        return f"Input({self.name!r}, {str(self._path)!r})"


class Task:
    """Everything one attempt of a step needs; built by the runner.

    The contract's paths and environment are made on first use: an in-process Python
    step reads none of them, and building them for every step would cost more than a
    no-op step itself.
    """

    __slots__ = (
        "__dict__",
        "attempt",
        "base_dir",
        "inputs",
        "log",
        "make_folder",
        "run_id",
        "secrets",
        "show",
        "step",
        "step_dir",
        "withheld",
    )

    # Set by an executor that could not stop the attempt (an async step that ignored its
    # cancel runs on): it may still write to out_dir, so no later attempt may use it.
    left_running = False
    # Set by the runner when the step runs whatever a cache holds (cache=False, refresh),
    # has no key, or is kept a while only (a ttl, cache="session"): an executor with a
    # cache of its own (Dagger's exec cache, which keeps no age) must not serve it either.
    fresh = False
    # Set by the runner: the digest of the step's cache key ("" when it has none), which
    # an executor with a cache of its own puts in that cache's key, so that it is at
    # least as fine as dagnb's (a new cache_version or key_fn value runs the step).
    key = ""
    # Set by the runner: masks every secret of the run (other steps' too, which an
    # upstream's files may hold) in what an executor's error message takes from the step's
    # output; its own words around that are shown as they are (``StepError.masked``).
    mask: Callable[[str], str] = staticmethod(lambda text: text)  # (no secret)
    # Set by the runner: the run's cache folder, left out of a mounted folder holding it
    # by an upload of it (as the step's key leaves it out).
    cache_folder: Path | None = None
    # Set by the runner for a Python step run in this process: called with the task once
    # an attempt, before ``dagnb.current().inputs`` makes the folders of packed upstream
    # results, which the step then reads from disk as a command would (see StepContext)
    on_input_paths: Callable[[Task], None] | None = None
    # Set by the runner when the run has secrets: what a dagnb.Memory call that misses in
    # an in-process Python step keeps of them (none: see dagnb.cache.secret_scan)
    cache_secrets: SecretsInForce | None = None
    # Set by the runner: the names of the settings' secrets the run masks but no step
    # declares (the registry's, the credentials of the run's store, which may be its
    # cache_directory option rather than the setting): a step run in another process
    # keeps them out of what it caches and prints there too
    masked_names: frozenset[str] = frozenset()
    # Set by the runner for an executor with the QUEUES capability: called, on the run's
    # loop, when the attempt leaves the executor's queue and starts (later calls: no-ops)
    began: Callable[[], None] | None = None

    def __init__(
        self,
        *,
        step: Step,
        attempt: int,
        inputs: Mapping[str, Input],
        secrets: Mapping[str, str],
        base_dir: Path,
        log: LogSink,
        step_dir: Path | str | None = None,
        run_id: str = "",
        out_dir: Path | None = None,
        in_dir: Path | None = None,
        params_file: Path | None = None,
        env: Mapping[str, str] | None = None,
        withheld: frozenset[str] = frozenset(),
        make_folder: Callable[[], object] | None = None,
        show: DisplaySink | None = None,
    ) -> None:
        self.step, self.attempt, self.inputs = step, attempt, inputs
        # where an in-process Python step's rich outputs (IPython displays) go, if kept
        self.show = show
        # makes (and leases) the run's folder when a path under step_dir is first asked
        # for: an in-process Python step that writes no file then costs no disk work
        self.make_folder = make_folder
        # secrets other steps declare: removed from the host environment this step sees
        self.withheld = withheld
        self.secrets, self.base_dir, self.log, self.run_id = secrets, base_dir, log, run_id
        if step_dir is None and out_dir is None:
            raise TypeError("Task needs step_dir= or out_dir=")
        # kept as given (often text): a Path is made only if a path is asked for
        self.step_dir = step_dir if step_dir is not None else Path(out_dir).parent  # type: ignore[arg-type]
        if out_dir is None and in_dir is None and params_file is None and env is None:
            return  # (the runner's tasks: their paths are made on first use)
        for name, value in (
            ("out_dir", out_dir),
            ("in_dir", in_dir),
            ("params_file", params_file),
            ("env", env),
        ):
            if value is not None:
                self.__dict__[name] = value

    @functools.cached_property
    def out_dir(self) -> Path:
        """Fresh, empty folder for the step's outputs ($DAGNB_OUT); made by the executor."""
        self._folder_made()
        return Path(f"{self.step_dir}/out")

    @functools.cached_property
    def in_dir(self) -> Path:
        """Holds one entry per upstream step ($DAGNB_IN)."""
        self._folder_made()
        return Path(f"{self.step_dir}/in")

    @functools.cached_property
    def params_file(self) -> Path:
        """The step's params as JSON ($DAGNB_PARAMS)."""
        self._folder_made()
        return Path(f"{self.step_dir}/params.json")

    def _folder_made(self) -> None:
        if self.make_folder is not None:
            self.make_folder()

    def folder_texts(self) -> tuple[str, str, str]:
        """:attr:`out_dir`, :attr:`in_dir` and :attr:`params_file` as text (the run's
        folder made): what starting a process needs. Three Paths made and turned back
        into text were an eighth of what a shell step cost the event loop in Python."""
        given = self.__dict__
        if "out_dir" in given or "in_dir" in given or "params_file" in given:
            return str(self.out_dir), str(self.in_dir), str(self.params_file)
        self._folder_made()
        base = self.step_dir  # (text as the runner gives it: a Path's, its names plain)
        return f"{base}/out", f"{base}/in", f"{base}/params.json"

    @functools.cached_property
    def env(self) -> Mapping[str, str]:
        """The step's env plus the contract's DAGNB_* variables (no secrets)."""
        from dagnb.model.contract import contract_env

        out_dir, in_dir, params_file = self.folder_texts()
        return contract_env(
            self.step,
            out_dir=out_dir,
            in_dir=in_dir,
            params_file=params_file,
            run_id=self.run_id,
            attempt=self.attempt,
        )


@dataclasses.dataclass
class Outcome:
    """How one attempt ended."""

    exit_code: int | None
    result: Any = NO_RESULT
    handle: Any = None  # passed to downstream steps on the same executor
    image_ref: str | None = None  # the image that ran, by digest (container executors)


@dataclasses.dataclass(frozen=True)
class Availability:
    """Whether an executor can run here, and why not."""

    available: bool
    reason: str = ""


@runtime_checkable
class Executor(Protocol):
    """Runs one attempt of a step. See the module docstring for the contract."""

    name: str
    # of "shell", "argv", "python", "containers", "services"; SIMULATED: nothing really
    # runs; QUEUES: it calls task.began() when an attempt leaves a queue of its own
    capabilities: frozenset[str]

    def availability(self) -> Availability:
        """Whether this executor can run steps here (cheap; no connection is opened)."""
        ...

    async def execute(self, task: Task) -> Outcome:
        """Run one attempt of ``task.step``."""
        ...

    async def aclose(self) -> None:
        """Release connections and processes; the executor may be used again after."""
        ...
