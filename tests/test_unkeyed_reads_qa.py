"""QA (a newcomer following the README): two ways a changed input was served the old
cached result with no warning. A folder a step names but does not mount, edited inside
(``grep -r . ./mydir``; a bare ``mydir``; a Python step's ``DATA = Path("data")``), was
said to be unchanged, its own time unchanged; and a host variable read by ``printenv
REGION`` or awk's ``ENVIRON["REGION"]`` was not in the key (``$REGION`` was), nor could
``env | grep '^REGION='``'s be: now said on a hit."""

from __future__ import annotations

import json
import os
import time
import warnings
from pathlib import Path

import pytest

import dagnb
import dagnb.runtime.unmounted as unmounted
from dagnb.cache import step_key
from dagnb.cache.keys import reads_whole_environment
from dagnb.model.step import Step
from dagnb.runtime.unmounted import (
    UnkeyedEnvironmentWarning,
    UnmountedReadWarning,
    code_folders,
    command_paths,
)


@pytest.fixture(autouse=True)
def fresh_looks(monkeypatch: pytest.MonkeyPatch) -> None:
    """No step looked at or warned of by an earlier test (the process keeps them)."""
    for name, empty in (("_FOUND", {}), ("_LOOKED", {}), ("_WARNED", set()), ("_NOTED", {}),
                        ("_NAMES", {}), ("_PRINTS_ENVIRONMENT", {}),
                        ("_WARNED_ENVIRONMENT", set())):
        monkeypatch.setattr(unmounted, name, empty)


