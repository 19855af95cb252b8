"""$DAGNB_IN is read-only (the step contract): on the local executor it links to the
upstream step's cache entry, so a step writing there would change what the cache
serves. A step that writes into its input fails, the entry set aside and made anew.
The files keep their write permissions: a copy of one can be changed."""

from __future__ import annotations

import contextvars
import json
import os
import subprocess
import sys
import threading
import time
import types
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
    damaged = [w for w in caught if w.category is DamagedEntryWarning]
    # the user's line that ran the graph (above), not a line of dagnb's
    assert {w.filename for w in damaged} <= {__file__}, [w.filename for w in damaged]
    return run, [str(w.message) for w in damaged]


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
    # the mode alone: size, time and inode stay, and a tool losing its x bit fails later
    ('chmod +x "$DAGNB_IN/up/x.txt"', "$DAGNB_IN/up/x.txt"),
], ids=["shell-overwrite", "shell-append", "new-file", "removed", "python-step", "chmod"])
def test_a_step_writing_into_its_input_fails_and_the_entry_is_made_anew(
        workdir: Path, down: object, written: str) -> None:
    run, damaged = _run(workdir, down)
    assert run.states() == {"up": "succeeded", "down": "failed"}
    out = "$DAGNB_OUT" if isinstance(down, str) else "dagnb.current().out_dir"
    assert _error(run, "down") == (f"step 'down' wrote into its input {written}; write to "
                                   f"{out} instead")
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


# A small result of a Python step is a pack record, not a folder: a step that reads it
# as files gets a folder made from the record under <cache>/.unpacked, which every later
# reader (this run's, the next runs', other processes') is given. The record is the truth.

def _small() -> dict:
    return {"x": 1}


SHOW = 'cat "$DAGNB_IN/up/result.json"'
SHOW_AGAIN = SHOW + " && true"  # (another key: runs where SHOW is cached)


def _packed_run(workdir: Path, *steps: Step, concurrency: int = 1) -> tuple[Run, list[str]]:
    graph = Graph("g", [Step("up", func=_small), *steps])
    with isolated(cache_directory=str(workdir / ".dagnb_cache")), \
            warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", DamagedEntryWarning)
        run = graph.run(executor="local", max_concurrency=concurrency)
    damaged = [w for w in caught if w.category is DamagedEntryWarning]
    # the user's line that ran the graph (above), not a line of dagnb's
    assert {w.filename for w in damaged} <= {__file__}, [w.filename for w in damaged]
    return run, [str(w.message) for w in damaged]


def _shown(run: Run, step: str) -> str:
    return run.logs(step)["line"].str.cat(sep="\n")


def _unpacked_result(workdir: Path) -> Path:
    [found] = (workdir / ".dagnb_cache" / ".unpacked" / "up").glob("*/out/result.json")
    return found


@pytest.mark.parametrize(("down", "written"), [
    ('echo \'{"x": 666}\' > "$DAGNB_IN/up/result.json"', "$DAGNB_IN/up/result.json"),
    ('touch "$DAGNB_IN/up/new.txt"', "$DAGNB_IN/up/new.txt"),
    ('rm "$DAGNB_IN/up/result.json"', "$DAGNB_IN/up/result.json"),
], ids=["overwrite", "new-file", "removed"])
def test_a_step_writing_into_an_unpacked_entry_fails_and_readers_get_the_record(
        workdir: Path, down: str, written: str) -> None:
    run, damaged = _packed_run(workdir, Step("down", run=down, needs=["up"]),
                               Step("later", run=SHOW, needs=["up"]))
    assert run.states() == {"up": "succeeded", "down": "failed", "later": "succeeded"}
    assert _error(run, "down") == (f"step 'down' wrote into its input {written}; write to "
                                   "$DAGNB_OUT instead")
    assert _shown(run, "later") == '{"x": 1}'  # the folder made again from the record
    assert not damaged  # the record itself is whole: nothing is set aside
    again, _ = _packed_run(workdir, Step("read", run=SHOW_AGAIN, needs=["up"]))
    assert again.states() == {"up": "cached", "read": "succeeded"}
    assert _shown(again, "read") == '{"x": 1}'


