"""A YAML loader that refuses a key written twice in one mapping.

PyYAML keeps the last of two equal keys without a word: two steps of one name in a
workflow, or ``max_retries`` given twice in ``dagnb.yaml``, would silently become the
last one. Both files are read with :class:`UniqueKeyLoader`. Imported only by a reader
of such a file (``import dagnb`` does not load YAML).
"""

from __future__ import annotations

from typing import Any

import yaml

__all__ = ["DuplicateKeyError", "UniqueKeyLoader"]

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
