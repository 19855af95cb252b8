"""Typed parameters, as a template declares them and a workflow file's ``parameters:``
section does: their types, bounds and defaults, and how a value given as text is read.
(Apart from :mod:`dagnb.workflows.templates`, which builds on the loader: the loader reads a
file's section with these.)"""

from __future__ import annotations

import dataclasses
import functools
import math
import numbers
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any, ClassVar

import yaml

from dagnb import checks
from dagnb.errors import ConfigError, WorkflowError
from dagnb.workflows.bounds import BOUND_KEYS, Bounds
from dagnb.workflows.yaml_reading import WorkflowLoader

__all__ = ["TYPES", "Parameter", "ParameterValueError", "Yaml12Loader", "check_written_values",
           "constructed", "declared_parameters", "items_as_typed", "quoting_yaml_1_2",
           "template_parameter", "with_text_items", "written_quoted", "yaml_1_2_value"]

TYPES = ("str", "int", "float", "bool", "list")
_PARAMETER_KEYS = ("type", "default", "required", "description", "items", *BOUND_KEYS)
_STR = "tag:yaml.org,2002:str"


# -- parameters -----------------------------------------------------------------------
class ParameterValueError(ConfigError):
    """A value a :class:`Parameter` does not take; ``problem`` is the rule it breaks and
    the fix (``is not accepted; give a value >= 2``), for messages of other wording;
    ``shown``: the value as they show it (:func:`_shown`)."""

    def __init__(self, name: str, value: Any, problem: str, *, typed: bool = False) -> None:
        self.name, self.value, self.problem = name, value, problem
        self.shown = _shown(value, typed)
        super().__init__(f"template parameter {name!r} = {self.shown} {problem}")


def _shown(value: Any, typed: bool) -> str:
    """``value`` in a message: its repr, but text ``typed`` on a command line that reads
    as a number or a boolean (``2.5``, ``1e3``, ``inf``, ``.inf``, ``true``) as typed,
    unquoted: ``rows = 2.5 is not valid; expected an int``, not ``'2.5'``, which says
    text the user did not write."""
    if typed and isinstance(value, str):
        text = value.strip()
        if text and (_number_written(text) is not None
                     or isinstance(yaml_1_2_value(text), bool)):
            return text
    return repr(value)


def _number_written(text: str) -> float | None:
    """The number ``text`` is written as, to Python (``inf``, ``1_000``) or YAML
    (``.inf``, ``0x1F``); None for text that is none."""
    try:
        return float(text)
    except ValueError:
        pass
    value = yaml_1_2_value(text.strip())
    return float(value) if isinstance(value, (int, float)) and not isinstance(
        value, bool) else None


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
        """A value from command-line text: ``3``, ``0.5``, ``true``, ``a,b`` or ``[1, 2]``;
        written in quotes (``"Q3 sales"``), the text in them, as a file's ``title: "Q3
        sales"`` is, then read as this parameter reads text. ``dagnb run -p`` and
        ``dagnb templates new -p`` both read a declared parameter's value with this."""
        if written_quoted(text.strip()):
            text = _unquoted(text.strip())
        if self.type == "list":
            try:
                parsed = self._read_list(text) if text.strip().startswith("[") else [
                    self._comma_item(item.strip()) for item in text.split(",") if item.strip()
                ]
            except yaml.YAMLError:  # "[1," : an unclosed list
                raise self._mistyped(text, typed=True) from None
            if not isinstance(parsed, list):
                raise self._mistyped(text, typed=True)
            return self._bounded([_from_text(self.items, item, self._mistyped)
                                  for item in parsed])
        return self._bounded(_from_text(self.type, text, self._mistyped))

    def _read_list(self, text: str) -> Any:
        """``[...]`` as YAML 1.2 reads it (``[050]`` is [50], as ``050,...`` is); for text
        items, those written bare kept as typed (``3.10``, not the float 3.1 that YAML
        reads), as ``dagnb run --param`` keeps them."""
        return with_text_items(text) if self._text_items() else yaml.load(
            text, Loader=Yaml12Loader)

    def _comma_item(self, text: str) -> Any:
        """An item of ``a,b`` as ``[a, b]`` reads it, so the two spellings make one value
        and one key: as typed for text items, as text the declared ``items`` type reads,
        else as YAML 1.2 reads it (``0.3`` the float, ``true`` the bool, ``"1"`` text)."""
        if self._text_items() or self.items is not None:
            return text
        return _unquoted(text) if written_quoted(text) else yaml_1_2_value(text)

    def _text_items(self) -> bool:
        """Whether this list's items are text: declared so (``items: str``), or, with no
        ``items``, its default is a list of text only (``["3.10", "3.11"]``), as a
        ``--param`` of a param the file gives only as lists of text reads them."""
        if self.items is not None:
            return self.items == "str"
        default = self.default
        return isinstance(default, list) and bool(default) and all(
            isinstance(item, str) for item in default)

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

    def _mistyped(self, value: Any, *, typed: bool = False) -> ParameterValueError:
        """The error for ``value`` (``typed``: command-line text) of no type it takes."""
        expected = f"list of {self.items}" if self.type == "list" and self.items else self.type
        if _non_finite(value):  # a float, but nan and inf are no JSON
            expected = expected.replace("float", "finite float")
        article = "an" if expected[0] in "aeiou" else "a"
        fix = _whole_number_fix(self.type, value) if typed else ""
        return ParameterValueError(self.name, value,
                                   f"is not valid; expected {article} {expected}{fix}",
                                   typed=typed)


