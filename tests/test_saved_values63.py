"""A workflow saved again in the same process with other pickled values (the same module
text) runs with the new values, not those of the module's first import."""

from __future__ import annotations

import importlib.util
import sys

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
