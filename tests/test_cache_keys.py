from __future__ import annotations

import importlib
import importlib.util
import linecache
import sys
import textwrap
from pathlib import Path

import pytest

from dagnb.cache import CACHE_FORMAT, Store, key_digest, step_key
from dagnb.cache.explain import explain, explain_frame
from dagnb.errors import FingerprintError
from dagnb.model.step import Step
from dagnb.testing import Clock


@pytest.fixture
def base(tmp_path: Path) -> Path:
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "raw.csv").write_text("a,b\n1,2\n")
    return tmp_path


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "cache", clock=Clock())


BASE_STEP = dict(
    name="train",
    run="python train.py",
    image="python:3.11",
    env={"VAR": "1"},
    secrets=("TOKEN",),
    mounts={"data/raw.csv": "/in/raw.csv"},
    params={"n": 1},
    workdir="/work",
    services=("db",),
    cache_volumes={"pip": "/root/.cache/pip"},
)


def key_of(base: Path, upstream: dict | None = None, run_version: str = "", **changes):
    step = Step(**{**BASE_STEP, **changes})
    return step_key(
        step, upstream_digests=upstream or {"prep": "a" * 32}, base_dir=base,
        cache_version=run_version,
    )


def save(store: Store, key, tmp_path: Path, name: str = "train"):
    out = store.scratch_dir(name)
    (out / "model.txt").write_text("weights")
    return store.save(name, key, out_dir=out)


def test_same_inputs_same_key(base):
    first, second = key_of(base), key_of(base)
    assert first == second
    assert first.digest == second.digest and len(first.digest) == 32
    assert first.components["format"] != ""
    assert set(first.components) == {
        "format", "cache_version", "kind", "command", "image", "env", "secrets", "workdir",
        "params", "services", "cache_volumes", "mount:data/raw.csv", "upstream:prep",
    }
    assert first.describe["image"] == "python:3.11"
    assert first.describe["secrets"] == '["TOKEN"]'
    assert CACHE_FORMAT in first.describe["format"]



@pytest.mark.parametrize("changes", [
    {}, dict(params={}), dict(user="me", platform="linux/arm64", errexit=False),
    dict(exclude=("*.tmp",), key_fn=lambda step: "v1"),
], ids=["all", "no-params", "more-spec", "key_fn"])
def test_a_key_is_the_digest_of_its_components_whatever_their_names(base, changes):
    # the spec's lines are kept sorted, the step's own put in their places: names that
    # sort before, between and after the spec's, and several in one place
    upstream = {name: name[::-1] * 4 for name in ("a", "zz", "prep", "cache", "params2")}
    key = key_of(base, upstream, **changes)
    assert key.digest == key_digest(key.components)
    assert key_of(base, **changes).digest == key_digest(key_of(base, **changes).components)


CASES = [
    ("image", dict(image="python:3.12"), "image changed python:3.11 → python:3.12"),
    ("env", dict(env={"VAR": "2"}), "env changed (VAR)"),
    ("secrets", dict(secrets=("TOKEN", "KEY")), "secret names changed: TOKEN → KEY, TOKEN"),
    ("workdir", dict(workdir="/src"), "workdir changed /work → /src"),
    ("params", dict(params={"n": 2}), "params changed: {'n': 1} → {'n': 2}"),
    ("command", dict(run="python train.py --fast"),
     "command changed python train.py → python train.py --fast"),
    ("services", dict(services=("db", "cache")), 'services changed ["db"] → ["db","cache"]'),
    ("cache_volumes", dict(cache_volumes={"pip": "/pip"}), "cache_volumes changed"),
    ("cache_version", dict(cache_version="v2"), "cache_version changed ['', ''] → ['v2', '']"),
]


@pytest.mark.parametrize(("component", "change", "sentence"), CASES, ids=[c[0] for c in CASES])
def test_each_component_changes_the_key_and_is_explained(
    base, store, component, change, sentence
):
    old = key_of(base)
    save(store, old, base)
    new = key_of(base, **change)
    assert new.digest != old.digest
    differing = {n for n in old.components if old.components[n] != new.components.get(n)}
    assert differing == {component}
    messages = explain(store, "train", new)
    assert len(messages) == 1
    assert messages[0].startswith(sentence)


def test_a_script_s_change_is_explained_line_by_line_as_code_is(base, store):
    """`command changed echo a\\necho b\\n → echo a\\necho B` was one line to read."""
    save(store, key_of(base, run="echo a\necho b\n"), base)
    [said] = explain(store, "train", key_of(base, run="echo a\necho B\n"))
    assert said.splitlines() == ["command changed", "--- cached", "+++ now", "@@ -1,2 +1,2 @@",
                                 " echo a", "-echo b", "+echo B"]


