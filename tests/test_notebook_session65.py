"""Session 65's notebook fixes, in a real Jupyter kernel (nbclient) showing widgets: the
fix a missing secret's error names in a kernel, and the earlier-lines note under a failed
step's tail in widget mode (the live widget's log and the snapshot it leaves)."""

from __future__ import annotations

import ast
import html
import os
import types
from collections.abc import Iterator
from pathlib import Path

import pytest
from notebook_cells import KERNEL_ENV, started_kernel
from test_kernel import Kernel, error, usage_error
from test_notebook_session64 import _plain

from dagnb.model.contract import secret_not_set

pytestmark = pytest.mark.slow

UNSET = "DAGNB_SESSION65_UNSET"  # a secret's name no environment sets
# a step printing 50 lines to stderr, then failing: its tails are cut
LOUD_FAILURE = "for i in $(seq 50); do echo line$i >&2; done; exit 3"


@pytest.fixture(scope="module")
def widget_kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Kernel]:
    """One kernel for the module, showing widgets as JupyterLab's does."""
    home = tmp_path_factory.mktemp("kernel")
    env = KERNEL_ENV | {"DAGNB_WIDGETS": "1", "JPY_SESSION_NAME": ""}
    with started_kernel(home, env, unset=(UNSET, "DAGNB_NOTEBOOK_FILE"),
                        store_widget_state=False) as client:
        kernel = Kernel(client, home)
        kernel.run("%load_ext dagnb")
        yield kernel


@pytest.fixture
def kernel(widget_kernel: Kernel, tmp_path: Path) -> Kernel:
    """The module's kernel in a fresh folder (its own cache), with an empty graph."""
    return widget_kernel.fresh(tmp_path)


# -- a secret not set ----------------------------------------------------------------------
def test_a_secret_not_set_in_a_kernel_names_the_fix_that_reaches_the_kernel(
        kernel: Kernel) -> None:
    """A shell's ``export`` never reaches a running kernel: the error said to use it."""
    outputs = kernel.run(f"%%dagger deploy --secret {UNSET}\necho deploying")
    said = usage_error(outputs)
    assert said.startswith(f"step 'deploy' needs secret {UNSET!r}, which is not set in the "
                           "kernel's environment"), outputs
    assert f"os.environ[{UNSET!r}] = getpass.getpass()" in said, said
    assert f"export {UNSET}=" not in said, said


def test_a_secret_not_set_outside_a_users_kernel_still_says_export(monkeypatch) -> None:
    """The CLI, a script, a terminal IPython (no kernel), and ``dagnb run NOTEBOOK``'s
    kernel (it inherits the caller's environment) keep ``export``."""
    def said() -> str:
        return str(secret_not_set("deploy", "API_TOKEN", environ={}))

    shell = types.SimpleNamespace(kernel=None)
    monkeypatch.setitem(__import__("sys").modules, "IPython",
                        types.SimpleNamespace(get_ipython=lambda: shell))
    monkeypatch.delenv("DAGNB_NOTEBOOK_FILE", raising=False)
    assert "(export API_TOKEN=...)" in said()  # a terminal IPython
    shell.kernel = object()
    assert "getpass" in said() and "export API_TOKEN" not in said()
    monkeypatch.setenv("DAGNB_NOTEBOOK_FILE", os.devnull)  # dagnb run NOTEBOOK's kernel
    assert "(export API_TOKEN=...)" in said()


# -- the earlier-lines note in widget mode -------------------------------------------------
def test_a_failed_upstream_steps_stderr_tail_says_how_many_lines_came_before(
        kernel: Kernel) -> None:
    """Widget mode's snapshot showed a failed step's last stderr lines with no word of
    the 40 before them, as the text mode of ``dagnb run`` and a step's own tail say."""
    kernel.run(f"%%dagger up --define-only\n{LOUD_FAILURE}")
    shown = _plain(kernel.run("%%dagger down --needs up --no-raise\necho down"))
    assert ("── up failed; last lines of stderr ──\n"
            "40 earlier lines not shown; %dagger logs up shows them\nline41\n") in shown, shown


def test_the_live_widgets_log_of_a_failed_step_says_how_many_lines_came_before(
        kernel: Kernel) -> None:
    """The live widget's log pane showed a failed step's last 20 lines and no note."""
    assert error(kernel.run(f"%%dagger up --no-raise\n{LOUD_FAILURE}")) is None
    pane = kernel.value("from dagnb.notebook.widgets.status import StatusWidget\n"
                        "view = StatusWidget(get_session().last_run, focus='up')\n"
                        "view.log_view.value")
    pane = html.unescape(ast.literal_eval(pane))
    assert "30 earlier lines not shown; %dagger logs up shows them</div>" in pane, pane
    assert pane.index("earlier lines") < pane.index("line31\n"), pane
