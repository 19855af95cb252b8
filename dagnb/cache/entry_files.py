"""The files of a folder entry: the sizes and small files' digests a hit checks, and
the moves and writes that assemble an entry (:meth:`dagnb.cache.store.Store.save`)."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from dagnb.cache.entry import _log_record
from dagnb.cache.pack import RECORD_LIMIT
from dagnb.errors import CacheError
from dagnb.fingerprint import new_hasher, path_digest


def _file_sizes(root: Path, prefix: str = "") -> dict[str, int]:
    """Every file under ``root`` (``prefix/`` + relative path -> bytes), what a hit
    checks the entry's files against."""
    sizes = {}
    for folder, _, files in os.walk(root):
        for name in files:
            path = os.path.join(folder, name)
            relative = os.path.join(prefix, os.path.relpath(path, root))
            try:
                sizes[relative] = os.stat(path).st_size
            except OSError:
                if os.path.islink(path):
                    raise _broken_link(path, relative) from None
                raise
    return sizes


def _broken_link(path: str, relative: str) -> CacheError:
    """A broken link is refused: a hit checks each file through its links (and the
    runner refuses such outputs before saving, as not files)."""
    return CacheError(
        f"{relative!r} is a broken link (to {os.readlink(path)!r}) and cannot be stored; "
        "remove it, or put the file it names in the output folder"
    )


def _put_back(moved: Path, out: Path) -> None:
    """After a failed save, return the outputs to where the step wrote them."""
    if os.path.exists(moved) and not os.path.exists(out):
        with contextlib.suppress(OSError):
            shutil.move(os.fspath(moved), out)


def _has_out_files(meta: Mapping[str, Any]) -> bool:
    """Whether the manifest lists a file under ``out/`` (whose size check finds out/)."""
    files = meta.get("files")
    return isinstance(files, dict) and any(name.startswith("out/") for name in files)


def _size_problem(root: Path, files: Any) -> str | None:
    """Why the entry's files are not those it was saved with (sizes), or None.

    This is what lets a save skip fsync: after a power loss or a hand edit, a torn,
    truncated or deleted file no longer has its recorded size, so the entry is a miss,
    set aside, instead of being served. (Same-size damage is ``dagnb cache verify``'s,
    which re-hashes the files.) Entries from before the manifest have none to check.
    """
    if not isinstance(files, dict):
        return None
    for relative, size in files.items():
        try:
            actual = os.stat(f"{root}/{relative}").st_size  # text: a hit's path
        except OSError:
            return f"its file {_named(root, relative, files)} is missing"
        if actual != size:
            return (f"its file {_named(root, relative, files)} is {actual} bytes, not the "
                    f"{size} it was saved with")
    return None


def _named(root: Path, relative: str, files: Mapping[str, Any]) -> str:
    """``relative`` as a problem with it is told: a link by the file it points to when
    the entry has that file too (both were checked, the link first as it was listed
    first), ``out/sub/f.txt, which its link out/link points to,``; a link to a file
    outside the entry with its target. Asked of a damaged entry only: a hit pays nothing."""
    path = f"{root}/{relative}"
    try:
        target = os.readlink(path)
    except OSError:  # (not a link)
        return relative
    reached = os.path.relpath(os.path.realpath(path), os.path.realpath(root))
    if reached in files and reached != relative:
        return f"{reached}, which its link {relative} points to,"
    return f"{relative}, a link to {target},"


DIGEST_LIMIT = 64 * 1024  # files up to this size are hashed on a hit (first read per process)


def _small_digests(build: Path, out: Path, sizes: Mapping[str, int],
                   hashed: Mapping[str, str]) -> dict[str, str]:
    """Content digests of an entry's small files (``result.json``, ``logs.jsonl``, small
    outputs), read from ``build`` and (for ``out/...``) from ``out``: cheap to check on
    a hit, and what catches same-size edits there. ``hashed``: the digests of ``out``'s
    files that its output digest read (``directory_digest(file_digests=...)``), by
    their names under it, so that those are not read again."""
    def digest(relative: str) -> str:
        head, _, rest = relative.partition(os.sep)
        if head != "out" or not rest:
            return path_digest(build / relative, use_stat_cache=False)
        known = hashed.get(rest.replace(os.sep, "/"))  # (the walk joins names with /)
        return known or path_digest(out / rest, use_stat_cache=False)

    return {relative: digest(relative) for relative, size in sizes.items()
            if size <= DIGEST_LIMIT}


