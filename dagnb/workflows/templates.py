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
names the ``templates new`` command that makes the file again.

Templates are found in ``$DAGNB_TEMPLATE_PATH`` (folders separated by ``os.pathsep``;
their templates win over built-in ones of the same id, said once; an entry that is no
folder, mistyped or a file, is left out, said once), then in the checkout's
``templates/pipelines`` or the installed copy under ``<prefix>/share/dagnb``. A file
that does not load is left out of the list with a warning; only its own id fails.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import numbers
import os
import re
import string
import sysconfig
import warnings
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

from dagnb import checks
from dagnb.config import context
from dagnb.errors import ConfigError, WorkflowError
from dagnb.model.graph import Graph
from dagnb.workflows.aliases import RENAMED
from dagnb.workflows.bounds import BOUND_KEYS, Bounds
from dagnb.workflows.loader import dump, graph_from_dict, parse_yaml, read_text
from dagnb.workflows.params import with_text_items

if TYPE_CHECKING:
    import pandas as pd

__all__ = [
    "TYPES",
    "BrokenTemplateWarning",
    "Parameter",
    "ParameterValueError",
    "Template",
    "TemplatePathWarning",
    "categories",
    "declared_parameters",
    "get",
    "instantiate",
    "list",  # served by __getattr__, so this module never shadows the builtin
    "search_path",
    "table",
]

TYPES = ("str", "int", "float", "bool", "list")
_TEMPLATE_KEYS = ("id", "name", "category", "description", "parameters", "workflow")
_PARAMETER_KEYS = ("type", "default", "required", "description", "items", *BOUND_KEYS)
_WHOLE = re.compile(r"^\$\{([A-Za-z_][A-Za-z0-9_]*)\}$")
_PLACEHOLDER = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_MISSING: Any = object()
_CLAIMED_ID = re.compile(r"""^id:[ \t]*(["']?)([\w.-]+)\1[ \t]*(?:#.*)?$""", re.MULTILINE)
# Keys whose value is a command (shell text, or argv that may be ``sh -c TEXT``): dagnb's
# ``run`` and the platform's ``command``, which loads as ``run``.
_COMMAND_KEYS = frozenset(
    {"run", *(alias for alias, name in RENAMED.items() if name == "run")})
_NEEDS_KEYS = ("needs", *(alias for alias, name in RENAMED.items() if name == "needs"))


# -- parameters -----------------------------------------------------------------------
class ParameterValueError(ConfigError):
    """A value a :class:`Parameter` does not take; ``problem`` is the rule it breaks and
    the fix (``is not accepted; give a value >= 2``), for messages of other wording."""

    def __init__(self, name: str, value: Any, problem: str) -> None:
        super().__init__(f"template parameter {name!r} = {value!r} {problem}")
        self.name, self.value, self.problem = name, value, problem


