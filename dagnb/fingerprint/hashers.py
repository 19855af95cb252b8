"""The hasher family every digest comes from: xxh3_128 by default (fast,
non-cryptographic, 128 bits), blake3 when a cryptographic hash is wanted."""

from __future__ import annotations

from typing import Any

import xxhash

from dagnb.errors import FingerprintError

_ALGORITHM = "xxh3_128"  # (read through this module: set_hash_algorithm changes it)


def select(name: str) -> None:
    """Use ``name`` for every digest from now on (the caches that hold digests of the
    other one are cleared by :func:`dagnb.fingerprint.set_hash_algorithm`)."""
    global _ALGORITHM
    if name not in ("xxh3_128", "blake3"):
        raise FingerprintError(f"hash algorithm {name!r} is unknown; use 'xxh3_128' or 'blake3'")
    if name == "blake3":
        import blake3  # noqa: F401  (fail now, not at the first digest)
    _ALGORITHM = name


def get_hash_algorithm() -> str:
    """The name of the algorithm in use."""
    return _ALGORITHM


def new_hasher() -> Any:
    """A fresh hasher object (``update``, ``digest``, ``hexdigest``) of the current algorithm."""
    if _ALGORITHM == "xxh3_128":
        return xxhash.xxh3_128()
    import blake3

    return blake3.blake3()


def text_digest(text: str) -> str:
    """Hex digest of a string's UTF-8 bytes (one call, no type tag): for key components."""
    data = text.encode("utf-8", "surrogatepass")
    if _ALGORITHM == "xxh3_128":
        return xxhash.xxh3_128_hexdigest(data)
    h = new_hasher()
    h.update(data)
    return h.hexdigest()
