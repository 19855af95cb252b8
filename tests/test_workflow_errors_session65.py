"""`dagnb validate` and `dagnb run` of a workflow file with a mistake in it: each refusal
is one line naming the file, the step, the value as written and the fix, and a declared
parameter whose default is not the value its steps are written with is refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.cli import main


def _refused(folder: Path, text: str, capsys: pytest.CaptureFixture[str],
             monkeypatch: pytest.MonkeyPatch, *extra: str) -> str:
    """The one line `dagnb validate wf.yml` and `dagnb run wf.yml` (both exit 2) say of
    ``text``, without the ``dagnb: error:`` both start it with."""
    monkeypatch.chdir(folder)
    (folder / "wf.yml").write_text(text)
    lines = []
    for command in (["validate", "wf.yml"], ["run", "wf.yml", "--executor", "local"]):
        capsys.readouterr()
        assert main([*command, *extra]) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("dagnb: error: "), err
        lines.append(err.removeprefix("dagnb: error: ").rstrip("\n"))
    assert lines[0] == lines[1]
    return lines[0]


# -- 1. needs and retries, said with the file ---------------------------------------------


def test_a_need_that_names_no_step_names_the_file_the_step_and_the_closest_name(
        tmp_path, capsys, monkeypatch) -> None:
    said = _refused(tmp_path, "steps:\n  fetch: {run: 'true'}\n"
                              "  shout: {run: 'true', needs: [fetc]}\n", capsys, monkeypatch)
    assert said == ("wf.yml: step 'shout' needs 'fetc', which is not a step; "
                    "did you mean 'fetch'?")


def test_a_need_like_no_step_names_the_steps_there_are(tmp_path, capsys, monkeypatch):
    # (it said "check the step names", naming none)
    said = _refused(tmp_path, "steps:\n  fetch: {run: 'true'}\n"
                              "  shout: {run: 'true', needs: [zzz]}\n", capsys, monkeypatch)
    assert said == ("wf.yml: step 'shout' needs 'zzz', which is not a step; its other "
                    "steps are fetch")


@pytest.mark.parametrize(("needs", "said"), [
    ("lod_data", "step 'load_data' needs 'lod_data', which is not a step; its other steps "
                 "are clean"),  # (it said: did you mean 'load_data'? Itself: refused too)
    ("clan", "step 'load_data' needs 'clan', which is not a step; did you mean 'clean'?"),
])
def test_a_mistyped_need_is_never_told_to_be_the_step_itself(tmp_path, capsys, monkeypatch,
                                                             needs, said):
    refused = _refused(tmp_path, f"steps:\n  clean: {{run: 'true'}}\n"
                                 f"  load_data: {{run: 'true', needs: [{needs}]}}\n",
                       capsys, monkeypatch)
    assert refused == f"wf.yml: {said}"


def test_needs_that_form_a_cycle_name_the_file_and_the_steps(tmp_path, capsys, monkeypatch):
    said = _refused(tmp_path, "steps:\n  a: {run: 'true', needs: [b]}\n"
                              "  b: {run: 'true', needs: [a]}\n", capsys, monkeypatch)
    assert said in (f"wf.yml: the steps' needs form a cycle: {cycle}; remove one of these "
                    "needs" for cycle in ("a -> b -> a", "b -> a -> b"))


FIX = "write retries: 3 or retries: {max_retries: 3, backoff_factor: 2}"


@pytest.mark.parametrize(("written", "said"), [
    ("many", f"retries: 'many' is not a number; {FIX}"),
    ("'3'", f"retries: '3' is not a number; {FIX}"),
    ("[1, 2]", f"retries: [1, 2] is not a number; {FIX}"),
    ("2.5", f"retries: 2.5 is not a whole number; {FIX}"),
    ("{max_retries: many}",
     "retries: max_retries='many' is not valid; expected a whole number >= 0"),
    ("{attempts: 3}", "retries: 'attempts' is not known; expected one of "),
    ("{retry_on: [TypeError]}", "retries.retry_on holds 'TypeError', which a workflow file "
                                "cannot; name exit codes (such as 137) there"),
])
def test_retries_the_retry_layer_refuses_are_said_in_the_file_s_words(
        tmp_path, capsys, monkeypatch, written: str, said: str) -> None:
    # (they named no file, and spoke of None and RetryPolicy, or of exception types and
    # predicates, which no YAML file can hold)
    line = _refused(tmp_path, f"steps:\n  a:\n    run: 'true'\n    retries: {written}\n",
                    capsys, monkeypatch)
    assert line.startswith(f"wf.yml: step 'a': {said}"), line
    for python in ("None", "RetryPolicy", "predicate", "exception types", "int()"):
        assert python not in line


def test_retries_under_defaults_are_said_there(tmp_path, capsys, monkeypatch) -> None:
    said = _refused(tmp_path, "defaults: {retries: many}\nsteps:\n  a: {run: 'true'}\n",
                    capsys, monkeypatch)
    assert said == f"wf.yml: defaults: retries: 'many' is not a number; {FIX}"


# -- 2. a declared parameter's default against its steps' value -------------------------

DECLARED = "parameters:\n  alpha: {type: float, default: 0.1}\n"


def test_a_default_unlike_the_steps_value_is_refused_naming_both_and_the_fix(
        tmp_path, capsys, monkeypatch) -> None:
    # (validate said "valid", and the run used 0.5 where the file declared 0.1)
    said = _refused(tmp_path, DECLARED + "steps:\n  fit: {run: 'true', params: {alpha: 0.5}}\n",
                    capsys, monkeypatch)
    assert said == ("wf.yml: parameter 'alpha' has default 0.1, but step 'fit' gives params "
                    "alpha: 0.5, the value its steps run with; make them one: default: 0.5, "
                    "or alpha: 0.1 in step 'fit'")


def test_a_run_given_the_param_still_refuses_the_file_s_mismatch(tmp_path, capsys,
                                                                  monkeypatch) -> None:
    said = _refused(tmp_path, DECLARED + "steps:\n  fit: {run: 'true', params: {alpha: 0.5}}\n",
                    capsys, monkeypatch, "--param", "alpha=0.7")
    assert said.startswith("wf.yml: parameter 'alpha' has default 0.1, but step 'fit' ")


def test_a_mismatch_the_defaults_params_give_is_said_there(tmp_path, capsys, monkeypatch):
    said = _refused(tmp_path, DECLARED + "defaults: {params: {alpha: 0.5}}\n"
                    "steps:\n  fit: {run: 'true'}\n  own: {run: 'true', params: {alpha: 0.1}}\n",
                    capsys, monkeypatch)
    assert said.endswith("but defaults gives params alpha: 0.5, the value its steps run "
                         "with; make them one: default: 0.5, or alpha: 0.1 in defaults")


def test_a_step_value_the_parameter_does_not_take_is_refused(tmp_path, capsys, monkeypatch):
    said = _refused(tmp_path, DECLARED + "steps:\n  fit: {run: 'true', params: {alpha: x}}\n",
                    capsys, monkeypatch)
    assert said == ("wf.yml: parameter 'alpha': step 'fit' gives params alpha: 'x', which is "
                    "not valid; expected a float; write its default, alpha: 0.1, there")


def test_a_default_equal_to_the_steps_value_validates_and_runs_with_a_param(
        tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(
        "parameters:\n  alpha: {type: float, default: 2}\n  rows: {type: int, default: 5}\n"
        "defaults: {params: {rows: 5}}\n"
        "steps:\n  fit: {run: 'test \"$DAGNB_PARAM_ALPHA\" = 0.7', params: {alpha: 2}}\n")
    assert main(["validate", "wf.yml"]) == 0
    assert capsys.readouterr().out == "wf.yml: 1 step, valid\n"
    assert main(["run", "wf.yml", "--executor", "local", "--param", "alpha=0.7"]) == 0


def test_a_file_templates_new_writes_still_validates(tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["templates", "new", "pandas-etl", "-p", "rows=7", "-p", "title=Q3",
                 "-o", "q3.yml"]) == 0
    assert main(["validate", "q3.yml"]) == 0
    assert "q3.yml: " in capsys.readouterr().out


# -- what the review of the check found -------------------------------------------------

GREET = """\
id: greet
name: Greeting
category: demo
description: says hello
parameters:
  who: {type: str, default: world}
