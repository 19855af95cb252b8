"""An in-process Python step runs in the folder the process was started in (it is not
moved to the workflow's folder): a run started elsewhere stored its result under the key
of one started in the workflow's folder, which was then served it (QA: ``total`` summing
``data/*.txt`` stored 0 from the folder above, and served 0 in the project). Its key now
counts that folder when a shell step would start in another; one started there keys as
before. A shell step's Python (``python3 - <<'PY'``) reading ``os.environ.get("REGION")``
counts REGION as ``$REGION`` does."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dagnb.cache import step_key
from dagnb.cli import main
from dagnb.model.step import Step

STEPS = """from pathlib import Path


def total():
    return sum(int(p.read_text()) for p in Path("data").glob("*.txt"))
"""
WORKFLOW = """name: r1
steps:
  total:
    python: folder69_steps.py:total
    mounts: {data: /data}
  show:
    needs: [total]
    run: cat "$DAGNB_IN/total/result.json" > seen.txt
"""
HEREDOC = """name: hd
steps:
  s:
    run: |
      python3 - <<'PY'
      import os
      print("region:", os.environ.get("REGION", "eu"))
      PY
"""


@pytest.fixture
def project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``<tmp>/proj`` holding the QA workflow, its module and ``data/n.txt`` (5); the
    current folder is ``<tmp>``, the one above."""
    proj = tmp_path / "proj"
    (proj / "data").mkdir(parents=True)
    (proj / "data" / "n.txt").write_text("5")
    (proj / "folder69_steps.py").write_text(STEPS)
    (proj / "wf.yml").write_text(WORKFLOW)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(proj))
    return proj


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> str:
    """``dagnb ARGS`` on the local executor: its output and errors (it must succeed)."""
    code = main([*args, "--executor", "local"])
    said = capsys.readouterr()
    assert code == 0, said.out + said.err
    return said.out + said.err


def _summary(out: str) -> str:
    return next(line for line in out.splitlines() if line.startswith("run ")).split(": ")[-1]


def test_a_run_started_in_the_folder_above_is_not_served_in_the_project(
        project, capsys, monkeypatch):
    _cli(capsys, "run", "proj/wf.yml", "--cache-dir", "proj/.dagnb_cache")
    assert json.loads((project / "seen.txt").read_text()) == 0  # (data/ is not there)
    monkeypatch.chdir(project)
    assert _summary(_cli(capsys, "run", "wf.yml")) == "2 succeeded"
    assert json.loads((project / "seen.txt").read_text()) == 5
    assert _summary(_cli(capsys, "run", "wf.yml")) == "2 cached"


def test_plan_and_explain_name_the_folder_the_run_is_started_in(project, capsys, monkeypatch):
    monkeypatch.chdir(project)
    _cli(capsys, "run", "wf.yml")
    monkeypatch.chdir(project.parent)
    said = f"this run is started in {project.parent}, not the workflow’s folder"
    plan = main(["plan", "proj/wf.yml", "--cache-dir", "proj/.dagnb_cache"])
    assert plan == 0 and said in capsys.readouterr().out
    explained = main(["explain", "proj/wf.yml", "total", "--cache-dir", "proj/.dagnb_cache"])
    assert explained == 0 and said in capsys.readouterr().out


def _noop() -> int:
    return 1


def test_a_run_started_in_the_step_folder_keys_as_before(tmp_path, monkeypatch):
    (tmp_path / "sub").mkdir()
    monkeypatch.chdir(tmp_path)
    step, in_sub = Step("s", func=_noop), Step("s", func=_noop, workdir="sub")
    before = step_key(step, upstream_digests={}, base_dir=tmp_path)  # (counts no folder)
    assert step_key(step, upstream_digests={}, base_dir=tmp_path, container=False) == before
    monkeypatch.chdir(tmp_path / "sub")
    assert "started_in" not in step_key(in_sub, upstream_digests={}, base_dir=tmp_path,
                                        container=False).components
    elsewhere = step_key(step, upstream_digests={}, base_dir=tmp_path, container=False)
    assert elsewhere.digest != before.digest
    assert elsewhere.describe["started_in"] == f"{tmp_path / 'sub'}, not the workflow’s folder"
    # dask and containers run it in its own folder
    on_dask = Step("s", func=_noop, executor="dask")
    assert "started_in" not in step_key(on_dask, upstream_digests={}, base_dir=tmp_path,
                                        container=False).components
    assert "started_in" not in step_key(step, upstream_digests={}, base_dir=tmp_path,
                                        container=True).components


def test_a_heredoc_reading_the_environment_runs_again_when_the_variable_changes(
        tmp_path, capsys, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "hd.yml").write_text(HEREDOC)
    monkeypatch.setenv("REGION", "eu")
    assert _summary(_cli(capsys, "run", "hd.yml")) == "1 succeeded"
    assert _summary(_cli(capsys, "run", "hd.yml")) == "1 cached"
    monkeypatch.setenv("REGION", "ap")
    assert _summary(_cli(capsys, "run", "hd.yml")) == "1 succeeded"


@pytest.mark.parametrize("text, names", [
    ('python3 -c \'import os; print(os.environ["REGION"])\'', ["REGION"]),
    ("python3 -c 'import os; os.getenv(\"REGION\", \"eu\")'", ["REGION"]),
    ("python3 -c 'from os import environ; environ[\"A\"], environ.get(\"B\")'", ["A", "B"]),
    # machine variables, secrets, names made at run time and the step's env: not counted
    ("python3 -c 'import os; os.environ[\"HOME\"], os.getenv(\"API_TOKEN\"), "
     "os.environ[name], os.environ.get(\"MINE\")'", []),
])
def test_the_names_python_reads_by_literal_count(text, names, monkeypatch):
    for name in ("REGION", "A", "B"):
        monkeypatch.setenv(name, "x")
    step = Step("s", run=text, env={"MINE": "1"})
    key = step_key(step, upstream_digests={}, base_dir=Path("."))
    assert sorted(c.split(":", 1)[1] for c in key.components if c.startswith("host_var:")) \
        == names



def test_a_teammates_clone_started_from_its_root_is_served_the_entry(
        tmp_path, capsys, monkeypatch):
    """The key held the folder whole: each clone (``/home/alice/proj``, CI's) run from
    its root as the README does (``dagnb run workflows/wf.yml``) missed every Python
    step on a shared cache. It holds the way there from the workflow's folder."""
    said = []
    for who in ("alice", "bob"):
        clone = tmp_path / who / "proj"
        (clone / "workflows").mkdir(parents=True)
        (clone / "workflows" / "wf.yml").write_text(
            WORKFLOW.replace("    mounts: {data: /data}\n", ""))
        (clone / "workflows" / "folder69_steps.py").write_text(STEPS)
        (clone / "data").mkdir()
        (clone / "data" / "n.txt").write_text("5")
        monkeypatch.chdir(clone)
        said.append(_cli(capsys, "run", "workflows/wf.yml", "--cache-dir",
                         str(tmp_path / "shared-cache")))
    assert [_summary(out) for out in said] == ["2 succeeded", "2 cached"], said
    assert json.loads((tmp_path / "alice" / "proj" / "workflows" / "seen.txt").read_text()) == 5
