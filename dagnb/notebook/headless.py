"""``dagnb run NOTEBOOK``: a notebook executed headless in a kernel, as the pipeline it is.

The notebook runs top to bottom in a fresh kernel (nbclient, the library nbconvert and
papermill use), in the notebook's folder, so its ``%%dagger`` cells meet the same cache
as an interactive session there: a notebook already run in JupyterLab runs again all
``cached``. As in a terminal, the cells define the graph as they run: a run started from
inside Jupyter does not pass on the caller's ``JPY_SESSION_NAME`` (the kernel would read
the caller's notebook). The kernel talks over Unix sockets, not TCP ports another
process could take as it starts (:mod:`dagnb.notebook.kernel_sockets`). It works in text
mode (``DAGNB_WIDGETS=0``), and each cell's output (printed lines, and the text of its
values and displays) is printed as the cell finishes. At the end the kernel reports
every step's latest state, printed as the same status table as a YAML run, also when a
cell failed (not when the time limit passed).

- ``params`` follow papermill's convention: a new cell, tagged ``injected-parameters``,
  is put after the cell tagged ``parameters`` (at the top, with a warning, when there is
  none), so notebooks written for papermill work unchanged; it replaces the cells an
  earlier run injected (a notebook run again with ``-o``), which would assign after it.
  Without params such a cell stays, as papermill leaves it: it is what the file says.
  A float no literal writes (``1e400``, ``NaN``) is set as ``float('inf')``. A name
  that cell does not assign is refused (papermill warns, and the value is set but nothing
  reads it); one it assigns only text keeps the text typed (``--param version=3.10`` is
  ``'3.10'``). A value holding a secret's value is refused before the kernel starts
  (:func:`_refuse_secret_params`): that cell holds it in clear, and so does ``output``.
  The kernel's runs record the values set (``dagnb history`` shows them), as a
  workflow's runs record their ``--param`` values.
- ``targets`` (and ``tags``, the steps labelled so) run only what those steps need: the
  cells up to the last one a target needs run (plain cells too: they define what steps
  read), but only the ``%%dagger`` cells of the targets, their upstream steps and the
  steps whose ``--outputs`` a needed cell reads (:mod:`dagnb.notebook.flow`; one line
  names each) run their step; the others only define it (``DAGNB_ONLY_STEPS`` tells the
  magic). Cells after the last needed one do not run.
- ``output`` receives the executed notebook, with its cells' lasting outputs; its
  name (an ``.ipynb``, not the notebook run) and folder are checked before the kernel
  starts (:func:`check_output_file`), and a write that fails still returns the steps' rows.
- ``timeout`` (seconds) limits the whole notebook: the cell running when it passes is
  interrupted (its steps stopped, as by Ctrl-C) and no later cell runs.
- ``settings`` (``{"executor": "local", "cache_directory": ...}``) reach the kernel as
  ``DAGNB_<KEY>`` variables, checked here first; a relative path is the caller's, not
  the notebook folder's.
- ``cache_mode`` reaches the kernel as ``DAGNB_CACHE_MODE``. With ``fail-on-miss`` each
  ``%%dagger`` cell refuses to run a step that misses: the steps of the cells before it
  come from the cache, and the plain cells before it run (they define what steps read).
  Any refusal (raised, wrapped by the cell, or a step's own ``dagnb.Memory`` call's) is
  exit 2, as for a YAML run, unless a real failure came with it (exit 1).
- Ctrl-C, SIGTERM or SIGHUP (:class:`_Interruption`) interrupt the running cell, whose
  steps stop as on Ctrl-C in Jupyter; no later cell runs, the status table and
  ``output`` have what ran, and the CLI exits 128 + the signal, as a YAML run does.

A cell that raised is named (:class:`FailedCell`): its number in the file and its step,
or its first line.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import math
import os
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, NamedTuple, TextIO

from dagnb import checks
from dagnb.config import (
    DEFAULT_KEYS,
    ENV_PREFIX,
    TOP_KEYS,
    check_cache_mode,
    env_values,
    settings,
)
from dagnb.errors import CacheMissError, ConfigError, DagnbError, RunFailed, WorkflowError
from dagnb.model.masking import MIN_LINE, SecretFinder, named_surely_secret
from dagnb.model.step import variable_text
from dagnb.notebook.before_kernel import refuse_before_kernel
from dagnb.notebook.document import (
    bound_names,
    dagger_cells,
    declared_secrets,
    line_params,
    read_notebook,
    read_notebook_tagged,
    text_names,
)
from dagnb.notebook.flow import Feed, needed_steps
from dagnb.notebook.kernel_sockets import ipc_kernel_manager
from dagnb.notebook.magics import ONLY_STEPS_VARIABLE
from dagnb.notebook.session import get_session
from dagnb.runtime.history import NOTEBOOK_PARAMS_VARIABLE
from dagnb.views.html import ANSI

__all__ = ["FailedCell", "NotebookOutcome", "background_failure", "check_notebook_file",
           "check_output_file", "last_error_refused", "run_notebook", "selected_steps"]

_SUMMARY_MARK = "\x1edagnb-summary "
_REFUSED_MARK = "\x1edagnb-refused"  # (printed by the summary when fail-on-miss stopped a cell)
_BACKGROUND_MARK = "\x1edagnb-background "  # (then a failed --background cell, if one did)
_SUMMARY_CODE = (
    "from dagnb.notebook.session import notebook_summary as _dagnb_summary\n"
    "from dagnb.notebook.headless import background_failure as _dagnb_background\n"
    "from dagnb.notebook.headless import last_error_refused as _dagnb_refused\n"
    f"print({_SUMMARY_MARK!r} + _dagnb_summary())\n"
    f"print({_BACKGROUND_MARK!r} + _dagnb_background())\n"
    f"if _dagnb_refused():\n    print({_REFUSED_MARK!r})"
)
# run before the summary of an interrupted run: it would wait for the --background runs
_CANCEL_CODE = (
    "from dagnb.notebook.session import get_session as _dagnb_session\n"
    "for _dagnb_run in list(_dagnb_session().live.values()):\n    _dagnb_run.cancel()"
)
_FAILED = ("failed", "cancelled", "skipped")


class FailedCell(NamedTuple):
    """The cell that stopped a headless run: its number in the file (1 for the first;
    None for the cell ``--param`` put in), and its step's name or its first line."""

    number: int | None
    step: str | None = None
    first_line: str = ""

    def said(self, notebook: str) -> str:
        """``cell 4 of nb.ipynb (step 'train')``, as a user finds it in the file."""
        if self.number is None:
            return f"the injected-parameters cell that --param put in {notebook}"
        what = f"step {self.step!r}" if self.step else f"which starts {self.first_line!r}"
        return f"cell {self.number} of {notebook} ({what})"


