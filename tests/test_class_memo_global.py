"""A global a class's method fills and reads (a module-level memo) is the class's state:
it counts by name, with a warning once, as a function's own state does. By content (the
data a class's methods read is hashed at each use), its objects' keys changed as the
memo grew: a cached function given one missed at every call, and said nothing."""

from __future__ import annotations

import importlib
import sys
import textwrap
import warnings

import pytest

from dagnb import Memory
from dagnb.fingerprint.walker import changed_globals

SHAPES = """
_MEMO = {}
UNIT = {"scale": 1}


class Square:
    def __init__(self, side):
        self.side = side

    def area(self):
        if self.side not in _MEMO:
            _MEMO[self.side] = self.side * self.side
        return _MEMO[self.side]


class Scaled:
    def __init__(self, side):
        self.side = side

    def area(self):
        return self.side * UNIT["scale"]


def square_area(side):
    return Square(side).area()
"""


@pytest.fixture
def shapes(tmp_path, monkeypatch):
    """A fresh project module (a class of the user's code), forgotten afterwards."""
    name = f"class_memo_{tmp_path.name.replace('-', '_')}"
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(SHAPES))
    monkeypatch.syspath_prepend(str(tmp_path))
    importlib.invalidate_caches()
    yield importlib.import_module(name)
    sys.modules.pop(name, None)


def _said(caught: list[warnings.WarningMessage]) -> list[str]:
    return [str(w.message) for w in caught if "'_MEMO'" in str(w.message)]


def test_an_object_whose_method_fills_a_global_memo_keeps_its_key(shapes, tmp_path) -> None:
    runs = []

    def measure(shape):
        runs.append(shape.side)
        return shape.area()

    cached = Memory(tmp_path / "cache", verbose=0).cache(measure)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cached(shapes.Square(2)) == 4
        assert cached(shapes.Square(3)) == 9  # (the memo grew)
        assert cached(shapes.Square(2)) == 4
    assert runs == [2, 3]
    assert cached.check_call_in_cache(shapes.Square(3))
    said = _said(caught)
    assert len(said) == 1, said
    assert said[0].startswith("Square.area changes global '_MEMO', which it reads")


def test_a_function_using_such_a_class_keeps_its_key(shapes, tmp_path) -> None:
    cached = Memory(tmp_path / "cache", verbose=0).cache(shapes.square_area)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert cached(2) == 4
        assert cached(3) == 9
        assert cached.check_call_in_cache(2)
    assert len(_said(caught)) == 1


_CACHE: dict = {}


def _by_attribute(shape):
    _CACHE[shape.side] = 1


def _by_pair(shape):
    _CACHE[shape.side, shape.name] = 1


def _by_call(shape):
    del _CACHE[len(shape)]


def _reads(key):
    return _CACHE[key][0], key in _CACHE, _CACHE.get(key)


def test_an_item_set_under_a_key_of_any_form_changes_the_global() -> None:
    for func in (_by_attribute, _by_pair, _by_call):
        assert changed_globals(func.__code__) == {"_CACHE"}, func.__name__
    assert changed_globals(_reads.__code__) == set()
