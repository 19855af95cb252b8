"""``dagnb history [WORKFLOW]``: the recorded runs, oldest first, one row each.

Each run of a workflow file (and of a notebook, ``dagnb run NB`` or a kernel's) leaves a
record in the cache folder's ``.runs``: when it finished, how each step ended, the params
it was given; a run killed before it ended (SIGKILL, power lost) is listed as ``killed``,
each of its steps counted in a ``killed`` column (one that ended but could write its
record nowhere, a full disk, as ``end unrecorded``, in an ``unrecorded`` column). A
read-only run, which writes nothing to the cache folder, is recorded outside it
(:func:`dagnb.runtime.history.side_home`) and listed too, ``(read-only)`` after its
time. This lists them, the last ``--last`` (20 unless told), of every workflow or of the
one named (a notebook's: its runs whose ``origin`` is its file), secrets in the params
masked and long values cut as ``dagnb run`` prints them (``--run RUN`` lists that run
alone, then its steps, how each ended and why, and its params whole): its run ids are
what ``dagnb logs`` names. A file that does not load now (mid-edit) or is gone
(renamed) is found in the records by its path, under one line on stderr saying so. The
``workflow`` column names each run's file, by its path from here where two share a name.
(:mod:`dagnb.cli` registers this as its ``history`` subcommand.)
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import os
import shlex
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from dagnb import checks
from dagnb.errors import ConfigError, DagnbError, WorkflowError

__all__ = ["Workflow", "add_parser", "run", "workflow_of"]

_ENDINGS = ("succeeded", "cached", "failed", "skipped", "cancelled")
_LAST = 20
_NOTEBOOK_GRAPH = "notebook"  # (the graph of a notebook's cells: dagnb.notebook's name)


def add_parser(sub: Any) -> None:
    """Add ``history`` to the ``dagnb`` parser's subparsers."""
    history = sub.add_parser("history", help="the recorded runs, oldest first: when, how "
                             "their steps ended, their params")
    history.add_argument("workflow", nargs="?", default=None,
                         help="only the runs of this workflow file or notebook (default: "
                              "every run)")
    history.add_argument("--last", default=None, metavar="N",
                         help=f"only the last N runs (default {_LAST}; 'all' for every one)")
    history.add_argument("--run", default=None, metavar="RUN",
                         help="only this run (its id, or its start or end): then its steps, how "
                              "each ended and why, and its params whole")
    history.add_argument("--cache-dir", default=None, help="cache folder (default: the setting)")


class Workflow(NamedTuple):
    """The workflow file named: the path its runs are recorded under, its name and the
    secret names it declares, or (name None) why it does not read now. A notebook's
    (``by_origin``): its runs are those whose ``origin`` is its file."""

    source: Path
    name: str | None
    secrets: frozenset[str] = frozenset()
    problem: str | None = None
    by_origin: bool = False


def workflow_of(path: str) -> Workflow:
    """The workflow file at ``path``, read from its YAML alone: loading it would import
    its ``python:`` steps' modules, running their code (a model loaded, a database
    opened, an unset variable refused), to list runs. One that does not read now (a YAML
    error mid-edit) or is gone (renamed since) is still found in the records by its path."""
    source = Path(path).resolve()
    try:
        data = _yaml_of(path)
        name = _name_in(data, path)
    except DagnbError as exc:
        return Workflow(source, None, problem=str(exc))
    return Workflow(source, name, frozenset(_secrets_of(data)))


def notebook_of(path: str) -> Workflow:
    """The notebook (or script) at ``path``: every notebook's graph is named
    ``notebook``, so its runs are found by their ``origin``, the file the kernel ran
    (``dagnb run NOTEBOOK``'s, or the one JupyterLab names). One that is gone (renamed
    since) is still found there by its path."""
    source = Path(path).absolute()
    problem = None if source.is_file() else checks.missing_file("notebook", path)
    return Workflow(source, None, problem=problem, by_origin=True)


def _yaml_of(path: str) -> Mapping[str, Any]:
    """The workflow file's YAML data, refused when it is no mapping (as loading it is)."""
    from dagnb.workflows.loader import not_a_workflow, parse_yaml, read_text

    data = parse_yaml(read_text(Path(path), "workflow file"), path)
    if not isinstance(data, Mapping):
        raise WorkflowError(not_a_workflow(path, data))
    return data


