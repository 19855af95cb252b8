"""checks: the shared validators, their messages and their edge cases."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from dagnb import checks
from dagnb.checks import Invalid
from dagnb.errors import ConfigError, InvalidStepError


def test_all_is_sorted_and_complete() -> None:
    assert checks.__all__ == sorted(checks.__all__)
    assert all(hasattr(checks, name) for name in checks.__all__)


# -- Invalid and checked --------------------------------------------------------------
def test_invalid_is_a_value_error_that_says_what_would_pass() -> None:
    with pytest.raises(ValueError, match=r"^-1 is not valid; expected a whole number >= 0$"):
        checks.count(-1)
    try:
        checks.count(-1)
    except Invalid as bad:
        assert bad.value == -1 and bad.expected == "a whole number >= 0"


def test_checked_raises_the_callers_error_naming_what_and_the_value() -> None:
    with pytest.raises(ConfigError, match=r"^f\.yaml: max_retries = 'many' is not valid; "
                       r"expected a whole number >= 0$"):
        checks.checked(checks.count, "many", "f.yaml: max_retries", ConfigError, text=True)


@pytest.mark.parametrize("text", ["²", "3²"])
def test_a_digit_int_cannot_read_is_refused_in_one_line(text: str) -> None:
    """``DAGNB_MAX_RETRIES=²``: str.isdigit() takes it, int() does not (a ValueError)."""
    with pytest.raises(ConfigError, match=r"is not valid; expected a whole number >= 0$"):
        checks.checked(checks.count, text, "DAGNB_MAX_RETRIES", ConfigError, text=True)


def test_checked_passes_options_and_returns_the_parsed_value() -> None:
    assert checks.checked(checks.count, "3", "n", text=True, least=1) == 3


def test_checked_with_a_keyword_separator() -> None:
    with pytest.raises(ConfigError, match=r"^breaker failure_threshold=0 is not valid; "
                       r"expected a whole number >= 1$"):
        checks.checked(checks.count, 0, "breaker failure_threshold", ConfigError, sep="=",
                       least=1)


def test_checked_can_leave_a_secret_out() -> None:
    with pytest.raises(ValueError, match=r"^token is not valid; expected a mapping") as caught:
        checks.checked(checks.mapping_of_str, "ghp_SECRET", "token", show=False)
    assert "SECRET" not in str(caught.value)
    assert caught.value.__suppress_context__


# -- did you mean ---------------------------------------------------------------------
def test_did_you_mean_names_the_closest_choice() -> None:
    assert checks.did_you_mean("neds", ["needs", "image"]) == "did you mean 'needs'?"
    assert checks.did_you_mean(3, ["3x"]) == "did you mean '3x'?"  # not a string: str()


def test_did_you_mean_falls_back_to_otherwise() -> None:
    assert checks.did_you_mean("zzz", ["needs"]) == ""
    assert checks.did_you_mean("zzz", ["needs"], otherwise="known: needs") == "known: needs"
    assert checks.did_you_mean("x", []) == ""


def test_did_you_mean_cutoff() -> None:
    assert checks.did_you_mean("abcd", ["abxy"]) == ""  # ratio 0.5
    assert checks.did_you_mean("abcd", ["abxy"], cutoff=0.5) == "did you mean 'abxy'?"


def test_known_keys_names_the_first_unknown_key() -> None:
    checks.known_keys({"needs": 1}, ("needs", "run"), "wf.yml")
    with pytest.raises(ValueError, match=r"^wf\.yml: unknown key 'neds'; did you mean 'needs'\?$"):
        checks.known_keys({"run": 1, "neds": 2}, ("needs", "run"), "wf.yml")
    with pytest.raises(ConfigError, match=r"^x: unknown workflow key 'zzz'; known workflow keys: "
                       r"needs, run$"):
        checks.known_keys(["zzz"], ("needs", "run"), "x", ConfigError, noun="workflow key")


# -- text and names -------------------------------------------------------------------
def test_text_is_stripped_and_not_empty() -> None:
    assert checks.text("  a b ") == "a b"
    for value in ("", "   ", None, 3):
        with pytest.raises(Invalid, match="expected a non-empty string"):
            checks.text(value)


def test_path_takes_path_objects() -> None:
    assert checks.path(Path("a/b")) == "a/b"
    with pytest.raises(Invalid, match="expected a non-empty string"):
        checks.path("")


@pytest.mark.parametrize("value", ["a", "_a", "clean-data", "A1_b-2", "x" * 100])
def test_good_names(value: str) -> None:
    assert checks.name(value) == value


@pytest.mark.parametrize(
    "value", ["", "1a", "a b", "a.b", None, 7, "abc\n", "a\tb", "a\x00b", "\nabc"],
)
def test_bad_names(value: object) -> None:
    with pytest.raises(Invalid, match=r"expected letters, digits, '_' or '-'"):
        checks.name(value)


@pytest.mark.parametrize(("value", "expected"), [
    ("import", "a name other than a Python keyword (a Python step takes an upstream result "
               "as an argument of its name), for example 'import_data'"),
    ("x" * 101, "at most 100 characters (101 given)"),
    ("données", "ASCII letters, digits, '_' or '-', starting with a letter or '_' (for "
                "example 'clean_data')"),
])
def test_a_name_made_of_letters_says_what_else_it_breaks(value: str, expected: str) -> None:
    """'import' and 'données' are letters: 'use letters' did not say what was wrong."""
    with pytest.raises(Invalid) as refused:
        checks.name(value)
    assert refused.value.expected == expected


def test_a_bad_name_is_reported_on_one_line() -> None:
    with pytest.raises(InvalidStepError) as caught:
        checks.checked(checks.name, "abc\n", "step name", InvalidStepError, sep=" ")
    assert str(caught.value).startswith("step name 'abc\\n' is not valid;")
    assert "\n" not in str(caught.value)


def test_variable_names() -> None:
    assert checks.variable_name("HOME_2") == "HOME_2"
    for value in ("BAD-NAME", "2X", "", "A\n", None):
        with pytest.raises(Invalid, match="expected a variable name"):
            checks.variable_name(value)


# -- choices and mappings -------------------------------------------------------------
def test_one_of_lists_the_choices() -> None:
    assert checks.one_of("local", ("auto", "local")) == "local"
    with pytest.raises(Invalid, match=r"^'k8s' is not valid; expected 'auto', 'local' or "
                       r"'dagger'$"):
        checks.one_of("k8s", ("auto", "local", "dagger"))
    with pytest.raises(Invalid, match=r"expected 'only'$"):
        checks.one_of("x", ("only",))


def test_one_of_tells_bools_from_ints() -> None:
    policies = (True, False, "session")
    assert checks.one_of(True, policies) is True
    for value in (1, 0, 1.0):
        with pytest.raises(Invalid, match=r"expected True, False or 'session'"):
            checks.one_of(value, policies)


def test_mapping_of_str() -> None:
    assert checks.mapping_of_str({"A": 1, "B": "x", "C": True}) == {"A": "1", "B": "x",
                                                                    "C": "True"}
    for value in ([("A", "1")], {"": "x"}, {1: "x"}, {"A": None}, {"A": [1]}, None):
        with pytest.raises(Invalid, match="expected a mapping of names to strings"):
            checks.mapping_of_str(value)


# -- flags and numbers ----------------------------------------------------------------
def test_flags_are_bools_and_text_only_when_asked() -> None:
    assert checks.flag(False) is False
    assert checks.flag(" Yes ", text=True) is True and checks.flag("off", text=True) is False
    with pytest.raises(Invalid, match=r"^'yes' is not valid; expected True or False$"):
        checks.flag("yes")
    with pytest.raises(Invalid, match=r"^1 is not valid; expected True or False$"):
        checks.flag(1)
    with pytest.raises(Invalid, match=r"^'maybe' is not valid; expected true or false$"):
        checks.flag("maybe", text=True)


def test_counts_are_never_bools() -> None:
    assert checks.count(0) == 0 and checks.count(5, least=1) == 5
    for value in (True, False, 1.0, "1", None):
        with pytest.raises(Invalid, match="expected a whole number >= 0"):
            checks.count(value)


def test_counts_from_text() -> None:
    assert checks.count(" 8 ", text=True) == 8
    for value in ("-1", "1.5", "many", "", "true"):
        with pytest.raises(Invalid, match=rf"^{value!r} is not valid; expected a whole number"):
            checks.count(value, text=True)


def test_count_least() -> None:
    with pytest.raises(Invalid, match=r"^0 is not valid; expected a whole number >= 1$"):
        checks.count(0, least=1)
    assert checks.count(-3, least=-5) == -3


def test_numbers_are_finite_and_never_bools() -> None:
    assert checks.number(2) == 2.0 and isinstance(checks.number(2), float)
    for value in (True, -0.5, math.inf, math.nan, "1", None, [1]):
        with pytest.raises(Invalid, match=r"expected a number >= 0$"):
            checks.number(value)


def test_numbers_from_text_and_their_kind() -> None:
    assert checks.number(" 0.5 ", text=True) == 0.5
    with pytest.raises(Invalid, match=r"^'fast' is not valid; expected a number >= 0$"):
        checks.number("fast", text=True)
    with pytest.raises(Invalid, match=r"^-1 is not valid; expected a number of seconds >= 0$"):
        checks.number(-1, kind="a number of seconds")
    with pytest.raises(Invalid, match=r"expected a number >= 0.5$"):
        checks.number(0.25, least=0.5)


# -- durations ------------------------------------------------------------------------
@pytest.mark.parametrize(("value", "seconds"), [
    (30, 30.0), (0.5, 0.5), ("30", 30.0), ("30s", 30.0), (" 10 m ", 600.0), ("1h", 3600.0),
    ("1.5h", 5400.0), ("250ms", 0.25), ("2d", 172800.0),
])
def test_parse_duration(value: object, seconds: float) -> None:
    assert checks.parse_duration(value) == seconds  # type: ignore[arg-type]


def test_parse_duration_keeps_none() -> None:
    assert checks.parse_duration(None) is None


@pytest.mark.parametrize("value, seconds", [
    ("1h30m", 5400), ("1h 30m", 5400), ("2d 4h", 187_200), ("1m30s", 90), ("10 minutes", 600),
    ("2 hours", 7200), ("1 day", 86_400), ("5 mins", 300), ("1 hour and 30 minutes", 5400),
    ("250ms", 0.25), ("1.5h", 5400), (" 30 ", 30), ("2w", 1_209_600), ("1 week", 604_800),
    ("5 weeks", 3_024_000)])
def test_parse_duration_reads_durations_as_people_write_them(value: str, seconds: float) -> None:
    # (Go's and Dagger's 1h30m, and the words: "10 minutes" was refused, naming 10m)
    assert checks.parse_duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-5s", "1.5.h", "5 months", "", True, False, [5],
                                   "30s\nrm -rf /", "1h,", "1h and", "10M", "10 m s", "1h30",
                                   "10mx"])
def test_parse_duration_refuses_what_is_not_a_duration(value: object) -> None:
    with pytest.raises(InvalidStepError, match=r"^timeout .* is not a duration; use seconds"):
        checks.parse_duration(value, what="timeout")  # type: ignore[arg-type]


@pytest.mark.parametrize("value", [0, -5, -0.1, "0s", math.nan])
def test_parse_duration_refuses_durations_not_above_zero(value: object) -> None:
    with pytest.raises(InvalidStepError, match=r"^ttl .* must be greater than zero$"):
        checks.parse_duration(value, what="ttl")  # type: ignore[arg-type]


def test_parse_duration_raises_the_callers_error() -> None:
    with pytest.raises(ConfigError, match=r"^run timeout 'x' is not a duration"):
        checks.parse_duration("x", what="run timeout", error=ConfigError)


def test_parse_duration_is_the_one_step_uses() -> None:
    from dagnb.model import step

    assert step.parse_duration is checks.parse_duration


@pytest.mark.parametrize(("value", "seconds"), [
    (None, None), ("", None), ("none", None), (" NULL ", None), ("1e3", 1000.0),
    ("90", 90.0), ("1.5h", 5400.0), (60, 60.0),
])
def test_duration_settings(value: object, seconds: float | None) -> None:
    assert checks.duration(value) == seconds


@pytest.mark.parametrize("value", ["soon", "-5", -5, 0, "0", True, "nan", [1]])
def test_bad_duration_settings(value: object) -> None:
    with pytest.raises(Invalid, match=r"expected seconds or a duration such as '30m' "
                       r"\(none for no limit\)$"):
        checks.duration(value)


# -- short_repr -----------------------------------------------------------------------
class _Lines:
    def __repr__(self) -> str:
        return "1 2\n3 4"  # (a frame's or an array's repr is lines)


class _Broken:
    def __repr__(self) -> str:
        raise RuntimeError("no repr")


def test_short_repr_is_cut_and_one_line_when_asked() -> None:
    assert checks.short_repr("x" * 10, 8) == "'xxxx..."
    assert checks.short_repr(_Broken()) == "<_Broken>"
    assert checks.short_repr(_Lines()) == "1 2\n3 4"  # (a key's description: as it is)
    assert checks.short_repr(_Lines(), one_line=True) == "<_Lines>"
    assert checks.short_repr([1, 2], one_line=True) == "[1, 2]"


# -- missing_file ---------------------------------------------------------------------
@pytest.mark.parametrize(("missing", "said"), [
    ("wf.yaml", "did you mean '{d}/wf.yml'?"),  # (the other YAML suffix)
    ("WF.yml", "did you mean '{d}/wf.yml'?"),
    ("pandas_etl.yml", "did you mean '{d}/pandas-etl.yml'?"),
    ("analysis.ipynb", "did you mean '{d}/analyss.ipynb'?"),  # (a notebook: of its kind)
    ("zzz.yml", "check the path"),  # (".yml" alone makes no name close)
    ("sweep.ipynb", "check the path"),  # (sweep.yml is a workflow file, not a notebook)
    ("gone/wf.yml", "check the path"),  # (its folder is missing too)
])
def test_a_missing_file_is_said_with_the_closest_file_of_its_kind(
        tmp_path: Path, missing: str, said: str) -> None:
    for name in ("wf.yml", "pandas-etl.yml", "sweep.yml", "analyss.ipynb", "notes.txt"):
        (tmp_path / name).write_text("")
    (tmp_path / "wf.yml.d").mkdir()  # (a folder is no file to run)
    message = checks.missing_file("workflow file", tmp_path / missing)
    assert message == (f"workflow file {str(tmp_path / missing)!r} does not exist; "
                       + said.format(d=tmp_path))


def test_listed_names_every_one_up_to_most_then_counts_the_rest():
    assert checks.listed(["a", "b"]) == "a, b"
    assert checks.listed([f"s{i}" for i in range(25)], most=3) == "s0, s1, s2 and 22 more"


def test_one_of_names_the_close_choice() -> None:
    # (executor='Dagger' said the three choices, not which one)
    with pytest.raises(Invalid) as refused:
        checks.one_of("Dagger", ("auto", "local", "dagger"))
    assert refused.value.expected == "'auto', 'local' or 'dagger'; did you mean 'dagger'?"
    with pytest.raises(Invalid) as refused:
        checks.one_of("docker", ("auto", "local", "dagger"))
    assert refused.value.expected == "'auto', 'local' or 'dagger'"
