"""dagnb.model.jsontext: the same text as ``json.JSONEncoder`` with the same options,
byte for byte (cache keys are digests of it, and readers parse it)."""

from __future__ import annotations

import enum
import json

import pytest

from dagnb.model.jsontext import encoder, scalar_text


class _Number(enum.IntEnum):
    ONE = 1


class _Text(str):
    def __str__(self) -> str:  # (what a format of it would write: json writes its text)
        return "other"


_CYCLE: list = []
_CYCLE.append(_CYCLE)

VALUES = [
    0, 1, -5, 10**30, 1.5, 0.1, 1e300, -0.0, float("nan"), float("inf"), True, False, None,
    "a", "é\u2028\ud800\"\\\n\x00", {}, [], {"a": 1, "b": [1, 2, {"x": 1}]}, {"b": 1, "a": 2},
    {1: 2}, {"a": {"b": {"c": 1}}}, [1, [2, [3]]], (1, 2), {"a": (1, 2)}, _Number.ONE,
    {"a": _Number.ONE}, {_Text("k"): _Text("v")}, {"a": float("nan")}, {1: 1, "a": 2},
    {None: 1}, {True: 1}, {1.5: 2}, [None, True, 2.5, "x"], {"json": 0}, {"json": [1, 2]},
    {"a": 1}, {"a": True}, {"a": "1"}, {"a": 1.0}, {"a": None}, {"a": "x", "b": {"c": "x"}},
    {"a": {"b": [1, {"c": 2}]}}, [[[[[1]]]]], {"a": {"b": {"c": {"d": {"e": 1}}}}},
    {"é": "ü\ud800"}, {"x": frozenset()}, {"a": {1, 2}}, {"a": b"x"}, _CYCLE, {"c": _CYCLE},
    {"format": 1, "step": "s0", "created": 1796065246.8247442, "expires": None,
     "has_result": True, "inline": {"json": 0}, "provenance": {"image_ref": "a@sha256:0"}},
]
OPTIONS = [
    {}, {"sort_keys": True}, {"separators": (",", ":")}, {"allow_nan": False},
    {"sort_keys": True, "separators": (",", ":"), "ensure_ascii": False},
]


def _outcome(encode, value):
    try:
        return encode(value)
    except Exception as exc:  # the same error type as the stdlib's, too
        return type(exc)


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_the_text_is_the_stdlib_text(options):
    ours, theirs = encoder(**options), json.JSONEncoder(**options).encode
    for value in VALUES + VALUES[::-1]:  # (after a failure too: nothing is left stale)
        assert _outcome(ours, value) == _outcome(theirs, value), value


def test_a_value_that_holds_itself_is_refused_as_json_refuses_it():
    with pytest.raises(ValueError, match="Circular reference"):
        encoder()(_CYCLE)


class _Level(enum.IntEnum):
    LOW = 1


@pytest.mark.parametrize("value", [0, -1, 10**30, -(10**30), True, False, None])
def test_a_scalar_is_written_as_the_encoder_writes_it(value):
    assert scalar_text(value) == json.dumps(value)


@pytest.mark.parametrize("value", [1.0, "1", _Level.LOW, [1], {"a": 1}, b"1"])
def test_any_other_value_is_left_to_the_encoder(value):
    assert scalar_text(value) is None  # (an int subclass too: the encoder says what it is)


def _big(value: object) -> dict:
    """A record holding ``value`` where object_text joins it (FLAT_FROM items)."""
    return {"run": "r1", "states": value, "n": 2}


_FLAT_FROM = 1_000
BIG_VALUES = [
    {f"s{i}": "cached" for i in range(_FLAT_FROM)},
    {f"step-{i}_x.y": f"{i:064x}" for i in range(_FLAT_FROM)},
    {f"s{i}": 1796065246.8247442 + i / 7 for i in range(_FLAT_FROM)},
    [f"s{i}" for i in range(_FLAT_FROM)],
    # what must be escaped or written otherwise: each falls back to the encoder
    {f"s{i}": 'say "hi"' for i in range(_FLAT_FROM)},
    {f"s{i}": "back\\slash" for i in range(_FLAT_FROM)},
    {f"é{i}": "x" for i in range(_FLAT_FROM)},
    {f"s{i}": "tab\there" for i in range(_FLAT_FROM)},
    {f"s{i}": float("nan") if i == 5 else 1.5 for i in range(_FLAT_FROM)},
    {f"s{i}": float("inf") if i == 5 else 1.5 for i in range(_FLAT_FROM)},
    {f"s{i}": 1 if i == 5 else 1.5 for i in range(_FLAT_FROM)},
    {f"s{i}": True for i in range(_FLAT_FROM)},
    {f"s{i}": None if i == 5 else "x" for i in range(_FLAT_FROM)},
    {i: "x" for i in range(_FLAT_FROM)},
    {f"s{i}": _Text("v") for i in range(_FLAT_FROM)},
    {_Text(f"s{i}"): "v" for i in range(_FLAT_FROM)},
    [_Text(f"s{i}") for i in range(_FLAT_FROM)],
    [f"s{i}" if i else 0 for i in range(_FLAT_FROM)],
    [f's"{i}' for i in range(_FLAT_FROM)],
    {f"s{i}": [1] for i in range(_FLAT_FROM)},
]


@pytest.mark.parametrize("value", BIG_VALUES, ids=range(len(BIG_VALUES)))
def test_a_records_big_flat_values_are_written_as_json_writes_them(value: object) -> None:
    from dagnb.model import jsontext

    assert jsontext.FLAT_FROM == _FLAT_FROM
    record = _big(value)
    assert jsontext.object_text(record) == json.dumps(record, separators=(",", ":"))


@pytest.mark.parametrize("name", [1, 1.5, True, None, _Text("k")])
def test_a_record_named_otherwise_than_by_str_is_written_as_json_writes_it(
        name: object) -> None:
    from dagnb.model import jsontext

    record = {name: [f"s{i}" for i in range(_FLAT_FROM)], "n": 1}
    assert jsontext.object_text(record) == json.dumps(record, separators=(",", ":"))


def test_a_big_flat_value_is_joined_not_encoded(monkeypatch: pytest.MonkeyPatch) -> None:
    """The join is what object_text uses for a flat value of FLAT_FROM items (else the
    tests above compare the encoder with itself)."""
    from dagnb.model import jsontext

    encoded: list[object] = []
    real = jsontext._COMPACT
    monkeypatch.setattr(jsontext, "_COMPACT", lambda v: encoded.append(v) or real(v))
    record = _big({f"s{i}": "cached" for i in range(_FLAT_FROM)})
    text = jsontext.object_text(record)
    assert encoded == ["run", "r1", "states", "n", 2]  # (the names, the small values)
    assert json.loads(text) == record
