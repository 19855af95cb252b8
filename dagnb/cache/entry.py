"""Cache entries as a store serves them: :class:`Entry` (a folder), :class:`PackedEntry`
(a record of a pack, :mod:`dagnb.cache.pack`), and the reading and checking of their
metadata (``meta.json``, or a record's head)."""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Hashable, Iterator, Mapping
from pathlib import Path
from typing import Any, Protocol

from dagnb.cache.backend import is_entry_name
from dagnb.cache.unpacked import out_files
from dagnb.errors import CacheError
from dagnb.fingerprint import directory_digest, text_digest
from dagnb.model.jsontext import encoder
from dagnb.model.results import NO_RESULT, decode_inline, load_result

__all__ = ["COUNTED_AS", "STORE_FORMAT", "Entry", "PackedEntry"]

STORE_FORMAT = 1  # the entry layout; an entry of another format is treated as damaged
_REQUIRED = frozenset(
    {"step", "key", "format", "created", "expires", "output_digest", "components"})
_HEAD_REQUIRED = _REQUIRED - {"components"}  # a packed entry's head: components in the rest
# What a hit reads of a packed entry: parsed at once; the rest (components, describe,
# files, logs) only when someone reads ``entry.meta``.
_HEAD_FIELDS = frozenset({
    "format", "step", "key", "created", "expires", "duration_s", "exit_code",
    "output_digest", "size_bytes", "hits", "last_used", "has_result", "log_lines",
    "packed", "inline", "provenance", "displays",
})


