"""The paths a step run on this machine names by itself: the files it reads that its
key does not see, and the folder its relative paths start from.

A step's key counts the files it mounts, not those its command or code names
otherwise (the step contract): ``cp ../data/sales.csv "$DAGNB_OUT/"`` is served its old
result after an edit of the CSV, silently. As each key of a step run here is made
(:data:`dagnb.cache.keys.KEYED_ON_HOST`), the paths its shell text or its Python code's
text constants name that exist, outside its mounts, the cache folder and the system's
and Python's own folders, are looked for, once per command or code and folder; when the step is then
served from the cache and one of them changed after its entry was made, a warning
(:class:`UnmountedReadWarning`) names them, once per step and process (a first run reads
them as they are; the step's own outputs, a file untouched since, say nothing; a
folder changed when a file under it did); no key changes. A shell step printing its whole
environment (``env | grep '^REGION='``), whose variables no key can name, is warned of
on a hit too (:class:`UnkeyedEnvironmentWarning`).

:func:`ran_in_hint` says, for a step that failed on a file not found, the folder it
ran in: a shell step starts in its workflow's folder (or its ``workdir``), an
in-process Python step in the folder the process was started in.
"""

from __future__ import annotations

import dataclasses
import dis
import functools
import json
import os
import posixpath
import re
import shlex
import stat
import sys
import sysconfig
import time
import weakref
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path, PurePath
from types import CodeType
from typing import Any

from dagnb import checks
from dagnb.cache.keys import KEYED_ON_HOST, whole_environment_read
from dagnb.fingerprint import environ_unkeyed
from dagnb.fingerprint.environ import WHOLE, UnkeyedEnvironmentWarning, unkeyed_reads_said
from dagnb.model.step import Step, forgetting, host_folders, mount_path

__all__ = ["NOTEBOOK_WORDS", "PYTHON_WORDS", "WORKFLOW_WORDS", "FrontEndWords",
           "UnkeyedEnvironmentWarning", "UnmountedReadWarning", "ran_in_hint",
           "unmounted_reads"]


class UnmountedReadWarning(UserWarning):
    """A step names a file that none of its mounts covers: its key does not see it."""


# -- where a step starts ------------------------------------------------------------
def start_folder(step: Step, base_dir: Path, in_process: bool) -> str:
    """The folder ``step`` starts in on this machine: the process's for an in-process
    Python step, else its workdir's (as the executors find it), else ``base_dir``."""
    if in_process:
        return os.getcwd()
    if step.workdir is None:
        return os.fspath(base_dir)
    found = next((path for path in host_folders(base_dir, step.workdir, step.mounts)
                  if path.is_dir()), base_dir / step.workdir)
    return os.fspath(found)


# What an error or a stderr tail says when a path was not found.
_NOT_FOUND = ("No such file or directory", "FileNotFoundError")


def ran_in_hint(step: Step, error: BaseException, base_dir: Path, executor: str,
                in_process: bool) -> str:
    """``; it ran in /abs/my/workflows: paths in its command are relative to the
    workflow's folder`` for a step run on this machine whose error or stderr tail says
    a file was not found (a relative path read from another folder than it ran in), or
    that its $DAGNB_IN holds no folder of a step it does not need (``$DAGNB_IN/$name``,
    which validation does not read); "" for any other failure, or one in a container."""
    if executor not in ("local", "dask"):
        return ""
    text = f"{error}\n{getattr(error, 'stderr_tail', '')}"
    if not any(words in text for words in _NOT_FOUND):
        return ""
    unneeded = _unneeded_input(step, text)
    if unneeded is not None:
        return (f"; $DAGNB_IN holds only the outputs of the steps it needs, and it does "
                f"not need {unneeded!r}: add needs: [{unneeded}]")
    missing = _missing_paths(text)
    if missing and all(posixpath.isabs(path) for path in missing):
        return ""  # (an absolute path missing: where the step ran has nothing to do with it)
    folder = str(Path(start_folder(step, base_dir, in_process)).absolute())
    paths = "paths in its command are" if step.func is None else "paths in its code are"
    if in_process:
        workflow = str(Path(base_dir).absolute())
        return (f"; it ran in the folder dagnb was started in, {folder}: {paths} relative "
                "to it" + ("" if workflow == folder else
                           f", not to the workflow's folder {workflow}"))
    return f"; it ran in {folder}: {paths} relative to {_own_folder(step)}"


