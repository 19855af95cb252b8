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

__all__ = ["SYNTAX_FIXES", "DuplicateKeyError", "UniqueKeyLoader", "yaml_message"]

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
