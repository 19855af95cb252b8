"""YAML workflows: the file format that runs the same graphs outside notebooks.

Format::

    name: example                 # optional, defaults to the file name
    description: what it does     # optional
    template: parameter-sweep     # optional: the template it was made from
    parameters:                   # optional: what --param NAME=VALUE may give each one,
      samples: {type: int, default: 200, minimum: 2}  # as a template declares them
    defaults:                     # optional; any step field, applied where a step is silent
                                  # (a mapping such as env or retries: key by key;
                                  # a step's secrets add to these, never replace them;
                                  # run or python: each step's that gives neither)
      image: python:3.12-slim
      timeout: 10m
    steps:                        # a mapping of step name -> fields (order is kept)
      fetch:
        run: |
          echo hello > "$DAGNB_OUT/greeting.txt"
      shout:
        needs: [fetch]
        run: tr a-z A-Z < "$DAGNB_IN/fetch/greeting.txt"

Step fields: run (shell text or argv list), python (``FILE.py:function``, in place of
run), image, needs, env, secrets, mounts (host path: path in the step), params, workdir,
timeout, tags, cache (true, false or session), ttl, retries (a number or a mapping of
retry settings), cache_version, services, cache_volumes, executor, errexit (false: plain
``bash -c``), circuit_breaker (false: the executor's breaker leaves the step alone),
description, and for containers user, platform, exclude. ``steps`` may also be a list of
mappings, each with a ``name``. Relative mount paths resolve against the file's folder.
YAML anchors and merge keys (``<<: *defaults``) work; a key written twice in one mapping
is refused. Top-level keys starting with ``x-`` are ignored, as in docker-compose: a
place for anchors (``x-common: &common {image: ..., timeout: 10m}``, then
``<<: *common`` in a step). A step named in the defaults' ``needs`` does not need itself
(``defaults: {needs: [setup]}``: every other step needs setup).

``parameters`` (written by ``dagnb templates new``, or by hand) checks a ``--param`` of
a name it declares as the template did (:mod:`dagnb.workflows.params`); each needs a
``default``, the value its steps are written with (in a file a template made, or the
value that template writes there for it: ``"Dear ${who}"``). It changes no step, nor any
cache key.

The orchestration platform's spelling (``command``, ``container_image``, ``environment``,
``volumes``, ``depends_on``, ``skip_cache``, ...) is read as dagnb's on load; see
:mod:`dagnb.workflows.aliases`. Written files use dagnb's spelling, under a first line
saying dagnb saved them: a save replaces such a file, never one dagnb did not write.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import datetime
import gc
import json
import os
import re
import stat
from collections.abc import Callable, Iterable, Iterator, Mapping
from pathlib import Path
from types import CodeType
from typing import Any

import yaml

from dagnb import checks
from dagnb.config.yaml_keys import SYNTAX_FIXES, base_60_misread, yaml_message
from dagnb.errors import CycleError, DagnbError, WorkflowError
from dagnb.model.graph import Graph, unknown_need_message
from dagnb.model.masking import SecretFinder, environ_secrets
from dagnb.model.step import Step, host_folders, split_names, variable_text
from dagnb.retry.policy import DEFAULT_RETRIES, RetryPolicy
from dagnb.workflows.aliases import canonical_retries, canonical_workflow
from dagnb.workflows.parameters import (
    Parameter,
    ParameterValueError,
    Yaml12Loader,
    check_written_values,
    declared_parameters,
    quoting_yaml_1_2,
    yaml_1_2_value,
)
from dagnb.workflows.published import published_reads
from dagnb.workflows.pyfunctions import (
    PYTHON_KEY,
    check_params_taken,
    import_function,
    write_module,
)
from dagnb.workflows.yaml_reading import EXPONENT_FLOAT, WorkflowLoader, reading_yaml_1_2_floats

__all__ = [
    "STEP_FIELDS", "WorkflowDumper", "WorkflowLoader", "as_saved", "dump", "explain",
    "graph_from_dict",
    "graph_to_dict", "load", "loads", "parse_yaml", "read_text", "secret_option",
]

STEP_FIELDS = tuple(
    f.name for f in dataclasses.fields(Step) if f.name not in ("name", "func", "key_fn")
)
WORKFLOW_KEYS = ("name", "description", "template", "parameters", "defaults", "steps")
_TUPLE_FIELDS = ("needs", "secrets", "tags", "services")


# Far above any real workflow, far below what hurts: a file this big, or YAML whose
# aliases add this many values to those written or that nests this deep, is refused
# before it is built. (The values written are bounded by the file's size alone: a
# 15,000-step file dagnb saved holds 200,000 of them. 32 MiB: some 400,000 steps as a
# save writes them, read in about 20 s per 100,000; a save refuses to write more.)
MAX_WORKFLOW_BYTES = 32 * 2**20
MAX_ALIAS_VALUES = 1_000_000
MAX_YAML_DEPTH = 64


def load(path: str | Path) -> Graph:
    """Load a workflow file; errors name the file (and line, for YAML syntax)."""
    path = Path(path)
    graph = loads(read_text(path, "workflow file"), source=str(path),
                  base_dir=path.resolve().parent)
    graph.base_dir = path.resolve().parent
    graph.workflow_file = path.resolve()
    if graph.name == "workflow":
        graph.name = path.stem
    return graph


def refuse_missing_workdirs(graph: Graph, source: str,
                            names: Iterable[str] | None = None) -> None:
    """Refuse, in the run's words (:func:`dagnb.executors.workdir.workdir_of`), a workdir
    that is no folder here and that no mount maps here, of a step that surely runs on this
    machine and before any other step of the run could make it (one that needs none).
    A container makes its workdir; a step that needs others may run in a folder they
    make (``mkdir build``). (``dagnb validate``'s, as its check of mounts: a notebook's
    ``%dagger load`` may be followed by a cell that makes the folder; and ``dagnb
    plan``'s, of the steps that would run: ``names``, None for all.)"""
    base = graph.base_dir or Path.cwd()
    for step in graph if names is None else graph.steps_of(names).values():
        if step.workdir is None or step.needs or any(
                path.is_dir() for path in host_folders(base, step.workdir, step.mounts)):
            continue
        if _runs_here_surely(step):
            raise WorkflowError(
                f"{source}: step {step.name!r}: its workdir {step.workdir!r} is not a folder "
                f"of this machine ({base / step.workdir}), and no mount of the step maps it "
                "here; create it, or fix the path (a step that runs on this machine runs in "
                "a folder of it)")


def _runs_here_surely(step: Step) -> bool:
    """Whether ``step`` runs on this machine whatever the run's executor: its own is
    local or dask, or it names none ('auto') and no Dagger engine is reachable from
    here, so that no run can put it in a container."""
    if step.executor in ("local", "dask"):
        return True
    if step.executor not in (None, "auto"):
        return False
    from dagnb.executors.dagger.connection import detect  # (cheap: connects to nothing)

    return not detect().available


def workflow_files(folders: Iterable[Path]) -> list[str]:
    """The workflow files and notebooks in ``folders`` (each once; not ``dagnb.yaml``),
    percent-format ``.py`` notebooks included, as paths from the working folder, for a
    refusal that names them."""
    found: list[str] = []
    for folder in dict.fromkeys(folders):
        with contextlib.suppress(OSError):  # (a folder not there: none)
            found += [str(path) for path in sorted(folder.iterdir())
                      if _runnable(path) and path.is_file()]
    return found


def _runnable(path: Path) -> bool:
    """Whether the file's name says it is a workflow or notebook dagnb runs."""
    if path.suffix == ".py":
        return _percent_notebook(path)
    return path.suffix in _WORKFLOW_SUFFIXES and path.name != "dagnb.yaml"


_WORKFLOW_SUFFIXES = (".yml", ".yaml", ".ipynb")
_PERCENT_CELL = re.compile(rb"^# %%(?:\s|$)", re.MULTILINE)  # (jupytext's percent format)


def _percent_notebook(path: Path) -> bool:
    """Whether a ``.py`` file is a notebook in the percent format (``# %%`` cells),
    which dagnb runs as one: its first 64 kB looked at."""
    try:
        with open(path, "rb") as file:
            return _PERCENT_CELL.search(file.read(65536)) is not None
    except OSError:
        return False


def read_text(path: Path, what: str) -> str:
    """The UTF-8 text of a regular file of sensible size; one-line errors otherwise."""
    try:
        info = path.stat()
    except FileNotFoundError:
        raise WorkflowError(checks.missing_file(what, path)) from None
    except OSError as exc:
        raise WorkflowError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None
    if stat.S_ISDIR(info.st_mode):
        inside = workflow_files([path])
        raise WorkflowError(f"{what} {str(path)!r} is a folder; name a .yml file" + (
            f" in it: {checks.listed(inside, most=6)}" if inside else " (it holds none)"))
    if not stat.S_ISREG(info.st_mode):
        raise WorkflowError(f"{what} {str(path)!r} is not a regular file (a pipe or a "
                            "device); name a .yml file")
    if info.st_size > MAX_WORKFLOW_BYTES:
        raise WorkflowError(f"{what} {str(path)!r} is {info.st_size} bytes; a workflow is "
                            f"at most {MAX_WORKFLOW_BYTES // 2**20} MiB")
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise WorkflowError(f"{what} {str(path)!r} is not UTF-8 text (byte {exc.start}); "
                            "save it as UTF-8") from None
    except OSError as exc:
        raise WorkflowError(f"{what} {str(path)!r} cannot be read: {exc.strerror}") from None


def loads(text: str, *, source: str = "<string>", base_dir: Path | None = None) -> Graph:
    """Parse workflow YAML text (``python:`` steps import their module from ``base_dir``)."""
    with collections_paused():
        data = parse_yaml(text, source)
        if not isinstance(data, Mapping):
            raise WorkflowError(not_a_workflow(source, data))
        _check_as_written(data, _as_written(text, source), source)
        return graph_from_dict(data, source=source, base_dir=base_dir, file=True)


@contextlib.contextmanager
def collections_paused() -> Iterator[None]:
    """No cyclic garbage collection while a workflow is read or written: its millions of
    new objects (YAML nodes, values, steps) make none, and collections over them, each
    walking all of them so far, took 13 of a 60,000-step file's 21 s to load. Left as it
    was where it is off already."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


def _as_written(text: str, source: str) -> Any:
    """The document with its numbers, booleans and nulls as the text written (it
    parsed already: a problem here is said in one line all the same)."""
    try:
        return yaml.load(text, Loader=_C_WRITTEN)
    except yaml.YAMLError:
        pass  # (said in pure Python's words, as always)
    try:
        return yaml.load(text, Loader=_WrittenLoader)
    except yaml.YAMLError as exc:
        raise WorkflowError(_yaml_message(exc, source)) from None


def parse_yaml(text: str, source: str, *, yaml_1_2: bool = False) -> Any:
    """YAML data, refused before it is built when aliases would blow it up or it nests
    absurdly deep (a few hundred bytes of aliases can expand to billions of values);
    every problem is a one-line WorkflowError starting with ``source``. Read by libyaml
    (C) where PyYAML has it; a problem is then found again in pure Python, to be said in
    the words, and with the limits, it always had. ``yaml_1_2``: booleans and numbers
    read by YAML 1.2's core schema (``0755`` is 755, ``12:30`` and ``yes`` text), as a
    ``--param`` value is (:class:`~dagnb.workflows.parameters.Yaml12Loader`)."""
    if yaml_1_2:
        return _parsed(text, source, Yaml12Loader)
    try:
        return _parsed(text, source, _C_STRICT)
    except WorkflowError:
        if _C_STRICT is _StrictLoader:
            raise
    return _parsed(text, source, _StrictLoader)


def _parsed(text: str, source: str, loader_class: type[_StrictLoader]) -> Any:
    loader = loader_class(text)  # a SafeLoader: no arbitrary objects
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_expansion(node, source)
        return loader.construct_document(node)
    except yaml.YAMLError as exc:
        raise WorkflowError(_yaml_message(exc, source)) from None
    except DagnbError:
        raise
    except RecursionError:
        raise WorkflowError(f"{source}: YAML nests too deeply; a workflow nests at most "
                            f"{MAX_YAML_DEPTH} levels") from None
    except (TypeError, ValueError) as exc:  # an unhashable key, a 5,000-digit number
        problem = str(exc).split(":")[0] if "digits" in str(exc) else str(exc)
        raise WorkflowError(f"{source}: YAML does not load ({problem}); fix that value") from None
    finally:
        loader.dispose()


def _check_expansion(root: yaml.Node, source: str) -> None:
    """Refuse YAML whose aliases stand for too many values ("billion laughs": a few
    hundred bytes of aliases of aliases stand for billions), whose alias refers to the
    value holding it, or that nests too deep. What counts is what aliases add: each use
    of a value beyond its first adds its size, expanded (its own aliases' values too),
    so a file with no alias is never refused here however big it is."""
    sizes: dict[int, int] = {}  # node -> its size expanded, once its walk is done
    walking: set[int] = set()  # the nodes holding the one at hand
    added = 0
    stack: list[tuple[yaml.Node, int, list[yaml.Node] | None]] = [(root, 0, None)]
    while stack:
        node, depth, kids = stack.pop()
        key = id(node)
        if kids is not None:  # (all its children walked)
            walking.discard(key)
            sizes[key] = 1 + sum(sizes[id(kid)] for kid in kids)
        elif key in sizes:  # a value used again: an alias
            added += sizes[key]
            if added > MAX_ALIAS_VALUES:
                raise WorkflowError(f"{source}: YAML aliases expand to more than "
                                    f"{MAX_ALIAS_VALUES} values beyond those written; "
                                    "write the data out instead")
        elif key in walking:
            raise WorkflowError(f"{source}, line {node.start_mark.line + 1}: a YAML alias "
                                "refers to the value that contains it")
        elif depth > MAX_YAML_DEPTH:
            raise WorkflowError(f"{source}, line {node.start_mark.line + 1}: YAML nests "
                                f"more than {MAX_YAML_DEPTH} levels deep")
        elif isinstance(node, yaml.ScalarNode):
            sizes[key] = 1
        else:
            kids = _children(node)
            walking.add(key)
            stack.append((node, depth, kids))
            stack.extend((kid, depth + 1, None) for kid in kids)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [part for pair in node.value for part in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


_StrictLoader = WorkflowLoader  # (see dagnb.workflows.yaml_reading)
_reading_yaml_1_2_floats = reading_yaml_1_2_floats


class _WrittenLoader(_StrictLoader):
    """Reads numbers, booleans, nulls and dates as the text they were written as
    (``3.10``, ``0755``, ``yes``, ``2024-01-01``), for :func:`_check_as_written`."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # no check for keys given twice: the document's own read made it, and as text
        # the keys 1 and "1" are one
        yaml.SafeLoader.flatten_mapping(self, node)


for _tag in ("int", "float", "bool", "null", "timestamp"):
    _WrittenLoader.add_constructor(f"tag:yaml.org,2002:{_tag}",
                                   yaml.constructor.SafeConstructor.construct_scalar)


def _with_libyaml(loader_class: type[_StrictLoader]) -> type[_StrictLoader]:
    """``loader_class`` reading its text with libyaml's parser, its own constructor kept
    (PyYAML's pure-Python scanner took 1.6 s to read a 2,000-step workflow twice, most
    of a cached re-run); itself when PyYAML was built without libyaml."""
    if not getattr(yaml, "__with_libyaml__", False):
        return loader_class

    class CLoader(yaml.cyaml.CParser, loader_class):  # type: ignore[misc,valid-type]
        def __init__(self, stream: str) -> None:
            yaml.cyaml.CParser.__init__(self, stream)
            yaml.constructor.SafeConstructor.__init__(self)
            yaml.resolver.Resolver.__init__(self)

    CLoader.__name__ = f"C{loader_class.__name__}"
    return CLoader


_C_STRICT = _with_libyaml(_StrictLoader)
_C_WRITTEN = _with_libyaml(_WrittenLoader)

# The step fields whose values become text (variables, argv), in either spelling.
_TEXT_FIELDS = ("env", "environment", "run", "command")


def _check_as_written(data: Any, written: Any, source: str) -> None:
    """Refuse an env value or argv item YAML read as something other than its text:
    ``3.10`` is the number 3.1, ``0755`` the number 493, ``yes`` true, ``~`` null; a
    param written bare that a reader may take for another value (:func:`_check_params`).
    And a workflow ``name`` YAML read as no text, said as written."""
    _check_name(data.get("name"), _at(written, "name"), source)
    _check_step_names(data.get("steps"), _at(written, "steps"), source)
    _check_params(data, written, source)
    _check_durations(data, written, source)
    for where, holder, key, text in _text_values(data, written):
        value = holder[key]
        if isinstance(value, float) and isinstance(text, str) and EXPONENT_FLOAT.match(text):
            holder[key] = value = text  # (text: `--lr 1e-3` as written, a number to YAML 1.2)
        if value is None:
            raise WorkflowError(f"{source}: {where} is null; give a string, e.g. \"\"")
        reading = _misread(value, text) if isinstance(text, str) else ""
        if reading:
            raise WorkflowError(f"{source}: {where}: {text} reads as {reading} in YAML; "
                                f"quote it: \"{text}\"")


def _check_name(name: Any, written: Any, source: str) -> None:
    """Refuse a ``name`` that is not text: ``off`` was false, and the run went by the
    file's stem; ``3.10`` the name 3.1; ``[etl, daily]`` the name "['etl', 'daily']"."""
    if name is None or isinstance(name, str):  # (none: named after the file)
        return
    text = written if isinstance(written, str) else yaml.safe_dump(
        written, default_flow_style=True, width=float("inf")).removesuffix("...\n").strip()
    # (a scalar against no text: what it read as, true and 2024 too)
    reading = _misread(name, "") or f"a {_KINDS.get(type(name), type(name).__name__)}"
    raise WorkflowError(f"{source}: name: {text} reads as {reading} in YAML; quote it: "
                        f"\"{text}\"")


_KINDS = {list: "list", dict: "mapping"}


def _check_step_names(steps: Any, written: Any, source: str) -> None:
    """Refuse a step name YAML read as no text: a step ``on`` was named True (and
    ``needs: [on]`` needed True), said as written."""
    if isinstance(steps, Mapping) and isinstance(written, Mapping) and len(steps) == len(
            written):
        pairs: Iterator[tuple[Any, Any]] = zip(steps, written, strict=True)
    elif isinstance(steps, list) and isinstance(written, list) and len(steps) == len(written):
        pairs = ((_at(fields, "name"), _at(text, "name")) for fields, text in zip(
            steps, written, strict=True))
    else:
        return
    for name, text in pairs:
        reading = _misread(name, text) if isinstance(text, str) else ""
        if reading:
            raise WorkflowError(f"{source}: step name {text} reads as {reading} in YAML; "
                                f"quote it: \"{text}\" (and where a step needs it)")


# The step fields that are durations (``10m`` or seconds), in either spelling, and the
# retry settings that are seconds (a number only), at a step's top (the platform's) or in
# its ``retries``.
_DURATION_FIELDS = ("timeout", "timeout_seconds", "ttl", "cache_ttl_seconds")
_SECONDS_FIELDS = ("backoff_factor", "retry_backoff_factor", "max_delay", "jitter",
                   "retry_jitter")


def _check_durations(data: Any, written: Any, source: str) -> None:
    """Refuse a duration YAML 1.1 read as a base-60 number: ``timeout: 1:30`` was 90 s
    and ``ttl: 12:00`` 12 minutes without a word, where ``--timeout 1:30``, ``"1:30"``
    and a param's bare ``9:45`` are refused."""
    for where, fields, texts in _fields_written(data, written):
        if not isinstance(fields, Mapping):
            continue
        retries, retries_text = fields.get("retries"), _at(texts, "retries")
        for holder, holder_text, prefix in ((fields, texts, where),
                                            (retries, retries_text, f"{where}: retries")):
            if not isinstance(holder, Mapping):
                continue
            for key in (*_DURATION_FIELDS, *_SECONDS_FIELDS):
                message = base_60_misread(key, holder.get(key), _at(holder_text, key),
                                          units=key in _DURATION_FIELDS)
                if message:
                    raise WorkflowError(f"{source}: {prefix}: {message}")


def _misread(value: Any, text: str) -> str:
    """What YAML read ``text`` as, when that is not the text (``True`` as true is)."""
    if isinstance(value, bool):
        return "" if text.lower() in ("true", "false") else str(value).lower()
    if isinstance(value, (int, float)) and str(value) != text:
        return f"the number {value}"
    if isinstance(value, datetime.date):  # (2024-01-01: a date to YAML 1.1, text to 1.2)
        return "a date and time" if isinstance(value, datetime.datetime) else "a date"
    return ""


def _check_params(data: Any, written: Any, source: str) -> None:
    """Refuse a param (a step's, the defaults', a declared parameter's default) written
    bare that the file's YAML (1.1) reads as a value a reader may not mean: ``12:30`` is
    750, ``0755`` 493, ``yes`` true, where YAML 1.2 (and a --param) reads the text 12:30,
    755 and the text yes. Said as an env value is. (Not ``0.50``, a number to both, most
    often a ratio: an env value's ``3.10`` is refused, as the text it becomes is 3.1.)"""
    for where, value, text, kind in _param_values(data, written):
        reading = _misread_param(value, text, kind)
        if reading:
            raise WorkflowError(f"{source}: {where}: {text} reads as {reading} in YAML; "
                                f"{_quoting_fix(value, text)}")


def _misread_param(value: Any, text: str, kind: str | None) -> str:
    """What YAML read a param's bare ``text`` as (as :func:`_misread` says it), when a
    reader may mean another value: YAML 1.2 reads it otherwise. Nothing when the declared
    ``kind`` says which: a bool's ``yes``; a text's is any value that is no text."""
    reading = _misread(value, text)
    if not reading or kind == "str":
        return reading
    if kind in ("bool", "float") and kind == type(value).__name__:
        return ""
    if isinstance(value, datetime.date):  # (no param holds one: JSON has no dates)
        return reading
    if _same_value(yaml_1_2_value(text), value):
        return ""  # (+5, 0x1F, .5, 0.50, 1e-3: one number to either YAML, and to a reader)
    return reading


def as_written(value: Any) -> str:
    """``value`` as ``--param NAME=...`` gives it back (what :func:`read_value` reads as
    ``value``): ``Paris``, ``5``, ``'5'`` (the text), ``[a, b]``."""
    text = yaml.dump(value, Dumper=WorkflowDumper, default_flow_style=True,
                     width=float("inf"), allow_unicode=True).removesuffix("...\n").strip()
    return json.dumps(value, ensure_ascii=False) if "\n" in text else text  # (one line)


def _same_value(one: Any, other: Any) -> bool:
    return type(one) is type(other) and (one == other or (one != one and other != other))


def _quoting_fix(value: Any, text: str) -> str:
    """Quote ``text``; or, for a boolean a reader may have meant, write that."""
    fix = f'quote it: "{text}"'
    if isinstance(value, bool):
        fix += f", or write {json.dumps(value)} for the boolean"
    return fix


def _param_values(data: Any, written: Any) -> Iterator[tuple[str, Any, str, str | None]]:
    """(where, value, text as written, declared type) of each param value of the defaults
    and steps, and of each declared parameter's default; an item of a list or a mapping
    on its own."""
    specs, spec_texts = data.get("parameters"), _at(written, "parameters")
    kinds = _declared_kinds(specs)
    for where, fields, texts in _fields_written(data, written):
        params, params_text = _at(fields, "params"), _at(texts, "params")
        if isinstance(params, Mapping) and isinstance(params_text, Mapping):
            for name, value in params.items():
                if isinstance(name, str):
                    yield from _leaves(value, params_text.get(name),
                                       f"{where}: params {name}", kinds.get(name))
    if isinstance(specs, Mapping):
        for name, spec in specs.items():
            if isinstance(name, str) and isinstance(spec, Mapping) and "default" in spec:
                yield from _leaves(spec["default"], _at(_at(spec_texts, name), "default"),
                                   f"parameter {name!r}: default", kinds.get(name))


def _declared_kinds(specs: Any) -> dict[str, str]:
    """Each declared parameter's type (a list's: its items'), as the file writes it."""
    kinds = {}
    for name, spec in specs.items() if isinstance(specs, Mapping) else ():
        if isinstance(spec, Mapping):
            kind = spec.get("items") if spec.get("type") == "list" else spec.get("type", "str")
            if isinstance(kind, str):
                kinds[name] = kind
    return kinds


def _leaves(value: Any, text: Any, where: str,
            kind: str | None) -> Iterator[tuple[str, Any, str, str | None]]:
    """(where, value, text) of ``value`` and, in a list or mapping, of each item."""
    if isinstance(value, list) and isinstance(text, list) and len(text) == len(value):
        for index, (item, item_text) in enumerate(zip(value, text, strict=True)):
            yield from _leaves(item, item_text, f"{where}[{index}]", kind)
    elif isinstance(value, Mapping) and isinstance(text, Mapping):
        for key, item in value.items():
            if isinstance(key, str):
                yield from _leaves(item, text.get(key), f"{where}.{key}", kind)
    elif isinstance(text, str):
        yield where, value, text, kind


def _text_values(data: Any, written: Any) -> Iterator[tuple[str, Any, Any, str]]:
    """(where, its mapping or list, its key there, text as written) of each env value and
    argv item of the defaults and steps; anything of another shape is left for the
    loader to refuse."""
    for where, fields, texts in _fields_written(data, written):
        yield from _fields_text(fields, texts, where)


def _fields_written(data: Any, written: Any) -> Iterator[tuple[str, Any, Any]]:
    """(where, fields, the fields as written) of the defaults and of each step."""
    for key in ("defaults", "workflow_defaults"):
        yield key, data.get(key), _at(written, key)
    steps, texts = data.get("steps"), _at(written, "steps")
    if isinstance(steps, Mapping):
        for name, fields in steps.items():
            yield f"step {name!r}", fields, _at(texts, name)
    elif isinstance(steps, list) and isinstance(texts, list) and len(texts) == len(steps):
        for fields, text in zip(steps, texts, strict=True):
            name = fields.get("name") if isinstance(fields, Mapping) else None
            yield f"step {name!r}", fields, text


def _fields_text(fields: Any, texts: Any, where: str) -> Iterator[tuple[str, Any, Any, str]]:
    if not isinstance(fields, Mapping):
        return
    for key in _TEXT_FIELDS:
        value, text = fields.get(key), _at(texts, key)
        if isinstance(value, dict) and isinstance(text, Mapping):
            yield from ((f"{where}: {key} {name}", value, name, text.get(name))
                        for name in list(value) if isinstance(name, str))
        elif isinstance(value, list) and isinstance(text, list) and len(text) == len(value):
            yield from ((f"{where}: {key}[{i}]", value, i, text[i])
                        for i in range(len(value)))


def _at(written: Any, key: str) -> Any:
    return written.get(key) if isinstance(written, Mapping) else None


def _yaml_message(exc: yaml.YAMLError, source: str) -> str:
    return yaml_message(exc, source, _SYNTAX_FIXES)


# a workflow file's own words for a second document and a quoted command
_SYNTAX_FIXES = {
    **SYNTAX_FIXES,
    "but found another document":
        "a workflow file is one YAML document: remove this '---' (or split the file in "
        "two, one workflow each)",
    "mapping values are not allowed here":
        "a ': ' in a plain value starts a mapping; quote the whole value "
        "(run: 'echo \"lu: x\"') or write it as a block (run: |, the text on the lines "
        "below)",
}


# the settings a cache shared through a store needs, which dagnb.yaml's workflow_defaults
# hold (the README's "Sharing a cache"): pasted into a workflow file's, each is told so
_SETTINGS_ONLY = ("cache_directory", "cache_local_directory", "cache_storage_options")


# Top-level keys a workflow ignores, as docker-compose does: a place for YAML anchors
# that steps merge (``x-common: &common {...}``, then ``<<: *common``)
_EXTENSION_PREFIX = "x-"
_EXTENSION_NOTE = ("top-level keys starting with x- are ignored, and may hold YAML "
                   "anchors for the steps: x-common: &common {...}")


def _without_extensions(data: Mapping[str, Any]) -> Mapping[str, Any]:
    """``data`` without its ``x-`` keys (their anchors were resolved as the YAML was read)."""
    if not any(_is_extension(key) for key in data):
        return data
    return {key: value for key, value in data.items() if not _is_extension(key)}


def _is_extension(key: Any) -> bool:
    return isinstance(key, str) and key.startswith(_EXTENSION_PREFIX)


def _refuse_settings_in_defaults(defaults: Any, source: str, written: str) -> None:
    """Refuse a setting written among a workflow file's defaults, naming where it goes."""
    if not isinstance(defaults, Mapping):  # (said as the defaults are read)
        return
    for key in _SETTINGS_ONLY:
        if key in defaults:
            raise WorkflowError(
                f"{source}: {written}: {key!r} is a setting, not a workflow key; put it in "
                f"dagnb.yaml's workflow_defaults (or set DAGNB_{key.upper()})")


def graph_from_dict(data: Mapping[str, Any], *, source: str = "<dict>",
                    base_dir: Path | None = None, file: bool = False) -> Graph:
    """Build a Graph from workflow-format data; errors name ``source``, step and key.
    ``file``: the data is a file's (in ``base_dir``), whose params, when a template made
    it, are checked against what that template writes (:func:`_check_template_values`)."""
    data = _without_extensions(data)
    known = (*WORKFLOW_KEYS, "workflow_defaults")  # the platform's name of defaults
    checks.known_keys(data, known, source, WorkflowError, noun="workflow key",
                      see=f" ({_EXTENSION_NOTE})")
    for written in ("defaults", "workflow_defaults"):  # (before their keys are read)
        _refuse_settings_in_defaults(data.get(written), source, written)
    data = canonical_workflow(data, source).data
    defaults = data.get("defaults") or {}
    if not isinstance(defaults, Mapping):
        raise WorkflowError(
            f"{source}: defaults must be a mapping of step fields, got {defaults!r}"
        )
    checks.known_keys(defaults, (*STEP_FIELDS, PYTHON_KEY), f"{source}: defaults",
                      WorkflowError)
    if defaults.get("run") is not None and defaults.get(PYTHON_KEY) is not None:
        raise WorkflowError(f"{source}: defaults give both run and python, and a step runs "
                            "one; keep one there (a step running the other gives it itself)")
    graph = Graph(_workflow_name(data.get("name"), source),
                  description=str(data.get("description") or ""))
    graph.parameters = _declared_parameters(data.get("parameters"), source)
    graph.template = _template_id(data.get("template"), source)
    _check_retries(defaults.get("retries"), f"{source}: defaults")
    items = _step_items(data.get("steps"), source)
    if file:
        _refuse_fields_under_params(items, defaults, source, listed=isinstance(
            data.get("steps"), list))
    for name, fields in items:
        checks.known_keys(fields, (*STEP_FIELDS, PYTHON_KEY), f"{source}: step {name!r}",
                          WorkflowError)
        merged = _over_defaults(fields, defaults)
        if "needs" not in fields and "needs" in defaults:
            merged["needs"] = _needs_but_itself(defaults["needs"], name)
        _check_retries(merged.get("retries"), f"{source}: step {name!r}")
        if (merged.get(PYTHON_KEY) is None) == (merged.get("run") is None):  # (not func=)
            raise WorkflowError(f"{source}: step {name!r} needs exactly one of run (a shell "
                                "command) or python (FILE.py:FUNCTION)")
        if PYTHON_KEY in merged:  # a Python step: its function from the module beside
            where = f"{source}: step {name!r}"
            merged["func"] = import_function(merged.pop(PYTHON_KEY), base_dir or Path.cwd(),
                                             where)
            check_params_taken(merged["func"], _own_params(fields), where)
        graph.add(_make_step(name, merged, source))
    inheriting = {name for name, fields in items if "needs" not in fields}
    _check_needs(graph, source, defaults.get("needs"), inheriting)
    own = {name: _own_params(fields) for name, fields in items}
    if graph.template is None:
        _check_parameter_values(graph, own, source)
    elif file:  # (not the template's own graph: it is what the file is checked against)
        _check_template_values(graph, own, source, base_dir or Path.cwd())
    return graph


# A step's own fields: a param's mapping holding one is a step indented under params:
_COMMAND_FIELDS = ("run", PYTHON_KEY)
_NEEDS_SPELLINGS = ("needs", "depends_on")  # (dagnb's and the platform's)


def _refuse_fields_under_params(items: list[tuple[str, Mapping[str, Any]]],
                                defaults: Mapping[str, Any], source: str, *,
                                listed: bool) -> None:
    """Refuse what an indentation slip put under a ``params:`` (the step's, the
    defaults'): a step there was silently a param holding a mapping, and never ran; a
    ``needs:`` there a param, the step then needing nothing."""
    names = {name for name, _ in items}
    owners = [(None, defaults), *items]  # (None: the defaults)
    for owner, fields in owners:
        params = fields.get("params")
        for param, value in params.items() if isinstance(params, Mapping) else ():
            where = f"{source}: {'defaults' if owner is None else f'step {owner!r}'}"
            if _looks_like_a_step(value):
                place = ("as an item of its own" if listed else
                         "at the indentation of the steps" if owner is None else
                         f"at the indentation of {owner!r}")
                raise WorkflowError(
                    f"{where}: param {param!r} holds a mapping with {_command_of(value)}, "
                    "a step's field: it looks like a step indented under params; move it "
                    f"under steps:, {place}")
            if param in _NEEDS_SPELLINGS and _names_steps(value, names):
                whose = "the defaults'" if owner is None else "the step's"
                raise WorkflowError(
                    f"{where}: param {param!r} ({as_written(value)}) names steps of this "
                    f"file: it looks like {whose} {param} indented under params; move "
                    f"{param}: out of params:, to the indentation of params:")


def _looks_like_a_step(value: Any) -> bool:
    return isinstance(value, Mapping) and any(key in value for key in _COMMAND_FIELDS)


def _command_of(fields: Mapping[str, Any]) -> str:
    return next(key for key in _COMMAND_FIELDS if key in fields)


def _names_steps(value: Any, names: set[str]) -> bool:
    """Whether ``value`` is step names (as ``needs`` takes them), each one of ``names``."""
    listed = split_names(value) if isinstance(value, str) else value
    return (isinstance(listed, list) and bool(listed)
            and all(isinstance(item, str) and item in names for item in listed))


def _check_retries(retries: Any, where: str) -> None:
    """Refuse, in the words of the file, a ``retries`` the retry layer would refuse when
    the run starts (in its own words, naming no file); a count is Step's to check."""
    if retries is None or isinstance(retries, int):  # (true and false are ints too)
        return
    if not isinstance(retries, Mapping):
        kind = "a whole number" if isinstance(retries, float) else "a number"
        raise WorkflowError(f"{where}: retries: {retries!r} is not {kind}; write retries: 3 "
                            "or retries: {max_retries: 3, backoff_factor: 2}")
    _check_retry_on(retries, where)  # (exit codes: no exception type or predicate in YAML)
    try:
        RetryPolicy.from_value(retries)
    except DagnbError as exc:
        problem = str(exc).removeprefix("retry setting ")  # (what follows retries:)
        raise WorkflowError(f"{where}: retries: {problem}") from None


def _needs_but_itself(needs: Any, name: str) -> Any:
    """The defaults' ``needs`` as step ``name`` takes them: without ``name`` itself (the
    step they name needs the others, not itself); other shapes are Step's to refuse."""
    listed = split_names(needs) if isinstance(needs, str) else needs
    if not isinstance(listed, (list, tuple)) or name not in listed:
        return needs
    return [need for need in listed if need != name]


def _check_needs(graph: Graph, source: str, default_needs: Any = None,
                 inheriting: set[str] | frozenset[str] = frozenset()) -> None:
    """Refuse a need that names no step, needs that form a cycle, and a Python step whose
    function takes a name that is neither a need nor a param, naming the file (the
    graph's own check, as a run makes it, names none). ``inheriting``: the steps that
    take the defaults' needs (``default_needs``), named when a cycle passes through one,
    and said once, as the defaults', when one of those names no step."""
    for step in graph:
        for need in step.needs:
            if need in graph:
                continue
            if step.name in inheriting and default_needs:  # (not each step taking it)
                hint = checks.did_you_mean(need, graph.names,
                                           otherwise=checks.choices_named(need, graph.names))
                raise WorkflowError(f"{source}: defaults: needs: {as_written(default_needs)} "
                                    f"names {need!r}, which is not a step; {hint}")
            raise WorkflowError(
                f"{source}: {unknown_need_message(step.name, need, graph.names)}")
    try:  # (a cycle; a Python step's function against its needs and params)
        graph.validate()
    except CycleError as exc:
        raise WorkflowError(f"{source}: {exc}"
                            f"{_from_defaults(exc.cycle, default_needs, inheriting)}") from None
    except DagnbError as exc:
        raise WorkflowError(f"{source}: {exc}") from None


def _from_defaults(cycle: list[str], default_needs: Any, inheriting: set[str] | frozenset[str]
                   ) -> str:
    """Where a cycle's needs come from the defaults: which steps take them, and the fix."""
    taking = list(dict.fromkeys(name for name in cycle if name in inheriting))
    if not default_needs or not taking:
        return ""
    one = len(taking) == 1
    return (f" ({', '.join(map(repr, taking))} take{'s' if one else ''} "
            f"defaults: needs: {as_written(default_needs)}; give {'it' if one else 'each'} "
            "needs of its own, needs: [] for none)")


def _check_parameter_values(graph: Graph, own: Mapping[str, list[str]], source: str) -> None:
    """Each declared parameter's default against the value each step runs with, said
    where the file writes it: in the step's own params (``own``), else the defaults'."""
    check_written_values(graph.parameters, [(where, name, value) for where, name, value, _
                                            in _parameter_values(graph, own)], source)


def _parameter_values(graph: Graph,
                      own: Mapping[str, list[str]]) -> Iterator[tuple[str, str, Any, Step]]:
    """(where the file writes it, name, value, step) of each step's param that is a
    declared parameter: ``where`` is the step, or the defaults when not its ``own``."""
    for step in graph:
        for name, value in step.params.items():
            if name in graph.parameters:
                where = f"step {step.name!r}" if name in own[step.name] else "defaults"
                yield where, name, value, step


def _check_template_values(graph: Graph, own: Mapping[str, list[str]], source: str,
                           folder: Path) -> None:
    """The check of :func:`_check_parameter_values` for a file a template made: a value
    that template writes there for the file's parameter values passes (it may be made of
    one, ``"Dear ${who}"``, never its default), any other must be the default, as in a
    hand-written file (a step edited to ``samples: 500`` under a default of 200 ran 500,
    and the ``--force`` a refusal named wrote 200 back). Left alone when the template is
    not here, or refuses those values: which values it wrote, nothing can tell."""
    from dagnb.workflows.templates import (  # (the templates build on this module)
        check_branch_items,
        made_again,
    )

    made = made_again(graph, folder)
    if made is None:
        return
    check_branch_items(graph, made, source)
    hand_written = []
    for where, name, value, step in _parameter_values(graph, own):
        wrote = made[step.name].params.get(name, _NONE) if step.name in made else _NONE
        if _same_value(value, wrote):
            continue
        default = graph.parameters[name].default
        if wrote is not _NONE and _made_of(graph.parameters[name], wrote):
            raise WorkflowError(
                f"{source}: parameter {name!r} has default {default!r}, for which template "
                f"{graph.template!r} writes params {name}: {wrote!r} in {where}, but the file "
                f"gives {value!r} there; write {name}: {wrote!r} there, or give {name} the "
                "default that value is made of")
        hand_written.append((where, name, value))
    check_written_values(graph.parameters, hand_written, source)


_NONE: Any = object()  # (no value: the template's step has no such param)


def _made_of(parameter: Parameter, wrote: Any) -> bool:
    """Whether the value a template ``wrote`` is made of ``parameter``'s default rather
    than being it (``"Dear Ann"`` of ``Ann``)."""
    try:
        return parameter.check(wrote) != parameter.default
    except ParameterValueError:
        return True


def as_saved(graph: Graph, folder: Path) -> Graph:
    """``graph`` as the file :func:`dump` would save it to in ``folder`` reads back: its
    relative paths (mounts, workdir) rewritten for that folder, as a save rewrites them."""
    data = graph_to_dict(graph)
    _moved(data["steps"], (graph.base_dir or Path.cwd()).resolve(), folder.resolve())
    return graph_from_dict(data, source=f"graph {graph.name!r}", base_dir=folder)


def _declared_parameters(specs: Any, source: str) -> dict[str, Any]:
    """The ``parameters`` section's Parameters, by name (none: no import of templates)."""
    if specs is None:
        return {}

    return declared_parameters(specs, source)


_TEMPLATE_ID = re.compile(r"^[\w.-]+$")


def _template_id(given: Any, source: str) -> str | None:
    """The ``template`` key: a template's id, as ``dagnb templates list`` shows it."""
    if given is None or (isinstance(given, str) and _TEMPLATE_ID.match(given)):
        return given
    raise WorkflowError(f"{source}: template {given!r} is no template id; give the id "
                        "`dagnb templates list` shows (such as parameter-sweep), or remove it")


def _own_params(fields: Mapping[str, Any]) -> list[str]:
    """The param names a step gives itself (the defaults' reach every step: a Python
    step need not take those its shell steps read)."""
    params = fields.get("params")
    return [str(name) for name in params] if isinstance(params, Mapping) else []


# Fields whose value is a mapping: a step's own entries are added to the defaults' (the
# step's win), as the config file's settings layer, rather than replacing them all.
_MAPPING_FIELDS = ("env", "params", "mounts", "cache_volumes", "retries")


def _over_defaults(fields: Mapping[str, Any], defaults: Mapping[str, Any]) -> dict[str, Any]:
    """A step's fields over the defaults: a mapping merges key by key, secrets add up,
    the rest replaces."""
    merged = {**defaults, **fields}
    # the step's own command wins over the defaults' run or python, as its other fields
    # do (not "both given"): a default command is each step's that gives none
    if PYTHON_KEY in fields and "run" not in fields:
        merged.pop("run", None)
    if "run" in fields and PYTHON_KEY not in fields:
        merged.pop(PYTHON_KEY, None)
    for key in _MAPPING_FIELDS:
        if key in fields and key in defaults:
            merged[key] = _merged(defaults[key], fields[key], key)
    if "secrets" in fields and "secrets" in defaults:
        merged["secrets"] = _secret_union(defaults["secrets"], fields["secrets"])
    if "retries" in merged:
        merged["retries"] = _without_enabled(merged["retries"])
    return merged


def _without_enabled(retries: Any) -> Any:
    """``retries`` without an ``enable_retry: true``, which only undoes the defaults'
    false (merged already): the step is then the one its other settings make."""
    if not isinstance(retries, Mapping) or retries.get("enable_retry") is not True:
        return retries
    rest = {key: value for key, value in retries.items() if key != "enable_retry"}
    return rest or None


def _secret_union(default: Any, own: Any) -> Any:
    """The defaults' secret names then the step's, once each. A step's list adds to the
    defaults' rather than replacing it: a secret no step declared would be neither masked
    nor withheld, so its value would reach the step's logs and the cache in plain text."""
    names = _name_list(default), _name_list(own)
    if None in names:  # not a list of names: the step's own check says what is wrong
        return default if names[0] is None else own
    return list(dict.fromkeys([*names[0], *names[1]]))


def _name_list(value: Any) -> list[Any] | None:
    """``value`` as a list, a string split as Step splits it; None if not a list."""
    if value is None:
        return []
    if isinstance(value, str):
        return split_names(value)
    return list(value) if isinstance(value, (list, tuple)) else None


def _merged(default: Any, own: Any, key: str) -> Any:
    """``own`` over ``default`` when both are mappings; a retries count is max_retries
    (so ``retries: 3`` over ``{backoff_factor: 2}`` keeps the factor); a step's mount
    or cache volume replaces the default's at the same container path."""
    if key == "retries" and (isinstance(default, Mapping) or isinstance(own, Mapping)):
        default, own = _retry_settings(default), _retry_settings(own)
        if isinstance(default, Mapping) and isinstance(own, Mapping) and (
                "max_retries" in own and "enable_retry" not in own):
            # a step's own count turns retries on, as its plain ``retries: 3`` does
            default = {k: v for k, v in default.items() if k != "enable_retry"}
    if isinstance(default, Mapping) and isinstance(own, Mapping):
        if key in _BY_TARGET:
            taken = {_target(value) for value in own.values()}
            default = {k: v for k, v in default.items() if _target(v) not in taken}
        return {**default, **own}
    return own


# Mappings whose values are container paths (host -> target, alias -> "path[:sharing]"):
# merged by path, not by key, as two at one path are one too many
_BY_TARGET = ("mounts", "cache_volumes")


def _target(value: Any) -> Any:
    return value.split(":", 1)[0] if isinstance(value, str) else value


def _retry_settings(value: Any) -> Any:
    """A ``retries`` value as settings to merge: a count is ``max_retries``, true the
    default count, false no retries at all (a step's backoff must not turn them on)."""
    if isinstance(value, bool):
        return {"max_retries": DEFAULT_RETRIES} if value else {"enable_retry": False}
    return {"max_retries": value} if isinstance(value, int) else value


def _workflow_name(name: Any, source: Any) -> str:
    """The workflow's ``name:``, refused with a control character (a newline, a terminal
    escape): it is printed as it is under each run and kept in the run records. One
    that is no text is refused (a file's, on load, as written: :func:`_check_name`)."""
    if name is not None and not isinstance(name, str):
        raise WorkflowError(f"{source}: name {name!r} is not text; give it as a string")
    text = name or "workflow"
    if any(ord(char) < 32 or 127 <= ord(char) < 160 for char in text):
        raise WorkflowError(f"{source}: name {text!r} holds a control character; write it "
                            "as one line of printable text")
    return text


# the least workflow, as a fix names it
_EXAMPLE = "steps: {hello: {run: echo hello}}"


def _function_like(name: Any) -> str:
    """A step's name as a Python function's (``clean-data``: ``clean_data``)."""
    text = str(name).replace("-", "_")
    return text if text.isidentifier() else "main"


def not_a_workflow(source: str, data: Any) -> str:
    """Why YAML ``data`` that is no mapping is no workflow (an empty file: None), with the
    least one as the fix."""
    if data is None:
        return f"{source}: the file is empty; write its steps in it, like {_EXAMPLE}"
    return (f"{source}: a workflow is a mapping with a 'steps' key, got "
            f"{checks.short_repr(data, 60, one_line=True)}; write it like {_EXAMPLE}")


def _step_items(steps: Any, source: str) -> list[tuple[str, Mapping[str, Any]]]:
    if steps is None:  # (no steps key, or one with nothing under it)
        raise WorkflowError(f"{source}: no steps; list them under 'steps', like {_EXAMPLE}")
    if isinstance(steps, Mapping):
        items = list(steps.items())
    elif isinstance(steps, list):
        items = [
            (_listed_name(s, source), {k: v for k, v in s.items() if k != "name"}) for s in steps
        ]
        _refuse_listed_twice([name for name, _ in items], source)
    else:
        raise WorkflowError(
            f"{source}: 'steps' must be a mapping of step name -> fields, got "
            f"{checks.short_repr(steps, 60, one_line=True)}; write it like {_EXAMPLE}")
    for name, fields in items:
        if fields is None:  # (a name with nothing under it)
            raise WorkflowError(f"{source}: step {name!r} has no fields; give it a command or "
                                f"a function, like {name}: {{run: echo hello}} or "
                                f"{name}: {{python: steps.py:{_function_like(name)}}}")
        if not isinstance(fields, Mapping):
            raise WorkflowError(
                f"{source}: step {name!r} must be a mapping of fields, got {fields!r}"
            )
    return items


def _refuse_listed_twice(names: list[Any], source: str) -> None:
    """A 'steps' list naming one step twice (the graph's own refusal suggested
    ``graph.replace()``, which a file has no use for)."""
    first: dict[str, int] = {}
    for item, name in enumerate(names, 1):
        if isinstance(name, str) and first.setdefault(name, item) != item:  # (other kinds:
            raise WorkflowError(  #                                     refused by Step)
                f"{source}: step {name!r} is listed twice in 'steps' (items "
                f"{first[name]} and {item}); give each step its own name")


def _listed_name(item: Any, source: str) -> str:
    if not isinstance(item, Mapping) or "name" not in item:
        raise WorkflowError(f"{source}: each item of a 'steps' list needs a 'name', got {item!r}")
    return item["name"]


def _make_step(name: Any, fields: Mapping[str, Any], source: str) -> Step:
    values = dict(fields)
    for key in _TUPLE_FIELDS:
        if isinstance(values.get(key), list):
            values[key] = tuple(values[key])
    if isinstance(values.get("run"), list):
        values["run"] = tuple(_argument(a, i, name, source) for i, a in enumerate(values["run"]))
    try:
        return Step(name, **values)
    except DagnbError as exc:
        raise WorkflowError(f"{source}: {exc}") from None
    except TypeError as exc:
        raise WorkflowError(f"{source}: step {name!r}: {exc}") from None


def _argument(value: Any, index: int, step: Any, source: str) -> Any:
    """An argv item as text (a bool as true/false); null is refused, not made 'None'."""
    if value is None:
        raise WorkflowError(f"{source}: step {step!r}: run[{index}] is null; give a "
                            "string")
    return variable_text(value) if isinstance(value, (int, float)) else value


def graph_to_dict(graph: Graph, functions: Mapping[str, str] | None = None) -> dict[str, Any]:
    """Workflow-format data for ``graph``; a Python step needs its ``functions`` reference
    (``file.py:name``, from :func:`dagnb.workflows.pyfunctions.write_module`)."""
    data: dict[str, Any] = {"name": graph.name}
    if graph.description:
        data["description"] = graph.description
    if graph.template is not None:
        data["template"] = graph.template
    if graph.parameters:  # (a value given for a run is the default its steps now hold)
        given = graph.given_params
        data["parameters"] = {
            name: (dataclasses.replace(parameter, default=given[name]) if name in given
                   else parameter).spec() for name, parameter in graph.parameters.items()}
    _refuse_unknown_needs(graph)
    data["steps"] = {step.name: _step_data(step, functions or {}) for step in graph}
    return data


def _refuse_unknown_needs(graph: Graph) -> None:
    """A step needing one the graph lacks makes a file no load takes: refused before."""
    for step in graph:
        for need in step.needs:
            if need not in graph:
                raise WorkflowError(f"cannot save {graph.name!r}: "
                                    f"{unknown_need_message(step.name, need, graph.names)}; "
                                    "add that step first")


def explain(path: str | Path) -> str:
    """What loading ``path`` rewrites (one line per alias), then the file in dagnb's spelling."""
    graph = load(path)  # first: a bad file raises here, naming the problem
    data = yaml.load(Path(path).read_text(encoding="utf-8"), Loader=_StrictLoader)
    canonical = canonical_workflow(data, str(path))
    notes = canonical.notes
    said = "\n".join(f"# {note}" for note in notes) if notes else "# already in dagnb's spelling"
    return f"{said}\n{_yaml_text(graph_to_dict(graph, _python_references(canonical.data)))}"


def _python_references(data: Mapping[str, Any]) -> dict[str, str]:
    """Step name -> ``FILE.py:FUNCTION`` as the (loaded, so valid) file writes it."""
    default = (data.get("defaults") or {}).get(PYTHON_KEY)
    found = {name: fields.get(PYTHON_KEY, default)
             for name, fields in _step_items(data.get("steps"), "")}
    return {name: str(ref) for name, ref in found.items() if ref is not None}


class _BlockDumper(yaml.SafeDumper):
    """Writes multi-line strings (shell scripts) as ``|`` blocks, as people write them."""


def _str_representer(dumper: yaml.SafeDumper, value: str) -> yaml.Node:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_BlockDumper.add_representer(str, _str_representer)
# (text "1e6", "0o755" stays text, quoted, as "0755" and "12:30" are: --param reads
# a value YAML 1.2's way)
WorkflowDumper = quoting_yaml_1_2(_reading_yaml_1_2_floats(_BlockDumper))


def _step_data(step: Step, functions: Mapping[str, str]) -> dict[str, Any]:
    if step.func is None:
        return _with_saved_retries(step.to_dict(), step)
    if step.name not in functions:
        raise _function_step_error(step.name)
    return {PYTHON_KEY: functions[step.name], **_with_saved_retries(_fields_of(step), step)}


def _function_step_error(name: str) -> WorkflowError:
    return WorkflowError(f"step {name!r} is a Python function, whose code a workflow file "
                         "keeps in a module beside it; write it to a file: "
                         "graph.to_yaml('pipeline.yml')")


def _with_saved_retries(data: dict[str, Any], step: Step) -> dict[str, Any]:
    """``data`` with the step's ``retries`` as a file writes them: a RetryPolicy as its
    settings, a mapping in dagnb's spelling; none left when they say nothing."""
    if "retries" not in data:
        return data
    where = f"step {step.name!r}"
    retries = step.retries
    if isinstance(retries, RetryPolicy):
        retries = _policy_settings(retries)
    if isinstance(retries, Mapping):
        retries = _without_enabled(canonical_retries(retries, where))
        _check_retry_on(retries, where)
    if retries is None:
        del data["retries"]
    else:
        data["retries"] = _yaml_value(retries)
    return data


# The settings the config's retry defaults fill in where a step's mapping is silent:
# a saved RetryPolicy gives them all, so that it loads as the same policy.
_LAYERED_RETRY_SETTINGS = ("max_retries", "backoff_factor", "jitter")


def _policy_settings(policy: RetryPolicy) -> dict[str, Any]:
    """A RetryPolicy as the mapping that loads as an equal policy: the settings the
    config layers under a step's, and every other one not at its default."""
    default = RetryPolicy()
    return {field.name: getattr(policy, field.name) for field in dataclasses.fields(policy)
            if field.name in _LAYERED_RETRY_SETTINGS
            or getattr(policy, field.name) != getattr(default, field.name)}


def _check_retry_on(retries: Mapping[str, Any] | None, where: str) -> None:
    """Refuse a ``retry_on`` item a file cannot hold (only exit codes are data)."""
    items = (retries or {}).get("retry_on", ())
    for item in items if isinstance(items, (list, tuple, set, frozenset)) else (items,):
        if not isinstance(item, int) or isinstance(item, bool):
            shown = getattr(item, "__name__", repr(item))
            raise WorkflowError(
                f"{where}: retries.retry_on holds {shown}, which a workflow file cannot; "
                "name exit codes (such as 137) there, or keep the step in Python")


def _yaml_value(value: Any) -> Any:
    """Plain YAML data: tuples and sets as lists."""
    if isinstance(value, Mapping):
        return {key: _yaml_value(item) for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_yaml_value(item) for item in value]
    return value


def _fields_of(step: Step) -> dict[str, Any]:
    """A Python step's fields other than its function, as YAML data."""
    # a copy without its function, not checked again (dataclasses.replace did, a fifth
    # of a big save, and refused a step on dask, which runs Python functions only)
    stand_in = copy.copy(step)
    object.__setattr__(stand_in, "func", None)
    return stand_in.to_dict()  # (its run is None, the default: left out)


def _yaml_text(data: Mapping[str, Any]) -> str:
    # UTF-8 as written (the files are read as UTF-8, not "R\xE9sum\xE9"), and no line
    # folded: a long value stays one line a person can read and grep
    if _CBlockDumper is not None and _libyaml_writes_alike(data):
        return yaml.dump(data, Dumper=_CBlockDumper, sort_keys=False,
                         default_flow_style=False, allow_unicode=True, width=-1)
    return yaml.dump(data, Dumper=_BlockDumper, sort_keys=False, default_flow_style=False,
                     allow_unicode=True, width=float("inf"))


def _make_c_dumper() -> type[yaml.SafeDumper] | None:
    """:class:`_BlockDumper` (its representers, its resolvers) writing with libyaml's
    emitter (PyYAML's pure-Python one took 10 of the 12 s a 20,000-step save took);
    None when PyYAML was built without libyaml."""
    if not getattr(yaml, "__with_libyaml__", False):
        return None

    class CBlockDumper(yaml.CSafeDumper):
        yaml_representers = _BlockDumper.yaml_representers
        yaml_implicit_resolvers = _BlockDumper.yaml_implicit_resolvers

    return CBlockDumper


_CBlockDumper = _make_c_dumper()

# The text libyaml writes as PyYAML does (test_loader_scale_session66 compares them):
# printable text of Unicode's first plane (libyaml escapes an emoji that PyYAML writes,
# and writes U+0085, U+2028, U+2029, a tab or a CR otherwise) not ending in line breaks
# kept ("|+"), and a mapping key of one line, not empty, of at most 100 bytes (libyaml
# measures a key's bytes, PyYAML its characters, where a long key becomes "? key").
_LIBYAML_ALIKE_TEXT = re.compile(
    r"[\n\x20-\x7e\xa0-\u2027\u202a-\ud7ff\ue000-\ufefe\uff00-\ufffd]*")
_LIBYAML_ALIKE_KEY_BYTES = 100


def _libyaml_writes_alike(value: Any) -> bool:
    """Whether libyaml writes ``value`` (plain YAML data) as PyYAML's emitter would."""
    if isinstance(value, str):  # (not a "|+" block: after one, libyaml ends the file "...")
        return (_LIBYAML_ALIKE_TEXT.fullmatch(value) is not None
                and not value.endswith("\n\n") and value != "\n")
    if isinstance(value, dict):
        return all(_libyaml_writes_key_alike(key) and _libyaml_writes_alike(item)
                   for key, item in value.items())
    if isinstance(value, list):
        return all(_libyaml_writes_alike(item) for item in value)
    return value is None or isinstance(value, (bool, int, float))


def _libyaml_writes_key_alike(key: Any) -> bool:
    text = key if isinstance(key, str) else repr(key)  # (PyYAML writes "? ''" for '')
    return (text != "" and "\n" not in text and len(text.encode()) <= _LIBYAML_ALIKE_KEY_BYTES
            and _libyaml_writes_alike(key))


def dump(graph: Graph, path: str | Path | None = None, *, replace: bool = False) -> str:
    """YAML text for ``graph``, its first line saying dagnb wrote it; also written to
    ``path`` when given (with the module of its Python steps, see
    :mod:`dagnb.workflows.pyfunctions`), its relative paths rewritten for the file's
    folder (see :func:`_moved`).

    A file is kept and shared in clear: a step holding the value of a secret the graph
    declares is refused, text or file. ``path`` must be a ``.yml``/``.yaml`` file that
    does not exist or that dagnb wrote (its first line says so), unless ``replace``."""
    functions = dict.fromkeys((s.name for s in graph if s.func is not None), "")
    with collections_paused():
        data = graph_to_dict(graph, functions)  # (what no file can hold is refused
        _refuse_secrets(graph, data["steps"])  #   before anything is written)
        if path is None:
            if functions:
                raise _function_step_error(next(iter(functions)))
            return _SAVED_LINE + _yaml_text(data)
        _check_target(Path(path), replace)
        return _save(graph, Path(path), data)


def _save(graph: Graph, path: Path, data: dict[str, Any]) -> str:
    """Write ``graph`` to ``path`` (its Python steps' module first); the file's text.
    ``data``: the graph's :func:`graph_to_dict`, its Python steps' references blank
    (each is then given its own)."""
    with _folders_made_for(path):
        return _write(graph, path, data)


@contextlib.contextmanager
def _folders_made_for(path: Path) -> Iterator[None]:
    """Make the folders ``path`` lacks (``workflows/`` of a fresh project, as ``dagnb
    templates new -o`` does), removed again, while empty, when the save fails."""
    folders = (path.parent, *path.parent.parents)
    missing = [folder for folder in folders if not folder.exists()]
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        in_the_way = next((f for f in folders if f.exists() and not f.is_dir()), None)
        why = (f"{str(in_the_way)!r} is a file, not a folder" if in_the_way is not None
               else f"its folder cannot be made ({exc.strerror})")
        raise WorkflowError(f"cannot write {str(path)!r}: {why}; save it in a folder you "
                            "can write") from None
    try:
        yield
    except BaseException:
        for folder in missing:  # (innermost first)
            with contextlib.suppress(OSError):
                folder.rmdir()
        raise


def _write(graph: Graph, path: Path, data: dict[str, Any]) -> str:
    """:func:`_save`, in a folder that exists."""
    folder = (graph.base_dir or Path.cwd()).resolve()  # where the graph's paths start
    functions = {s.name: s.func for s in graph if s.func is not None}
    if functions:
        published = published_reads(graph)
        # the module goes in the graph's folder, where its imports (a notebook's helper
        # modules beside it) are found, named after the file and its folder (two files
        # saved from one notebook folder do not share one)
        secrets = {name for step in graph for name in step.secrets}
        refs = write_module(functions, path, secrets, published, folder)
        _relinked(data["steps"], graph, published.graph, refs)
    _moved(data["steps"], folder, path.resolve().parent)
    text = _SAVED_LINE + _yaml_text(data)
    _refuse_unloadable(graph, path, text)
    try:
        path.write_text(text, encoding="utf-8")
    except OSError as exc:
        raise WorkflowError(f"cannot write {str(path)!r}: {exc.strerror}; check that its "
                            "folder exists and is writable") from None
    _warn_unmoved_python(data["steps"], functions, folder, path)
    return text


def _refuse_unloadable(graph: Graph, path: Path, text: str) -> None:
    """Refuse to write a file bigger than a workflow file may be: none could load it."""
    size = len(text.encode("utf-8"))
    if size > MAX_WORKFLOW_BYTES:
        raise WorkflowError(
            f"cannot save graph {graph.name!r} to {str(path)!r}: its {len(graph):,} steps "
            f"take {size:,} bytes as YAML, and a workflow file is at most "
            f"{MAX_WORKFLOW_BYTES // 2**20} MiB; save its parts as graphs of their own")


def _relinked(steps: dict[str, dict[str, Any]], graph: Graph, linked: Graph,
              refs: Mapping[str, str]) -> None:
    """``steps`` (``graph``'s saved fields, in place) with each Python step's reference
    from ``refs`` and, written anew, each step ``linked`` changed (needing the steps whose
    results it reads): the rest is saved as it was checked."""
    for name, fields in steps.items():
        if PYTHON_KEY in fields:
            if name not in refs:  # (a step no module holds: no file without it)
                raise _function_step_error(name)
            fields[PYTHON_KEY] = refs[name]
    for step in linked:
        if step is not graph[step.name] and step != graph[step.name]:
            steps[step.name] = _step_data(step, refs)


# The first line of a file dagnb saved: a save replaces such a file, and no other (a
# hand-written workflow, someone's notes.yml)
_SAVED_MARK = "# saved by dagnb"
_SAVED_LINE = f"{_SAVED_MARK}: saving again replaces this file (delete this line to keep it)\n"


def _check_target(path: Path, replace: bool) -> None:
    """Refuse a name no workflow file has (``dagnb run`` reads a workflow by its suffix)
    and, unless ``replace``, a file dagnb did not write: a save replaces it whole."""
    if path.suffix.lower() not in (".yml", ".yaml"):
        raise WorkflowError(f"cannot save the workflow as {str(path)!r}: a workflow file's "
                            f"name ends in .yml or .yaml; save it as {path.stem or 'pipeline'}.yml")
    first = None if replace else _first_line(path)
    if first is not None and not first.startswith(_SAVED_MARK):
        raise WorkflowError(f"{str(path)!r} exists and was not written by dagnb, and saving the "
                            "workflow would replace it: save it under another name, or remove "
                            f"{path.name} first")


def _first_line(path: Path) -> str | None:
    """The first line of ``path``; None when it is no file or an empty one (nothing to
    lose), or cannot be read (writing it says why, in one line)."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return handle.readline() or None
    except OSError:
        return None


def secret_option(step: Step, secrets: Mapping[str, str]) -> tuple[str, str, str] | None:
    """The first ``env`` variable or param of ``step`` holding the value of one of
    ``secrets`` (name -> value; in any leak form, :class:`SecretFinder`'s), as
    ``("env" or "params", its name, the secret's name)``; None when none does. A
    ``%%dagger`` cell and a workflow file would both show it in clear: each refuses it."""
    finder = SecretFinder(secrets)
    if not finder:
        return None
    for field, name, data in [*(("env", k, v) for k, v in step.env.items()),
                              *(("params", k, json.dumps(v)) for k, v in step.params.items())]:
        held = finder.find(data.encode())
        if held is not None:
            return field, name, held
    return None


def _refuse_secrets(graph: Graph, steps: Mapping[str, Mapping[str, Any]]) -> None:
    """Refuse a step whose saved fields (``steps``: name -> fields) hold the value of a
    secret the graph declares, as set now, or of a variable of the environment named as
    a secret beyond doubt (those a run masks undeclared, :func:`environ_secrets`): a run
    reads it from the environment, a file would keep it in clear (as :mod:`.pyfunctions`
    refuses a notebook value holding one)."""
    secrets = {**environ_secrets(), **{name: os.environ[name] for step in graph
                                       for name in step.secrets if os.environ.get(name)}}
    finder = SecretFinder(secrets)
    if not finder:
        return
    for step in graph:
        found = secret_option(step, secrets)
        if found is not None:
            raise WorkflowError(_secret_held_message(step.name, *found))
        for field, value in steps[step.name].items():
            text = _yaml_text({field: value}) + json.dumps(_yaml_value(value), default=str)
            held = finder.find(text.encode())
            if held is not None:
                raise WorkflowError(_secret_held_message(step.name, field, "", held))


def _secret_held_message(step: str, field: str, name: str, held: str) -> str:
    if field == "env":
        what, fix = (f"env {name!r}", f"declare {name} itself as a secret (--secret {name}), "
                     f"or build it in the step from ${held}")
    elif field == "params":
        what, fix = (f"param {name!r}", f"read the secret in the step instead "
                     f'(os.environ[{held!r}] in Python, "${held}" in a command)')
    else:
        what, fix = (f"its {field}", f'write "${held}" in the command in its place'
                     if field == "run" else "keep the secret's value out of it")
    return (f"step {step!r}: {what} holds the value of secret {held!r}, which the saved "
            f"workflow would hold in clear; {fix}")


def _moved(steps: Mapping[str, dict[str, Any]], folder: Path, file_folder: Path) -> None:
    """Rewrite the steps' paths relative to the graph's ``folder`` (mounts' host paths,
    ``workdir``, ``python`` modules) to be relative to the file's: a workflow's paths
    are read from its file's folder, so a file saved elsewhere (``workflows/``) runs the
    same steps. A step that started in ``folder`` by default is given it as its workdir,
    but not one for a container (its image's folder). In place; nothing when the folders
    are one (a file beside the notebook keeps its paths, and its keys, as written)."""
    if folder == file_folder:
        return
    rebased: dict[str, str] = {}  # (steps share a few paths: 20,000 relpaths took 1 s)

    def moved(path: str) -> str:
        if path not in rebased:
            rebased[path] = _rebased(path, folder, file_folder)
        return rebased[path]

    for fields in steps.values():
        if "mounts" in fields:
            fields["mounts"] = {moved(host): target for host, target in fields["mounts"].items()}
        if fields.get("workdir") is not None:
            fields["workdir"] = moved(fields["workdir"])
        elif "image" not in fields and fields.get("executor") != "dagger":
            fields["workdir"] = moved(".")
        if PYTHON_KEY in fields:
            module, _, function = fields[PYTHON_KEY].rpartition(":")
            fields[PYTHON_KEY] = f"{moved(module)}:{function}"


def _warn_unmoved_python(steps: Mapping[str, dict[str, Any]],
                         functions: Mapping[str, Callable[..., Any]], folder: Path,
                         path: Path) -> None:
    """Warn that the saved Python steps a run calls in its own process keep the folder
    ``dagnb run`` starts in: the process has one, so their ``workdir`` (``..``, the
    notebook's folder) is not where their relative paths (``open("data.txt")``) start,
    as it is for a shell step's (and for a Python step on ``dask``: its worker is moved).
    Only the steps whose code names a relative path (``functions``: by step) are said."""
    if folder == path.resolve().parent:
        return
    looked: dict[int, list[str]] = {}  # id(function) -> its paths (20,000 steps of one)

    def paths_of(name: str) -> list[str]:
        func = functions.get(name)
        if id(func) not in looked:
            looked[id(func)] = _relative_paths(func)
        return looked[id(func)]

    unmoved = {name: paths for name, fields in steps.items() if PYTHON_KEY in fields
               and fields.get("executor") in (None, "local") and "image" not in fields
               and (paths := paths_of(name))}
    if not unmoved:
        return
    firsts = dict.fromkeys(paths[0] for paths in list(unmoved.values())[:_NAMES_SHOWN])
    examples = ", ".join(map(repr, firsts))
    checks.warn_user(
        f"{str(path)!r}: a Python step runs in the folder `dagnb run` starts in, not in its "
        "workdir (a step run in dagnb's process is not moved: the process has one folder), "
        f"so a relative path in the code of {_few_named(list(unmoved))} ({examples}) is "
        f"read from there; start the run in {str(folder)!r}, or make those paths absolute")


def _relative_paths(func: Callable[..., Any] | None) -> list[str]:
    """The relative paths the code of ``func`` names (its text constants that look like
    one, less what it writes: see :func:`dagnb.runtime.unmounted.code_paths`)."""
    from dagnb.runtime.unmounted import code_paths  # (a save with Python steps alone)

    while hasattr(func, "func"):  # (a partial's)
        func = func.func
    code = getattr(getattr(func, "__func__", func), "__code__", None)
    if not isinstance(code, CodeType):
        return []
    return [name for name in code_paths(code)
            if not (name.startswith("~") or os.path.isabs(name))]


# Names a message lists before "and N more" (a 20,000-step save's warning was 200 KB)
_NAMES_SHOWN = 5


def _few_named(names: list[str]) -> str:
    """The first few of ``names``, quoted, and how many more there are."""
    shown = ", ".join(repr(name) for name in names[:_NAMES_SHOWN])
    rest = len(names) - _NAMES_SHOWN
    return f"{shown} and {rest} more" if rest > 0 else shown


def _rebased(path: str, folder: Path, file_folder: Path) -> str:
    """``path``, relative to ``folder``, as relative to ``file_folder``; an absolute or
    ``~`` path as it is; absolute where no relative path leads there (another drive)."""
    if path.startswith("~") or Path(path).is_absolute():
        return path
    where = os.path.normpath(folder / path)
    try:
        return Path(os.path.relpath(where, file_folder)).as_posix()
    except ValueError:  # (Windows: another drive)
        return where
