"""QA fixes of the workflow file: top-level ``x-`` keys (docker-compose's place for YAML
anchors) ignored, and the defaults' ``needs`` not making the step they name need itself."""

from __future__ import annotations

from pathlib import Path

import pytest

import dagnb
from dagnb.cli import main
from dagnb.errors import WorkflowError
from dagnb.workflows.loader import loads

ANCHORED = """\
x-common: &common
  executor: local
  timeout: 1m
  env: {GREETING: hi}
x-notes: [anything, at, all]
steps:
  setup:
    <<: *common
    run: echo "$GREETING"
  train:
    <<: *common
    needs: [setup]
    env: {GREETING: bye}
    run: echo "$GREETING"
"""


# -- 1. x- keys ---------------------------------------------------------------------------

def test_top_level_x_keys_are_ignored_and_their_anchors_merge_into_steps() -> None:
    graph = loads(ANCHORED)
    assert graph.names == ["setup", "train"]
    setup, train = graph["setup"], graph["train"]
    assert (setup.executor, setup.timeout, dict(setup.env)) == ("local", 60.0, {"GREETING": "hi"})
    assert train.timeout == 60.0 and dict(train.env) == {"GREETING": "bye"}  # (own key wins)
    saved = graph.to_yaml()  # (anchors resolved: the steps hold the merged fields)
    assert "x-" not in saved and "timeout: 60" in saved


def test_an_unknown_top_level_key_says_x_keys_are_ignored_and_may_hold_anchors() -> None:
    with pytest.raises(WorkflowError) as caught:
        loads("common: &common {timeout: 1m}\nsteps: {a: {run: 'true'}}\n", source="w.yml")
    said = str(caught.value)
    assert said.startswith("w.yml: unknown workflow key 'common'; ")
    assert "top-level keys starting with x- are ignored, and may hold YAML anchors" in said
    assert "\n" not in said


def test_dagnb_validate_and_graph_take_a_file_with_an_x_block(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(ANCHORED)
    assert main(["validate", "wf.yml"]) == 0
    assert main(["graph", "wf.yml"]) == 0
    assert capsys.readouterr().out.splitlines()[-2:] == ["setup", "train  <- setup"]


# -- 2. the defaults' needs -------------------------------------------------------------

def test_a_step_named_in_the_defaults_needs_does_not_need_itself() -> None:
    graph = loads("defaults: {needs: [setup]}\n"
                  "steps:\n  setup: {run: 'true'}\n  a: {run: 'true'}\n  b: {run: 'true'}\n")
    assert [(step.name, step.needs) for step in graph] == [
        ("setup", ()), ("a", ("setup",)), ("b", ("setup",))]


def test_the_defaults_needs_as_text_skip_the_step_itself_too() -> None:
    graph = loads("defaults: {needs: 'setup, data'}\n"
                  "steps:\n  setup: {run: 'true'}\n  data: {run: 'true', needs: []}\n"
                  "  fit: {run: 'true'}\n")
    assert [(step.name, step.needs) for step in graph] == [
        ("setup", ("data",)), ("data", ()), ("fit", ("setup", "data"))]


def test_a_cycle_made_by_the_defaults_needs_names_them_and_the_fix() -> None:
    text = ("defaults: {needs: [setup]}\n"
            "steps:\n  prepare: {run: 'true'}\n  setup: {run: 'true', needs: [prepare]}\n")
    with pytest.raises(WorkflowError) as caught:
        loads(text, source="w.yml")
    assert str(caught.value) == (
        "w.yml: the steps' needs form a cycle: prepare -> setup -> prepare; remove one of "
        "these needs ('prepare' takes defaults: needs: [setup]; give it needs of its own, "
        "needs: [] for none)")


def test_a_cycle_of_the_steps_own_needs_names_no_defaults() -> None:
    with pytest.raises(WorkflowError) as caught:
        loads("defaults: {needs: [a]}\n"
              "steps:\n  a: {run: 'true', needs: [b]}\n  b: {run: 'true', needs: [a]}\n")
    assert str(caught.value).endswith("remove one of these needs")


def test_the_loaded_file_saves_and_loads_back_alike(tmp_path: Path) -> None:
    graph = loads("defaults: {needs: [setup]}\n"
                  "steps:\n  setup: {run: 'true'}\n  a: {run: 'true'}\n")
    graph.to_yaml(tmp_path / "saved.yml")
    again = dagnb.load(tmp_path / "saved.yml")
    assert [(step.name, step.needs) for step in again] == [("setup", ()), ("a", ("setup",))]
