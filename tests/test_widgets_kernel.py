"""dagnb's widgets in a real kernel (nbclient): the models they leave open, what the run
widget offers, the builder form as cells change the graph."""

from __future__ import annotations

import ast
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow

def _value(client: NotebookClient, source: str) -> object:
    cell = nbformat.v4.new_code_cell(source)
    client.nb.cells.append(cell)
    client.execute_cell(cell, len(client.nb.cells) - 1)
    results = [o for o in cell.outputs if o["output_type"] == "execute_result"]
    assert results, cell.outputs
    return ast.literal_eval(results[0]["data"]["text/plain"])


OPEN_MODELS = """\
import threading
from ipywidgets.widgets.widget import _instances
[t.join(30) for t in threading.enumerate() if t.name == 'dagnb-settle']
sorted(type(_instances[m]).__name__ for m in set(_instances) - before)
"""


def _kernel(tmp_path: Path, monkeypatch) -> NotebookClient:
    """A kernel showing widgets, as JupyterLab's does (no widget state kept)."""
    for name, value in (("DAGNB_CONFIG", "none"), ("DAGNB_EXECUTOR", "local"),
                        ("DAGNB_WIDGETS", "1"), ("DAGNB_CACHE_DIRECTORY", str(tmp_path / "c"))):
        monkeypatch.setenv(name, value)
    return NotebookClient(nbformat.v4.new_notebook(), timeout=60, kernel_name="python3",
                          store_widget_state=False,
                          resources={"metadata": {"path": str(tmp_path)}})


def _models_left_open(client: NotebookClient, *sources: str) -> object:
    """The widget models the cells ``sources`` opened and left open once their runs ended."""
    _value(client, "%load_ext dagnb\nfrom ipywidgets.widgets.widget import _instances\n"
                   "before = set(_instances)\n0")
    for source in sources:
        _execute(client, source)
    return _value(client, OPEN_MODELS)


def _execute(client: NotebookClient, source: str) -> None:
    cell = nbformat.v4.new_code_cell(source)
    client.nb.cells.append(cell)
    client.execute_cell(cell, len(client.nb.cells) - 1)


def test_a_settled_widget_leaves_no_model_open(tmp_path: Path, monkeypatch) -> None:
    """Each run's widget left its layouts and styles open once replaced by its snapshot:
    seven models a run, kept by the kernel and the front end for the session."""
    client = _kernel(tmp_path, monkeypatch)
    with client.setup_kernel():
        left = _models_left_open(client, "%%dagger a\necho a",
                                 "%%dagger b --background\necho b")
    assert left == []


def test_a_run_that_does_not_start_leaves_no_widget_model_open(tmp_path: Path,
                                                               monkeypatch) -> None:
    """A ``%dagger run`` refused (a mistyped step) or with nothing to run built its widget
    first and never showed nor closed it: nineteen models in the front end each time."""
    client = _kernel(tmp_path, monkeypatch)
    with client.setup_kernel():
        client.allow_errors = True  # (the refused line)
        left = _models_left_open(client, "%%dagger a\necho a", "%dagger run nosuch",
                                 "%dagger run --only-failed")
    assert left == []


def test_a_form_save_does_not_undo_the_cell_that_redefined_its_step(tmp_path: Path,
                                                                   monkeypatch) -> None:
    """The builder's step exported, its cell edited and run, then another field of the
    form changed and saved: the form's old command replaced the cell's, saying all was
    well. The fields the user did not change keep what the cell set, and the form shows
    them as soon as the cell ran."""
    client = _kernel(tmp_path, monkeypatch)
    with client.setup_kernel():
        _value(client, "%load_ext dagnb\nimport dagnb\nform = dagnb.builder()\n"
                       "form.name.value = 'prep'; form.command.value = 'echo v1'\n"
                       "form.save_button.click()\n0")
        _execute(client, "%%dagger prep --define-only\necho v2")
        followed, said = _value(client, "import html\n"
                                        "form.command.value, html.unescape(form.message.value)")
        saved, shown = _value(client, "form.retries.value = 3\nform.save_button.click()\n"
                                      "step = form.session.graph['prep']\n"
                                      "(step.run, step.retries), form.command.value")
    assert followed == "echo v2\n"
    assert "step 'prep' changed in the graph (its cell ran again?)" in said, said
    assert saved == ("echo v2\n", 3)
    assert shown == "echo v2\n"  # (the form shows the step as saved)


