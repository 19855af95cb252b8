"""A step's cache key: one digest over named component digests.

Each component (the image, the env, one per mounted path, one per upstream output...)
is digested on its own and stored in the entry, so a later miss can say which one
changed (:mod:`dagnb.cache.explain`). ``describe`` holds the human-readable value of
each component for those sentences; it never holds a secret value (only names).
"""

from __future__ import annotations

import dataclasses
import json
import re
import reprlib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from dagnb.errors import CacheError, FingerprintError, UnfingerprintableVariable
from dagnb.fingerprint import (
    code_digest,
    code_source_parts,
    global_values,
    path_digest,
    text_digest,
    value_digest,
)
from dagnb.model.step import Step

__all__ = ["CACHE_FORMAT", "StepKey", "key_digest", "step_key"]

# Bump when what goes into a key changes meaning: every old entry then misses.
# 2: a Python step's globals count as ``var:<name>`` components, hashed at each run.
CACHE_FORMAT = "dagnb-key-2"


@dataclasses.dataclass(frozen=True)
class StepKey:
    """The cache key of one step (or one Memory call).

    Attributes
    ----------
    digest
        Hex digest over all components; names the entry directory.
    components
        Component name -> digest, e.g. ``"image"``, ``"mount:data/raw.csv"``,
        ``"upstream:prep"``, ``"var:params"`` (a global a Python step reads).
    describe
        Component name -> human-readable value (image string, env JSON, params JSON,
        the normalized code), used only to explain a miss.
    """

    digest: str
    components: Mapping[str, str]
    describe: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def short(self) -> str:
        """The first 12 hex digits, for display."""
        return self.digest[:12]

    def __str__(self) -> str:
        return self.digest


def key_digest(components: Mapping[str, str]) -> str:
    """The key digest over sorted ``name=digest`` components."""
    return text_digest("".join(f"{name}={components[name]}\n" for name in sorted(components)))


# Params, env and names are JSON already (Step checks): canonical JSON is their
# fingerprint, and cheaper than value_digest. 1, 1.0 and true stay distinct.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(value: Any) -> str:
    if value == {} or value == []:  # most steps: no env, no params, no services
        return "{}" if type(value) is dict else "[]"
    return _ENCODER.encode(value)


class _Builder:
    """Collects components and their descriptions."""

    __slots__ = ("components", "describe")

    def __init__(self) -> None:
        self.components: dict[str, str] = {}
        self.describe: dict[str, str] = {}

    def text(self, name: str, text: str, shown: str | None = None) -> None:
        self.components[name] = _text_digest(text)
        self.describe[name] = text if shown is None else shown

    def digest(self, name: str, digest: str, shown: str) -> None:
        self.components[name] = digest
        self.describe[name] = shown

    def build(self) -> StepKey:
        return StepKey(key_digest(self.components), self.components, self.describe)


def step_key(
    step: Step,
    *,
    upstream_digests: Mapping[str, str],
    base_dir: Path,
    cache_version: str = "",
) -> StepKey:
    """The cache key of ``step``.

    Parameters
    ----------
    step
        The step. When ``step.key_fn`` is set, ``key_fn(step)`` is called and the digest
        of its return value becomes the ``key_fn`` component *instead of* ``command`` or
        ``code``: the step is then cached on what the function returns (a version
        string, a file's checksum...), not on its command or code. Everything else
        (image, env, params, mounts, upstreams) still counts.
    upstream_digests
        Upstream step name -> that step's *output* digest (not its key), one
        ``upstream:<name>`` component each: an upstream that re-runs and produces the
        same output leaves this key unchanged.
    base_dir
        Relative mount paths resolve here.
    cache_version
        The run-level salt, combined with ``step.cache_version``.

    Raises
    ------
    UnfingerprintableVariable
        A global the step's code reads cannot be hashed (the step runs uncached).
    FingerprintError
        A mounted path does not exist, or ``key_fn`` returned an unhashable value.
    """
    key = _Builder()
    key.components, key.describe = _spec_components(step, cache_version)
    if step.key_fn is not None or step.func is not None:
        _add_work(key, step)
    for host, target in step.mounts.items():
        key.digest(f"mount:{host}", _mount_digest(step, Path(base_dir), host, target), target)
    for name, digest in upstream_digests.items():
        key.digest(f"upstream:{name}", digest, digest)
    return key.build()


_SPEC_MEMO: dict[tuple[Step, str, bool], tuple[dict[str, str], dict[str, str]]] = {}
_SPEC_MEMO_LIMIT = 100_000


