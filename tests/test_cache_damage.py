"""Every kind of damage to a cache is a miss, set aside and rebuilt: never served, never
an exception (issue 13, problem 4). Housekeeping that cannot write is one warning."""

from __future__ import annotations

import errno
import json
import os
import re
import shutil
import subprocess
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path

import pytest

from dagnb import Graph, Run, Step
from dagnb.cache import DamagedEntryWarning, Store
from dagnb.testing import isolated

pytestmark = pytest.mark.usefixtures("workdir")

MAKE = ('printf hello > "$DAGNB_OUT/a.txt"; printf "%s" "$(seq 1 5000)" > "$DAGNB_OUT/big.txt";'
        " echo made")


def _run(workdir: Path) -> Run:
    """One run as a new process makes it (a fresh context: nothing read before is
    remembered), failing on any step that did not succeed."""
    with isolated(cache_directory=str(workdir / ".dagnb_cache")):
        return _graph().run(executor="local").raise_for_status()


def _graph() -> Graph:
    graph = Graph("dmg", [
        Step("make", run=MAKE),
        Step("use", run='cat "$DAGNB_IN/make/a.txt"', needs=["make"]),
    ])
    graph.step(lambda: {"n": 1}, name="value")  # small: a record of a pack
    graph.step(lambda: {"n": 1, "pad": "x" * 4096}, name="large")  # its own result.json
    return graph


def _entry(cache: Path, step: str) -> Path:
    (key,) = Store(cache).backend.names(step)
    return cache / step / key


def _write_same_size(path: Path, text: str) -> None:
    assert len(text) == path.stat().st_size
    path.write_text(text)


def _edit(cache: Path) -> None:
    _write_same_size(_entry(cache, "make") / "out" / "a.txt", "HELLO")


def _truncate(cache: Path) -> None:
    (_entry(cache, "make") / "out" / "big.txt").write_text("1\n2")


def _delete_output(cache: Path) -> None:
    (_entry(cache, "make") / "out" / "a.txt").unlink()


def _replace_result(cache: Path) -> None:
    path = _entry(cache, "large") / "out" / "result.json"
    _write_same_size(path, path.read_text().replace('"n": 1', '"n": 2'))


def _delete_result(cache: Path) -> None:
    (_entry(cache, "large") / "out" / "result.json").unlink()


def _change_record(cache: Path) -> None:
    """A byte of the small step's pack record changed (its length still holds)."""
    (pack,) = (cache / ".packs").glob("*.pack")
    data = pack.read_bytes()
    assert data.count(b'"json":{"n":1}') == 1
    pack.write_bytes(data.replace(b'"json":{"n":1}', b'"json":{"n":2}'))


def _meta_folder(cache: Path) -> None:
    meta = _entry(cache, "make") / "meta.json"
    meta.unlink()
    meta.mkdir()


def _bad_expires(cache: Path) -> None:
    meta = _entry(cache, "make") / "meta.json"
    data = json.loads(meta.read_text())
    data["expires"] = "tomorrow"
    meta.write_text(json.dumps(data))


def _bad_utf8_logs(cache: Path) -> None:
    logs = _entry(cache, "make") / "logs.jsonl"
    data = logs.read_bytes()
    logs.write_bytes(data[:-4] + b"\xff\xfe\n" + data[-1:])


def _damaged_is_a_file(cache: Path) -> None:
    _meta_folder(cache)
    (cache / ".damaged").write_text("not a folder")


def _runs_is_a_file(cache: Path) -> None:
    for _ in range(100):  # the last run's pruning thread may still be writing there
        shutil.rmtree(cache / ".runs", ignore_errors=True)
        if not (cache / ".runs").exists():
            break
        time.sleep(0.02)
    (cache / ".runs").write_text("not a folder")
    _edit(cache)  # and a step to run again, so a run folder is needed


def _access_is_a_file(cache: Path) -> None:
    shutil.rmtree(cache / ".access", ignore_errors=True)
    (cache / ".access").write_text("not a folder")


