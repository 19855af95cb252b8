"""What a step would store is checked first: its result and files for the run's secrets
(the cache keeps none: a step may read one it did not declare, in-process, or write one
it did into its outputs), and its outputs for what is not a file or a folder (a pipe or
a device would be read forever)."""

from __future__ import annotations

import os
import stat
from typing import Any

from dagnb.cache.backend import surely_absent
from dagnb.cache.secret_scan import pickle_holds
from dagnb.executors.base import NO_RESULT
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
