"""Starting the shell of a step's shell text with ``PATH`` searched once, not at each start.

``subprocess.Popen`` given a bare name (``bash``) tries ``execve`` in each folder of the
``PATH`` in turn, in the child, while the starting thread waits for it: on a PATH with
a virtualenv, pyenv and cargo in front, each shell step made eight failed execs before
``/usr/bin/bash``, and its start took 256 µs instead of 212 (medians of 200). Found
once (for that name and that ``PATH``), the shell is given to Popen as its
``executable``, argv[0] unchanged, as a shell's own hash table does.

Popen still searches, as before, where the ``PATH`` has a relative folder (the child
resolves it from the step's working folder), and where the shell found moved or stopped
starting: its start fails, the name is forgotten, and Popen searches again. As with a
shell's hash table, a shell put earlier on the ``PATH`` later is used from the next
process on. Only the shell is looked up so: a program a step's argv names is searched
for at each start (an earlier step may have just installed it).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["start_program"]

_found: dict[tuple[str, str], str] = {}  # (name, PATH) -> the program's path
_FOUND_LIMIT = 256  # (a bound, for a process whose steps each set a PATH of their own)
# (Windows looks in the program's own and the current folder before PATH, and adds
# PATHEXT: there Popen searches as it does)
_SEARCHES_PATH = os.name == "posix"


def start_program(argv: Sequence[str], *, env: Mapping[Any, Any], **options: Any,
                  ) -> subprocess.Popen[bytes]:
    """``subprocess.Popen(argv, env=env, **options)``, ``argv[0]`` looked up once."""
    name = argv[0]
    path = _search_path(env)
    program = _program(name, path)
    if program is not None:
        try:
            return subprocess.Popen(argv, executable=program, env=env, **options)
        except OSError:  # moved, removed or changed since: searched for again
            _found.pop((name, path), None)
    return subprocess.Popen(argv, env=env, **options)


def _search_path(env: Mapping[Any, Any]) -> str:
    """The ``PATH`` Popen searches for a program started with ``env`` (bytes or text)."""
    value = env.get(b"PATH", env.get("PATH"))
    return os.defpath if value is None else os.fsdecode(value)


def _program(name: str, path: str) -> str | None:
    """Where ``name`` is on ``path``, found once; None for Popen to search itself."""
    program = _found.get((name, path))
    if program is None and _SEARCHES_PATH and os.sep not in name and _absolute_folders(path):
        program = shutil.which(name, path=path)
        if program is not None:
            if len(_found) >= _FOUND_LIMIT:
                _found.clear()
            _found[(name, path)] = program
    return program


def _absolute_folders(path: str) -> bool:
    """Whether every folder of ``path`` is absolute (an empty one is the child's own)."""
    return all(os.path.isabs(folder) for folder in path.split(os.pathsep))
