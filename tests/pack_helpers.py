"""What the pack tests share: saving a small entry, the packs of a folder, and another
process writing while a third holds the pack it would otherwise adopt."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from dagnb.cache import Store
from dagnb.testing import isolated


def save(store: Store, step: str, key: str, value: object, **kwargs: object):
    """A packed entry: no files, ``value`` as its inline result."""
    return store.save(step, key, out_dir=None, inline={"json": value}, **kwargs)


def packs(location: Path) -> list[Path]:
    """The packs of cache folder ``location``, by name."""
    return sorted((location / ".packs").glob("*.pack"))


def saved_elsewhere(location: Path, key: str = "k1", value: object = 1) -> None:
    """Another process saves ``s/key`` in ``location`` and lets go of its pack."""
    with isolated():
        writer = Store(location)
        save(writer, "s", key, value)
        writer.close()


def count_listings(monkeypatch) -> list[str]:
    """The folders ``dagnb.cache.pack`` lists from now on, as they are listed."""
    import dagnb.cache.pack as pack

    calls: list[str] = []
    real_listdir = pack.os.listdir
    monkeypatch.setattr(pack.os, "listdir", lambda p: (calls.append(p), real_listdir(p))[1])
    return calls


def save_in_a_new_pack(
    location: Path, key: str, value: object, remove: Iterable[str] = ()
) -> None:
    """Another process saves ``s/key`` (and removes ``s/<removed>``) in a pack of its
    own: a third holds the pack there is, so the writer cannot adopt it."""
    with isolated():
        holder = Store(location)
        save(holder, "s", "held", 1)
        with isolated():
            writer = Store(location)
            save(writer, "s", key, value)
            for removed in remove:
                writer.remove("s", removed)
            writer.close()
        holder.close()
