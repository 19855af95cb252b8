"""A step's captured lines on disk, written as they come: what keeps a run's memory
bounded whatever its steps print.

Each attempt that prints writes ``<run folder>/<step>/logs-<attempt>.jsonl`` (one JSON
record a line: time, attempt, stream, line; already masked); a silent attempt leaves no
file. The cache moves the file of the attempt that succeeded into the step's entry, so
a stored step's lines are written once. The event log keeps only a bounded head of each
step's lines (:mod:`dagnb.runtime.events`); :meth:`dagnb.Run.logs` reads these files for
a step whose lines were not all kept.

Lines are written through a buffer (a chatty step's in one system call a buffer, not one
a line), and each file whose lines wait there is flushed by one thread of the process
about :data:`FLUSH_AFTER_S` after the first of them was written, and as its attempt
ends: ``dagnb logs`` of a live run, or of one killed since (``kill -9``, no chance to
flush), finds what a step printed up to a moment before.
"""

from __future__ import annotations

import json
import os
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from json.encoder import encode_basestring  # C; json.dumps of a dict costs 4x more
from pathlib import Path
from threading import Thread  # (bound once: a test may stand in for the module's Lock)
from typing import IO, Any

__all__ = ["FLUSH_AFTER_S", "LogFile", "attempt_files", "attempt_marked", "read_records",
           "tail_records"]

FLUSH_AFTER_S = 0.2  # the longest a written line waits in the buffer, near enough


class LogFile:
    """The lines of one attempt of one step, appended to a file opened on the first."""

    __slots__ = ("_closed", "_handle", "_lock", "_make_folder", "_on_open", "_path",
                 "_waiting", "count", "error")

    def __init__(
        self,
        path: Path | str,
        make_folder: Callable[[], object] | None = None,
        on_open: Callable[[], object] | None = None,
    ) -> None:
        self._path = path  # text until asked for: most attempts print nothing
        self._make_folder = make_folder  # called before the first line makes the file
        self._on_open = on_open  # called once the file is open (its lines can be read)
        self.count = 0
        self.error: OSError | None = None  # why the file is not whole (a full disk)
        self._handle: IO[str] | None = None
        self._closed = False
        self._waiting = False  # lines wait in the buffer, the file given to _LATE to flush
        # flush() comes from the user's thread (Run.logs) while the loop thread writes,
        # and a TextIOWrapper is not safe to flush during a write; an inline Python step
        # may hold the loop for as long as it likes, so the flush cannot wait for it.
        # Made now, not with the first line: lines may come from two threads at once
        # (an async step's to_thread workers), and each would make its own lock.
        self._lock = threading.Lock()

    @property
    def path(self) -> Path:
        """The file (it exists once a line was written)."""
        if not isinstance(self._path, Path):
            self._path = Path(self._path)
        return self._path

    def write(self, record: dict[str, Any]) -> None:
        """Append one line's record (none once closed: the file may have moved). A
        write that fails is kept in ``error``, never raised: the step goes on."""
        self._append(json.dumps(record, ensure_ascii=False) + "\n")

    def write_line(self, time: float, attempt: int, stream: str, line: str) -> None:
        """:meth:`write` of the record ``{time, attempt, stream, line}``, the same JSON
        text made without json.dumps (on the path of every line a step prints)."""
        self._append(f'{{"time": {time!r}, "attempt": {attempt:d}, "stream": '
                     f'{encode_basestring(stream)}, "line": {encode_basestring(line)}}}\n')

    def _append(self, text: str) -> None:
        lock = self._lock
        lock.acquire()  # not ``with``: half the cost, on the path of every line
        try:
            if self._closed or self.error is not None:
                return
            if self._handle is None:
                self._open()
            self._handle.write(text)  # type: ignore[union-attr]  # opened just above
            self.count += 1
            if not self._waiting:  # (the first line since the last flush)
                self._waiting = True
                _LATE.add(self)
        except OSError as exc:
            self.error = exc
        finally:
            lock.release()

    def _open(self) -> None:
        if self._make_folder is not None:
            self._make_folder()
        os.makedirs(self.path.parent, exist_ok=True)
        # a lone surrogate (a str, not bytes, that a Python step printed) becomes its
        # JSON escape \udXXX, which reads back as the same str
        self._handle = open(self.path, "w", encoding="utf-8",  # noqa: SIM115
                            errors="backslashreplace")
        if self._on_open is not None:
            self._on_open()

    def flush(self) -> None:
        """Write the buffered lines to the file, so a reader sees every line written so
        far (nothing happens once closed or before the first line); from any thread. A
        flush that fails is kept in ``error``, as a failed write is."""
        with self._lock:
            self._waiting = False
            if self._handle is None:  # no line yet, or closed
                return
            try:
                self._handle.flush()
            except OSError as exc:  # the buffered lines did not fit
                self.error = self.error or exc

    def close(self) -> None:
        """Flush and close the file (nothing happens for a silent attempt)."""
        lock = self._lock
        lock.acquire()  # (not ``with``: every attempt passes here)
        try:
            self._closed = True
            if self._waiting:  # (let go of now: a run's files are not kept till the flush)
                self._waiting = False
                _LATE.discard(self)
            # no line opens the file now: its callbacks go (the runner's on_open holds
            # the list of files holding this one, a cycle only the GC would free)
            self._make_folder = self._on_open = None
            if self._handle is not None:
                try:
                    self._handle.close()
                except OSError as exc:  # the last buffered lines did not fit
                    self.error = self.error or exc
                self._handle = None
        finally:
            lock.release()


