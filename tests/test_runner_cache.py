"""The runner with the cache: hits, early cutoff, refresh, session, explain, no engine."""

from __future__ import annotations

import dataclasses
import threading
import time
import warnings
from pathlib import Path
from typing import ClassVar

import pytest

import dagnb
from dagnb import ExecutorUnavailable, Graph, Step
from dagnb.config import use_context
from dagnb.executors.capture import step_display

REPO = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("workdir")


def test_example_workflow_twice_second_run_all_cached() -> None:
    graph = dagnb.load(REPO / "workflows" / "example_workflow.yml")
    first = graph.run(executor="local")
    second = graph.run(executor="local")
    assert set(first.states().values()) == {"succeeded"}
    assert set(second.states().values()) == {"cached"}
    assert second.status()["cached"].all()
    # the replayed logs and outputs are those of the first run
    assert second.logs("report")["line"].tolist() == first.logs("report")["line"].tolist()
    assert (second.outputs("report") / "report.md").read_text() == \
        (first.outputs("report") / "report.md").read_text()


def test_python_results_come_back_from_the_cache() -> None:
    graph = Graph("py")
    graph.step(lambda: {"rows": 3, "names": ("a", "b")}, name="make")
    first = graph.run(executor="local")
    second = graph.run(executor="local")
    assert second.states() == {"make": "cached"}
    assert second.result("make") == first.result("make") == {"rows": 3, "names": ("a", "b")}


def test_early_cutoff_keeps_dependents_cached() -> None:
    graph = Graph("cut", [
        Step("up", run='echo 1 > "$DAGNB_OUT/x"'),
        Step("down", run='cat "$DAGNB_IN/up/x"', needs=["up"]),
    ])
    graph.run(executor="local")
    graph.replace(Step("up", run='echo 1 > "$DAGNB_OUT/x"  # same output, new command'))
    again = graph.run(executor="local")
    assert again.states() == {"up": "succeeded", "down": "cached"}
    graph.replace(Step("up", run='echo 2 > "$DAGNB_OUT/x"'))
    changed = graph.run(executor="local")
    assert changed.states() == {"up": "succeeded", "down": "succeeded"}


def _small_result() -> dict[str, int]:
    return {"x": 1}  # kept inline in a packed entry


def _big_result() -> list[int]:
    return list(range(3000))  # over the inline limit: a result file


def _files_and_result() -> int:
    (dagnb.current().out_dir / "f.txt").write_text("f")
    return 7


def _says(n: int) -> None:
    for i in range(n):
        print(f"line {i} of what the step says, the same result whatever it says")


def _small_result_said(n: int) -> dict[str, int]:
    _says(n)
    return {"x": 1}


def _none_said(n: int) -> None:
    _says(n)


def _displayed_and_said(n: int) -> int:
    step_display({"text/plain": "a figure"}, {})
    _says(n)
    return 1


_CHATTY = 2000  # lines: a log past what a pack record takes (1,000 lines, 32 KB)
_SAYERS = {
    "python result": {"func": _small_result_said},
    "python no result": {"func": _none_said},
    "python result and a display": {"func": _displayed_and_said},
    "shell, no files": {"run": 'for i in $(seq "$DAGNB_PARAM_N"); do echo "line $i"; done'},
}


_UPSTREAMS = {
    "shell files": {"run": 'echo hi > "$DAGNB_OUT/a"'},
    "python inline result": {"func": _small_result},
    "python file result": {"func": _big_result},
    "python files and result": {"func": _files_and_result},
    "python inline result, long log": {"func": _small_result_said, "params": {"n": _CHATTY}},
}


@pytest.mark.parametrize("first_cached", [False, True], ids=["uncached first", "cached first"])
@pytest.mark.parametrize("upstream", list(_UPSTREAMS))
def test_early_cutoff_holds_when_the_upstream_switches_between_uncached_and_cached(
        upstream: str, first_cached: bool) -> None:
    def graph(cached: bool) -> Graph:
        return Graph("switch", [Step("a", cache=cached, **_UPSTREAMS[upstream]),
                                Step("b", run='echo b > "$DAGNB_OUT/b"', needs=["a"])])

    graph(first_cached).run(executor="local")
    again = graph(not first_cached).run(executor="local")
    assert again.states() == {"a": "succeeded", "b": "cached"}