# The path a "not found" message names: ``cannot access 'x': No such ...`` (ls, cp),
# ``x: No such ...`` (cat, bash), ``No such ...: 'x'`` (Python's FileNotFoundError).
_MISSING_PATH = re.compile(
    r"'([^'\n]+)': No such file or directory"
    r"|(?:^|\s)([^\s:'\"]+): No such file or directory"
    r"|No such file or directory: '([^'\n]+)'", re.MULTILINE)


def _missing_paths(text: str) -> list[str]:
    """The paths ``text`` says were not found, as it names them."""
    return [next(group for group in match.groups() if group)
            for match in _MISSING_PATH.finditer(text)]


def _unneeded_input(step: Step, text: str) -> str | None:
    """The first name of a path ``text`` holds under ``step``'s own $DAGNB_IN
    (``.../use/in/make/d.txt``) that it does not need: no folder of it is there."""
    if f"/{step.name}/" not in text:  # (most errors: no regex)
        return None
    own_inputs = rf"/{re.escape(step.name)}(?:/attempt-\d+)?/in/([A-Za-z_][A-Za-z0-9_-]*)"
    return next((name for name in re.findall(own_inputs, text) if name not in step.needs),
                None)


def _own_folder(step: Step) -> str:
    return "the workflow's folder" if step.workdir is None else f"its workdir {step.workdir}"


# -- paths a step names --------------------------------------------------------------
# A path's look: a folder in it, or a name with an extension (``sales.csv``).
_EXTENSION = re.compile(r"[^/]*\.[A-Za-z][A-Za-z0-9]{0,7}")
# The path-like pieces of a shell word (a quote, a bracket or a call's comma ends one).
_PIECE = re.compile(r"[\w.~/+@%-]+")
_LONGEST = 1024


def _path_like(text: str) -> bool:
    return (0 < len(text) <= _LONGEST and "://" not in text and not text.startswith("-")
            and ("/" in text or _EXTENSION.fullmatch(text) is not None))


# A bare name: no folder in it, no extension (``mydir``, ``mypkg``, ``Makefile``).
_BARE = re.compile(r"[A-Za-z_][\w.+@-]*")
# The shell's own words, which name no file.
_SHELL_WORDS = frozenset({"if", "then", "else", "elif", "fi", "for", "in", "while", "until",
                          "do", "done", "case", "esac", "function", "select", "time"})
# After these words the next one is a command's name (a line's start is one too).
_BEFORE_A_COMMAND = frozenset({
    "|", "||", "&", "&&", ";", "(", "{", "!", "$(", "if", "then", "else", "elif", "while",
    "until", "do", "time", "sudo", "exec", "xargs", "nohup", "command", "builtin", "env",
    "nice", "eval"})


def _bare(text: str) -> bool:
    return (_BARE.fullmatch(text) is not None and not _path_like(text)
            and text not in _SHELL_WORDS and len(text) <= _LONGEST)


def command_paths(run: str | tuple[str, ...]) -> tuple[str, ...]:
    """The path-like words of a shell step's text (the items of an argv list), and its
    bare words but a command's own name (``grep -r . mydir``: ``mydir``, which counts
    only if the folder it starts in holds it), less options (``-o``, ``--flag=x``),
    assignments (``N=3``), URLs, globs, words holding a variable (``"$DAGNB_OUT/x"``:
    not a path of the text) and what a redirection writes."""
    found: list[str] = []
    writes_next, starts, python, module_next = False, True, False, False
    for word, line_start in _words(run):
        named, starts = starts or line_start, _starts_next(word, starts or line_start)
        python = _PYTHON.fullmatch(posixpath.basename(word.strip("'\""))) is not None or (
            python and not named)  # (``uv run python3 -u -m pkg.sub``: Python's options)
        if module_next or (python and word.startswith("-m") and len(word) > 2):
            found += _module_folder(word if module_next else word[2:])
            module_next = False
            continue
        if word.startswith("-"):  # (an option: ``tee -a log`` still writes ``log``)
            module_next = python and word == "-m"
            continue
        written, writes_next = writes_next, word.endswith(">") or word == "tee"
        if written or any(char in word for char in "$`*?>") or "://" in word:
            continue
        pieces = _PIECE.findall(word)
        found += [piece for piece in pieces if _path_like(piece)]
        if "=" not in word:  # (a command's name is no read: ``python3``, not ``print(``'s)
            found += [piece for piece in pieces[1 if named else 0:] if _bare(piece)]
    return tuple(dict.fromkeys(found))


