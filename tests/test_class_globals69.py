"""The globals read by the methods of an argument's class (or of a global instance's
class) count at each call, as the function's own globals do: a class's digest held the
values they had when it was first walked, so after ``SETTINGS["k"] = 100`` a call was a
stale hit, and a miss was stored under the old value (a fresh process was served it)."""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap

import pytest

from dagnb import Graph, Memory, Step

MODEL = """
SETTINGS = {"k": 1}
settings = {"k": 1}


class Config:
    def __init__(self, k):
        self.k = k


CONFIG = Config(1)


class Upper:
    def predict(self, x):
        return x + SETTINGS["k"]


class Lower:
    def predict(self, x):
        return x + settings["k"]


class ByObject:
    def predict(self, x):
        return x + CONFIG.k


class Shifted:
    def __init__(self, shift):
        self.shift = shift

    def predict(self, x):
        return x + self.shift + DEFAULT.shift


DEFAULT = Shifted(1)
MODEL = Upper()


def predict(model, x):
    return model.predict(x)


def through_global(x):
    return MODEL.predict(x)


def use():
    return MODEL.predict(1)

"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    """A fresh project module (a class of the user's code), forgotten afterwards."""
    name = f"class_globals69_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(MODEL))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield importlib.import_module(name)
    sys.modules.pop(name, None)


@pytest.fixture
def memory(tmp_path) -> Memory:
    return Memory(str(tmp_path / "cache"))


def test_an_arguments_class_reading_a_dict_changed_in_place_is_a_miss(project, memory):
    predict = memory.cache(project.predict)
    model = project.Upper()
    assert predict(model, 1) == 2
    project.SETTINGS["k"] = 100
    assert predict(model, 1) == 101  # (was 2: a stale hit)
    assert predict(model, 2) == 102
    project.SETTINGS["k"] = 1  # back: the first entry is the one of this value again
    assert predict.check_call_in_cache(model, 1)
    assert not predict.check_call_in_cache(model, 2)  # (102 is stored under k=100)
    assert predict(model, 2) == 3


@pytest.mark.parametrize("kind, change", [
    ("Lower", lambda module: module.settings.update(k=100)),  # a lower-case dict
    ("ByObject", lambda module: setattr(module.CONFIG, "k", 100)),  # an object's attribute
])
def test_any_data_the_methods_read_counts_by_content(project, memory, kind, change):
    """Read by a method, a lower-case dict or an object counted by its type alone: the
    same key whatever it held, in this process or another."""
    predict = memory.cache(project.predict)
    model = getattr(project, kind)()
    assert predict(model, 1) == 2
    change(project)
    assert predict(model, 1) == 101


def test_a_global_instance_the_function_reads_counts_its_class_globals(project, memory):
    through_global = memory.cache(project.through_global)
    assert through_global(1) == 2
    project.SETTINGS["k"] = 100
    assert through_global(1) == 101


def test_a_class_whose_methods_read_an_instance_of_itself(project, memory):
    """``DEFAULT = Shifted(1)``, read by Shifted's own method: counted (no recursion
    without end), and a change to it is a miss."""
    predict = memory.cache(project.predict)
    model = project.Shifted(10)
    assert predict(model, 1) == 12
    assert predict(model, 1) == 12 and predict.check_call_in_cache(model, 1)
    project.DEFAULT.shift = 5
    assert predict(model, 1) == 16


SCRIPT = """
import sys

import dagnb

memory = dagnb.Memory(sys.argv[1])
SETTINGS = {"k": 1}


class Model:
    def predict(self, x):
        return x + SETTINGS["k"]


@memory.cache
def predict(model, x):
    return model.predict(x)


model = Model()
if sys.argv[2] == "change":
    predict(model, 1)
    SETTINGS["k"] = 100
print(predict(model, 2))
"""


def test_a_fresh_process_is_not_served_a_result_of_the_changed_value(tmp_path):
    script = tmp_path / "poison.py"
    script.write_text(SCRIPT)

    def run(mode: str) -> str:
        done = subprocess.run([sys.executable, str(script), str(tmp_path / "cache"), mode],
                              capture_output=True, text=True, check=True, cwd=tmp_path)
        return done.stdout.strip()

    assert run("change") == "102"  # computed with k=100 ...
    assert run("fresh") == "3"  # ... and not stored under k=1 (was 102)


def test_a_step_reading_a_global_instance_runs_again(project, tmp_path):
    graph = Graph("g69", [Step("use", func=project.use)])
    common = {"cache_directory": str(tmp_path / "steps"), "executor": "local"}
    assert graph.run(**common).result("use") == 2
    project.SETTINGS["k"] = 100
    assert graph.run(**common).result("use") == 101

