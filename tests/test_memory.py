from __future__ import annotations

import asyncio
import functools
import importlib
import inspect
import io
import os
import pickle
import shutil
import subprocess
import sys
import textwrap
import threading
import warnings

import numpy as np
import pandas as pd
import pytest

from dagnb.cache.memory import Memory
from dagnb.cache.store import Store
from dagnb.errors import DagnbError, FingerprintError
from dagnb.testing import isolated


@pytest.fixture
def memory(tmp_path, clock) -> Memory:
    return Memory(str(tmp_path / "cache"), clock=clock)


def test_sync_function_runs_once_per_arguments(memory):
    calls = []

    @memory.cache
    def add(x: int, y: int = 2) -> int:
        """Add."""
        calls.append((x, y))
        return x + y

    assert add(1) == 3
    assert add(1) == 3
    assert add(1, 2) == 3 and add(x=1, y=2) == 3  # defaults and keywords bind alike
    assert add(2) == 4
    assert calls == [(1, 2), (2, 2)]
    assert add.__name__ == "add" and add.__doc__ == "Add."
    assert inspect.signature(add) == inspect.signature(add.__wrapped__)
    assert list(inspect.signature(add).parameters) == ["x", "y"]


def test_async_function_is_cached_and_stays_async(memory):
    calls = []

    @memory.cache(ignore=["verbose"])
    async def fetch(url: str, verbose: bool = False) -> dict:
        calls.append(url)
        await asyncio.sleep(0)
        return {"url": url}

    assert inspect.iscoroutinefunction(fetch)

    async def main():
        return [await fetch("a"), await fetch("a", verbose=True), await fetch("b")]

    assert asyncio.run(main()) == [{"url": "a"}, {"url": "a"}, {"url": "b"}]
    assert calls == ["a", "b"]
    assert fetch.check_call_in_cache("a", verbose=True)


def test_async_functions_are_told_from_sync_ones_however_they_come(memory):
    async def double(x):
        return 2 * x

    async def tagged(x):
        return 3 * x

    tagged.tag = "with attributes: inspect decides"

    def plain(x):
        return 4 * x

    wrapped = [memory.cache(f) for f in (double, functools.partial(double), tagged, plain)]
    assert [inspect.iscoroutinefunction(w) for w in wrapped] == [True, True, True, False]

    async def main():
        return [await w(1) for w in wrapped[:3]]

    assert asyncio.run(main()) == [2, 2, 3] and wrapped[3](1) == 4


def test_call_check_and_clear(memory):
    calls = []

    @memory.cache
    def square(x):
        calls.append(x)
        return x * x

    assert not square.check_call_in_cache(3)
    assert calls == []  # checking runs nothing
    square(3)
    assert square.check_call_in_cache(3)
    assert square.call(3)[0] == 9  # forced (joblib: result and metadata)
    assert calls == [3, 3]
    square.clear()
    assert not square.check_call_in_cache(3)
    square(3)
    memory.clear()
    assert not square.check_call_in_cache(3)


def test_ttl_with_injected_clock(memory, clock):
    calls = []

    @memory.cache(ttl="1m")
    def now(x):
        calls.append(x)
        return len(calls)

    assert now(1) == 1 and now(1) == 1
    clock.now += 61
    assert not now.check_call_in_cache(1)
    assert now(1) == 2


@pytest.mark.parametrize("later", [{"ttl": "1m"}, {"cache": {"ttl": "1m"}}],
                         ids=["memory-ttl", "function-ttl"])
@pytest.mark.parametrize("first_ttl", [None, "1d"])
def test_a_ttl_set_later_applies_to_entries_saved_before_it(tmp_path, clock, later,
                                                            first_ttl):
    calls = []

    def now(x):
        calls.append(x)
        return len(calls)

    before = Memory(str(tmp_path / "cache"), ttl=first_ttl, clock=clock).cache(now)
    assert before(1) == 1 and before(1) == 1
    clock.now += 61
    memory = Memory(str(tmp_path / "cache"), ttl=later.get("ttl"), clock=clock)
    cached = memory.cache(now, **later.get("cache", {}))
    assert not cached.check_call_in_cache(1)
    assert cached(1) == 2  # older than the ttl it has now: run again, not served
    assert cached(1) == 2 and calls == [1, 1]


def test_a_ttl_that_finds_an_entry_too_old_leaves_it_to_callers_without_one(tmp_path, clock):
    """Only its own ttl removes an entry: a caller with a shorter one misses, and a run
    or process using the entry meanwhile (no ttl) still has it."""
    calls = []

    def now(x):
        calls.append(x)
        if len(calls) > 1:
            raise RuntimeError("the source is offline")
        return x

    kept = Memory(str(tmp_path / "cache"), clock=clock).cache(now)
    assert kept(1) == 1
    clock.now += 61
    strict = Memory(str(tmp_path / "cache"), ttl="1m", clock=clock).cache(now)
    with pytest.raises(RuntimeError):
        strict(1)  # too old for it: a miss, computed again (and failing here)
    assert kept.check_call_in_cache(1) and kept(1) == 1


def test_repeat_hit_returns_the_loaded_result_until_the_entry_changes(memory):
    @memory.cache
    def numbers(n):
        return tuple(range(n))  # (nobody can change it: kept for repeat hits)

    first = numbers(1000)  # too big to be inline: a folder entry
    assert numbers(1000) is first  # no unpickling on a repeat hit
    entry = memory.store.lookup(numbers.store_name, memory.store.newest(numbers.store_name).key)
    shutil.rmtree(entry.path)  # removed behind our back: noticed with one stat
    again = numbers(1000)
    assert again is not first and again == first


def test_repeat_hit_on_a_packed_entry_is_the_same_object_until_it_is_removed(memory):
    @memory.cache
    def numbers(n):
        return tuple(range(n))

    first = numbers(3)  # small: a pack record
    assert numbers(3) is first
    other = Store(memory.store.location)  # another store of the folder, this process
    assert other.remove(numbers.store_name, other.newest(numbers.store_name).key)
    again = numbers(3)
    assert again is not first and again == first