# A Python command (``python3``, ``python3.12``, ``pypy3``), whose ``-m`` names a module.
_PYTHON = re.compile(r"(?:python|pypy)[\d.]*")
_MODULE = re.compile(r"([A-Za-z_]\w*)(?:\.\w+)*")


def _module_folder(module: str) -> list[str]:
    """The folder of the top package of a module run with ``python -m`` (``pkg.sub``,
    ``"pkg.sub";``: ``pkg``, whose files are then looked at as a folder's are), or []."""
    named = _MODULE.match(module.lstrip("'\""))
    return [named.group(1)] if named is not None and _bare(named.group(1)) else []


def _words(run: str | tuple[str, ...]) -> list[tuple[str, bool]]:
    """The words of a shell step's text, each with whether it starts a line (a
    command's name: not one after a ``\\`` that continues the line before), or the
    items of an argv list (its first the command's name)."""
    if not isinstance(run, str):
        return [(word, at == 0) for at, word in enumerate(run)]
    words: list[tuple[str, bool]] = []
    continued = False
    for line in run.splitlines():
        words += [(word, at == 0 and not continued)
                  for at, word in enumerate(_uncommented(line.split()))]
        continued = line.rstrip().endswith("\\")
    return words


def _starts_next(word: str, starts: bool) -> bool:
    """Whether the word after ``word`` is a command's name: after an operator, a keyword,
    a command running the next (``sudo``, ``xargs``), or an assignment before one."""
    return (word in _BEFORE_A_COMMAND or word.endswith(("|", ";", "&", "(", "{"))
            or (starts and "=" in word and not word.startswith("-")))


def _uncommented(words: list[str]) -> list[str]:
    """The words of a line before a comment (``# ...``: the shell's, or a heredoc's Python)."""
    return next((words[:at] for at, word in enumerate(words) if word.startswith("#")), words)


# Calls that write the path they are given (a result put in the project folder).
_WRITERS = frozenset({
    "to_csv", "to_parquet", "to_json", "to_excel", "to_pickle", "to_feather", "to_hdf",
    "to_html", "to_latex", "to_markdown", "to_netcdf", "to_zarr", "to_file", "savefig",
    "save", "savez", "savez_compressed", "savetxt", "imwrite", "write_text", "write_bytes",
    "touch", "mkdir", "makedirs"})
_WRITE_MODE = re.compile(r"[rbt+]*[wxa][rbt+]*")
_NAMED = frozenset({"LOAD_ATTR", "LOAD_METHOD", "LOAD_GLOBAL", "LOAD_NAME", "LOAD_DEREF",
                    "LOAD_FAST"})


def code_paths(code: CodeType) -> tuple[str, ...]:
    """The path-like text constants of ``code`` and the code nested in it (its
    comprehensions, lambdas and inner functions), less those a call writes
    (``frame.to_csv("out.csv")``, ``open("out.csv", "w")``)."""
    found: list[str] = []
    for each in _codes(code):
        found += _read_constants(each)
    return tuple(dict.fromkeys(found))


def code_folders(code: CodeType) -> tuple[str, ...]:
    """The bare text constants of ``code`` and the code nested in it, as folders
    (``Path("data")``: ``data/``, a file so named being no read), less keys
    (``row["data"]``), comparisons and what a call writes (``os.mkdir("out")``)."""
    found: list[str] = []
    for each in _codes(code):
        if not any(isinstance(const, str) and _bare(const) for const in each.co_consts):
            continue  # (most code: no instruction looked at)
        instructions = [ins for ins in dis.get_instructions(each) if ins.opname != "CACHE"]
        found += [f"{ins.argval}/" for at, ins in enumerate(instructions)
                  if ins.opname == "LOAD_CONST" and isinstance(ins.argval, str)
                  and _bare(ins.argval) and not _a_key(instructions, at)
                  and not _written(instructions, at)]
    return tuple(dict.fromkeys(found))


# What follows a text that is a key or compared (``row["data"]``, ``"data" in row``), and
# the calls given a key or an attribute's name (``row.get("data")``, ``getattr(o, "data")``).
_KEYED = frozenset({"BINARY_SUBSCR", "STORE_SUBSCR", "DELETE_SUBSCR"})
_COMPARED = frozenset({"COMPARE_OP", "CONTAINS_OP", "IS_OP"})
_KEY_TAKERS = frozenset({"get", "pop", "setdefault"})
_NAME_TAKERS = frozenset({"getattr", "hasattr", "setattr", "delattr"})


