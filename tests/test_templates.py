"""Pipeline templates: the catalogue, parameters, substitution, and every shipped
template running to success on the local executor."""

from __future__ import annotations

import ast
import json
import os
import re
import shlex
import subprocess
import sys
import textwrap
import warnings
from pathlib import Path

import pytest

import dagnb
import dagnb.cache
from dagnb.cli import main
from dagnb.workflows import templates

SHIPPED = ["ml-train-evaluate", "pandas-etl", "parameter-sweep", "python-lint-test"]


@pytest.fixture(autouse=True)
def workspace(tmp_path, monkeypatch):
    """A temp working dir and cache; python3 in steps is this interpreter (with pandas)."""
    monkeypatch.delenv("DAGNB_TEMPLATE_PATH", raising=False)
    monkeypatch.setenv("DAGNB_CONFIG", "none")
    monkeypatch.setenv("PATH", os.path.dirname(sys.executable) + os.pathsep + os.environ["PATH"])
    monkeypatch.chdir(tmp_path)
    dagnb.configure(cache_directory=tmp_path / "cache", executor="local")
    yield tmp_path
    monkeypatch.undo()


def user_template(folder: Path, text: str, name: str = "mine.yml") -> Path:
    folder.mkdir(exist_ok=True)
    (folder / name).write_text(text, encoding="utf-8")
    return folder


MINE = """
id: mine
name: Mine
category: custom
description: A test template.
parameters:
  count: {type: int, default: 2}
  ratio: {type: float, default: 0.5}
  label: {type: str}
  loud: {type: bool, default: false}
  words: {type: list, items: str, default: [a, b]}
workflow:
  name: mine-${label}
  steps:
    first:
      params: {count: "${count}", ratio: "${ratio}", loud: "${loud}", label: "${label}"}
      description: made for ${label}
      run: echo "$DAGNB_PARAM_LABEL" > "$DAGNB_OUT/label.txt"
    each:
      for_each: "${words}"
      needs: [first]
      run: echo "$DAGNB_PARAM_ITEM" > "$DAGNB_OUT/word.txt"
    last:
      needs: [each]
      run: cat "$DAGNB_IN"/*/word.txt
"""


def test_list_and_categories():
    frame = templates.list()
    assert list(frame.columns) == ["id", "name", "category", "description", "parameters"]
    assert set(SHIPPED) <= set(frame["id"])
    assert {"data", "ml", "testing"} <= set(templates.categories())
    row = frame.set_index("id").loc["parameter-sweep"]
    assert "alphas: list[float] = [0.0, 0.1, 1.0, 10.0]" in row["parameters"]
    assert set(templates.table("ml")["id"]) == {"ml-train-evaluate", "parameter-sweep"}


@pytest.mark.slow
@pytest.mark.parametrize("template_id", SHIPPED)
def test_every_shipped_template_runs_locally(template_id):
    graph = templates.instantiate(template_id)
    run = graph.run()
    assert run.ok, run.status()[["step", "state", "error"]].to_string()
    assert graph.run().states() == dict.fromkeys(graph.names, "cached")


@pytest.mark.slow
def test_template_outputs(workspace):
    etl = templates.instantiate("pandas-etl", rows=50, group_by="product", title="Q3")
    run = etl.run()
    report = (run.outputs("report") / "report.md").read_text()
    assert report.startswith("# Q3\n") and "apples" in report
    sweep = templates.instantiate("parameter-sweep", alphas=[0.0, 100.0]).run()
    best = json.loads((sweep.outputs("gather") / "sweep.json").read_text())
    assert [s["alpha"] for s in best["scores"]] == [0.0, 100.0]
    assert best["best"]["alpha"] == 0.0
    ml = templates.instantiate("ml-train-evaluate", samples=120).run()
    metrics = json.loads((ml.outputs("evaluate") / "metrics.json").read_text())
    assert metrics["test_rows"] == 30 and metrics["r2"] > 0.9


@pytest.mark.slow
def test_lint_test_template_with_a_bug_fails_the_tests():
    run = templates.instantiate("python-lint-test", with_bug=True).run()
    assert run.states() == {"scaffold": "succeeded", "lint": "succeeded",
                            "test": "failed", "report": "skipped"}


