"""An attempt's lines go through one object that is also its log file, opened at the
first line (:class:`dagnb.runtime.scheduler._AttemptLog`): a retried step's lines are
read from every attempt's file, and a run leaves no cycle through it for the collector."""

from __future__ import annotations

import gc
from pathlib import Path

from dagnb import Graph, Step
from dagnb.runtime import logfile, scheduler


def test_a_retried_step_lists_the_file_of_each_attempt_that_printed(tmp_path: Path) -> None:
    """The second attempt's file, opened as it prints, tells the Run of both files: the
    lines of the first attempt past the memory's budget are read back from its file."""
    tries = tmp_path / "tries"
    command = (f'n=$(cat {tries} 2>/dev/null || echo 0); echo $((n+1)) > {tries}; '
               'echo "attempt $((n+1))"; [ "$n" -ge 1 ]')
    graph = Graph("g", [Step("flaky", run=command,
                             retries={"max_retries": 2, "retry_on": [1], "backoff_factor": 0})])
    run = graph.run(executor="local", cache=False, cache_directory=tmp_path / "c")
    assert run.states() == {"flaky": "succeeded"}
    files = run._log_files["flaky"]
    assert [Path(path).name for path in files] == ["logs-1.jsonl", "logs-2.jsonl"]
    lines = [record["line"] for record in logfile.read_records(files)]
    assert lines == ["attempt 1", "attempt 2"]
    assert list(run.logs("flaky")["line"]) == ["attempt 1", "attempt 2"]


def test_a_run_leaves_no_attempt_in_a_cycle(tmp_path: Path) -> None:
    graph = Graph("g", [Step("talk", func=lambda: print("hello")),
                        Step("quiet", func=lambda: 1)])
    gc.collect()
    gc.disable()
    gc.set_debug(gc.DEBUG_SAVEALL)
    try:
        run = graph.run(executor="local", cache=False, cache_directory=tmp_path)
        assert run.ok and list(run.logs("talk")["line"]) == ["hello"]
        del run
        gc.collect()
        cyclic = [found for found in gc.garbage if isinstance(found, scheduler._AttemptLog)]
    finally:
        gc.set_debug(0)
        gc.garbage.clear()
        gc.enable()
    assert cyclic == []
