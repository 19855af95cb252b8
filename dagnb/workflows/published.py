"""Notebook variables that are upstream results: in a saved workflow, in a notebook run.

A ``%%dagger --python`` cell's ``--outputs`` are published into the notebook as
variables, so a later cell that reads ``rows`` reads the result of the step that outputs
it (with or without ``--needs``), and a changed param of that step changes what it reads.
A saved workflow has no notebook: written by value, ``rows`` would be the result at save
time, whatever params the workflow runs with. So the saved step takes that step as an
upstream (its ``needs``, a parameter of its function) and binds ``rows`` to its result
first thing, as the notebook's variable was bound when the step ran.

What cannot be given so is refused, naming the variable: a helper reading it (only the
step's own function receives upstream results), a variable two steps output with
nothing saying which, one a step downstream outputs (fed back, not passed on).

A notebook run orders its steps by the same reads (:func:`notebook_reads`): the reader
starts after the step whose result it reads, which publishes it as it ends, so the
reader sees the value of this run, under the key it always had (``var:rows``; the link
is not a need). Where a saved workflow is refused the notebook reads the variable as
it is, as it did before, and says so for what a user would not guess: a variable two
steps publish, and steps reading each other's variables (a loop: none of them ordered).
"""

from __future__ import annotations

import ast
import copy
import dataclasses
import functools
import keyword
import weakref
from collections import deque
from collections.abc import Callable, Collection, Iterable, Mapping
from typing import Any, NamedTuple

from dagnb.errors import FingerprintError, WorkflowError
from dagnb.fingerprint import globals_read, loaded_globals
from dagnb.model.graph import Graph
from dagnb.model.results import PUBLISHED_AS
from dagnb.model.step import Step

__all__ = ["PUBLISHED_AS", "NotebookReads", "Published", "Read", "SeveralPublishers",
           "notebook_reads", "published_reads", "taking_upstreams"]

class SeveralPublishers(WorkflowError):
    """A step reads a variable several steps publish, none telling which: a saved
    workflow cannot choose. ``publishers`` names them (a notebook adds how to remove a
    step whose cell was renamed, which still publishes it)."""

    def __init__(self, message: str, publishers: Iterable[str]) -> None:
        super().__init__(message)
        self.publishers = tuple(publishers)


class Read(NamedTuple):
    """Step ``step``'s result, as the notebook variable ``variable`` a step reads."""

    variable: str
    step: str
    key: str | None  # its key in the result (a dict, for several --outputs), or None

    def binding(self) -> str:
        return f"{self.variable} = {self.step}" + (f"[{self.key!r}]" if self.key else "")


class Published(NamedTuple):
    """What a graph's Python steps read of the results published as notebook variables."""

    reads: dict[str, list[Read]]  # step -> the variables it reads that another step outputs
    makers: dict[str, list[Step]]  # variable -> the steps whose result is published under it
    graph: Graph  # the graph, each step needing the steps whose results it reads

    def maker(self, variable: str, namespace: Mapping[str, Any], step: str) -> str | None:
        """A step other than ``step`` that publishes ``variable`` into ``namespace``."""
        return next((m.name for m in self.makers.get(variable, ())
                     if m.name != step and _globals(m) is namespace), None)


def published_reads(graph: Graph) -> Published:
    """What each Python step's function reads of the variables another step's result is
    published under, and ``graph`` with the needs that adds; refused (a WorkflowError
    naming the step and the variable) where no upstream can give it."""
    made = _made(graph)
    chosen = _chosen(graph, _readers(graph, made), _saved_maker)
    linked = copy.copy(graph)
    for name, picked in chosen.items():
        step = linked[name]
        linked.replace(dataclasses.replace(step, needs=_with(step.needs, picked.values())))
    found = {name: [_read(graph, variable, maker) for variable, maker in chosen[name].items()]
             for name in graph.names if name in chosen}
    return Published(found, made, linked)


class NotebookReads(NamedTuple):
    """How a notebook run orders its steps by the variables others publish."""

    ordered: dict[str, dict[str, str]]  # step -> {variable: the step it starts after}
    # step -> why a variable it reads is read as the notebook holds it, a line each, where
    # a user would expect an order (several steps publish it; steps reading each other's)
    unordered: dict[str, tuple[str, ...]]
    publishers: dict[str, tuple[str, ...]]  # a line of unordered -> the steps it says
    #                                         publish one variable (several publish it)