_PYTHON_TEXT = re.compile(r"python3 - <<'PY'[^\n]*\n(.*?)\nPY$", re.DOTALL | re.MULTILINE)


def _imported(source: str) -> set[str]:
    """The top-level modules a step's Python text imports."""
    names = set()
    for node in ast.walk(ast.parse(textwrap.dedent(source))):
        if isinstance(node, ast.Import):
            names |= {alias.name.split(".")[0] for alias in node.names}
        elif isinstance(node, ast.ImportFrom) and not node.level:
            names.add(node.module.split(".")[0])
    return names


def _pip_installed(run: str) -> set[str]:
    """The distributions a step's shell text has pip install before its Python runs."""
    names = set()
    for line in run.split("python3 - <<'PY'")[0].replace("\\\n", " ").splitlines():
        words = iter(shlex.split(line.partition("pip install")[2], comments=True))
        for word in words:
            if word == "--target":
                next(words)  # (a folder)
            elif not word.startswith(("-", ">")):  # (options, and >&2)
                names.add(re.match(r"[\w.-]+", word).group())
    return names


@pytest.mark.parametrize("template_id", SHIPPED)
def test_every_shipped_template_has_what_its_steps_import_in_its_image(template_id):
    """pandas-etl ran python:3.12-slim, which has no pandas, and every step imports it:
    each failed under the Dagger executor. A python image has the standard library only;
    a step needs the rest from pip, installed before its Python runs."""
    graph = templates.instantiate(template_id)
    for step in map(graph.__getitem__, graph.names):
        assert re.fullmatch(r"python:3\.\d+-slim", step.image), (step.name, step.image)
        # (python3 -m unittest runs the standard library's, on the package's tests)
        bodies = _PYTHON_TEXT.findall(step.run)
        needed = set().union(*map(_imported, bodies)) - set(sys.stdlib_module_names)
        assert needed <= _pip_installed(step.run), (template_id, step.name, needed)


def test_typed_substitution_and_for_each(workspace, monkeypatch):
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", MINE)))
    graph = templates.instantiate("mine", label="x", words=["p", "q", "r"])
    assert graph.name == "mine-x"
    assert graph.names == ["first", "each_0", "each_1", "each_2", "last"]
    assert dict(graph["first"].params) == {"count": 2, "ratio": 0.5, "loud": False, "label": "x"}
    assert graph["first"].description == "made for x"
    assert dict(graph["each_1"].params) == {"item": "q", "index": 1}
    assert graph["last"].needs == ("each_0", "each_1", "each_2")
    run = graph.run()
    assert run.ok
    assert run.logs("last")["line"].tolist() == ["p", "q", "r"]


def test_values_never_reach_shell_text(workspace, monkeypatch):
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", MINE)))
    nasty = "$(touch pwned); `touch pwned2` ' \" ;"
    run = templates.instantiate("mine", label=nasty).run()
    assert (run.outputs("first") / "label.txt").read_text() == nasty + "\n"
    assert not (workspace / "pwned").exists() and not (workspace / "pwned2").exists()


@pytest.mark.parametrize(("params", "message"), [
    ({}, "template 'mine' needs parameter 'label' \\(a str\\)"),
    ({"label": 3}, "parameter 'label' = 3 is not valid; expected a str"),
    ({"label": "x", "count": "2"}, "'count' = '2' is not valid; expected an int"),
    ({"label": "x", "count": True}, "expected an int"),
    ({"label": "x", "ratio": "big"}, "expected a float"),
    ({"label": "x", "loud": 1}, "expected a bool"),
    ({"label": "x", "words": "a"}, "expected a list of str"),
    ({"label": "x", "words": [1]}, "expected a list of str"),
    ({"label": "x", "words": []}, "parameter 'words' = \\[\\] leaves step 'each' nothing to "
     "run \\(one copy per item, for_each\\); give words a non-empty list, such as words="),
    ({"label": "x", "cont": 1}, "has no parameter 'cont'; did you mean 'count'"),
])
def test_parameter_errors(workspace, monkeypatch, params, message):
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", MINE)))
    with pytest.raises(dagnb.ConfigError, match=message):
        templates.instantiate("mine", **params)


