"""A newcomer's two surprises with paths (QA): a file a step reads without mounting it
is not in its key, so an edit of it was served the old result silently; and a shell
step starts in the workflow's folder, an in-process Python step in the folder dagnb was
started in, so ``wc -l data/sales.csv`` failed where the Python step reading the same
path worked, saying only ``No such file or directory``. Now a keyed step that names an
existing file no mount covers is warned of (once per step and process; no key
changes), and a step failed on a file not found says the folder it ran in."""

from __future__ import annotations

import os
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import dagnb
import dagnb.runtime.unmounted as unmounted
from dagnb.runtime.prepare import start_background
from dagnb.runtime.unmounted import UnmountedReadWarning, code_paths, command_paths

STEPS = '''def count():
    return sum(1 for _ in open("data/sales.csv"))
'''
ADD_IT = "add it with mounts: {../data/sales.csv: /data/sales.csv}, or run it with"


@pytest.fixture(autouse=True)
def fresh_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    """No step looked at or warned of by an earlier test (the process keeps them)."""
    monkeypatch.setattr(unmounted, "_FOUND", {})
    monkeypatch.setattr(unmounted, "_LOOKED", {})
    monkeypatch.setattr(unmounted, "_WARNED", set())
    monkeypatch.setattr(unmounted, "_NOTED", {})
    monkeypatch.setattr(unmounted, "_NAMES", {})