def _a_key(instructions: list[dis.Instruction], at: int) -> bool:
    """Whether the text loaded at ``at`` is a key, an attribute's name, or compared."""
    before = [ins.argval for ins in instructions[max(0, at - 3):at] if ins.opname in _NAMED]
    if before and (before[-1] in _KEY_TAKERS or not _NAME_TAKERS.isdisjoint(before)):
        return True
    following = instructions[at + 1:at + 3]
    if following and (following[0].opname in _KEYED or (
            following[0].opname == "BINARY_OP" and following[0].argrepr == "[]")):
        return True  # (Python 3.14 subscripts with a BINARY_OP)
    return any(ins.opname in _COMPARED for ins in following)


def _held_paths(func: Any, code: CodeType) -> tuple[str, ...]:
    """The paths held by the globals and closure variables ``func``'s code reads
    (``DATA = Path("data")`` read as ``DATA / "sales.csv"``): a Path as it is, a text
    path-like as it is or bare as a folder; not a folder holding its own module (the
    ``Path(__file__).parent`` most step modules keep)."""
    namespace = getattr(func, "__globals__", None)
    values = [namespace.get(name) for each in _codes(code) for name in each.co_names
              ] if isinstance(namespace, dict) else []
    for cell in getattr(func, "__closure__", None) or ():
        try:
            values.append(cell.cell_contents)
        except ValueError:  # (a cell not filled yet)
            continue
    own_folder = os.path.dirname(os.path.abspath(code.co_filename))
    found = []
    for value in values:
        text = os.fspath(value) if isinstance(value, (str, PurePath)) else None
        if text is None or (os.path.isabs(text) and _under(own_folder, text)):
            continue
        if _path_like(text):
            found.append(text)
        elif _bare(text):
            found.append(text if isinstance(value, PurePath) else f"{text}/")
    return tuple(found)


def _codes(code: CodeType) -> Iterator[CodeType]:
    pending = [code]
    while pending:
        each = pending.pop()
        yield each
        pending += [const for const in each.co_consts if isinstance(const, CodeType)]


def _read_constants(code: CodeType) -> list[str]:
    if not any(_texts(const) for const in code.co_consts):
        return []  # (most code: no instruction looked at)
    instructions = [ins for ins in dis.get_instructions(code) if ins.opname != "CACHE"]
    found = []
    for at, ins in enumerate(instructions):
        if ins.opname == "LOAD_CONST" and not _written(instructions, at):
            found += _texts(ins.argval)
    return found


def _texts(const: Any) -> list[str]:
    """The path-like text of a constant: itself, or the items of a tuple of them
    (``for name in ("a.csv", "b.csv")``)."""
    if isinstance(const, str):
        return [const] if _path_like(const) else []
    if isinstance(const, (tuple, frozenset)):
        return [item for item in const if isinstance(item, str) and _path_like(item)]
    return []


def _written(instructions: list[dis.Instruction], at: int) -> bool:
    """Whether the constant loaded at ``at`` is a path a call writes: an argument of a
    writer (``frame.to_csv(path)``), of a call given a write mode next (``open(path,
    "w")``), or the path a Path writer is called on next (``Path(path).write_text(x)``,
    ``(folder / path).touch()``)."""
    before = [ins.argval for ins in instructions[max(0, at - 3):at] if ins.opname in _NAMED]
    if before and before[-1] in _WRITERS:
        return True
    after = next((ins for ins in instructions[at + 1:at + 4]
                  if ins.opname not in _PASSED), None)
    if after is None:
        return False
    if after.opname == "LOAD_CONST":
        return isinstance(after.argval, str) and bool(_WRITE_MODE.fullmatch(after.argval))
    return after.opname in ("LOAD_ATTR", "LOAD_METHOD") and after.argval in _PATH_WRITERS


# What lies between a path and the Path method called on what it made.
_PASSED = frozenset({"PRECALL", "CALL", "KW_NAMES", "BINARY_OP", "PUSH_NULL"})
_PATH_WRITERS = frozenset({"write_text", "write_bytes", "touch", "mkdir", "unlink",
                           "symlink_to", "hardlink_to"})


# -- which of them no mount covers ---------------------------------------------------
# Folders of the system and of installed software: no project's input is there.
_SYSTEM = ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/usr/bin", "/usr/sbin",
           "/usr/lib", "/usr/lib32", "/usr/lib64", "/usr/libexec", "/usr/include",
           "/usr/share", "/usr/local/bin", "/usr/local/sbin", "/usr/local/lib",
           "/usr/local/share", "/usr/local/include", "/etc", "/proc", "/sys", "/dev", "/run",
           "/boot", "/snap", "/nix", "/var/lib", "/var/cache", "/var/log", "/opt/homebrew",
           "/opt/conda", "/private/etc", "/System", "/Library")


