"""Step: validation of every field, durations, YAML data."""

from __future__ import annotations

import dataclasses
import re

import pytest

from dagnb import InvalidStepError, Step
from dagnb.model.contract import contract_env
from dagnb.model.step import parse_duration


def test_shell_and_argv_and_function_kinds() -> None:
    assert Step("a", run="echo hi").kind == "shell"
    assert Step("b", run=["echo", "hi"]).kind == "argv"
    assert Step("c", func=lambda: 1).kind == "python"


@pytest.mark.parametrize("name", ["", "1abc", "has space", "a.b", "class", None, "x" * 101])
def test_invalid_names_are_rejected_with_the_name(name: object) -> None:
    with pytest.raises(InvalidStepError, match=r"step name .* is not valid"):
        Step(name, run="true")  # type: ignore[arg-type]


def test_exactly_one_of_run_and_func() -> None:
    with pytest.raises(InvalidStepError, match="exactly one of run="):
        Step("a")
    with pytest.raises(InvalidStepError, match="exactly one of run="):
        Step("a", run="true", func=lambda: 1)


def test_params_must_be_json_and_the_one_that_is_not_is_named() -> None:
    with pytest.raises(InvalidStepError, match=r"step 'a': param 'when' must be a JSON value"):
        Step("a", run="true", params={"n": 1, "when": object()})
    with pytest.raises(InvalidStepError, match=r"step 'a': param 'ratio' must be a JSON value"):
        Step("a", run="true", params={"ratio": float("nan")})


@pytest.mark.parametrize("run", ["echo x; " * 20_000, ["python3", "-c", "1;" * 70_000]])
def test_a_command_longer_than_linux_takes_in_one_argument_is_refused(run) -> None:
    with pytest.raises(InvalidStepError, match=r"^step 'a': run is 1[46]0,000 bytes, over the "
                       r"131,072 bytes Linux takes in one argument; put it in a file"):
        Step("a", run=run)
    assert Step("a", run="echo x; " * 16_000).kind == "shell"  # 128,000 bytes: it fits


def test_a_shell_step_reading_the_variable_of_a_too_long_param_is_refused() -> None:
    ids = list(range(20_000))
    with pytest.raises(InvalidStepError, match=r"param 'ids' is too long for \$DAGNB_PARAM_IDS, "
                       r"which its run reads .* read it from the JSON file \$DAGNB_PARAMS"):
        Step("a", run='echo "$DAGNB_PARAM_IDS"', params={"ids": ids})
    assert Step("a", run='cat "$DAGNB_PARAMS"', params={"ids": ids}).params["ids"] == ids


def test_every_executor_s_variables_leave_out_a_param_too_long_for_one(tmp_path) -> None:
    step = Step("a", run="true", params={"ids": list(range(20_000)), "short": "x" * 32_768,
                                         "wide": "é" * 16_385})
    env = contract_env(step, out_dir=tmp_path, in_dir=tmp_path, params_file=tmp_path / "p",
                       run_id="r", attempt=1)  # (local, dagger and dask all start from it)
    assert "DAGNB_PARAM_IDS" not in env and "DAGNB_PARAM_WIDE" not in env  # (32,770 bytes)
    assert env["DAGNB_PARAM_SHORT"] == "x" * 32_768


@pytest.mark.parametrize(("first", "second", "variable"), [
    ("x", "X", "DAGNB_PARAM_X"), ("a-b", "a_b", "DAGNB_PARAM_A_B"),
])
def test_two_params_that_make_one_variable_are_refused(first, second, variable) -> None:
    with pytest.raises(InvalidStepError, match=(
            rf"^step 'a': params '{first}' and '{second}' both become \${variable}; "
            "rename one of them$")):
        Step("a", run="true", params={first: 1, second: 2})


def test_env_names_and_values_are_checked() -> None:
    with pytest.raises(InvalidStepError, match=r"env name 'BAD-NAME' is not a variable name"):
        Step("a", run="true", env={"BAD-NAME": "1"})
    assert Step("a", run="true", env={"N": 3}).env["N"] == "3"


@pytest.mark.parametrize("name", ["DAGNB_OUT", "DAGNB_PARAMS", "DAGNB_RUN_ID", "DAGNB_KEY",
                                  "DAGNB_PARAM_N"])
