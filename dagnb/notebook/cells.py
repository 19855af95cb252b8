"""From ``%%dagger`` options and cell text to a Step, and from a Step back to cell text.

The magics and the graph builder share this module, so a step built in the builder and
exported as a ``%%dagger`` cell comes back as an equal Step.

A ``--python`` cell becomes a real function whose body is the cell, compiled from
source registered with :mod:`linecache` (as IPython does for cells). So
:func:`dagnb.fingerprint.code_digest` sees its source: a comment-only edit keeps the
cache key, a code edit changes it, and the notebook helpers and values the cell reads
count too. Its parameters are the upstream steps and the ``--param`` names (upstream
results and param values arrive as variables of those names) and its globals are the
user namespace; it returns the ``--outputs``. A notebook variable the cell reads before
it assigns it (``data = data + [a]``) starts with the notebook's value, as in a plain
cell: the cell's function is then nested in one that reads those globals (so the key
sees them as any global) and passes them in; those the cell changes in place and reads
(``cfg.setdefault('lr', 0.1)`` then ``cfg['lr']``) are passed on, as the cell left them,
to :func:`keep`, which keeps them with the step's outputs, so that a run served from the
cache can put them back (:mod:`dagnb.notebook.session`). IPython syntax in the cell (``!ls``,
``files = !ls``, ``%time``) is turned into Python first, as IPython does for a cell, with
the names such a line expands (``!ls $folder``) read as Python too
(:mod:`dagnb.notebook.ipython_lines`). A last statement that is an expression is
displayed, as a plain cell displays it (:mod:`dagnb.notebook.last_expression`).
"""

from __future__ import annotations

import argparse
import ast
import dataclasses
import difflib
import inspect
import io
import itertools
import json
import keyword
import linecache
import os
import pickle
import re
import shlex
import textwrap
import tokenize
import types
from collections.abc import Collection, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from dagnb.checks import NEVER_EXPIRES
from dagnb.errors import InvalidStepError
from dagnb.executors.dagger.shim import TRAVELS_AS_SOURCE
from dagnb.fingerprint import changed_inputs
from dagnb.model.masking import SecretFinder, named_as_secret
from dagnb.model.step import Step, check_name
from dagnb.notebook.ipython_lines import TIMER, ipython_to_python, needs_kernel, timed
from dagnb.notebook.last_expression import DISPLAYED, TIMED_VALUE, displayed, with_last_displayed
from dagnb.notebook.warning_lines import note_lines_as_written
from dagnb.workflows.loader import secret_option
from dagnb.workflows.published import PUBLISHED_AS
from dagnb.workflows.pyfunctions import IMPORT_NOTE

__all__ = [
    "RESULTS_NAME",
    "cell_function",
    "cell_options",
    "cell_text",
    "duration_text",
    "kept_names",
    "kept_values",
    "parse_assignments",
    "parse_names",
    "parse_value",
    "setting_text",
    "shell_text",
    "step_from_options",
    "unkept",
    "unset_options",
]

RESULTS_NAME = "_dagger"  # the notebook variable of the steps' results: dagnb's
KEEP = "_dagnb_keep"  # what a cell's function passes the variables it changes in place to
KEPT_AS = "_dagnb_kept"  # its attribute naming them (``_dagnb_``: not part of its key)
KEPT_FILE = ".dagnb-kept.pkl"  # where its outputs keep them (see _dagnb_keep)
UNKEPT_FILE = ".dagnb-unkept.txt"  # or which one does not pickle, and why
_counter = itertools.count(1)
_IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


_MAX_DEPTH = 64  # as a workflow's YAML (Python 3.13's json parses far deeper)
_TOO_DEEP = object()


def parse_value(text: str, *, python: bool = False) -> Any:
    """JSON when the text parses as JSON (``3``, ``true``, ``[1, 2]``), else the string;
    with ``python`` (a ``--python`` cell's param), else a Python literal of a JSON value
    (:func:`_python_literal`)."""
    try:
        value = json.loads(text)
    except ValueError:
        if not python:
            return text
        value = _python_literal(text)
    except RecursionError:
        value = _TOO_DEEP
    if value is _TOO_DEEP or _nests_deeper(value, _MAX_DEPTH):
        raise InvalidStepError(f"value {text[:20]!r}... nests too deeply (more than "
                               f"{_MAX_DEPTH} levels); pass it as a file instead")
    return value


def _python_literal(text: str) -> Any:
    """``False``, ``None``, ``['a', 'b']``, ``{'k': 1}`` as those values: what IPython
    expands ``$flag`` or ``$cities`` to, for a cell that reads the param as a Python
    variable (as text, ``'False'`` is true). Other text (a string's literal too) stays
    text, as does a value JSON cannot carry (a tuple, a set)."""
    try:
        value = ast.literal_eval(text)
    except (ValueError, TypeError, SyntaxError, MemoryError):
        return text
    except RecursionError:
        return _TOO_DEEP
    if isinstance(value, str):
        return text
    try:
        carried = json.loads(json.dumps(value)) == value  # (a tuple comes back a list)
    except (TypeError, ValueError, RecursionError):
        carried = False
    return value if carried else text


def _nests_deeper(value: Any, limit: int) -> bool:
    """Whether the lists and dicts of ``value`` nest more than ``limit`` levels."""
    pending = [(value, 1)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, (list, dict)):
            if depth > limit:
                return True
            pending.extend((v, depth + 1) for v in (
                item.values() if isinstance(item, dict) else item))
    return False