class NotebookOutcome:
    """What a headless run of a notebook ended with: the steps' rows, or the failing cell."""

    def __init__(self, rows: list[dict[str, Any]], error: str | None = None,
                 error_name: str | None = None, unsaved: str | None = None, *,
                 refused: bool = False, failed_cell: FailedCell | None = None,
                 interrupted: int | None = None) -> None:
        self.rows = rows
        self.error = error
        self.error_name = error_name
        self.unsaved = unsaved  # why the executed notebook was not written, if it was not
        # whether the failing cell's error holds fail-on-miss's refusal (raised, wrapped
        # in another exception or raised while handling it), as the kernel saw it
        self.refused = refused
        self.failed_cell = failed_cell
        self.interrupted = interrupted  # the signal that stopped the run, if one did

    @property
    def ok(self) -> bool:
        """True when no cell raised, no step failed, was cancelled or skipped, and the
        executed notebook (if asked for) was written."""
        return (self.error is None and self.unsaved is None
                and not any(r.get("state") in _FAILED for r in self.rows))

    @property
    def exit_code(self) -> int:
        """The CLI's: 0 ok, 2 when all that went wrong is ``fail-on-miss`` refusing to run
        a miss (as a YAML run exits), 128 + the signal that stopped the run, else 1 (a
        real failure next to a refusal too)."""
        if self.interrupted is not None:
            return 128 + self.interrupted
        if self.ok:
            return 0
        return 2 if self._only_refused() else 1

    def _only_refused(self) -> bool:
        """Whether every failure is a refusal: the failing cell's error holds one, or is
        the ``RunFailed`` of steps that failed on one (a step's own ``dagnb.Memory``
        call); and every step that failed, in any cell's run, failed on one."""
        failed = [row for row in self.rows if row.get("state") in ("failed", "cancelled")]
        if self.unsaved is not None or not all(map(_failed_on_a_refusal, failed)):
            return False
        if self.error is None:  # (a --background cell's run: no cell raised)
            return bool(failed)
        return (self.refused or self.error_name == CacheMissError.__name__
                or (self.error_name == RunFailed.__name__ and bool(failed)))


def _failed_on_a_refusal(row: Mapping[str, Any]) -> bool:
    """Whether a step's row says it failed on a CacheMissError (``CacheMissError: ...``;
    a container's traceback names it ``dagnb.errors.CacheMissError``), or that its run
    refused it (``refused``: its entry gone since the run's check)."""
    error = row.get("error")
    raised = error.split(":", 1)[0].rsplit(".", 1)[-1] if isinstance(error, str) else ""
    return row.get("state") == "failed" and (row.get("refused") is True
                                             or raised == CacheMissError.__name__)


def last_error_refused() -> bool:
    """In the kernel: whether the error that stopped the notebook (IPython keeps it as
    ``sys.last_value``) is fail-on-miss's refusal, or one raised from it or while
    handling it (a cell's ``except CacheMissError: raise RuntimeError(...)``)."""
    error = getattr(sys, "last_value", None)
    seen: set[int] = set()
    while isinstance(error, BaseException) and id(error) not in seen:
        if isinstance(error, CacheMissError):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False