def _name_in(data: Mapping[str, Any], path: str) -> str:
    """The name its runs are recorded under: its ``name:``, or (none, or "workflow") the
    file's stem, as loading it names the graph."""
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise WorkflowError(f"{path}: name {name!r} is not text; give it as a string")
    return name if name and name != "workflow" else Path(path).stem


def run(args: argparse.Namespace, workflow: Workflow | None) -> int:
    """``dagnb history``, of the ``workflow`` read from ``args.workflow`` (None: every
    run recorded)."""
    from dagnb.cache import local_folder
    from dagnb.cli.cache import missing_folder
    from dagnb.runtime.history import side_home

    last = _last(args.last)
    folder = local_folder(args.cache_dir)
    if (args.cache_dir is not None and not checks.is_url(args.cache_dir)
            and not folder.is_dir() and not side_home(folder).is_dir()):
        # (a typo: not "no run yet"; a read-only run's of a folder never made is recorded)
        raise missing_folder(args.cache_dir, folder)
    shown, total = _records(folder, workflow, None if args.run is not None else last)
    if workflow is not None and workflow.problem is not None:
        if not shown:  # (nor recorded: a typo, or a file never run)
            raise ConfigError(workflow.problem)
        print(f"dagnb: {args.workflow} does not load now ({workflow.problem}); its runs "
              "found in the run records by its path", file=sys.stderr, flush=True)
    if not shown:
        of = "" if workflow is None else f" of {args.workflow}"
        print(f"no run{of} recorded in {str(folder)!r} (dagnb run records each; "
              "--cache-dir names another cache folder)")
        return 0
    if args.run is not None:
        shown = _the_run(shown, args, folder)
        total = len(shown)
    mask = _params_mask(workflow, shown, args.cache_dir)
    print(_table(shown, mask))
    if args.run is not None:
        _print_steps(shown[0], mask, args.cache_dir)
        _print_params_whole(shown[0], mask)
    if len(shown) < total:
        print(f"(the last {len(shown)} of {total} runs; --last all shows every one)")
    return 0


def _records(folder: Path, workflow: Workflow | None,
             last: int | None) -> tuple[list[dict[str, Any]], int]:
    """The last ``last`` run records of ``workflow`` (None: of every one), oldest first,
    and how many there are; those of a file that does not load, by its path alone."""
    from dagnb.runtime.history import recorded_runs

    if workflow is None:
        return recorded_runs(folder, last=last)
    if workflow.by_origin:
        records = [record for record in recorded_runs(folder)[0]
                   if same_file(record.get("origin"), workflow.source)]
        return (records if last is None else records[-last:]), len(records)
    if workflow.name is not None:
        return recorded_runs(folder, workflow.name, workflow.source, last=last)
    records = [record for record in recorded_runs(folder)[0]
               if record.get("source") == str(workflow.source)]
    return (records if last is None else records[-last:]), len(records)


def same_file(origin: Any, path: Path) -> bool:
    """Whether a record's ``origin`` names the file at ``path`` (by another spelling too:
    a kernel records the notebook's path as the front end gives it, through a link)."""
    return isinstance(origin, str) and (
        origin == str(path) or os.path.realpath(origin) == os.path.realpath(path))


def _the_run(records: list[dict[str, Any]], args: argparse.Namespace,
             folder: Path) -> list[dict[str, Any]]:
    """The record of run ``args.run`` among ``records`` (a unique start or end of its
    id will do); refused when none has that id."""
    from dagnb.runtime.history import run_id_meant

    wanted = run_id_meant(args.run, [record.get("run") for record in records])
    found = [record for record in records if record.get("run") == wanted]
    if not found:
        of = "" if args.workflow is None else f" of {args.workflow!r}"
        raise ConfigError(f"--run {args.run!r}: no run{of} recorded in {str(folder)!r} by "
                          "that id; dagnb history lists the runs' ids")
    return found[-1:]