def parse_assignments(items: Iterable[str], what: str, *, as_json: bool = False,
                      python: bool = False) -> dict[str, Any]:
    """``["K=V", ...]`` -> ``{"K": "V"}``; a missing ``=`` is an InvalidStepError.
    ``as_json``, ``python``: values as :func:`parse_value` reads them."""
    parsed: dict[str, Any] = {}
    given: dict[str, str] = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise InvalidStepError(f"{what} {item!r} is not KEY=VALUE; write it like {what} x=1")
        key = key.strip()
        if given.setdefault(key, value) != value:  # (as dagnb run --param refuses it)
            raise InvalidStepError(f"{what} {key!r} is given twice ({_said(key, given[key])}, "
                                   f"then {_said(key, value)}); give it once, with the value "
                                   "meant")
        parsed[key] = parse_value(value, python=python) if as_json else value
    return parsed


def _said(key: str, value: str) -> str:
    """``key=value`` as a refusal shows it: a value of a name like a secret's not shown."""
    return f"{key}=<not shown>" if named_as_secret(key) else f"{key}={value}"


def parse_mounts(items: Iterable[str]) -> dict[str, str]:
    """``["data:/data"]`` -> ``{"data": "/data"}`` (host path, then path in the step)."""
    mounts = {}
    for item in items:
        host, sep, target = item.rpartition(":")
        if not sep or not host or not target:
            raise InvalidStepError(f"--mount {item!r} is not HOST:PATH; write it like "
                                   "--mount data:/data")
        mounts[host] = target
    return mounts


def parse_names(text: str | None) -> tuple[str, ...]:
    """``"a,b c"`` -> ``("a", "b", "c")``."""
    return tuple(n for n in re.split(r"[,\s]+", text or "") if n)


def step_from_options(name: str, body: str, args: argparse.Namespace,
                      namespace: Mapping[str, Any] | None = None,
                      defined: Collection[str] = (), label: str | None = None) -> Step:
    """The Step a ``%%dagger NAME [options]`` cell defines (see ``%%dagger?``);
    ``defined`` and ``label``: as for :func:`cell_function`."""
    check_name(name)  # (before a --python cell's function, which takes its name)
    needs = _listed_once(parse_names(args.needs), "--needs", "upstream step")
    outputs = _listed_once(parse_names(args.outputs), "--outputs", "output")
    if outputs and not args.python:
        raise InvalidStepError("--outputs names Python variables; add --python to the cell")
    fields: dict[str, Any] = {
        "image": args.image, "needs": needs, "env": parse_assignments(args.env, "--env"),
        "secrets": tuple(args.secret), "mounts": parse_mounts(args.mount),
        "params": parse_assignments(args.param, "--param", as_json=True, python=args.python),
        "timeout": args.timeout, "ttl": args.ttl, "tags": parse_names(args.tags),
        "cache": not args.no_cache, "retries": args.retries, "executor": args.executor,
    }
    if args.python:
        for key in fields["params"]:
            _python_name(key, "--param", "a --python cell's param (read as a variable)")
        if args.executor == "dask":
            _refuse_kernel_lines(name, body)
        fields["func"] = cell_function(  # (an empty namespace, too, is the one given)
            name, body, needs, outputs, {} if namespace is None else namespace,
            params=fields["params"], defined=defined, label=label)
    else:
        fields["run"] = _shell_text(name, body)
    return Step(name, **fields)


def _refuse_kernel_lines(name: str, body: str) -> None:
    """A dask step runs in a worker's process, with no kernel for ``!cmd`` or ``%magic``
    (it would fail there, unpicklable: the shell holds a database connection)."""
    if needs_kernel(ipython_to_python(body, _first_code_line(body))):
        raise InvalidStepError(
            f"step {name!r}: its cell uses IPython syntax (!cmd, %magic), which needs this "
            "kernel, and --executor dask runs it in a worker's process; write it as Python "
            "(subprocess.run([...]), os.environ), or drop --executor dask")


def _listed_once(names: tuple[str, ...], option: str, what: str) -> tuple[str, ...]:
    """The names, refused when one is listed twice (it would be one step or variable)."""
    twice = next((n for i, n in enumerate(names) if n in names[:i]), None)
    if twice is not None:
        raise InvalidStepError(f"{option}: {what} {twice!r} is listed twice; list it once")
    return names


def _python_name(name: str, option: str, what: str) -> str:
    """``name``, refused unless a Python variable can be called so."""
    if keyword.iskeyword(name):
        raise InvalidStepError(f"{option} {name!r}: `{name}` is a Python keyword, not a name "
                               f"for {what}; call it {name}_ for instance")
    if not _IDENTIFIER.match(name):
        raise InvalidStepError(f"{option} {name!r} is not a Python name, and {what} needs one; "
                               f"call it {_python_spelling(name)} for instance")
    return name


def _cell_filename(name: str, label: str | None) -> str:
    """The name a cell's code is compiled under, shown in its tracebacks: where it ran
    (``In[3]``) when known and not taken, else a number of its own (the lines kept for
    it in linecache are this definition's, and a form's or a loop's cell can be defined
    again under the same prompt number)."""
    filename = f"<dagger-cell {name} {label}>"
    if label is None or filename in linecache.cache:
        filename = f"<dagger-cell {name} #{next(_counter)}>"
    return filename