def background_failure() -> str:
    """In the kernel, once the summary waited for the ``--background`` runs: the first
    cell (by execution count) whose background run, still the latest run of a step of
    it, did not succeed, and the error that cell would have raised in the foreground
    (its stderr tails kept: a background cell prints none), as JSON; "" when none."""
    session = get_session()
    latest = {run.id: run for run in session.step_runs.values()}
    for run_id, number in sorted(session.background_cells.items(), key=lambda item: item[1]):
        if run_id not in latest:  # (a later run of its steps has their rows)
            continue
        try:
            session.raise_for_status(latest[run_id])
        except RunFailed as failed:
            shown = "\n".join(failed._render_traceback_())  # (what IPython would show)
            return json.dumps({"cell": number, "error": shown})
    return ""


def selected_steps(path: str | Path, targets: Sequence[str] | None,
                   tags: Sequence[str] | None = None) -> tuple[list[str], list[Feed]]:
    """The targets (and steps with these tags) and every step they need, by the
    notebook's own cells: upstream steps, and those whose ``--outputs`` a needed cell
    reads (each also returned as a :class:`~dagnb.notebook.flow.Feed`)."""
    return needed_steps(read_notebook(path), list(targets or ()), list(tags or ()))


def run_notebook(path: str | Path, *, params: Mapping[str, Any] | None = None,
                 targets: Sequence[str] | None = None, output: str | Path | None = None,
                 stream: TextIO | None = None, timeout: float | None = None,
                 cache_mode: str | None = None, tags: Sequence[str] | None = None,
                 settings: Mapping[str, Any] | None = None,
                 param_texts: Mapping[str, str] | None = None) -> NotebookOutcome:
    """Execute the notebook at ``path`` in a new kernel; see the module docstring.
    ``param_texts``: the ``params`` as typed (``--param``), kept as typed for a name the
    parameters cell gives as text."""
    stream = sys.stdout if stream is None else stream  # (now: a caller may redirect it)
    nbformat, client_class = _notebook_libraries()
    path = Path(path)
    if output is not None:  # (before the kernel: not after an hour's run)
        check_output_file(output, path)
    notebook = _load(nbformat, path)
    in_file = list(notebook.cells)  # (as numbered in the file: an error names its cell)
    _refuse_secret_params(params or {}, param_texts or {},
                          [(c.cell_type, c.source) for c in notebook.cells],
                          (settings or {}).get("cache_directory"))
    given = _inject_parameters(nbformat, notebook, params or {}, path, param_texts or {})
    only, feeds = selected_steps(path, targets, tags) if targets or tags else (None, [])
    for feed in feeds:  # (a full run gives the target the value these steps make)
        stream.write(f"dagnb: {feed.note()}\n")
    unneeded = _cells_after_selection(notebook, only)
    notebook.cells.append(nbformat.v4.new_code_cell(_SUMMARY_CODE))
    failing: list[Any] = []  # the cell whose error stopped the run, once one has
    interruption = _Interruption()
    client = _hearing_signals(client_class, interruption)(
        notebook, kernel_name="python3", allow_errors=False,
        kernel_manager_class=ipc_kernel_manager(),  # (no TCP port race to lose at start)
        extra_arguments=["--IPKernelApp.log_level=ERROR"],  # no transport warnings in the log
        resources={"metadata": {"path": str(path.parent.absolute())}},
        on_notebook_start=interruption.kernel_started,
        on_cell_start=_stop_after_interruption(lambda: client, interruption),
        on_cell_executed=lambda **kw: _echo(kw["cell"], stream),
        on_cell_error=_on_cell_error(lambda: client, failing, interruption),
        **_whole_run_limit(timeout),
    )
    env = {**_kernel_env(only, path, given), **_settings_env(settings or {})}  # (over the
    if cache_mode is not None:  #                                                 caller's)
        env[f"{ENV_PREFIX}CACHE_MODE"] = check_cache_mode(cache_mode)
    # (what a YAML run refuses before running anything: not after the cells before it)
    refuse_before_kernel(path, [(c.cell_type, c.source) for c in notebook.cells[:-1]], env,
                         only)
    error, error_name = _execute(client, env, interruption)
    summary = notebook.cells.pop()
    failed_cell = _failed_cell(failing[-1], in_file) if error and failing else None
    background = _background_failure(summary, notebook.cells)
    if error is None and background is not None and interruption.signal is None:
        (error, cell), error_name = background, RunFailed.__name__
        failed_cell = _failed_cell(cell, in_file)
        _said_in(cell, error, nbformat)
    notebook.cells.extend(unneeded)
    unsaved = None if output is None else _write(nbformat, notebook, Path(output))
    rows = _summary_rows(summary)
    return NotebookOutcome(
        (rows or []) + _unreached(notebook, only, rows), error, error_name, unsaved,
        refused=_refused(summary), interrupted=interruption.signal,
        failed_cell=failed_cell)


def check_output_file(output: str | Path, source: str | Path | None = None) -> None:
    """Refuse an ``--output`` no executed notebook should be written at (not an ``.ipynb``
    name, the notebook being run, a missing or read-only folder, a folder's name) before
    the notebook runs."""
    path = Path(output)
    folder = path.parent
    if path.is_dir():
        raise WorkflowError(f"--output {str(output)!r} is a folder; name the notebook file "
                            f"to write, such as {str(path / 'executed.ipynb')!r}")
    _refuse_output_name(path, source)
    if not folder.is_dir():
        raise WorkflowError(f"--output {str(output)!r}: its folder {str(folder)!r} does not "
                            "exist; create it or name a file in an existing folder")
    if not os.access(folder, os.W_OK | os.X_OK) or (path.exists()
                                                    and not os.access(path, os.W_OK)):
        raise WorkflowError(f"--output {str(output)!r} cannot be written (no permission); "
                            "name a file in a folder you can write")


