"""``graph.run(only_failed=True)`` of a graph built in Python reads the runs of the
script that built it: two scripts' ``dagnb.Graph()`` share the name "graph" and the
project's cache, and one's run is not the other's."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.runtime import history

pytestmark = pytest.mark.usefixtures("workdir")


def _as_script(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make ``path`` the main script, as ``python path`` would."""
    monkeypatch.setattr(sys.modules["__main__"], "__file__", str(path), raising=False)


def _pipeline(train: str) -> Graph:
    return Graph("graph", [Step("load", run="echo load"),
                           Step("train", run=train, needs=["load"]),
                           Step("report", run="echo report", needs=["train"])])


def _records(workdir: Path) -> Path:
    return workdir / ".dagnb_cache" / ".runs" / history.RECORDS_NAME


def test_only_failed_does_not_take_another_scripts_run_of_the_same_name_for_its_own(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A's train failed; B, another script's graph named "graph" too, then succeeded:
    A's only_failed ran nothing and reported success, taking B's run for its own."""
    flag = workdir / "fixed"
    _as_script(monkeypatch, workdir / "a.py")
    assert _pipeline(f"test -e {flag}").run(executor="local").failed == ["train"]
    _as_script(monkeypatch, workdir / "b.py")
    assert _pipeline("echo b").run(executor="local").ok
    _as_script(monkeypatch, workdir / "a.py")
    again = _pipeline(f"test -e {flag}").run(only_failed=True, executor="local")
    assert again.states() == {"load": "cached", "train": "failed", "report": "skipped"}
    flag.touch()
    assert _pipeline(f"test -e {flag}").run(only_failed=True, executor="local").ok


def test_a_record_older_versions_wrote_counts_only_until_the_script_has_its_own(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A record with no origin (an older version's) may be any script's: read by name
    while the script has no run of its own (as before), not once it has."""
    _as_script(monkeypatch, workdir / "a.py")
    assert _pipeline("exit 1").run(executor="local").failed == ["train"]
    older = {"run": "older", "graph": "graph", "finished": 4e9,  # (newest of all)
             "states": {"load": "succeeded", "train": "succeeded", "report": "succeeded"}}
    with _records(workdir).open("a", encoding="utf-8") as log:
        log.write(json.dumps(older) + "\n")
    assert _pipeline("exit 1").run(only_failed=True, executor="local").failed == ["train"]
    _as_script(monkeypatch, workdir / "c.py")  # no run of its own: the older record's
    assert _pipeline("exit 1").run(only_failed=True, executor="local").order == []


def test_a_python_graphs_run_is_no_workflow_files_of_the_same_name(workdir: Path) -> None:
    """A record of a graph built in Python says so: a workflow file named alike (dagnb
    run --only-failed, dagnb logs) does not read it as an older record of no file."""
    assert _pipeline("exit 1").run(executor="local").failed == ["train"]
    cache = workdir / ".dagnb_cache"
    assert history.last_states(cache, "graph", workdir / "graph.yml") is None
    assert history.last_states(cache, "graph")["train"] == "failed"  # (dagnb logs: any)


def _as_notebook(monkeypatch: pytest.MonkeyPatch, path: Path) -> None:
    """Make the process a kernel running notebook ``path``: ``__main__`` has no file,
    and ipykernel's ``__session__`` names the notebook (JupyterLab's, from
    ``JPY_SESSION_NAME``)."""
    path.write_text("{}", encoding="utf-8")
    kernel_main = type(sys)("__main__")
    kernel_main.__session__ = str(path)
    monkeypatch.setitem(sys.modules, "__main__", kernel_main)
    monkeypatch.delenv("JPY_SESSION_NAME", raising=False)


def test_two_notebooks_of_one_folder_do_not_read_each_others_runs(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Every notebook's graph is named "notebook": A's failed step was taken as done
    once B, beside it, ran the same names successfully."""
    flag = workdir / "fixed"
    _as_notebook(monkeypatch, workdir / "a.ipynb")
    assert _pipeline(f"test -e {flag}").run(executor="local").failed == ["train"]
    _as_notebook(monkeypatch, workdir / "b.ipynb")
    assert _pipeline("echo b").run(executor="local").ok
    _as_notebook(monkeypatch, workdir / "a.ipynb")
    again = _pipeline(f"test -e {flag}").run(only_failed=True, executor="local")
    assert again.states() == {"load": "cached", "train": "failed", "report": "skipped"}
    assert history.graph_origin() == str(workdir / "a.ipynb")
