"""A Python step's key sees the globals it reads, by value, when it runs."""

from __future__ import annotations

import threading
import types

import pandas as pd
import pytest

from dagnb import Graph, Step, UnfingerprintableVariable
from dagnb.cache.keys import step_key
from dagnb.fingerprint import code_digest, global_values
from dagnb.model.masking import Masker

pytestmark = pytest.mark.usefixtures("workdir")


def namespace(source: str) -> dict:
    """A fresh module namespace (a notebook's, in effect) holding ``source``."""
    scope: dict = {"__name__": "__main__"}
    exec(compile(source, "<notebook>", "exec"), scope)
    return scope


SOURCE = """
import math
params = {"alpha": 0.1}
calls = []

class Model:
    pass

def helper():
    return calls

def compute():
    frame = params["alpha"] * math.pi
    frame.loc = 1 if False else None
    return helper(), Model, frame
"""


def test_global_values_are_the_data_read_by_the_code_and_its_helpers():
    scope = namespace(SOURCE + "loc = object()\n")
    values = global_values(scope["compute"])
    assert values == {"params": scope["params"], "calls": scope["calls"]}  # not loc: an attribute


def test_values_are_read_at_each_call_so_mutation_is_seen():
    scope = namespace(SOURCE)
    scope["params"]["alpha"] = 0.5
    assert global_values(scope["compute"])["params"] == {"alpha": 0.5}
    scope["params"] = {"beta": 1}
    assert global_values(scope["compute"])["params"] == {"beta": 1}


def test_code_only_digest_ignores_data_but_not_code():
    scope = namespace(SOURCE)
    before = code_digest(scope["compute"], values=False)
    scope["params"] = {"alpha": 0.9}
    scope["calls"].append(1)
    assert code_digest(scope["compute"], values=False) == before
    exec("def helper():\n    return 2\n", scope)
    assert code_digest(scope["compute"], values=False) != before


def key_of(func: types.FunctionType) -> object:
    return step_key(Step("s", func=func), upstream_digests={}, base_dir=".")


@pytest.mark.parametrize("change", [
    "params['alpha'] = 0.5",           # a dict mutated in place
    "params = {'alpha': 0.5}",         # a lower-case dict rebound
    "frame.loc[0, 'v'] = 100",         # a DataFrame edited in place
    "items.append(4)",                 # a list appended to
    "tags.add('new')",                 # a set
    "box.value = 2",                   # an object, by content
])
def test_every_kind_of_change_changes_the_key(change):
    scope = namespace(
        "import pandas as pd\n"
        "class Box:\n    def __init__(self):\n        self.value = 1\n"
        "params = {'alpha': 0.1}\nframe = pd.DataFrame({'v': [1, 2]})\nitems = [1, 2, 3]\n"
        "tags = {'a'}\nbox = Box()\n"
        "def compute():\n    return params, frame, items, tags, box.value\n"
    )
    before = key_of(scope["compute"])
    exec(change, scope)
    after = key_of(scope["compute"])
    assert after.digest != before.digest
    changed = [n for n in after.components if after.components[n] != before.components.get(n)]
    assert len(changed) == 1 and changed[0].startswith("var:")


def test_var_components_describe_the_value_shortly():
    scope = namespace("import pandas as pd\nparams = {'a': 1}\nframe = pd.DataFrame({'v': [1]})\n"
                      "def compute():\n    return params, frame\n")
    key = key_of(scope["compute"])
    assert key.describe["var:params"] == "{'a': 1}"
    assert key.describe["var:frame"] == "<pandas.DataFrame shape (1, 1)>"  # pandas 2 and 3


def test_a_type_its_top_package_does_not_export_is_named_in_full():
    scope = namespace("import xml.etree.ElementTree as ET\nnode = ET.Element('a')\n"
                      "def compute():\n    return node\n")
    key = key_of(scope["compute"])
    assert key.describe["var:node"] == "<xml.etree.ElementTree.Element>"


def test_a_variable_named_like_a_credential_is_described_by_type_only():
    scope = namespace("api_token = 's3cr3t'\nparams = {'a': 's3cr3t'}\n"
                      "def compute():\n    return api_token, params\n")
    key = key_of(scope["compute"])
    assert key.describe["var:api_token"] == "<str>"
    assert key.describe["var:params"] == "{'a': 's3cr3t'}"  # by name only: a plain dict shows


def test_an_unfingerprintable_global_names_the_variable_and_why():
    scope = namespace("lock = None\ndef compute():\n    return lock\n")
    scope["lock"] = threading.Lock()
    with pytest.raises(UnfingerprintableVariable,
                       match=r"step 's' is not cached this run: notebook variable 'lock' "
                             r"\(_thread.lock\) cannot be fingerprinted \(cannot pickle"):
        key_of(scope["compute"])


def test_explain_names_the_notebook_variable(workdir):
    scope = namespace("params = {'alpha': 0.1}\ndef compute():\n    return params['alpha'] * 10\n")
    graph = Graph("g", [Step("s", func=scope["compute"])])
    assert graph.run(executor="local").result("s") == 1.0
    scope["params"]["alpha"] = 0.5
    assert graph.explain("s") == [
        "notebook variable `params` changed: {'alpha': 0.1} → {'alpha': 0.5}"]
    assert graph.run(executor="local").result("s") == 5.0


