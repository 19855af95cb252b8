"""What a user sees in a real Jupyter kernel (nbclient): keys that see notebook
variables, failures that fail the cell, refused cells that change nothing, a restart
that tells which cell to run first, an interrupt that stops a Python step.

One kernel serves the module; each test gets its own folder (so its own cache) and an
empty graph. ``DAGNB_WIDGETS=0`` makes dagnb print plain text, which the tests read.
``JPY_SESSION_NAME`` names the notebook file, as Jupyter does for the kernels it starts.
"""

from __future__ import annotations

import ast
import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.util import run_sync
from notebook_cells import KERNEL_ENV, LiveKernel, started_kernel

import dagnb
from dagnb.notebook.overview import STORED_BEFORE
from dagnb.testing import wait_until

pytestmark = pytest.mark.slow


class Kernel(LiveKernel):
    """A live kernel: :meth:`run` executes one cell and returns its outputs."""

    def __init__(self, client: NotebookClient, home: Path) -> None:
        super().__init__(client)
        self.home = home  # the folder the kernel started in

    def fresh(self, folder: Path) -> Kernel:
        """This kernel moved to ``folder`` (so its own cache), with an empty graph."""
        outputs = self.run(f"{_into(folder)}\n%dagger reset\n"
                           "from dagnb.notebook.session import get_session")
        assert error(outputs) is None, outputs
        return self

    def restart(self, *, now: bool = True) -> None:
        """Restart the kernel, as the Restart button does (``now=False``: asking it to
        shut down first), and load dagnb again."""
        run_sync(self.client.km.restart_kernel)(now=now)
        run_sync(self.client.kc.wait_for_ready)(timeout=60)
        self.run("%load_ext dagnb")

    def value(self, expression: str) -> str:
        """The repr of ``expression`` in the kernel."""
        outputs = self.run(expression)
        results = [o for o in outputs if o["output_type"] == "execute_result"]
        assert results, outputs
        return results[0]["data"]["text/plain"]


def text(outputs: list[dict]) -> str:
    return "".join(o.get("text", "") for o in outputs if o["output_type"] == "stream")


def _shown_text(outputs: list[dict]) -> str:
    """What a cell showed as text: its streams and its displays' plain text (a live view)."""
    return "".join(o.get("text", "") if o["output_type"] == "stream"
                   else o.get("data", {}).get("text/plain", "") for o in outputs)


def usage_error(outputs: list[dict]) -> str:
    """The one line IPython prints (to stderr, not as an error output) for a UsageError."""
    stderr = "".join(o["text"] for o in outputs
                     if o["output_type"] == "stream" and o["name"] == "stderr")
    return stderr.partition("UsageError: ")[2].strip()


def error(outputs: list[dict]) -> dict | None:
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert len(errors) <= 1
    return errors[0] if errors else None


@pytest.fixture(scope="module")
def live_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    home = tmp_path_factory.mktemp("kernel")
    env = KERNEL_ENV | {"JPY_SESSION_NAME": str(home / "pipeline.ipynb")}
    with started_kernel(home, env) as client:
        kernel = Kernel(client, home)
        kernel.run("%load_ext dagnb")
        yield kernel


def _into(folder: Path) -> str:
    """Cell code that moves the kernel to ``folder`` as if it had started there: its
    relative cache folder is pinned there too (``%load_ext dagnb`` pins the one it
    started in, which a ``%cd`` does not move), so each test has its own cache."""
    return (f"import os\nos.chdir({str(folder)!r})\n"
            "from dagnb.cache.location import pin_relative_folder\n"
            "pin_relative_folder(os.getcwd())")


@pytest.fixture
def kernel(live_kernel: Kernel, tmp_path: Path) -> Kernel:
    """The module's kernel, in a fresh folder with an empty graph."""
    return live_kernel.fresh(tmp_path)


# -- keys see notebook variables -------------------------------------------------------
def states(kernel: Kernel) -> str:
    return kernel.value("get_session().last_run.states()")


@pytest.mark.parametrize(("setup", "change", "body", "before", "after"), [
    ("PARAMS = {'alpha': 0.1}", "PARAMS['alpha'] = 0.5",
     "out = PARAMS['alpha'] * 10", "1.0", "5.0"),
    ("params = {'alpha': 0.1}", "params = {'alpha': 0.5}",
     "out = params['alpha'] * 10", "1.0", "5.0"),
    ("import pandas as pd\nframe = pd.DataFrame({'v': [1, 2]})", "frame.loc[0, 'v'] = 100",
     "out = int(frame['v'].sum())", "3", "102"),
    ("items = [1, 2]", "items.append(3)", "out = len(items)", "2", "3"),
    # (pandas reads @cutoff from the caller's frame: no bytecode loads it)
    ("import pandas as pd\nframe = pd.DataFrame({'v': range(10)})\ncutoff = 5",
     "cutoff = 2", "out = len(frame.query('v > @cutoff'))", "4", "7"),
    ("import pandas as pd\nsales = pd.DataFrame({'price': [10.0, 20.0]})\nrate = 0.1",
     "rate = 0.5", "out = sales.eval('price * (1 + @rate)').tolist()", "[11.0, 22.0]",
     "[15.0, 30.0]"),
], ids=["mutated-dict", "rebound-lower-case-dict", "dataframe-edited-in-place", "list-append",
        "query-at-variable", "eval-at-variable"])
def test_a_changed_notebook_variable_reruns_the_step(kernel: Kernel, setup: str, change: str,
                                                     body: str, before: str, after: str) -> None:
    kernel.run(setup)
    cell = f"%%dagger s --python --outputs out\n{body}\n"
    assert error(kernel.run(cell)) is None
    assert kernel.value("out") == before
    kernel.run("%dagger run")
    assert states(kernel) == "{'s': 'cached'}"
    kernel.run(change)
    explained = kernel.value("%dagger cache explain s")
    name = setup.splitlines()[-1].split(" = ")[0]
    assert explained.startswith(f"notebook variable `{name}` changed")
    assert error(kernel.run("%dagger run")) is None
    assert states(kernel) == "{'s': 'succeeded'}"
    assert kernel.value("out") == after


def test_a_notebook_variable_the_cell_changes_in_place_counts_by_its_value(
        kernel: Kernel) -> None:
    """`df['r'] = ...` and `cfg.setdefault(...)` made `df` and `cfg` the cell's state,
    counted by name: new data in `df`, or a new `cfg['k']`, was served the old total.
    A variable the cell only changes (`runs.append(1)`) stays state: no miss."""
    kernel.run("import pandas as pd\ndf = pd.DataFrame({'a': [1, 2]})\ncfg = {'k': 1}\n"
               "runs = []")
    cell = ("%%dagger feat --python --outputs total\ndf['r'] = df['a'] * 2\nruns.append(1)\n"
            "cfg.setdefault('epochs', 10)\ntotal = int(df['r'].sum()) * cfg['k']\n")
    assert error(kernel.run(cell)) is None
    assert kernel.value("total, list(df.columns), cfg") == (
        "(6, ['a', 'r'], {'k': 1, 'epochs': 10})")  # (changed in place, as by a plain cell)
    kernel.run("df = pd.DataFrame({'a': [10, 20]})")
    assert error(kernel.run(cell)) is None
    assert kernel.value("total") == "60"
    kernel.run("cfg['k'] = 3")
    assert kernel.value("%dagger cache explain feat").startswith(
        "notebook variable `cfg` changed")
    assert error(kernel.run(cell)) is None
    assert kernel.value("total") == "180"
    assert error(kernel.run(cell)) is None  # (as it left them: cached)
    assert states(kernel) == "{'feat': 'cached'}"


def test_a_notebook_variable_named_as_an_attribute_or_an_import_of_a_cell_is_not_its_input(
        kernel: Kernel) -> None:
    """`src.name`, `frame.a.mean()`, `import json` in a cell, and notebook variables
    `name`, `mean`, `json` changed: the cell stays cached (it went stale, "code changed",
    and ran again); a cell reading `name` runs again."""
    kernel.run("import pandas as pd\nname = 'alice'\nmean = 2.0")
    stats = ("%%dagger stats --python --outputs m\nimport json\nfrom pathlib import Path\n"
             "src = Path('data/raw.csv')\nframe = pd.DataFrame({'a': [1, 2, 3]})\n"
             "m = json.dumps([src.name, float(frame.a.mean())])\n")
    greet = "%%dagger greet --python --outputs hello\nhello = 'hi ' + name\n"
    assert error(kernel.run(stats)) is None and error(kernel.run(greet)) is None
    kernel.run("name = 'bob'\nmean = 2.5\nimport json")
    assert kernel.value("%dagger cache explain stats") == "entry found: it is cached"
    assert kernel.value("%dagger cache explain greet") == (
        "notebook variable `name` changed: 'alice' → 'bob'")
    assert error(kernel.run("%dagger run")) is None
    assert states(kernel) == "{'stats': 'cached', 'greet': 'succeeded'}"
    assert kernel.value("m, hello") == "('[\"raw.csv\", 2.0]', 'hi bob')"


def test_an_unfingerprintable_variable_gives_one_line_and_no_cache_entry(
        kernel: Kernel, tmp_path: Path) -> None:
    kernel.run("import threading\nlock = threading.Lock()")
    outputs = kernel.run("%%dagger l --python --outputs z\nz = lock.locked()\n")
    assert error(outputs) is None
    lines = [line for line in text(outputs).splitlines() if "not cached" in line]
    assert len(lines) == 1 and lines[0].endswith(
        "UserWarning: step 'l' ran but was not cached: notebook variable 'lock' "
        "(_thread.lock) cannot be fingerprinted (cannot pickle '_thread.lock' object); "
        "make it inside the function, or pass what it is made from as a parameter (params=)")
    assert kernel.value("z") == "False"
    assert not (tmp_path / ".dagnb_cache" / "l").exists()


def test_status_says_uncached_not_stale_for_a_result_that_was_not_stored(
        kernel: Kernel) -> None:
    kernel.run("%%dagger lam --python --outputs fn\nfn = lambda x: x + 1\n")  # not picklable
    kernel.run("%%dagger user --python --needs lam --outputs n\nn = lam(1)\n")
    kernel.run("%%dagger once --no-cache\necho once\n")
    kernel.run("%%dagger edited\necho one\n")
    kernel.run("%%dagger edited --define-only\necho two\n")  # its input changed
    kernel.run("from dagnb.notebook.overview import notebook_status\n"
               "status = notebook_status(get_session()).set_index('step')")
    assert text(kernel.run("print(dict(sorted(status['state'].items())))")) == (
        "{'edited': 'stale', 'lam': 'uncached', 'once': 'uncached', 'user': 'succeeded'}\n")
    assert text(kernel.run("print(dict(sorted(status['note'].items())))")) == (
        "{'edited': 'its inputs changed since it ran (%dagger plan says why)', "
        "'lam': 'not stored: its result cannot be pickled, or the disk is full "
        "(the warning said which)', "
        "'once': '--no-cache: its result is never stored', "
        "'user': 'runs again after lam, whose result is not stored'}\n")


def test_status_works_out_the_published_reads_once(kernel: Kernel) -> None:
    """A view with steps done and one not: the reads were worked out twice (for the stale
    marks, then for the notes of the steps not done), a few ms each."""
    kernel.run("%%dagger done --python --outputs rows\nrows = [1, 2]\n")
    kernel.run("%%dagger later --python --define-only\nprint(len(rows))\n")
    kernel.run("from dagnb.notebook.overview import notebook_status\n"
               "session = get_session()\n"
               "calls, works_out = [], session.published_reads\n"
               "session.published_reads = lambda *a, **k: calls.append(1) or works_out(*a, **k)\n"
               "states = notebook_status(session).set_index('step')['state'].to_dict()\n")
    assert kernel.value("states, len(calls)") == "({'done': 'succeeded', 'later': 'never run'}, 1)"


# -- failures fail the cell ---------------------------------------------------------------
def test_failing_cell_raises_with_stderr_tail_and_no_dagnb_frames(kernel: Kernel) -> None:
    outputs = kernel.run("%%dagger broken\necho partial\necho 'bad thing' >&2\nexit 3\n")
    failure = error(outputs)
    assert failure is not None and failure["ename"] == "RunFailed"
    shown = "\n".join(failure["traceback"])
    assert "broken  failed  3" in shown
    # the cell's text view showed its stderr as it came: the error does not repeat it
    assert "bad thing" in text(outputs) and "last lines of stderr" not in shown, shown
    assert "dagnb/" not in shown and "File " not in shown and "Traceback" not in shown
    assert "partial" in text(outputs)


def test_a_retried_steps_stderr_tail_says_which_attempt_printed_each_line(
        kernel: Kernel) -> None:
    """The tail of a step that failed every attempt spans them: each attempt's lines come
    under its rule, as ``dagnb run`` shows them, not run together as one traceback."""
    outputs = kernel.run('%%dagger flaky --retries 1\necho "try $DAGNB_ATTEMPT" >&2\nexit 3\n')
    failure = error(outputs)
    assert failure is not None and failure["ename"] == "RunFailed"
    shown = "\n".join(failure["traceback"])
    live = _shown_text(outputs)  # (a text-mode view: the error repeats none of it)
    assert "try 1\n── flaky: retrying 2/2 in " in live and " ──\ntry 2\n" in live, live
    assert "last lines of stderr" not in shown, shown
    after = kernel.run("%%dagger after --needs flaky\necho never\n")  # (flaky runs again)
    upstream, again = error(after), _shown_text(after)
    assert upstream is not None and "last lines of stderr" not in "\n".join(upstream["traceback"])
    assert "try 1\n── flaky: retrying 2/2 in " in again and " ──\ntry 2\n" in again, again


def test_no_raise_option_keeps_the_failure_as_data(kernel: Kernel) -> None:
    outputs = kernel.run("%%dagger broken --no-raise\nexit 3\n")
    assert error(outputs) is None
    assert "broken  failed" in text(outputs)