DAMAGE: dict[str, tuple[Callable[[Path], None], set[str]]] = {
    # kind: (damage, the steps that must run again)
    "edited output": (_edit, {"make"}),
    "truncated output": (_truncate, {"make"}),
    "deleted output": (_delete_output, {"make"}),
    "replaced result.json": (_replace_result, {"large"}),
    "deleted result.json": (_delete_result, {"large"}),
    "changed pack record": (_change_record, {"value"}),
    "meta.json is a folder": (_meta_folder, {"make"}),
    "bad expires": (_bad_expires, {"make"}),
    "invalid UTF-8 in logs.jsonl": (_bad_utf8_logs, {"make"}),
    ".damaged is a file": (_damaged_is_a_file, {"make"}),
    ".runs is a file": (_runs_is_a_file, {"make"}),
    ".access is a file": (_access_is_a_file, set()),
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_damage_is_a_miss_set_aside_and_rebuilt(kind: str, workdir: Path) -> None:
    damage, rebuilt = DAMAGE[kind]
    cache = workdir / ".dagnb_cache"
    first = _run(workdir)
    first.logs()
    damage(cache)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        again = _run(workdir)
    ran = {name for name, state in again.states().items() if state == "succeeded"}
    assert ran == rebuilt
    assert again.result("value") == {"n": 1}
    assert again.result("large")["n"] == 1
    assert (again.outputs("make") / "a.txt").read_text() == "hello"
    assert again.logs("use")["line"].tolist() == ["hello"]
    third = _run(workdir)
    assert set(third.states().values()) == {"cached"}, "the rebuilt entry is served again"


def test_a_digest_mismatch_of_a_small_file_is_reported_as_damage(workdir: Path) -> None:
    _run(workdir)
    _edit(workdir / ".dagnb_cache")
    with pytest.warns(DamagedEntryWarning, match="a.txt"):
        _run(workdir)


def test_hit_counts_that_cannot_be_written_are_one_warning(workdir: Path, monkeypatch) -> None:
    from dagnb.cache import journal

    _run(workdir)

    def full(*args: object) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(journal.AccessJournal, "_write", full)
    with warnings.catch_warnings(record=True) as caught, \
            isolated(cache_directory=str(workdir / ".dagnb_cache")):
        warnings.simplefilter("always")
        for _ in range(3):  # one process, three runs
            again = _graph().run(executor="local").raise_for_status()
    assert set(again.states().values()) == {"cached"}
    messages = [str(w.message) for w in caught]
    assert len([m for m in messages if "hit counts" in m]) == 1, messages



# A field a listing or a run's status reads, hand-edited to another type than dagnb writes
BAD_FIELDS = {"size_bytes": "70 kB", "last_used": "2026-01-01", "duration_s": None,
              "exit_code": 0.5}


def _bad_field(cache: Path, field: str) -> str:
    """Give the folder entry of ``make`` a bad ``field``; its key's first 12 digits."""
    folder = _entry(cache, "make")
    data = json.loads((folder / "meta.json").read_text())
    data[field] = BAD_FIELDS[field]
    (folder / "meta.json").write_text(json.dumps(data))
    return folder.name[:12]


def _damage_named(key: str, field: str) -> str:
    return rf"cache entry make/{key} is damaged \(its {field} "


@pytest.mark.parametrize("field", list(BAD_FIELDS))
def test_a_metadata_field_of_another_type_is_a_miss_set_aside(field: str,
                                                              workdir: Path) -> None:
    cache = workdir / ".dagnb_cache"
    _run(workdir)
    key = _bad_field(cache, field)
    with pytest.warns(DamagedEntryWarning, match=_damage_named(key, field)):
        again = _run(workdir)
    assert again.states() == {"make": "succeeded", "use": "cached", "value": "cached",
                              "large": "cached"}
    assert again.status()["exit_code"].tolist() == [0, 0, 0, 0]
    assert [p.name.split("--")[0] for p in (cache / ".damaged").iterdir()] == ["make"]


@pytest.mark.parametrize("field", list(BAD_FIELDS))
def test_listings_leave_out_an_entry_whose_metadata_field_is_of_another_type(
        field: str, workdir: Path) -> None:
    import dagnb.cache

    cache = workdir / ".dagnb_cache"
    _run(workdir)
    key = _bad_field(cache, field)
    with isolated(cache_directory=str(cache)), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        entries, stats = dagnb.cache.entries(), dagnb.cache.stats()
    assert sorted(entries["step"]) == ["large", "use", "value"]
    # (make's row stays, with no entry: this process's run missed it, and every store
    # on the folder shares those counts)
    assert sorted(stats.index[stats["entries"] > 0]) == ["large", "use", "value"]
    assert stats.loc["make", ["entries", "misses"]].tolist() == [0, 1]
    [said] = [str(w.message) for w in caught if w.category is DamagedEntryWarning]
    assert re.match(_damage_named(key, field), said)


@pytest.mark.parametrize("field", list(BAD_FIELDS))
def test_the_cache_commands_report_and_list_around_a_metadata_field_of_another_type(
        field: str, workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from dagnb.cli import main

    cache = workdir / ".dagnb_cache"
    _run(workdir)
    key = _bad_field(cache, field)
    capsys.readouterr()
    with pytest.warns(DamagedEntryWarning, match=_damage_named(key, field)):
        assert main(["cache", "list", "--cache-dir", str(cache)]) == 0
    listed = capsys.readouterr().out.splitlines()[1:]
    assert sorted(line.split()[0] for line in listed) == ["large", "use", "value"]
    assert main(["cache", "stats", "--cache-dir", str(cache)]) == 0
    assert "3 cache entries" in capsys.readouterr().out
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 1
    said = capsys.readouterr().out.splitlines()
    assert re.match(rf"damaged entry: make/{key} \(its {field} ", said[0]), said
    assert "1 damaged, set aside" in said[-1]
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 0


AS_NOBODY = """
import json, os, sys, tempfile, warnings
import dagnb
from dagnb import Graph, Step

def graph():
    made = Graph("dmg", [Step("make", run={make!r}),
                         Step("use", run='cat "$DAGNB_IN/make/a.txt"', needs=["make"])])
    made.step(lambda: {{"n": 1}}, name="value")
    return made

# Python's own library is under /root here, out of nobody's reach: a first run as root
# imports every module a run needs, then the process becomes nobody.
with dagnb.testing.isolated(cache_directory=tempfile.mkdtemp()):
    graph().run(executor="local").raise_for_status()
os.setgid(65534); os.setuid(65534)
os.chdir(sys.argv[1])
with dagnb.testing.isolated(cache_directory=sys.argv[2]), \\
        warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    run = graph().run(executor="local")
    print(json.dumps({{"states": run.states(), "value": run.result("value"),
                      "warnings": [str(w.message) for w in caught]}}))
"""


def _as_nobody(folder: Path, cache: Path) -> dict:
    script = AS_NOBODY.format(make=MAKE)
    done = subprocess.run([sys.executable, "-c", script, str(folder), str(cache)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    return json.loads(done.stdout.strip().splitlines()[-1])


needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="runs a child as 'nobody' (mode bits bind only non-root users)",
)


@pytest.fixture
def shared(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder that user 'nobody' can reach (pytest's own are private to root)."""
    import tempfile

    folder = Path(tempfile.mkdtemp(prefix="dagnb-nobody-"))
    folder.chmod(0o777)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


def _chown_tree(root: Path, uid: int) -> None:
    for folder, dirs, files in os.walk(root):
        for name in [folder, *(os.path.join(folder, n) for n in dirs + files)]:
            os.chown(name, uid, uid)


@needs_root
def test_an_entry_of_mode_000_is_a_miss_for_a_user_bound_by_mode_bits(shared: Path) -> None:
    cache = shared / "cache"
    _chown_tree(shared, 65534)
    first = _as_nobody(shared, cache)
    assert set(first["states"].values()) == {"succeeded"}
    _entry(cache, "make").chmod(0)
    again = _as_nobody(shared, cache)
    assert again["states"] == {"make": "succeeded", "use": "cached", "value": "cached"}
    assert any("damaged" in w for w in again["warnings"])


@needs_root
def test_a_read_only_cache_serves_its_entries_with_one_warning(shared: Path) -> None:
    cache = shared / "cache"
    _chown_tree(shared, 65534)
    _as_nobody(shared, cache)
    _chown_tree(cache, 0)  # now root's, and nobody may not write in it
    for folder, dirs, _ in os.walk(cache):
        for name in [folder, *(os.path.join(folder, n) for n in dirs)]:
            os.chmod(name, 0o555)
    again = _as_nobody(shared, cache)
    assert set(again["states"].values()) == {"cached"} and again["value"] == {"n": 1}
    assert len(again["warnings"]) <= 2, again["warnings"]


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_pack_record_named_out_of_the_cache_is_damage_never_a_path(workdir: Path) -> None:
    """A pack record written by hand (a copied cache) for step '../../elsewhere', its
    metadata agreeing: `dagnb cache push` made its folder beside the cache folder and
    wrote its manifest beside the store's, and listings showed it as an entry."""
    from dagnb.cache import pack_records

    cache = workdir / "project" / ".dagnb_cache"
    _graph().run(executor="local", cache_directory=str(cache)).raise_for_status()
    (pack,) = (cache / ".packs").glob("*.pack")
    (record,) = [r for r in pack_records.decode(pack.read_bytes(), pack.name)[0]
                 if r.step == "value"]
    body = record.body.replace(b'"step":"value"', b'"step":"../../elsewhere"')
    with pack.open("ab") as handle:
        handle.write(pack_records.encode("../../elsewhere", record.key, record.kind, body))
    (workdir / "store").mkdir()
    before = sorted(workdir.iterdir())

    def cli(*args: str) -> str:
        done = subprocess.run([sys.executable, "-m", "dagnb", "cache", *args, "--cache-dir",
                               str(cache)], capture_output=True, text=True, cwd=workdir,
                              check=False)
        return done.stdout + done.stderr

    assert "elsewhere" not in cli("list").split("warning")[0]
    assert "its step or key is no name a cache folder holds" in cli("verify")
    cli("push", f"file://{workdir / 'store'}")
    assert sorted(workdir.iterdir()) == before
    assert sorted(p.name for p in (workdir / "project").iterdir()) == [".dagnb_cache"]
    assert sorted(p.name for p in (workdir / "store" / "entries").iterdir()) == [
        "large", "make", "use", "value"]


@pytest.mark.parametrize("meanwhile", ["replaced", "removed"])
def test_verify_leaves_an_entry_another_process_replaced_or_removed_as_it_hashed(
        meanwhile: str, workdir: Path, capsys: pytest.CaptureFixture[str],
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A `dagnb run --refresh` (or a clear) beside `dagnb cache verify`: the entry verify
    listed is gone as it hashes it. That is no damage: the new entry is not set aside,
    nothing is reported, and the next run hits."""
    from dagnb.cache.entry import Entry
    from dagnb.cli import main

    cache = workdir / ".dagnb_cache"
    _run(workdir)
    hashed = Entry.verify

    def verify_as_another_process_acts(entry: Entry) -> bool:
        if entry.step != "make":
            return hashed(entry)
        if meanwhile == "replaced":
            with isolated(cache_directory=str(cache)):
                _graph().run(executor="local", refresh=True, targets=["make"])
        else:
            Store(cache).remove("make", entry.key)
        return False  # what hashing saw while the old folder went

    monkeypatch.setattr(Entry, "verify", verify_as_another_process_acts)
    capsys.readouterr()
    assert main(["cache", "verify", "--cache-dir", str(cache)]) == 0
    assert "damaged" not in capsys.readouterr().out
    assert not (cache / ".damaged").exists() or not any((cache / ".damaged").iterdir())
    monkeypatch.undo()
    if meanwhile == "replaced":
        assert _run(workdir).states()["make"] == "cached"


def test_push_leaves_an_entry_replaced_as_it_was_hashed_for_upload(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`dagnb cache push` hashes each entry before it uploads it (as verify does): one
    replaced meanwhile is not sent now, and the new one is not set aside."""
    from dagnb.cache import remote
    from dagnb.cache.entry import Entry

    cache = workdir / ".dagnb_cache"
    _run(workdir)
    store = Store(cache)
    listed = next(e for e in store.iter_entries() if e.step == "make")
    with isolated(cache_directory=str(cache)):
        _graph().run(executor="local", refresh=True, targets=["make"])
    monkeypatch.setattr(Entry, "verify", lambda entry: False)  # what hashing saw meanwhile
    assert remote._intact(store, listed) is False
    assert store.take_set_aside() == []
    monkeypatch.undo()
    assert _run(workdir).states()["make"] == "cached"
