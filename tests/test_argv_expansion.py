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

from dagnb import Graph, Step
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


def test_a_dagnb_name_the_step_has_not_fails_it_in_one_line_before_it_starts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    run = _run(tmp_path, Step("u", run=["touch", str(marker), "${DAGNB_OUTT}/x"]))
    assert run.failed == ["u"]
    assert run.status_rows()["u"]["error"] == (
        "step 'u': run item 3 '${DAGNB_OUTT}/x' reads $DAGNB_OUTT, which dagnb does not set "
        "for this step; check the name (it sets DAGNB_OUT, DAGNB_IN, DAGNB_PARAMS, "
        "DAGNB_PARAM_<NAME> for each param, DAGNB_STEP, DAGNB_RUN_ID, DAGNB_ATTEMPT)")
    assert not marker.exists()


def test_dagnb_s_variables_expand_and_every_other_dollar_reaches_the_program(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("QA_FROM_HOST", "host")
    monkeypatch.setenv("QA_ARGV_TOKEN", "tok-QA-argv-5f3e9d")
    script = "import sys; print('|'.join(sys.argv[1:]))"
    run = _run(tmp_path, Step(
        "e", params={"rows": 3}, env={"MODE": "fast"}, secrets=["QA_ARGV_TOKEN"],
        run=["python3", "-c", script, "$DAGNB_PARAM_ROWS", "${DAGNB_STEP}-x", "${MODE}",
             "$QA_FROM_HOST", "$$", "{print $1}", "$(date)", "cost$", "$QA_ARGV_TOKEN"]))
    assert run.ok
    assert list(run.logs("e")["line"]) == [
        "3|e-x|${MODE}|$QA_FROM_HOST|$$|{print $1}|$(date)|cost$|$QA_ARGV_TOKEN"]


def test_a_bash_script_s_own_variables_reach_bash(tmp_path: Path) -> None:
    """``[bash, -c, "for f in a b; do echo item $f; done"]`` worked before argv items
    expanded anything, and still does."""
    run = _run(tmp_path, Step("loop", run=["bash", "-c", "for f in a b; do echo item $f; "
                                                         "done; echo pid $$ >/dev/null"]))
    assert run.ok and list(run.logs("loop")["line"]) == ["item a", "item b"]


def test_awk_s_fields_reach_awk(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``awk '{print $1}'`` in a list was refused as shell syntax by the first version."""
    (tmp_path / "f.csv").write_text("left,right\n")
    monkeypatch.chdir(tmp_path)
    run = _run(tmp_path, Step("q", run=["awk", "-F,", "{print $1}", str(tmp_path / "f.csv")]))
    assert run.ok and list(run.logs("q")["line"]) == ["left"]


def test_a_param_read_as_a_variable_in_an_item_is_warned_of() -> None:
    graph = Graph("g", [Step("p", run=["echo", "$rows"], params={"rows": 3})])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph.validate()
    assert [str(w.message) for w in caught] == [
        "step 'p': its run list holds $rows, which reaches the program as written (an item "
        "expands dagnb's $DAGNB_ variables alone); its param 'rows' is in $DAGNB_PARAM_ROWS "
        "(and all its params, as JSON, in $DAGNB_PARAMS)"]


def _warned(graph: Graph) -> list[str]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph.validate()
    return [str(w.message) for w in caught]


def test_a_reference_in_an_env_value_is_warned_of_with_the_fix() -> None:
    said = _warned(Graph("g", [Step("e", run="true", env={"OUTDIR": "$DAGNB_OUT/sub"})]))
    assert said == [
        "step 'e': env OUTDIR holds $DAGNB_OUT, which dagnb does not expand in env values: "
        "the step gets the text as written; to expand it, build the value in the "
        "command's shell text (OUTDIR=\"$DAGNB_OUT/sub\" cmd ...); an item "
        "\"$DAGNB_OUT/sub\" of a run list expands it"]


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