class _Left(NamedTuple):
    """A read no order is given for: the variable is read as the notebook holds it."""

    reader: str
    variable: str
    makers: list[str]  # the steps publishing it (that could start before the reader)
    several: bool  # True: several could, none telling which; False: all start after it


def notebook_reads(graph: Graph, published: Callable[[str], bool],
                   publishing: Collection[str] = ()) -> NotebookReads:
    """Step -> {variable: the step it starts after for it} in a notebook run: each
    variable its function reads that a step's result is published under (one
    ``published`` says the notebook holds as a step left it, or one a step among
    ``publishing``, those the run has anyway, publishes over a cell's value as it ends),
    that step chosen as a saved workflow chooses it. Ordering only, and only where a
    saved workflow has one: a variable two steps output with nothing to tell which, or
    one a step after the reader outputs, is left to the notebook, as before; so is a loop
    of reads (a reads y from b, b reads x from a), none of its steps ordered after
    another (whichever came first would be arbitrary). The first two and a loop are
    said in ``unordered``, one line each."""
    made = {v: makers for v, makers in _made(graph).items()
            if published(v) or any(m.name in publishing for m in makers)}
    readers = _readers(graph, made, _read_by_helpers_too)
    chosen, left, loops = _chosen_without_loops(graph, readers)
    kept = {name: {v: maker for v, maker in read.items() if maker in publishing or published(v)}
            for name, read in chosen.items()}  # (fewer links than an acyclic set: no cycle)
    unordered: dict[str, tuple[str, ...]] = {}
    several = _several_said(left)
    for readers_said, line in [*several, *map(_loop_said, loops)]:
        for reader in readers_said:
            unordered[reader] = (*unordered.get(reader, ()), line)
    publishers = {line: tuple(read.makers)
                  for (_, line), read in zip(several, [r for r in left if r.several],
                                             strict=True)}
    return NotebookReads({name: read for name, read in kept.items() if read}, unordered,
                         publishers)


# a loop of reads: (reader, variable, the step publishing it), each publisher the next
# read's reader, the last's the first's reader
_Loop = list[tuple[str, str, str]]


def _chosen_without_loops(graph: Graph, readers: dict[str, dict[str, list[str]]]
                          ) -> tuple[dict[str, dict[str, str]], list[_Left], list[_Loop]]:
    """:func:`_chosen` for a notebook run, with the reads left unordered, and the loops
    of reads found: taken out of ``readers`` and chosen again, so none is ordered."""
    loops: list[_Loop] = []
    while True:
        left: list[_Left] = []
        chosen = _chosen(graph, readers, functools.partial(_maker_or_none, left=left))
        found = _loops(graph, chosen, left) if left else []  # (rare: no code walked)
        if not found:
            return chosen, left, loops
        loops += found
        readers = _without(readers, {(reader, variable) for loop in found
                                     for reader, variable, _ in loop})


def _loops(graph: Graph, chosen: Mapping[str, Mapping[str, str]],
           left: list[_Left]) -> list[_Loop]:
    """The loops of reads closed by a read ``left`` unordered: its publisher starts after
    its reader through reads alone (a declared need would order them: then it is a step
    after the reader that publishes the variable, read as the notebook holds it)."""
    loops = []
    for read in left:
        for maker in read.makers if not read.several else ():
            path = _reads_from(graph, chosen, maker, read.reader)
            if path is not None:
                loops.append([(read.reader, read.variable, maker), *path])
    return loops


def _reads_from(graph: Graph, chosen: Mapping[str, Mapping[str, str]], start: str,
                end: str) -> _Loop | None:
    """The reads leading from ``start`` to ``end`` (``start`` reads a variable of a step
    that reads one of ... ``end``'s), fewest first, none of a step it needs; None if
    there are none."""
    came: dict[str, tuple[str, str, str]] = {}
    queue = deque([start])
    while queue:
        name = queue.popleft()
        if name == end:
            path = []
            while name != start:
                path.append(came[name])
                name = came[name][0]
            return path[::-1]
        for variable, maker in chosen.get(name, {}).items():
            if maker not in came and maker != start and maker not in graph[name].needs:
                came[maker] = (name, variable, maker)
                queue.append(maker)
    return None


