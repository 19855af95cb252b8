"""The stop button pressed in a real kernel when what it would stop has ended, or belongs
to another run: the cell's message says what was (and was not) cancelled, and names the
step that still runs."""

from __future__ import annotations

import contextlib
import os
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from notebook_cells import KERNEL_ENV, LiveKernel, started_kernel

pytestmark = pytest.mark.slow


class Kernel(LiveKernel):
    def value(self, expression: str) -> str:
        """The repr of ``expression`` in the kernel."""
        outputs = self.run(expression)
        results = [o for o in outputs if o["output_type"] == "execute_result"]
        assert results, outputs
        return results[0]["data"]["text/plain"]


def usage_error(outputs: list[dict]) -> str:
    """The one line IPython prints (to stderr, not as an error output) for a UsageError."""
    stderr = "".join(o["text"] for o in outputs
                     if o["output_type"] == "stream" and o["name"] == "stderr")
    return stderr.partition("UsageError: ")[2].strip()


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    home = tmp_path_factory.mktemp("kernel")
    env = KERNEL_ENV | {"JPY_SESSION_NAME": str(home / "pipeline.ipynb")}
    with started_kernel(home, env) as client:
        kernel = Kernel(client)
        kernel.run("%load_ext dagnb\nfrom dagnb.notebook.session import get_session")
        yield kernel


def interrupt_after(path: Path, kernel: Kernel, delay: float) -> threading.Thread:
    """Press the kernel's stop button (SIGINT) ``delay`` seconds after ``path`` exists."""

    def wait_then_interrupt() -> None:
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(delay)
        os.kill(kernel.client.km.provisioner.process.pid, signal.SIGINT)

    thread = threading.Thread(target=wait_then_interrupt, daemon=True)
    thread.start()
    return thread


def test_an_interrupt_while_the_last_result_is_stored_says_nothing_was_cancelled(
        kernel: Kernel, tmp_path: Path) -> None:
    """The step's code has returned; its result takes 2 s to pickle into the cache when
    the stop button is pressed. It ends succeeded and stored, as status, history and the
    cache say: the cell still stops (Run All stops there), but said the run was
    cancelled and its processes stopped."""
    (tmp_path / "slowpickle.py").write_text(
        "import time\n\n\nclass SlowToPickle:\n    def __reduce__(self):\n"
        "        time.sleep(2)\n        return (SlowToPickle, ())\n")
    kernel.run(f"import os, sys\nos.chdir({str(tmp_path)!r})\nsys.path.insert(0, "
               f"{str(tmp_path)!r})\nfrom dagnb.cache.location import pin_relative_folder\n"
               "pin_relative_folder(os.getcwd())\n%dagger reset\n"
               "import slowpickle")  # (imported first: its key is then as on a re-run)
    marker = tmp_path / "returned"
    thread = interrupt_after(marker, kernel, 0.5)  # (the pickle takes 2 s from ~0)
    outputs = kernel.run("%%dagger slow --python --outputs made\n"
                         "from slowpickle import SlowToPickle\nmade = SlowToPickle()\n"
                         f"open({str(marker)!r}, 'w').close()\n")
    thread.join(5)
    assert usage_error(outputs) == (
        "interrupted: every step had finished (1 succeeded and stored); nothing was cancelled")
    assert kernel.value("get_session().last_run.states()") == "{'slow': 'succeeded'}"
    assert kernel.value("[r['cancelled'] for r in get_session().runs]") == "[0]"
    assert kernel.value("type(made).__name__") == "'SlowToPickle'"  # published
    again = kernel.run("%%dagger slow --python --outputs made\n"
                       "from slowpickle import SlowToPickle\nmade = SlowToPickle()\n"
                       f"open({str(marker)!r}, 'w').close()\n")
    assert usage_error(again) == ""
    assert kernel.value("get_session().last_run.states()") == "{'slow': 'cached'}"


@contextlib.contextmanager
def shorter_cancel_grace(kernel: Kernel, seconds: float) -> Iterator[None]:
    grace = "dagnb.notebook.widgets.CANCEL_GRACE"
    before = kernel.value(f"import dagnb.notebook.widgets\n{grace}")
    kernel.run(f"{grace} = {seconds!r}")
    try:
        yield
    finally:
        kernel.run(f"{grace} = {before}")


def test_a_cell_interrupted_while_waiting_for_another_runs_step_names_that_step(
        kernel: Kernel, tmp_path: Path) -> None:
    """A step in a long C call outlasts its cell's interrupt; the next cell waits for it
    and is interrupted too: its message named "a step", not the step still running."""
    kernel.run(f"import os\nos.chdir({str(tmp_path)!r})\n%dagger reset")
    started, waiting = tmp_path / "started", tmp_path / "waiting"
    with shorter_cancel_grace(kernel, 1.0):
        thread = interrupt_after(started, kernel, 0.0)
        first = kernel.run("%%dagger longc --python --no-cache\nimport time\n"
                           f"open({str(started)!r}, 'w').close()\ntime.sleep(6)\n")
        thread.join(5)
        assert usage_error(first).startswith("interrupted: the run was cancelled, but "
                                             "'longc' is still running")
        threading.Timer(1.0, waiting.touch).start()  # (the next cell waits for longc)
        thread = interrupt_after(waiting, kernel, 0.0)
        second = kernel.run("%%dagger other --python --no-cache\nw = 1\n")
        thread.join(5)
    assert "'longc', interrupted" in "".join(o.get("text", "") for o in second)  # it waited
    assert usage_error(second) == (
        "interrupted: the run was cancelled, but 'longc' is still running: Python code in "
        "one long call (time.sleep, subprocess.run, a C extension) stops only when the call "
        "returns; %dagger status shows when it has")
    kernel.run("import time\nfor _ in range(100):\n    if get_session().latest['longc']"
               "['state'] != 'running': break\n    time.sleep(0.1)\n")  # (for the tests after)