def _python_spelling(name: str) -> str:
    """``my-p`` -> ``my_p``, ``1st`` -> ``_1st``: a Python name close to ``name``."""
    return re.sub(r"^(?=[0-9])|[^A-Za-z0-9_]", "_", name)


def _shell_text(name: str, body: str) -> str:
    if not body.strip():
        raise InvalidStepError(f"step {name!r}: the cell is empty; write the shell commands "
                               "to run below the %%dagger line")
    return body.strip("\n") + "\n"


def cell_function(name: str, source: str, needs: Iterable[str], outputs: Iterable[str],
                  namespace: Mapping[str, Any], params: Iterable[str] = (),
                  defined: Collection[str] = (), label: str | None = None
                  ) -> types.FunctionType:
    """A function running ``source`` with upstream results and params as variables.

    Parameters
    ----------
    name
        The step name (the function is called ``<name>_cell``).
    source
        The cell's Python code.
    needs
        Upstream step names, each a parameter: a name that cannot be a variable
        (``load-data``) is refused, never left out.
    outputs
        Variables to return: one name returns its value, several a dict.
    namespace
        The globals the cell reads (the notebook's user namespace).
    params
        Param names; those that are identifiers become parameters too, so the executor
        passes their values (one named as an upstream is refused: one would hide the
        other).
    defined
        Names taken as notebook variables though ``namespace`` lacks them: those the
        cells before this one bind, for a cell read from the notebook's file before they
        ran (a restart), so that it reads them as the cell run in order does.
    label
        Where the cell ran, as IPython names it in tracebacks (``In[3]``): its frames
        then read ``File "<dagger-cell NAME In[3]>"``.
    """
    arguments = [_receivable(n) for n in needs]
    _refuse_params_named_as_upstreams(params, arguments)
    arguments += [p for p in params if _IDENTIFIER.match(p) and not keyword.iskeyword(p)]
    func_name = re.sub(r"\W", "_", name) + "_cell"
    first = _first_code_line(source)
    try:
        python = ipython_to_python(source, first)
    except InvalidStepError as exc:
        raise InvalidStepError(f"step {name!r}: {exc}") from None
    run = with_last_displayed(python)
    text = _function_source(func_name, arguments, run, tuple(outputs))
    filename = _cell_filename(name, label)
    code = _compiled(name, text, filename, 1, first)
    _refuse_top_level_yield(name, code, func_name, python, first)
    local = _local_names(code, func_name) - {TIMED_VALUE}  # (dagnb's, not the user's)
    declared = _globals_set(python)
    _refuse_results_name(tuple(outputs))
    _refuse_unassigned_outputs(name, tuple(outputs), local | set(arguments) | declared)
    # (a name the notebook lacks: a plain cell's NameError, as UnboundLocalError is one)
    changed = _changed_notebook_variables(code, func_name) - declared
    inputs = {*_read_before_assigned(python, local, arguments), *changed}
    prebound = sorted(n for n in inputs if n in namespace or n in defined)
    kept = [n for n in prebound if n in changed]  # (kept with its entry: see _dagnb_keep)
    if prebound:
        text = _prebinding_source(func_name, arguments, prebound, text, kept)
        code = _compiled(name, text, filename, 2, first)
    linecache.cache[filename] = (len(text), None, text.splitlines(True), filename)
    written = {} if run == python else _lines_as_written(
        text, _function_source(func_name, arguments, python, tuple(outputs)), prebound,
        func_name, arguments, kept)
    scope: dict[str, Any] = {}
    globals_ = namespace if isinstance(namespace, dict) else dict(namespace)
    if TIMER in python:
        globals_[TIMER] = timed  # (what a ``%time`` line became calls it)
    if run != python:
        globals_[DISPLAYED] = displayed  # (what the last expression is passed to)
    if kept:
        globals_[KEEP] = keep  # (what the variables it changes in place are passed to)
    exec(code, globals_, scope)
    function = scope[func_name]
    function._dagnb_cell_source = source  # what the user wrote, for cell_text
    setattr(function, PUBLISHED_AS, tuple(outputs))  # (a saved workflow's steps take it)
    if written:  # (what a traceback shows of them: see dagnb.executors.local)
        function._dagnb_lines_as_written = written
        note_lines_as_written(filename, written)  # (and a warning's line)
    if outputs:  # (an UnboundLocalError there is an output the cell did not reach)
        function._dagnb_return_line = _return_line(text)
    if kept:  # (the session puts them back from a cache hit: see kept_names)
        setattr(function, KEPT_AS, tuple(kept))
    return function


def _return_line(text: str) -> int:
    """The number of the line of the cell's function ``text`` that returns its outputs,
    a line dagnb wrote, not the user."""
    return _cell_definition(ast.parse(text).body[0]).body[-1].lineno  # type: ignore[arg-type]


def _lines_as_written(text: str, as_written: str, prebound: list[str], func_name: str,
                      arguments: list[str], kept: list[str]) -> dict[int, str]:
    """The lines of the cell's function ``text`` that its last expression's display call
    changed (by number), as the user wrote them (the same lines, the call aside)."""
    if prebound:
        as_written = _prebinding_source(func_name, arguments, prebound, as_written, kept)
    lines, mine = text.splitlines(), as_written.splitlines()
    if len(lines) != len(mine):  # (the call keeps the lines: should it not, say nothing)
        return {}
    return {number: theirs for number, (ran, theirs) in enumerate(
        zip(lines, mine, strict=True), start=1) if ran != theirs}


