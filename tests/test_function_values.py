"""A function inside a value (an argument, a global registry of functions) counts as one
called directly does: by its code and the data its globals hold at each call."""

from __future__ import annotations

import pytest

from dagnb import Graph, Step
from dagnb.cache.memory import Memory
from dagnb.fingerprint import code_digest, value_digest, values

PARAMS = {"k": 2}
params = {"k": 2}  # (lower case: a walk feeds it by name; a key counts its content)


def scale(x: int) -> int:
    return x * PARAMS["k"]


def shift(x: int) -> int:
    return x + params["k"]


TRANSFORMS = {"scale": scale, "shift": shift}


def apply(x: int, fn) -> int:
    return fn(x)


def build(x: int, name: str) -> int:
    return TRANSFORMS[name](x)


def built() -> int:
    return TRANSFORMS["scale"](10)


@pytest.fixture(autouse=True)
def _params_as_they_were():
    yield
    PARAMS["k"] = params["k"] = 2


@pytest.fixture
def memory(tmp_path, clock) -> Memory:
    return Memory(str(tmp_path / "cache"), clock=clock)


def test_a_function_passed_as_argument_sees_a_global_dict_changed_in_place(memory):
    cached = memory.cache(apply)
    assert cached(10, scale) == 20
    PARAMS["k"] = 7
    assert not cached.check_call_in_cache(10, scale)
    assert cached(10, scale) == 70
    assert cached.check_call_in_cache(10, scale)


def test_a_function_in_a_global_registry_sees_a_global_dict_changed_in_place(memory):
    cached = memory.cache(build)
    assert cached(10, "scale") == 20 and cached(10, "shift") == 12
    PARAMS["k"] = 7
    assert cached(10, "scale") == 70
    params["k"] = 5  # (a lower-case dict, which a walk feeds by name)
    assert cached(10, "shift") == 15


def test_a_function_whose_globals_did_not_change_still_hits(memory):
    cached = memory.cache(apply)
    assert cached(10, scale) == 20
    PARAMS["k"] = 2  # (the same content)
    assert cached.check_call_in_cache(10, scale)
    assert memory.cache(build)(10, "scale") == 20
    assert memory.cache(build).check_call_in_cache(10, "scale")


def test_a_steps_registry_function_sees_a_global_dict_changed_in_place(tmp_path):
    graph = Graph("g", [Step("built", func=built)])
    common = {"cache_directory": str(tmp_path / "c"), "executor": "local"}
    assert graph.run(**common).result("built") == 20
    PARAMS["k"] = 7
    run = graph.run(**common)
    assert run.result("built") == 70
    assert not run.status().set_index("step").loc["built", "cached"]
    assert graph.run(**common).status().set_index("step").loc["built", "cached"]


def test_a_closure_in_a_steps_value_changed_in_place_is_seen_at_the_next_run(tmp_path):
    settings = {"k": 2}
    held = {"fn": (lambda s: s * settings["k"])}
    graph = Graph("g", [Step("scaled", func=lambda: held["fn"](10))])
    common = {"cache_directory": str(tmp_path / "c"), "executor": "local"}
    assert graph.run(**common).result("scaled") == 20
    settings["k"] = 3
    assert graph.run(**common).result("scaled") == 30


def test_a_function_in_a_value_reading_constants_keeps_the_digest_it_had():
    """Its globals unchanged: the walk's own digest, as before (no stored key moves)."""
    assert values._digests.function(scale) == code_digest(scale)
    before = value_digest([scale])
    PARAMS["k"] = 7
    assert value_digest([scale]) != before
    PARAMS["k"] = 2
    assert value_digest([scale]) == before