@functools.lru_cache(maxsize=1)
def _system_folders() -> tuple[str, ...]:
    """The system's folders and Python's (its prefixes, site-packages, the user's)."""
    python = {sys.prefix, sys.base_prefix, sys.exec_prefix, sys.base_exec_prefix,
              *(path for name, path in sysconfig.get_paths().items() if name != "data")}
    python.add(os.path.dirname(os.path.realpath(sys.executable)))
    try:
        import site

        python.add(site.getuserbase())
    except Exception:  # (an embedded Python without site)
        pass
    return tuple(os.path.realpath(path) for path in (*_SYSTEM, *sorted(python)) if path)


def _under(path: str, folder: str) -> bool:
    return path == folder or path.startswith(folder.rstrip("/") + "/")


def _in_a_venv(path: str) -> bool:
    """Whether ``path`` is inside a virtual environment (``.venv/bin/python``)."""
    folder = os.path.dirname(path)
    while True:
        if os.path.isfile(os.path.join(folder, "pyvenv.cfg")):
            return True
        parent = os.path.dirname(folder)
        if parent == folder:
            return False
        folder = parent


def unmounted_reads(names: tuple[str, ...], folder: str, base_dir: Path,
                    mounts: Mapping[str, str], cache_folder: Path | None
                    ) -> tuple[tuple[str, str], ...]:
    """(name, mount host path) of each of ``names`` (relative to ``folder``) that is an
    existing file or folder (a folder alone for a name ending in ``/``) that no mount
    covers: not the folder itself or one holding it, not under ``cache_folder``, nor a
    system's, Python's or a venv's."""
    existing = [(name, os.path.join(folder, os.path.expanduser(name))) for name in names]
    existing = [(name, written) for name, written in existing if os.path.exists(written)]
    if not existing:  # (most bare words of a command: no realpath made)
        return ()
    here = os.path.realpath(folder)
    covered = [os.path.realpath(mount_path(base_dir, host)) for host in mounts]
    if cache_folder is not None:
        covered.append(os.path.realpath(cache_folder))
    system = [path for path in _system_folders() if not _under(here, path)]
    found = []
    for name, written in existing:
        path = os.path.realpath(written)
        if (_under(here, path) or any(_under(path, mount) or _under(mount, path)
                                      for mount in covered)
                or any(_under(path, other) for other in system) or _in_a_venv(path)):
            continue
        found.append((name, _mount_host(name, written, base_dir)))
    return tuple(found)


def _mount_host(name: str, written: str, base_dir: Path) -> str:
    """How a mount names the path: as written when absolute (or from ``~``), else
    relative to the workflow's folder, where a mount's host path starts."""
    if os.path.isabs(name) or name.startswith("~"):
        return name
    return os.path.relpath(os.path.normpath(written), os.path.abspath(base_dir))


# (names, folder, base folder, mounts, cache folder) -> what it reads unmounted: most
# keys of a step are made again and again.
_FOUND: dict[tuple[Any, ...], tuple[tuple[str, str], ...]] = {}
_FOUND_LIMIT = 4096
_WARNED: set[tuple[str, tuple[tuple[str, str], ...]]] = set()
# id(step) -> (step, base folder, cache folder): a step object looked at already is
# passed at the cost of a dict hit as its key is made again (a key costs microseconds:
# the look, or even an os.getcwd(), would add a good part of one). The memos here hold
# steps and functions weakly: a notebook makes them anew at each run of a cell, and
# each held what its function closes over alive.
_LOOKED: dict[int, tuple[Callable[[], Any], Path, Path | None]] = {}


