"""Defining a step from a cell is all or nothing; %dagger remove takes one step out."""

from __future__ import annotations

import json

import pytest
from IPython.core.error import UsageError

import dagnb
import dagnb.notebook.widgets
from dagnb import Step
from dagnb.notebook.session import Session, get_session


def cell(ip, line, body="echo hi\n"):
    return ip.run_cell_magic("dagger", line, body)


def names():
    return get_session().graph.names


def test_a_cell_with_an_unknown_need_adds_nothing_and_later_cells_work(shell):
    cell(shell, "a --python --outputs x", "x = 1\n")
    with pytest.raises(UsageError, match="step 'c2' needs 'aa', which is not a step; did you "
                       "mean 'a'"):
        cell(shell, "c2 --python --needs aa", "y = 2\n")
    assert names() == ["a"]
    cell(shell, "c3 --python --needs a --outputs b", "b = a + 1\n")
    shell.run_line_magic("dagger", "run")
    assert get_session().last_run.states() == {"a": "cached", "c3": "cached"}
    assert shell.user_ns["b"] == 2


def test_a_refused_redefinition_keeps_the_old_step_and_its_outputs(shell):
    cell(shell, "one --define-only", "echo one\n")
    cell(shell, "two --needs one --python --outputs v --define-only", "v = 1\n")
    with pytest.raises(UsageError, match="cycle"):
        cell(shell, "one --needs two --python --outputs w", "w = 2\n")
    with pytest.raises(UsageError, match="step 'two' needs itself"):
        cell(shell, "two --needs two --python --outputs v", "v = 3\n")
    assert get_session().graph["one"].run == "echo one\n"
    assert get_session().graph["two"].needs == ("one",)
    assert get_session().outputs == {"one": (), "two": ("v",)}
    assert names() == ["one", "two"]


def test_a_cell_whose_run_cannot_start_is_undone(shell):
    with pytest.raises(UsageError, match="mounts 'absent', which does not exist"):
        cell(shell, "reads --mount absent:/data", "ls /data\n")
    assert names() == []
    assert get_session().last_run is None


def test_define_only_is_checked_too(shell):
    with pytest.raises(UsageError, match="needs 'ghost'"):
        cell(shell, "x --needs ghost --define-only")
    assert names() == []


def test_unknown_upstream_after_a_restart_names_the_cell_to_run_first(shell, workdir):
    notebook = workdir / "pipeline.ipynb"
    notebook.write_text(json.dumps({"cells": [
        {"cell_type": "markdown", "source": ["%%dagger prep is below"]},
        {"cell_type": "code", "source": ["%load_ext dagnb"]},
        {"cell_type": "code", "source": ["%%dagger prep --param n=3\n", "seq 3\n"]},
        {"cell_type": "code", "source": ["%%dagger total --needs prep\n", "echo\n"]},
    ]}))
    shell.user_ns["__session__"] = str(notebook)
    with pytest.raises(UsageError, match=r"step 'total' needs 'prep', which is not defined in "
                       r"this kernel yet; run cell 3 of pipeline.ipynb \(%%dagger prep "
                       r"--param n=3\) first"):
        cell(shell, "total --needs prep", "echo\n")
    assert names() == []
    cell(shell, "prep --param n=3", "seq 3\n")
    cell(shell, "total --needs prep", "echo\n")
    assert get_session().last_run.ok


def test_without_the_notebook_file_the_message_names_the_cell_to_run(shell):
    with pytest.raises(UsageError, match=r"run the cell that defines it \(%%dagger prep\) first"):
        cell(shell, "total --needs prep")


# -- %dagger remove ---------------------------------------------------------------------
def test_remove_refuses_while_other_steps_need_it_naming_them(shell):
    cell(shell, "a --define-only")
    cell(shell, "b --needs a --define-only")
    cell(shell, "c --needs a --define-only")
    with pytest.raises(UsageError, match="step 'a' is needed by 'b', 'c'; remove or redefine"):
        shell.run_line_magic("dagger", "remove a")
    assert names() == ["a", "b", "c"]
    assert shell.run_line_magic("dagger", "remove b") == "removed step 'b'; the graph has 2 steps"
    assert names() == ["a", "c"]
    shell.run_line_magic("dagger", "remove c")
    assert shell.run_line_magic("dagger", "remove a") == "removed step 'a'; the graph has 0 steps"
    cell(shell, "d --define-only")
    cell(shell, "e --define-only")
    assert shell.run_line_magic("dagger", "remove e") == "removed step 'e'; the graph has 1 step"


def test_remove_forgets_the_published_result(shell):
    cell(shell, "leaf --python --outputs v", "v = 1\n")
    assert "leaf" in shell.user_ns["_dagger"]
    shell.run_line_magic("dagger", "remove leaf")
    assert "leaf" not in shell.user_ns["_dagger"] and "leaf" not in get_session().outputs


@pytest.mark.parametrize(("text", "message"), [
    ("remove", "%dagger remove takes one step name"),
    ("remove ghost", "no step named 'ghost'"),
])
def test_remove_bad_input_is_a_usage_error(shell, text, message):
    with pytest.raises(UsageError, match=message):
        shell.run_line_magic("dagger", text)


# -- the pieces ---------------------------------------------------------------------------
def test_session_define_is_all_or_nothing_in_python(workdir):
    session = Session({})
    session.define(Step("a", run="echo a"))
    with pytest.raises(dagnb.MissingDependencyError):
        session.define(Step("b", run="echo b", needs=["nope"]))
    assert session.graph.names == ["a"]