def test_an_unpacked_folder_changed_before_a_run_is_made_again_from_the_record(
        workdir: Path) -> None:
    """A folder changed outside any run dagnb watched (by hand, or by a step of a dagnb
    without the guard) is checked against the record when first used again."""
    first, _ = _packed_run(workdir, Step("read", run=SHOW, needs=["up"]))
    assert _shown(first, "read") == '{"x": 1}'
    _unpacked_result(workdir).write_text('{"x": 666}')
    again, damaged = _packed_run(workdir, Step("read", run=SHOW_AGAIN, needs=["up"]))
    assert again.states() == {"up": "cached", "read": "succeeded"}
    assert _shown(again, "read") == '{"x": 1}' and not damaged
    assert _unpacked_result(workdir).read_text() == '{"x": 1}'


def _takes(up: dict) -> int:
    return up["x"] + 1


def test_python_steps_reading_a_packed_result_look_at_no_file(workdir: Path,
                                                              monkeypatch) -> None:
    import dagnb.runtime.inputs_guard as guard

    looked: list[str] = []
    monkeypatch.setattr(guard, "_stamp", lambda path: looked.append(path))
    run, _ = _packed_run(workdir, Step("down", func=_takes, needs=["up"]))
    assert run.states() == {"up": "succeeded", "down": "succeeded"} and not looked
    assert not (workdir / ".dagnb_cache" / ".unpacked").exists()


def test_a_write_into_an_unpacked_entry_fails_the_steps_reading_it_at_the_same_time(
        workdir: Path) -> None:
    marks = workdir / "marks"
    marks.mkdir()
    run, _ = _packed_run(workdir, *[Step(name, run=command, needs=["up"]) for name, command in [
        ("w", f'until [ -e "{marks}/r" ]; do sleep 0.02; done; '
              f'echo 2 > "$DAGNB_IN/up/result.json"; touch "{marks}/w"'),
        ("r", f'touch "{marks}/r"; until [ -e "{marks}/w" ]; do sleep 0.02; done; sleep 0.3'),
    ]], concurrency=2)
    assert run.states() == {"up": "succeeded", "w": "failed", "r": "failed"}
    assert _error(run, "w") == ("step 'w' (or 'r', reading it at the same time) wrote into "
                                "its input $DAGNB_IN/up/result.json; write to $DAGNB_OUT "
                                "instead")
    assert _error(run, "r") == ("step 'r' ran while its input $DAGNB_IN/up was changed "
                                "($DAGNB_IN/up/result.json written into by step 'w' or "
                                "'r'); run again")
    assert _unpacked_result(workdir).read_text() == '{"x": 1}'


def _adds_a_file(up: Path) -> int:
    (up / "new.txt").write_text("x")
    return 1


def test_a_python_step_given_the_folder_of_a_packed_entry_may_not_write_into_it(
        workdir: Path) -> None:
    """A command that wrote no file, its lines few, is a pack record with no result: a
    Python step downstream is given its (unpacked) folder."""
    graph = Graph("g", [Step("up", run="echo hi"),
                        Step("down", func=_adds_a_file, needs=["up"]),
                        Step("later", run='ls "$DAGNB_IN/up"', needs=["up"])])
    with isolated(cache_directory=str(workdir / ".dagnb_cache")):
        run = graph.run(executor="local", max_concurrency=1)
    assert run.states() == {"up": "succeeded", "down": "failed", "later": "succeeded"}
    assert _error(run, "down") == ("step 'down' wrote into its input $DAGNB_IN/up/new.txt; "
                                   "write to dagnb.current().out_dir instead")
    assert _shown(run, "later") == ""  # the folder made again: empty, as the record says


def _writes_through_its_context() -> int:
    import dagnb

    (dagnb.current().inputs["up"] / "result.json").write_text('{"x": 666}')
    return 1


def _reads_through_its_context() -> int:
    import dagnb

    return json.loads((dagnb.current().inputs["up"] / "result.json").read_text())["x"]


