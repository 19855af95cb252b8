"""--python cells: params are variables, IPython syntax works as in any cell."""

from __future__ import annotations

import os
import sys

import pytest
from IPython.core.error import UsageError

import dagnb
from dagnb.fingerprint import global_values
from dagnb.notebook.cells import cell_text, ipython_to_python
from dagnb.notebook.session import get_session


def cell(ip, line, body):
    return ip.run_cell_magic("dagger", line, body)


def test_params_are_variables_in_a_python_cell(shell):
    shell.run_cell("import dagnb")
    cell(shell, "scaled --python --param scale=3 --param label=x --outputs v",
         "v = (label, scale * 2, dagnb.current().params['scale'])\n")
    assert shell.user_ns["v"] == ("x", 6, 3)


def test_a_changed_param_reruns_with_the_new_value(shell):
    cell(shell, "p --python --param n=1 --outputs v", "v = n\n")
    cell(shell, "p --python --param n=2 --outputs v", "v = n\n")
    assert get_session().last_run.states() == {"p": "succeeded"}
    assert shell.user_ns["v"] == 2


def test_a_cell_that_prints_more_leaves_the_cells_after_it_cached(shell):
    """Past 1,000 lines its entry is a folder, not a pack record: its result is the
    same, so is its output digest, and the cell after it is not run again."""
    says = "for i in range(n):\n    print(f'line {i}: much is said, the result is one')\nv = 1\n"
    cell(shell, "up --python --param n=1 --outputs v", says)
    cell(shell, "down --python --needs up --outputs w", "w = up + 1\n")
    cell(shell, "up --python --param n=2000 --outputs v", says)
    assert get_session().last_run.states() == {"up": "succeeded"}
    cell(shell, "down --python --needs up --outputs w", "w = up + 1\n")
    assert get_session().last_run.states() == {"up": "cached", "down": "cached"}
    assert shell.user_ns["w"] == 2


def test_a_param_named_as_an_upstream_is_refused_in_one_line(shell):
    """The upstream's result was the variable, the param silently dropped (though its
    value was in the key: changing it ran the step again for nothing)."""
    cell(shell, "a --python --outputs x", "x = 'from a'\n")
    with pytest.raises(UsageError, match=r"^--param 'a': upstream step 'a' \(--needs\) is "
                       r"the variable `a` too; rename the param, or the step$"):
        cell(shell, "b --python --needs a --param a=1 --outputs y", "y = a\n")
    assert get_session().graph.names == ["a"]  # the refused cell defined nothing


def test_shell_escape_and_captured_output_in_a_python_cell(shell, capsys):
    cell(shell, "listing --python --outputs files",
         "files = !echo one; echo two\n!echo shown\n")
    assert list(shell.user_ns["files"]) == ["one", "two"]


def test_line_magic_in_a_python_cell(shell):
    cell(shell, "timed --python --outputs v", "%time w = 1\nv = 41 + 1\n")
    assert shell.user_ns["v"] == 42


def test_comment_only_edit_of_a_magic_cell_still_hits_the_cache(shell):
    cell(shell, "m --python --outputs v", "files = !echo a\nv = len(files)\n")
    cell(shell, "m --python --outputs v", "# why\nfiles = !echo a\nv = len(files)  # n\n")
    assert get_session().last_run.states() == {"m": "cached"}


def test_exported_cell_keeps_the_ipython_syntax(shell):
    cell(shell, "m --python --outputs v --define-only", "files = !ls\nv = len(files)\n")
    assert cell_text(get_session().graph["m"]) == (
        "%%dagger m --python --outputs v\nfiles = !ls\nv = len(files)\n")


def test_plain_python_is_left_alone():
    source = "x = '100%'\nif x != '!':\n    y = 1\n"
    assert ipython_to_python(source) == source


def test_an_ipython_line_also_reads_the_names_it_expands_as_ipython_does():
    source = ("out = !echo {len(files)} $x $x.name $$HOME '$quoted'\n"
              "%env K=$value\nfor f in fs: pass\n")
    assert ipython_to_python(source) == (
        "out = get_ipython().getoutput(\"echo {len(files)} $x $x.name $$HOME '$quoted'\")"
        "; (lambda: ((len(files)), x, x.name,))\n"
        "get_ipython().run_line_magic('env', 'K=$value'); (lambda: (value,))\n"
        "for f in fs: pass\n")


