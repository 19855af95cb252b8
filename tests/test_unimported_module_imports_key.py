"""A project module a step's body imports, not imported yet, counts by its file; it
counted by that file only, so an edit to a project module that file imports
(``helpers.py`` doing ``import config``, ``config.py`` edited; ``pkg/__init__.py``
behind ``import pkg.sub``) served a fresh process the result of the old text. Its key
now covers the files of the project modules its import may run, found in their texts
(transitively, relative imports and lazy ones inside functions too) without importing
anything. Each session is a fresh process, as a kernel restart or a CI run is."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

SESSION = """\
import os, sys
sys.path.insert(0, os.getcwd())
import dagnb, steps
run = dagnb.Graph("g", [dagnb.Step("b", func=steps.b)]).run(
    cache_directory="cache", executor="local")
print(run.states()["b"], run.result("b"))
"""


def _session(folder: Path) -> str:
    env = {**os.environ, "DAGNB_CONFIG": "none", "DAGNB_WIDGETS": "0",
           "PYTHONDONTWRITEBYTECODE": "1"}
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = os.pathsep.join([root, env.get("PYTHONPATH", "")])
    done = subprocess.run([sys.executable, "session.py"], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip().splitlines()[-1]


def _write(folder: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        (folder / name).write_text(text)


CASES = {
    "a module it imports at its top": (
        {"config.py": "RATE = 1\n",
         "helpers.py": "import config\ndef f(x):\n    return x * config.RATE\n",
         "steps.py": "def b():\n    import helpers\n    return helpers.f(10)\n"},
        {"config.py": "RATE = 2\n"}),
    "a module imported in a function of it, two modules away": (
        {"deeper.py": "RATE = 1\n",
         "config.py": "def rate():\n    from deeper import RATE\n    return RATE\n",
         "helpers.py": "def f(x):\n    import config\n    return x * config.rate()\n",
         "steps.py": "def b():\n    import helpers\n    return helpers.f(10)\n"},
        {"deeper.py": "RATE = 2\n"}),
    "the package of import pkg.sub": (
        {"pkg/__init__.py": "SCALE = 1\n",
         "pkg/sub.py": "import pkg\ndef f(x):\n    return x * pkg.SCALE\n",
         "steps.py": "def b():\n    import pkg.sub\n    return pkg.sub.f(10)\n"},
        {"pkg/__init__.py": "SCALE = 2\n"}),
    "a module of the package imported relatively": (
        {"pkg/__init__.py": "",
         "pkg/settings.py": "SCALE = 1\n",
         "pkg/sub.py": "from .settings import SCALE\ndef f(x):\n    return x * SCALE\n",
         "steps.py": "def b():\n    from pkg import sub\n    return sub.f(10)\n"},
        {"pkg/settings.py": "SCALE = 2\n"}),
}


@pytest.mark.parametrize("case", list(CASES))
def test_an_edit_to_a_module_the_unimported_module_imports_runs_the_step_again(
        tmp_path: Path, case: str):
    files, edit = CASES[case]
    _write(tmp_path, {**files, "session.py": SESSION})
    assert _session(tmp_path) == "succeeded 10"
    assert _session(tmp_path) == "cached 10"  # (nothing edited: served, as before)
    _write(tmp_path, edit)
    assert _session(tmp_path) == "succeeded 20"  # (was: cached 10, the old text's)
    assert _session(tmp_path) == "cached 20"


def test_a_library_module_the_unimported_module_imports_changes_nothing(tmp_path: Path):
    _write(tmp_path, {
        "helpers.py": "import json, os.path\ndef f(x):\n    return x * len(json.dumps(1))\n",
        "steps.py": "def b():\n    import helpers\n    return helpers.f(10)\n",
        "session.py": SESSION})
    assert _session(tmp_path) == "succeeded 10"
    assert _session(tmp_path) == "cached 10"
