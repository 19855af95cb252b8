"""Big workflow files: a save never writes a file the loader would refuse, and reading
or writing one runs without the cyclic collector walking its millions of new objects."""

from __future__ import annotations

import gc

import pytest

import dagnb
from dagnb.errors import WorkflowError
from dagnb.workflows import loader


def _chain(count: int) -> dagnb.Graph:
    return dagnb.Graph("big", [dagnb.Step("s0", run="true")] + [
        dagnb.Step(f"s{i}", run="echo $I", needs=(f"s{i - 1}",), env={"I": str(i)})
        for i in range(1, count)])


def _saved_size(graph: dagnb.Graph, target) -> int:
    size = len(graph.to_yaml(target).encode())
    target.unlink()
    return size


def test_a_save_over_the_file_limit_is_refused_and_writes_nothing(tmp_path, monkeypatch):
    graph, target = _chain(200), tmp_path / "big.yml"
    size = _saved_size(graph, target)
    monkeypatch.setattr(loader, "MAX_WORKFLOW_BYTES", size - 1)
    with pytest.raises(WorkflowError) as refused:
        graph.to_yaml(target)
    assert str(refused.value) == (
        f"cannot save graph 'big' to {str(target)!r}: its 200 steps take {size:,} bytes as "
        "YAML, and a workflow file is at most 0 MiB; save its parts as graphs of their own")
    assert not target.exists()


def test_what_a_save_writes_at_the_limit_loads_back(tmp_path, monkeypatch):
    graph, target = _chain(200), tmp_path / "big.yml"
    monkeypatch.setattr(loader, "MAX_WORKFLOW_BYTES", _saved_size(graph, target))
    graph.to_yaml(target)
    assert [step.name for step in loader.load(target)] == [step.name for step in graph]


def test_no_collection_runs_while_a_workflow_is_read_and_it_comes_back(tmp_path, monkeypatch):
    seen = []
    building = loader.graph_from_dict
    monkeypatch.setattr(loader, "graph_from_dict",
                        lambda *a, **k: seen.append(gc.isenabled()) or building(*a, **k))
    (tmp_path / "wf.yml").write_text("steps:\n  a: {run: 'true'}\n")
    (tmp_path / "bad.yml").write_text("steps:\n  a: {run: 'true'\n")
    assert gc.isenabled()
    loader.load(tmp_path / "wf.yml")
    with pytest.raises(WorkflowError):
        loader.load(tmp_path / "bad.yml")
    assert seen == [False] and gc.isenabled()
    gc.disable()  # (one the caller turned off stays off)
    try:
        loader.load(tmp_path / "wf.yml")
        assert not gc.isenabled()
    finally:
        gc.enable()