workflow:
  steps:
    hello:
      run: 'echo "$DAGNB_PARAM_WHO"'
      params: {who: "Dear ${who}"}
"""

WRITTEN = """\
parameters:
  alpha: {type: float, default: 0.1}
steps:
  fit:
    run: 'echo "$DAGNB_PARAM_ALPHA"'
    params: {alpha: 0.1}
"""


def test_a_user_template_with_a_parameter_inside_a_longer_value_still_makes_files(
        tmp_path, monkeypatch) -> None:
    """Its steps' values are made of the parameter, never its default: the check refused
    `templates new` of it, and the files it had made."""
    (tmp_path / "tpl").mkdir()
    (tmp_path / "tpl" / "greet.yml").write_text(GREET)
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(tmp_path / "tpl"))
    monkeypatch.chdir(tmp_path)
    assert main(["templates", "new", "greet", "-o", "g.yml", "-p", "who=Ann"]) == 0
    assert main(["validate", "g.yml"]) == 0
    assert main(["run", "g.yml", "--executor", "local"]) == 0
    assert "who: Dear Ann" in (tmp_path / "g.yml").read_text()


def test_a_graph_given_a_param_then_saved_loads_again_with_that_default(tmp_path) -> None:
    """The dump kept the declared default while its steps held the value set."""
    import yaml

    from dagnb.workflows.loader import graph_from_dict, load
    from dagnb.workflows.params import set_params

    (tmp_path / "wf.yml").write_text(WRITTEN)
    graph = load(tmp_path / "wf.yml")
    set_params(graph, {"alpha": 0.5}, "wf.yml")
    again = graph_from_dict(yaml.safe_load(graph.to_yaml()), source="dumped")
    assert again.parameters["alpha"].default == 0.5 and again["fit"].params == {"alpha": 0.5}


def test_a_graph_needing_a_step_it_lacks_is_not_saved_to_a_file_no_load_takes(
        tmp_path) -> None:
    from dagnb import Graph, Step
    from dagnb.errors import WorkflowError

    graph = Graph("partial", [Step("report", run="true", needs=("clean",))])
    with pytest.raises(WorkflowError, match="cannot save 'partial': step 'report' needs "
                                            "'clean', which is not a step"):
        graph.to_yaml(tmp_path / "partial.yml")
    assert not (tmp_path / "partial.yml").exists()