def _first_code_line(source: str) -> int:
    """The number in the cell of the first line of ``source`` (the cell's body) that is
    not blank: the line the cell's function starts with, as the blank lines before it
    are dropped. Line 1 is the ``%%dagger`` line, as tracebacks and Jupyter count."""
    lines = source.split("\n")
    return 2 + next((i for i, line in enumerate(lines) if line.strip()), 0)


def _compiled(name: str, text: str, filename: str, lines_before: int,
              first_line: int) -> types.CodeType:
    """The module code of ``text``; a SyntaxError names the cell's line (the def lines
    come first, and the body's first line is the cell's ``first_line``)."""
    try:
        return compile(text, filename, "exec")
    except SyntaxError as exc:
        line = (exc.lineno or lines_before + 1) - lines_before + first_line - 1
        raise InvalidStepError(f"step {name!r}: line {line} of the cell is not valid "
                               f"Python: {exc.msg}") from None


def _refuse_top_level_yield(name: str, module: types.CodeType, func_name: str,
                            python: str, first_line: int) -> None:
    """Refuse a ``yield`` in the cell's own scope: it would make the cell's function a
    generator, whose body never runs (a plain cell refuses it: outside a function)."""
    if not _function_code(module, func_name).co_flags & inspect.CO_GENERATOR:
        return
    body = ast.parse(textwrap.dedent(python).strip("\n")).body
    found = next(node for statement in body for node in _own_nodes(statement)
                 if isinstance(node, (ast.Yield, ast.YieldFrom)))
    word = "yield from" if isinstance(found, ast.YieldFrom) else "yield"
    line = found.lineno + first_line - 1
    raise InvalidStepError(f"step {name!r}: line {line} of the cell is not valid "
                           f"Python: {word!r} outside function (it would make the cell a "
                           "generator, whose body never runs); put it in a def, or collect "
                           "the values in a list")


def _function_code(module: types.CodeType, func_name: str) -> types.CodeType:
    return next(c for c in module.co_consts
                if isinstance(c, types.CodeType) and c.co_name == func_name)


def _local_names(module: types.CodeType, func_name: str) -> set[str]:
    """The names the cell's function assigns (its locals, parameters aside)."""
    code = _function_code(module, func_name)
    parameters = code.co_varnames[:code.co_argcount]
    return {*code.co_varnames, *code.co_cellvars} - set(parameters)


def _changed_notebook_variables(module: types.CodeType, func_name: str) -> set[str]:
    """The notebook variables the cell changes in place and reads (``df['r'] = df['a']``,
    ``cfg.setdefault(...)`` then ``cfg['k']``): as globals, a function's state, which its
    key counts by name; they are the cell's inputs, read as those it reads before
    assigning them, and kept with its result as it leaves them (:func:`keep`). One it
    only changes (``log.append(x)``) stays state, not kept: its value is no part of the
    key, so a kept value could be another's (a hit would undo what other cells added)."""
    return changed_inputs(_function_code(module, func_name))


# named as the cells call it: a container's module gets its source under this name
def _dagnb_keep(result: object, changed: dict[str, object]) -> object:
    """``result``, once ``changed`` (the notebook variables the cell changes in place
    and reads, as it left them) is pickled into the step's outputs, its cache entry's:
    a run served from the cache puts them back (:func:`kept_values`). One that does not
    pickle is named in a file there instead (:func:`unkept`). Stdlib only, its imports
    inside: it travels to a container as source; its file names are :data:`KEPT_FILE`'s
    and :data:`UNKEPT_FILE`'s."""
    import os
    import pickle

    try:
        from dagnb.executors.context import current

        folder = str(current().out_dir)
    except (ImportError, RuntimeError):  # (a container's: its contract's variable)
        folder = os.environ.get("DAGNB_OUT", "")
    if not folder:  # (called outside a step: nothing keeps it)
        return result
    try:
        data = pickle.dumps(changed, protocol=5)
    except Exception:  # (pickle's errors are of many types: a reducer raises what it may)
        for name, value in changed.items():
            try:
                pickle.dumps(value, protocol=5)
            except Exception as exc:
                with open(os.path.join(folder, ".dagnb-unkept.txt"), "w",
                          encoding="utf-8") as handle:
                    handle.write(f"{name}\n{exc}")
                break
        return result
    with open(os.path.join(folder, ".dagnb-kept.pkl"), "wb") as handle:
        handle.write(data)
    return result


keep = _dagnb_keep
setattr(keep, TRAVELS_AS_SOURCE, True)  # (stdlib only, its imports inside)
setattr(keep, IMPORT_NOTE, "keeps the notebook variables the cell changes in place with "
        "its outputs, for a notebook served from the cache")


def kept_names(step: Step) -> tuple[str, ...]:
    """The notebook variables the ``--python`` cell of ``step`` changes in place and
    reads, which its step keeps with its outputs (none for any other step)."""
    return getattr(step.func, KEPT_AS, ())


def kept_values(folder: Path) -> dict[str, Any] | None:
    """The notebook variables a cell's step kept in its output ``folder`` (see
    :func:`keep`), by name; None when it kept none there. Raises what unpickling does."""
    try:
        with open(folder / KEPT_FILE, "rb") as handle:
            values: dict[str, Any] = pickle.load(handle)
    except FileNotFoundError:
        return None
    return values