def test_nbconvert_execute_exits_non_zero_on_a_failed_step(tmp_path: Path) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in (
        "%load_ext dagnb",
        "%%dagger broken\necho 'bad thing' >&2\nexit 3\n",
        "print('after the failure')",
    )]
    path = tmp_path / "failing.ipynb"
    nbformat.write(notebook, path)
    env = {**os.environ, "DAGNB_WIDGETS": "0", "DAGNB_CONFIG": "none",
           "DAGNB_EXECUTOR": "local"}
    done = subprocess.run(
        [sys.executable, "-m", "jupyter", "nbconvert", "--to", "notebook", "--execute",
         "--output", "out.ipynb", str(path)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120,
    )
    assert done.returncode != 0
    assert "RunFailed" in done.stderr and "bad thing" in done.stderr


def test_run_only_failed_reruns_what_status_shows_failed_in_an_earlier_cell(
        kernel: Kernel, tmp_path: Path) -> None:
    kernel.run("%%dagger flaky --no-raise\ntest -f ok || exit 1\necho fine\n")
    kernel.run("%%dagger other\necho other\n")  # the last run: nothing failed in it
    (tmp_path / "ok").touch()
    outputs = kernel.run("%dagger run --only-failed")
    assert error(outputs) is None, outputs
    assert states(kernel) == "{'flaky': 'succeeded'}"
    again = kernel.run("%dagger run --only-failed")
    assert again[0]["data"]["text/plain"] == ("nothing to run again: no step failed, was "
                                              "skipped or was cancelled (see %dagger status)")


def test_a_background_run_is_in_status_history_and_logs_while_it_runs(
        kernel: Kernel, tmp_path: Path) -> None:
    outputs = kernel.run("%%dagger slow --background\necho started\n"  # (20 s at most)
                         "for i in $(seq 400); do [ -f release ] && break; sleep 0.05; done\n")
    try:
        _seen_while_it_runs(kernel)
    finally:
        (tmp_path / "release").touch()
        kernel.run("get_session().last_run.wait(30)")  # (ended, whatever failed: the
        #                                                 kernel's next test starts clean)
    assert error(outputs) is None, outputs
    assert kernel.value("get_session().last_run.wait(30).states()") == "{'slow': 'succeeded'}"
    assert text(kernel.run(_STATES)) == "{'slow': 'succeeded'}\n"
    assert text(kernel.run(_RUNS)) == "[('slow', 0, 1)]\n"


def test_a_background_run_ending_after_a_newer_run_of_its_step_leaves_it_the_latest(
        kernel: Kernel, tmp_path: Path) -> None:
    slow = ("%%dagger slow --background --no-cache\nif [ -f first ]; then echo second-run\n"
            "else touch first; for i in $(seq 400); do [ -f release ] && break; sleep 0.05; "
            "done; echo first-run; fi\n")
    try:
        assert error(kernel.run(slow)) is None
        _wait_for(tmp_path / "first")  # (the background step is under way, not only asked for)
        assert error(kernel.run("%dagger run slow")) is None  # the newer run, done first
    finally:
        (tmp_path / "release").touch()
    kernel.run("import time\nfor _ in range(400):\n    if not get_session().live: break\n"
               "    time.sleep(0.05)")  # the background run is published
    assert kernel.value("len(get_session().runs), get_session().live") == "(2, {})"
    assert text(kernel.run(_STATES)) == "{'slow': 'uncached'}\n"  # (--no-cache)
    lines = "lines = %dagger logs slow\nprint(list(lines['line']))"
    assert text(kernel.run(lines)) == "['second-run']\n"


_GATE = ("%%dagger gate --define-only --no-cache\n"  # (20 s at most)
         "for i in $(seq 400); do [ -f release ] && break; sleep 0.05; done\n")
_OLDER = "%%dagger vstep --python --needs gate --outputs v --background\nv = 'older'\n"
_PUBLISHED = ("import threading\nbackground.wait(30)\nfor thread in threading.enumerate():\n"
              "    if thread.name == 'dagnb-publish':\n        thread.join(30)")


def test_a_background_run_publishes_its_results_when_it_ends(
        kernel: Kernel, tmp_path: Path) -> None:
    kernel.run(_GATE)
    kernel.run("v = 'unset'")
    try:
        assert error(kernel.run(_OLDER)) is None
        kernel.run("background = get_session().last_run")
        assert kernel.value("v") == "'unset'"
    finally:
        (tmp_path / "release").touch()
    kernel.run(_PUBLISHED)
    assert kernel.value("v, _dagger['vstep'], sorted(_dagger)") == (
        "('older', 'older', ['gate', 'vstep'])")


def test_a_background_run_ending_after_a_newer_run_of_its_step_keeps_the_newer_result(
        kernel: Kernel, tmp_path: Path) -> None:
    kernel.run(_GATE)
    try:
        assert error(kernel.run(_OLDER)) is None
        kernel.run("background = get_session().last_run")
        newer = "%%dagger vstep --python --outputs v\nv = 'newer'\n"  # (no --needs: at once)
        assert error(kernel.run(newer)) is None
        assert kernel.value("background.done, v") == "(False, 'newer')"
    finally:
        (tmp_path / "release").touch()
    kernel.run(_PUBLISHED)
    assert kernel.value("background.states()") == "{'gate': 'succeeded', 'vstep': 'succeeded'}"
    assert kernel.value("v, _dagger['vstep'], sorted(_dagger)") == (
        "('newer', 'newer', ['gate', 'vstep'])")  # (gate: no newer run of it, published)


def _wait_for(path: Path, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not path.exists():
        assert time.monotonic() < deadline, f"{path} never appeared"
        time.sleep(0.02)


@pytest.mark.skipif(os.name != "posix", reason="process groups and sessions")
@pytest.mark.parametrize("now", [True, False], ids=["killed", "shut-down"])
def test_a_restart_during_a_background_run_kills_its_step_processes(
        kernel: Kernel, now: bool) -> None:
    marker = f"sleep 301.{os.getpid()}{int(now)}"  # (the shell and its sleep show it)
    outputs = kernel.run(f"%%dagger bgl --background --no-cache\necho start; {marker}; echo done")
    try:
        assert error(outputs) is None, outputs
        assert wait_until(lambda: len(processes_showing(marker)) == 2, timeout=20)
        kernel.restart(now=now)
        assert wait_until(lambda: not processes_showing(marker), timeout=3), (
            how_they_stand(processes_showing(marker) + processes_showing(_WATCHER)))
    finally:
        for pid in processes_showing(marker):
            os.kill(pid, signal.SIGKILL)


_WATCHER = "dagnb/executors/watcher.py"


def how_they_stand(pids: list[int]) -> dict[int, str]:
    """For a failure's message (a step's processes outlived a shut-down kernel once in
    ~70 runs beside busy loops, never since): each one's command, state, parent,
    group and signal masks, the step's and any watcher left."""
    fields = ("State", "PPid", "NSpgid", "NSsid", "SigBlk", "SigIgn", "SigCgt")
    found = {}
    for pid in pids:
        with contextlib.suppress(OSError):
            lines = Path(f"/proc/{pid}/status").read_text().splitlines()
            command = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
            found[pid] = " ".join([command.decode(errors="replace")[:80]] + [
                line.replace("\t", " ") for line in lines if line.split(":")[0] in fields])
    return found


def processes_showing(marker: str) -> list[int]:
    """The live processes whose command line holds ``marker``."""
    found = []
    for name in filter(str.isdigit, os.listdir("/proc")):
        try:
            cmdline = Path(f"/proc/{name}/cmdline").read_bytes().replace(b"\0", b" ")
            state = Path(f"/proc/{name}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if marker.encode() in cmdline and state != "Z" and int(name) != os.getpid():
            found.append(int(name))
    return found


def test_a_cell_waiting_for_a_step_a_background_run_computes_says_so_at_once(
        kernel: Kernel, tmp_path: Path) -> None:
    slow = ("%%dagger x --background\ntouch started\n"  # (10 s at most)
            "for i in $(seq 200); do [ -f release ] && break; sleep 0.05; done; echo x-done\n")
    assert error(kernel.run(slow)) is None
    _wait_for(tmp_path / "started")  # (it computes x, its key held)
    said = "── x: waiting for another run computing it ──\n"
    release = threading.Thread(target=_touch_once_shown, daemon=True,
                               args=(kernel, said, tmp_path / "release"))
    release.start()
    begun = time.monotonic()
    outputs = kernel.run("%dagger run x")
    release.join(1)
    (tmp_path / "release").touch()
    assert error(outputs) is None, outputs
    assert text(outputs).startswith(said)  # (shown while waiting: it let the step end)
    assert text(outputs).count(said) == 1
    assert time.monotonic() - begun < 8, text(outputs)
    assert text(kernel.run(_STATES)) == "{'x': 'cached'}\n"


def _touch_once_shown(kernel: Kernel, line: str, path: Path) -> None:
    """Create ``path`` once the running cell (the last one) shows ``line``."""
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        cell = kernel.client.nb.cells[-1]
        if cell.source == "%dagger run x" and line in text(list(cell.outputs)):
            path.touch()
            return
        time.sleep(0.02)


_STATES = "s = %dagger status\nprint(dict(zip(s['step'], s['state'])))"
_RUNS = "h = %dagger history\nprint(list(zip(h['steps'], h['unfinished'], h['succeeded'])))"


def _seen_while_it_runs(kernel: Kernel) -> None:
    # (until its line is there: the step may be running with nothing printed yet)
    kernel.run("import time\nfor _ in range(200):\n    lines = %dagger logs slow\n"
               "    if not isinstance(lines, str) and len(lines): break\n    time.sleep(0.05)")
    assert text(kernel.run("print(list(lines['line']))")) == "['started']\n"
    assert text(kernel.run(_STATES)) == "{'slow': 'running'}\n"
    assert text(kernel.run(_RUNS)) == "[('slow', 1, 0)]\n"  # going, not "nothing ran"


# -- defining a step is all or nothing ----------------------------------------------------
def test_refused_cell_leaves_status_and_the_next_cell_unaffected(kernel: Kernel) -> None:
    assert error(kernel.run("%%dagger a --python --outputs x\nx = 1\n")) is None
    refused = usage_error(kernel.run("%%dagger c2 --python --needs aa\ny = 2\n"))
    assert refused == "step 'c2' needs 'aa', which is not a step; did you mean 'a'?"
    assert "c2" not in kernel.value("%dagger status")
    outputs = kernel.run("%%dagger b --python --needs a --outputs y\ny = a + 1\n")
    assert error(outputs) is None, outputs
    assert kernel.value("y") == "2"
    assert "c2" not in kernel.value("sorted(_dagger)")


@pytest.mark.parametrize(("source", "message"), [
    ("%%dagger x --python --outputs class\nx = 1\n",
     "--outputs 'class': `class` is a Python keyword, not a name for an output; call it "
     "class_ for instance"),
    ("%%dagger x --python --needs a,a\nx = 1\n",
     "--needs: upstream step 'a' is listed twice; list it once"),
    ("%%dagger x --python --param my-p=1\nx = 1\n",
     "--param 'my-p' is not a Python name, and a --python cell's param (read as a variable) "
     "needs one; call it my_p for instance"),
    ("%%dagger x --python --needs load-data\nx = 1\n",
     "step 'load-data' is not a Python name, so this --python cell cannot receive it; "
     "rename the step load_data"),
    ("%dagger logs a --tail -2",
     "--tail -2: --tail must be a positive number of lines; write it like --tail 20"),
    ("%dagger logs a --tail 0",
     "--tail 0: --tail must be a positive number of lines; write it like --tail 20"),
    ("%dagger status --foo",
     "%dagger status takes no arguments, got '--foo'; write %dagger status alone (see %dagger?)"),
    ("%dagger history extra",
     "%dagger history takes no 'extra'; for one run's steps, name it with --run: "
     "%dagger history --run extra"),
    ("%dagger explain a",
     "unknown %dagger command 'explain'; did you mean %dagger cache explain a?"),
    ("%dagger cache remove a",
     "%dagger cache 'remove' is not a cache command; did you mean %dagger cache clear a?"),
    ("%dagger run --target a",  # (it suggested --tags)
     "%dagger run has no --target option; give the step name as an argument: %dagger run a"),
], ids=["keyword-output", "need-twice", "param-not-a-name", "upstream-not-a-name",
        "tail-negative", "tail-zero",
        "status-argument", "history-argument", "explain-no-cache", "cache-remove",
        "run-target"])
def test_bad_input_is_one_line_naming_the_value_and_the_fix(kernel: Kernel, source: str,
                                                            message: str) -> None:
    assert error(kernel.run("%%dagger a\necho a\n")) is None
    assert usage_error(kernel.run(source)) == message
    assert kernel.value("get_session().graph.names") == "['a']"  # the cell defined nothing


def test_plan_of_an_empty_graph_is_the_sentence_status_says(kernel: Kernel) -> None:
    """It printed "Empty DataFrame", where status says a sentence."""
    said = "no steps yet: define one with a %%dagger cell"
    assert kernel.value("%dagger status") == kernel.value("%dagger plan") == said


def test_after_a_restart_a_downstream_cell_says_which_cell_to_run_first(
        kernel: Kernel, tmp_path: Path) -> None:
    cells = ["%load_ext dagnb", "%%dagger prep --python --outputs n\nn = 3\n",
             "%%dagger total --python --needs prep --outputs t\nt = prep * 2\n"]
    saved = kernel.home / "pipeline.ipynb"
    saved.unlink(missing_ok=True)
    kernel.restart()  # the cells are saved only after the kernel read its notebook
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, saved)
    kernel.run(_into(tmp_path))
    refused = usage_error(kernel.run(cells[2]))
    assert refused == ("step 'total' needs 'prep', which is not defined in this kernel yet; run "
                       "cell 2 of pipeline.ipynb (%%dagger prep --python --outputs n) first")
    status = kernel.run("%dagger status")  # the refused cell defined nothing
    assert status[0]["data"]["text/plain"] == "no steps yet: define one with a %%dagger cell"
    assert error(kernel.run(cells[1])) is None
    assert error(kernel.run(cells[2])) is None
    assert kernel.value("t") == "6"


def save_notebook(kernel: Kernel, cells: list[str]) -> None:
    """The kernel's notebook file (what %load_ext reads after a restart), of these cells."""
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, kernel.home / "pipeline.ipynb")


def test_after_a_restart_that_reads_the_notebook_a_downstream_cell_runs_first(
        kernel: Kernel, tmp_path: Path) -> None:
    cells = ["%load_ext dagnb", "%%dagger c2 --python --needs aa\ny = 2\n",
             "%%dagger prep --python --outputs n\nn = 3\n",
             "%%dagger total --python --needs prep --outputs t\nt = prep * 2\n"]
    save_notebook(kernel, cells)
    kernel.restart()  # reads the notebook's cells: the broken c2 is passed over
    kernel.run(f"{_into(tmp_path)}\n"
               "from dagnb.notebook.session import get_session")
    assert kernel.value("get_session().graph.names") == "['prep', 'total']"
    assert error(kernel.run(cells[3])) is None
    assert kernel.value("t") == "6"


def test_after_a_restart_a_cell_whose_line_reads_a_variable_is_not_read_from_the_file(
        kernel: Kernel, tmp_path: Path) -> None:
    """IPython expands ``$customer`` in the cell's line when the cell runs; read from the
    file it was the text '$customer', which a downstream cell run first computed, cached
    and passed on ('REPORT FOR $CUSTOMER'). ``$$`` is a ``$`` as when the cell runs."""
    cells = ["%load_ext dagnb", "customer = 'acme'",
             "%%dagger title --python --param who=$customer --outputs t\nt = 'for ' + who\n",
             "%%dagger page --python --needs title --outputs page\npage = title.upper()\n",
             "%%dagger price --python --param p=$$5 --outputs x\nx = p\n",
             "%%dagger tag --python --needs price --outputs y\ny = price + '!'\n"]
    save_notebook(kernel, cells)
    kernel.run(_into(tmp_path))
    for source in cells[1:]:
        assert error(kernel.run(source)) is None
    assert kernel.value("page") == "'FOR ACME'"
    kernel.restart()  # reads the notebook: title (and page, which needs it) is left out
    kernel.run(f"{_into(tmp_path)}\n"
               "from dagnb.notebook.session import get_session")
    assert kernel.value("get_session().graph.names") == "['price', 'tag']"
    assert error(kernel.run(cells[5])) is None  # price's line as run: p = '$5', cached
    assert states(kernel) == "{'price': 'cached', 'tag': 'cached'}"
    kernel.run(cells[1])
    refused = usage_error(kernel.run(cells[3]))
    assert refused.startswith("step 'page' needs 'title', which is not defined in this "
                              "kernel yet; run cell 3 of pipeline.ipynb"), refused
    assert error(kernel.run(cells[2])) is None
    assert error(kernel.run(cells[3])) is None
    assert states(kernel) == "{'title': 'cached', 'page': 'cached'}"
    assert kernel.value("page") == "'FOR ACME'"


def test_after_a_restart_a_step_failing_on_a_variable_not_defined_yet_says_which_cell_to_run(
        kernel: Kernel, tmp_path: Path) -> None:
    cells = ["%load_ext dagnb", "k = 3", "%%dagger a --python --outputs x\nx = k * 2\n",
             "%%dagger b --python --needs a --outputs y\ny = a + 1\n"]
    save_notebook(kernel, cells)
    for source in cells[1:]:
        assert error(kernel.run(source)) is None
    kernel.restart()  # reads the notebook: a and b are defined, k is not
    kernel.run(f"{_into(tmp_path)}\n"
               "from dagnb.notebook.session import get_session")
    failed = error(kernel.run(cells[3]))
    assert failed is not None and failed["ename"] == "RunFailed"
    note = ("step 'a' reads notebook variable `k`, not defined in this kernel yet; "
            "run cell 2 of pipeline.ipynb first")
    assert failed["traceback"][-2] == note
    assert states(kernel) == "{'a': 'failed', 'b': 'skipped'}"
    kernel.run(cells[1])
    assert error(kernel.run(cells[3])) is None
    assert states(kernel) == "{'a': 'cached', 'b': 'cached'}"
    assert kernel.value("y") == "7"


def test_after_a_restart_a_cell_reading_a_variable_before_assigning_it_is_read_as_run(
        kernel: Kernel, tmp_path: Path) -> None:
    """Read from the file before cell 2 ran, `clean` took `rows` as its own local: run
    first, a downstream cell failed with an UnboundLocalError (no word of cell 2), and
    after cell 2 too, where the cells run in order read the notebook's `rows` (cached)."""
    cells = ["%load_ext dagnb", "rows = [1, 2, 3]",
             "%%dagger clean --python --outputs kept\nrows = [r for r in rows if r > 1]\n"
             "kept = rows\n",
             "%%dagger total --python --needs clean --outputs t\nt = sum(clean)\n"]
    save_notebook(kernel, cells)
    kernel.run(_into(tmp_path))
    for source in cells[1:]:
        assert error(kernel.run(source)) is None
    kernel.restart()  # reads the notebook: clean is defined, rows is not
    kernel.run(f"{_into(tmp_path)}\n"
               "from dagnb.notebook.session import get_session")
    failed = error(kernel.run(cells[3]))
    assert failed is not None and failed["traceback"][-2] == (
        "step 'clean' reads notebook variable `rows`, not defined in this kernel yet; "
        "run cell 2 of pipeline.ipynb first")
    kernel.run(cells[1])
    assert error(kernel.run(cells[3])) is None
    assert states(kernel) == "{'clean': 'cached', 'total': 'cached'}"
    assert kernel.value("t") == "5"


def test_a_step_using_the_notebook_s_sqlite_connection_is_told_where_steps_run(
        kernel: Kernel) -> None:
    """sqlite3 refuses a connection used off the thread that made it, and nothing said
    that a step runs on dagnb's thread, not the notebook's."""
    kernel.run("import sqlite3\ncon = sqlite3.connect(':memory:')")
    failed = error(kernel.run("%%dagger q --python --outputs n\n"
                              "n = con.execute('select 1').fetchone()[0]\n"))
    assert failed is not None and failed["ename"] == "RunFailed"
    assert failed["traceback"][-2] == (
        "step 'q' used an object the notebook made on its own thread or event loop (a "
        "sqlite3 connection, an async client); steps run on dagnb's: make it inside the "
        "step, from what the notebook holds (a path, a URL)")


def test_a_name_error_for_a_name_no_cell_defines_adds_no_note(kernel: Kernel) -> None:
    failed = error(kernel.run("%%dagger a --python --outputs x\nx = nowhere * 2\n"))
    assert failed is not None and failed["ename"] == "RunFailed"
    assert not any("not defined in this kernel yet" in line for line in failed["traceback"])


@pytest.mark.parametrize("body", [
    "global counter\ncounter = 1\nout = counter + 1",
    "if flag:\n    out = undefined_thing\nelse:\n    out = 1",
    "try:\n    out = cfg\nexcept NameError:\n    out = 1",
    "f = lambda: never_defined\nout = 1",
], ids=["global-statement", "branch-not-taken", "try-name-error", "lambda-never-called"])
def test_a_step_naming_an_undefined_variable_it_never_reads_runs(kernel: Kernel,
                                                                 body: str) -> None:
    kernel.run("flag = False")
    outputs = kernel.run(f"%%dagger s --python --outputs out\n{body}\n")
    assert error(outputs) is None and usage_error(outputs) == "", outputs
    assert kernel.value("out") in ("1", "2")


def test_after_a_restart_only_failed_runs_the_failed_step_alone(
        kernel: Kernel, tmp_path: Path) -> None:
    cells = ["%load_ext dagnb", "k = 3", "%%dagger a --python --no-cache --outputs x\nx = k\n",
             "%%dagger b --python --outputs y\nimport os\nif not os.path.exists('ok'):\n"
             "    raise ValueError('no')\ny = 1\n"]
    save_notebook(kernel, cells)
    kernel.run(_into(tmp_path))
    for source in cells[1:]:
        kernel.run(source)
    kernel.restart()  # reads the notebook: b failed in the last run, k is not defined
    kernel.run(f"{_into(tmp_path)}\n"
               "from dagnb.notebook.session import get_session\nopen('ok', 'w').close()")
    outputs = kernel.run("%dagger run --only-failed")
    assert error(outputs) is None and usage_error(outputs) == "", outputs
    assert states(kernel) == "{'b': 'succeeded'}"


# -- params and IPython syntax in --python cells ------------------------------------------
def test_a_python_cell_can_reassign_a_notebook_variable_as_a_plain_cell_does(
        kernel: Kernel) -> None:
    kernel.run("%%dagger a --python --outputs n\nn = 5\n")
    kernel.run("data = [1, 2, 3]")
    cell = "%%dagger b --python --needs a --outputs data\ndata = data + [a]\n"
    assert error(kernel.run(cell)) is None
    assert kernel.value("data") == "[1, 2, 3, 5]"
    assert kernel.value("%dagger cache explain b").startswith(
        "notebook variable `data` changed: [1, 2, 3] → [1, 2, 3, 5]")
    assert error(kernel.run(cell)) is None  # run again, as a plain cell would be
    assert kernel.value("data") == "[1, 2, 3, 5, 5]"


def test_params_and_shell_escapes_work_in_a_python_cell(kernel: Kernel) -> None:
    outputs = kernel.run("%%dagger listing --python --param n=2 --outputs found\n"
                         "files = !printf 'a\\nb\\nc\\n'\nfound = list(files)[:n]\n")
    assert error(outputs) is None, outputs
    assert kernel.value("found") == "['a', 'b']"


def test_a_python_cells_param_from_a_notebook_variable_keeps_its_python_value(
        kernel: Kernel) -> None:
    """IPython expands `$debug` to the text 'False' (true in an `if`), `$cities` to a
    list's repr, `$limit` to 'None': JSON reads none of them, so the step got text."""
    kernel.run("debug = False\ncities = ['Paris', 'Oslo']\nlimit = None")
    cell = ('%%dagger p --python --param debug=$debug --param cities="$cities" '
            '--param limit=$limit --param who="\'acme\'" --outputs got\n'
            'got = (debug, cities, limit, who)\n')
    assert error(kernel.run(cell)) is None
    assert kernel.value("got") == "(False, ['Paris', 'Oslo'], None, \"'acme'\")"
    shell = "%%dagger sh --param debug=$debug\necho \"$DAGNB_PARAM_DEBUG\"\n"
    assert error(kernel.run(shell)) is None  # (a shell step's stays the text)
    assert kernel.value("get_session().last_run.logs('sh')['line'].tolist()") == "['False']"


def test_a_notebook_variable_with_a_space_in_a_dagger_cells_line_is_one_value(
        kernel: Kernel) -> None:
    """IPython writes `$city` into the line as it is: "New York" made two words, one of
    which the parser refused (said with the quoted form). The cell's line is read as
    typed now, each field given its value whole, as a line magic's is."""
    kernel.run('city = "New York"\ntoken = "abc"')
    for line in ("--param who=$city", '--param who="$city"', "--param who={city}"):
        outputs = kernel.run(f'%%dagger s {line}\necho "$DAGNB_PARAM_WHO"\n')
        assert error(outputs) is None, outputs
        assert kernel.value("get_session().last_run.logs('s')['line'].tolist()") == (
            "['New York']")
    outputs = kernel.run("%%dagger y --python --param tok=$token --param w=$city\n"
                         "print(tok, w)\n")
    assert error(outputs) is None, outputs
    assert usage_error(kernel.run("%dagger logs {city}")).startswith(
        "no step named 'New York' in the graph")


def test_a_notebook_value_with_quotes_in_a_dagger_cells_line_arrives_whole(
        kernel: Kernel) -> None:
    """``label = 'say "hi" now'`` with ``--param label="$label"`` gave ``say hi now``,
    silently (IPython wrote it into the line, whose quotes the parser then took); a
    list with an apostrophe was refused with a fix that was refused in its turn."""
    kernel.run('label = \'say "hi" now\'\ncities = ["it\'s", "Zürich"]')
    outputs = kernel.run('%%dagger q --python --param label="$label" '
                         '--param cities="$cities" --outputs got\ngot = (label, cities)\n')
    assert error(outputs) is None, outputs
    assert kernel.value("got") == """('say "hi" now', ["it's", 'Zürich'])"""
    outputs = kernel.run('%%dagger sh --param label="$label"\necho "$DAGNB_PARAM_LABEL"\n')
    assert error(outputs) is None, outputs
    assert kernel.value("get_session().last_run.logs('sh')['line'].tolist()") == (
        """['say "hi" now']""")


# a value with a double quote, an apostrophe and spaces: IPython's line lost its quotes
# or did not split, where the %dagger line as typed gives it whole
_QUOTED_NAME = """it's "our" flow.yml"""


def test_a_notebook_value_with_quotes_and_spaces_in_a_dagger_line_magic_arrives_whole(
        kernel: Kernel, tmp_path: Path) -> None:
    """``%dagger save $name``, ``name`` holding ``it's "our" flow.yml``, was refused (No
    closing quotation), and ``"$name"`` saved ``it's our flow.yml``; a load, a setting the
    same."""
    kernel.run(f"import dagnb.config\nname = {_QUOTED_NAME!r}")
    kernel.printed("%%dagger s --define-only\necho hi\n")
    for line in ("%dagger save $name", '%dagger save "$name"', "%dagger save {name}"):
        assert error(outputs := kernel.run(line)) is None, outputs
        assert usage_error(outputs) == "", outputs
        assert [path.name for path in tmp_path.glob("*.yml")] == [_QUOTED_NAME]
    kernel.printed("%dagger reset")
    assert kernel.value('%dagger load "$name"') == f"loaded 1 step from {_QUOTED_NAME}: s"
    try:
        kernel.printed("%dagger config project=$name")
        assert kernel.value("dagnb.config.settings().project") == repr(_QUOTED_NAME)
    finally:  # (the module's kernel serves the next tests)
        kernel.printed("%dagger config project=null")


def test_each_dagger_line_magic_of_a_cell_reads_its_own_line_as_typed(
        kernel: Kernel, tmp_path: Path) -> None:
    """Two ``%dagger`` lines among other code, one assigned, one in a block: each is
    given the values of its own fields (``$$name`` is ``$name``); a ``run_line_magic``
    call, with no such line typed, takes the line IPython gave it, as a cell's does."""
    kernel.run(f"name = {_QUOTED_NAME!r}\nother = 'b c.yml'")
    kernel.printed("%%dagger s --define-only\necho hi\n")
    said = kernel.printed("n = 1\n%dagger save $name\nn += 1\n"
                          'said = %dagger save "$$name {other}"\nif n:\n    %dagger save $other\n'
                          "print(said)\n")
    assert said == "saved 1 step to $name b c.yml\n"
    assert sorted(path.name for path in tmp_path.glob("*.yml")) == [
        "$name b c.yml", "b c.yml", _QUOTED_NAME]
    refused = usage_error(kernel.run(
        "%dagger save {name}\nget_ipython().run_line_magic('dagger', 'save $other')\n"))
    assert refused == ("%dagger save takes one path, such as %dagger save pipeline.yml; "
                       "got 'b c.yml'")


@pytest.mark.parametrize(("body", "before", "after"), [
    ("out = !echo value-{x} and $x", "['value-one and one']", "['value-two and two']"),
    ("!echo $x > shown.txt\nout = open('shown.txt').read()", "'one\\n'", "'two\\n'"),
    ("%env DAGNB_TEST_X=$x\nout = os.environ['DAGNB_TEST_X']", "'one'", "'two'"),
    ("out = %env DAGNB_TEST_{x.upper()}", "'1'", "'2'"),
], ids=["captured-shell-line", "shell-line", "line-magic", "captured-line-magic"])
def test_a_notebook_variable_an_ipython_line_expands_reruns_the_step(
        kernel: Kernel, body: str, before: str, after: str) -> None:
    kernel.run("import os\nos.environ.update(DAGNB_TEST_ONE='1', DAGNB_TEST_TWO='2')\n"
               "x = 'one'")
    cell = f"%%dagger s --python --outputs out\n{body}\n"
    assert error(kernel.run(cell)) is None
    assert kernel.value("out") == before
    kernel.run("x = 'two'")
    assert kernel.value("%dagger cache explain s").startswith("notebook variable `x` changed")
    assert error(kernel.run(cell)) is None
    assert states(kernel) == "{'s': 'succeeded'}"
    assert kernel.value("out") == after


def test_a_timed_statement_assigns_and_reads_as_in_a_plain_cell(kernel: Kernel) -> None:
    kernel.run("y = 10")
    cell = "%%dagger timed --python --outputs z\n%time z = y * 2\n"
    outputs = kernel.run(cell)
    assert error(outputs) is None, outputs
    assert "Wall time: " in text(outputs)
    assert kernel.value("z") == "20"
    kernel.run("y = 50")
    assert error(kernel.run(cell)) is None
    assert states(kernel) == "{'timed': 'succeeded'}"
    assert kernel.value("z") == "100"

def test_a_mistyped_output_is_refused_not_taken_from_the_notebook(kernel: Kernel) -> None:
    kernel.run("score = 0.5")
    outputs = kernel.run("%%dagger fit --python --outputs score\nscroe = 0.93\n")
    assert error(outputs) is None
    assert usage_error(outputs) == ("step 'fit': --outputs 'score' is not assigned in the "
                                    "cell; did you mean 'scroe'?")
    assert kernel.value("get_session().graph.names") == "[]"
    assert kernel.value("score") == "0.5"

def test_a_cell_with_outputs_ended_by_sys_exit_0_fails_and_leaves_the_variable(
        kernel: Kernel) -> None:
    """It succeeded, set v to None over the notebook's value and cached that."""
    kernel.run("v = 5")
    cell = "%%dagger s --python --outputs v\nimport sys; sys.exit(0)\nv = 1\n"
    said = ("step 's': the cell ended (sys.exit(0)) before assigning its --outputs 'v'; "
            "nothing was stored: assign them before sys.exit(), or raise to fail the step")
    for _ in range(2):  # (the second runs it again: nothing was stored)
        failure = error(kernel.run(cell))
        assert failure is not None and failure["ename"] == "RunFailed"
        assert said in "\n".join(failure["traceback"])
        assert states(kernel) == "{'s': 'failed'}"
    assert kernel.value("v") == "5"
    assert error(kernel.run("%%dagger e --python\nimport sys; sys.exit(0)\n")) is None


def test_an_output_the_cells_code_did_not_reach_fails_in_one_line(kernel: Kernel) -> None:
    """It failed with an UnboundLocalError pointing at a hidden `return u` line."""
    kernel.run("w = 3")  # (w, read before assigned, nests the cell's function in another)
    outputs = kernel.run("%%dagger s --python --param flag=false --outputs w,u\n"
                         "w = w + 1\nif flag:\n    u = 1\n")
    failure = error(outputs)
    assert failure is not None and failure["ename"] == "RunFailed"
    shown = "\n".join([*failure["traceback"], text(outputs)])
    assert ("s     failed  1     step 's': --outputs 'u' was not assigned: the cell's code "
            "did not reach an assignment to it; assign it on every path (u = None first, "
            "say)") in shown, shown
    assert "return" not in shown and "Traceback" not in shown and "File " not in shown
    assert kernel.value("w") == "3"


# -- secrets -----------------------------------------------------------------------------
def test_a_notebook_global_holding_a_secret_is_masked_in_the_cache_explain_and_plan(
        kernel: Kernel, tmp_path: Path) -> None:
    secret = "tok-ABCDEF123456"
    kernel.run(f"import os\nos.environ['API_TOKEN'] = {secret!r}\n"
               "headers = {'Authorization': 'Bearer ' + os.environ['API_TOKEN']}")
    cell = "%%dagger fetch --python --secret API_TOKEN --outputs n\nn = len(headers)\n"
    assert error(kernel.run(cell)) is None
    kernel.run("headers['Accept'] = 'json'")
    explained = kernel.value("%dagger cache explain fetch")
    planned = text(kernel.run("planned = %dagger plan\nprint(list(planned['reason']))"))
    assert "{'Authorization': 'Bearer ***'}" in explained and "Bearer ***" in planned
    assert error(kernel.run(cell)) is None  # stores the new description
    assert secret not in explained + planned
    stored = [p for p in (tmp_path / ".dagnb_cache").rglob("*")
              if p.is_file() and secret.encode() in p.read_bytes()]
    assert stored == []


_IN_PIECES = ("import os, sys, time\nt = os.environ['SPLIT_TOKEN']\n"
              "def in_pieces(who):\n"
              "    print(who, t[:4], end='', flush=True); time.sleep(0.3); print(t[4:])\n")


def test_a_secret_written_in_pieces_outside_steps_shows_masked_in_the_cell(
        kernel: Kernel, tmp_path: Path) -> None:
    """What a step's thread prints, and the notebook's own prints while a background run
    goes on, reach the cell's output masked a write at a time: a secret written in pieces,
    a flush and a pause between them (ipykernel sends each), was shown in clear."""
    secret = "tok-KERNEL-5556667"
    kernel.run(f"os.environ['SPLIT_TOKEN'] = {secret!r}\n{_IN_PIECES}")
    threaded = kernel.run("%%dagger th --python --secret SPLIT_TOKEN --no-cache\n"
                          "import threading\n"
                          "thread = threading.Thread(target=in_pieces, args=('thread',))\n"
                          "thread.start(); thread.join()\n")
    assert error(threaded) is None, threaded
    try:
        assert error(kernel.run("%%dagger slow --secret SPLIT_TOKEN --background --no-cache\n"
                                "for i in $(seq 400); do [ -f release ] && break; sleep 0.05;"
                                " done\n")) is None
        own = kernel.run("in_pieces('cell')")
    finally:
        (tmp_path / "release").touch()
        kernel.run("get_session().last_run.wait(30)")
    shown = text(threaded) + text(own)
    assert secret not in shown and "thread ***\n" in shown and "cell ***\n" in shown


def test_a_logging_handler_and_a_subprocess_of_a_step_show_its_secret_masked_in_the_cell(
        tmp_path: Path) -> None:
    """A ``logging`` handler made at the top of the notebook holds the kernel's stream
    itself, and ipykernel writes what a subprocess prints with that stream's ``write``:
    both went past dagnb's stand-ins, and the secret reached the cell, and the saved
    notebook, in clear. A kernel of its own: ipykernel forwards file descriptors 1 and 2
    to the cell only where ``PYTEST_CURRENT_TEST`` is not set, as in JupyterLab."""
    secret = "tok-LOGGED-8889990"
    env = KERNEL_ENV | {"JPY_SESSION_NAME": str(tmp_path / "pipeline.ipynb")}
    with started_kernel(tmp_path, env, unset=("PYTEST_CURRENT_TEST",)) as client:
        kernel = Kernel(client, tmp_path)
        kernel.run(f"%load_ext dagnb\nimport logging, os, time\n"
                   f"os.environ['LOG_TOKEN'] = {secret!r}\n"
                   "logging.basicConfig(level=logging.INFO, force=True)")
        outputs = kernel.run(
            "%%dagger call --python --secret LOG_TOKEN --no-cache\n"
            "import logging, os, subprocess\n"
            "logging.info('GET /v1?token=%s', os.environ['LOG_TOKEN'])\n"
            "subprocess.run(['sh', '-c', 'echo Bearer $LOG_TOKEN'])\n")
        assert error(outputs) is None, outputs
        # (ipykernel forwards the subprocess's line from a thread: this cell or the next)
        shown = _shown_text(outputs) + _shown_text(kernel.run("time.sleep(0.3)"))
        assert "GET /v1?token=***" in shown and "Bearer ***" in shown
        assert secret not in shown
        time.sleep(1.1)  # (the moment after a run that its secrets are still masked there)
        after = _shown_text(kernel.run("logging.info('after %s', os.environ['LOG_TOKEN'])"))
        assert f"after {secret}" in after  # (no run masks now: the notebook's own, as is)


def test_a_cells_partial_line_held_back_during_a_background_run_shows_in_that_cell(
        kernel: Kernel, tmp_path: Path) -> None:
    """A cell printing the start of a secret with no line end while a background run
    goes on: the start was held back, and let go as the run ended, in the background
    cell's output, after it was done (nbclient drops it: missing from the saved
    notebook), and in clear. It shows in its own cell as that cell ends, masked."""
    secret = "tok-9f8e7d6c5b4a"
    kernel.run(f"os.environ['HALF_TOKEN'] = {secret!r}")
    try:
        background = kernel.run(
            "%%dagger slow --secret HALF_TOKEN --background --no-cache\n"
            "for i in $(seq 400); do [ -f release ] && break; sleep 0.05; done\n")
        assert error(background) is None, background
        own = kernel.run("print('half', os.environ['HALF_TOKEN'][:6], end='', flush=True)")
        after = kernel.run("print('next')")
    finally:
        (tmp_path / "release").touch()
        kernel.run("get_session().last_run.wait(30)")
    assert text(own) == "half ***" and text(after) == "next\n"
    assert secret[:4] not in text(background) + text(own)


def test_a_step_looking_up_sys_stdout_buffer_fails_as_without_dagnb(kernel: Kernel) -> None:
    """ipykernel's stream has no ``buffer``: the AttributeError is the stream's, and the
    step's traceback showed a frame of dagnb's stand-in for ``sys.stdout`` above it."""
    outputs = kernel.run("%%dagger buf --python --no-cache\nimport sys\nsys.stdout.buffer\n")
    failed = error(outputs)
    assert failed is not None and failed["ename"] == "RunFailed"
    shown = _shown_text(outputs) + "\n".join(failed["traceback"])
    assert "capture.py" not in shown
    assert ("sys.stdout.buffer\nAttributeError: 'OutStream' object has no attribute 'buffer'"
            in shown)


# -- %dagger save ------------------------------------------------------------------------
def test_save_writes_a_notebook_class_a_step_uses_and_the_cli_runs_it(
        kernel: Kernel, tmp_path: Path) -> None:
    kernel.run("SCALE = 3\nclass Base:\n    def __init__(self, a):\n        self.a = a\n"
               "class Model(Base):\n"
               "    def fit(self, values):\n        return sum(values) * self.a * SCALE\n")
    outputs = kernel.run("%%dagger fit --python --outputs score\nscore = Model(2).fit([1, 2])\n")
    assert error(outputs) is None, outputs
    saved = kernel.run("%dagger save flow.yml")
    assert error(saved) is None and usage_error(saved) == "", saved
    assert "class Model(Base):" in (tmp_path / "flow_steps.py").read_text()
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "flow.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(line.split()[:2] == ["fit", "cached"] for line in done.stdout.splitlines()), (
        done.stdout)  # (the notebook's class keyed by its source, as the saved module's)
    rerun = dagnb.load(tmp_path / "flow.yml").run(cache=False, cache_directory=tmp_path / "c")
    assert rerun.result("fit") == 18  # (its run's record in tmp_path, not this folder)