@pytest.mark.parametrize("rows", [3, 1000])  # a pack record, a folder entry
def test_a_result_its_caller_changes_changes_no_later_hit(memory, rows):
    """As with joblib, each hit on a frame, a list or a dict is a new object."""
    @memory.cache
    def frame(n):
        return pd.DataFrame({"a": np.arange(n)})

    @memory.cache
    def settings(n):
        return {"rows": [1, 2], "n": n}

    for _ in range(2):  # the miss's result, then a hit's
        got = frame(rows)
        got["b"] = 1
        got.iloc[0, 0] = -1
        listed = settings(rows)
        listed["rows"].append(99)
    assert list(frame(rows).columns) == ["a"] and frame(rows)["a"].iloc[0] == 0
    assert settings(rows) == {"rows": [1, 2], "n": rows}


def test_results_survive_a_new_memory(tmp_path, clock):
    calls = []

    def build():
        memory = Memory(str(tmp_path / "c"), clock=clock)

        @memory.cache
        def compute(values):
            calls.append(1)
            return {"sum": float(np.sum(values)), "tuple": (1, 2)}

        return compute

    data = np.arange(10.0)
    assert build()(data) == {"sum": 45.0, "tuple": (1, 2)}
    assert build()(data) == {"sum": 45.0, "tuple": (1, 2)}
    assert len(calls) == 1


def test_dataframe_arguments_hash_by_content(memory):
    calls = []

    @memory.cache
    def total(df):
        calls.append(1)
        return float(df["a"].sum())

    df = pd.DataFrame({"a": [1.0, 2.0]})
    assert total(df) == 3.0 and total(df.copy()) == 3.0
    assert total(pd.DataFrame({"a": [1.0, 5.0]})) == 6.0
    assert len(calls) == 2


def test_equal_frames_of_text_read_or_rebuilt_run_once(memory):
    """read_csv shares a string object between equal values; a frame rebuilt from them
    does not: equal frames, and one run (joblib's too)."""
    calls = []

    @memory.cache
    def count(frame):
        calls.append(1)
        return frame.groupby("city")["n"].sum().to_dict()

    cities = ["paris", "lyon", "paris", "nice", "lyon"] * 20
    csv = "city,n\n" + "".join(f"{city},{n}\n" for n, city in enumerate(cities))
    read = pd.read_csv(io.StringIO(csv))
    rebuilt = pd.DataFrame({"city": ["".join(list(c)) for c in cities], "n": read["n"]})
    for frame in (read, rebuilt, pickle.loads(pickle.dumps(rebuilt))):
        assert count(frame) == count(read)

    @memory.cache
    def length(texts):
        calls.append(2)
        return len(texts)

    for texts in (cities, ["".join(list(city)) for city in cities]):
        assert length(np.array(texts, dtype=object)) == 100
    assert calls == [1, 2]


class _Client:
    """A connection-like object: a lock inside, so it cannot be pickled."""

    def __init__(self, url: str) -> None:
        self.url, self.lock = url, threading.Lock()


@pytest.mark.parametrize("call", [
    lambda fetch: fetch(_Client("http://a"), 1),            # by position: every hit's path
    lambda fetch: fetch(n=1, client=_Client("http://a")),   # by keyword: bound
])
def test_an_unhashable_argument_is_named_with_the_ignore_that_works_as_written(memory, call):
    def fetch(client, n):
        return f"{client.url}/{n}"

    with pytest.raises(FingerprintError, match=r"^fetch: argument 'client' cannot be "
                       r"fingerprinted \(a '.*_Client': cannot pickle '_thread\.lock' object\); "
                       r"leave it out of the key with @memory\.cache\(ignore=\['client'\]\)"):
        call(memory.cache(fetch))
    assert call(memory.cache(ignore=["client"])(fetch)) == "http://a/1"  # the fix, copied


def test_unhashable_argument_and_ignore(memory):
    @memory.cache
    def locked(lock, x):
        return x

    with pytest.raises(FingerprintError, match=r"_thread\.lock"):
        locked(threading.Lock(), 1)

    @memory.cache(ignore=["lock"])
    def ignoring(lock, x):
        return x

    assert ignoring(threading.Lock(), 1) == 1
    with pytest.raises(DagnbError, match=r"ignore=\['nope'\] names no parameter"):
        memory.cache(ignore=["nope"])(lambda x: x)


def test_a_call_that_does_not_fit_names_the_function(memory):
    """``Signature.bind``'s words ("too many positional arguments") named no function."""

    def load(path, *, sep=","):
        return path

    cached = memory.cache(load)
    with pytest.raises(TypeError, match=r"^load\(\): too many positional arguments$"):
        cached("a.csv", ";")
    with pytest.raises(TypeError, match=r"^load\(\): missing a required argument: 'path'$"):
        cached()


def test_ignore_given_as_a_string_is_refused_not_read_as_its_letters(memory):
    """``ignore="xy"``: as a list, its letters; ``x`` and ``y`` left out of the key, every
    call was a hit on the first (joblib refuses it, a ValueError)."""

    def area(x, y, xy=1.0):
        return x * y * xy

    with pytest.raises(ValueError, match=r"ignore='xy' is a string, not a list of "
                                         r"parameter names; write ignore=\['xy'\]"):
        memory.cache(ignore="xy")(area)
    scaled = memory.cache(ignore=["xy"])(area)
    assert (scaled(2, 3), scaled(4, 5)) == (6, 20)  # x and y count


def test_an_ignored_name_that_is_no_parameter_is_a_value_error_as_in_joblib(memory):
    with pytest.raises(ValueError, match=r"ignore=\['nope'\] names no parameter of "
                                         r"<lambda>; choose among its parameters \['x'\]"):
        memory.cache(ignore=["nope"])(lambda x: x)


SOURCE = '''
FACTOR = 2

def work(x):
    """Doc."""
    return x * FACTOR
'''


