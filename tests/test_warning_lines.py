"""The line a warning shows under it in a notebook: every dagnb warning in a ``%%dagger``
cell showed IPython's call of the magic, the whole cell escaped on one line, and a
user's own warning on a ``--python`` cell's last line the call dagnb displays it with
(``_dagnb_displayed((warnings.warn(...)))``), code they never wrote."""

from __future__ import annotations

import warnings

import pytest

from dagnb.notebook import warning_lines


def _printed(shell, source: str) -> str:
    """What Python prints of the warnings a cell (run as a notebook runs it) gives."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = shell.run_cell(source)
    assert result.error_in_exec is None, result.error_in_exec
    return "".join(warnings.formatwarning(w.message, w.category, w.filename, w.lineno)
                   for w in caught)


def test_a_warning_of_dagnb_in_a_dagger_cell_shows_the_cells_first_line(shell):
    body = "\n".join(f"step_{i} = {i}  # processing step number {i}" for i in range(40))
    printed = _printed(shell, f"%%dagger mk --python --outputs L\n{body}\n"
                              "import threading\nL = threading.Lock()\n")
    assert "its result cannot be pickled" in printed
    assert printed.splitlines()[1] == "  %%dagger mk --python --outputs L"
    assert "run_cell_magic" not in printed and "step_39" not in printed


def test_a_users_warning_on_a_cells_last_line_shows_that_line_as_written(shell):
    printed = _printed(shell, "%%dagger w --python --no-cache\nimport warnings\n"
                              "warnings.warn('column x has NaNs')\n")
    assert "UserWarning: column x has NaNs" in printed
    assert printed.splitlines()[1] == "  warnings.warn('column x has NaNs')"


def test_other_warnings_show_their_line_as_before(shell, tmp_path):
    module = tmp_path / "plain_warner.py"
    module.write_text("import warnings\n\ndef warn():\n    warnings.warn('plain')\n")
    printed = _printed(shell, f"import runpy\nrunpy.run_path({str(module)!r})['warn']()\n")
    assert printed.splitlines()[1] == "  warnings.warn('plain')"


@pytest.mark.parametrize(("call", "shown"), [
    ("get_ipython().run_cell_magic('dagger', 'a --python', 'x = 1\\n')", "%%dagger a --python"),
    ("get_ipython().run_cell_magic('dagger', '', 'echo\\n')", "%%dagger"),
    ("get_ipython().run_cell_magic(name, 'a', 'x')", None),  # (not constants: as it is)
])
def test_the_magic_line_is_read_back_from_ipythons_call(call, shown):
    assert warning_lines._magic_line(call) == shown


def test_unloading_gives_back_the_formatter_found(shell):
    assert getattr(warnings.formatwarning, "_dagnb_before", None) is not None
    shell.run_line_magic("unload_ext", "dagnb.notebook.magics")
    try:
        assert getattr(warnings.formatwarning, "_dagnb_before", None) is None
    finally:
        shell.run_line_magic("load_ext", "dagnb.notebook.magics")
    assert getattr(warnings.formatwarning, "_dagnb_before", None) is not None


def test_a_warning_from_a_cell_names_the_cell_as_tracebacks_do(shell):
    printed = _printed(shell, "import warnings\nx = 1\nwarnings.warn('column x has NaNs')\n")
    first = printed.splitlines()[0]
    count = shell.execution_count  # (run_cell stores no history: the number stays)
    assert first == f"Cell In[{count}], line 3: UserWarning: column x has NaNs"


def test_a_warning_from_a_file_keeps_the_files_name(shell, tmp_path):
    module = tmp_path / "file_warner.py"
    module.write_text("import warnings\n\ndef warn():\n    warnings.warn('plain')\n")
    printed = _printed(shell, f"import runpy\nrunpy.run_path({str(module)!r})['warn']()\n")
    assert printed.startswith(f"{module}:4: UserWarning: plain")


def test_the_kernels_warning_text_names_the_cell_not_ipykernels_file(tmp_path):
    from notebook_cells import executed, printed

    notebook = executed(["%load_ext dagnb", "import warnings\n\nwarnings.warn('late data')"],
                        tmp_path)
    shown = printed(notebook.cells[1])
    assert shown.startswith("Cell In[2], line 3: UserWarning: late data"), shown
    assert "ipykernel_" not in shown
