"""A container Python step whose code uses the project's own modules (a helper beside
the steps module or the notebook, a package folder, a namespace package): a container has
none of the project's files, so those modules travel with the step as source
(:mod:`dagnb.executors.shipped`) and the shim imports them from that text, ahead of the
image's own path. Through the real dagger-io client and the stub engine, which runs the
shim on this machine with the project's folder hidden (namespace mode) or off its paths."""

from __future__ import annotations

import ast
import base64
import importlib
import inspect
import json
import os
import re
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from dagger_stub import sandbox
from notebook_cells import executed, printed

from dagnb import Graph, Step
from dagnb.errors import InvalidStepError, StepFailed
from dagnb.executors.dagger import shim
from dagnb.executors.dagger.executor import DaggerExecutor
from dagnb.executors.loop import run_sync
from dagnb.fingerprint import code_with_values

pytest_plugins = ["dagger_stub.fixtures"]

HELPERS = ("FACTOR = {factor}\n\n\ndef scale(x):\n    return x * {factor}\n\n\n"
           "def explode():\n    raise ValueError('no rows today')\n\n\n"
           "class Ruler:\n    def __init__(self, unit):\n        self.unit = unit\n")
STEPS = """\
import os

import helpers
from helpers import scale
from measures import lengths
from shapes.area import square

RULER = helpers.Ruler(7)  # (pickled: the container unpickles it with helpers' class)


def fit(n):
    import units  # (in the body: imported in the container only when the step runs)
    return {"scaled": scale(n), "factor": helpers.FACTOR, "area": square(n),
            "unit": units.UNIT, "meter": lengths.METER, "ruler": RULER.unit,
            "on_disk": os.path.exists(helpers.__file__)}


def fail():
    helpers.explode()


def plugin(name):
    import importlib

    import shapes  # (sent: named here; its submodule is not)
    return importlib.import_module(f"{shapes.__name__}.{name}").EXTRA
"""
MODULES = ("steps", "which", "helpers", "units", "shapes", "shapes.area", "shapes.sides",
           "measures", "measures.lengths")


def _write_project(folder: Path, factor: int = 10) -> None:
    (folder / "shapes").mkdir(parents=True)
    (folder / "measures").mkdir()  # (no __init__.py: a namespace package)
    (folder / "helpers.py").write_text(HELPERS.format(factor=factor))
    (folder / "shapes" / "__init__.py").write_text("")
    (folder / "shapes" / "area.py").write_text(
        "from .sides import SIDES\n\n\ndef square(side):\n    return side ** SIDES\n")
    (folder / "shapes" / "sides.py").write_text("SIDES = 2\n")
    (folder / "measures" / "lengths.py").write_text("METER = 100\n")
    (folder / "units.py").write_text("UNIT = 'cm'\n")
    (folder / "steps.py").write_text(STEPS)


