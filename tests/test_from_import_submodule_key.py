"""A function that imports a project module in its body with ``from pkg import util``
(``util`` a module of its own, not imported yet) keyed ``pkg/__init__.py`` alone: an
edit to ``pkg/util.py`` was served the old result, in a fresh process, by a Memory
function and by a graph's step alike (``import pkg.util`` and ``from pkg.util import f``
were keyed by ``util.py``). Each process here is fresh, as a re-run's is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = """
import sys
import dagnb
{preamble}
mem = dagnb.Memory(".cache")

@mem.cache
def cached(x):
    {body_import}
    return util.inner(x)

graph = dagnb.Graph("g")

@graph.step
def step():
    {body_import}
    return util.inner(1)

run = graph.run(cache_directory=".cache", executor="local")
print(cached(1), run.result("step"), run.states()["step"])
"""


def _project(folder: Path, preamble: str, body_import: str) -> None:
    (folder / "pkg").mkdir()
    (folder / "pkg" / "__init__.py").write_text("")
    (folder / "pkg" / "util.py").write_text("def inner(x):\n    return x + 1\n")
    (folder / "main.py").write_text(SCRIPT.format(preamble=preamble, body_import=body_import))


def _run(folder: Path) -> str:
    done = subprocess.run([sys.executable, "main.py"], cwd=folder, capture_output=True,
                          text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize(("preamble", "body_import"), [
    ("", "from pkg import util"),
    ("import pkg", "from pkg import util"),  # (the package imported, its module not)
    ("", "from pkg import util as util"),
    ("", "from pkg import __name__ as _, util"),  # (a name that is no module beside it)
], ids=["package-not-imported", "package-imported", "aliased", "with-a-non-module"])
def test_an_edit_to_a_module_imported_from_its_package_in_the_body_is_a_miss(
        tmp_path, preamble, body_import):
    _project(tmp_path, preamble, body_import)
    assert _run(tmp_path) == "2 2 succeeded"
    assert _run(tmp_path) == "2 2 cached"  # (unchanged: a hit, as before)
    (tmp_path / "pkg" / "util.py").write_text("def inner(x):\n    return x + 100\n")
    assert _run(tmp_path) == "101 101 succeeded"


def test_a_relative_from_import_of_a_sibling_module_in_the_body_is_keyed_by_its_file(
        tmp_path):
    """``from . import util`` in a function of the package's own module."""
    (tmp_path / "relpkg").mkdir()
    (tmp_path / "relpkg" / "__init__.py").write_text("")
    (tmp_path / "relpkg" / "util.py").write_text("def inner(x):\n    return x + 1\n")
    (tmp_path / "relpkg" / "steps.py").write_text(
        "def work(x):\n    from . import util\n    return util.inner(x)\n")
    script = ("import sys; sys.path.insert(0, sys.argv[1]); import relpkg.steps\n"
              "assert 'relpkg.util' not in sys.modules\n"
              "from dagnb.fingerprint import code_digest; print(code_digest(relpkg.steps.work))")

    def digest() -> str:
        return subprocess.run([sys.executable, "-c", script, str(tmp_path)], check=True,
                              capture_output=True, text=True, timeout=60).stdout.strip()

    before = digest()
    assert digest() == before
    (tmp_path / "relpkg" / "util.py").write_text("def inner(x):\n    return x + 2\n")
    assert digest() != before
