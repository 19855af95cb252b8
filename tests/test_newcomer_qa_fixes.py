"""Fixes from a newcomer's QA pass through the README.

1. A step reading a global that cannot be fingerprinted ran inside dagnb's ``except``
   block: its own error's traceback began with ``UnfingerprintableVariable`` and
   "During handling of the above exception", as if dagnb had failed first.
2. A result that does not pickle left a 0-byte ``result.pkl`` for the steps downstream
   ("Ran out of input" instead of "No such file").
3. ``dagnb.current().params`` was a ``mappingproxy``: a step returning it was not cached.
4. ``plan``/``explain`` said of a damaged entry "left in place (the cache is read-only)"
   of a folder they may write: they only do not write.
"""

from __future__ import annotations

import json
import pickle
import threading
import warnings
from pathlib import Path

import pytest

import dagnb
from dagnb import Graph, Step
from dagnb.cache import store as store_module
from dagnb.model.results import save_result

pytestmark = pytest.mark.usefixtures("workdir")


def _quiet_run(graph: Graph, **options) -> tuple[dagnb.Run, list[str]]:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        run = graph.run(executor="local", **options)
    return run, [str(warning.message) for warning in caught]


# ---------------------------------------------------------------- 1. the user's error alone

def test_an_uncached_steps_own_error_has_no_dagnb_exception_in_its_traceback() -> None:
    scope: dict = {"__name__": "__main__"}
    exec("lock = None\ndef b():\n    with lock:\n        return int('x')\n", scope)
    scope["lock"] = threading.Lock()  # (cannot be fingerprinted: b runs uncached)
    run, _ = _quiet_run(Graph("g", [Step("b", func=scope["b"])]))
    assert run.states() == {"b": "failed"}
    text = "\n".join(run.logs("b")["line"])
    assert "ValueError: invalid literal for int()" in text
    assert "UnfingerprintableVariable" not in text and "During handling" not in text


# ---------------------------------------------------------------- 2. no partial result.pkl

def test_a_result_that_does_not_pickle_leaves_no_result_file(tmp_path: Path) -> None:
    with pytest.raises((pickle.PicklingError, AttributeError, TypeError)):
        save_result(tmp_path, {"fn": lambda x: x})
    assert list(tmp_path.iterdir()) == []


def test_a_downstream_step_finds_no_result_pkl_of_a_result_that_does_not_pickle() -> None:
    def make():
        return {"fn": lambda x: x}

    run, said = _quiet_run(Graph("g", [
        Step("make", func=make),
        Step("read", run='ls "$DAGNB_IN/make"; test ! -e "$DAGNB_IN/make/result.pkl"',
             needs=["make"])]))
    assert run.states() == {"make": "succeeded", "read": "succeeded"}
    assert any("could not be written" in line for line in said)


# ---------------------------------------------------------------- 3. params that pickle

def test_a_step_returning_its_params_is_cached_and_its_downstream_reads_them() -> None:
    def echo(alpha):
        return {"params": dagnb.current().params}

    def read(echo):
        return echo["params"]["alpha"] * 10

    graph = Graph("g", [Step("echo", func=echo, params={"alpha": 2}),
                        Step("read", func=read, needs=["echo"])])
    first, said = _quiet_run(graph)
    assert said == [] and first.not_stored == {}
    assert first.result("read") == 20
    again, _ = _quiet_run(graph)
    assert again.states() == {"echo": "cached", "read": "cached"}
    assert again.result("echo") == {"params": {"alpha": 2}}


def test_current_params_stay_read_only_and_pickle_as_a_plain_dict() -> None:
    seen = {}

    def look(alpha, config):
        params = dagnb.current().params
        with pytest.raises(TypeError):
            params["alpha"] = 3  # type: ignore[index]
        seen["copy"] = pickle.loads(pickle.dumps(params))

    def no_params():
        seen["empty"] = pickle.loads(pickle.dumps(dagnb.current().params))

    run, _ = _quiet_run(Graph("g", [
        Step("look", func=look, params={"alpha": 2, "config": {"k": [1]}}),
        Step("none", func=no_params)]), cache_mode="off")
    assert set(run.states().values()) == {"succeeded"}
    assert seen["copy"] == {"alpha": 2, "config": {"k": [1]}} and type(seen["copy"]) is dict
    assert seen["empty"] == {}


def test_a_containers_stand_in_params_pickle_too(tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    from dagnb.executors.dagger import standin

    namespace: dict = {"__name__": "dagnb"}
    exec(compile(Path(standin.__file__).read_text(), "dagnb.py", "exec"), namespace)
    (tmp_path / "params.json").write_text(json.dumps({"alpha": 2}))
    for name, value in {"DAGNB_PARAMS": tmp_path / "params.json", "DAGNB_STEP": "s",
                        "DAGNB_OUT": tmp_path / "out"}.items():
        monkeypatch.setenv(name, str(value))
    params = namespace["current"]().params
    with pytest.raises(TypeError):
        params["alpha"] = 3
    assert pickle.loads(pickle.dumps(params)) == {"alpha": 2}


# ---------------------------------------------------------------- 4. why left in place

def _damaged_graph(workdir: Path) -> Graph:
    def files():
        (dagnb.current().out_dir / "x.txt").write_text("hello")

    graph = Graph("g", [Step("files", func=files)])
    _quiet_run(graph)
    [saved] = (workdir / ".dagnb_cache" / "files").glob("*/out/x.txt")
    saved.write_text("HELLO")
    return graph


def _said_of_damage(look) -> list[str]:
    with pytest.warns(UserWarning) as said:
        look()
    return [str(w.message).split("; ", 1)[1] for w in said if "is damaged" in str(w.message)]


def test_plan_and_explain_say_they_leave_a_damaged_entry_because_they_only_read(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    graph = _damaged_graph(workdir)
    for command, look in (("plan", graph.plan), ("explain", lambda: graph.explain("files"))):
        monkeypatch.setattr(store_module, "_REPORTED", set())  # (said once a process)
        assert _said_of_damage(look) == [
            f"left in place ({command} does not change the cache; a run writing to it "
            "sets it aside), treated as a miss"]
    assert list(workdir.glob(".dagnb_cache/files/*/out/x.txt"))  # (left in place indeed)


def test_a_read_only_run_still_says_the_cache_is_read_only(workdir: Path) -> None:
    graph = _damaged_graph(workdir)
    assert _said_of_damage(lambda: graph.run(executor="local", cache_mode="read-only")) == [
        "left in place (the cache is read-only), treated as a miss"]
