"""A ``--python`` cell ending in an expression displays its value, as a plain cell does,
and again from the cache (the real kernel's view of it: tests/test_displays_kernel.py)."""

from __future__ import annotations

import ast

import pytest

from dagnb.executors.dagger.shim import function_module
from dagnb.notebook.cells import cell_function, cell_text
from dagnb.notebook.last_expression import DISPLAYED, displayed, with_last_displayed
from dagnb.notebook.session import get_session


def cell(ip, line, body):
    return ip.run_cell_magic("dagger", line, body)


def shown(step: str = "s") -> list[str]:
    """The text of what ``step`` displayed in the last run, in order."""
    return [e.data["data"].get("text/plain") for e in get_session().last_run.events
            if e.step == step and e.kind == "display"]


def test_the_last_expression_is_displayed_and_again_from_the_cache(shell):
    cell(shell, "s --python --outputs x", "x = 2\nx * 21\n")
    assert shown() == ["42"] and shell.user_ns["x"] == 2  # (its output returned as before)
    cell(shell, "s --python --outputs x", "x = 2  # two\nx * 21  # shown\n")
    assert get_session().last_run.states() == {"s": "cached"}  # (a comment-only edit)
    assert shown() == ["42"]


def test_a_trailing_semicolon_hides_the_value_as_in_a_plain_cell(shell):
    cell(shell, "s --python", "x = 2\nx * 21;  # quiet\n")
    assert shown() == []
    cell(shell, "s --python", "x = 2\nx * 21  # not quiet;\n")  # (a ; in a comment)
    assert shown() == ["42"]


def test_none_is_not_displayed(shell):
    cell(shell, "s --python", "x = None\nx\n")
    assert shown() == []
    cell(shell, "s --python", "x = [None]\nx\n")
    assert shown() == ["[None]"]


CELLS = {  # body -> what it displays
    "y = 21\ny * 2\n": ["42"],
    "y = 21\ny * 2\nz = y\n": [],  # an expression in the middle
    "y = 21\nz = y * 2\n": [],  # an assignment
    "for y in range(2):\n    y\n": [],  # an expression inside a statement
    "y = 21; y * 2": ["42"],
    "a, b = 1, 2\na, b\n": ["(1, 2)"],  # one value, a tuple
    "word = 'hi'\n%sx echo $word\n": ["['hi']"],  # not the name it reads after it
    "folder = '.'\n!true $folder\n": [],  # (its value is None)
    "%time sum(range(10))\n": ["45"],  # %time returns its expression's value
    "%time y = 21; y * 2\n": ["42"],  # ... its last one's
    "%time sum(range(10));\n": [],
    "%time y = 21\n": [],
    "y = %time 21 * 2\n": [],
    "%time print('hi')\n": [],  # (None)
    "%env DAGNB_SHOWN=1\n": [],  # a magic returning None
    "%dirs\n": ["[]"],  # one returning a value (the directory stack)
}


def test_only_a_last_top_level_expression_is_displayed(shell):
    displays = {}
    for number, body in enumerate(CELLS):
        cell(shell, f"s{number} --python", body)
        assert get_session().last_run.states() == {f"s{number}": "succeeded"}
        displays[body] = shown(f"s{number}")
    assert displays == CELLS


def test_a_timed_last_expression_is_displayed_after_the_times_and_again_from_the_cache(
        shell):
    """IPython shows ``%time EXPR``'s value after the times; a ``--python`` cell showed
    nothing."""
    for _ in range(2):
        cell(shell, "s --python", "%time sum(range(10))  # the magic's value\n")
        order = [e.data.get("line", "").split(":")[0] if e.kind == "log" else e.kind
                 for e in get_session().last_run.events if e.step == "s"
                 and e.kind in ("log", "display")]
        assert order == ["CPU times", "Wall time", "display"] and shown() == ["45"]
    assert get_session().last_run.states() == {"s": "cached"}


def test_the_name_a_timed_value_goes_to_is_dagnb_s_not_an_output_to_suggest():
    from dagnb.errors import InvalidStepError
    from dagnb.notebook.last_expression import TIMED_VALUE

    function = cell_function("s", "%time 1 + 1\n", [], [], {})
    assert TIMED_VALUE in function.__code__.co_varnames  # (where the value goes)
    with pytest.raises(InvalidStepError, match=r"^step 's': --outputs 'timed_value' is not "
                                               r"assigned in the cell; assign it in the cell"):
        cell_function("s", "%time 1 + 1\n", [], ["timed_value"], {})


