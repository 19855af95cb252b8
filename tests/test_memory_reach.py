"""What a cached function's key reaches besides its arguments: its closure, the globals of
the helpers it calls (each module's own), class attributes, decorated and partial
helpers. Each case: a change a user makes is a miss, and what does not change is a hit."""

from __future__ import annotations

import collections
import dataclasses
import functools
import importlib
import sys
import textwrap

import numpy as np
import pytest

from dagnb.cache.memory import Memory
from dagnb.fingerprint import code_digest, global_values, value_digest


@pytest.fixture
def memory(tmp_path) -> Memory:
    return Memory(str(tmp_path / "cache"))


@pytest.fixture
def modules(tmp_path, monkeypatch):
    """Write modules into a folder on sys.path and import them (forgotten afterwards)."""
    monkeypatch.syspath_prepend(str(tmp_path))
    written: list[str] = []

    def load(**sources: str):
        for name, text in sources.items():
            (tmp_path / f"{name}.py").write_text(textwrap.dedent(text))
            written.append(name)
        importlib.invalidate_caches()
        found = []
        for name in sources:
            if name in sys.modules:
                found.append(importlib.reload(sys.modules[name]))
            else:
                found.append(importlib.import_module(name))
        return found

    yield load
    for name in written:
        sys.modules.pop(name, None)


# -- globals of two modules that share a name ------------------------------------------
HELPER = """
params = {"k": 2}

def scale(x):
    return x * params["k"]
"""
MAIN = """
from reach_helper import scale

params = {"offset": 1}

def f(x):
    return scale(x) + params["offset"]
"""


def test_the_globals_of_two_modules_by_one_name_both_count(memory, modules):
    helper, main = modules(reach_helper=HELPER, reach_main=MAIN)
    assert set(global_values(main.f)) == {"params", "reach_helper.params"}
    cached = memory.cache(main.f)
    assert cached(10) == 21
    main.params["offset"] = 100  # the function's own module's
    assert cached(10) == 120
    helper.params["k"] = 3  # the helper's module's
    assert cached(10) == 130
    main.params["offset"], helper.params["k"] = 1, 2
    assert cached.check_call_in_cache(10) and cached(10) == 21


# -- closures ---------------------------------------------------------------------------
def _make(settings):
    def scaled(x):
        return x * settings["k"]
    return scaled


def test_a_closures_dict_changed_in_place_is_a_miss(memory):
    settings = {"k": 2}
    cached = memory.cache(_make(settings))
    assert cached(10) == 20
    settings["k"] = 3
    assert cached(10) == 30
    settings["k"] = 2
    assert cached.check_call_in_cache(10)


def _weighted(weights):
    def apply(x):
        return float(weights.sum()) * x
    return apply


def test_a_closures_array_changed_in_place_is_a_miss(memory):
    weights = np.ones(3)
    cached = memory.cache(_weighted(weights))
    assert cached(1) == 3.0
    weights[:] = 10
    assert cached(1) == 30.0


@dataclasses.dataclass
class _Settings:
    k: int


def _from(settings):
    def scaled(x):
        return x * settings.k if isinstance(settings, _Settings) else x * settings["k"]
    return scaled


@pytest.mark.parametrize("kind", [
    _Settings, lambda k: collections.defaultdict(int, k=k), lambda k: collections.Counter(k=k),
    lambda k: collections.OrderedDict(k=k),
])
def test_a_closures_object_counts_by_content_not_by_type(kind):
    make = (lambda k: _from(_Settings(k))) if kind is _Settings else (lambda k: _from(kind(k)))
    assert code_digest(make(2)) != code_digest(make(3))
    assert code_digest(make(2)) == code_digest(make(2))


def _partial_in_closure(by):
    step = functools.partial(pow, exp=by)

    def apply(x):
        return step(x)
    return apply


def test_a_closures_partial_counts_by_its_arguments():
    assert code_digest(_partial_in_closure(2)) != code_digest(_partial_in_closure(3))


def _counter():
    calls = 0

    def work(x):
        nonlocal calls
        calls += 1
        return x
    return work


def test_a_count_the_function_keeps_by_nonlocal_is_its_state_not_its_input(memory):
    work = _counter()
    cached = memory.cache(work)
    assert [cached(1), cached(1), cached(2)] == [1, 1, 2]
    assert work.__closure__[0].cell_contents == 2  # ran twice: the second call a hit


def _dispatching(k):
    table = {"k": k}

    def fact(n):
        return 1 if n <= 1 else n * table["fact"](n - 1)

    def scaled(n):
        return table["fact"](n) * table["k"]

    table["fact"] = fact
    return scaled


def test_a_closure_that_holds_the_function_itself_is_hashed_once_and_apart(memory):
    assert code_digest(_dispatching(2)) == code_digest(_dispatching(2))
    assert code_digest(_dispatching(2)) != code_digest(_dispatching(3))
    assert memory.cache(_dispatching(2))(3) == 12 and memory.cache(_dispatching(3))(3) == 18


# -- class attributes -------------------------------------------------------------------
class _Config:
    params = {"k": 2}  # noqa: RUF012 (a class attribute a user edits)


def _configured(x):
    return x * _Config.params["k"]


def test_a_class_attribute_changed_in_place_is_a_miss(memory, monkeypatch):
    monkeypatch.setitem(_Config.params, "k", 2)
    cached = memory.cache(_configured)
    assert cached(10) == 20
    _Config.params["k"] = 3
    assert cached(10) == 30


# -- globals written, never read --------------------------------------------------------
last = None


def _remembering(x):
    global last
    last = x
    return x * 2


def test_a_global_the_function_only_writes_is_not_part_of_its_key(memory):
    calls: list[int] = []
    cached = memory.cache(_remembering)
    before = code_digest(_remembering)
    for x in (1, 2, 1, 2):
        if not cached.check_call_in_cache(x):
            calls.append(x)
        cached(x)
    assert calls == [1, 2] and code_digest(_remembering) == before


# -- decorated and partial helpers of the project ---------------------------------------
def _ops(factor: int) -> str:
    return f"""
import functools

@functools.cache
def lookup(x):
    return x * {factor}

def scale(x, by=1):
    return x * by * {factor}
"""


USER = """
import functools
from reach_ops import lookup, scale

by_two = functools.partial(scale, by=2)

def with_lookup(x):
    return lookup(x) + 1

def with_partial(x):
    return by_two(x)
"""


def test_a_helper_under_functools_cache_counts_by_its_code(modules):
    modules(reach_ops=_ops(2))
    (user,) = modules(reach_user=USER)
    before = code_digest(user.with_lookup)
    modules(reach_ops=_ops(3))
    (user,) = modules(reach_user=USER)
    assert user.with_lookup(10) == 31 and code_digest(user.with_lookup) != before


def test_a_partial_of_a_project_function_counts_by_its_code(modules, memory):
    (ops,) = modules(reach_ops=_ops(2))
    (user,) = modules(reach_user=USER)
    held, passed = memory.cache(user.with_partial)(10), value_digest(functools.partial(ops.scale))
    modules(reach_ops=_ops(3))
    (user,) = modules(reach_user=USER)
    assert held == 40 and memory.cache(user.with_partial)(10) == 60  # a global partial
    assert value_digest(functools.partial(sys.modules["reach_ops"].scale)) != passed  # passed