def test_a_variable_a_shell_line_expands_is_in_the_key(shell):
    shell.user_ns["word"] = "one"
    cell(shell, "echo --python --outputs v", "v = !echo $word\n")
    shell.user_ns["word"] = "two"
    cell(shell, "echo --python --outputs v", "v = !echo $word\n")
    assert get_session().last_run.states() == {"echo": "succeeded"}
    assert list(shell.user_ns["v"]) == ["two"]

def test_a_timed_statement_or_expression_is_the_cell_s_own_code(shell, capsys):
    shell.user_ns["y"] = 10
    cell(shell, "timed --python --outputs v", "%time w = y * 2\nv = %time w + 1\nv += w\n")
    assert shell.user_ns["v"] == 41
    assert capsys.readouterr().out.count("Wall time: ") == 2


def test_a_timed_line_that_is_not_one_simple_statement_is_refused(shell):
    # (line 3: the cell's first line is its %%dagger line, as Jupyter counts them)
    with pytest.raises(UsageError, match=r"^step 'timed': line 3 of the cell: %time 'for i "
                       r"in range\(3\): pass' is not a one-line Python statement, which a "
                       r"--python cell can time; put the code in a function and write "
                       r"%time f\(\)$"):
        cell(shell, "timed --python --outputs v", "v = 1\n%time for i in range(3): pass\n")

@pytest.mark.parametrize("body", ["files = !ls\n", "x = 1\n%env K=1\n",
                                  "out = %sx echo hi\n"])
def test_a_dask_cell_that_needs_the_kernel_is_refused_in_one_line(shell, body):
    """The README: such a cell "needs the kernel and is refused there, with one line
    saying so"; it used to fail when run, saying a sqlite3.Connection does not pickle."""
    with pytest.raises(UsageError, match=r"^step 'fit': its cell uses IPython syntax "
                       r"\(!cmd, %magic\), which needs this kernel, and --executor dask "
                       r"runs it in a worker's process; write it as Python"):
        cell(shell, "fit --python --executor dask --define-only", body)
    assert get_session().graph.names == []


def test_a_dask_cell_that_only_times_a_line_is_accepted(shell):
    cell(shell, "fit --python --executor dask --define-only", "x = %time 1 + 1\n")
    assert get_session().graph["fit"].executor == "dask"


@pytest.mark.parametrize(("body", "word"), [
    ("x = 1\nyield 5\n", "yield"), ("x = 1\nif x:\n    y = yield from [5]\n", "yield from"),
])
def test_a_yield_at_the_cells_top_level_is_refused_as_a_plain_cell_refuses_it(shell, body,
                                                                               word):
    """Else the cell's function is a generator: the step "succeeds" without running."""
    line = body.count("\n") + 1  # (the %%dagger line is the cell's line 1)
    with pytest.raises(UsageError, match=rf"^step 'gen': line {line} of the cell is not "
                       rf"valid Python: '{word}' outside function \(it would make the cell "
                       r"a generator, whose body never runs\); put it in a def, or collect "
                       r"the values in a list$"):
        cell(shell, "gen --python --outputs x", body)
    assert get_session().graph.names == []


def test_a_yield_in_a_nested_function_lambda_or_generator_expression_is_accepted(shell):
    cell(shell, "gen --python --outputs x",
         "def g():\n    yield 1\n    yield from [2]\nh = lambda: (yield 3)\n"
         "x = [*g(), *h(), *(i for i in range(4, 6))]\n")
    assert shell.user_ns["x"] == [1, 2, 3, 4, 5]


def test_an_output_the_cell_never_assigns_is_refused_with_the_likely_name(shell):
    shell.user_ns["score"] = 0.5  # (the step would have returned it)
    with pytest.raises(UsageError, match=r"^step 'fit': --outputs 'score' is not assigned "
                       r"in the cell; did you mean 'scroe'\?$"):
        cell(shell, "fit --python --outputs score", "scroe = 0.93\n")
    with pytest.raises(UsageError, match=r"^step 'fit': --outputs 'total' is not assigned "
                       r"in the cell; assign it in the cell or leave it out of --outputs$"):
        cell(shell, "fit --python --outputs total", "scroe = 0.93\n")
    assert get_session().graph.names == []  # refused before anything ran


@pytest.mark.parametrize("body", [
    "for a in range(3):\n    pass\n", "with open(__file__) as a:\n    pass\n",
    "import os as a\n", "a = 1\na += 1\n", "if (a := 3):\n    pass\n",
    "a = !echo 1\n", "a = 1\ndel a\na = 2\n", "def a():\n    pass\n",
    "def f():\n    global a\n    a = 1\nf()\n",
], ids=["for", "with-as", "import", "augmented", "walrus", "captured-shell", "del",
        "def", "global"])