def _note_unmounted_reads(step: Step, base_dir: Path, cache_folder: Path | None) -> None:
    """The hook of :data:`KEYED_ON_HOST`: the files ``step`` names that no mount covers,
    noted for :func:`warn_if_changed_since` (a first run reads them as they are: only a
    hit may be stale, so nothing is said before one). It never fails a key."""
    _note_whole_environment(step)
    if not _names_in(step):  # (most steps name no path: a dict hit, a fresh process's too)
        if _NOTED:
            _NOTED.pop(id(step), None)
        return
    looked = _LOOKED.get(id(step))
    if (looked is not None and looked[0]() is step and looked[1] is base_dir
            and looked[2] is cache_folder):
        return
    try:
        found = _found(step, base_dir, cache_folder)
    except Exception:  # (a look that fails is no reason to fail a step)
        return
    if len(_LOOKED) >= _FOUND_LIMIT:
        _LOOKED.clear()
    _LOOKED[id(step)] = (_weakly(step, _LOOKED), base_dir, cache_folder)
    if found:
        if len(_NOTED) >= _FOUND_LIMIT:
            _NOTED.clear()
        _NOTED[id(step)] = (_weakly(step, _NOTED), found,
                            tuple(mount_path(base_dir, host) for _, host in found))
    else:
        _NOTED.pop(id(step), None)


# id(step) -> (step, what reads it): the shell steps run on this machine reading their
# whole environment
_PRINTS_ENVIRONMENT: dict[int, tuple[Callable[[], Any], str]] = {}
_WARNED_ENVIRONMENT: set[str] = set()


def _note_whole_environment(step: Step) -> None:
    seen = (whole_environment_read(step.run) if step.func is None
            else _python_environment_read(step.func))
    if seen:
        if len(_PRINTS_ENVIRONMENT) >= _FOUND_LIMIT:
            _PRINTS_ENVIRONMENT.clear()
        _PRINTS_ENVIRONMENT[id(step)] = (_weakly(step, _PRINTS_ENVIRONMENT), seen)
    elif _PRINTS_ENVIRONMENT:
        _PRINTS_ENVIRONMENT.pop(id(step), None)


def _python_environment_read(func: Any) -> str:
    """How a Python step's code reads host variables no key can name ("" for none):
    :data:`CODE_WHOLE`, else :data:`CODE_DYNAMIC`."""
    unkeyed = environ_unkeyed(func)
    if not unkeyed:  # (most code)
        return ""
    return CODE_WHOLE if WHOLE in unkeyed else CODE_DYNAMIC


CODE_WHOLE = "os.environ taken whole in its code"
CODE_DYNAMIC = "os.environ read by names made at run time in its code"


def _warn_if_environment_printed(step: Step) -> None:
    """As ``step`` is served from the cache: one warning per step and process when it
    reads its whole environment, whose variables its key cannot name (the first run
    reads them as they are: only a hit may be stale)."""
    noted = _PRINTS_ENVIRONMENT.get(id(step))
    if noted is None or noted[0]() is not step or step.name in _WARNED_ENVIRONMENT:
        return
    _WARNED_ENVIRONMENT.add(step.name)
    checks.warn_user(_environment_message(step.name, noted[1]), UnkeyedEnvironmentWarning)


def _environment_message(step: str, seen: str) -> str:
    """The warning for ``step``, whose text reads its whole environment by ``seen``
    (``env``, ``export -p``, ``dict(os.environ)``), with the way to name one variable
    in the same tongue: the shell's, Python's or awk's."""
    if seen in (CODE_WHOLE, CODE_DYNAMIC):  # (a Python step's own code)
        said = unkeyed_reads_said(whole=seen == CODE_WHOLE)
        return f"step {step!r} was served from the cache, but {said}, or pass it as a param"
    tongue = next((said for mark, said in _TONGUES if mark in seen), None)
    if tongue is not None:
        how, named = f"reads its whole environment ({seen} in {tongue[0]})", tongue[1]
    elif seen.startswith("compgen"):
        how = f"lists its whole environment ({seen}, every exported name)"
        named = '"$REGION", printenv REGION'
    else:
        how = f"prints its whole environment ({_dump_said(seen)})"
        named = '"$REGION", printenv REGION'
    return (f"step {step!r} was served from the cache, but it {how}, whose variables its key "
            f"does not hold: the result may be stale; name each variable it reads ({named}), "
            "which then counts in its key, or set it in the step's env")


# what in a whole-environment read says its tongue: (mark, (tongue, one variable named))
_TONGUES = (
    ("environ", ("Python it runs", 'os.environ["REGION"]')),
    ("ENVIRON", ("awk", 'ENVIRON["REGION"]')),
    ("%ENV", ("Perl it runs", "$ENV{REGION}")),
    ("process.env", ("Node it runs", "process.env.REGION")),
    ("ENV.", ("Ruby it runs", 'ENV["REGION"]')),
)


def _dump_said(command: str) -> str:
    """``env or printenv with no name``, ``export -p with no name``, ``set with no argument``."""
    name = posixpath.basename(command.split()[0])
    if name in ("env", "printenv"):
        return "env or printenv with no name"
    return "set with no argument" if name == "set" else f"{command} with no name"


