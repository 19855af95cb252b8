"""A ``Memory`` hit reads a packed entry's head at a glance (its expiry and inline
result: :func:`dagnb.cache.record_text.head_at_a_glance`) and parses the rest only when
someone asks; every other reader parses and checks the head whole, as before."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import warnings

import pytest

from dagnb import Memory
from dagnb.cache import DamagedEntryWarning, Store
from dagnb.cache.pack import ENTRY
from dagnb.errors import CacheError

KEY = "a" * 32


def _saved(folder, clock=None, **options):
    store = Store(folder) if clock is None else Store(folder, clock=clock)
    store.save("s", KEY, out_dir=None, logs=[], inline={"json": [1, "two"]},
               duration_s=0.5, **options)
    return store


def test_a_glance_gives_the_result_and_the_rest_is_parsed_when_asked_for(tmp_path):
    _saved(tmp_path)
    entry = Store(tmp_path).lookup("s", KEY, glance=True)
    assert entry is not None and not entry.head_read
    assert entry.inline == {"json": [1, "two"]}
    assert entry.meta["duration_s"] == 0.5 and entry.head_read
    assert entry.verify()


def test_a_lookup_without_a_glance_parses_an_entry_read_at_one(tmp_path):
    _saved(tmp_path)
    store = Store(tmp_path)
    glanced = store.lookup("s", KEY, glance=True)
    whole = store.lookup("s", KEY)
    assert whole is not glanced and whole.head_read  # type: ignore[union-attr]
    assert store.lookup("s", KEY, glance=True) is whole  # (parsed: served as it is)


def test_an_entry_read_at_a_glance_expires_when_a_parsed_one_does(tmp_path, clock):
    _saved(tmp_path, clock, ttl=60)
    store = Store(tmp_path, clock=clock)
    clock.advance(59)
    assert store.lookup("s", KEY, glance=True) is not None
    clock.advance(2)
    assert store.lookup("s", KEY, glance=True) is None
    assert Store(tmp_path, clock=clock).lookup("s", KEY) is None  # removed, for all


def _forge(folder, head: bytes) -> None:
    """A record whose digest holds but whose head is not one dagnb writes."""
    store = Store(folder)
    store._append("s", KEY, ENTRY, head + b'\n{"components":{}}')
    store.close()


GLANCEABLE_BUT_DAMAGED = (b'{"format":1,"step":"s","key":"' + KEY.encode()
                          + b'","expires":null,"duration_s":1,"packed":true,'
                          b'"inline":{"json":7}}')  # no "created", no "output_digest"


def test_a_head_damaged_past_what_a_glance_reads_fails_loudly_when_parsed(tmp_path):
    _forge(tmp_path, GLANCEABLE_BUT_DAMAGED)
    entry = Store(tmp_path).lookup("s", KEY, glance=True)
    assert entry is not None and entry.inline == {"json": 7}
    with pytest.raises(CacheError, match=r"s/aaaaaaaaaaaa is damaged .*lacks required.*"
                                         r"dagnb cache verify"):
        entry.meta["created"]
    assert not entry.verify()


def test_a_head_damaged_past_a_glance_is_a_miss_set_aside_for_every_other_reader(tmp_path):
    _forge(tmp_path, GLANCEABLE_BUT_DAMAGED)
    with pytest.warns(DamagedEntryWarning, match="lacks required fields"):
        assert Store(tmp_path).lookup("s", KEY) is None  # (a run's lookup, a listing)
    assert Store(tmp_path).lookup("s", KEY, glance=True) is None  # set aside: gone


def test_a_memory_hit_in_a_fresh_process_reads_the_head_at_a_glance(tmp_path):
    """The real path: a fresh interpreter, a function stored by another one."""
    script = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {str(tmp_path)!r})
        import dagnb.cache.entry as entry_module
        import dagnb.cache.store as store_module
        from mod import f
        import dagnb
        parsed = []
        parse = entry_module._parse_meta
        entry_module._parse_meta = store_module._parse_meta = (
            lambda *a: parsed.append(a) or parse(*a))
        g = dagnb.Memory({str(tmp_path / "cache")!r}).cache(f)
        print(g(3), g(4), len(parsed))
    """)
    (tmp_path / "mod.py").write_text("def f(x):\n    return [x, x * 2]\n")
    first = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True)
    again = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                           check=True)
    assert first.stdout.split() == ["[3,", "6]", "[4,", "8]", "0"]  # misses: nothing read
    assert again.stdout.split() == ["[3,", "6]", "[4,", "8]", "0"]  # hits: no head parsed


def test_a_memory_hit_with_a_validation_callback_reads_the_whole_head(tmp_path):
    seen = []
    memory = Memory(tmp_path)

    def accept(metadata):
        seen.append(metadata["duration"])
        return True

    f = memory.cache(lambda x: x + 1, cache_validation_callback=accept)
    assert f(1) == 2 and f(1) == 2
    fresh = Memory(tmp_path).cache(lambda x: x + 1, cache_validation_callback=accept)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert fresh(1) == 2
    assert len(seen) == 2 and all(type(d) is float for d in seen)
