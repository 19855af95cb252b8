"""What of a mounted folder a step's key counts, and a container's upload carries: all
of it but what no step should need and that changes by itself (version control, virtual
environments, bytecode, notebook checkpoints, dagnb's caches), and what the step's
``exclude`` patterns name. One list for every executor: a folder mounted at ``.`` holds
the cache, which every run changes, and was never a hit; so does a run's ``--cache-dir``
of another name, or another workflow's cache there (found by what a store makes in it).
A container's upload also leaves out dotenv files (:data:`DOTENV_EXCLUDES`), which hold
secrets' values: a secret reaches the engine only as a Dagger secret. The key still
counts them, so keys made before stay; it only counts more than the step sees.

Patterns are Dagger's (BuildKit's): relative to the mounted folder; ``*`` and ``?`` do
not cross ``/``; ``**/name`` is ``name`` at any depth; a folder that matches is left out
with everything in it; ``!pattern`` takes back what an earlier pattern left out.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
from collections.abc import Callable, Iterable
from pathlib import Path

from dagnb.cache.location import local_folder, made_by_a_store
from dagnb.model.step import Step

DEFAULT_EXCLUDES = ("**/.git", "**/.venv", "**/__pycache__", "**/.ipynb_checkpoints",
                    "**/.dagnb_cache")
# (python-dotenv's, direnv's dotenv, docker compose's: a step that needs one mounts the
# file itself, ``mounts: {.env: /workspace/.env}``, or takes it back, ``exclude: ['!.env']``)
DOTENV_EXCLUDES = ("**/.env", "**/.env.*", "**/.envrc")  # (direnv's too)


def mount_excludes(step: Step, folder: Path, cache: Path | None = None) -> list[str]:
    """What a mount of ``folder`` leaves out: the defaults, the configured cache folder
    and ``cache`` (the run's, which may be empty still), virtual environments and dagnb
    caches of any name at its top, the step's own."""
    return _excludes(step, folder, cache, DEFAULT_EXCLUDES)


def upload_excludes(step: Step, folder: Path, cache: Path | None = None) -> list[str]:
    """What a container's upload of ``folder`` leaves out: what its key leaves out, and
    dotenv files before the step's own patterns (which may take one back)."""
    return _excludes(step, folder, cache, (*DEFAULT_EXCLUDES, *DOTENV_EXCLUDES))


def _excludes(step: Step, folder: Path, cache: Path | None,
              defaults: Iterable[str]) -> list[str]:
    patterns = list(defaults)
    root = folder.resolve()
    for held in (local_folder(), *([cache] if cache is not None else [])):
        held = held.resolve()
        if held.is_relative_to(root) and held != root:  # (a store URL's local tier too)
            patterns.append(held.relative_to(root).as_posix())  # only that folder
    with contextlib.suppress(OSError):
        patterns += sorted(entry.name for entry in os.scandir(folder)
                           if entry.is_dir() and (_is_venv(entry.path) or _is_cache(entry.path)))
    return list(dict.fromkeys([*patterns, *step.exclude]))


def _is_venv(folder: str) -> bool:
    return os.path.isfile(f"{folder}/pyvenv.cfg")


def _is_cache(folder: str) -> bool:
    """A dagnb cache folder of any name (another run's ``--cache-dir``, another
    workflow's), as :func:`dagnb.cache.is_cache_folder` tells by its store's folders."""
    try:
        return made_by_a_store(os.listdir(folder))
    except OSError:
        return False


def excluder(patterns: Iterable[str]) -> Callable[[str], bool]:
    """Whether a path relative to the mounted folder (``a/b.txt``; a folder's with a
    ``/`` after it) is left out: the last pattern that matches decides, ``!pattern``
    taking back what an earlier one left out. With any ``!``, folders are walked, not
    left out whole (a file in one may be taken back)."""
    rules = [(p.startswith("!"), re.compile(_regex(p.removeprefix("!"))))
             for p in patterns if p.removeprefix("!").strip("/")]
    taken_back = any(negated for negated, _ in rules)

    def left_out(relative: str) -> bool:
        if taken_back and relative.endswith("/"):
            return False
        verdict = False
        for negated, pattern in rules:
            if pattern.match(relative.rstrip("/")):
                verdict = not negated
        return verdict

    return left_out


@functools.lru_cache(maxsize=256)
def _regex(pattern: str) -> str:
    """A pattern as a regular expression of the path, or of a folder above it."""
    pattern = pattern.strip("/").removeprefix("./")
    parts = []
    for piece in re.split(r"(\*\*/|\*\*|\*|\?)", pattern):
        parts.append({"**/": "(?:.*/)?", "**": ".*", "*": "[^/]*", "?": "[^/]"}.get(
            piece, re.escape(piece)))
    return f"(?:{''.join(parts)})(?:/|$)"
