"""Session 65's cache mends.

- A prune with a short age limit (under the time a live process's uses of an entry may
  go unwritten) took another process's hot entry for unused: its hits since its last
  write were in its memory only. An entry whose use a live process wrote lately now
  counts as used now.
- ``explain`` called a workflow module's constant a "notebook variable".
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from dagnb.cache.explain import _variable_sentence, explain
from dagnb.cache.journal import FLUSH_EVERY
from dagnb.cache.keys import StepKey
from dagnb.cache.store import Store
from dagnb.cli import main

# A second process that holds a Store on the cache and hits entry hot/k1: once, written
# at once (as its write every FLUSH_EVERY s does), then again at each line it reads,
# not written until it ends.
_HITTER = textwrap.dedent("""
    import sys
    from dagnb.cache.store import Store

    store = Store(sys.argv[1])
    assert store.lookup("hot", "k1") is not None
    store.flush()
    print("written", flush=True)
    for line in sys.stdin:
        assert store.lookup("hot", "k1") is not None
        print("hit", flush=True)
""")


@pytest.fixture
def cache(tmp_path: Path) -> Path:
    store = Store(tmp_path / "c")
    store.save("hot", "k1", out_dir=None, inline={"json": 1})
    store.save("cold", "k2", out_dir=None, inline={"json": 2})
    store.close()
    return tmp_path / "c"


@pytest.fixture
def hitter(cache: Path) -> Iterator[subprocess.Popen[str]]:
    process = subprocess.Popen([sys.executable, "-c", _HITTER, str(cache)], text=True,
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE)
    assert process.stdout is not None and process.stdout.readline() == "written\n"
    yield process
    _end(process)


def _hit(process: subprocess.Popen[str]) -> None:
    assert process.stdin is not None and process.stdout is not None
    process.stdin.write("hit\n")
    process.stdin.flush()
    assert process.stdout.readline() == "hit\n"


def _end(process: subprocess.Popen[str]) -> None:
    if process.stdin is not None and not process.stdin.closed:
        process.stdin.close()  # (it ends, writing the hits it counted)
    assert process.wait(timeout=60) == 0


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_prune_max_age_5s_keeps_the_entry_another_live_process_hit_since_it_wrote(
        cache: Path, hitter: subprocess.Popen[str],
        capsys: pytest.CaptureFixture[str]) -> None:
    """End to end, on the wall clock: the use it wrote is over 5 s old, its last hit
    (not written) under 1 s."""
    time.sleep(5.5)
    _hit(hitter)
    assert main(["cache", "prune", "--max-age", "5s", "--cache-dir", str(cache)]) == 0
    assert "removed 1 cache entry from" in capsys.readouterr().out
    store = Store(cache)
    assert store.peek("hot", "k1") is not None
    assert store.peek("cold", "k2") is None


def test_once_that_process_ended_its_entry_ages_as_any_other(
        cache: Path, hitter: subprocess.Popen[str]) -> None:
    seconds_later = Store(cache, clock=lambda: time.time() + 6)
    _hit(hitter)
    assert seconds_later.reduce_size(age_limit=5) == 1  # cold only
    assert seconds_later.peek("hot", "k1") is not None
    _end(hitter)  # its last hit written: 6 s old by that clock
    assert seconds_later.reduce_size(age_limit=5) == 1
    assert seconds_later.peek("hot", "k1") is None


def test_a_live_process_s_entry_counts_as_used_until_flush_every_after_its_last_write(
        cache: Path, hitter: subprocess.Popen[str]) -> None:
    """Its hits after a write go unwritten until one comes FLUSH_EVERY s later: an entry
    it used is taken as used until then (a rule of "written in the last 20 s" took an
    entry hit 3 s after a write, unwritten, for 20 s unused 18 s later)."""
    later = Store(cache, clock=lambda: time.time() + 2 * FLUSH_EVERY + 5)
    assert later.reduce_size(age_limit=2 * FLUSH_EVERY) == 1  # cold only: hot's last
    assert later.peek("hot", "k1") is not None  # possible use is 15 s old by that clock
    assert later.reduce_size(age_limit=FLUSH_EVERY) == 1  # an entry it stopped hitting ages
    assert later.peek("hot", "k1") is None


def _threshold_key(value: int, **describe: str) -> StepKey:
    return StepKey(f"{value:032x}", {"code": "c", "var:THRESHOLD": f"{value:032x}"},
                   {"code": "def fit(): ...", "var:THRESHOLD": str(value), **describe})


@pytest.mark.parametrize("home, said", [
    ("steps.py", "global `THRESHOLD` of steps.py changed: 3 → 4"),
    ("__main__", "notebook variable `THRESHOLD` changed: 3 → 4"),
])
def test_explain_names_whose_global_a_step_reads(tmp_path: Path, home: str, said: str) -> None:
    """A workflow's ``python: steps.py:fit`` reading its module's THRESHOLD was told of a
    "notebook variable", with no notebook."""
    store = Store(tmp_path / "c")
    store.save("fit", _threshold_key(3, globals_of=home), out_dir=None, inline={"json": 6})
    assert explain(store, "fit", _threshold_key(4, globals_of=home)) == [said]


def test_explain_words_a_key_that_names_no_home_as_before(tmp_path: Path) -> None:
    store = Store(tmp_path / "c")
    store.save("fit", _threshold_key(3), out_dir=None, inline={"json": 6})
    assert explain(store, "fit", _threshold_key(4)) == [
        "notebook variable `THRESHOLD` changed: 3 → 4"]
    # (the home is a description, no component: an entry without it is still a hit)
    assert explain(store, "fit", _threshold_key(3, globals_of="steps.py")) == [
        "entry found: it is cached"]


def test_another_modules_global_stays_a_variable_whatever_the_home() -> None:
    assert _variable_sentence("helpers.FACTOR", "added", "", "2", "steps.py") == (
        "variable `helpers.FACTOR` added")


def test_explain_of_a_workflow_step_names_its_modules_global_not_a_notebook_variable(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
) -> None:
    """Through the CLI: the key of a ``python: steps.py:fit`` step records whose globals
    it reads, and explain words the change as that module's."""
    from dagnb.cli import main

    monkeypatch.chdir(tmp_path)
    steps = tmp_path / "steps.py"
    steps.write_text("THRESHOLD = 3\n\n\ndef fit():\n    return THRESHOLD * 2\n")
    (tmp_path / "wf.yml").write_text("name: wf\nsteps:\n  fit:\n    python: steps.py:fit\n")
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    steps.write_text(steps.read_text().replace("THRESHOLD = 3", "THRESHOLD = 4"))
    capsys.readouterr()
    assert main(["explain", "wf.yml", "fit", "--executor", "local"]) == 0
    said = capsys.readouterr().out
    assert "global `THRESHOLD` of steps.py changed: 3 → 4" in said, said
    assert "notebook variable" not in said