def test_a_step_reading_an_unfingerprintable_global_runs_uncached_with_one_line(workdir):
    scope = namespace("lock = None\ndef compute():\n    return lock.locked()\n")
    scope["lock"] = threading.Lock()
    graph = Graph("g", [Step("s", func=scope["compute"])])
    why = ("notebook variable 'lock' (_thread.lock) cannot be fingerprinted (cannot pickle "
           "'_thread.lock' object); make it inside the function, or pass what it is made "
           "from as a parameter (params=)")
    for _ in range(2):
        with pytest.warns(UserWarning) as said:
            run = graph.run(executor="local")
        assert run.states() == {"s": "succeeded"} and run.result("s") is False
        assert run.not_stored == {"s": why}  # as any step that ran and was not stored
        assert [str(w.message) for w in said] == [f"step 's' ran but was not cached: {why}"]
        assert run.logs("s").empty  # said by dagnb, not as the step's own stderr
    assert not (workdir / ".dagnb_cache" / "s").exists()
    plan = graph.plan()
    assert plan["cached"].tolist() == [False]
    assert plan["reason"][0].startswith("step 's' is not cached this run")


def test_frames_count_by_content_not_identity():
    scope = namespace("import pandas as pd\nframe = pd.DataFrame({'v': [1, 2]})\n"
                      "def compute():\n    return frame['v'].sum()\n")
    before = key_of(scope["compute"])
    scope["frame"] = pd.DataFrame({"v": [1, 2]})  # an equal copy
    assert key_of(scope["compute"]).digest == before.digest


class _Counter:
    def __init__(self, start):
        self.start = start

    def next(self):
        return self.start + 1 if isinstance(self.start, int) else "no number"


def test_a_steps_method_counts_its_object_and_one_that_cannot_be_hashed_runs_uncached(
        workdir):
    """``Step(func=obj.method)``: the object is what the code works on, a ``var:self``
    component hashed when the step runs; one that cannot be hashed makes it uncached,
    with one line."""
    results = [Graph("g", [Step("s", func=_Counter(start).next)]).run(executor="local")
               for start in (1, 2, 1)]
    assert [run.result("s") for run in results] == [2, 3, 2]
    assert [run.states()["s"] for run in results] == ["succeeded", "succeeded", "cached"]
    locked = Graph("g", [Step("s", func=_Counter(threading.Lock()).next)])
    for _ in range(2):
        with pytest.warns(UserWarning, match="ran but was not cached"):
            run = locked.run(executor="local")
        assert run.states() == {"s": "succeeded"} and run.result("s") == "no number"
        assert run.not_stored["s"].startswith(
            "notebook variable 'self' (test_notebook_state._Counter) cannot be "
            "fingerprinted (cannot pickle '_thread.lock' object); make it inside")



def _stored_with(folder, value: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and value.encode() in p.read_bytes()]


@pytest.mark.parametrize("secret", [
    "tok-ABCDEF123456",  # whole in the short repr
    "tok-ABCDEF123456-0123456789abcdefghijklmnopqrstuvwxyz",  # cut: its head and tail show
], ids=["short", "long"])
def test_a_global_built_from_a_declared_secret_is_masked_in_the_cache_explain_and_plan(
        workdir, monkeypatch, secret):
    monkeypatch.setenv("API_TOKEN", secret)
    scope = namespace("import os\n"
                      "headers = {'Authorization': 'Bearer ' + os.environ['API_TOKEN']}\n"
                      "def fetch():\n    return len(headers)\n")
    graph = Graph("g", [Step("fetch", func=scope["fetch"], secrets=("API_TOKEN",))])
    assert graph.run(executor="local").states() == {"fetch": "succeeded"}
    scope["headers"]["Accept"] = "json"
    shown = "\n".join([*graph.explain("fetch"), *graph.plan()["reason"]])
    assert "notebook variable `headers` changed: {'Authorization': 'Bearer ***'}" in shown
    graph.run(executor="local")
    for part in (secret[:5], secret[-6:]):
        assert part not in shown
        assert _stored_with(workdir / ".dagnb_cache", part) == []


@pytest.mark.parametrize(("secret", "changed"), [
    ("change", "notebook variable `params` changed: {'alpha': 0.1, 'name': '***'} → "
               "{'alpha': 0.5, 'name': '***'}"),  # (a word of the sentence too)
    ("a", "notebook variable `params` changed: {'alpha': 0.1, 'name': '***'} → "
          "{'alpha': 0.5, 'name': '***'}"),  # shorter than MIN_LINE: masked as a word only
], ids=["secret-spelled-as-a-word", "one-letter-secret"])
def test_explain_masks_the_values_it_shows_not_its_words_or_names(workdir, monkeypatch,
                                                                  secret, changed):
    monkeypatch.setenv("STAGE_TOKEN", secret)
    scope = namespace(f"params = {{'alpha': 0.1, 'name': {secret!r}}}\n"
                      "def train():\n    return params['alpha'] * 10\n")
    graph = Graph("g", [Step("train", func=scope["train"], secrets=("STAGE_TOKEN",))])
    assert graph.run(executor="local").states() == {"train": "succeeded"}
    scope["params"]["alpha"] = 0.5
    assert graph.explain("train") == [changed]
    assert list(graph.plan()["reason"]) == [changed]


def test_a_value_without_a_secret_is_described_as_without_secrets(workdir):
    scope = namespace("big = 10 ** 45\nname = 'banana split ' * 5\n"
                      "def f():\n    return big, name\n")
    step = Step("f", func=scope["f"])
    plain = step_key(step, upstream_digests={}, base_dir=workdir)
    masked = step_key(step, upstream_digests={}, base_dir=workdir,
                      mask=Masker(["tok-unrelated-99"]))
    assert masked.describe == plain.describe
    assert plain.describe["var:big"] == "100000000000000000...0000000000000000000"
