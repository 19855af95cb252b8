"""A module of the user's edited on disk and not reloaded (no ``importlib.reload``, no
autoreload): the kernel runs the code it imported. A step's key describes that code
(its cached result is served, and stored under that code's key only), a dask worker is
sent that code's text, and one warning names the file and the fix
(:mod:`dagnb.fingerprint.imported`). First in-process, then in a real kernel (nbclient),
on the local executor and on dask's LocalCluster."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path

import pytest
from notebook_cells import KERNEL_ENV, LiveKernel, started_kernel

from dagnb.errors import ExecutorError
from dagnb.executors import shipped
from dagnb.fingerprint import code_source_parts, code_with_values


def _module(folder: Path, monkeypatch: pytest.MonkeyPatch, name: str, text: str) -> object:
    monkeypatch.delitem(sys.modules, name, raising=False)
    (folder / f"{name}.py").write_text(text)
    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.chdir(folder)  # (a notebook's helper is beside it: named as helpers.py)
    return importlib.import_module(name)


def _stale_warning(name: str) -> str:
    return (rf"^dagnb: {name}\.py changed on disk since the kernel imported it; the step runs the "
            rf"imported code: restart, importlib\.reload\({name}\), or %load_ext "
            r"autoreload / %autoreload 2")


def _key_in_a_new_process(folder: Path, module: str, function: str) -> str:
    """The code digest a fresh process gives (a restarted kernel: it imports the file)."""
    script = (f"import sys; sys.path.insert(0, {str(folder)!r}); import {module}; "
              "from dagnb.fingerprint import code_with_values; "
              f"print(code_with_values({module}.{function}, fresh=True)[0])")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          check=True, timeout=60)
    return done.stdout.split()[-1]


def test_a_helper_edited_and_not_reloaded_keeps_the_key_of_the_code_that_runs(
        tmp_path, monkeypatch):
    """Keyed by the new text, the old code's result would be stored under the new code's
    key (and served after a restart, which runs the new code); keyed by bytecode, the
    step would run again for nothing."""
    helper = _module(tmp_path, monkeypatch, "helper_kept",
                     "class Scale:\n    factor = 1\n\ndef make(x):\n    return x * 1\n")
    uses = _module(tmp_path, monkeypatch, "uses_helper_kept",
                   "from helper_kept import make, Scale\n\n"
                   "def g(x):\n    return make(x) * Scale.factor\n")
    before = code_with_values(uses.g, fresh=True)[0]
    (tmp_path / "helper_kept.py").write_text(
        "class Scale:\n    factor = 1\n\ndef make(x):\n    return x * 100\n")
    importlib.reload(uses)  # (the cell that calls it run again: a new function)
    with pytest.warns(UserWarning, match=_stale_warning("helper_kept")) as said:
        assert code_with_values(uses.g, fresh=True)[0] == before
    assert len(said) == 1
    assert code_source_parts(uses.g)["def make"].endswith("x * 1")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # (said once; a reload is no news)
        assert code_with_values(uses.g, fresh=True)[0] == before
        importlib.reload(helper)
        importlib.reload(uses)
        reloaded = code_with_values(uses.g, fresh=True)[0]
    assert reloaded != before
    assert reloaded == _key_in_a_new_process(tmp_path, "uses_helper_kept", "g")


def test_a_helper_s_constant_edited_and_not_reloaded_is_sent_as_imported(
        tmp_path, monkeypatch):
    """A dask worker is sent the text the kernel imported (RATE is 1 there, and in the
    key), not the file's new one."""
    text = "RATE = 1\n\ndef rate():\n    return RATE\n"
    helper = _module(tmp_path, monkeypatch, "helper_rate", text)
    code_with_values(helper.rate, fresh=True)  # (a step's key reads it)
    (tmp_path / "helper_rate.py").write_text(text.replace("RATE = 1", "RATE = 2"))
    with pytest.warns(UserWarning, match=_stale_warning("helper_rate")):
        sent = shipped.project_sources(["helper_rate"])
    assert sent["helper_rate"][1] == text.encode()


