"""A Python step's result that holds a set counts by the same output digest in every
process (session 66): a set pickles in its iteration order, which ``PYTHONHASHSEED``
changes, so the digest of its pickle's bytes made an upstream step re-run in a new
process look changed, and its downstream steps ran again (no early cut-off)."""

from __future__ import annotations

import base64
import json
import os
import pickle
import subprocess
import sys
import textwrap

import pytest
from seeded_flows import run_seeded

from dagnb import Step
from dagnb.cache import Store
from dagnb.cache.keys import StepKey
from dagnb.cache.steps import StepCache, _inline, _result_file_digest
from dagnb.fingerprint import new_hasher
from dagnb.model.results import RESULT_FILES

WORDS = [f"word{i}" for i in range(40)]

# Each upstream step returns a set its own way; each has one downstream step.
FLOW = textwrap.dedent('''
    import json, pickle, sys
    import dagnb
    from dagnb import Graph, Step

    WORDS = [f"word{i}" for i in range(40)]

    def small():  # packed: its pickle in the entry's record
        return set(WORDS)

    def big():  # too big for a record: out/result.pkl
        return {f"{word}-{i}" for word in WORDS for i in range(30)}

    def nested():  # sets in a list, a frozenset in a dict
        return [set(WORDS[:10]), {"k": frozenset(WORDS[10:30]), "n": 1}, ("t", 2.5)]

    def with_file():  # a file of its own beside its result
        (dagnb.current().out_dir / "note.txt").write_text("kept")
        return frozenset(WORDS)

    def uncached():  # never stored: counts by the digest its entry would have
        return set(WORDS)

    def own_file():  # its own result.pkl, its result: kept as it wrote it
        with open(dagnb.current().out_dir / "result.pkl", "wb") as handle:
            pickle.dump({f"{word}!" for word in WORDS * 20}, handle, protocol=5)

    def use_small(small): return len(small)
    def use_big(big): return len(big)
    def use_nested(nested): return len(nested)
    def use_with_file(with_file): return len(with_file)
    def use_uncached(uncached): return len(uncached)
    def use_own_file(own_file): return len(own_file)

    UPSTREAM = ["small", "big", "nested", "with_file", "uncached", "own_file"]
    steps = [Step(name, func=globals()[name], cache=name != "uncached") for name in UPSTREAM]
    steps += [Step(f"use_{name}", func=globals()[f"use_{name}"], needs=[name])
              for name in UPSTREAM]
    run = Graph("sets", steps).run(executor="local", cache_directory=sys.argv[1],
                                   refresh=UPSTREAM if sys.argv[2] == "again" else False)
    run.raise_for_status()
    print(json.dumps({"states": run.states(), "order": list(small())}))
''')


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_upstream_steps_rerun_with_the_same_sets_in_another_process_leave_their_downstream_cached(
        tmp_path):
    first = run_seeded(tmp_path, FLOW, "1", "first")
    again = run_seeded(tmp_path, FLOW, "2", "again")  # every upstream step forced to run again
    assert first["order"] != again["order"]  # (the sets did pickle apart)
    assert set(first["states"].values()) == {"succeeded"}
    states = again["states"]
    upstream = ("small", "big", "nested", "with_file", "uncached", "own_file")
    assert {name: state for name, state in states.items() if not name.startswith("use_")} == {
        name: "succeeded" for name in upstream}
    assert {name: state for name, state in states.items() if name.startswith("use_")} == {
        f"use_{name}": "cached" for name in upstream}
    # what the cache holds is intact (its files checked against their digests)
    verified = subprocess.run([sys.executable, "-m", "dagnb", "cache", "verify", "--cache-dir",
                               str(tmp_path / "cache")], capture_output=True, text=True)
    assert verified.returncode == 0 and "all intact" in verified.stdout, verified.stdout


