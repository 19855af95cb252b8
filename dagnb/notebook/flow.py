"""Which steps ``dagnb run NOTEBOOK --target`` runs: the targets, their upstream, and the
steps whose ``--outputs`` replace a notebook variable a needed cell reads.

A ``%%dagger --python`` cell's outputs come back into the notebook, so a later cell that
reads that variable gets the step's value in a full run, though it names no ``--needs``.
Only defined, the step would leave the variable's earlier value: another answer (under
another cache key). So the cells are walked backwards from the last one that runs, a
variable being live while a needed cell after it reads it: the latest ``%%dagger`` cell
whose outputs include a live variable is needed too (and what it reads is live in turn).
A plain cell up to the last one runs anyway, so what it reads is live too: a cell that
writes ``report.txt`` from ``total`` before the target reads the file needs the step that
outputs ``total``, as in a full run. A cell's reads are the globals its code loads, as its
cache key sees them, with those of the notebook functions it calls (``fmt()`` reading
``total``), as a kernel's session orders its steps by (:mod:`dagnb.workflows.published`),
and the names its line expands (``--param n=$rows``); a read through ``globals()`` or
``eval`` is not seen, as the key does not see it.
"""

from __future__ import annotations

import ast
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from dagnb.fingerprint import loaded_globals
from dagnb.model.step import Step
from dagnb.notebook.document import bound_names, dagger_cells, read_names
from dagnb.notebook.magics import cell_definitions, graph_of, line_fields

__all__ = ["Feed", "needed_steps", "outputs_read"]


class Feed(NamedTuple):
    """A step run because ``reader`` reads its output ``variable`` (with no ``--needs``):
    a step, or the plain cell numbered ``cell`` (``reader`` is then ``cell N``)."""

    step: str
    variable: str
    reader: str
    cell: int | None = None

    def note(self) -> str:
        if self.cell is not None:  # (a plain cell takes no --needs)
            return (f"--target runs {self.step!r} too: {self.reader}, which runs before the "
                    f"target, reads its output {self.variable!r}, as in a full run")
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
    helpers = _helpers_by_cell(cells, by_index)
    last = max(cell.index for cell in found if cell.name in selected)
    live: dict[str, Feed] = {}  # variable -> the needed step or cell that reads it
    feeds = []
    for index in range(last, -1, -1):
        kind, source = cells[index]
        cell = by_index.get(index)
        if cell is not None:
            step, outputs = definitions[index]
            fed = next((v for v in outputs if v in live), None)
            if cell.name not in selected and fed is not None:
                feeds.append(live[fed]._replace(step=cell.name, variable=fed))
                selected |= set(graph.select([cell.name]))
            if cell.name in selected:
                for variable in outputs:
                    live.pop(variable, None)
                for variable in _reads(step, cell.line, helpers[index]):
                    live.setdefault(variable, Feed("", variable, cell.name))
        elif kind == "code":
            reader = _plain_reader(source, index, live)
            for variable in _with_helpers(_plain_reads(source), helpers[index]):
                live.setdefault(variable, reader)
    return graph.select(sorted(selected)), feeds[::-1]


def _plain_reader(source: str, index: int, live: Mapping[str, Feed]) -> Feed:
    """Who a plain cell's reads are for: the needed step reading a live variable the cell
    binds (``valid = list(rows)``, its value from ``rows``), else the cell itself."""
    rebound = bound_names(source) & live.keys()
    if rebound:
        return live[min(rebound)]
    return Feed("", "", f"cell {index + 1}", index + 1)


def outputs_read(cells: Sequence[tuple[str, str]]) -> dict[str, dict[str, str]]:
    """Step -> {variable: the step whose ``--outputs`` gave it}, for each variable a
    step's cell reads that an earlier ``%%dagger`` cell's outputs hold (unless a plain
    cell between them binds it again): a full run has it after that step, though no
    ``--needs`` says so (``dagnb graph`` shows it)."""
    found = dagger_cells(cells)
    definitions = cell_definitions(found, _EveryName())
    by_index = {cell.index: cell for cell in found}
    helpers = _helpers_by_cell(cells, by_index)
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
        read = {v: latest[v] for v in sorted(_reads(step, cell.line, helpers[index]))
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


def _reads(step: Step, line: str, helpers: Mapping[str, frozenset[str]]) -> set[str]:
    """The notebook variables the step's code (with the notebook functions it calls) and
    its ``%%dagger`` line read."""
    reads: set[str] = set()
    if step.func is not None:
        reads |= loaded_globals(step.func.__code__)
    for field in line_fields(line) or ():
        reads |= read_names(field)
    return _with_helpers(reads, helpers)


def _with_helpers(names: set[str], helpers: Mapping[str, frozenset[str]]) -> set[str]:
    """``names`` and the globals the notebook functions among them read, transitively
    (``fmt()`` reading ``total``): a kernel's session counts them (``globals_read``)."""
    found = set(names)
    waiting = [name for name in names if name in helpers]
    while waiting:
        for name in helpers[waiting.pop()] - found:
            found.add(name)
            if name in helpers:
                waiting.append(name)
    return found


_Helpers = dict[str, frozenset[str]]
_FUNCTIONS = (ast.FunctionDef, ast.AsyncFunctionDef)


def _helpers_by_cell(cells: Sequence[tuple[str, str]], dagger: Mapping[int, object]
                     ) -> list[_Helpers]:
    """For each cell, the notebook functions (and classes) defined once it ran, each with
    the globals its code reads: a name's latest definition, none for a name a later
    plain cell binds otherwise."""
    helpers: _Helpers = {}
    by_cell = []
    for index, (kind, source) in enumerate(cells):
        if kind == "code" and index not in dagger:
            bound = bound_names(source)
            helpers = {name: reads for name, reads in helpers.items()
                       if name not in bound} | _defined_helpers(_python(source))
        by_cell.append(helpers)
    return by_cell


def _defined_helpers(tree: ast.Module) -> _Helpers:
    """The functions and classes a cell defines at its top level, each with the globals
    its code loads (compiled, not run)."""
    found = {}
    for node in tree.body:
        if isinstance(node, (*_FUNCTIONS, ast.ClassDef)):
            try:
                module = compile(ast.Module(body=[node], type_ignores=[]), "<cell>", "exec")
            except SyntaxError:  # (a nonlocal with no binding: the kernel says so)
                continue
            code = next(c for c in module.co_consts
                        if isinstance(c, type(module)) and c.co_name == node.name)
            found[node.name] = frozenset(loaded_globals(code))
    return found


def _plain_reads(source: str) -> set[str]:
    """The names a plain cell reads as it runs: all it reads but in the bodies of the
    functions it defines, which count where they are called (:func:`_with_helpers`)."""
    tree = _python(source)
    for node in tree.body:
        if isinstance(node, _FUNCTIONS):
            node.body = [ast.Pass()]  # (its decorators and defaults are read now)
    return {node.id for node in ast.walk(tree)
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def _python(source: str) -> ast.Module:
    """The cell's Python, less its IPython lines, as :func:`read_names` reads it."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])