def test_a_helper_patched_in_place_after_its_edit_is_sent_as_its_file_now(
        tmp_path, monkeypatch):
    """Autoreload may patch a module's functions in place (its spec stays), after dagnb
    found the file stale: then the module runs the new text, and that is what is sent."""
    old, new = "def make(x):\n    return x\n", "def make(x):\n    return x * 100\n"
    helper = _module(tmp_path, monkeypatch, "helper_patched", old)
    code_with_values(helper.make, fresh=True)
    (tmp_path / "helper_patched.py").write_text(new)
    with pytest.warns(UserWarning, match=_stale_warning("helper_patched")):
        assert shipped.project_sources(["helper_patched"])["helper_patched"][1] == old.encode()
    made: dict = {}
    exec(compile(new, str(tmp_path / "helper_patched.py"), "exec"), made)
    helper.make.__code__ = made["make"].__code__  # (as IPython's autoreload does)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert shipped.project_sources(["helper_patched"])["helper_patched"][1] == new.encode()
        assert code_source_parts(helper.make)["def make"].endswith("x * 100")


def test_a_helper_edited_before_dagnb_read_it_counts_by_its_bytecode_and_is_not_sent(
        tmp_path, monkeypatch):
    """No text of the code it runs is to be had: its key is its bytecode's, and a dask
    worker cannot be sent it (refused, in one line saying how to load the new code)."""
    helper = _module(tmp_path, monkeypatch, "helper_gone", "def make(x):\n    return x\n")
    (tmp_path / "helper_gone.py").write_text("def make(x):\n    return x * 100\n")
    with pytest.warns(UserWarning, match=_stale_warning("helper_gone")):
        parts = code_source_parts(helper.make)
    assert parts["def make"].startswith("<no source")
    with pytest.raises(ExecutorError, match=r"^helper_gone\.py changed on disk since the "
                       r"kernel imported it; the text of the imported code is gone: "
                       r"restart, importlib\.reload\(helper_gone\)"):
        shipped.project_sources(["helper_gone"])


# -- in a real kernel -------------------------------------------------------------------
pytest.importorskip("nbclient")


class Kernel(LiveKernel):
    """A live kernel in folder ``home``."""

    def __init__(self, client: object, home: Path) -> None:
        super().__init__(client)
        self.home = home


def _stream(outputs: list[dict], name: str) -> str:
    return "".join(o["text"] for o in outputs
                   if o["output_type"] == "stream" and o["name"] == name)


@pytest.fixture
def kernel(tmp_path: Path) -> Iterator[Kernel]:
    """A kernel of its own in ``tmp_path`` (a module name is imported once a kernel),
    with dagnb loaded and helpers.py (``f()`` returns 1) imported."""
    (tmp_path / "helpers.py").write_text(HELPERS.format(value=1))
    with started_kernel(tmp_path, KERNEL_ENV, timeout=120) as client:
        kernel = Kernel(client, tmp_path)
        kernel.printed("%load_ext dagnb\nimport helpers")
        yield kernel


HELPERS = "def f():\n    return {value}\n"
STALE_LINE = ("helpers.py changed on disk since the kernel imported it; the step runs the "
              "imported code: restart, importlib.reload(helpers), or %load_ext autoreload "
              "/ %autoreload 2")


def _cell(executor: str) -> str:
    return f"%%dagger clean --python --outputs v --executor {executor}\nv = helpers.f()"


def _state(kernel: Kernel) -> str:
    return kernel.printed("from dagnb.notebook.session import get_session\n"
                          "print(get_session().last_run.states()['clean'])").strip()


