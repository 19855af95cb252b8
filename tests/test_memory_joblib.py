"""joblib's own Memory tests, run against ``dagnb.Memory``.

The installed joblib ships its test suite (``joblib/test/test_memory.py`` and
``test_memory_async.py``). The tests below are joblib's functions themselves, imported
(not copied), with the name ``Memory`` in their modules patched to ``dagnb.Memory`` for
the duration of each test. Only the tests that use joblib's public, documented surface
run; :data:`LEFT_OUT` says why each of the others does not, and
:func:`test_every_joblib_memory_test_is_run_or_left_out_with_a_reason` fails when a
joblib upgrade brings a test nobody has sorted yet.
"""

from __future__ import annotations

import asyncio
import importlib
import inspect
import operator
import pickle
import sys
import threading
import types
import warnings

import pytest

import dagnb
from dagnb.cache import store as store_module
from dagnb.cache.memory import ShelvedResult
from dagnb.testing import isolated

_joblib = pytest.importorskip("joblib.test.test_memory")
_joblib_async = pytest.importorskip("joblib.test.test_memory_async")

RUN = (
    "test_no_memory",
    "test_memory_kwarg",
    "test_memory_lambda",
    "test_memory_partial",
    "test_memory_eval",
    "test_argument_change",
    "test_memory_numpy",
    "test_memory_exception",
    "test_memory_ignore",
    "test_memory_ignore_decorated",
    "test_memory_args_as_kwargs",
    "test_clear_memory_with_none_location",
    "test_memory_func_with_signature",
    "test_info_log",
    "TestCacheValidationCallback",
    "TestMemorizedFunc.test_call_method_memorized",
    "test_no_memory_async",
    "test_memorized_func_call_async",
)
"""joblib tests that run against dagnb.Memory (async ones through ``asyncio.run``)."""

_INTERNALS = "uses joblib internals ({}), not the documented Memory surface"
_CLASSES = "constructs joblib's MemorizedFunc/NotMemorizedFunc classes directly"
_COLLISION = (
    "expects JobLibCollisionWarning: joblib names a cache by function name and warns on "
    "a clash; dagnb keys on the code itself, so two functions never share entries"
)
LEFT_OUT = {
    "test_memory_file_modification": (
        "caches in a folder holding the test's module: joblib keeps its entries in a "
        "joblib/ folder inside, dagnb refuses a folder of other files as the cache"
    ),
    "test_memory_integration": "passes compress= (dagnb's store chooses its own format)",
    "test_parallel_call_cached_function_defined_in_jupyter": (
        "ships a cached function to worker processes with joblib.Parallel (loky)"
    ),
    "test_cached_jupyter_function_persists_across_sessions": "runs joblib in subprocesses",
    "test_memory_name_collision": _COLLISION,
    "test_memory_warning_lambda_collisions": _COLLISION,
    "test_memory_warning_collision_detection": _COLLISION,
    "test_memory_in_memory_function_code_change": _COLLISION,
    "test_memory_numpy_check_mmap_mode": _INTERNALS.format("store_backend.get_items, .warn"),
    "test_memorized_result_forwards_mmap_mode": _INTERNALS.format("MemorizedResult(...)"),
    "test_partial_decoration": _INTERNALS.format("the private _verbose attribute"),
    "test_func_dir": _INTERNALS.format("_build_func_identifier, func_code.py"),
    "test_persistence": _INTERNALS.format("_get_args_id, store_backend.load_item"),
    "test_check_call_in_cache": _CLASSES,
    "test_call_and_shelve": _CLASSES,
    "test_call_and_shelve_lazily_load_stored_result": _INTERNALS.format("output.pkl's atime"),
    "test_memorized_pickling": _CLASSES,
    "test_memorized_repr": _CLASSES,
    "test_memory_func_with_kwonly_args": (
        "expects joblib's ValueError for a keyword-only argument given by position; "
        "dagnb raises a TypeError naming the function, as calling the function would"
    ),
    "test__get_items": _INTERNALS.format("store_backend.get_items"),
    "test__get_items_to_delete": _INTERNALS.format("store_backend._get_items_to_delete"),
    "test_memory_reduce_size_bytes_limit": _INTERNALS.format("store_backend.get_items"),
    "test_memory_reduce_size_items_limit": _INTERNALS.format("store_backend.get_items"),
    "test_memory_reduce_size_age_limit": _INTERNALS.format("store_backend.get_items"),
    "test_memory_clear": _INTERNALS.format("_check_previous_func_code"),
    "test_cached_function_race_condition_when_persisting_output": (
        "ships a cached function to worker processes with joblib.Parallel (loky)"
    ),
    "test_cached_function_race_condition_when_persisting_output_2": (
        "ships a cached function to worker processes with joblib.Parallel (loky)"
    ),
    "test_memory_recomputes_after_an_error_while_loading_results": _INTERNALS.format(
        "store_backend.get_items, .warn"
    ),
    "test_register_invalid_store_backends_key": "joblib's store-backend registry",
    "test_register_invalid_store_backends_object": "joblib's store-backend registry",
    "test_memory_default_store_backend": "joblib's store-backend registry",
    "test_warning_on_unknown_location_type": "joblib's store-backend registry",
    "test_instanciate_incomplete_store_backend": "joblib's store-backend registry",
    "test_dummy_store_backend": "joblib's store-backend registry",
    "test_instanciate_store_backend_with_pathlib_path": "joblib's store-backend registry",
    "test_filesystem_store_backend_repr": "joblib's store-backend registry",
    "test_memory_objects_repr": "compares reprs with joblib's class names (MemorizedFunc)",
    "test_memorized_result_pickle": _INTERNALS.format("MemorizedResult.store_backend"),
    "test_memory_pickle_dump_load": "pickles Memory and cached functions (see the README)",
    "TestMemorizedFunc.test_call_method_not_memorized": _CLASSES,
    "TestAutoGitignore": "expects a .gitignore with joblib's own text in the cache folder",
    "test_memory_integration_async": "passes compress= (dagnb's store chooses its own format)",
    "test_memory_numpy_check_mmap_mode_async": _INTERNALS.format("store_backend.get_items"),
    "test_call_and_shelve_async": _CLASSES,
}
"""joblib tests that do not run, and why."""