def test_a_saved_cell_ending_in_an_expression_runs_outside_the_notebook_showing_nothing(
        kernel: Kernel, tmp_path: Path) -> None:
    """The notebook displays the cell's last expression; the saved step keeps its key
    and, run by a script (no IPython), shows nothing and fails on nothing."""
    outputs = kernel.run("%%dagger shows --python --outputs word\n"
                         "word = 'shown'\nword + '-value'\n")
    assert error(outputs) is None, outputs
    assert [o["data"]["text/plain"] for o in outputs if o["output_type"] == "display_data"
            and "text/html" not in o["data"]] == ["'shown-value'"], outputs
    saved = kernel.run("%dagger save shows.yml")
    assert error(saved) is None and usage_error(saved) == "", saved
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "shows.yml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(line.split()[:2] == ["shows", "cached"] for line in done.stdout.splitlines())
    script = ("import dagnb\nrun = dagnb.load('shows.yml').run(cache=False)\n"
              "print('result', run.result('shows'))\n")
    fresh = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                           text=True, timeout=60)
    assert fresh.returncode == 0 and "result shown\n" in fresh.stdout, fresh.stderr
    assert "shown-value" not in fresh.stdout + fresh.stderr


def test_save_writes_no_secret_and_the_saved_steps_find_the_helper_modules_beside_them(
        kernel: Kernel, tmp_path: Path) -> None:
    (tmp_path / "features.py").write_text("def make(x):\n    return x + 1\n")
    kernel.run("import os\nos.environ['SAVE_TOKEN'] = 'tok-save-123456'\n"
               "API_KEY = os.environ['SAVE_TOKEN']\nfrom features import make\n")
    kernel.run("%%dagger call --python --secret SAVE_TOKEN --outputs n\nn = len(API_KEY)\n")
    refused = usage_error(kernel.run("%dagger save secret.yml"))
    assert "holds the value of secret 'SAVE_TOKEN'" in refused and "\n" not in refused
    assert not (tmp_path / "secret_steps.py").exists()
    kernel.run("%dagger reset")
    outputs = kernel.run("%%dagger feat --python --outputs v\nv = make(1)\n")
    assert error(outputs) is None, outputs
    assert error(kernel.run("%dagger save flow.yml")) is None
    console = str(Path(sys.executable).with_name("dagnb"))  # (-m would put . on sys.path)
    done = subprocess.run([console, "run", "flow.yml"], cwd=tmp_path,
                          capture_output=True, text=True, timeout=60,
                          env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert any(line.split()[:2] == ["feat", "cached"] for line in done.stdout.splitlines())


def test_a_saved_workflow_run_with_another_param_gives_the_notebooks_downstream_result(
        kernel: Kernel, tmp_path: Path) -> None:
    """``total`` reads ``rows``, the notebook variable ``load``'s result is published under
    (no --needs): saved, ``rows`` was written by value, so ``dagnb run -p n=5`` ran load
    again and total still summed the rows of n=3 (3; the notebook's cells give 10)."""
    for n in (3, 5):  # the notebook's own answers
        kernel.run(f"%%dagger load --python --param n={n} --outputs rows\nrows = list(range(n))\n")
        assert error(kernel.run("%%dagger total --python --outputs total\ntotal = sum(rows)\n")
                     ) is None
        assert kernel.value("total") == {3: "3", 5: "10"}[n]
        if n == 3:
            saved = kernel.run("%dagger save pipeline.yml")
            assert error(saved) is None and usage_error(saved) == "", saved
    console = [sys.executable, "-m", "dagnb.cli", "run", "pipeline.yml"]
    for ran in (("succeeded", "cached"), ("cached",)):  # (run again unchanged: cached)
        done = subprocess.run([*console, "-p", "n=5"], cwd=tmp_path, capture_output=True,
                              text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert any(line.split()[:1] == ["total"] and line.split()[1] in ran
                   for line in done.stdout.splitlines()), done.stdout
    script = ("import dagnb\nfrom dagnb.workflows.params import set_params\n"
              "graph = dagnb.load('pipeline.yml')\nset_params(graph, {'n': 5}, 'pipeline.yml')\n"
              "run = graph.run()\nprint(run.states()['total'], run.result('total'))\n")
    read = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert read.stdout.split() == ["cached", "10"], read.stdout + read.stderr


# -- a step reading a variable another step publishes, in one run ----------------------
_LOAD = "%%dagger load --python --param n={n} --outputs rows{more}\nrows = list(range(n))\n"
_TOTAL = "%%dagger total --python --outputs total\ntotal = sum(rows)\n"
_RUN_STATES = "get_session().last_run.wait(30).states()"


def _run_graph(kernel: Kernel, options: str = "") -> None:
    """``%dagger run`` with ``options``; a --background one waited for, its results
    published."""
    assert error(kernel.run(f"%dagger run{options}")) is None
    if "--background" in options:
        kernel.run("background = get_session().last_run\n" + _PUBLISHED)


@pytest.mark.parametrize("options", ["", " --background"], ids=["foreground", "background"])
def test_a_run_of_the_graph_gives_a_cell_its_new_value_of_a_variable_a_step_publishes(
        kernel: Kernel, options: str) -> None:
    """``total`` reads ``rows``, which ``load``'s step publishes (no --needs): load's param
    changed, ``%dagger run`` ran total beside load on the old rows, as results reached the
    notebook when the run ended (3 under the old rows' key; only the next run gave 10)."""
    kernel.run(_LOAD.format(n=3, more=""))
    assert error(kernel.run(_TOTAL)) is None
    assert kernel.value("total") == "3"
    kernel.run(_LOAD.format(n=5, more=" --define-only"))
    for ran in ("succeeded", "cached"):  # (run again: all cached)
        _run_graph(kernel, options)
        assert kernel.value(_RUN_STATES) == f"{{'load': '{ran}', 'total': '{ran}'}}"
        assert kernel.value("total, _dagger['total'], rows") == "(10, 10, [0, 1, 2, 3, 4])"


def test_a_cell_reading_a_published_variable_through_a_helper_runs_after_its_step(
        kernel: Kernel) -> None:
    """total calls summarize(), a notebook function summing rows: its key counts rows, but
    the run ordered by the cell's own code, so total ran beside load on the old rows (3,
    plan 'cached'; only the next run gave 10)."""
    kernel.run(_LOAD.format(n=3, more=""))
    kernel.run("def summarize():\n    return sum(rows)\n")
    kernel.run("%%dagger total --python --outputs total\ntotal = summarize()\n")
    kernel.run(_LOAD.format(n=5, more=" --define-only"))
    assert _rows(kernel, _PLANNED)["total"] == (
        False, "may run: runs if rows (made by load) changes (load will run)")
    _run_graph(kernel)
    assert kernel.value(_RUN_STATES) == "{'load': 'succeeded', 'total': 'succeeded'}"
    assert kernel.value("total, rows") == "(10, [0, 1, 2, 3, 4])"


def test_a_cached_publisher_gives_the_reader_its_cached_result(kernel: Kernel) -> None:
    kernel.run(_LOAD.format(n=5, more=""))  # (n=5 in the cache)
    kernel.run(_LOAD.format(n=3, more=""))
    kernel.run(_TOTAL)
    kernel.run(_LOAD.format(n=5, more=" --define-only"))
    _run_graph(kernel)
    assert kernel.value(_RUN_STATES) == "{'load': 'cached', 'total': 'succeeded'}"
    assert kernel.value("total, rows") == "(10, [0, 1, 2, 3, 4])"


def test_a_failed_publisher_skips_the_step_reading_its_variable(kernel: Kernel) -> None:
    kernel.run(_LOAD.format(n=3, more=""))
    kernel.run(_TOTAL)
    kernel.run(_LOAD.format(n=5, more=" --define-only") + "raise ValueError('no rows')\n")
    assert error(kernel.run("%dagger run --no-raise")) is None
    assert kernel.value(_RUN_STATES) == "{'load': 'failed', 'total': 'skipped'}"
    assert kernel.value("get_session().last_run.status_rows()['total']['error']") == (
        "\"upstream step 'load' failed (it reads rows, which load publishes)\"")
    assert kernel.value("total, rows") == "(3, [0, 1, 2])"  # (nothing computed on them)


def test_a_step_needing_a_failed_publisher_is_skipped_with_the_needs_words(
        kernel: Kernel) -> None:
    """Its --needs says why it depends on load: the words stay those of any need."""
    kernel.run(_LOAD.format(n=3, more=" --define-only") + "raise ValueError('no rows')\n")
    kernel.run("%%dagger total --python --needs load --outputs total --define-only\n"
               "total = sum(rows)\n")
    assert error(kernel.run("%dagger run --no-raise")) is None
    assert kernel.value("get_session().last_run.status_rows()['total']['error']") == (
        "\"upstream step 'load' failed\"")


def test_running_the_reader_alone_runs_the_step_whose_variable_it_reads(kernel: Kernel) -> None:
    """As ``--needs load`` would, and ``dagnb run NB --target total`` does."""
    kernel.run(_LOAD.format(n=3, more=""))
    kernel.run(_TOTAL)
    kernel.run(_LOAD.format(n=5, more=" --define-only"))
    _run_graph(kernel, " total")
    assert kernel.value(_RUN_STATES) == "{'load': 'succeeded', 'total': 'succeeded'}"
    assert kernel.value("total") == "10"


def test_a_readers_cell_run_again_leaves_the_publishers_cached_result_as_the_notebook_has_it(
        kernel: Kernel) -> None:
    """Its run has load, cached: the notebook holds that entry's result already, so it is
    not loaded from the cache again (a large frame would cost its read each time)."""
    kernel.run(_LOAD.format(n=3, more=""))
    kernel.run(_TOTAL)
    kernel.run("held = rows")
    assert error(kernel.run(_TOTAL)) is None
    assert kernel.value(_RUN_STATES) == "{'load': 'cached', 'total': 'cached'}"
    assert kernel.value("rows is held is _dagger['load'], total") == "(True, 3)"


def test_a_variable_a_cell_bound_since_the_step_published_it_is_read_as_it_is(
        kernel: Kernel) -> None:
    kernel.run(_LOAD.format(n=3, more=""))
    kernel.run(_TOTAL)
    kernel.run("rows = [100]")  # the user's now, as a plain cell after load's would make it
    _run_graph(kernel, " total")
    assert kernel.value(_RUN_STATES) == "{'total': 'succeeded'}"
    assert kernel.value("total, rows") == "(100, [100])"


def test_a_publishers_cell_run_again_gives_its_result_anew_after_a_change_in_place(
        kernel: Kernel) -> None:
    """The notebook held load's cached result (the same object, changed in place since),
    so load's own cell run again published nothing: rows and _dagger['load'] kept the
    9, where a cell run again gives its value anew."""
    kernel.run(_LOAD.format(n=3, more=""))
    kernel.run(_TOTAL)
    kernel.run("rows.append(9)")
    assert error(kernel.run(_LOAD.format(n=3, more=""))) is None
    assert kernel.value(_RUN_STATES) == "{'load': 'cached'}"
    assert kernel.value("rows, _dagger['load']") == "([0, 1, 2], [0, 1, 2])"


@pytest.mark.parametrize("load", [3, 5], ids=["cached", "changed"])
def test_a_run_of_the_graph_gives_the_reader_what_its_publisher_puts_over_a_cells_value(
        kernel: Kernel, load: int) -> None:
    """rows re-bound by a cell, then %dagger run: total ran on the cell's rows, then load
    (in the run) put its rows back over them as the run ended, so the notebook held total
    300 beside rows [0, 1, 2], status all green, and the next run gave 3."""
    kernel.run(_LOAD.format(n=3, more=""))
    kernel.run(_TOTAL)
    kernel.run("rows = [100, 200]")
    kernel.run(_LOAD.format(n=load, more=" --define-only"))
    cached = load == 3
    assert _rows(kernel, _PLANNED)["total"] == (
        (True, "cached") if cached else (
            False, "may run: runs if rows (made by load) changes (load will run)"))
    _run_graph(kernel)
    ran = "cached" if cached else "succeeded"
    assert kernel.value(_RUN_STATES) == f"{{'load': '{ran}', 'total': '{ran}'}}"
    assert kernel.value("total, rows") == str((sum(range(load)), list(range(load))))


def test_of_two_steps_publishing_a_variable_the_reader_gets_the_later_ones_new_value(
        kernel: Kernel) -> None:
    """``clean`` re-binds ``load``'s rows: run beside load it kept filtering its own last
    output, so no run ever gave the new rows."""
    kernel.run(_LOAD.format(n=3, more=""))
    kernel.run("%%dagger clean --python --outputs rows\nrows = [r for r in rows if r % 2 == 0]\n")
    kernel.run(_TOTAL)
    assert kernel.value("total") == "2"
    kernel.run(_LOAD.format(n=5, more=" --define-only"))
    for ran in ("succeeded", "cached"):
        _run_graph(kernel)
        assert kernel.value(_RUN_STATES) == (
            f"{{'load': '{ran}', 'clean': '{ran}', 'total': '{ran}'}}")
        assert kernel.value("total, rows") == "(6, [0, 2, 4])"


def test_after_a_restart_a_cell_reading_a_variable_a_step_publishes_runs_first(
        kernel: Kernel, tmp_path: Path) -> None:
    cells = ["%load_ext dagnb", _LOAD.format(n=3, more=""), _TOTAL]
    save_notebook(kernel, cells)
    kernel.restart()  # every step defined from the file; rows unset
    kernel.run(f"{_into(tmp_path)}\n"
               "from dagnb.notebook.session import get_session")
    assert error(kernel.run(cells[2])) is None
    assert kernel.value(_RUN_STATES) == "{'load': 'succeeded', 'total': 'succeeded'}"
    assert kernel.value("total") == "3"


def warnings_of(outputs: list[dict]) -> list[str]:
    """The messages of the UserWarnings a cell printed (to stderr), in order."""
    stderr = "".join(o["text"] for o in outputs
                     if o["output_type"] == "stream" and o["name"] == "stderr")
    return [line.partition("UserWarning: ")[2] for line in stderr.splitlines()
            if "UserWarning: " in line]


def test_a_reader_of_a_variable_two_steps_publish_is_told_it_runs_after_neither(
        kernel: Kernel) -> None:
    """c reads v, which a and b both publish (no --needs): it ran beside them on the
    value the notebook held, plan said 'cached', and nothing said why; it still does
    (what runs is the notebook's), once per plan and per run, naming the fix."""
    kernel.run("%%dagger a --python --param n=1 --outputs v\nv = n\n")
    kernel.run("%%dagger b --python --param n=2 --outputs v\nv = n * 10\n")
    said = ("step 'c' reads notebook variable 'v', which steps 'a' and 'b' both publish: it "
            "starts after none of them and reads the value the notebook holds; give it "
            "--needs the one it means; if the cell of one of them was renamed or deleted, "
            "remove the step it left: %dagger remove a or %dagger remove b")
    assert warnings_of(kernel.run("%%dagger c --python --outputs w\nw = v + 1\n")) == [said]
    kernel.run("%%dagger a --python --param n=3 --outputs v --define-only\nv = n\n")
    planned = kernel.run("planned = " + _PLANNED)
    assert warnings_of(planned) == [said]
    assert kernel.value("planned['c']") == "(True, 'cached')"
    assert warnings_of(kernel.run("%dagger run")) == [said]
    assert kernel.value(_RUN_STATES) == "{'a': 'succeeded', 'b': 'cached', 'c': 'cached'}"
    assert warnings_of(kernel.run("%dagger run a")) == []  # (c is not in it)
    kernel.run("%%dagger c --python --needs a --outputs w --define-only\nw = v + 1\n")
    assert warnings_of(kernel.run("%dagger run")) == []


def _in_cell(source: str, cell_id: str) -> str:
    """Code that runs ``source`` as the notebook cell ``cell_id`` (the id Jupyter front
    ends send with each cell; ipykernel passes it to IPython's run_cell, as here)."""
    return f"get_ipython().run_cell({source!r}, cell_id={cell_id!r});"


def test_a_renamed_cell_takes_its_old_step_out_of_the_graph(kernel: Kernel) -> None:
    """%%dagger load renamed %%dagger fetch (same --outputs rows) kept load: it stayed in
    status and graph and ran with every %dagger run, a reader of rows was told two steps
    publish it, and save refused, where the notebook's file (dagnb run NOTEBOOK) has no
    load."""
    kernel.run(_in_cell("%%dagger load --python --outputs rows\nrows = [1, 2]\n", "c1"))
    said = kernel.printed(_in_cell("%%dagger fetch --python --outputs rows\n"
                                   "rows = [1, 2, 3]\n", "c1"))
    assert said.splitlines()[0] == ("dagnb: the cell that defined 'load' now defines 'fetch': "
                                    "step 'load' is out of the graph (its cache entries stay)")
    assert kernel.value("get_session().graph.names") == "['fetch']"
    assert warnings_of(kernel.run("%%dagger count --python --outputs n\nn = len(rows)\n")) == []
    assert kernel.value("n") == "3"
    assert usage_error(kernel.run("%dagger save flow.yml")) == ""
    again = kernel.printed(_in_cell("%%dagger fetch --python --outputs rows\n"
                                    "rows = [1, 2, 3]\n", "c1"))
    assert "now defines" not in again  # (said once: nothing left to take out)


def test_a_renamed_cells_old_step_another_needs_stays_and_the_fix_is_named(
        kernel: Kernel) -> None:
    """The old step stays while another step needs it (taking it out would strand that
    one), said at each run of the renamed cell with its fix; a reader of a variable both
    publish is told which cell now defines which, and save's refusal says the same."""
    kernel.run(_in_cell("%%dagger load --python --outputs rows\nrows = [1, 2]\n", "c1"))
    kernel.run("%%dagger first --python --needs load --outputs head\nhead = load[0]\n")
    kept = ("dagnb: the cell that defined 'load' now defines 'fetch'; step 'load' stays, as "
            "'first' needs it: rename the need to 'fetch' in its cell, or %dagger remove "
            "load once none needs it")
    for _ in range(2):
        said = kernel.printed(_in_cell("%%dagger fetch --python --outputs rows\n"
                                       "rows = [1, 2, 3]\n", "c1"))
        assert said.splitlines()[0] == kept
    assert kernel.value("sorted(get_session().graph.names)") == "['fetch', 'first', 'load']"
    fix = "the cell that defined 'load' now defines 'fetch': %dagger remove load"
    warned = warnings_of(kernel.run("%%dagger count --python --outputs n\nn = len(rows)\n"))
    assert len(warned) == 1 and warned[0].endswith(f"give it --needs the one it means; {fix}")
    refused = usage_error(kernel.run("%dagger save flow.yml"))
    assert refused.startswith("step 'count' reads notebook variable 'rows', which steps "
                              "'load', 'fetch' all output; ") and refused.endswith(fix)


def test_a_cell_that_defines_a_step_another_cell_defined_says_it_replaces_it(
        kernel: Kernel) -> None:
    """A copied cell left as %%dagger clean replaced the other cell's clean silently
    (its command and its needs gone, its dependents stale); said now, once."""
    kernel.run(_in_cell("%%dagger clean --define-only\necho clean\n", "c1"))
    said = kernel.printed(_in_cell("%%dagger clean --define-only\necho train\n", "c2"))
    assert said.splitlines()[0] == ("dagnb: step 'clean' was defined by another cell; this "
                                    "cell's definition replaces it (rename one of them if "
                                    "both are meant)")
    again = kernel.printed(_in_cell("%%dagger clean --define-only\necho train\n", "c2"))
    assert "another cell" not in again  # (its own now)
    alone = kernel.printed(_in_cell("%%dagger other --define-only\necho other\n", "c3"))
    assert "another cell" not in alone


def test_a_renamed_cell_that_is_refused_keeps_its_old_step(kernel: Kernel) -> None:
    kernel.run(_in_cell("%%dagger load\necho load\n", "c1"))
    refused = kernel.run(_in_cell("%%dagger fetch --needs nosuch\necho fetch\n", "c1"))
    assert "now defines" not in _shown_text(refused)
    assert kernel.value("get_session().graph.names") == "['load']"


def test_a_renamed_cell_whose_new_step_needs_the_old_keeps_both_and_says_nothing(
        kernel: Kernel) -> None:
    kernel.run(_in_cell("%%dagger load\necho load\n", "c1"))
    said = kernel.printed(_in_cell("%%dagger fetch --needs load\necho fetch\n", "c1"))
    assert "now defines" not in said
    assert kernel.value("sorted(get_session().graph.names)") == "['fetch', 'load']"


def test_steps_reading_each_others_variables_are_told_neither_is_ordered(
        kernel: Kernel) -> None:
    """a reads y from b, b reads x from a (no --needs): nothing was said, a started after
    b (whichever cell came first), plan said 'runs after b: reads y, which b makes anew'
    and each run fed the values back. Now neither is ordered after the other, each reads
    what the notebook holds, the runs end, and plan, the run and the cells say so."""
    kernel.run("x, y = 1, 1")
    kernel.run("%%dagger a --python --outputs x\nx = y + 1\n")
    said = ("step 'a' reads y from 'b', 'b' reads x from 'a': neither is ordered after the "
            "other, each reads the value the notebook holds; give one --needs the other")
    assert warnings_of(kernel.run("%%dagger b --python --outputs y\ny = x * 2\n")) == [said]
    assert kernel.value(_RUN_STATES) == "{'b': 'succeeded'}"  # (on the x the notebook holds)
    planned = kernel.run("planned = " + _PLANNED)
    assert warnings_of(planned) == [said]
    assert _rows(kernel, "planned") == {
        "a": (False, "notebook variable `y` changed: 1 → 4"), "b": (True, "cached")}
    assert warnings_of(kernel.run("%dagger run")) == [said]
    assert kernel.value("get_session().last_run.wait(30).order, x, y") == "(['a', 'b'], 5, 4)"
    assert _rows(kernel, _STATUS)["b"] == (
        "stale", "its inputs changed since it ran (%dagger plan says why)")
    kernel.run("%%dagger a --python --needs b --outputs x --define-only\nx = y + 1\n")
    assert warnings_of(kernel.run("%dagger run")) == []
    assert kernel.value("get_session().last_run.wait(30).order") == "['b', 'a']"


# -- looking ahead at a step reading a variable another step publishes -----------------
_MAGIC = "get_ipython().run_line_magic('dagger', {!r})"
_PLAN, _STATUS_FRAME = _MAGIC.format("plan"), _MAGIC.format("status")
_PLANNED = f"{{row.step: (row.cached, row.reason) for row in {_PLAN}.itertuples()}}"
_STATUS = f"{{row.step: (row.state, row.note) for row in {_STATUS_FRAME}.itertuples()}}"
_FAIL_ON_MISS = "%dagger run --cache-mode fail-on-miss"


def _rows(kernel: Kernel, expression: str) -> dict:
    return ast.literal_eval(kernel.value(expression))  # (pretty-printed over lines)


_ALL_CACHED = {"load": (True, "cached"), "total": (True, "cached")}


def _refused(outputs: list[dict]) -> str:
    """The CacheMissError a fail-on-miss run raised before any step ran."""
    found = error(outputs)
    assert found is not None and found["ename"] == "CacheMissError", outputs
    return found["evalue"]


def test_plan_says_a_reader_of_a_step_that_runs_runs_after_it(kernel: Kernel) -> None:
    """load's param changed: plan, status and fail-on-miss keyed total on the rows the
    notebook held, so said it was cached (fail-on-miss named load alone), and the run
    ran it on load's new rows."""
    kernel.run(_LOAD.format(n=3, more=""))
    kernel.run(_TOTAL)
    kernel.run(_LOAD.format(n=5, more=" --define-only"))
    anew = "may run: runs if rows (made by load) changes (load will run)"
    assert _rows(kernel, _PLANNED) == {
        "load": (False, "params changed: {'n': 3} → {'n': 5}"), "total": (False, anew)}
    assert _rows(kernel, _STATUS) == {
        "load": ("stale", "its inputs changed since it ran (%dagger plan says why)"),
        "total": ("stale", "upstream load changed since it ran")}
    refused = _refused(kernel.run(_FAIL_ON_MISS))
    assert "1 step would run, 1 may run" in refused and f"  total: {anew}" in refused
    _run_graph(kernel)
    assert kernel.value(_RUN_STATES) == "{'load': 'succeeded', 'total': 'succeeded'}"


def test_plan_keys_a_reader_of_a_cached_step_on_its_cached_result(kernel: Kernel) -> None:
    """load's param set back to one cached: plan said total was cached (the rows held),
    and a fail-on-miss run passed it, then failed total mid-run."""
    kernel.run(_LOAD.format(n=5, more=""))  # (n=5 in the cache, total never ran on it)
    kernel.run(_LOAD.format(n=3, more=""))
    kernel.run(_TOTAL)
    kernel.run(_LOAD.format(n=5, more=" --define-only"))
    changed = "notebook variable `rows` changed: [0, 1, 2] → [0, 1, 2, 3, 4]"
    assert _rows(kernel, _PLANNED) == {"load": (True, "cached"), "total": (False, changed)}
    refused = _refused(kernel.run(_FAIL_ON_MISS))
    assert "1 step would run" in refused and f"  total: {changed}" in refused
    _run_graph(kernel)
    assert kernel.value(_RUN_STATES) == "{'load': 'cached', 'total': 'succeeded'}"


def test_fail_on_miss_passes_a_reader_whose_cached_step_gives_a_value_it_ran_on(
        kernel: Kernel) -> None:
    """The other way round: refused (total keyed on the rows held, [0, 1, 2]), where the
    run restores load's n=5 rows and total's entry for them."""
    kernel.run(_LOAD.format(n=5, more=""))
    kernel.run(_TOTAL)
    kernel.run(_LOAD.format(n=3, more=" --define-only"))
    _run_graph(kernel, " load")  # (rows: [0, 1, 2]; total never ran on them)
    kernel.run(_LOAD.format(n=5, more=" --define-only"))
    assert _rows(kernel, _PLANNED) == _ALL_CACHED
    assert error(kernel.run(_FAIL_ON_MISS)) is None
    assert kernel.value(_RUN_STATES) == "{'load': 'cached', 'total': 'cached'}"
    assert kernel.value("total, rows") == "(10, [0, 1, 2, 3, 4])"


def test_after_a_restart_plan_keys_a_reader_on_the_value_its_cached_step_publishes(
        kernel: Kernel, tmp_path: Path) -> None:
    """rows unset: total's key read no rows (another code digest), so plan said it
    would run ('code changed') and fail-on-miss refused an all-cached run."""
    cells = ["%load_ext dagnb", _LOAD.format(n=3, more=""), _TOTAL]
    save_notebook(kernel, cells)
    for source in cells[1:]:
        kernel.run(source)
    kernel.restart()  # every step defined from the file; rows unset
    kernel.run(f"{_into(tmp_path)}\n"
               "from dagnb.notebook.session import get_session")
    assert kernel.value("'rows' in globals()") == "False"
    assert _rows(kernel, _PLANNED) == _ALL_CACHED
    assert error(kernel.run(_FAIL_ON_MISS)) is None
    assert kernel.value(_RUN_STATES) == "{'load': 'cached', 'total': 'cached'}"
    assert kernel.value("total") == "3"


def test_after_a_restart_status_names_no_variable_a_step_publishes_as_missing(
        kernel: Kernel, tmp_path: Path) -> None:
    """Status said mid 'needs variable `rows` (not defined yet)', rows being load's
    --outputs, though mid's cell runs load first and needs nothing else; a plain cell's
    variable is still named."""
    cells = ["%load_ext dagnb", "scale = 2", _LOAD.format(n=3, more=""),
             "%%dagger mid --python --outputs doubled\ndoubled = [r * scale for r in rows]\n"]
    save_notebook(kernel, cells)
    kernel.restart()  # every step defined from the file; rows and scale unset
    kernel.run(f"{_into(tmp_path)}\n"
               "from dagnb.notebook.session import get_session")
    assert _rows(kernel, _STATUS)["mid"] == (
        "never run", "needs variable `scale` (cell 2 of pipeline.ipynb)")
    kernel.run(cells[1])
    assert _rows(kernel, _STATUS)["mid"] == ("never run", None)
    assert error(kernel.run(cells[3])) is None
    assert kernel.value("doubled") == "[0, 2, 4]"


def test_after_a_restart_status_says_which_never_run_steps_a_run_restores(
        kernel: Kernel, tmp_path: Path) -> None:
    """Status listed every step as 'never run' after a restart, with nothing more, though
    their results were stored: the notebook looked lost where a run would restore it all.
    A step whose command changed since is 'never run' with no such note."""
    cells = ["%load_ext dagnb", "%%dagger load\necho 1 > $DAGNB_OUT/n\n",
             "%%dagger report --needs load\necho report\n"]
    kernel.run(_into(tmp_path))
    assert error(kernel.run(cells[1])) is None and error(kernel.run(cells[2])) is None
    cells[2] = "%%dagger report --needs load\necho a new report\n"
    save_notebook(kernel, cells)
    kernel.restart()  # both steps defined from the file, report's command changed
    kernel.run(f"{_into(tmp_path)}\nfrom dagnb.notebook.session import get_session")
    assert _rows(kernel, _STATUS) == {"load": ("never run", STORED_BEFORE),
                                      "report": ("never run", None)}
    assert error(kernel.run("%dagger run")) is None
    assert kernel.value(_RUN_STATES) == "{'load': 'cached', 'report': 'succeeded'}"
    assert _rows(kernel, _STATUS) == {"load": ("cached", None), "report": ("succeeded", None)}


def test_after_a_restart_logs_and_history_name_the_runs_before_it(
        kernel: Kernel, tmp_path: Path) -> None:
    """After a restart ``%dagger logs bad`` said only "has not run in this session yet",
    and ``%dagger history`` "no run yet in this session", though the runs before it are
    recorded: they name them now, and the terminal's command that shows them."""
    cells = ["%load_ext dagnb", "%%dagger bad --no-raise\necho trying; exit 1\n"]
    save_notebook(kernel, cells)  # (the file the kernel was told: its runs' origin)
    kernel.run(_into(tmp_path))
    assert error(kernel.run(cells[1])) is None
    run_id = kernel.value("get_session().last_run.id").strip("'")
    kernel.restart()  # (bad defined from the file)
    kernel.run(f"{_into(tmp_path)}\nfrom dagnb.notebook.session import get_session")
    said = _shown_text(kernel.run("%dagger logs bad"))
    assert said.startswith("step 'bad' has not run in this session yet; run its cell or "
                           f"%dagger run; it failed in run {run_id}, before this session: "
                           "!dagnb logs "), said
    command = said.split("!dagnb ", 1)[1].split(" shows its lines")[0]
    done = subprocess.run([sys.executable, "-m", "dagnb", *command.split()], cwd=tmp_path,
                          capture_output=True, text=True, timeout=120)
    assert (done.returncode, done.stdout) == (0, "trying\n"), done.stderr
    listed = _shown_text(kernel.run("%dagger history"))
    (kernel.home / "pipeline.ipynb").unlink()  # (a later restart reads no cell of it)
    assert listed.startswith("no run yet in this session; 1 run of this notebook before it: "
                             "!dagnb history "), listed


def test_plan_reads_no_cached_result_the_notebook_holds_already(kernel: Kernel) -> None:
    """A large frame would be read from the cache at each plan (and status); only a
    result the notebook does not hold is."""
    kernel.run(_LOAD.format(n=5, more=""))
    kernel.run(_LOAD.format(n=3, more=""))
    kernel.run(_TOTAL)
    kernel.run("import dagnb.runtime.plan as plan_module\nloaded = []\n"
               "read = plan_module._result_of\n"
               "plan_module._result_of = lambda *a: loaded.append(a[1].name) or read(*a)")
    try:
        assert _rows(kernel, _PLANNED) == _ALL_CACHED
        assert kernel.value("loaded") == "[]"
        kernel.run(_LOAD.format(n=5, more=" --define-only"))
        assert kernel.value(f"{_PLAN}['cached'].tolist(), loaded") == (
            "([True, False], ['load'])")
    finally:
        kernel.run("plan_module._result_of = read")


def test_save_refuses_a_class_with_no_source_in_one_line(kernel: Kernel) -> None:
    kernel.run("Made = type('Made', (), {'size': 2})")
    kernel.run("%%dagger uses --python --define-only\nn = Made.size\n")
    assert usage_error(kernel.run("%dagger save flow.yml")) == (
        "step 'uses': the source of class 'Made' cannot be found (no method of its own "
        "written in a cell "
        "or file); define it with a method in a cell, or import it from a module")


# -- interrupts ---------------------------------------------------------------------------
def interrupt_when(path: Path, kernel: Kernel, sent: list[float],
                   again_after: float | None = None) -> threading.Thread:
    """Press the kernel's stop button (SIGINT) once ``path`` exists (and again
    ``again_after`` seconds later)."""

    def wait_then_interrupt() -> None:
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        for pause in (0.0,) if again_after is None else (0.0, again_after):
            time.sleep(pause)
            sent.append(time.monotonic())
            os.kill(kernel.client.km.provisioner.process.pid, signal.SIGINT)

    thread = threading.Thread(target=wait_then_interrupt, daemon=True)
    thread.start()
    return thread


def test_an_interrupt_stops_a_python_step_within_a_second(kernel: Kernel, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    sent: list[float] = []
    thread = interrupt_when(marker, kernel, sent)
    outputs = kernel.run(
        "%%dagger loop --python --no-cache\n"
        "import time\n"
        f"open({str(marker)!r}, 'w').close()\n"
        "for _ in range(300):\n"
        "    print('tick')\n"
        "    time.sleep(0.1)\n"
    )
    returned = time.monotonic()
    thread.join(5)
    assert sent and returned - sent[0] < 1.0
    assert usage_error(outputs).startswith("interrupted: the run was cancelled")
    assert states(kernel) == "{'loop': 'cancelled'}"
    ticks = kernel.value("len(get_session().last_run.logs('loop'))")
    time.sleep(0.3)
    assert kernel.value("len(get_session().last_run.logs('loop'))") == ticks  # it stopped
    begun = time.monotonic()
    assert error(kernel.run("%%dagger next --no-cache\necho next\n")) is None
    assert time.monotonic() - begun < 2
    assert states(kernel) == "{'next': 'succeeded'}"


def test_the_views_keep_an_interrupted_run(kernel: Kernel, tmp_path: Path) -> None:
    marker = tmp_path / "started"
    kernel.run("%%dagger up --no-cache --define-only\necho up\n")  # runs with slow
    thread = interrupt_when(marker, kernel, [])
    outputs = kernel.run(f"%%dagger slow --needs up --no-cache\necho begin\ntouch {marker}\n"
                         "sleep 20\n")
    thread.join(5)
    assert usage_error(outputs).startswith("interrupted: the run was cancelled")
    assert kernel.value("{n: r['state'] for n, r in get_session().latest.items()}") == (
        "{'up': 'succeeded', 'slow': 'cancelled'}")  # what %dagger status and graph show
    assert kernel.value("[r['cancelled'] for r in get_session().runs]") == "[1]"  # history
    assert "begin" in kernel.value("%dagger logs slow")
    assert kernel.value("sorted(_dagger)") == "['up']"  # what finished is published


@contextlib.contextmanager
def shorter_cancel_grace(kernel: Kernel, seconds: float) -> Iterator[None]:
    """The stop button's grace in the module's kernel cut to ``seconds`` (a step outlasts
    it sooner), and put back for the tests after."""
    grace = "dagnb.notebook.widgets.CANCEL_GRACE"
    before = kernel.value(f"import dagnb.notebook.widgets\n{grace}")
    kernel.run(f"{grace} = {seconds!r}")
    try:
        yield
    finally:
        kernel.run(f"{grace} = {before}")


def test_a_run_interrupted_in_a_long_c_call_is_published_again_when_it_ends(
        kernel: Kernel, tmp_path: Path) -> None:
    """The stop button stops waiting after a grace; a step in one long C call ends later:
    the views show how it ended then, not `running` for good, and the next cell, which
    waits for it, says so."""
    marker = tmp_path / "started"
    thread = interrupt_when(marker, kernel, [])
    with shorter_cancel_grace(kernel, 1.0):  # (the default 5 s, waited out, cost 7 s)
        outputs = kernel.run(f"%%dagger nap --python --no-cache\nimport time\n"
                             f"open({str(marker)!r}, 'w').close()\ntime.sleep(3)\n")
    thread.join(5)
    assert usage_error(outputs) == (  # (it said "its processes stopped")
        "interrupted: the run was cancelled, but 'nap' is still running: Python code in one "
        "long call (time.sleep, subprocess.run, a C extension) stops only when the call "
        "returns; %dagger status shows when it has")
    after = kernel.run("%%dagger next --no-cache\necho next\n")  # waits for nap's call
    assert error(after) is None and text(after).startswith(
        "dagnb: this run starts when 'nap', interrupted, returns from its long call "
        "(%dagger status shows when it has)\n"), after  # (the cell hung with no word why)
    kernel.run("import time\nfor _ in range(100):\n    if get_session().latest['nap']"
               "['state'] != 'running': break\n    time.sleep(0.1)\n")  # (published by a thread)
    assert kernel.value("get_session().latest['nap']['state']") == "'cancelled'"
    assert kernel.value("[r['cancelled'] for r in get_session().runs]") == "[1, 0]"


def test_a_cell_waiting_for_a_background_python_step_says_so(
        kernel: Kernel, tmp_path: Path) -> None:
    """A Python step runs on the loop every run needs: the next cell waited for the
    background step's call with no word why (a shell step holds nothing)."""
    marker, release = tmp_path / "started", tmp_path / "release"
    kernel.run(f"%%dagger bg --python --no-cache --background\nimport os, time\n"
               f"open({str(marker)!r}, 'w').close()\n"
               f"for _ in range(1500):\n    if os.path.exists({str(release)!r}): break\n"
               "    time.sleep(0.02)\n")
    kernel.run(f"import os, time\nwhile not os.path.exists({str(marker)!r}): time.sleep(0.02)\n")
    threading.Timer(1.0, release.touch).start()  # (bg returns 1 s after the next cell began:
    after = kernel.run("%%dagger other --python --no-cache\nx = 1\n")  # a sleep 3 was 3 s)
    assert error(after) is None and text(after).startswith(
        "dagnb: this run starts when 'bg', of a --background run, returns (a --python step "
        "holds the kernel's run loop while it runs)\n"), after
    again = kernel.run("%%dagger other --python --no-cache\nx = 2\n")  # (bg has returned)
    assert "starts when" not in text(again)


def test_the_stop_button_pressed_again_while_the_step_stops_says_truly_how_it_ended(
        kernel: Kernel, tmp_path: Path) -> None:
    """A second press during the grace the first gives the run ended the cell at once,
    saying the run's processes stopped while the step in its long call still ran (and
    the next cell waited for it with no word why); the grace goes on instead."""
    marker = tmp_path / "started"
    sent: list[float] = []
    thread = interrupt_when(marker, kernel, sent, again_after=0.5)
    outputs = kernel.run(f"%%dagger nap --python --no-cache\nimport time\n"
                         f"open({str(marker)!r}, 'w').close()\ntime.sleep(2)\n")
    thread.join(5)
    assert len(sent) == 2
    assert usage_error(outputs) == ("interrupted: the run was cancelled and its processes "
                                    "stopped; %dagger status shows where it got to")
    assert "nap   cancelled" in text(outputs)  # (the status row said running)
    assert kernel.value("get_session().latest['nap']['state']") == "'cancelled'"


@pytest.mark.skipif(not os.path.exists(f"/proc/self/task/{threading.get_native_id()}/children"),
                    reason="a thread's children are listed on Linux only")
def test_an_interrupt_stops_the_process_a_python_step_waits_for(kernel: Kernel,
                                                                 tmp_path: Path) -> None:
    """A step in subprocess.run takes the interrupt once its child ends: the child is
    stopped, so the cell says the run's processes stopped and the next cell runs at once
    (it waited for the child, after a message saying the step was still running)."""
    marker = tmp_path / "pid"  # written by the child: the step is waiting for it then
    sent: list[float] = []
    thread = interrupt_when(marker, kernel, sent)
    outputs = kernel.run("%%dagger wait_child --python --no-cache\nimport subprocess\n"
                         f"subprocess.run(['sh', '-c', 'echo $$ > {marker}; exec sleep 30'])\n")
    returned = time.monotonic()
    thread.join(5)
    assert usage_error(outputs) == ("interrupted: the run was cancelled and its processes "
                                    "stopped; %dagger status shows where it got to")
    assert sent and returned - sent[0] < 2
    child = Path(f"/proc/{int(marker.read_text())}")  # stopped, then reaped: by its Popen,
    assert wait_until(lambda: not child.exists(), 3)  # or by dagnb if the interrupt left
    assert states(kernel) == "{'wait_child': 'cancelled'}"  # it to no one (a zombie)
    begun = time.monotonic()
    assert error(kernel.run("%%dagger next --no-cache\necho next\n")) is None
    assert time.monotonic() - begun < 2
    assert states(kernel) == "{'next': 'succeeded'}"


def stop_button_when(path: Path, kernel: Kernel) -> threading.Thread:
    """Press the stop button as Jupyter does once ``path`` exists: ``interrupt_kernel``
    sends SIGINT to the kernel's whole process group (``os.killpg``), so to the
    processes a Python step waits for as well."""

    def wait_then_press() -> None:
        deadline = time.monotonic() + 30
        while not path.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        run_sync(kernel.client.km.interrupt_kernel)()

    thread = threading.Thread(target=wait_then_press, daemon=True)
    thread.start()
    return thread


def cut_short_cell(kind: str, marker: Path, release: Path) -> str:
    """A Python step that waits for a command the stop button kills; the command ends
    at once when ``release`` exists (the same cell, so the same key, run again)."""
    command = f"touch {marker}; [ -e {release} ] || sleep 30"
    wait = {"run": f"r = subprocess.run(['sh', '-c', {command!r}]).returncode",
            "system": f"r = os.system({command!r})"}[kind]
    return (f"%%dagger train_{kind} --python --outputs model\nimport os, subprocess\n"
            f"{wait}\nmodel = {{'rc': r}}\nprint('trained', model)\n")


def assert_cut_short_run_not_kept(kernel: Kernel, kind: str, outputs: list[dict],
                                  source: str, release: Path) -> None:
    assert usage_error(outputs).startswith("interrupted: the run was cancelled"), outputs
    assert "succeeded" not in text(outputs), outputs
    assert states(kernel) == f"{{'train_{kind}': 'cancelled'}}"
    assert kernel.value(f"get_session().latest['train_{kind}']['state']") == "'cancelled'"
    release.touch()
    again = kernel.run(source)  # runs again: nothing was stored
    assert error(again) is None and "trained {'rc': 0}" in text(again), again
    assert states(kernel) == f"{{'train_{kind}': 'succeeded'}}"
    assert kernel.value("model") == "{'rc': 0}"


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="the stop button signals a group on POSIX")
def test_the_stop_button_in_subprocess_run_stores_no_cut_short_result(
        kernel: Kernel, tmp_path: Path) -> None:
    """The stop button's SIGINT reaches the step's child at once: subprocess.run returned
    its cut-short result, stored as a success, when the kernel's main thread came to
    the interrupt late (it runs Python's handler once it holds the GIL: measured up to
    20 ms after the signal, while the child died and the step returned in 0.5 ms; 1 run
    in 20 here). A handler that takes 0.5 s stands in for that, and so does a mark that
    takes 0.5 s, for dagnb's handler: the scheduler sees the signal arrive without it."""
    marker, release = tmp_path / "started", tmp_path / "release"
    source = cut_short_cell("run", marker, release)
    kernel.run(f"SOURCE = {source!r}")
    thread = stop_button_when(marker, kernel)
    outputs = kernel.run(
        "import signal, time\n"
        "from dagnb.runtime.run import Run\n"
        "def slow_to_see_it(signum, frame):\n"
        "    time.sleep(0.5)\n"
        "    signal.default_int_handler(signum, frame)\n"
        "signal.signal(signal.SIGINT, slow_to_see_it)\n"
        "marked = getattr(Run, 'mark_cancelled', None)\n"
        "if marked is not None:\n"
        "    Run.mark_cancelled = lambda run: (time.sleep(0.5), marked(run))\n"
        "try:\n"
        "    line, _, body = SOURCE.partition('\\n')\n"
        "    get_ipython().run_cell_magic('dagger', line.split(' ', 1)[1], body)\n"
        "finally:\n"
        "    if marked is not None:\n"
        "        Run.mark_cancelled = marked\n")
    thread.join(5)
    assert_cut_short_run_not_kept(kernel, "run", outputs, source, release)


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="the stop button signals a group on POSIX")
def test_the_stop_button_in_os_system_stores_no_cut_short_result(
        kernel: Kernel, tmp_path: Path) -> None:
    """os.system ignores SIGINT in the kernel while its command runs: the stop button
    killed the command, the step went on and was stored, and the cell said nothing of
    the interrupt."""
    marker, release = tmp_path / "started", tmp_path / "release"
    source = cut_short_cell("system", marker, release)
    thread = stop_button_when(marker, kernel)
    outputs = kernel.run(source)
    thread.join(5)
    assert_cut_short_run_not_kept(kernel, "system", outputs, source, release)


# -- Memory and joblib.Parallel from a notebook ------------------------------------------
def test_joblib_parallel_workers_hit_what_the_notebook_cached(kernel: Kernel,
                                                              tmp_path: Path) -> None:
    """A notebook's functions reach loky's workers by value, without their source (a
    cell has no file there): the workers still compute the keys the notebook did, so a
    call the notebook made is a hit in them, and theirs are hits in the notebook."""
    runs = tmp_path / "runs.txt"
    outputs = kernel.run(f"""
import dagnb
from joblib import Parallel, delayed
memory = dagnb.Memory("cache")
SCALE = {{"factor": 3}}

class Scaler:
    def apply(self, x):
        return SCALE["factor"] * x

def slow_triple(x):
    with open({str(runs)!r}, "a") as log:
        log.write(f"{{x}}\\n")
    return Scaler().apply(x)

slow_triple_cached = memory.cache(slow_triple)
assert slow_triple_cached(0) == 0
assert Parallel(n_jobs=2)(delayed(slow_triple_cached)(x) for x in range(4)) == [0, 3, 6, 9]
assert [slow_triple_cached(x) for x in range(4)] == [0, 3, 6, 9]
""")
    assert error(outputs) is None, outputs
    assert sorted(runs.read_text().split()) == ["0", "1", "2", "3"]


# -- the stop button while a --background run goes on ------------------------------------
def background_graph(kernel: Kernel, tmp_path: Path, wait: str = "run") -> None:
    """early -> train -> after, and other beside them: train waits for a command (its
    child, in the kernel's process group; by subprocess.run, or ``wait`` "system":
    os.system) until ``release`` exists; other, a command (a group of its own), until
    ``other-go`` exists."""
    command = (f"touch {tmp_path / 'started'}; for i in $(seq 600); do "  # (polls: a sleep
               f"[ -e {tmp_path / 'release'} ] && break; sleep 0.05; done")  # 30 took 30 s)
    waits = {"run": f"import subprocess\nr = subprocess.run(['sh', '-c', {command!r}]).returncode",
             "system": f"import os, time\ntime.sleep(0.5)\nr = os.system({command!r})"}
    cells = [
        "%%dagger early --python --outputs e --define-only\ne = 1\n",
        f"%%dagger train --python --needs early --outputs model --define-only\n"
        f"{waits[wait]}\nmodel = {{'rc': r}}\n",
        "%%dagger after --python --needs train --outputs a --define-only\na = model\n",
        f"%%dagger other --define-only\n"
        f"for i in $(seq 400); do [ -e {tmp_path / 'other-go'} ] && break; sleep 0.05; done\n",
    ]
    for cell in cells:
        assert error(kernel.run(cell)) is None, cell


def start_in_background(kernel: Kernel, tmp_path: Path) -> None:
    """Start the graph's run in the background; the cell ends once train's command runs
    (started while a cell ran, it dies of SIGINT, as one started while idle now does)."""
    started = str(tmp_path / "started")
    outputs = kernel.run(f"%dagger run --background\nimport os, time\nfor _ in range(400):\n"
                         f"    if os.path.exists({started!r}): break\n    time.sleep(0.05)\n"
                         "background = get_session().last_run")
    assert error(outputs) is None, outputs
    assert (tmp_path / "started").exists()


def ended_states(kernel: Kernel, tmp_path: Path) -> dict[str, str]:
    (tmp_path / "other-go").touch()
    return ast.literal_eval(kernel.value("background.wait(30).states()"))


_SAW = ("import signal\nfrom dagnb.executors import loop\nfrom dagnb.notebook import stop_button\n"
        "row = background.status_rows()['train']\n"
        "print(row, background.result('train') if row['state'] == 'succeeded' else None,\n"
        "      signal.getsignal(signal.SIGINT), get_ipython().kernel.saved_sigint_handler,\n"
        "      loop._sigints, loop._holds, len(loop._unwaited), len(stop_button._watch.runs))")


def what_the_kernel_saw_of_the_press(kernel: Kernel) -> str:
    """For a failure's message (it showed once in ~100 runs beside busy loops, never
    since): train's row and result, SIGINT's handlers, the SIGINTs counted, the holds of
    the wakeup fd and the runs watched."""
    return text(kernel.run(_SAW))


def assert_train_cut_short_and_run_again(kernel: Kernel, tmp_path: Path) -> None:
    ended = ended_states(kernel, tmp_path)
    assert ended == {
        "early": "succeeded", "train": "cancelled", "after": "skipped", "other": "succeeded",
    }, (ended, what_the_kernel_saw_of_the_press(kernel))
    kernel.run("import threading\nfor t in threading.enumerate():\n"  # (the rows and
               "    if t.name == 'dagnb-publish': t.join(30)")  # the namespace: its thread's)
    row = kernel.value("get_session().latest['train']['error']")
    assert "was cut short: the stop button's interrupt reached the processes" in row, row
    assert kernel.value("sorted(_dagger)") == "['early', 'other']"  # (no cut-short model)
    (tmp_path / "release").touch()
    assert error(kernel.run("%dagger run")) is None
    assert ast.literal_eval(states(kernel)) == {  # train ran again: nothing was stored
        "early": "cached", "train": "succeeded", "after": "succeeded", "other": "cached"}
    assert kernel.value("model") == "{'rc': 0}"


_GIVEN_BACK = ("import signal\nk = get_ipython().kernel\n"
               "fd = signal.set_wakeup_fd(-1)\nsignal.set_wakeup_fd(fd)\n"
               "k.saved_sigint_handler == signal.SIG_IGN, fd")


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="the stop button signals a group on POSIX")
def test_the_stop_button_with_the_kernel_idle_stores_no_cut_short_step_of_a_background_run(
        kernel: Kernel, tmp_path: Path) -> None:
    """The stop button, pressed while the kernel was idle, killed the command a
    background run's Python step waited for; the step stored `{'rc': -2}` as a success,
    served from the cache after. It ends cancelled now, the rest of the run goes on."""
    background_graph(kernel, tmp_path)
    start_in_background(kernel, tmp_path)
    time.sleep(0.3)
    run_sync(kernel.client.km.interrupt_kernel)()  # (the kernel idle)
    assert_train_cut_short_and_run_again(kernel, tmp_path)
    assert kernel.value(_GIVEN_BACK) == "(True, -1)"  # as ipykernel had them


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="the stop button signals a group on POSIX")
def test_the_stop_button_in_another_cell_stores_no_cut_short_step_of_a_background_run(
        kernel: Kernel, tmp_path: Path) -> None:
    """Pressed to stop another cell, the button killed the background step's command as
    well: that cell is interrupted as ever, the step ends cancelled, not stored."""
    background_graph(kernel, tmp_path)
    start_in_background(kernel, tmp_path)
    busy = tmp_path / "busy"
    thread = stop_button_when(busy, kernel)
    outputs = kernel.run(f"import time\nopen({str(busy)!r}, 'w').close()\ntime.sleep(20)\n"
                         "print('not interrupted')")
    thread.join(5)
    found = error(outputs)
    assert found is not None and found["ename"] == "KeyboardInterrupt", outputs
    assert "not interrupted" not in text(outputs)
    assert_train_cut_short_and_run_again(kernel, tmp_path)


