"""Saved workflows' Python modules, and ``dagnb templates``: fixes of a QA pass.

A module of one saved workflow is never replaced by another's save, nor a file dagnb did
not write; two template files of one id are said; ``templates new`` writes only YAML files
and quotes its hint; list params take ``[3.10, 3.12]`` as typed and numpy arrays.
"""

from __future__ import annotations

import os
import pickle
import re
import shlex
import sys
import types
import warnings
from pathlib import Path

import numpy as np
import pytest

import dagnb
from dagnb.cli import main
from dagnb.errors import WorkflowError
from dagnb.model.graph import Graph
from dagnb.model.step import Step
from dagnb.workflows import templates
from dagnb.workflows.loader import dump, load


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    """A temp working dir and cache, no user templates, no config file."""
    monkeypatch.delenv("DAGNB_TEMPLATE_PATH", raising=False)
    monkeypatch.setenv("DAGNB_CONFIG", "none")
    monkeypatch.chdir(tmp_path)
    dagnb.configure(cache_directory=tmp_path / "cache", executor="local")
    yield tmp_path.resolve()
    monkeypatch.undo()


def notebook_function(folder: Path, result: str, name: str = "calc", code: str = "") -> object:
    """A function ``name`` returning ``result``, defined in a file of its own (as a
    notebook's cell is: its source found, its name the same in two notebooks)."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"cell_{name}.py"
    path.write_text(f"{code}\ndef {name}():\n    return {result}\n", encoding="utf-8")
    module = types.ModuleType(f"cells_{abs(hash(path))}")
    module.__file__ = str(path)
    sys.modules[module.__name__] = module  # (inspect finds the source of what a module holds)
    # compiled from its text, as a cell is: never from a .pyc of the text saved before it
    exec(compile(path.read_text(encoding="utf-8"), path, "exec"), vars(module))
    return getattr(module, name)


def saved(folder: Path, yaml_path: Path, result: str, code: str = "") -> Path:
    """A graph of one Python step ``calc`` made in ``folder``, saved as ``yaml_path``."""
    func = notebook_function(folder / f"src_{abs(hash(str(yaml_path)))}", result, code=code)
    yaml_path.parent.mkdir(parents=True, exist_ok=True)
    dump(Graph("g", [Step("calc", func=func)], base_dir=folder), yaml_path)
    return yaml_path


def computed(yaml_path: Path) -> object:
    return load(yaml_path)["calc"].func()


# -- 1. two workflows saved from one folder -----------------------------------------------

def test_two_workflows_saved_into_two_folders_each_keep_their_own_code(workspace):
    """`%dagger save wa/pipeline.yml` and `wb/pipeline.yml` from one folder both wrote
    `../pipeline_steps.py`: wa's workflow silently computed wb's result."""
    saved(workspace, workspace / "wa" / "pipeline.yml", "10 * 2")
    saved(workspace, workspace / "wb" / "pipeline.yml", "10 * 3")
    assert computed(workspace / "wa" / "pipeline.yml") == 20
    assert computed(workspace / "wb" / "pipeline.yml") == 30
    assert (workspace / "wa_pipeline_steps.py").is_file()  # (in the folder, its imports' place)


def test_a_save_that_would_replace_another_workflows_module_is_refused_naming_both(workspace):
    """`wa_pipeline.yml` beside the notebook would take `wa/pipeline.yml`'s module name."""
    first = saved(workspace, workspace / "wa" / "pipeline.yml", "10 * 2")
    module = workspace / "wa_pipeline_steps.py"
    with pytest.raises(WorkflowError, match="^" + re.escape(
            f"{str(module)!r} holds the Python steps of workflow {str(first)!r}, and saving "
            f"{str(workspace / 'wa_pipeline.yml')!r} would replace them; save it under "
            "another file name") + "$"):
        saved(workspace, workspace / "wa_pipeline.yml", "10 * 3")
    assert computed(first) == 20


def test_saving_a_workflow_again_replaces_its_own_module(workspace):
    target = saved(workspace, workspace / "wa" / "pipeline.yml", "10 * 2")
    saved(workspace, target, "10 * 4")
    assert computed(target) == 40


def test_a_module_whose_workflow_file_is_gone_is_replaced(workspace):
    gone = saved(workspace, workspace / "wa" / "pipeline.yml", "10 * 2")
    gone.unlink()
    assert computed(saved(workspace, workspace / "wa_pipeline.yml", "10 * 3")) == 30


OLD_MODULE = ('"""Python steps exported by dagnb with their workflow; loaded by it."""\n\n\n'
              "def calc():\n    return 10 * 5\n")


