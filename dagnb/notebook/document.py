"""A notebook file as a pipeline: its ``%%dagger`` cells read without running anything.

``dagnb graph``/``validate NOTEBOOK`` and the kernel's session after a restart read the
steps a notebook defines from the file itself: each ``%%dagger`` cell, in order, is then
parsed by the magic's own option parser and cell codec
(:func:`dagnb.notebook.magics.graph_from_cells`), so a step read from the file is the
step the cell defines when it runs. ``.ipynb`` files are JSON; jupytext's percent format
(``.py`` with ``# %%`` cell markers, magics commented out as ``# %%dagger ...``) is read
too, by hand: the two rules below are all this needs, not a jupytext dependency.

Where the kernel learns its notebook's path (:func:`kernel_notebook_path`): Jupyter Server
(2.x) starts a session's kernel with ``JPY_SESSION_NAME`` set to the notebook's path and
ipykernel copies it into ``__session__``; VS Code sets ``__vsc_ipynb_file__``. A kernel
started any other way (``jupyter console``, nbclient) does not know it, and dagnb then
reads nothing: the cells define the graph as they run, as before.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
import shlex
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from dagnb.checks import missing_file
from dagnb.errors import WorkflowError
from dagnb.runtime.history import kernel_notebook_path

__all__ = [
    "MAGIC", "DaggerCell", "binds_at_top", "bound_names", "dagger_cells", "declared_secrets",
    "defining_cell", "kernel_notebook_path", "read_names", "read_notebook",
    "read_notebook_tagged", "refuse_unloaded_magic", "text_names",
]

MAGIC = "%%dagger"
_PERCENT_MARKER = re.compile(r"^# %%(?:\s|$)")
_COMMENTED_MAGIC = re.compile(r"^# (%%?\w)")


@dataclass(frozen=True)
class DaggerCell:
    """One ``%%dagger`` cell: its index among the notebook's cells, first line and body."""

    index: int
    line: str
    body: str

    @property
    def name(self) -> str:
        """The step name (the first word after ``%%dagger``), or '' when there is none."""
        words = self.line[len(MAGIC):].split()
        return words[0] if words else ""


def read_notebook(path: str | Path) -> list[tuple[str, str]]:
    """``(cell_type, source)`` for each cell of an ``.ipynb`` or percent-format ``.py`` file."""
    return [(kind, source) for kind, source, _ in read_notebook_tagged(path)]


def read_notebook_tagged(path: str | Path) -> list[tuple[str, str, list[str]]]:
    """:func:`read_notebook` with each cell's tags (papermill's ``parameters`` cell,
    which ``dagnb run NOTEBOOK --param`` follows, is one)."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise WorkflowError(missing_file("notebook", path)) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise WorkflowError(f"notebook {str(path)!r} cannot be read: {exc}") from None
    if path.suffix == ".py":
        return _percent_cells(text, path)
    return _ipynb_cells(text, path)


def _ipynb_cells(text: str, path: Path) -> list[tuple[str, str, list[str]]]:
    try:
        cells = json.loads(text)["cells"]
        return [(c["cell_type"], _joined(c.get("source", "")), _tags(c.get("metadata")))
                for c in cells]
    except (ValueError, KeyError, TypeError) as exc:
        raise WorkflowError(f"{str(path)!r} is not a notebook (.ipynb JSON with cells): "
                            f"{exc}") from None


def _joined(source: str | list[str]) -> str:
    return source if isinstance(source, str) else "".join(source)


def _percent_cells(text: str, path: Path) -> list[tuple[str, str, list[str]]]:
    """Cells of jupytext's percent format: ``# %%`` starts a cell, ``# %%dagger`` is a
    magic, ``tags=[...]`` on the marker are the cell's tags. Code before the first marker
    is a first code cell, as jupytext reads it; a file with no marker is a plain script,
    not a notebook, and is refused."""
    lines = text.splitlines(keepends=True)
    starts = [i for i, line in enumerate(lines) if _PERCENT_MARKER.match(line)]
    if not starts:
        raise WorkflowError(f"{str(path)!r} has no '# %%' cells, so it is not a percent-format "
                            "notebook; start each cell with a '# %%' line, or run it with python")
    cells = []
    preamble = "".join(_without_header(lines[:starts[0]]))
    if preamble.strip():
        cells.append(("code", preamble, []))
    for start, end in zip(starts, [*starts[1:], len(lines)], strict=True):
        kind = "markdown" if "[markdown]" in lines[start] else "code"
        cells.append((kind, "".join(lines[start + 1:end]), _marker_tags(lines[start])))
    return [(kind, _unescaped(source.strip("\n")), tags) for kind, source, tags in cells]


_MARKER_TAGS = re.compile(r"\btags=(\[[^\]]*\])")


def _marker_tags(marker: str) -> list[str]:
    """The tags a ``# %%`` line gives, which jupytext writes as a JSON list."""
    found = _MARKER_TAGS.search(marker)
    if found is None:
        return []
    try:
        return _tags({"tags": json.loads(found[1])})
    except ValueError:
        return []