def _print_steps(record: dict[str, Any], mask: Callable[[str], str],
                 cache_dir: str | None) -> None:
    """The run's steps, one a line: how each ended, its cache entry, why it did not end
    well (secrets masked as now set too); then, for the run of a workflow file or a
    notebook, the command that shows a failed or cancelled step's lines (in
    ``cache_dir``, the one given)."""
    from dagnb.runtime.history import run_steps
    from dagnb.views.progress import text_table

    rows = [{**row, "why": mask(row["why"])} for row in run_steps(record)]
    if not rows:
        return
    columns = [name for name in ("step", "state", "entry", "why")
               if name in ("step", "state") or any(row[name] for row in rows)]
    print(f"\nthe steps of run {record.get('run')}:")
    print(text_table(rows, columns))
    ended_badly = [row["step"] for row in rows if row["state"] in ("failed", "cancelled")]
    file = record.get("source") or record.get("origin")
    if ended_badly and isinstance(file, str) and not record.get("read_only"):
        where = "" if cache_dir is None else f" --cache-dir {shlex.quote(cache_dir)}"
        print(f"the lines of {ended_badly[0]!r}: dagnb logs {shlex.quote(_from_here(file))} "
              f"{shlex.quote(ended_badly[0])} --run {record.get('run')}{where}")


def _print_params_whole(record: dict[str, Any], mask: Callable[[str], str]) -> None:
    """The run's params, one a line, whole (the table cuts long values), secrets masked."""
    params = record.get("params")
    if not isinstance(params, dict) or not params:
        return
    print("params given:")
    for name, value in params.items():
        print(f"  {name}={mask(_json(value))}")


def _params_mask(workflow: Workflow | None, records: list[dict[str, Any]],
                 store: str | None = None) -> Callable[[str], str]:
    """What masks the params shown, as ``dagnb run`` masks those it prints: the values,
    as set now, of the secrets the workflow's steps declare (with no workflow named,
    those of each run's file, as it reads now), of the registry's credentials and of
    the store's (``store``, the ``--cache-dir`` given; None: the setting's)."""
    from dagnb import config
    from dagnb.model.masking import MIN_LINE, Masker

    names = (workflow.secrets if workflow is not None and workflow.name is not None
             else _declared_secrets(records))
    secrets = [*(os.environ[name] for name in sorted(names) if os.environ.get(name)),
               *config.settings().credential_secrets(store).values()]
    return Masker(secrets, words_below=MIN_LINE)


def _declared_secrets(records: list[dict[str, Any]]) -> set[str]:
    """The secret names the workflow files (and notebooks: ``dagnb run NB -p``) of the
    runs given params declare, each read from its text alone: loading a workflow would
    import its ``python:`` steps' modules, running their code (a model loaded, a
    database opened), to list runs. One that no longer reads declares none."""
    names: set[str] = set()
    files = {(record.get("source"), record.get("origin")) for record in records
             if record.get("params")}
    for source, origin in sorted(files, key=str):
        with contextlib.suppress(DagnbError, OSError, ValueError):  # (gone, mid-edit...)
            if isinstance(source, str):
                names |= _secrets_in(source)
            elif isinstance(origin, str) and origin.endswith((".ipynb", ".py")):
                names |= _notebook_secrets(origin)
    return names


def _notebook_secrets(path: str) -> set[str]:
    """The secret names a notebook's cells declare (``--secret NAME``, ``secrets=[...]``)."""
    from dagnb.notebook.document import declared_secrets, read_notebook

    return declared_secrets(read_notebook(path))


def _secrets_in(source: str) -> set[str]:
    """The secret names a workflow file's defaults and steps declare (in either
    spelling of the defaults; a step's add to the defaults', so all of them count); none
    when it holds no mapping."""
    from dagnb.workflows.loader import parse_yaml, read_text

    data = parse_yaml(read_text(Path(source), "workflow file"), source)
    return _secrets_of(data) if isinstance(data, Mapping) else set()


def _secrets_of(data: Mapping[str, Any]) -> set[str]:
    """The secret names in a workflow file's YAML data."""
    steps = data.get("steps")
    listed = list(steps.values()) if isinstance(steps, Mapping) else steps
    holders = [data.get("defaults"), data.get("workflow_defaults"),
               *(listed if isinstance(listed, list) else ())]
    return {name for fields in holders for name in _names_in(fields)}


def _names_in(fields: Any) -> list[str]:
    """The ``secrets`` of a step's (or the defaults') fields: a list, or names in a text."""
    from dagnb.model.step import split_names

    given = fields.get("secrets") if isinstance(fields, Mapping) else None
    if isinstance(given, str):
        return split_names(given)
    return [name for name in given if isinstance(name, str)] if isinstance(given, list) else []


