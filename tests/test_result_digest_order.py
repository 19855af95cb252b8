"""A step's result that is a large dict (a ``result.json``, over the inline limit)
counts in its output digest by its JSON with sorted keys, as a small (inline) one
does: a dict built from a set of strings has its keys in the set's order, which
``PYTHONHASHSEED`` changes, so the file's text made a step that ran again in a new
process look changed, and its dependents ran again (no early cut-off)."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from seeded_flows import run_seeded

from dagnb import Step
from dagnb.cache import Store
from dagnb.cache.keys import StepKey
from dagnb.cache.steps import _INLINE_LIMIT, StepCache, _result_file_digest
from dagnb.fingerprint import new_hasher
from dagnb.model.results import RESULT_FILES, json_text

FLOW = textwrap.dedent('''
    import json, sys
    import dagnb

    CHANGED = sys.argv[2] == "changed"
    graph = dagnb.Graph("orders")

    def words():  # a set of strings: its order follows the hash seed
        found = {f"word{i:04d}" for i in range(400)}
        return found | {"word9999"} if CHANGED else found

    @graph.step(cache=False)
    def counts():  # never stored: counts by the digest its entry would have
        return {word: len(word) for word in words()}

    @graph.step
    def nested():  # stored, run again each time (refresh): a dict in a list
        return [{"n": 1, "by_word": {word: len(word) for word in words()}}]

    @graph.step
    def report(counts):
        return sum(counts.values())

    @graph.step
    def use_nested(nested):
        return len(nested[0]["by_word"])

    run = graph.run(executor="local", cache_directory=sys.argv[1], refresh=["nested"])
    run.raise_for_status()
    print(json.dumps({"states": run.states(), "order": list(words())}))
''')


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_large_dict_result_run_again_in_another_process_leaves_its_dependents_cached(
        tmp_path):
    first = run_seeded(tmp_path, FLOW, "1", "same")
    again = run_seeded(tmp_path, FLOW, "2", "same")
    assert first["order"] != again["order"]  # (the dicts were built in another order)
    assert set(first["states"].values()) == {"succeeded"}
    assert again["states"] == {"counts": "succeeded", "nested": "succeeded",
                               "report": "cached", "use_nested": "cached"}
    changed = run_seeded(tmp_path, FLOW, "2", "changed")  # one item more: the dependents run
    assert changed["states"] == {"counts": "succeeded", "nested": "succeeded",
                                 "report": "succeeded", "use_nested": "succeeded"}
    # what the cache holds is intact (its files checked against their digests)
    verified = subprocess.run([sys.executable, "-m", "dagnb", "cache", "verify", "--cache-dir",
                               str(tmp_path / "cache")], capture_output=True, text=True)
    assert verified.returncode == 0 and "all intact" in verified.stdout, verified.stdout


def _save(cache: StepCache, tmp_path: Path, number: int, value: object):
    return cache.save(Step(f"s{number}", func=len), StepKey(f"k{number}", {}, {}),
                      out_dir=tmp_path / f"out{number}", result=value, logs=[], exit_code=0,
                      duration_s=0.0)


def test_a_large_dict_counts_by_its_items_stored_or_not_and_keeps_its_order(tmp_path):
    words = [f"w{i:04d}" for i in range(400)]
    in_order = {word: len(word) for word in words}
    reversed_ = {word: len(word) for word in reversed(words)}
    assert len(json.dumps(in_order)) > _INLINE_LIMIT  # (a result.json, not inline)
    cache = StepCache(tmp_path / "cache")
    sorted_entry, reversed_entry = (_save(cache, tmp_path, number, value)
                                    for number, value in enumerate([in_order, reversed_]))
    empty = tmp_path / "empty"  # (a step that wrote no files)
    assert (sorted_entry.output_digest == reversed_entry.output_digest
            == StepCache.digest_of(empty, reversed_) == StepCache.digest_of(empty, in_order))
    # keys already sorted: its bytes count, as before; the other's files are still checked
    assert "files_digest" not in sorted_entry.meta
    assert "files_digest" in reversed_entry.meta and reversed_entry.verify()
    # the file keeps the step's order: a hit gives the dict back as it was returned
    found = Store(tmp_path / "cache").lookup("s1", "k1")
    assert list(found.result()) == list(reversed_) and found.verify()
    # an item changed changes the digest
    assert StepCache.digest_of(empty, {**reversed_, "w0000": 9}) != reversed_entry.output_digest


def test_a_json_result_without_a_dict_counts_by_its_text():
    value = [f"w{i:04d}" for i in range(400)]
    hasher = new_hasher()
    hasher.update(json_text(value).encode())
    assert _result_file_digest(value) == (RESULT_FILES[0], hasher.hexdigest())
