"""The watcher reads its input in chunks a moment apart, not a line at a time: each step
woke it three times on the CPUs the steps share. The lines it gets are the same, a line
cut between two chunks too, and the end of the input still ends its reading."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

from dagnb.executors import watcher


def test_lines_cut_between_chunks_come_whole_and_the_end_is_seen() -> None:
    reader, writer = os.pipe()

    def write() -> None:
        for piece in (b"+t1 0\n+t1 4", b"2\n-t1\n", b"+t2 7\n*9 100 t2"):
            os.write(writer, piece)
            time.sleep(0.005)
        os.close(writer)

    sender = threading.Thread(target=write)
    sender.start()
    with open(reader, "rb") as stream:
        got = list(watcher._lines(stream))
    sender.join()
    assert got == [b"+t1 0", b"+t1 42", b"-t1", b"+t2 7", b"*9 100 t2"]


def test_many_lines_sent_at_once_are_read_in_few_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    reads: list[int] = []
    real_read = os.read

    def counted(descriptor: int, size: int) -> bytes:
        data = real_read(descriptor, size)
        reads.append(len(data))
        return data

    monkeypatch.setattr(watcher.os, "read", counted)
    reader, writer = os.pipe()

    def write() -> None:
        for number in range(300):  # (a burst of steps starting, as 8 at once make)
            os.write(writer, b"+token%03d 0\n" % number)
        os.close(writer)

    sender = threading.Thread(target=write)
    with open(reader, "rb") as stream:
        sender.start()
        listed, _ = watcher._read_until_the_end(stream)
    sender.join()
    assert len(listed) == 300
    assert 0 < len(reads) < 30  # (a line at a time: 301 reads)


def test_a_stream_without_a_descriptor_is_read_line_by_line() -> None:
    listed, forked = watcher._read_until_the_end(io.BytesIO(b"+a 3\n+b 4\n-a\n*5 9 b\n"))
    assert listed == {"b": 4} and forked == {5: ("9", "b")}
