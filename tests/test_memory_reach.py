"""What a cached function's key reaches besides its arguments: its closure, the globals of
the helpers it calls (each module's own), class attributes, decorated and partial
helpers. Each case: a change a user makes is a miss, and what does not change is a hit."""

from __future__ import annotations

import collections
import dataclasses
import functools
import heapq
import importlib
import sys
import textwrap
import threading
import types
import warnings

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
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # (edits of one size in one
    monkeypatch.syspath_prepend(str(tmp_path))              # second: no stale .pyc)
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


def test_a_closures_dict_counts_by_content_as_first_hashed(memory):
    """A new closure (a fresh process, a cell run again) is hashed anew: its content
    counts; changed in place afterwards, in this process, it is not seen (a closure is
    as often state the code keeps out of sight: see the heap below)."""
    assert memory.cache(_make({"k": 2}))(10) == 20
    assert memory.cache(_make({"k": 3}))(10) == 30
    assert memory.cache(_make({"k": 2})).check_call_in_cache(10)


def test_a_closure_changed_in_place_never_stores_a_result_under_its_old_value(memory):
    """A hit may still serve what the closure held when first hashed (documented); a miss
    runs with what it holds now, and is stored under that: a fresh process (a new
    closure of the first value) never gets the changed value's result."""
    settings = {"k": 2}
    cached = memory.cache(_make(settings))
    assert cached(1) == 2
    settings["k"] = 3
    assert cached(5) == 15  # a miss: computed with k = 3, stored under k = 3
    fresh = memory.cache(_make({"k": 2}))
    assert fresh(5) == 10 and fresh.check_call_in_cache(1)
    assert memory.cache(_make({"k": 3})).check_call_in_cache(5)


def test_a_steps_closure_changed_in_place_is_seen_at_the_next_run(tmp_path):
    from dagnb import Graph, Step

    settings = {"k": 2}
    scaled = _make(settings)
    graph = Graph("g", [Step("scaled", func=lambda: scaled(10))])
    common = {"cache_directory": str(tmp_path / "c"), "executor": "local"}
    assert graph.run(**common).result("scaled") == 20
    settings["k"] = 3
    assert graph.run(**common).result("scaled") == 30


def _pushing(heap):
    def work(x):
        heapq.heappush(heap, x)  # (state changed out of the bytecode scan's sight)
        return x * 2
    return work


def test_state_a_closure_keeps_out_of_sight_does_not_make_every_call_miss(memory):
    heap: list[int] = []
    cached = memory.cache(_pushing(heap))
    assert [cached(1), cached(1), cached(1)] == [2, 2, 2]
    assert heap == [1]  # ran once


def _weighted(weights):
    def apply(x):
        return float(weights.sum()) * x
    return apply


def test_a_closures_array_counts_by_content(memory):
    assert code_digest(_weighted(np.ones(3))) != code_digest(_weighted(np.full(3, 10.0)))
    assert code_digest(_weighted(np.ones(3))) == code_digest(_weighted(np.ones(3)))


def _locked(lock):
    def work(x):
        with lock:
            return x + 1
    return work


def test_a_closure_no_hash_takes_counts_by_its_type_with_a_warning():
    with pytest.warns(UserWarning, match=r"closure variable 'lock' \(lock\) cannot be hashed"):
        first = code_digest(_locked(threading.Lock()))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert code_digest(_locked(threading.Lock())) == first


class _Scaler:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        return x * self.k


def _calling(method):
    def work(x):
        return method(x)
    return work


def test_a_closures_bound_method_counts_by_its_code_and_its_object():
    assert code_digest(_calling(_Scaler(2).apply)) != code_digest(_calling(_Scaler(5).apply))
    assert code_digest(_calling(_Scaler(2).apply)) == code_digest(_calling(_Scaler(2).apply))


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


def test_a_class_attribute_counts_by_its_value_as_first_hashed(memory, monkeypatch):
    monkeypatch.setitem(_Config.params, "k", 2)
    before = code_digest(_configured)
    monkeypatch.setattr(_Config, "params", {"k": 3})  # set again: walked again
    assert code_digest(_configured) != before


class _Vocabulary:
    words: dict[str, int] = {}  # noqa: RUF012 (a registry its method fills)

    @classmethod
    def index(cls, word):
        return cls.words.setdefault(word, len(cls.words))


def _indexed(word):
    return _Vocabulary.index(word)


def test_a_class_registry_its_methods_fill_does_not_make_every_call_miss(memory):
    cached = memory.cache(_indexed)
    assert [cached("a"), cached("a")] == [0, 0]
    assert cached.check_call_in_cache("a")


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


# -- callables whose type's __call__ is C code: what they run counts --------------------
WRAPPED = """
import functools

params = {{"shift": 0}}

class Holder:
    @staticmethod
    def scaled(x):
        return x * {k} + params["shift"]

@functools.lru_cache(maxsize=None)
def cached_scaled(x):
    return x * {k} + params["shift"]

class Model:
    def __init__(self, x):
        self.value = x * {k} + params["shift"]
"""


def test_a_global_the_function_changes_counts_by_name_whatever_its_case():
    """An UPPER_CASE list a function appends to counted by its content: another
    function appending to it too changed this one's key (a miss in the next process)."""
    digests = []
    for runs in ([], ["another function's call"]):  # (two processes, as they find RUNS)
        namespace = {"RUNS": runs, "__name__": "reach_state"}
        exec("def record(x):\n    RUNS.append(x)\n    return x\n", namespace)
        digests.append(code_digest(namespace["record"]))
    assert digests[0] == digests[1]