@pytest.mark.slow
def test_a_cell_using_a_helper_edited_and_not_reloaded_is_served_its_imported_code_s_result(
        kernel):
    """Before, the cell ran again (keyed by bytecode), silently gave 1, the old code's
    result, and the user saw no sign that the edit was not used."""
    kernel.printed(_cell("local"))
    (kernel.home / "helpers.py").write_text(HELPERS.format(value=2))
    outputs = kernel.run(_cell("local"))
    assert _state(kernel) == "cached"  # (before: run again, keyed by bytecode)
    assert kernel.printed("print(v)").strip() == "1"  # (what the kernel's code gives)
    assert _stream(outputs, "stderr").count(STALE_LINE) == 1, outputs
    assert STALE_LINE not in _stream(kernel.run(_cell("local")), "stderr")  # (said once)
    kernel.printed("import importlib\nimportlib.reload(helpers)")
    outputs = kernel.run(_cell("local"))
    assert STALE_LINE not in _stream(outputs, "stderr")
    assert _state(kernel) == "succeeded"
    assert kernel.printed("print(v)").strip() == "2"


@pytest.mark.slow
def test_a_dask_step_runs_the_code_the_kernel_imported_and_its_key_describes(kernel):
    """Before, the workers were sent the file's new text: the new code's result (2) was
    stored under the imported code's key, and served to a kernel importing that code."""
    pytest.importorskip("distributed")
    kernel.printed(_cell("dask"))
    (kernel.home / "helpers.py").write_text(HELPERS.format(value=2))
    said = _stream(kernel.run("%dagger run clean --refresh"), "stderr")
    ran = kernel.printed("print(v)").strip()
    (kernel.home / "helpers.py").write_text(HELPERS.format(value=1))  # (put back)
    kernel.restart()
    kernel.printed("%load_ext dagnb\nimport helpers")
    kernel.printed(_cell("dask"))
    served = (_state(kernel), kernel.printed("print(v)").strip())
    assert (ran, served) == ("1", ("cached", "1"))  # (before: "2", and served "2")
    assert STALE_LINE in said


@pytest.mark.slow
def test_a_dask_step_using_a_helper_edited_before_dagnb_read_it_is_refused_in_one_line(
        kernel):
    """No text of the code the kernel runs is to be had to send (before, the workers ran
    the file's new code under the key of the kernel's)."""
    pytest.importorskip("distributed")
    (kernel.home / "helpers.py").write_text(HELPERS.format(value=2))
    outputs = kernel.run(_cell("dask"))
    errors = [o for o in outputs if o["output_type"] == "error"]
    assert errors, outputs
    shown = "\n".join([errors[0]["evalue"], *errors[0]["traceback"]])
    assert ("step 'clean' cannot be sent to dask workers: helpers.py changed on disk since "
            "the kernel imported it; the text of the imported code is gone: restart, "
            "importlib.reload(helpers), or %load_ext autoreload / %autoreload 2") in shown


@pytest.mark.slow
def test_with_autoreload_a_dask_step_runs_the_edited_helper_and_nothing_is_said(kernel):
    """IPython's autoreload patches the module's functions in place (its spec stays): the
    kernel runs the new code, so the workers must be sent the file's new text."""
    pytest.importorskip("distributed")
    kernel.printed("%load_ext autoreload\n%autoreload 2")
    kernel.printed(_cell("dask"))
    (kernel.home / "helpers.py").write_text(HELPERS.format(value=2))
    outputs = kernel.run(_cell("dask"))
    assert (_state(kernel), kernel.printed("print(v, helpers.f())").strip()) == (
        "succeeded", "2 2")
    assert "changed on disk" not in _stream(outputs, "stderr"), outputs