def test_a_form_save_under_another_steps_name_is_refused_and_a_new_name_renames(
        tmp_path: Path, monkeypatch) -> None:
    """`prep` loaded under Edit and saved with Name `train` replaced `train` by `prep`'s
    command, saying all was well; a new Name copied the step instead of renaming it."""
    client = _kernel(tmp_path, monkeypatch)
    with client.setup_kernel():
        _execute(client, "%load_ext dagnb\nimport dagnb, html\nform = dagnb.builder()")
        _execute(client, "%%dagger train --define-only\necho train")
        _execute(client, "%%dagger prep --define-only\necho prep")
        over = _value(client, "form.refresh(); form.existing.value = 'prep'\n"
                              "form.name.value = 'train'\n"
                              "form.save_button.click()\ng = form.session.graph\n"
                              "g['train'].run, g['prep'].run, html.unescape(form.message.value)")
        new = _value(client, "form.existing.value = '(new step)'; form.name.value = 'train'\n"
                             "form.command.value = 'echo new'; form.save_button.click()\n"
                             "g['train'].run, html.unescape(form.message.value)")
        renamed = _value(client, "form.existing.value = 'prep'; form.name.value = 'prep2'\n"
                                 "form.save_button.click()\n"
                                 "g.names, g['prep2'].run, html.unescape(form.message.value)")
        _execute(client, "%%dagger uses --needs prep2 --define-only\necho uses")
        needed = _value(client, "form.refresh(); form.existing.value = 'prep2'\n"
                                "form.name.value = 'prep3'\n"
                                "form.save_button.click()\n"
                                "g.names, html.unescape(form.message.value)")
    assert over[:2] == ("echo train\n", "echo prep\n")
    assert ("step 'train' is already in the graph and saving 'prep' as 'train' would replace "
            "it; pick 'train' under Edit to change it, or choose a new name") in over[2], over
    assert new[0] == "echo train\n" and "pick 'train' under Edit" in new[1], new
    assert renamed[:2] == (["train", "prep2"], "echo prep\n"), renamed
    assert "renamed from 'prep'" in renamed[2], renamed
    assert needed[0] == ["train", "prep2", "uses"], needed
    assert "renaming 'prep2' to 'prep3' is refused: 'uses' needs 'prep2'" in needed[1], needed


def test_the_form_follows_the_cells_that_define_and_remove_steps(tmp_path: Path,
                                                                 monkeypatch) -> None:
    """After `%%dagger train --define-only`, Edit offered only (new step) and Needs
    nothing until `form.refresh()`; after `%dagger remove train`, Edit still listed
    `train`, and picking it cleared the form while it still said "Edit: train"."""
    client = _kernel(tmp_path, monkeypatch)
    with client.setup_kernel():
        _execute(client, "%load_ext dagnb\nimport dagnb, html\nform = dagnb.builder()")
        _execute(client, "%%dagger train --define-only\necho train")
        _execute(client, "%%dagger prep --define-only\necho prep")
        offered = _value(client, "form.existing.options, form.needs.options")
        _execute(client, "form.existing.value = 'train'")
        _execute(client, "%dagger remove train")
        after_removal = _value(client, "(form.existing.value, form.existing.options, "
                                       "form.command.value, html.unescape(form.message.value))")
        picked_gone = _value(client, "form.session.remove('prep')\n"
                                     "form.existing.value = 'prep'\n"  # (still listed)
                                     "(form.existing.value, form.existing.options, "
                                     "form.command.value, html.unescape(form.message.value))")
    assert offered == (("(new step)", "train", "prep"), ("train", "prep")), offered
    assert after_removal[:3] == ("(new step)", ("(new step)", "prep"), "echo train\n")
    assert ("step 'train' is no longer in the graph (removed since the form loaded it); "
            "Save adds the form's fields as a new step") in after_removal[3], after_removal
    assert picked_gone[:3] == ("(new step)", ("(new step)",), "echo train\n"), picked_gone
    assert ("step 'prep' is no longer in the graph (removed since Edit listed it); Edit now "
            "lists the graph's steps") in picked_gone[3], picked_gone


def test_a_running_widget_offers_only_what_a_run_can_use(tmp_path: Path,
                                                         monkeypatch) -> None:
    """A `%%dagger` cell's widget showed Run all, Run failed and Clear cache, disabled
    while its run went, and was replaced by its snapshot when it ended: never usable."""
    client = _kernel(tmp_path, monkeypatch)
    with client.setup_kernel():
        _execute(client, "%load_ext dagnb")
        _execute(client, "%%dagger nap --background\nsleep 2")
        shown = _value(client, "from ipywidgets import Button\n"
                               "from ipywidgets.widgets.widget import _instances\n"
                               "from dagnb.notebook.widgets.status import StatusWidget\n"
                               "[view] = [m for m in list(_instances.values()) "
                               "if isinstance(m, StatusWidget)]\n"
                               "[c.description for c in view.buttons.children "
                               "if isinstance(c, Button)], view.run.done")
    assert shown == (["Cancel"], False), shown


def test_a_form_saved_without_widget_state_says_what_it_is(tmp_path: Path,
                                                           monkeypatch) -> None:
    """The cell showing `dagnb.builder()` saved, for a reader with no widgets, ipywidgets'
    `Builder(children=(Dropdown(description='Edit', ...` cut at 110 characters."""
    client = _kernel(tmp_path, monkeypatch)
    with client.setup_kernel():
        _execute(client, "%load_ext dagnb\nimport dagnb")
        _execute(client, "%%dagger train --define-only\necho train")
        cell = nbformat.v4.new_code_cell("form = dagnb.builder()\nform")
        client.nb.cells.append(cell)
        client.execute_cell(cell, len(client.nb.cells) - 1)
    [shown] = [o["data"] for o in cell.outputs if o["output_type"] == "execute_result"]
    assert "application/vnd.jupyter.widget-view+json" in shown
    assert shown["text/plain"] == ("dagnb step builder (a live form: run its cell in a kernel "
                                   "to use it); steps: train")
