"""A dask step whose code uses the project's own modules (a helper beside the workflow or
the notebook, a package folder) on a cluster of the user's: a scheduler and a worker
started as processes of their own, in a folder of their own, with a PYTHONPATH holding
dagnb alone, so that nothing of the project is importable there. The modules travel with
the step (:mod:`dagnb.executors.shipped`)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from notebook_cells import executed, printed

import dagnb
from dagnb.executors import dask as dask_executor
from dagnb.testing import wait_until
from dagnb.workflows.loader import load

distributed = pytest.importorskip("distributed")
pytestmark = pytest.mark.slow

HELPERS = "VERSION = {version}\n\ndef make(n):\n    return [VERSION] * n\n"
STEPS = """\
import os

import helpers
from shapes.area import square


def fit():
    import units  # (in the body: imported on the worker only when the step runs)
    return {"made": helpers.make(2), "area": square(3), "unit": units.UNIT,
            "pid": os.getpid()}


def fail():
    helpers.explode()
"""


@pytest.fixture(scope="module")
def scheduler(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The address of a scheduler with one worker (one thread), both started with
    ``python -m dask`` in a folder of their own; they live for the module's tests."""
    home = tmp_path_factory.mktemp("cluster")
    env = {name: value for name, value in os.environ.items() if not name.startswith("DAGNB_")}
    env["PYTHONPATH"] = str(Path(dagnb.__file__).resolve().parents[1])  # dagnb only
    file = home / "scheduler.json"
    started = [_dask(home, env, "scheduler", "--scheduler-file", file, "--port", "0",
                     "--dashboard-address", ":0")]
    try:
        assert wait_until(file.exists, timeout=60), "the dask scheduler did not start"
        started.append(_dask(home, env, "worker", "--scheduler-file", file, "--nworkers",
                             "1", "--nthreads", "1", "--no-dashboard"))
        address = json.loads(file.read_text())["address"]
        with distributed.Client(address, set_as_default=False) as client:
            client.wait_for_workers(1, timeout=60)
        yield address
    finally:
        for process in reversed(started):
            process.terminate()
            process.wait(timeout=30)


def _dask(home: Path, env: dict[str, str], *args: object) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "dask", *map(str, args)], cwd=home,
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


@pytest.fixture
def project(scheduler: str, workdir: Path) -> Iterator[Path]:
    """A workflow folder whose steps module imports a helper module beside it, a package
    folder and (in a function's body) a module of a namespace package; the context's dask
    steps go to the module's cluster."""
    flow = workdir / "workflows"
    (flow / "shapes").mkdir(parents=True)
    (flow / "helpers.py").write_text(HELPERS.format(version=1))
    (flow / "shapes" / "__init__.py").write_text("")
    (flow / "shapes" / "area.py").write_text(
        "from .sides import SIDES\n\ndef square(side):\n    return side ** SIDES\n")
    (flow / "shapes" / "sides.py").write_text("SIDES = 2\n")
    (flow / "units.py").write_text("UNIT = 'cm'\n")
    (flow / "steps.py").write_text(STEPS)
    (flow / "flow.yml").write_text(
        "defaults: {executor: dask, retries: 0}\n"
        "steps:\n  fit: {python: 'steps.py:fit'}\n  fail: {python: 'steps.py:fail'}\n")
    dagnb.configure(dask_scheduler=scheduler)
    yield flow
    dask_executor.close()
    for name in ("helpers", "units", "shapes", "shapes.area", "shapes.sides"):
        sys.modules.pop(name, None)


def test_a_workflow_step_using_the_project_s_modules_runs_on_a_cluster_without_them(project):
    run = load(project / "flow.yml").run("fit")
    assert run.states() == {"fit": "succeeded"}, run.status_rows()["fit"]["error"]
    found = run.result("fit")
    assert found["pid"] != os.getpid()
    assert (found["made"], found["area"], found["unit"]) == ([1, 1], 9, "cm")