def test_a_one_line_command_s_change_is_one_sentence_on_one_line(base, store):
    """A cell's command ends in a newline: the sentence was cut after the old command,
    and fail-on-miss, which shows a reason's first line, named the old one alone."""
    save(store, key_of(base, run="echo 'rows from 2023'\n"), base)
    said = explain(store, "train", key_of(base, run="echo 'rows from 2024'\n"))
    assert said == ["command changed echo 'rows from 2023' → echo 'rows from 2024'"]


def test_argv_command_is_a_kind_and_command_change(base):
    shell = key_of(base, run="echo hi")
    argv = key_of(base, run=["echo", "hi"])
    assert shell.components["kind"] != argv.components["kind"]
    assert shell.components["command"] != argv.components["command"]


def test_run_level_cache_version_counts(base, store):
    save(store, key_of(base), base)
    new = key_of(base, run_version="2024")
    assert explain(store, "train", new) == ["cache_version changed ['', ''] → ['', '2024']"]


def test_mounted_input_change_is_named(base, store):
    save(store, key_of(base), base)
    (base / "data" / "raw.csv").write_text("a,b\n1,3\n")
    assert explain(store, "train", key_of(base)) == ["input data/raw.csv changed"]


def test_missing_mount_is_a_clear_error(base):
    with pytest.raises(FingerprintError, match=r"mount 'nope\.csv' does not exist"):
        key_of(base, mounts={"nope.csv": "/in"})


def test_upstream_output_digest_is_what_counts(base, store):
    save(store, key_of(base, upstream={"prep": "1" * 32}), base)
    # the upstream re-ran (its key changed) but produced the same output: still cached
    assert explain(store, "train", key_of(base, upstream={"prep": "1" * 32})) == [
        "entry found: it is cached"
    ]
    changed = key_of(base, upstream={"prep": "2" * 32})
    assert explain(store, "train", changed) == ["upstream prep produced different output"]
    added = key_of(base, upstream={"prep": "1" * 32, "other": "3" * 32})
    assert explain(store, "train", added) == ["upstream other added"]


def test_key_fn_replaces_the_command(base, store):
    step = Step(**{**BASE_STEP, "key_fn": lambda s: "v1"})
    key = step_key(step, upstream_digests={}, base_dir=base)
    assert "command" not in key.components and "key_fn" in key.components
    other = step_key(step.replace(run="something else"), upstream_digests={}, base_dir=base)
    assert other.digest == key.digest
    bumped = step_key(
        step.replace(key_fn=lambda s: "v2"), upstream_digests={}, base_dir=base
    )
    assert bumped.digest != key.digest
    save(store, key, base)
    assert explain(store, "train", bumped) == ["key_fn value changed 'v1' → 'v2'"]


CODE = '''
def train(prep):
    """Train."""
    return prep + 1
'''


def python_step(tmp_path: Path, name: str, source: str) -> Step:
    path = tmp_path / f"{name}.py"
    path.write_text(textwrap.dedent(source))
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return Step("fit", func=module.train, needs=("prep",))


def test_code_change_is_explained_with_a_diff(tmp_path, store):
    one = python_step(tmp_path, "keys_code_1", CODE)
    two = python_step(tmp_path, "keys_code_2", CODE.replace('"""Train."""', "# just a comment"))
    three = python_step(tmp_path, "keys_code_3", CODE.replace("prep + 1", "prep + 2"))
    key_one = step_key(one, upstream_digests={"prep": "a" * 32}, base_dir=tmp_path)
    key_two = step_key(two, upstream_digests={"prep": "a" * 32}, base_dir=tmp_path)
    key_three = step_key(three, upstream_digests={"prep": "a" * 32}, base_dir=tmp_path)
    assert key_one.digest == key_two.digest
    assert "command" not in key_one.components
    save(store, key_one, tmp_path, name="fit")
    (message,) = explain(store, "fit", key_three)
    lines = message.splitlines()
    assert lines[0] == "code changed"
    assert "-    return prep + 1" in lines
    assert "+    return prep + 2" in lines


def test_explain_states(base, store):
    key = key_of(base)
    assert explain(store, "train", key) == ["no entry yet for step 'train'"]
    entry = store.save("train", key, out_dir=store.scratch_dir("train"), ttl=10)
    assert explain(store, "train", key) == ["entry found: it is cached"]
    store.clock.now += 11
    assert explain(store, "train", key)[0].startswith(f"entry {key.short} expired")
    assert entry.path.exists()  # explain never removes anything