def unkept(folder: Path) -> tuple[str, str] | None:
    """(variable, why) when a cell's step could not keep that notebook variable in its
    output ``folder`` (it does not pickle); else None."""
    try:
        text = (folder / UNKEPT_FILE).read_text(encoding="utf-8")
    except (FileNotFoundError, NotADirectoryError):
        return None
    name, _, why = text.partition("\n")
    return name, why


def _refuse_params_named_as_upstreams(params: Iterable[str], needs: list[str]) -> None:
    """Refuse a param named as an upstream step: the cell's variable of that name would
    be the upstream's result, the param only a part of its key."""
    clash = next((p for p in params if p in needs), None)
    if clash is not None:
        raise InvalidStepError(f"--param {clash!r}: upstream step {clash!r} (--needs) is "
                               f"the variable `{clash}` too; rename the param, or the step")


def _refuse_results_name(outputs: tuple[str, ...]) -> None:
    """Refuse ``--outputs _dagger``: the notebook variable of every step's result."""
    if RESULTS_NAME in outputs:
        raise InvalidStepError(f"--outputs {RESULTS_NAME!r}: `{RESULTS_NAME}` is dagnb's "
                               "variable of the steps' results; name the output otherwise")


def _refuse_unassigned_outputs(name: str, outputs: tuple[str, ...], assigned: set[str]
                               ) -> None:
    """Refuse an output the cell never assigns (``scroe = 0.93`` for ``score``): the step
    would return the notebook's variable of that name, or fail on a hidden line."""
    for output in outputs:
        if output not in assigned:
            close = difflib.get_close_matches(output, sorted(assigned), n=1)
            fix = (f"did you mean {close[0]!r}?" if close
                   else "assign it in the cell or leave it out of --outputs")
            raise InvalidStepError(f"step {name!r}: --outputs {output!r} is not assigned "
                                   f"in the cell; {fix}")


def _globals_set(python: str) -> set[str]:
    """The names the cell declares ``global`` (and may assign so)."""
    return {n for node in ast.walk(ast.parse(textwrap.dedent(python)))
            if isinstance(node, ast.Global) for n in node.names}


def _read_before_assigned(python: str, local: set[str], arguments: list[str]) -> list[str]:
    """The locals the cell may read before it assigns them: in a plain cell they would
    read the notebook's variables (``data = data + [a]``), here they would fail."""
    if not local:
        return []
    body = ast.parse(textwrap.dedent(python)).body
    return sorted(_first_reads(body, set(arguments)) & local)


# Statements whose bodies may run or not, or more than once: what they assign is sure
# to be assigned after them only when every way through assigns it (if/else).
_CONDITIONAL = tuple(getattr(ast, kind) for kind in ("For", "AsyncFor", "While", "Match")
                     if hasattr(ast, kind))
_WITH = (ast.With, ast.AsyncWith)
_TRY = tuple(getattr(ast, kind) for kind in ("Try", "TryStar") if hasattr(ast, kind))
# Their bodies run in their own scope: only the names they read and do not bind count.
_SCOPES = (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Lambda)


def _first_reads(statements: list[ast.stmt], assigned: set[str]) -> set[str]:
    """Names ``statements`` (in order) may load before they are assigned."""
    return _scan(statements, set(assigned))[0]


def _scan(statements: list[ast.stmt], assigned: set[str]) -> tuple[set[str], set[str]]:
    """(names read before assigned, names sure to be assigned after ``statements``).

    A with or try body counts as run (``with open(p) as f: df = read(f)`` assigns
    ``df``: pre-binding it would key the step on its own last output); an if assigns
    what both its branches do; a loop's or a match's body may not run at all."""
    found: set[str] = set()
    for statement in statements:
        if isinstance(statement, ast.If):
            found |= _loads(statement.test) - assigned
            body_found, body_assigned = _scan(statement.body, set(assigned))
            else_found, else_assigned = _scan(statement.orelse, set(assigned))
            found |= body_found | else_found
            assigned |= body_assigned & else_assigned if statement.orelse else set()
        elif isinstance(statement, _WITH):
            found |= _loads_of(i.context_expr for i in statement.items) - assigned
            assigned |= set().union(*(_stores(i.optional_vars) for i in statement.items))
            body_found, assigned = _scan(statement.body, assigned)
            found |= body_found
        elif isinstance(statement, _TRY):
            before = set(assigned)
            body_found, assigned = _scan(statement.body, assigned)
            found |= body_found | _first_reads_compound(statement, before, ("orelse",
                                                                             "finalbody"))
        elif isinstance(statement, _CONDITIONAL):
            found |= _first_reads_compound(statement, assigned, ("body", "orelse"))
        else:
            found |= _loads(statement) - assigned
            assigned |= _stores(statement)
    return found, assigned


def _loads_of(nodes: Iterable[ast.AST | None]) -> set[str]:
    return set().union(*(_loads(node) for node in nodes if node is not None))


def _first_reads_compound(statement: ast.stmt, assigned: set[str],
                          bodies: tuple[str, ...]) -> set[str]:
    """A statement whose ``bodies`` may not run: its header expressions, then each body
    (what one assigns counts only within it), handlers and cases likewise."""
    headers = [getattr(statement, field, None) for field in ("iter", "test", "subject")]
    headers += [handler.type for handler in getattr(statement, "handlers", [])]
    headers += [case.guard for case in getattr(statement, "cases", [])]
    found = _loads_of(headers) - assigned
    inside = assigned | _stores(getattr(statement, "target", None))
    for field in bodies:
        found |= _first_reads(getattr(statement, field, []), inside)
    for handler in getattr(statement, "handlers", []):
        found |= _first_reads(handler.body, inside | {handler.name or ""})
    for case in getattr(statement, "cases", []):
        found |= _first_reads(case.body, inside | _captures(case.pattern))
    return found


