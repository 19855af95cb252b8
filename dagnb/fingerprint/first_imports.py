"""The key of code that imports a project module the process had not imported yet.

Importing a module at key time would run the user's code, so a module a function's body
imports that is not imported yet counts by its file; once imported, by the members the
code reaches (their code, and their data's values at each run). The two keys differ: a
``%%dagger`` cell whose run first imported ``helpers`` ran again on its second execution.

When such code has run in this process (its run imported the modules), the key it makes
now is noted as standing for the one it was run under, together with the digests of the
modules' data it reads as that run left them. A later key of that code finding the same
code and data is the first one, so it is served from the cache; a module edited and
reloaded, or data of its changed, keep the key of the imported module.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from dagnb.fingerprint.values import _soft_digest

_MISSING = object()
_LIMIT = 1024  # (one per code whose run first imported a project module: few)


class _Before:
    """The key a code digest stood for: the code digest then, the globals it read then,
    and the digests of the modules' data read since they are imported."""

    __slots__ = ("code", "data", "labels")

    def __init__(self, code: str, labels: tuple[str, ...], data: dict[str, str]) -> None:
        self.code, self.labels, self.data = code, labels, data


# code digest with the modules imported -> the key it stands for
KEYED_BEFORE: dict[str, _Before] = {}


def remember(code_now: str, code_before: str, labels_before: tuple[str, ...],
             values_now: Mapping[str, Any]) -> None:
    """Note that ``code_now`` (read with ``values_now``) stands for ``code_before`` (read
    with the values of ``labels_before``): the data read now that was not read before
    (the modules') must still hash as now. Data no hash takes: nothing noted."""
    data = {}
    for label, value in values_now.items():
        if label not in labels_before:
            digest = _soft_digest(value)
            if digest is None:
                return
            data[label] = digest
    if len(KEYED_BEFORE) >= _LIMIT:
        KEYED_BEFORE.clear()
    KEYED_BEFORE[code_now] = _Before(code_before, labels_before, data)


def keyed_before(code_now: str, values_now: Mapping[str, Any]
                 ) -> tuple[str, dict[str, Any]] | None:
    """The code digest and the globals' values of the key ``code_now`` stands for, if the
    modules' data it reads is as noted; else None."""
    before = KEYED_BEFORE.get(code_now)
    if before is None:
        return None
    for label, digest in before.data.items():
        value = values_now.get(label, _MISSING)
        if value is _MISSING or _soft_digest(value) != digest:
            return None
    return before.code, {label: values_now[label] for label in before.labels
                         if label in values_now}
