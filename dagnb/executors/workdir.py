"""Where a step runs on this machine: its ``workdir``, or the folder one of its mounts
maps a container workdir from; never another folder (a command run elsewhere acts on
the wrong files)."""

from __future__ import annotations

import re
from pathlib import Path

from dagnb.errors import StepFailed
from dagnb.executors.base import Task
from dagnb.model.step import Step, host_folders


def workdir_of(task: Task) -> str:
    """The folder the step's process starts in; StepFailed when its workdir is no
    folder here (before anything of the step runs)."""
    workdir = task.step.workdir
    if workdir is None:
        return str(task.base_dir)
    for path in host_folders(task.base_dir, workdir, task.step.mounts):
        if path.is_dir():
            return str(path)
    raise StepFailed(
        f"step {task.step.name!r}: its workdir {workdir!r} is not a folder of this machine "
        f"({task.base_dir / workdir}), and no mount of the step maps it here; create it, "
        "or fix the path (a step that runs on this machine runs in a folder of it)",
        step=task.step.name,
    )


def unmade_mounts_hint(step: Step) -> str:
    """For a shell step that failed on this machine: the container paths of its mounts
    that its command names and that are no path here (``python3 /src/transform.py``
    with ``mounts: {transform.py: /src/transform.py}``), which only a container makes.
    Empty when there are none: the failure was something else."""
    if not isinstance(step.run, str):
        return ""
    named = [(host, target) for host, target in step.mounts.items()
             if _names_path(step.run, target) and not Path(target).exists()]
    if not named:
        return ""
    shown = ", ".join(f"{target} (mount {host!r})" for host, target in named[:3])
    return (f"; on this machine a mount is read at its host path, and no file is put at "
            f"its container path: the command names {shown}; use the host path, or run "
            "the step in a container (executor: dagger)")


def _names_path(command: str, path: str) -> bool:
    """Whether ``command`` names ``path`` or a path under it, as a word of its own
    (``/src`` in ``cd /src && ...`` or ``/src/x.py``, not in ``/srcs`` or ``a/src``)."""
    target = re.escape(path.rstrip("/") or "/")
    return re.search(rf"(?<![\w./-]){target}(?![\w.-])", command) is not None
