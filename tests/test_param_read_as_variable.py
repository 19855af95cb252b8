"""A shell step that reads its param as a variable of the param's name (``echo $label``
for ``params: {label: final}``) read it empty, silently: params reach a command as
``$DAGNB_PARAM_<NAME>`` and in ``$DAGNB_PARAMS``. Validating the graph (a run, ``dagnb
validate``, a ``%%dagger`` cell) now warns, naming the variable to read instead."""

from __future__ import annotations

import warnings

import pytest

import dagnb


def _said(run: str, params: dict, env: dict | None = None) -> list[str]:
    graph = dagnb.Graph("g", [dagnb.Step("report", run=run, params=params, env=env or {})])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph.validate()
    return [str(w.message) for w in caught]


@pytest.mark.parametrize("run", ['echo "report $label"', "echo ${label}", "echo ${label:-x}",
                                 'python3 -c "print($label)"'])
def test_a_param_read_as_a_variable_of_its_name_is_warned_of(run):
    assert _said(run, {"label": "final"}) == [
        "step 'report': its command reads $label, which is not set (it reads as empty); its "
        "param 'label' is in $DAGNB_PARAM_LABEL (and all its params, as JSON, in "
        "$DAGNB_PARAMS)"]


@pytest.mark.parametrize("run", [
    "echo $DAGNB_PARAM_LABEL",
    "label=x; echo $label",  # assigned by the command
    "for label in a b; do echo $label; done",
    "read label < f; echo $label",
    "awk '{print $label}' f",  # (single quotes: not the shell's)
    "echo hi  # $label",
    "echo $labels",  # another name
])
def test_what_the_command_sets_or_the_shell_does_not_expand_is_not(run):
    assert _said(run, {"label": "final"}) == []


def test_one_its_env_or_the_environment_sets_is_not(monkeypatch):
    assert _said("echo $label", {"label": "final"}, env={"label": "x"}) == []
    monkeypatch.setenv("label", "from the shell")
    assert _said("echo $label", {"label": "final"}) == []


def test_said_once_per_change_of_the_graph_not_at_every_run(tmp_path):
    graph = dagnb.Graph("g", [dagnb.Step("report", run="echo $n", params={"n": 3})])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for _ in range(2):
            run = graph.run(executor="local", cache_directory=tmp_path)
            assert run.ok
    assert [str(w.message) for w in caught].count(
        "step 'report': its command reads $n, which is not set (it reads as empty); its "
        "param 'n' is in $DAGNB_PARAM_N (and all its params, as JSON, in $DAGNB_PARAMS)") == 1
    assert run.logs("report")["line"].tolist() == [""]  # (what the warning is about)


def test_a_dagger_cell_s_param_read_as_a_variable_is_warned_of(shell):
    """``%%dagger report --param label=final`` then ``echo $label``: the cell printed an
    empty label and said nothing."""
    with pytest.warns(UserWarning, match=r"reads \$label, which is not set.* "
                                         r"\$DAGNB_PARAM_LABEL"):
        shell.run_cell_magic("dagger", "report --param label=final --define-only",
                             "echo report $label\n")
