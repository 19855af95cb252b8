"""The credentials of a store named only for one run (``cache_directory=``, ``--cache-dir``,
a headless notebook's settings) are secrets there as they are when the setting names
it: every path that checked or masked them asked the setting's store alone."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.cli import main
from dagnb.errors import DagnbError
from dagnb.executors.base import Outcome, Task
from dagnb.testing import FakeExecutor

SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
STORE = "s3://team-bucket/cache"


@pytest.fixture
def store_secret(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The store's secret set as botocore reads it; the setting names a local folder.
    (A closed port as its endpoint: a path that reached the store would fail at once.)"""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    return SECRET


def test_a_param_holding_the_run_s_store_secret_is_refused(store_secret: str) -> None:
    graph = Graph("g", [Step("a", run="true", params={"key": store_secret})])
    with pytest.raises(DagnbError, match=r"param 'key' holds the value of secret "
                                         r"'AWS_SECRET_ACCESS_KEY'") as refused:
        graph.run(cache_directory=STORE, executor="local", cache=False)
    assert store_secret not in str(refused.value)


def test_a_step_on_another_process_is_told_the_run_s_store_secret(store_secret: str) -> None:
    """The dask executor tells a worker which secrets to keep out of what it caches and
    prints there; the run's store's came from the setting's store alone."""
    from dagnb.executors.dask import _secret_names

    told: list[list[str]] = []

    class Telling(FakeExecutor):
        async def execute(self, task: Task) -> Outcome:
            told.append(_secret_names(task))
            return await super().execute(task)

    run = Graph("g", [Step("a", run="true")]).run(cache_directory=STORE, executor=Telling(),
                                                 cache=False)
    assert run.ok, run.status()
    assert told == [["AWS_SECRET_ACCESS_KEY"]]


def test_the_cache_plan_reads_masks_its_store_s_secret(store_secret: str) -> None:
    from dagnb.runtime.plan import _looking

    cache = _looking(Graph("g", [Step("a", run="true")]), STORE, "local")
    assert cache.mask(f"key={store_secret}") == "key=***"


def test_history_of_a_store_named_on_the_command_line_masks_its_secret(
        store_secret: str, capsys: pytest.CaptureFixture[str]) -> None:
    """``dagnb history --cache-dir s3://...`` reads the runs recorded in the store's local
    tier: a param a run was given before its value became the store's secret is shown
    masked, as ``--cache-dir`` of a folder named in the setting shows it."""
    from dagnb.cache import local_folder

    runs = local_folder(STORE) / ".runs"
    runs.mkdir(parents=True)
    record = {"run": "20261205-010000-000-000001", "graph": "g", "finished": 1.0e9,
              "states": {"a": "succeeded"}, "origin": None, "params": {"key": store_secret}}
    (runs / "records.jsonl").write_text(json.dumps(record) + "\n")
    assert main(["history", "--cache-dir", STORE]) == 0
    out, err = capsys.readouterr()
    assert '{"key":"***"}' in out, out
    assert store_secret not in out + err


def test_a_hex_param_holding_the_store_secret_given_on_the_command_line_is_refused(
        workdir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """YAML reads ``0x...`` as a number, which the check of a param's value does not
    recognise; the text given is checked first, against the store of ``--cache-dir`` too."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "0x1f2e3d4c5b6a7988")
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    (workdir / "wf.yml").write_text(
        "name: wf\nsteps:\n  - name: a\n    run: 'true'\n    params:\n      number: 1\n")
    code = main(["run", "wf.yml", "--executor", "local", "--cache-dir", STORE,
                 "-p", "number=0x1f2e3d4c5b6a7988"])
    out, err = capsys.readouterr()
    assert code == 2, out + err
    assert err.startswith("dagnb: error: --param 'number' holds the value of secret "
                          "'AWS_SECRET_ACCESS_KEY'"), err
    assert str(0x1f2e3d4c5b6a7988) not in out + err


def test_a_headless_notebook_param_holding_its_store_secret_is_refused_before_the_kernel(
        store_secret: str, workdir: Path) -> None:
    """The kernel is given the store in its settings; the injected-parameters cell would
    hold the value in clear, in the kernel and in ``--output``'s file. (Within a longer
    text: a param whose whole value is that of a variable named as a secret was refused
    already.)"""
    import nbformat

    from dagnb.errors import WorkflowError
    from dagnb.notebook.headless import run_notebook

    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell("key = 'none'", metadata={"tags": ["parameters"]})]
    path = workdir / "nb.ipynb"
    nbformat.write(notebook, str(path))
    with pytest.raises(WorkflowError, match=r"--param 'key' holds the value of secret "
                                            r"'AWS_SECRET_ACCESS_KEY'") as refused:
        run_notebook(path, params={"key": f"https://signed?k={store_secret}"},
                     settings={"cache_directory": STORE, "executor": "local"})
    assert store_secret not in str(refused.value)