@pytest.mark.parametrize("order", [(1, _CHATTY), (_CHATTY, 1)], ids=["then long", "then short"])
@pytest.mark.parametrize("upstream", list(_SAYERS))
def test_early_cutoff_holds_when_only_the_upstreams_log_crosses_the_pack_limit(
        upstream: str, order: tuple[int, int]) -> None:
    """A log too long for a pack record makes the entry a folder; the output digest is
    of the result alone either way (logs are no output), so the steps after it hit."""
    def graph(n: int) -> Graph:
        return Graph("log", [Step("up", params={"n": n}, **_SAYERS[upstream]),
                             Step("down", run='echo down > "$DAGNB_OUT/d"', needs=["up"])])

    first, second = order
    assert graph(first).run(executor="local").states() == {"up": "succeeded",
                                                           "down": "succeeded"}
    assert graph(second).run(executor="local").states() == {"up": "succeeded", "down": "cached"}
    entries = dagnb.cache.entries("up")
    assert len(entries) == 2 and entries["size_bytes"].max() > 32 * 1024  # (crossed it)
    assert not all(str(path).endswith(".pack") for path in entries["path"])  # a folder


def test_refresh_runs_again_and_skip_cache_is_an_alias() -> None:
    graph = Graph("r", [Step("a", run="echo a"), Step("b", run="echo b", needs=["a"])])
    graph.run(executor="local")
    assert graph.run(executor="local", refresh=["b"]).states() == {"a": "cached",
                                                                    "b": "succeeded"}
    assert set(graph.run(executor="local", skip_cache=True).states().values()) == {"succeeded"}


def test_cache_false_and_session_policies(workdir: Path) -> None:
    graph = Graph("p", [Step("never", run="echo n", cache=False),
                        Step("memory", run="echo m", cache="session")])
    graph.run(executor="local")
    assert graph.run(executor="local").states() == {"never": "succeeded", "memory": "cached"}
    on_disk = dagnb.cache.entries()
    assert "memory" not in set(on_disk["step"]) and "never" not in set(on_disk["step"])


def test_refresh_of_an_unknown_step_is_refused_with_a_suggestion() -> None:
    graph = Graph("r", [Step("alpha", run="echo a")])
    with pytest.raises(dagnb.StepNotFoundError,
                       match=r"^refresh names 'alpah', which is no step of graph 'r'; "
                             r"did you mean 'alpha'\? \(its steps: alpha\)$"):
        graph.run(executor="local", refresh=["alpah"])


def test_refresh_that_is_not_true_false_or_names_is_refused_in_one_line() -> None:
    graph = Graph("r", [Step("alpha", run="echo a")])
    with pytest.raises(dagnb.ConfigError,
                       match=r"^refresh=1 must be True, False or a list of step names$"):
        graph.run(executor="local", refresh=1)  # type: ignore[arg-type]


def test_refresh_and_skip_cache_that_disagree_are_refused() -> None:
    graph = Graph("r", [Step("a", run="echo a"), Step("b", run="echo b")])
    graph.run(executor="local")
    with pytest.raises(dagnb.ConfigError, match=r"^refresh=\['a'\] and skip_cache=True disagree"):
        graph.run(executor="local", skip_cache=True, refresh=["a"])
    assert graph.run(executor="local", skip_cache=["a"], refresh=["a"]).states() == {
        "a": "succeeded", "b": "cached"}


def test_explain_names_what_changed() -> None:
    graph = Graph("e", [Step("a", run="echo a", image="python:3.11", params={"n": 1})])
    graph.run(executor="local")
    assert graph.explain("a") == ["entry found: it is cached"]
    graph.replace(graph["a"].replace(image="python:3.12", params={"n": 2}))
    reasons = " | ".join(graph.explain("a"))
    assert "image changed python:3.11 → python:3.12" in reasons
    assert "params changed" in reasons
    plan = graph.plan()
    assert plan.loc[0, "cached"] == False  # noqa: E712 - a numpy bool


@dataclasses.dataclass
class Scale:  # (eq=True leaves it no __hash__)
    factor: int

    def __call__(self, numbers: list[int]) -> list[int]:
        return [n * self.factor for n in numbers]


