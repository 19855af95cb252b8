"""What a workflow's load learns from a file, read once per process and again after an edit.

Each Python step of a workflow names its module, so a load of N steps asks about the same
files N times (its digest, the modules it imports): reading and parsing them at each ask
made a load cost steps × module size. A fact is kept with the file's stat (mtime, size,
inode, ctime) and the digest of the text it was computed from; a file whose stat changed
is read again, and its facts made again only when its text changed too.
A filesystem's clock has coarse ticks: a file written again within the tick of its last
write, at the same size, keeps its stat. So a file modified shortly before it was read is
read again at each ask (its digest compared, nothing parsed again) until that tick is
long past, as git does with an index entry it calls "racily clean".
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

__all__ = ["file_digest", "file_fact"]

T = TypeVar("T")

# how long after its last write a file's stat may not tell a new write: a filesystem
# of fine timestamps stamps them from a clock of ticks up to 10 ms (the kernel's coarse
# clock); one whose timestamps are whole seconds may round them to 2 s (FAT's)
_RACY_NS, _RACY_WHOLE_SECONDS_NS = 10**8, 3 * 10**9


@dataclass
class _Known:
    digest: str  # of the text the facts were made of
    signature: tuple[int, ...] = ()
    racy: bool = True  # modified shortly before it was stat'ed: its stat proves nothing
    facts: dict[Callable[[bytes], Any], Any] = field(default_factory=dict)


# resolved path -> what is known of the file
_KNOWN: dict[Path, _Known] = {}


def file_digest(path: Path) -> str:
    """The sha256 of the file's bytes; an unchanged file is only stat'ed."""
    return _current(path, None)[0].digest


def file_fact(path: Path, compute: Callable[[bytes], T]) -> T:
    """``compute(the file's bytes)``, made once per text of the file at ``path`` (resolved:
    it is the key); an unchanged file is only stat'ed. Raises what reading it raises."""
    known, data = _current(path, compute)
    if compute not in known.facts:
        known.facts[compute] = compute(path.read_bytes() if data is None else data)
    return known.facts[compute]


def _current(path: Path, wanted: Callable[[bytes], Any] | None) -> tuple[_Known, bytes | None]:
    """What is known of the file now, and its bytes when they had to be read (its stat
    changed, or says nothing, or the ``wanted`` fact is not known yet)."""
    now = time.time_ns()  # (before the stat: a write after it is told by its stat)
    stat = path.stat()
    signature = (stat.st_mtime_ns, stat.st_size, stat.st_ino, stat.st_ctime_ns)
    known = _KNOWN.get(path)
    if known is not None and not known.racy and known.signature == signature \
            and (wanted is None or wanted in known.facts):
        return known, None
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    if known is None or known.digest != digest:
        known = _KNOWN[path] = _Known(digest)
    known.signature = signature
    known.racy = now - stat.st_mtime_ns < _racy_ns(stat.st_mtime_ns)
    return known, data


def _racy_ns(mtime_ns: int) -> int:
    return _RACY_WHOLE_SECONDS_NS if mtime_ns % 10**9 == 0 else _RACY_NS