def _whole_number_fix(kind: str | None, text: Any) -> str:
    """``; write it as 1000`` for an int typed as a whole float (``1e3``, ``1000.0``)."""
    number = _number_written(text) if isinstance(text, str) else None
    if (kind != "int" or not isinstance(number, float) or not number.is_integer()
            or abs(number) >= 1e15):  # (1e300: no number anyone means to write out)
        return ""
    return f"; write it as {int(number)}"


def _as_list(value: Any) -> Any:
    """A numpy array (a pandas Series: what has ``tolist()``) as the list it holds, as
    ``np.linspace(0, 1, 5)`` is given for a sweep; any other value as it is."""
    to_list = getattr(value, "tolist", None)
    return to_list() if callable(to_list) and not isinstance(value, (str, bytes)) else value


def _non_finite(value: Any) -> bool:
    """Whether ``value`` (or its text, ``inf`` as YAML's ``.inf``) is nan or an infinity."""
    if isinstance(value, str):
        number = _number_written(value)
        return number is not None and not math.isfinite(number)
    try:
        return not math.isfinite(float(value))
    except (TypeError, ValueError, OverflowError):
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
        raise bad(text, typed=True) from None


def written_quoted(text: str) -> bool:
    """Whether ``text`` is written in quotes, ``"3.10"`` or ``'3.10'`` (read as YAML)."""
    return len(text) >= 2 and text[0] == text[-1] and text[0] in "\"'"


def _unquoted(text: str) -> str:
    """A quoted ``text`` as YAML reads it (its escapes too); as it is if YAML cannot."""
    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        return text
    return value if isinstance(value, str) else text


def items_as_typed(node: yaml.Node, text: str) -> bool:
    """Retag as text the items of a flow list (the values of a flow map) that are written
    bare, with no quotes, tag or anchor, and that YAML reads as no text (``3.10``,
    ``yes``, ``~``): kept as typed, as a text param's value is. Whether any was."""
    items = node.value if isinstance(node, yaml.SequenceNode) else [v for _, v in node.value]
    bare = [item for item in items if isinstance(item, yaml.ScalarNode) and item.tag != _STR
            and item.style is None
            and text[item.start_mark.index:item.end_mark.index] == item.value]
    for item in bare:
        item.tag = _STR
    return bool(bare)


def with_text_items(text: str) -> Any:
    """The value of the YAML flow list (map) ``text``, its bare items (values) kept as
    typed: ``[3.10, yes]`` is ``["3.10", "yes"]``, not ``[3.1, True]``, as for a param
    the file gives only as lists of text. Raises yaml.YAMLError for text no YAML."""
    node = yaml.compose(text, Loader=WorkflowLoader)
    if isinstance(node, (yaml.SequenceNode, yaml.MappingNode)):
        items_as_typed(node, text)
    return None if node is None else constructed(node)


def constructed(node: yaml.Node, loader_class: type[Any] = WorkflowLoader) -> Any:
    """The value of a composed (and retagged) YAML node, built as ``loader_class`` (the
    one that composed it) builds values."""
    loader = loader_class("")
    try:
        return loader.construct_document(node)
    finally:
        loader.dispose()


