"""The engine's progress output, kept in each run's folder as ``engine.log``.

dagger-io sends what the engine's session prints (the ``dagger session`` process's
progress and errors) and its own console output to ``Config(log_output=...)``; without
one they are dropped. The connection is the process's and outlives runs, so its
``log_output`` is one :class:`EngineLog` whose lines go to the ``engine.log`` of every
run that has a Dagger step under way (:meth:`EngineLog.attached`, by the executor around
each step); between such steps they are dropped, as before. Each line is masked with
every secret a Dagger step of this process was given, before it reaches the disk.

The stream has no file descriptor on purpose: the SDK then pipes the session's stderr
through :meth:`write` (from a thread of its own) instead of handing the child the file,
which would bypass the masking.

The last lines are kept too, masked: when the CLI cannot start an engine (no Docker),
the SDK's error only says that it exited, and :meth:`EngineLog.reason` gives its own
words.

What appears depends on how the engine was reached: a session the SDK starts (the
``dagger`` CLI) writes its progress here; under ``dagger run`` the progress is the TUI's,
and the file holds only what the SDK itself prints.
"""

from __future__ import annotations

import collections
import contextlib
import io
import logging
import threading
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from dagnb.model.masking import Masker

__all__ = ["ENGINE_LOG", "EngineLog"]

ENGINE_LOG = "engine.log"
_TAIL = 50  # lines kept for reason()
_DRAIN_WAIT = 2.0  # seconds reason() waits for the failed session's last lines
log = logging.getLogger("dagnb.executors.dagger.enginelog")


class EngineLog(io.TextIOBase):
    """A text stream that writes, masked, to the ``engine.log`` of each attached run."""

    def __init__(self) -> None:
        super().__init__()
        self._lock = threading.Lock()
        self._drained = threading.Condition(self._lock)
        self._ended = 0  # sessions whose stderr closed (writelines returned)
        self._tail: collections.deque[str] = collections.deque(maxlen=_TAIL)  # masked
        self._files: dict[Path, IO[str]] = {}
        self._users: collections.Counter[Path] = collections.Counter()
        self._secrets: set[str] = set()
        self._mask = Masker()

    @contextlib.contextmanager
    def attached(self, run_folder: Path, secrets: Iterable[str] = ()) -> Iterator[Path]:
        """While the block runs, the engine's lines also go to ``run_folder/engine.log``
        (opened for appending on the first of the run's steps, closed after its last)."""
        path = Path(run_folder) / ENGINE_LOG
        with self._lock:
            self._learn(secrets)
            kept = bool(self._users[path]) or self._open(path)
            if kept:
                self._users[path] += 1
        if not kept:  # no file (a folder that cannot take one): the lines are dropped
            yield path
            return
        try:
            yield path
        finally:
            with self._lock:
                self._users[path] -= 1
                if not self._users[path]:
                    del self._users[path]
                    self._files.pop(path).close()

    def _open(self, path: Path) -> bool:
        """Open ``path`` for appending; a folder that cannot take it never fails a step."""
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            self._files[path] = path.open("a", encoding="utf-8")
        except OSError as exc:
            log.warning("dagnb: the engine's output is not kept: %s", exc)
            return False
        return True

    def _learn(self, secrets: Iterable[str]) -> None:
        new = {value for value in secrets if value} - self._secrets
        if new:
            self._secrets |= new
            self._mask = Masker(self._secrets)

    def write(self, text: str) -> int:
        with self._lock:
            masked = self._mask(text)
            self._tail.extend(line for line in masked.splitlines() if line.strip())
            for file in self._files.values():
                file.write(masked)
                file.flush()
        return len(text)

    def writelines(self, lines: Iterable[str]) -> None:
        """The SDK drains a session's stderr with one call, which returns when the
        ``dagger`` process closed it (it exited)."""
        try:
            for line in lines:
                self.write(line)
        finally:
            with self._drained:
                self._ended += 1
                self._drained.notify_all()

    def begin_session(self) -> int:
        """Before a session starts: forget the kept lines; returns what :meth:`reason`
        takes to wait for this session's."""
        with self._lock:
            self._tail.clear()
            return self._ended

    def reason(self, begun: int) -> str:
        """Why the session begun with :meth:`begin_session` (``begun``) ended, in the
        CLI's words, masked: its last line that says "error" (``Error: `` left out), else
        its last line; "" when it said nothing. Waits a moment for its stderr to close,
        so that its last lines are in."""
        with self._drained:
            self._drained.wait_for(lambda: self._ended > begun, _DRAIN_WAIT)
            lines = list(self._tail)
        errors = [line for line in lines if "error" in line.lower()]
        last = (errors or lines or [""])[-1].strip()
        return last.removeprefix("Error: ").removeprefix("error: ")

    def paths(self) -> list[Path]:
        """The ``engine.log`` files lines go to now."""
        with self._lock:
            return list(self._files)

    def writable(self) -> bool:
        return True