def test_a_callable_object_that_cannot_be_hashed_runs_and_is_cached_by_its_state() -> None:
    # It was a raw TypeError from the lru_caches keyed on the function.
    scale = Scale(3)
    graph = Graph("obj", [Step("numbers", func=lambda: [1, 2]),
                          Step("scaled", func=scale, needs=["numbers"])])
    assert graph.run(executor="local").result("scaled") == [3, 6]
    assert graph.run(executor="local").states()["scaled"] == "cached"
    scale.factor = 4  # its state counts, as a bound method's object does
    again = graph.run(executor="local")
    assert again.states()["scaled"] == "succeeded" and again.result("scaled") == [4, 8]


def test_a_plan_of_no_steps_has_the_columns_and_dtypes_of_one_with_steps() -> None:
    empty, full = Graph("empty").plan(), Graph("one", [Step("a", run="echo a")]).plan()
    assert empty.dtypes.to_dict() == full.dtypes.to_dict()
    assert list(empty[~empty["cached"]].columns) == ["step", "cached", "key", "reason"]


def test_plan_and_explain_say_a_cache_false_step_runs_though_an_old_entry_exists() -> None:
    graph = Graph("off", [Step("a", run="echo a")])
    graph.run(executor="local")
    graph.replace(graph["a"].replace(cache=False))
    assert graph.explain("a") == ["it runs every time: the step has cache=False"]
    plan = graph.plan()
    assert plan[["cached", "reason"]].values.tolist() == [
        [False, "it runs every time: the step has cache=False"]]
    assert graph.run(executor="local").states() == {"a": "succeeded"}


def test_comment_only_edit_of_a_function_step_is_a_hit() -> None:
    namespace: dict[str, object] = {}
    exec("def work():\n    return 41 + 1\n", namespace)
    graph = Graph("code")
    graph.step(namespace["work"], name="work")  # type: ignore[arg-type]
    graph.run(executor="local")
    exec("def work():\n    # a comment\n    return 41 + 1\n", namespace)
    graph.step(namespace["work"], name="work")  # type: ignore[arg-type]
    assert graph.run(executor="local").states() == {"work": "cached"}


NAMESAKES = """
from pathlib import Path
name, mean, json = "alice", 2.0, "not the module"  # named as the attributes, the import

def stem():
    import json
    import statistics
    return json.dumps([Path("data/raw.csv").name, statistics.mean([1, 3])])

def greet():
    return "hi " + name
"""


def test_a_global_named_as_an_attribute_or_an_import_of_a_step_is_not_its_input() -> None:
    """A step using ``.name``, ``.mean`` and ``import json`` stays cached when the
    globals ``name``, ``mean`` and ``json`` change (it ran again, "code changed"); one
    reading ``name`` runs again, explained by the variable."""
    namespace: dict[str, object] = {}
    exec(NAMESAKES, namespace)
    graph = Graph("namesakes")
    for name in ("stem", "greet"):
        graph.step(namespace[name], name=name)  # type: ignore[arg-type]
    graph.run(executor="local")
    namespace.update(name="bob", mean=2.5, json="another")
    assert graph.explain("stem") == ["entry found: it is cached"]
    assert graph.explain("greet") == ["notebook variable `name` changed: 'alice' → 'bob'"]
    assert graph.run(executor="local").states() == {"stem": "cached", "greet": "succeeded"}


