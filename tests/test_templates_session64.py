"""``dagnb templates new -p`` and ``dagnb run -p``: fixes of a QA pass.

``templates new -p 'title="Q3"'`` kept the quotes that ``dagnb run -p`` takes off; a
sweep's file took ``-p item=0.5`` (each fit copy's own item, no parameter) and ran every
branch with it; params.py and templates.py imported parameters.py's private helpers.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
import test_templates

import dagnb
from dagnb.cli import main
from dagnb.workflows import parameters

workspace = test_templates.workspace  # (its autouse fixture, as that module has it)

WORKFLOWS = Path(dagnb.__file__).parent / "workflows"


def _made(capsys, template_id: str, output: str, *params: str) -> int:
    """``dagnb templates new TEMPLATE [-p ...] -o OUTPUT``'s exit code, its output swallowed."""
    code = main(["templates", "new", template_id, *(f"-p{p}" for p in params), "-o", output])
    capsys.readouterr()
    return code


def _given_by_run(capsys, workflow: str, param: str) -> object:
    """The value ``dagnb plan WORKFLOW -p PARAM`` (read as ``dagnb run -p`` reads it)
    gives, from its ``params given: name=JSON for ...`` line."""
    assert main(["plan", workflow, "-p", param]) == 0
    line = capsys.readouterr().out.splitlines()[0]
    assert line.startswith("params given: "), line
    text = line.removeprefix("params given: ").partition("=")[2].rsplit(" for ", 1)[0]
    return json.loads(text)


# -- 1. templates new -p reads a value as dagnb run -p does ---------------------------
def test_templates_new_takes_the_quotes_off_a_quoted_value(workspace, capsys):
    assert _made(capsys, "pandas-etl", "q3.yml", 'title="Q3"') == 0
    assert dagnb.load(workspace / "q3.yml")["report"].params["title"] == "Q3"


def test_templates_new_reads_a_text_value_as_dagnb_run_reads_it(workspace, capsys):
    assert _made(capsys, "pandas-etl", "base.yml") == 0
    texts = ['"Q3"', "'Q3 sales'", '"3.10"', '"a \\"b\\""', "Q3", '"only one']
    for number, text in enumerate(texts):
        by_run = _given_by_run(capsys, "base.yml", f"title={text}")
        assert _made(capsys, "pandas-etl", f"new{number}.yml", f"title={text}") == 0
        made = dagnb.load(workspace / f"new{number}.yml")["report"].params["title"]
        assert (text, made) == (text, by_run)


def test_templates_new_reads_a_quoted_number_and_list_as_run_does(workspace, capsys):
    assert _made(capsys, "parameter-sweep", "s.yml", "samples='30'", 'alphas="0.5,2"') == 0
    graph = dagnb.load(workspace / "s.yml")
    assert graph["prepare"].params["samples"] == 30
    assert [graph[f"fit_{i}"].params["item"] for i in (0, 1)] == [0.5, 2.0]


# -- 2. a sweep's per-branch item is no parameter -------------------------------------
@pytest.mark.parametrize("command", ["run", "plan"])
def test_a_sweep_refuses_its_branches_item_naming_its_parameters(workspace, capsys, command):
    assert _made(capsys, "parameter-sweep", "sweep.yml") == 0
    assert main([command, "sweep.yml", "-p", "item=0.5"]) == 2
    out, err = capsys.readouterr()
    assert err == (
        "dagnb: error: --param 'item=0.5': 'item' is not a parameter of 'sweep.yml': each "
        "for_each copy has its own (4 copies of step 'fit', one per item of its parameter "
        "'alphas'); its parameters are alphas, samples, seed: to run other items make the "
        "file again: dagnb templates new parameter-sweep -p alphas=0.5 -p samples=200 "
        "-p seed=1 -o sweep.yml --force\n")
    assert out == ""
    assert not (workspace / "cache" / "runs").exists()  # (no step ran)


def test_a_sweep_refuses_its_branches_index_suggesting_the_files_items(workspace, capsys):
    assert _made(capsys, "parameter-sweep", "sweep.yml", "alphas=1,2") == 0
    assert main(["plan", "sweep.yml", "-p", "index=0"]) == 2
    err = capsys.readouterr().err
    assert "--param 'index=0': 'index' is not a parameter of 'sweep.yml'" in err
    assert err.endswith("-p alphas=1.0,2.0 -p samples=200 -p seed=1 -o sweep.yml --force\n")
    assert len(err.splitlines()) == 1


def test_the_command_the_refusal_names_makes_the_sweep_of_that_item(workspace, capsys):
    assert _made(capsys, "parameter-sweep", "sweep.yml") == 0
    assert main(["plan", "sweep.yml", "-p", "item=0.5"]) == 2
    command = capsys.readouterr().err.split("make the file again: dagnb ")[1].split()
    assert main([arg.strip("'") for arg in command]) == 0
    graph = dagnb.load(workspace / "sweep.yml")
    assert [step.params.get("item") for step in graph if step.name.startswith("fit")] == [0.5]


def test_a_sweep_takes_its_declared_parameters_and_refuses_item(workspace, capsys):
    assert _made(capsys, "parameter-sweep", "sweep.yml") == 0
    assert main(["plan", "sweep.yml", "-p", "seed=3"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "params given: seed=3 for prepare"
    assert main(["run", "sweep.yml", "-p", "samples=40", "--target", "prepare"]) == 0
    assert "params given: samples=40 for prepare" in capsys.readouterr().out
    assert main(["logs", "sweep.yml", "prepare"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "40 points"
    assert main(["run", "sweep.yml", "-p", "samples=40", "-p", "item=0.5"]) == 2


def test_only_a_templates_for_each_copies_refuse_item(workspace, capsys):
    """A file no template made has no for_each copies: its ``item`` is a param like any
    other."""
    (workspace / "hand.yml").write_text(
        "steps:\n  fit_0:\n    run: 'true'\n    params: {item: 0.1, index: 0}\n",
        encoding="utf-8")
    assert main(["plan", "hand.yml", "-p", "item=0.5"]) == 0
    assert capsys.readouterr().out.splitlines()[0] == "params given: item=0.5 for fit_0"
    assert _made(capsys, "parameter-sweep", "sweep.yml") == 0
    assert main(["plan", "sweep.yml", "-p", "item=0.5"]) == 2


# -- 3. no private helper crosses a module --------------------------------------------
def _private_uses(path: Path) -> list[str]:
    """Names with a leading underscore that ``path`` imports from a dagnb module, or
    reads off a dagnb module it imported (``templates._signature``)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    modules, found = set(), []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("dagnb"):
            found += [alias.name for alias in node.names if _private(alias.name)]
            modules |= {alias.asname or alias.name for alias in node.names}
    for node in ast.walk(tree):
        if (isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name)
                and node.value.id in modules and _private(node.attr)):
            found.append(f"{node.value.id}.{node.attr}")
    return found


def _private(name: str) -> bool:
    return name.startswith("_") and not name.startswith("__")


@pytest.mark.parametrize("module", ["params.py", "templates.py"])
def test_no_module_uses_anothers_private_parameter_helpers(module):
    assert _private_uses(WORKFLOWS / module) == []


def test_templates_cli_uses_only_the_templates_public_names():
    used = _private_uses(WORKFLOWS.parent / "cli" / "__init__.py")
    assert [name for name in used if name.startswith("templates.")] == []


@pytest.mark.parametrize("name", ["constructed", "items_as_typed", "template_parameter",
                                  "written_quoted"])
def test_the_shared_parameter_helpers_are_public_and_documented(name):
    assert name in parameters.__all__
    assert getattr(parameters, name).__doc__
