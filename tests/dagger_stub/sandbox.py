"""Run one stub "container" exec on the host, inside a temporary root.

The stub has no images: a container's files live in a temporary directory ``root``
(``root/dagnb/out`` is the container's ``/dagnb/out``) and commands run with the host's
tools. Two ways make the container's absolute paths real:

``namespace``
    In a private mount namespace (``unshare --mount``), every host entry that the
    container does not own is bind-mounted into ``root`` and the command runs
    ``chroot``-ed there, so ``/dagnb/out`` *is* ``root/dagnb/out`` while ``sh``,
    ``python3`` and ``/tmp`` still come from the host. The binds vanish with the
    namespace; nothing is mounted on the host, and no directory is created outside
    ``root``. Needs root and a kernel that allows it (probed once).
``rewrite``
    The fallback: the known container paths are replaced by their host paths in the
    argv and the environment values, and the command runs on the host.

A real container has none of this machine's files: ``hidden`` host folders (a test's
project folder) are covered by an empty tmpfs in namespace mode, so that a step finds
its project's modules only where dagnb sent them. Rewrite mode cannot hide them (the
command runs on the host): there they are merely off the command's paths.

``read_only`` mounts are mounted "ro" in namespace mode, as the engine mounts them
(v0.21.8 core/container_exec.go), so a write there fails with the kernel's EROFS, "Read-only
file system", and the exec with it. Rewrite mode cannot refuse the write: an exec that
changed such a mount fails there after the fact, with those words and its path.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shlex
import shutil
import signal
import stat
import subprocess
from collections.abc import Callable, Iterable
from pathlib import Path

__all__ = ["Cancelled", "ExecResult", "mode", "run"]

# Forced with DAGNB_STUB_SANDBOX=rewrite|namespace (tests exercise both paths).
_MODE_ENV = "DAGNB_STUB_SANDBOX"


@dataclasses.dataclass(frozen=True)
class ExecResult:
    """What an exec left behind."""

    stdout: str
    stderr: str
    exit_code: int


class Cancelled(Exception):
    """The client that asked for the exec went away; the exec was killed (as Dagger does)."""


def _always() -> bool:
    return True


def _communicate(cmd: list[str], alive: Callable[[], bool], **options: object
                 ) -> subprocess.CompletedProcess[bytes]:
    """subprocess.run, but the process group is killed as soon as ``alive()`` says no."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True, **options)  # type: ignore[call-overload]
    while True:
        try:
            stdout, stderr = proc.communicate(timeout=0.05)
            return subprocess.CompletedProcess(cmd, proc.returncode, stdout, stderr)
        except subprocess.TimeoutExpired:
            if alive():
                continue
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise Cancelled(f"exec {cmd!r} killed: its client went away")


@functools.lru_cache(maxsize=1)
def _namespace_works() -> bool:
    unshare, chroot = shutil.which("unshare"), shutil.which("chroot")
    if os.geteuid() != 0 or not unshare or not chroot:
        return False
    probe = [unshare, "--mount", "--propagation", "private", chroot, "/", "true"]
    try:
        return subprocess.run(probe, capture_output=True, timeout=10).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


def mode() -> str:
    """'namespace' where private mount namespaces work here, else 'rewrite'."""
    forced = os.environ.get(_MODE_ENV)
    if forced in ("namespace", "rewrite"):
        return forced
    return "namespace" if _namespace_works() else "rewrite"


def run(
    root: Path,
    argv: list[str],
    env: dict[str, str],
    workdir: str,
    binds: dict[str, Path],
    alive: Callable[[], bool] = _always,
    user: str = "",
    hidden: Iterable[Path] = (),
    read_only: Iterable[str] = (),
) -> ExecResult:
    """Run ``argv`` as if ``root`` were the container's filesystem.

    ``user`` (``"uid:gid"``, empty for root) runs the command as that user, as an image's
    ``USER`` does; only in namespace mode (in rewrite mode the stub's own folders are
    not reachable for another user, so the command runs as root there).

    ``binds`` maps container paths to host directories shared between execs (cache
    volumes): they are bind-mounted, or rewritten, instead of copied. The exec is
    killed, raising :class:`Cancelled`, once ``alive()`` returns False. ``hidden`` host
    folders are empty for the command (namespace mode only). ``read_only``: the
    container paths of the mounts a write into fails (see the module's docstring).
    """
    (root / workdir.lstrip("/")).mkdir(parents=True, exist_ok=True)
    root.chmod(0o755)  # a container's / is readable by every user (mkdtemp made it 0700)
    read_only = sorted(read_only, key=lambda target: target.count("/"))  # parents first
    if mode() == "namespace":
        return _run_namespace(root, argv, env, workdir, binds, alive, user, hidden,
                              read_only)
    before = {target: _tree_state(root / target.lstrip("/")) for target in read_only}
    result = _run_rewrite(root, argv, env, workdir, binds, alive)
    return _refused_writes(root, before, result)


