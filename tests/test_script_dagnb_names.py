"""A step's shell text reading a ``$DAGNB_`` variable dagnb does not set for it (a
typo) fails the step before it starts, as an argv item's does: ``$DAGNB_OUTT/x.csv``
wrote ``/x.csv`` and the step succeeded, and ``$DAGNB_PARAM_ROW`` read as empty (a QA
session). A variable the text sets itself is its own."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb import Graph, Step
from dagnb.errors import StepFailed
from dagnb.executors.dagger.executor import DaggerExecutor
from dagnb.executors.loop import run_sync
from dagnb.model.expand import unset_in_script

pytest_plugins = ["dagger_stub.fixtures"]
SETS = ("dagnb sets DAGNB_OUT, DAGNB_IN, DAGNB_PARAMS, DAGNB_PARAM_<NAME> for each "
        "param, DAGNB_STEP, DAGNB_RUN_ID, DAGNB_ATTEMPT")


def _run(tmp_path: Path, step: Step):
    return Graph("g", [step]).run(executor="local", cache_directory=tmp_path / "cache")


def test_a_misspelt_out_folder_fails_the_step_before_it_writes_anything(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    marker = tmp_path / "ran"
    run = _run(tmp_path, Step("w", run=f'touch {marker}; echo hi > "$DAGNB_OUTT/r.csv"'))
    assert run.failed == ["w"]
    assert run.status_rows()["w"]["error"] == (
        "step 'w': its run text reads $DAGNB_OUTT, which dagnb does not set for this step; "
        f"did you mean $DAGNB_OUT? {SETS}")
    assert not marker.exists()


def test_a_misspelt_param_fails_the_step(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.chdir(tmp_path)
    run = _run(tmp_path, Step("a", params={"rows": 5}, run='echo "rows=${DAGNB_PARAM_ROW}"'))
    assert run.failed == ["a"]
    assert run.status_rows()["a"]["error"].startswith(
        "step 'a': its run text reads ${DAGNB_PARAM_ROW}, which dagnb does not set for "
        "this step; did you mean $DAGNB_PARAM_ROWS?")


@pytest.mark.parametrize("script", [
    'echo "$DAGNB_OUT" "$DAGNB_PARAM_ROWS" "${DAGNB_STEP}" "$DAGNB_ATTEMPT"',
    'DAGNB_MINE=1; echo "$DAGNB_MINE"',
    'export DAGNB_MINE=1; echo "$DAGNB_MINE"',
    'for DAGNB_ITEM in a b; do echo "$DAGNB_ITEM"; done',
    'echo x | read DAGNB_LINE; echo "${DAGNB_LINE:-none}"',
    'echo "${DAGNB_OPTIONAL:-default}"',  # (a default: the text's own choice)
    "echo '$$' $$",
])
def test_what_dagnb_sets_and_what_the_text_sets_itself_run(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, script: str) -> None:
    monkeypatch.chdir(tmp_path)
    assert _run(tmp_path, Step("s", params={"rows": 5}, run=script)).ok


def test_the_check_reads_the_names_it_is_given() -> None:
    names = {"DAGNB_OUT", "DAGNB_PARAM_ROWS"}
    assert unset_in_script("s", 'cp x "$DAGNB_OUT"', names) is None
    assert unset_in_script("s", "echo $DAGNB_PARAM_ROW", names) == (
        "step 's': its run text reads $DAGNB_PARAM_ROW, which dagnb does not set for this "
        f"step; did you mean $DAGNB_PARAM_ROWS? {SETS}")
    assert unset_in_script("s", "echo $DAGNB_ZZZ", set()) == (
        f"step 's': its run text reads $DAGNB_ZZZ, which dagnb does not set for this step; "
        f"{SETS}")


def test_on_dagger_a_misspelt_name_fails_the_step_before_it_runs(stub, make_task) -> None:
    with pytest.raises(StepFailed) as failed:
        run_sync(DaggerExecutor().execute(make_task(Step("u", run='echo "$DAGNB_OUTT"'))))
    assert str(failed.value).startswith(
        "step 'u': its run text reads $DAGNB_OUTT, which dagnb does not set for this "
        "step; did you mean $DAGNB_OUT?")
    assert not stub.texts("withExec")