@pytest.fixture(autouse=True)
def joblib_memory_is_dagnbs(monkeypatch):
    """``Memory`` in joblib's test modules (and ``joblib.Memory``) is dagnb's here."""
    import joblib

    for module in (_joblib, _joblib_async, joblib):
        monkeypatch.setattr(module, "Memory", dagnb.Memory)


def _unmarked(func: types.FunctionType) -> types.FunctionType:
    """joblib's test function without joblib's own pytest marks (thread_unsafe, ...),
    which this project's --strict-markers does not know; its globals stay joblib's, so
    the patched ``Memory`` is the one it sees."""
    copy = types.FunctionType(
        func.__code__, func.__globals__, func.__name__, func.__defaults__, func.__closure__
    )
    kept = [m for m in getattr(func, "pytestmark", []) if m.name in ("parametrize", "skipif")]
    if kept:
        copy.pytestmark = kept  # type: ignore[attr-defined]
    return copy


def _run_async(func: types.FunctionType) -> types.FunctionType:
    """An async joblib test as a sync one (this project runs no asyncio plugin)."""
    parameters = list(inspect.signature(func).parameters)

    def run(**fixtures: object) -> None:
        asyncio.run(func(**fixtures))

    run.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
        [inspect.Parameter(p, inspect.Parameter.KEYWORD_ONLY) for p in parameters]
    )
    run.__name__ = func.__name__
    return run  # type: ignore[return-value]


for _name in RUN:
    if _name.startswith("Test"):
        continue
    if hasattr(_joblib, _name):
        globals()[_name] = _unmarked(getattr(_joblib, _name))
    else:
        globals()[_name] = _run_async(getattr(_joblib_async, _name))

TestCacheValidationCallback = _joblib.TestCacheValidationCallback


class TestMemorizedFunc(_joblib.TestMemorizedFunc):
    """joblib's class with the NotMemorizedFunc test taken out (see LEFT_OUT)."""

    test_call_method_not_memorized = None


def _joblib_test_names() -> set[str]:
    names = set()
    for module in (_joblib, _joblib_async):
        for name, value in vars(module).items():
            if name.startswith("test") and inspect.isfunction(value):
                if value.__module__ == module.__name__:
                    names.add(name)
            elif name.startswith("Test") and inspect.isclass(value):
                names.add(name)
    return names


