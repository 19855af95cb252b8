"""The matplotlib figures of Python steps that run at the same time (async steps on
dagnb's loop, a plain step called between their awaits, the user's cell while a run goes
on in the background) go to the step that made them: shown in its place, kept in its
cache entry, never drawn on, shown or closed by another (pyplot has one global list of
figures). Real matplotlib with the inline backend, in IPython's shell with dagnb loaded;
events make the overlaps certain."""

from __future__ import annotations

import asyncio
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import dagnb
from dagnb.executors.loop import get_loop, run_sync
from dagnb.notebook import displays
from dagnb.runtime.prepare import start_background

pytest.importorskip("matplotlib")
pytest.importorskip("matplotlib_inline")
# the steps wait on events made here: they count by their type in the steps' keys
pytestmark = pytest.mark.filterwarnings("ignore:.*cannot be hashed:UserWarning")

WIDE = "200x100"  # the figure of the step that holds one open (figsize, in pixels)


@pytest.fixture
def pyplot(shell: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """pyplot with the notebook's inline backend, as ``%matplotlib inline`` sets it
    (the plain shell has no GUI event loop to enable)."""
    import matplotlib
    import matplotlib.pyplot as plt
    from matplotlib_inline.backend_inline import flush_figures

    backend, interactive = matplotlib.get_backend(), matplotlib.is_interactive()
    monkeypatch.setattr(shell, "enable_gui", lambda gui=None: None)
    with matplotlib.rc_context():
        shell.enable_matplotlib("inline")
        plt.close("all")
        yield plt
        plt.close("all")
    shell.events.unregister("post_execute", flush_figures)
    plt.switch_backend(backend)
    matplotlib.interactive(interactive)


def _figures(run: dagnb.Run, step: str) -> list[str]:
    """The figures the step showed, as ``<Figure size WxH with N Axes>``."""
    return [e.data["data"]["text/plain"] for e in run.events
            if e.step == step and e.kind == "display" and "image/png" in e.data["data"]]


def _kept(step: str) -> list[str]:
    """The figures the step's cache entry keeps."""
    entries = dagnb.cache.entries()
    [path] = entries.loc[entries["step"] == step, "path"]
    records = (Path(path) / "displays.jsonl").read_text().splitlines()
    return [json.loads(record)["data"]["text/plain"] for record in records]


def _size(figure: str) -> str:
    found = re.search(r"size (\d+x\d+)", figure)
    assert found, figure
    return found.group(1)


def _run(graph: dagnb.Graph) -> dagnb.Run:
    """The run as a notebook cell makes it: its view shows the steps' displays."""
    return start_background(graph, executor="local", displays_by_view=True).wait()


@pytest.mark.usefixtures("pyplot")
def test_the_step_ending_first_shows_its_own_figure_not_the_other_s(workdir):
    """Before, a step that ended showed every figure made since it started: the one
    the other step still held was shown in its place, kept in its entry, and closed."""
    graph = dagnb.Graph("overlap")
    started, made, released = asyncio.Event(), asyncio.Event(), asyncio.Event()

    @graph.step
    async def holds():
        import matplotlib.pyplot as plt

        await started.wait()  # the other step runs: its start saw no figure of ours
        figure = plt.figure(figsize=(2, 1), dpi=100)
        plt.plot([1, 2, 3])
        made.set()
        await released.wait()  # the other step has ended meanwhile
        return plt.fignum_exists(figure.number)

    @graph.step
    async def quick():
        import matplotlib.pyplot as plt

        started.set()
        await made.wait()
        plt.figure(figsize=(1, 2), dpi=100)
        plt.plot([3, 2, 1])  # left open: shown as the step ends

    @graph.step
    def after(quick):
        released.set()

    first = _run(graph)
    assert first.result("holds") is True  # not closed by the other step
    assert [_size(f) for f in _figures(first, "holds")] == [WIDE]
    assert [_size(f) for f in _figures(first, "quick")] == ["100x200"]
    assert _kept("holds") == _figures(first, "holds")  # what a hit shows again
    assert _kept("quick") == _figures(first, "quick")


@pytest.mark.usefixtures("pyplot")
def test_a_step_plotting_while_another_holds_a_figure_draws_on_its_own(workdir):
    """Before, ``plt.plot`` in a plain step called while an async step held a figure
    drew on that figure (pyplot's current one), and its ``plt.show()`` showed it and
    closed it: the other step's plot was shown under this one, with both lines."""
    graph = dagnb.Graph("current")
    made, released = asyncio.Event(), asyncio.Event()

    @graph.step
    async def holds():
        import matplotlib.pyplot as plt

        figure = plt.figure(figsize=(2, 1), dpi=100)
        plt.plot([1, 2, 3])
        made.set()
        await released.wait()
        return len(figure.axes[0].lines)

    @graph.step
    async def gate():
        await made.wait()

    @graph.step
    def plots(gate):  # a plain step: called on the loop, between the other's awaits
        import matplotlib.pyplot as plt

        plt.plot([3, 2, 1])
        plt.show()
        released.set()

    run = _run(graph)
    assert run.result("holds") == 1
    assert [_size(f) for f in _figures(run, "holds")] == [WIDE]
    shown = _figures(run, "plots")
    assert len(shown) == 1 and _size(shown[0]) != WIDE, shown


@pytest.mark.usefixtures("pyplot")
def test_a_cell_ending_while_a_background_step_plots_keeps_to_its_own(workdir, shell,
                                                                      monkeypatch):
    """The inline backend shows (and closes) every open figure as a cell ends. Before,
    a cell ending while a background run's step held a figure showed that figure in
    the cell and closed it: the step's entry had none."""
    published: list[dict[str, Any]] = []
    displays.uninstall(shell)
    monkeypatch.setattr(shell.display_pub, "publish",
                        lambda data, *args, **kwargs: published.append(dict(data)))
    displays.install(shell)
    graph = dagnb.Graph("background")
    made, released = asyncio.Event(), asyncio.Event()

    @graph.step
    async def holds():
        import matplotlib.pyplot as plt

        figure = plt.figure(figsize=(2, 1), dpi=100)
        plt.plot([1, 2, 3])
        made.set()
        await released.wait()
        return plt.fignum_exists(figure.number)

    run = start_background(graph, executor="local", displays_by_view=True)
    run_sync(made.wait())
    shell.run_cell("import matplotlib.pyplot as plt\nplt.plot([3, 2, 1]);\n")
    cell = [data["text/plain"] for data in published if "image/png" in data]
    get_loop().call_soon_threadsafe(released.set)
    run.wait()
    assert len(cell) == 1 and _size(cell[0]) != WIDE, cell  # the cell's own plot only
    assert run.result("holds") is True
    assert [_size(f) for f in _figures(run, "holds")] == [WIDE]


def test_with_a_backend_that_keeps_figures_open_a_step_s_go_to_the_notebook(workdir, pyplot):
    """As ``%matplotlib agg`` leaves a cell's figures open: a step's are the notebook's
    once it ends, not the next step's current figure to draw on (before, the next
    step's ``plt.plot`` drew on it); ``plt.figure(label)`` finds the step's own."""
    pyplot.switch_backend("agg")
    pyplot.figure()  # the notebook's, open as the run starts
    graph = dagnb.Graph("kept")

    @graph.step
    def first():
        import matplotlib.pyplot as plt

        figure = plt.figure("loss")
        plt.plot([1, 2, 3])
        return plt.figure("loss") is figure and plt.gcf() is figure

    @graph.step
    def second(first):
        import matplotlib.pyplot as plt

        plt.plot([3, 2, 1])
        return plt.gcf().number

    run = _run(graph)
    assert run.result("first") is True
    assert run.result("second") == 3  # a figure of its own
    assert pyplot.get_fignums() == [1, 2, 3]  # all the notebook's now, open as before
    assert pyplot.gcf().number == 3


QUIET_THEN_PLOTS = """
import asyncio, json, sys
from IPython.core.interactiveshell import InteractiveShell
import dagnb
from dagnb.runtime.prepare import start_background

InteractiveShell.instance().run_line_magic("load_ext", "dagnb")
dagnb.configure(executor="local", cache_directory="cache")
quiet = dagnb.Graph("quiet")
quiet.step(lambda: 1, name="nothing")
start_background(quiet, displays_by_view=True).wait()
loaded = sorted(name for name in sys.modules if name.startswith("matplotlib"))

import matplotlib
matplotlib.interactive(True)  # (the backend: MPLBACKEND, as a kernel sets it)
graph = dagnb.Graph("plots")
started, made, released = asyncio.Event(), asyncio.Event(), asyncio.Event()

@graph.step
async def holds():
    await started.wait()
    import matplotlib.pyplot as plt  # the first import, the other step running
    plt.figure(figsize=(2, 1), dpi=100)
    plt.plot([1, 2, 3])
    made.set()
    await released.wait()

@graph.step
async def quick():
    started.set()
    await made.wait()
    import matplotlib.pyplot as plt
    plt.figure(figsize=(1, 2), dpi=100)
    plt.plot([3, 2, 1])

@graph.step
def after(quick):
    released.set()

run = start_background(graph, displays_by_view=True).wait()
shown = {step: [e.data["data"]["text/plain"] for e in run.events
                if e.step == step and e.kind == "display"] for step in ("holds", "quick")}
print(json.dumps({"loaded": loaded, "shown": shown}))
"""


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_step_that_plots_nothing_loads_no_matplotlib_and_one_importing_it_is_scoped(
        tmp_path):
    """A fresh process, dagnb loaded in IPython's shell: a step that makes no figure
    imports none of matplotlib; pyplot imported first inside a step while another runs
    is scoped from its import on (before, the step ending first showed both figures)."""
    env = {**os.environ, "MPLBACKEND": "module://matplotlib_inline.backend_inline",
           "DAGNB_CONFIG": "none", "PYTHONWARNINGS": "ignore"}
    done = subprocess.run([sys.executable, "-c", QUIET_THEN_PLOTS], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=100)
    assert done.returncode == 0, done.stderr
    found = json.loads(done.stdout.strip().splitlines()[-1])
    assert found["loaded"] == []
    assert [_size(figure) for figure in found["shown"]["holds"]] == [WIDE]
    assert [_size(figure) for figure in found["shown"]["quick"]] == ["100x200"]


def test_unloading_dagnb_gives_pyplot_its_own_list_of_figures_back(shell, pyplot):
    from matplotlib import _pylab_helpers

    displays.uninstall(shell)
    try:
        methods = [_pylab_helpers.Gcf.__dict__[name].__func__ for name in
                   ("set_active", "get_active", "get_all_fig_managers", "destroy_all")]
        assert {method.__module__ for method in methods} == {"matplotlib._pylab_helpers"}
        assert pyplot.get_figlabels.__module__ == "matplotlib.pyplot"
    finally:
        displays.install(shell)
    active = _pylab_helpers.Gcf.__dict__["get_active"].__func__
    assert active.__module__ == "dagnb.notebook.figures"  # scoped again
