"""A dangling link a step leaves in its outputs (``latest -> v1``, the file not made
yet) counts by where it points, not by its name alone: pointed elsewhere by a re-run of
its step, the step below it ran again rather than keep its old result."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb import Graph, Step


def _graph(target_file: Path) -> Graph:
    return Graph("links", [
        Step("up", run=f'ln -s "$(cat {target_file})" "$DAGNB_OUT/latest"'),
        Step("down", needs=["up"],
             run='readlink "$DAGNB_IN/up/latest" > "$DAGNB_OUT/seen.txt"'),
    ])


def _seen(run) -> str:
    return (Path(run.outputs("down")) / "seen.txt").read_text().strip()


# (a broken link is no output a cache entry keeps: the step is not stored, as it warns)
@pytest.mark.filterwarnings("ignore:step 'up' ran but was not cached")
def test_a_dangling_link_pointed_elsewhere_runs_the_step_below_again(tmp_path: Path) -> None:
    target = tmp_path / "target.txt"
    target.write_text("v1")
    graph, cache = _graph(target), tmp_path / "cache"
    first = graph.run(cache_directory=cache, executor="local")
    assert _seen(first) == "v1"
    same = graph.run(cache_directory=cache, executor="local", refresh=["up"])
    assert same.states() == {"up": "succeeded", "down": "cached"}  # same link: a hit
    target.write_text("v2")
    moved = graph.run(cache_directory=cache, executor="local", refresh=["up"])
    assert moved.states() == {"up": "succeeded", "down": "succeeded"}
    assert _seen(moved) == "v2"
