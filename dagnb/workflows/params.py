"""A workflow's params set for one run: ``dagnb run FILE.yml --param rows=5``.

A value is read as the file reads ``rows: 5`` (``5`` the number, ``true`` true, ``[a, b]``
a list, ``'"5"'`` the text), so one value written in the file or given on the command
line makes one cache key. Where YAML 1.1, which reads the file (and refuses such a value
there, written bare), and YAML 1.2 read a value apart, it is read as YAML 1.2 (and JSON)
reads it: ``0755`` and ``050`` are 755 and 50 (not octal), ``9:45`` and ``yes`` text (not
585 and true); but ``yes``/``no``/``on``/``off`` are true and false for a param the file
gives only as booleans. For a param the file gives as text (in every step that has
it), the value is the text as typed (``3.10``, ``0755``, ``yes``, ``#x`` stay so: YAML
would make them 3.1, 493, true and null), unless it is written quoted; likewise the
items of a list given for a param the file gives as lists of text (``[3.10, 3.12]`` is
``["3.10", "3.12"]``), and the values of a map for one it gives as maps of text values,
each unless written quoted (or tagged). The value
replaces the param in every step that declares it, in its own ``params`` or through
``defaults``; a name no step declares is refused.

A name the file declares under ``parameters:`` (as ``dagnb templates new`` writes it) is
read and checked by its :class:`~dagnb.workflows.templates.Parameter`, as the template
read it: ``samples=0`` for a ``minimum: 1`` is refused before any step runs. One that no
step takes (it shaped the file: a ``for_each`` list) is refused, naming the
``dagnb templates new ... --force`` that makes the file again with it (or, when the
file's steps were edited since, which that would undo, a ``templates new`` to another
file); so is the ``item`` (``index``) of the steps a template's ``for_each`` copied, the
value each copy has its own of, which is no parameter: the list parameter it was an item
of is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import yaml

from dagnb import checks
from dagnb.errors import WorkflowError
from dagnb.model.graph import Graph
from dagnb.workflows.loader import as_written, parse_yaml
from dagnb.workflows.parameters import (
    Parameter,
    ParameterValueError,
    Yaml12Loader,
    constructed,
    items_as_typed,
    with_text_items,
    written_quoted,
)
from dagnb.workflows.templates import (
    BRANCH_PARAMS,
    branches,
    edited_steps,
    other_file,
    remake_command,
)

__all__ = ["as_written", "file_values", "name_and_text", "param_pairs", "read_value",
           "set_params", "shown", "with_text_items"]


Mask = Callable[[str], str]


def param_pairs(items: Iterable[str], mask: Mask = str,
                declared: Mapping[str, Sequence[Any]] | None = None,
                parameters: Mapping[str, Parameter] | None = None,
                source: str = "the workflow") -> dict[str, Any]:
    """``["rows=5", ...]`` -> ``{"rows": 5}``, each value as :func:`read_value` reads it
    against the values the file gives that name (``declared``: see :func:`file_values`),
    or, for a name of the file's ``parameters`` (``source``'s), as that parameter reads
    it; ``mask`` hides secret values in the messages, which show what was given."""
    items = given_once(items, mask)
    values = {}
    for item in items:
        name, text = name_and_text(item, mask)
        parameter = (parameters or {}).get(name)
        if parameter is None:
            values[name] = read_value(name, text, mask, (declared or {}).get(name, ()))
        else:
            values[name] = _parsed(parameter, item, text, mask, source)
    return values


def given_once(items: Iterable[str], mask: Mask) -> list[str]:
    """``items``, refused where a name is given twice with two values: a run takes one,
    and keeping the last would run a CI job that appends ``--param`` options with a value
    nobody meant (the same value twice is one value)."""
    items = list(items)
    first: dict[str, str] = {}
    for item in items:
        name, text = name_and_text(item, mask)
        if first.setdefault(name, text) != text:
            earlier = shown(f"{name}={first[name]}", mask)
            raise WorkflowError(f"--param {name!r} is given twice ({earlier}, then "
                                f"{shown(item, mask)}); give it once, with the value meant")
    return items


def name_and_text(item: str, mask: Mask = str) -> tuple[str, str]:
    """``"rows=5"`` (a ``--param``) -> ``("rows", "5")``; anything else is refused, in a
    line ``mask`` hides secret values in."""
    name, sep, text = item.partition("=")
    if not sep or not name.strip():
        raise WorkflowError(f"--param {shown(item, mask)!r} is not NAME=VALUE; write it "
                            "like rows=100")
    return name.strip(), text


def _parsed(parameter: Parameter, item: str, text: str, mask: Mask, source: str) -> Any:
    """``text`` as the declared ``parameter`` reads it, as ``dagnb templates new`` does."""
    try:
        return parameter.parse(text)
    except ParameterValueError as exc:
        raise WorkflowError(_refusal(f"--param {shown(item, mask)!r}", exc, source,
                                     mask)) from None


def _refusal(given: str, exc: ParameterValueError, source: str, mask: Mask = str) -> str:
    """The line refusing a value of a declared parameter: the value, the rule, the file."""
    return mask(f"{given}: {exc.name} = {exc.shown} {exc.problem} (parameters of "
                f"{source})")


def file_values(graph: Graph) -> dict[str, list[Any]]:
    """Each param name of ``graph``'s steps -> the values they give it (before a
    ``--param`` replaces them)."""
    found: dict[str, list[Any]] = {}
    for step in graph:
        for name, value in step.params.items():
            found.setdefault(name, []).append(value)
    return found


def read_value(name: str, text: str, mask: Mask = str, in_file: Sequence[Any] = ()) -> Any:
    """``text`` as the workflow file reads the value of ``name: text``, by YAML 1.2 where
    the file's YAML 1.1 reads it otherwise (:func:`_as_yaml_1_2`); what the file would
    refuse (``a: b``, ``*.csv``, a date) is refused, with the quoting that fixes it.
    Where the file gives ``name`` only as text (``in_file``: its values there), ``text``
    is that text as typed, not read as YAML, unless it is written quoted (``"3.10"``);
    where it gives ``name`` only as lists of text (maps of text values), so are the items
    (values) of a flow list (map) written bare."""
    if in_file and all(isinstance(default, str) for default in in_file) and not (
            written_quoted(text)):
        return text
    where = f"--param {shown(f'{name}={text}', mask)!r}"
    quoted = f"quote it as text: --param '{name}={shown(json.dumps(text), mask)}'"
    try:
        node = yaml.compose(text, Loader=Yaml12Loader)  # (1e-3 a float, as in the file)
    except yaml.YAMLError as exc:
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise WorkflowError(f"{where}: the value does not read as YAML ({problem}); "
                            f"{quoted}") from None
    except RecursionError:
        raise WorkflowError(f"{where}: the value nests too deeply; put it in a file the "
                            "step reads") from None
    if isinstance(node, yaml.CollectionNode) and not node.flow_style:  # ("a: b", "- a")
        raise WorkflowError(f"{where}: the value reads as a YAML block, which a param "
                            f"written in the file cannot be; {quoted}, or write a list as "
                            "[a, b]")
    value = _as_yaml_1_2(text, where, in_file)
    kind = _text_items_of(in_file)
    if kind is not None and isinstance(node, kind) and items_as_typed(node, text):
        value = constructed(node, Yaml12Loader)
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        raise WorkflowError(f"{where}: the value reads as the {type(value).__name__} "
                            f"{shown(str(value), mask)}, and a param is a JSON value; "
                            f"{quoted}") from None
    return value


def _as_yaml_1_2(text: str, where: str, in_file: Sequence[Any]) -> Any:
    """``text`` read as YAML 1.2 reads it (``0755`` is 755, ``9:45`` the text), with the
    file's limits on size and nesting; but a YAML 1.1 boolean (``yes``, ``off``) is that
    boolean for a param the file gives only as booleans (the text "no" would be true)."""
    value = parse_yaml(text, where, yaml_1_2=True)
    if isinstance(value, str) and in_file and all(isinstance(v, bool) for v in in_file):
        as_1_1 = parse_yaml(text, where)
        return as_1_1 if isinstance(as_1_1, bool) else value
    return value


def _text_items_of(in_file: Sequence[Any]) -> type[yaml.Node] | None:
    """The node a value of a param takes its items as typed in: a flow list where the file
    gives the param only as lists of text, a flow map where only as maps of text values
    (an empty one says nothing of its items); else None."""
    for kind, node in ((list, yaml.SequenceNode), (dict, yaml.MappingNode)):
        if in_file and all(isinstance(v, kind) and v for v in in_file):
            items = (item for v in in_file for item in (v.values() if kind is dict else v))
            return node if all(isinstance(item, str) for item in items) else None
    return None


def shown(text: str, mask: Mask = str, limit: int = 60) -> str:
    """``text`` masked, then cut to ``limit`` characters (a secret cut would not be)."""
    text = mask(text)
    return text if len(text) <= limit else f"{text[:limit - 3]}..."


def set_params(graph: Graph, values: Mapping[str, Any], source: str,
               mask: Mask = str) -> dict[str, list[str]]:
    """Give each step of ``graph`` that declares a param of ``values`` that value; the
    steps changed, by param. A value of a name ``graph.parameters`` declares is checked
    by its Parameter first. A name no step declares is refused, naming the graph's (for
    a parameter of the file's, the command that makes the file again with it), and so
    is a ``for_each`` copy's ``item`` or ``index``, naming the graph's parameters. The
    values are kept in ``graph.given_params``, which its runs record; ``mask`` hides
    secret values in the messages."""
    values = _checked(graph, values, source, mask)
    declared = sorted({name for step in graph for name in step.params})
    for name in values:
        if name in graph.parameters and name not in declared:
            raise WorkflowError(mask(_shaped_the_file(graph, name, values, source)))
        if name not in declared:
            raise WorkflowError(_undeclared(graph, name, declared, source))
        if _per_copy(graph, name):
            raise WorkflowError(mask(_per_branch(graph, name, values[name], source, mask)))
    changed: dict[str, list[str]] = {name: [] for name in values}
    graph.keep_own_params()  # (a run given a param its own value ran as one given none)
    for step in list(graph):
        given = {name: value for name, value in values.items() if name in step.params}
        if given:
            graph.replace(dataclasses.replace(step, params={**step.params, **given}))
            for name in given:
                changed[name].append(step.name)
    graph.given_params = {**graph.given_params, **values}
    return changed


def _checked(graph: Graph, values: Mapping[str, Any], source: str,
             mask: Mask) -> dict[str, Any]:
    """``values``, each of a declared parameter checked (and typed: ``2`` a float's
    ``2.0``) by it."""
    checked = dict(values)
    for name, value in values.items():
        if name in graph.parameters:
            try:
                checked[name] = graph.parameters[name].check(value)
            except ParameterValueError as exc:
                raise WorkflowError(_refusal(f"--param {name!r}", exc, source, mask)) from None
    return checked


def _shaped_the_file(graph: Graph, name: str, values: Mapping[str, Any], source: str) -> str:
    """Why a declared parameter no step takes cannot be set for a run, and the fix."""
    if graph.template is None:
        return (f"--param {name!r}: {source} declares {name!r} under parameters, but no "
                f"step has a param {name!r}; add it to the params of the steps that read it")
    return (f"--param {name!r}: no step of {source} has a param {name!r}: template "
            f"{graph.template!r} made its steps from it, so {_remade(graph, values, name)}")


def _per_branch(graph: Graph, name: str, value: Any, source: str, mask: Mask) -> str:
    """Why a ``for_each`` copy's ``item`` (``index``) cannot be set for a run: each copy
    has its own, one per item of a list parameter, which is what to change."""
    copied = branches(graph)
    swept = {step: _swept_by(graph, copies) for step, copies in copied.items()}
    where = "; ".join(_copies_of(step, len(copied[step]), parameter)
                      for step, parameter in swept.items())
    problem = (f"--param {shown(f'{name}={as_written(value)}', mask)!r}: {name!r} is not a "
               f"parameter of {source}: each for_each copy has its own ({where}); its "
               f"parameters are {', '.join(graph.parameters) or 'none'}")
    lists = [parameter for parameter in swept.values() if parameter is not None]
    if not lists:  # (the template's own items, no parameter's)
        return f"{problem}; set one of those, or edit the copies' items in the file"
    chosen = {parameter.name: [value] for parameter in lists
              if name == "item" and _takes(parameter, [value])}
    list_names = " or ".join(parameter.name for parameter in lists)
    return f"{problem}: to run other items {_remade(graph, chosen, list_names)}"


def _copies_of(step: str, count: int, parameter: Parameter | None) -> str:
    """``4 copies of step 'fit', one per item of its parameter 'alphas'``."""
    fed = "" if parameter is None else f", one per item of its parameter {parameter.name!r}"
    return f"{count} copies of step {step!r}{fed}"


def _swept_by(graph: Graph, copies: Sequence[Any]) -> Parameter | None:
    """The list parameter whose value (the file's) the ``copies`` have one item each of."""
    items = [copy.params["item"] for copy in copies]
    return next((parameter for parameter in graph.parameters.values()
                 if parameter.type == "list" and parameter.default == items), None)


def _takes(parameter: Parameter, value: Any) -> bool:
    """Whether ``parameter`` accepts ``value``."""
    try:
        parameter.check(value)
    except ParameterValueError:
        return False
    return True


def _remade(graph: Graph, values: Mapping[str, Any], swept: str) -> str:
    """How to have ``graph``'s file with ``values`` (``swept``: the parameter changed):
    make it again (``templates new --force``) when that undoes nothing (said to undo any
    edit when its template is not here to tell); when its steps were edited since, make
    another file and carry the edits over, or edit this one."""
    edited = edited_steps(graph)
    again = f"make the file again: {remake_command(graph, values)} --force"
    if not edited:  # (None: its template is not here to tell, nor to make it again)
        return again if edited == [] else f"{again} (this rewrites its steps, undoing any edit)"
    return (f"make another file, {remake_command(graph, values, other_file(graph))}, and carry "
            "the edits over (making this one again, --force, would undo the edits of its "
            f"{_steps_named(edited)}); or edit this one: the default of {swept} under "
            "parameters, and the steps made from it")


def _steps_named(names: Sequence[str]) -> str:
    """``step 'prepare'``, ``steps 'a', 'b' and 3 more``."""
    shown = ", ".join(repr(name) for name in names[:3])
    more = f" and {len(names) - 3} more" if len(names) > 3 else ""
    return f"step{'s' if len(names) > 1 else ''} {shown}{more}"


def _undeclared(graph: Graph, name: str, declared: list[str], source: str) -> str:
    """Why ``name`` cannot be set, listing the params that can (not a ``for_each``
    copy's own ``item`` and ``index``), the one meant found among them and the file's
    parameters (``alpha`` for ``alphas``, which says how it changes)."""
    settable = [param for param in declared if not _per_copy(graph, param)]
    if not settable:
        some = " but the for_each copies' own item and index" if declared else ""
        return (f"--param {name!r}: no step of {source} has params{some}; declare it in a "
                "step's params (or under defaults: params:) to set it from the command line")
    hint = checks.did_you_mean(name, [*settable, *graph.parameters],
                               otherwise="set one of those")
    return (f"--param {name!r}: no step of {source} has a param {name!r}; its params are "
            f"{', '.join(settable)}; {hint}")


def _per_copy(graph: Graph, name: str) -> bool:
    """Whether ``name`` is the ``item`` (``index``) each ``for_each`` copy has its own
    of, which no ``--param`` sets."""
    return name in BRANCH_PARAMS and name not in graph.parameters and bool(branches(graph))
