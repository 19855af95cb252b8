"""A YAML loader that refuses a key written twice in one mapping, and the line that
says why a YAML file does not parse (:func:`yaml_message`).

PyYAML keeps the last of two equal keys without a word: two steps of one name in a
workflow, or ``max_retries`` given twice in ``dagnb.yaml``, would silently become the
last one. Both files are read with :class:`UniqueKeyLoader`. Imported only by a reader
of such a file (``import dagnb`` does not load YAML).
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["SYNTAX_FIXES", "DuplicateKeyError", "UniqueKeyLoader", "WrittenKeyLoader",
           "base_60_misread", "yaml_message"]

# PyYAML's words for the syntax mistakes a file's author makes most, and the fix of each
# (its words alone name none)
SYNTAX_FIXES = {
    "found character '\\t' that cannot start any token":
        "indent with spaces, not tabs",
    "but found another document":
        "the file is one YAML document: remove this '---'",
    "mapping values are not allowed here":
        "a ': ' in a plain value starts a mapping; quote the whole value",
}


def yaml_message(exc: yaml.YAMLError, source: str,
                 fixes: dict[str, str] = SYNTAX_FIXES) -> str:
    """``source, line N: YAML does not parse (PyYAML's problem); the fix`` (the fix
    named in ``fixes`` by the problem's first words, else "fix the syntax there")."""
    mark = getattr(exc, "problem_mark", None)
    where = f"{source}, line {mark.line + 1}" if mark is not None else source
    problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
    fix = next((fix for words, fix in fixes.items() if problem.startswith(words)),
               "fix the syntax there")
    return f"{where}: YAML does not parse ({problem}); {fix}"

_MERGE_TAG = "tag:yaml.org,2002:merge"


class DuplicateKeyError(yaml.constructor.ConstructorError):
    """A key given twice in one mapping; ``key`` is it, ``line`` where (1-based)."""

    def __init__(self, key: Any, mark: yaml.Mark) -> None:
        super().__init__(None, None, f"{key!r} is given twice in one mapping; rename one",
                         mark)
        self.key, self.line = key, mark.line + 1


class UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader (no arbitrary objects) that raises :class:`DuplicateKeyError` for a
    key given twice in one mapping. Merge keys (``<<: *defaults``) work: a key written
    beside a merge overrides the merged one, as in any YAML loader."""

    def flatten_mapping(self, node: yaml.MappingNode) -> None:
        # Every mapping passes here once before its merges are folded into its pairs
        # (after which a merged key and its override look like a duplicate).
        if not getattr(node, "_dagnb_checked", False):
            self._refuse_duplicates(node)
            node._dagnb_checked = True  # type: ignore[attr-defined]
        super().flatten_mapping(node)

    def _refuse_duplicates(self, node: yaml.MappingNode) -> None:
        """The keys written in ``node`` itself are all different (``<<`` merges aside)."""
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if key_node.tag == _MERGE_TAG:
                continue
            key = self.construct_object(key_node, deep=True)
            try:
                hash(key)
            except TypeError:  # (a list as a key: SafeLoader refuses it in its words)
                continue
            if key in seen:
                raise DuplicateKeyError(key, key_node.start_mark)
            seen.add(key)


class WrittenKeyLoader(UniqueKeyLoader):
    """:class:`UniqueKeyLoader` reading numbers, booleans and nulls as the text written
    (``1:30``, not 90), for :func:`base_60_misread`."""


for _tag in ("int", "float", "bool", "null"):
    WrittenKeyLoader.add_constructor(f"tag:yaml.org,2002:{_tag}",
                                     yaml.constructor.SafeConstructor.construct_scalar)


def base_60_misread(key: str, value: Any, text: Any, *, units: bool = True) -> str:
    """The message refusing a duration that YAML 1.1 read as a base-60 number (``timeout:
    1:30`` is 90, ``ttl: 12:00`` 720: silently 90 s and 12 minutes where 1 h 30 and 12 h
    may have been meant); "" for any other ``value``. ``text``: ``value`` as written;
    ``units``: the field takes ``90s``-style text (else only a number of seconds)."""
    if (not isinstance(text, str) or ":" not in text or isinstance(value, bool)
            or not isinstance(value, (int, float))):
        return ""
    seconds = f"{value:g}"
    digits = text.strip().replace("_", "")
    sign = "-" if digits.startswith("-") else ""
    parts = [float(part) for part in digits.lstrip("+-").split(":")]
    readings = []  # (as a duration such as 1h30m, its seconds): H:MM, M:SS or H:MM:SS
    for units_of in {2: ("hm", "ms"), 3: ("hms",)}.get(len(parts), ()):
        kept = [(part, unit) for part, unit in zip(parts, units_of, strict=True) if part]
        if kept:
            total = sum(part * _UNIT_SECONDS[unit] for part, unit in kept)
            readings.append((sign + "".join(f"{part:g}{unit}" for part, unit in kept),
                             float(f"{sign}{total}")))
    if units:
        fix = "write " + _either(list(dict.fromkeys(
            [f"{seconds}s", *(written for written, _ in readings)])))
    else:
        fix = "write the seconds: " + (_either(
            [f"{total:g} ({written})" for written, total in readings]) or seconds)
    return f"{key} {text} reads as {seconds} s in YAML; {fix}"


_UNIT_SECONDS = {"h": 3600, "m": 60, "s": 1}


def _either(choices: list[str]) -> str:
    return " or ".join(choices) if len(choices) < 3 else (
        f"{', '.join(choices[:-1])} or {choices[-1]}")