def test_ints_pass_as_floats(workspace, monkeypatch):
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", MINE)))
    graph = templates.instantiate("mine", label="x", ratio=2)
    assert graph["first"].params["ratio"] == 2.0


def test_numbers_of_other_types_pass_as_ints_and_floats():
    """instantiate('parameter-sweep', samples=np.int64(50)) said 'expected an int'."""
    np = pytest.importorskip("numpy")
    graph = templates.instantiate("parameter-sweep", samples=np.int64(50),
                                  alphas=[np.float32(0.5), np.int64(2)], seed=np.uint8(3))
    plain = templates.instantiate("parameter-sweep", samples=50, alphas=[0.5, 2.0], seed=3)
    assert graph["prepare"].params == {"samples": 50, "seed": 3}
    assert [type(value) for value in graph["prepare"].params.values()] == [int, int]
    assert [graph[f"fit_{i}"].params["item"] for i in (0, 1)] == [0.5, 2.0]
    assert graph.to_yaml() == plain.to_yaml()  # (the same file, the same cache keys)
    for value, expected in ((np.float64(50), "an int"), (np.bool_(True), "an int"),
                            (True, "an int"), (np.float64("nan"), "a list of finite float")):
        name = "alphas" if "list" in expected else "samples"
        with pytest.raises(dagnb.ConfigError, match=f"expected {expected}$"):
            templates.instantiate("parameter-sweep",
                                  **{name: [value] if name == "alphas" else value})


@pytest.mark.parametrize(("kind", "text", "value"), [
    ("int", "12", 12), ("float", "0.5", 0.5), ("bool", "true", True), ("bool", "off", False),
    ("str", "a b", "a b"), ("list", "1,2", [1, 2]),  # (as [1,2] reads: one value, one key)
])
def test_parse_from_text(kind, text, value):
    assert templates.Parameter("p", kind).parse(text) == value
    numbers = templates.Parameter("p", "list", items="float")
    assert numbers.parse("[1, 2.5]") == [1.0, 2.5] and numbers.parse("1, 2") == [1.0, 2.0]
    with pytest.raises(dagnb.ConfigError, match="expected a list of float"):
        numbers.parse("a,b")


def test_unknown_template_suggests():
    with pytest.raises(dagnb.ConfigError, match="no pipeline template 'pandas-elt'; did you mean"):
        templates.get("pandas-elt")


def test_user_templates_override_built_in_said_once(workspace, monkeypatch):
    """A user's template taking a built-in's id replaced it with nothing said."""
    text = MINE.replace("id: mine", "id: pandas-etl")
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    built_in = Path(__file__).resolve().parent.parent / "templates" / "pipelines"
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")  # (once: dagnb's doing, not Python's filter)
        assert templates.get("pandas-etl").category == "custom"
        templates.list()
    assert [str(w.message) for w in said] == [
        f"template 'pandas-etl' of {str(workspace / 't' / 'mine.yml')!r} "
        f"(DAGNB_TEMPLATE_PATH) replaces the built-in one of "
        f"{str(built_in / 'pandas-etl.yml')!r}; give yours another id to keep both"]
    assert said[0].category is templates.TemplatePathWarning


def test_the_built_in_folder_named_in_the_path_replaces_nothing(workspace, monkeypatch):
    built_in = Path(__file__).resolve().parent.parent / "templates" / "pipelines"
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(built_in))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert set(SHIPPED) <= set(templates.list()["id"])


