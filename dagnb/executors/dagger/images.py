"""``dagnb images refresh``: resolve the pinned tags again, in a fresh engine session.

With the ``pin_images`` setting a tag is resolved once, the first time a step uses it,
and stays pinned in ``<cache>/images.json`` (:mod:`dagnb.cache.images`). A refresh asks
the engine again for every pinned tag (or the ones named) and says which moved; the
steps using a moved tag then miss the cache, and ``explain`` says why. The resolution
runs in a session of its own: the engine caches a tag's digest per session, so the
kernel's long-lived session would answer with the digest it saw first.
"""

from __future__ import annotations

import os
from collections.abc import Iterable

from dagnb.cache.images import ImagePins, digest_of, moved, no_pins
from dagnb.errors import ConfigError
from dagnb.executors.dagger import connection
from dagnb.executors.dagger.translate import image_from, parse_registry_auth

__all__ = ["refresh"]


async def refresh(cache_directory: str | os.PathLike[str] | None = None,
                  images: Iterable[str] = ()) -> list[str]:
    """Resolve the pinned tags (all, or ``images``) again; one sentence per tag.

    Returns
    -------
    list of str
        ``"image python:3.12-slim moved: sha256:ab… → sha256:cd…"``, ``"image x
        unchanged: sha256:…"`` or ``"image x pinned: sha256:…"`` (named, not pinned yet).
    """
    from dagnb.cache import store_for
    from dagnb.config import settings

    pins = ImagePins(store_for(cache_directory).location)
    labels = list(images) or list(pins.table())
    if not labels:
        return [no_pins(pins.path)]
    auth = parse_registry_auth(settings().registry_auth())
    sentences = []
    async with connection.fresh_session() as dag:
        for label in labels:
            image, platform = _parse(label)
            reference = await image_from(dag, image, platform, auth).image_ref()
            old = pins.add(image, platform, reference)
            sentences.append(_sentence(label, old, digest_of(reference), reference))
    return sentences


def _parse(label: str) -> tuple[str, str | None]:
    """``"alpine:3.20 [linux/arm64]"`` -> ("alpine:3.20", "linux/arm64")."""
    image, _, platform = label.partition(" [")
    if "@" in image or not image.strip():
        raise ConfigError(f"image {label!r} is not a tag to pin; give one like "
                          "'python:3.12-slim' (a digest is pinned already)")
    return image.strip(), platform.rstrip("]") or None


def _sentence(label: str, old: str | None, new: str, reference: str) -> str:
    if old is None:
        return f"image {label} pinned: {new}"
    if old == new:
        return f"image {label} unchanged: {new}"
    image = label.partition(" [")[0]
    said = moved(f"{image}@{old}", f"{image}@{new}")
    if said is None:
        return f"image {label} moved: {reference}"
    # (with its platform: one tag pinned for two platforms says which of them moved)
    return said.replace(f"image {image} ", f"image {label} ", 1)
