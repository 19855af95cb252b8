"""``--param`` spellings of one intent (QA pass, /tmp/qa-yaml).

A list parameter declared with no ``items`` read ``lrs=0.3,0.4`` as the text items
``["0.3", "0.4"]`` but ``lrs=[0.3, 0.4]`` as the floats: two values, two keys, for one
intent. ``-p N=3`` (for ``n``) and ``-p BATCH-SIZE=8`` (for ``batch_size``) got no
did-you-mean, and ``-p n=1 -p n=2`` ran with the last, silently.
"""

from __future__ import annotations

import json
import os
import sys

import pytest

import dagnb
from dagnb.cli import main

WORKFLOW = """\
parameters:
  lrs: {type: list, default: [0.1, 0.2]}
  pythons: {type: list, default: ["3.10", "3.11"]}
  sizes: {type: list, items: str, default: ["1", "2"]}
  n: {type: int, default: 3}
steps:
  fit:
    params: {lrs: [0.1, 0.2], pythons: ["3.10", "3.11"], sizes: ["1", "2"], n: 3,
             batch_size: 8}
    run: >-
      printf '%s\\n' "$DAGNB_PARAM_LRS" "$DAGNB_PARAM_PYTHONS" "$DAGNB_PARAM_SIZES"
      "$DAGNB_PARAM_N" > "$SEEN"
"""


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A working dir holding ``w.yml``, with its own cache; steps write to ``$SEEN``."""
    monkeypatch.setenv("DAGNB_CONFIG", "none")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("SEEN", str(tmp_path / "seen.txt"))
    monkeypatch.chdir(tmp_path)
    dagnb.configure(cache_directory=tmp_path / "cache", executor="local")
    (tmp_path / "w.yml").write_text(WORKFLOW, encoding="utf-8")
    yield tmp_path
    monkeypatch.undo()


def seen_by_the_step(workspace) -> list:
    """The params the step ran with: lrs, pythons, sizes and n, as JSON values."""
    lines = (workspace / "seen.txt").read_text(encoding="utf-8").splitlines()
    return [json.loads(line) for line in lines]


def key_with(*given: str) -> str:
    """The key of step ``fit`` of ``w.yml`` with the ``--param`` values ``given``."""
    from dagnb.cache import step_key
    from dagnb.workflows.params import file_values, param_pairs, set_params

    graph = dagnb.load("w.yml")
    set_params(graph, param_pairs(given, str, file_values(graph), graph.parameters, "'w.yml'"),
               "'w.yml'")
    return step_key(graph["fit"], upstream_digests={}, base_dir=os.getcwd()).digest


def test_a_list_with_no_items_reads_a_comma_list_as_its_bracket_spelling(workspace, capsys):
    assert main(["run", "w.yml", "-p", "lrs=0.3,0.4"]) == 0
    assert seen_by_the_step(workspace)[0] == [0.3, 0.4]  # (the text "0.3", "0.4" before)
    assert key_with("lrs=0.3,0.4") == key_with("lrs=[0.3, 0.4]")
    assert main(["run", "w.yml", "-p", "lrs=1,true,x,'1'"]) == 0
    assert seen_by_the_step(workspace)[0] == [1, True, "x", "1"]
    assert key_with("lrs=1,true,x,'1'") == key_with("lrs=[1, true, x, '1']")


def test_a_list_of_text_keeps_the_items_of_either_spelling_as_typed(workspace, capsys):
    # pythons declares no items, but its default is text: 3.10 is the text, not 3.1
    assert main(["run", "w.yml", "-p", "pythons=[3.10, 3.12]", "-p", "sizes=3,4"]) == 0
    assert seen_by_the_step(workspace)[1:3] == [["3.10", "3.12"], ["3", "4"]]
    assert key_with("pythons=3.10,3.12") == key_with("pythons=[3.10, 3.12]")
    assert key_with("sizes=3,4") == key_with("sizes=[3, 4]")


@pytest.mark.parametrize(("given", "meant"), [("N=4", "n"), ("BATCH-SIZE=16", "batch_size"),
                                              ("Batch_Size=16", "batch_size")])
def test_a_name_wrong_but_for_case_or_dash_is_found(workspace, capsys, given, meant):
    assert main(["run", "w.yml", "-p", given]) == 2
    name = given.partition("=")[0]
    assert capsys.readouterr().err == (
        f"dagnb: error: --param {name!r}: no step of 'w.yml' has a param {name!r}; its "
        f"params are batch_size, lrs, n, pythons, sizes; did you mean {meant!r}?\n")


def test_a_name_given_twice_with_two_values_is_refused(workspace, capsys):
    assert main(["run", "w.yml", "-p", "n=1", "-p", "lrs=0.5", "-p", "n=2"]) == 2
    out, err = capsys.readouterr()
    assert err == ("dagnb: error: --param 'n' is given twice (n=1, then n=2); give it once, "
                   "with the value meant\n")
    assert out == "" and not (workspace / "seen.txt").exists()
    assert main(["run", "w.yml", "-p", "n=5", "-p", "n=5"]) == 0  # (one value, twice)
    assert seen_by_the_step(workspace)[3] == 5


# -- templates new reads -p as run does ---------------------------------------------------
def test_templates_new_refuses_a_parameter_given_twice_and_finds_a_case_slip(
        workspace, capsys):
    assert main(["templates", "new", "parameter-sweep", "-p", "samples=50", "-p",
                 "samples=60", "-o", "s.yml"]) == 2
    assert capsys.readouterr().err == (
        "dagnb: error: --param 'samples' is given twice (samples=50, then samples=60); give "
        "it once, with the value meant\n")
    assert main(["templates", "new", "parameter-sweep", "-p", "SAMPLES=50", "-o", "s.yml"]) == 2
    assert "has no parameter 'SAMPLES'; did you mean 'samples'?" in capsys.readouterr().err
    assert not (workspace / "s.yml").exists()
    assert main(["templates", "new", "parameter-sweep", "-p", "samples=50", "-p",
                 "samples=50", "-o", "s.yml"]) == 0  # (one value given twice: one value)