def test_code_edits_invalidate_but_comments_do_not(memory, tmp_path, monkeypatch):
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # (edits of one size in one
    monkeypatch.syspath_prepend(str(tmp_path))              # second: no stale .pyc)
    path = tmp_path / "mem_mod.py"
    path.write_text(textwrap.dedent(SOURCE))
    module = importlib.import_module("mem_mod")
    cached = memory.cache(module.work)
    assert cached(3) == 6
    path.write_text(textwrap.dedent(SOURCE).replace('"""Doc."""', "# comment only"))
    importlib.reload(module)
    assert memory.cache(module.work).check_call_in_cache(3)
    path.write_text(textwrap.dedent(SOURCE).replace("x * FACTOR", "x * FACTOR + 1"))
    importlib.reload(module)
    assert not memory.cache(module.work).check_call_in_cache(3)
    assert memory.cache(module.work)(3) == 7
    del sys.modules["mem_mod"]


def test_reduce_size(memory, clock):
    @memory.cache
    def ident(x):
        return x

    for n in range(4):
        clock.now += 1
        ident(n)
    assert memory.reduce_size(items_limit=1) == 3
    assert ident.check_call_in_cache(3)
    assert not ident.check_call_in_cache(0)


def test_step_name_is_module_and_qualname(memory):
    @memory.cache
    def inner(x):
        return x

    expected = "test_memory.test_step_name_is_module_and_qualname.locals.inner"
    assert inner.store_name.endswith(expected)
    assert "." in inner.store_name  # never collides with a step name


# ----------------------------------------------------------------------------- review


def _returns_a_set(x):
    return {x, x + 1}


def _returns_a_frozenset(x):
    return frozenset({x, x + 1})


def _returns_a_big_set(x):
    """A result too big to live in the entry's metadata: it gets a result file."""
    return {x, x + 1, *range(1000, 2000)}


def test_a_damaged_result_is_a_miss_not_an_exception(tmp_path):
    from dagnb.cache import DamagedEntryWarning

    Memory(str(tmp_path)).cache(_returns_a_big_set)(3)
    [pkl] = tmp_path.glob("*/*/out/result.pkl")
    pkl.write_bytes(b"\x80\x05" + b"?" * (pkl.stat().st_size - 2))  # same size, unreadable
    again = Memory(str(tmp_path)).cache(_returns_a_big_set)
    with pytest.warns(DamagedEntryWarning, match="result.pkl was changed since it was saved"):
        assert again(3) == _returns_a_big_set(3)
    assert again(3) == _returns_a_big_set(3) and pkl.exists()  # saved again in place
    assert len(list((tmp_path / ".damaged").iterdir())) == 1


def test_a_truncated_file_under_a_finished_entry_is_a_miss_by_its_size(tmp_path):
    """What a power loss can leave (nothing is fsync'ed): caught by the recorded sizes."""
    from dagnb.cache import DamagedEntryWarning

    Memory(str(tmp_path)).cache(_returns_a_big_set)(3)
    [pkl] = tmp_path.glob("*/*/out/result.pkl")
    with pkl.open("r+b") as handle:
        handle.truncate(5)
    again = Memory(str(tmp_path)).cache(_returns_a_big_set)
    with pytest.warns(DamagedEntryWarning, match=r"out/result\.pkl is 5 bytes, not the"):
        assert again(3) == _returns_a_big_set(3)
    assert again(3) == _returns_a_big_set(3)


def test_an_unpicklable_result_is_returned_uncached_and_leaves_no_scratch(tmp_path):
    memory = Memory(str(tmp_path))

    @memory.cache
    def make_lambda(x):
        return lambda: x

    with pytest.warns(UserWarning, match=r"make_lambda.* result cannot be stored"):
        assert make_lambda(1)() == 1
    assert not list((tmp_path / ".scratch").iterdir())
    assert not make_lambda.check_call_in_cache(1)


@pytest.mark.parametrize("mmap_mode", [None, "r"])
def test_an_entry_removed_by_another_process_as_it_is_saved_costs_no_result(
        tmp_path, monkeypatch, mmap_mode):
    memory = Memory(str(tmp_path), mmap_mode=mmap_mode)
    calls = []

    @memory.cache
    def big(i):
        calls.append(i)
        return np.full(20_000, i)  # a folder entry

    backend = memory.store.backend
    write = type(backend).write

    def written_then_trimmed(self, step, key, folder, **options):
        write(self, step, key, folder, **options)
        self.remove(step, key)  # another process's reduce_size(), at that moment

    monkeypatch.setattr(type(backend), "write", written_then_trimmed)
    with pytest.warns(UserWarning, match=r"big: the call ran but was not cached: .*vanished"):
        assert big(1).tolist() == [1] * 20_000
    monkeypatch.undo()
    assert big(1).tolist() == [1] * 20_000 and calls == [1, 1]  # a miss, run again
    assert big(1).tolist() == [1] * 20_000 and calls == [1, 1]


def test_a_store_that_cannot_be_written_costs_no_result(tmp_path, monkeypatch):
    memory = Memory(str(tmp_path))

    @memory.cache
    def small(i):
        return i * 2

    def full(*_args, **_kwargs):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(memory.store, "save", full)
    with pytest.warns(UserWarning, match="small: the call ran but was not cached: .*No space"):
        assert small(4) == 8
    assert not small.check_call_in_cache(4)


def test_loaded_results_kept_in_memory_are_bounded(tmp_path):
    from dagnb.cache import memory as memory_module

    cached = Memory(str(tmp_path)).cache(_returns_a_frozenset)
    for x in range(memory_module._LOADED_LIMIT + 50):
        cached(x)
    holder = cached.call.__self__  # (its calls object)
    assert len(holder.loaded) == memory_module._LOADED_LIMIT
    assert cached(memory_module._LOADED_LIMIT + 49) is cached(memory_module._LOADED_LIMIT + 49)


class _EvictedMeanwhile(dict):
    """Results kept in memory as a thread sees them when another one, hitting at the same
    moment, drops the oldest between its look and its own drop of it."""

    def __iter__(self):
        oldest = next(dict.__iter__(self))
        del self[oldest]
        return iter([oldest])