def _without(readers: Mapping[str, Mapping[str, list[str]]], reads: set[tuple[str, str]]
             ) -> dict[str, dict[str, list[str]]]:
    found = {name: {v: makers for v, makers in read.items() if (name, v) not in reads}
             for name, read in readers.items()}
    return {name: read for name, read in found.items() if read}


def _several_said(left: list[_Left]) -> list[tuple[tuple[str], str]]:
    """((reader,), the line saying it reads a variable several steps publish, unordered)."""
    return [((read.reader,),
             f"step {read.reader!r} reads notebook variable {read.variable!r}, which steps "
             f"{_listed(read.makers)} {'both' if len(read.makers) == 2 else 'all'} publish: "
             "it starts after none of them and reads the value the notebook holds; give it "
             "--needs the one it means")
            for read in left if read.several]


def _loop_said(loop: _Loop) -> tuple[tuple[str, ...], str]:
    """(its readers, ``step 'a' reads y from 'b', 'b' reads x from 'a': neither is ...``)."""
    first = min(range(len(loop)), key=lambda i: loop[i][0])  # (the same line each time)
    turned = loop[first:] + loop[:first]
    reads = ", ".join(f"{reader!r} reads {variable} from {maker!r}"
                      for reader, variable, maker in turned)
    fix = ("neither is ordered after the other, each reads the value the notebook holds; "
           "give one --needs the other" if len(loop) == 2 else
           "none is ordered after another, each reads the value the notebook holds; give "
           "one --needs the step it reads from")
    return tuple(reader for reader, _, _ in turned), f"step {reads}: {fix}"


def _listed(names: list[str]) -> str:
    quoted = [repr(name) for name in names]
    return f"{', '.join(quoted[:-1])} and {quoted[-1]}"


def _made(graph: Graph) -> dict[str, list[Step]]:
    """Variable -> the steps whose result is published under it (their --outputs)."""
    made: dict[str, list[Step]] = {}
    for step in graph:
        for variable in getattr(step.func, PUBLISHED_AS, ()):
            made.setdefault(variable, []).append(step)
    return made


def _readers(graph: Graph, made: Mapping[str, list[Step]],
             reads: Callable[[Any], frozenset[str]] | None = None
             ) -> dict[str, dict[str, list[str]]]:
    """Step -> the variables its function reads (``reads`` says which; by default its
    own code's) that other steps publish, and those steps."""
    if not made:  # (no --python cell's outputs: no step's code to read)
        return {}
    readers = {step.name: _makers_read(step, made, reads or _globals_read) for step in graph}
    return {name: read for name, read in readers.items() if read}


# needs (those added so far too), the reader, the variable, the steps publishing it
_Chooser = Callable[[Mapping[str, tuple[str, ...]], str, str, list[str]], "str | None"]


def _chosen(graph: Graph, readers: dict[str, dict[str, list[str]]],
            choose: _Chooser) -> dict[str, dict[str, str]]:
    """Reader -> {variable: the step ``choose`` picks as giving it} (None: none), each
    pick needed by its reader when the next ones are chosen."""
    needs = {step.name: step.needs for step in graph}  # with the picks so far
    chosen: dict[str, dict[str, str]] = {}
    # (those with one maker a variable first: the needs they add tell which of several
    # makers publishes last, as ``clean`` reading ``load``'s rows and outputting rows)
    for name in sorted(readers, key=lambda n: any(len(m) > 1 for m in readers[n].values())):
        picked = {variable: maker for variable, makers in readers[name].items()
                  if (maker := choose(needs, name, variable, makers)) is not None}
        if picked:
            chosen[name] = picked
            needs[name] = _with(needs[name], picked.values())
    return chosen


def _with(names: tuple[str, ...], more: Iterable[str]) -> tuple[str, ...]:
    return (*names, *dict.fromkeys(m for m in more if m not in names))


def _upstream(needs: Mapping[str, tuple[str, ...]], name: str) -> set[str]:
    """Every step ``name`` needs, directly or not."""
    seen: set[str] = set()
    stack = list(needs[name])
    while stack:
        need = stack.pop()
        if need not in seen:
            seen.add(need)
            stack.extend(needs.get(need, ()))  # (an unknown need: the graph refuses it)
    return seen


