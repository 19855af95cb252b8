"""dagnb.cache.record_text: a packed record's head and rest in their fixed layout are the
text the JSON encoder makes of their dicts, byte for byte (readers, old and new, parse
the same thing)."""

from __future__ import annotations

import json
import math
import random

import pytest

from dagnb.cache.entry import _HEAD_REQUIRED, _parse_meta
from dagnb.cache.pack_records import decode
from dagnb.cache.record_text import (
    head_at_a_glance,
    head_bytes,
    head_read_whole,
    packed_head_bytes,
    rest_bytes,
)
from dagnb.cache.store import Store


def _compact(value):
    return json.dumps(value, separators=(",", ":")).encode()


def _head(**changes):
    head = {
        "format": 1, "step": "s0", "key": "436711d9538da2402301b2c6886c2dba",
        "created": 1796065246.8247442, "expires": None, "duration_s": 0.00022732300021743868,
        "exit_code": 0, "output_digest": "ebfb17078b662b3ceacac6c2df50d6df",
        "size_bytes": 11, "hits": 0, "last_used": 1796065246.8247442, "has_result": True,
        "log_lines": 0, "packed": True,
    }
    head.update(changes)
    return head


@pytest.mark.parametrize("head", [
    _head(),
    _head(inline={"json": [1, "é"]}),
    _head(provenance={"image_ref": "alpine@sha256:00"}),
    _head(inline={"pickle": "gASV"}, provenance={"image_ref": "x"}),
    _head(expires=1796069999.5, created=5, last_used=5, exit_code=3, has_result=False),
    _head(step="ünï \"code\"\n", last_used=2.0),
    _head(duration_s=float("inf"), expires=float("nan"), created=-0.0, last_used=1e300),
    _head(exit_code=True),  # another shape: encoded as a dict
    _head(extra=1),
    {"format": 1, "step": "s"},
], ids=range(10))
def test_the_head_is_its_dicts_json(head):
    """The same values, floats exactly, names in the same order; the same text but for
    the digits of a float (17 significant ones, which give it back exactly)."""
    text = head_bytes(head)
    parsed = json.loads(text)
    assert parsed == json.loads(_compact(head))
    assert list(parsed) == list(head)
    assert [type(value) for value in parsed.values()] == [type(value) for value in head.values()]


def test_a_time_is_written_with_digits_that_give_it_back():
    for value in (1796065246.8247442, 0.1, 1e-05, 2.0, -3.0, 1e16, 5e-324, 1.7976931348623157e308):
        head = _head(created=value, last_used=value, duration_s=value / 3)
        parsed = json.loads(head_bytes(head))
        assert (parsed["created"], parsed["duration_s"]) == (value, value / 3)
        assert type(parsed["created"]) is float  # (2.0 is not read back as 2)


@pytest.mark.parametrize("logs", [None, [{"stream": "stdout", "line": "é\tx", "attempt": 1}]])
def test_the_rest_is_its_dicts_json(logs):
    components = {"format": "553f", "params": "ae7b", "upstream:a b": "00"}
    describe = {"format": "dagnb-key-2", "params": '{"i":0}', "code": "def f():\n  return 'é'"}
    expected = {"components": components, "describe": describe, "files": {}, "digests": {}}
    if logs:
        expected["packed_logs"] = logs
    for _ in range(2):  # (the second time from remembered items)
        text = rest_bytes(components, describe, None if logs is None else
                          json.dumps(logs, separators=(",", ":")))
        assert text == _compact(expected)


def test_a_rest_of_values_other_than_text_is_still_its_json():
    components = {"a": 1, "b": True, "c": None}
    assert rest_bytes(components, {}, None) == _compact(
        {"components": components, "describe": {}, "files": {}, "digests": {}})


def test_a_saved_record_reads_back_as_the_entry_it_made(tmp_path):
    store = Store(tmp_path / "cache")
    entry = store.save("s", "k" * 32, out_dir=None, logs=[{"stream": "stdout", "line": "x"}],
                       inline={"json": {"a": 1.5}}, provenance={"image_ref": "img@sha256:1"},
                       ttl=60, duration_s=0.25)
    (records, _, problems, _) = decode(
        next((tmp_path / "cache" / ".packs").glob("*.pack")).read_bytes(), "p")
    assert not problems
    head, rest = records[-1].body.split(b"\n")
    meta = {name: entry.meta[name] for name in entry.meta}
    assert {**json.loads(head), **json.loads(rest)} == meta
    assert json.loads(head)["inline"] == {"json": {"a": 1.5}}


@pytest.mark.parametrize("head", [
    _head(), _head(inline={"json": 7}), _head(inline={"json": None}, expires=5.5),
    _head(inline={"pickle": "gASV"}, provenance={"image_ref": "x"}, last_used=2.0),
], ids=range(4))
def test_the_head_of_a_stores_shape_is_written_as_head_bytes_writes_it(head):
    inline = head.get("inline")
    compact = None if inline is None else json.dumps(inline, separators=(",", ":"))
    assert packed_head_bytes(head) == packed_head_bytes(head, compact) == head_bytes(head)