def test_threads_hitting_at_once_past_the_bound_get_their_results(tmp_path):
    """Threads hitting many small results at once: a hit that drops the oldest result
    kept in memory just after another thread dropped it raised KeyError (8 threads
    over 400 keys: 4 runs of 5), where joblib returns the result."""
    from dagnb.cache import memory as memory_module

    cached = Memory(str(tmp_path)).cache(_returns_a_frozenset)
    for x in range(memory_module._LOADED_LIMIT + 1):
        cached(x)
    holder = cached.call.__self__  # (its calls object)
    holder.loaded = _EvictedMeanwhile(holder.loaded)
    assert cached(0) == _returns_a_frozenset(0)  # a hit, loaded again: one dropped
    assert len(holder.loaded) <= memory_module._LOADED_LIMIT

    errors = []

    def hit(offset):
        try:
            for i in range(300):
                x = (i * 7 + offset) % (memory_module._LOADED_LIMIT + 1)
                assert cached(x) == _returns_a_frozenset(x)
        except Exception as exc:
            errors.append(exc)

    holder.loaded = {}
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=hit, args=(k,)) for k in range(4)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        sys.setswitchinterval(interval)
    assert errors == []


def test_processes_calling_one_key_at_once_compute_it_once(tmp_path):
    """A per-key lock, as the step cache has: N processes, one computation, N results."""
    script = tmp_path / "worker.py"
    script.write_text(
        "import os, sys, time\n"
        "import dagnb\n"
        "memory = dagnb.Memory(sys.argv[1])\n"
        "@memory.cache\n"
        "def slow(x):\n"
        "    with open(sys.argv[2], 'a') as log:\n"
        "        log.write(f'{os.getpid()}\\n')\n"
        "    time.sleep(0.5)\n"
        "    return x * 2\n"
        "while not os.path.exists(sys.argv[3]):\n"
        "    time.sleep(0.01)\n"
        "print(slow(21))\n"
    )
    runs, go = tmp_path / "runs.txt", tmp_path / "go"
    workers = [subprocess.Popen([sys.executable, str(script), str(tmp_path / "cache"),
                                 str(runs), str(go)], stdout=subprocess.PIPE, text=True)
               for _ in range(4)]
    go.touch()
    outputs = [w.communicate(timeout=60)[0].strip() for w in workers]
    assert outputs == ["42"] * 4
    assert len(runs.read_text().split()) == 1


def test_plain_signatures_bind_as_python_does(memory):
    calls = []

    @memory.cache
    def scale(x: int, factor: int = 2, *, label: str = "") -> int:  # keyword-only: bind()
        calls.append((x, factor, label))
        return x * factor

    @memory.cache
    def add(x: int, y: int = 2) -> int:
        calls.append((x, y))
        return x + y

    assert [add(1, 2), add(1), add(x=1), add(y=2, x=1), add(1, y=2)] == [3] * 5
    assert scale(3) == scale(3, factor=2) == 6
    assert calls == [(1, 2), (3, 2, "")]
    for bad_args, bad_kwargs in (((1, 2, 3), {}), ((), {}), ((1,), {"x": 1}), ((1,), {"z": 0})):
        with pytest.raises(TypeError):
            add(*bad_args, **bad_kwargs)


def test_a_small_result_lives_in_the_entrys_metadata_and_a_torn_one_is_a_miss(tmp_path):
    from dagnb.cache import DamagedEntryWarning

    calls = []

    def small(x):
        calls.append(x)
        return {"x": x} if x else {x, x + 1}  # JSON as is, or pickled

    writer = Memory(str(tmp_path))
    first = writer.cache(small)
    assert first(1) == {"x": 1} and first(0) == {0, 1}
    assert not list(tmp_path.glob("*/*/out/*"))  # no result file to create or open
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # a pack
    writer.store.close()  # as a process that ended
    with isolated():  # a new process: the packs are read again
        again = Memory(str(tmp_path)).cache(small)
        assert again(1) == {"x": 1} and again(0) == {0, 1} and calls == [1, 0]
    (pack,) = tmp_path.glob(".packs/*.pack")
    with pack.open("r+b") as handle:  # what a power loss can leave of it
        handle.truncate(20)
    with isolated():
        third = Memory(str(tmp_path)).cache(small)
        with pytest.warns(DamagedEntryWarning):
            assert third(1) == {"x": 1} and third(0) == {0, 1}
    assert calls == [1, 0, 1, 0]


def test_a_plain_functions_parameters_are_read_from_its_code_as_inspect_reads_them():
    from dagnb.cache.call_keys import CallKeys, plain_parameters

    def f(a, b=2, c=None):
        return a

    def g(a, *rest, key=1):
        return a

    names, defaults = plain_parameters(f)
    signature = inspect.signature(f)
    assert names == tuple(signature.parameters) and defaults == {"b": 2, "c": None}
    assert plain_parameters(g) is None and CallKeys(g, []).names is None
    keys = CallKeys(f, ["c"])
    assert keys.arguments((1,), {"c": 5}) == {"a": 1, "b": 2}
    with pytest.raises(TypeError):
        keys.arguments((), {"b": 1})  # a missing argument: bind()'s error


def test_a_calls_key_from_its_template_is_the_key_of_its_components():
    """Every call's digest (the template's, for arguments given by position) is the
    digest of the components explain shows: whatever the parameters, their names, the
    way the call is spelled, ignored parameters."""
    from dagnb.cache.call_keys import CallKeys
    from dagnb.cache.keys import key_digest

    def none():
        return 0

    def two(x, name="n"):
        return x

    def braces(code, format, arg, zz, a_b):  # names that sort around code and format
        return code

    def rest(a, *more, key=1):
        return a

    calls = [
        (none, [], [((), {})]),
        (two, [], [((1, "a"), {}), ((1,), {}), ((), {"x": 1, "name": "a"}), ((2, "{0}"), {})]),
        (two, ["name"], [((1, "a"), {}), ((1, "b"), {})]),
        (braces, [], [((1, 2.5, None, "{}", b"{1}"), {}), ((1, 2, 3, 4), {"a_b": 5})]),
        (rest, [], [((1, 2, 3), {"key": 4}), ((1,), {})]),
    ]
    for func, ignore, spellings in calls:
        keys = CallKeys(func, ignore)
        for args, kwargs in spellings:
            assert keys.digest(args, kwargs) == key_digest(keys.components(args, kwargs))
    two_keys = CallKeys(two, [])
    assert two_keys.template is not None  # the fast path is the one taken above
    assert two_keys.digest((1, "a"), {}) == two_keys.digest((), {"x": 1, "name": "a"})
    assert two_keys.digest((1, "a"), {}) != two_keys.digest((1, "b"), {})
    assert CallKeys(two, ["name"]).template is None and CallKeys(rest, []).template is None