def _makers_read(step: Step, made: Mapping[str, list[Step]],
                 reads: Callable[[Any], frozenset[str]]) -> dict[str, list[str]]:
    """Variable -> the other steps publishing it, of those ``step``'s function reads."""
    if step.func is None or not hasattr(step.func, "__code__"):
        return {}
    found = {}
    for variable in sorted(reads(step.func) & made.keys()):
        makers = [m.name for m in made[variable]
                  if m.name != step.name and _globals(m) is _globals(step)]
        if makers:
            found[variable] = makers
    return found


# function -> its code and the globals that loads: a notebook asks at each run, of every
# cell's function (a cell run again makes a new one)
_READS: weakref.WeakKeyDictionary[Any, tuple[Any, frozenset[str]]] = (
    weakref.WeakKeyDictionary())


def _globals_read(func: Any) -> frozenset[str]:
    code = func.__code__
    try:
        known = _READS.get(func)
    except TypeError:  # (not weakly referable: read each time)
        return frozenset(loaded_globals(code))
    if known is None or known[0] is not code:
        known = _READS[func] = (code, frozenset(loaded_globals(code)))
    return known[1]


def _read_by_helpers_too(func: Any) -> frozenset[str]:
    """The globals ``func``'s code reads, and those of its module the helpers it calls
    read (``summarize()`` summing ``rows``): a notebook run orders a cell by both, as
    its key counts both (a saved workflow refuses a helper's, see pyfunctions)."""
    own = _globals_read(func)
    try:
        return own | globals_read(func)
    except FingerprintError:  # (its key says why; ordered by its own code's reads)
        return own


def _globals(step: Step) -> Any:
    """The namespace the step's function reads its globals from (a cell's: the notebook's)."""
    return getattr(step.func, "__globals__", None)


def _saved_maker(needs: Mapping[str, tuple[str, ...]], name: str, variable: str,
                 makers: list[str]) -> str:
    """The step whose result ``name`` reads as ``variable`` in a saved workflow; refused
    where none can give it there."""
    before = [m for m in makers if name not in _upstream(needs, m)]
    maker = _maker(needs, name, variable, before) if before else makers[0]
    where = f"step {name!r} reads notebook variable {variable!r}, the output of step {maker!r}"
    if not before:
        raise WorkflowError(f"{where}, which runs after it: a saved workflow cannot feed it "
                            f"back; make {variable} a --param of {name!r}, or build it in "
                            "the cell")
    if not maker.isidentifier() or keyword.iskeyword(maker):
        raise WorkflowError(f"{where}, which a Python step can receive only under a Python "
                            f"name; rename step {maker!r} (as {_python_spelling(maker)!r})")
    return maker


def _maker_or_none(needs: Mapping[str, tuple[str, ...]], name: str, variable: str,
                   makers: list[str], *, left: list[_Left]) -> str | None:
    """As :func:`_saved_maker`, but None where a saved workflow is refused, that read
    added to ``left``."""
    before = [m for m in makers if name not in _upstream(needs, m)]
    try:
        if before:
            return _maker(needs, name, variable, before)
    except WorkflowError:
        left.append(_Left(name, variable, before, several=True))
        return None
    left.append(_Left(name, variable, makers, several=False))
    return None


def _read(graph: Graph, variable: str, maker: str) -> Read:
    outputs = getattr(graph[maker].func, PUBLISHED_AS, ())
    return Read(variable, maker, None if len(outputs) == 1 else variable)


def _maker(needs: Mapping[str, tuple[str, ...]], name: str, variable: str,
           makers: list[str]) -> str:
    """The step whose result ``variable`` is, of several that can run before ``name``:
    the one the others all run before (it publishes last), else the one ``name`` needs."""
    if len(makers) == 1:
        return makers[0]
    last = [m for m in makers if set(makers) - {m} <= _upstream(needs, m)]
    needed = [m for m in makers if m in needs[name]]
    for chosen in (last, needed):
        if len(chosen) == 1:
            return chosen[0]
    listed = ", ".join(map(repr, makers))
    raise SeveralPublishers(f"step {name!r} reads notebook variable {variable!r}, which "
                            f"steps {listed} all output; --needs just the one it reads, or "
                            "give them different --outputs", makers)