class Entry:
    """One cached result of one step.

    Attributes
    ----------
    step, key
        The step name and the key digest.
    path
        The entry directory; ``out_dir`` holds the output files.
    meta
        The metadata as saved (created, expires, duration_s, exit_code, components,
        describe, output_digest, size_bytes, has_result, ...).
    version
        The backend's version of the entry when it was read.
    not_stored
        Why a save's entry was not put in place (its key's entry in use by a live run):
        the saver's alone, gone with its process; None for an entry that is stored.
    """

    not_stored: str | None = None

    def __init__(
        self, step: str, key: str, path: Path, meta: Mapping[str, Any], version: Hashable = None
    ) -> None:
        self.step, self.key, self._path, self.meta, self.version = step, key, path, meta, version

    @property
    def workflow(self) -> str | None:
        """The name of the workflow whose run saved it (None: a Memory function's, or
        saved by a version that did not record it)."""
        provenance = self.meta.get("provenance")
        name = provenance.get("workflow") if isinstance(provenance, Mapping) else None
        return name if isinstance(name, str) else None

    def read_head(self) -> str | None:
        """Its metadata was read and checked whole (a PackedEntry's head may be later)."""
        return None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(step={self.step!r}, key={self.key!r}, path={self._path!r})"

    @property
    def path(self) -> Path:
        """The entry directory."""
        return self._path

    @functools.cached_property
    def out_dir(self) -> Path:
        """The directory of the step's output files."""
        return self.path / "out"

    @property
    def out_ref(self) -> str | os.PathLike[str]:
        """Where the outputs are, as text (a packed entry's folder made when first used)."""
        return self._out_text

    @property
    def log_file(self) -> Path:
        """The file of the captured lines (absent when the step printed nothing)."""
        return self.path / "logs.jsonl"

    @property
    def inline(self) -> Mapping[str, Any] | None:
        """The result kept in the metadata itself (``meta["inline"]``), or None."""
        return self.meta.get("inline")

    @functools.cached_property
    def _out_text(self) -> str:
        return f"{self._path}/out"  # a str: checked on every hit, Path costs two calls

    @property
    def output_digest(self) -> str:
        """Digest of the output directory; downstream keys use it (early cutoff)."""
        return self.meta["output_digest"]

    @property
    def created(self) -> float:
        """When the entry was saved (seconds since the epoch, the store's clock)."""
        return self.meta["created"]

    @property
    def expires(self) -> float | None:
        """When the entry expires, or None."""
        return self.meta["expires"]

    def expired(self, now: float, max_age: float | None = None) -> bool:
        """Whether the entry's TTL has passed at ``now``, or it is older than
        ``max_age``: the ttl its step has now, which may be shorter than the one it was
        saved with (or set since), and then is the one that counts."""
        expires = self.expires
        return (expires is not None and expires <= now) or (
            max_age is not None and self.created + max_age <= now)

    def logs(self) -> list[dict[str, Any]]:
        """The captured log lines: dicts with time, attempt, stream, line."""
        return list(self.iter_logs())

    def iter_logs(self) -> Iterator[dict[str, Any]]:
        """:meth:`logs` one line at a time, read as they are asked for: replaying a
        gigabyte of logs costs one line of memory. Undecodable bytes are replaced and
        torn lines skipped (a damaged log is not an error)."""
        if self.meta.get("log_lines") == 0:
            return
        try:
            with open(self.path / "logs.jsonl", encoding="utf-8", errors="replace") as handle:
                for line in handle:
                    record = _log_record(line)
                    if record:
                        yield record
        except OSError:  # gone or unreadable: nothing to replay
            return

    def displays(self) -> list[dict[str, Any]]:
        """The rich outputs the step displayed, in order: dicts with ``after`` (how many
        of its lines came before it), ``attempt`` (the attempt that made it; absent from
        entries older versions wrote), ``data`` (the mime bundle) and ``metadata``. Read
        only when the metadata counts some; a torn or damaged record is left out."""
        if not self.meta.get("displays"):
            return []
        try:
            with open(self.path / "displays.jsonl", encoding="utf-8", errors="replace") as handle:
                records = [_log_record(line) for line in handle]
        except OSError:  # gone or unreadable: nothing to show again
            return []
        return [r for r in records if r and isinstance(r.get("data"), dict)]

    def result(self) -> Any:
        """The step's Python result, or ``NO_RESULT`` for a step that returned none.
        Raises FileNotFoundError when its metadata says it has one and no file holds
        it (the entry removed since it was looked up, or its file alone)."""
        inline = self.meta.get("inline")
        if inline is not None:  # a small result kept in the metadata itself
            return decode_inline(inline)
        value = load_result(self._out_text)
        if value is NO_RESULT and self.meta.get("has_result"):  # (only when none was found)
            raise FileNotFoundError(
                "its result file is missing from out/, though its metadata says it has one")
        return value

    def head_field(self, name: str, default: Any = None) -> Any:
        """One field of the metadata's head (:data:`_HEAD_FIELDS`): a hit reads two,
        with no mapping made for them."""
        return self.meta.get(name, default)

    @property
    def head(self) -> Mapping[str, Any]:
        """The metadata, to read head fields from with ``get`` (no mapping made): a
        hit's replay reads four, each a call of :meth:`head_field` else."""
        return self.meta

    def verify(self) -> bool:
        """Re-hash the output files (no stat cache) and compare with the saved digest
        (``files_digest`` when the output digest counts a result holding a set by its
        value, not by its pickle's bytes: see ``Store.save``)."""
        if self.meta.get("packed"):  # no output files: its digest is of its inline result
            return _inline_digest(self.meta.get("inline")) == self.output_digest
        try:
            return directory_digest(self.out_dir, use_stat_cache=False) == self.meta.get(
                "files_digest", self.output_digest)
        except OSError:
            return False


class _Unpacker(Protocol):
    """What makes a packed entry's folder: its store."""

    _unpack_root: str

    def _unpack(self, entry: PackedEntry, again: bool = False) -> None: ...


