"""Faults met by real processes on a cache folder: one this process may not write, a full
disk, another process's eviction. Each must cost at most a recompute and say so in one
line, never a failed step or a traceback."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagnb import Graph, Memory, Step
from dagnb.cache import DamagedEntryWarning
from dagnb.testing import isolated

needs_root = pytest.mark.skipif(
    not hasattr(os, "geteuid") or os.geteuid() != 0,
    reason="runs a child as 'nobody' (mode bits bind only non-root users)",
)

UNWRITABLE = """
import json, os, sys, warnings
import dagnb
from dagnb import Graph, Step

memory = dagnb.Memory(sys.argv[1])

@memory.cache
def small(x):
    return x + 1

@memory.cache
def big(x):
    return b"z" * 100_000 + bytes([x])

def graph(n):
    made = Graph("ro", [Step("make", run='echo hi > "$DAGNB_OUT/a.txt"'),
                        Step("use", run='cat "$DAGNB_IN/make/a.txt"', needs=["make"]),
                        Step("new", run="echo " + str(n))])
    made.step(lambda: {"n": n}, name="value")
    return made

# Python's own library is under /root here, out of nobody's reach: a first run as root
# fills the cache and imports every module a run needs, then the process becomes nobody.
with dagnb.testing.isolated(cache_directory=sys.argv[1]):
    graph(1).run(executor="local").raise_for_status()
small(1), big(1)
memory.store.close()
os.setgid(65534); os.setuid(65534)
with dagnb.testing.isolated(cache_directory=sys.argv[1]), \\
        warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("default")  # as a script sees them: each text once
    run = graph(2).run(executor="local")
    said_by_run = [str(w.message) for w in caught]
    caught.clear()
    values = [small(1), small(2), small(3), len(big(1)), len(big(2)), len(big(3))]
    print(json.dumps({"states": run.states(), "value": run.result("value"),
                      "run_warnings": said_by_run, "values": values,
                      "memory_warnings": [str(w.message) for w in caught]}))
"""


@needs_root
def test_a_cache_nobody_may_write_serves_hits_and_runs_misses_uncached(shared: Path) -> None:
    # root's cache, read by nobody: the new step and the new calls run and are not stored
    (shared / "script.py").write_text(UNWRITABLE)
    done = subprocess.run([sys.executable, "script.py", str(shared / "cache")], cwd=shared,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said["states"] == {"make": "cached", "use": "cached", "new": "succeeded",
                              "value": "succeeded"}
    assert said["value"] == {"n": 2}
    assert said["run_warnings"] == [
        f"cache folder {str(shared / 'cache')!r} cannot be written (a read-only mount, or "
        "no write permission); this run only reads it, as cache_mode 'read-only' does"]
    assert said["values"] == [2, 3, 4, 100_001, 100_001, 100_001]
    # one text per function (the temporary file's name is left out): shown once each
    assert sorted(said["memory_warnings"]) == [
        f"__main__.{name}: the call ran but was not cached: cache "
        f"{str(shared / 'cache')!r} cannot be written (Permission denied)"
        for name in ("big", "small")]


FAIL_ON_MISS_UNWRITABLE = """
import json, os, sys, warnings
import dagnb
from dagnb import Graph, Step

def graph():
    made = Graph("ro", [Step("make", run='echo hi > "$DAGNB_OUT/a.txt"'),
                        Step("use", run='cat "$DAGNB_IN/make/a.txt"', needs=["make"])])
    made.step(lambda: {"n": 1}, name="value")
    return made

with dagnb.testing.isolated(cache_directory=sys.argv[1]):
    graph().run(executor="local").raise_for_status()
os.setgid(65534); os.setuid(65534)
with dagnb.testing.isolated(cache_directory=sys.argv[1]), \\
        warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("default")
    run = graph().run(executor="local", cache_mode="fail-on-miss")
    print(json.dumps({"states": run.states(), "warnings": [str(w.message) for w in caught],
                      "kept": run.kept}))