def _edit(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, its time a second past the entries made before."""
    path.write_text(text)
    later = time.time() + 1
    os.utime(path, (later, later))


@pytest.fixture
def my(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """QA's layout: ``my/data/sales.csv`` and ``my/workflows/cwdsteps.py``; the current
    folder is ``my``, the cache in ``my/workflows``."""
    folder = tmp_path / "my"
    (folder / "data").mkdir(parents=True)
    (folder / "data" / "sales.csv").write_text("region,amount\neu,1\nus,2\n")
    (folder / "workflows").mkdir()
    (folder / "workflows" / "cwdsteps.py").write_text(STEPS)
    monkeypatch.chdir(folder)
    monkeypatch.syspath_prepend(str(folder / "workflows"))
    dagnb.configure(cache_directory=str(folder / "workflows" / ".dagnb_cache"))
    return folder


def _workflow(my: Path, steps: str) -> dagnb.Graph:
    (my / "workflows" / "wf.yml").write_text(f"name: wf\nsteps:\n{steps}")
    return dagnb.load(my / "workflows" / "wf.yml")


def _unmounted_said(graph: dagnb.Graph) -> tuple[dict[str, str], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = graph.run(executor="local")
    return run.states(), [str(w.message) for w in caught
                          if issubclass(w.category, UnmountedReadWarning)]


SHELL = """  load:
    run: cp ../data/sales.csv "$DAGNB_OUT/"
"""
PYTHON = """  count:
    python: cwdsteps.py:count
"""


def test_a_shell_step_served_after_an_unmounted_file_changed_is_warned_of_once(my):
    graph = _workflow(my, SHELL)
    assert _unmounted_said(graph) == ({"load": "succeeded"}, [])  # (read as it is)
    assert _unmounted_said(graph) == ({"load": "cached"}, [])  # (unchanged since)
    _edit(my / "data" / "sales.csv", "region,amount\neu,9\n")
    states, said = _unmounted_said(graph)
    assert states == {"load": "cached"}  # (the contract: only mounts count)
    assert said == ["step 'load' was served from the cache, but it reads ../data/sales.csv, "
                    "which changed since and is not one of its inputs: the result may be "
                    f'stale; {ADD_IT} refresh=["load"]']
    assert _unmounted_said(graph) == ({"load": "cached"}, [])  # (said once)


def test_a_python_step_served_after_an_unmounted_file_changed_is_warned_of_with_its_mount(my):
    graph = _workflow(my, PYTHON)
    assert _unmounted_said(graph) == ({"count": "succeeded"}, [])
    _edit(my / "data" / "sales.csv", "region,amount\neu,9\n")
    states, said = _unmounted_said(graph)
    assert states == {"count": "cached"}
    # (the step reads it from the folder dagnb started in; a mount's path starts in
    # the workflow's)
    assert said == ["step 'count' was served from the cache, but it reads data/sales.csv, "
                    "which changed since and is not one of its inputs: the result may be "
                    f'stale; {ADD_IT} refresh=["count"]']


def _said_after_an_edit(my: Path, start: Any) -> list[str]:
    """What ``start(graph)`` (a run of a shell step reading an unmounted file, whose
    Run it returns) warns of when that file changed after the step's entry was made."""
    graph = _workflow(my, SHELL)
    assert start(graph).states() == {"load": "succeeded"}
    _edit(my / "data" / "sales.csv", "region,amount\neu,9\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert start(graph).states() == {"load": "cached"}
    return [str(w.message).rpartition("or run it with ")[2] for w in caught
            if issubclass(w.category, UnmountedReadWarning)]


def test_a_plain_graph_run_is_told_to_run_the_step_again_with_its_own_option(my):
    assert _said_after_an_edit(my, lambda graph: graph.run()) == ['refresh=["load"]']


def test_a_notebook_run_is_told_to_run_the_step_again_with_its_magics_option(my):
    # (the notebook's runs start in the background; the dagnb command's --refresh-step:
    # test_cli_plan_refresh_qa)
    assert _said_after_an_edit(my, lambda graph: start_background(graph).wait()) == [
        "%dagger run --refresh load"]


def _fixes_said(run_twice: Any, data: Path) -> list[str]:
    """The fixes (``add it with ...``) a second run of ``run_twice`` is told after an
    edit of ``data``, a file its step ``load`` reads unmounted (the first run stores it)."""
    run_twice()
    _edit(data, "edited\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run_twice()
    return [str(w.message).partition("stale; ")[2] for w in caught
            if issubclass(w.category, UnmountedReadWarning)]


def test_a_graph_built_in_python_is_told_the_mount_in_python(workdir):
    (workdir / "data.txt").write_text("a\n")
    graph = dagnb.Graph("g")
    graph.add(dagnb.Step("load", run="cat data.txt"))
    assert _fixes_said(lambda: graph.run(executor="local"), workdir / "data.txt") == [
        'add it with mounts={"data.txt": "/data.txt"}, or run it with refresh=["load"]']


def test_a_notebook_cell_is_told_the_mount_as_its_option(shell):
    """The notebook was told the YAML's ``mounts: {data.txt: /data.txt}``."""
    (Path.cwd() / "data.txt").write_text("a\n")
    said = _fixes_said(lambda: shell.run_cell_magic("dagger", "load", "cat data.txt\n"),
                       Path.cwd() / "data.txt")
    assert said == ["add it with --mount data.txt:/data.txt, or run it with "
                    "%dagger run --refresh load"]


def test_each_front_end_says_several_mounts_its_way():
    found = (("my data.csv", "my data.csv"), ("../b.csv", "../b.csv"))
    said = {words: unmounted.unmounted_message("load", found, words).partition(
                "add them with ")[2].partition(", or run")[0]
            for words in (unmounted.PYTHON_WORDS, unmounted.WORKFLOW_WORDS,
                          unmounted.NOTEBOOK_WORDS)}
    assert list(said.values()) == [
        'mounts={"my data.csv": "/my data.csv", "../b.csv": "/b.csv"}',
        "mounts: {my data.csv: /my data.csv, ../b.csv: /b.csv}",
        "--mount 'my data.csv:/my data.csv' --mount ../b.csv:/b.csv"]


def test_graph_run_takes_no_wording_of_a_front_end(my):
    with pytest.raises(dagnb.ConfigError, match="'words'"):
        _workflow(my, SHELL).run(words=unmounted.NOTEBOOK_WORDS)


def test_no_warning_once_the_file_is_mounted(my):
    mounted = "    mounts: {../data/sales.csv: /data/sales.csv}\n"
    states, said = _unmounted_said(_workflow(my, SHELL + mounted + PYTHON + mounted))
    assert states == {"load": "succeeded", "count": "succeeded"} and said == []
    (my / "data" / "sales.csv").write_text("region,amount\neu,9\n")
    states, said = _unmounted_said(_workflow(my, SHELL + mounted + PYTHON + mounted))
    assert states == {"load": "succeeded", "count": "succeeded"} and said == []


def test_options_urls_system_files_and_what_it_writes_are_no_reads(my):
    (my / "workflows" / "notes.txt").write_text("x")
    graph = _workflow(my, """  s:
    run: |
      /usr/bin/env true --flag=x --notes=notes.txt https://example.com/notes.txt
      echo "$DAGNB_OUT/notes.txt" > notes.txt  # copy of notes.txt
      ls /usr/bin/env /etc/hostname "$(pwd)/notes.txt" | tee notes.txt >/dev/null
""")
    assert _unmounted_said(graph) == ({"s": "succeeded"}, [])
    _edit(my / "workflows" / "notes.txt", "y")  # (what it writes, changed since: no read)
    assert _unmounted_said(graph) == ({"s": "cached"}, [])


def test_what_a_python_step_writes_is_no_read(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "out.csv").write_text("x")
    (tmp_path / "in.csv").write_text("x")

    def step(frame):
        frame.to_csv("out.csv")
        with open("out.csv", "w") as file:
            file.write("x")
        Path(__file__).with_name("out.csv").write_text("x")
        (Path("data") / "out.csv").touch()
        first = (lambda: Path("in.csv").read_text())()  # (nested code is read too)
        return [first, *(Path(name).read_text() for name in ("in.csv", "out.csv"))]

    # (read in the end; the order of constants differs between Pythons)
    assert sorted(code_paths(step.__code__)) == ["in.csv", "out.csv"]
    assert command_paths(("/bin/cat", "--x=a/b.csv", "in.csv")) == ("/bin/cat", "in.csv")


def test_a_shell_step_failing_on_a_relative_path_says_the_folder_it_ran_in(my):
    run = _workflow(my, "  sh:\n    run: wc -l data/sales.csv\n").run(executor="local")
    error = run.status_rows()["sh"]["error"]
    assert error.startswith("exit code 1: wc: data/sales.csv: No such file or directory; ")
    assert error.endswith(f"; it ran in {my / 'workflows'}: paths in its command are "
                          "relative to the workflow's folder")


def test_a_python_step_failing_on_a_relative_path_says_the_folder_dagnb_started_in(
        my, monkeypatch):
    monkeypatch.chdir(my.parent)  # (the folder above my/)
    run = _workflow(my, PYTHON).run(executor="local")
    error = run.status_rows()["count"]["error"]
    assert error == ("FileNotFoundError: [Errno 2] No such file or directory: "
                     f"'data/sales.csv'; it ran in the folder dagnb was started in, "
                     f"{my.parent}: paths in its code are relative to it, not to the "
                     f"workflow's folder {my / 'workflows'}")


def test_another_failure_says_no_folder(my):
    run = _workflow(my, "  sh:\n    run: echo broken >&2; exit 3\n").run(executor="local")
    assert run.status_rows()["sh"]["error"] == "exit code 3: broken"


@pytest.mark.parametrize("command, said", [
    ("ls /nonexistent/file", "ls: cannot access '/nonexistent/file': No such file or directory"),
    ("cat /no/such.csv", "cat: /no/such.csv: No such file or directory"),
])
def test_a_step_failing_on_an_absolute_path_says_no_folder(my, command, said):
    # (where it ran has nothing to do with it: the hint sent the reader to the wrong cause)
    run = _workflow(my, f"  sh:\n    run: {command}\n").run(executor="local")
    error = run.status_rows()["sh"]["error"]
    assert error.endswith(said), error
