"""A container Python step whose module was edited on disk and not reloaded (no
``importlib.reload``, no autoreload): the kernel runs the code it imported, the step's
key describes that code (:mod:`dagnb.fingerprint.imported`), and so the container must
be sent that code's text, not the file's new one. Through the real dagger-io client and
the stub engine, which runs the shim on this machine."""

from __future__ import annotations

import importlib
import re
import sys
import warnings
from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.errors import InvalidStepError
from dagnb.executors.dagger.executor import DaggerExecutor
from dagnb.executors.dagger.shim import SOURCE_PATH
from dagnb.executors.loop import run_sync
from dagnb.fingerprint import code_with_values

pytest_plugins = ["dagger_stub.fixtures"]

STEPS = ("FACTOR = 1\n\n\n"
         "def scale(x):\n    return x * {helper}\n\n\n"
         "def step(n):\n    return scale(n) + FACTOR * {own}\n")
IMPORTED, EDITED = STEPS.format(helper=10, own=1), STEPS.format(helper=1000, own=100)


def _module(folder: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str) -> object:
    monkeypatch.delitem(sys.modules, name, raising=False)
    (folder / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(folder)  # (named as a notebook's helper beside it: steps_x.py)
    return importlib.import_module(name)


def _stale_warning(name: str, runs: str = "the step runs the imported code") -> str:
    return (rf"^dagnb: {name}\.py changed on disk since the kernel imported it; {runs}: "
            rf"restart, importlib\.reload\({name}\), or %load_ext autoreload / %autoreload 2")


def _sent_sources(stub) -> list[str]:
    """The step module texts the container was given, in the order of the execs."""
    from dagger_stub.queries import calls

    return [args["contents"] for query in stub.texts("withExec")
            for name, args in calls(query)
            if name == "withNewFile" and args.get("path") == SOURCE_PATH]


def test_a_container_step_whose_module_was_edited_runs_the_code_its_key_describes(
        stub, tmp_path, monkeypatch):
    """Before, the container was sent the file's new text (step and helper: 2 * 1000 +
    100) under the key of the imported code (2 * 10 + 1): a refresh stored 2100 under
    the old code's key, and a kernel running that code again was served 2100."""
    module = _module(tmp_path, monkeypatch, "steps_edited", IMPORTED)
    graph = Graph("g", [Step("s", func=module.step, params={"n": 2})])
    cache = tmp_path / "cache"
    first = graph.run(executor="dagger", cache_directory=cache)
    assert first.result("s") == 21
    key = code_with_values(module.step, fresh=True)[0]
    (tmp_path / "steps_edited.py").write_text(EDITED)
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        refreshed = graph.run(executor="dagger", cache_directory=cache, refresh=True)
    assert code_with_values(module.step, fresh=True)[0] == key  # (the imported code's)
    assert refreshed.result("s") == 21  # (before: 2100, the file's code)
    assert [re.match(_stale_warning("steps_edited"), str(w.message)) is not None
            for w in said] == [True]  # (before: not a word)
    other = Graph("g", [Step("s", func=module.step, params={"n": 3})])
    assert other.run(executor="dagger", cache_directory=cache).result("s") == 31
    assert [text.count("x * 10\n") for text in _sent_sources(stub)] == [1, 1, 1]
    (tmp_path / "steps_edited.py").write_text(IMPORTED)  # (put back: a restarted kernel's)
    importlib.reload(module)
    again = Graph("g", [Step("s", func=module.step, params={"n": 2})])
    served = again.run(executor="dagger", cache_directory=cache)
    assert (served.status_rows()["s"]["cached"], served.result("s")) == (True, 21)


def test_a_container_step_whose_module_was_edited_before_dagnb_read_it_is_refused(
        stub, make_task, tmp_path, monkeypatch):
    """No text of the code the kernel runs is to be had: before, the container ran the
    file's new code under a key of the imported code's bytecode."""
    module = _module(tmp_path, monkeypatch, "steps_gone", IMPORTED)
    (tmp_path / "steps_gone.py").write_text(EDITED)
    task = make_task(Step("s", func=module.step, params={"n": 2}))
    with pytest.warns(UserWarning, match=_stale_warning("steps_gone")), \
            pytest.raises(InvalidStepError) as caught:
        run_sync(DaggerExecutor().execute(task))
    assert str(caught.value) == (
        "step 's' cannot be sent to the container: steps_gone.py changed on disk since the "
        "kernel imported it; the text of the imported code is gone: restart, "
        "importlib.reload(steps_gone), or %load_ext autoreload / %autoreload 2")
    assert not stub.texts("withExec")  # nothing ran


def test_a_container_step_whose_module_was_reloaded_runs_the_file_as_it_is(
        stub, tmp_path, monkeypatch):
    """A reload makes the file's text the module's: that is what the container runs."""
    module = _module(tmp_path, monkeypatch, "steps_reloaded", IMPORTED)
    graph = Graph("g", [Step("s", func=module.step, params={"n": 2})])
    assert graph.run(executor="dagger", cache=False).result("s") == 21
    (tmp_path / "steps_reloaded.py").write_text(EDITED)
    importlib.reload(module)
    graph = Graph("g", [Step("s", func=module.step, params={"n": 2})])
    assert graph.run(executor="dagger", cache=False).result("s") == 2100