@pytest.mark.parametrize("result", [0, -12, 10**17, True, False, None, "x", [1, 2]])
def test_a_saved_scalar_result_is_in_its_records_head_as_head_bytes_writes_it(
        tmp_path, result):
    """Scalars are written without the encoder: the same head as the encoder's."""
    store = Store(tmp_path / "cache")
    entry = store.save("s", "k" * 32, out_dir=None, inline={"json": result}, duration_s=0.5)
    (records, _, problems, _) = decode(
        next((tmp_path / "cache" / ".packs").glob("*.pack")).read_bytes(), "p")
    assert not problems
    head = records[-1].body.split(b"\n")[0]
    assert head == head_bytes(dict(entry._head))
    assert json.loads(head)["inline"] == {"json": result}


_TRICKY = ',"expires":1,"packed":true,"inline":{"json":2}},"provenance":'
# the layout's own names, with values, inside an inline result and a provenance
_NESTED = {"a": 1, "packed": True, "inline": {"wrong": 1}, "provenance": 0,
           "expires": 5, "output_digest": 3}


def _same(seen, head):
    """Whether ``seen`` is the (expires, inline) of ``head`` (NaN equal to NaN)."""
    expires, inline = seen
    wanted = head["expires"]
    same_expiry = (expires is None and wanted is None) or (
        expires is not None and wanted is not None
        and (expires == wanted or (math.isnan(expires) and math.isnan(wanted))))
    return same_expiry and type(expires) is type(wanted) and inline == head.get("inline")


def _glance(head):
    return head_at_a_glance(head_bytes(head), head["step"], head["key"])


@pytest.mark.parametrize("head", [
    _head(),
    _head(inline={"json": [1, "é"]}),
    _head(provenance={"image_ref": "alpine@sha256:00"}),
    _head(inline={"pickle": "gASV"}, provenance={"image_ref": _TRICKY}),
    _head(expires=1796069999.5, created=5, last_used=5, exit_code=3, has_result=False),
    _head(step=f"ünï \"code\"\n{_TRICKY}\\", last_used=2.0),
    _head(duration_s=float("inf"), expires=float("nan"), created=-0.0, last_used=1e300),
    _head(expires=float("inf"), inline={"json": {"a": _TRICKY, "b": {"inline": {}}}}),
    _head(expires=3, inline={"json": None}),
    _head(inline={"json": _NESTED}, provenance=_NESTED),
    _head(provenance={"a": 1, "inline": {"x": 1}, "provenance": 0}),
    _head(exit_code=True, inline={"json": _NESTED}),  # (encoded as a dict: the same text)
], ids=range(12))
def test_a_head_read_at_a_glance_gives_what_parsing_it_gives(head):
    """Its expiry and inline result, whatever the strings and mappings around them hold."""
    seen = _glance(head)
    assert seen is not None and _same(seen, head)


_KEY = _head()["key"]


@pytest.mark.parametrize("raw", [
    head_bytes(_head(format=2)),  # another format: parsed whole (and refused there)
    _compact({"step": "s0", **_head()}),  # another order
    json.dumps(_head(), separators=(", ", ": ")).encode(),  # spaces
    head_bytes(_head(inline={"json": "é"})).replace(b"\\u00e9", "é".encode()),  # not ASCII
    head_bytes(_head(inline={"json": 1}))[:-1],  # no end
    head_bytes(_head(inline={"json": 1})).replace(b'{"json":1}', b'[1]'),  # not a mapping
    head_bytes(_head(inline={"json": 1})).replace(b'{"json":1}', b'{"json":1'),
    head_bytes(_head()) + b"x",
    head_bytes(_head()).replace(b'"expires":null', b'"expires":"soon"'),
    head_bytes(_head()).replace(b',"packed":true', b''),
    b'{"format":1,"step":"s0"}',
    b"",
    head_bytes(_head(step="s1")),  # another step's, or another key's
    head_bytes(_head(key="0" * 32)),
    _compact(_head(created="5")),  # times and digest not numbers and text
    _compact(_head(expires=True)),
    _compact(_head(output_digest=5)),
    head_bytes(_head()).replace(b'"output_digest"', b'"digest"'),
    head_bytes(_head(expires=7.5)).replace(b"7.5", b"+7.5"),  # not JSON (float() reads it)
    head_bytes(_head(expires=7.5)).replace(b"7.5", b"7_5"),
    head_bytes(_head(provenance={"a": 1})).replace(b'{"a":1}', b'{"a":1'),
    head_bytes(_head(provenance={"a": 1})).replace(b'{"a":1}', b'[1]'),
    head_bytes(_head(provenance={"a": 1})) + b"}",
], ids=range(23))
def test_a_head_of_another_layout_or_that_does_not_hold_is_not_read_at_a_glance(raw):
    assert head_at_a_glance(raw, "s0", _KEY) is None