def test_a_python_step_writing_into_the_folder_its_context_gives_fails(workdir: Path) -> None:
    """A Python step that takes no argument of ``up`` but asks ``dagnb.current().inputs``
    for its folder reads it as files, as a command does: a write there succeeded, and
    the steps after it read {"x": 666} as up's result."""
    run, damaged = _packed_run(workdir, Step("down", func=_writes_through_its_context,
                                             needs=["up"]),
                               Step("later", func=_reads_through_its_context, needs=["up"]))
    assert run.states() == {"up": "succeeded", "down": "failed", "later": "succeeded"}
    assert _error(run, "down") == ("step 'down' wrote into its input $DAGNB_IN/up/result.json; "
                                   "write to dagnb.current().out_dir instead")
    assert run.result("later") == 1 and not damaged  # the folder made again from the record
    assert _unpacked_result(workdir).read_text() == '{"x": 1}'
    again, _ = _packed_run(workdir, Step("read", run=SHOW_AGAIN, needs=["up"]))
    assert again.states() == {"up": "cached", "read": "succeeded"}
    assert _shown(again, "read") == '{"x": 1}'


def test_a_second_thread_of_the_step_asking_meanwhile_is_watched_too(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Two threads of a step ask current().inputs at once, the runner slow to list and
    watch the folders for the first (a slow disk): the second waits for it, so its write
    is seen; it got the paths at once, wrote, and the first check against the record
    then made the folder again, undoing the write unseen: the step succeeded."""
    listing, writer_asks = threading.Event(), threading.Event()
    list_uses_now = Run.list_uses_now

    def slow(run: Run) -> None:
        listing.set()
        writer_asks.wait(5)
        time.sleep(0.2)  # (the writer, not held, writes meanwhile)
        list_uses_now(run)

    monkeypatch.setattr(Run, "list_uses_now", slow)

    def down() -> int:
        import dagnb

        def writer() -> None:
            listing.wait(5)
            writer_asks.set()
            (dagnb.current().inputs["up"] / "result.json").write_text('{"x": 666}')

        threads = [threading.Thread(target=contextvars.copy_context().run, args=(job,))
                   for job in (lambda: dagnb.current().inputs, writer)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return 1

    run, _ = _packed_run(workdir, Step("down", func=down, needs=["up"]),
                         Step("later", func=_reads_through_its_context, needs=["up"]))
    assert run.states() == {"up": "succeeded", "down": "failed", "later": "succeeded"}
    assert _error(run, "down") == ("step 'down' wrote into its input $DAGNB_IN/up/result.json; "
                                   "write to dagnb.current().out_dir instead")
    assert run.result("later") == 1


READER_ELSEWHERE = """
import sys
import threading
import time
import dagnb
from dagnb import Graph, Step

marks = sys.argv[2]
# on until the writer is done and its folder made again (empty, as the record says)
made_again = f'[ -e "{{marks}}/w" ] && [ -d "$DAGNB_IN/up" ] && [ -z "$(ls -A "$DAGNB_IN/up")" ]'
reader = Step("r", run=f'touch "{{marks}}/r"; for i in $(seq 1500); do {{made_again}} && '
                       'break; sleep 0.02; done; ls "$DAGNB_IN/up"', needs=["up"])
with dagnb.testing.isolated(cache_directory=sys.argv[1]):
    run = Graph("g", [Step("up", run={up!r}), reader]).run(executor="local")
    print(run.states(), run.status().set_index("step").loc["r", "error"],
          repr("".join(run.logs("r")["line"])))
"""


def test_a_reader_in_another_process_is_not_blamed_for_a_write_it_did_not_make(
        workdir: Path) -> None:
    """Process A's step writes into the unpacked folder that process B's step reads at
    the same time: A's fails, its folder made again from the record, which B's step then
    reads; B's step ran while it changed, but that was not its write (as when a folder
    entry is set aside by another process: it is gone for B, not changed by B)."""
    cache, marks = workdir / ".dagnb_cache", workdir / "marks"
    marks.mkdir()
    up = Step("up", run="echo hi")
    with isolated(cache_directory=str(cache)):
        Graph("g", [up]).run(executor="local")  # (both processes hit its record)
    script = READER_ELSEWHERE.format(up=up.run)
    other = subprocess.Popen([sys.executable, "-c", script, str(cache), str(marks)],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    writer = Step("w", run=f'for i in $(seq 1500); do [ -e "{marks}/r" ] && break; sleep 0.02; '
                           f'done; echo 666 > "$DAGNB_IN/up/x.txt"; touch "{marks}/w"',
                  needs=["up"])
    with isolated(cache_directory=str(cache)):
        run = Graph("g", [up, writer]).run(executor="local")
    out, err = other.communicate(timeout=120)
    assert run.states() == {"up": "cached", "w": "failed"}
    assert "wrote into its input $DAGNB_IN/up/x.txt" in _error(run, "w")
    assert out.strip() == "{'up': 'cached', 'r': 'succeeded'} None ''", err


PACKED_AS_NOBODY = """
import json, os, sys, tempfile
import dagnb
from dagnb import Graph, Step