@pytest.mark.parametrize("kind", ["missing", "file"])
def test_a_template_path_that_is_no_folder_is_said_once(workspace, monkeypatch, capsys, kind):
    """A mistyped DAGNB_TEMPLATE_PATH, or one naming a template file, was ignored silently."""
    folder = user_template(workspace / "t", MINE)
    given = folder / "mine.yml" if kind == "file" else workspace / "tmpl"
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(given))
    fix = (f"a file, not a folder: no template is read from it; name the folder it is in "
           f"({str(folder)!r})") if kind == "file" else (
        f"which does not exist: no template is read from it; name a folder of *.yml "
        f"templates (several separated by {os.pathsep!r})")
    with warnings.catch_warnings(record=True) as said:
        warnings.simplefilter("always")
        templates.list()
        templates.get("pandas-etl")
    assert [str(w.message) for w in said] == [f"DAGNB_TEMPLATE_PATH names {str(given)!r}, {fix}"]
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", os.pathsep.join([str(given) + "2", str(folder)]))
    assert main(["templates", "list"]) == 0
    listed = capsys.readouterr()
    assert "mine" in listed.out
    assert listed.err == (f"dagnb: warning: DAGNB_TEMPLATE_PATH names {str(given) + '2'!r} "
                          f"(in {os.environ['DAGNB_TEMPLATE_PATH']!r}), which does not exist: "
                          "no template is read from it; name a folder of *.yml templates "
                          f"(several separated by {os.pathsep!r})\n")


@pytest.mark.parametrize(("text", "message"), [
    ("id: x\nname: X\nworkflow: {steps: {a: {run: 'echo ${p}'}}}\nparameters: {p: {default: '1'}}",
     "run text uses \\$\\{p\\}, which would put a parameter into shell code"),
    ("id: x\nname: X\nworkflow: {steps: {a: {run: echo, image: '${nope}'}}}",
     "\\$\\{nope\\} names no parameter"),
    ("id: x\nname: X\nworkflow: {steps: {}}\nparameters: {p: {type: dict}}",
     "type 'dict' is not one of"),
    ("id: x\nname: X\nworkflow: {steps: {}}\nparameters: {p: {type: int, default: a}}",
     "default: template parameter 'p' = 'a' is not valid; expected an int"),
    ("id: x\nname: X\nworkflow: {steps: {}}\nparameters: {p: {type: int, required: false}}",
     "is optional but has no default"),
    ("id: x\nname: X\nworkflow: {steps: {}}\nparameters: {p: {typ: int}}",
     "unknown key 'typ'; did you mean 'type'"),
    ("id: x\nname: X\nworkflow: {steps: {}}\ncategroy: y", "unknown key 'categroy'"),
    ("id: x\nworkflow: {steps: {}}", "has no 'name'"),
    ("[1]", "must be a mapping"),
    ("id: [", "line 1: YAML does not parse"),
])
def test_bad_template_files(workspace, monkeypatch, text, message):
    """Left out of the list with a warning; getting the id it claims (its ``id:`` line,
    else its file name) raises the error."""
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    with pytest.warns(templates.BrokenTemplateWarning, match=message):
        listed = templates.table()
    assert set(listed["id"]) == set(SHIPPED)
    with pytest.raises(dagnb.WorkflowError, match=message):
        templates.get("x" if text.startswith("id: x") else "mine")


def test_shell_variables_stay_in_run_text(workspace, monkeypatch):
    text = ("id: x\nname: X\nworkflow:\n  steps:\n    a:\n      run: 'echo ${HOME}'\n")
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    assert templates.instantiate("x")["a"].run == "echo ${HOME}"


def test_search_path_has_the_checkout_folder():
    checkout = Path(__file__).resolve().parent.parent / "templates" / "pipelines"
    assert checkout in templates.search_path()
    assert {p.stem for p in checkout.glob("*.yml")} >= set(SHIPPED)


def test_list_is_not_a_module_global():
    assert "list" not in vars(templates) and templates.list is templates.table


# -- the CLI --------------------------------------------------------------------------
def test_cli_list_and_show(capsys):
    assert main(["templates", "list"]) == 0
    out = capsys.readouterr().out
    assert all(t in out for t in SHIPPED)
    assert main(["templates", "show", "parameter-sweep"]) == 0
    out = capsys.readouterr().out
    assert "alphas: list[float]" in out
    assert "steps: prepare, fit_0, fit_1, fit_2, fit_3, gather" in out