class PackedEntry(Entry):
    """An entry kept as a record of a pack (:mod:`dagnb.cache.pack`): its metadata, logs
    and result are in memory; its folder (``path``, ``out_dir``, ``log_file``) is made
    from them under ``.unpacked`` the first time someone asks for it."""

    def __init__(
        self, step: str, key: str, head: dict[str, Any] | None, version: Any,
        owner: _Unpacker, *, raw_head: bytes = b"", seen: tuple[float | None, Any] | None = None,
    ) -> None:
        """``head`` parsed; or None, and ``seen`` the head's expiry and inline result read
        at a glance (:func:`~dagnb.cache.record_text.head_at_a_glance`) from ``raw_head``,
        parsed and checked on first use (only a ``Memory`` hit, which reads no more, is
        given such an entry). ``version``: its record (the rest is read from its body)."""
        self.step, self.key, self.version = step, key, version
        self._owner, self._unpacked = owner, False
        if head is not None:
            self._head = head
            self.inline, self._expires = head.get("inline"), head["expires"]
        else:
            assert seen is not None
            self._raw_head = raw_head
            self._expires, self.inline = seen  # (attributes: every hit reads them)

    @functools.cached_property
    def _head(self) -> dict[str, Any]:
        """The head of an entry read at a glance, parsed when first asked for. Its record
        matched its digest and the glance checked most of it: only a head no dagnb
        writes fails here."""
        problem = self.read_head()
        if problem is not None:
            raise CacheError(f"cache entry {self.step}/{self.key[:12]} is damaged ({problem}); "
                             "`dagnb cache verify` sets it aside")
        return self.__dict__["_head"]

    @property
    def head_read(self) -> bool:
        """Whether the head is parsed (and checked) already."""
        return "_head" in self.__dict__

    def read_head(self) -> str | None:
        """Parse and check the head (once); the problem found, if any."""
        if "_head" in self.__dict__:
            return None
        head, problem = _parse_meta(self._raw_head, self.step, self.key, _HEAD_REQUIRED)
        if problem is None:
            self.__dict__["_head"] = head
        return problem

    @functools.cached_property
    def _rest(self) -> bytes:
        """The record's second line (components, descriptions, lines), cut from its body
        when first asked for: a hit reads the head alone, and a copy of the rest kept for
        each hit was a third of what a fresh process's re-run added to its memory."""
        return self.version.body.partition(b"\n")[2]

    @functools.cached_property
    def _folder(self) -> str:
        """Where its folder is made, as text: named only when asked for (a hit asks not)."""
        return f"{self._owner._unpack_root}/{self.step}/{self.key}-{self.version.stamp}"

    @functools.cached_property
    def meta(self) -> Mapping[str, Any]:  # type: ignore[override]
        """The metadata: the head at once, the rest of the record parsed on first use."""
        return _PackedMeta(self._head, self._rest)

    inline: Mapping[str, Any] | None = None  # (set by __init__; shadows Entry's property)

    def head_field(self, name: str, default: Any = None) -> Any:
        return self._head.get(name, default)  # (the head holds every head field it has)

    @property
    def head(self) -> Mapping[str, Any]:
        return self._head

    @property
    def output_digest(self) -> str:
        return self._head["output_digest"]

    @property
    def created(self) -> float:
        return self._head["created"]

    @property
    def expires(self) -> float | None:
        return self._expires

    def expired(self, now: float, max_age: float | None = None) -> bool:
        expires = self._expires  # (every hit asks: no property in between)
        return (expires is not None and expires <= now) or (
            max_age is not None and self.created + max_age <= now)

    @functools.cached_property
    def _path(self) -> Path:  # type: ignore[override]
        return Path(self._folder)

    @property
    def path(self) -> Path:
        if not self._unpacked:  # (checked against the record once a process, if made)
            self._owner._unpack(self)
            self._unpacked = True
        return self._path

    def checked_path(self) -> Path:
        """:attr:`path`, its folder checked against the record now (made again if it is
        not as the record says), even if checked before in this process."""
        self._owner._unpack(self)
        self._unpacked = True
        return self._path

    def unpack_again(self) -> None:
        """Make its folder anew from the record (it was written into); if that fails,
        it is checked and made when next asked for."""
        self._unpacked = False
        self._owner._unpack(self, again=True)
        self._unpacked = True

    def out_files(self) -> dict[str, bytes]:
        """The files its folder's ``out/`` holds, made from the record."""
        return out_files(self._head.get("inline"))

    @property
    def out_ref(self) -> os.PathLike[str]:
        return _Unpacked(self, "out")

    @property
    def log_file(self) -> Path:
        return _Unpacked(self, "logs.jsonl")  # type: ignore[return-value]  # Path-like

    def iter_logs(self) -> Iterator[dict[str, Any]]:
        if self._head.get("log_lines") == 0:
            return
        yield from self.meta.get("packed_logs") or ()

    def result(self) -> Any:
        inline = self._head.get("inline")
        return NO_RESULT if inline is None else decode_inline(inline)

    def verify(self) -> bool:
        """The record was checked against its digest when read; its head parses and its
        result still gives the output digest it was saved with."""
        try:
            head = self._head
        except CacheError:
            return False
        return _inline_digest(head.get("inline")) == head["output_digest"]


