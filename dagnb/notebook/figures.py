"""Each Python step's matplotlib figures are its own, as each cell's are in a notebook.

pyplot keeps one list of open figures for the whole process, and its "current figure"
is the last one used. Steps run at the same time (async ones on dagnb's loop, a plain
one called between their awaits) and so does the user's cell while a run goes on in the
background: without more, one's ``plt.plot`` drew on another's figure, its ``plt.show()``
showed and closed the others' figures, and a cell ending showed a step's half-made plot.

So, while dagnb is loaded in a notebook, pyplot's list of figures (``Gcf``) is scoped:
a figure belongs to the step that made it, or to the notebook when made outside any
step (a thread a step starts has no step's context); a step that picks one of the
notebook's (``plt.figure(n)``) takes it, one of another step's it gets but leaves to
that step. A step's current figure, ``plt.show()`` and ``plt.close("all")`` see its own
figures only; the notebook's (the inline backend's showing of figures as a cell ends)
see the notebook's only. Figure numbers stay unique for the process
(``plt.get_fignums()`` lists them all). As a step ends, the figures it
left open are shown in its place and closed, as the inline backend does after a cell;
with a backend that keeps them open they go to the notebook, as a cell's would.

Nothing is done for a step until pyplot is imported: pyplot is scoped as its import
ends (an import hook watches for it), so a step that never plots costs nothing more.
"""

from __future__ import annotations

import importlib.abc
import sys
import threading
import warnings
from collections.abc import Callable
from typing import Any

from dagnb.executors.capture import step_with_displays

__all__ = ["install", "step_started", "uninstall"]

_PYPLOT = "matplotlib.pyplot"
_OWNER = "_dagnb_step"  # a figure manager's attribute: its step (None: the notebook's)
_SCOPED = ("set_active", "get_active", "get_all_fig_managers", "get_num_fig_managers",
           "destroy_all")
_originals: dict[str, Any] = {}  # what scoping replaced: Gcf's methods, get_figlabels
_lock = threading.Lock()


def install() -> None:
    """Scope pyplot's figures now if it is loaded, else as soon as it is imported."""
    if _PYPLOT in sys.modules:
        _scope_or_say()
    elif not any(isinstance(finder, _PyplotWatch) for finder in sys.meta_path):
        sys.meta_path.insert(0, _PyplotWatch())


def uninstall() -> None:
    sys.meta_path[:] = [finder for finder in sys.meta_path
                        if not isinstance(finder, _PyplotWatch)]
    with _lock:
        if not _originals:
            return
        sys.modules[_PYPLOT].get_figlabels = _originals.pop("get_figlabels")
        gcf = sys.modules["matplotlib._pylab_helpers"].Gcf
        for name, method in _originals.items():
            setattr(gcf, name, method)
        _originals.clear()


def step_started() -> Callable[[], None]:
    """A step hook: as the step ends, in its context, what to do with its figures."""
    return _step_ended  # (nothing to do now: what is the step's is known as it is made)


def _step_ended() -> None:
    """Show and close the figures the step left open, as the inline backend does after
    a cell (interactive, closing its figures, as by default); else they are the
    notebook's now, left open as after a cell."""
    pyplot = sys.modules.get(_PYPLOT)
    if pyplot is None or not _originals:  # (not scoped: its scoping failed, said once)
        return
    own = sys.modules["matplotlib._pylab_helpers"].Gcf.get_all_fig_managers()
    if not own:
        return
    try:
        if _inline_shows_after_cell(pyplot):
            from IPython.display import display

            for manager in own:
                figure = manager.canvas.figure
                display(figure, metadata=_figure_metadata(figure))
                pyplot.close(figure)
    finally:
        for manager in own:
            setattr(manager, _OWNER, None)


def _scope_or_say() -> None:
    """Replace pyplot's ``Gcf`` methods that pick figures by the ones of this scope."""
    try:
        with _lock:  # (a cell and a step may import pyplot at once: scoped once)
            if not _originals:
                _replace_methods()
    except Exception as exc:  # (another matplotlib's insides): pyplot works, unscoped
        warnings.warn(f"dagnb: the figures of steps running at once may mix: "
                      f"{type(exc).__name__}: {exc}", stacklevel=2)


