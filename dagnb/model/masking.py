"""Masking of secret values in captured text."""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = ["MASK", "Masker"]

MASK = "***"


class Masker:
    """Replaces every occurrence of the given secret values with ``***``."""

    __slots__ = ("_pattern",)

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        values = sorted({s for s in secrets if s}, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, values))) if values else None

    def __call__(self, text: str) -> str:
        if self._pattern is None:
            return text
        return self._pattern.sub(MASK, text)

    def __bool__(self) -> bool:
        return self._pattern is not None
