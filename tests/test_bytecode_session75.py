"""A steps module runs the text dagnb keys it on, whatever its ``.pyc`` says: Python
matches a ``.pyc`` by the source's mtime in whole seconds and its size, so a file saved
twice within a second at one size ran the first text's code under the second's key."""

from __future__ import annotations

import importlib.machinery
import importlib.util
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import dagnb
from dagnb.workflows import bytecode
from dagnb.workflows.bytecode import TextCheckedLoader

STEPS = "def work():\n    return 'first'\n"
EDITED = STEPS.replace("first", "other")  # (the same size)


@pytest.fixture(autouse=True)
def bytecode_written(monkeypatch: pytest.MonkeyPatch) -> None:
    """Python writes ``.pyc`` files, as it does for users (CI's environment may not)."""
    monkeypatch.setattr(sys, "dont_write_bytecode", False)


def _code(path: Path):
    loader = TextCheckedLoader("m", str(path))
    return loader.get_code("m")


def _result(code) -> str:
    scope: dict = {}
    exec(code, scope)
    return scope["work"]()


def test_the_loader_serves_its_pyc_while_the_text_hashes_the_same(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "steps.py"
    path.write_text(STEPS)
    assert _result(_code(path)) == "first"
    pyc = Path(importlib.util.cache_from_source(str(path)))
    assert pyc.read_bytes()[4:8] == (0b11).to_bytes(4, "little")  # (checked hash-based)

    def refused(*args: object, **kwargs: object) -> None:
        raise AssertionError("compiled again")

    monkeypatch.setattr(TextCheckedLoader, "source_to_code", refused)
    assert _result(_code(path)) == "first"  # (from the .pyc: no compile)
    path.write_text(EDITED)
    with pytest.raises(AssertionError, match="compiled again"):
        _code(path)


def test_an_edit_within_a_second_at_one_size_runs_the_new_text(tmp_path: Path) -> None:
    path = tmp_path / "steps.py"
    path.write_text(STEPS)
    assert _result(_code(path)) == "first"
    path.write_text(EDITED)
    assert _result(_code(path)) == "other"


def test_a_stale_pyc_a_plain_import_wrote_is_not_run(tmp_path: Path, workdir: Path) -> None:
    """``python -c 'import steps'`` wrote a timestamp ``.pyc`` of the first text; the file
    is saved again at once at the same size; ``dagnb run`` runs the second text."""
    (tmp_path / "steps.py").write_text(STEPS)
    (tmp_path / "wf.yml").write_text("steps:\n  w: {python: 'steps.py:work'}\n")
    subprocess.run([sys.executable, "-c", "import steps"], cwd=tmp_path, check=True,
                   env={"PATH": "/usr/bin:/bin"})
    pyc = Path(importlib.util.cache_from_source(str(tmp_path / "steps.py")))
    assert pyc.read_bytes()[4:8] == bytes(4)  # (Python's own: checked by mtime and size)
    stat = (tmp_path / "steps.py").stat()
    (tmp_path / "steps.py").write_text(EDITED)
    os.utime(tmp_path / "steps.py", ns=(stat.st_atime_ns, stat.st_mtime_ns))  # (one tick)
    assert dagnb.load(tmp_path / "wf.yml")["w"].func() == "other"


def test_a_moved_folder_s_pyc_names_the_file_where_it_is_now(tmp_path: Path) -> None:
    """A project folder moved (or copied) with its ``__pycache__``: the code says where
    its file is now, in tracebacks and to inspect, as Python's own import does."""
    old = tmp_path / "old"
    old.mkdir()
    (old / "steps.py").write_text(STEPS)
    assert _code(old / "steps.py").co_filename == str(old / "steps.py")
    new = tmp_path / "new"
    old.rename(new)
    assert _code(new / "steps.py").co_filename == str(new / "steps.py")


HELPED = ("import helpers\nfrom pkg.rates import RATE\n\n\n"
          "def work():\n    return helpers.BASE + RATE\n")


@pytest.fixture
def helpers_forgotten() -> Iterator[None]:
    """The helper modules imported from a test's folder, forgotten before and after."""
    names = ("helpers", "pkg", "pkg.rates")
    for name in names:
        sys.modules.pop(name, None)
    yield
    for name in names:
        sys.modules.pop(name, None)


@pytest.mark.usefixtures("helpers_forgotten")
def test_helpers_and_packages_beside_the_steps_file_run_their_new_text(
        tmp_path: Path, workdir: Path) -> None:
    """A plain import wrote Python's ``.pyc`` of each helper; both are saved again at
    once at the same size: the steps run, and are keyed on, the new texts."""
    (tmp_path / "pkg").mkdir()
    (tmp_path / "pkg" / "__init__.py").write_text("")
    helper, rates = tmp_path / "helpers.py", tmp_path / "pkg" / "rates.py"
    helper.write_text("BASE = 100\n")
    rates.write_text("RATE = 2\n")
    (tmp_path / "steps.py").write_text(HELPED)
    (tmp_path / "wf.yml").write_text("steps:\n  w: {python: 'steps.py:work'}\n")
    subprocess.run([sys.executable, "-c", "import helpers, pkg.rates"], cwd=tmp_path,
                   check=True, env={"PATH": "/usr/bin:/bin"})
    for file, text in ((helper, "BASE = 500\n"), (rates, "RATE = 7\n")):
        stat = file.stat()
        file.write_text(text)
        os.utime(file, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # (one tick)
    assert dagnb.load(tmp_path / "wf.yml")["w"].func() == 507
    assert type(sys.modules["pkg.rates"].__spec__.loader) is TextCheckedLoader


@pytest.mark.usefixtures("helpers_forgotten")
def test_a_folder_with_no_steps_file_keeps_python_s_own_loader(tmp_path: Path,
                                                               monkeypatch) -> None:
    (tmp_path / "helpers.py").write_text("BASE = 1\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    import helpers  # noqa: F401

    assert type(sys.modules["helpers"].__spec__.loader) is importlib.machinery.SourceFileLoader


@pytest.mark.usefixtures("helpers_forgotten")
def test_a_virtual_environment_in_the_steps_folder_keeps_python_s_own_loader(
        tmp_path: Path, workdir: Path, monkeypatch) -> None:
    """Its packages' ``.pyc`` files, written at install, still serve: not compiled anew."""
    site = tmp_path / ".venv" / "lib" / "site-packages"
    (site / "venvpkg").mkdir(parents=True)
    (site / "venvpkg" / "__init__.py").write_text("")
    (site / "venvpkg" / "inner.py").write_text("X = 1\n")
    (tmp_path / "steps.py").write_text("def work():\n    return 1\n")
    (tmp_path / "wf.yml").write_text("steps:\n  w: {python: 'steps.py:work'}\n")
    dagnb.load(tmp_path / "wf.yml")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.delitem(sys.modules, "venvpkg", raising=False)
    monkeypatch.delitem(sys.modules, "venvpkg.inner", raising=False)
    import venvpkg.inner  # noqa: F401

    assert type(sys.modules["venvpkg.inner"].__spec__.loader) is (
        importlib.machinery.SourceFileLoader)
    monkeypatch.delitem(sys.modules, "venvpkg.inner")
    monkeypatch.delitem(sys.modules, "venvpkg")


def test_a_package_of_a_steps_folder_within_another_s_is_checked_too(
        tmp_path: Path, monkeypatch) -> None:
    """Workflows in ``a/`` and ``a/sub/`` (no package): ``a/sub/pkg`` is the inner one's,
    whichever folder is looked at first."""
    inner = tmp_path / "sub"
    (inner / "pkg").mkdir(parents=True)
    (inner / "pkg" / "__init__.py").write_text("")
    monkeypatch.setattr(bytecode, "_FOLDERS", [str(tmp_path), str(inner)])  # (in order)
    assert bytecode._of_steps(str(inner / "pkg"))
    assert not bytecode._of_steps(str(tmp_path / "sub" / "data"))
