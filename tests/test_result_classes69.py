"""A step's result holding an object of a user class counts that class's code, and the
data its methods read, in its output digest (session 69): pickle names a class by
reference, so after an edit of ``Model.predict`` the step returning a ``Model`` ran again
(its own key reads ``Model``) but pickled to the same bytes, its output digest stayed,
and the step calling ``load.predict(1)`` was served its old result (2 where 1001 is
right). A result holding no user class keeps the digest it had: of its pickle's bytes."""

from __future__ import annotations

import base64
import datetime
import decimal
import enum
import importlib
import io
import os
import pickle
import re
import subprocess
import sys
import textwrap
from fractions import Fraction

import numpy as np
import pandas as pd
import pytest

from dagnb import Graph, Step
from dagnb.cache.keys import StepKey
from dagnb.cache.steps import StepCache, _inline, _result_file_digest
from dagnb.fingerprint import new_hasher
from dagnb.model.results import RESULT_FILES

SOURCE = '''
import pickle
import dagnb

OFFSET = 1
SETTINGS = {"scale": 1}


class Model:
    def __init__(self, weights):
        self.weights = weights

    def predict(self, x):
        return x + OFFSET * SETTINGS["scale"]


def load():
    return Model(list(range(WEIGHTS)))


def load_own_file():  # its own result.pkl, its result: kept as it wrote it
    with open(dagnb.current().out_dir / "result.pkl", "wb") as handle:
        pickle.dump(Model([1]), handle, protocol=5)


def use(load):
    return load.predict(1)
'''

# How the upstream step's result is stored, and so where its output digest is made.
WAYS = {
    "inline": dict(weights=3, func="load", cache=True),  # in the entry's record
    "file": dict(weights=3000, func="load", cache=True),  # out/result.pkl
    "inline, not stored": dict(weights=3, func="load", cache=False),  # StepCache.digest_of
    "file, not stored": dict(weights=3000, func="load", cache=False),
    "the step's own file": dict(weights=3, func="load_own_file", cache=True),
}