def _captures(pattern: ast.AST) -> set[str]:
    """The names a match pattern binds (``case [x, *rest]``, ``case {**others}``)."""
    names = (getattr(node, "name", None) or getattr(node, "rest", None)
             for node in ast.walk(pattern))
    return {name for name in names if isinstance(name, str)}


def _own_nodes(node: ast.AST) -> Iterator[ast.AST]:
    """``node`` and the nodes under it that run in its scope: a nested function's,
    lambda's or class's name, decorators, defaults and bases, not its body."""
    yield node
    if isinstance(node, _SCOPES):
        outer: list[ast.AST] = [*getattr(node, "decorator_list", []),
                                *getattr(node, "bases", []), *getattr(node, "keywords", [])]
        if not isinstance(node, ast.ClassDef):
            outer += [d for d in (*node.args.defaults, *node.args.kw_defaults) if d]
        children: Iterable[ast.AST] = outer
    else:
        children = ast.iter_child_nodes(node)
    for child in children:
        yield from _own_nodes(child)


def _loads(node: ast.AST) -> set[str]:
    """Names ``node`` reads in the cell's scope (``x += 1`` reads ``x``), less those a
    comprehension binds for itself; a nested function, lambda or class reads the names
    it does not bind itself (a helper called, a class body run, before the cell assigns
    them: the notebook's, as in a plain cell), not its own locals."""
    loaded, inner = set(), set()
    for child in _own_nodes(node):
        if isinstance(child, ast.Name) and isinstance(child.ctx, ast.Load):
            loaded.add(child.id)
        elif isinstance(child, ast.AugAssign) and isinstance(child.target, ast.Name):
            loaded.add(child.target.id)
        elif isinstance(child, ast.comprehension):
            inner |= _stores(child.target)
        elif isinstance(child, _SCOPES):
            loaded |= _free_reads(child)
    return loaded - inner


def _free_reads(scope: ast.AST) -> set[str]:
    """The names a nested function's, lambda's or class's body reads and binds nowhere
    in it (its parameters, assignments, imports and definitions are its own)."""
    body = [scope.body] if isinstance(scope, ast.Lambda) else scope.body  # type: ignore[attr-defined]
    nodes = [node for part in body for node in ast.walk(part)]
    read = {n.id for n in nodes if isinstance(n, ast.Name) and isinstance(n.ctx, ast.Load)}
    bound = {n.id for n in nodes if isinstance(n, ast.Name) and not isinstance(n.ctx, ast.Load)}
    bound |= {n.name for n in nodes if isinstance(n, _SCOPES[:3])}
    bound |= {n.arg for n in nodes if isinstance(n, ast.arg)}  # (an inner lambda's)
    bound |= {(a.asname or a.name).partition(".")[0] for n in nodes
              if isinstance(n, (ast.Import, ast.ImportFrom)) for a in n.names}
    parameters = getattr(scope, "args", None)
    if parameters is not None:
        bound |= {a.arg for a in (*parameters.posonlyargs, *parameters.args,
                                  *parameters.kwonlyargs, parameters.vararg, parameters.kwarg)
                  if a is not None}
    return read - bound


def _stores(node: ast.AST | None) -> set[str]:
    """Names ``node`` assigns in the cell's scope (imports and definitions too)."""
    if node is None:
        return set()
    stored = set()
    for child in _own_nodes(node):
        if isinstance(child, ast.Name) and isinstance(child.ctx, (ast.Store, ast.Del)):
            stored.add(child.id)
        elif isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            stored.add(child.name)
        elif isinstance(child, (ast.Import, ast.ImportFrom)):
            stored |= {(a.asname or a.name).partition(".")[0] for a in child.names}
    return stored


def _prebinding_source(func_name: str, arguments: list[str], prebound: list[str],
                       text: str, kept: list[str]) -> str:
    """``text``'s function nested in one that reads ``prebound`` as globals and passes
    them in as parameters; then passes those of ``kept`` (read again: as the call left
    them) and the result to :func:`keep`."""
    inner = text.replace(f"def {func_name}({', '.join(arguments)}):",
                         f"def {func_name}({', '.join([*arguments, *prebound])}):", 1)
    call = f"{func_name}({', '.join([*arguments, *prebound])})"
    if kept:
        call = f"{KEEP}({call}, {{{', '.join(f'{n!r}: {n}' for n in kept)}}})"
    return (f"def {func_name}({', '.join(arguments)}):\n"
            f"{_indented(inner)}    return {call}\n")


def _receivable(need: str) -> str:
    """``need``, refused unless a --python cell can receive its result as a variable
    (left out, the cell would read the result an earlier run left in ``_dagger``)."""
    if keyword.iskeyword(need):
        raise InvalidStepError(f"step {need!r} is a Python keyword, so this --python cell "
                               f"cannot receive it; rename the step {need}_")
    if not _IDENTIFIER.match(need):
        raise InvalidStepError(f"step {need!r} is not a Python name, so this --python cell "
                               f"cannot receive it; rename the step {_python_spelling(need)}")
    return need