def test_an_output_assigned_any_way_python_assigns_is_accepted(shell, body):
    cell(shell, "s --python --outputs a --define-only", body)
    assert get_session().graph.names == ["s"]


def test_an_output_that_is_a_param_or_an_upstream_result_is_accepted(shell):
    cell(shell, "p --python --param n=1 --outputs n --define-only", "pass\n")
    cell(shell, "q --python --needs p --outputs p --define-only", "pass\n")
    assert get_session().graph.names == ["p", "q"]

def test_help_says_how_to_read_params(shell):
    help_text = shell.find_cell_magic("dagger").__doc__
    assert "``--param n=3`` is the variable ``n`` in a --python cell" in help_text
    assert "$DAGNB_PARAM_N" in help_text and "files = !ls" in help_text


def test_a_python_cell_refuses_an_upstream_whose_name_is_not_a_python_name(shell):
    cell(shell, "load-data --python --outputs rows", "rows = [1, 2, 3]\n")
    with pytest.raises(UsageError, match=r"^step 'load-data' is not a Python name, so this "
                       r"--python cell cannot receive it; rename the step load_data$"):
        cell(shell, "total --python --needs load-data --outputs t", "t = 1\n")
    assert get_session().graph.names == ["load-data"]  # the refused cell defined nothing


def test_a_python_cell_that_reassigns_a_notebook_variable_starts_from_its_value(shell):
    cell(shell, "a --python --outputs n", "n = 5\n")
    shell.user_ns["data"] = [1, 2, 3]
    cell(shell, "b --python --needs a --outputs data", "data = data + [a]\n")
    assert shell.user_ns["data"] == [1, 2, 3, 5]
    shell.user_ns["data"] = [1]  # the key sees the notebook's `data` as any global
    assert get_session().graph.explain("b") == [
        "notebook variable `data` changed: [1, 2, 3] → [1]"]
    shell.run_line_magic("dagger", "run b")
    assert shell.user_ns["data"] == [1, 5]
    assert cell_text(get_session().graph["b"]) == (
        "%%dagger b --python --needs a --outputs data\ndata = data + [a]\n")


def test_a_name_a_python_cell_assigns_before_reading_is_not_taken_from_the_notebook(shell):
    shell.user_ns["total"] = 10
    cell(shell, "s --python --outputs count",
         "total = 0\nfor i in range(3):\n    total += i\ncount = [total for total in (1, 2)]\n")
    assert shell.user_ns["count"] == [1, 2]
    assert "total" not in global_values(get_session().graph["s"].func)  # (not in its key)


def test_a_nested_function_s_own_local_is_not_taken_from_the_notebook(shell):
    shell.user_ns["result"] = 0  # the step's own output, from a run before
    body = "def helper(x):\n    result = x * 2\n    return result\nresult = helper(3)\n"
    cell(shell, "h --python --outputs result", body)
    assert shell.user_ns["result"] == 6
    assert "result" not in global_values(get_session().graph["h"].func)  # (not in its key)
    cell(shell, "h --python --outputs result", body)
    assert get_session().last_run.states() == {"h": "cached"}


def test_a_name_assigned_only_in_a_branch_then_read_starts_from_the_notebook(shell):
    shell.user_ns.update(flag=False, m=100)
    cell(shell, "b --python --outputs m", "if flag:\n    m = 1\nm = m + 1\n")
    assert shell.user_ns["m"] == 101
    assert "m" in global_values(get_session().graph["b"].func)


def test_an_output_assigned_in_a_with_or_if_else_body_is_not_taken_from_the_notebook(shell):
    # Pre-bound, the cell's own output (published to the notebook after its first run)
    # became an input of its key: each run missed, the step was never cached again.
    shell.user_ns.update(flag=True, path=__file__)
    body = ("with open(path) as handle:\n    data = handle.read(10)\n"
            "if flag:\n    kind = 'a'\nelse:\n    kind = 'b'\nsize = len(data + kind)\n")
    cell(shell, "w --python --outputs data,kind", body)
    assert shell.user_ns["kind"] == "a"  # (published: the cell run again sees them)
    cell(shell, "w --python --outputs data,kind", body)
    assert get_session().last_run.states() == {"w": "cached"}
    variables = global_values(get_session().graph["w"].func)
    assert "data" not in variables and "kind" not in variables


