"""The graph builder form, QA session 63: what it saves and exports is what it shows."""

from __future__ import annotations

import html
import re
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import dagnb
import dagnb.notebook.widgets
from dagnb.errors import InvalidStepError
from dagnb.notebook.cells import cell_text
from dagnb.notebook.magics import step_from_cell
from dagnb.notebook.session import Session
from dagnb.notebook.widgets.builder import Builder

TOKEN = "ghp_abcdefghijklmnop1234"


from test_builder import dummy_comm as _no_kernel  # noqa: E402, F401  (autouse: no kernel)


@pytest.fixture(autouse=True)
def no_config(monkeypatch):
    monkeypatch.setenv("DAGNB_CONFIG", "none")


def said(form: Builder) -> str:
    """The form's message as the page shows it (no tags, no escapes)."""
    return html.unescape(re.sub("<[^>]+>", "", form.message.value))


def python_step(session: Session, cell: str) -> None:
    session.define(step_from_cell(cell, session.namespace), ("rows",))


def test_typing_a_name_through_a_needed_steps_name_keeps_the_need():
    """Each keystroke of `load_more` was a change of Name: at `load` the need `load` was
    dropped, and never came back; the step was saved without its upstream."""
    session = Session()
    session.define(dagnb.Step("load", run="echo 1 > $DAGNB_OUT/n\n"))
    form = Builder(session)
    form.needs.value = ("load",)
    form.command.value = "cat $DAGNB_IN/load/n"
    for typed in range(1, len("load_more") + 1):  # (as the browser sends it)
        form.name.value = "load_more"[:typed]
    assert form.needs.value == ("load",)
    assert form.needs.options == ("load",)
    form.save_button.click()
    assert session.graph["load_more"].needs == ("load",), said(form)


def test_a_name_equal_to_a_chosen_need_is_refused_by_save():
    session = Session()
    session.define(dagnb.Step("load", run="echo\n"))
    form = Builder(session)
    form.existing.value = "load"
    form.needs.value = ("load",)
    form.save_button.click()
    assert said(form) == ("step 'load' is among its own Needs; unselect 'load' under Needs, "
                          "or choose another name")
    assert session.graph["load"].needs == ()


def test_the_form_follows_its_step_redefined_by_its_cell():
    """`a`'s cell ran again with `echo two`: the form kept showing `echo one` and Export
    wrote `echo two` without a word."""
    session = Session()
    session.define(dagnb.Step("a", run="echo one\n"))
    form = Builder(session)
    form.existing.value = "a"
    form.retries.value = 2  # (typed by the user: kept)
    session.define(dagnb.Step("a", run="echo two\n"))
    form.follow_graph()  # (what the kernel does after each cell)
    assert (form.command.value, form.retries.value) == ("echo two\n", 2)
    assert "step 'a' changed in the graph (its cell ran again?)" in said(form)
    assert "the fields you changed are kept (retries)" in said(form)
    form.export_button.click()
    assert form.exported.value == "%%dagger a --retries 2\necho two\n"
    assert form.message.value == ""


def test_export_says_what_save_says_of_a_step_redefined_since_loaded():
    session = Session()
    session.define(dagnb.Step("a", run="echo one\n"))
    form = Builder(session)
    form.existing.value = "a"
    session.define(dagnb.Step("a", run="echo two\n"))  # (within the same cell: no refresh)
    form.export_button.click()
    assert form.exported.value == "%%dagger a\necho two\n"
    assert "the fields not changed here keep what the step was given since" in said(form)