class _PackedMeta(Mapping[str, Any]):
    """A packed entry's metadata: what a hit reads (exit code, provenance, inline result,
    times) from the head (parsed with the entry, or at first use for one read at a
    glance); components, descriptions and logs from the rest of the record, parsed only
    if someone asks for them."""

    __slots__ = ("_head", "_rest", "_whole")

    def __init__(self, head: dict[str, Any], rest: bytes) -> None:
        self._head, self._rest = head, rest
        self._whole: dict[str, Any] | None = None

    def __getitem__(self, name: str) -> Any:
        if name in self._head:
            return self._head[name]
        if name in _HEAD_FIELDS:
            raise KeyError(name)  # a head field the entry has not: no need for the rest
        return self._all()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(self._all())

    def __len__(self) -> int:
        return len(self._all())

    def _all(self) -> dict[str, Any]:
        if self._whole is None:
            try:
                rest = json.loads(self._rest) if self._rest else {}
            except ValueError:  # the record's digest held: a record of another format
                rest = {}
            self._whole = {**(rest if isinstance(rest, dict) else {}), **self._head}
        return self._whole


class _Unpacked(os.PathLike):  # type: ignore[type-arg]
    """A file or folder of a packed entry, made only when used as a path."""

    __slots__ = ("_entry", "_name")

    def __init__(self, entry: PackedEntry, name: str) -> None:
        self._entry, self._name = entry, name

    def __fspath__(self) -> str:
        return f"{self._entry.path}/{self._name}"

    def __str__(self) -> str:
        return f"{self._entry._folder}/{self._name}"

    def __repr__(self) -> str:
        return f"<packed {self._name} of {self._entry.step}/{self._entry.key[:12]}>"

    def __getattr__(self, name: str) -> Any:  # exists(), read_text(), ... on the made folder
        return getattr(Path(self.__fspath__()), name)

    def __truediv__(self, other: str) -> Path:
        return Path(self.__fspath__()) / other


# ASCII out: a str may hold lone surrogates (os.fsdecode of a non-UTF-8 file name),
# which a UTF-8 encode refuses and a \u escape keeps
_COMPACT = encoder(separators=(",", ":"))
_SORTED = encoder(sort_keys=True)


# The field of an inline result whose pickle holds a set that gives the digest it counts
# by (its sets by their members' digests): a set pickles in its iteration order, which
# hash seeds change, so the digest of its bytes would change from one process to the next.
COUNTED_AS = "counted_as"


def _inline_digest(inline: Any, inline_text: str | None = None) -> str:
    """The output digest of an entry whose result is ``inline`` (None: it has none): of
    its JSON with sorted keys (``inline_text``, when the caller has it), or of the digest
    it counts by (:data:`COUNTED_AS`)."""
    if inline is None:
        return _packed_digest(None)
    counted = inline.get(COUNTED_AS) if type(inline) is dict else None
    if counted is not None:
        return _packed_digest(_SORTED({COUNTED_AS: counted}))
    return _packed_digest(_SORTED(inline) if inline_text is None else inline_text)


def _packed_digest(inline_text: str | None) -> str:
    """The output digest of a packed entry: of its inline result (it has no files), as
    JSON with sorted keys."""
    return text_digest("packed:" + ("none" if inline_text is None else inline_text))


_SCAN = json.JSONDecoder().scan_once  # the C scanner: one value from an offset


def _json(raw: bytes) -> Any:
    """``json.loads(raw)``, by its C scanner alone when ``raw`` is UTF-8 JSON with
    nothing around it (what dagnb writes): a run's hit parses one such head."""
    try:
        text = raw.decode()
        value, end = _SCAN(text, 0)
        if end == len(text):
            return value
    except (ValueError, StopIteration):
        pass
    return json.loads(raw)  # whitespace around it, another encoding, or the error


