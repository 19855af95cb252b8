"""Cache modes: read-write, read-only (writes nothing), fail-on-miss (refuses a run that
would execute a step, listing each with why), off; from the setting, the environment,
the config file, ``dagnb run --cache-mode``, the magics and ``dagnb.Memory``."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import Any

import pytest

import dagnb
from dagnb import CacheError, CacheMissError, ConfigError, Graph, Step
from dagnb.cache import Store
from dagnb.cli import main
from dagnb.runtime.history import last_states


def _counted(counter: Path, name: str, value: str = "1") -> str:
    """A shell step that appends its name to ``counter`` (one line per execution)."""
    return f'echo {name} >> {counter}; echo {value} > "$DAGNB_OUT/{name}.txt"'


def _graph(folder: Path, b_value: str = "1") -> Graph:
    counter = folder / "executions.txt"
    return Graph("modes", [
        Step("a", run=_counted(counter, "a")),
        Step("b", run=_counted(counter, "b", b_value), needs=["a"]),
        Step("c", run=f'cat "$DAGNB_IN/b/b.txt" >> {counter}', needs=["b"]),
    ])


def _workflow(folder: Path, b_value: str = "1") -> Path:
    counter = folder / "executions.txt"
    path = folder / "wf.yml"
    path.write_text(
        "steps:\n"
        f"  a: {{run: '{_counted(counter, 'a')}'}}\n"
        f"  b: {{run: '{_counted(counter, 'b', b_value)}', needs: [a]}}\n"
    )
    return path


def _executions(folder: Path) -> list[str]:
    counter = folder / "executions.txt"
    return counter.read_text().split() if counter.exists() else []


def _tree(root: Path) -> dict[str, tuple[Any, ...]]:
    """Every file and folder under ``root``: mtime, size and (files) a content digest."""
    found: dict[str, tuple[Any, ...]] = {}
    for folder, dirs, files in os.walk(root):
        for name in dirs + files:
            path = Path(folder, name)
            st = path.lstat()
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if name in files else None
            found[str(path.relative_to(root))] = (st.st_mtime_ns, st.st_size, digest)
    return found


# -- fail-on-miss -------------------------------------------------------------------------
def test_fail_on_miss_exits_2_listing_every_step_that_would_run_and_runs_none(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = _workflow(project)
    code = main(["run", str(wf), "--executor", "local", "--cache-mode", "fail-on-miss"])
    err = capsys.readouterr().err
    assert code == 2
    assert _executions(project) == []
    assert "fail-on-miss" in err.splitlines()[0] and "2 steps would run" in err
    assert "  a: no entry yet for step 'a'" in err
    assert "  b: no entry yet for step 'b'" in err
    assert not (project / ".dagnb_cache" / ".runs").exists()  # no run was started


def test_fail_on_miss_runs_a_fully_cached_workflow(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    wf = _workflow(project)
    assert main(["run", str(wf), "--executor", "local"]) == 0
    assert main(["run", str(wf), "--executor", "local", "--cache-mode", "fail-on-miss"]) == 0
    assert "2 cached" in capsys.readouterr().out
    assert _executions(project) == ["a", "b"]  # the first run's only


def test_fail_on_miss_names_only_the_changed_step_with_explains_reason(workdir: Path) -> None:
    _graph(workdir).run(executor="local")
    changed = _graph(workdir, b_value="2")
    with pytest.raises(CacheMissError, match="1 step would run, 1 may run") as refused:
        changed.run(executor="local", cache_mode="fail-on-miss")
    assert [name for name, _ in refused.value.misses] == ["b", "c"]
    assert refused.value.misses[0][1].startswith("command changed")
    assert _executions(workdir) == ["a", "b", "1"]
    assert changed.last_run is None  # a refused run is not started


def test_fail_on_miss_counts_expired_refreshed_and_uncached_steps_as_misses(
        workdir: Path) -> None:
    graph = Graph("g", [Step("old", run="true", ttl=0.001), Step("fresh", run="true"),
                        Step("never", run="true", cache=False)])
    graph.run(executor="local")
    time.sleep(0.01)  # past old's 1 ms ttl, however fast the first run ended
    with pytest.raises(CacheMissError) as refused:
        graph.run(executor="local", cache_mode="fail-on-miss", refresh=["fresh"])
    assert dict(refused.value.misses) == {
        "old": "its cache entry has expired",
        "fresh": "refresh asks to run it again",
        "never": "it runs every time: the step has cache=False",
    }


@pytest.mark.parametrize("given", [None, "new/cache"])
def test_a_fail_on_miss_run_refused_makes_no_cache_folder(workdir: Path, given: str | None) -> None:
    cache = workdir / (given or ".dagnb_cache")
    with pytest.raises(CacheMissError, match="3 steps would run") as refused:
        _graph(workdir).run(executor="local", cache_mode="fail-on-miss", cache_directory=given)
    assert [name for name, _ in refused.value.misses] == ["a", "b", "c"]
    assert sorted(os.listdir(workdir)) == []  # (not even new/)
    _graph(workdir).run(executor="local", cache_directory=given)  # filled: the folder is made
    again = _graph(workdir).run(executor="local", cache_mode="fail-on-miss", cache_directory=given)
    assert set(again.states().values()) == {"cached"} and cache.is_dir()


# -- read-only ----------------------------------------------------------------------------
def test_read_only_serves_hits_runs_misses_and_writes_nothing(workdir: Path) -> None:
    cache = workdir / ".dagnb_cache"
    _graph(workdir).run(executor="local")
    _graph(workdir).run(executor="local")  # hits: the journal of uses exists too
    before = _tree(cache)
    assert any(path.startswith(".access") for path in before)
    changed = _graph(workdir, b_value="2")
    first = changed.run(executor="local", cache_mode="read-only")
    again = changed.run(executor="local", cache_mode="read-only")
    dagnb.cache.store_for(read_only=True).flush()
    assert first.states() == {"a": "cached", "b": "succeeded", "c": "succeeded"}
    assert again.states() == first.states()  # nothing was stored by the first
    assert (again.outputs("b") / "b.txt").read_text() == "2\n"
    assert _tree(cache) == before


def test_read_only_makes_no_cache_folder(workdir: Path) -> None:
    run = _graph(workdir).run(executor="local", cache_mode="read-only")
    assert set(run.states().values()) == {"succeeded"}
    assert not (workdir / ".dagnb_cache").exists()


def test_read_only_leaves_expired_and_damaged_entries_where_they_are(tmp_path: Path) -> None:
    now = [1000.0]
    writer = Store(tmp_path, clock=lambda: now[0])
    for key in ("old", "torn"):
        out = writer.scratch_dir("s")
        (out / "x").write_text("data")
        writer.save("s", key, out_dir=out, ttl=10 if key == "old" else None)
    (tmp_path / "s" / "torn" / "out" / "x").write_text("da")
    now[0] += 60
    before = _tree(tmp_path)
    reader = Store(tmp_path, clock=lambda: now[0], read_only=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert reader.lookup("s", "old") is None and reader.lookup("s", "torn") is None
    assert any("left in place" in str(w.message) for w in caught)
    reader.flush()
    assert _tree(tmp_path) == before


@pytest.mark.parametrize(("action", "call"), [
    ("save", lambda s, out: s.save("s", "k", out_dir=out)),
    ("lock", lambda s, out: s.lock("s", "k")),
    ("remove", lambda s, out: s.remove("s", "k")),
    ("clear", lambda s, out: s.clear()),
])
def test_a_read_only_store_refuses_every_write(tmp_path: Path, action: str, call: Any) -> None:
    store = Store(tmp_path / "c", read_only=True)
    with pytest.raises(CacheError, match=f"cannot {action}.*read-only"):
        call(store, tmp_path)


# -- off ----------------------------------------------------------------------------------
def _outside_runs(tree: dict[str, tuple[Any, ...]]) -> dict[str, tuple[Any, ...]]:
    return {path: stamp for path, stamp in tree.items() if not path.startswith(".runs")}


def test_off_runs_everything_and_writes_nothing_but_its_run_record(workdir: Path) -> None:
    cache = workdir / ".dagnb_cache"
    _graph(workdir).run(executor="local")
    before = _tree(cache)
    run = _graph(workdir).run(executor="local", cache_mode="off")
    assert set(run.states().values()) == {"succeeded"}
    assert _executions(workdir) == ["a", "b", "1", "a", "b", "1"]
    # no entry, lock, hit count or file digest; the run's record is kept (--only-failed)
    assert _outside_runs(_tree(cache)) == _outside_runs(before)
    assert last_states(cache, "modes") == run.states() and run.workspace.parent == cache / ".runs"


def test_off_in_an_empty_folder_writes_only_the_run_record(workdir: Path) -> None:
    _graph(workdir).run(executor="local", cache_mode="off")
    assert os.listdir(workdir / ".dagnb_cache") == [".runs"]


def test_plan_and_explain_write_nothing_and_say_when_caching_is_off(workdir: Path) -> None:
    _graph(workdir).run(executor="local")
    before = _tree(workdir / ".dagnb_cache")
    changed = _graph(workdir, b_value="2")
    for mode in ("read-only", "fail-on-miss"):
        dagnb.configure(cache_mode=mode)
        assert changed.plan()["cached"].tolist() == [True, False, False]
        assert changed.explain("b")[0].startswith("command changed")
    dagnb.configure(cache_mode="off")  # (a run looks nothing up: it runs every step)
    off = "it runs every time: caching is off (cache_mode 'off' from dagnb.configure())"
    assert changed.plan()["reason"].tolist() == [off] * 3
    assert changed.explain("b") == [off]
    assert _tree(workdir / ".dagnb_cache") == before


# -- where the mode comes from ----------------------------------------------------------
def test_the_environment_variable_sets_the_mode(
        project: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DAGNB_CACHE_MODE", "fail-on-miss")
    assert dagnb.settings().cache_mode == "fail-on-miss"
    with pytest.raises(CacheMissError, match="3 steps would run"):
        _graph(project).run(executor="local")
    assert dagnb.config.origins()["cache_mode"] == "DAGNB_CACHE_MODE"


def test_the_config_file_sets_the_mode(project: Path) -> None:
    (project / "dagnb.yaml").write_text("workflow_defaults:\n  cache_mode: read-only\n")
    run = _graph(project).run(executor="local")
    assert set(run.states().values()) == {"succeeded"}
    assert not (project / ".dagnb_cache").exists() or _tree(project / ".dagnb_cache") == {}


def test_the_older_spellings_still_switch_the_cache_off(project: Path) -> None:
    (project / "dagnb.yaml").write_text("workflow_defaults:\n  caching_enabled: false\n")
    assert dagnb.config.reload().cache_mode == "off"
    assert dagnb.config.origins()["cache_mode"].endswith("dagnb.yaml")
    dagnb.configure(caching_enabled=True)
    assert dagnb.settings().cache_mode == "read-write"
    dagnb.configure(cache_mode="read-only", caching_enabled=True)  # True keeps read-only
    assert dagnb.settings().cache_mode == "read-only" and dagnb.settings().caching_enabled
    graph = _graph(project)
    assert set(graph.run(executor="local", cache=False).states().values()) == {"succeeded"}
    with pytest.raises(ConfigError, match="cache=False and cache_mode='read-only' disagree"):
        graph.run(executor="local", cache=False, cache_mode="read-only")


@pytest.mark.parametrize(("source", "message"), [
    ("file", "dagnb.yaml: cache_mode = 'readonly' is not valid; expected "
             "'read-write', 'read-only', 'fail-on-miss' or 'off'; did you mean 'read-only'?"),
    ("env", "environment variable DAGNB_CACHE_MODE: cache_mode = 'readonly' is not valid"),
    ("argument", "cache_mode='readonly' is not valid; expected 'read-write', 'read-only', "
                 "'fail-on-miss' or 'off'; did you mean 'read-only'?"),
])
def test_a_bad_mode_names_the_value_the_modes_and_the_closest(
        project: Path, monkeypatch: pytest.MonkeyPatch, source: str, message: str) -> None:
    if source == "file":
        (project / "dagnb.yaml").write_text("workflow_defaults:\n  cache_mode: readonly\n")
    if source == "env":
        monkeypatch.setenv("DAGNB_CACHE_MODE", "readonly")
    with pytest.raises(ConfigError) as bad:
        if source == "argument":
            _graph(project).run(executor="local", cache_mode="readonly")
        else:
            dagnb.config.reload()
    assert message in str(bad.value) and "\n" not in str(bad.value)


def test_a_bad_cli_mode_is_one_line_and_exit_2(
        project: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["run", str(_workflow(project)), "--cache-mode", "read-olny"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    assert "--cache-mode 'read-olny' is not valid" in err and "did you mean 'read-only'?" in err


# -- the magics -----------------------------------------------------------------------------
def test_the_magic_option_refuses_a_miss_and_the_cell_changes_nothing(shell: Any,
                                                                       workdir: Path) -> None:
    counter = workdir / "executions.txt"
    with pytest.raises(CacheMissError, match="1 step would run") as refused:
        shell.run_cell_magic("dagger", "a --cache-mode fail-on-miss", f"echo a >> {counter}\n")
    assert refused.value._render_traceback_()[1] == "  a: no entry yet for step 'a'"
    assert _executions(workdir) == []
    shell.run_cell_magic("dagger", "a", f"echo a >> {counter}\n")
    shell.run_line_magic("dagger", "run --cache-mode fail-on-miss")  # all cached: runs
    before = _tree(workdir / ".dagnb_cache")
    shell.run_line_magic("dagger", "run a --refresh --cache-mode read-only")
    assert _executions(workdir) == ["a", "a"]
    assert _tree(workdir / ".dagnb_cache") == before


def test_a_bad_magic_mode_is_a_usage_error(shell: Any) -> None:
    from IPython.core.error import UsageError

    with pytest.raises(UsageError, match=r"--cache-mode 'of' is not valid.*did you mean 'off'"):
        shell.run_line_magic("dagger", "run --cache-mode of")


# -- Memory ---------------------------------------------------------------------------------
def test_read_only_memory_serves_hits_and_calls_a_miss_without_storing(tmp_path: Path) -> None:
    calls: list[int] = []

    def square(x: int) -> int:
        calls.append(x)
        return x * x

    dagnb.Memory(tmp_path).cache(square)(2)
    before = _tree(tmp_path)
    memory = dagnb.Memory(tmp_path, cache_mode="read-only")
    reading = memory.cache(square)
    assert reading(2) == 4 and reading(3) == 9 and reading(3) == 9
    assert reading.call_and_shelve(5).get() == 25
    assert calls == [2, 3, 3, 5]
    memory.store.flush()  # type: ignore[union-attr]  (hits are not recorded either)
    assert _tree(tmp_path) == before


def test_fail_on_miss_memory_raises_instead_of_calling(tmp_path: Path) -> None:
    calls: list[int] = []

    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    dagnb.Memory(tmp_path).cache(double)(1)
    strict = dagnb.Memory(tmp_path, cache_mode="fail-on-miss").cache(double)
    assert strict(1) == 2
    with pytest.raises(CacheMissError, match="fail-on-miss"):
        strict(2)
    assert calls == [1]
    assert dagnb.Memory(tmp_path, cache_mode="off").store is None


def test_a_fail_on_miss_memory_on_a_new_folder_makes_none_and_hits_once_filled(
        tmp_path: Path) -> None:
    calls: list[int] = []

    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    folder = tmp_path / "new" / "cache"
    strict = dagnb.Memory(folder, cache_mode="fail-on-miss").cache(double)
    with pytest.raises(CacheMissError, match="no stored call with these arguments") as missed:
        strict(1)
    # (the fix named too: it said only that the mode was fail-on-miss)
    assert str(missed.value).endswith("; store it with a call under 'read-write' first, or "
                                      "pull the cache that holds it (dagnb cache pull URL)")
    assert not (tmp_path / "new").exists()
    dagnb.Memory(folder).cache(double)(1)  # another Memory fills it
    assert strict(1) == 2 and calls == [1]  # the strict one, made before the folder, hits


def test_fail_on_miss_memory_hits_a_call_another_process_just_stored(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The packs read a moment ago lack a call another process stored since: it is looked
    for again before it is refused. (A fresh dagnb context reads and writes packs of its
    own, as another process does.)"""
    from dagnb.cache import store as store_module
    from dagnb.testing import isolated

    def double(x: int) -> int:
        return 2 * x

    dagnb.Memory(tmp_path).cache(double)(1)
    strict = dagnb.Memory(tmp_path, cache_mode="fail-on-miss").cache(double)
    assert strict(1) == 2  # the packs read now
    monkeypatch.setattr(store_module, "_RECENT_S", 3600)  # each look "a moment" after
    for x, look in ((2, strict), (3, lambda x: strict.call_and_shelve(x).get())):
        with isolated():
            dagnb.Memory(tmp_path).cache(double)(x)
        assert look(x) == 2 * x
    with pytest.raises(CacheMissError, match="no stored call with these arguments"):
        strict(4)
    with pytest.raises(CacheMissError, match="no stored call with these arguments"):
        strict.call_and_shelve(4)