def _spec_components(step: Step, cache_version: str) -> tuple[dict[str, str], dict[str, str]]:
    """The components that depend on the step's fields alone, memoized per (equal) step:
    a fully cached re-run then hashes only what can change (upstreams, mounts, code)."""
    plain = step.key_fn is None and step.func is None  # functions vary beyond equality
    memo_key = (step, cache_version, plain)
    found = _SPEC_MEMO.get(memo_key)
    if found is None:
        key = _Builder()
        key.text("format", CACHE_FORMAT)
        key.text("cache_version", _canonical([step.cache_version, cache_version]))
        key.text("kind", step.kind)
        if plain:
            _add_work(key, step)
        key.text("image", step.image or "", step.image or "(none)")
        key.text("env", _canonical(dict(step.env)))
        key.text("secrets", _canonical(sorted(step.secrets)))  # names only, never values
        key.text("workdir", step.workdir or "", step.workdir or "(default)")
        key.text("params", _canonical(dict(step.params)))
        key.text("services", _canonical(list(step.services)))
        key.text("cache_volumes", _canonical(dict(step.cache_volumes)))
        if step.exclude:  # what a container step sees of its mounts (absent: keys unchanged)
            key.text("exclude", _canonical(list(step.exclude)))
        if step.user:  # who runs a container step
            key.text("user", step.user)
        if step.platform:  # the architecture a container step's image runs as
            key.text("platform", step.platform)
        if not step.errexit:  # shell text that carries on after a failing command
            key.text("errexit", "false")
        if len(_SPEC_MEMO) >= _SPEC_MEMO_LIMIT:
            _SPEC_MEMO.clear()
        found = _SPEC_MEMO[memo_key] = (key.components, key.describe)
    return dict(found[0]), dict(found[1])


def _add_work(key: _Builder, step: Step) -> None:
    """The ``key_fn``, ``command`` or ``code`` component."""
    if step.key_fn is not None:
        value = step.key_fn(step)
        key.digest("key_fn", value_digest(value), repr(value))
    elif step.func is not None:
        digest = code_digest(step.func, values=False)
        key.digest("code", digest, _code_text(digest, step.func))
        _add_variables(key, step)
    elif isinstance(step.run, str):
        key.text("command", step.run)
    else:
        key.text("command", _canonical(list(step.run or ())))


# Digests of the short texts most steps share (an empty env, no image, the format...):
# a cold re-run of many steps would otherwise hash the same ten texts for each.
_TEXT_MEMO: dict[str, str] = {}
_TEXT_MEMO_LIMIT, _TEXT_MEMO_LONGEST = 4096, 1024


def _text_digest(text: str) -> str:
    found = _TEXT_MEMO.get(text)
    if found is None:
        found = text_digest(text)
        if len(text) <= _TEXT_MEMO_LONGEST:
            if len(_TEXT_MEMO) >= _TEXT_MEMO_LIMIT:
                _TEXT_MEMO.clear()
            _TEXT_MEMO[text] = found
    return found


# The normalized code shown for a ``code`` digest (the digest names that text exactly).
_CODE_TEXTS: dict[str, str] = {}


def _code_text(digest: str, func: Any) -> str:
    found = _CODE_TEXTS.get(digest)
    if found is None:
        parts = code_source_parts(func)
        found = "\n\n".join(text for label, text in parts.items()
                             if not label.startswith("const "))
        if len(_CODE_TEXTS) >= _TEXT_MEMO_LIMIT:
            _CODE_TEXTS.clear()
        _CODE_TEXTS[digest] = found
    return found


def _add_variables(key: _Builder, step: Step) -> None:
    """One ``var:<name>`` component per global the code reads, hashed now (mutations count)."""
    for name, value in global_values(step.func).items():  # type: ignore[arg-type]
        try:
            digest = value_digest(value)
        except FingerprintError as exc:
            why = exc.__cause__ or exc
            raise UnfingerprintableVariable(
                f"step {step.name!r} is not cached this run: notebook variable {name!r} "
                f"({_type_name(value)}) cannot be fingerprinted ({why})",
                step=step.name, variable=name,
            ) from None
        key.digest(f"var:{name}", digest, _shown(name, value))


def _type_name(value: Any) -> str:
    kind = type(value)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


# A variable named like a credential keeps its value out of the entry's metadata.
_SECRET_NAME = re.compile(r"token|secret|passw|credential|api_?key|private", re.IGNORECASE)


def _shown(name: str, value: Any) -> str:
    """A short description for explain: the repr of plain data, else type and shape."""
    plain = (str, bytes, int, float, bool, type(None), list, tuple, dict, set)
    if isinstance(value, plain) and not _SECRET_NAME.search(name):
        return reprlib.repr(value)
    shape = getattr(value, "shape", None)
    return f"<{_type_name(value)}" + (f" shape {tuple(shape)!r}>" if shape is not None else ">")


def _mount_digest(step: Step, base_dir: Path, host: str, target: str) -> str:
    path = Path(host).expanduser()
    path = path if path.is_absolute() else base_dir / path
    try:
        content = path_digest(path)
    except FileNotFoundError:
        raise FingerprintError(
            f"step {step.name!r}: mount {host!r} does not exist (looked for {str(path)!r})"
        ) from None
    except OSError as exc:
        raise CacheError(f"step {step.name!r}: mount {host!r} cannot be read: {exc}") from exc
    return text_digest(f"{target}\n{content}")