def test_every_joblib_memory_test_is_run_or_left_out_with_a_reason():
    sorted_out = {name.partition(".")[0] for name in (*RUN, *LEFT_OUT)}
    assert _joblib_test_names() - sorted_out == set()
    assert not set(RUN) & set(LEFT_OUT)
    assert all(reason for reason in LEFT_OUT.values())


def test_joblib_tests_see_dagnbs_memory():
    assert _joblib.Memory is dagnb.Memory and _joblib_async.Memory is dagnb.Memory


# -- joblib's tests of internals, rewritten on the public surface ------------------------
# Each says which joblib test it stands in for; they assert joblib's documented meaning.


def f(x, y=1):
    return x**2 + y


@pytest.mark.parametrize("consider_cache_valid", [True, False])
def test_check_call_in_cache_follows_the_validation_callback(tmp_path, consider_cache_valid):
    """joblib's test_check_call_in_cache, without MemorizedFunc."""
    func = dagnb.Memory(tmp_path, verbose=0).cache(
        f, cache_validation_callback=lambda _: consider_cache_valid
    )
    assert func.check_call_in_cache(2) is False
    assert func(2) == 5
    assert func.check_call_in_cache(2) is consider_cache_valid
    func.clear()
    assert func.check_call_in_cache(2) is False


@pytest.mark.parametrize("location", ["cache", None])
def test_call_and_shelve_gives_a_handle_that_gets_and_clears(tmp_path, location):
    """joblib's test_call_and_shelve, without MemorizedFunc/NotMemorizedFunc."""
    memory = dagnb.Memory(None if location is None else tmp_path / location, verbose=0)
    func = memory.cache(f)
    assert func(2) == 5
    result = func.call_and_shelve(2)
    assert result.get() == 5
    result.clear()
    with pytest.raises(KeyError):
        result.get()
    result.clear()  # nothing left: nothing happens


def test_call_and_shelve_runs_a_missing_call_once_and_loads_lazily(tmp_path):
    calls = []

    def g(x):
        calls.append(x)
        return [x] * 3

    func = dagnb.Memory(tmp_path).cache(g)
    handle = func.call_and_shelve(4)
    assert calls == [4] and "ShelvedResult(" in repr(handle)
    assert func.call_and_shelve(4).get() == [4, 4, 4] and calls == [4]


def test_async_call_and_shelve(tmp_path):
    """joblib's test_call_and_shelve_async, without AsyncMemorizedFunc."""

    async def h(x, y=1):
        return x**2 + y

    func = dagnb.Memory(tmp_path).cache(h)

    async def main():
        return await func.call_and_shelve(2)

    result = asyncio.run(main())
    assert result.get() == 5
    result.clear()
    with pytest.raises(KeyError):
        result.get()


def test_mmap_mode_maps_numpy_results_from_the_first_call(tmp_path):
    """joblib's test_memory_numpy_check_mmap_mode, without store_backend internals."""
    np = pytest.importorskip("numpy")
    memory = dagnb.Memory(tmp_path, mmap_mode="r", verbose=0)

    @memory.cache()
    def twice(a):
        return {"doubled": a * 2}

    first, again = twice(np.ones(3)), twice(np.ones(3))
    for result in (first, again):
        assert isinstance(result["doubled"], np.memmap) and result["doubled"].mode == "r"
        assert result["doubled"].tolist() == [2.0, 2.0, 2.0]
    unmapped = dagnb.Memory(tmp_path).cache(twice.func)(np.ones(3))["doubled"]
    assert not isinstance(unmapped, np.memmap)  # the same entry, read without mmap_mode


def test_a_callable_whose_signature_inspect_cannot_read_is_keyed_by_its_arguments(tmp_path):
    """joblib caches max and operator.itemgetter(0); inspect reads no signature of them."""
    memory = dagnb.Memory(tmp_path)
    row = ("first", "second")
    first, second = memory.cache(operator.itemgetter(0)), memory.cache(operator.itemgetter(1))
    assert [first(row), second(row), first(row)] == ["first", "second", "first"]
    assert first.check_call_in_cache(row) and not first.check_call_in_cache(("other",))
    largest = memory.cache(max)
    assert [largest(1, 3), largest(3, 1), largest([2, 5]), largest([], default=7)] == [3, 3, 5, 7]
    assert largest.check_call_in_cache(3, 1) and not largest.check_call_in_cache(1, 2)


