"""Pipeline templates: parameterized YAML workflows to start a project from.

A template file (``templates/pipelines/*.yml``)::

    id: sweep
    name: Parameter sweep
    category: ml
    description: One branch per value, then a gather step.
    parameters:
      values: {type: list, items: float, default: [0.1, 1.0], minimum: 0, description: ...}
      seed:   {type: int, default: 0}   # bounds: minimum, maximum, choices, format
                                        # (dagnb.workflows.bounds)
    workflow:                    # the workflow format of dagnb.workflows.loader
      steps:
        train:
          for_each: ${values}    # one copy per item: train_0, train_1, ...
          params: {seed: ${seed}}
          run: python3 train.py  # reads $DAGNB_PARAM_ITEM and $DAGNB_PARAM_SEED
        gather:
          needs: [train]         # a for_each step's name stands for all its copies
          run: ls "$DAGNB_IN"

Parameter values never enter shell text. A field whose whole value is ``${name}``
becomes the typed value (so ``params: {seed: ${seed}}`` gives the step the int, read
as ``$DAGNB_PARAM_SEED``, safely quoted by the shell's own variable expansion); other
strings (names, descriptions, images, paths) get ``string.Template`` substitution. A
command (``run``, or the platform's ``command``; text or argv) that mentions
``${parameter}`` is refused: it would splice user text into shell code. A ``for_each``
step is copied once per list item with params ``item`` and ``index``.

A workflow made from a template (``dagnb templates new``) keeps the template's id and
its parameters, their values as defaults, in the file's ``template:`` and ``parameters:``
keys (:func:`declared_parameters` reads them back): ``dagnb run FILE --param`` checks a
value as this module does, and for a parameter no step takes (a ``for_each`` list)
names the ``templates new`` command that makes the file again (another file, when its
steps were edited: :func:`edited_steps`); so it does for the copies' own ``item`` and
``index`` (:func:`branches`), which are no parameter. Loading such a file checks each
step's value of a parameter against what the template writes there (:func:`made_again`).

Templates are found in ``$DAGNB_TEMPLATE_PATH`` (folders separated by ``os.pathsep``;
their templates win over built-in ones of the same id, said once; an entry that is no
folder, mistyped or a file, is left out, said once), then in the checkout's
``templates/pipelines`` or the installed copy under ``<prefix>/share/dagnb``. A file
that does not load is left out of the list with a warning; only its own id fails.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shlex
import string
import sysconfig
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from dagnb import checks
from dagnb.config import context
from dagnb.errors import ConfigError, DagnbError, WorkflowError
from dagnb.model.graph import Graph
from dagnb.workflows.aliases import RENAMED
from dagnb.workflows.loader import (
    as_saved,
    as_written,
    dump,
    graph_from_dict,
    parse_yaml,
    read_text,
)
from dagnb.workflows.parameters import (
    TYPES,
    Parameter,
    ParameterValueError,
    declared_parameters,
    template_parameter,
)

if TYPE_CHECKING:
    import pandas as pd

    from dagnb.model.step import Step

__all__ = [
    "BRANCH_PARAMS",
    "TYPES",
    "BrokenTemplateWarning",
    "Parameter",
    "ParameterValueError",
    "Template",
    "TemplatePathWarning",
    "branches",
    "categories",
    "declared_parameters",
    "edited_steps",
    "get",
    "instantiate",
    "list",  # served by __getattr__, so this module never shadows the builtin
    "made_again",
    "search_path",
    "signature",
    "table",
]

_TEMPLATE_KEYS = ("id", "name", "category", "description", "parameters", "workflow")
_WHOLE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MISSING: Any = object()
_CLAIMED_ID = re.compile(r"""^id:[ \t]*(["']?)([\w.-]+)\1[ \t]*(?:#.*)?$""", re.MULTILINE)
# Keys whose value is a command (shell text, or argv that may be ``sh -c TEXT``): dagnb's
# ``run`` and the platform's ``command``, which loads as ``run``.
_COMMAND_KEYS = frozenset(
    {"run", *(alias for alias, name in RENAMED.items() if name == "run")})
_NEEDS_KEYS = ("needs", *(alias for alias, name in RENAMED.items() if name == "needs"))
BRANCH_PARAMS = ("item", "index")
"""The params ``for_each`` gives each copy of a step: its item, and the item's position."""


# -- templates ------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class Template:
    """A parameterized workflow, loaded from a template file."""

    id: str
    name: str
    category: str
    description: str
    parameters: Mapping[str, Parameter]
    workflow: Mapping[str, Any]
    path: Path | None = None

    def values(self, given: Mapping[str, Any], *, from_text: bool = False) -> dict[str, Any]:
        """Every parameter's value: ``given`` (checked, or parsed when ``from_text``)
        over the defaults."""
        unknown = [name for name in given if name not in self.parameters]
        if unknown:
            raise ConfigError(_unknown_parameter(self, unknown[0]))
        values = {}
        for name, parameter in self.parameters.items():
            if name in given:
                raw = given[name]
                values[name] = parameter.parse(raw) if from_text else parameter.check(raw)
            elif parameter.required:
                raise ConfigError(
                    f"template {self.id!r} needs parameter {name!r} (a {parameter.type}); "
                    f"give {name}=..."
                )
            else:
                values[name] = parameter.default
        return values

    def render(self, **params: Any) -> dict[str, Any]:
        """The workflow data with the parameters filled in and ``for_each`` expanded."""
        values = self.values(params)
        data = _substitute(self.workflow, values)
        data.setdefault("name", self.id)
        fed = _for_each_params(self.workflow.get("steps"))
        data["steps"] = _expand(data.get("steps") or {}, self.id,
                                {step: self.parameters[name] for step, name in fed.items()
                                 if name in self.parameters})
        # kept in the file made: its runs check a --param as this template does, and a
        # parameter that shaped it (for_each) names the command that makes it again
        data["template"] = self.id
        data["parameters"] = {
            name: dataclasses.replace(parameter, default=values[name], required=False).spec()
            for name, parameter in self.parameters.items()}
        return data

    def instantiate(self, **params: Any) -> Graph:
        """A :class:`~dagnb.Graph` of this template with ``params`` (defaults for the rest)."""
        return graph_from_dict(self.render(**params), source=f"template {self.id!r}")

    def to_yaml(self, path: str | Path | None = None, **params: Any) -> str:
        """The instantiated workflow as YAML text; written to ``path`` when given."""
        return dump(self.instantiate(**params), path)


def _unknown_parameter(template: Template, name: str) -> str:
    known = f"its parameters are {', '.join(template.parameters) or 'none'}"
    hint = checks.did_you_mean(name, template.parameters, otherwise=known)
    return f"template {template.id!r} has no parameter {name!r}; {hint}"


def _substitute(value: Any, values: Mapping[str, Any], key: str = "") -> Any:
    """Fill ``${name}`` everywhere except in commands (``run``, ``command``)."""
    if isinstance(value, Mapping):
        return {
            _substitute(k, values): v if k in _COMMAND_KEYS else _substitute(v, values, k)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_substitute(item, values) for item in value]
    if isinstance(value, str):
        whole = _WHOLE.match(value)
        if whole:
            return values[whole.group(1)]
        text = {name: _as_text(v) for name, v in values.items()}
        return string.Template(value).safe_substitute(text)
    return value


def _as_text(value: Any) -> str:
    return json.dumps(value) if isinstance(value, (list, bool)) else str(value)


def _step_pairs(steps: Any) -> list[tuple[str, Any]] | None:
    """``(name, fields)`` of each step, of either form; None for neither."""
    if isinstance(steps, Mapping):
        return list(steps.items())
    if isinstance(steps, list) and all(_is_listed_step(item) for item in steps):
        return [(item["name"], {k: v for k, v in item.items() if k != "name"})
                for item in steps]
    return None


def _for_each_params(steps: Any) -> dict[str, str]:
    """Each step whose ``for_each`` is a parameter (``"${alphas}"``), and its name."""
    fed = {}
    for name, fields in _step_pairs(steps) or ():
        whole = isinstance(fields, Mapping) and _WHOLE.match(str(fields.get("for_each", "")))
        if whole:
            fed[name] = whole.group(1)
    return fed


def _expand(steps: Any, template_id: str,
            fed: Mapping[str, Parameter] | None = None) -> Any:
    """Copy each ``for_each`` step per item and point ``needs`` at every copy; ``steps``
    keeps its form: a mapping, or the platform's list of ``{name, ...}`` items. ``fed``:
    the parameter each step's ``for_each`` is, to name in an error."""
    pairs = _step_pairs(steps)
    if pairs is None:
        return steps  # graph_from_dict says what 'steps' and its items must be
    expanded = _expanded(pairs, template_id, fed or {})
    if isinstance(steps, Mapping):
        return dict(expanded)
    return [{"name": name, **fields} for name, fields in expanded]


def _is_listed_step(item: Any) -> bool:
    return isinstance(item, Mapping) and isinstance(item.get("name"), str)


def _expanded(steps: list[tuple[str, Any]], template_id: str,
              fed: Mapping[str, Parameter]) -> list[tuple[str, Any]]:
    expanded: list[tuple[str, Any]] = []
    copies: dict[str, list[str]] = {}
    names = {name for name, _ in steps}
    for name, fields in steps:
        if not isinstance(fields, Mapping):  # graph_from_dict says what a step must be
            expanded.append((name, fields))
            continue
        fields = dict(fields)
        items = fields.pop("for_each", _MISSING)
        if items is _MISSING:
            expanded.append((name, fields))
            continue
        if not isinstance(items, list) or not items:
            raise ConfigError(_no_items(template_id, name, items, fed.get(name)))
        copies[name] = [f"{name}_{i}" for i in range(len(items))]
        for copy in copies[name]:
            if copy in names:
                raise ConfigError(
                    f"template {template_id!r}: step {name!r} has for_each copy {copy!r}, "
                    "which is also a step; rename one of them"
                )
        for index, item in enumerate(items):
            params = {**(fields.get("params") or {}), "item": item, "index": index}
            expanded.append((f"{name}_{index}", {**fields, "params": params}))
    for _, fields in expanded:
        _point_needs_at_copies(fields, copies)
    return expanded


def _no_items(template_id: str, step: str, items: Any, parameter: Parameter | None) -> str:
    """Why a ``for_each`` made no copy: the parameter that gave it nothing, and the fix."""
    if parameter is None:
        return (f"template {template_id!r}: step {step!r} has for_each {items!r}; give a "
                "non-empty list")
    example = parameter.default if isinstance(parameter.default, list) and parameter.default \
        else parameter.example()
    return (f"template {template_id!r}: parameter {parameter.name!r} = {items!r} leaves "
            f"step {step!r} nothing to run (one copy per item, for_each); give "
            f"{parameter.name} a non-empty list, such as {parameter.name}="
            f"{','.join(map(str, example))}")


def branches(graph: Graph) -> dict[str, list[Step]]:
    """The copies a template's ``for_each`` made in ``graph``, by the step they were
    copied from (``{"fit": [fit_0, fit_1, ...]}``), as the file made from it has them:
    steps named ``<step>_<index>`` whose params are an ``item`` and that ``index``.
    Empty for a graph not made from a template (``for_each`` is the templates')."""
    found: dict[str, list[Step]] = {}
    for step in graph if graph.template is not None else ():
        index = step.params.get("index")
        if "item" in step.params and type(index) is int and step.name.endswith(f"_{index}"):
            found.setdefault(step.name.removesuffix(f"_{index}"), []).append(step)
    return found


def check_branch_items(graph: Graph, made: Graph, source: str) -> None:
    """Refuse a file whose ``for_each`` copies run other items than its list parameter's
    default makes (an item edited, a copy removed, the default edited with no copy
    made): its runs would use the copies' items while the file says the default's, and
    ``templates new --force`` would write the default's back. Copies of a list the
    template gives itself (no parameter) are the file's to edit."""
    fed = _for_each_params(get(graph.template).workflow.get("steps"))  # type: ignore[arg-type]
    runs, makes = _items_by_step(graph), _items_by_step(made)
    for step in sorted(runs.keys() | makes.keys()):
        name = fed.get(step)
        ran, making = runs.get(step, []), makes.get(step, [])
        if name not in graph.parameters or _same_items(ran, making):
            continue
        parameter = graph.parameters[name]
        raise WorkflowError(
            f"{source}: parameter {name!r} has default {parameter.default!r}, from which "
            f"template {graph.template!r} makes {len(making)} copies of step {step!r} with "
            f"items {making!r}, but the file's copies run {ran!r}; make them one: "
            f"{_fix_of_items(graph, parameter, ran, source)}")


def _items_by_step(graph: Graph) -> dict[str, list[Any]]:
    """The items of each ``for_each`` step's copies, in their index order."""
    return {step: [copy.params["item"] for copy in sorted(copies,
                                                          key=lambda c: c.params["index"])]
            for step, copies in branches(graph).items()}


def _same_items(one: list[Any], other: list[Any]) -> bool:
    return len(one) == len(other) and all(
        type(a) is type(b) and a == b for a, b in zip(one, other, strict=True))


def _fix_of_items(graph: Graph, parameter: Parameter, ran: list[Any], source: str) -> str:
    """Write the items the copies run as the default (when it takes them), or make the
    file again, which makes the copies of the default's items (undoing any edit)."""
    again = ("make the file again from the default: "
             f"{remake_command(graph, {}, shlex.quote(source))} --force")
    try:
        parameter.check(ran)
    except ParameterValueError:
        return again
    return f"write default: {ran!r} under parameters: {parameter.name}; or {again}"


def made_again(graph: Graph, folder: Path) -> Graph | None:
    """The graph ``dagnb templates new`` (run here) would write to a file in ``folder``
    for ``graph``'s template and parameter values (a value given for a run over the
    file's default), read back as that file; None when that cannot be known: ``graph``
    names no template, or it is not found here, does not load, or refuses those values."""
    if graph.template is None:
        return None
    try:
        template = get(graph.template)
        values = {name: graph.given_params.get(name, parameter.default)
                  for name, parameter in graph.parameters.items()
                  if name in template.parameters}
        return as_saved(template.instantiate(**values), folder)
    except DagnbError:
        return None


def edited_steps(graph: Graph) -> list[str] | None:
    """The steps of ``graph``, a file made from a template, that are not as that template
    makes them with the file's parameter values (:func:`made_again`), or that it does not
    make, then those it makes that the file lacks: what making the file again (``templates
    new --force``) would undo. None when that cannot be known."""
    made = made_again(graph, graph.base_dir or Path.cwd())
    if made is None:
        return None
    changed = [step.name for step in graph if step.name not in made or made[step.name] != step]
    return changed + [name for name in made.names if name not in graph]


def _point_needs_at_copies(fields: Any, copies: Mapping[str, list[str]]) -> None:
    """A ``for_each`` step's name in ``needs`` (or ``depends_on``) stands for its copies."""
    for key in _NEEDS_KEYS:
        needs = fields.get(key) if isinstance(fields, dict) else None
        if isinstance(needs, str):  # "needs: prep", one name
            needs = [needs]
        if isinstance(needs, list):
            fields[key] = [c for n in needs for c in copies.get(n, [n])]


# -- loading --------------------------------------------------------------------------
def remake_command(graph: Graph, values: Mapping[str, Any], output: str | None = None) -> str:
    """The ``templates new`` command that makes ``graph``'s file (or ``output``) again
    with ``values`` (the file's for the other parameters)."""
    chosen = {key: values.get(key, parameter.default)
              for key, parameter in graph.parameters.items()}
    options = [f"-p {shlex.quote(f'{key}={option_text(value)}')}"
               for key, value in chosen.items()]
    return " ".join(["dagnb templates new", str(graph.template), *options,
                     f"-o {output or _file_option(graph)}"])


def option_text(value: Any) -> str:
    """``value`` as ``templates new -p NAME=...`` reads it: ``0.5,2.0``, ``true``."""
    if isinstance(value, str):
        return value
    if isinstance(value, list) and value and all(
            isinstance(item, (int, float)) for item in value):
        return ",".join(as_written(item) for item in value)
    return as_written(value)


def _file_option(graph: Graph) -> str:
    """The workflow's file as ``-o`` names it from here."""
    if graph.workflow_file is None:
        return "FILE.yml"
    return _from_here(graph.workflow_file)


def other_file(graph: Graph) -> str:
    """A file beside the workflow's, as ``-o`` names it from here: ``sweep-2.yml``."""
    if graph.workflow_file is None:
        return "OTHER.yml"
    path, number = graph.workflow_file, 2
    while path.with_name(f"{path.stem}-{number}{path.suffix}").exists():
        number += 1
    return _from_here(path.with_name(f"{path.stem}-{number}{path.suffix}"))


def _from_here(path: Path) -> str:
    try:
        return shlex.quote(os.path.relpath(path))
    except ValueError:  # (Windows: another drive)
        return shlex.quote(str(path))


def load_template(path: str | Path) -> Template:
    """Read and check one template file; problems are WorkflowErrors naming the file."""
    path = Path(path)
    source = str(path)
    data = parse_yaml(read_text(path, "template"), f"template {source!r}")
    if not isinstance(data, Mapping):
        raise WorkflowError(f"template {source!r} must be a mapping, got {data!r}")
    checks.known_keys(data, _TEMPLATE_KEYS, f"template {source!r}", WorkflowError)
    for key in ("id", "name", "workflow"):
        if not data.get(key):
            raise WorkflowError(f"template {source!r} has no {key!r}; add it")
    specs = data.get("parameters") or {}
    if not isinstance(specs, Mapping):
        raise WorkflowError(f"template {source!r}: 'parameters' must be a mapping of name: "
                            f"{{type, default, ...}}, got {specs!r}")
    parameters = {name: template_parameter(name, spec, source) for name, spec in specs.items()}
    _check_placeholders(data["workflow"], parameters, source)
    return Template(
        id=str(data["id"]), name=str(data["name"]), category=str(data.get("category") or "other"),
        description=str(data.get("description") or "").strip(), parameters=parameters,
        workflow=data["workflow"], path=path.absolute(),
    )


def _check_placeholders(workflow: Any, parameters: Mapping[str, Parameter], source: str,
                        key: str = "") -> None:
    """Every ``${name}`` names a parameter; none appears in a command (``run``,
    ``command``)."""
    if isinstance(workflow, Mapping):
        for k, v in workflow.items():
            _check_placeholders(k, parameters, source)
            _check_placeholders(v, parameters, source, str(k))
    elif isinstance(workflow, list):
        for item in workflow:
            _check_placeholders(item, parameters, source, key)
    elif isinstance(workflow, str):
        for name in _PLACEHOLDER.findall(workflow):
            if key in _COMMAND_KEYS and name in parameters:
                raise WorkflowError(
                    f"template {source!r}: {key} text uses ${{{name}}}, which would put a "
                    f"parameter into shell code; pass it in params and read $DAGNB_PARAM_"
                    f"{name.upper()} instead"
                )
            if key not in _COMMAND_KEYS and name not in parameters:
                raise WorkflowError(
                    f"template {source!r}: ${{{name}}} names no parameter; declare it under "
                    "'parameters'"
                )


# -- the catalogue --------------------------------------------------------------------
def search_path() -> list[Path]:
    """Folders searched for ``*.yml`` templates, first match of an id wins: those of
    ``$DAGNB_TEMPLATE_PATH`` that are folders (another is left out, said once in a
    :class:`TemplatePathWarning`), then the built-in ones."""
    return [*_user_folders(), *_built_in_folders()]


def _user_folders() -> list[Path]:
    given = os.environ.get("DAGNB_TEMPLATE_PATH", "")
    folders = [Path(entry).expanduser() for entry in given.split(os.pathsep) if entry.strip()]
    for folder in folders:
        if not folder.is_dir():
            _warn_once(_not_a_folder(given, folder))
    return [folder for folder in folders if folder.is_dir()]


def _not_a_folder(given: str, folder: Path) -> str:
    """The warning's line for a DAGNB_TEMPLATE_PATH entry that is no folder (a typo, a file)."""
    named = "" if str(folder) == given else f" (in {given!r})"
    if folder.exists():
        return (f"DAGNB_TEMPLATE_PATH names {str(folder)!r}{named}, a file, not a folder: no "
                f"template is read from it; name the folder it is in ({str(folder.parent)!r})")
    return (f"DAGNB_TEMPLATE_PATH names {str(folder)!r}{named}, which does not exist: no "
            f"template is read from it; name a folder of *.yml templates (several separated "
            f"by {os.pathsep!r})")


def _built_in_folders() -> list[Path]:
    checkout = Path(__file__).resolve().parents[2] / "templates" / "pipelines"
    installed = Path(sysconfig.get_path("data")) / "share" / "dagnb" / "templates" / "pipelines"
    return [checkout, installed]


class BrokenTemplateWarning(UserWarning):
    """A template file that cannot be loaded, left out of :func:`table`."""


class TemplatePathWarning(UserWarning):
    """``DAGNB_TEMPLATE_PATH`` names something that is not a folder, or a template there
    takes a built-in template's id (it replaces that one)."""


def _warn_once(text: str) -> None:
    """A TemplatePathWarning, once in a dagnb context (a process, a test's context)."""
    warned = context().get("templates.warned", set)
    if text not in warned:
        warned.add(text)
        warnings.warn(text, TemplatePathWarning, stacklevel=4)


Entry = Template | WorkflowError
"""A template, or why the file that would define it cannot be loaded."""


def _catalogue() -> tuple[dict[str, Entry], list[WorkflowError]]:
    """Each id's entry (the first on the search path wins), and every file's error.

    One broken file does not hide the others: its error stands in for the id it claims,
    so ``get`` of that id (and only that id) raises it. A user's template that takes a
    built-in's id replaces it, and one taking another user file's id is hidden by it,
    each said once (:class:`TemplatePathWarning`).
    """
    found: dict[str, Entry] = {}
    users: dict[str, Path] = {}  # id -> the file of DAGNB_TEMPLATE_PATH that defines it
    broken: list[WorkflowError] = []
    user_folders = _user_folders()
    for folder in [*user_folders, *_built_in_folders()]:
        for path in sorted(folder.glob("*.yml")) + sorted(folder.glob("*.yaml")):
            try:
                entry: Entry = load_template(path)
            except WorkflowError as exc:
                broken.append(exc)
                entry = exc
            template_id = entry.id if isinstance(entry, Template) else _claimed_id(path)
            if template_id in users and not _same_file(users[template_id], path):
                _warn_taken(template_id, users[template_id], path, folder in user_folders)
            if folder in user_folders:
                users.setdefault(template_id, path)
            found.setdefault(template_id, entry)
    return found, broken


def _warn_taken(template_id: str, first: Path, hidden: Path, by_user: bool) -> None:
    """Say once that the user's ``first`` file takes an id ``hidden`` claims too."""
    if by_user:  # (two of the user's: the later one's edits would be silently ignored)
        _warn_once(f"template {template_id!r} of {str(hidden)!r} is hidden by the one of "
                   f"{str(first)!r}, found first on DAGNB_TEMPLATE_PATH; give it another id")
    else:
        _warn_once(f"template {template_id!r} of {str(first)!r} (DAGNB_TEMPLATE_PATH) "
                   f"replaces the built-in one of {str(hidden)!r}; give yours another id to "
                   "keep both")


def _same_file(one: Path, other: Path) -> bool:
    try:
        return one.samefile(other)
    except OSError:
        return False


def _claimed_id(path: Path) -> str:
    """The id a file that does not load means to define: its ``id:`` line, or its name."""
    try:
        claimed = _CLAIMED_ID.search(path.read_text(encoding="utf-8", errors="replace"))
    except OSError:
        claimed = None
    return claimed.group(2) if claimed else path.stem


def _templates() -> list[Template]:
    """The templates that load; each broken file is a BrokenTemplateWarning."""
    found, broken = _catalogue()
    for error in broken:
        warnings.warn(f"left out: {error}", BrokenTemplateWarning, stacklevel=3)
    return [entry for entry in found.values() if isinstance(entry, Template)]


def get(template_id: str) -> Template:
    """The template with this id.

    Raises
    ------
    ConfigError
        When no template on the search path has that id (naming the closest one).
    WorkflowError
        When the file that defines that id does not load (naming the file and why).
    """
    known, _ = _catalogue()
    if template_id not in known:
        listed = f"known: {', '.join(sorted(known))}"
        hint = checks.did_you_mean(template_id, known, otherwise=listed)
        raise ConfigError(f"no pipeline template {template_id!r}; {hint}")
    entry = known[template_id]
    if isinstance(entry, WorkflowError):
        raise entry
    return entry


def table(category: str | None = None) -> pd.DataFrame:
    """The templates as a DataFrame: id, name, category, description, parameters.

    ``parameters`` lists each parameter as ``name: type = default`` (``name: type`` when
    required). A file that does not load is left out with a :class:`BrokenTemplateWarning`
    naming it and the problem. ``dagnb.workflows.templates.list()`` is this function.
    """
    import pandas as pd  # on first use: `dagnb run` does not need it

    return pd.DataFrame(table_rows(category), columns=_COLUMNS)


_COLUMNS = ["id", "name", "category", "description", "parameters"]


def table_rows(category: str | None = None) -> list[dict[str, str]]:
    """:func:`table`'s rows, by id, without pandas (``dagnb templates list`` prints them:
    pandas' import was half a second of its 0.8)."""
    return sorted((
        {"id": t.id, "name": t.name, "category": t.category,
         "description": t.description.splitlines()[0] if t.description else "",
         "parameters": ", ".join(signature(p) for p in t.parameters.values())}
        for t in _templates() if category in (None, t.category)
    ), key=lambda row: row["id"])


def signature(parameter: Parameter) -> str:
    """``parameter`` as ``templates show`` lists it: ``name: type = default (bounds)``,
    ``name: type`` when it is required."""
    kind = f"list[{parameter.items}]" if parameter.items else parameter.type
    bounds = "" if parameter.bounds is None else f" ({parameter.bounds.describe()})"
    if parameter.required:
        return f"{parameter.name}: {kind}{bounds}"
    return f"{parameter.name}: {kind} = {parameter.default!r}{bounds}"


def categories() -> list[str]:
    """The template categories, sorted."""
    return sorted({t.category for t in _templates()})


def instantiate(template_id: str, **params: Any) -> Graph:
    """A Graph from template ``template_id`` with ``params`` (defaults for the rest).

    Raises
    ------
    ConfigError
        For an unknown template or parameter, a required parameter left out, or a value
        of the wrong type (naming the parameter and the type expected).
    """
    return get(template_id).instantiate(**params)


def __getattr__(name: str) -> Any:
    if name == "list":  # dagnb.workflows.templates.list() without shadowing the builtin here
        return table
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