@pytest.mark.slow
def test_cli_new_then_run(workspace, capsys):
    target = workspace / "workflows" / "sweep.yml"
    argv = ["templates", "new", "parameter-sweep", "--param", "alphas=0.5,5", "-p", "seed=3",
            "-o", str(target)]
    assert main(argv) == 0
    assert f"wrote {target}" in capsys.readouterr().out
    graph = dagnb.load(target)
    assert graph.names == ["prepare", "fit_0", "fit_1", "gather"]
    assert graph["fit_1"].params["item"] == 5.0 and graph["prepare"].params["seed"] == 3
    assert main(["run", str(target), "--executor", "local"]) == 0
    assert main(argv) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert main([*argv, "--force"]) == 0


def test_cli_new_defaults_to_the_workflow_directory(workspace, capsys):
    dagnb.configure(workflow_directory=workspace / "flows")
    assert main(["templates", "new", "pandas-etl"]) == 0
    assert (workspace / "flows" / "pandas-etl.yml").is_file()


@pytest.mark.parametrize("output", ["existing", "made/"])
def test_cli_new_into_a_folder_writes_the_template_id_file_there(workspace, capsys, output):
    (workspace / "existing").mkdir()
    assert main(["templates", "new", "pandas-etl", "-o", output]) == 0
    written = workspace / output / "pandas-etl.yml"
    assert dagnb.load(written).names and f"wrote {Path(output) / 'pandas-etl.yml'}" in \
        capsys.readouterr().out
    assert main(["templates", "new", "pandas-etl", "-o", output]) == 2
    assert f"{str(written.relative_to(workspace))!r} already exists" in capsys.readouterr().err
    assert main(["templates", "new", "pandas-etl", "-o", output, "--force"]) == 0


def test_cli_new_writes_a_values_text_as_is_unescaped_and_unfolded(workspace):
    title = "Résumé des ventes — " + " ".join(["très longue"] * 12)  # past 80 columns
    assert main(["templates", "new", "pandas-etl", "-p", f"title={title}", "-o", "r.yml"]) == 0
    text = (workspace / "r.yml").read_text(encoding="utf-8")
    assert f"title: {title}\n" in text, text
    assert dagnb.load(workspace / "r.yml")["report"].params["title"] == title


@pytest.mark.parametrize(("argv", "message"), [
    (["templates", "new", "pandas-etl", "-p", "rows"], "--param 'rows' is not NAME=VALUE"),
    (["templates", "new", "pandas-etl", "-p", "rows=many"], "'rows' = 'many' is not valid"),
    (["templates", "new", "pandas-etl", "-p", "row=1"], "did you mean 'rows'"),
    (["templates", "show", "nope"], "no pipeline template 'nope'"),
])
def test_cli_errors_exit_2(argv, message, capsys):
    assert main(argv) == 2
    assert message in capsys.readouterr().err


@pytest.mark.parametrize(("params", "message"), [
    (["-p", "min_amount=nan"], "template parameter 'min_amount' = nan is not valid; "
                               "expected a finite float"),
    (["-p", "min_amount=-inf"], "template parameter 'min_amount' = -inf is not valid; "
                                "expected a finite float"),
])
def test_cli_new_refuses_a_value_before_making_any_folder(workspace, params, message):
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "templates", "new", "pandas-etl",
                           *params, "-o", "newdir/sub/x.yml"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2
    assert done.stderr == f"dagnb: error: {message}\n"
    assert not (workspace / "newdir").exists()


def test_cli_new_names_the_parameter_that_left_a_for_each_step_nothing(workspace):
    """`templates new parameter-sweep -p 'alphas=[]'` said "step 'fit' has for_each []",
    naming neither the parameter nor what it needs."""
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "templates", "new",
                           "parameter-sweep", "-p", "alphas=[]", "-o", "sweep.yml"],
                          capture_output=True, text=True, timeout=120)
    suggested = ",".join(map(str, templates.get("parameter-sweep").parameters["alphas"].default))
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (
        "dagnb: error: template 'parameter-sweep': parameter 'alphas' = [] leaves step 'fit' "
        "nothing to run (one copy per item, for_each); give alphas a non-empty list, such as "
        f"alphas={suggested}\n")
    assert not (workspace / "sweep.yml").exists()
    again = subprocess.run([sys.executable, "-m", "dagnb.cli", "templates", "new",
                            "parameter-sweep", "-p", f"alphas={suggested}", "-o", "sweep.yml"],
                           capture_output=True, text=True, timeout=120)
    assert again.returncode == 0 and (workspace / "sweep.yml").is_file(), again.stderr


