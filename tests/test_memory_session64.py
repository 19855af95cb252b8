"""Two scripts caching a function of one name on one cache: each script's functions are
stored under a name of their own (the script's file), so clearing one's keeps the
other's; a notebook's or ``python -c``'s functions, which have no file, keep
``__main__.<qualname>``."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import types
from pathlib import Path

import cloudpickle
import pytest

from dagnb.cache.memory import Memory

# Each script: stores load(1) (a line in its runs file each time load runs), then does
# what argv[3] says, then prints whether load(1) is still stored.
SCRIPT = textwrap.dedent("""
    import sys
    import dagnb

    memory = dagnb.Memory(sys.argv[1])

    @memory.cache
    def load(x):
        with open(sys.argv[2], "a") as runs:
            runs.write(f"load {x}\\n")
        return x * 2

    action = sys.argv[3]
    if action == "call":
        assert load(1) == 2
    elif action == "clear":
        load.clear(warn=False)
    elif action == "shelve-clear":
        load.call_and_shelve(1).clear()
    print(load.store_name, load.check_call_in_cache(1))
""")


def _scripts(tmp_path: Path, *paths: str) -> list[Path]:
    made = []
    for relative in paths:
        script = tmp_path / relative
        script.parent.mkdir(parents=True, exist_ok=True)
        script.write_text(SCRIPT)
        made.append(script)
    return made


def _run(script: Path, cache: Path, action: str) -> tuple[str, bool]:
    """Run ``script`` in a fresh process (from another folder: its path is what names
    it); its function's stored name and whether load(1) is stored after ``action``."""
    runs = script.with_suffix(".runs")
    done = subprocess.run([sys.executable, script.name, str(cache), str(runs), action],
                          cwd=script.parent, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    name, stored = done.stdout.split()
    return name, stored == "True"


def _runs(script: Path) -> int:
    runs = script.with_suffix(".runs")
    return len(runs.read_text().splitlines()) if runs.exists() else 0


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_clearing_one_script_s_function_keeps_another_script_s_function_of_that_name(
        tmp_path):
    train, report = _scripts(tmp_path, "a/train.py", "b/report.py")
    cache = tmp_path / "cache"
    train_name, _ = _run(train, cache, "call")
    report_name, _ = _run(report, cache, "call")
    assert (_runs(train), _runs(report)) == (1, 1)

    assert _run(train, cache, "clear") == (train_name, False)  # its own entry is gone
    assert _run(report, cache, "none") == (report_name, True)  # the other's is kept
    _run(report, cache, "call")
    assert _runs(report) == 1  # a hit: it did not run again
    _run(train, cache, "call")
    assert _runs(train) == 2  # a miss: cleared
    assert train_name.startswith("__main__-train-") and train_name.endswith(".load")
    assert report_name.startswith("__main__-report-")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_shelved_result_s_clear_keeps_the_same_code_of_a_same_named_script_elsewhere(
        tmp_path):
    # the same file name and the same code (so the same key) in two folders
    first, second = _scripts(tmp_path, "one/job.py", "two/job.py")
    cache = tmp_path / "cache"
    _run(first, cache, "call")
    _run(second, cache, "call")
    assert _run(first, cache, "shelve-clear")[1] is False
    assert _run(second, cache, "none")[1] is True
    _run(second, cache, "call")
    assert (_runs(first), _runs(second)) == (1, 1)


def test_functions_with_no_script_file_keep_the_main_module_s_name(tmp_path):
    """``python -c`` and a notebook cell (ipykernel compiles it as a ``.py`` file of
    its own, and its ``__main__`` has no ``__file__``) are named as before."""
    code = "import dagnb\nf = dagnb.Memory({!r}).cache(lambda x: x)\nprint(f.store_name)"
    done = subprocess.run([sys.executable, "-c", code.format(str(tmp_path / "cache"))],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["__main__.lambda"]

    cell = _defined("def load(x):\n    return x\n", "/tmp/ipykernel_4242/12345.py",
                    {"__name__": "__main__"})
    assert Memory(tmp_path / "cache").cache(cell).store_name == "__main__.load"


def test_a_script_s_function_is_named_alike_as_mp_main_and_sent_by_cloudpickle(
        tmp_path):
    """A spawn worker runs the script as ``__mp_main__`` (its ``__file__`` the script's
    path); cloudpickle sends ``__file__`` with a function sent by value."""
    script = str(tmp_path / "train.py")
    memory = Memory(tmp_path / "cache")
    names = set()
    for module in ("__main__", "__mp_main__"):
        load = _defined("def load(x):\n    return x\n", script,
                        {"__name__": module, "__file__": script})
        names.add(memory.cache(load).store_name)
        sent = cloudpickle.loads(cloudpickle.dumps(load))  # (by value: no such module here)
        assert sent is not load
        names.add(memory.cache(sent).store_name)
    assert len(names) == 1 and names.pop().startswith("__main__-train-")


def test_a_script_s_methods_callable_objects_and_wrapped_functions_are_named_after_it(
        tmp_path):
    script = str(tmp_path / "train.py")
    namespace = {"__name__": "__main__", "__file__": script}
    exec(compile(textwrap.dedent("""
        import functools

        class Model:
            def fit(self, x):
                return x

            def __call__(self, x):
                return x

        @functools.cache
        def load(x):
            return x
    """), script, "exec"), namespace)
    memory = Memory(tmp_path / "cache")
    model = namespace["Model"]()
    names = [memory.cache(f).store_name for f in (model.fit, model, namespace["load"])]
    assert [name.split(".", 1)[1] for name in names] == ["Model.fit", "Model", "load"]
    assert all(name.startswith("__main__-train-") for name in names), names


def test_code_run_by_exec_in_a_script_keeps_the_main_module_s_name(tmp_path):
    """Code compiled under another file name than the script's is not the script's."""
    script = str(tmp_path / "train.py")
    load = _defined("def load(x):\n    return x\n", "<string>",
                    {"__name__": "__main__", "__file__": script})
    assert Memory(tmp_path / "cache").cache(load).store_name == "__main__.load"


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_joblib_parallel_workers_hit_what_the_script_stored(tmp_path):
    """loky's workers get the cached function by cloudpickle, which sends the script's
    code without its file: they use the script's name, and hit its entries."""
    script = tmp_path / "par.py"
    script.write_text(textwrap.dedent("""
        import sys
        import joblib
        import dagnb

        memory = dagnb.Memory(sys.argv[1])

        @memory.cache
        def square(x):
            with open(sys.argv[2], "a") as runs:
                runs.write(f"square {x}\\n")
            return x * x

        def work(x):
            return square(x), square.store_name

        if __name__ == "__main__":
            here = [square(x) for x in range(4)]
            done = joblib.Parallel(n_jobs=2)(joblib.delayed(work)(x) for x in range(4))
            assert [value for value, _ in done] == here, done
            print(square.store_name, *sorted({name for _, name in done}))
    """))
    runs = tmp_path / "runs.txt"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "cache"), str(runs)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    here, *there = done.stdout.split()
    assert here.startswith("__main__-par-") and there == [here]
    assert sorted(runs.read_text().splitlines()) == [f"square {x}" for x in range(4)]


def _defined(source: str, filename: str, namespace: dict[str, object]) -> types.FunctionType:
    """The function ``source`` defines, compiled as ``filename`` in ``namespace``."""
    exec(compile(source, filename, "exec"), namespace)
    return namespace["load"]  # type: ignore[return-value]


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@pytest.mark.parametrize("first", ["script", "workers"])
def test_joblib_parallel_workers_key_the_scripts_classes_and_functions_given_as_arguments(
        tmp_path, first):
    """An argument holding an instance of a class the script defines, or a function of
    the script, reached loky's workers by value, without its file (cloudpickle's
    "<dynamic-code>"): hashed there as bytecode, it keyed otherwise than in the script,
    and each side ran every call again. The script's sources go with the cached call."""
    script = tmp_path / "cfg.py"
    script.write_text(textwrap.dedent("""
        import sys
        import joblib
        import dagnb

        memory = dagnb.Memory(sys.argv[1])

        class Config:
            def __init__(self, k):
                self.k = k

        def triple(x):
            return x * 3

        @memory.cache
        def work(config, transform, i):
            with open(sys.argv[2], "a") as runs:
                runs.write(f"work {i}\\n")
            return config.k + transform(i)

        def in_workers(config):
            return joblib.Parallel(n_jobs=2)(
                joblib.delayed(work)(config, triple, i) for i in range(4))

        if __name__ == "__main__":
            config = Config(7)
            here = lambda: [work(config, triple, i) for i in range(4)]
            done = [here(), in_workers(config)] if sys.argv[3] == "script" else [
                in_workers(config), here()]
            assert done[0] == done[1] == [7, 10, 13, 16], done
    """))
    runs = tmp_path / "runs.txt"
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "cache"), str(runs),
                           first], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert sorted(runs.read_text().splitlines()) == [f"work {i}" for i in range(4)]
