"""``dagnb.cache.entries(step)`` and ``dagnb.cache.clear(step)`` take a step as the
CLI's ``--step`` does: a Memory function's plain name stands for its full one, and a
name the cache holds nothing of is warned of, with the name meant. Before, ``square``
and ``sqaure`` both matched nothing, silently, and a clear of nothing looked done."""

from __future__ import annotations

import pytest

import dagnb
import dagnb.cache


@pytest.fixture
def square(workdir):
    dagnb.configure(cache_directory=str(workdir / ".dagnb_cache"))
    memory = dagnb.Memory(str(workdir / ".dagnb_cache"))

    def square(x: int) -> int:
        return x * x

    cached = memory.cache(square)
    cached(2), cached(3)
    return cached


def test_a_memory_functions_plain_name_lists_and_clears_its_entries(square):
    assert len(dagnb.cache.entries("square")) == 2
    assert dagnb.cache.clear("square") == 2
    assert not square.check_call_in_cache(2)


def test_a_name_the_cache_holds_nothing_of_is_warned_of_with_the_name_meant(square):
    with pytest.warns(UserWarning, match=r"^dagnb\.cache\.clear: step 'sqaure': the cache in "
                                         r"'[^']+' holds no entries of that step; did you "
                                         r"mean 'square'\? \(nothing cleared\)$"):
        assert dagnb.cache.clear("sqaure") == 0
    with pytest.warns(UserWarning, match=r"did you mean 'square'\? \(nothing listed\)$"):
        assert len(dagnb.cache.entries("sqaure")) == 0
    assert square.check_call_in_cache(2)  # (nothing cleared)