def test_a_float_parameter_refuses_nan_and_infinities():
    ratio = templates.Parameter("ratio", "float")
    for value in (float("nan"), float("inf"), "nan", "inf"):
        with pytest.raises(dagnb.ConfigError, match=r"'ratio' = .* expected a finite float"):
            ratio.check(value) if isinstance(value, float) else ratio.parse(value)
    with pytest.raises(dagnb.ConfigError, match="expected a list of finite float"):
        templates.Parameter("alphas", "list", items="float").parse("[1, .inf]")


@pytest.mark.parametrize(("template_id", "param", "message"), [
    ("parameter-sweep", "samples=0", "'samples' = 0 is not accepted; give a value >= 2"),
    ("parameter-sweep", "alphas=1,-0.5",
     "'alphas' = [1.0, -0.5] is not accepted; item -0.5: give a value >= 0"),
    ("ml-train-evaluate", "test_fraction=1",
     "'test_fraction' = 1.0 is not accepted; give a value from 0.1 to 0.9"),
    ("ml-train-evaluate", "samples=5", "'samples' = 5 is not accepted; give a value >= 20"),
    ("ml-train-evaluate", "learning_rate=5",
     "'learning_rate' = 5.0 is not accepted; give a value from 0 to 0.5"),
    ("pandas-etl", "group_by=regoin", "'group_by' = 'regoin' is not accepted; did you mean "
                                      "'region'?"),
    ("pandas-etl", "group_by=city", "'group_by' = 'city' is not accepted; use one of "
                                    "'region', 'product'"),
    ("python-lint-test", "package=my-pkg", "'package' = 'my-pkg' is not accepted; give a "
                                           "Python name: letters, digits and _, not a keyword"),
    ("python-lint-test", "package=class", "'package' = 'class' is not accepted; give a "
                                          "Python name: letters, digits and _, not a keyword"),
    ("python-lint-test", "package=os", "'package' = 'os' is not accepted; 'os' is a module of "
                                       "Python's standard library, which its imports would "
                                       "find instead; give another name, such as os_pkg"),
    ("python-lint-test", "package=unittest", "'package' = 'unittest' is not accepted; "
                                             "'unittest' is a module of Python's standard "
                                             "library, which its imports would find instead; "
                                             "give another name, such as unittest_pkg"),
])
def test_cli_new_refuses_a_value_the_pipeline_cannot_run_with(workspace, capsys, template_id,
                                                               param, message):
    """samples=0 made a sweep whose every fit step died of a ZeroDivisionError."""
    assert main(["templates", "new", template_id, "-p", param, "-o", "flow.yml"]) == 2
    assert capsys.readouterr().err == f"dagnb: error: template parameter {message}\n"
    assert not (workspace / "flow.yml").exists()


def test_cli_show_says_each_parameters_bounds(capsys):
    assert main(["templates", "show", "ml-train-evaluate"]) == 0
    out = capsys.readouterr().out
    assert "  samples: int = 300 (>= 20)  Rows" in out
    assert "  test_fraction: float = 0.25 (from 0.1 to 0.9)  Share" in out


@pytest.mark.parametrize(("spec", "message"), [
    ("{type: str, default: a, minimum: 1}", "minimum 1 needs a number, and an int or float"),
    ("{type: int, default: 5, minimum: 3, maximum: 2}", "minimum 3 is above maximum 2"),
    ("{type: int, default: 1, minimum: 2}",
     "default: template parameter 'p' = 1 is not accepted; give a value >= 2"),
    ("{type: str, default: a, choices: []}", "choices \\[\\] must be a non-empty list"),
    ("{type: int, default: 1, choices: [1, b]}",
     "choices: template parameter 'p' = 'b' is not valid; expected an int"),
    ("{type: int, default: 1, format: identifier}", "format 'identifier' is not one of"),
])
def test_bad_bounds_in_template_files(workspace, monkeypatch, spec, message):
    text = f"id: x\nname: X\nworkflow: {{steps: {{}}}}\nparameters: {{p: {spec}}}"
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    with pytest.raises(dagnb.WorkflowError, match=message):
        templates.get("x")