def test_a_host_result_is_no_dagger_runs(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN", "_EXPERIMENTAL_DAGGER_CLI_BIN"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    graph = Graph("noengine", [Step("a", run="echo a")])
    with pytest.raises(ExecutorUnavailable, match=r"executor 'dagger' is needed for step 'a'"):
        graph.run(executor="dagger")
    graph.run(executor="local")  # a result made on the host is not a container's
    with pytest.raises(ExecutorUnavailable, match=r"executor 'dagger' is needed for step 'a'"):
        graph.run(executor="dagger")
    assert graph.run(executor="local").states() == {"a": "cached"}


def test_warm_fills_the_cache_for_a_later_run() -> None:
    graph = Graph("w", [Step("a", run="echo a"), Step("b", run="echo b", needs=["a"])])
    assert not graph.plan()["cached"].any()
    graph.warm(executor="local")
    assert graph.plan()["cached"].all()
    stats = dagnb.cache.stats()
    assert set(stats.index) == {"a", "b"} and stats["misses"].tolist() == [1, 1]


def test_run_level_ttl_applies_to_steps_that_set_none() -> None:
    graph = Graph("t", [Step("short", run="echo s"), Step("own", run="echo o", ttl="1d")])
    graph.run(executor="local", ttl="1h")
    entries = dagnb.cache.entries().set_index("step")
    lifetimes = (entries["expires"] - entries["created"]).dt.total_seconds()
    assert round(lifetimes["short"]) == 3600 and round(lifetimes["own"]) == 86400


def test_a_cache_that_cannot_be_written_does_not_fail_the_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagnb.cache.store import Store

    def full_disk(*args: object, **kwargs: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Store, "save", full_disk)
    graph = Graph("full", [Step("a", run='echo hi > "$DAGNB_OUT/x"'),
                           Step("b", run='cat "$DAGNB_IN/a/x"', needs=["a"])])
    with pytest.warns(UserWarning, match=r"ran but was not cached: .*No space left") as caught:
        run = graph.run(executor="local")
    assert sorted(str(w.message).split("'")[1] for w in caught) == ["a", "b"]
    assert {w.filename for w in caught} == {__file__}  # the run's line, not dagnb's
    assert run.states() == {"a": "succeeded", "b": "succeeded"}
    assert run.logs("b")["line"].tolist() == ["hi"]


def test_a_result_that_cannot_be_pickled_is_warned_of_at_the_line_that_ran_the_graph(
) -> None:
    graph = Graph("unpicklable")
    graph.step(lambda: threading.Lock(), name="lock")
    with pytest.warns(UserWarning, match="'lock': its result cannot be pickled") as caught:
        graph.run(executor="local")
    assert [w.filename for w in caught] == [__file__]  # (it named the scheduler's line)


def test_a_damaged_cached_result_fails_its_reader_once_then_rebuilds() -> None:
    graph = Graph("dmg")
    # a tuple: stored as a pickle; large: a file of its own, not a pack record
    graph.step(lambda: {"n": (1, 2), "pad": "x" * 4096}, name="make")
    graph.step(lambda make: make["n"][0], name="use", needs=["make"])
    first = graph.run(executor="local")
    (first.outputs("make") / "result.pkl").write_bytes(b"\x80\x05torn")
    with pytest.warns(UserWarning, match="damaged"):
        broken = graph.run(executor="local", refresh=["use"])
    assert broken.states()["use"] == "failed"
    error = broken.status().set_index("step").loc["use", "error"]
    assert "cached result of step 'make' was damaged" in error
    again = graph.run(executor="local")  # make runs again, same output: use stays cached
    assert again.states() == {"make": "succeeded", "use": "cached"}
    assert again.result("use") == 1


def _pickled_pad() -> dict[str, object]:
    # a tuple: stored as a pickle; large: a file of its own, not a pack record
    return {"n": (1, 2), "pad": "x" * 4096}


def _text_of(make: object) -> str:
    return str(make)[:9]  # what a step given a Path for the value would not notice


def _removed_graph() -> Graph:
    return Graph("gone", [Step("make", func=_pickled_pad),
                          Step("use", func=_text_of, needs=["make"])])


def _clear_in_another_process(location: Path) -> None:
    from dagnb.cache import Store
    from dagnb.testing import isolated

    with isolated():
        Store(location).clear()


_REMOVALS = {
    "another process's clear": _clear_in_another_process,
    "dagnb.cache.clear()": lambda _location: dagnb.cache.clear(),
    "eviction": lambda _location: dagnb.cache.reduce_size(items_limit=0),
}


@pytest.mark.parametrize("remove", list(_REMOVALS))
def test_an_upstream_entry_removed_after_its_hit_fails_its_reader_not_a_wrong_input(
    remove: str, monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagnb.cache import DamagedEntryWarning
    from dagnb.cache.steps import StepCache

    graph = _removed_graph()
    graph.run(executor="local")
    restore = StepCache.restore

    def restore_then_remove(self: StepCache, step: Step, entry: object) -> object:
        restored = restore(self, step, entry)  # type: ignore[arg-type]
        if step.name == "make":  # after the hit, before `use` loads its input
            _REMOVALS[remove](self.store.location)
        return restored

    monkeypatch.setattr(StepCache, "restore", restore_then_remove)
    with warnings.catch_warnings():
        warnings.simplefilter("error", DamagedEntryWarning)  # removed is not damaged
        broken = graph.run(executor="local", refresh=["use"])
    assert broken.states() == {"make": "cached", "use": "failed"}
    error = broken.status().set_index("step").loc["use", "error"]
    assert error == ("the cached result of step 'make' is gone: its cache entry was removed "
                     "(a cache clear or eviction) while this run used it; run again to "
                     "rebuild it")
    assert not (Path(".dagnb_cache") / ".damaged").exists()
    monkeypatch.undo()
    again = graph.run(executor="local")  # nothing wrong was stored: both run again
    assert again.states() == {"make": "succeeded", "use": "succeeded"}
    assert again.result("use") == "{'n': (1,"


def test_run_result_of_a_hit_whose_entry_was_cleared_is_an_error_not_none() -> None:
    from dagnb.errors import StepFailed

    graph = _removed_graph()
    graph.run(executor="local")
    run = graph.run(executor="local")
    assert run.states() == {"make": "cached", "use": "cached"}
    dagnb.cache.clear()
    for _ in range(2):  # asked again: the same error
        with pytest.raises(StepFailed, match=r"^the cached result of step 'make' is gone: "
                                             r"its cache entry was removed .*; run again"):
            run.result("make")


def test_a_damaged_result_read_by_two_steps_fails_both_as_damaged_set_aside_once() -> None:
    from dagnb.cache import DamagedEntryWarning

    graph = Graph("dmg2", [Step("make", func=_pickled_pad),
                           Step("one", func=_text_of, needs=["make"]),
                           Step("two", func=_text_of, needs=["make"])])
    first = graph.run(executor="local")
    (first.outputs("make") / "result.pkl").write_bytes(b"\x80\x05torn")
    with pytest.warns(DamagedEntryWarning, match="damaged") as caught:
        broken = graph.run(executor="local", refresh=["one", "two"])
    assert len([w for w in caught if issubclass(w.category, DamagedEntryWarning)]) == 1
    assert broken.states() == {"make": "cached", "one": "failed", "two": "failed"}
    errors = broken.status().set_index("step")["error"]
    assert errors["one"] == errors["two"] == (
        "the cached result of step 'make' was damaged and has been set aside; run again to "
        "rebuild it")


def test_a_result_file_deleted_under_an_entry_still_there_is_damage_not_no_result() -> None:
    from dagnb.cache import DamagedEntryWarning

    graph = _removed_graph()
    first = graph.run(executor="local")
    (first.outputs("make") / "result.pkl").unlink()  # the entry's folder stays
    with pytest.warns(DamagedEntryWarning, match="result file is missing"):
        broken = graph.run(executor="local", refresh=["use"])
    # (the store read the entry before: a hit checks its out/ folder, not each file)
    assert broken.states() == {"make": "cached", "use": "failed"}
    assert "cached result of step 'make' was damaged" in \
        broken.status().set_index("step").loc["use", "error"]


def test_hit_counts_are_written_as_each_run_ends_and_a_first_run_writes_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagnb.cache.store import Store

    flushed: list[tuple[Store, int]] = []
    flush = Store.flush
    monkeypatch.setattr(Store, "flush", lambda self: (
        flushed.append((self, self.pending_hits)), flush(self))[1])
    graph = Graph("flush", [Step("a", func=lambda: 1), Step("b", func=lambda: 2)])
    graph.run(executor="local")
    assert flushed == []  # a first run counted no hit: nothing to write
    for runs in range(1, 4):
        assert set(graph.run(executor="local").states().values()) == {"cached"}
        assert [hits for _store, hits in flushed] == [2] * runs  # before the run returned
        store = flushed[-1][0]
        assert store.pending_hits == 0
        assert sorted(Store(store.location).stats()["hits"]) == [runs, runs]  # on disk


def test_a_run_whose_steps_miss_claims_first_and_looks_once_under_the_lock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from dagnb.cache.store import Store

    looks: list[str] = []
    lookup = Store.lookup
    monkeypatch.setattr(Store, "lookup", lambda self, step, key, **kw: (
        looks.append(step), lookup(self, step, key, **kw))[1])
    graph = Graph("claims", [Step(f"s{i}", func=lambda i=i: i) for i in range(4)])
    graph.add(Step("t", func=lambda s3: s3 + 1, needs=["s3"]))
    graph.run(executor="local")
    assert looks == ["s0"]  # after a miss, the look under the lock is the only one
    graph.add(Step("u", func=lambda: 9))
    again = graph.run(executor="local")  # hits, then a miss: claimed, found missing, run
    assert set(again.states().values()) == {"cached", "succeeded"}
    assert again.states()["u"] == "succeeded" and again.result("t") == 4
    from dagnb import cache

    stats = cache.stats()
    assert stats.loc["s0", ["hits", "misses"]].tolist() == [1, 1]  # each look counted once
    assert stats.loc["u", ["hits", "misses"]].tolist() == [0, 1]


def test_a_shell_step_that_wrote_nothing_is_packed_and_its_empty_out_folder_stays(
    workdir: Path,
) -> None:
    from dagnb import cache
    from dagnb.cache.store import PackedEntry

    run = Graph("quiet", [Step("q", run="true")]).run(executor="local")
    assert run.states() == {"q": "succeeded"}
    assert (Path(run.workspace_text) / "q" / "out").is_dir()  # as with the cache off
    assert not (workdir / ".dagnb_cache" / "q").exists()  # a pack record, not a folder
    (entry,) = cache.default_store().iter_entries("q")
    assert isinstance(entry, PackedEntry)
    assert Graph("quiet", [Step("q", run="true")]).run(executor="local").states() == {
        "q": "cached"}


def _writes_a_file(text: str) -> str:
    (dagnb.current().out_dir / "f.txt").write_text(text)
    return text


def test_python_steps_files_are_cached_once_a_step_made_the_run_folder() -> None:
    # "a" writes no file (the run's folder is not made yet: nothing is looked at),
    # "b" makes it; each is stored as it is, and a new process restores both
    graph = Graph("files", [
        Step("a", func=lambda: 1),
        Step("b", func=_writes_a_file, params={"text": "hi"}, needs=["a"]),
    ])
    first = graph.run(executor="local")
    assert first.ok and (first.outputs("b") / "f.txt").read_text() == "hi"
    with use_context():  # a fresh process's view of the cache
        second = graph.run(executor="local")
    assert second.states() == {"a": "cached", "b": "cached"}
    assert (second.outputs("b") / "f.txt").read_text() == "hi"
    assert second.result("a") == 1 and second.result("b") == "hi"


def test_a_step_that_mounts_its_project_folder_is_cached_whatever_its_cache_holds(workdir):
    """The platform's usual ``volumes: [{source: ., target: /workspace}]``: the folder
    holds the cache, which every run changes; what ``exclude`` names does not count."""
    (workdir / "data.csv").write_text("1,2\n")
    (workdir / "scratch").mkdir()

    def graph() -> Graph:
        return Graph("m", [Step("use", mounts={".": "/workspace"}, exclude=("scratch",),
                                run="cat data.csv")])

    assert graph().run(executor="local").states() == {"use": "succeeded"}
    (workdir / "scratch" / "tmp.txt").write_text("noise")  # excluded: no new key
    assert graph().run(executor="local").states() == {"use": "cached"}
    (workdir / "data.csv").write_text("1,3\n")  # what the step reads: runs again
    assert graph().run(executor="local").states() == {"use": "succeeded"}


def test_a_step_that_mounts_its_project_folder_is_cached_whatever_cache_folder_is_in_it(
        workdir):
    """``dagnb run --cache-dir build-cache`` (a cache of another name than the setting's,
    in the mounted folder), or another workflow's cache there: every run changes those
    folders, and the step was never a hit."""
    (workdir / "data.csv").write_text("1,2\n")
    graph = Graph("m", [Step("use", mounts={".": "/workspace"}, run="cat data.csv")])

    def run() -> dict[str, str]:
        return graph.run(executor="local", cache_directory=workdir / "build-cache").states()

    assert run() == {"use": "succeeded"}
    assert run() == {"use": "cached"}
    other = Graph("o", [Step("other", run='echo x > "$DAGNB_OUT/x"')])
    assert other.run(executor="local", cache_directory=workdir / "other-cache").ok
    assert run() == {"use": "cached"}
    (workdir / "data.csv").write_text("1,3\n")  # what the step reads: runs again
    assert run() == {"use": "succeeded"}


def test_a_mounted_folder_that_only_looks_like_a_cache_counts_in_the_key(workdir):
    """A folder holding a ``.locks`` (the Hugging Face hub's cache) is no dagnb cache:
    its files count, and changed, the step runs again."""
    weights = workdir / "hub" / "models--bert" / "weights.bin"
    weights.parent.mkdir(parents=True)
    (workdir / "hub" / ".locks").mkdir()
    weights.write_text("v1")
    graph = Graph("m", [Step("use", mounts={".": "/workspace"},
                             run="cat hub/models--bert/weights.bin")])

    def run() -> dict[str, str]:
        return graph.run(executor="local", cache_directory=workdir / "build-cache").states()

    assert run() == {"use": "succeeded"}
    assert run() == {"use": "cached"}
    weights.write_text("v2")
    assert run() == {"use": "succeeded"}


@pytest.mark.parametrize(("path", "left_out"), [
    (".git", True), ("a/.git", True), ("a/.git/HEAD", True), ("data/x.tmp", True),
    ("data/sub/x.tmp", False), ("build", True), ("build/out.bin", True), ("builder", False),
    ("src/build", False), ("notes.txt", False)])
def test_mount_patterns_are_dagger_s(path, left_out):
    from dagnb.cache.mounts import excluder

    assert excluder(["**/.git", "data/*.tmp", "/build/"])(path) is left_out


@pytest.mark.parametrize(("path", "left_out"), [
    ("a.csv", True), ("keep.csv", False), ("sub/b.csv", False), ("cache/", False),
    ("cache/x", True), ("cache/keep.txt", False), ("notes.txt", False)])
def test_a_mount_pattern_with_a_bang_takes_back_what_an_earlier_one_left_out(path, left_out):
    from dagnb.cache.mounts import excluder

    left = excluder(["*.csv", "!keep.csv", "cache", "!cache/keep.txt"])
    assert left(path) is left_out  # (a folder is walked: a file in it may be taken back)


def test_a_file_a_bang_takes_back_counts_in_the_key(workdir):
    (workdir / "data").mkdir()
    (workdir / "data" / "keep.csv").write_text("1\n")
    (workdir / "data" / "junk.csv").write_text("1\n")

    def run() -> dict[str, str]:
        step = Step("use", mounts={"data": "/data"}, exclude=("*.csv", "!keep.csv"),
                    run="true")
        return Graph("m", [step]).run(executor="local").states()

    assert run() == {"use": "succeeded"}
    (workdir / "data" / "junk.csv").write_text("2\n")
    assert run() == {"use": "cached"}
    (workdir / "data" / "keep.csv").write_text("2\n")
    assert run() == {"use": "succeeded"}


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_plan_says_an_entry_past_its_ttl_will_run(workdir):
    import time

    graph = Graph("ttl", [Step("brief", run="echo hi", ttl="1s")])
    assert graph.run(executor="local").states() == {"brief": "succeeded"}
    assert graph.plan()["cached"].tolist() == [True]
    time.sleep(1.2)
    plan = graph.plan()
    assert plan["cached"].tolist() == [False]
    assert plan["reason"].tolist() == ["its cache entry has expired"]
    assert graph.run(executor="local").states() == {"brief": "succeeded"}


def test_a_ttl_set_or_made_shorter_later_applies_to_the_entries_saved_before():
    """An entry's expiry is fixed when it is saved; a step given a ttl since (or a
    shorter one) must not be served an entry older than its ttl says, by a run, a plan,
    explain or fail-on-miss."""
    from dagnb.errors import CacheMissError

    graph = Graph("ttl", [Step("fetch", run="echo prices"), Step("kept", run="echo k")])
    assert graph.run(executor="local").states() == {"fetch": "succeeded", "kept": "succeeded"}
    time.sleep(0.3)  # both entries saved with no ttl: they never expire by themselves
    graph.replace(graph["fetch"].replace(ttl="200ms"))
    assert graph.plan()["reason"].tolist() == ["its cache entry has expired", "cached"]
    assert graph.explain("fetch") == ["entry " + graph.plan()["key"][0] + " expired: it "
                                      "will run again"]
    with pytest.raises(CacheMissError) as refused:
        graph.run(executor="local", cache_mode="fail-on-miss")
    assert refused.value.misses == [("fetch", "its cache entry has expired")]
    assert graph.run(executor="local").states() == {"fetch": "succeeded", "kept": "cached"}
    time.sleep(0.3)  # the run-level ttl (the cache_ttl_seconds setting's) counts too
    assert graph.run(executor="local", ttl="200ms").states() == {"fetch": "succeeded",
                                                                  "kept": "succeeded"}


def test_a_cache_removed_right_after_a_run_that_hit_and_pruned_stays_removed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A TemporaryDirectory left: the hit counts were written, and old runs pruned, as
    the run ended; nothing is written into the cache as it goes, or makes it again."""
    import shutil

    from dagnb.runtime import history

    monkeypatch.setattr(history, "_draw", lambda: 0.0)  # every run that may prune does
    folder = tmp_path / "cache"
    graph = Graph("g", [Step("one", func=_small_result), Step("two", run="true", cache=False)])
    graph.run(executor="local", cache_directory=folder)
    again = graph.run(executor="local", cache_directory=folder)
    assert again.states() == {"one": "cached", "two": "succeeded"}
    assert again.workspace.exists()  # (a run that made a folder: it prunes)
    shutil.rmtree(folder)
    time.sleep(0.05)  # (were anything still writing, it would be writing now)
    assert not folder.exists()


_SHARED_RUN = """
import sys, time
from pathlib import Path
import dagnb

def work(i):
    with open("ran.txt", "a") as handle:
        handle.write(f"{i}\\n")
    time.sleep(0.3)
    return i * 2

while time.time() < float(sys.argv[1]):  # both runs start together
    pass
graph = dagnb.Graph("shared", [dagnb.Step(f"s{i}", func=work, params={"i": i})
                               for i in range(3)])
run = graph.run(executor="local", cache_directory="cache", max_concurrency=1)
print(sorted(run.states().values()), [run.result(f"s{i}") for i in range(3)])
"""


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_two_processes_running_the_same_python_steps_run_each_once(workdir: Path) -> None:
    """A step's key lock, taken at once when free, makes the other run wait for it and
    then hit: each step ran in one process only, and both runs have its result."""
    import subprocess
    import sys
    import time

    (workdir / "shared.py").write_text(_SHARED_RUN)
    start_at = str(time.time() + 1.0)
    runs = [subprocess.Popen([sys.executable, "shared.py", start_at], cwd=workdir, text=True,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE) for _ in "ab"]
    outputs = [run.communicate(timeout=60) for run in runs]
    assert [run.returncode for run in runs] == [0, 0], outputs
    assert sorted((workdir / "ran.txt").read_text().split()) == ["0", "1", "2"]
    assert {out for out, _ in outputs} <= {
        f"{states} [0, 2, 4]\n" for states in (
            ["succeeded"] * 3, ["cached"] * 3, ["cached", "succeeded", "succeeded"],
            ["cached", "cached", "succeeded"])}
    assert "cached" in "".join(out for out, _ in outputs)


class _Model:
    PARAMS: ClassVar[dict[str, int]] = {"lr": 1}

    def fit(self) -> int:
        return 100 * self.PARAMS["lr"]


def test_a_class_attribute_changed_in_place_runs_a_method_step_again(workdir: Path) -> None:
    """A notebook session: ``Model.PARAMS["lr"] = 2`` between two runs of a step that is
    a method of a model object (``func=m.fit``, a cell's ``r = m.fit()``). The class's
    record was checked for a new member only, and the old result was served."""
    model = _Model()
    graph = Graph("model", [Step("fit", func=model.fit)])
    try:
        assert graph.run(executor="local").result("fit") == 100
        _Model.PARAMS["lr"] = 2
        again = graph.run(executor="local")
        assert (again.result("fit"), again.states()["fit"]) == (200, "succeeded")
        assert graph.run(executor="local").states()["fit"] == "cached"  # and held then
    finally:
        _Model.PARAMS["lr"] = 1
