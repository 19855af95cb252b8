"""How a step's shell text runs: the same semantics on every executor.

Shell text stops at its first failing command, as GitHub Actions' ``bash`` steps do:
it runs as ``bash -e -o pipefail -c TEXT``, so a failing command, or a failing part of
a pipeline, fails the step instead of being followed by the next line. Where there is
no bash (a slim Alpine image), POSIX ``sh -e -c TEXT`` runs it (no ``pipefail`` there).
A step with ``errexit=False`` opts out: plain ``bash -c`` (or ``sh -c``).

On the host, bash is looked up on ``PATH``. In a container, the image decides: the
exec is ``sh -c SCRIPT dagnb TEXT``, whose small script execs bash when the image has
it and sh otherwise. That costs one ``sh`` start and no query to the engine (asking
the image whether it has ``/bin/bash`` would be a round trip per image), and the exec's
argv, which is part of Dagger's cache key, does not depend on the image.
"""

from __future__ import annotations

import functools
import os
import shutil

from dagnb.model.step import Step

__all__ = ["container_argv", "host_argv"]

_STRICT_BASH = ("-e", "-o", "pipefail")
_STRICT_SH = ("-e",)


def host_argv(step: Step) -> list[str]:
    """The argv that runs ``step``'s shell text on this machine."""
    assert isinstance(step.run, str)
    if _has_bash(os.environ.get("PATH", os.defpath)):
        return ["bash", *(_STRICT_BASH if step.errexit else ()), "-c", step.run]
    return ["sh", *(_STRICT_SH if step.errexit else ()), "-c", step.run]


def container_argv(step: Step) -> list[str]:
    """The argv that runs ``step``'s shell text in any image that has ``sh``."""
    assert isinstance(step.run, str)
    bash = " ".join(["bash", *(_STRICT_BASH if step.errexit else ())])
    sh = " ".join(["sh", *(_STRICT_SH if step.errexit else ())])
    script = (f'if command -v bash >/dev/null 2>&1; then exec {bash} -c "$1"; fi; '
              f'exec {sh} -c "$1"')
    return ["sh", "-c", script, "dagnb", step.run]


@functools.lru_cache(maxsize=8)
def _has_bash(path: str) -> bool:
    return shutil.which("bash", path=path) is not None
