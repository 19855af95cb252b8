"""A cached function's wrapper sent by cloudpickle (joblib.Parallel's loky workers, dask)
counts, in a function that calls it, as the function it caches: its code arrives named
``<dynamic-code>``, not dagnb's file, so the fingerprint knows it by a mark it carries."""

from __future__ import annotations

import functools
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from dagnb import Memory
from dagnb.fingerprint import code_digest, code_source_parts

cloudpickle = pytest.importorskip("cloudpickle")

# A script (its functions are __main__'s: cloudpickle sends them, and the cached
# wrapper, by value) whose caller of a cached function runs in another process.
# (the functions both scripts cache: plus_one calls the cached double)
_CACHED = """
import sys
from dagnb import Memory

memory = Memory(sys.argv[1], verbose=0)

def double(x):
    return x * 2

cached_double = memory.cache(double)

def plus_one(x):
    return cached_double(x) + 1

cached_plus_one = memory.cache(plus_one)
"""

_PARENT = _CACHED + """
import json, pickle, subprocess
import cloudpickle
assert cached_plus_one(3) == 7
payload = sys.argv[1] + "/payload.pkl"
with open(payload, "wb") as out:
    cloudpickle.dump(cached_plus_one, out)
CHILD = '''
import json, pickle, sys
with open(sys.argv[1], "rb") as sent:
    cached = pickle.load(sent)
print(json.dumps({"outer_hit": cached.check_call_in_cache(3),
                  "inner_hit": cached.func.__globals__["cached_double"].check_call_in_cache(3)}))
'''
child = subprocess.run([sys.executable, "-W", "always::UserWarning", "-c", CHILD, payload],
                       capture_output=True, text=True, check=True)
print(child.stdout.strip())
print(child.stderr, file=sys.stderr)
"""


def _run(script: str, tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "parent.py"
    path.write_text(textwrap.dedent(script))
    (tmp_path / "cache").mkdir()
    return subprocess.run([sys.executable, str(path), str(tmp_path / "cache")],
                          capture_output=True, text=True, timeout=120, check=True)


def test_a_function_calling_a_cached_one_hits_in_a_process_cloudpickle_sent_it_to(
        tmp_path: Path) -> None:
    done = _run(_PARENT, tmp_path)
    assert json.loads(done.stdout.splitlines()[-1]) == {"outer_hit": True, "inner_hit": True}
    assert "Warning" not in done.stderr, done.stderr


_PARALLEL = _CACHED + """
from joblib import Parallel, delayed
assert [cached_plus_one(i) for i in range(4)] == [1, 3, 5, 7]
hits = Parallel(n_jobs=2, backend="loky")(
    delayed(cached_plus_one.check_call_in_cache)(i) for i in range(4))
print(hits)
"""


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_joblib_loky_workers_hit_what_the_parent_stored(tmp_path: Path) -> None:
    done = _run(_PARALLEL, tmp_path)
    assert done.stdout.splitlines()[-1] == "[True, True, True, True]"
    assert "Warning" not in done.stderr, done.stderr


def _in_main(source: str, **names: object) -> dict[str, object]:
    """Functions as a script's (``__main__``): cloudpickle sends them by value."""
    namespace: dict[str, object] = {"__name__": "__main__", **names}
    exec(textwrap.dedent(source), namespace)
    return namespace


def test_a_wrapper_rebuilt_by_cloudpickle_is_known_by_its_mark_not_a_copy_of_it(
        tmp_path: Path) -> None:
    memory = Memory(tmp_path, verbose=0)
    double = _in_main("def double(x):\n    return x * 2\n")["double"]
    cached = memory.cache(double)
    rebuilt = cloudpickle.loads(cloudpickle.dumps(cached))
    assert rebuilt.__code__.co_filename != cached.__code__.co_filename  # (sent by value)
    caller = "def plus_one(x):\n    return cached_double(x) + 1\n"
    here = _in_main(caller, cached_double=cached)["plus_one"]
    there = _in_main(caller, cached_double=rebuilt)["plus_one"]
    assert code_digest(there) == code_digest(here)
    assert set(code_source_parts(there)) == {"def plus_one", "def double"}

    # a user's decorator copies the wrapper's attributes (functools.wraps), its mark
    # among them: its own code still counts
    def logged(func):  # type: ignore[no-untyped-def]
        @functools.wraps(func)
        def wrapper(*args):  # type: ignore[no-untyped-def]
            return func(*args) + 100
        return wrapper

    assert any(label.startswith("wrapper of") for label in code_source_parts(logged(rebuilt)))


def test_caching_a_cached_function_cloudpickle_sent_caches_its_function(
        tmp_path: Path) -> None:
    """As caching a cached function again does here: the function it caches, with the
    new options, not a wrapper of the copy (whose calls would go to its own folder)."""
    double = _in_main("def double(x):\n    return x * 2\n")["double"]
    rebuilt = cloudpickle.loads(cloudpickle.dumps(Memory(tmp_path / "a", verbose=0).cache(double)))
    again = Memory(tmp_path / "b", verbose=0).cache(rebuilt)
    assert again.func is rebuilt.func
    assert again(4) == 8
    assert again.check_call_in_cache(4)
    assert not (tmp_path / "a").exists() or not rebuilt.check_call_in_cache(4)