def test_a_required_parameter_with_bounds_is_shown_with_a_value_within_them(
        workspace, monkeypatch, capsys):
    text = ("id: x\nname: X\nparameters: {n: {type: int, minimum: 3}, "
            "c: {type: list, items: str, choices: [b, c]}}\n"
            "workflow: {steps: {a: {for_each: '${c}', params: {n: '${n}'}, run: echo}}}")
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    assert main(["templates", "show", "x"]) == 0
    out = capsys.readouterr().out
    assert "n: int (>= 3)" in out and "c: list[str] (one of 'b', 'c')" in out
    assert "steps: a_0" in out


def test_cli_new_that_cannot_write_the_file_leaves_no_folder(workspace, capsys):
    output = "newdir/sub/" + "x" * 300 + ".yml"  # the folders can be made, the file not
    assert main(["templates", "new", "pandas-etl", "-o", output]) == 2
    assert "cannot write" in capsys.readouterr().err
    assert not (workspace / "newdir").exists()


def test_unparsable_list_text_is_a_config_error():
    numbers = templates.Parameter("p", "list", items="float")
    with pytest.raises(dagnb.ConfigError, match="'p' = '\\[1,' is not valid; expected a list"):
        numbers.parse("[1,")


def test_cli_new_with_unparsable_list_prints_one_line(capsys):
    assert main(["templates", "new", "parameter-sweep", "-p", "alphas=[1,"]) == 2
    assert "Traceback" not in capsys.readouterr().err


@pytest.mark.parametrize(("text", "message"), [
    ("id: x\nname: X\nworkflow: {steps: {a: }}",
     "step 'a' has no fields; give it a command or a function"),
    ("id: x\nname: X\nworkflow: {steps: {a: {for_each: [1, 2], run: echo}, a_0: {run: echo}}}",
     "step 'a' has for_each copy 'a_0', which is also a step; rename one of them"),
])
def test_bad_steps_in_templates_are_errors(workspace, monkeypatch, text, message):
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    with pytest.raises(dagnb.DagnbError, match=message):
        templates.instantiate("x")


def test_parameters_must_be_a_mapping(workspace, monkeypatch):
    text = "id: x\nname: X\nworkflow: {steps: {}}\nparameters: [a, b]"
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    with pytest.raises(dagnb.WorkflowError, match="'parameters' must be a mapping"):
        templates.get("x")


def test_cli_show_fills_required_lists_with_the_item_type(workspace, monkeypatch, capsys):
    text = ("id: x\nname: X\nparameters: {files: {type: list, items: str}}\n"
            "workflow: {steps: {a: {for_each: '${files}', run: echo}}}")
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    assert main(["templates", "show", "x"]) == 0
    assert "steps: a_0" in capsys.readouterr().out


def test_needs_given_as_one_name_is_not_split_into_letters(workspace, monkeypatch):
    text = "id: x\nname: X\nworkflow: {steps: {prep: {run: echo}, use: {needs: prep, run: echo}}}"
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    assert templates.instantiate("x")["use"].needs == ("prep",)


def test_needs_given_as_one_name_reaches_every_for_each_copy(workspace, monkeypatch):
    text = ("id: x\nname: X\nworkflow: {steps: {fit: {for_each: [1, 2], run: echo}, "
            "use: {needs: fit, run: echo}}}")
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    assert templates.instantiate("x")["use"].needs == ("fit_0", "fit_1")