@pytest.mark.parametrize("start_method", ["spawn", "forkserver"])
def test_a_script_s_workers_started_anew_hit_what_the_script_stored(tmp_path, start_method):
    """A spawn or forkserver worker (macOS's and Windows' default; Linux's from Python
    3.14) imports the script as ``__mp_main__``: its cached functions and callable
    objects, the functions passed to them and the instances of its classes are the
    script's, so the worker finds the entries the script stored rather than computing
    them again under other names."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import dataclasses, multiprocessing, sys
        import numpy as np
        import dagnb

        memory = dagnb.Memory(sys.argv[1])

        def ran(what):
            with open(sys.argv[2], "a") as runs:
                runs.write(what + "\\n")

        class Scale:
            def __call__(self, x):
                ran(f"scale {x}")
                return 3 * x

        def square(x):
            ran(f"square {x}")
            return x * x

        def apply(f, x):
            ran(f"apply {x}")
            return f(x) + 1

        @dataclasses.dataclass
        class Config:
            scale: int
            names: list

        def configured(config, x):
            ran(f"configured {x} {type(config).__name__}")  # (reads a __name__)
            return config.scale * x

        @dataclasses.dataclass
        class Node:
            next: object

        def deep(chain, x):
            return x  # (deeper than the Python pickler goes: may run again, never fails)

        cached = (memory.cache(square), memory.cache(Scale()), memory.cache(apply),
                  memory.cache(configured), memory.cache(deep))
        chain = None
        for _ in range(250):
            chain = Node(chain)

        def work(x):
            return (cached[0](x), cached[1](x), cached[2](square, x),
                    cached[3](Config(2, ["a", Scale, square]), x),
                    cached[3](Config(3, [{"inner": Config(1, [])}]), x),
                    cached[3](Config(4, [np.arange(3.0), np.ones((2, 2))]), x),
                    cached[4](chain, x))

        cached[3](Config(5, [square]), 10)  # in the script, then in each worker as it
        #                                     imports the script (__main__ is not it yet)

        @memory.cache
        def role(x):  # (reads the module's name: "__mp_main__" in a worker, not a key alike)
            return "script" if __name__ == "__main__" else "imported"

        if __name__ == "__main__":
            here = [work(x) for x in range(3)]
            assert role(0) == "script"
            context = multiprocessing.get_context(sys.argv[3])
            with context.Pool(2) as pool:
                assert pool.map(work, range(3)) == here, here
                assert pool.map(role, [0, 0]) == ["imported"] * 2
            print(*(f.store_name for f in cached))
    """))
    runs = tmp_path / "runs.txt"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "cache"), str(runs),
                           start_method], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    names = done.stdout.split()  # (a script's functions: named after its file)
    assert [name.split(".", 1)[1] for name in names] == [
        "square", "Scale", "apply", "configured", "deep"]
    assert {name.split(".", 1)[0] for name in names} == {names[0].split(".", 1)[0]}
    assert names[0].startswith("__main__-script-"), names
    # (apply runs square itself, not the cached one: once more each, in the script)
    ran_once = [f"{what} {x}" for what in ("square", "scale", "apply", "square")
                for x in range(3)]
    ran_once += [f"configured {x} Config" for x in range(3) for _config in range(3)]
    assert sorted(runs.read_text().splitlines()) == sorted([*ran_once, "configured 10 Config"])


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_hits_in_fork_workers_that_end_normally_are_counted(tmp_path):
    """A ``multiprocessing`` fork worker ends with ``os._exit`` (no ``atexit``): the hits
    it counted are written as it ends, whether a ProcessPoolExecutor or a Pool closed
    and joined ends it, once each (the parent's hits not written yet at the fork are
    the parent's)."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import concurrent.futures, multiprocessing, sys
        import dagnb

        memory = dagnb.Memory(sys.argv[1])

        @memory.cache
        def square(x):
            return x * x

        def work(x):
            return square(x)

        if __name__ == "__main__":
            fork = multiprocessing.get_context("fork")
            assert [square(x) for x in range(4)] == [0, 1, 4, 9]  # stored
            assert square(0) == 0  # one hit of the script's, not written at the forks
            with concurrent.futures.ProcessPoolExecutor(2, mp_context=fork) as pool:
                assert list(pool.map(work, [0, 1, 2, 3] * 2)) == [0, 1, 4, 9] * 2
            pool = fork.Pool(2)
            assert pool.map(work, range(4)) == [0, 1, 4, 9]
            pool.close()
            pool.join()
    """))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    hits = Store(tmp_path / "cache").entries().set_index("key")["hits"]
    assert hits.sum() == 1 + 8 + 4 and len(hits) == 4


