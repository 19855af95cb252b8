"""A cached function given to ``multiprocessing`` (a Pool's ``map``, a
ProcessPoolExecutor), which sends it with plain pickle, as joblib's MemorizedFunc goes:
``f_cached = memory.cache(f)`` too, whose wrapper pickle cannot find by its name (the
module's ``f`` is the function). The workers' calls read and write the parent's cache.
"""

from __future__ import annotations

import concurrent.futures
import functools
import importlib
import multiprocessing
import operator
import os
import pickle
import sys
from pathlib import Path

import pytest

import dagnb
from dagnb.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]

# a module of the user's, with a function cached in each of the three ways
FUNCTIONS = '''
import dagnb

memory = dagnb.Memory({location!r})


def _ran(name, x):
    with open({runs!r}, "a") as log:
        log.write(f"{{name}} {{x}}\\n")


def double(x):
    _ran("double", x)
    return 2 * x


double_cached = memory.cache(double)  # joblib's way: a name of its own


def triple(x):
    _ran("triple", x)
    return 3 * x


triple = memory.cache(triple)  # the module's name given to the cached function


@memory.cache
def square(x):
    _ran("square", x)
    return x * x
'''

NAMES = ("double_cached", "triple", "square")
EXPECTED = {"double_cached": [0, 2, 4, 6], "triple": [0, 3, 6, 9], "square": [0, 1, 4, 9]}


@pytest.fixture
def functions(tmp_path, monkeypatch):
    """The module, importable here and in a spawned worker (which imports it again)."""
    runs = tmp_path / "runs.txt"
    runs.touch()
    (tmp_path / "pickled_functions.py").write_text(
        FUNCTIONS.format(location=str(tmp_path / "cache"), runs=str(runs)))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(tmp_path), str(REPO)]))
    sys.modules.pop("pickled_functions", None)
    yield importlib.import_module("pickled_functions")
    sys.modules.pop("pickled_functions", None)


def _runs(module) -> list[str]:
    """The calls that ran, in any process, sorted."""
    with open(module.__file__.replace("pickled_functions.py", "runs.txt")) as log:
        return sorted(log.read().splitlines())


def _ran_once_each() -> list[str]:
    return sorted(f"{name} {x}" for name in ("double", "triple", "square") for x in range(4))


def _hit_here(module) -> None:
    """Each call the workers made is a hit in the parent: nothing runs again."""
    for name in NAMES:
        assert [getattr(module, name)(x) for x in range(4)] == EXPECTED[name]
    assert _runs(module) == _ran_once_each()


@pytest.mark.parametrize("method", ["spawn", "fork"])
def test_a_pool_maps_a_cached_function_on_the_parent_s_cache(functions, method):
    if method not in multiprocessing.get_all_start_methods():
        pytest.skip(f"no {method} start method here")
    with multiprocessing.get_context(method).Pool(2) as pool:
        for name in NAMES:
            assert pool.map(getattr(functions, name), range(4)) == EXPECTED[name]
    assert _runs(functions) == _ran_once_each()
    _hit_here(functions)


def test_a_process_pool_executor_maps_a_cached_function_on_the_parent_s_cache(functions):
    spawn = multiprocessing.get_context("spawn")
    with concurrent.futures.ProcessPoolExecutor(2, mp_context=spawn) as pool:
        for name in NAMES:
            assert list(pool.map(getattr(functions, name), range(4))) == EXPECTED[name]
    _hit_here(functions)


def test_a_cached_function_unpickled_here_is_one_on_the_same_cache(functions, tmp_path):
    """The round trip a worker's function makes: the same function and options on the
    same cache, itself pickled again as it came; a store URL goes as given. A lambda is
    refused with pickle's own error, naming it."""
    cached = functions.double_cached
    assert [cached(x) for x in range(3)] == [0, 2, 4]
    sent = pickle.loads(pickle.dumps(cached))
    assert sent is not cached and sent.store_name == cached.store_name
    assert sent.__name__ == "double" and sent.func is functions.double
    assert [sent(x) for x in range(4)] == [0, 2, 4, 6]  # three hits, one miss
    assert _runs(functions) == [f"double {x}" for x in range(4)]
    assert cached.check_call_in_cache(3)
    again = pickle.loads(pickle.dumps(sent))
    assert again(3) == 6 and _runs(functions) == [f"double {x}" for x in range(4)]
    ignoring = functions.memory.cache(functions.double, ignore=["x"])
    assert pickle.loads(pickle.dumps(ignoring)).ignore == ["x"]

    on_url = dagnb.Memory(f"file://{tmp_path / 'store'}").cache(functions.double)
    assert repr(pickle.loads(pickle.dumps(on_url)).call_and_shelve.__self__.memory) == (
        f"Memory(location='file://{tmp_path / 'store'}')")
    assert pickle.loads(pickle.dumps(dagnb.Memory(None).cache(functions.double)))(5) == 10

    # (a local one, pickle's AttributeError: "Can't pickle local object '...<lambda>'")
    with pytest.raises((pickle.PicklingError, AttributeError), match="lambda"):
        pickle.dumps(functions.memory.cache(lambda x: x))