def _refuse_output_name(path: Path, source: str | Path | None) -> None:
    """Refuse writing the executed notebook (ipynb JSON) over the notebook being run (a
    percent-format ``.py`` would be lost) or under a name other than ``.ipynb``."""
    suggested = str(path.with_name(f"{Path(source or path).stem}.executed.ipynb"))
    if source is not None and path.absolute().resolve() == Path(source).absolute().resolve():
        raise WorkflowError(f"--output {str(path)!r} is the notebook being run, which the "
                            f"executed notebook would replace; name another file, such as "
                            f"{suggested!r}")
    if path.suffix != ".ipynb":
        raise WorkflowError(f"--output {str(path)!r} is not an .ipynb file, and the executed "
                            f"notebook is written as one; name a FILE.ipynb, such as "
                            f"{suggested!r}")


def _write(nbformat: Any, notebook: Any, output: Path) -> str | None:
    """Write the executed notebook; the one-line reason it was not (said on stderr), so
    that the run's status table still shows."""
    try:
        nbformat.write(notebook, str(output))
    except OSError as exc:
        said = (f"cannot write the executed notebook to {str(output)!r}: "
                f"{exc.strerror or exc}; check that its folder exists and can be written")
        print(f"dagnb: {said}", file=sys.stderr)
        return said
    return None


def _settings_env(settings: Mapping[str, Any]) -> dict[str, str]:
    """The settings as the kernel's ``DAGNB_<KEY>`` variables, checked as the kernel would
    check them; a relative path made absolute here (the kernel works in another folder)."""
    unknown = sorted(set(settings) - set(TOP_KEYS) - set(DEFAULT_KEYS))
    if unknown:
        raise ConfigError(f"{unknown[0]!r} is not a setting; expected one of "
                          f"{', '.join(TOP_KEYS + DEFAULT_KEYS)}")
    given = {f"{ENV_PREFIX}{key.upper()}": variable_text(value) for key, value in settings.items()}
    return {name: variable_text(value) for value, name in env_values(given).values()}


def _on_cell_error(client: Callable[[], Any], failing: list[Any],
                   interruption: _Interruption) -> Callable[..., Any]:
    """nbclient's hook for a cell that raised: note the cell (the last one noted is
    the one that stopped the run), then run the summary (not again for the summary's
    own error: it would run itself over and over)."""

    def hook(cell: Any, execute_reply: dict[str, Any], **_: Any) -> Any:
        if cell.source == _SUMMARY_CODE:
            return None
        failing.append(cell)
        return _summary_after_error(client(), execute_reply, interruption)

    return hook


def _failed_cell(cell: Any, in_file: list[Any]) -> FailedCell:
    """The failing cell as the file numbers it: its step (a ``%%dagger`` cell's), else
    its first line (shortened)."""
    number = next((i + 1 for i, c in enumerate(in_file) if c is cell), None)
    found = dagger_cells([("code", cell.source)])
    if found and found[0].name:
        return FailedCell(number, step=found[0].name)
    first = next((line.strip() for line in cell.source.splitlines() if line.strip()), "")
    return FailedCell(number, first_line=first if len(first) <= 60 else first[:59] + "…")


async def _summary_after_error(client: Any, reply: dict[str, Any],
                               interruption: _Interruption) -> None:
    """Run the summary cell (the last) in the kernel of a cell that failed, before
    nbclient shuts it down: the status table then shows every step, those the failure
    left unrun too, as after a YAML run. Not when the time limit passed: the summary
    would wait for the ``--background`` runs the limit cut short."""
    if not reply["content"].get("evalue", "").startswith(_TIME_LIMIT):
        await _run_summary(client, interruption)


async def _run_summary(client: Any, interruption: _Interruption) -> None:
    """Run the summary cell (the last) in the kernel, before nbclient shuts it down;
    after a signal, once the ``--background`` runs still going are cancelled."""
    from jupyter_core.utils import ensure_async

    index = len(client.nb.cells) - 1
    try:
        if interruption.signal is not None:  # (silent: no cell of the notebook, no output)
            sent = await ensure_async(client.kc.execute(_CANCEL_CODE, silent=True))
            await client.async_wait_for_reply(sent)
        await client.async_execute_cell(client.nb.cells[index], index)
    except Exception:  # (the kernel died, say): the failing cell's error is the news
        return


_TIME_LIMIT = "the run's time limit"


