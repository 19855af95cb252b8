"""Content digests of values, code, files and directories.

Every digest is a hex string from one hasher family, xxh3_128 by default (fast,
non-cryptographic, 128 bits) or blake3 when a cryptographic hash is wanted
(:func:`set_hash_algorithm`). Digests are stable across processes and
``PYTHONHASHSEED`` values: dicts and sets are fed in the order of their members'
digests, never in hash order.

- :func:`value_digest` hashes a value by content: scalars and containers directly (with
  a type tag, so ``1``, ``1.0``, ``"1"`` and ``True`` differ), numpy and pandas objects
  through their buffers, anything else through a pickle stream written into the hasher
  (:mod:`.values`).
- :func:`code_digest` hashes what a function does: its normalized AST, plus the code of
  the module-level helpers and the values of the constants it reads, transitively.
  ``code_digest(func, values=False)`` leaves the data out (names only) and
  :func:`global_values` hands over the data itself, read afresh at each call: a step's
  key hashes those values each time, so a notebook variable mutated in place counts
  (:mod:`.code`, walking with :mod:`.walker` the sources of :mod:`.sources` and the
  classes' members of :mod:`.members`).
- :func:`path_digest` hashes a file or a directory tree; a stat cache keyed on
  (path, size, mtime_ns, inode) makes an unchanged tree cost one ``stat`` per file
  (:mod:`.paths`).
"""

from __future__ import annotations

from dagnb.fingerprint import first_imports, hashers
from dagnb.fingerprint.code import (
    _CODE_CACHE,
    changed_in_place,
    code_digest,
    code_names,
    code_source_parts,
    code_with_values,
    environ_read,
    environ_unkeyed,
    global_values,
    globals_read,
    keyed_before_imports,
    missing_globals,
    object_digest,
    ran_here,
    signature_of,
    source_table,
    user_class_digest,
)
from dagnb.fingerprint.hashers import get_hash_algorithm, new_hasher, text_digest
from dagnb.fingerprint.names import main_spelled
from dagnb.fingerprint.paths import (
    CHUNK_SIZE,
    MAX_DEPTH,
    _stat_cache,
    check_tree,
    configure_stat_cache,
    directory_digest,
    flush_stat_cache,
    path_digest,
)
from dagnb.fingerprint.sources import _of_user as of_user_code
from dagnb.fingerprint.sources import adopt_sources, script_sources
from dagnb.fingerprint.values import _function_of_code as _function_of_code  # (see there)
from dagnb.fingerprint.values import value_digest
from dagnb.fingerprint.walker import WRAPPER_MARK, changed_inputs, loaded_globals

__all__ = [
    "CHUNK_SIZE",
    "MAX_DEPTH",
    "WRAPPER_MARK",
    "adopt_sources",
    "changed_in_place",
    "changed_inputs",
    "check_tree",
    "code_digest",
    "code_names",
    "code_source_parts",
    "code_with_values",
    "configure_stat_cache",
    "directory_digest",
    "environ_read",
    "environ_unkeyed",
    "flush_stat_cache",
    "get_hash_algorithm",
    "global_values",
    "globals_read",
    "keyed_before_imports",
    "loaded_globals",
    "main_spelled",
    "missing_globals",
    "new_hasher",
    "object_digest",
    "of_user_code",
    "path_digest",
    "ran_here",
    "script_sources",
    "set_hash_algorithm",
    "signature_of",
    "source_table",
    "text_digest",
    "user_class_digest",
    "value_digest",
]


def set_hash_algorithm(name: str) -> None:
    """Use ``"xxh3_128"`` (default) or ``"blake3"`` (cryptographic) for every digest."""
    hashers.select(name)
    _CODE_CACHE.clear()
    first_imports.KEYED_BEFORE.clear()
    _stat_cache().clear_memory()