@pytest.fixture
def project(stub, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """The project's folder, on this process's path and hidden from the containers."""
    folder = tmp_path / "project"
    _write_project(folder)
    for name in MODULES:
        monkeypatch.delitem(sys.modules, name, raising=False)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(folder)  # (a warning names a file by its path from here)
    stub.engine.hidden.append(folder)
    yield folder
    for name in MODULES:
        sys.modules.pop(name, None)


def _steps() -> object:
    return importlib.import_module("steps")


@pytest.mark.parametrize("user", ["", "1234:1234"])
def test_a_container_step_using_the_project_s_modules_runs_without_the_project_s_files(
        project, user):
    """Before, the step module's ``from helpers import scale`` met no ``helpers`` in the
    container: ModuleNotFoundError."""
    if user and sandbox.mode() != "namespace":
        pytest.skip("the stub runs a step as another user in namespace mode only")
    graph = Graph("g", [Step("fit", func=_steps().fit, params={"n": 3}, user=user or None)])
    run = graph.run(executor="dagger", cache=False)
    assert run.states() == {"fit": "succeeded"}, run.status_rows()["fit"]["error"]
    found = run.result("fit")
    assert found == {"scaled": 30, "factor": 10, "area": 9, "unit": "cm", "meter": 100,
                     "ruler": 7, "on_disk": sandbox.mode() == "rewrite"}  # (hidden: from the text)


def test_a_step_s_modules_are_encoded_once_while_their_text_is_unchanged(
        project, monkeypatch):
    """Each Python step's files hold its project modules as JSON of their base64 text,
    made again for each step before (a 1 MB module: 6 ms a step); now once for each
    text of a module, and the file's new text once it changes."""

    encoded: list[bytes] = []
    base64_of = shim._base64
    monkeypatch.setattr(shim, "_base64", lambda source: encoded.append(source) or base64_of(source))
    step = Step("fit", func=_steps().fit, params={"n": 3})
    first = shim.python_files(step, [])[shim.MODULES_PATH]
    made = len(encoded)
    assert shim.python_files(step, [])[shim.MODULES_PATH] == first
    assert (made, len(encoded)) == (len(json.loads(first)), made)
    assert json.dumps(json.loads(first)) == first  # (the engine's exec key as it was)
    (project / "units.py").write_text("UNIT = 'mm'  # (not imported here: read from its file)\n")
    sent = json.loads(shim.python_files(step, [])[shim.MODULES_PATH])
    assert base64.b64decode(sent["units"][1]).startswith(b"UNIT = 'mm'")
    assert encoded[made:] == [(project / "units.py").read_bytes()]


def test_a_traceback_through_a_shipped_module_shows_its_file_and_line(stub, project, make_task):
    with pytest.raises(StepFailed, match="ValueError: no rows today") as caught:
        run_sync(DaggerExecutor().execute(make_task(Step("fail", func=_steps().fail))))
    tail = caught.value.stderr_tail
    assert f'  File "{project / "helpers.py"}", line 9, in explode' in tail, tail
    assert "    raise ValueError('no rows today')" in tail


def test_a_project_module_imported_by_a_name_built_at_run_time_is_explained(
        stub, project, make_task):
    """It is not sent (no text names it): Python's "No module named" said no more."""
    (project / "shapes" / "extra.py").write_text("EXTRA = 5\n")
    step = Step("plugin", func=_steps().plugin, params={"name": "extra"})
    with pytest.raises(StepFailed) as caught:
        run_sync(DaggerExecutor().execute(make_task(step)))
    assert ("ModuleNotFoundError: No module named 'shapes.extra' (dagnb sends a step the "
            "project modules its code imports by name; one imported by a name built at "
            "run time is not among them: import shapes.extra in the step's module, or put "
            "the project in the image)") in str(caught.value)


def _stale_warning(name: str) -> str:
    return (rf"^dagnb: {name}\.py changed on disk since the kernel imported it; the step "
            rf"runs the imported code: restart, importlib\.reload\({name}\), or "
            r"%load_ext autoreload / %autoreload 2")


def test_an_edited_helper_not_reloaded_runs_its_imported_code_in_the_container(
        stub, project, tmp_path):
    """The container here has the project on its path (an image holding a copy, a
    mounted folder): before, it imported the file's new code (factor 1000) and the run
    stored its result under the key of the code the kernel runs (factor 10)."""
    stub.engine.hidden.clear()
    steps = _steps()
    graph = Graph("g", [Step("fit", func=steps.fit, params={"n": 3},
                             env={"PYTHONPATH": str(project)})])
    cache = tmp_path / "cache"
    assert graph.run(executor="dagger", cache_directory=cache).result("fit")["scaled"] == 30
    key = code_with_values(steps.fit, fresh=True)[0]
    (project / "helpers.py").write_text(HELPERS.format(factor=1000))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        refreshed = graph.run(executor="dagger", cache_directory=cache, refresh=True)
    assert code_with_values(steps.fit, fresh=True)[0] == key  # (the imported code's)
    assert refreshed.result("fit")["scaled"] == 30  # (before: 3000, the file's code)
    assert [re.match(_stale_warning("helpers"), str(w.message)) is not None
            for w in said] == [True]


def test_a_container_step_using_a_helper_edited_before_dagnb_read_it_is_refused(
        stub, project, make_task):
    """No text of the code the kernel runs is to be had: before, the container ran the
    file's code, or found no helpers at all."""
    steps = _steps()
    (project / "helpers.py").write_text(HELPERS.format(factor=1000))
    task = make_task(Step("fit", func=steps.fit, params={"n": 3}))
    with pytest.warns(UserWarning, match=_stale_warning("helpers")), \
            pytest.raises(InvalidStepError) as caught:
        run_sync(DaggerExecutor().execute(task))
    assert str(caught.value) == (
        "step 'fit' cannot be sent to the container: helpers.py changed on disk since the "
        "kernel imported it; the text of the imported code is gone: restart, "
        "importlib.reload(helpers), or %load_ext autoreload / %autoreload 2")
    assert not stub.texts("withExec")  # nothing ran


def test_a_helper_holding_a_step_s_secret_is_not_sent_to_the_container(
        stub, project, make_task, monkeypatch):
    """The module's text sits in the engine's cache with the exec: no secret in it."""
    (project / "helpers.py").write_text("TOKEN = 'hunter2-hunter2'\n" + HELPERS.format(factor=1))
    task = make_task(Step("fit", func=_steps().fit, params={"n": 3}, secrets=("API_TOKEN",)),
                     secrets={"API_TOKEN": "hunter2-hunter2"})
    with pytest.raises(InvalidStepError, match=r"^step 'fit': module 'helpers' holds the "
                       r"value of secret 'API_TOKEN', which would reach the container"):
        run_sync(DaggerExecutor().execute(task))
    assert not stub.texts("withExec")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_notebook_cell_in_a_container_uses_a_module_beside_the_notebook(stub, tmp_path):
    (tmp_path / "helpers.py").write_text(HELPERS.format(factor=5))
    stub.engine.hidden.append(tmp_path)
    cells = ["%load_ext dagnb",
             "import helpers\nfrom helpers import scale",
             "%%dagger fit --python --executor dagger --outputs v\n"
             "v = (helpers.scale(1), scale(2))",
             "print('result', v)"]
    notebook = executed(cells, tmp_path)
    assert "result (5, 10)" in printed(notebook.cells[-1]), notebook.cells[-2].outputs


# -- a helper's constant that its text, sent along, does not hold -----------------------
def _drift(here: object, there: object) -> str:
    return (f"step 'fit' cannot be sent to the container: helpers.FACTOR is {here} here but "
            f"{there} in the text of helpers.py sent along (set since its import, or the "
            "file edited before dagnb read it): pass it to the step as a parameter, or set "
            "it in helpers.py and importlib.reload(helpers)")


def test_a_helper_s_constant_edited_before_dagnb_read_it_is_not_sent_as_the_file_s(
        stub, project, make_task):
    """Only the constant changed, so the file's text compiles to the functions this
    process runs: before, the container was sent it and gave FACTOR 1000 under the key
    of the code and values here (FACTOR 10)."""
    steps = _steps()
    (project / "helpers.py").write_text(
        HELPERS.format(factor=10).replace("FACTOR = 10", "FACTOR = 1000"))
    with pytest.raises(InvalidStepError) as caught:
        run_sync(DaggerExecutor().execute(make_task(Step("fit", func=steps.fit,
                                                         params={"n": 3}))))
    assert str(caught.value) == _drift(10, 1000)
    assert not stub.texts("withExec")  # nothing ran


def test_a_helper_s_constant_set_at_run_time_is_not_sent_as_its_text_s(
        stub, project, tmp_path):
    """The step's key counts the value helpers holds here (5): before, the container
    imported the text (10) and its result was stored under the key of FACTOR 5."""
    steps = _steps()
    graph = Graph("g", [Step("fit", func=steps.fit, params={"n": 3})])
    cache = tmp_path / "cache"
    assert graph.run(executor="dagger", cache_directory=cache).result("fit")["factor"] == 10
    sys.modules["helpers"].FACTOR = 5
    run = graph.run(executor="dagger", cache_directory=cache)
    assert run.states() == {"fit": "failed"}, run.result("fit")
    assert run.status_rows()["fit"]["error"] == _drift(5, 10)
    assert len(stub.texts("withExec")) == 1  # (the first run's only)


# -- the image's own python3: 3.7 or later ---------------------------------------------
_OLDEST = (3, 7)  # served.py's and the shim's promise (asyncio.run came in 3.7)


def _container_texts() -> dict[str, str]:
    from dagnb.executors import served

    return {"served.py": inspect.getsource(served),
            "shim.py": shim._SHIM % {"spec": "{}", "marker": shim._MARKER}}


@pytest.mark.parametrize("name", ["served.py", "shim.py"])
def test_the_files_run_by_the_image_s_python_parse_as_python_3_7(name):
    """Syntax newer than 3.7 (a walrus, match, positional-only parameters) would fail
    the step in an older image before it ran a line."""
    try:
        ast.parse(_container_texts()[name], feature_version=_OLDEST)
    except SyntaxError as exc:
        pytest.fail(f"{name} uses syntax newer than Python 3.7: {exc}")


# (a folder whose python3 is 3.7, outside /tmp: the stub's containers have their own)
_OLDEST_PYTHON = next(iter(sorted(Path("/root/.pyenv/versions").glob("3.7.*/bin"))), None)


@pytest.mark.skipif(_OLDEST_PYTHON is None, reason="no python3.7 on this machine")
def test_a_step_using_the_project_s_modules_runs_on_an_image_s_python_3_7(
        project, monkeypatch):
    """The shim and served.py run on the image's python3, as old as 3.7: what parses
    there can still fail at run time (str.removeprefix, dict | dict, list[int])."""
    (project / "which.py").write_text(
        "import sys\n\nimport helpers\n\n\ndef fit():\n"
        "    return [list(sys.version_info[:2]), helpers.scale(3)]\n")
    monkeypatch.setenv("PATH", f"{_OLDEST_PYTHON}:{os.environ['PATH']}")  # (the stub's image's)
    step = Step("fit", func=importlib.import_module("which").fit)
    run = Graph("g", [step]).run(executor="dagger", cache=False)
    assert run.states() == {"fit": "succeeded"}, run.status_rows()["fit"]["error"]
    assert run.result("fit") == [list(_OLDEST), 30]


# -- the files key the engine's exec cache: the same for the same code ------------------
_FILES_OF = """\
import json, sys
sys.path.insert(0, sys.argv[1])
import steps
from dagnb import Step
from dagnb.executors.dagger.shim import python_files
print(json.dumps({name: python_files(Step(name, func=getattr(steps, name)), ["up"])
                  for name in ("fit", "alone")}))
"""


def test_a_step_s_files_are_the_same_bytes_in_every_process(tmp_path):
    """The files are part of the engine's exec cache key: a module, a set or a namespace
    package's folders in another order in the next kernel (its own string hashing)
    would run each step again there."""
    _write_project(tmp_path)
    with open(tmp_path / "steps.py", "a") as handle:
        handle.write("\nKINDS = {'a', 'b', 'c', 'd'}\n\n\ndef alone(n):\n"
                     "    return sorted(KINDS)[n]\n")
    made = [subprocess.run([sys.executable, "-c", _FILES_OF, str(tmp_path)], check=True,
                           capture_output=True, text=True,
                           env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout
            for seed in (1, 2)]
    assert made[0] == made[1]
    files = json.loads(made[0])
    assert sorted(files["fit"]) == sorted([shim.MODULES_PATH, shim.SERVED_PATH,
                                           shim.SHIM_PATH, shim.SOURCE_PATH])
    # (no project module reached: the files it had before modules were sent)
    assert sorted(files["alone"]) == sorted([shim.SHIM_PATH, shim.SOURCE_PATH])
    assert shim.MODULES_PATH not in files["alone"][shim.SHIM_PATH]