def _whole_run_limit(timeout: float | None) -> dict[str, Any]:
    """nbclient's options for a limit on the whole notebook: each cell gets what is left,
    and the one running when it passes is interrupted (dagnb then stops its steps, as
    for Ctrl-C) rather than its kernel killed with the steps' processes left running."""
    if timeout is None:
        return {}
    deadline = time.monotonic() + timeout
    said = f"{_TIME_LIMIT} ({timeout:g}s) passed; its running steps were stopped"
    return {
        "timeout_func": lambda cell: max(deadline - time.monotonic(), 0.01),  # (0: no limit)
        "interrupt_on_timeout": True,
        "error_on_timeout": {"ename": "TimeoutError", "evalue": said,
                             "traceback": [f"TimeoutError: {said}"]},  # (the last line shown)
    }


def _notebook_libraries() -> tuple[Any, Any]:
    with _without(_GRAMMARS):
        try:
            import nbformat
            from nbclient import NotebookClient
        except ImportError:
            raise DagnbError("running a notebook needs nbclient and ipykernel; install them "
                             "with pip install 'dagnb[notebook]'") from None
    return nbformat, NotebookClient


# jsonschema, which nbformat imports, imports this where it is installed (Jupyter's own
# schemas want it): it builds 38 grammars as it loads, 0.9 to 1.3 s of CPU each `dagnb run
# NOTEBOOK`, for the "iri" format, which no notebook schema checks
_GRAMMARS = "rfc3987_syntax"


@contextlib.contextmanager
def _without(module: str) -> Iterator[None]:
    """Within it, ``module`` cannot be imported (ImportError: jsonschema checks that
    format without it), unless it was already; importable again after."""
    blocked = module not in sys.modules
    if blocked:
        sys.modules[module] = None  # type: ignore[assignment]
    try:
        yield
    finally:
        if blocked and module in sys.modules and sys.modules[module] is None:
            del sys.modules[module]


def _load(nbformat: Any, path: Path) -> Any:
    if path.suffix == ".py":
        cells = []
        for kind, source, tags in read_notebook_tagged(path):
            new = nbformat.v4.new_code_cell if kind == "code" else nbformat.v4.new_markdown_cell
            cells.append(new(source, metadata={"tags": tags} if tags else {}))
        return nbformat.v4.new_notebook(cells=cells)
    read_notebook(path)  # the same one-line errors as `dagnb validate` for a bad file
    return nbformat.read(str(path), as_version=4)


def _inject_parameters(nbformat: Any, notebook: Any, params: Mapping[str, Any],
                       path: Path, typed: Mapping[str, str]) -> dict[str, Any]:
    """papermill's convention: assignments in a cell after the one tagged ``parameters``,
    for names that cell assigns (at the top, with a warning, when no cell has the tag);
    the values set, as the cell sets them."""
    if not params:
        return {}  # (an injected cell an earlier run left stays: papermill's too)
    notebook.cells = [c for c in notebook.cells if not _tagged(c, "injected-parameters")]
    tagged = [i for i, c in enumerate(notebook.cells) if _tagged(c, "parameters")]
    if tagged:
        source = notebook.cells[tagged[0]].source
        _check_parameter_names(params, bound_names(source), path)
        params = {**params, **_kept_as_typed(params, typed, text_names(source))}
    else:
        _refuse_step_params(params, notebook.cells, path)
        checks.warn_user(
            f"--param {', '.join(map(repr, params))}: no cell of {str(path)!r} is tagged "
            "'parameters', so the values are set in a cell put at the top, which a later "
            "assignment overwrites; tag the cell that assigns its parameters 'parameters' "
            "(papermill's convention)")
    source = "# Parameters\n" + "".join(f"{name} = {_literal(value)}\n"
                                        for name, value in params.items())
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    notebook.cells.insert(tagged[0] + 1 if tagged else 0, cell)
    return dict(params)


def _refuse_step_params(params: Mapping[str, Any], cells: Sequence[Any], path: Path) -> None:
    """With no parameters cell, refuse a param that no cell mentions but a ``%%dagger``
    line gives as its step's own (``--param n=5``): set in a cell at the top, it would
    change nothing, where a workflow file's ``--param n=3`` sets its steps' ``n`` (the
    run served every step from the cache, n=3 recorded, unused)."""
    found = dagger_cells([(cell.cell_type, cell.source) for cell in cells])
    for name in params:
        given = [(cell.name, value) for cell in found for named, value in line_params(cell.line)
                 if named == name and "$" not in value and "{" not in value]
        if not given or _mentioned(name, cells):
            continue
        step, value = given[0]
        raise WorkflowError(
            f"--param {name!r}: no cell of {str(path)!r} reads a variable {name!r}; step "
            f"{step!r} has a param {name} of its own (--param {name}={value} on its %%dagger "
            f"line), which a notebook's --param does not set: write --param {name}=${name} "
            f"on that line, and {name} = {value} in a cell tagged 'parameters'")


def _mentioned(name: str, cells: Sequence[Any]) -> bool:
    """Whether a cell's text names ``name`` other than as a ``--param NAME=`` of a
    ``%%dagger`` line (a read, an assignment, a ``$name``, a comment: then setting it may
    matter)."""
    word = re.compile(rf"(?<![\w.-]){re.escape(name)}\b")
    own = re.compile(rf"--param[ =]+{re.escape(name)}=")
    return any(word.search(own.sub("", cell.source)) for cell in cells
               if cell.cell_type == "code")


