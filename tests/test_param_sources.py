"""Which params of a %%dagger line came from one notebook variable, and when it changed."""

from __future__ import annotations

import pytest

from dagnb.notebook.param_sources import changed_variables, params_from_variables


@pytest.mark.parametrize(("written", "found"), [
    ("s --param t=$t --param n=3", {"t": ("t", "20")}),
    ('s --param=t="$t" --python', {"t": ("t", "20")}),
    ("s --param t={t}", {"t": ("t", "20")}),
    ("s --param t={t+1} --param u=x$t --param v=$missing", {}),  # (no one variable's whole)
    ("s --param 't", {}),  # (no line: the parser refuses it)
    (None, {}),
])
def test_a_param_is_from_a_variable_when_its_whole_value_is_one(written, found):
    assert params_from_variables(written, {"t": 20}) == found


def test_a_change_is_said_once_per_param_of_a_step_still_in_the_graph():
    sources = {"s": {"t": ("t", "20"), "u": ("u", "x")}, "gone": {"t": ("t", "20")}}
    said = changed_variables(sources, {"s"}, {"t": 90, "u": "x"})
    assert said == ["dagnb: step 's' has --param t=20, from $t when its cell ran; $t is "
                    "now 90: run that cell again to use it"]
    assert changed_variables(sources, {"s"}, {"u": "y" * 100})[0].endswith(
        f"$u is now {'y' * 37}...: run that cell again to use it")