@dataclasses.dataclass(frozen=True)
class Parameter:
    """One typed template parameter.

    Parameters
    ----------
    name
        Used as ``${name}`` in the template and as a keyword of :func:`instantiate`.
    type
        One of ``str``, ``int``, ``float``, ``bool``, ``list``.
    default
        The value when none is given; a parameter without one is required.
    required
        True when the caller must give a value.
    description
        Help shown by ``dagnb templates show``.
    items
        For lists: the type of each item (``str``, ``int``, ``float`` or ``bool``).
    bounds
        What the value (a list's items) must also be: a minimum, a maximum, one of some
        choices, a Python name (:mod:`dagnb.workflows.bounds`); None: any of its type.
    """

    name: str
    type: str = "str"
    default: Any = None
    required: bool = False
    description: str = ""
    items: str | None = None
    bounds: Bounds | None = None

    def check(self, value: Any) -> Any:
        """``value`` if it has this parameter's type (ints pass as floats) and is within
        its bounds, else ConfigError."""
        if self.type == "list":
            value = _as_list(value)
            if not isinstance(value, (list, tuple)):
                raise self._mistyped(value)
            return self._bounded([_typed(self.items, item, self._mistyped) for item in value])
        return self._bounded(_typed(self.type, value, self._mistyped))

    def _bounded(self, value: Any) -> Any:
        """``value``, refused in one line if it (or an item of it) is out of bounds."""
        if self.bounds is None:
            return value
        for item in value if self.type == "list" else [value]:
            problem = self.bounds.problem(item)
            if problem is not None:
                where = f"item {item!r}: " if self.type == "list" else ""
                raise ParameterValueError(self.name, value, f"is not accepted; {where}{problem}")
        return value

    def parse(self, text: str) -> Any:
        """A value from command-line text: ``3``, ``0.5``, ``true``, ``a,b`` or ``[1, 2]``."""
        if self.type == "list":
            try:
                parsed = self._read_list(text) if text.strip().startswith("[") else [
                    item.strip() for item in text.split(",") if item.strip()
                ]
            except yaml.YAMLError:  # "[1," : an unclosed list
                raise self._mistyped(text) from None
            if not isinstance(parsed, list):
                raise self._mistyped(text)
            return self._bounded([_from_text(self.items, item, self._mistyped)
                                  for item in parsed])
        return self._bounded(_from_text(self.type, text, self._mistyped))

    def _read_list(self, text: str) -> Any:
        """``[...]`` as YAML; for text items, those written bare kept as typed (``3.10``,
        not the float 3.1 that YAML reads), as ``dagnb run --param`` keeps them."""
        return with_text_items(text) if self.items == "str" else yaml.safe_load(text)

    def example(self) -> Any:
        """A value this parameter takes (lists: of one item), for a preview."""
        kind = self.items if self.type == "list" else self.type
        value = None if self.bounds is None else self.bounds.example(kind)
        if value is None:
            value = _SAMPLES[kind]
        return [value] if self.type == "list" else value

    def spec(self) -> dict[str, Any]:
        """This parameter as a file declares it (a template's ``parameters``, or a
        workflow's), which :func:`declared_parameters` reads back as an equal one."""
        spec: dict[str, Any] = {"type": self.type}
        if self.items is not None:
            spec["items"] = self.items
        if self.required:
            spec["required"] = True
        if not self.required or self.default is not None:
            spec["default"] = self.default
        for key in BOUND_KEYS:
            bound = None if self.bounds is None else getattr(self.bounds, key)
            if bound is not None:
                spec[key] = list(bound) if isinstance(bound, tuple) else bound
        if self.description:
            spec["description"] = self.description
        return spec

    def _mistyped(self, value: Any) -> ParameterValueError:
        expected = f"list of {self.items}" if self.type == "list" and self.items else self.type
        if _non_finite(value):  # a float, but nan and inf are no JSON
            expected = expected.replace("float", "finite float")
        article = "an" if expected[0] in "aeiou" else "a"
        return ParameterValueError(self.name, value,
                                   f"is not valid; expected {article} {expected}")


def _as_list(value: Any) -> Any:
    """A numpy array (a pandas Series: what has ``tolist()``) as the list it holds, as
    ``np.linspace(0, 1, 5)`` is given for a sweep; any other value as it is."""
    to_list = getattr(value, "tolist", None)
    return to_list() if callable(to_list) and not isinstance(value, (str, bytes)) else value


def _non_finite(value: Any) -> bool:
    """Whether ``value`` (or its text) is nan or an infinity."""
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def _typed(kind: str | None, value: Any, bad: Any) -> Any:
    """``value`` as a ``kind``: numbers of other types that are one (numpy's
    ``int64(50)``, a ``numbers.Integral``; a ``numbers.Real`` for floats), not bools,
    become Python's, which JSON and the cache keys take as they take ``50``."""
    if kind is None:
        return value
    number = isinstance(value, numbers.Real) and not isinstance(value, bool)
    ok = {
        "str": isinstance(value, str),
        "int": number and isinstance(value, numbers.Integral),
        "float": number and math.isfinite(value),
        "bool": isinstance(value, bool),
    }[kind]
    if not ok:
        raise bad(value)
    return int(value) if kind == "int" else float(value) if kind == "float" else value


def _finite_float(text: str) -> float:
    """A float from text; nan and inf are refused (a step's params are JSON)."""
    value = float(text)
    if not math.isfinite(value):
        raise ValueError(f"{text!r} is not finite")
    return value


_SAMPLES = {"str": "x", "int": 1, "float": 1.0, "bool": False, None: "x"}

_PARSERS: dict[str | None, Callable[[str], Any]] = {
    "int": int,
    "float": _finite_float,
    "bool": functools.partial(checks.flag, text=True),
}


def _from_text(kind: str | None, text: Any, bad: Any) -> Any:
    if not isinstance(text, str):
        return _typed(kind, text, bad)
    parse = _PARSERS.get(kind)
    try:
        return text if parse is None else parse(text)
    except ValueError:  # checks.Invalid is one
        raise bad(text) from None


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


