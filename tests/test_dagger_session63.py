"""A Python step's own ``result.json`` in a container, and a secret's start at the end of
a Dagger step's output cut off mid-line: the rules of the local executor, through the
real dagger-io client and the stub engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dagnb
from dagnb import Graph, Step
from dagnb.errors import StepFailed, StepNotFoundError
from dagnb.executors.dagger import shim
from dagnb.executors.dagger.executor import DaggerExecutor
from dagnb.executors.loop import run_sync

pytest_plugins = ["dagger_stub.fixtures"]

METRICS = {"acc": 0.9}
TOKEN = "tok-9f8e7d6c5b4a3f2e1d"
TOKEN_START = TOKEN[:14]  # what a step cut off mid-token leaves: "tok-9f8e7d6c5b"


# -- a step's own result.json -----------------------------------------------------------


def writes_metrics_and_returns():
    (dagnb.current().out_dir / "result.json").write_text(json.dumps(METRICS))
    return 5


def writes_metrics_only():
    (dagnb.current().out_dir / "result.json").write_text(json.dumps(METRICS))


def writes_no_json():
    (dagnb.current().out_dir / "result.json").write_text("acc=0.9")


def reads_the_metrics(train):
    return train["acc"] * 10


def _errors(graph: Graph, executor: str, cache_dir: Path) -> dict[str, str | None]:
    done = graph.run(executor=executor, cache_directory=cache_dir, raise_on_failure=False)
    return {name: row["error"] for name, row in done.status_rows().items()}


@pytest.mark.parametrize("func", [writes_metrics_and_returns, writes_no_json])
def test_a_step_s_own_result_json_it_cannot_keep_fails_in_the_local_executor_s_words(
        stub, tmp_path, func):
    """Before: the shim wrote the returned 5 over the step's result.json, which was lost
    without a word; a result.json that did not load failed as an engine error."""
    graph = Graph("g", [Step("train", func=func)], base_dir=tmp_path)
    local = _errors(graph, "local", tmp_path / "local")
    dagger = _errors(graph, "dagger", tmp_path / "dagger")
    assert dagger == local
    assert dagger["train"].startswith("step 'train' ")
    assert "result.json" in dagger["train"] and "\n" not in dagger["train"]
    assert not list((tmp_path / "dagger").glob("train/*/out/result.json"))  # nothing stored


def test_a_step_returning_a_value_and_writing_result_json_stores_nothing(stub, tmp_path):
    done = Graph("g", [Step("train", func=writes_metrics_and_returns)],
                 base_dir=tmp_path).run(executor="dagger", cache_directory=tmp_path / "c",
                                        raise_on_failure=False)
    assert done.states() == {"train": "failed"}
    assert done.status_rows()["train"]["error"] == (
        "step 'train' wrote result.json, the name dagnb keeps its returned value under; "
        "name the file otherwise (metrics.json), or return None to make that file the "
        "step's result")
    with pytest.raises(StepNotFoundError):
        done.result("train")


def test_a_step_returning_none_makes_its_own_result_json_its_result_fresh_and_cached(
        stub, tmp_path):
    """Before: the shim wrote None over it, and the downstream step got None."""
    graph = Graph("g", [Step("train", func=writes_metrics_only),
                        Step("report", func=reads_the_metrics, needs=["train"])],
                  base_dir=tmp_path)
    for state in ("succeeded", "cached"):
        done = graph.run(executor="dagger", cache_directory=tmp_path / "c",
                         raise_on_failure=False)
        assert done.states() == {"train": state, "report": state}, done.status()
        assert (done.result("train"), done.result("report")) == (METRICS, 9.0)
        kept = json.loads((Path(done.outputs("train")) / "result.json").read_text())
        assert kept == METRICS


def test_the_shim_tells_a_refused_result_file_by_its_own_ending_line():
    stderr = "some output\ndagnb-step-ended: unloadable result.json: Expecting value\n"
    assert shim.ending(stderr) == ("some output\n", "unloadable result.json: Expecting value")
    assert shim.ending("dagnb-step-ended: wrote result.pkl") == ("", "wrote result.pkl")


# -- a secret's start at the end of output cut off mid-line -------------------------------


def prints_a_token_start_and_raises():
    print("token=" + TOKEN_START, end="", flush=True)
    raise ValueError("stopped")


def test_a_secret_s_start_in_a_container_step_s_cut_off_line_is_masked(
        stub, tmp_path, monkeypatch):
    """Before: each stream's last line, unended, was masked as a line that goes on: the
    first 14 characters of the token stayed in clear in the log file and the run's
    logs, as the local executor no longer leaves them."""
    monkeypatch.setenv("QA_API_TOKEN", TOKEN)
    start = "$(printf %s \"$QA_API_TOKEN\" | cut -c1-14)"
    graph = Graph("g", [
        Step("whole", run='printf "token=%s" "$QA_API_TOKEN"', secrets=["QA_API_TOKEN"]),
        Step("cut", run=f'printf "token=%s" "{start}"', secrets=["QA_API_TOKEN"]),
        Step("cut_err", run=f'printf "token=%s" "{start}" >&2; exit 3',
             secrets=["QA_API_TOKEN"]),
        Step("py", func=prints_a_token_start_and_raises, secrets=["QA_API_TOKEN"]),
    ], base_dir=tmp_path)
    done = graph.run(executor="dagger", cache_directory=tmp_path / "c",
                     raise_on_failure=False)
    assert done.states() == {"whole": "succeeded", "cut": "succeeded", "cut_err": "failed",
                             "py": "failed"}
    shown = done.logs()
    lines = set(zip(shown.step, shown.stream, shown.line, strict=True))
    assert {("whole", "stdout", "token=***"), ("cut", "stdout", "token=***"),
            ("cut_err", "stderr", "token=***"), ("py", "stdout", "token=***")} <= lines
    assert not [line for line in shown.line if TOKEN_START in line]
    for name in done.states():
        for path in done.log_files(name):
            text = path.read_text()
            assert TOKEN_START not in text and "token=***" in text, (name, text)
    errors = json.dumps(done.status_rows(), default=str)
    assert TOKEN_START not in errors and "token=***" in errors
    py_error = done.status_rows()["py"]["error"]
    assert py_error.endswith("ValueError: stopped"), py_error
    for path in tmp_path.rglob("*"):
        assert not path.is_file() or TOKEN_START.encode() not in path.read_bytes(), path


def test_a_failed_container_step_s_output_tails_mask_a_secret_s_start_at_their_end(
        stub, make_task):
    """The StepFailed's tails, which a run raising on failure shows, are masked as the
    logs are."""
    task = make_task(Step("py", func=prints_a_token_start_and_raises,
                          secrets=["QA_API_TOKEN"]), secrets={"QA_API_TOKEN": TOKEN})
    with pytest.raises(StepFailed, match=r"ValueError: stopped$") as caught:
        run_sync(DaggerExecutor().execute(task))
    assert caught.value.stdout_tail == "token=***"
    assert TOKEN_START not in caught.value.stderr_tail
    assert task.log.lines[0] == ("stdout", "token=" + TOKEN_START)  # (no ``last``: as given)
