"""Links a container step leaves in ``$DAGNB_OUT`` that lead out of it.

In a container, ``ln -s /usr/bin/python3 $DAGNB_OUT/venv/bin/python`` (as ``python -m
venv`` does), or a relative link climbing out with ``..``, names the container's file.
Exported, the link stays a link, and on this machine it would name this machine's file:
the cache would hash it, store it and push it as the step's output. So each such link
is set aside as soon as the outputs are exported: it is made a link to
``.dagnb-container-link/<its target, %-quoted>`` beside it (:data:`SET_ASIDE`), so
following it stops at that missing folder, as at any missing file (were a step to make
one by that name, at a file of its own), never reaching a ``..`` or ``/`` of its target;
and the runner, finding it, does not store the step
(:func:`dagnb.runtime.leaks.container_link`). Downstream Dagger steps mount the
container's directory, links as the step made them; in a session reopened since (that
directory is gone with the old one), a copy of the folder here, its links put back as
the step made them (:func:`put_back_set_aside`), so they see the same.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote, unquote

__all__ = ["SET_ASIDE", "first_set_aside", "holds_set_aside", "put_back_set_aside",
           "set_aside_leaving_links"]

# What a set-aside link's target starts with; its target in the container follows,
# %-quoted into one name. (Not a path under /dev/null: following one raises
# NotADirectoryError, which os.DirEntry.is_dir() and others pass on, not "no such file".)
SET_ASIDE = ".dagnb-container-link/"


def set_aside_leaving_links(out_dir: Path) -> None:
    """Set aside each link under ``out_dir`` that leads out of it: one whose target is
    absolute or climbs out with ``..`` first, then one that still leads out through
    other links (``t -> s/..``). A link to a set-aside one is left as it is: it no
    longer leads anywhere here."""
    folder = os.fspath(out_dir)
    links = dict(_links(folder))
    if not links:  # (most outputs hold none: one walk, nothing else)
        return
    direct = {path for path, target in links.items() if _climbs_out(folder, path, target)}
    for path in direct:
        _set_aside(path, links[path])
    root = os.path.realpath(folder)
    for path in links.keys() - direct:
        if _reaches_out(root, path):
            _set_aside(path, links[path])


def first_set_aside(out_dir: str) -> tuple[str, str] | None:
    """The first set-aside link under ``out_dir`` (by name), as ``(its path relative to
    ``out_dir``, its target in the container)``; or None."""
    found = sorted((os.path.relpath(path, out_dir), unquote(target[len(SET_ASIDE):]))
                   for path, target in _links(out_dir) if target.startswith(SET_ASIDE))
    return found[0] if found else None


def holds_set_aside(folder: Path) -> bool:
    """Whether a link under ``folder`` is set aside."""
    return any(target.startswith(SET_ASIDE) for _, target in _links(os.fspath(folder)))


def put_back_set_aside(folder: Path) -> None:
    """Make each set-aside link under ``folder`` (a copy of a step's outputs, about to
    be uploaded into a container) a link to its target in the container again."""
    for path, target in list(_links(os.fspath(folder))):
        if target.startswith(SET_ASIDE):
            _relink(path, unquote(target[len(SET_ASIDE):]))


def _links(folder: str) -> Iterator[tuple[str, str]]:
    """``(path, target)`` of each link under ``folder``; a link to a folder is not
    walked into (its files are not the step's)."""
    folders = [folder]
    while folders:
        try:
            entries = list(os.scandir(folders.pop()))
        except OSError:  # (no such folder: the step wrote nothing)
            continue
        for entry in entries:  # (is_symlink and is_dir are told by the listing)
            if entry.is_symlink():
                yield entry.path, os.readlink(entry.path)
            elif entry.is_dir(follow_symlinks=False):
                folders.append(entry.path)


def _climbs_out(out_dir: str, path: str, target: str) -> bool:
    """Whether ``target`` of link ``path``, as written, names a path outside
    ``out_dir``: an absolute one (the container's ``/``, even ``$DAGNB_OUT``'s own path
    there), or one whose ``..`` climb past it."""
    if os.path.isabs(target):
        return True
    folder = os.path.relpath(os.path.dirname(path), out_dir)
    return os.path.normpath(os.path.join(folder, target)).split(os.sep)[0] == os.pardir


def _reaches_out(root: str, path: str) -> bool:
    """Whether link ``path``, followed through the links here, ends at a path that
    exists outside ``root`` (lstat only: nothing is read)."""
    reached = os.path.realpath(path)
    inside = reached == root or reached.startswith(root + os.sep)
    return not inside and os.path.lexists(reached)


def _set_aside(path: str, target: str) -> None:
    """Replace link ``path`` by one to ``SET_ASIDE`` and its target, in one rename."""
    _relink(path, SET_ASIDE + quote(target, safe=""))


def _relink(path: str, target: str) -> None:
    """Replace link ``path`` by one to ``target``, in one rename."""
    aside = f"{path}.dagnb-aside"
    os.symlink(target, aside)
    os.replace(aside, path)
