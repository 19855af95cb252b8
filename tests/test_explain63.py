"""``explain`` (and ``plan``) compare a step with its own workflow's entries only, and
call a module's global a variable, not a notebook's."""

from __future__ import annotations

import subprocess
import sys

import pytest

from dagnb.cache.explain import _variable_sentence


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_workflow_never_run_has_no_entry_though_another_shares_its_step_name(tmp_path):
    """`two.yml` never ran: it was told its params changed from `one.yml`'s."""
    (tmp_path / "one.yml").write_text("name: one\nsteps:\n  train:\n    params: {n: 1}\n"
                                      "    run: echo x\n", encoding="utf-8")
    (tmp_path / "two.yml").write_text("name: two\nsteps:\n  train:\n    params: {n: 2}\n"
                                      "    run: echo x\n", encoding="utf-8")
    dagnb = [sys.executable, "-m", "dagnb"]
    subprocess.run([*dagnb, "run", "one.yml"], cwd=tmp_path, check=True, capture_output=True)
    explained = subprocess.run([*dagnb, "explain", "two.yml", "train"], cwd=tmp_path,
                               capture_output=True, text=True, check=True).stdout
    assert explained.strip() == "no entry yet for step 'train'"
    again = subprocess.run([*dagnb, "explain", "one.yml", "train"], cwd=tmp_path,
                           capture_output=True, text=True, check=True).stdout
    assert "no entry yet" not in again


def test_a_modules_global_is_a_variable_a_notebooks_a_notebook_variable():
    assert _variable_sentence("helpers.FACTOR", "changed", "2", "3") == (
        "variable `helpers.FACTOR` changed: 2 → 3")
    assert _variable_sentence("params", "changed", "1", "2") == (
        "notebook variable `params` changed: 1 → 2")