def _later(path: Path, text: str) -> None:
    """Write ``text`` to ``path``, its time a second past the entries made before."""
    path.write_text(text)
    later = time.time() + 1
    os.utime(path, (later, later))


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``mydir/a.txt`` and ``data/sales.csv`` beside the workflow; the current folder."""
    (tmp_path / "mydir").mkdir()
    (tmp_path / "mydir" / "a.txt").write_text("a\n")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "sales.csv").write_text("region,amount\neu,1\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    return tmp_path


def _said(graph: dagnb.Graph, category: type[Warning]) -> tuple[dict[str, str], list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = graph.run(executor="local")
    return run.states(), [str(w.message) for w in caught if issubclass(w.category, category)]


def _workflow(project: Path, steps: str) -> dagnb.Graph:
    (project / "wf.yml").write_text(f"name: wf\nsteps:\n{steps}")
    return dagnb.load(project / "wf.yml")


@pytest.mark.parametrize("named", ["./mydir", "mydir"])
def test_a_file_edited_in_a_named_folder_is_warned_of_on_a_hit(project, named):
    # (the folder's own time changes only as a file is added or removed; the bare word
    # was no path at all)
    graph = _workflow(project, f"  grep: {{run: 'grep -r . {named}'}}\n")
    assert _said(graph, UnmountedReadWarning) == ({"grep": "succeeded"}, [])
    assert _said(graph, UnmountedReadWarning) == ({"grep": "cached"}, [])
    _later(project / "mydir" / "a.txt", "changed\n")
    states, said = _said(graph, UnmountedReadWarning)
    assert states == {"grep": "cached"}
    assert len(said) == 1 and said[0].startswith(
        f"step 'grep' was served from the cache, but it reads {named}, which changed since")


def test_hidden_and_cache_folders_and_a_walk_past_its_bound_say_nothing(
        project, monkeypatch):
    folder, created = project / "mydir", time.time()
    for hidden in (".git", "__pycache__", "node_modules"):
        (folder / hidden).mkdir()
        _later(folder / hidden / "x", "x")
    os.utime(folder, (created, created))
    os.utime(folder / "a.txt", (created, created))
    assert not unmounted._changed_since(folder, created)
    (folder / "sub").mkdir()
    _later(folder / "sub" / "b.txt", "b")
    os.utime(folder / "sub", (created, created))
    os.utime(folder, (created, created))
    assert unmounted._changed_since(folder, created)  # (under a folder under it)
    monkeypatch.setattr(unmounted, "WALKED_ENTRIES", 0)  # (never said unseen)
    assert not unmounted._changed_since(folder, created)


def test_bare_words_count_but_a_command_s_own_name_keywords_and_assignments():
    assert command_paths("grep -r . mydir") == ("mydir",)
    assert command_paths("python3 -m mypkg && sudo make N=3 all") == ("mypkg", "all")
    assert command_paths("grep -r . \\\n  mydir | sort") == ("mydir",)
    assert command_paths("for f in data; do cat x; done > out") == ("f", "data", "x")
    assert command_paths(("grep", "-r", ".", "mydir")) == ("mydir",)


def test_a_python_step_reading_a_folder_held_in_a_global_is_warned_of(project):
    (project / "qa_steps.py").write_text(
        "from pathlib import Path\n"
        "DATA = Path('data')\n"
        "def count():\n"
        "    return len((DATA / 'sales.csv').read_text().splitlines())\n")
    graph = _workflow(project, "  count: {python: qa_steps.py:count}\n")
    assert _said(graph, UnmountedReadWarning) == ({"count": "succeeded"}, [])
    _later(project / "data" / "sales.csv", "region,amount\neu,1\nus,2\n")
    states, said = _said(graph, UnmountedReadWarning)
    assert states == {"count": "cached"}
    assert len(said) == 1 and said[0].startswith(
        "step 'count' was served from the cache, but it reads data, which changed since")


def test_a_bare_text_counts_as_a_folder_but_not_as_a_key_or_compared():
    def step(row):
        folder = Path("data")
        return (row["models"], row.get("x") == "src", "notes" in row, hasattr(row, "y"),
                os.mkdir("out"), folder)

    assert code_folders(step.__code__) == ("data/",)


def _key(step: Step) -> object:
    return step_key(step, upstream_digests={}, base_dir=Path("."))


@pytest.mark.parametrize("run", [
    "printenv REGION > \"$DAGNB_OUT/r.txt\"",
    "printenv -0 ZONE REGION",
    ("printenv", "REGION"),
    "awk 'BEGIN{print ENVIRON[\"REGION\"]}'",
    "awk \"BEGIN{print ENVIRON[\\\"REGION\\\"]}\"",
    "python3 -c 'import os; print(os.getenv(\"REGION\"))'",
])
def test_printenv_and_awk_s_environ_reads_are_in_the_key(run, monkeypatch):
    monkeypatch.setenv("REGION", "eu")
    first = _key(Step("r", run=run))
    assert first.describe["host_var:REGION"] == "eu"
    monkeypatch.setenv("REGION", "ap")
    assert _key(Step("r", run=run)) != first
    monkeypatch.delenv("REGION")
    assert _key(Step("r", run=run)).describe["host_var:REGION"] == "(unset)"


def test_a_step_printing_its_whole_environment_is_warned_of_once_on_a_hit(
        project, monkeypatch):
    monkeypatch.setenv("REGION", "eu")
    graph = _workflow(project, "  show: {run: 'env | grep ^REGION= > \"$DAGNB_OUT/r.txt\"'}\n")
    assert _said(graph, UnkeyedEnvironmentWarning) == ({"show": "succeeded"}, [])
    monkeypatch.setenv("REGION", "ap")
    assert _said(graph, UnkeyedEnvironmentWarning) == ({"show": "cached"}, [
        "step 'show' was served from the cache, but it prints its whole environment (env "
        "or printenv with no name), whose variables its key does not hold: the result may "
        "be stale; name each variable it reads (\"$REGION\", printenv REGION), which then "
        "counts in its key, or set it in the step's env"])
    assert _said(graph, UnkeyedEnvironmentWarning) == ({"show": "cached"}, [])  # (once)


@pytest.mark.parametrize(("run", "whole"), [
    ("env", True), ("printenv -0 | sort", True), ("x=$(env)", True), (("env",), True),
    (("sh", "-c", "env | grep ^A="), True), ("if true; then /usr/bin/env; fi", True),
    ("env -i sh -c 'echo $A'", False), ("env A=1 make", False), ("printenv A", False),
    ("conda activate env", False), (("conda", "activate", "env"), False),
    ("python3 -m venv env", False), ("#!/usr/bin/env bash\necho hi", False),
    # bash's own dumps, and Python or awk run by the text taking the environment whole
    ("export -p | grep ^REGION=", True), ("export", True), ("declare -x", True),
    ("declare -p > vars.txt", True), ("typeset -px", True), ("set | grep ^REGION=", True),
    ("( set -o posix; set )", True), ("set -euo pipefail\nset\n", True),
    ("python3 -c 'import os; print(dict(os.environ))'", True),
    ("python3 - <<'PY'\nimport os\nfor k, v in os.environ.items(): print(k, v)\nPY", True),
    ("python3 -c 'import os, subprocess; subprocess.run([\"x\"], env=os.environ.copy())'",
     True),
    ("python3 -c 'import json, os; print(json.dumps(dict(os.environ)))'", True),
    ("python3 -c 'import os; print({**os.environ})'", True),
    (("python3", "-c", "import os\nfor name in os.environ: print(name)"), True),
    ("awk 'BEGIN{for (k in ENVIRON) print k}'", True),
    # options, assignments, names, a function list, a single read: no dump
    ("set -e", False), ("set -euo pipefail\nmake", False), ("set -x; make", False),
    ("set -o", False), ("export FOO=1", False), ("export FOO BAR", False),
    ("declare -A map", False), ("declare -f", False), ("declare -x FOO=1", False),
    ("python3 -c 'import os; print(os.environ[\"REGION\"])'", False),
    ("python3 -c 'import os; print([n for n in names if n in os.environ])'", False),
    ("make offset=3 reset", False),
])
def test_what_prints_the_whole_environment(run, whole):
    assert reads_whole_environment(run) is whole


@pytest.mark.parametrize(("run", "said", "named"), [
    ("export -p | grep REGION", "prints its whole environment (export -p with no name)",
     '"$REGION", printenv REGION'),
    ("set | grep ^REGION=", "prints its whole environment (set with no argument)",
     '"$REGION", printenv REGION'),
    ("python3 -c 'import os; print(dict(os.environ))'",
     "reads its whole environment (dict(os.environ) in Python it runs)",
     'os.environ["REGION"]'),
])
def test_the_warning_says_what_reads_the_whole_environment_and_how_to_name_one(
        project, monkeypatch, run, said, named):
    monkeypatch.setenv("REGION", "eu")
    graph = _workflow(project, f"  show: {{run: {json.dumps(run + ' > /dev/null')}}}\n")
    assert _said(graph, UnkeyedEnvironmentWarning) == ({"show": "succeeded"}, [])
    monkeypatch.setenv("REGION", "ap")
    assert _said(graph, UnkeyedEnvironmentWarning) == ({"show": "cached"}, [
        f"step 'show' was served from the cache, but it {said}, whose variables its key "
        f"does not hold: the result may be stale; name each variable it reads ({named}), "
        "which then counts in its key, or set it in the step's env"])


@pytest.mark.parametrize(("run", "named"), [
    ("python3 -m pkg.sub", ("pkg",)), ("python -u -m pkg.sub.main data", ("pkg", "data")),
    ("uv run python3.12 -m pkg.sub; cat x.txt", ("run", "python3.12", "pkg", "x.txt")),
    (("python3", "-m", "pkg.sub"), ("pkg",)), ("python3 -mpkg.sub", ("pkg",)),
    ("git commit -m fix.it", ("commit", "fix.it")),  # (not Python's -m)
])
def test_a_module_run_with_python_m_names_its_top_package_s_folder(run, named):
    assert command_paths(run) == named


def test_an_edit_in_the_package_of_a_module_run_with_python_m_is_warned_of(project):
    (project / "pkg" / "sub").mkdir(parents=True)
    (project / "pkg" / "__init__.py").write_text("")
    (project / "pkg" / "sub" / "__init__.py").write_text("")
    (project / "pkg" / "sub" / "report.py").write_text("print(1)\n")
    graph = _workflow(project, "  report: {run: 'python3 -m pkg.sub.report'}\n")
    assert _said(graph, UnmountedReadWarning) == ({"report": "succeeded"}, [])
    _later(project / "pkg" / "sub" / "report.py", "print(2)\n")
    states, said = _said(graph, UnmountedReadWarning)
    assert states == {"report": "cached"}
    assert len(said) == 1 and said[0].startswith(
        "step 'report' was served from the cache, but it reads pkg, which changed since")


def test_the_hits_of_one_run_walk_a_folder_they_name_once(project, monkeypatch):
    graph = _workflow(project, "".join(
        f"  grep{n}: {{run: 'grep -r . mydir; echo {n}'}}\n" for n in range(3)))
    assert set(_said(graph, UnmountedReadWarning)[0].values()) == {"succeeded"}
    walks = []
    walk = unmounted._newest_under
    monkeypatch.setattr(unmounted, "_newest_under",
                        lambda folder: walks.append(folder) or walk(folder))
    assert set(_said(graph, UnmountedReadWarning)[0].values()) == {"cached"}
    assert set(_said(graph, UnmountedReadWarning)[0].values()) == {"cached"}
    assert walks == [str(project / "mydir")] * 2  # (once a run: a new run looks again)
