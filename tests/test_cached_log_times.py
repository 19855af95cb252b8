"""The lines of a step served from the cache keep the times they were printed at:
``run.logs()`` (``%dagger logs``) stamped every replayed line with the moment of the
replay, one time for all, though the entry keeps each line's own."""

from __future__ import annotations

import time

import dagnb


def test_a_cached_steps_lines_keep_the_times_they_were_printed_at(workdir):
    graph = dagnb.Graph("t", [dagnb.Step("s", run="echo a; sleep 0.3; echo b")])
    first = graph.run(executor="local")
    printed = first.logs("s")["time"].tolist()
    time.sleep(0.5)
    again = graph.run(executor="local")
    assert again.states() == {"s": "cached"}
    assert again.logs("s")["time"].tolist() == printed
    # (stamped as each line is read from the pipe: the first may be read a moment late)
    assert (printed[1] - printed[0]).total_seconds() >= 0.25