def _point_needs_at_copies(fields: Any, copies: Mapping[str, list[str]]) -> None:
    """A ``for_each`` step's name in ``needs`` (or ``depends_on``) stands for its copies."""
    for key in _NEEDS_KEYS:
        needs = fields.get(key) if isinstance(fields, dict) else None
        if isinstance(needs, str):  # "needs: prep", one name
            needs = [needs]
        if isinstance(needs, list):
            fields[key] = [c for n in needs for c in copies.get(n, [n])]


# -- loading --------------------------------------------------------------------------
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
    parameters = {name: _template_parameter(name, spec, source) for name, spec in specs.items()}
    _check_placeholders(data["workflow"], parameters, source)
    return Template(
        id=str(data["id"]), name=str(data["name"]), category=str(data.get("category") or "other"),
        description=str(data.get("description") or "").strip(), parameters=parameters,
        workflow=data["workflow"], path=path.absolute(),
    )


def _template_parameter(name: str, spec: Any, source: str) -> Parameter:
    try:
        return _parameter(name, spec, f"template {source!r}: parameter {name!r}")
    except ParameterValueError as exc:
        raise WorkflowError(f"template {source!r}: default: {exc}") from None


def declared_parameters(specs: Any, source: str) -> dict[str, Parameter]:
    """The parameters of a workflow file's ``parameters:`` section, each declared as a
    template declares it, with a default: the value its steps were made with. Problems
    are one-line WorkflowErrors naming ``source``, the parameter and the key."""
    if specs is None:
        return {}
    if not isinstance(specs, Mapping):
        raise WorkflowError(f"{source}: 'parameters' must be a mapping of name: {{type, "
                            f"default, ...}}, as a template declares them; got {specs!r}")
    return {_parameter_name(name, source): _workflow_parameter(name, spec, source)
            for name, spec in specs.items()}


def _parameter_name(name: Any, source: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise WorkflowError(f"{source}: parameters: {name!r} is no name; name each one as "
                            "the steps' params do (rows, seed, ...)")
    return name


def _workflow_parameter(name: str, spec: Any, source: str) -> Parameter:
    where = f"{source}: parameter {name!r}"
    if isinstance(spec, Mapping) and "default" not in spec:
        raise WorkflowError(f"{where} has no default; give the value its steps are written "
                            "with (default: ...)")
    try:
        return _parameter(name, spec, where)
    except ParameterValueError as exc:
        raise WorkflowError(f"{where}: default {exc.value!r} {exc.problem}") from None


def _parameter(name: str, spec: Any, where: str) -> Parameter:
    """A parameter from its spec; WorkflowErrors start with ``where``, a default it does
    not take is a ParameterValueError."""
    if not isinstance(spec, Mapping):
        raise WorkflowError(f"{where} must be a mapping with a 'type', got {spec!r}")
    checks.known_keys(spec, _PARAMETER_KEYS, where, WorkflowError)
    kind, items = spec.get("type", "str"), spec.get("items")
    if kind not in TYPES or items not in (None, "str", "int", "float", "bool"):
        raise WorkflowError(f"{where}: type {kind!r} (items {items!r}) is not one of {TYPES}")
    required = bool(spec.get("required", "default" not in spec))
    bounds = Bounds.from_spec(spec, items if kind == "list" else kind, where)
    parameter = Parameter(name, kind, None, required, str(spec.get("description") or ""), items)
    for choice in () if bounds is None or bounds.choices is None else bounds.choices:
        try:  # each of the parameter's (or its items') type
            _typed(items if kind == "list" else kind, choice, parameter._mistyped)
        except ConfigError as exc:
            raise WorkflowError(f"{where}: choices: {exc}") from None
    parameter = dataclasses.replace(parameter, bounds=bounds)
    if "default" in spec:
        parameter = dataclasses.replace(parameter, default=parameter.check(spec["default"]))
    elif not required:
        raise WorkflowError(f"{where} is optional but has no default; give one")
    return parameter


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
    rows = [
        {"id": t.id, "name": t.name, "category": t.category,
         "description": t.description.splitlines()[0] if t.description else "",
         "parameters": ", ".join(_signature(p) for p in t.parameters.values())}
        for t in _templates() if category in (None, t.category)
    ]
    columns = ["id", "name", "category", "description", "parameters"]
    import pandas as pd  # on first use: `dagnb run` does not need it

    return pd.DataFrame(rows, columns=columns).sort_values("id", ignore_index=True)


def _signature(parameter: Parameter) -> str:
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