def test_a_memory_given_a_path_is_given_one_back_when_unpickled(tmp_path, monkeypatch):
    """joblib's keeps the Path: a worker's ``memory.location / "x"`` raised a TypeError
    on dagnb's, whose copy held a str."""
    monkeypatch.chdir(tmp_path)
    copy = pickle.loads(pickle.dumps(dagnb.Memory(Path("cache"))))
    assert copy.location / "x" == tmp_path / "cache" / "x"
    assert pickle.loads(pickle.dumps(dagnb.Memory("cache"))).location == str(tmp_path / "cache")


@pytest.mark.parametrize("given", [str, Path], ids=["text", "path"])
def test_a_joblib_cache_folder_ported_as_is_is_refused_naming_joblib(tmp_path, given):
    """``joblib.Memory("cachedir")`` changed to ``dagnb.Memory("cachedir")``: refused as a
    folder of "other files", with no word of joblib. (joblib keeps its entries in
    ``cachedir/joblib`` given text, in ``cachedir`` given a Path.)"""
    joblib = pytest.importorskip("joblib")
    joblib.Memory(given(tmp_path / "cachedir"), verbose=0).cache(operator.neg)(1)
    with pytest.raises(ConfigError) as refused:
        dagnb.Memory(tmp_path / "cachedir").cache(operator.neg)(1)
    assert str(refused.value) == (
        f"cache directory '{tmp_path / 'cachedir'}' holds a joblib cache, which dagnb does "
        "not read; name another folder for dagnb's, such as "
        f"'{tmp_path / 'cachedir' / '.dagnb_cache'}', or remove the joblib folder (its "
        "results are computed again either way)")
    assert dagnb.Memory(tmp_path / "cachedir" / ".dagnb_cache").cache(operator.neg)(1) == -1
    (tmp_path / "cachedir" / "notes.txt").write_text("mine")  # (then: not joblib's alone)
    with pytest.raises(ConfigError, match="holds other files and is not a dagnb cache"):
        dagnb.Memory(tmp_path / "cachedir").cache(operator.neg)(2)


def test_a_shelved_result_of_a_function_given_expires_after_pickles(tmp_path):
    """joblib's ``MemorizedResult`` pickles; dagnb's carried the function's
    ``cache_validation_callback``, ``expires_after``'s local function, which pickle
    refuses ("Can't pickle local object")."""
    joblib = pytest.importorskip("joblib")
    cached = dagnb.Memory(tmp_path / "cache").cache(
        operator.neg, cache_validation_callback=joblib.expires_after(hours=1))
    shelved = cached.call_and_shelve(5)
    copy = pickle.loads(pickle.dumps(shelved))
    assert copy.get() == -5 and copy.args_id == shelved.args_id
    copy.clear()
    with pytest.raises(KeyError):
        shelved.get()


def test_verbose_above_4_says_each_hit_as_joblibs_does(tmp_path, capsys):
    """A hit on a result kept in memory said nothing: joblib's ``verbose=10``, how its
    users see a call came from the cache, says "cache loaded" at each."""
    cached = dagnb.Memory(tmp_path / "cache", verbose=5).cache(operator.neg)
    cached(1)
    assert "cache loaded" not in capsys.readouterr().out
    for _ in range(2):
        assert cached(1) == -1
        assert capsys.readouterr().out.rstrip().endswith("neg cache loaded - 0.0s, 0.0min")


class _Model:
    def __init__(self, k: int) -> None:
        self.k = k

    def fit(self, x: int) -> int:
        return self.k * x


@pytest.mark.parametrize("make", [lambda: functools.partial(operator.mul, 2),
                                  lambda: _Model(3).fit], ids=["partial", "bound-method"])
def test_a_cached_partial_or_bound_method_pickles_to_the_same_cache(tmp_path, make):
    """Refused with an error about dagnb's own code ("Can't pickle local object
    '_CachedCall.wrapper.<locals>.run'"); joblib's pickles, with the partial's arguments
    or the method's object."""
    cached = dagnb.Memory(tmp_path / "cache").cache(make())
    value = cached(5)
    copy = pickle.loads(pickle.dumps(cached))
    assert copy.check_call_in_cache(5) and copy(5) == value
    assert not copy.check_call_in_cache(6)