def small():
    return {{"x": 1}}

COPY = ('cp "$DAGNB_IN/up/result.json" "$DAGNB_OUT/c.json" && echo more >> '
        '"$DAGNB_OUT/c.json"')

def graph(*steps):
    return Graph("g", [Step("up", func=small), *steps])

first = [Step("copy", run=COPY, needs=["up"]),
         Step("down", run='echo 666 > "$DAGNB_IN/up/result.json"', needs=["up", "copy"])]
with dagnb.testing.isolated(cache_directory=tempfile.mkdtemp()):  # (see AS_NOBODY)
    graph(*first).run(executor="local").status()
os.setgid(65534); os.setuid(65534)
os.chdir(sys.argv[1])
with dagnb.testing.isolated(cache_directory=sys.argv[2]):
    run = graph(*first).run(executor="local", max_concurrency=1)
    second = graph(Step("read", run={show!r}, needs=["up"])).run(executor="local")
    print(json.dumps({{"states": run.states(), "error": run.status().set_index("step").loc[
                          "down", "error"],
                      "copy": (run.outputs("copy") / "c.json").read_text(),
                      "again": second.states(),
                      "read": "".join(second.logs("read")["line"])}}))
"""


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() != 0,
                    reason="runs a child as 'nobody' (mode bits bind only non-root users)")
def test_a_user_other_than_root_may_not_write_into_an_unpacked_entry_either(
        shared: Path) -> None:
    script = PACKED_AS_NOBODY.format(show=SHOW)
    done = subprocess.run([sys.executable, "-c", script, str(shared), str(shared / "cache")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    assert seen["states"] == {"up": "succeeded", "copy": "succeeded", "down": "failed"}
    assert seen["copy"] == '{"x": 1}more\n'  # (the copy of an unpacked file can be changed)
    assert seen["error"] == ("step 'down' wrote into its input $DAGNB_IN/up/result.json; "
                             "write to $DAGNB_OUT instead")
    assert seen["again"] == {"up": "cached", "read": "succeeded"}
    assert seen["read"] == '{"x": 1}'


def test_an_input_first_seen_by_a_steps_thread_and_the_loop_at_once_is_watched_once(
        monkeypatch):
    """``current().inputs`` asked from a step's thread has the guard watch the folder
    as the loop starts another step reading it: both saw it unseen and watched it apart,
    and once one was made again from its record, a later step's write into it was
    taken for that remake and went unsaid (the reviewer's repro: 2 runs in 4)."""
    from dagnb.cache.entry import PackedEntry
    from dagnb.runtime import inputs_guard

    made = []

    def slow_watch(name: str, entry: object) -> object:  # (making a folder takes a while)
        time.sleep(0.05)
        made.append(types.SimpleNamespace(name=name))
        return made[-1]

    monkeypatch.setattr(inputs_guard, "_watch", slow_watch)
    guard = inputs_guard.InputGuard(lambda *_: True, str)
    entry = PackedEntry.__new__(PackedEntry)
    seen: dict[str, list[object]] = {}
    asking = threading.Thread(target=lambda: guard.watch("asks", {"up": entry},
                                                         seen.setdefault("asks", [])))
    asking.start()
    seen["starts"] = guard.start("starts", {"up": entry})
    asking.join()
    assert len(made) == 1 and seen["asks"] == seen["starts"] == made