# a step's command text, or id of its function -> (the function, held weakly, or None
# for a command; the paths it names)
_NAMES: dict[Any, tuple[Any, tuple[str, ...]]] = {}


def _names_in(step: Step) -> tuple[str, ...]:
    """The path-like words ``step``'s command or function names (memo: by the text, or
    the function's identity, held), whether they exist or not."""
    if step.key_fn is not None:  # (its key is what the function says: a file's digest...)
        return ()
    func = step.func
    memo = step.run if func is None else id(func)
    known = _NAMES.get(memo)
    if known is not None and (func is None or known[0]() is func):
        return known[1]
    if func is None:
        names = command_paths(step.run) if step.run else ()
    else:
        code = _code_of(func)
        names = () if code is None else tuple(dict.fromkeys((
            *code_paths(code), *code_folders(code), *_held_paths(_function_of(func), code))))
    if len(_NAMES) >= _FOUND_LIMIT:
        _NAMES.clear()
    _NAMES[memo] = (None if func is None else _weakly(func, _NAMES), names)
    return names


@dataclasses.dataclass(frozen=True)
class FrontEndWords:
    """How the warning says its two fixes in the words of the front end that started
    the run: ``refresh`` runs a step again, ``mounts`` adds (host, path in the step)
    mounts to it. Python's by default; the dagnb command and the notebook give theirs."""

    refresh: Callable[[str], str]
    mounts: Callable[[Sequence[tuple[str, str]]], str]


PYTHON_WORDS = FrontEndWords(  # graph.run's refresh=["load"], the Step's mounts={...}
    refresh=lambda step: f"refresh=[{json.dumps(step)}]",
    mounts=lambda pairs: f"mounts={json.dumps(dict(pairs))}")
WORKFLOW_WORDS = FrontEndWords(  # dagnb run's --refresh-step load, the YAML's mounts: {...}
    refresh=lambda step: f"--refresh-step {shlex.quote(step)}",
    mounts=lambda pairs: "mounts: {" + ", ".join(f"{h}: {t}" for h, t in pairs) + "}")
NOTEBOOK_WORDS = FrontEndWords(  # %dagger run --refresh load, %%dagger --mount HOST:PATH
    refresh=lambda step: f"%dagger run --refresh {step}",
    mounts=lambda pairs: " ".join(f"--mount {shlex.quote(f'{h}:{t}')}" for h, t in pairs))


# id(step) -> (step, what it names unmounted, their paths here)
_NOTED: dict[int, tuple[Callable[[], Any], tuple[tuple[str, str], ...], tuple[Path, ...]]] = {}


def warn_if_changed_since(step: Step, created: float,
                          words: FrontEndWords = PYTHON_WORDS,
                          walked: dict[str, float] | None = None) -> None:
    """As ``step`` is served from the cache: one warning per step and process naming the
    files it names that no mount covers and that changed after its entry was made (the
    result may be stale: their edits are not in its key). Files it names but that have
    not changed since (its own outputs, a config untouched) are not said.
    ``words``: how the run's front end says to mount a file and run a step again."""
    if _PRINTS_ENVIRONMENT:
        _warn_if_environment_printed(step)
    noted = _NOTED.get(id(step))
    if noted is None or noted[0]() is not step:
        return
    changed = tuple(read for read, path in zip(noted[1], noted[2], strict=True)
                    if _changed_since(path, created, walked))
    if not changed:
        return
    said = (step.name, changed)
    if said in _WARNED:
        return
    _WARNED.add(said)
    checks.warn_user(unmounted_message(step.name, changed, words),
                     UnmountedReadWarning)


def _changed_since(path: Path, created: float, walked: dict[str, float] | None = None
                   ) -> bool:
    """Whether ``path`` changed after ``created``; a folder, when a file or folder under
    it did too (:func:`_newest_under`; ``walked``: the run's walks, folder -> newest)."""
    try:
        status = os.stat(path)
    except OSError:
        return False
    if status.st_mtime > created:  # (a file's edit, or a folder's entry added or removed)
        return True
    if not stat.S_ISDIR(status.st_mode):
        return False
    folder = os.fspath(path)
    newest = None if walked is None else walked.get(folder)
    if newest is None:
        newest = _newest_under(folder)
        if walked is not None:  # (the hits of one run, a thousand steps naming src/,
            walked[folder] = newest  # walk it once)
    return newest > created