def test_a_glance_is_what_parsing_gives_over_random_heads():
    """Random names, times, inline results and provenances (quotes, backslashes, braces,
    the layout's names as text and as keys with values): the glance agrees with the
    parse every time."""
    rng = random.Random(16)
    alphabet = ['"', "\\", "{", "}", ",", ":", "é", "\n", "a", " ", "expires", "inline",
                '"packed":true', _TRICKY]
    names = ["expires", "inline", "packed", "provenance", "output_digest", "created", "x"]

    def text():
        return "".join(rng.choice(alphabet) for _ in range(rng.randrange(6)))

    def value(depth=0):
        kind = rng.randrange(7 if depth < 2 else 5)
        if kind == 5:
            return {rng.choice([text(), *names]): value(depth + 1)
                    for _ in range(rng.randrange(4))}
        if kind == 6:
            return [value(depth + 1) for _ in range(rng.randrange(3))]
        return [None, rng.random() * 1e9, text(), rng.randrange(-5, 5), rng.random() < 0.5][kind]

    for _ in range(3000):
        changes = {"step": text() or "s", "key": text() or "k",
                   "expires": rng.choice([None, rng.random() * 2e9, float("nan"), 7])}
        if rng.random() < 0.7:
            changes["inline"] = {"json": value()}
        if rng.random() < 0.3:
            changes["provenance"] = value(1) if rng.random() < 0.5 else {"image_ref": text()}
            if type(changes["provenance"]) is not dict:
                changes["provenance"] = {"v": changes["provenance"]}
        head = _head(**changes)
        seen = _glance(head)
        assert seen is not None and _same(seen, head), head


def _parsed(raw, step="s0", key=_KEY):
    """What every reader but a glance made of a head: the dict, or None when refused."""
    head, problem = _parse_meta(raw, step, key, _HEAD_REQUIRED)
    return None if problem is not None else head


def _read_whole(raw, step="s0", key=_KEY):
    head = head_read_whole(raw, step, key)
    assert head is None or (_parsed(raw, step, key) == head and (
        [type(v) for v in head.values()] == [type(v) for v in _parsed(raw, step, key).values()]
        and list(head) == list(_parsed(raw, step, key)))), raw
    return head


@pytest.mark.parametrize("head", [
    _head(),
    _head(inline={"json": [1, "é"]}),
    _head(provenance={"image_ref": "alpine@sha256:00"}),
    _head(inline={"pickle": "gASV"}, provenance={"image_ref": _TRICKY}),
    _head(expires=1796069999.5, exit_code=-3, has_result=False, log_lines=7, hits=2),
    _head(duration_s=1e300, created=-0.0, last_used=5e-324, size_bytes=0),
    _head(inline={"json": _NESTED}, provenance=_NESTED),
], ids=range(7))
def test_a_head_read_whole_is_the_dict_parsing_it_gives(head):
    """A run's hit reads the head of dagnb's layout without the JSON decoder: the same
    fields, values, types and order as the parse (and its checks) give."""
    assert _read_whole(head_bytes(head)) == head


@pytest.mark.parametrize("raw", [
    head_bytes(_head(created=5, last_used=5)),  # int times: parsed (and served) as before
    head_bytes(_head(duration_s=float("inf"))),  # Infinity: parsed
    head_bytes(_head(output_digest="a\\b")),  # an escape: parsed
    head_bytes(_head(exit_code=None)),  # another shape: parsed
    head_bytes(_head(inline={"json": 1})).replace(b'{"json":1}', b"null"),  # refused
    head_bytes(_head(size_bytes=-1)),  # refused by the parse's checks
    head_bytes(_head()).replace(b'"hits":0', b'"hits":1.5'),
    head_bytes(_head()).replace(b'"log_lines":0', b'"log_lines":true'),
    head_bytes(_head(exit_code=3)).replace(b'"exit_code":3', b'"exit_code":03'),  # not JSON
    head_bytes(_head(step="s 0")),  # no name a cache folder holds: refused
    head_bytes(_head(step="s1")),  # another entry's: refused
    head_bytes(_head(displays=2)),  # another shape: parsed
    head_bytes(_head(provenance={"a": 1})) + b"}",
], ids=range(13))
def test_a_head_the_pattern_does_not_take_is_left_to_the_parse(raw):
    step = "s 0" if b'"s 0"' in raw else "s0"
    assert head_read_whole(raw, step, _KEY) is None


def test_a_head_read_whole_is_never_one_the_parse_refuses_over_damaged_heads():
    """Heads of dagnb's layout with a character dropped, doubled or changed anywhere:
    what the reader takes, the parse takes and reads alike; the rest is left to it."""
    rng = random.Random(7)
    heads = [head_bytes(_head()), head_bytes(_head(inline={"json": [1, {"a": None}]},
                                                   provenance={"image_ref": "x"}, expires=9.5))]
    taken = 0
    for _ in range(4000):
        raw = bytearray(rng.choice(heads))
        at = rng.randrange(len(raw))
        change = rng.randrange(3)
        if change == 0:
            del raw[at]
        elif change == 1:
            raw.insert(at, raw[at])
        else:
            raw[at] = ord(rng.choice('0123456789-+.eE"\\,:{}[]ntfx \x01'))
        taken += _read_whole(bytes(raw)) is not None
    assert taken  # (some changes leave a head dagnb could have written)