def _module(tmp_path, monkeypatch, name):
    """A module of the user's project, ``name``, written into ``tmp_path`` and imported."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)


def _write(tmp_path, name, weights, predict=None):
    source = SOURCE.replace("WEIGHTS", str(weights))
    if predict is not None:
        source = source.replace('x + OFFSET * SETTINGS["scale"]', predict)
    (tmp_path / f"{name}.py").write_text(source)
    importlib.invalidate_caches()


def _run(module, way, cache_dir):
    graph = Graph("g", [Step("load", func=getattr(module, way["func"]), cache=way["cache"]),
                        Step("use", func=module.use, needs=("load",))])
    run = graph.run(cache_directory=cache_dir, executor="local")
    run.raise_for_status()
    return run


@pytest.mark.parametrize("way", list(WAYS))
def test_an_edit_of_a_method_of_the_result_class_runs_the_step_calling_it_again(
        tmp_path, monkeypatch, way):
    name = "model69_edit_" + re.sub(r"\W+", "_", way)
    _write(tmp_path, name, WAYS[way]["weights"])
    module = _module(tmp_path, monkeypatch, name)
    cache_dir = tmp_path / "cache"
    assert _run(module, WAYS[way], cache_dir).result("use") == 2
    again = _run(module, WAYS[way], cache_dir)
    assert again.states()["use"] == "cached"  # (nothing changed: the same digest)

    _write(tmp_path, name, WAYS[way]["weights"], predict="x + 1000")
    module = importlib.reload(module)
    edited = _run(module, WAYS[way], cache_dir)
    assert edited.states() == {"load": "succeeded", "use": "succeeded"}
    assert edited.result("use") == 1001


@pytest.mark.parametrize("change", ["rebound", "changed in place"])
@pytest.mark.parametrize("way", ["inline", "file"])
def test_a_change_of_the_data_a_method_of_the_result_class_reads_runs_the_step_calling_it(
        tmp_path, monkeypatch, way, change):
    name = f"model69_data_{way}_{change.replace(' ', '_')}"
    _write(tmp_path, name, WAYS[way]["weights"])
    module = _module(tmp_path, monkeypatch, name)
    cache_dir = tmp_path / "cache"
    assert _run(module, WAYS[way], cache_dir).result("use") == 2

    if change == "rebound":
        module.OFFSET = 1000
    else:
        module.SETTINGS["scale"] = 1000
    changed = _run(module, WAYS[way], cache_dir)
    assert changed.states() == {"load": "succeeded", "use": "succeeded"}
    assert changed.result("use") == 1001


# Results of plain data and of libraries' and Python's classes: pickled by reduction,
# through copyreg (complex, a compiled pattern), by a metaclass (an enum class itself).
PLAIN = {
    "tuple": (1, 2.5, "a", None, b"x"),
    "bytes": b"\x93" * 5000,  # (the opcode that names a class, as data)
    "tuple of ints": tuple(range(3000)),
    "array": np.arange(1000, dtype=np.float64).reshape(20, 50),
    "frame": pd.DataFrame({"a": range(300), "b": [f"s{i}" for i in range(300)]}),
    "datetimes": [datetime.datetime(2024, 1, 1) + datetime.timedelta(hours=i) for i in range(300)],
    "library objects": [decimal.Decimal("1.5"), Fraction(1, 3), complex(1, 2),
                        re.compile("a+"), datetime.date(2024, 1, 1), io.BytesIO],
    "enum class": [re.RegexFlag, enum.Enum],  # (a library's: named, as its metaclass's)
}


def _bytes_digest(data):
    hasher = new_hasher()
    hasher.update(data)
    return hasher.hexdigest()


@pytest.mark.parametrize("name", list(PLAIN))
def test_a_result_holding_no_user_class_keeps_the_digest_of_its_pickle(tmp_path, name):
    value = PLAIN[name]
    data = pickle.dumps(value, protocol=5)
    assert _result_file_digest(value) == (RESULT_FILES[1], _bytes_digest(data))
    inline = _inline(value)
    if inline is not None:  # (small: kept in the entry's record, counted by its JSON)
        assert inline == {"pickle": base64.b64encode(data).decode("ascii")}
        return
    out = tmp_path / "out"
    out.mkdir()
    entry = StepCache(tmp_path / "cache").save(
        Step("s", func=len), StepKey("k", {}, {}), out_dir=out, result=value, logs=[],
        exit_code=0, duration_s=0.0)
    assert (entry.out_dir / RESULT_FILES[1]).read_bytes() == data  # (the same bytes)
    assert "files_digest" not in entry.meta  # (counted by its files' bytes: not apart)
    assert entry.output_digest == StepCache.digest_of(tmp_path / "none", value)


def test_a_result_holding_a_user_class_counts_by_another_digest_the_same_in_each_process(
        tmp_path):
    """Its digest is of its pickle (its sets by their members) and of its classes'
    digests: nothing a hash seed or an object's id changes (its dependents would run
    again in each new process), and not its pickle's bytes alone."""
    _write(tmp_path, "model69_seeds", 3000)
    script = textwrap.dedent('''
        import pickle, sys
        sys.path.insert(0, sys.argv[1])
        import model69_seeds as module
        from dagnb.cache.steps import _inline, _result_file_digest
        from dagnb.fingerprint import new_hasher
        big = module.Model(list(range(3000)))
        hasher = new_hasher()
        hasher.update(pickle.dumps(big, protocol=5))
        print(_result_file_digest(big)[1], hasher.hexdigest())
        words = {f"w{i}" for i in range(50)}
        print(_result_file_digest({"m": big, "s": words})[1])
        print(_inline([module.Model([1]), words]).get("counted_as"))
    ''')
    outputs = [subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True,
        check=True, env={**os.environ, "PYTHONHASHSEED": seed}).stdout for seed in "12"]
    assert outputs[0] == outputs[1]
    digest, by_bytes, _with_a_set, inline = outputs[0].split()
    assert digest != by_bytes
    assert inline != "None"
