"""``dagnb.Memory`` as a joblib user meets it: ``verbose=1`` prints a keyword argument cut
as a positional one is (not a list of 100,000 items whole, and one whose repr raises does
not fail the call); a clear or a ``reduce_size`` in a folder this user may not write is
one line with the fix, not an OSError naming a pack file; a method's cache controls
reached through an object (``model.fit.call(x)``, which passes no ``model``) say how to
give them the object."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from dagnb.cache.memory import Memory
from dagnb.cache.store import Store
from dagnb.errors import CacheError, ConfigError


class _ReprFails:
    def __init__(self, value: int) -> None:
        self.value = value

    def __reduce__(self) -> tuple[object, ...]:
        return _ReprFails, (self.value,)

    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_verbose_cuts_a_keyword_argument_as_a_positional_one(tmp_path, capsys):
    memory = Memory(tmp_path / "cache", verbose=1)

    @memory.cache
    def count(x, items=None):
        return x + len(items or [])

    assert count(1, items=list(range(100_000))) == 100_001
    printed = capsys.readouterr().out
    assert "count(1, items=[0, 1, 2," in printed
    assert len(printed) < 2_000  # (it printed 689 KB: the list whole)


def test_verbose_runs_a_call_whose_keyword_argument_has_no_repr(tmp_path, capsys):
    memory = Memory(tmp_path / "cache", verbose=1)

    @memory.cache
    def value_of(x, extra=None):
        return x + extra.value

    assert value_of(1, extra=_ReprFails(2)) == 3  # (RuntimeError: no repr)
    assert "value_of(1, extra=<_ReprFails>)" in capsys.readouterr().out
    assert value_of.check_call_in_cache(1, extra=_ReprFails(2))


def _unwritable(*args: object, **kwargs: object) -> None:
    # what the store meets on a read-only mount: the pack it makes to note a removal
    raise OSError(errno.EROFS, "Read-only file system", "/cache/.packs/1-ab.pack")


@pytest.mark.parametrize("action, words", [
    (lambda memory, f: f.clear(warn=False), "cannot clear the cache in"),
    (lambda memory, f: memory.clear(warn=False), "cannot clear the cache in"),
    (lambda memory, f: memory.reduce_size(items_limit=0), "cannot reduce the size of the cache in"),
    (lambda memory, f: f.call_and_shelve(1).clear(), "cannot clear a result from the cache in"),
])
def test_clearing_a_folder_that_cannot_be_written_is_one_line_with_the_fix(
        tmp_path, monkeypatch, action, words):
    memory = Memory(tmp_path / "cache")

    @memory.cache
    def double(x):
        return [x * 2]

    assert double(1) == [2]
    for method in ("clear", "reduce_size", "remove"):
        monkeypatch.setattr(Store, method, _unwritable)
    with pytest.raises(CacheError) as refused:
        action(memory, double)
    message = str(refused.value)
    assert message.startswith(f"{words} {str(memory.store.location)!r}: the folder cannot be "
                              "written (Read-only file system)")
    assert "on a writable mount" in message and "\n" not in message
    assert refused.value.__cause__ is None and refused.value.__suppress_context__


def test_an_error_other_than_a_folder_that_cannot_be_written_is_raised_as_it_is(
        tmp_path, monkeypatch):
    memory = Memory(tmp_path / "cache")

    @memory.cache
    def double(x):
        return [x * 2]

    assert double(1) == [2]

    def vanished(*args: object, **kwargs: object) -> None:
        raise FileNotFoundError(errno.ENOENT, "No such file or directory", "x")

    monkeypatch.setattr(Store, "clear", vanished)
    with pytest.raises(FileNotFoundError):
        memory.clear(warn=False)


@pytest.fixture
def model(tmp_path):
    memory = Memory(tmp_path / "cache")

    class Scaler:
        def __init__(self, k: int) -> None:
            self.k = k

        @memory.cache
        def fit(self, x):
            return x * self.k

        @classmethod
        @memory.cache
        def make(cls, k):
            return k

    return Scaler


def test_a_method_s_cache_controls_reached_through_an_object_say_to_give_it_the_object(model):
    scaler = model(3)
    assert scaler.fit(2) == 6
    for control in ("check_call_in_cache", "call", "call_and_shelve"):
        with pytest.raises(TypeError) as wrong:
            getattr(scaler.fit, control)(2)
        assert str(wrong.value) == (
            "fit(): missing a required argument: 'x'; Scaler.fit is a method: give it the "
            "object first (Scaler.fit.check_call_in_cache(obj, ...)): a bound method passes "
            "it to calls, not to .call(), .check_call_in_cache() or .call_and_shelve()")
    assert model.fit.check_call_in_cache(scaler, 2)
    assert scaler.fit.check_call_in_cache(scaler, 2)


def test_a_class_method_s_cache_controls_say_to_give_them_the_class(model):
    assert model.make(4) == 4
    with pytest.raises(TypeError, match=r"give it the class first "
                                        r"\(Scaler\.make\.check_call_in_cache\(Scaler, \.\.\.\)\)"):
        model.make.check_call_in_cache(4)
    assert model.make.check_call_in_cache(model, 4)


def test_a_method_called_with_an_argument_missing_has_no_hint_of_cache_controls(model):
    with pytest.raises(TypeError) as missing:
        model(3).fit()
    assert str(missing.value) == "fit(): missing a required argument: 'x'"


def test_a_bytes_limit_that_is_no_size_is_refused_as_the_memory_is_made(tmp_path: Path) -> None:
    """It was taken, and refused only at the first reduce_size(), maybe hours later."""
    with pytest.raises(CacheError, match="bytes_limit 'lots' is not a size"):
        Memory(tmp_path / "c", bytes_limit="lots")
    assert Memory(tmp_path / "c", bytes_limit="1G").bytes_limit == "1G"


@pytest.mark.parametrize(("limit", "size"), [(1e9, 10**9), (1.5e3, 1500), (2.0, 2)])
def test_a_bytes_limit_written_as_a_float_is_taken_as_joblib_takes_it(
        limit: float, size: int) -> None:
    from dagnb.cache.eviction import parse_size

    assert parse_size(limit) == size


@pytest.mark.parametrize("limit", [float("nan"), float("inf"), -1e9])
def test_a_bytes_limit_that_is_no_float_size_is_refused(limit: float) -> None:
    from dagnb.cache.eviction import parse_size

    with pytest.raises(CacheError, match=f"bytes_limit {limit!r} is not a size"):
        parse_size(limit)


def test_reduce_size_takes_a_float_bytes_limit(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "cache", bytes_limit=1e9)
    assert memory.cache(abs)(-3) == 3
    assert memory.reduce_size() == 0 and memory.reduce_size(bytes_limit=0.0) == 1


class _Repo:
    """joblib's way of caching a method: the bound method, in __init__, on an object
    no key can hold (a connection)."""

    def __init__(self, memory: Memory, ignore: list[str] | None) -> None:
        import threading

        self.conn = threading.Lock()  # (cannot be pickled, as a sqlite connection)
        self.calls = 0
        self.load = memory.cache(self._load, ignore=ignore)

    def _load(self, table: str) -> str:
        self.calls += 1
        return table.upper()


def test_a_bound_method_cached_with_self_ignored_is_keyed_on_its_arguments(
        tmp_path: Path) -> None:
    from dagnb.errors import FingerprintError

    memory = Memory(tmp_path / "cache")
    with pytest.raises(FingerprintError, match=r"or \(Memory\) pass ignore=\['self'\] to "
                                               "key its calls on their arguments alone"):
        _Repo(memory, None).load("users")
    first, second = _Repo(memory, ["self"]), _Repo(memory, ["self"])
    assert first.load("users") == second.load("users") == "USERS"
    assert (first.calls, second.calls) == (1, 0)  # (the second object: a hit)
    assert second.load("orders") == "ORDERS" and second.calls == 1


def test_ignore_names_a_bound_methods_self_only_by_its_own_name(tmp_path: Path) -> None:
    memory = Memory(tmp_path / "cache")
    repo = _Repo(memory, None)
    with pytest.raises(ConfigError, match=r"ignore=\['this'\] names no parameter of .*"
                                          r"\['table', 'self'\]"):
        memory.cache(repo._load, ignore=["this"])