def _parse_meta(
    raw: bytes, step_name: str, key: str, required: frozenset[str] = _REQUIRED
) -> tuple[dict[str, Any], str | None]:
    """The metadata ``raw`` holds, checked; or ``{}`` and what makes the entry damaged."""
    try:
        meta = _json(raw)
    except ValueError:
        return {}, "meta.json is not valid JSON"
    if type(meta) is not dict or not required <= meta.keys():
        return {}, "meta.json lacks required fields"
    if meta["format"] != STORE_FORMAT:
        return {}, f"format {meta['format']!r} is not {STORE_FORMAT!r}"
    if meta["step"] != step_name or meta["key"] != key:
        return {}, "meta.json belongs to another entry"
    if not (is_entry_name(step_name) and is_entry_name(key)):  # (a pack record's, by hand)
        return {}, "its step or key is no name a cache folder holds"
    created, expires = meta["created"], meta["expires"]
    if type(created) not in _TIMES or not (expires is None or type(expires) in _TIMES):
        return {}, f"its times are not numbers (expires {expires!r})"
    if not isinstance(meta["output_digest"], str):
        return {}, "its output digest is not text"
    problem = _field_problem(meta)
    return ({}, problem) if problem is not None else (meta, None)


_TIMES = (int, float)  # (not bool, nor a subclass: what json.loads makes of a number)


_COUNT, _MAPPING = frozenset({int}), frozenset({dict})
# The fields a listing, eviction or a hit's replay read as dagnb wrote them, with the
# types each may have when present (an entry made before a field existed lacks it: a
# default stands in). One of another type is damage: set aside, never a crash of every
# listing that meets it, nor of a run's status.
_FIELD_TYPES: tuple[tuple[str, frozenset[type], str], ...] = (
    ("duration_s", frozenset(_TIMES), "a number"),
    ("exit_code", frozenset({int, type(None)}), "a whole number"),
    ("size_bytes", _COUNT, "a whole number >= 0"),
    ("hits", _COUNT, "a whole number >= 0"),
    ("last_used", frozenset(_TIMES), "a number"),
    ("log_lines", _COUNT, "a whole number >= 0"),
    ("displays", _COUNT, "a whole number >= 0"),
    ("has_result", frozenset({bool}), "true or false"),
    ("inline", _MAPPING, "a mapping"),
    ("provenance", _MAPPING, "a mapping"),
)


def _field_problem(meta: dict[str, Any]) -> str | None:
    """The first field of ``meta`` that is not as dagnb writes it, as a problem. (Every
    entry a cold re-run restores is parsed: the usual case is told by its fields' names
    and types, seen before, and three counts' signs.)"""
    shape = (tuple(meta), tuple(map(type, meta.values())))
    typed = _TYPED_SHAPES.get(shape)
    if typed is None:
        typed = _typed_as_written(meta)
        if len(_TYPED_SHAPES) >= _TYPED_SHAPES_LIMIT:
            _TYPED_SHAPES.clear()
        _TYPED_SHAPES[shape] = typed
    get = meta.get
    if typed and get("size_bytes", 0) >= 0 and get("hits", 0) >= 0 and get("log_lines", 0) >= 0:
        return None
    return _first_field_problem(meta)


# (field names, their values' types) -> whether each field has a type dagnb writes it
# with: the heads of a cache share a few shapes, and one look at a shape's dict
# replaced ten per head (a tenth of what a cold re-run's hit cost a step)
_TYPED_SHAPES: dict[tuple[tuple[str, ...], tuple[type, ...]], bool] = {}
_TYPED_SHAPES_LIMIT = 256


def _typed_as_written(meta: dict[str, Any]) -> bool:
    """Whether each field ``_first_field_problem`` checks has a type dagnb writes it with."""
    get = meta.get
    code = get("exit_code")
    return (type(get("size_bytes", 0)) is int and type(get("hits", 0)) is int
            and type(get("duration_s", 0.0)) in _TIMES and type(get("last_used", 0.0)) in _TIMES
            and (code is None or type(code) is int) and "displays" not in meta
            and type(get("log_lines", 0)) is int
            and type(get("has_result", False)) is bool
            and type(get("inline", _NO_MAPPING)) is dict
            and type(get("provenance", _NO_MAPPING)) is dict)


_NO_MAPPING: dict[str, Any] = {}  # (what an absent inline or provenance is taken for)


def _first_field_problem(meta: dict[str, Any]) -> str | None:
    for name, types, expected in _FIELD_TYPES:
        if name in meta:
            value = meta[name]
            if type(value) not in types or (types is _COUNT and value < 0):
                return f"its {name} {value!r} is not {expected}"
    return None


def _log_record(line: str) -> dict[str, Any] | None:
    """One captured line, or None for a blank or torn one (a damaged log is not an error)."""
    try:
        record = json.loads(line) if line.strip() else None
    except ValueError:
        return None
    return record if isinstance(record, dict) else None
