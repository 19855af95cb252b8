"""Code whose body imports a project module is keyed by the module's file while it is not
imported, by the members it reaches once it is. A module a dagnb run first imported here
is keyed as one not imported (the key a fresh process makes, where the step whose run
imported it is served from the cache) while it is as that import left it; imported by
the user's code, changed since, or edited, it is keyed by its members."""

from __future__ import annotations

import importlib
import itertools
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import dagnb
from dagnb.fingerprint import code_with_values

HELPERS = """\
import {config} as config

FACTOR = 2
TABLE = [1, 2]

def f(x):
    return x * FACTOR + sum(TABLE) * config.RATE
"""
STEPS = """\
def a():
    import {helpers}
    return {helpers}.f(1)

def a_changing():
    import {helpers}
    {helpers}.FACTOR = 5
    return {helpers}.f(1)

def b():
    import {helpers}
    return {helpers}.f(10)
"""

_NAMES = itertools.count()


class Project:
    """A helpers module and a module of steps importing it in their bodies, of names of
    their own (the process keeps what a test imports)."""

    def __init__(self, folder: Path) -> None:
        number = next(_NAMES)
        self.helpers, steps = f"fresh_helpers_{number}", f"fresh_steps_{number}"
        self.config = f"fresh_config_{number}"  # (which helpers imports at its top)
        self.file = folder / f"{self.helpers}.py"
        self.text = HELPERS.format(config=self.config)
        self.file.write_text(self.text)
        (folder / f"{self.config}.py").write_text("RATE = 1\n")
        (folder / f"{steps}.py").write_text(STEPS.format(helpers=self.helpers))
        self.steps = importlib.import_module(steps)
        self.names = (self.helpers, self.config, steps)

    def step(self, name: str) -> Callable[[], Any]:
        return getattr(self.steps, name)

    def module(self) -> Any:
        return sys.modules[self.helpers]


def key(func: Callable[..., Any]) -> tuple[str, dict[str, Any]]:
    code, values = code_with_values(func, fresh=True)
    return code, dict(values)


def run_here(func: Callable[..., Any], state: str = "succeeded") -> Any:
    """``func`` run by dagnb, as a step of a graph run here."""
    run = dagnb.Graph("g", [dagnb.Step("s", func=func)]).run(executor="local")
    assert run.states() == {"s": state}
    return run.result("s")


@pytest.fixture
def project(workdir: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Project]:
    monkeypatch.syspath_prepend(str(workdir))
    made = Project(workdir)
    yield made
    for name in made.names:  # (the note of a module no longer imported is never read)
        sys.modules.pop(name, None)


def test_a_module_first_imported_by_a_run_keys_as_one_not_imported(project: Project):
    unimported = key(project.step("b"))
    assert project.helpers not in sys.modules
    assert run_here(project.step("a")) == 5
    assert key(project.step("b")) == unimported  # (was by members: another key)
    assert project.step("b")() == 23
    assert key(project.step("b")) == unimported


def test_a_module_the_users_code_imported_keys_by_members(project: Project):
    unimported = key(project.step("b"))
    importlib.import_module(project.helpers)  # (a cell's import)
    assert key(project.step("b")) != unimported


def test_a_module_whose_data_a_run_changed_keys_by_members(project: Project):
    unimported = key(project.step("b"))
    assert run_here(project.step("a_changing")) == 8  # (imported, then FACTOR = 5)
    assert key(project.step("b")) != unimported
    # its own next key stands for the one it ran under (first_imports.remember)
    assert run_here(project.step("a_changing"), "cached") == 8


@pytest.mark.parametrize("change", ["rebound", "in place"])
def test_data_changed_after_the_import_keys_by_members_until_it_is_back(
        project: Project, change: str):
    unimported = key(project.step("b"))
    run_here(project.step("a"))
    module = project.module()
    if change == "rebound":
        module.FACTOR = 5
    else:
        module.TABLE.append(3)
    assert key(project.step("b")) != unimported  # (a miss: it runs again)
    if change == "rebound":
        module.FACTOR = 2
    else:
        module.TABLE.pop()
    assert key(project.step("b")) == unimported


def test_data_of_a_module_its_import_first_imported_counts_too(project: Project):
    unimported = key(project.step("b"))
    run_here(project.step("a"))
    config = sys.modules[project.config]
    config.RATE = 4  # (read by helpers.f: a fresh import of helpers would hold 1)
    assert key(project.step("b")) != unimported
    config.RATE = 1
    assert key(project.step("b")) == unimported


def test_a_function_of_the_module_rebound_keys_by_members(project: Project):
    unimported = key(project.step("b"))
    run_here(project.step("a"))
    project.module().f = lambda x: x
    assert key(project.step("b")) != unimported


@pytest.mark.filterwarnings("ignore:.*changed on disk since")
def test_an_edited_file_misses(project: Project):
    unimported = key(project.step("b"))
    run_here(project.step("a"))
    project.file.write_text(project.text.replace("FACTOR = 2", "FACTOR = 30"))
    assert key(project.step("b")) != unimported  # (the module runs the old text)
    importlib.reload(project.module())  # (runs the new text: not the import noted)
    assert key(project.step("b")) != unimported


def test_a_graph_run_keys_its_second_step_as_a_fresh_process_does(project: Project):
    unimported = key(project.step("b"))
    graph = dagnb.Graph("g", [dagnb.Step("a", func=project.step("a")),
                              dagnb.Step("b", func=project.step("b"), needs=("a",))])
    run = graph.run(executor="local")
    assert run.states() == {"a": "succeeded", "b": "succeeded"}
    assert key(project.step("b")) == unimported
    assert graph.run(executor="local").states() == {"a": "cached", "b": "cached"}


def test_a_module_imported_anew_by_a_run_is_noted_anew(project: Project):
    first = key(project.step("b"))
    run_here(project.step("a"))
    assert key(project.step("b")) == first
    del sys.modules[project.helpers]
    project.file.write_text(project.text.replace("FACTOR = 2", "FACTOR = 30"))
    unimported = key(project.step("b"))  # (the new text's key)
    assert run_here(project.step("a")) == 33
    assert key(project.step("b")) == unimported
    project.module().FACTOR = 5  # (the module imported now, not the one walked first)
    assert key(project.step("b")) != unimported
