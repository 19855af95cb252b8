"""The graph builder form: it edits the session graph and exports equivalent cells."""

from __future__ import annotations

import comm
import pytest
from IPython.core.interactiveshell import InteractiveShell

import dagnb
import dagnb.notebook.widgets
from dagnb.cache import step_key
from dagnb.notebook.cells import cell_text
from dagnb.notebook.magics import step_from_cell
from dagnb.notebook.session import Session, get_session
from dagnb.notebook.widgets.builder import Builder, builder


class DummyComm:
    comm_id = "a-b-c-d"
    kernel = "Truthy"

    def open(self, *args, **kwargs):
        pass

    def on_msg(self, *args, **kwargs):
        pass

    def send(self, *args, **kwargs):
        pass

    def close(self, *args, **kwargs):
        pass


@pytest.fixture(autouse=True)
def dummy_comm(monkeypatch, tmp_path):
    monkeypatch.setattr(comm, "create_comm", lambda **kwargs: DummyComm())
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(dagnb.notebook.widgets, "ENABLED", False)


def fill(form: Builder, name="fetch", image="alpine:3.20", command="echo hi", needs=(),
         retries=0, ttl="") -> Builder:
    form.name.value = name
    form.image.value = image
    form.command.value = command
    form.needs.value = tuple(needs)
    form.retries.value = retries
    form.ttl.value = ttl
    return form


def test_save_adds_the_step_to_the_session_graph():
    session = Session()
    form = fill(Builder(session))
    form.save_button.click()
    step = session.graph["fetch"]
    assert (step.run, step.image) == ("echo hi\n", "alpine:3.20")
    assert "step 'fetch' is in the graph" in form.message.value.replace("&#x27;", "'")
    assert form.existing.options == ("(new step)", "fetch")
    assert "alpine:3.20" in form.image.options


def test_needs_offer_existing_steps_and_edit_loads_a_step():
    session = Session()
    form = fill(Builder(session))
    form.save_button.click()
    form.existing.value = "(new step)"  # (else the form, editing fetch, would rename it)
    fill(form, name="shout", command="tr a-z A-Z", needs=("fetch",), retries=2, ttl="1h")
    form.save_button.click()
    assert session.graph["shout"].needs == ("fetch",)
    form.existing.value = "fetch"
    assert (form.name.value, form.command.value) == ("fetch", "echo hi\n")
    form.existing.value = "shout"
    assert form.needs.value == ("fetch",) and form.retries.value == 2
    assert form.ttl.value == "3600s"


def test_export_round_trips_through_the_magic():
    session = get_session()
    form = fill(Builder(session), name="clean", image="python:3.12-slim",
                command="python -c 'print(1)'\necho \"done\"", retries=3, ttl="2h")
    form.save_button.click()
    fill(form, name="report", command="cat $DAGNB_IN/clean/x", needs=("clean",))
    form.export_button.click()
    exported = form.exported.value
    assert exported.startswith("%%dagger report --image alpine:3.20 --needs clean\n")
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "dagnb.notebook.magics")
    first, _, body = exported.partition("\n")
    shell.run_cell_magic("dagger", first[len("%%dagger "):] + " --define-only", body)
    assert session.graph["report"] == form.step()
    assert step_from_cell(fill(form, name="clean", image="python:3.12-slim",
                               command="python -c 'print(1)'\necho \"done\"", retries=3,
                               ttl="2h").cell_text()) == session.graph["clean"]


def test_cell_text_of_a_step_round_trips():
    step = dagnb.Step("full", run="echo $A\n", image="alpine:3.20", needs=("a", "b"),
                      env={"A": "x y"}, secrets=("TOKEN",), mounts={"data": "/data"},
                      params={"n": 3, "s": "text", "xs": [1, 2]}, retries=2, timeout="10m",
                      ttl=0.5, tags=("t",), cache=False, executor="local")
    assert step_from_cell(cell_text(step)) == step


def test_bad_form_shows_a_message_not_an_exception():
    form = fill(Builder(Session()), name="9 bad")
    form.save_button.click()
    assert "color:#c62828" in form.message.value


def test_builder_function_uses_the_notebook_session():
    assert builder().session is get_session()


def test_ttl_of_weeks_round_trips_through_the_form():
    session = Session()
    session.define(dagnb.Step("slow", run="echo\n", ttl="14d"))
    form = Builder(session)
    form.existing.value = "slow"
    assert form.step().ttl == 14 * 86400


def test_editing_a_step_keeps_the_options_the_form_does_not_show():
    session = Session()
    session.define(dagnb.Step("a", run="echo a\n", env={"X": "1"}, secrets=("TOKEN",),
                              params={"n": 3}, tags=("etl",), timeout=60, cache=False))
    form = Builder(session)
    form.existing.value = "a"
    form.command.value = "echo changed"
    form.save_button.click()
    step = session.graph["a"]
    assert step.run == "echo changed\n"
    assert (dict(step.env), step.secrets, dict(step.params), step.tags, step.timeout,
            step.cache) == ({"X": "1"}, ("TOKEN",), {"n": 3}, ("etl",), 60, False)
    form.existing.value = "(new step)"
    assert "--param" not in fill(form, name="b").cell_text()


