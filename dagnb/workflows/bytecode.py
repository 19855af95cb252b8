"""Steps modules run from their text: a bytecode cache serves only while it hashes the same.

Python matches a ``.pyc`` to its source by the source's mtime, in whole seconds, and its
size. A steps file written twice within a second at one size (a template saved again, a
``%%writefile`` cell run twice, a script) would run the first text's code while dagnb
keys its steps on the second text. So a steps module's loader trusts, and writes, only a
checked hash-based ``.pyc`` (PEP 552, as ``py_compile --invalidation-mode checked-hash``
writes): valid while the text hashes the same, whatever the clock. Python's own import
checks such a file the same way, so a plain ``import steps`` of the file agrees.
"""

from __future__ import annotations

import contextlib
import importlib.machinery
import importlib.util
import marshal
import sys
from types import CodeType

__all__ = ["TextCheckedLoader"]

_CHECKED_HASH = (0b11).to_bytes(4, "little")  # PEP 552 flags: hash-based, checked


class TextCheckedLoader(importlib.machinery.SourceFileLoader):
    """A source file's loader whose bytecode cache is checked against the text's hash."""

    def get_code(self, fullname: str) -> CodeType:
        path = self.get_filename(fullname)
        source = self.get_data(path)
        header = (importlib.util.MAGIC_NUMBER + _CHECKED_HASH
                  + importlib.util.source_hash(source))
        cached = _cache_path(path)
        if cached is not None:
            with contextlib.suppress(OSError, ValueError, EOFError, TypeError):
                data = self.get_data(cached)
                if data[:16] == header:
                    code = marshal.loads(memoryview(data)[16:])
                    if code.co_filename == path:  # (else a moved folder's: its
                        return code              # tracebacks would name the old path)
        code = self.source_to_code(source, path)
        if cached is not None and not sys.dont_write_bytecode:
            self.set_data(cached, header + marshal.dumps(code))  # (atomic; errors ignored)
        return code


def _cache_path(path: str) -> str | None:
    try:
        return importlib.util.cache_from_source(path)
    except NotImplementedError:  # (an implementation with no bytecode cache)
        return None