def test_the_stop_button_in_another_cell_keeps_a_background_step_that_started_no_process(
        kernel: Kernel, tmp_path: Path) -> None:
    """A background Python step that starts no process has none the button can kill:
    stopping another cell threw its finished result away, the step said to be "cut
    short" by an interrupt that reached "the processes it waited for"."""
    release, busy = tmp_path / "release", tmp_path / "busy"
    outputs = kernel.run(
        "%%dagger wait --background --python --outputs r\nimport os, time\n"
        f"while not os.path.exists({str(release)!r}):\n    time.sleep(0.05)\nr = 42\n")
    assert error(outputs) is None, outputs
    kernel.run("background = get_session().last_run")
    thread = stop_button_when(busy, kernel)
    outputs = kernel.run(f"import time\nopen({str(busy)!r}, 'w').close()\ntime.sleep(20)")
    thread.join(5)
    found = error(outputs)
    assert found is not None and found["ename"] == "KeyboardInterrupt", outputs
    release.touch()
    assert kernel.value("background.wait(30).states()") == "{'wait': 'succeeded'}"
    assert kernel.value("r") == "42"


@pytest.mark.skipif(not hasattr(os, "killpg"), reason="the stop button signals a group on POSIX")
def test_the_stop_button_in_os_system_stores_no_cut_short_step_of_a_background_run(
        kernel: Kernel, tmp_path: Path) -> None:
    """C's system() ignores SIGINT in the whole kernel while its command runs: the
    button, pressed with the kernel idle, killed a background step's os.system command
    unseen, and the step stored `{'rc': 2}` as a success. It ends cancelled now; os.system
    is the kernel's own before the run and again after it."""
    own = "import os, posix\nos.system is posix.system"
    assert kernel.value(own) == "True"
    background_graph(kernel, tmp_path, wait="system")
    outputs = kernel.run("%dagger run --background\nbackground = get_session().last_run")
    assert error(outputs) is None, outputs
    # (no request to the kernel until the press: ipykernel sets SIGINT's handler for
    # each, undoing system()'s SIG_IGN; train sleeps first, to start it with the kernel idle)
    assert wait_until((tmp_path / "started").exists, 20)
    time.sleep(0.3)
    run_sync(kernel.client.km.interrupt_kernel)()
    assert_train_cut_short_and_run_again(kernel, tmp_path)
    assert kernel.value(own) == "True"
    assert kernel.value(_GIVEN_BACK) == "(True, -1)"


