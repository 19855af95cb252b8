"""A step whose ``run`` is a list (argv, started with no shell) never expanded ``$VARS``,
and nothing said so: ``[python3, w.py, "$DAGNB_OUT"]`` wrote into a folder named
``$DAGNB_OUT`` in the project, the step's empty output was cached, ``dagnb validate``
said valid, and its ``needs`` hint for ``$DAGNB_IN/a`` led to a step failing on the
literal path. Its items now expand ``$NAME`` and ``${NAME}`` from the step's
environment, as Dagger's ``withExec(expand: true)`` does, but a name not there fails
the step in one line, and ``$$`` is a ``$`` (:mod:`dagnb.model.expand`). ``$NAME`` in an
``env`` value, which dagnb passes as written, is refused when the graph is checked."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

from dagnb import Graph, InvalidStepError, Step
from dagnb.cli import main

WRITER = ("import os, sys\nos.makedirs(sys.argv[1], exist_ok=True)\n"
          "open(os.path.join(sys.argv[1], 'a.txt'), 'w').write('hello')\n")
REPRO = """name: av
steps:
  a:
    run: [python3, w.py, "$DAGNB_OUT"]
  b:
    needs: [a]
    run: [cat, "$DAGNB_IN/a/a.txt"]
"""


def test_the_repro_through_the_cli_b_sees_a_s_file(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "w.py").write_text(WRITER)
    (workdir / "wf.yml").write_text(REPRO)
    assert main(["validate", "wf.yml"]) == 0
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    assert "2 succeeded" in capsys.readouterr().out
    assert not (workdir / "$DAGNB_OUT").exists()  # (the project is left alone)
    assert main(["logs", "wf.yml", "b"]) == 0
    assert capsys.readouterr().out.splitlines()[-1] == "hello"


def test_validate_s_needs_hint_is_right_now(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "w.py").write_text(WRITER)
    (workdir / "wf.yml").write_text(REPRO.replace("    needs: [a]\n", ""))
    assert main(["validate", "wf.yml"]) == 2
    assert capsys.readouterr().err == (
        "dagnb: error: wf.yml: step 'b' reads $DAGNB_IN/a but does not need 'a'; "
        "add needs: [a]\n")


def _run(tmp_path: Path, step: Step):
    return Graph("g", [step]).run(executor="local", cache_directory=tmp_path / "cache")


def test_a_name_not_in_the_step_s_environment_fails_it_in_one_line_before_it_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("QA_NOT_SET", raising=False)
    monkeypatch.chdir(tmp_path)  # (unexpanded, touch made a file of that name here)
    marker = tmp_path / "ran"
    run = _run(tmp_path, Step("u", run=["touch", str(marker), "${QA_NOT_SET}"]))
    assert run.failed == ["u"]
    assert run.status_rows()["u"]["error"] == (
        "step 'u': run item 3 '${QA_NOT_SET}' reads $QA_NOT_SET, which is not in the step's "
        "environment; set it (the step's env, secrets, or the environment dagnb runs in), "
        "or write $${QA_NOT_SET} for the text as it is")
    assert not marker.exists()


def test_each_variable_of_the_step_s_environment_expands_and_double_dollar_is_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_FROM_HOST", "host")
    script = "import sys; print('|'.join(sys.argv[1:]))"
    run = _run(tmp_path, Step(
        "e", params={"rows": 3}, env={"MODE": "fast"},
        run=["python3", "-c", script, "$DAGNB_PARAM_ROWS", "${MODE}-x", "$QA_FROM_HOST",
             "$$HOME", "cost$", "$/", "$DAGNB_STEP"]))
    assert run.ok
    assert list(run.logs("e")["line"]) == ["3|fast-x|host|$HOME|cost$|$/|e"]


def test_a_secret_expanded_into_argv_is_masked_in_the_log_and_the_error(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    token = "tok-QA-argv-5f3e9d"
    monkeypatch.setenv("QA_ARGV_TOKEN", token)
    script = "import sys; print('got', sys.argv[1]); sys.exit(sys.argv[1])"
    run = _run(tmp_path, Step("s", secrets=["QA_ARGV_TOKEN"],
                              run=["python3", "-c", script, "$QA_ARGV_TOKEN"]))
    assert run.failed == ["s"]
    lines = list(run.logs("s")["line"])
    assert "got ***" in lines and not any(token in line for line in lines)
    assert token not in str(run.status_rows()["s"]["error"])
    stored = [p.read_bytes() for p in (tmp_path / "cache").rglob("*") if p.is_file()]
    assert not any(token.encode() in data for data in stored)


def test_another_step_s_secret_is_named_as_withheld(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_OTHER_TOKEN", "tok-QA-other-88a1")
    run = Graph("g", [Step("own", run="true", secrets=["QA_OTHER_TOKEN"]),
                      Step("u", run=["echo", "$QA_OTHER_TOKEN"])]).run(
        executor="local", cache_directory=tmp_path / "cache")
    assert run.status_rows()["u"]["error"] == (
        "step 'u': run item 2 '$QA_OTHER_TOKEN' reads $QA_OTHER_TOKEN, a secret of other "
        "steps, withheld from this one; add QA_OTHER_TOKEN to its secrets")


@pytest.mark.parametrize(("item", "bad"), [("{print $1}", "$1"), ("${A:-x}", "${A:-x}"),
                                           ("$(date)", "$(")])
def test_shell_syntax_in_an_item_is_refused_when_the_graph_is_checked(item, bad) -> None:
    with pytest.raises(InvalidStepError) as refused:
        Graph("g", [Step("q", run=["awk", item, "f"])]).validate()
    assert str(refused.value) == (
        f"step 'q': run item 2 {item!r} holds {bad}, shell syntax that an argv list does not "
        f"have (no shell runs it); write $${bad[1:]} for the text as it is, or make run "
        "shell text")


def test_a_param_read_as_a_variable_in_an_item_is_warned_of() -> None:
    graph = Graph("g", [Step("p", run=["echo", "$rows"], params={"rows": 3})])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph.validate()
    assert [str(w.message) for w in caught] == [
        "step 'p': its run list reads $rows, which is not set (the step fails on it); its "
        "param 'rows' is in $DAGNB_PARAM_ROWS (and all its params, as JSON, in $DAGNB_PARAMS)"]


def _warned(graph: Graph) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph.validate()
    return [str(w.message) for w in caught]


def test_a_reference_in_an_env_value_is_warned_of_with_the_fix() -> None:
    said = _warned(Graph("g", [Step("e", run="true", env={"OUTDIR": "$DAGNB_OUT/sub"})]))
    assert said == [
        "step 'e': env OUTDIR holds $DAGNB_OUT, which dagnb does not expand in env values: "
        "the step gets the text as written; to expand it, build the value in the command: "
        "an item \"$DAGNB_OUT/sub\" of a run list is expanded, as shell text is "
        "(OUTDIR=\"$DAGNB_OUT/sub\" cmd ...)"]


@pytest.mark.parametrize(("variable", "value"), [
    ("PGPASSWORD", "${DB_PASS}"), ("DB_PASSWORD", "$DB_PASS"),
    ("DATABASE_URL", "postgresql://etl:${DB_PASS}@db/app")])
def test_a_secret_s_reference_in_env_is_not_said_to_be_held_in_clear(variable, value) -> None:
    said = _warned(Graph("g", [Step("e", run="psql", env={variable: value})]))
    written = value[value.index("$"):].partition("@")[0]
    assert said == [
        f"step 'e': env {variable} holds {written}, which dagnb does not expand in env "
        "values: the step gets the text as written, and a secret reaches a step under its "
        f"own name only; to pass it in {variable}, list DB_PASS under the step's secrets and "
        f"set {variable} from it in the command (shell text: {variable}=\"{value}\" cmd "
        f"...), or export {variable} itself and list it under secrets"]


@pytest.mark.parametrize("value", ["Xy7$Kp9Qz2Lmw4", "postgres://u:pa$sw0rdXYZ@db/x"])
def test_a_password_with_a_dollar_in_it_is_never_shown_in_a_warning(value, tmp_path,
                                                                      monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    variable = "DB_PASSWORD" if "://" not in value else "DATABASE_URL"
    (tmp_path / "w.yml").write_text(
        f"name: w\nsteps:\n  a:\n    env:\n      {variable}: '{value}'\n    run: echo hi\n")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert main(["validate", "w.yml"]) == 0
    said = " ".join(str(w.message) for w in caught) + capsys.readouterr().err
    secret = value.split("$", 1)[1].split("@")[0]
    assert secret not in said, said
    assert "secret" in said, said  # (the secret written in is said, its text not)
