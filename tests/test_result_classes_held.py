"""A step's result holding a class or a function of the user's code itself (``{"kind":
Model}``, ``{"f": helper}``) counts its code in its output digest, as one holding an
object of a user class counts that class (tests/test_result_classes69.py): pickle names
them by reference, never through the table that notes the classes of the objects it
reduces, so after an edit of ``Model.predict`` (or of ``helper``) the step returning
them ran again but pickled to the same bytes, and the step calling them was served its
old result. A user class that cannot be fingerprinted counts as new each time, said once."""

from __future__ import annotations

import base64
import enum
import importlib
import pickle
import re
import sys
import warnings

import pytest

from dagnb import Graph, Step
from dagnb.cache import steps
from dagnb.cache.entry import _inline_digest
from dagnb.cache.steps import _inline, _result_file_digest, _with_classes
from dagnb.fingerprint import new_hasher, user_class_digest
from dagnb.model.results import RESULT_FILES

SOURCE = '''
import pickle
import dagnb

PAD = list(range(WEIGHTS))


class Model:
    def predict(self):
        return 1


def helper():
    return 1


def load_class():
    return {"kind": Model, "pad": PAD}


def load_function():
    return {"f": helper, "pad": PAD}


def load_own_file():  # its own result.pkl, its result: kept as it wrote it
    with open(dagnb.current().out_dir / "result.pkl", "wb") as handle:
        pickle.dump({"kind": Model, "pad": PAD}, handle, protocol=5)


def use_class(load):
    return load["kind"]().predict()


def use_function(load):
    return load["f"]()
'''

# How the upstream step's result is stored, and so where its output digest is made.
WAYS = {
    "inline": dict(weights=3, cache=True),  # in the entry's record
    "file": dict(weights=3000, cache=True),  # out/result.pkl
    "inline, not stored": dict(weights=3, cache=False),  # StepCache.digest_of
    "file, not stored": dict(weights=3000, cache=False),
}
HELD = {  # what the result holds: (the step returning it, the step calling it, the edit)
    "class": ("load_class", "use_class", ("        return 1", "        return 1000")),
    "function": ("load_function", "use_function", ("    return 1\n\n\ndef load_class",
                                                   "    return 1000\n\n\ndef load_class")),
    "class, in the step's own file": ("load_own_file", "use_class",
                                      ("        return 1", "        return 1000")),
}


def _write(tmp_path, name, weights, edit=None):
    source = SOURCE.replace("WEIGHTS", str(weights))
    if edit is not None:
        assert edit[0] in source
        source = source.replace(*edit)
    (tmp_path / f"{name}.py").write_text(source)
    importlib.invalidate_caches()


def _module(tmp_path, monkeypatch, name):
    """A module of the user's project, ``name``, written into ``tmp_path`` and imported."""
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, name, raising=False)
    return importlib.import_module(name)


def _run(module, held, way, cache_dir):
    load, use = HELD[held][:2]
    graph = Graph("g", [Step("load", func=getattr(module, load), cache=WAYS[way]["cache"]),
                        Step("use", func=getattr(module, use), needs=("load",))])
    run = graph.run(cache_directory=cache_dir, executor="local")
    run.raise_for_status()
    return run


CASES = [(held, way) for held in HELD for way in WAYS
         if held != "class, in the step's own file" or way in ("inline", "file")]


@pytest.mark.parametrize(("held", "way"), CASES)
def test_an_edit_of_a_class_or_function_held_in_the_result_runs_the_step_calling_it_again(
        tmp_path, monkeypatch, held, way):
    name = "held_" + re.sub(r"\W+", "_", f"{held}_{way}")
    _write(tmp_path, name, WAYS[way]["weights"])
    module = _module(tmp_path, monkeypatch, name)
    cache_dir = tmp_path / "cache"
    assert _run(module, held, way, cache_dir).result("use") == 1
    again = _run(module, held, way, cache_dir)
    assert again.states()["use"] == "cached"  # (nothing changed: the same digest)

    _write(tmp_path, name, WAYS[way]["weights"], edit=HELD[held][2])
    module = importlib.reload(module)
    edited = _run(module, held, way, cache_dir)
    assert edited.states() == {"load": "succeeded", "use": "succeeded"}
    assert edited.result("use") == 1000