def test_a_background_run_with_no_interrupt_stores_as_before_and_gives_sigint_back(
        kernel: Kernel, tmp_path: Path) -> None:
    """While a background run goes, the idle kernel's SIGINT is dagnb's to see (a
    handler that does nothing, where ipykernel ignores it); with no press, the run is
    stored as ever, and the kernel has SIGINT as it was once the run ends."""
    background_graph(kernel, tmp_path)
    start_in_background(kernel, tmp_path)
    assert kernel.value("get_ipython().kernel.saved_sigint_handler.__name__") == "'_noticed'"
    (tmp_path / "release").touch()
    assert ended_states(kernel, tmp_path) == {
        "early": "succeeded", "train": "succeeded", "after": "succeeded", "other": "succeeded"}
    assert kernel.value(_GIVEN_BACK) == "(True, -1)"
    assert error(kernel.run("%dagger run")) is None
    assert ast.literal_eval(states(kernel)) == {
        "early": "cached", "train": "cached", "after": "cached", "other": "cached"}


def test_history_run_lists_one_run_s_steps_and_why(kernel: Kernel) -> None:
    """``%dagger history`` counted each run's endings; which step failed, and why, was in
    no view once the cell's output was gone."""
    assert error(kernel.run("%%dagger prep\necho prep\n")) is None
    assert error(kernel.run("%%dagger boom --needs prep\necho about to fail; exit 3\n"))
    run_id = kernel.value("get_session().runs[-1]['run']").strip("'")
    shown = kernel.value(f"%dagger history --run {run_id[-6:]}")
    assert shown.splitlines()[0].split() == ["step", "state", "entry", "why"]
    rows = ast.literal_eval(kernel.value(
        f"get_ipython().run_line_magic('dagger', 'history --run {run_id}')"
        ".to_dict('records')"))
    assert [row["step"] for row in rows] == ["prep", "boom"]
    assert rows[0]["state"] == "cached" and len(rows[0]["entry"]) == 12
    assert (rows[1]["state"], rows[1]["entry"], rows[1]["why"]) == ("failed", None, "exit code 3")
    assert rows[0]["why"] is None
    kernel.run("%%dagger boom --needs prep\necho fixed\n")
    fixed_run = kernel.value("get_session().runs[-1]['run']").strip("'")
    ok = kernel.value(f"%dagger history --run {fixed_run}")
    assert ok.splitlines()[0].split() == ["step", "state", "entry"]  # (no why: hidden)
    assert usage_error(kernel.run("%dagger history --run nosuch")).startswith(
        "--run 'nosuch': no run of that id in this session, nor recorded in ")