@pytest.mark.parametrize("command", ["echo ${title}", "[sh, -c, 'echo ${title}']"])
def test_parameters_never_reach_the_platform_command_alias(workspace, monkeypatch, capsys,
                                                            command):
    """``command`` (the platform's ``run``) is shell text, or argv that may be ``sh -c``."""
    text = ("id: inj\nname: Inj\nparameters: {title: {default: hello}}\n"
            f"workflow:\n  steps:\n    greet:\n      command: {command}\n")
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    argv = ["templates", "new", "inj", "-p", "title=$(touch PWNED)", "-o", "inj.yml"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "command text uses ${title}, which would put a parameter into shell code" in err
    assert err.count("\n") == 1
    assert not (workspace / "inj.yml").exists() and not (workspace / "PWNED").exists()


def test_shell_variables_stay_in_command_text(workspace, monkeypatch):
    text = "id: x\nname: X\nworkflow:\n  steps:\n    a:\n      command: 'echo ${HOME}'\n"
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    assert templates.instantiate("x")["a"].run == "echo ${HOME}"


LISTED = """
id: listed
name: Listed steps
parameters:
  words: {type: list, items: str, default: [p, q]}
workflow:
  steps:                       # the platform's spelling: a list of {name, command, ...}
    - name: each
      for_each: ${words}
      command: echo "$DAGNB_PARAM_ITEM"
    - name: last
      depends_on: [each]
      command: echo done
"""


def test_templates_with_a_list_of_steps_show_and_write(workspace, monkeypatch, capsys):
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", LISTED)))
    assert main(["templates", "show", "listed"]) == 0
    assert "steps: each_0, each_1, last" in capsys.readouterr().out
    assert main(["templates", "new", "listed", "-p", "words=a,b,c", "-o", "ls.yml"]) == 0
    graph = dagnb.load(workspace / "ls.yml")
    assert graph.names == ["each_0", "each_1", "each_2", "last"]
    assert graph["last"].needs == ("each_0", "each_1", "each_2")
    assert graph["each_2"].params["item"] == "c"


def test_for_each_copies_in_a_list_of_steps_clash_with_a_listed_name(workspace, monkeypatch):
    text = LISTED.replace("name: last", "name: each_1")
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(workspace / "t", text)))
    with pytest.raises(dagnb.ConfigError, match="for_each copy 'each_1', which is also a step"):
        templates.instantiate("listed")


BROKEN = "id: broken\nname: Broken\nworkflow:\n  steps:\n    a: {run: echo\n"


def test_one_broken_template_file_leaves_the_others_usable(workspace, monkeypatch, capsys):
    folder = user_template(workspace / "t", BROKEN, name="broken.yml")
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(user_template(folder, MINE)))
    problem = (f"template {str(folder / 'broken.yml')!r}, line 6: YAML does not parse "
               "(expected ',' or '}', but got '<stream end>'); fix the syntax there")
    assert main(["templates", "list"]) == 0
    listed = capsys.readouterr()
    assert all(t in listed.out for t in [*SHIPPED, "mine"]) and "broken" not in listed.out
    assert listed.err == f"dagnb: warning: left out: {problem}\n"
    assert main(["templates", "show", "pandas-etl"]) == 0
    capsys.readouterr()
    for argv in (["templates", "show", "broken"], ["templates", "new", "broken"]):
        assert main(argv) == 2
        assert capsys.readouterr().err == f"dagnb: error: {problem}\n"
    assert not (workspace / "workflows").exists()


def test_a_template_file_that_is_not_utf8_is_one_line(workspace, monkeypatch, capsys):
    folder = workspace / "t"
    folder.mkdir()
    (folder / "latin.yml").write_bytes("id: latin\nname: caf\xe9\n".encode("latin-1"))
    monkeypatch.setenv("DAGNB_TEMPLATE_PATH", str(folder))
    assert main(["templates", "show", "latin"]) == 2
    err = capsys.readouterr().err
    assert "latin.yml' is not UTF-8 text (byte 19); save it as UTF-8" in err
    assert err.count("\n") == 1


@pytest.mark.parametrize("output", ["out.yml/new.yml", "out.yml/deeper/new.yml"])
def test_cli_new_into_a_path_under_a_file_is_one_line(tmp_path, output):
    (tmp_path / "out.yml").write_text("mine\n")
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "templates", "new", "pandas-etl",
                           "-o", output], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr == (f"dagnb: error: cannot write {output!r}: 'out.yml' is a file, not a "
                           "folder; pass -o a path in a folder you can write\n")
    assert (tmp_path / "out.yml").read_text() == "mine\n"
