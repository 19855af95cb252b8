"""What a step would store is checked first: its result, its files and their names for
the run's secrets (the cache keeps none: a step may read one it did not declare,
in-process, or write one it did into its outputs or their names), and its outputs for
what is not a file or a folder (a pipe or a device would be read forever), or a link a
container made leading out of them (it names the container's file, not this machine's)."""

from __future__ import annotations

import contextlib
import os
import stat
from collections.abc import Iterator
from typing import Any

from dagnb.cache.backend import surely_absent
from dagnb.cache.secret_scan import pickle_holds
from dagnb.executors.base import NO_RESULT
from dagnb.executors.dagger.links import first_set_aside
from dagnb.model.masking import SecretFinder

_CHUNK = 1 << 20


def stored_secret(finder: SecretFinder, out_dir: str | None, result: Any) -> str | None:
    """The name of a secret that the step's result or a file under ``out_dir`` (None:
    it holds no file) holds, or None (at once when the run has no secret)."""
    if not finder:
        return None
    if result is not NO_RESULT:
        found = pickle_holds(result, finder)
        if found is not None:
            return found
    for folder, _, files in os.walk(out_dir) if out_dir is not None else ():
        for name in files:
            found = _file_holds(os.path.join(folder, name), finder)
            if found is not None:
                return found
    return None


def named_secret(finder: SecretFinder, out_dir: str) -> str | None:
    """The name of a secret that the path of a file, folder or link under ``out_dir``
    (relative to it, as the entry's manifest lists it: a secret holding ``/`` may span
    folders) or a link's target holds, or None (at once when the run has no secret).
    Looked at before anything else of the outputs: a warning about one names its path."""
    if not finder:
        return None
    paths = list(_paths_under(os.fsencode(out_dir)))
    # one search of them all (2,000 paths: 0.4 ms, where one search each took 4.7); a
    # hit is searched again path by path, as a form may span two (UTF-16's holds NULs)
    if finder.find(b"\0".join(paths)) is None:
        return None
    return next(filter(None, map(finder.find, paths)), None)


def _paths_under(root: bytes) -> Iterator[bytes]:
    """Each path under ``root``, relative to it, and each link's target there: the local
    store keeps links as links, a push stores what one leading out of the entry points
    to, so a link's folder is walked too (once: a loop of links ends). A real folder is
    walked where it is whatever link to it came first: its paths are the stored ones.
    A folder that cannot be read is passed over, as os.walk does."""
    start, folders, walked = len(root) + 1, [root], set()
    _first_time(root, walked)
    while folders:
        with contextlib.suppress(OSError), os.scandir(folders.pop()) as entries:
            for entry in entries:
                yield entry.path[start:]
                if entry.is_symlink():  # (told by the listing: no call for the others)
                    with contextlib.suppress(OSError):
                        yield os.readlink(entry.path)
                    if entry.is_dir() and _first_time(entry.path, walked):
                        folders.append(entry.path)
                elif entry.is_dir(follow_symlinks=False):
                    _first_time(entry.path, walked)  # (a link met later: not walked again)
                    folders.append(entry.path)


def _first_time(folder: bytes, walked: set[tuple[int, int]]) -> bool:
    """Whether ``folder`` (by device and inode) is not yet in ``walked``; now it is."""
    try:
        found = os.stat(folder)
    except OSError:  # (gone meanwhile: nothing to walk)
        return False
    seen = (found.st_dev, found.st_ino)
    if seen in walked:
        return False
    walked.add(seen)
    return True


def _file_holds(path: str, finder: SecretFinder) -> str | None:
    """A secret in a file, read a MiB at a time (a value cut by two reads is found: the
    end of each read is searched again with the next)."""
    tail = b""
    try:
        with open(path, "rb") as handle:
            while chunk := handle.read(_CHUNK):
                found = finder.find(tail + chunk)
                if found is not None:
                    return found
                tail = chunk[-finder.longest:]
    except OSError:  # (unreadable: the store cannot read it either)
        return None
    return None


def unstorable(out_dir: str) -> str | None:
    """The first of a step's outputs that is not a file or a folder (a pipe, a socket, a
    device, a link to one, a broken link), relative to ``out_dir``; or None."""
    if surely_absent(out_dir):  # (most Python steps write no file: no walk, no exception)
        return None
    for folder, folders, files in os.walk(out_dir):
        for name in [*folders, *files]:
            path = os.path.join(folder, name)
            try:
                mode = os.stat(path).st_mode
            except OSError:  # (a broken link)
                return os.path.relpath(path, out_dir)
            if not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
                return os.path.relpath(path, out_dir)
    return None


def container_link(out_dir: str) -> str | None:
    """Why a step's outputs are not stored when a link in them led out of them in its
    container (the Dagger executor set it aside: nothing here follows it), or None.
    Looked for once :func:`unstorable` found an output it refuses: a set-aside link is
    one, a broken link here."""
    found = first_set_aside(out_dir)
    if found is None:
        return None
    link, target = found
    return (f"its output {link!r} is a link to {target!r} in the container, which names "
            "the container's file, not one here; copy the file into $DAGNB_OUT (cp -L) "
            "or make the link relative inside it")
