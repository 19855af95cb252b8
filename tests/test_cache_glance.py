"""A ``Memory`` hit reads a packed entry's head at a glance (its expiry and inline
result: :func:`dagnb.cache.record_text.head_at_a_glance`) and parses the rest only when
someone asks; every other reader parses and checks the head whole, as before."""

from __future__ import annotations

import json

import pytest

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
    assert not glanced.head_read  # type: ignore[union-attr]
    assert store.lookup("s", KEY) is glanced and glanced.head_read  # type: ignore[union-attr]
    assert store.lookup("s", KEY, glance=True) is glanced


def test_an_entry_whose_expiry_was_written_as_an_int_expires_the_same(tmp_path, clock):
    """A time written as an int (an older writer, an injected clock): the glance reads
    it as the parse does."""
    _forge(tmp_path, _head(expires=1060))
    clock.now = 1059.5
    entry = Store(tmp_path, clock=clock).lookup("s", KEY, glance=True)
    assert entry is not None and not entry.head_read
    assert entry.expires == 1060 and type(entry.expires) is int
    clock.now = 1060
    assert Store(tmp_path, clock=clock).lookup("s", KEY, glance=True) is None


def _forge(folder, head: bytes) -> None:
    """A record whose digest holds but whose head is not one dagnb writes."""
    store = Store(folder)
    store._append("s", KEY, ENTRY, head + b'\n{"components":{}}')
    store.close()


def _head(**fields) -> bytes:
    head = {"format": 1, "step": "s", "key": KEY, "created": 5.0, "expires": None,
            "duration_s": 1, "exit_code": 0, "output_digest": "d" * 32, "size_bytes": 2,
            "hits": 0, "last_used": 5.0, "has_result": True, "log_lines": 0, "packed": True,
            "inline": {"json": 7}}
    head.update(fields)
    return json.dumps({k: v for k, v in head.items() if v is not _GONE},
                      separators=(",", ":")).encode()


_GONE = object()
# what a glance checks; the parse that every other reader makes finds each damaged
FOREIGN = {
    "another step": _head(step="t"),
    "another key": _head(key="b" * 32),
    "another format": _head(format=2),
    "created as text": _head(created="5"),
    "expiry as text": _head(expires="5"),
    "expiry not JSON": _head(expires=7.0).replace(b'"expires":7.0', b'"expires":+inf'),
    "output digest as a number": _head(output_digest=5),
    "no output digest": _head(output_digest=_GONE),
    "provenance not JSON": _head(provenance={}).replace(b'"provenance":{}', b'"provenance":{x'),
}


@pytest.mark.parametrize("raw", FOREIGN.values(), ids=FOREIGN.keys())
def test_a_head_no_dagnb_writes_is_not_served_at_a_glance(tmp_path, raw):
    """A record whose digest holds but whose head is another writer's: a miss (set aside,
    with a warning) for a Memory hit as for every other reader, as before the glance."""
    _forge(tmp_path, raw)
    with pytest.warns(DamagedEntryWarning):
        assert Store(tmp_path).lookup("s", KEY, glance=True) is None
    assert Store(tmp_path).lookup("s", KEY) is None  # set aside: gone


# past what a glance reads: a value between the expiry and the output digest
PAST_A_GLANCE = _head().replace(b'"duration_s":1,', b'"duration_s":x,')


def test_a_head_damaged_past_what_a_glance_reads_fails_loudly_when_parsed(tmp_path):
    _forge(tmp_path, PAST_A_GLANCE)
    entry = Store(tmp_path).lookup("s", KEY, glance=True)
    assert entry is not None and entry.inline == {"json": 7}
    with pytest.raises(CacheError, match=r"s/aaaaaaaaaaaa is damaged \(meta.json is not "
                                         r"valid JSON\); `dagnb cache verify` sets it aside"):
        entry.meta["created"]
    assert not entry.verify()


def test_a_head_damaged_past_a_glance_is_a_miss_set_aside_for_every_other_reader(tmp_path):
    _forge(tmp_path, PAST_A_GLANCE)
    store = Store(tmp_path)
    assert store.lookup("s", KEY, glance=True) is not None
    with pytest.warns(DamagedEntryWarning, match="not valid JSON"):
        assert store.lookup("s", KEY) is None  # (a run's lookup: the same entry, parsed)
    assert Store(tmp_path).lookup("s", KEY, glance=True) is None  # set aside: gone


def _layout(**fields) -> bytes:
    """A head in the layout dagnb writes (what a run's hit reads without the decoder)."""
    from dagnb.cache.record_text import head_bytes

    head = json.loads(_head(duration_s=0.5, **fields))
    return head_bytes({k: v for k, v in head.items() if v is not _GONE})


# in dagnb's layout, but with a value the parse refuses: a run's hit refuses it too
DAMAGED_IN_LAYOUT = {
    "a count below zero": _layout(size_bytes=-1),
    "an inline null": _layout(inline={"json": 7}).replace(b'{"json":7}', b"null"),
    "hits not whole": _layout().replace(b'"hits":0', b'"hits":0.5'),
    "exit code as text": _layout().replace(b'"exit_code":0', b'"exit_code":"0"'),
    "a provenance list": _layout(provenance={"a": 1}).replace(b'{"a":1}', b"[1]"),
}


@pytest.mark.parametrize("raw", DAMAGED_IN_LAYOUT.values(), ids=DAMAGED_IN_LAYOUT.keys())
def test_a_run_refuses_a_head_of_its_layout_whose_values_the_parse_refuses(tmp_path, raw):
    _forge(tmp_path, raw)
    with pytest.warns(DamagedEntryWarning):
        assert Store(tmp_path).lookup("s", KEY) is None
    assert Store(tmp_path).lookup("s", KEY) is None  # set aside: gone


def test_a_run_reads_a_head_of_its_layout_as_the_parse_does(tmp_path):
    from dagnb.cache.record_text import head_read_whole

    raw = _layout(provenance={"image_ref": "img@sha256:1"}, exit_code=3, log_lines=2)
    assert head_read_whole(raw, "s", KEY) is not None  # (read without the decoder)
    _forge(tmp_path, raw)
    entry = Store(tmp_path).lookup("s", KEY)
    assert entry is not None and entry.head_read
    assert entry.head == json.loads(raw) and list(entry.head) == list(json.loads(raw))
    assert (entry.head.get("exit_code"), entry.head.get("log_lines")) == (3, 2)