@pytest.mark.slow
def test_with_autoreload_a_helper_importing_another_runs_its_edit_unwarned_and_edit_back_served(
        kernel):
    """IPython's autoreload patches a changed function (a method too) with its ``def``
    compiled alone, and Python compiles ``utils.factor()`` there otherwise than in a file
    that does ``import utils``: the patched code was found in neither text, so a false
    warning told the user to turn on autoreload, and the function was keyed by its
    bytecode (editing the helper back ran the step again instead of serving the first
    result). Its lines count from its ``def``: read from the file's top, they were
    another function's (``other``), or outside its class."""
    (kernel.home / "utils.py").write_text("def factor():\n    return 2\n")
    helpers = kernel.home / "helpers.py"
    text = ("import utils\n\n\ndef other():\n    return 1\n\n\nclass Scale:\n"
            "    def by(self):\n        return utils.factor() * {value}\n\n\n"
            "def f():\n    return Scale().by() + utils.factor() * {value}\n")
    helpers.write_text(text.format(value=10))
    kernel.printed("%load_ext autoreload\n%autoreload 2\nimport importlib\n"
                   "importlib.reload(helpers)")
    kernel.printed(_cell("local"))
    said = []
    for mtime, value in ((1, 100), (2, 10)):
        helpers.write_text(text.format(value=value))
        os.utime(helpers, (helpers.stat().st_atime, helpers.stat().st_mtime + mtime))
        said.append(_stream(kernel.run(_cell("local")), "stderr"))
        said.append((_state(kernel), kernel.printed("print(v)").strip()))
    warned = ["changed on disk" in stderr for stderr in said[::2]]
    assert (said[1::2], warned) == ([("succeeded", "400"), ("cached", "40")], [False, False])


def test_a_function_keyed_again_checks_its_helpers_files_once_a_second_and_warns(
        tmp_path, monkeypatch):
    """Each key of the same function (a Memory hit, a step of a cached re-run) would
    stat its helpers' files: that is done once a second, which only delays the warning
    (the key is the code the process runs either way); past that, an edit is said."""
    from dagnb.fingerprint import code, imported

    _module(tmp_path, monkeypatch, "helper_rechecked", "def make(x):\n    return x\n")
    uses = _module(tmp_path, monkeypatch, "uses_helper_rechecked",
                   "from helper_rechecked import make\n\ndef g(x):\n    return make(x)\n")
    before = code_with_values(uses.g, fresh=True)[0]
    checks = []
    real = imported.IMPORTED.check
    monkeypatch.setattr(imported.IMPORTED, "check", lambda mods: (checks.append(1), real(mods)))
    for _ in range(100):
        assert code_with_values(uses.g, fresh=True)[0] == before
    assert checks == []  # (all within the second after the record was made)
    (tmp_path / "helper_rechecked.py").write_text("def make(x):\n    return x * 2\n")
    monkeypatch.setattr(code, "_RECHECK_S", 0.0)  # (as a second later)
    with pytest.warns(UserWarning, match=_stale_warning("helper_rechecked")):
        assert code_with_values(uses.g, fresh=True)[0] == before
    assert checks == [1]


# -- a module's values its text, sent along, does not set -------------------------------
FILLED = """\
FACTOR = 10
MODE = "fast"
NAMES = []
SEEN = {}
COUNT = 0
RATES = [1, 2]
RATES.append(3)
DEBUG = False
if FACTOR > 100:
    DEBUG = True


def register(name):
    NAMES.append(name)
    return name


def bump():
    global COUNT
    COUNT += 1
    SEEN[COUNT] = True


register("first")
"""


def test_a_module_filled_as_it_runs_is_sent_as_its_text(tmp_path, monkeypatch):
    """A registry, a cache, a counter and a value its top level changes hold other values
    than the text's literals, as the worker's import makes them too: not refused."""
    module = _module(tmp_path, monkeypatch, "helper_filled", FILLED)
    module.bump()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        sent = shipped.project_sources(["helper_filled"])
    assert sent["helper_filled"][1] == FILLED.encode()


