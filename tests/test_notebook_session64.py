"""A data scientist's daily loop in a real Jupyter kernel (nbclient): a step taken out
with ``%dagger remove`` and defined again, and the magics' views of an empty cache."""

from __future__ import annotations

import html
from pathlib import Path

import pytest
from test_kernel import (
    Kernel,
    error,
    live_kernel,  # noqa: F401 (a fixture: one kernel for the module)
)

pytestmark = pytest.mark.slow


@pytest.fixture
def kernel(live_kernel: Kernel, tmp_path: Path) -> Kernel:  # noqa: F811 (the fixture)
    """The module's kernel in a fresh folder (its own cache), with an empty graph."""
    return live_kernel.fresh(tmp_path)


def _plain(outputs: list[dict]) -> str:
    """The text/plain of a cell's results and the text it printed."""
    return "".join(o["data"]["text/plain"] if "data" in o else o.get("text", "")
                   for o in outputs)


def test_a_removed_step_defined_again_is_never_run_not_the_removed_ones_failure(
        kernel: Kernel) -> None:
    failed = kernel.run("%%dagger a --python --no-raise\nraise RuntimeError('old code broke')")
    assert "old code broke" in _plain(failed)
    assert error(kernel.run("%dagger remove a")) is None
    assert error(kernel.run("%%dagger a --python --define-only\nx = 2")) is None

    status = _plain(kernel.run("%dagger status"))
    assert "never run" in status, status
    assert "old code broke" not in status and "failed" not in status, status
    logs = _plain(kernel.run("%dagger logs a"))
    assert "has not run" in logs and "old code broke" not in logs, logs
    kernel.run("from dagnb.notebook.overview import notebook_states")
    assert kernel.value("notebook_states(get_session())['a']") == "'never run'"


def test_cache_stats_of_an_empty_cache_is_a_sentence_and_still_a_frame(kernel: Kernel) -> None:
    shown = _plain(kernel.run("%dagger cache stats"))
    assert shown == "no cache entries yet", shown
    assert kernel.value("list(_.columns)") == kernel.value(
        "import dagnb.cache\nlist(dagnb.cache.store_for().stats().columns)")


def test_a_reset_cancels_a_background_run_which_puts_nothing_back(kernel: Kernel) -> None:
    started = kernel.run("%%dagger slow --python --outputs rows --background\n"
                         "import time\nfor _ in range(40):\n    time.sleep(0.05)\nrows = [1, 2]")
    assert error(started) is None, started
    said = _plain(kernel.run("%dagger reset"))
    assert "1 background run of the old graph cancelled" in said, said
    kernel.run("import time; time.sleep(2.5)")  # (past when the step would have ended)
    assert error(kernel.run("%%dagger slow --python --define-only\nx = 1")) is None

    assert "never run" in _plain(kernel.run("%dagger status"))
    assert _plain(kernel.run("%dagger history")) == "no run yet in this session"
    assert kernel.value("sorted(globals().get('_dagger', {}))") == "[]"
    assert kernel.value("'rows' in globals()") == "False"


def test_status_shows_a_steps_note_whole_in_text_and_html(kernel: Kernel) -> None:
    kernel.run("%%dagger a --python --outputs f\nf = lambda: 1")  # (a result not stored)
    outputs = kernel.run("%dagger status")
    note = kernel.printed("print(_['note'][0])").strip()
    assert len(note) > 50, note  # (pandas cuts a value at 50 characters by default)
    shown = next(o["data"] for o in outputs if o["output_type"] == "execute_result")
    assert note in " ".join(shown["text/plain"].split()), shown["text/plain"]
    assert html.escape(note) in shown["text/html"], shown["text/html"]