def test_fail_on_miss_memory_refuses_call_which_always_runs(tmp_path: Path) -> None:
    """joblib's ``.call()`` runs the function even if it is cached: fail-on-miss runs
    nothing, so it refuses it, storing nothing and making no folder."""
    import asyncio

    calls: list[int] = []

    def double(x: int) -> int:
        calls.append(x)
        return 2 * x

    async def adouble(x: int) -> int:
        return double(x)

    folder = tmp_path / "new"
    for cached in dagnb.Memory(folder, cache_mode="fail-on-miss").cache(double), \
            dagnb.Memory(folder, cache_mode="fail-on-miss").cache(adouble):
        with pytest.raises(CacheMissError) as refused:
            result = cached.call(1)
            if asyncio.iscoroutine(result):
                asyncio.run(result)
        assert str(refused.value).endswith(
            ": .call() always runs the function, and cache_mode 'fail-on-miss' runs nothing; "
            "call the function itself to take its stored result")
    assert calls == [] and not folder.exists()
    dagnb.Memory(folder).cache(double)(1)
    with pytest.raises(CacheMissError, match=r"\.call\(\) always runs"):  # stored: still
        dagnb.Memory(folder, cache_mode="fail-on-miss").cache(double).call(1)
    assert calls == [1]


# -- dagnb run NOTEBOOK ---------------------------------------------------------------------
@pytest.mark.slow
def test_a_notebook_run_with_fail_on_miss_exits_2_and_runs_no_step(tmp_path: Path) -> None:
    import nbformat as nbf

    counter = tmp_path / "executions.txt"
    cells = [nbf.v4.new_code_cell("%load_ext dagnb"),
             nbf.v4.new_code_cell(f"%%dagger make\necho make >> {counter}\n")]
    nbf.write(nbf.v4.new_notebook(cells=cells), tmp_path / "nb.ipynb")
    env = {**os.environ, "DAGNB_CONFIG": "none"}
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "nb.ipynb",
                           "--cache-mode", "fail-on-miss"], cwd=tmp_path, env=env,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2, done.stderr
    assert "make: no entry yet for step 'make'" in done.stderr
    assert _executions(tmp_path) == []
    assert not (tmp_path / ".dagnb_cache").exists()  # (the kernel's run made none)