def _tags(metadata: Any) -> list[str]:
    """A cell's tags, as strings; none where its metadata holds no list of them."""
    tags = metadata.get("tags") if isinstance(metadata, dict) else None
    return [tag for tag in tags if isinstance(tag, str)] if isinstance(tags, list) else []


def _without_header(lines: list[str]) -> list[str]:
    """The lines before the first cell less what jupytext keeps as notebook metadata,
    not as a cell: a ``#!`` line and the ``# ---`` ... ``# ---`` header."""
    if lines and lines[0].startswith("#!"):
        lines = lines[1:]
    if lines and lines[0].rstrip() == "# ---":
        closing = next((i for i, line in enumerate(lines) if i and line.rstrip() == "# ---"),
                       None)
        if closing is not None:
            lines = lines[closing + 1:]
    return lines


def _unescaped(source: str) -> str:
    """Undo jupytext's escaping of magics: ``# %%dagger`` (and a body commented in full)."""
    first, _, body = source.partition("\n")
    if not _COMMENTED_MAGIC.match(first):
        return source
    first = _COMMENTED_MAGIC.sub(r"\1", first, count=1)
    lines = body.splitlines()
    if first.startswith(MAGIC) and all(not s.strip() or s.startswith("#") for s in lines):
        lines = [re.sub(r"^# ?", "", s) for s in lines]
    return "\n".join([first, *lines])


def dagger_cells(cells: Iterable[tuple[str, str]]) -> list[DaggerCell]:
    """The ``%%dagger`` code cells, in order."""
    found = []
    for index, (kind, source) in enumerate(cells):
        first, _, body = source.lstrip("\n").partition("\n")
        if kind == "code" and first.startswith(MAGIC + " "):
            found.append(DaggerCell(index, first, body))
    return found


# `%load_ext dagnb`, `%reload_ext dagnb` (or dagnb.notebook.magics), the call IPython
# makes of either (`run_line_magic("load_ext", "dagnb")`), `load_ipython_extension(...)`
_LOADS_DAGNB = re.compile(r"(?<!\w)(?:re)?load_ext\b.*\bdagnb\b|\bload_ipython_extension\(")


def refuse_unloaded_magic(cells: Sequence[tuple[str, str]], notebook: str) -> None:
    """Refuse a notebook whose first ``%%dagger`` cell no cell before it loads dagnb in:
    run, IPython stops there (``Cell magic `%%dagger` not found``), after the cells
    before it ran. A kernel whose IPython profile loads dagnb needs no such cell."""
    found = dagger_cells(cells)
    if not found or _profile_loads_dagnb():
        return
    first = found[0]
    loads = [index for index, (kind, source) in enumerate(cells)
             if kind == "code" and any(_LOADS_DAGNB.search(line) for line in source.splitlines()
                                       if not line.lstrip().startswith("#"))]
    if loads and loads[0] < first.index:
        return
    where = f"{notebook}: cell {first.index + 1} ({first.line.strip()!r}) is a %%dagger cell"
    said = (f"{where}, but `%load_ext dagnb` comes only in cell {loads[0] + 1}, after it"
            if loads else f"{where}, but no cell before it runs `%load_ext dagnb`")
    raise WorkflowError(f"{said}, so IPython has no %%dagger magic there; add "
                        "`%load_ext dagnb` in a cell before it")


def _profile_loads_dagnb() -> bool:
    """Whether the IPython profile a kernel starts with names dagnb (in its config's
    ``extensions`` or a startup file): then it may load the magics itself."""
    try:
        from IPython.paths import get_ipython_dir
    except ImportError:  # (no IPython: no kernel either)
        return False
    profile = Path(get_ipython_dir()) / "profile_default"
    files = [*profile.glob("ipython*_config.*"), *profile.glob("startup/*")]
    for file in files:
        try:
            if "dagnb" in file.read_text(encoding="utf-8", errors="replace"):
                return True
        except OSError:
            continue
    return False


