"""A file ``dagnb templates new`` made, then edited; ``--param`` messages: a QA pass.

An edited ``samples: 500`` under ``default: 200`` validated (the loader skipped the
default's check for every template file), and ``-p alphas=...`` named the ``--force``
command that wrote 200 back; ``-p alpha=1`` listed the copies' ``index``/``item`` and did
not find ``alphas``; ``rows=2.5`` was said as the text ``'2.5'``, and ``.inf`` was "a
float" where ``inf`` was "a finite float"; the README's example named a parameter q3.yml
has not; ``templates show pandas-etl`` said it may read sales rows (it makes them).
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import test_templates

import dagnb
from dagnb.cli import main
from dagnb.workflows import templates

workspace = test_templates.workspace  # (its autouse fixture, as that module has it)

README = Path(__file__).resolve().parents[1] / "README.md"

GREET = """\
id: greet
name: Greet
parameters:
  who: {type: str, default: world}
workflow:
  steps:
    hello:
      run: 'echo "$DAGNB_PARAM_WHO"'
      params: {who: "Dear ${who}"}
"""


def _new(capsys, template_id: str, output: str, *params: str) -> None:
    assert main(["templates", "new", template_id, *(f"-p{p}" for p in params),
                 "-o", output]) == 0
    capsys.readouterr()


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text(encoding="utf-8")
    assert text.count(old) == 1, old
    path.write_text(text.replace(old, new), encoding="utf-8")


def _error(capsys, *argv: str) -> str:
    """The one line of stderr of ``dagnb ARGV``, which must exit 2."""
    assert main(list(argv)) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1, err
    return err.removeprefix("dagnb: error: ").rstrip("\n")


# -- 1. an edited step value of a template's file is checked ------------------------
@pytest.mark.parametrize("command", ["validate", "run", "plan"])
def test_a_step_value_edited_away_from_its_default_is_refused_naming_both(
        workspace, capsys, command):
    _new(capsys, "parameter-sweep", "workflows/", "alphas=1")
    path = workspace / "workflows/parameter-sweep.yml"
    _edit(path, "      samples: 200\n", "      samples: 500\n")
    extra = ["-p", "alphas=[0.5,2]"] if command == "run" else []
    assert _error(capsys, command, "workflows/parameter-sweep.yml", *extra) == (
        "workflows/parameter-sweep.yml: parameter 'samples' has default 200, but step "
        "'prepare' gives params samples: 500, the value its steps run with; make them "
        "one: default: 500, or samples: 200 in step 'prepare'")
    _edit(path, "    default: 200\n", "    default: 500\n")  # (the fix it names)
    assert main(["validate", str(path)]) == 0
    assert dagnb.load(path)["prepare"].params["samples"] == 500


def test_a_value_the_template_makes_of_a_parameter_loads_but_not_once_edited(
        workspace, capsys, monkeypatch):
    """``who: Dear Ann`` is what template greet writes for Ann (not the default itself):
    it loads; edited to Bob, it is neither that nor the default, and is refused."""
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(test_templates.user_template(
        workspace / "tpl", GREET, "greet.yml")))
    _new(capsys, "greet", "g.yml", "who=Ann")
    assert main(["validate", "g.yml"]) == 0
    capsys.readouterr()
    _edit(workspace / "g.yml", "who: Dear Ann", "who: Dear Bob")
    assert _error(capsys, "validate", "g.yml") == (
        "g.yml: parameter 'who' has default 'Ann', for which template 'greet' writes params "
        "who: 'Dear Ann' in step 'hello', but the file gives 'Dear Bob' there; write who: "
        "'Dear Ann' there, or give who the default that value is made of")


def test_an_edited_file_is_not_told_to_make_itself_again_with_force(workspace, capsys):
    """Its step edited (its code, not a param), ``-p alphas`` named the ``--force`` that
    undoes it; it names a new file now, whose command makes that file and keeps this one."""
    _new(capsys, "parameter-sweep", "sweep.yml")
    assert _error(capsys, "run", "sweep.yml", "-p", "alphas=1").endswith(  # (as made)
        "so make the file again: dagnb templates new parameter-sweep -p alphas=1.0 "
        "-p samples=200 -p seed=1 -o sweep.yml --force")
    edited = 'print(len(data), "points")'
    _edit(workspace / "sweep.yml", 'print(f"{len(data)} points")', edited)
    err = _error(capsys, "run", "sweep.yml", "-p", "alphas=[0.5,2]")
    assert "-o sweep.yml --force" not in err
    assert "would undo the edits of its step 'prepare'" in err
    command = err.split("so make another file, ")[1].split(", and carry")[0]
    assert command == ("dagnb templates new parameter-sweep -p alphas=0.5,2.0 -p samples=200 "
                       "-p seed=1 -o sweep-2.yml")
    assert main(shlex.split(command)[1:]) == 0
    assert edited in (workspace / "sweep.yml").read_text()
    made = dagnb.load(workspace / "sweep-2.yml")
    assert [s.params["item"] for s in made if s.name.startswith("fit_")] == [0.5, 2.0]


def test_an_edited_sweep_refusing_item_names_no_force_either(workspace, capsys):
    _new(capsys, "parameter-sweep", "sweep.yml")
    _edit(workspace / "sweep.yml", "      seed: 1\n", "      seed: 1\n    tags: [mine]\n")
    err = _error(capsys, "plan", "sweep.yml", "-p", "item=0.5")
    assert "--force" not in err.replace("(making this one again, --force,", "")
    assert "-o sweep-2.yml" in err


# -- 2. an unknown --param lists what can be set ------------------------------------
def test_an_unknown_param_lists_what_can_be_set_and_finds_the_list_parameter(
        workspace, capsys):
    _new(capsys, "parameter-sweep", "sweep.yml")
    assert _error(capsys, "run", "sweep.yml", "-p", "alpha=1") == (
        "--param 'alpha': no step of 'sweep.yml' has a param 'alpha'; its params are "
        "samples, seed; did you mean 'alphas'?")


# -- 3. the README's example is true --------------------------------------------------
def test_the_readmes_refused_param_example_says_what_the_command_says(workspace, capsys):
    text = " ".join(README.read_text(encoding="utf-8").split())
    param = re.search(r"`dagnb run workflows/q3\.yml --param (\S+)` \(and", text).group(1)
    said = re.search(rf"\(`(--param '{re.escape(param)}': [^`]*)`\)", text).group(1)
    _new(capsys, "pandas-etl", "workflows/q3.yml", "rows=1000", "title=Q3 sales")
    assert _error(capsys, "run", "workflows/q3.yml", "--param", param) == said


# -- 4. pandas-etl says what it does ------------------------------------------------
def test_pandas_etl_says_it_generates_its_rows_and_how_to_read_ones_own():
    description = templates.get("pandas-etl").description
    assert "(or read)" not in description
    assert description.startswith("Generate synthetic sales rows")
    assert "$DAGNB_OUT/sales.csv" in description and "mounts:" in description


# -- 5. a value typed on the command line is said as typed --------------------------
@pytest.mark.parametrize(("param", "said"), [
    ("rows=2.5", "rows = 2.5 is not valid; expected an int"),
    ("rows=1e3", "rows = 1e3 is not valid; expected an int; write it as 1000"),
    ("rows=true", "rows = true is not valid; expected an int"),
    ("min_amount=inf", "min_amount = inf is not valid; expected a finite float"),
    ("min_amount=.inf", "min_amount = .inf is not valid; expected a finite float"),
    ("min_amount=-.inf", "min_amount = -.inf is not valid; expected a finite float"),
    ("min_amount=.nan", "min_amount = .nan is not valid; expected a finite float"),
])
def test_a_refused_value_is_said_as_typed_and_infinities_alike(workspace, capsys, param,
                                                               said):
    _new(capsys, "pandas-etl", "q3.yml")
    assert _error(capsys, "validate", "q3.yml", "-p", param) == (
        f"--param {param!r}: {said} (parameters of 'q3.yml')")
    name, rest = said.split(" = ", 1)
    assert _error(capsys, "templates", "new", "pandas-etl", "-p", param, "-o", "x.yml") == (
        f"template parameter {name!r} = {rest}")


def test_inf_spelled_either_way_is_one_problem_and_text_stays_quoted(workspace, capsys):
    """``.inf`` (YAML's) was "expected a float" where ``inf`` was "a finite float"; text
    that is no number is still quoted, as is a value given in Python."""
    _new(capsys, "pandas-etl", "q3.yml")
    problems = {_error(capsys, "validate", "q3.yml", "-p", f"min_amount={inf}").split(
        " is not valid; ")[1] for inf in ("inf", ".inf", "-.INF", "Infinity")}
    assert problems == {"expected a finite float (parameters of 'q3.yml')"}
    assert "rows = 'many' is not valid" in _error(capsys, "validate", "q3.yml", "-p",
                                                  "rows=many")
    with pytest.raises(dagnb.ConfigError, match=r"^template parameter 'rows' = '2' is not "
                                                "valid; expected an int$"):
        templates.instantiate("pandas-etl", rows="2")


# -- 2. a sweep's copies are checked against its list parameter's default ------------
def _sweep_error(capsys, command: str) -> str:
    extra = ["-p", "samples=300"] if command == "run" else []
    return _error(capsys, command, "sweep.yml", *extra)


@pytest.mark.parametrize("command", ["validate", "run", "plan"])
def test_a_sweep_default_edited_with_no_copy_made_is_refused(workspace, capsys, command):
    """The default edited to 5.0: the copies still ran 10.0 (the file said 5.0), and
    ``--force`` would make 5.0's; refused, naming both fixes, each of which loads."""
    _new(capsys, "parameter-sweep", "sweep.yml")
    path = workspace / "sweep.yml"
    _edit(path, "    - 10.0\n", "    - 5.0\n")
    assert _sweep_error(capsys, command) == (
        "sweep.yml: parameter 'alphas' has default [0.0, 0.1, 1.0, 5.0], from which template "
        "'parameter-sweep' makes 4 copies of step 'fit' with items [0.0, 0.1, 1.0, 5.0], but "
        "the file's copies run [0.0, 0.1, 1.0, 10.0]; make them one: write default: "
        "[0.0, 0.1, 1.0, 10.0] under parameters: alphas; or make the file again from the "
        "default: dagnb templates new parameter-sweep -p alphas=0.0,0.1,1.0,5.0 -p samples=200 "
        "-p seed=1 -o sweep.yml --force")
    again = _sweep_error(capsys, "validate").split("from the default: ")[1]
    assert main(shlex.split(again)[1:]) == 0  # (the command it names makes 5.0's copy)
    assert [dagnb.load(path)[f"fit_{i}"].params["item"] for i in range(4)] == [
        0.0, 0.1, 1.0, 5.0]


@pytest.mark.parametrize(("old", "new", "runs"), [
    ("      item: 0.0\n", "      item: 0.5\n", [0.5, 0.1, 1.0, 10.0]),  # a copy's item
    ("    - 10.0\n", "    - 10.0\n    - 20.0\n", [0.0, 0.1, 1.0, 10.0]),  # no copy made
])
def test_a_sweep_copy_unlike_the_default_is_refused_and_the_default_fix_loads(
        workspace, capsys, old, new, runs):
    _new(capsys, "parameter-sweep", "sweep.yml")
    path = workspace / "sweep.yml"
    _edit(path, old, new)
    err = _sweep_error(capsys, "validate")
    assert f"but the file's copies run {runs!r}; make them one: write default: {runs!r} " in err
    text = path.read_text(encoding="utf-8")
    start = text.index("    default:\n    - 0.0")
    end = text.index("    minimum: 0\n", start)
    items = "".join(f"    - {item}\n" for item in runs)
    path.write_text(text[:start] + "    default:\n" + items + text[end:], encoding="utf-8")
    assert main(["validate", "sweep.yml"]) == 0
    graph = dagnb.load(path)
    assert graph.parameters["alphas"].default == runs
    assert [graph[f"fit_{i}"].params["item"] for i in range(4)] == runs


def test_copies_of_a_list_the_template_gives_itself_are_the_files_to_edit(
        workspace, capsys, monkeypatch):
    """``for_each: [1, 2]`` names no parameter: nothing says other items, so an edited
    copy loads."""
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(test_templates.user_template(
        workspace / "tpl", LITERAL_SWEEP, "fixed.yml")))
    _new(capsys, "fixed", "f.yml")
    _edit(workspace / "f.yml", "      item: 2\n", "      item: 3\n")
    assert main(["validate", "f.yml"]) == 0
    assert dagnb.load(workspace / "f.yml")["echo_1"].params["item"] == 3


LITERAL_SWEEP = """\
id: fixed
name: Fixed items
parameters:
  who: {type: str, default: world}
workflow:
  steps:
    echo:
      for_each: [1, 2]
      run: 'echo "$DAGNB_PARAM_ITEM"'
"""