def _function_source(func_name: str, params: list[str], source: str,
                     outputs: tuple[str, ...]) -> str:
    body = textwrap.dedent(source).strip("\n") or "pass"
    if len(outputs) == 1:
        ret = f"return {outputs[0]}"
    elif outputs:
        ret = "return {" + ", ".join(f"{o!r}: {o}" for o in outputs) + "}"
    else:
        ret = "return None"
    for output in outputs:
        _python_name(output, "--outputs", "an output")
    return (f"def {func_name}({', '.join(params)}):\n"
            f"{_indented(body)}\n    {ret}\n")


def _indented(code: str) -> str:
    """``code`` one level in (four spaces), but for the lines a string spans after its
    first (a triple-quoted text's: indented, its value would change)."""
    inside = _lines_inside_strings(code)
    lines = io.StringIO(code).readlines()  # (lines as tokenize counts them: not at \f)
    return "".join(line if number in inside or not line.strip() else f"    {line}"
                   for number, line in enumerate(lines, start=1))


def _lines_inside_strings(code: str) -> set[int]:
    """The numbers of the lines that start inside a token begun on an earlier line (a
    string's; an f-string's parts from 3.12 on); none when ``code`` does not tokenize
    (compiling it says why)."""
    inside: set[int] = set()
    try:
        for token in tokenize.generate_tokens(io.StringIO(code).readline):
            inside.update(range(token.start[0] + 1, token.end[0] + 1))
    except (tokenize.TokenError, SyntaxError):
        return set()
    return inside


def cell_outputs(step: Step) -> tuple[str, ...]:
    """The ``--outputs`` of a step built from a ``--python`` cell (from its return)."""
    func = step.func
    if func is None:
        return ()
    source = linecache.getlines(func.__code__.co_filename)
    tree = ast.parse("".join(source)) if source else None
    if tree is None or not isinstance(tree.body[0], ast.FunctionDef):
        return ()
    cell = _cell_definition(tree.body[0])
    value = cell.body[-1].value if isinstance(cell.body[-1], ast.Return) else None
    if isinstance(value, ast.Name):
        return (value.id,)
    if isinstance(value, ast.Dict):
        return tuple(k.value for k in value.keys if isinstance(k, ast.Constant))
    return ()


def _cell_definition(outer: ast.FunctionDef) -> ast.FunctionDef:
    """The function holding the cell's body: ``outer``, or the one of the same name it
    nests when it passes notebook variables in (see :func:`_prebinding_source`)."""
    first, last = outer.body[0], outer.body[-1]
    call = last.value if isinstance(last, ast.Return) else None
    if isinstance(call, ast.Call) and _calls(call, KEEP) and call.args:
        call = call.args[0]  # (the cell's function's call; the variables kept after it)
    nested = (len(outer.body) == 2 and isinstance(first, ast.FunctionDef)
              and first.name == outer.name and _calls(call, outer.name))
    return first if nested else outer


def _calls(node: ast.AST | None, name: str) -> bool:
    """Whether ``node`` is a call of the function called ``name``."""
    return (isinstance(node, ast.Call) and isinstance(node.func, ast.Name)
            and node.func.id == name)


def cell_text(step: Step, secrets: Mapping[str, str] | None = None) -> str:
    """The ``%%dagger`` cell that defines ``step`` (shell steps and ``--python`` cells);
    its first body line, a comment, names the step's settings no option sets, if any.

    A cell is kept in clear (in the notebook, in a form's widget state): one holding the
    value of a secret is refused. ``secrets`` maps their names to values, by default
    those the step declares, as set now (a run masks the graph's: a form passes them)."""
    secrets = _declared_values(step) if secrets is None else secrets
    options = [f"%%dagger {step.name}"]
    if step.func is not None:
        options.append("--python")
    options += cell_options(step, secrets)
    if step.func is not None:
        outputs = cell_outputs(step)
        if outputs:
            options.append(f"--outputs {','.join(outputs)}")
    unset = _unset_comment(step)
    body = cell_body(step) if step.func is not None else shell_text(step.run) + "\n"
    text = " ".join(options) + "\n" + (f"{unset}\n" if unset else "") + body
    held = SecretFinder(secrets).find(text.encode()) if secrets else None
    if held is not None:  # (the options' are refused by name: this is its code, a mount...)
        raise InvalidStepError(f"step {step.name!r}: its cell would show the value of secret "
                               f"{held!r} in clear; write ${held} in its place, with "
                               f"--secret {held}")
    return text


def _declared_values(step: Step) -> dict[str, str]:
    """The step's declared secrets that are set now: name -> value."""
    return {name: os.environ[name] for name in step.secrets if os.environ.get(name)}


def _refuse_secret_options(step: Step, secrets: Mapping[str, str]) -> None:
    """Refuse an ``--env`` or ``--param`` holding a secret's value (as a run refuses such
    a param, and a save such a field), naming the option and the fix, never the value."""
    found = secret_option(step, secrets)
    if found is None:
        return
    field, name, held = found
    option = "--env" if field == "env" else "--param"
    fix = (f"build it from ${held} in the command, or declare {name} with --secret"
           if option == "--env" else f"read ${held} in the step, with --secret {held}")
    raise InvalidStepError(f"step {step.name!r}: {option} {name} holds the value of "
                           f"secret {held!r}, which a cell would show in clear; {fix}")


