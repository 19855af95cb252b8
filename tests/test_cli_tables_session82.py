"""``dagnb templates list`` and ``dagnb config show`` print the tables pandas printed,
without importing pandas (its import was 0.5 s of their 0.8 s; now they take 0.2 s); the
pandas-etl template's steps look for pandas without importing it."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from test_cli import _imports_pandas

from dagnb import config
from dagnb.cli import main
from dagnb.workflows import templates


@pytest.mark.parametrize("category", [None, "ml", "no-such-category"])
def test_templates_list_prints_what_pandas_printed(category, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert main(["templates", "list", *(["--category", category] if category else [])]) == 0
    frame = templates.table(category)
    expected = (frame[["id", "category", "name"]].to_string(index=False) if len(frame)
                else "no templates found")
    assert capsys.readouterr().out == expected + "\n"


def test_config_show_prints_what_pandas_printed(capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "dagnb.yaml").write_text("executor: local\nworkflow_defaults:\n  max_retries: 5\n")
    monkeypatch.setenv("DAGNB_MAX_CONCURRENT_EXECUTIONS", "3")
    assert main(["config", "show"]) == 0
    printed = capsys.readouterr().out
    frame = config.show(short_paths=False)
    frame["value"] = frame["value"].map(repr)
    assert printed == frame.to_string(index=False) + "\n"
    assert {"'local'", str(tmp_path / "dagnb.yaml"), "DAGNB_MAX_CONCURRENT_EXECUTIONS"} <= \
        set(printed.split())


@pytest.mark.parametrize("argv", [["templates", "list"], ["config", "show"]])
def test_the_table_commands_do_not_import_pandas(argv, tmp_path: Path) -> None:
    assert not _imports_pandas(argv, tmp_path)


def _pandas_guards(template_id: str) -> list[str]:
    """The commands each step of ``template_id`` runs to learn if its python3 has pandas."""
    graph = templates.instantiate(template_id)
    return [re.search(r"if ! (python3 -c .*); then", graph[name].run).group(1)
            for name in graph.names]


@pytest.mark.parametrize("has_pandas", [True, False])
def test_pandas_etl_steps_install_pandas_only_where_python3_has_none(has_pandas, tmp_path):
    """Each step looks for pandas rather than import it (half a second a step): a python3
    with pandas goes on, one without (here: its site-packages off) installs it first."""
    shim = tmp_path / "python3"
    shim.write_text(f"#!/bin/sh\nexec {sys.executable} {'' if has_pandas else '-S '}\"$@\"\n")
    shim.chmod(0o755)
    env = {**os.environ, "PATH": f"{tmp_path}{os.pathsep}{os.environ['PATH']}"}
    guards = _pandas_guards("pandas-etl")
    assert len(guards) == 4
    for guard in guards:
        done = subprocess.run(["sh", "-c", guard], env=env, capture_output=True, timeout=60)
        assert (done.returncode == 0) is has_pandas, (guard, done.stderr)