def declared_secrets(cells: Iterable[tuple[str, str]]) -> set[str]:
    """The secret names the cells declare, read without running them: ``--secret NAME``
    on a ``%%dagger`` line, ``secrets=["NAME", ...]`` in a plain cell's call (a
    ``dagnb.Step``). A name the cell computes (``$name``, a variable) is not known here."""
    cells = list(cells)
    names = {name for cell in dagger_cells(cells) for name in _line_secrets(cell.line)}
    for kind, source in cells:
        if kind == "code" and not source.lstrip().startswith("%%"):
            names |= _keyword_secrets(source)
    return names


def line_values(line: str, option: str) -> list[str]:
    """The values a ``%%dagger`` line gives ``option`` (``--param``), each time it is
    given (``--param a=1 --param=b=2``), as written (``$n`` unexpanded), read without
    running the cell; none from a line with an unclosed quote (the magic refuses it when
    the cell runs)."""
    try:
        words = shlex.split(line)
    except ValueError:
        return []
    values = []
    for before, word in itertools.pairwise(["", *words]):
        if before == option:
            values.append(word)
        elif word.startswith(f"{option}="):
            values.append(word.partition("=")[2])
    return values


def _line_secrets(line: str) -> list[str]:
    """The names a ``%%dagger`` line's ``--secret NAME`` (or ``--secret=NAME``) give."""
    return [name for name in line_values(line, "--secret")
            if name and "$" not in name and "{" not in name]


def line_params(line: str) -> list[tuple[str, str]]:
    """The ``NAME=VALUE`` pairs a ``%%dagger`` line's ``--param`` (or ``--param=``) give."""
    pairs = (given.partition("=") for given in line_values(line, "--param"))
    return [(name.strip(), value) for name, eq, value in pairs if eq and name.strip()]


def _keyword_secrets(source: str) -> set[str]:
    """The text literals in a ``secrets=[...]`` (or tuple) keyword of any call."""
    return {item.value for node in ast.walk(_parsed(source)) if isinstance(node, ast.keyword)
            and node.arg == "secrets" and isinstance(node.value, (ast.List, ast.Tuple))
            for item in node.value.elts
            if isinstance(item, ast.Constant) and isinstance(item.value, str)}


def defining_cell(path: str | Path, name: str) -> int | None:
    """The index of the first code cell that binds ``name`` at its top level, or None
    (also when the file cannot be read as a notebook: a plain script a kernel runs)."""
    try:
        cells = read_notebook(path)
    except WorkflowError:
        return None
    for index, (kind, source) in enumerate(cells):
        if name in binds_at_top(kind, source):
            return index
    return None


def binds_at_top(kind: str, source: str) -> set[str]:
    """The names a plain code cell binds (:func:`bound_names`); none for another
    cell (markdown, a cell magic's)."""
    if kind != "code" or source.lstrip().startswith("%%"):
        return set()
    return bound_names(source)


def bound_names(source: str) -> set[str]:
    """Names a cell binds: assignments, imports, defs, for targets (IPython lines skipped)."""
    tree = _parsed(source)
    names: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {(a.asname or a.name).split(".")[0] for a in node.names}
    return names


def text_names(source: str) -> set[str]:
    """Names a cell binds only to text literals (``version = "3.9"``): a parameters
    cell's text parameters."""
    tree = _parsed(source)
    text_targets = {id(target) for node in ast.walk(tree)
                    if isinstance(node, (ast.Assign, ast.AnnAssign))
                    and isinstance(node.value, ast.Constant) and isinstance(node.value.value, str)
                    for target in (node.targets if isinstance(node, ast.Assign) else [node.target])}
    stores = [node for node in ast.walk(tree)
              if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store)]
    return ({node.id for node in stores if id(node) in text_targets}
            - {node.id for node in stores if id(node) not in text_targets})


def read_names(source: str) -> set[str]:
    """Names a plain cell reads anywhere in it (IPython lines skipped): a cell that binds
    what a step reads takes its value from these."""
    return {node.id for node in ast.walk(_parsed(source))
            if isinstance(node, ast.Name) and isinstance(node.ctx, ast.Load)}


def _parsed(source: str) -> ast.Module:
    """The cell's Python, less its IPython lines (``%magic``, ``!cmd``); empty when it is
    not Python."""
    lines = [line for line in source.splitlines() if not line.lstrip().startswith(("%", "!"))]
    try:
        return ast.parse("\n".join(lines))
    except SyntaxError:
        return ast.Module(body=[], type_ignores=[])
