"""Python API checks: outputs of an entry set aside as damaged, plan/explain's executor,
Step's retries and misspelt keywords, run's raise_on_failure, and a run a step starts."""

from __future__ import annotations

import warnings
from pathlib import Path

import pytest

import dagnb
from dagnb.cache import DamagedEntryWarning
from dagnb.errors import ConfigError, ExecutorUnavailable, InvalidStepError, StepNotFoundError
from dagnb.retry.policy import RetryPolicy


def _writer_damaged_downstream() -> dagnb.Graph:
    """``writer`` with a file, and ``bad``, which writes into it (its input)."""
    g = dagnb.Graph("damage")

    @g.step
    def writer() -> int:
        (dagnb.current().out_dir / "data.csv").write_text("a\n1\n")
        return 1

    @g.step
    def bad(writer: int) -> int:
        (Path(dagnb.current().inputs["writer"]) / "data.csv").write_text("oops")
        return 2

    return g


def test_outputs_of_an_entry_set_aside_as_damaged_say_so(workdir: Path) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DamagedEntryWarning)
        run = _writer_damaged_downstream().run()
    assert run.states()["bad"] == "failed"
    with pytest.raises(StepNotFoundError) as caught:
        run.outputs("writer")
    message = str(caught.value)
    assert "set aside as damaged" in message
    assert "step 'bad' wrote into its input $DAGNB_IN/writer/data.csv" in message
    assert "the next run makes it again" in message


def test_outputs_of_an_entry_still_there_are_given(workdir: Path) -> None:
    g = dagnb.Graph("fine")
    g.add(dagnb.Step("w", run="echo hi > $DAGNB_OUT/f.txt"))
    assert (g.run().outputs("w") / "f.txt").read_text() == "hi\n"


@pytest.mark.parametrize("call", ["plan", "explain"])
def test_plan_and_explain_refuse_an_unknown_executor_as_run_does(workdir: Path,
                                                                 call: str) -> None:
    g = dagnb.Graph("ex")
    g.add(dagnb.Step("x", run="echo"))
    with pytest.raises(ExecutorUnavailable) as from_run:
        g.run(executor="nope")
    ask = g.plan if call == "plan" else lambda **o: g.explain("x", **o)
    with pytest.raises(ExecutorUnavailable) as caught:
        ask(executor="nope")
    assert str(caught.value) == str(from_run.value)


@pytest.mark.parametrize("retries", ["x", 2.5, [1]])
def test_step_refuses_bad_retries_as_made_with_the_runs_words(retries: object) -> None:
    with pytest.raises(ConfigError) as from_policy:
        RetryPolicy.from_value(retries)  # type: ignore[arg-type]
    with pytest.raises(InvalidStepError) as caught:
        dagnb.Step("x", run="echo", retries=retries)
    assert str(caught.value) == f"step 'x': {from_policy.value}"


@pytest.mark.parametrize("retries", [None, True, 0, 3, {"max_retries": 1}, RetryPolicy()])
def test_step_takes_retries_of_each_kind(retries: object) -> None:
    assert dagnb.Step("x", run="echo", retries=retries).retries == retries


@pytest.mark.parametrize("value", ["no", 1, None])
def test_run_refuses_a_raise_on_failure_that_is_no_bool(workdir: Path, value: object) -> None:
    g = dagnb.Graph("flag")
    g.add(dagnb.Step("x", run="exit 1"))
    with pytest.raises(ConfigError, match=r"^raise_on_failure=.* must be True or False$"):
        g.run(raise_on_failure=value)  # type: ignore[arg-type]


def test_step_names_the_keyword_meant_for_a_misspelt_one() -> None:
    with pytest.raises(TypeError) as caught:
        dagnb.Step("x", run="echo", retry=2)  # type: ignore[call-arg]
    assert "unknown argument 'retry'; did you mean 'retries'?" in str(caught.value)


def test_step_keeps_its_signature_and_positional_fields() -> None:
    import inspect

    assert "retries" in inspect.signature(dagnb.Step).parameters
    assert dagnb.Step("x", "echo").run == "echo"


# -- a run started by a step -----------------------------------------------------------
def _inner() -> dagnb.Graph:
    inner = dagnb.Graph("inner")
    inner.add(dagnb.Step("x", func=lambda: 5))
    return inner


def test_a_graph_run_in_an_in_process_step_says_to_await_arun(tmp_path: Path) -> None:
    """It failed as ``RuntimeError: run_sync() called from dagnb's own loop``: no call the
    user had made."""
    outer = dagnb.Graph("outer")
    outer.add(dagnb.Step("y", func=lambda: _inner().run(cache=False).result("x")))
    run = outer.run(cache_directory=tmp_path, executor="local")
    (error,) = run.status()["error"].tolist()
    assert error.startswith("DagnbError: graph.run() of 'inner' was called by a step that "
                            "runs on dagnb's loop"), error
    assert "'await graph.arun()'" in error
    assert run.status()["attempts"].tolist() == [1]  # (no retry: it would fail the same)


def test_the_fix_it_names_works_an_async_step_awaits_arun(tmp_path: Path) -> None:
    async def y() -> int:
        return (await _inner().arun(cache=False)).result("x")

    outer = dagnb.Graph("outer")
    outer.add(dagnb.Step("y", func=y))
    assert outer.run(cache_directory=tmp_path, executor="local").result("y") == 5