def _tagged(cell: Any, tag: str) -> bool:
    return tag in cell.get("metadata", {}).get("tags", [])


def _literal(value: Any) -> str:
    """Python source giving ``value`` (JSON read): its repr, but a float repr writes as
    ``inf`` or ``nan`` (a NameError), also inside a list or mapping, as ``float('inf')``."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"float({str(value)!r})"
    if isinstance(value, list):
        return "[" + ", ".join(map(_literal, value)) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{_literal(k)}: {_literal(v)}" for k, v in value.items()) + "}"
    return repr(value)


def _kept_as_typed(params: Mapping[str, Any], typed: Mapping[str, str],
                   texts: set[str]) -> dict[str, str]:
    """For a name the parameters cell gives as text, the value as typed where JSON read
    it as other than text (``3.10`` the number 3.1); a quoted ``"3.10"`` is text already."""
    return {name: typed[name] for name in texts & typed.keys()
            if not isinstance(params.get(name), str)}


def _check_parameter_names(params: Mapping[str, Any], assigned: set[str], path: Path) -> None:
    """Refuse a param the parameters cell does not assign: set after it, no cell would
    read it (a misspelt ``rowz`` left ``rows`` as it was)."""
    for name in params:
        if name not in assigned:
            known = sorted(assigned)
            listed = f"its parameters are {', '.join(known)}" if known else "it assigns none"
            hint = checks.did_you_mean(name, known, otherwise=(
                f"assign {name} in that cell to set it from the command line"))
            raise WorkflowError(f"--param {name!r}: the parameters cell of {str(path)!r} "
                                f"assigns no {name!r}; {listed}; {hint}")


def _refuse_secret_params(params: Mapping[str, Any], typed: Mapping[str, str],
                          cells: list[tuple[str, str]], store: Any = None) -> None:
    """Refuse a param holding the value of a secret, before the kernel starts: the
    injected-parameters cell would hold it in clear, in the kernel and in the
    ``--output`` notebook (papermill's does). Refused: a param holding, anywhere and in
    any leak form, the value of a secret the notebook's cells declare or the registry's,
    as set now (as a workflow's params are checked), the credentials of the kernel's
    store too (``store``, its ``cache_directory`` setting; None: this process's); and
    one whose value is that of a variable named as a secret (``HF_TOKEN``), declared or
    not."""
    if not params:
        return
    declared = {name: os.environ[name] for name in sorted(declared_secrets(cells))
                if os.environ.get(name)}
    finder = SecretFinder({**declared, **settings().credential_secrets(store)})
    named = _named_secret_values(os.environ)
    for name, value in params.items():
        texts = _param_texts(value, typed.get(name))
        held = (finder.find("\n".join([_literal(value), *texts]).encode())
                or next((named[text] for text in texts if text in named), None))
        if held is not None:
            raise WorkflowError(
                f"--param {name!r} holds the value of secret {held!r}, which would be "
                "written in clear to the notebook's injected-parameters cell (and --output's "
                f"file); pass it as a secret, not a param: --secret {held} on the %%dagger "
                f"cell that needs it, read there as os.environ[{held!r}] (a --python cell) "
                f'or "${held}" (a shell cell)')


def _param_texts(value: Any, typed: str | None) -> set[str]:
    """A param's value as text (trimmed): as typed (``--param``), and as read (the text,
    or the literal a number or list is written as)."""
    read = value if isinstance(value, str) else _literal(value)
    return {text.strip() for text in (typed, read) if text is not None}


def _named_secret_values(environ: Mapping[str, str]) -> dict[str, str]:
    """Value (trimmed) -> name of each variable named as a secret, but for a value under
    ``MIN_LINE`` characters (``dev``, ``1``: in too many params) and one naming an
    existing file or folder (``GOOGLE_APPLICATION_CREDENTIALS``: a path, not the key)."""
    found = {}
    for name, value in sorted(environ.items()):
        text = value.strip()
        if named_surely_secret(name) and len(text) >= MIN_LINE and not os.path.exists(text):
            found[text] = name
    return found


def _cells_after_selection(notebook: Any, only: list[str] | None) -> list[Any]:
    """Remove (and return) the cells after the last one a target needs: none of them runs."""
    if only is None:
        return []
    sources = [(c.cell_type, c.source) for c in notebook.cells]
    needed = [c.index for c in dagger_cells(sources) if c.name in only]
    cut = (needed[-1] + 1) if needed else len(notebook.cells)
    tail = notebook.cells[cut:]
    del notebook.cells[cut:]
    return tail


# Set by Jupyter for the kernel of a notebook, and inherited by what that kernel (or a
# terminal in JupyterLab) starts: the headless kernel would read the caller's notebook.
_CALLERS_NOTEBOOK = "JPY_SESSION_NAME"
# the notebook's absolute path, for the run records' origin alone (graph_origin reads it)
_NOTEBOOK_FILE = "DAGNB_NOTEBOOK_FILE"


def _kernel_env(only: list[str] | None, notebook: Path | None = None,
                params: Mapping[str, Any] | None = None) -> dict[str, str]:
    env = {**os.environ, "DAGNB_WIDGETS": "0", **_paths_from_here(os.environ)}
    env.pop(ONLY_STEPS_VARIABLE, None)
    env.pop(_CALLERS_NOTEBOOK, None)  # the cells define the graph as they run, as anywhere
    # (a notebook run from a notebook's cell: not the caller's)
    for name in (_NOTEBOOK_FILE, NOTEBOOK_PARAMS_VARIABLE):
        env.pop(name, None)
    if notebook is not None:  # (dagnb history names the notebook's runs by it)
        env[_NOTEBOOK_FILE] = str(notebook.absolute())
    if params:  # (its runs record them, as a workflow's record its --param values)
        env[NOTEBOOK_PARAMS_VARIABLE] = json.dumps(params)
    if only is not None:
        env[ONLY_STEPS_VARIABLE] = ",".join(only)
    return env


def _paths_from_here(environ: Mapping[str, str]) -> dict[str, str]:
    """The caller's relative ``DAGNB_*`` paths (a cache folder, ``DAGNB_CONFIG``) made
    absolute, as ``--cache-dir`` is: the kernel works in the notebook's folder, where
    they would name another place than ``dagnb config`` shows here."""
    made = {name: str(value) for value, name in env_values(environ).values()
            if isinstance(value, str) and os.path.isabs(value)
            and not os.path.isabs(environ[name])}
    config = environ.get(CONFIG_VARIABLE, "").strip()
    if config and config.lower() != "none" and not os.path.isabs(config):
        made[CONFIG_VARIABLE] = str(Path(config).expanduser().absolute())
    return made


CONFIG_VARIABLE = f"{ENV_PREFIX}CONFIG"


def _execute(client: Any, env: dict[str, str],
             interruption: _Interruption) -> tuple[str | None, str | None]:
    """Run every cell; the failing cell's error text and error name, or None twice
    (also when a signal stopped the run before a cell failed, or killed the kernel)."""
    from nbclient.exceptions import CellExecutionError, DeadKernelError

    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        return _short_error(exc), getattr(exc, "ename", None)
    except (_Stopped, DeadKernelError):
        if interruption.signal is None:
            raise
    finally:
        interruption.restore()
    return None, None


_STOPPING = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP")
                  if hasattr(signal, name))


class _Interruption:
    """Ctrl-C, SIGTERM or SIGHUP during the run, heard as a YAML run hears them (nbclient's
    own handlers shut the kernel down under the running cell: a traceback, no table, no
    ``output``). The first interrupts the kernel: the running cell stops its steps as on
    Ctrl-C in Jupyter, the summary runs, no later cell does. A second kills the kernel
    (dagnb's watcher kills what its steps left). A kernel still starting is left alone
    (one interrupted then dies): the first cell stops. Heard are the signals the caller
    made raise KeyboardInterrupt (the CLI's SIGTERM and SIGHUP too); the others get back
    what they had, so an ignored one stays ignored (``nohup``, ``&`` in a script)."""

    def __init__(self) -> None:
        self.signal: int | None = None  # the first signal heard
        self._kernel_ready = False
        self._before = {number: signal.getsignal(number) for number in _STOPPING}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._tasks: set[asyncio.Future[None]] = set()  # (kept: a task is weakly held)

    def listen(self, client: Any) -> None:
        """In nbclient's loop, once it has set its handlers and before the kernel starts."""
        if threading.current_thread() is not threading.main_thread():
            return  # (no handler can be set there; nbclient sets none either)
        self._loop = asyncio.get_running_loop()
        for number, before in self._before.items():
            if callable(before):
                self._loop.add_signal_handler(number, self._heard, client, number)
            else:
                self._put_back(number, before)

    def kernel_started(self, **_: Any) -> None:
        """nbclient's hook once the kernel has answered: an interrupt no longer kills it."""
        self._kernel_ready = True

    def _heard(self, client: Any, number: int) -> None:
        first = self.signal is None
        self.signal = self.signal or number
        manager = client.km
        if self._kernel_ready and manager is not None:
            stop = (manager.interrupt_kernel if first
                    else functools.partial(manager.shutdown_kernel, now=True))
            task = asyncio.ensure_future(_quietly(stop))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    def restore(self) -> None:
        """The handlers of before the run (nbclient leaves SIGTERM at its default)."""
        if self._loop is not None:
            for number, before in self._before.items():
                self._put_back(number, before)

    def _put_back(self, number: int, before: Any) -> None:
        assert self._loop is not None
        self._loop.remove_signal_handler(number)
        if before is not None:  # (None: a handler set outside Python, left as it is)
            signal.signal(number, before)


class _Stopped(Exception):
    """A cell about to start after the run was interrupted: none does."""


async def _quietly(stop: Callable[[], Any]) -> None:
    """Interrupt or kill the kernel, which may be dying already."""
    from jupyter_core.utils import ensure_async

    with contextlib.suppress(Exception):
        await ensure_async(stop())


def _hearing_signals(client_class: Any, interruption: _Interruption) -> Any:
    """nbclient's client, whose signals ``interruption`` hears from before the kernel
    starts (nbclient sets its own handlers just before)."""

    class Client(client_class):
        async def async_start_new_kernel(self, **kwargs: Any) -> None:
            interruption.listen(self)
            await super().async_start_new_kernel(**kwargs)

    return Client


def _stop_after_interruption(client: Callable[[], Any],
                             interruption: _Interruption) -> Callable[..., Any]:
    """nbclient's hook for a cell about to run: after a signal, the summary runs (the
    interrupted cell finished without raising) and no other cell."""

    async def hook(cell: Any, **_: Any) -> None:
        if interruption.signal is not None and cell.source != _SUMMARY_CODE:
            await _run_summary(client(), interruption)
            raise _Stopped

    return hook


def _short_error(exc: Exception) -> str:
    """The error's last lines: nbclient's message holds the cell's source and its
    printed output (already echoed above it) between rules, then the traceback; an
    error IPython shows without one (a magic's UsageError) is its one line."""
    text = ANSI.sub("", str(exc)).rpartition(f"\n{_NBCLIENT_RULE}\n")[2]
    lines = _last_lines(text)
    if not lines:
        return f"{getattr(exc, 'ename', type(exc).__name__)}: {getattr(exc, 'evalue', exc)}"
    return lines


def _last_lines(text: str) -> str:
    """The last 12 lines of an error's text that are not blank."""
    return "\n".join([line for line in text.splitlines() if line.strip()][-12:])


_NBCLIENT_RULE = "-" * 18  # (nbclient's exec_err_msg frames the source and output so)


def _echo(cell: Any, stream: TextIO) -> None:
    """Print what a finished cell showed, in order, as a terminal IPython would: its
    printed lines, and the text of its values and displays (a step's ``display(df)``, a
    cell's last expression, ``%dagger status``'s tables)."""
    if cell.cell_type != "code" or cell.source == _SUMMARY_CODE:
        return
    for out in cell.get("outputs", []):
        text = _shown_text(out)
        if text:
            stream.write(text if text.endswith("\n") else text + "\n")
    stream.flush()


_SHOWN = ("stream", "execute_result", "display_data")  # (an error is said once, at the end)


def _shown_text(out: Any) -> str:
    """An output's text: a stream's, or the ``text/plain`` of a value or display."""
    if out.get("output_type") not in _SHOWN:
        return ""
    text = out.get("text") or out.get("data", {}).get("text/plain", "")
    return "".join(text) if isinstance(text, list) else text


def _refused(summary: Any) -> bool:
    """Whether the summary cell said fail-on-miss's refusal stopped the run."""
    return any(_REFUSED_MARK in out.get("text", "") for out in summary.get("outputs", []))


def _said_in(cell: Any, error: str, nbformat: Any) -> None:
    """Add the failure of the ``--background`` run ``cell`` started to its outputs, as
    the error a cell raises: the executed notebook (``--output``), a CI's record of the
    run, showed it started and nothing more, though the run failed."""
    cell.outputs.append(nbformat.v4.new_output(
        "error", ename=RunFailed.__name__, evalue=error, traceback=error.splitlines()))


def _background_failure(summary: Any, cells: list[Any]) -> tuple[str, Any] | None:
    """The error of the failed ``--background`` cell the summary named
    (:func:`background_failure`), shortened as a failing cell's, and that cell."""
    said = _marked_line(summary, _BACKGROUND_MARK)
    if not said:
        return None
    found = json.loads(said)
    cell = next((c for c in cells if c.get("execution_count") == found["cell"]), None)
    return (_last_lines(found["error"]), cell) if cell is not None else None


def _marked_line(summary: Any, mark: str) -> str | None:
    """What the summary cell printed after ``mark`` on its line; None when it did not."""
    for out in summary.get("outputs", []):
        text = out.get("text", "")
        if mark in text:
            return text.split(mark, 1)[1].partition("\n")[0]
    return None


def _summary_rows(cell: Any) -> list[dict[str, Any]] | None:
    """The steps' rows the summary cell printed; None when it did not run."""
    said = _marked_line(cell, _SUMMARY_MARK)
    return None if said is None else json.loads(said)


def _unreached(notebook: Any, only: list[str] | None,
               rows: list[dict[str, Any]] | None) -> list[dict[str, Any]]:
    """A ``not run`` row for each step the run was to run that no cell defined in the
    kernel (a failed cell stopped it first, maybe before any step ran), so the table
    shows every step."""
    if rows is None:
        return []  # (no summary: the time limit passed, or the kernel died)
    shown = {row.get("step") for row in rows}
    cells = dagger_cells((c.cell_type, c.source) for c in notebook.cells)
    names = dict.fromkeys(c.name for c in cells if only is None or c.name in only)
    return [{"step": name, "state": "not run"} for name in names if name not in shown]


def check_notebook_file(path: str | Path) -> None:
    """Refuse what is not a notebook file before starting a kernel."""
    if Path(path).suffix not in (".ipynb", ".py"):
        raise WorkflowError(f"{str(path)!r} is not a notebook; name an .ipynb or a "
                            "percent-format .py file")