def test_the_test_kernels_forward_a_processs_output_to_the_cell_as_jupyterlabs_do(
        kernel: Kernel) -> None:
    """conftest drops ``PYTEST_CURRENT_TEST`` from a kernel's environment: with it,
    ipykernel forwards no fd output, and a secret a subprocess wrote went unseen."""
    outputs = kernel.run("import os, subprocess\n"
                         "print('PYTEST_CURRENT_TEST' in os.environ)\n"
                         "subprocess.run(['echo', 'written-to-fd-1'])\n"
                         "import time; time.sleep(0.5)")  # (forwarded from a thread)
    assert sorted(text(outputs).split()) == ["False", "written-to-fd-1"], outputs


def test_run_and_plan_say_a_param_whose_notebook_variable_changed_since_its_cell_ran(
        kernel: Kernel) -> None:
    """``--param threshold=$threshold`` keeps the value the cell ran with: after
    ``threshold = 90``, ``%dagger run`` served the step computed with 20 and ``plan``
    said it was cached, with no word that the notebook now says otherwise."""
    kernel.run("threshold, label = 20, 'a'")
    outputs = kernel.run("%%dagger filt --python --param threshold=$threshold "
                         "--param label={label} --param n=3 --outputs kept\n"
                         "kept = [v for v in range(100) if v > threshold]\n")
    assert error(outputs) is None, outputs
    assert "dagnb: step" not in text(kernel.run("%dagger run"))
    kernel.run("threshold = 90")
    said = ("dagnb: step 'filt' has --param threshold=20, from $threshold when its cell "
            "ran; $threshold is now 90: run that cell again to use it")
    for command in ("%dagger plan", "%dagger run"):
        shown = text(kernel.run(command))
        assert said in shown and "label" not in shown, shown
    kernel.run("threshold = 20")  # (back as it was: nothing to say)
    assert "dagnb: step" not in text(kernel.run("%dagger run"))