"""


@needs_root
def test_fail_on_miss_on_a_cache_it_may_not_write_reads_it_and_writes_and_warns_nothing(
        shared: Path) -> None:
    """A CI's fail-on-miss run on a pulled cache mounted read-only: its hits are served
    as a read-only run serves them; it wrote hit counts and a run record there, each
    failing with a warning."""
    (shared / "script.py").write_text(FAIL_ON_MISS_UNWRITABLE)
    cache = shared / "cache"
    done = subprocess.run([sys.executable, "script.py", str(cache)], cwd=shared,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    said = json.loads(done.stdout.strip().splitlines()[-1])
    assert said == {"states": {"make": "cached", "use": "cached", "value": "cached"},
                    "warnings": [], "kept": False}


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 1 MB file system (tmpfs), or a skip where mounting is not allowed."""
    disk = tmp_path / "disk"
    disk.mkdir()
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(disk)],
                             capture_output=True)
    if mounted.returncode != 0:
        pytest.skip("cannot mount a tmpfs here")
    yield disk
    subprocess.run(["umount", "-l", str(disk)], check=False)


def _fill(disk: Path) -> None:
    """Write into ``disk`` until it is full."""
    with open(disk / "filler", "wb", buffering=0) as handle, contextlib.suppress(OSError):
        while True:
            handle.write(b"\0" * 4096)


def test_saves_on_a_full_disk_say_so_and_leave_no_empty_packs(small_disk: Path) -> None:
    memory = Memory(str(small_disk / "cache"))

    @memory.cache
    def small(x):  # a record of a pack
        return "v" * 1500 + str(x)

    @memory.cache
    def big(x):  # a folder of its own
        return b"z" * 100_000 + bytes([x])

    small(0)
    packs = sorted(os.listdir(small_disk / "cache" / ".packs"))
    _fill(small_disk)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert [small(x) for x in range(1, 11)] == ["v" * 1500 + str(x) for x in range(1, 11)]
        assert big(1) == b"z" * 100_000 + b"\x01"
    # (the record that did not fit was cut short: that save said so, no damage to report)
    assert not [w for w in caught if issubclass(w.category, DamagedEntryWarning)]
    said = {str(w.message) for w in caught}
    why = (f": the call ran but was not cached: cache {str(small_disk / 'cache')!r} cannot be "
           "written (No space left on device)")
    assert len(said) == 2 and all(message.endswith(why) for message in said), said  # a text each
    # each failed save used to leave a new empty pack and keys file behind
    assert sorted(os.listdir(small_disk / "cache" / ".packs")) == packs


def _slow(n):  # a step that prunes the cache from another process while the run is live
    if n == 2:
        done = subprocess.run([sys.executable, "-m", "dagnb", "cache", "prune",
                               "--max-entries", "0", "--cache-dir", "cache"],
                              capture_output=True, text=True, timeout=60)
        print(done.stdout.strip() or done.stderr.strip())
    return n


def _up():
    return "u" * 40_000  # a folder of its own, its result loaded when a step asks


def _down(up, slow):
    return len(up) + slow


def _pruned_meanwhile(n: int) -> Graph:
    graph = Graph("evict", [
        Step("files", run='printf data > "$DAGNB_OUT/data.txt"'),
        Step("reads", run='cat "$DAGNB_IN/files/data.txt"', needs=["files", "slow"]),
    ])
    graph.step(_up, name="up")
    graph.step(_slow, name="slow", params={"n": n})
    graph.step(_down, name="down")
    return graph


def test_a_prune_while_a_run_is_live_keeps_what_its_steps_have_yet_to_read(workdir) -> None:
    # 'up' and 'files' are hits whose steps downstream start only once 'slow' is done,
    # and 'slow' prunes meanwhile: they were taken for unused (a run writes its hits as
    # it ends; their $DAGNB_IN links were not made yet) and the steps found them gone
    with isolated(cache_directory=str(workdir / "cache")):  # (the prune's --cache-dir)
        _pruned_meanwhile(1).run(executor="local").raise_for_status()
        run = _pruned_meanwhile(2).run(executor="local")
    assert run.states() == {"files": "cached", "up": "cached", "slow": "succeeded",
                            "down": "succeeded", "reads": "succeeded"}, run.status().error
    assert run.result("down") == 40_002 and run.logs("reads").line.tolist() == ["data"]
    # what no live run uses went: the first run's slow, down and reads
    assert run.logs("slow").line.tolist()[0].startswith("removed 3 cache entries")


def _small():
    return {"x": 1}  # a pack record: its folder is made when a step asks for its path


def _reads_by_context_while_pruned():
    import dagnb

    folder = dagnb.current().inputs["small"]  # (not an argument: 'small' is read by path)
    done = subprocess.run([sys.executable, "-m", "dagnb", "cache", "prune",
                           "--max-entries", "0", "--cache-dir", "cache"],
                          capture_output=True, text=True, timeout=60)
    print(done.stdout.strip() or done.stderr.strip())
    return json.loads((folder / "result.json").read_text())["x"]