def test_a_traceback_through_a_shipped_module_shows_its_file_and_line(project):
    with open(project / "helpers.py", "a") as handle:
        handle.write("\ndef explode():\n    raise ValueError('no rows today')\n")
    run = load(project / "flow.yml").run("fail")
    assert run.states() == {"fail": "failed"}
    lines = run.logs("fail", stream="stderr")["line"].tolist()
    assert f'  File "{project / "helpers.py"}", line 7, in explode' in lines, lines
    assert "    raise ValueError('no rows today')" in lines


RUN_FIT = """\
import json, dagnb
from dagnb.workflows.loader import load
run = load("workflows/flow.yml").run("fit")
made = run.result("fit") if run.states()["fit"] != "failed" else None
print(json.dumps({"state": run.states()["fit"], "fit": made}))
"""


def run_fit_in_a_new_process(project: Path, scheduler: str) -> dict:
    """``fit`` run by a client process of its own, as ``dagnb run`` runs it."""
    env = {**os.environ, "DAGNB_DASK_SCHEDULER": scheduler}
    done = subprocess.run([sys.executable, "-c", RUN_FIT], cwd=project.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_a_helper_changed_between_runs_runs_again_with_its_new_code_on_the_same_workers(
        project, scheduler):
    first = run_fit_in_a_new_process(project, scheduler)
    (project / "helpers.py").write_text(HELPERS.format(version=2))
    second = run_fit_in_a_new_process(project, scheduler)
    third = run_fit_in_a_new_process(project, scheduler)
    assert first["state"] == "succeeded" and first["fit"]["made"] == [1, 1]
    assert second["state"] == "succeeded"  # not served v1's result: it ran,
    assert second["fit"]["made"] == [2, 2]  # with v2, on the workers that ran v1
    assert third["state"] == "cached" and third["fit"]["made"] == [2, 2]


def test_the_cli_runs_a_workflow_step_using_a_helper_module_on_the_user_s_cluster(
        project, scheduler):
    env = {**os.environ, "DAGNB_DASK_SCHEDULER": scheduler}
    done = subprocess.run([sys.executable, "-m", "dagnb", "run", "workflows/flow.yml",
                           "--target", "fit"], cwd=project.parent, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "1 succeeded" in done.stdout


def test_only_the_project_s_modules_the_step_reaches_travel(project, monkeypatch):
    from dagnb.executors import wire

    (project / "unrelated.py").write_text("TOKEN = 'not for the cluster'\n")
    monkeypatch.syspath_prepend(str(project))
    import unrelated  # noqa: F401  (imported here, as a notebook may: not the step's)

    fit = load(project / "flow.yml")["fit"].func
    dask_executor._send_by_value(fit)  # (as a payload is made: see _payload)
    frames = dask_executor._pack((fit, {}, {}, []), [])
    modules = wire.loaders(frames)[-1]()
    sys.modules.pop("unrelated", None)
    assert sorted(modules) == ["helpers", "shapes", "shapes.area", "shapes.sides", "units"]
    assert modules["helpers"][1] == (project / "helpers.py").read_bytes()


def test_a_notebook_cell_on_dask_uses_a_module_beside_the_notebook(scheduler, tmp_path):
    (tmp_path / "helpers.py").write_text(HELPERS.format(version=5))
    cells = ["%load_ext dagnb",
             f"import dagnb\ndagnb.configure(dask_scheduler={scheduler!r})",
             "import os\nimport helpers\nfrom helpers import make",
             "%%dagger fit --python --executor dask --outputs v\n"
             "v = (helpers.make(1), make(2), os.getpid())",
             "print('result', v[:2], v[2] != os.getpid())"]
    notebook = executed(cells, tmp_path)
    assert "result ([5], [5, 5]) True" in printed(notebook.cells[-1]), notebook.cells[-2].outputs


BIG = "TABLE = {\n" + "".join(f"    {i}: 'value-{i:08d}',\n" for i in range(20000)) + "}\n"


def _an_hour_ago(path: Path) -> None:
    """An mtime out of the window in which a file may change without its mtime moving."""
    old = path.stat().st_mtime - 3600
    os.utime(path, (old, old))


def test_a_module_unchanged_since_the_last_task_is_not_read_and_parsed_again(
        tmp_path, monkeypatch):
    """Each task of a step ships its modules: each re-read and re-parsed them, 0.4 s a
    task for a 1.7 MB module (a run of small tasks took 0.49 s a task, 0.30 before)."""
    import ast

    from dagnb.executors import shipped

    table = tmp_path / "bigtable.py"
    table.write_text(BIG)
    _an_hour_ago(table)
    monkeypatch.syspath_prepend(str(tmp_path))
    parsed: list[int] = []
    real_parse = ast.parse

    def parse(source, *args, **kwargs):
        parsed.append(len(source))
        return real_parse(source, *args, **kwargs)

    monkeypatch.setattr(shipped.ast, "parse", parse)
    for _ in range(3):
        assert shipped.project_sources(["bigtable"])["bigtable"][1] == BIG.encode()
    assert parsed == [len(BIG)]
    changed = BIG.replace("value-00000001", "VALUE-00000001")  # (the same size)
    table.write_text(changed)
    _an_hour_ago(table)
    assert shipped.project_sources(["bigtable"])["bigtable"][1] == changed.encode()
    table.write_text(BIG)  # (in the window: read again, as it may change unseen)
    assert shipped.project_sources(["bigtable"])["bigtable"][1] == BIG.encode()


@pytest.mark.parametrize("case", ["same file", "another text", "bytecode older"])
def test_a_shipped_module_uses_the_bytecode_of_the_same_file_on_the_worker(tmp_path, case):
    """The worker compiled each shipped module at each task (0.2 s for 1.7 MB) where
    it had the very file, and its .pyc, as a LocalCluster on the client's machine has."""
    import py_compile

    from dagnb.executors import served

    file = tmp_path / "table.py"
    file.write_text("VALUE = 'on disk'\n")
    _an_hour_ago(file)
    py_compile.compile(str(file))
    if case == "bytecode older":
        os.utime(file)  # (the source's mtime after its .pyc's)
    text = b"VALUE = 'shipped'\n" if case == "another text" else file.read_bytes()
    loader = served._Source(str(file), text)
    compiled: list[str] = []
    loader.source_to_code = lambda data, path, **kw: (  # type: ignore[method-assign]
        compiled.append(path), compile(data, path, "exec", dont_inherit=True))[1]
    namespace: dict = {}
    exec(loader.get_code("table"), namespace)
    assert namespace["VALUE"] == ("shipped" if case == "another text" else "on disk")
    assert compiled == ([] if case == "same file" else [str(file)])


EXPLAINED = """\
import importlib, sys
from dagnb.executors import served
served.serve({"plugins": (sys.argv[1] + "/plugins/__init__.py", b"", [sys.argv[1] + "/plugins"])})
import plugins
try:
    importlib.import_module("plugins.extra")
except ModuleNotFoundError as exc:
    served.explain_unshipped(exc, "install the project on the workers")
    print(exc)
"""


@pytest.mark.parametrize("folder_here", [False, True])
def test_a_submodule_imported_by_a_name_built_at_run_time_is_explained_where_it_is_not(
        tmp_path, folder_here):
    """Not sent, as no text names it: a worker without the project's files said only
    "No module named 'plugins.extra'". Where the package's folder is (a shared disk), the
    module is missing there too, and Python's words stand."""
    if folder_here:
        (tmp_path / "plugins").mkdir()
    done = subprocess.run([sys.executable, "-c", EXPLAINED, str(tmp_path)],
                          capture_output=True, text=True, timeout=60, check=True)
    said = "No module named 'plugins.extra'"
    assert done.stdout.strip() == (said if folder_here else (
        f"{said} (dagnb sends a step the project modules its code imports by name; one "
        "imported by a name built at run time is not among them: import plugins.extra in "
        "the step's module, or install the project on the workers)"))


# -- a helper's constant that its text, sent along, does not hold -----------------------
DRIFT = (r"^step 'fit' cannot be sent to dask workers: helpers\.VERSION is {here} here but "
         r"{there} in the text of workflows/helpers\.py sent along \(set since its import, "
         r"or the file edited before dagnb read it\): pass it to the step as a parameter, "
         r"or set it in workflows/helpers\.py and importlib\.reload\(helpers\)$")


def test_a_helper_s_constant_edited_before_dagnb_read_it_is_not_sent_as_the_file_s(project):
    """Only the constant changed, so the file's text compiles to the functions the client
    runs: before, the workers were sent it and made [2, 2] under the key of the client's
    code and values (VERSION 1), which a run importing that code was then served."""
    flow = load(project / "flow.yml")  # (imports steps, and helpers: VERSION 1)
    (project / "helpers.py").write_text(HELPERS.format(version=2))
    run = flow.run("fit")
    assert run.states() == {"fit": "failed"}, run.result("fit")
    assert re.match(DRIFT.format(here=1, there=2), run.status_rows()["fit"]["error"])


def test_a_helper_s_constant_set_at_run_time_is_not_sent_as_its_text_s(project):
    """The step's key counts the value the client's helpers holds (7): before, the
    workers imported the text (1) and made [1, 1] under the key of [7, 7]."""
    flow = load(project / "flow.yml")
    assert flow.run("fit").result("fit")["made"] == [1, 1]
    sys.modules["helpers"].VERSION = 7
    run = flow.run("fit")
    assert run.states() == {"fit": "failed"}, run.result("fit")
    assert re.match(DRIFT.format(here=7, there=1), run.status_rows()["fit"]["error"])
    sys.modules["helpers"].VERSION = 1  # (set back: sent again)
    assert flow.run("fit").states() == {"fit": "cached"}


def test_a_helper_s_function_rebound_at_run_time_is_refused_not_run_from_its_text(project):
    """``helpers.make = better`` in the client: the workers imported helpers.py's text
    and ran its make, silently, under the key of the client's code."""
    flow = load(project / "flow.yml")
    helpers = sys.modules.get("helpers") or __import__("helpers")
    original = helpers.make

    def better(n):
        return [0] * n

    helpers.make = better
    try:
        run = flow.run("fit")
    finally:
        helpers.make = original
    assert run.states() == {"fit": "failed"}, run.result("fit")
    assert run.status_rows()["fit"]["error"] == (
        "step 'fit' cannot be sent to dask workers: helpers.make is "
        f"{__name__}.{better.__qualname__} here but the function make in the text of "
        "workflows/helpers.py sent along (set since its import): put the new code in "
        "workflows/helpers.py and importlib.reload(helpers), or run the step on "
        "executor='local'")


def test_a_notebook_setting_a_helper_s_constant_is_told_instead_of_given_the_text_s_result(
        scheduler, tmp_path):
    """``helpers.VERSION = 7`` in a cell: the kernel (and the cell's key) says 7; before,
    the workers imported helpers.py's text and gave [1]."""
    from nbclient import NotebookClient

    (tmp_path / "helpers.py").write_text(HELPERS.format(version=1))
    fit = "%%dagger fit --python --executor dask --outputs v\nv = helpers.make(1)"
    cells = ["%load_ext dagnb",
             f"import dagnb\ndagnb.configure(dask_scheduler={scheduler!r})",
             "import helpers", fit, "helpers.VERSION = 7", fit, "print('result', v)"]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(c) for c in cells])
    env = {"DAGNB_WIDGETS": "0", "DAGNB_CONFIG": "none", "DAGNB_EXECUTOR": "local"}
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        NotebookClient(notebook, timeout=120, kernel_name="python3", allow_errors=True,
                       resources={"metadata": {"path": str(tmp_path)}}).execute()
    first, second = notebook.cells[3].outputs, notebook.cells[5].outputs
    assert not [o for o in first if o["output_type"] == "error"], first
    shown = "\n".join(o.get("evalue", "") + "".join(o.get("traceback", [])) + o.get("text", "")
                      for o in second)
    assert ("step 'fit' cannot be sent to dask workers: helpers.VERSION is 7 here but 1 in "
            "the text of helpers.py sent along") in shown, second
    printed = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    assert "result [1]" in printed  # (the first run's: nothing made since)
