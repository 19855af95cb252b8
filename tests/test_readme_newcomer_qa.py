"""A newcomer following README.md (QA pass): a percent-format notebook's runs in dagnb
history, the stale-file warning's mount fix in the front end's words, %dagger save into
a folder not made yet, and %dagger logs --stream of a stream the step did not print on."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest

import dagnb
from dagnb.cli import main

# -- 1. dagnb history names a percent-format notebook's runs by its file --------------


def _record(cache: Path, run: str, finished: float, **fields: object) -> None:
    runs = cache / ".runs"
    runs.mkdir(parents=True, exist_ok=True)
    record = {"run": run, "finished": finished, "states": {"load": "succeeded"}, **fields}
    with open(runs / "records.jsonl", "a") as log:
        log.write(json.dumps(record) + "\n")


def test_history_names_a_percent_notebook_run_by_its_file(tmp_path, monkeypatch, capsys):
    """``dagnb run report.py`` (jupytext percent) was listed as workflow ``notebook``,
    ``report.ipynb`` as ``report.ipynb``; a script's run is still named by its graph."""
    monkeypatch.chdir(tmp_path)
    cache = tmp_path / ".dagnb_cache"
    _record(cache, "r1", 1.7e9, graph="notebook", origin=str(tmp_path / "report.ipynb"))
    _record(cache, "r2", 1.7e9 + 1, graph="notebook", origin=str(tmp_path / "report.py"))
    _record(cache, "r3", 1.7e9 + 2, graph="nightly", origin=str(tmp_path / "script.py"))
    assert main(["history", "--cache-dir", str(cache)]) == 0
    shown = [row.split()[3] for row in capsys.readouterr().out.splitlines()[1:]]
    assert shown == ["report.ipynb", "report.py", "nightly"]


# -- 3. %dagger save into a folder not made yet ----------------------------------------


def _saved(shell, body: str) -> list[str]:
    """The warnings of ``%dagger save workflows/pipeline.yml`` of a ``fit`` cell of
    ``body``, in a fresh folder (no ``workflows/`` yet), which the save makes."""
    shell.run_cell_magic("dagger", "fit --python", body)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        said = shell.run_line_magic("dagger", "save workflows/pipeline.yml")
    assert str(said) == "saved 1 step to workflows/pipeline.yml"
    assert Path("workflows/pipeline.yml").read_text().startswith("# saved by dagnb")
    return [str(w.message) for w in caught]


def test_save_makes_the_missing_folder_and_says_nothing_of_paths_the_code_lacks(shell):
    """README's ``%dagger save workflows/pipeline.yml`` failed in a fresh folder (no such
    file or directory); then it warned of "a relative path in the code of 'fit' (such as
    'data.txt')" for code that names no path."""
    assert not Path("workflows").exists()
    assert _saved(shell, "total = 1 + 2\n") == []


def test_save_names_the_relative_path_the_code_reads(shell):
    Path("rows.csv").write_text("a\n")
    said = _saved(shell, "with open('rows.csv') as f:\n    total = len(f.read())\n")
    assert len(said) == 1
    assert "a relative path in the code of 'fit' ('rows.csv') is read from there" in said[0]


def total() -> int:
    return 3


def test_to_yaml_makes_missing_folders_and_leaves_none_when_refused(workdir):
    graph = dagnb.Graph("g")
    graph.add(dagnb.Step("a", run="echo a"))
    graph.to_yaml("deep/er/wf.yml")
    assert Path("deep/er/wf.yml").read_text().startswith("# saved by dagnb")
    graph.step(total)
    Path("other_wf_steps.py").write_text("# mine\n")  # (the module other/wf.yml's would be)
    with pytest.raises(dagnb.WorkflowError, match="exists and was not written by dagnb"):
        graph.to_yaml("other/wf.yml")
    assert not Path("other").exists()  # (a refused save leaves no empty folder)


# -- 5. logs --stream of a stream the step did not print on ----------------------------


def test_logs_of_a_stream_the_step_did_not_print_on_names_that_stream(shell):
    """``%dagger logs c --stream stderr`` said "step 'c' printed nothing" of a step that
    printed on stdout."""
    shell.run_cell_magic("dagger", "c", "echo on-stdout\n")
    logs = shell.run_line_magic("dagger", "logs c --stream stderr")
    assert logs.empty and repr(logs).startswith("step 'c' printed nothing on stderr in run ")
    assert list(shell.run_line_magic("dagger", "logs c --stream stdout")["line"]) == [
        "on-stdout"]


@pytest.mark.parametrize("tail", [[], ["--tail", "5"]])
def test_dagnb_logs_stream_says_the_step_printed_nothing_on_it(tmp_path, monkeypatch,
                                                              capsys, tail):
    """``dagnb logs wf.yml c --stream stderr`` printed nothing at all and said nothing,
    for a failed step (its lines in the run's folder) and a stored one (with its entry)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text("steps:\n  c: {run: echo out}\n"
                                     "  f: {run: echo out; exit 3}\n")
    assert main(["run", "wf.yml", "--executor", "local"]) == 1
    capsys.readouterr()
    for step in ("c", "f"):
        assert main(["logs", "wf.yml", step, "--stream", "stderr", *tail]) == 0
        out, err = capsys.readouterr()
        assert out == "" and err.splitlines()[-1].startswith(
            f"dagnb: step {step!r} printed nothing on stderr"), err
        assert main(["logs", "wf.yml", step, "--stream", "stdout", *tail]) == 0
        out, err = capsys.readouterr()
        assert out == "out\n" and "printed nothing" not in err