def test_a_cached_function_sent_by_cloudpickle_is_the_same_function_on_the_same_cache(
    tmp_path,
):
    """joblib.Parallel's and dask's workers get a function by cloudpickle, closure and
    all: there it is the same cached function, its store the worker's own; so is one
    of ``Memory(None)``. One on a backend object says why it cannot go."""
    cloudpickle = pytest.importorskip("cloudpickle")
    runs = tmp_path / "runs.txt"

    def double(x):
        with open(runs, "a") as log:
            log.write(f"{x}\n")
        return 2 * x

    cached = Memory(str(tmp_path / "cache")).cache(double, ignore=[])
    assert [cached(x) for x in range(3)] == [0, 2, 4]
    sent = cloudpickle.loads(cloudpickle.dumps(cached))
    assert sent is not cached and sent.store_name == cached.store_name
    assert [sent(x) for x in range(4)] == [0, 2, 4, 6]  # three hits, one miss
    assert runs.read_text().split() == ["0", "1", "2", "3"]
    assert sent.check_call_in_cache(3) and cached.check_call_in_cache(3)
    # a process that only passes it on (a dask scheduler) makes no cache folder
    elsewhere = Memory(str(tmp_path / "elsewhere")).cache(double)
    payload = cloudpickle.dumps(elsewhere)
    shutil.rmtree(tmp_path / "elsewhere")
    passed_on = cloudpickle.loads(cloudpickle.dumps(cloudpickle.loads(payload)))
    assert not (tmp_path / "elsewhere").exists()
    assert passed_on(7) == 14 and (tmp_path / "elsewhere").is_dir()
    assert cloudpickle.loads(cloudpickle.dumps(Memory(None).cache(double)))(5) == 10

    from dagnb.cache.backend import LocalBackend

    on_object = Memory(str(tmp_path / "b"), backend=LocalBackend(tmp_path / "b")).cache(double)
    with pytest.raises(TypeError, match="backend='local'"):
        cloudpickle.dumps(on_object)


def test_only_a_cached_function_sent_from_another_process_has_an_attribute_hook(tmp_path):
    """A call sent here makes its Memory when first used (``__getattr__``); one made
    here has no such hook: CPython 3.11 specializes no attribute read of a class with
    one, which cost each hit about 3% of its instructions."""
    cloudpickle = pytest.importorskip("cloudpickle")
    cached = Memory(str(tmp_path / "cache")).cache(_double)
    assert not hasattr(type(cached.check_call_in_cache.__self__), "__getattr__")
    sent = cloudpickle.loads(cloudpickle.dumps(cached))
    assert hasattr(type(sent.check_call_in_cache.__self__), "__getattr__")
    assert sent(4) == 8 and cached(4) == 8


def _double(x):
    return 2 * x


def test_joblib_parallel_runs_a_cached_function_as_with_joblib_memory(tmp_path):
    """joblib's documented pattern (its example "Checkpoint using joblib.Memory and
    joblib.Parallel"): loky workers call a cached function, given directly or called by
    the function they run; each call runs once, in whichever process (the script's own
    functions reach the workers by value, without their file: their keys are the same
    there all the same)."""
    pytest.importorskip("joblib")
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import sys
        import dagnb
        from joblib import Parallel, delayed

        memory = dagnb.Memory(sys.argv[1])

        class Summer:
            def total(self, values):
                return sum(values)

        def log_run(column):
            with open(sys.argv[2], "a") as runs:
                runs.write(f"{column}\\n")

        def costly_compute(data, column):
            log_run(column)
            return Summer().total(data[column])

        costly_compute_cached = memory.cache(costly_compute)

        def mean_using_cache(data, column):
            return costly_compute_cached(data, column) / len(data[column])

        if __name__ == "__main__":
            data = [[1, 2, 3], [4, 5, 6], [7, 8, 9]]
            assert costly_compute_cached(data, 0) == 6  # here first: the workers hit it
            for _ in range(2):
                assert Parallel(n_jobs=2)(delayed(mean_using_cache)(data, column)
                                          for column in range(3)) == [2.0, 5.0, 8.0]
            assert Parallel(n_jobs=2)(delayed(costly_compute_cached)(data, column)
                                      for column in range(3)) == [6, 15, 24]
    """))
    runs = tmp_path / "runs.txt"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "cache"), str(runs)],
                          capture_output=True, text=True, timeout=180, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert sorted(runs.read_text().split()) == ["0", "1", "2"]


def test_hits_of_a_store_collected_before_exit_are_written(tmp_path):
    """A Memory made at each call (``memory.cache(f)(x)``): its store dies with its hits
    counted; they were written only by stores still alive at exit, so a collection in
    between lost them (a fork worker's hits came out 2 of 4 on Python 3.13)."""
    import gc

    location = str(tmp_path / "cache")
    Memory(location).cache(abs)(-1)  # stored
    for _ in range(3):
        assert Memory(location).cache(abs)(-1) == 1  # a hit; its Memory and store dropped
        gc.collect()
    assert Store(location).entries()["hits"].sum() == 3


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_hits_in_fork_workers_that_import_dagnb_themselves_are_counted(tmp_path):
    """A worker that imports dagnb itself (a forkserver's does, before Python 3.13; so
    does a fork worker whose task imports it) writes its hits as it ends too."""
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent("""
        import concurrent.futures, multiprocessing, sys

        def work(x):
            import dagnb  # (first imported here, in the worker)
            return dagnb.Memory(sys.argv[1]).cache(abs)(x)

        if __name__ == "__main__":
            assert "dagnb" not in sys.modules
            fork = multiprocessing.get_context("fork")
            with concurrent.futures.ProcessPoolExecutor(2, mp_context=fork) as pool:
                # (two maps: in one, a worker slow to import could still be computing -1
                # when the other takes the second -1, a miss too: 3 hits, not 4)
                for _ in range(2):
                    assert list(pool.map(work, [-1, -2, -3, -4])) == [1, 2, 3, 4]
    """))
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert Store(tmp_path / "cache").entries()["hits"].sum() == 4


def test_a_memory_pickles_as_joblibs_does(tmp_path):
    """A Memory inside what is sent to workers (a scikit-learn pipeline's ``memory``):
    the same cache and settings there; ``Memory(None)`` stays one."""
    import pickle

    memory = Memory(str(tmp_path / "cache"), ttl="1d", verbose=0, cache_mode="read-write")
    stored = memory.cache(abs)
    assert stored(-2) == 2
    again = pickle.loads(pickle.dumps(memory))
    assert again is not memory and again.location == memory.location
    assert again.store.default_ttl == memory.store.default_ttl
    assert again.cache(abs).check_call_in_cache(-2)
    assert pickle.loads(pickle.dumps(Memory(None))).store is None


