"""A ttl of "never": a function or step whose entries never expire, where a default ttl
(a Memory's, a run's, the cache_ttl_seconds setting) would have them expire."""

from __future__ import annotations

import time

import pytest

import dagnb
from dagnb import Step
from dagnb.cache.memory import Memory
from dagnb.errors import InvalidStepError
from dagnb.notebook.cells import duration_text

pytestmark = pytest.mark.usefixtures("workdir")


@pytest.mark.parametrize("spelling", ["never", " Never "])
def test_a_function_told_never_keeps_its_entries_past_its_memorys_ttl(tmp_path, clock,
                                                                       spelling):
    memory = Memory(str(tmp_path / "cache"), ttl="1m", clock=clock)
    calls = []

    @memory.cache(ttl=spelling)
    def kept(x):
        calls.append(("kept", x))
        return len(calls)

    @memory.cache  # (ttl=None: the Memory's)
    def inheriting(x):
        calls.append(("inheriting", x))
        return len(calls)

    assert (kept(1), inheriting(1)) == (1, 2)
    clock.now += 3600
    assert kept.check_call_in_cache(1) and kept(1) == 1
    assert not inheriting.check_call_in_cache(1) and inheriting(1) == 3


def test_a_step_told_never_stays_cached_past_the_runs_ttl():
    graph = dagnb.Graph("g", [Step("kept", run="echo kept", ttl="never"),
                              Step("lapses", run="echo lapses")])
    first = graph.run(ttl=0.2, executor="local")
    time.sleep(0.3)
    again = graph.run(ttl=0.2, executor="local")
    assert first.states() == {"kept": "succeeded", "lapses": "succeeded"}
    assert again.states() == {"kept": "cached", "lapses": "succeeded"}


def test_never_is_written_back_as_never_and_a_misspelling_names_it():
    assert duration_text(Step("s", run="x", ttl="never").ttl) == "never"
    with pytest.raises(InvalidStepError, match=r"step 's' ttl 'nevr' is not a duration; use "
                                               r".*, or 'never'"):
        Step("s", run="x", ttl="nevr")


def test_a_saved_workflow_says_never_and_reads_back_so(tmp_path):
    graph = dagnb.Graph("g", [Step("fit", run="echo hi", ttl="never")])
    text = graph.to_yaml(tmp_path / "wf.yml")
    assert "ttl: never" in text and ".inf" not in text
    from dagnb.workflows.loader import load

    assert load(tmp_path / "wf.yml")["fit"].ttl == Step("f", run="x", ttl="never").ttl