def _digest_problem(root: Path, digests: Any) -> str | None:
    """Which small file no longer has the content it was saved with, or None."""
    if not isinstance(digests, dict):
        return None  # an entry saved before digests were recorded
    for relative, digest in digests.items():
        try:
            if _small_file_digest(f"{root}/{relative}") != digest:
                return (f"its file {_named(root, relative, digests)} was changed since it "
                        "was saved")
        except OSError:
            return f"its file {_named(root, relative, digests)} cannot be read"
    return None


def _small_file_digest(path: str) -> str:
    """``path_digest`` of a small file, read whole: one open and one read, no walk (a
    cold re-run checks one such file per step)."""
    with open(path, "rb") as handle:
        data = handle.read()
    hasher = new_hasher()
    hasher.update(data)
    return hasher.hexdigest()


def _let_owner_in(folder: Path) -> None:
    """Give back the owner's access to an entry whose mode was changed (``chmod 000``),
    so it can be moved aside; a folder of someone else stays as it is."""
    with contextlib.suppress(OSError):
        if not os.access(folder, os.R_OK | os.W_OK | os.X_OK):
            os.chmod(folder, 0o700)


def _move(source: str, target: str) -> None:
    """Move a folder: a rename on one file system (always, for a scratch folder)."""
    try:
        os.rename(source, target)
    except OSError:
        shutil.move(source, target)


def _no_files(out_dir: str | os.PathLike[str] | None) -> bool:
    """Whether a step wrote no output files (no folder, or an empty one)."""
    if out_dir is None:
        return True
    try:
        return not os.listdir(out_dir)
    except (FileNotFoundError, NotADirectoryError):
        return True


def _small_logs(
    logs: Iterable[Mapping[str, Any]] | os.PathLike[str],
) -> list[dict[str, Any]] | None:
    """The captured lines, if they are few enough for a pack record; else None."""
    if type(logs) is list and not logs:  # (most steps print nothing)
        return []
    if not isinstance(logs, os.PathLike):
        if isinstance(logs, (list, tuple)):
            lines = [dict(record) for record in logs]
            return lines if len(lines) < 1000 else None
        return None  # a stream of lines: written as it comes, into a folder
    try:
        if os.stat(logs).st_size > RECORD_LIMIT // 2:
            return None
        with open(logs, encoding="utf-8", errors="replace") as handle:
            return [r for r in map(_log_record, handle) if r]
    except FileNotFoundError:
        return []
    except OSError:
        return None


def _consume(out_dir: str | os.PathLike[str] | None, logs: Any) -> None:
    """A packed entry took what was handed to it: its empty out folder and log file go,
    as :meth:`Store.save` moves them into a folder entry."""
    if type(logs) is not list and isinstance(logs, os.PathLike):
        with contextlib.suppress(OSError):
            os.unlink(logs)
    if out_dir is not None:
        with contextlib.suppress(OSError):
            os.rmdir(out_dir)


def _write_meta(path: Path, data: bytes) -> None:
    path.write_bytes(data)


def _write_logs(path: Path, logs: Iterable[Mapping[str, Any]]) -> int:
    """Write the lines as they come (never all in memory); how many. No lines, no file:
    a silent step's entry costs one inode less."""
    count = 0
    handle = None
    try:
        for record in logs:
            if handle is None:
                handle = open(path, "w", encoding="utf-8")  # noqa: SIM115 (closed below)
            handle.write(json.dumps(dict(record), ensure_ascii=False) + "\n")
            count += 1
    finally:
        if handle is not None:
            handle.close()
    return count


def _move_logs(source: Path, target: Path) -> int:
    """Move a file of log records into an entry (a rename); how many lines it has."""
    if not source.exists() or source.stat().st_size == 0:
        return 0
    shutil.move(os.fspath(source), target)
    lines = 0
    with open(target, "rb") as handle:
        while block := handle.read(1 << 20):
            lines += block.count(b"\n")
    return lines


def _children(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except (FileNotFoundError, NotADirectoryError):
        return []


def _mtime(path: Path) -> float:
    try:
        return path.stat().st_mtime
    except OSError:
        return float("inf")
