"""`dagnb cache stats` and `prune --max-size` count what entries take on disk: a packed
entry's record (its metadata, logs and result), a folder entry's files and folders.
They counted each entry's output bytes alone: a scale QA cache that `du` put at 44 MB
read as 258 KB, and `prune --max-size 1M` removed nothing."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dagnb.cache import Store
from dagnb.cache.keys import StepKey
from dagnb.cli import main
from dagnb.cli.cache import _size

ENTRIES = 400  # packed ones, with logs; and FOLDERS entries with output files
FOLDERS = 4


def _key(n: int) -> StepKey:
    digest = f"{n:032x}"
    return StepKey(digest, {"code": "c" * 32, "upstream:load": f"{n:032x}"},
                   {"code": f"def step_{n}(x):\n    return x + {n}\n"})


def _logs(n: int) -> list[dict[str, object]]:
    return [{"time": 1.0 + i, "attempt": 1, "stream": "stdout",
             "line": f"step {n} line {i}: some progress"} for i in range(6)]


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    """A cache of ENTRIES small packed entries with logs (a few of them unpacked, as a
    step downstream reads them) and FOLDERS entries with files."""
    folder = tmp_path / "cache"
    store = Store(folder)
    for n in range(ENTRIES):
        entry = store.save(f"s{n % 7}", _key(n), out_dir=None, inline={"json": n},
                           logs=_logs(n))
        if n % 50 == 0:
            assert entry.path.is_dir()  # (its folder under .unpacked)
    for n in range(ENTRIES, ENTRIES + FOLDERS):
        out = tmp_path / f"out{n}"
        out.mkdir()
        (out / "data.bin").write_bytes(b"x" * 5000)
        store.save("files", _key(n), out_dir=out, logs=_logs(n))
    store.close()
    assert (folder / ".packs").is_dir() and (folder / ".unpacked").is_dir()
    return folder


def _bytes_under(folder: Path) -> int:
    """The bytes of every file under ``folder`` and of the folders entries make (an
    entry's own, ``<step>/<key>``, and those in it; ``.unpacked/<step>/<name>``), as
    `du --apparent-size` counts them; not the cache's own (its root, a step's folder,
    ``.packs``, ``.unpacked``, ``.unpacked/<step>``)."""
    total = 0
    for where, folders, names in os.walk(folder):
        depth = len(Path(where).relative_to(folder).parts)
        below_step = depth >= (2 if Path(where).relative_to(folder).parts[:1] == (".unpacked",)
                               else 1)
        total += sum(os.lstat(os.path.join(where, name)).st_size for name in names)
        if below_step:
            total += sum(os.lstat(os.path.join(where, name)).st_size for name in folders)
    return total


def _output_bytes(folder: Path) -> int:
    return int(Store(folder, read_only=True).entries()["size_bytes"].sum())


TOLERANCE = 0.02  # what no entry holds: the packs' keys-file heads, sealed-index heads
#                   and fanouts, the generation file, lock files


def test_cache_stats_counts_the_bytes_entries_take_on_disk(cache, capsys):
    real = _bytes_under(cache)
    counted = int(Store(cache, read_only=True).stats()["bytes"].sum())
    assert real * (1 - TOLERANCE) <= counted <= real, (counted, real, _output_bytes(cache))
    assert main(["cache", "stats", "--cache-dir", str(cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"{ENTRIES + FOLDERS} cache entries, {_size(counted)} in {cache}"


@pytest.mark.parametrize("share", [0.5, 0.8])  # (0.8: too few removed for a compaction
#                                                 to take place by itself)
def test_cache_prune_max_size_leaves_the_folder_under_the_limit(cache, capsys, share):
    before = _bytes_under(cache)
    limit = int(before * share)
    assert main(["cache", "prune", "--max-size", f"{limit}B", "--cache-dir", str(cache)]) == 0
    out = capsys.readouterr().out
    left = Store(cache, read_only=True)
    kept = len(left.entries())
    assert 0 < kept < ENTRIES + FOLDERS, out
    counted = int(left.stats()["bytes"].sum())
    assert counted <= limit and out.endswith(f"{kept} cache entries left, {_size(counted)}\n")
    # the removed records' bytes are given back now (the packs compacted), not left in
    # the packs for a later clear: the folder is under the limit but for the heads
    # and files no entry holds
    after = _bytes_under(cache)
    assert after <= limit + before * TOLERANCE, (after, limit)
    assert after <= counted * (1 + TOLERANCE) + 4096
    assert main(["cache", "stats", "--cache-dir", str(cache)]) == 0
    assert "removed records" not in capsys.readouterr().out


def test_cache_stats_says_what_removed_records_hold_until_compaction(cache, capsys):
    store = Store(cache)
    for n in range(0, 40):  # (a tenth of the records: too few to compact the packs)
        assert store.remove(f"s{n % 7}", f"{n:032x}")
    store.close()
    assert main(["cache", "stats", "--cache-dir", str(cache)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1].startswith("not counted: ") and "of removed records in .packs" in lines[-1]
    counted = int(Store(cache, read_only=True).stats()["bytes"].sum())
    assert lines[-2] == f"{ENTRIES + FOLDERS - 40} cache entries, {_size(counted)} in {cache}"


def test_folder_entries_of_shell_steps_count_their_folders(tmp_path, capsys, monkeypatch):
    # (each entry of a shell step that writes one small file is three folders: stats
    # read 342K for 300 of them, du --apparent-size 4.0M, and --max-size 1M removed none)
    import dagnb

    monkeypatch.chdir(tmp_path)
    graph = dagnb.Graph("files", [dagnb.Step(f"s{i}", run=f"echo {i} > $DAGNB_OUT/f.txt")
                                  for i in range(30)])
    assert graph.run(executor="local", cache_directory=tmp_path / "c").ok
    cache = tmp_path / "c"
    real = _bytes_under(cache) - _bytes_under(cache / ".runs")
    counted = int(Store(cache, read_only=True).stats()["bytes"].sum())
    assert real * (1 - TOLERANCE) <= counted <= real, (counted, real)
    assert main(["cache", "prune", "--max-size", f"{real // 2}B", "--cache-dir",
                 str(cache)]) == 0
    assert _bytes_under(cache) - _bytes_under(cache / ".runs") <= real * (0.5 + TOLERANCE)