def _bytes_digest(data):
    hasher = new_hasher()
    hasher.update(data)
    return hasher.hexdigest()


def _counts_by_its_bytes(value):
    data = pickle.dumps(value, protocol=5)
    inline = _inline(value)
    return (_result_file_digest(value) == (RESULT_FILES[1], _bytes_digest(data))
            and inline == {"pickle": base64.b64encode(data).decode("ascii")})


class Shade(enum.Enum):  # (this module is the user's code: its enum class counts)
    DARK = 1


@pytest.mark.parametrize("value", [
    [re.RegexFlag, enum.Enum, pickle.dumps, len, int],  # (Python's: by name, in the pickle)
    {"pattern": re.compile("a+"), "flags": [re.IGNORECASE]},
], ids=["classes and functions of Python", "objects of Python's classes"])
def test_a_result_holding_python_s_classes_and_functions_counts_by_its_bytes(value):
    assert _counts_by_its_bytes(value)


def test_a_result_holding_a_user_enum_class_counts_its_code():
    """An enum class is named as its metaclass's object, never reduced: one of the user's
    counts as a user class inside it does (its members are its code)."""
    value = [Shade]
    by_bytes = _bytes_digest(pickle.dumps(value, protocol=5))
    counted = _with_classes(by_bytes, [(f"{__name__}.Shade", user_class_digest(Shade))])
    assert _result_file_digest(value) == (RESULT_FILES[1], counted)
    assert _inline(value)["counted_as"] == _with_classes(
        _inline_digest({"pickle": _inline(value)["pickle"]}), [
            (f"{__name__}.Shade", user_class_digest(Shade))])


DEEP_SOURCE = "".join(
    ["def deep0():\n    return 0\n"]
    + [f"def deep{i}():\n    return deep{i - 1}()\n" for i in range(1, 3000)]
    + ["class Deep:\n    def value(self):\n        return deep2999()\n"])


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_user_class_that_cannot_be_fingerprinted_counts_as_new_each_time_said_once(
        tmp_path, monkeypatch):
    """Its code cannot be told unchanged: the steps reading a result holding it run again
    whenever the step returning it runs (never served a result of other code), and the
    user is told once why, and what to return instead."""
    (tmp_path / "held_deep.py").write_text(DEEP_SOURCE)
    module = _module(tmp_path, monkeypatch, "held_deep")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        digests = {_result_file_digest([module.Deep(), i])[1] for i in (1, 1)}
        digests.add(_result_file_digest({"kind": module.Deep})[1])
    assert len(digests) == 3
    said = [str(w.message) for w in caught]
    assert len(said) == 1, said
    assert said[0].startswith("class held_deep.Deep, in a step's result, cannot be "
                              "fingerprinted (FingerprintError: the code class Deep refers "
                              "to goes too deep")
    assert "return plain data rather than held_deep.Deep" in said[0]


class Point:  # (this module is the user's code)
    def __init__(self, x):
        self.x = x


class Rebuilt:  # (reduced by a reducer of its own, naming Python's int, not itself)
    def __reduce__(self):
        return int, (1,)


def scale(x):
    return 2 * x


SHAPES = {  # a result -> the user code it holds
    "objects and a function": ([Point(1), Point(2), scale], {"Point", "scale"}),
    "objects and their class": ([Point(1), Point], {"Point"}),
    "an object reduced apart and a class": ([Rebuilt(), Point], {"Rebuilt", "Point"}),
    "a function in an object": (Point(scale), {"Point", "scale"}),
    "objects only": ([Point(1), Rebuilt()], {"Point", "Rebuilt"}),
}


@pytest.mark.parametrize("looks", ["names noted", "memo looked through"])
@pytest.mark.parametrize("shape", list(SHAPES))
def test_the_user_code_a_result_holds_is_found_however_it_is_pickled(
        monkeypatch, shape, looks):
    """Beside the objects of user classes (which name their class), what else it names of
    the user's is looked for; without the names noted (another Python), in each memo."""
    if looks == "memo looked through":
        monkeypatch.setattr(steps, "_names_noted", lambda: False)
    value, held = SHAPES[shape]
    pickler = steps._ClassNoting(steps._Discard())
    pickler.dump(value)
    assert {name.rpartition(".")[2] for name, _ in pickler.user_classes()} == held
    assert not _counts_by_its_bytes(value)
