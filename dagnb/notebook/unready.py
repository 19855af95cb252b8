"""What a kernel that just started lacks: the notebook variables a step's code reads
that no cell has defined in it yet, and the cell that defines each (a restart).

Apart from the status (:mod:`dagnb.notebook.overview`) so that the session, which adds
the note to a failure, and the status, which shows it, both use it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dagnb.model.graph import Graph

__all__ = ["missing_variables", "name_error_note", "unready_line", "unready_message"]


def missing_variables(graph: Graph, namespace: Mapping[str, Any],
                      name: str) -> list[tuple[str, str | None]]:
    """The notebook variables step ``name``'s code reads that are not defined now, each
    with the cell that defines it (``cell 2 of pipeline.ipynb``) when the kernel knows
    its notebook file and finds one."""
    from dagnb.fingerprint import missing_globals
    from dagnb.notebook.document import defining_cell, kernel_notebook_path

    step = graph[name]
    missing = [n for n in missing_globals(step.func) if n not in step.params] if step.func else []
    if not missing:
        return []
    path = kernel_notebook_path(namespace)
    found = []
    for variable in missing:
        index = defining_cell(path, variable) if path is not None else None
        found.append((variable, f"cell {index + 1} of {path.name}"  # type: ignore[union-attr]
                       if index is not None else None))
    return found


def unready_line(graph: Graph, namespace: Mapping[str, Any], name: str,
                 published: Mapping[str, str]) -> str | None:
    """The :func:`unready_message` of step ``name``, whose code reads notebook variables
    not defined now (none a step publishes, which its run runs first); else None."""
    missing = [(variable, place) for variable, place
               in missing_variables(graph, namespace, name) if variable not in published]
    return unready_message(name, missing) if missing else None


_NAME_ERROR = re.compile(r"NameError: name '(\w+)' is not defined")


def name_error_note(graph: Graph, namespace: Mapping[str, Any], name: str,
                    error: str | None) -> str | None:
    """For step ``name`` that failed with ``error``: the :func:`unready_message` line when
    it is a NameError for a notebook variable a cell of the notebook defines that this
    kernel has not run yet (a restart), else None (any other failure: no guess)."""
    found = _NAME_ERROR.match(error or "")
    if found is None or name not in graph:
        return None
    variable = found.group(1)
    place = dict(missing_variables(graph, namespace, name)).get(variable)
    return unready_message(name, [(variable, place)]) if place else None


# What a notebook's connection or client says when a step uses it off the thread (or
# the event loop) it was made on: sqlite3's, asyncio's and aiohttp's words
_OTHER_THREAD = re.compile(r"created in a thread can only be used in that same thread"
                           r"|attached to a different loop|bound to a different event loop")


def other_thread_note(name: str, error: str | None) -> str | None:
    """For step ``name`` that failed using an object the notebook made on its own thread
    or event loop (a ``sqlite3`` connection): one line saying where steps run, and the
    fix; None for any other failure."""
    if not _OTHER_THREAD.search(error or ""):
        return None
    return (f"step {name!r} used an object the notebook made on its own thread or event "
            "loop (a sqlite3 connection, an async client); steps run on dagnb's: make it "
            "inside the step, from what the notebook holds (a path, a URL)")


def unready_message(name: str, missing: list[tuple[str, str | None]]) -> str:
    """One line: which variables step ``name`` reads that are not defined yet, and which
    cells to run first."""
    variables = ", ".join(f"`{variable}`" for variable, _ in missing)
    places = [place for _, place in missing]
    if None not in places:
        fix = ", ".join(dict.fromkeys(places))  # type: ignore[arg-type]  # (in order, once)
    else:
        fix = "the cells that define them" if len(missing) > 1 else "the cell that defines it"
    plural = "s" if len(missing) > 1 else ""
    return (f"step {name!r} reads notebook variable{plural} {variables}, not defined in "
            f"this kernel yet; run {fix} first")
