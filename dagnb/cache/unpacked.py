"""What the folder of a packed entry holds under ``out/``, and whether it still does.

A packed entry's folder (``.unpacked/<step>/<key>-<stamp>``) is made from its record
for the steps that read it as files (``$DAGNB_IN/<step>``), and every later reader, of
this process or another, is given the same folder. The record is the truth: a folder
that is not as the record makes it (a step wrote into it, or someone by hand) is made
again, never served. Its ``out/`` holds at most the result file, under 64 KiB: checking
it costs one ``listdir`` and one read.
"""

from __future__ import annotations

import base64
import ctypes
import os
import pickle
from collections.abc import Mapping
from typing import Any

from dagnb.model.results import RESULT_FILES, decode_inline, json_text

__all__ = ["exchange", "first_difference", "out_files"]


def out_files(inline: Mapping[str, Any] | None) -> dict[str, bytes]:
    """The files of ``out/`` made from an inline result, as the step's own
    :func:`~dagnb.model.results.save_result` would have written them: the same bytes
    each time (a pickle is the record's own, not one made again: a set's order would
    change from one process to the next)."""
    if not inline:
        return {}
    if "pickle" in inline:
        return {RESULT_FILES[1]: base64.b64decode(inline["pickle"])}
    value = decode_inline(inline)
    text = json_text(value)
    if text is None:  # (JSON save_result would not write as such: it pickles it)
        return {RESULT_FILES[1]: pickle.dumps(value, protocol=5)}
    return {RESULT_FILES[0]: text.encode()}


def first_difference(out: str, files: Mapping[str, bytes]) -> str | None:
    """The first name under ``out`` (``out/<name>``) that is not as ``files`` says: a
    file changed or missing, a name added; ``out`` itself if it is gone; else None."""
    try:
        names = os.listdir(out)
    except OSError:
        return "out"
    for name in sorted(files.keys() ^ set(names)):
        return f"out/{name}"
    for name, data in files.items():
        try:
            with open(f"{out}/{name}", "rb") as handle:
                same = handle.read(len(data) + 1) == data
        except OSError:  # (a folder made in its place)
            same = False
        if not same:
            return f"out/{name}"
    return None


_AT_FDCWD, _RENAME_EXCHANGE = -100, 2  # linux/fcntl.h, linux/fs.h
_renameat2: Any = None  # looked up on first use (None: not looked up; False: none here)


def exchange(new: str, target: str) -> bool:
    """Swap folders ``new`` and ``target`` in one step (Linux ``renameat2`` with
    ``RENAME_EXCHANGE``: no moment with no folder at ``target``, which two renames
    leave to a reader in between); False where the system or its file system cannot,
    and nothing was moved. Python has no call for it: glibc's, through ctypes."""
    global _renameat2
    if _renameat2 is None:
        try:
            _renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
        except (AttributeError, OSError):  # (not Linux, or a libc older than 2.28)
            _renameat2 = False
    if _renameat2 is False:
        return False
    done = _renameat2(_AT_FDCWD, os.fsencode(new), _AT_FDCWD, os.fsencode(target),
                      _RENAME_EXCHANGE)
    return done == 0