def test_a_mounted_script_s_exec_bit_counts_in_the_key(base, store):
    """A step that ran `./tool.sh` and succeeded was served again once the script had
    lost its x bit, though it would now fail (git counts the bit too)."""
    (base / "tools").mkdir()
    script = base / "tools" / "tool.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    for mounts in ({"tools/tool.sh": "/in/tool.sh"}, {"tools": "/in/tools"}):
        script.chmod(0o644)
        plain = key_of(base, mounts=mounts)
        script.chmod(0o755)
        executable = key_of(base, mounts=mounts)
        assert executable.digest != plain.digest
        save(store, plain, base)
        [said] = explain(store, "train", executable)
        assert said == f"input {next(iter(mounts))} changed"
        script.chmod(0o744)  # (any x bit: the same key)
        assert key_of(base, mounts=mounts).digest == executable.digest


def test_a_mount_without_exec_bits_keeps_its_key(base):
    """Counting the x bit changed no key of a file that has none: the pinned keys hold
    (tests/test_key_pins.py), and caches made before are still hit."""
    from dagnb.cache.keys import text_digest
    from dagnb.fingerprint.paths import path_digest

    raw = base / "data" / "raw.csv"
    assert path_digest(raw, modes=True) == path_digest(raw)
    assert path_digest(base / "data", modes=True) == path_digest(base / "data")
    expected = text_digest(f"/in/raw.csv\n{path_digest(raw)}")
    assert key_of(base).components["mount:data/raw.csv"] == expected


@pytest.mark.parametrize("spelled", ["./data", "data/", "data//", "./data/."])
def test_a_mount_spelled_another_way_keeps_its_key(base, spelled):
    """``./data`` and ``data/`` are the folder ``data``: rewriting one as the other ran
    a cached step again."""
    assert key_of(base, mounts={spelled: "/in"}).digest == \
        key_of(base, mounts={"data": "/in"}).digest


def test_two_spellings_of_one_mounted_folder_both_count_as_before(base):
    both = key_of(base, mounts={"data": "/in", "./data": "/also"})
    assert len([label for label in both.components if label.startswith("mount:")]) == 2
    assert both.digest != key_of(base, mounts={"data": "/in"}).digest


def test_explain_compares_with_the_closest_entry_not_the_newest(base, store):
    """Two workflows sharing a cache folder both have a step 'train': the newest entry
    was the other one's, and explain said everything about it had changed."""
    save(store, key_of(base), base)
    store.clock.now += 10  # the other workflow's step of the same name, stored later
    save(store, key_of(base, run="make model", image="r:4", env={}, params={"k": 2}), base)
    assert explain(store, "train", key_of(base, image="python:3.12")) == [
        "image changed python:3.11 → python:3.12"]


def test_explain_takes_the_newest_of_the_entries_as_close(base, store):
    save(store, key_of(base, params={"n": 1}), base)
    store.clock.now += 10
    save(store, key_of(base, params={"n": 2}), base)
    [said] = explain(store, "train", key_of(base, params={"n": 3}))
    assert "{'n': 2} → {'n': 3}" in said


def test_explain_frame_has_one_row_per_change(base, store):
    save(store, key_of(base), base)
    frame = explain_frame(store, "train", key_of(base, image="python:3.12", params={"n": 5}))
    assert list(frame.columns) == ["component", "change", "before", "after", "message"]
    assert frame["component"].tolist() == ["image", "params"]
    assert frame.loc[0, "before"] == "python:3.11" and frame.loc[0, "after"] == "python:3.12"


def test_secret_values_never_reach_the_key(base, monkeypatch):
    monkeypatch.setenv("TOKEN", "hunter2")
    key = key_of(base)
    text = repr(key.components) + repr(key.describe)
    assert "hunter2" not in text


def test_params_of_scalars_are_written_as_the_encoder_writes_them():
    """A step's params text, written without the encoder for names and scalars, is the
    canonical JSON it always was (so every key stays the same); other values go to it."""
    from types import MappingProxyType

    from dagnb.cache.keys import _canonical, _params_text

    cases = [{}, {"i": 3}, {"b": 1, "a": "x"}, {"\u00e9": "\u00fc\n\"\\", "z": None, "t": True},
             {"f": False, "n": -10**40}, {"x": 1.5}, {"l": [1, 2]}, {"d": {"b": 1, "a": 2}},
             {"u": "\ud800"}, {"k": "\u65e5\u672c"}, {1: 2}]
    for params in cases:
        assert _params_text(MappingProxyType(params)) == _canonical(dict(params))


# ------------------------------------------------ code a step reaches other than by name