# A folder's walk at a hit stops after this many entries, or this long (a large tree is
# not walked whole): a change past them goes unsaid, as nothing is said that is not seen.
WALKED_ENTRIES = 5000
WALK_SECONDS = 0.25
# Not walked: hidden entries (.git, .venv, .dagnb_cache, an editor's swap file), caches.
_NOT_WALKED = frozenset({"__pycache__", "node_modules"})


def _newest_under(folder: str) -> float:
    """When a file or folder under ``folder`` last changed, looking at
    :data:`WALKED_ENTRIES` at most, or for :data:`WALK_SECONDS`, not into hidden
    folders, caches, virtual environments or links to folders (0.0: none seen)."""
    pending, looked, newest = [folder], 0, 0.0
    until = time.monotonic() + WALK_SECONDS
    while pending and looked <= WALKED_ENTRIES:
        try:
            with os.scandir(pending.pop()) as entries:
                for entry in entries:
                    if entry.name.startswith(".") or entry.name in _NOT_WALKED:
                        continue
                    looked += 1
                    if looked > WALKED_ENTRIES or (looked % 256 == 0
                                                   and time.monotonic() > until):
                        looked = WALKED_ENTRIES + 1
                        break
                    newest = max(newest, _changed_at(entry))
                    if entry.is_dir(follow_symlinks=False) and not os.path.exists(
                            os.path.join(entry.path, "pyvenv.cfg")):
                        pending.append(entry.path)
        except OSError:  # (a folder gone or not readable since)
            continue
    return newest


def _changed_at(entry: os.DirEntry[str]) -> float:
    try:
        return entry.stat().st_mtime  # (a link's target's)
    except OSError:
        return 0.0


def _found(step: Step, base_dir: Path, cache_folder: Path | None) -> tuple[tuple[str, str], ...]:
    names = _names_in(step)
    if not names:
        return ()
    in_process = step.func is not None and step.executor != "dask"
    folder = start_folder(step, base_dir, in_process)
    memo = (names, folder, os.fspath(base_dir), tuple(step.mounts), cache_folder)
    found = _FOUND.get(memo)
    if found is None:
        found = unmounted_reads(names, folder, base_dir, step.mounts, cache_folder)
        if len(_FOUND) >= _FOUND_LIMIT:
            _FOUND.clear()
        _FOUND[memo] = found
    return found


def _function_of(func: Any) -> Any:
    while hasattr(func, "func"):  # (a partial's)
        func = func.func
    return getattr(func, "__func__", func)  # (a method's)


def _code_of(func: Any) -> CodeType | None:
    code = getattr(_function_of(func), "__code__", None)
    return code if isinstance(code, CodeType) else None


_SHOWN = 3


def unmounted_message(step: str, found: tuple[tuple[str, str], ...],
                      words: FrontEndWords = PYTHON_WORDS) -> str:
    """``step 'load' was served from the cache, but it reads ../data/sales.csv, ...``."""
    names = [name for name, _ in found[:_SHOWN]]
    more = len(found) - _SHOWN
    listed = ", ".join(names) + (f" and {more} more" if more > 0 else "")
    mounts = words.mounts([(host, _target(host)) for _, host in found[:_SHOWN]])
    again = words.refresh(step)
    if len(found) == 1:
        return (f"step {step!r} was served from the cache, but it reads {listed}, which "
                "changed since and is not one of its inputs: the result may be stale; add "
                f"it with {mounts}, or run it with {again}")
    return (f"step {step!r} was served from the cache, but it reads {listed}, which changed "
            "since and are not among its inputs: the result may be stale; add them with "
            f"{mounts}, or run it with {again}")


def _target(host: str) -> str:
    """A path in the step for a mount of ``host``: its own, less ``..``, ``~`` and ``.``."""
    parts = [part for part in host.replace(os.sep, "/").split("/")
             if part not in ("", ".", "..", "~")]
    return posixpath.join("/", *parts)


if _note_unmounted_reads not in KEYED_ON_HOST:
    KEYED_ON_HOST.append(_note_unmounted_reads)


def _weakly(held: Any, table: dict[Any, tuple[Any, ...]]) -> Callable[[], Any]:
    """A weak reference to ``held`` (a step, a function), its entry of ``table`` (under
    its id) removed as it goes, so that dead ones do not fill it; one that holds it
    where it takes none (a builtin)."""
    try:
        return weakref.ref(held, forgetting(table, id(held)))
    except TypeError:
        return lambda: held