@pytest.mark.parametrize("needed", [False, True])
def test_a_new_name_over_a_python_step_adds_a_step_beside_it(needed):
    """Doing as the form advised for a --python step ("name this step otherwise")
    removed that step from the graph as a rename, or, while another step needed it, was
    refused as one."""
    session = Session()
    python_step(session, "%%dagger load --python --outputs rows\nrows = [1, 2, 3]\n")
    if needed:
        session.define(dagnb.Step("total", run="echo\n", needs=("load",)))
    form = Builder(session)
    form.existing.value = "load"
    form.name.value = "load_csv"
    form.command.value = "echo csv > $DAGNB_OUT/x.csv"
    form.save_button.click()
    assert session.graph.names == ["load", *(["total"] if needed else []), "load_csv"]
    assert session.graph["load"].func is not None
    assert "renamed" not in said(form)
    form.existing.value = "load"
    assert "name this step otherwise (a new step, beside it)" in said(form)


def test_export_refuses_a_secrets_value_in_an_env_naming_the_option_not_the_value(
        monkeypatch):
    monkeypatch.setenv("GH_TOKEN", TOKEN)
    session = Session()
    session.define(dagnb.Step("fetch", run="echo auth=$AUTH\n", secrets=("GH_TOKEN",),
                              env={"AUTH": TOKEN}))
    form = Builder(session)
    form.existing.value = "fetch"
    form.exported.value = "%%dagger old\necho old\n"
    form.export_button.click()
    assert form.exported.value == ""
    assert said(form) == ("step 'fetch': --env AUTH holds the value of secret 'GH_TOKEN', "
                          "which a cell would show in clear; build it from $GH_TOKEN in the "
                          "command, or declare AUTH with --secret")
    assert TOKEN not in form.message.value + form.exported.value


def test_export_refuses_a_param_holding_a_secret_another_step_declares(monkeypatch):
    """A run refuses a param holding the value of a secret any step of the graph declares;
    so does Export."""
    monkeypatch.setenv("GH_TOKEN", TOKEN)
    session = Session()
    session.define(dagnb.Step("login", run="echo\n", secrets=("GH_TOKEN",)))
    session.define(dagnb.Step("fetch", run="echo\n", params={"auth": f"Bearer {TOKEN}"}))
    form = Builder(session)
    form.existing.value = "fetch"
    form.export_button.click()
    assert form.exported.value == ""
    assert said(form).startswith("step 'fetch': --param auth holds the value of secret "
                                 "'GH_TOKEN'")
    assert TOKEN not in form.message.value


def test_cell_text_refuses_a_value_of_the_steps_own_secret(monkeypatch):
    monkeypatch.setenv("GH_TOKEN", TOKEN)
    step = dagnb.Step("fetch", run=f"curl -H 'auth: {TOKEN}'\n", secrets=("GH_TOKEN",))
    with pytest.raises(InvalidStepError, match=r"its cell would show the value of secret "
                                               r"'GH_TOKEN' in clear; write \$GH_TOKEN") as err:
        cell_text(step)
    assert TOKEN not in str(err.value)
    assert cell_text(dagnb.Step("fetch", run="curl\n", secrets=("GH_TOKEN",),
                                env={"A": "plain"})) == (
        "%%dagger fetch --env A=plain --secret GH_TOKEN\ncurl\n")


def test_export_of_a_python_step_gives_its_own_cell():
    session = Session()
    python_step(session, "%%dagger load --python --param n=3 --outputs rows\n"
                         "rows = list(range(n))\n")
    form = Builder(session)
    form.existing.value = "load"
    form.export_button.click()
    assert form.exported.value == cell_text(session.graph["load"])
    assert form.exported.value.startswith("%%dagger load --python --param n=3 --outputs rows\n")
    assert form.message.value == ""
    form.command.value = "echo changed"  # (a shell command for it: Save refuses it too)
    form.export_button.click()
    assert form.exported.value == ""
    assert "step 'load' is a --python cell's: this form edits shell steps" in said(form)


def test_a_ttl_starting_with_a_dash_is_named_not_taken_for_an_option():
    form = Builder(Session())
    form.name.value, form.command.value, form.ttl.value = "fetch", "echo hi", "-5m"
    form.save_button.click()
    assert said(form).startswith("step 'fetch' ttl '-5m' is not a duration"), said(form)
    form.ttl.value, form.image.value = "", "-odd"  # (named as the value, refused as one)
    with pytest.raises(InvalidStepError, match=r"image '-odd' is not an image reference"):
        form.step()
    form.image.value = "my image:1"  # (a space: the builder took it, and an export)
    with pytest.raises(InvalidStepError, match=r"image 'my image:1' is not an image "):
        form.step()


