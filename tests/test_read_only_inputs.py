"""$DAGNB_IN is read-only (the step contract): on the local executor it links to the
upstream step's cache entry, so a step writing there would change what the cache
serves. A step that writes into its input fails, the entry set aside and made anew.
The files keep their write permissions: a copy of one can be changed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import pytest

from dagnb import Graph, Run, Step
from dagnb.cache import DamagedEntryWarning
from dagnb.testing import isolated

pytestmark = pytest.mark.usefixtures("workdir")

UP = ('echo original > "$DAGNB_OUT/x.txt"; mkdir "$DAGNB_OUT/sub"; '
      'echo s > "$DAGNB_OUT/sub/y.txt"')
READ = 'cat "$DAGNB_IN/up/x.txt" > "$DAGNB_OUT/copy.txt"'


def _run(workdir: Path, down: str | object, *more: Step) -> tuple[Run, list[str]]:
    graph = Graph("g", [Step("up", run=UP)])
    if isinstance(down, str):
        graph.add(Step("down", run=down, needs=["up"]))
    else:
        graph.step(down, name="down", needs=["up"])
    for step in more:  # (after down: one step at a time, in this order)
        graph.add(step)
    with isolated(cache_directory=str(workdir / ".dagnb_cache")), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DamagedEntryWarning)
        run = graph.run(executor="local", max_concurrency=1)
    return run, [str(w.message) for w in caught if w.category is DamagedEntryWarning]


def _error(run: Run, step: str) -> str:
    rows = run.status().set_index("step")
    return rows.loc[step, "error"]


def _overwrite(up: Path) -> int:
    (up / "x.txt").write_text("tampered\n")
    return 1


@pytest.mark.parametrize(("down", "written"), [
    ('echo tampered > "$DAGNB_IN/up/x.txt"', "$DAGNB_IN/up/x.txt"),
    ('echo more >> "$DAGNB_IN/up/sub/y.txt"', "$DAGNB_IN/up/sub/y.txt"),
    ('touch "$DAGNB_IN/up/sub/new.txt"', "$DAGNB_IN/up/sub/new.txt"),
    ('rm "$DAGNB_IN/up/x.txt"', "$DAGNB_IN/up/x.txt"),
    (_overwrite, "$DAGNB_IN/up/x.txt"),  # a Python step, in this process, given up's Path
], ids=["shell-overwrite", "shell-append", "new-file", "removed", "python-step"])
def test_a_step_writing_into_its_input_fails_and_the_entry_is_made_anew(
        workdir: Path, down: object, written: str) -> None:
    run, damaged = _run(workdir, down)
    assert run.states() == {"up": "succeeded", "down": "failed"}
    assert _error(run, "down") == (f"step 'down' wrote into its input {written}; write to "
                                   "$DAGNB_OUT instead")
    assert len(damaged) == 1 and f"({written} written into by step 'down')" in damaged[0]
    again, _ = _run(workdir, READ)  # the tampered entry is not served: up runs again
    assert again.states() == {"up": "succeeded", "down": "succeeded"}
    assert (again.outputs("down") / "copy.txt").read_text() == "original\n"


def _says_much() -> int:
    for i in range(2000):  # past what a pack record takes: a folder entry
        print(f"line {i} of what up says")
    return 1


def _displays() -> int:
    from dagnb.executors.capture import step_display

    step_display({"text/plain": "a figure"}, {})  # kept in a folder entry
    return 1


@pytest.mark.parametrize("up", [_says_much, _displays], ids=["long log", "a display"])
def test_a_step_writing_into_the_result_file_of_a_folder_entry_fails(
        workdir: Path, up: object) -> None:
    """A Python step's result, in a folder (with the digest of its result alone, as a
    pack record has), is a file of the entry that the steps after it read."""
    graph = Graph("g", [Step("up", func=up),
                        Step("down", run='echo 2 > "$DAGNB_IN/up/result.json"', needs=["up"])])
    with isolated(cache_directory=str(workdir / ".dagnb_cache")), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DamagedEntryWarning)
        run = graph.run(executor="local")
    assert run.states() == {"up": "succeeded", "down": "failed"}
    assert _error(run, "down") == ("step 'down' wrote into its input $DAGNB_IN/up/result.json; "
                                   "write to $DAGNB_OUT instead")
    assert [w.category for w in caught] == [DamagedEntryWarning]


def test_a_step_writing_into_two_inputs_has_both_set_aside(workdir: Path) -> None:
    graph = Graph("g", [Step("up", run=UP), Step("other", run=UP),
                        Step("down", run='echo t > "$DAGNB_IN/up/x.txt"; '
                                         'echo t > "$DAGNB_IN/other/x.txt"',
                             needs=["up", "other"])])
    with isolated(cache_directory=str(workdir / ".dagnb_cache")), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DamagedEntryWarning)
        assert graph.run(executor="local").states()["down"] == "failed"
    damaged = sorted(str(w.message).split(" is damaged")[0] for w in caught
                     if w.category is DamagedEntryWarning)
    assert [name.split("/")[0] for name in damaged] == ["cache entry other", "cache entry up"]


def test_a_step_reading_the_set_aside_input_later_in_the_run_fails_saying_why(
        workdir: Path) -> None:
    run, _ = _run(workdir, 'echo tampered > "$DAGNB_IN/up/x.txt"',
                  Step("later", run=READ, needs=["up"]))
    assert run.states() == {"up": "succeeded", "down": "failed", "later": "failed"}
    assert _error(run, "later") == (
        "step 'later' cannot run: its input $DAGNB_IN/up is set aside as damaged "
        "($DAGNB_IN/up/x.txt written into by step 'down'); run again to make it anew")


def test_a_write_while_two_steps_read_the_input_names_both_and_fails_both(
        workdir: Path) -> None:
    """Which of two steps running at once wrote cannot be told: the first to end names
    both, the other says its input changed while it ran."""
    marks = workdir / "marks"
    marks.mkdir()
    graph = Graph("g", [
        Step("up", run=UP),
        Step("w", run=f'until [ -e "{marks}/r" ]; do sleep 0.02; done; '
                      f'echo t > "$DAGNB_IN/up/x.txt"; touch "{marks}/w"', needs=["up"]),
        Step("r", run=f'touch "{marks}/r"; until [ -e "{marks}/w" ]; do sleep 0.02; done; '
                      'sleep 0.3', needs=["up"]),
    ])
    with isolated(cache_directory=str(workdir / ".dagnb_cache")), warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedEntryWarning)
        run = graph.run(executor="local")
    assert run.states() == {"up": "succeeded", "w": "failed", "r": "failed"}
    assert _error(run, "w") == ("step 'w' (or 'r', reading it at the same time) wrote into "
                                "its input $DAGNB_IN/up/x.txt; write to $DAGNB_OUT instead")
    assert _error(run, "r") == ("step 'r' ran while its input $DAGNB_IN/up was changed "
                                "($DAGNB_IN/up/x.txt written into by step 'w' or 'r'); run "
                                "again")


def test_reading_inputs_passes_and_a_copy_of_one_can_be_changed(workdir: Path) -> None:
    copy = ('cat "$DAGNB_IN/up/sub/y.txt"; cp "$DAGNB_IN/up/x.txt" "$DAGNB_OUT/x.txt" && '
            'echo more >> "$DAGNB_OUT/x.txt"')
    run, damaged = _run(workdir, copy)
    assert run.ok and not damaged, run.status()
    assert (run.outputs("down") / "x.txt").read_text() == "original\nmore\n"
    again, _ = _run(workdir, copy)
    assert again.states() == {"up": "cached", "down": "cached"}


AS_NOBODY = """
import json, os, sys, tempfile
import dagnb
from dagnb import Graph, Step