# -- the step contract holds in every mode ----------------------------------------------
def _small() -> dict[str, int]:
    return {"v": 1}


def _a_set() -> set[int]:
    return {3}


@pytest.mark.parametrize("how", ["off", "read-only", "step cache=False"])
@pytest.mark.parametrize(("func", "reads"), [
    (_small, 'cat "$DAGNB_IN/up/result.json"'),
    (_a_set, 'python3 -c "import pickle,sys; print(pickle.load(open(sys.argv[1], \'rb\')))" '
             '"$DAGNB_IN/up/result.pkl"'),
])
def test_a_command_reads_a_python_upstreams_result_file_though_it_was_not_stored(
        workdir: Path, how: str, func: Any, reads: str) -> None:
    """An uncached Python step's result is in its folder as a stored one's is: a pull
    request's read-only run that missed failed every command reading it."""
    graph = Graph("contract", [Step("up", func=func, cache=how != "step cache=False"),
                               Step("b", run=reads, needs=["up"])])
    mode = "read-write" if how == "step cache=False" else how
    run = graph.run(executor="local", cache_mode=mode)
    assert run.states() == {"up": "succeeded", "b": "succeeded"}, run.status()
    printed = run.logs("b", stream="stdout")["line"].tolist()
    assert printed == (['{"v": 1}'] if func is _small else ["{3}"])
    if how != "step cache=False":
        assert not list(workdir.glob(".dagnb_cache/up"))  # and nothing was stored
        stored = graph.run(executor="local")  # the same file as a stored entry's
        assert stored.logs("b", stream="stdout")["line"].tolist() == printed


def test_an_unstored_result_holding_a_secret_is_not_written_for_the_commands(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret = "zz-TOPSECRET-42-abcdef"
    monkeypatch.setenv("MYTOKEN", secret)

    def peek() -> str:
        return os.environ["MYTOKEN"]

    graph = Graph("contract", [Step("up", func=peek, secrets=("MYTOKEN",)),
                               Step("b", run='ls "$DAGNB_IN/up/"', needs=["up"])])
    with pytest.warns(UserWarning, match=r"'up': its result holds the value of secret "
                                          r"'MYTOKEN', so the steps that read it as a file"):
        run = graph.run(executor="local")
    assert run.states()["up"] == "succeeded"
    on_disk = [p for p in (workdir / ".dagnb_cache").rglob("*") if p.is_file()
               and secret.encode() in p.read_bytes()]
    assert on_disk == []
