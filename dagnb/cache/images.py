"""Image pins: with the ``pin_images`` setting, a step's image tag counts by its digest.

A tag such as ``python:3.12-slim`` is moved by every push, so a key made from the tag
alone keeps a cached result after the image under it changed. With ``pin_images`` on,
each tag is resolved to a digest once, by the engine, and kept in ``<cache>/images.json``;
from then on a step with that image runs ``python:3.12-slim@sha256:…`` and its key holds
that reference, so the run, the key and ``explain`` agree on what ran. The file works as
a lock file: a tag stays pinned until ``dagnb images refresh`` resolves it again (in a
fresh engine session, since the engine caches a tag's resolution per session), and a
step whose tag moved then misses with "image python:3.12-slim moved: sha256:ab… →
sha256:cd…". Resolving only on request keeps runs reproducible and free of a registry
round trip per run; the refresh says what moved.

This module keeps the table (the cache layer never talks to an engine); the Dagger
executor resolves tags (:meth:`DaggerExecutor.image_ref`).
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from pathlib import Path
from typing import Any

from dagnb.model.step import Step

__all__ = ["PINS_FILE", "ImagePins", "digest_of", "image_label", "moved", "no_pins"]

PINS_FILE = "images.json"
_SHORT = 12  # hex digits of a digest shown in tables and sentences
_DEFAULT_REGISTRY = ("docker.io/library/", "docker.io/")


def digest_of(reference: str) -> str:
    """``"python:3.12-slim@sha256:ab…"`` -> ``"sha256:ab…"`` ("" for a plain tag)."""
    return reference.rpartition("@")[2] if "@" in reference else ""


def _short(digest: str) -> str:
    algorithm, _, hexdigits = digest.partition(":")
    return f"{algorithm}:{hexdigits[:_SHORT]}…" if hexdigits else digest


def image_label(image: str | None, reference: str | None = None) -> str | None:
    """How status tables show an image: as written, with the digest that ran shortened
    (``python:3.12-slim@sha256:ab12cd34ef56…``). ``reference`` is the engine's
    (``docker.io/library/python:3.12-slim@sha256:…``), used for the digest, and for the
    name when the step named no image (the executor's default ran)."""
    if reference is None and (image is None or "@" not in image):
        return image  # a host step, or a tag whose digest is not known
    digest = digest_of(reference or "") or digest_of(image or "")
    name = (image or reference or "").partition("@")[0]
    if image is None and name:
        name = next((name[len(p):] for p in _DEFAULT_REGISTRY if name.startswith(p)), name)
    if not name:
        return image
    return f"{name}@{_short(digest)}" if digest else name


def moved(before: str, after: str) -> str | None:
    """``image python:3.12-slim moved: sha256:ab… → sha256:cd…`` when two references
    are one tag at two digests; None otherwise."""
    name, new = after.partition("@")[0], digest_of(after)
    if not new or before.partition("@")[0] != name or not digest_of(before):
        return None
    return f"image {name} moved: {_short(digest_of(before))} → {_short(new)}"


def no_pins(path: str | os.PathLike[str]) -> str:
    """What listing or refreshing the pins of ``path`` (an ``images.json``) says when
    there are none: how runs pin them."""
    return (f"no pinned images in {str(path)!r}; with pin_images: true (dagnb.yaml's "
            "workflow_defaults, or DAGNB_PIN_IMAGES=true) a run pins each image's tag to its "
            "digest")


class ImagePins:
    """The tag -> digest table of one cache folder (``images.json``), read once."""

    __slots__ = ("_table", "path", "writes")

    def __init__(self, folder: str | os.PathLike[str], *, writes: bool = True) -> None:
        self.path = Path(folder) / PINS_FILE
        self.writes = writes  # False (a read-only cache): new pins stay in memory
        self._table: dict[str, dict[str, Any]] | None = None

    @staticmethod
    def label(image: str, platform: str | None = None) -> str:
        """The table's key: the tag as written, and the platform when one is asked."""
        return f"{image} [{platform}]" if platform else image

    def table(self) -> dict[str, dict[str, Any]]:
        """``{label: {"ref": engine reference, "digest": …, "resolved": time}}``."""
        if self._table is None:
            self._table = _read(self.path)
        return self._table

    def listing(self) -> str:
        """A line a pin (its tag, digest and when it was resolved), or :func:`no_pins`."""
        return "\n".join(f"{label}  {pin['digest']}  ({pin['resolved']})"
                         for label, pin in self.table().items()) or no_pins(self.path)

    def wants(self, step: Step) -> bool:
        """Whether ``step`` names an image by tag (a digest is pinned already)."""
        return bool(step.image) and "@" not in step.image  # type: ignore[operator]

    def digest(self, step: Step) -> str | None:
        """The digest ``step``'s tag is pinned to, or None."""
        if not self.wants(step):
            return None
        found = self.table().get(self.label(step.image, step.platform))  # type: ignore[arg-type]
        return found["digest"] if found else None

    def pinned(self, step: Step) -> Step:
        """``step`` with its tag pinned (``image="python:3.12-slim@sha256:…"``), or as
        it is when its tag has no pin."""
        digest = self.digest(step)
        return step.replace(image=f"{step.image}@{digest}") if digest else step

    def add(self, image: str, platform: str | None, reference: str) -> str | None:
        """Pin ``image`` to the digest of ``reference``; returns the digest it had."""
        label = self.label(image, platform)
        # another process may have pinned other tags meanwhile
        fresh = _read(self.path) if self.writes else dict(self.table())
        old = fresh.get(label, {}).get("digest")
        fresh[label] = {"ref": reference, "digest": digest_of(reference),
                        "resolved": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        if self.writes:
            _write(self.path, fresh)
        self._table = fresh
        return old


def _read(path: Path) -> dict[str, dict[str, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError):  # a damaged file: the tags resolve again
        return {}
    images = data.get("images") if isinstance(data, dict) else None
    return {k: v for k, v in (images or {}).items()
            if isinstance(v, dict) and isinstance(v.get("digest"), str)}


def _write(path: Path, table: dict[str, dict[str, Any]]) -> None:
    """Replace the file whole (a reader sees the old table or the new one)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": 1, "images": dict(sorted(table.items()))}, indent=1)
    handle, temporary = tempfile.mkstemp(prefix=".images-", dir=path.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as file:
            file.write(text + "\n")
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
