"""What ``dagnb run NOTEBOOK`` refuses before its kernel starts, as a YAML run refuses it
before any step runs, in the same words (exit 2): a cache folder that cannot be one (a
file, a folder of other things), a secret a step must run with that is not set, and the
Dagger executor where no engine can be reached. In the kernel each would stop only the
cell that runs the step, after the cells before it ran, and exit 1.

As for a YAML run, only a step that surely runs is checked (one the cache may serve
needs no secret nor engine): a step a cell runs (not ``--define-only``; under
``--target``, one it needs) or one such a cell needs, of which the kernel's cache folder
holds no entry at all (its key here may not be the kernel's, which reads the notebook's
variables: an entry of its name leaves it to the kernel). Left to the kernel too, as
what is known here may not be what it will be: a cell whose line reads notebook
variables, a step after a cell that may change the environment or the settings
(``os.environ``, ``load_dotenv()``, ``%env``, ``%dagger config``, ``configure()``; a
secret's name in a cell before it), a cache on object storage, and ``fail-on-miss``
(whose refusal of the steps that miss comes first in the kernel).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Collection, Mapping, Sequence
from pathlib import Path

from dagnb.cache import Store, refuse_foreign_folder
from dagnb.checks import is_url
from dagnb.config import Settings, env_values, file_values, find_config_file
from dagnb.errors import ConfigError, DagnbError
from dagnb.model.contract import resolve_secrets
from dagnb.model.graph import Graph
from dagnb.model.step import Step
from dagnb.notebook.document import MAGIC, DaggerCell, dagger_cells
from dagnb.notebook.magics import DaggerMagics, cell_definitions, line_fields, parse_line
from dagnb.runtime.prepare import require_engine  # (a YAML run's check, in its words)

__all__ = ["refuse_before_kernel"]

# a cell that may set a variable or a setting the steps after it read
_CHANGES_SETTINGS = re.compile(
    r"environ|putenv|dotenv|%env\b|%set_env\b|%dagger\s+config\b|configure\(|reload\(")


def refuse_before_kernel(notebook: Path, cells: Sequence[tuple[str, str]],
                         env: Mapping[str, str], only: Collection[str] | None) -> None:
    """Raise the error a YAML run raises before running anything, for the cells
    ``cells`` of ``notebook`` (as they will run), run by a kernel started with ``env``
    (``only``: the steps ``--target`` needs)."""
    known = cells[:_first_changing_cell(cells)]  # (the cells after it: left to the kernel)
    running = _steps_run(known, only)
    kernel = _kernel_settings(notebook, env) if running else None
    if kernel is None:  # (no step runs before such a cell: the kernel refuses nothing)
        return
    folder = _cache_folder(notebook, kernel.cache_directory)
    if folder is not None and kernel.cache_mode != "read-only":
        refuse_foreign_folder(folder)
    wanting = {name: step for name, step in running.items()  # (most steps: none of it)
               if step.secrets or (step.executor or kernel.executor) == "dagger"}
    if not wanting or kernel.cache_mode == "fail-on-miss":
        return
    if kernel.cache_mode != "off":  # (off: every step runs; otherwise not one it may serve)
        stored = _stored_steps(folder)
        wanting = {name: step for name, step in wanting.items()
                   if stored is not None and name not in stored}
    named = {word for _, source in known for word in _words(source)}
    resolve_secrets([step for step in wanting.values() if named.isdisjoint(step.secrets)],
                    env)
    require_engine(Graph(notebook.stem), wanting, kernel.executor, None, None)


def _kernel_settings(notebook: Path, env: Mapping[str, str]) -> Settings | None:
    """The settings the kernel's cells start with: the config file found from the
    notebook's folder (the kernel works there), under the kernel's ``DAGNB_*``
    variables, as :func:`dagnb.config.settings` reads them; None when they do not load
    (the kernel says why)."""
    loaded = Settings()
    try:
        found = find_config_file(notebook.parent.absolute())
        for key, value in (file_values(found) if found is not None else {}).items():
            setattr(loaded, key, value)
        for key, (value, _) in env_values(env).items():
            setattr(loaded, key, value)
    except ConfigError:
        return None
    return loaded


def _cache_folder(notebook: Path, directory: str) -> Path | None:
    """The kernel's cache folder: a relative one is the notebook folder's, where
    ``%load_ext dagnb`` pins it (a variable's and a file's are absolute already); None
    for a store URL, whose entries are not all in its local tier."""
    if is_url(directory):
        return None
    path = Path(directory).expanduser()
    return (path if path.is_absolute() else notebook.parent.absolute() / path).resolve()


def _first_changing_cell(cells: Sequence[tuple[str, str]]) -> int:
    """The index of the first plain code cell that may change a variable or setting
    the steps after it read (the number of cells when none does)."""
    return next((index for index, (kind, source) in enumerate(cells)
                 if kind == "code" and not source.lstrip().startswith(MAGIC)
                 and _CHANGES_SETTINGS.search(source)), len(cells))


def _words(source: str) -> set[str]:
    """The names a plain code cell holds (one that sets a secret's variable names it)."""
    return set(re.findall(r"\w+", source)) if not source.lstrip().startswith(MAGIC) else set()


def _steps_run(cells: Sequence[tuple[str, str]], only: Collection[str] | None
               ) -> dict[str, Step]:
    """The steps the ``%%dagger`` cells run, in order, with the steps they need as
    defined then; none of a cell whose line reads notebook variables."""
    defined: dict[str, Step | None] = {}
    running: dict[str, Step] = {}
    for cell in dagger_cells(cells):
        if line_fields(cell.line):
            defined[cell.name] = None  # (known when the cell runs only)
            continue
        with contextlib.suppress(DagnbError):  # (refused already: notebook_graph's checks)
            step = cell_definitions([cell])[cell.index][0]
            defined[step.name] = step
            if _runs_its_step(cell, only):
                _add_with_needs(step, defined, running)
    return running


def _runs_its_step(cell: DaggerCell, only: Collection[str] | None) -> bool:
    args = parse_line(DaggerMagics.dagger_cell, cell.line[len(MAGIC):])
    return not args.define_only and (only is None or args.name in only) and (
        args.cache_mode != "fail-on-miss")


def _add_with_needs(step: Step, defined: Mapping[str, Step | None],
                    running: dict[str, Step]) -> None:
    if step.name in running:
        return
    running[step.name] = step
    for need in step.needs:
        upstream = defined.get(need)
        if upstream is not None:
            _add_with_needs(upstream, defined, running)


def _stored_steps(folder: Path | None) -> set[str] | None:
    """The names of the steps with entries in ``folder`` (None: not known, a store
    URL's)."""
    if folder is None:
        return None
    if not folder.is_dir():
        return set()
    return Store(folder, read_only=True).step_names()
