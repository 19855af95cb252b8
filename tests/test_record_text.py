"""dagnb.cache.record_text: a packed record's head and rest in their fixed layout are the
text the JSON encoder makes of their dicts, byte for byte (readers, old and new, parse
the same thing)."""

from __future__ import annotations

import json

import pytest

from dagnb.cache.pack_records import decode
from dagnb.cache.record_text import head_bytes, rest_bytes
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