def _table(records: list[dict[str, Any]], mask: Callable[[str], str]) -> str:
    """The runs' rows as text, as pandas would print them (without its 0.5 s import)."""
    from dagnb.cli.cache import text_table

    names = _shown_names(records)
    endings = _ENDINGS + tuple(ending for ending in ("killed", "unrecorded")
                               if any(r.get(ending) is True for r in records))
    rows = [_row(record, mask, names, endings) for record in records]
    return text_table({name: [row[name] for row in rows] for name in rows[0]})


def _shown_names(records: list[dict[str, Any]]) -> dict[str, str]:
    """Each run's file (a workflow's or a notebook's) as the ``workflow`` column names
    it: by its name, or, where two files of one name are listed (``a/wf.yml``,
    ``b/wf.yml``), by its path from here."""
    sources = {source for source in map(_file_of, records) if source is not None}
    named = collections.Counter(Path(source).name for source in sources)
    return {source: _from_here(source) if named[Path(source).name] > 1 else Path(source).name
            for source in sources}


def _file_of(record: dict[str, Any]) -> str | None:
    """The run's workflow file, else the notebook it ran in (its graph is "notebook"
    whichever it is: an ``.ipynb``, or a jupytext percent ``.py``, told from a script of
    that suffix by its graph's name; a script's run is named by its graph's name)."""
    source, origin = record.get("source"), record.get("origin")
    if isinstance(source, str):
        return source
    if not isinstance(origin, str):
        return None
    notebook = origin.endswith(".ipynb") or (origin.endswith(".py")
                                             and record.get("graph") == _NOTEBOOK_GRAPH)
    return origin if notebook else None


def _from_here(path: str) -> str:
    """``path`` relative to the current folder (as it is, on another Windows drive)."""
    try:
        return os.path.relpath(path)
    except ValueError:
        return path


def _row(record: dict[str, Any], mask: Callable[[str], str],
         names: Mapping[str, str], endings: tuple[str, ...] = _ENDINGS) -> dict[str, Any]:
    """One run: its id, when it finished (``killed``, and when it started, for one that
    did not; ``end unrecorded`` for one whose end could not be written; ``read-only``
    after the time of a read-only run's), of what (its file as ``names`` shows it), its
    steps by how they ended (each of ``endings``), params (secrets masked)."""
    states = record.get("states") if isinstance(record.get("states"), dict) else {}
    source = _file_of(record)
    row = {
        "run": str(record.get("run", "?")),
        "finished": _ending(record),
        "workflow": names[source] if isinstance(source, str) else str(record.get("graph", "")),
        "steps": len(states),
    }
    ended = list(states.values())
    row.update({ending: ended.count(ending) for ending in endings})
    row["params"] = _params_cell(record.get("params"), mask)
    return row


def _params_cell(params: Any, mask: Callable[[str], str]) -> str:
    """The ``params`` column: the params as JSON, each value masked and cut as ``dagnb
    run`` prints it (a 20,000-item list made every line of the table 109,013 characters
    long); ``dagnb history --run RUN`` shows them whole."""
    from dagnb.workflows.params import shown

    if not params:
        return ""
    if not isinstance(params, dict):  # (a hand-edited record: as it is, cut)
        return shown(_json(params), mask)
    return "{" + ",".join(f"{mask(_json(name))}:{shown(_json(value), mask)}"
                          for name, value in params.items()) + "}"


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"))


def _ending(record: dict[str, Any]) -> str:
    """The ``finished`` column: when the run ended, or how it did not end recorded."""
    if record.get("killed") is True:
        return f"killed (started {_finished(record)})"
    if record.get("unrecorded") is True:
        return f"end unrecorded (started {_finished(record)})"
    return _finished(record) + (" (read-only)" if record.get("read_only") is True else "")


def _finished(record: dict[str, Any]) -> str:
    """When the run ended, as local time; "" when its record says no time, or one past
    any calendar (a hand edit: 1e300)."""
    from dagnb.runtime.history import finished_at

    seconds = finished_at(record)
    if seconds is None:
        return ""
    try:
        return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(seconds))
    except (OverflowError, ValueError, OSError):
        return ""


def _last(given: str | None) -> int | None:
    """``--last``, checked: a whole number >= 1, or ``all`` (None)."""
    if given is None:
        return _LAST
    if given.strip().lower() == "all":
        return None
    try:
        return checks.checked(checks.count, given, "--last", ConfigError, sep=" ", text=True,
                              least=1)
    except ConfigError as exc:  # (the count's words alone would hide that all is taken)
        raise ConfigError(f"{exc}, or all (every run)") from None