def test_the_cell_text_comes_back_as_written(shell):
    body = "df = {'a': 1}\n(df  # a table\n   .get('a'))\n"
    cell(shell, "s --python --outputs df --define-only", body)
    step = get_session().graph["s"]
    assert cell_text(step) == "%%dagger s --python --outputs df\n" + body
    assert DISPLAYED in step.func.__code__.co_names  # (what runs displays it)


def test_errors_name_the_line_the_user_wrote():
    function = cell_function("s", "x = 1\n\nx / 0\n", [], [], {})
    assert DISPLAYED in function.__code__.co_names
    with pytest.raises(ZeroDivisionError) as failure:
        function()
    assert failure.traceback[-1].lineno == 3  # (0-based: the def line, then the cell's)
    assert with_last_displayed("x = (\n") == "x = (\n"  # (compiling it says where)


def test_a_last_await_line_is_refused_as_before():
    from dagnb.errors import InvalidStepError

    with pytest.raises(InvalidStepError, match=r"^step 's': line 3 of the cell is not valid "
                                               r"Python: 'await' outside async function$"):
        cell_function("s", "import asyncio\nawait asyncio.sleep(0)\n", [], [], {})
    assert "_dagnb_displayed((await" in with_last_displayed("await f()\n")


def test_outside_ipython_nothing_is_displayed(monkeypatch, capsys):
    """A cell run from a saved workflow or a script: no display, no error."""
    import IPython

    monkeypatch.setattr(IPython, "get_ipython", lambda: None)
    namespace: dict = {}
    function = cell_function("s", "x = 2\nx * 21\n", [], ["x"], namespace)
    assert namespace[DISPLAYED] is displayed
    assert function() == 2
    displayed("a value")
    assert capsys.readouterr() == ("", "")


def test_a_container_gets_the_display_as_source_not_an_import_of_dagnb():
    """The container has no dagnb: its module defines the function it calls."""
    module = function_module(cell_function("s", "x = 2\nx * 21\n", [], ["x"], {}), "s")
    calls = [ast.unparse(node.args[0]) for node in ast.walk(ast.parse(module))
             if isinstance(node, ast.Call) and getattr(node.func, "id", "") == DISPLAYED]
    assert calls == ["x * 21"] and "dagnb" not in module.replace(DISPLAYED, "")
    namespace: dict = {}
    exec(compile(module, "<step module>", "exec"), namespace)  # (outside IPython)
    assert namespace["s_cell"]() == 2


def test_a_notebook_function_called_displayed_travels_beside_it():
    """A notebook helper named ``displayed`` and dagnb's display function both reach
    the container's module (the first one's name taken by dagnb's, the user's was left
    out: its call returned None)."""
    import linecache

    source = "def displayed(v):\n    return 'USER:' + str(v)\n"
    linecache.cache["<cell displayed>"] = (len(source), None, source.splitlines(True),
                                           "<cell displayed>")
    namespace = {"__name__": "__main__"}
    exec(compile(source, "<cell displayed>", "exec"), namespace)
    function = cell_function("s", "x = displayed(2)\nx + '!'\n", [], ["x"], namespace)
    module = function_module(function, "s")
    exec(compile(module, "<step module>", "exec"), scope := {})
    assert scope["s_cell"]() == "USER:2"


@pytest.mark.parametrize("body, shown_line", [
    ("x = 'abc'\n\nint(x)  # parse\n", "int(x)  # parse"),
    ("total = total + 1\n(total /\n 0)\n", "(total /"),  # (read before set: nested once more)
])
def test_a_last_expression_that_raises_shows_the_users_line_in_the_traceback(
        workdir, body, shown_line):
    """The traceback of a last expression that raises showed the display call it runs in
    (``_dagnb_displayed((int(x)))``), a line the user never wrote."""
    import dagnb

    function = cell_function("s", body, [], [], {"__name__": "__main__", "total": 1})
    run = dagnb.Graph("g", [dagnb.Step("s", func=function)]).run(executor="local")
    lines = run.logs("s")["line"].tolist()
    assert f"    {shown_line}" in lines and not any(DISPLAYED in line for line in lines)