COPY = 'cp "$DAGNB_IN/up/x.txt" "$DAGNB_OUT/c.txt" && echo more >> "$DAGNB_OUT/c.txt"'

def graph():
    return Graph("g", [Step("up", run={up!r}),
                       Step("copy", run=COPY, needs=["up"]),
                       Step("down", run='echo tampered > "$DAGNB_IN/up/x.txt"',
                            needs=["up", "copy"]),
                       Step("later", run={read!r}, needs=["up", "down"])])

# Python's own library is under /root here, out of nobody's reach: a first run as root
# imports every module a run needs, then the process becomes nobody.
with dagnb.testing.isolated(cache_directory=tempfile.mkdtemp()):
    graph().run(executor="local").status()
os.setgid(65534); os.setuid(65534)
os.chdir(sys.argv[1])
with dagnb.testing.isolated(cache_directory=sys.argv[2]):
    run = graph().run(executor="local", max_concurrency=1)
    rows = run.status().set_index("step")
    again = Graph("g", [Step("up", run={up!r}), Step("read", run={read!r}, needs=["up"])])
    second = again.run(executor="local")
    print(json.dumps({{"states": run.states(), "error": rows.loc["down", "error"],
                      "copy": (run.outputs("copy") / "c.txt").read_text(),
                      "again": second.states(),
                      "x": (second.outputs("up") / "x.txt").read_text()}}))
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="runs a child as 'nobody' (mode bits bind only non-root users)")
def test_a_user_other_than_root_changes_a_copy_of_an_input_but_not_the_input(
        shared: Path) -> None:
    script = AS_NOBODY.format(up=UP, read=READ)
    done = subprocess.run([sys.executable, "-c", script, str(shared), str(shared / "cache")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["states"] == {"up": "succeeded", "copy": "succeeded", "down": "failed",
                              "later": "skipped"}
    assert seen["copy"] == "original\nmore\n"  # (a read-only input made a read-only copy)
    assert "wrote into its input $DAGNB_IN/up/x.txt" in seen["error"]
    assert seen["again"] == {"up": "succeeded", "read": "succeeded"}  # made anew
    assert seen["x"] == "original\n"


def test_the_line_keeps_its_words_when_a_short_secret_is_declared(workdir: Path,
                                                                  monkeypatch) -> None:
    """A secret '1' masks what the steps print, not the step names and paths of the
    run's own line."""
    monkeypatch.setenv("ONE", "1")
    down = Step("down1", run='echo tampered > "$DAGNB_IN/up/x.txt"', needs=["up"],
                secrets=["ONE"])
    graph = Graph("g", [Step("up", run=UP), down])
    with isolated(cache_directory=str(workdir / ".dagnb_cache")), warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedEntryWarning)
        run = graph.run(executor="local")
    assert _error(run, "down1") == ("step 'down1' wrote into its input $DAGNB_IN/up/x.txt; "
                                    "write to $DAGNB_OUT instead")