def project_module(tmp_path: Path, monkeypatch, name: str, source: str):
    """A module of the project's, importable by name (and forgotten after the test)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", True)  # (an edit of the same size in
    monkeypatch.syspath_prepend(str(tmp_path))              # the same second: no .pyc)
    monkeypatch.delitem(sys.modules, name, raising=False)
    (tmp_path / f"{name}.py").write_text(textwrap.dedent(source))
    return importlib.import_module(name)


def edited(tmp_path: Path, module, old: str, new: str):
    """``module`` with ``old`` replaced by ``new`` in its file, and loaded again."""
    path = tmp_path / f"{module.__name__}.py"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new))
    linecache.checkcache()
    return importlib.reload(module)


def func_key(tmp_path: Path, func) -> str:
    step = Step("fit", func=func, needs=("prep",))
    return step_key(step, upstream_digests={"prep": "a" * 32}, base_dir=tmp_path).digest


FEATS = """
    def make(x):
        return x + 1

    def other(x):
        return x
"""


@pytest.mark.parametrize("read", ['getattr(keys_feats, "make")', 'keys_feats.__dict__["make"]',
                                  'vars(keys_feats)["make"]'])
def test_a_project_modules_member_read_by_a_name_in_text_counts(tmp_path, monkeypatch, read):
    feats = project_module(tmp_path, monkeypatch, "keys_feats", FEATS)
    steps = project_module(tmp_path, monkeypatch, "keys_feats_steps",
                           f"import keys_feats\n\ndef train(prep):\n    return {read}(prep)\n")
    before = func_key(tmp_path, steps.train)
    edited(tmp_path, feats, "return x\n", "return x * 2\n")  # (a member it does not read)
    assert func_key(tmp_path, importlib.reload(steps).train) == before
    edited(tmp_path, feats, "x + 1", "x + 2")
    assert func_key(tmp_path, importlib.reload(steps).train) != before


ATTRIBUTES = """
    def tagged(rate):
        def deco(f):
            f.rate = rate
            return f
        return deco

    @tagged(0.5)
    def by_decorator():
        return 100 * by_decorator.rate

    def by_assignment():
        return 100 * by_assignment.rate

    by_assignment.rate = 0.5

    def other():
        return 1

    def train(prep):
        return prep + by_decorator() + by_assignment()
"""


@pytest.mark.parametrize("edit", [("@tagged(0.5)", "@tagged(0.7)"),
                                  ("by_assignment.rate = 0.5", "by_assignment.rate = 0.7")],
                         ids=["decorator", "assignment"])
def test_a_project_functions_attributes_count(tmp_path, monkeypatch, edit):
    steps = project_module(tmp_path, monkeypatch, "keys_attributes", ATTRIBUTES)
    before = func_key(tmp_path, steps.train)
    steps = edited(tmp_path, steps, "return 1\n", "return 2\n")  # (a function it does not call)
    assert func_key(tmp_path, steps.train) == before
    steps = edited(tmp_path, steps, *edit)
    assert func_key(tmp_path, steps.train) != before
    changed = func_key(tmp_path, steps.train)
    steps.by_assignment.rate = 0.9  # (set again in the process: a notebook's cell)
    assert func_key(tmp_path, steps.train) != changed


METAS = """
    class Meta(type):
        def value(cls):
            return 1

    def other():
        return 10
"""


def test_a_project_metaclass_counts_by_its_code(tmp_path, monkeypatch):
    metas = project_module(tmp_path, monkeypatch, "keys_metas", METAS)
    steps = project_module(tmp_path, monkeypatch, "keys_metas_steps", """
        from keys_metas import Meta

        class Model(metaclass=Meta):
            pass

        def train(prep):
            return prep + Model.value()
    """)
    before = func_key(tmp_path, steps.train)
    edited(tmp_path, metas, "return 10", "return 30")  # (not the metaclass's)
    assert func_key(tmp_path, importlib.reload(steps).train) == before
    edited(tmp_path, metas, "return 1\n", "return 2\n")
    assert func_key(tmp_path, importlib.reload(steps).train) != before


def test_what_a_librarys_wrapper_keeps_on_itself_is_not_an_attribute_that_counts(
        tmp_path, monkeypatch):
    """singledispatch's registry (a mappingproxy no hash takes), nor its copy that
    functools.wraps puts on a project's wrapper: the step stays cached as before."""
    from dagnb.fingerprint import code_with_values

    steps = project_module(tmp_path, monkeypatch, "keys_dispatch", """
        import functools

        def logged(f):
            @functools.wraps(f)
            def wrapper(x):
                return f(x)
            return wrapper

        @logged
        @functools.singledispatch
        def describe(x):
            return "thing"

        @describe.register
        def _(x: int):
            return "number"

        def train(prep):
            return describe(prep)
    """)
    assert code_with_values(steps.train)[1] == {}
    before = func_key(tmp_path, steps.train)
    steps.describe(1.5)  # (its dispatch cache filled)
    assert func_key(tmp_path, steps.train) == before