def shell_text(run: str | tuple[str, ...] | None) -> str:
    """A step's ``run`` as shell text (an argv list quoted word by word), no end newline."""
    text = shlex.join(run) if isinstance(run, tuple) else (run or "")
    return text.rstrip("\n")


def cell_body(step: Step) -> str:
    """The cell code of a ``--python`` step (its function body minus the return)."""
    original = getattr(step.func, "_dagnb_cell_source", None)
    if original is not None:
        return textwrap.dedent(original).strip("\n") + "\n"
    lines = linecache.getlines(step.func.__code__.co_filename)  # type: ignore[union-attr]
    return textwrap.dedent("".join(lines[1:-1])).rstrip("\n") + "\n"


def cell_options(step: Step, secrets: Mapping[str, str] | None = None) -> list[str]:
    """The ``%%dagger`` options (after the name and ``--python``) that rebuild ``step``,
    as IPython gives them to the magic once it expanded ``$name`` and ``{expr}`` in the
    line (:func:`line_word`); an env or param holding the value of one of ``secrets``
    (by default the step's, as set now) is refused."""
    _refuse_secret_options(step, _declared_values(step) if secrets is None else secrets)
    q = line_word
    opts = []
    if step.image:
        opts.append(f"--image {q(step.image)}")
    if step.needs:
        opts.append(f"--needs {','.join(step.needs)}")
    opts += [f"--env {q(f'{k}={v}')}" for k, v in step.env.items()]
    opts += [f"--secret {q(s)}" for s in step.secrets]
    opts += [f"--mount {q(f'{h}:{p}')}" for h, p in step.mounts.items()]
    opts += [f"--param {q(f'{k}=' + json.dumps(v))}" for k, v in step.params.items()]
    if _is_count(step.retries):
        opts.append(f"--retries {step.retries}")
    if step.timeout is not None:
        opts.append(f"--timeout {duration_text(step.timeout)}")
    if step.ttl is not None:
        opts.append(f"--ttl {duration_text(step.ttl)}")
    if step.tags:
        opts.append(f"--tags {','.join(step.tags)}")
    if step.cache is False:
        opts.append("--no-cache")
    if step.executor:
        opts.append(f"--executor {step.executor}")
    return opts


def line_word(text: str) -> str:
    """``text`` as one word of a magic's line: shell-quoted, and written so that IPython's
    expansion of the line (``var_expand``) gives it back rather than a notebook variable's
    value (``sales_{date}.csv``, ``hello $user``). Braces are doubled; a ``$`` is followed
    by an empty ``""`` (in double quotes), which ends any ``$name``: ``$$`` is no way out,
    as IPython leaves a ``$`` alone inside what it counts as single quotes."""
    text = text.replace("{", "{{").replace("}", "}}")
    if "$" not in text:
        return shlex.quote(text)
    quoted = text.replace("\\", "\\\\").replace('"', '\\"').replace("$", '$""')
    return f'"{quoted}"'


def duration_text(value: float) -> str:
    """A duration option that parses back to the same number of seconds."""
    if value == NEVER_EXPIRES:
        return "never"
    return f"{int(value)}s" if float(value).is_integer() else f"{value!r}s"


# The Step fields the %%dagger options set (cell_options); any other field that differs
# from its default is lost in a cell, and :func:`unset_options` names it.
_CELL_FIELDS = frozenset({"name", "run", "func", "image", "needs", "env", "secrets", "mounts",
                          "params", "timeout", "tags", "cache", "ttl", "retries", "executor"})


def unset_options(step: Step) -> dict[str, Any]:
    """The settings of ``step`` that no ``%%dagger`` option sets (``workdir``, a retry
    policy, ``cache='session'``...): a cell written from the step leaves them out."""
    unset = {f.name: getattr(step, f.name) for f in dataclasses.fields(step)
             if f.name not in _CELL_FIELDS and getattr(step, f.name) != _default(f)}
    if step.retries is not None and not _is_count(step.retries):
        unset["retries"] = step.retries
    if step.cache not in (True, False):
        unset["cache"] = step.cache
    return unset


def _unset_comment(step: Step) -> str:
    """One comment line naming :func:`unset_options`, or "" when there are none."""
    unset = unset_options(step)
    if not unset:
        return ""
    shown = ", ".join(f"{name}={_cut(setting_text(value))}" for name, value in unset.items())
    return f"# not set by this cell (%%dagger has no option for them): {shown}"


def setting_text(value: Any) -> str:
    """A setting's one-line text: a function by its name, a mapping as a dict, a
    dataclass (a RetryPolicy) by the fields it sets."""
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        set_ = [f"{f.name}={getattr(value, f.name)!r}" for f in dataclasses.fields(value)
                if getattr(value, f.name) != _default(f)]
        return f"{type(value).__name__}({', '.join(set_)})"
    if callable(value):
        return getattr(value, "__qualname__", repr(value))
    return repr(dict(value) if isinstance(value, Mapping) else value)


def _cut(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


def _default(field: dataclasses.Field[Any]) -> Any:
    if field.default_factory is not dataclasses.MISSING:
        return field.default_factory()
    return field.default


def _is_count(retries: Any) -> bool:
    """Whether ``retries`` is a number of retries (what ``--retries N`` sets), not a
    policy (a mapping, a RetryPolicy, or True/False)."""
    return isinstance(retries, int) and not isinstance(retries, bool)