# -- YAML 1.2 -------------------------------------------------------------------------
# PyYAML reads YAML 1.1, where 0755 and 050 are octal (493, 40), 12:30 is base 60 (750),
# 1_000 is 1000 and yes/no/on/off are booleans. YAML 1.2's core schema, which JSON, most
# readers and most other tools follow, reads 0755 as 755 (0o755 is octal) and the rest
# as text. A --param value is read as YAML 1.2 reads it; a file's value that the two
# read apart is refused (dagnb.workflows.loader): which one was meant, no reader knows.
_CORE_RESOLVERS = (
    ("tag:yaml.org,2002:bool", r"^(?:true|True|TRUE|false|False|FALSE)$", "tTfF"),
    ("tag:yaml.org,2002:int", r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$", "-+0123456789"),
    ("tag:yaml.org,2002:float", r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
     r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$", "-+.0123456789"),
)
_CORE_TAGS = {tag for tag, _, _ in _CORE_RESOLVERS}


def _with_core_resolvers(cls: type[Any]) -> type[Any]:
    """``cls`` also resolving YAML 1.2's booleans and numbers (after its own)."""
    for tag, pattern, first in _CORE_RESOLVERS:
        cls.add_implicit_resolver(tag, re.compile(pattern), list(first))
    return cls


class Yaml12Loader(WorkflowLoader):
    """:data:`WorkflowLoader` reading booleans and numbers by YAML 1.2's core schema
    (its nulls are YAML 1.1's; a date stays a date, for a value to refuse it as the
    file does)."""

    yaml_implicit_resolvers: ClassVar[dict[Any, list[tuple[str, re.Pattern[str]]]]] = {
        first: [(tag, pattern) for tag, pattern in resolvers if tag not in _CORE_TAGS]
        for first, resolvers in WorkflowLoader.yaml_implicit_resolvers.items()}


def _core_int(loader: yaml.SafeLoader, node: yaml.ScalarNode) -> int:
    """A YAML 1.2 int: ``0755`` is 755, ``0o755`` octal, ``0x1F`` hexadecimal."""
    text = loader.construct_scalar(node)
    sign, digits = (-1, text[1:]) if text[:1] == "-" else (1, text.removeprefix("+"))
    base = {"0o": 8, "0x": 16}.get(digits[:2].lower(), 10)
    return sign * int(digits[2:] if base != 10 else digits, base)


_with_core_resolvers(Yaml12Loader)
Yaml12Loader.add_constructor("tag:yaml.org,2002:int", _core_int)


def quoting_yaml_1_2(dumper: type[Any]) -> type[Any]:
    """``dumper`` quoting the text YAML 1.2 reads as a number too (``"0o755"``), as it
    quotes what YAML 1.1 does (``"0755"``, ``"12:30"``, ``"yes"``): such text, written,
    reads back as text by either."""
    return _with_core_resolvers(dumper)


def yaml_1_2_value(text: str) -> Any:
    """What YAML 1.2 reads the plain scalar ``text`` as: ``12:30`` and ``yes`` text,
    ``0755`` the int 755, ``3.10`` the float 3.1."""
    loader = Yaml12Loader("")
    try:
        tag = loader.resolve(yaml.ScalarNode, text, (True, False))
        return loader.construct_object(yaml.ScalarNode(tag, text), deep=True)
    except (yaml.YAMLError, ValueError):  # (a date YAML cannot build: as text)
        return text
    finally:
        loader.dispose()


def template_parameter(name: str, spec: Any, source: str) -> Parameter:
    """The parameter ``name`` a template file (``source``) declares with ``spec``;
    problems, a default it does not take too, are one-line WorkflowErrors naming the
    file."""
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


def check_written_values(parameters: Mapping[str, Parameter],
                         written: Iterable[tuple[str, str, Any]], source: str) -> None:
    """Refuse a declared parameter whose default is not the value the file's steps are
    written with: ``written`` holds (where, name, value) for each param of a step that
    is a declared parameter, ``where`` the step or the defaults that give it. The steps
    run with their own value, so a default unlike it said the run would use another,
    and ``templates new ... --force`` would write that other back into the steps."""
    for where, name, value in written:
        parameter = parameters[name]
        try:
            same = parameter.check(value) == parameter.default
        except ParameterValueError as exc:
            raise WorkflowError(
                f"{source}: parameter {name!r}: {where} gives params {name}: {value!r}, "
                f"which {exc.problem}; write its default, {name}: {parameter.default!r}, "
                "there") from None
        if not same:
            raise WorkflowError(
                f"{source}: parameter {name!r} has default {parameter.default!r}, but {where} "
                f"gives params {name}: {value!r}, the value its steps run with; make them "
                f"one: default: {value!r}, or {name}: {parameter.default!r} in {where}")


def _parameter_name(name: Any, source: str) -> str:
    if not isinstance(name, str) or not name.strip():
        raise WorkflowError(f"{source}: parameters: {name!r} is no name; name each one as "
                            "the steps' params do (rows, seed, ...)")
    return name


def _workflow_parameter(name: str, spec: Any, source: str) -> Parameter:
    where = f"{source}: parameter {name!r}"
    if isinstance(spec, Mapping) and "default" not in spec:
        checks.known_keys(spec, _PARAMETER_KEYS, where, WorkflowError)  # (defualt: its typo)
        raise WorkflowError(f"{where} has no default; give the value its steps are written "
                            "with (default: ...)")
    try:
        return _parameter(name, spec, where)
    except ParameterValueError as exc:
        raise WorkflowError(f"{where}: default {exc.value!r} {exc.problem}") from None


_ITEM_TYPES = ("str", "int", "float", "bool")


def _check_kind(key: str, kind: Any, known: tuple[str, ...], where: str) -> None:
    """Refuse a ``type`` (``items``) not one of ``known``, with the one meant if close."""
    if kind not in known:
        hint = checks.did_you_mean(kind, known)
        raise WorkflowError(f"{where}: {key} {kind!r} is not one of {known}"
                            + (f"; {hint}" if hint else ""))


def _parameter(name: str, spec: Any, where: str) -> Parameter:
    """A parameter from its spec; WorkflowErrors start with ``where``, a default it does
    not take is a ParameterValueError."""
    if not isinstance(spec, Mapping):
        raise WorkflowError(f"{where} must be a mapping with a 'type', got {spec!r}")
    checks.known_keys(spec, _PARAMETER_KEYS, where, WorkflowError)
    kind, items = spec.get("type", "str"), spec.get("items")
    _check_kind("type", kind, TYPES, where)
    if items is not None:
        _check_kind("items", items, _ITEM_TYPES, where)
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