def test_a_python_cells_step_is_not_turned_into_a_shell_step():
    """Loaded in the form (its command empty) and saved with one, `fit` became a shell
    step: its code, its params and its outputs were gone, with a message of success."""
    session = Session()
    session.define(step_from_cell("%%dagger fit --python --param n=2 --outputs m\nm = n * 2\n",
                                  session.namespace), ("m",))
    form = Builder(session)
    form.existing.value = "fit"
    message = "step 'fit' is a --python cell's: this form edits shell steps"
    assert message in form.message.value.replace("&#x27;", "'")
    form.command.value = "echo replaced"
    form.save_button.click()
    assert message in form.message.value.replace("&#x27;", "'")
    assert session.graph["fit"].func is not None and session.outputs["fit"] == ("m",)
    fill(Builder(session), name="fit").save_button.click()  # (a new step of its name)
    assert session.graph["fit"].params == {"n": 2}


WORKFLOW = """\
steps:
  argv: {run: ["echo", "hello world"]}
  moved: {run: pwd, workdir: sub}
  lenient: {run: "false; echo ok", errexit: false}
  patient: {run: echo r, retries: {max_retries: 3, retry_on: [137]}}
  versioned: {run: echo v, cache_version: "2", env: {X: "1"}}
  stubborn: {run: echo s, retries: 50}
"""


@pytest.fixture
def loaded():
    """``%dagger load wf.yml`` in the notebook's session, and a form on its graph."""
    with open("wf.yml", "w") as file:
        file.write(WORKFLOW)
    shell = InteractiveShell.instance()
    shell.run_line_magic("load_ext", "dagnb.notebook.magics")
    shell.run_line_magic("dagger", "load wf.yml")
    return get_session(), Builder(get_session())


def key_of(step, tmp_path):
    return step_key(step, upstream_digests={}, base_dir=tmp_path).digest


def save_unchanged(form, name):
    form.existing.value = name
    form.save_button.click()


@pytest.mark.parametrize(("name", "field", "value"), [
    ("argv", "run", ("echo", "hello world")),  # was the text "('echo', 'hello world')\n"
    ("moved", "workdir", "sub"),  # was dropped
    ("lenient", "errexit", False),  # became True
    ("patient", "retries", {"max_retries": 3, "retry_on": [137]}),  # became None
    ("versioned", "cache_version", "2"),  # became ''
    ("moved", "run", "pwd"),  # gained a trailing newline
])
def test_an_unchanged_save_keeps_what_the_form_does_not_show(loaded, name, field, value):
    session, form = loaded
    save_unchanged(form, name)
    assert getattr(session.graph[name], field) == value
    assert "is in the graph" in form.message.value


def test_an_unchanged_save_keeps_each_loaded_step_and_its_key(loaded, tmp_path):
    session, form = loaded
    for name in session.graph.names:
        before = session.graph[name]
        save_unchanged(form, name)
        assert key_of(session.graph[name], tmp_path) == key_of(before, tmp_path)
        assert session.graph[name] == before


def test_the_form_shows_an_argv_run_as_shell_words_and_a_policy_as_its_count(loaded):
    _, form = loaded
    form.existing.value = "argv"
    assert form.command.value == "echo 'hello world'"
    form.existing.value = "patient"
    assert form.retries.value == 3
    form.existing.value = "stubborn"  # (the field stopped at 20)
    assert form.retries.value == 50


def test_an_edit_changes_only_the_field_edited(loaded):
    session, form = loaded
    form.existing.value = "moved"
    form.image.value = "alpine:3.20"
    form.save_button.click()
    step = session.graph["moved"]
    assert (step.image, step.workdir, step.run) == ("alpine:3.20", "sub", "pwd")
    form.existing.value = "argv"
    form.command.value = "echo 'hello there'"
    form.save_button.click()
    assert session.graph["argv"].run == "echo 'hello there'\n"


def test_a_new_retry_count_replaces_the_policy_and_says_so(loaded):
    session, form = loaded
    form.existing.value = "patient"
    form.retries.value = 5
    form.save_button.click()
    assert session.graph["patient"].retries == 5
    message = form.message.value.replace("&#x27;", "'")
    assert "its retry policy {'max_retries': 3, 'retry_on': [137]} was replaced by 5" in message


def test_export_names_the_settings_a_cell_cannot_set(loaded):
    _, form = loaded
    form.existing.value = "versioned"
    form.export_button.click()
    first, comment, body = form.exported.value.splitlines()
    assert first == "%%dagger versioned --env X=1"
    assert comment == "# not set by this cell (%%dagger has no option for them): cache_version='2'"
    assert body == "echo v"
    form.existing.value = "patient"
    form.export_button.click()
    assert form.exported.value.startswith(
        "%%dagger patient\n# not set by this cell (%%dagger has no option for them): "
        "retries={'max_retries': 3, 'retry_on': [137]}\n")
    form.existing.value = "argv"
    form.export_button.click()
    assert step_from_cell(form.exported.value).run == "echo 'hello world'\n"


def test_a_bad_name_is_refused_naming_it_and_the_rule():
    form = fill(Builder(Session()), name="bad name!")
    form.save_button.click()
    message = form.message.value.replace("&#x27;", "'")
    assert "step name 'bad name!' is not valid; use letters, digits" in message
    assert "unrecognized arguments" not in message
