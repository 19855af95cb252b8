"""A Python step is keyed by the environment variables its code reads by a name written
in it (``os.environ["REGION"]``, ``os.getenv("REGION")``), as a shell step is by
``$REGION``: before, a run with another value was served the first value's result.
Those it sets itself, its secrets, the machine's and a container run's stay out."""

from __future__ import annotations

import os
from os import environ, getenv
from pathlib import Path

import pytest

import dagnb
from dagnb.cache import step_key
from dagnb.fingerprint.environ import environ_names
from dagnb.model.step import Step

NAMES = ("REGION", "ZONE", "TIER", "MODE", "SEEN", "SET_HERE", "LATER", "DB_PASS", "API_TOKEN")


@pytest.fixture(autouse=True)
def clean(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in NAMES:
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def every_way() -> tuple[object, ...]:
    items = [os.getenv(n) for n in ("DYNAMIC",)]  # (a name made at run time: not seen)
    return (os.environ["REGION"], os.environ.get("ZONE", "z"), os.getenv("TIER"),
            environ.get("MODE"), getenv("LATER"), "SEEN" in os.environ, items)


def sets_its_own() -> str:
    os.environ["SET_HERE"] = "1"
    os.environ.setdefault("MODE", "fast")
    return os.environ["SET_HERE"] + os.environ["MODE"]


def _region_helper() -> str:
    return os.environ.get("REGION", "none")


def through_a_helper() -> str:
    return _region_helper()


def reads_home_and_a_secret() -> str:
    return os.environ.get("HOME", "") + os.environ.get("API_TOKEN", "")


def reads_a_password() -> str:
    return os.environ["DB_PASS"]


def region() -> str:
    return os.environ.get("REGION", "none")


def test_the_names_read_and_set_are_found_in_the_bytecode() -> None:
    read, written, _ = environ_names(every_way.__code__, every_way.__globals__)
    assert read == {"REGION", "ZONE", "TIER", "MODE", "LATER", "SEEN"}
    assert written == set()
    read, written, _ = environ_names(sets_its_own.__code__, sets_its_own.__globals__)
    assert written == {"SET_HERE", "MODE"}


def test_a_bare_environ_that_is_not_oss_counts_nothing() -> None:
    namespace = {"environ": {"REGION": "mine"}, "getenv": os.getenv}
    code = compile('def f():\n    return environ["REGION"], getenv("ZONE")\n', "<t>", "exec")
    inner = next(c for c in code.co_consts if hasattr(c, "co_code"))
    assert environ_names(inner, namespace)[0] == {"ZONE"}


def _components(func: object, **options: object) -> dict[str, str]:
    return dict(step_key(Step("s", func=func), upstream_digests={}, base_dir=Path("."),
                         **options).components)


def test_each_variable_read_is_a_component_and_its_value_moves_the_key(
        monkeypatch: pytest.MonkeyPatch) -> None:
    labels = {label for label in _components(every_way) if label.startswith("host_var:")}
    assert labels == {f"host_var:{n}" for n in ("REGION", "ZONE", "TIER", "MODE", "LATER",
                                                "SEEN")}
    before = _components(every_way)
    monkeypatch.setenv("TIER", "gold")
    after = _components(every_way)
    # (``var:environ`` too: a global imported from os counts by value, as ever)
    assert {k for k in after if after[k] != before[k] and k.startswith("host_var:")} == {
        "host_var:TIER"}


def test_a_container_run_and_the_names_it_sets_leave_no_component() -> None:
    assert not any(k.startswith("host_var:") for k in _components(every_way, container=True))
    assert not any(k.startswith("host_var:") for k in _components(sets_its_own))


def test_machine_variables_and_secrets_leave_no_component(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("API_TOKEN", "tok-Qx7Rv2Lm9Pw4Zk8N")
    assert not any(k.startswith("host_var:") for k in _components(reads_home_and_a_secret))
    monkeypatch.setenv("DB_PASS", "pw-Hd3Jf8Ks2Mn6")  # (named like one: keyed, never shown)
    shown = step_key(Step("s", func=reads_a_password), upstream_digests={},
                     base_dir=Path(".")).describe
    assert shown["host_var:DB_PASS"] == "<not shown>" and "pw-Hd3" not in repr(shown)
    declared = Step("s", func=region, secrets=["REGION"])
    monkeypatch.setenv("REGION", "eu-secret-value")
    key = step_key(declared, upstream_digests={}, base_dir=Path("."))
    assert "host_var:REGION" not in key.components
    assert "eu-secret-value" not in repr(key.describe)


def test_a_step_runs_again_when_a_variable_it_reads_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    graph = dagnb.Graph("env", [dagnb.Step("r", func=region),
                                dagnb.Step("h", func=through_a_helper)])

    def run() -> dagnb.Run:
        return graph.run(cache_directory="cache", executor="local")

    monkeypatch.setenv("REGION", "eu")
    assert set(run().states().values()) == {"succeeded"}
    monkeypatch.setenv("REGION", "ap")
    done = run()
    assert done.states() == {"r": "succeeded", "h": "succeeded"}
    assert (done.result("r"), done.result("h")) == ("ap", "ap")
    assert set(run().states().values()) == {"cached"}
    monkeypatch.setenv("REGION", "us")
    assert graph.explain("r", cache_directory="cache") == [
        "host variable REGION changed: ap → us"]


def test_a_step_that_sets_a_variable_stays_cached_in_the_same_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    graph = dagnb.Graph("own", [dagnb.Step("s", func=sets_its_own)])
    first = graph.run(cache_directory="cache", executor="local")
    assert first.states() == {"s": "succeeded"} and os.environ["SET_HERE"] == "1"
    assert graph.run(cache_directory="cache", executor="local").states() == {"s": "cached"}


def test_a_memory_cached_function_misses_when_a_variable_it_reads_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    calls = []

    def scaled(x: int) -> tuple[int, str]:
        calls.append(x)
        return x, os.environ.get("REGION", "none")

    cached = dagnb.Memory("mem").cache(scaled)
    monkeypatch.setenv("REGION", "eu")
    assert cached(1) == (1, "eu")
    assert cached(1) == (1, "eu") and len(calls) == 1
    monkeypatch.setenv("REGION", "ap")
    assert cached(1) == (1, "ap") and len(calls) == 2
    monkeypatch.setenv("REGION", "eu")  # (its own entry: a hit)
    assert cached(1) == (1, "eu") and len(calls) == 2


def takes_it_whole() -> list[str]:
    return sorted(name for name in os.environ if name.startswith("REG"))


def builds_a_child_environment() -> dict[str, str]:
    return {**os.environ, "EXTRA": "1"}


def reads_by_a_made_name(prefix: str = "REG") -> str | None:
    return os.environ.get(prefix + "ION")


@pytest.mark.parametrize(("func", "unkeyed"), [
    (takes_it_whole, {"whole"}), (builds_a_child_environment, {"whole"}),
    (reads_by_a_made_name, {"dynamic"}), (region, set()), (sets_its_own, set()),
    (every_way, {"dynamic"}),
])
def test_the_reads_no_key_can_name_are_found(func: object, unkeyed: set[str]) -> None:
    code = func.__code__  # type: ignore[attr-defined]
    assert environ_names(code, func.__globals__)[2] == unkeyed  # type: ignore[attr-defined]


@pytest.mark.parametrize(("func", "said"), [
    (takes_it_whole, "its code reads its whole environment (dict(os.environ), .items(), "
                     "a loop over it, env=os.environ)"),
    (reads_by_a_made_name, "its code reads variables by names made at run time "
                           "(os.environ[name], os.getenv(name))"),
])
def test_a_step_reading_what_no_key_can_name_is_warned_of_once_on_a_hit(
        monkeypatch: pytest.MonkeyPatch, func: object, said: str) -> None:
    import warnings

    import dagnb.runtime.unmounted as unmounted
    from dagnb.runtime.unmounted import UnkeyedEnvironmentWarning

    for name, empty in (("_PRINTS_ENVIRONMENT", {}), ("_WARNED_ENVIRONMENT", set())):
        monkeypatch.setattr(unmounted, name, empty)
    graph = dagnb.Graph("whole", [dagnb.Step("w", func=func)])

    def run() -> tuple[str, list[str]]:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            state = graph.run(cache_directory="cache", executor="local").states()["w"]
        return state, [str(w.message) for w in caught
                       if issubclass(w.category, UnkeyedEnvironmentWarning)]

    monkeypatch.setenv("REGION", "eu")
    assert run() == ("succeeded", [])
    monkeypatch.setenv("REGION", "ap")
    assert run() == ("cached", [
        f"step 'w' was served from the cache, but {said}, whose values its key does not "
        "hold: the result may be stale; read each variable it needs by a name written in "
        'the code (os.environ["REGION"]), which then counts in its key, or pass it as a '
        "param"])
    assert run() == ("cached", [])  # (once a step and process)


def test_a_notebook_cell_reading_a_variable_runs_again_when_it_changes(
        shell: object, monkeypatch: pytest.MonkeyPatch) -> None:
    from dagnb.notebook.session import get_session

    cell = "value = os.environ.get('REGION', 'none')\n"
    shell.run_cell("import os")  # type: ignore[attr-defined]
    monkeypatch.setenv("REGION", "eu")
    shell.run_cell_magic("dagger", "r --python --outputs value", cell)  # type: ignore[attr-defined]
    assert get_session().last_run.states() == {"r": "succeeded"}
    monkeypatch.setenv("REGION", "ap")
    shell.run_cell_magic("dagger", "r --python --outputs value", cell)  # type: ignore[attr-defined]
    assert get_session().last_run.states() == {"r": "succeeded"}
    assert shell.user_ns["value"] == "ap"  # type: ignore[attr-defined]
    shell.run_cell_magic("dagger", "r --python --outputs value", cell)  # type: ignore[attr-defined]
    assert get_session().last_run.states() == {"r": "cached"}


def test_a_bytecode_walk_that_fails_leaves_the_key_made(
        monkeypatch: pytest.MonkeyPatch) -> None:
    import dagnb.fingerprint.environ as environ_module

    def fails(code: object) -> None:
        raise ValueError("bytecode of a future Python")

    monkeypatch.setattr(environ_module, "_names_in", fails)
    assert environ_names(region.__code__, region.__globals__) == (set(), set(), set())
    assert "host_var:REGION" not in _components(lambda: os.environ.get("REGION"))


ALIASED = '''
import os as o
from os import environ as E, getenv as g

def through_module_alias():
    return o.environ.get("REGION"), o.getenv("ZONE"), o.environ["TIER"]

def through_global_aliases():
    return E.get("MODE"), g("LATER"), "SEEN" in E

def through_body_imports():
    import os as osmod
    from os import environ as env, getenv as read
    return osmod.environ["REGION"], env.get("ZONE"), read("TIER")

def sets_through_an_alias():
    o.environ["SET_HERE"] = "1"
    return o.environ["SET_HERE"]

def takes_it_whole_through_an_alias():
    return dict(E)
'''


def _aliased(name: str) -> object:
    namespace: dict[str, object] = {}
    exec(compile(ALIASED, "<aliased>", "exec"), namespace)
    return namespace[name]


@pytest.mark.parametrize(("name", "read"), [
    ("through_module_alias", {"REGION", "ZONE", "TIER"}),
    ("through_global_aliases", {"MODE", "LATER", "SEEN"}),
    ("through_body_imports", {"REGION", "ZONE", "TIER"}),
    ("sets_through_an_alias", {"SET_HERE"}),  # (read and set: the key leaves it out)
])
def test_variables_read_through_another_name_of_os_are_found(name: str, read: set[str]) -> None:
    """``import os as o``, ``from os import environ as E`` (in the module or the body):
    the reads were unseen, and a run with another REGION was served the old result."""
    func = _aliased(name)
    found, written, unkeyed = environ_names(func.__code__, func.__globals__)
    assert (found, unkeyed) == (read, set())
    assert written == ({"SET_HERE"} if name == "sets_through_an_alias" else set())


def test_a_whole_environment_taken_through_an_alias_is_unkeyed() -> None:
    func = _aliased("takes_it_whole_through_an_alias")
    assert environ_names(func.__code__, func.__globals__)[2] == {"whole"}


def test_a_global_of_an_aliased_name_that_is_not_oss_counts_nothing() -> None:
    namespace = {"o": {"environ": {}}, "E": {"MODE": "mine"}}
    code = compile('def f():\n    return o.environ.get("REGION"), E.get("MODE")\n', "<t>",
                   "exec")
    inner = next(c for c in code.co_consts if hasattr(c, "co_code"))
    assert environ_names(inner, namespace)[0] == set()


def test_a_memory_function_reading_through_an_alias_misses_when_the_variable_changes(
        monkeypatch: pytest.MonkeyPatch) -> None:
    func = _aliased("through_module_alias")
    cached = dagnb.Memory("mem").cache(func)
    monkeypatch.setenv("ZONE", "z1")
    monkeypatch.setenv("TIER", "t")
    monkeypatch.setenv("REGION", "eu")
    assert cached() == ("eu", "z1", "t")
    monkeypatch.setenv("REGION", "ap")
    assert cached() == ("ap", "z1", "t")
