"""What a failed Python step held (its DataFrames, as locals of the frames that raised)
is freed once the run is let go of, with no full collection: the retrying left no
reference cycle through the error's traceback."""

from __future__ import annotations

import weakref

import pytest

import dagnb
from dagnb.retry.policy import RetryPolicy

pytestmark = pytest.mark.usefixtures("workdir")


class _Held:
    """Stands for a big value a step holds as it fails."""


@pytest.mark.parametrize("cache", [True, False])
def test_a_failed_steps_locals_go_with_its_run_without_a_collection(collector_off, cache):
    held = {}

    def fails():
        value = _Held()
        held["fails"] = weakref.ref(value)
        raise ValueError("boom")

    def drops():  # a transient error: retried, then failed
        value = _Held()
        held.setdefault("drops", []).append(weakref.ref(value))
        raise ConnectionError("dropped")

    graph = dagnb.Graph("g", [dagnb.Step("fails", func=fails),
                              dagnb.Step("drops", func=drops, retries=RetryPolicy(
                                  max_retries=1, backoff_factor=0.01, jitter=False))])
    run = graph.run(cache=cache, executor="local")
    assert run.states() == {"fails": "failed", "drops": "failed"}
    assert len(held["drops"]) >= 2  # (retried)
    del run
    assert held["fails"]() is None
    assert [ref() for ref in held["drops"]] == [None] * len(held["drops"])
