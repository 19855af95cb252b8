"""The thread that flushes log files late let go of the last files it flushed only at its
next tick: its loop kept them in a local over the sleep. An attempt's log file holds its
run (the scheduler, the steps' results), so a run that printed stayed alive 0.2 s after
it ended, and a test of runs freed back to back failed now and then."""

from __future__ import annotations

import time
import weakref
from pathlib import Path

from dagnb.runtime.logfile import FLUSH_AFTER_S, LogFile


class _Held(LogFile):
    """A log file that can be weakly referenced (no ``__slots__``: a ``__weakref__``)."""


def test_a_log_file_the_flusher_flushed_is_let_go_of_as_the_flush_ends(tmp_path: Path) -> None:
    path = tmp_path / "logs-1.jsonl"
    log = _Held(path)
    log.write_line(1.0, 1, "stdout", "hello")  # (buffered: handed to the late flusher)
    deadline = time.monotonic() + 10 * FLUSH_AFTER_S
    while not path.read_text() and time.monotonic() < deadline:
        time.sleep(0.002)
    assert "hello" in path.read_text()  # flushed by the thread
    log.close()
    held = weakref.ref(log)
    del log
    gone_by = time.monotonic() + FLUSH_AFTER_S / 2  # (it held them a whole tick)
    while held() is not None and time.monotonic() < gone_by:
        time.sleep(0.002)
    assert held() is None