def test_a_workflow_saved_before_modules_named_their_workflow_still_runs(workspace):
    """Its YAML names the module by path (`../pipeline_steps.py`): that is what loads."""
    (workspace / "pipeline_steps.py").write_text(OLD_MODULE, encoding="utf-8")
    (workspace / "wa").mkdir()
    (workspace / "wa" / "pipeline.yml").write_text(
        "steps:\n  calc:\n    python: ../pipeline_steps.py:calc\n    workdir: ..\n",
        encoding="utf-8")
    assert computed(workspace / "wa" / "pipeline.yml") == 50


def test_a_module_saved_before_modules_named_their_workflow_is_replaced_as_then(workspace):
    (workspace / "pipeline_steps.py").write_text(OLD_MODULE, encoding="utf-8")
    assert computed(saved(workspace, workspace / "pipeline.yml", "10 * 6")) == 60


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_file_saved_beside_the_notebook_keeps_its_module_name_and_key(workspace):
    """The name (and so the reference in the YAML) is as before; the key is the step's."""
    func = notebook_function(workspace / "src", "10 * 2")
    graph = Graph("g", [Step("calc", func=func)], base_dir=workspace)
    text = dump(graph, workspace / "pipeline.yml")
    assert "python: pipeline_steps.py:calc" in text
    loaded = load(workspace / "pipeline.yml")
    assert loaded.run(executor="local").ok
    assert graph.run(executor="local").states() == {"calc": "cached"}


# -- 2. a file dagnb did not write ---------------------------------------------------------

def test_a_save_refuses_to_replace_a_hand_written_steps_module(workspace):
    """`%dagger save c.yml` silently replaced the user's own `c_steps.py`."""
    mine = "# my hand-written helpers\ndef clean(df):\n    return df.dropna()\n"
    (workspace / "c_steps.py").write_text(mine, encoding="utf-8")
    with pytest.raises(WorkflowError, match="^" + re.escape(
            f"{str(workspace / 'c_steps.py')!r} exists and was not written by dagnb, and "
            "saving 'c.yml' would replace it: save the workflow under another name, or move "
            "c_steps.py away") + "$"):
        saved(workspace, workspace / "c.yml", "40")
    assert (workspace / "c_steps.py").read_text(encoding="utf-8") == mine
    assert not (workspace / "c.yml").exists()


def test_a_save_refuses_to_replace_a_pickle_dagnb_did_not_write(workspace):
    (workspace / "c_steps.pkl").write_bytes(b"mine")
    with pytest.raises(WorkflowError, match=r"c_steps\.pkl' exists and was not written by"):
        saved(workspace, workspace / "c.yml", "len(SPAN)", code="SPAN = range(3)\n")
    assert (workspace / "c_steps.pkl").read_bytes() == b"mine"


def test_a_save_replaces_the_module_and_pickle_dagnb_wrote(workspace):
    target = saved(workspace, workspace / "c.yml", "len(SPAN)", code="SPAN = range(3)\n")
    assert computed(target) == 3
    saved(workspace, target, "len(SPAN)", code="SPAN = range(5)\n")
    assert pickle.loads((workspace / "c_steps.pkl").read_bytes()) == {"SPAN": range(5)}


# -- 3. two template files of one id -------------------------------------------------------

ETL = """id: my-etl
name: My ETL ({which})
parameters: {{rows: {{type: int, default: 10}}}}
workflow:
  steps:
    extract: {{params: {{rows: "${{rows}}"}}, run: 'echo {which} $DAGNB_PARAM_ROWS'}}
"""


def test_two_user_template_files_of_one_id_are_said_once_naming_both(workspace, monkeypatch):
    folder = workspace / "tpl"
    folder.mkdir()
    (folder / "etl-v1.yml").write_text(ETL.format(which="old"), encoding="utf-8")
    (folder / "etl-v2.yml").write_text(ETL.format(which="new"), encoding="utf-8")
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(folder))
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        assert templates.get("my-etl").name == "My ETL (old)"
        templates.list()
    assert [str(w.message) for w in said] == [
        f"template 'my-etl' of {str(folder / 'etl-v2.yml')!r} is hidden by the one of "
        f"{str(folder / 'etl-v1.yml')!r}, found first on DAGNB_TEMPLATE_PATH; give it "
        "another id"]
    assert said[0].category is templates.TemplatePathWarning


def test_one_template_folder_named_twice_hides_nothing(workspace, monkeypatch):
    folder = workspace / "tpl"
    folder.mkdir()
    (folder / "etl.yml").write_text(ETL.format(which="one"), encoding="utf-8")
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", os.pathsep.join([str(folder), str(folder)]))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert templates.get("my-etl").name == "My ETL (one)"