DIGESTS = textwrap.dedent('''
    import json, pickle, sys
    from pathlib import Path
    from dagnb import Step
    from dagnb.cache.keys import StepKey
    from dagnb.cache.steps import StepCache
    from dagnb.fingerprint import value_digest

    WORDS = [f"word{i}" for i in range(40)]
    VALUES = {
        "set": set(WORDS),
        "frozenset": frozenset(WORDS),
        "big set": {f"{word}-{i}" for word in WORDS for i in range(30)},
        "list of sets": [set(WORDS[:20]), set(WORDS[20:])],
        "dict of sets": {"a": set(WORDS), "b": [frozenset(WORDS[:5])]},
        "set of frozensets": {frozenset(WORDS[i:i + 3]) for i in range(0, 40, 3)},
    }
    root = Path(sys.argv[1])
    cache = StepCache(root / "cache")
    out = {}
    for number, (name, value) in enumerate(VALUES.items()):
        run_dir, save_dir = root / f"run-{number}", root / f"save-{number}"
        run_dir.mkdir()
        entry = cache.save(Step(f"s{number}", func=len), StepKey(f"k{number}", {}, {}),
                           out_dir=save_dir, result=value, logs=[], exit_code=0,
                           duration_s=0.0)
        out[name] = {"not stored": StepCache.digest_of(run_dir, value),
                     "stored": entry.output_digest, "value": value_digest(value),
                     "pickle": pickle.dumps(value, protocol=5).hex()}
    print(json.dumps(out))
''')


def test_result_digests_are_the_same_whatever_the_hash_seed(tmp_path):
    """The output digest of a result holding sets, stored or not, is one in every
    process; ``value_digest`` (what a ``Memory`` argument counts by) already was."""
    seen = []
    for seed in ("1", "2"):
        folder = tmp_path / seed
        folder.mkdir()
        done = subprocess.run([sys.executable, "-c", DIGESTS, str(folder)],
                              env={**os.environ, "PYTHONHASHSEED": seed}, capture_output=True,
                              text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        seen.append(json.loads(done.stdout))
    one, two = seen
    for name in one:
        assert one[name]["pickle"] != two[name]["pickle"], name  # (the bytes differ)
        assert one[name]["value"] == two[name]["value"], name
        assert one[name]["not stored"] == two[name]["not stored"], name
        assert one[name]["stored"] == two[name]["stored"], name
        # a step cached or not leaves its dependents' keys alone (cache=False switched)
        assert one[name]["stored"] == one[name]["not stored"], name


def _bytes_digest(value: object) -> str:
    hasher = new_hasher()
    hasher.update(pickle.dumps(value, protocol=5))
    return hasher.hexdigest()


def test_a_result_holding_no_set_counts_by_its_pickle_even_when_its_bytes_look_like_a_set():
    """The bytes a set's pickle starts or ends with, met in data (a float, bytes, text),
    leave the digest as it was: of the pickle's bytes."""
    from dagnb.cache.entry import COUNTED_AS  # (here: the old code had none)

    looks_like = b"\x8f\x94(" + b"\x91\x94"
    small = (looks_like, 1.5)
    inline = _inline(small)
    assert base64.b64decode(inline["pickle"]).count(looks_like) == 1
    assert COUNTED_AS not in inline
    big = [(looks_like + bytes([i % 256]), i) for i in range(2000)]
    assert _result_file_digest(big) == (RESULT_FILES[1], _bytes_digest(big))
    assert COUNTED_AS in _inline({"a"})  # (a set's does)


def test_an_entry_whose_result_holds_a_set_still_has_its_files_checked(tmp_path):
    """Its output digest counts the set by its members; ``verify`` checks its files'
    bytes all the same, and one changed is damage."""
    value = {f"w{i}" for i in range(500)}
    out = tmp_path / "out"
    out.mkdir()
    cache = StepCache(tmp_path / "cache")
    entry = cache.save(Step("s", func=len), StepKey("k", {}, {}), out_dir=out, result=value,
                       logs=[], exit_code=0, duration_s=0.0)
    assert entry.output_digest == StepCache.digest_of(tmp_path / "empty", value)
    assert "files_digest" in entry.meta and entry.verify()
    found = Store(tmp_path / "cache").lookup("s", "k")
    assert found.result() == value and found.verify()
    result_file = found.out_dir / RESULT_FILES[1]
    result_file.write_bytes(result_file.read_bytes().replace(b"w1", b"x1", 1))  # (its size)
    assert not found.verify()


def test_a_long_payload_holding_set_marks_by_chance_is_not_pickled_again(monkeypatch) -> None:
    """32 MB of random bytes hold the marks about twice: the result was pickled once
    more, whole, in memory (a dask step's peak went from 2 to 3 times its size). A
    payload the pickler writes apart from its frames is data, not looked at."""
    from dagnb.cache import steps

    again: list[object] = []
    monkeypatch.setattr(steps, "_pickles_a_set", lambda result: again.append(result) or False)
    payload = b"\0" * (1 << 19) + b"\x8f\x94(" + b"\0" * 16
    steps._result_file_digest(payload)
    assert again == []
    steps._result_file_digest({"small": b"\x8f\x94("})  # (in a frame: looked at, as before)
    assert len(again) == 1