class _LateFlush:
    """The thread that flushes the log files whose lines wait in their buffer, each
    about :data:`FLUSH_AFTER_S` after it was handed over (:meth:`add`, at its first line
    since its last flush): a step's lines reach its file within a moment whether it
    goes on printing or not, and a chatty step pays a flush per pause, not per line.
    The thread ends once a pause passes with no file handed over (the next starts one)."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._waiting: dict[int, LogFile] = {}  # id -> the file (closed ones let go of)
        self._thread: Thread | None = None

    def add(self, log: LogFile) -> None:
        with self._lock:
            self._waiting[id(log)] = log
            if self._thread is not None:
                return
            thread = Thread(target=self._run, name="dagnb-log-flush", daemon=True)
            try:
                thread.start()
            except RuntimeError:  # (the interpreter is ending: the file's close flushes)
                return
            self._thread = thread

    def _run(self) -> None:
        while True:
            time.sleep(FLUSH_AFTER_S)
            with self._lock:
                due, self._waiting = self._waiting, {}
                if not due:
                    self._thread = None
                    return
            _flush_all(due)  # (its files let go of as it returns, not kept over a sleep:
            del due          # an attempt's file holds its run till then)

    def discard(self, log: LogFile) -> None:
        """Forget ``log``, closed (its close flushed it)."""
        with self._lock:
            self._waiting.pop(id(log), None)


def _flush_all(due: dict[int, LogFile]) -> None:
    for log in due.values():  # (outside the lock: a flush waits for a write)
        log.flush()


def _new_late_flush() -> None:
    """A forked child has none of its parent's threads: a flusher of its own."""
    global _LATE
    _LATE = _LateFlush()


_LATE = _LateFlush()
if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_new_late_flush)


def attempt_files(folder: Path) -> list[Path]:
    """The log files a step's attempts left in its folder of a run, first attempt first."""
    found = []
    for path in folder.glob("logs-*.jsonl"):
        number = path.name[len("logs-"):-len(".jsonl")]
        if number.isdigit():
            found.append((int(number), path))
    return [path for _, path in sorted(found)]


def read_records(paths: Iterable[Path]) -> Iterator[dict[str, Any]]:
    """The records of log files, one at a time; undecodable bytes are replaced, torn
    lines and missing files skipped (a damaged log is not an error)."""
    for path in paths:
        try:
            with open(path, encoding="utf-8", errors="replace") as handle:
                for text in handle:
                    record = _record(text)
                    if record is not None:
                        yield record
        except OSError:
            continue


def tail_records(paths: Iterable[Path], count: int,
                 stream: str | None = None) -> list[dict[str, Any]]:
    """The last ``count`` records of log files (of ``stream`` only, if given), in file
    order, read back from their ends: a tail of a 100,000-line step costs what its lines
    do. A stream seldom printed is read back as far as its lines go (the whole files,
    if fewer), one block in memory at a time."""
    found: list[dict[str, Any]] = []
    for path in reversed(list(paths)):
        if len(found) >= count:
            break
        found[:0] = _file_tail(path, count - len(found), stream=stream)
    return found


def attempt_marked(lines: Iterable[tuple[int, str]], rule: str, marked: bool | None = None,
                   ) -> Iterator[str]:
    """The lines of (attempt, line) pairs, each attempt's under ``rule attempt N rule``
    when ``marked`` (None: when the pairs, then a list, come from more than one attempt):
    a tail spanning retries would read as one attempt's output."""
    if marked is None:
        lines = list(lines)
        marked = len({attempt for attempt, _ in lines}) > 1
    last = None
    for attempt, line in lines:
        if marked and attempt != last:
            yield f"{rule} attempt {attempt} {rule}"
            last = attempt
        yield line


def _file_tail(path: Path, count: int, block: int = 1 << 16,
               stream: str | None = None) -> list[dict[str, Any]]:
    """The last ``count`` records of one file (of ``stream``), as :func:`read_records`
    reads them: torn or undecodable lines skipped."""
    found: list[dict[str, Any]] = []
    if count <= 0:
        return found
    for piece in _lines_backwards(path, block):
        record = _record(piece.decode("utf-8", "replace"))
        if record is not None and (stream is None
                                   or record.get("stream", "stdout") == stream):
            found.append(record)
            if len(found) == count:
                break
    return found[::-1]


def _lines_backwards(path: Path, block: int) -> Iterator[bytes]:
    """A file's lines, last first, reading ``block`` bytes at a time back from its end:
    one block in memory, and the line it cuts (joined once: a 100 MB line stays linear)."""
    try:
        with open(path, "rb") as handle:
            end = handle.seek(0, os.SEEK_END)
            rest: list[bytes] = []  # the end of a line that starts further back, last first
            while end > 0:
                start = max(0, end - block)
                handle.seek(start)
                pieces = handle.read(end - start).split(b"\n")
                end = start
                if start and len(pieces) == 1:  # inside one long line
                    rest.append(pieces[0])
                    continue
                pieces[-1] += b"".join(reversed(rest))
                rest = [pieces.pop(0)] if start else []
                yield from reversed(pieces)
    except OSError:
        return


def _record(text: str) -> dict[str, Any] | None:
    try:
        record = json.loads(text)
    except ValueError:
        return None
    return record if isinstance(record, dict) and "line" in record else None