def test_an_env_the_step_contract_sets_is_refused_not_silently_replaced(name: str) -> None:
    with pytest.raises(InvalidStepError, match=rf"step 'a': env {name} is set by dagnb for "
                                               r"each step .*give a param"):
        Step("a", run="true", env={name: "/tmp/zz"}, params={"n": 1})
    assert Step("a", run="true", env={"DAGNB_OUTPUT": "x"}).env["DAGNB_OUTPUT"] == "x"


def test_the_variables_a_step_may_not_set_are_those_the_contract_sets(tmp_path) -> None:
    from dagnb.model.contract import contract_env
    from dagnb.model.step import CONTRACT_VARIABLES

    env = contract_env(Step("a", run="true"), out_dir=tmp_path, in_dir=tmp_path,
                       params_file=tmp_path / "p.json", run_id="r", attempt=1)
    assert set(env) == set(CONTRACT_VARIABLES)


@pytest.mark.parametrize(
    ("text", "seconds"), [(30, 30.0), ("30s", 30.0), ("10m", 600.0), ("1h", 3600.0),
                          ("250ms", 0.25), ("2d", 172800.0)]
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds  # type: ignore[arg-type]


def test_bad_duration_names_the_value() -> None:
    with pytest.raises(InvalidStepError, match=r"step 'a' timeout 'soon' is not a duration"):
        Step("a", run="true", timeout="soon")


def test_steps_are_frozen_and_hashable() -> None:
    step = Step("a", run="true", needs=["b"], tags="x, y")
    assert step.needs == ("b",) and step.tags == ("x", "y")
    with pytest.raises(AttributeError):
        step.name = "z"  # type: ignore[misc]
    assert {step: 1}[Step("a", run="true", needs=["b"], tags="x, y")] == 1


def test_to_dict_leaves_out_defaults() -> None:
    data = Step("a", run="echo", needs=["b"], params={"n": 1}).to_dict()
    assert data == {"run": "echo", "needs": ["b"], "params": {"n": 1}}


def test_cache_policy_is_checked() -> None:
    with pytest.raises(InvalidStepError, match=r"cache='sometimes' must be True, False"):
        Step("a", run="true", cache="sometimes")


def test_negative_retries_are_refused_when_the_step_is_defined() -> None:
    with pytest.raises(InvalidStepError, match=r"step 'a': retries -2 must be a whole number >= 0"):
        Step("a", run="true", retries=-2)


@pytest.mark.parametrize("name", ["abc\n", "a\tb", "a\x00", "line\r"])
def test_names_with_control_characters_are_refused_on_one_line(name: str) -> None:
    with pytest.raises(InvalidStepError, match=r"step name .* is not valid") as caught:
        Step(name, run="true")
    assert repr(name) in str(caught.value) and "\n" not in str(caught.value)


def test_steps_with_different_functions_differ() -> None:
    def f() -> int:
        return 1

    def g() -> int:
        return 1

    assert Step("a", func=f) != Step("a", func=g)
    assert len({Step("a", func=f), Step("a", func=g)}) == 2
    assert Step("a", func=f, key_fn=f) != Step("a", func=f, key_fn=g)


def test_a_step_equals_itself_and_copies_that_keep_its_function() -> None:
    def f() -> int:
        return 1

    step = Step("a", func=f, tags="x")
    copy = dataclasses.replace(step, description="same work")
    assert step == Step("a", func=f, tags="x") and hash(step) == hash(Step("a", func=f, tags="x"))
    assert copy != step  # description is compared, as before
    assert dataclasses.replace(copy, description="") == step
    assert step.replace(needs=()) == step


def test_bound_methods_of_one_object_make_equal_steps() -> None:
    class Job:
        def run(self) -> int:
            return 1

    job = Job()
    assert Step("a", func=job.run) == Step("a", func=job.run)
    assert hash(Step("a", func=job.run)) == hash(Step("a", func=job.run))
    assert Step("a", func=job.run) != Step("a", func=Job().run)


def test_an_unhashable_callable_still_makes_a_hashable_step() -> None:
    class Call:
        __hash__ = None  # type: ignore[assignment]

        def __call__(self) -> int:
            return 1

    call = Call()
    assert {Step("a", func=call): 1}[Step("a", func=call)] == 1


def test_durations_take_fractions_and_refuse_nan() -> None:
    assert parse_duration("1.5h") == 5400.0
    with pytest.raises(InvalidStepError, match=r"step 'a' ttl nan must be greater than zero"):
        Step("a", run="true", ttl=float("nan"))


@pytest.mark.parametrize(("secret", "says"), [("bad name", "not an environment variable name"),
                                              ("1TOKEN", "not an environment variable name"),
                                              ("PATH", "every process needs")])
def test_a_secret_name_that_cannot_be_one_is_refused_in_one_line(secret, says):
    with pytest.raises(InvalidStepError, match=says) as caught:
        Step("s", run="true", secrets=[secret])
    # (a name no variable has is not shown: it may be the value pasted in its place)
    said = str(caught.value)
    assert "\n" not in said and (repr(secret) in said) == (secret == "PATH")


def test_a_decimal_cache_version_is_refused_with_the_quoted_form() -> None:
    """YAML reads a step's `cache_version: 1.10` as 1.1: bumped from 1.1, the steps kept
    their entries. Text and whole numbers stay as they were (their keys unchanged)."""
    with pytest.raises(InvalidStepError, match=r"^step 'a': cache_version 1\.1 is a number, "
                       r"which loses digits \(1\.10 is read as 1\.1\); quote it: "
                       r'cache_version: "1\.10"$'):
        Step("a", run="true", cache_version=1.1)
    assert Step("a", run="true", cache_version="1.10").cache_version == "1.10"
    assert Step("a", run="true", cache_version=2).cache_version == 2


def test_a_steps_repr_shows_the_fields_given() -> None:
    # (it listed all 26 fields, defaults and all: a screen a step in a notebook)
    def load(x: int = 1) -> int:
        return x

    assert repr(Step("a", run="echo a")) == "Step('a', run='echo a')"
    step = Step("b", func=load, needs=["a"], env={"A": "1"}, timeout="10m", cache=False)
    assert repr(step) == ("Step('b', func=test_a_steps_repr_shows_the_fields_given.<locals>."
                          "load, needs=('a',), env={'A': '1'}, timeout=600.0, cache=False)")
    assert repr(Step("c", run="true", retries=0)) == "Step('c', run='true', retries=0)"


def test_a_steps_repr_masks_the_values_of_its_secrets(monkeypatch) -> None:
    """A token written into a step's env or command showed in clear in its repr, what a
    notebook shows of the step, though a run masks it everywhere else."""
    monkeypatch.setenv("API_TOKEN", "tok-9f8e7d6c5b4a")
    step = Step("fetch", run="curl -H 'Authorization: Bearer tok-9f8e7d6c5b4a' x",
                env={"AUTH": "Bearer tok-9f8e7d6c5b4a"}, secrets=["API_TOKEN"])
    assert repr(step) == ("Step('fetch', run=\"curl -H 'Authorization: Bearer ***' x\", "
                          "env={'AUTH': 'Bearer ***'}, secrets=('API_TOKEN',))")
    monkeypatch.delenv("API_TOKEN")  # (no value to mask: as it is)
    assert "Bearer tok-9f8e7d6c5b4a" in repr(step)


@pytest.mark.parametrize("image", ["my image:1", "Python:3.12", "UPPER/x:1", "", "-odd"])
def test_an_image_that_is_no_image_reference_is_refused(image) -> None:
    """An image with a space or capitals was taken, and refused by the engine only when
    the step ran (the builder and a save took it before)."""
    with pytest.raises(InvalidStepError, match=rf"^step 'a': image {re.escape(repr(image))} "
                                               r"is not an image reference; write it like"):
        Step("a", run="true", image=image)


@pytest.mark.parametrize("image", [
    "alpine", "python:3.12-slim", "ghcr.io/org/img:tag", "localhost:5000/x",
    "registry.example.com:443/team/app:v1.2.3", "docker.io/library/alpine:3.19",
    "python:3.12-slim@sha256:" + "0" * 64, "127.0.0.1:5000/img:latest"])
def test_image_references_are_taken(image) -> None:
    assert Step("a", run="true", image=image).image == image