def test_a_prune_keeps_the_folder_a_python_step_reads_through_its_context(workdir) -> None:
    # 'small' has only an in-process Python step downstream, which would take its result
    # from memory: it was listed nowhere, and the prune removed the folder the step had
    # asked dagnb.current().inputs for, under it (FileNotFoundError)
    graph = Graph("ctx", [Step("small", func=_small)])
    graph.step(_reads_by_context_while_pruned, name="reads", needs=["small"])
    with isolated(cache_directory=str(workdir / "cache")):  # (the prune's --cache-dir)
        run = graph.run(executor="local")
    assert run.states() == {"small": "succeeded", "reads": "succeeded"}, run.status().error
    assert run.result("reads") == 1
    assert run.logs("reads").line.tolist()[0].startswith("removed 0 cache entries")


KILLED_MID_SAVE = """
import os, signal, sys
import dagnb
from dagnb.cache.backend import LocalBackend

def killed(*_args, **_kwargs):  # the entry is assembled; the process dies before its rename
    os.kill(os.getpid(), signal.SIGKILL)

LocalBackend.write = killed
memory = dagnb.Memory(sys.argv[1])
memory.cache(bytes)(1_000_000)
"""


def test_prune_removes_what_a_save_killed_midway_left_behind(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-c", KILLED_MID_SAVE, str(cache)], timeout=60)
    assert done.returncode == -9
    (left,) = [path for path in (cache / ".scratch").iterdir() if path.name.startswith(".tmp")]
    assert sum(f.stat().st_size for f in left.rglob("*") if f.is_file()) > 1_000_000
    fresh = cache / ".scratch" / ".tmp-another-save-under-way"
    fresh.mkdir()
    hours_ago = time.time() - 7200
    os.utime(left, (hours_ago, hours_ago))
    pruned = subprocess.run([sys.executable, "-m", "dagnb", "cache", "prune", "--max-size",
                             "1G", "--cache-dir", str(cache)], capture_output=True, text=True,
                            timeout=60)
    assert pruned.returncode == 0, pruned.stderr
    assert not left.exists() and fresh.exists()  # (a save of the last hour may be going on)


KILLED_MID_UNPACK = """
import os, signal, sys
import dagnb.cache.store
from dagnb.cache import Store

# where folders cannot be swapped in one step: moved aside, then the new one moved in
# (a swap killed midway leaves the old folder in a .tmp- one, as a killed build does)
dagnb.cache.store.exchange = lambda new, target: False
store = Store(sys.argv[1])
store.save("s", "k", out_dir=None, inline={"json": {"x": 1}})
(store.lookup("s", "k").path / "out" / "result.json").write_text("written into")
rename = os.rename

def killed(source, target):  # the folder is moved aside; the process dies before the new one
    rename(source, target)   # is renamed into place
    if os.path.basename(target).startswith(".old-"):
        os.kill(os.getpid(), signal.SIGKILL)

os.rename = killed
Store(sys.argv[1]).lookup("s", "k").path  # another process finds it written into
"""


def test_prune_removes_what_an_unpack_killed_midway_left_and_folders_of_records_gone(
        tmp_path: Path) -> None:
    from dagnb.cache import Store

    cache = tmp_path / "cache"
    done = subprocess.run([sys.executable, "-c", KILLED_MID_UNPACK, str(cache)], timeout=60)
    assert done.returncode == -9
    folders = cache / ".unpacked" / "s"
    left = sorted(folders.iterdir())
    assert [path.name[:5] for path in left] == [".old-", ".tmp-"]
    hours_ago = time.time() - 7200
    for path in left:
        os.utime(path, (hours_ago, hours_ago))
    fresh = folders / ".tmp-another-unpack-under-way"
    fresh.mkdir()
    store = Store(cache)
    replaced = store.lookup("s", "k").path  # (made again from the record)
    store.save("s", "k", out_dir=None, inline={"json": {"x": 2}}, refresh=True)
    current = store.lookup("s", "k").path
    assert replaced.exists() and current != replaced
    store.close()
    pruned = subprocess.run([sys.executable, "-m", "dagnb", "cache", "prune", "--max-size",
                             "1G", "--cache-dir", str(cache)], capture_output=True, text=True,
                            timeout=60)
    assert pruned.returncode == 0, pruned.stderr
    assert "removed 0 cache entries" in pruned.stdout  # (none of them was an entry)
    assert sorted(folders.iterdir()) == sorted([fresh, current])
    assert json.loads((current / "out" / "result.json").read_text()) == {"x": 2}


def test_prune_keeps_the_folder_of_a_replaced_record_a_live_run_reads(tmp_path: Path) -> None:
    """A run going on may have handed the old folder to a step as ``$DAGNB_IN``."""
    import fcntl

    from dagnb.cache import Store

    store = Store(tmp_path / "cache")
    store.save("s", "k", out_dir=None, inline={"json": {"x": 1}})
    read = store.lookup("s", "k").path
    store.save("s", "k", out_dir=None, inline={"json": {"x": 2}}, refresh=True)
    run = tmp_path / "cache" / ".runs" / "live"
    run.mkdir(parents=True)
    (run / ".uses").write_text("s\tk\n")
    lease = os.open(run, os.O_RDONLY)
    try:
        fcntl.flock(lease, fcntl.LOCK_EX)
        assert Store(tmp_path / "cache").reduce_size(bytes_limit="1G") == 0
        assert read.exists()
    finally:
        os.close(lease)
    assert Store(tmp_path / "cache").reduce_size(bytes_limit="1G") == 0
    assert not read.exists()


def test_clearing_a_step_removes_the_folders_of_its_replaced_records(tmp_path: Path) -> None:
    from dagnb.cache import Store

    store = Store(tmp_path / "cache")
    store.save("s", "k", out_dir=None, inline={"json": {"x": 1}})
    replaced = store.lookup("s", "k").path
    store.save("s", "k", out_dir=None, inline={"json": {"x": 2}}, refresh=True)
    current = store.lookup("s", "k").path
    assert Store(tmp_path / "cache").clear("s") == 1
    assert not replaced.exists() and not current.exists()


@pytest.fixture
def read_only_cache(tmp_path: Path) -> Iterator[Path]:
    """A cache holding one damaged entry, seen through a read-only bind mount (a skip
    where mounting is not allowed)."""
    cache = tmp_path / "cache"
    with isolated(cache_directory=str(cache)):
        Graph("ro", [Step("a", run='echo hi > "$DAGNB_OUT/a.txt"'),
                     Step("b", run="echo b", needs=["a"])]).run(executor="local")
    (entry,) = (cache / "a").iterdir()
    (entry / "out" / "a.txt").write_text("HI\n")  # same size, other bytes
    view = tmp_path / "view"
    view.mkdir()
    for options in (["--bind"], ["-o", "remount,bind,ro"]):
        done = subprocess.run(["mount", *options, str(cache), str(view)], capture_output=True)
        if done.returncode != 0:
            subprocess.run(["umount", "-l", str(view)], check=False)
            pytest.skip("cannot make a read-only bind mount here")
    yield view
    subprocess.run(["umount", "-l", str(view)], check=False)


def test_cache_commands_on_a_read_only_folder_say_so_in_one_line(read_only_cache, capsys):
    from dagnb.cli import main

    assert main(["cache", "verify", "--cache-dir", str(read_only_cache)]) == 1
    out = capsys.readouterr().out.splitlines()
    assert out[0].endswith("changed since it was saved), left in place: the folder cannot "
                           "be written")  # (it said 'set aside', which it could not do)
    assert out[1].endswith("1 damaged, left in place: the folder cannot be written (their "
                           "steps run again)")
    for action in (["prune", "--max-size", "1B"], ["clear", "--all"]):
        assert main(["cache", *action, "--cache-dir", str(read_only_cache)]) == 2
        err = capsys.readouterr().err  # (a traceback of OSError: Read-only file system)
        assert err == (f"dagnb: error: cannot {action[0]} the cache in "
                       f"{str(read_only_cache)!r}: the folder cannot be written (a read-only "
                       "mount, or no write permission); run it as a user who may write "
                       "there, on a writable mount\n")


def test_a_save_failing_for_another_reason_says_that_reason(tmp_path, monkeypatch):
    """'cannot be written' is for a folder that cannot be (read-only, no permission, full):
    a file another process removed meanwhile is said as what it is."""
    from dagnb.cache.store import Store

    def removed(*_args, **_kwargs):
        raise FileNotFoundError(2, "No such file or directory", str(tmp_path / "gone"))

    monkeypatch.setattr(Store, "save", removed)

    def double(x):
        return 2 * x

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert Memory(str(tmp_path / "cache")).cache(double)(2) == 4
    said = [str(w.message) for w in caught if "not cached" in str(w.message)]
    assert len(said) == 1 and "cannot be written" not in said[0], said
    assert "No such file or directory" in said[0]
