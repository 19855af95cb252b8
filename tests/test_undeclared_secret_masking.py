"""The value of a variable named as a secret beyond doubt (``HF_TOKEN``, ``DB_PASSWORD``)
that no step declares is masked like a declared secret's: an in-process step reads the
process's environment and a command inherits it, so either may print it. A value too
short or too common to be a secret (``postgres``, ``123456``, a path) is left alone."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pandas as pd
import pytest

import dagnb
from dagnb.executors.capture import step_display
from dagnb.model.masking import environ_secrets

HF = "hf_aBcDeFgHiJkLmNoPqRsTuVwXyZ012345"
DB = "pw-Zq8xK2mN7"


def _files_holding(root: Path, *values: str) -> list[str]:
    """The files under ``root`` holding any of ``values``, read as bytes."""
    return [str(path) for path in root.rglob("*") if path.is_file()
            and any(value.encode() in path.read_bytes() for value in values)]


def _events_text(run: dagnb.Run) -> str:
    return json.dumps([event.data for event in run.events], default=str)


def _printing_graph() -> dagnb.Graph:
    graph = dagnb.Graph("undeclared")

    @graph.step()
    def prints():
        token = os.environ["HF_TOKEN"]
        print("hf", token)
        print("common", "postgresql://db/x", "pin 123456", os.environ["KEY_FILE_CREDENTIALS"])
        frame = pd.DataFrame({"t": [token]})
        step_display({"text/html": frame.to_html(), "text/plain": repr(frame)}, {})
        return 1

    @graph.step()
    def fails():
        raise ValueError(f"bad token {os.environ['HF_TOKEN']}")

    return graph


def test_an_undeclared_token_an_in_process_step_shows_is_masked_everywhere(
        workdir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF)
    # too common or short to mask: a word, a number, a path (the graph prints them)
    monkeypatch.setenv("PGPASSWORD", "postgres")
    monkeypatch.setenv("SECRET_KEY", "123456")
    credentials = workdir / "key.json"
    credentials.write_text("{}")
    monkeypatch.setenv("KEY_FILE_CREDENTIALS", str(credentials))
    graph = _printing_graph()
    run = graph.run(executor="local", raise_on_failure=False)
    logs, status = run.logs(), run.status()
    lines = "\n".join(logs["line"])
    assert HF not in lines and "hf ***" in lines
    assert f"common postgresql://db/x pin 123456 {credentials}" in lines
    assert HF not in " ".join(map(str, status["error"])) and "bad token ***" in " ".join(
        map(str, status["error"]))
    shown = [e.data["data"] for e in run.events if e.kind == "display"]
    assert shown and "***" in shown[0]["text/html"] and "***" in shown[0]["text/plain"]
    assert HF not in _events_text(run)
    assert _files_holding(workdir / ".dagnb_cache", HF) == []
    # a secret's value is no part of a key: a rotated token runs nothing again
    monkeypatch.setenv("HF_TOKEN", HF[::-1])
    again = graph.run(executor="local", targets=["prints"])
    assert again.states() == {"prints": "cached"}
    assert HF not in "\n".join(again.logs()["line"])


def test_a_result_holding_an_undeclared_token_is_not_cached(workdir, monkeypatch):
    monkeypatch.setenv("HF_TOKEN", HF)
    graph = dagnb.Graph("keeps")

    @graph.step()
    def config():
        return {"token": os.environ["HF_TOKEN"]}

    with pytest.warns(UserWarning, match="'config' ran but was not cached.*'HF_TOKEN'"):
        graph.run(executor="local")
    assert _files_holding(workdir, HF) == []


def test_an_undeclared_password_a_command_echoes_is_masked(workdir, monkeypatch):
    monkeypatch.setenv("DB_PASSWORD", DB)
    graph = dagnb.Graph("shell", [dagnb.Step("echoes", run='echo "db $DB_PASSWORD"')])
    run = graph.run(executor="local")
    assert run.logs()["line"].tolist() == ["db ***"]
    assert DB not in _events_text(run)
    assert _files_holding(workdir / ".dagnb_cache", DB) == []


def test_the_environment_is_listed_again_as_its_names_change(monkeypatch):
    for name in [name for name in os.environ if name.endswith(("_TOKEN", "_PASSWORD"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("ZZ_PLAIN", "x")
    assert "ZZ_API_TOKEN" not in environ_secrets()
    # the same number of variables, another in the place of one
    monkeypatch.delenv("ZZ_PLAIN")
    monkeypatch.setenv("ZZ_API_TOKEN", HF)
    assert environ_secrets()["ZZ_API_TOKEN"] == HF
    monkeypatch.setenv("ZZ_API_TOKEN", "abc")  # (too short to be masked)
    assert "ZZ_API_TOKEN" not in environ_secrets()


@pytest.mark.slow
def test_a_notebook_cell_showing_an_undeclared_token_keeps_it_out_of_the_notebook(
        tmp_path, monkeypatch):
    from notebook_cells import executed

    monkeypatch.setenv("HF_TOKEN", HF)
    notebook = executed([
        "%load_ext dagnb\nimport os, pandas as pd",
        "%%dagger b --python --outputs m\nprint('hf', os.environ['HF_TOKEN'])\nm = 1\n"
        "display(pd.DataFrame({'t': [os.environ['HF_TOKEN']]}))",
    ], tmp_path)
    outputs = json.dumps(notebook.cells[1].outputs)
    assert HF not in outputs and "hf ***" in outputs
    assert _files_holding(tmp_path, HF) == []


def test_the_token_dagnbs_own_steps_carry_is_no_secret(monkeypatch) -> None:
    """``DAGNB_STEP_TOKEN`` (set while an in-process step runs, a run inside a step's
    process inherits it) names processes; named like a secret, it is not one."""
    from dagnb.executors.reaper import TOKEN_VARIABLE
    from dagnb.model.masking import environ_secrets

    monkeypatch.setenv(TOKEN_VARIABLE, "0123456789abcdef01234567")
    monkeypatch.setenv("HF_TOKEN", "hf_Zq8vT2mPx4Lk9Wd3Rb7Yn")
    assert set(environ_secrets()) == {"HF_TOKEN"}


def test_a_param_holding_an_undeclared_token_is_refused_before_anything_is_written(
        tmp_path, monkeypatch) -> None:
    """As a declared secret's: params are written in clear to the params file, the run's
    record and the entry (QA: a workflow's ``msg: hf_...`` was stored so)."""
    import pytest

    from dagnb import Graph, Step
    from dagnb.errors import InvalidStepError

    token = "hf_AbCdEf1234567890"
    monkeypatch.setenv("HF_TOKEN", token)
    graph = Graph("p", [Step("b", run='echo "$DAGNB_PARAM_MSG"', params={"msg": token})])
    with pytest.raises(InvalidStepError, match="param 'msg' holds the value of secret "
                                               "'HF_TOKEN'") as refused:
        graph.run(cache_directory=tmp_path / "cache", executor="local")
    assert token not in str(refused.value)
    assert not (tmp_path / "cache").exists() or not any(
        token.encode() in path.read_bytes()
        for path in (tmp_path / "cache").rglob("*") if path.is_file())
