"""Which steps ``dagnb run NOTEBOOK --target`` runs: the targets, their upstream, and the
steps whose ``--outputs`` replace a notebook variable a needed cell reads.

A ``%%dagger --python`` cell's outputs come back into the notebook, so a later cell that
reads that variable gets the step's value in a full run, though it names no ``--needs``.
Only defined, the step would leave the variable's earlier value: another answer (under
another cache key). So the cells are walked backwards from the last one that runs, a
variable being live while a needed cell after it reads it: the latest ``%%dagger`` cell
whose outputs include a live variable is needed too (and what it reads is live in turn).
A plain cell runs anyway: when it binds a live variable, what it reads is live too
(``valid = rows``). A step's reads are the globals its code loads, as its cache key sees
them, and the names its line expands (``--param n=$rows``); a read through ``globals()``
or ``eval`` is not seen, as the key does not see it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

from dagnb.fingerprint import loaded_globals
from dagnb.model.step import Step
from dagnb.notebook.document import bound_names, dagger_cells, read_names
from dagnb.notebook.magics import cell_definitions, graph_of, line_fields

__all__ = ["Feed", "needed_steps", "outputs_read"]


class Feed(NamedTuple):
    """A step run because ``reader`` reads its output ``variable`` (with no ``--needs``)."""

    step: str
    variable: str
    reader: str

    def note(self) -> str:
        return (f"--target runs {self.step!r} too: {self.reader!r} reads its output "
                f"{self.variable!r}; add --needs {self.step} to {self.reader} to say so")


def needed_steps(cells: Sequence[tuple[str, str]], targets: Sequence[str],
                 tags: Sequence[str]) -> tuple[list[str], list[Feed]]:
    """The steps to run for ``targets`` (and ``tags``), in graph order, and the steps
    among them that a needed cell reads an output of (see the module docstring)."""
    found = dagger_cells(cells)
    definitions = cell_definitions(found, _EveryName())  # (each cell compiled once)
    graph = graph_of(definitions)
    selected = set(graph.select(list(targets), tags=list(tags)))
    by_index = {cell.index: cell for cell in found}
    last = max(cell.index for cell in found if cell.name in selected)
    live: dict[str, str] = {}  # variable -> the needed step that reads it
    feeds = []
    for index in range(last, -1, -1):
        kind, source = cells[index]
        cell = by_index.get(index)
        if cell is not None:
            step, outputs = definitions[index]
            fed = next((v for v in outputs if v in live), None)
            if cell.name not in selected and fed is not None:
                feeds.append(Feed(cell.name, fed, live[fed]))
                selected |= set(graph.select([cell.name]))
            if cell.name in selected:
                for variable in outputs:
                    live.pop(variable, None)
                for variable in _reads(step, cell.line):
                    live.setdefault(variable, cell.name)
        elif kind == "code" and (rebound := bound_names(source) & set(live)):
            reader = live[min(rebound)]
            for variable in read_names(source):
                live.setdefault(variable, reader)
    return graph.select(sorted(selected)), feeds[::-1]


def outputs_read(cells: Sequence[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """Step -> {variable: the step whose ``--outputs`` gave it}, for each variable a
    step's cell reads that an earlier ``%%dagger`` cell's outputs hold (unless a plain
    cell between them binds it again): a full run has it after that step, though no
    ``--needs`` says so (``dagnb graph`` shows it)."""
    found = dagger_cells(cells)
    definitions = cell_definitions(found, _EveryName())
    by_index = {cell.index: cell for cell in found}
    latest: dict[str, str] = {}  # variable -> the step whose outputs hold it now
    reads: dict[str, dict[str, str]] = {}
    for index, (kind, source) in enumerate(cells):
        cell = by_index.get(index)
        if cell is None:
            if kind == "code":
                for variable in bound_names(source):
                    latest.pop(variable, None)
            continue
        step, outputs = definitions[index]
        read = {v: latest[v] for v in sorted(_reads(step, cell.line))
                if latest.get(v, cell.name) != cell.name}
        if read:
            reads[cell.name] = read
        latest.update(dict.fromkeys(outputs, cell.name))
    return reads


class _EveryName(dict):  # type: ignore[type-arg]
    """A namespace that holds every name: the cell's code is compiled as in a kernel where
    a name it reads before assigning it (``rows = clean(rows)``) is a notebook variable."""

    def __contains__(self, name: object) -> bool:
        return True


def _reads(step: Step, line: str) -> set[str]:
    """The notebook variables the step's code and its ``%%dagger`` line read."""
    reads: set[str] = set()
    if step.func is not None:
        reads |= loaded_globals(step.func.__code__)
    for field in line_fields(line) or ():
        reads |= read_names(field)
    return reads