def _finish(proc: subprocess.CompletedProcess[bytes]) -> ExecResult:
    text = functools.partial(bytes.decode, encoding="utf-8", errors="replace")
    code = proc.returncode if proc.returncode >= 0 else 128 - proc.returncode  # as a shell
    return ExecResult(text(proc.stdout), text(proc.stderr), code)


# -- namespace mode ---------------------------------------------------------------------


def _run_namespace(
    root: Path, argv: list[str], env: dict[str, str], workdir: str, binds: dict[str, Path],
    alive: Callable[[], bool], user: str, hidden: Iterable[Path] = (),
    read_only: Iterable[str] = (),
) -> ExecResult:
    created: list[Path] = []
    lines = ["set -e"]
    # Parents first. A point is made now (so the union with the host below leaves it
    # alone) and again once its parent is mounted: a directory mounted beneath a cache
    # volume gets its point inside the volume, as with runc.
    for target, source in sorted(binds.items(), key=lambda item: item[0].count("/")):
        point = root / target.lstrip("/")
        point.mkdir(parents=True, exist_ok=True)
        quoted = shlex.quote(str(point))
        lines.append(f"mkdir -p {quoted} && mount --bind {shlex.quote(str(source))} {quoted}")
    lines += _union_with_host(Path("/"), root, created)
    for folder in hidden:  # (in this namespace only: the host keeps its files)
        point = shlex.quote(str(root / str(folder).lstrip("/")))
        lines.append(f"if [ -d {point} ]; then mount -t tmpfs dagnb-stub-hidden {point}; fi")
    for target in read_only:  # (rbind: a cache volume mounted beneath stays writable)
        point = shlex.quote(str(root / target.lstrip("/")))
        lines.append(f"mount --rbind {point} {point} && mount -o remount,bind,ro {point}")
    # `cd` inside the chroot so a missing workdir fails like it would in a container.
    inner = 'cd "$1" || exit 126; shift; exec "$@"'
    chroot = [shutil.which("chroot") or "chroot", *([f"--userspec={user}"] if user else [])]
    chroot_argv = [*chroot, str(root), "/bin/sh", "-c", inner, "sh"]
    lines.append("exec " + shlex.join([*chroot_argv, workdir, *argv]))
    unshare = shutil.which("unshare") or "unshare"
    cmd = [unshare, "--mount", "--propagation", "private", "sh", "-c", "\n".join(lines)]
    try:
        return _finish(_communicate(cmd, alive, env=env))
    finally:
        _remove_mount_points(created)


def _union_with_host(host: Path, root: Path, created: list[Path]) -> list[str]:
    """Mount commands that show every host entry the container does not own in root."""
    lines: list[str] = []
    for entry in sorted(host.iterdir()):
        point = root / entry.name
        if point.exists() or point.is_symlink():
            if point.is_dir() and not point.is_symlink() and entry.is_dir():
                # Both have it (a workdir /usr/src/app): merge one level further down.
                lines += _union_with_host(entry, point, created)
            continue
        lines += _mount_point(entry, point, created)
    return lines


def _mount_point(entry: Path, point: Path, created: list[Path]) -> list[str]:
    if entry.is_symlink():
        point.symlink_to(os.readlink(entry))
        created.append(point)
        return []
    if entry.is_dir():
        point.mkdir()
    elif entry.is_file():
        point.touch()
    else:
        return []  # sockets and fifos at the top level are of no use to a step
    created.append(point)
    quoted = f"{shlex.quote(str(entry))} {shlex.quote(str(point))}"
    return [f"mount --rbind {quoted} 2>/dev/null || true"]