def test_a_class_body_or_a_helper_called_first_reads_the_notebooks_variable(shell):
    # Their reads were left out with their locals: the cell's later assignment made
    # the name a local of the cell's function, unbound when they read it.
    shell.user_ns.update(threshold=10)
    cell(shell, "k --python --outputs threshold",
         "class Settings:\n    limit = threshold\n"
         "def doubled():\n    return threshold * 2\n"
         "threshold = Settings.limit + doubled()\n")
    assert shell.user_ns["threshold"] == 30


def test_a_name_not_in_the_notebook_is_not_passed_in(shell):
    shell.user_ns.pop("cache", None)
    cell(shell, "c --python --outputs cache",
         "try:\n    cache\nexcept NameError:\n    cache = {}\ncache['k'] = 1\n")
    assert shell.user_ns["cache"] == {"k": 1}


def test_a_failing_cell_that_reassigns_a_notebook_variable_shows_only_its_own_frames(shell):
    shell.user_ns["data"] = [1]
    cell(shell, "boom --python --no-raise --outputs data",
         "data = data + [2]\nraise ValueError('bad')\n")
    lines = list(get_session().last_run.logs("boom", stream="stderr")["line"])
    assert [line.strip() for line in lines if line.strip().startswith("File")] == [
        line.strip() for line in lines[1:2]]  # one frame: the cell's
    assert "boom_cell(data)" not in "\n".join(lines) and lines[-1] == "ValueError: bad"


@pytest.mark.parametrize(("raising", "link"), [
    ("raise RuntimeError('no count') from e",
     "The above exception was the direct cause of the following exception:"),
    ("raise RuntimeError('no count')",
     "During handling of the above exception, another exception occurred:"),
], ids=["cause", "context"])
def test_a_failing_cell_shows_the_exception_it_came_from_as_a_plain_cell_does(
        shell, raising, link):
    cell(shell, "load --python --no-raise --outputs rows",
         "def parse(text):\n    try:\n        return int(text)\n"
         f"    except ValueError as e:\n        {raising}\nrows = parse('12a')\n")
    text = "\n".join(get_session().last_run.logs("load", stream="stderr")["line"])
    assert "ValueError: invalid literal for int() with base 10: '12a'" in text
    assert link in text and text.endswith("RuntimeError: no count")
    assert text.count("Traceback (most recent call last):") == 2
    assert os.path.dirname(dagnb.__file__) not in text and "load_cell(" not in text


@pytest.mark.skipif(sys.version_info < (3, 11), reason="ExceptionGroup is Python 3.11's")
def test_a_failing_cell_shows_the_members_of_its_exception_group(shell):
    cell(shell, "files --python --no-raise",
         "raise ExceptionGroup('2 files failed', [ValueError('bad a.csv'), "
         "OSError('missing b.csv')])\n")
    text = "\n".join(get_session().last_run.logs("files", stream="stderr")["line"])
    assert "| ValueError: bad a.csv" in text and "| OSError: missing b.csv" in text
    assert os.path.dirname(dagnb.__file__) not in text


def test_a_triple_quoted_text_in_a_python_cell_keeps_its_lines_as_written(shell):
    """The cell's lines go one level in as its function's body: the lines a string spans
    went in too, so a cell's SQL or Markdown text got four spaces more on each line than
    the same cell run as a plain one (and eight when it reads a notebook variable)."""
    shell.run_cell("base = 'x'")
    body = 'query = """select *\nfrom t\n  where a = 1"""\nlabel = base + f"""-\n{1 + 1}"""\n'
    cell(shell, "q --python --outputs query,label", body)
    assert shell.user_ns["query"] == "select *\nfrom t\n  where a = 1"
    assert shell.user_ns["label"] == "x-\n2"
    assert cell_text(get_session().graph["q"]).endswith(body)


def test_a_cell_with_a_line_break_python_does_not_end_lines_at_still_runs(shell):
    """A form feed or a U+2028 in a cell is no end of line to Python: counted as one,
    the lines of a triple-quoted string after it were misplaced ('unexpected indent')."""
    body = 'a = "x\u2028y"  # \x0c\ns = """l1\n  l2"""\n'
    cell(shell, "u --python --outputs a,s", body)
    assert (shell.user_ns["a"], shell.user_ns["s"]) == ("x\u2028y", "l1\n  l2")