def test_export_clears_a_stale_message_and_a_failed_export_clears_the_cell():
    form = Builder(Session())
    form.name.value, form.command.value, form.ttl.value = "fetch", "echo hi", "two days"
    form.save_button.click()
    assert "ttl 'two days' is not a duration" in said(form)
    form.ttl.value = "2d"
    form.export_button.click()
    assert form.exported.value == "%%dagger fetch --ttl 172800s\necho hi\n"
    assert form.message.value == ""
    form.name.value = "bad name"
    form.export_button.click()
    assert "step name 'bad name' is not valid" in said(form)
    assert form.exported.value == ""


def test_save_says_the_step_lives_in_this_kernel_until_exported():
    form = Builder(Session())
    form.name.value, form.command.value = "count", "echo 1"
    form.save_button.click()
    assert said(form) == ("step 'count' is in the graph; run it with %dagger run count; it "
                          "lives in this kernel only until exported as a %%dagger cell "
                          "(Export, then paste it in a cell)")


@pytest.mark.slow
def test_in_a_kernel_the_form_keeps_needs_follows_cells_and_exports_no_secret(
        tmp_path: Path, monkeypatch) -> None:
    """The kernel's own flow: names typed key by key, a cell run again, a secret's value
    in an env (the exported box is widget state a notebook keeps)."""
    for name, value in (("DAGNB_CONFIG", "none"), ("DAGNB_EXECUTOR", "local"),
                        ("DAGNB_WIDGETS", "1"), ("DAGNB_CACHE_DIRECTORY", str(tmp_path / "c")),
                        ("GH_TOKEN", TOKEN)):
        monkeypatch.setenv(name, value)
    client = NotebookClient(nbformat.v4.new_notebook(), timeout=60, kernel_name="python3",
                            store_widget_state=True,  # (where an exported cell is kept)
                            resources={"metadata": {"path": str(tmp_path)}})
    cells = [
        "%load_ext dagnb\nimport dagnb, html, os\nform = dagnb.builder()",
        "%%dagger load\necho 1 > $DAGNB_OUT/n",
        "form.needs.value = ('load',); form.command.value = 'cat $DAGNB_IN/load/n'\n"
        "for i in range(1, 10): form.name.value = 'load_more'[:i]\n"
        "form.save_button.click()",
        "%dagger run load_more",
        "form.existing.value = 'load'",
        "%%dagger load --define-only\necho 2 > $DAGNB_OUT/n",
        "tok = os.environ['GH_TOKEN']",
        "%%dagger fetch --secret GH_TOKEN --env AUTH=$tok --define-only\necho",
        "shown = form.command.value\nform.existing.value = 'fetch'; form.export_button.click()\n"
        "print(repr((form.session.graph['load_more'].needs, shown, form.exported.value, "
        "form.message.value)))",
    ]
    with client.setup_kernel():
        for source in cells:
            cell = nbformat.v4.new_code_cell(source)
            client.nb.cells.append(cell)
            client.execute_cell(cell, len(client.nb.cells) - 1)
        client.set_widgets_metadata()  # (as nbclient's execute() leaves the notebook)
    outputs = client.nb.cells[-1].outputs
    needs, shown, exported, message = eval(outputs[0]["text"])  # (a repr printed above)
    assert needs == ("load",)
    assert shown == "echo 2 > $DAGNB_OUT/n\n"
    assert exported == ""
    assert "step 'fetch': --env AUTH holds the value of secret 'GH_TOKEN'" in html.unescape(
        message)
    assert "TextareaModel" in str(client.nb.metadata.widgets)  # (the form's state is kept)
    assert TOKEN not in str(client.nb)
