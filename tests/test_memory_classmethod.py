"""``@memory.cache`` over ``@classmethod`` (as it works over ``@staticmethod``): it was
``TypeError: <classmethod(...)> is not a callable object``, from deep in inspect."""

from __future__ import annotations

import dagnb


def test_a_cached_classmethod_is_cached_per_class(tmp_path):
    memory = dagnb.Memory(str(tmp_path / "cache"))
    calls = []

    class Loader:
        factor = 2

        @memory.cache
        @classmethod
        def load(cls, x: int) -> int:
            calls.append((cls.__name__, x))
            return x * cls.factor

    class Tripled(Loader):
        factor = 3

    assert [Loader.load(2), Loader.load(2), Tripled.load(2), Tripled().load(2)] == [4, 4, 6, 6]
    assert calls == [("Loader", 2), ("Tripled", 2)]  # (each class's call once)