def _replace_methods() -> None:
    pyplot = sys.modules[_PYPLOT]  # (imported, or its import ending: no import here)
    gcf = sys.modules["matplotlib._pylab_helpers"].Gcf
    originals = {name: gcf.__dict__[name] for name in _SCOPED}  # (all found, or none set)
    set_active = originals["set_active"].__func__

    def scoped_set_active(cls: type, manager: Any) -> None:
        owner, step = getattr(manager, _OWNER, None), step_with_displays()
        if owner is None or owner is step:  # (a new one, the notebook's, or its own)
            setattr(manager, _OWNER, step)
            set_active(cls, manager)
        # else another step's: it stays that step's, and its current figure

    gcf.set_active = classmethod(scoped_set_active)
    gcf.get_active = classmethod(lambda cls: next(reversed(_own(cls)), None))
    gcf.get_all_fig_managers = classmethod(_own)
    gcf.get_num_fig_managers = classmethod(lambda cls: len(_own(cls)))
    gcf.destroy_all = classmethod(_destroy_own)
    _originals.update(originals, get_figlabels=pyplot.get_figlabels)
    pyplot.get_figlabels = _figure_labels


def _own(gcf: Any) -> list[Any]:
    """The figure managers of this scope, the current one last (a copy first: another
    thread may open or close one meanwhile)."""
    step = step_with_displays()
    return [manager for manager in list(gcf.figs.values())
            if getattr(manager, _OWNER, None) is step]


def _destroy_own(gcf: Any) -> None:
    for manager in _own(gcf):
        gcf.destroy(manager)


def _figure_labels() -> list[str]:
    """pyplot's, one per figure number (``plt.figure(label)`` indexes the numbers of
    all figures with it), with the labels of another scope's figures left out."""
    step = step_with_displays()
    figures = sys.modules["matplotlib._pylab_helpers"].Gcf.figs
    managers = sorted(list(figures.values()), key=lambda m: m.num)
    return [manager.canvas.figure.get_label() if getattr(manager, _OWNER, None) is step
            else "" for manager in managers]


class _PyplotWatch(importlib.abc.MetaPathFinder):
    """Scopes pyplot as its import ends, before any figure can be made: in a cell, or
    in a step (``import matplotlib.pyplot as plt`` in its code). Consulted only for a
    module not imported yet; it leaves once pyplot is."""

    def find_spec(self, name: str, path: Any = None, target: Any = None) -> Any:
        if name != _PYPLOT:
            return None
        for finder in sys.meta_path:
            find = getattr(finder, "find_spec", None)
            if finder is self or find is None:
                continue
            spec = find(name, path, target)
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _ThenScope(spec.loader, self)
                return spec
        return None


class _ThenScope(importlib.abc.Loader):
    """pyplot's own loader, then :func:`_scope_or_say`."""

    def __init__(self, loader: Any, watch: _PyplotWatch) -> None:
        self._loader, self._watch = loader, watch

    def create_module(self, spec: Any) -> Any:
        return self._loader.create_module(spec)

    def exec_module(self, module: Any) -> None:
        module.__loader__ = module.__spec__.loader = self._loader  # (as if unwatched)
        self._loader.exec_module(module)
        if self._watch in sys.meta_path:
            sys.meta_path.remove(self._watch)
        _scope_or_say()


def _inline_shows_after_cell(pyplot: Any) -> bool:
    if "inline" not in str(pyplot.get_backend()) or not pyplot.isinteractive():
        return False
    try:
        from matplotlib_inline.backend_inline import InlineBackend
    except ImportError:
        return False
    return bool(InlineBackend.instance().close_figures)


def _figure_metadata(figure: Any) -> dict[str, Any] | None:
    try:  # (what the inline backend's show() gives: a dark figure's background)
        from matplotlib_inline.backend_inline import _fetch_figure_metadata
    except ImportError:
        return None
    return _fetch_figure_metadata(figure)