def test_a_librarys_wrapper_of_its_own_code_counts_by_name():
    """numpy's np.sum is a C dispatcher whose __wrapped__ is numpy's Python function:
    followed, its key hung on numpy's source (and missed at every numpy upgrade)."""
    def wrapped_by_user(x):
        return x

    by_user = functools.lru_cache(wrapped_by_user)
    assert code_digest(np.sum) == code_digest(np.sum, values=False)
    assert code_digest(np.sum) != code_digest(np.sum.__wrapped__)
    assert code_digest(by_user) == code_digest(wrapped_by_user)


def test_what_a_staticmethod_an_lru_cache_or_a_class_runs_counts_by_its_code(modules,
                                                                             memory):
    """Cached as they are (not through a function), they counted by name: an edit of
    their code, or of a global it reads, was a stale hit."""
    def calls(module, every=True):
        staticmethod_object = vars(module.Holder)["scaled"]
        return [memory.cache(staticmethod_object)(5), memory.cache(module.Model)(5).value,
                *([memory.cache(module.cached_scaled)(5)] if every else [])]

    assert calls(*modules(reach_wrapped=WRAPPED.format(k=2))) == [10, 10, 10]
    (edited,) = modules(reach_wrapped=WRAPPED.format(k=3))
    assert calls(edited) == [15, 15, 15]
    edited.params["shift"] = 1  # (the lru_cache keeps its own result for 5: left out)
    assert calls(edited, every=False) == [16, 16]


# -- methods a class inherits from another module's class --------------------------------
BASE = """
params = {"k": 2}

class Base:
    def predict(self, x):
        return x * params["k"]
"""
MODEL = """
from reach_base import Base

params = {"offset": 1}

class Model(Base):
    def shifted(self, x):
        return x + params["offset"]
"""


def test_an_inherited_method_sees_both_modules_globals_apart(modules, memory):
    _, model = modules(reach_base=BASE, reach_model=MODEL)
    found = global_values(model.Model().predict)
    assert found["params"] == {"k": 2}  # the method's own module's
    assert found["reach_model.params"] == {"offset": 1}  # the class's module's
    cached = memory.cache(model.Model().predict)
    assert cached(10) == 20
    model.params["offset"] = 100  # read by the class's other method: it counts
    assert not cached.check_call_in_cache(10)


# -- a worker's name for the script -----------------------------------------------------
def test_the_scripts_globals_are_labelled_as_the_script_in_a_worker_too(modules):
    """A function of the script reached from another module's code (a decorator's
    wrapper): its globals are ``__main__.<name>`` whether the script runs as
    ``__main__`` or, in a spawn worker, as ``__mp_main__``."""
    (deco,) = modules(reach_deco="""
import functools

def traced(func):
    @functools.wraps(func)
    def wrapper(*args):
        return func(*args)
    return wrapper
""")
    script = types.ModuleType("__mp_main__")
    exec("params = {'k': 2}\ndef f(x):\n    return x * params['k']\n", vars(script))
    wrapped = deco.traced(script.f)
    assert set(global_values(wrapped)) == {"__main__.params"}


def test_a_librarys_bound_method_counts_by_name_its_object_is_not_hashed(monkeypatch):
    """``get_ipython`` in a notebook is the shell's bound method: hashing the shell
    pickled all of IPython (and warned of its closures); a library's method counts by
    its name, as a library's function does."""
    import json

    pickled: list[object] = []

    def counted(self, protocol):
        pickled.append(self)
        return object.__reduce_ex__(self, protocol)

    monkeypatch.setattr(json.JSONEncoder, "__reduce_ex__", counted, raising=False)
    encode = json.JSONEncoder().encode
    code_digest(_calling(encode))
    assert pickled == []


# -- cached functions calling cached functions ------------------------------------------
NESTED = """
import dagnb

memory = dagnb.Memory({location!r})
runs = []

@memory.cache
def load(n):
    return n + 1

@memory.cache
def scale(n):
    return n * {k}

@memory.cache
def features(n):
    runs.append(n)
    return load(n) + scale(n)

@memory.cache
def fib(n):
    return n if n < 2 else fib(n - 1) + fib(n - 2)
"""


def test_editing_any_cached_function_a_cached_function_calls_is_a_miss(modules, tmp_path):
    location = str(tmp_path / "nested")
    (nested,) = modules(reach_nested=NESTED.format(location=location, k=2))
    assert nested.features(10) == 31 and nested.runs == [10]
    (nested,) = modules(reach_nested=NESTED.format(location=location, k=2))
    assert nested.features(10) == 31 and nested.runs == []  # the same code: a hit
    # (every cached function's wrapper runs the same code: walked as code, the second
    # one met was taken for recursion, and editing scale served the old 31)
    (nested,) = modules(reach_nested=NESTED.format(location=location, k=3))
    assert nested.features(10) == 41 and nested.runs == [10]


def test_a_recursive_cached_function_is_hashed_once_and_says_nothing(modules, tmp_path):
    (nested,) = modules(reach_nested=NESTED.format(location=str(tmp_path / "fib"), k=2))
    walks = []
    from dagnb.fingerprint import code as code_module

    compute = code_module._compute_record
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(code_module, "_compute_record",
                      lambda func: walks.append(func.__qualname__) or compute(func))
        with warnings.catch_warnings():
            warnings.simplefilter("error")  # (it warned of the wrapper's own closure)
            assert nested.fib(40) == 102_334_155
    assert walks == ["fib"]  # (it was walked again at each call: fib(60) took 1.5 s)