def test_caching_a_cached_function_caches_its_function_with_the_new_options(tmp_path):
    """As joblib re-caches a MemorizedFunc's func: the new callback, ignore= and
    mmap_mode= apply, not the first wrapper's."""
    memory, calls = dagnb.Memory(tmp_path), []

    @memory.cache
    def add(x):
        calls.append(x)
        return x + 1

    add(1)
    refusing = memory.cache(add, cache_validation_callback=lambda metadata: False)
    assert refusing.func is add.func
    assert [refusing(1), refusing(1), add(1)] == [2, 2, 2]
    assert calls == [1, 1, 1]  # each stored call refused, as the callback says


def test_mmap_mode_keeps_for_repeat_hits_only_what_no_caller_can_change(tmp_path):
    """As joblib's, each hit on a dict or a list is loaded anew (a caller that changes one
    changes no later hit), and so is an array read from an entry stored without
    mmap_mode, which is not mapped; an array mapped read-only is kept."""
    np = pytest.importorskip("numpy")
    mapped = dagnb.Memory(tmp_path, mmap_mode="r")

    @mapped.cache
    def load(n):
        return {"array": np.arange(n), "label": "fresh"}, [1, 2]

    for _ in range(2):  # the miss's result, then a hit's
        labelled, listed = load(3)
        labelled["label"] = "changed"
        listed.append(99)
    assert load(3)[0]["label"] == "fresh" and load(3)[1] == [1, 2]

    def zeros(n):
        return np.zeros(n)

    dagnb.Memory(tmp_path).cache(zeros)(5000)  # stored without mmap_mode
    zeros_mapped = mapped.cache(zeros)
    zeros_mapped(5000)[0] = 42.0
    assert zeros_mapped(5000)[0] == 0.0

    @mapped.cache
    def ramp(n):
        return np.arange(n)

    assert ramp(3) is ramp(3) and not ramp(3).flags.writeable


def test_mmap_mode_is_checked():
    with pytest.raises(dagnb.ConfigError, match=r"mmap_mode='rw' is not valid; use None, 'r\+'"):
        dagnb.Memory(None, mmap_mode="rw")


class _Grid:
    def __repr__(self):
        return "1 2\n3 4"  # (a frame's or an array's repr is lines)


@pytest.mark.parametrize(("location", "shown"), [
    (123, "123"), (b"cache", "b'cache'"), (_Grid(), "<_Grid>")])
def test_a_location_that_is_no_path_is_one_line_naming_what_it_takes(location, shown):
    with pytest.raises(dagnb.ConfigError) as refused:
        dagnb.Memory(location)
    assert str(refused.value) == (
        f"Memory(location={shown}) is not a location; it takes a folder path, a store URL "
        "(s3://bucket/cache), or None to cache nothing")


def _toy_cache(tmp_path, count=10):
    memory = dagnb.Memory(tmp_path, verbose=0)

    @memory.cache()
    def get_1000_bytes(arg):
        return "a" * 1000

    for arg in range(count):
        get_1000_bytes(arg)
    return memory, get_1000_bytes


def _kept(func, count=10):
    return [arg for arg in range(count) if func.check_call_in_cache(arg)]


def test_reduce_size_bytes_and_items_limits_keep_the_most_recently_used(tmp_path):
    """joblib's test_memory_reduce_size_bytes_limit and _items_limit, on the public
    surface."""
    memory, func = _toy_cache(tmp_path)
    assert memory.reduce_size() == 0 and len(_kept(func)) == 10  # no limit: nothing
    memory.reduce_size(bytes_limit="1M")
    assert len(_kept(func)) == 10
    # an entry counts what it takes on disk, as joblib's do (its result's 1002 bytes and
    # its metadata: 1.7K here, with the function's code; joblib's test keeps two under
    # "3K", its entries 1.2K)
    memory.reduce_size(bytes_limit="3.5K")
    assert _kept(func) == [8, 9]  # the most recently used
    memory.reduce_size(bytes_limit=500)
    assert _kept(func) == []
    memory, func = _toy_cache(tmp_path / "items")
    memory.reduce_size(items_limit=2)
    assert len(_kept(func)) == 2
    memory.reduce_size(items_limit=0)
    assert _kept(func) == []


