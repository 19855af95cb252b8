"""The store backend interface is enough: a backend of the six methods, keeping folders
in memory as an object store keeps blobs, runs a graph (store, then hit)."""

from __future__ import annotations

import itertools
import os
import shutil
import threading
from pathlib import Path

import pytest

import dagnb.cache as cache_module
from dagnb import Graph, Step
from dagnb.cache import DamagedEntryWarning, Item, StepKey, Store, StoreBackend
from dagnb.config import use_context

Files = dict[str, "bytes | None"]  # relative path -> content, None for a directory


class MemoryBackend(StoreBackend):
    """Folders as {relative path: bytes} in a dict; a read hands out a local copy (the
    read-through tier a remote backend keeps), made again only when the folder changed."""

    name = "memory"

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root).absolute()
        self.root.mkdir(parents=True, exist_ok=True)
        self.objects: dict[tuple[str, str], tuple[int, Files]] = {}
        self._versions = itertools.count(1)
        self._copies: dict[tuple[str, str], Item] = {}
        self._locks: dict[tuple[str, str], threading.Lock] = {}

    def read(self, step: str, key: str) -> Item | None:
        stored = self.objects.get((step, key))
        if stored is None:
            return None
        copy = self._copies.get((step, key))
        if copy is None or copy.version != stored[0]:
            copy = self._copy(step, key, *stored)
            self._copies[(step, key)] = copy
        return copy

    def _copy(self, step: str, key: str, version: int, files: Files) -> Item:
        path = self.root / ".copies" / step / key / str(version)
        path.mkdir(parents=True, exist_ok=True)
        for name, data in files.items():
            target = path / name
            if data is None:
                target.mkdir(parents=True, exist_ok=True)
            else:
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)
        return Item(path, files.get("meta.json"), version)

    def write(self, step: str, key: str, folder: Path, *, refresh: bool = False) -> None:
        files: Files = {}
        for where, dirs, names in os.walk(folder):
            base = Path(where).relative_to(folder)
            files.update({(base / d).as_posix(): None for d in dirs})
            files.update({(base / n).as_posix(): (Path(where) / n).read_bytes() for n in names})
        shutil.rmtree(folder)
        self.objects[(step, key)] = (next(self._versions), files)  # one assignment: atomic

    def exists(self, step: str, key: str) -> bool:
        return (step, key) in self.objects

    def names(self, step: str | None = None) -> list[str]:
        found = {s if step is None else k for s, k in list(self.objects) if step in (None, s)}
        return sorted(name for name in found if not name.startswith("."))

    def remove(self, step: str, key: str) -> bool:
        return self.objects.pop((step, key), None) is not None

    def lock(self, step: str, key: str, timeout: float = -1) -> _ThreadLock:
        return _ThreadLock(self._locks.setdefault((step, key), threading.Lock()), timeout)


class _ThreadLock:
    """A lock of this process only: enough for a test, and not a file lock."""

    def __init__(self, lock: threading.Lock, timeout: float) -> None:
        self._lock, self._timeout = lock, timeout

    @property
    def is_locked(self) -> bool:
        return self._lock.locked()

    def acquire(self) -> _ThreadLock:
        if not self._lock.acquire(timeout=self._timeout):
            raise TimeoutError(f"lock not acquired within {self._timeout} s")
        return self

    def release(self) -> None:
        self._lock.release()

    def __enter__(self) -> _ThreadLock:
        return self.acquire()

    def __exit__(self, *exc_info: object) -> None:
        self.release()


@pytest.fixture
def memory_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """The store of ``tmp_path/cache`` on a MemoryBackend, where runs look for it."""
    monkeypatch.chdir(tmp_path)
    location = (tmp_path / "cache").resolve()
    with use_context() as context:
        store = Store(location, backend=MemoryBackend(location))
        context.get("cache.stores", cache_module._RecentStores).put(
            location, False, store, location)
        yield store


def double(make_py: dict) -> int:
    return make_py["n"] * 2


def test_a_graph_stores_then_hits_on_a_backend_of_six_methods(memory_store, tmp_path):
    graph = Graph("mem")
    graph.replace(Step("make", run='echo made; echo \'{"n": 21}\' > "$DAGNB_OUT/n.json"'))
    graph.step(lambda: {"n": 21}, name="make_py", needs=["make"])
    graph.step(double, name="twice", needs=["make_py"])

    first = graph.run(executor="local", cache_directory=tmp_path / "cache")
    assert set(first.states().values()) == {"succeeded"}
    backend = memory_store.backend
    assert backend.names() == ["make", "make_py", "twice"]
    assert not list((tmp_path / "cache").glob("make*/*"))  # nothing stored on disk

    second = graph.run(executor="local", cache_directory=tmp_path / "cache")
    assert set(second.states().values()) == {"cached"}
    assert second.result("twice") == 42
    assert (second.outputs("make") / "n.json").read_text().strip() == '{"n": 21}'
    assert second.logs("make")["line"].tolist() == ["made"]
    assert memory_store.entries().set_index("step")["hits"].to_dict() == {
        "make": 1, "make_py": 1, "twice": 1,
    }
    assert memory_store.clear() == 3 and backend.names() == []


def test_a_damaged_entry_is_set_aside_on_any_backend(memory_store, tmp_path):
    out = memory_store.scratch_dir("s")
    (out / "f.txt").write_text("x")
    key = StepKey("d" * 32, {}, {})  # (a folder named by no key is no entry: left alone)
    memory_store.save("s", key, out_dir=out)
    backend = memory_store.backend
    version, files = backend.objects[("s", key.digest)]
    backend.objects[("s", key.digest)] = (version + 100, {**files, "meta.json": b"{torn"})
    with pytest.warns(DamagedEntryWarning, match="not valid JSON"):
        assert memory_store.lookup("s", key) is None
    assert not backend.exists("s", key.digest)
    assert [step for step, _ in backend.objects] == [".damaged"]