# -- the globals a cached function reads ------------------------------------------------
params = {"alpha": 1}  # (lower case: read as data by the functions below)
connection = threading.Lock()  # (an object no hash takes)
seen: list[int] = []


def _scaled(x):
    return x * params["alpha"]


def _with_connection(x):
    with connection:
        return x + 1


def _counting(x):
    seen.append(x)
    return x


def test_a_global_the_function_reads_counts_by_its_value_at_each_call(memory, monkeypatch):
    monkeypatch.setitem(params, "alpha", 1)
    scaled = memory.cache(_scaled)
    assert scaled(10) == 10
    params["alpha"] = 2  # changed in place: the same dict
    assert scaled(10) == 20
    params["alpha"] = 1
    assert scaled(10) == 10 and scaled.check_call_in_cache(10)


API_TOKEN = "sk-live-global-7f3e2d1c"  # (as read from the environment into a global)


def _authorized(url):
    return len(url + API_TOKEN)


def test_a_credential_the_function_reads_from_a_global_is_written_nowhere(memory, tmp_path):
    """An immutable global counts in the code's digest, and its value was shown in the
    entry's code description: a token read into a global was written in clear into the
    cache. The code is described as a step's is, without the values it reads."""
    authorized = memory.cache(_authorized)
    assert authorized("http://x") == len("http://x" + API_TOKEN)
    assert authorized.check_call_in_cache("http://x")
    held = [p for p in (tmp_path / "cache").rglob("*")
            if p.is_file() and API_TOKEN.encode() in p.read_bytes()]
    assert held == []


SCRIPT = """
import sys
from dagnb import Memory
settings = {"alpha": int(sys.argv[2])}

def scaled(x):
    return x * settings["alpha"]

print(Memory(sys.argv[1]).cache(scaled)(10))
"""