def test_memory_bytes_limit_is_the_default_of_reduce_size(tmp_path):
    memory, func = _toy_cache(tmp_path)
    memory.bytes_limit = "3.5K"
    memory.reduce_size()
    assert len(_kept(func)) == 2


def test_reduce_size_age_limit(tmp_path, clock):
    """joblib's test_memory_reduce_size_age_limit, with an injected clock."""
    import datetime

    memory = dagnb.Memory(tmp_path, clock=clock)
    func = memory.cache(f)
    for arg in range(5):
        func(arg)
    clock.now += 10
    func(-1)
    func(-2)
    memory.reduce_size(age_limit=datetime.timedelta(days=1))
    assert len(_kept(func)) == 5
    memory.reduce_size(age_limit=datetime.timedelta(seconds=5))
    assert [a for a in range(-2, 5) if func.check_call_in_cache(a)] == [-2, -1]
    with pytest.raises(dagnb.DagnbError, match="has to be a positive"):
        memory.reduce_size(age_limit=datetime.timedelta(seconds=-1))
    memory.reduce_size(age_limit=datetime.timedelta(seconds=0))
    assert not func.check_call_in_cache(-1)


def test_verbose_prints_joblibs_lines(tmp_path, capsys):
    func = dagnb.Memory(tmp_path, verbose=1).cache(f)
    func(3)
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "_" * 80
    assert out[1].startswith("[Memory] Calling ") and out[1].endswith(".f...")
    assert out[2] == "f(3)"
    assert out[3].startswith("_") and out[3].endswith("0.0min") and len(out[3]) == 80
    func(3)
    assert capsys.readouterr().out == ""  # a hit says nothing at verbose=1
    func.clear()
    assert "[Memory] Clearing function cache identified by" in capsys.readouterr().out


def test_partials_and_callables_without_a_qualname_are_cached(tmp_path):
    import functools

    calls = []

    def scale(factor, x):
        calls.append((factor, x))
        return factor * x

    class Doubler:
        def __call__(self, x):
            calls.append(("doubler", x))
            return 2 * x

    memory = dagnb.Memory(tmp_path)
    triple, quadruple = memory.cache(functools.partial(scale, 3)), memory.cache(
        functools.partial(scale, 4)
    )
    assert [triple(2), triple(2), quadruple(2)] == [6, 6, 8]  # bound arguments are in the key
    doubler = memory.cache(Doubler())
    assert [doubler(5), doubler(5)] == [10, 10]
    assert calls == [(3, 2), (4, 2), ("doubler", 5)]
    assert triple.func.func is scale and triple.store_name.endswith("scale.partial")
    assert doubler.store_name.endswith("Doubler")


def test_call_returns_result_and_joblibs_metadata(tmp_path, clock):
    func = dagnb.Memory(tmp_path, clock=clock).cache(f, ignore=["y"])
    value, metadata = func.call(3, y=2)
    assert value == 11
    assert set(metadata) == {"duration", "input_args", "time"}
    assert metadata["input_args"] == {"x": "3"}


# -- handles, options and warnings, as joblib's behave ---------------------------------------
def test_a_handle_on_a_call_another_process_just_stored_gets_it(tmp_path, monkeypatch):
    """A joblib.Parallel worker that used the cache a moment ago gets a handle the parent
    made just now: the packs it read then lack the call, so get() reads them again
    before saying the result is gone. (A fresh dagnb context reads and writes packs of
    its own, as another process does.)"""
    cached = dagnb.Memory(tmp_path).cache(f)
    assert cached(1) == 2  # the packs read now
    with isolated():
        stored = dagnb.Memory(tmp_path).cache(f).call_and_shelve(2)
    monkeypatch.setattr(store_module, "_RECENT_S", 3600)  # the packs read "a moment ago"
    handle = ShelvedResult(cached.call_and_shelve.__self__, stored.args_id)  # (as sent here)
    assert handle.get() == 5
    handle.clear()
    with pytest.raises(KeyError, match="no longer in the cache"):
        handle.get()


SHELVING = """
import dagnb

memory = dagnb.Memory({location!r})


@memory.cache
def inc(x):
    return x + 1
"""