def _python_spelling(name: str) -> str:
    spelt = "".join(c if c.isalnum() or c == "_" else "_" for c in name)
    spelt = f"_{spelt}" if spelt[:1].isdigit() else spelt
    return f"{spelt}_" if keyword.iskeyword(spelt) else spelt


def taking_upstreams(source: str, reads: list[Read]) -> str:
    """``source`` (a function's) taking each read's step as a parameter (unless it does
    already) and binding the variable to its result before its body runs."""
    tree = ast.parse(source)
    node = next(n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)))
    taken = [a.arg for a in (*node.args.posonlyargs, *node.args.args, *node.args.kwonlyargs)]
    added = list(dict.fromkeys(r.step for r in reads if r.step not in taken))
    _refuse_taken_names(node, added, reads)
    reads = [r for r in reads if (r.variable, r.key) != (r.step, None)]  # (not rows = rows)
    binds = [ast.parse(r.binding()).body[0] for r in reads]
    first = node.body[0]
    if first.lineno == node.lineno:  # (a one-line def: written again, comments aside)
        whole = _with_parameters(node, added)
        whole.body = [*binds, *node.body]
        return _compiles(ast.unparse(whole) + "\n", reads)
    lines = source.splitlines(keepends=True)
    header = "".join(lines[node.lineno - 1:first.lineno - 1])
    if added:
        head = _with_parameters(node, added)
        head.body, head.decorator_list = [ast.Pass()], []
        header = " " * node.col_offset + ast.unparse(head).splitlines()[0] + "\n"
    indent = " " * first.col_offset
    bound = [f"{indent}{ast.unparse(b)}  # step {r.step}'s result, as in the notebook\n"
             for b, r in zip(binds, reads, strict=True)]
    return _compiles("".join([*lines[:node.lineno - 1], header, *bound,
                              *lines[first.lineno - 1:]]), reads)


def _compiles(source: str, reads: list[Read]) -> str:
    """``source``, refused when binding the variables made it invalid (``global rows``)."""
    try:
        compile(source, "<saved step>", "exec")
    except SyntaxError as exc:
        names = ", ".join(repr(r.variable) for r in reads)
        raise WorkflowError(f"notebook variable {names}, an upstream step's result, cannot be "
                            f"bound in the step's code ({exc.msg}); leave it out of a "
                            "global statement in the cell") from None
    return source


def _with_parameters(node: ast.FunctionDef | ast.AsyncFunctionDef,
                     added: list[str]) -> ast.FunctionDef | ast.AsyncFunctionDef:
    """A copy of ``node`` taking the parameters ``added`` too: after the others, or
    keyword-only where a default or ``*`` comes before (the run passes them by name)."""
    node = copy.copy(node)  # (its fields shared: the caller sets body and decorators anew)
    node.args = arguments = copy.deepcopy(node.args)
    new = [ast.arg(arg=name) for name in added]
    if arguments.defaults or arguments.vararg or arguments.kwonlyargs or arguments.kwarg:
        arguments.kwonlyargs += new
        arguments.kw_defaults += [None] * len(new)
    else:
        arguments.args += new
    return node


def _refuse_taken_names(node: ast.AST, added: list[str], reads: list[Read]) -> None:
    """Refuse a step name the code uses for something else (a variable, a helper): as a
    parameter, the upstream result would take its place."""
    if not added:
        return
    used = _names_in(node) - {r.variable for r in reads if r.variable == r.step}  # (rows
    clash = next((name for name in added if name in used), None)  # of step rows: itself)
    if clash is not None:
        variable = next(r.variable for r in reads if r.step == clash)
        raise WorkflowError(f"the result of step {clash!r}, read as notebook variable "
                            f"{variable!r}, would reach the step as parameter {clash!r}, a name "
                            f"its code uses for something else; rename {clash} in the cell")


def _names_in(node: ast.AST) -> set[str]:
    """Every name the code binds or reads (not attribute names: ``df.load`` is no clash)."""
    names: set[str] = set()
    for child in ast.walk(node):
        if isinstance(child, ast.Name):
            names.add(child.id)
        elif isinstance(child, ast.arg):
            names.add(child.arg)
        elif isinstance(child, ast.alias):
            names.add((child.asname or child.name).partition(".")[0])
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef,
                                ast.ExceptHandler)) and child.name:
            names.add(child.name)
        elif isinstance(child, (ast.Global, ast.Nonlocal)):
            names.update(child.names)
    return names