# -- 4. templates new: only YAML files, a quoted hint --------------------------------------

@pytest.mark.parametrize("output", ["sweep.ipynb", "sweep.py", "sweep"])
def test_templates_new_refuses_a_file_that_is_no_yaml(workspace, capsys, output):
    assert main(["templates", "new", "parameter-sweep", "-o", output]) == 2
    assert capsys.readouterr().err == (
        f"dagnb: error: -o {output!r}: templates new writes a YAML workflow; name a .yml "
        "file (such as 'sweep.yml')\n")
    assert not (workspace / output).exists()


def test_templates_new_takes_the_file_to_write_as_its_second_word(workspace, capsys):
    """``templates new ID FILE``, as cp reads it, was "unrecognized arguments: FILE"."""
    assert main(["templates", "new", "parameter-sweep", "sweep.yml"]) == 0
    assert capsys.readouterr().out.startswith("wrote sweep.yml from template")
    assert (workspace / "sweep.yml").is_file()
    assert main(["templates", "new", "parameter-sweep", "sweep"]) == 2
    assert capsys.readouterr().err.startswith("dagnb: error: 'sweep': templates new writes")
    assert main(["templates", "new", "parameter-sweep", "a.yml", "-o", "b.yml"]) == 2
    assert capsys.readouterr().err == (
        "dagnb: error: templates new was given two files to write, 'a.yml' and -o "
        "'b.yml'; name one\n")
    assert not (workspace / "a.yml").exists() and not (workspace / "b.yml").exists()


@pytest.mark.parametrize("output", ["flow.yml", "flow.YAML"])
def test_templates_new_writes_a_yml_or_yaml_file(workspace, output):
    assert main(["templates", "new", "parameter-sweep", "-o", output]) == 0
    assert dagnb.load(workspace / output).names


def test_templates_new_hint_is_a_command_the_shell_runs_as_said(workspace, capsys):
    output = "my flows/q3 sales.yml"
    assert main(["templates", "new", "pandas-etl", "-o", output]) == 0
    hint = capsys.readouterr().out.strip().rpartition("run it with: ")[2]
    assert shlex.split(hint) == ["dagnb", "run", output]


# -- 5. list params: items as typed, numpy arrays ------------------------------------------

MATRIX = """id: matrix
name: Python matrix
parameters: {pythons: {type: list, items: str, default: ["3.11"]}}
workflow:
  steps:
    test: {for_each: "${pythons}", run: 'echo "python $DAGNB_PARAM_ITEM"'}
"""


@pytest.mark.parametrize(("text", "items"), [
    ("[3.10, 3.12]", ["3.10", "3.12"]),
    ("[yes, 1.0, ~]", ["yes", "1.0", "~"]),
    ('["3.10", x y]', ["3.10", "x y"]),
    ("3.10,3.12", ["3.10", "3.12"]),
])
def test_a_list_of_text_parameter_keeps_bare_items_as_typed(workspace, monkeypatch, text,
                                                            items):
    """`[3.10, 3.12]` was refused, quoting 3.1, a value never typed."""
    (workspace / "tpl").mkdir()
    (workspace / "tpl" / "matrix.yml").write_text(MATRIX, encoding="utf-8")
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(workspace / "tpl"))
    assert templates.get("matrix").parameters["pythons"].parse(text) == items


def test_a_list_of_numbers_parameter_still_reads_items_as_numbers():
    alphas = templates.get("parameter-sweep").parameters["alphas"]
    assert alphas.parse("[0.5, 2]") == [0.5, 2.0]


def test_a_numpy_array_is_taken_for_a_list_parameter():
    """`alphas=np.linspace(0, 1, 3)` was refused, naming no fix."""
    graph = templates.instantiate("parameter-sweep", alphas=np.linspace(0, 1, 3))
    assert [graph[f"fit_{i}"].params["item"] for i in range(3)] == [0.0, 0.5, 1.0]
    assert all(type(graph[f"fit_{i}"].params["item"]) is float for i in range(3))


def test_a_refused_save_leaves_no_module_behind(workspace):
    """The module was written before the YAML was refused: a stray file in the folder.
    (A missing folder is made now: a file in its place refuses the save.)"""
    (workspace / "nowhere").write_text("a file, not a folder")
    with pytest.raises(WorkflowError, match=r"nowhere' is a file, not a folder"):
        dump(Graph("g", [Step("calc", func=notebook_function(workspace / "src", "1"))],
                   base_dir=workspace), workspace / "nowhere" / "pipeline.yml")
    assert not list(workspace.glob("**/*_steps.py"))
