"""A workflow saved again in the same process with other pickled values (the same module
text) runs with the new values, not those of the module's first import."""

from __future__ import annotations

import importlib.util
import subprocess
import sys

import pytest

import dagnb
from dagnb import Graph, Step

_SOURCE = '''
import fractions

VALUE = fractions.Fraction(1, 3)


def use():
    return str(VALUE)
'''


def _notebook_module(folder):
    path = folder / "nbvalues.py"
    path.write_text(_SOURCE, encoding="utf-8")
    spec = importlib.util.spec_from_file_location("nbvalues63", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["nbvalues63"] = module
    spec.loader.exec_module(module)
    return module


def test_a_workflow_saved_again_with_other_pickled_values_runs_them(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    module = _notebook_module(tmp_path)
    try:
        graph = Graph("values", [Step("use", func=module.use)])
        graph.to_yaml(tmp_path / "pipeline.yml")
        assert (tmp_path / "pipeline_steps.pkl").exists()  # (the value is pickled)
        first = dagnb.load(tmp_path / "pipeline.yml").run(cache_mode="off")
        assert first.result("use") == "1/3"
        module.VALUE = module.fractions.Fraction(2, 3)
        graph.to_yaml(tmp_path / "pipeline.yml")
        again = dagnb.load(tmp_path / "pipeline.yml").run(cache_mode="off")
        assert again.result("use") == "2/3"
    finally:
        sys.modules.pop("nbvalues63", None)



_POINTS = """
import dataclasses, sys
import dagnb


@dataclasses.dataclass
class Point:
    x: int


def points():
    return [Point(1), Point(2)]


dagnb.Graph("points", [dagnb.Step("points", func=points)]).to_yaml(sys.argv[1])
"""


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_workflow_saved_into_a_dotted_folder_caches_results_of_its_classes(tmp_path):
    """``w/v0.3/pipe.yml``'s module was imported under a dotted name: a result of a class
    the notebook defined (``__main__``'s, copied into the module) could not be pickled,
    so the step was never cached."""
    (tmp_path / "nb.py").write_text(_POINTS, encoding="utf-8")
    (tmp_path / "w" / "v0.3").mkdir(parents=True)
    saved = subprocess.run([sys.executable, "nb.py", "w/v0.3/pipe.yml"], cwd=tmp_path,
                           capture_output=True, text=True, check=False)
    assert saved.returncode == 0, saved.stderr
    runs = [subprocess.run([sys.executable, "-m", "dagnb", "run", "w/v0.3/pipe.yml"],
                           cwd=tmp_path, capture_output=True, text=True, check=False)
            for _ in range(2)]
    assert [run.returncode for run in runs] == [0, 0], runs[0].stderr
    assert "cannot be pickled" not in runs[0].stderr
    assert "1 cached" in runs[1].stdout
