"""Where a step runs on this machine: its ``workdir``, or the folder one of its mounts
maps a container workdir from; never another folder (a command run elsewhere acts on
the wrong files)."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from pathlib import Path, PurePosixPath

from dagnb.errors import StepFailed
from dagnb.executors.base import Task
from dagnb.model.step import Step, mount_path


def workdir_of(task: Task) -> str:
    """The folder the step's process starts in; StepFailed when its workdir is no
    folder here (before anything of the step runs)."""
    workdir = task.step.workdir
    if workdir is None:
        return str(task.base_dir)
    for path in _host_folders(task.base_dir, workdir, task.step.mounts):
        if path.is_dir():
            return str(path)
    raise StepFailed(
        f"step {task.step.name!r}: its workdir {workdir!r} is not a folder of this machine "
        f"({task.base_dir / workdir}), and no mount of the step maps it here; create it, "
        "or fix the path (a step that runs on this machine runs in a folder of it)",
        step=task.step.name,
    )


def _host_folders(base: Path, workdir: str, mounts: Mapping[str, str]) -> Iterator[Path]:
    """Where ``workdir`` may be here: first through each mount whose container path
    holds it, the deepest first (``{src: /workspace}`` maps ``/workspace/pkg`` to ``src/pkg``, as a
    container would see it, whatever this machine has at ``/workspace``), then itself
    (relative to the workflow's folder)."""
    inside = PurePosixPath(workdir)
    deepest_first = sorted(mounts.items(), key=lambda mount: -len(PurePosixPath(mount[1]).parts))
    for host, target in deepest_first:  # (a container sees the deeper mount on top)
        if inside.is_absolute() and inside.is_relative_to(target):
            yield mount_path(base, host) / inside.relative_to(target)
    yield base / workdir


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