@pytest.mark.parametrize(("name", "value", "said"), [
    ("FACTOR", 5, "FACTOR is 5 here but 10"),
    ("FACTOR", 10.0, "FACTOR is 10.0 here but 10"),
    ("MODE", "slow", "MODE is a str of 4 characters here but another str"),
    ("MODE", "hunter2-hunter2", "MODE is a str of 15 characters here but a str of 4 "
                                "characters"),
])
def test_a_module_value_set_since_its_import_is_refused_in_one_line(
        tmp_path, monkeypatch, name, value, said):
    """Before, its text was sent, and the worker ran with the text's value. A string is
    described, not shown: it may be a secret."""
    module = _module(tmp_path, monkeypatch, "helper_set", FILLED)
    shipped.project_sources(["helper_set"])  # (read: the text holds the module's values)
    setattr(module, name, value)
    with pytest.raises(ExecutorError) as caught:
        shipped.project_sources(["helper_set"])
    assert str(caught.value) == (
        f"helper_set.{said} in the text of helper_set.py sent along (set since its import, "
        "or the file edited before dagnb read it): pass it to the step as a parameter, or "
        "set it in helper_set.py and importlib.reload(helper_set)")
    assert "hunter2" not in str(caught.value)
    setattr(module, name, {"FACTOR": 10, "MODE": "fast"}[name])  # (set back: sent)
    assert shipped.project_sources(["helper_set"])["helper_set"][1] == FILLED.encode()


def test_a_module_s_values_unchanged_since_the_last_send_are_not_compared_again(
        tmp_path, monkeypatch):
    """Each task of a step sends its modules, and each send compared every value with its
    literal (a module of 8,000 constants: 2 ms a send). One still the very object found
    equal is not compared again; one rebound is, and a container (filled in place, the
    same object) is at each send."""
    from dagnb.fingerprint import imported

    module = _module(tmp_path, monkeypatch, "helper_compared",
                     "FACTOR = 10\nMODE = 'fast'\nPAIR = (1, 'a')\nTABLE = {'a': 1}\n\n"
                     "def f():\n    return TABLE['a'] * FACTOR\n")
    shipped.project_sources(["helper_compared"])
    compared: list[object] = []
    equal = imported._equal
    monkeypatch.setattr(imported, "_equal",
                        lambda value, literal: compared.append(value) or equal(value, literal))
    shipped.project_sources(["helper_compared"])
    assert compared == [{"a": 1}]
    module.TABLE["a"] = 2
    with pytest.raises(ExecutorError, match=r"^helper_compared\.TABLE is a dict of 1 items here"):
        shipped.project_sources(["helper_compared"])
    module.TABLE["a"] = 1
    module.FACTOR = 5
    with pytest.raises(ExecutorError, match=r"^helper_compared\.FACTOR is 5 here but 10 "):
        shipped.project_sources(["helper_compared"])
    module.FACTOR = 10
    compared.clear()
    shipped.project_sources(["helper_compared"])  # (rebound: all compared, found equal)
    shipped.project_sources(["helper_compared"])
    assert compared == [10, "fast", (1, "a"), {"a": 1}, {"a": 1}]


def test_a_stale_module_s_constant_set_since_is_refused_and_a_reload_sends_the_file(
        tmp_path, monkeypatch):
    """Edited after dagnb read it, the module's imported text is sent: unless a value it
    sets was set since; a reload takes the file's text and values."""
    text = "RATE = 1\n\ndef rate():\n    return RATE\n"
    helper = _module(tmp_path, monkeypatch, "helper_stale_set", text)
    code_with_values(helper.rate, fresh=True)
    (tmp_path / "helper_stale_set.py").write_text(text.replace("return RATE", "return -RATE"))
    helper.RATE = 3
    with pytest.warns(UserWarning, match=_stale_warning("helper_stale_set")), \
            pytest.raises(ExecutorError, match=r"^helper_stale_set\.RATE is 3 here but 1 in"):
        shipped.project_sources(["helper_stale_set"])
    importlib.reload(helper)
    assert shipped.project_sources(["helper_stale_set"])["helper_stale_set"][1] == (
        tmp_path / "helper_stale_set.py").read_bytes()