@pytest.fixture
def shelving(tmp_path, monkeypatch):
    """An importable module with a function cached at module level (its name, the cached
    function's), as a script or a package has."""
    (tmp_path / "shelving.py").write_text(SHELVING.format(location=str(tmp_path / "cache")))
    monkeypatch.syspath_prepend(str(tmp_path))
    yield importlib.import_module("shelving")
    sys.modules.pop("shelving", None)


def test_a_handle_of_a_function_cached_at_module_level_pickles_as_joblibs_does(shelving):
    """joblib's MemorizedResult pickles (a Pool's workers get it so); the function it
    caches is not found by its name, the cached function is."""
    handle = shelving.inc.call_and_shelve(5)
    sent = pickle.loads(pickle.dumps(handle))
    assert sent.get() == 6 and sent.args_id == handle.args_id and sent.func == handle.func
    sent.clear()
    with pytest.raises(KeyError):
        handle.get()


@pytest.mark.parametrize("make", [
    lambda where: dagnb.Memory(where, ttl="a day"),
    lambda where: dagnb.Memory(None, ttl="a day"),
    lambda where: dagnb.Memory(where, ttl="a day", cache_mode="off"),
    lambda where: dagnb.Memory(where, ttl="a day", cache_mode="fail-on-miss"),
    lambda where: dagnb.Memory(None).cache(ttl="a day")(f),
    lambda where: dagnb.Memory(where).cache(f, ttl="a day"),
], ids=["cached", "none", "off", "fail-on-miss", "none-cache", "cache"])
def test_a_bad_ttl_is_refused_up_front_whatever_the_cache(tmp_path, make):
    with pytest.raises(dagnb.ConfigError) as refused:
        make(tmp_path / "cache")
    assert str(refused.value) == ("ttl 'a day' is not a duration; use seconds or a number "
                                  "with ms, s, m, h, d or w such as '10m' or '1h30m', or 'never'")


def _lock(x):
    return threading.Lock()  # (no pickle takes it: the call runs, uncached, with a warning)


async def _alock(x):
    return threading.Lock()


@pytest.mark.parametrize("how", ["call", ".call", "call_and_shelve", "await"])
def test_a_call_not_cached_is_warned_of_at_the_callers_line(tmp_path, how):
    memory = dagnb.Memory(tmp_path)
    cached = memory.cache(_alock if how == "await" else _lock)

    async def awaiting():
        return await cached(1)

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        if how == "call":
            cached(1)
        elif how == ".call":
            cached.call(1)
        elif how == "call_and_shelve":
            cached.call_and_shelve(1)
        else:
            asyncio.run(awaiting())
    assert [w.filename for w in caught] == [__file__]
    assert "this call is not cached" in str(caught[0].message)


@pytest.mark.parametrize("make", [
    lambda where: dagnb.Memory(where, verbose="1"),
    lambda where: dagnb.Memory(None, verbose=0.5),
    lambda where: dagnb.Memory(where).cache(f, verbose="1"),
], ids=["text", "float", "cache"])
def test_a_verbose_that_is_no_whole_number_is_refused_in_one_line(tmp_path, make):
    with pytest.raises(dagnb.ConfigError, match=r"^(Memory|\.cache)\(verbose=") as bad:
        make(tmp_path)
    assert str(bad.value).endswith(
        ") is not valid: verbose is an int, such as 0 (silent) or 1 (each call that runs)")


def test_a_verbose_given_as_a_bool_or_a_numpy_int_is_joblibs_int(tmp_path):
    np = pytest.importorskip("numpy")
    assert dagnb.Memory(tmp_path, verbose=True).verbose == 1
    assert dagnb.Memory(tmp_path).cache(f, verbose=np.int64(0))(1) == 2


@pytest.mark.parametrize("inside", [False, True])
def test_a_location_that_is_a_file_says_so(tmp_path, inside):
    (tmp_path / "notes").write_text("x")
    location = tmp_path / "notes" / "cache" if inside else tmp_path / "notes"
    with pytest.raises(dagnb.CacheError) as refused:
        dagnb.Memory(location)
    assert str(refused.value).endswith(
        f"{str(tmp_path / 'notes')!r} is a file, not a folder; pass a folder path")