def _remove_mount_points(created: list[Path]) -> None:
    # Only ever rmdir/unlink: a mount point is empty once its namespace has gone, and a
    # recursive delete must never be able to reach through a bind into the host.
    for point in reversed(created):
        try:
            if point.is_symlink() or point.is_file():
                point.unlink()
            else:
                point.rmdir()
        except OSError:
            pass


# -- rewrite mode -----------------------------------------------------------------------


def _run_rewrite(
    root: Path, argv: list[str], env: dict[str, str], workdir: str, binds: dict[str, Path],
    alive: Callable[[], bool],
) -> ExecResult:
    mapping = {target: str(source) for target, source in binds.items()}
    for owned in _owned_paths(Path("/"), root):
        mapping.setdefault("/" + str(owned.relative_to(root)), str(owned))
    rewrite = functools.partial(_rewrite, mapping=mapping)
    cwd = rewrite(workdir) if workdir != "/" else str(root)
    new_env = {key: rewrite(value) for key, value in env.items()}
    try:
        proc = _communicate([rewrite(a) for a in argv], alive, env=new_env, cwd=cwd)
    except FileNotFoundError as exc:
        return ExecResult("", f"exec: {exc}\n", 127)
    return _finish(proc)


def _tree_state(folder: Path) -> dict[str, tuple[int, int, int]]:
    """Each entry under ``folder`` (relative path -> mode, size, mtime; a folder's by
    its mode and entries only), to tell a write; not Python's bytecode caches: on
    EROFS, Python writes none and says nothing."""
    state = {}
    for parent, folders, files in os.walk(folder):
        folders[:] = [name for name in folders if name != "__pycache__"]
        for name in [".", *folders, *files]:
            path = os.path.join(parent, name)
            found = os.lstat(path)
            kept = (0, 0) if stat.S_ISDIR(found.st_mode) else (found.st_size,
                                                                found.st_mtime_ns)
            state[os.path.relpath(path, folder)] = (found.st_mode, *kept)
    return state


def _refused_writes(root: Path, before: dict[str, dict[str, tuple[int, int, int]]],
                    result: ExecResult) -> ExecResult:
    """``result``, failed with EROFS's words if the exec changed a read-only mount."""
    for target, state in before.items():
        after = _tree_state(root / target.lstrip("/"))
        changed = sorted(name for name in state.keys() | after.keys()
                         if state.get(name) != after.get(name))
        # (a file written rather than the new folder it is in)
        files = [name for name in changed
                 if not stat.S_ISDIR((after.get(name) or state[name])[0])]
        if changed:
            path = os.path.normpath(os.path.join(target, (files or changed)[0]))
            return ExecResult(result.stdout,
                              f"{result.stderr}{path}: Read-only file system\n",
                              result.exit_code or 1)
    return result


def _owned_paths(host: Path, root: Path) -> list[Path]:
    """Entries of root with no host counterpart (the same merge as namespace mode)."""
    owned: list[Path] = []
    for entry in sorted(root.iterdir()):
        twin = host / entry.name
        if entry.is_dir() and twin.is_dir() and not twin.is_symlink():
            owned += _owned_paths(twin, entry)
        elif not twin.exists():
            owned.append(entry)
    return owned


def _rewrite(text: str, mapping: dict[str, str]) -> str:
    # Longest prefixes first, so /dagnb/in/x wins over /dagnb; only at path starts.
    for target in sorted(mapping, key=len, reverse=True):
        text = _replace_path(text, target, mapping[target])
    return text


def _replace_path(text: str, target: str, source: str) -> str:
    out, start = [], 0
    while (i := text.find(target, start)) >= 0:
        end = i + len(target)
        before_ok = i == 0 or not (text[i - 1].isalnum() or text[i - 1] in "_./-")
        after_ok = end == len(text) or text[end] in "/ \"':;\n\t)"
        out.append(text[start:i])
        out.append(source if before_ok and after_ok else target)
        start = end
    out.append(text[start:])
    return "".join(out)