def test_a_global_changed_between_processes_is_a_miss(tmp_path):
    (tmp_path / "script.py").write_text(SCRIPT)

    def run(alpha: int) -> str:
        done = subprocess.run([sys.executable, "script.py", str(tmp_path / "c"), str(alpha)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        return done.stdout.strip()

    assert [run(1), run(2), run(1)] == ["10", "20", "10"]


READER = """
from pathlib import Path

def read(name):
    return Path(name).read_text()
"""

RECOMPUTE = """
import sys
from dagnb import Memory
from reader import read

Memory(sys.argv[1]).cache(read).call(sys.argv[2])
"""


def test_a_call_stored_again_by_another_process_is_what_this_one_then_gets(
        tmp_path, monkeypatch):
    """``.call()`` in another process stores the call anew: this process's next hit is
    that result, as joblib's is, not the one it kept serving from the packs it had read
    (a fresh process wrote its record without reading them, so it told no one)."""
    (tmp_path / "reader.py").write_text(READER)
    (tmp_path / "script.py").write_text(RECOMPUTE)
    monkeypatch.syspath_prepend(str(tmp_path))
    read = Memory(str(tmp_path / "c")).cache(importlib.import_module("reader").read)
    data = tmp_path / "data.txt"
    data.write_text("v1")
    assert read(str(data)) == "v1"
    for version in ("v2", "v3"):  # (the second adopts the pack the first made)
        data.write_text(version)
        done = subprocess.run([sys.executable, "script.py", str(tmp_path / "c"), str(data)],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stderr
        assert read(str(data)) == version


def test_a_global_no_hash_takes_counts_by_its_type_with_one_warning(memory):
    cached = memory.cache(_with_connection)
    with pytest.warns(UserWarning, match=r"global 'connection' \(lock\) cannot be hashed"):
        assert cached(1) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # once
        assert cached(1) == 2 and cached.check_call_in_cache(1)


def _note(x):
    seen.append(x)


def _counting_through_a_helper(x):
    _note(x)
    return x + len(seen)


def test_a_global_the_function_changes_is_state_not_input(memory):
    """``calls.append(x)`` (the tutorial's count of real calls): by name, not value."""
    seen.clear()
    counting = memory.cache(_counting)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [counting(1), counting(1), counting(2)] == [1, 1, 2]
    assert seen == [1, 2]


def test_a_function_that_changes_a_global_it_reads_through_a_helper_is_told_once(memory):
    seen.clear()
    counting = memory.cache(_counting_through_a_helper)
    with pytest.warns(UserWarning, match="changed global 'seen', which it reads"):
        assert counting(1) == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert counting(1) == 3  # (keyed by seen's value: each call misses, as it warned)


class _Tally:
    calls = 0


stats = {"calls": 0}
hits = [0]
tally = _Tally()


def _counting_in_an_item(x):
    stats["calls"] += 1
    return x


def _counting_in_a_list(x):
    hits[0] += 1
    return x


def _counting_in_an_attribute(x):
    tally.calls += 1
    return x


def _reading_the_count(x):
    seen.append(x)
    return x + stats["calls"]


@pytest.mark.parametrize("function", [
    _counting_in_an_item, _counting_in_a_list, _counting_in_an_attribute])
def test_a_count_the_function_keeps_in_a_global_is_state_not_input(memory, function):
    """``stats["calls"] += 1``: the global's value was in the key, changed at each call
    (joblib hits)."""
    count = memory.cache(function)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert [count(1), count(1), count(1)] == [1, 1, 1]
    assert count.check_call_in_cache(1)


def test_a_function_that_only_reads_a_count_runs_again_when_it_changes(memory, monkeypatch):
    monkeypatch.setitem(stats, "calls", 0)
    seen.clear()
    reading = memory.cache(_reading_the_count)
    assert [reading(1), reading(1)] == [1, 1]
    stats["calls"] = 5
    assert reading(1) == 6
    assert seen == [1, 1]


NAMESAKES = """
from pathlib import Path

name = "alice"  # variables named as the attributes and the import below
mean = 2.0
json = "not the module"
runs = []

def describe(path, frame):
    import json
    runs.append(path)
    return json.dumps([Path(path).name, float(frame.a.mean())])

def greet(greeting):
    runs.append(greeting)
    return greeting + " " + name
"""


def test_a_global_named_as_an_attribute_or_an_import_of_the_function_changes_no_key(
        memory, tmp_path, monkeypatch):
    """``path.name``, ``frame.a.mean()``, ``import json`` in the function, and globals
    ``name``, ``mean``, ``json`` changed between calls: no run again (each re-ran); a
    function that reads the global ``name`` runs again."""
    (tmp_path / "memory_namesakes.py").write_text(NAMESAKES)
    monkeypatch.syspath_prepend(str(tmp_path))
    module = importlib.import_module("memory_namesakes")
    describe, greet = memory.cache(module.describe), memory.cache(module.greet)
    frame = pd.DataFrame({"a": [1, 2, 3]})
    assert describe("data/raw.csv", frame) == '["raw.csv", 2.0]'
    assert greet("hi") == "hi alice"
    module.name, module.mean, module.json = "bob", 2.5, "another"
    assert describe("data/raw.csv", frame) == '["raw.csv", 2.0]'
    assert greet("hi") == "hi bob"
    assert module.runs == ["data/raw.csv", "hi", "hi"]


class _Scaler:
    def __init__(self, k):
        self.k = k

    def apply(self, x):
        return x * self.k


def test_a_methods_object_counts_by_its_state_at_each_call(memory):
    scaler = _Scaler(2)
    apply = memory.cache(scaler.apply)
    assert apply(5) == 10
    scaler.k = 3
    assert apply(5) == 15


def test_a_cached_function_cached_again_caches_its_function_and_is_forgotten_with_it(tmp_path):
    import gc
    import weakref

    memory = Memory(tmp_path)

    def f(x: int) -> int:
        """Doubles."""
        return 2 * x

    f.extra = 1
    once = memory.cache(f)
    twice = memory.cache(once)
    assert twice.__wrapped__ is f and twice.func is f
    assert (twice.__name__, twice.__qualname__, twice.__doc__, twice.extra) == (
        "f", f.__qualname__, "Doubles.", 1)
    assert twice(2) == 4 and once.check_call_in_cache(2)  # (one function, one cache)
    gone = [weakref.ref(once), weakref.ref(twice)]
    del once, twice
    gc.collect()
    assert [ref() for ref in gone] == [None, None]


@pytest.mark.parametrize("location", ["cache", None])
def test_each_kind_of_cached_function_cached_again_caches_its_function(tmp_path, location):
    """Sync or async, on a cache or on none: caching it again caches the function (a
    wrapper of its own, not of the wrapper: the new options are seen); a function
    wrapping a cached one (functools.wraps copies its attributes) is not one."""
    memory = Memory(None if location is None else tmp_path / location)

    def f(x: int, y: int = 0) -> int:
        return x + y

    async def g(x: int, y: int = 0) -> int:
        return x + y

    for func in (f, g):
        again = memory.cache(ignore=["y"])(memory.cache(func))
        assert again.__wrapped__ is func and again.ignore == ["y"]

    @functools.wraps(memory.cache(f))
    def mine(x: int, y: int = 0) -> int:
        return 10 * f(x, y)

    assert memory.cache(mine).func is mine


def test_a_function_cached_again_has_its_traits_remembered_while_they_hold(tmp_path):
    """A plain function's keys, step name and kind are read once, then remembered (each
    ``Memory(...).cache(func)`` asks again) while its code, defaults, module and name
    are the same objects: one replaced is read again."""
    from dagnb.cache import memory as memory_module

    def add(x: int, y: int = 2) -> int:
        return x + y

    first = Memory(tmp_path / "a").cache(add)
    assert id(add) in memory_module._TRAITS
    again = Memory(tmp_path / "b").cache(add)
    assert again(1) == 3 and first(1) == 3
    assert again.store_name == first.store_name
    add.__defaults__ = (10,)
    assert Memory(tmp_path / "b").cache(add)(1) == 11  # the default read anew: a miss
    add.__qualname__ = "renamed"
    assert Memory(tmp_path / "b").cache(add).store_name.endswith(".renamed")

    async def later(x: int) -> int:
        return x

    later_cached = Memory(tmp_path / "a").cache(later)
    assert inspect.iscoroutinefunction(later_cached)
    later.__code__ = add.__code__  # (a coroutine's code swapped for a plain function's)
    assert not inspect.iscoroutinefunction(Memory(tmp_path / "a").cache(later))


def test_remembered_traits_keep_no_function_alive_and_warn_anew(tmp_path):
    import gc
    import weakref

    from dagnb.cache import memory as memory_module

    def f(x: int) -> int:
        return x

    Memory(tmp_path).cache(f)
    gone = weakref.ref(f)
    del f
    gc.collect()
    assert gone() is None
    assert all(found[0]() is not None for found in memory_module._TRAITS.values())
    for _ in range(2):  # each cached function is warned of once, as before
        cached = Memory(tmp_path).cache(_with_connection)
        with pytest.warns(UserWarning, match=r"global 'connection' \(lock\) cannot be hashed"):
            assert cached(1) == 2


def test_a_cached_function_let_go_at_exit_reports_nothing(tmp_path, monkeypatch):
    """At exit, the weak references' callbacks may run once the module's globals are
    None: the tables forget the function all the same, with no "Exception ignored"."""
    import gc

    from dagnb.cache import memory as memory_module
    from dagnb.model import step as step_module

    unraisable: list[object] = []
    monkeypatch.setattr(sys, "unraisablehook", unraisable.append)
    namespace: dict[str, object] = {}
    exec("def f(x):\n    return x + 1\n", namespace)
    cached = Memory(tmp_path).cache(namespace["f"])
    assert cached(1) == 2
    traits = memory_module._TRAITS
    for name in ("_TRAITS", "_RUN_CELLS"):
        monkeypatch.setattr(memory_module, name, None)  # (as at exit)
    monkeypatch.setattr(step_module, "_remove_dead", None)  # (the callbacks' helper)
    del cached, namespace
    gc.collect()
    assert unraisable == []
    assert not any(found[0]() is None for found in traits.values())
