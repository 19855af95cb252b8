"""``%dagger save`` (and ``graph.to_yaml``): no secret in clear in the YAML, no file
dagnb did not write replaced, no steps module missing a helper the kernel has not
defined yet (a restart), and a word on where a saved Python step reads its paths."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from IPython.core.error import UsageError
from notebook_cells import LiveKernel, started_kernel

import dagnb
from dagnb.errors import WorkflowError

TOKEN = "s3cr3tTokenValue42"


def cell(ip, line, body=""):
    return ip.run_cell_magic("dagger", line, body)


def save(ip, path):
    return ip.run_line_magic("dagger", f"save {path}")


def files(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir() if not p.name.startswith(".")}


# -- 1. a declared secret's value in an env or a param --------------------------------------
@pytest.mark.parametrize(("line", "says"), [
    (f"call --secret API_TOKEN --env 'AUTH=Bearer {TOKEN}' --define-only",
     r"^step 'call': env 'AUTH' holds the value of secret 'API_TOKEN', which the saved "
     r"workflow would hold in clear; declare AUTH itself as a secret \(--secret AUTH\), or "
     r"build it in the step from \$API_TOKEN$"),
    (f"p2 --secret API_TOKEN --param key={TOKEN} --define-only",
     r"^step 'p2': param 'key' holds the value of secret 'API_TOKEN', which the saved "
     r"workflow would hold in clear; read the secret in the step instead"),
    (f"p3 --python --secret API_TOKEN --param key={TOKEN} --define-only",
     r"^step 'p3': param 'key' holds the value of secret 'API_TOKEN'"),
], ids=["shell-env", "shell-param", "python-param"])
def test_save_refuses_a_secrets_value_in_an_env_or_a_param_and_writes_nothing(
        shell, tmp_path, monkeypatch, line, says):
    """The YAML held ``AUTH: Bearer s3cr3t...`` and ``key: s3cr3t...`` in clear."""
    monkeypatch.setenv("API_TOKEN", TOKEN)
    cell(shell, line, 'echo "$AUTH"\n' if "--python" not in line else "x = key\n")
    before = files(tmp_path)
    with pytest.raises(UsageError, match=says) as caught:
        save(shell, "pipeline.yml")
    assert TOKEN not in str(caught.value) and "\n" not in str(caught.value)
    assert files(tmp_path) == before  # neither the YAML nor the steps module
    with pytest.raises(WorkflowError, match=says):  # nor the text alone
        dagnb.notebook.session.get_session().graph.to_yaml()


def test_to_yaml_refuses_a_secrets_value_in_a_command_naming_the_field(monkeypatch):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    graph = dagnb.Graph("g", [dagnb.Step("call", run=f"curl -H 'Bearer {TOKEN}' x",
                                         secrets=["API_TOKEN"])])
    with pytest.raises(WorkflowError, match=r"^step 'call': its run holds the value of secret "
                                            r"'API_TOKEN', which the saved workflow would hold "
                                            r"in clear; write \"\$API_TOKEN\" in the command"):
        graph.to_yaml()


def test_a_step_holding_no_secrets_value_is_saved_with_its_secret_named(
        shell, tmp_path, monkeypatch):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    cell(shell, "call --secret API_TOKEN --env 'AUTH=Bearer token' --define-only",
         'echo "$API_TOKEN"\n')
    assert str(save(shell, "pipeline.yml")) == "saved 1 step to pipeline.yml"
    text = (tmp_path / "pipeline.yml").read_text()
    assert "API_TOKEN" in text and TOKEN not in text


# -- 1b. the value of a variable named as a secret, undeclared -------------------------------
OPENAI_KEY = "sk-proj-Zq8xW2vB7nK4mL9p"


def held_anywhere(folder: Path, secret: str) -> list[str]:
    """The files under ``folder`` (dagnb's cache too) holding ``secret``."""
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


@pytest.mark.parametrize("made", ['{"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}',
                                  'collections.OrderedDict(Authorization="Bearer " '
                                  '+ os.environ["OPENAI_API_KEY"])'],
                         ids=["written-as-a-literal", "pickled-beside-it"])
def test_save_refuses_a_notebook_value_holding_an_undeclared_secret_and_writes_nothing(
        shell, tmp_path, monkeypatch, made):
    """A run masks the value of ``OPENAI_API_KEY`` undeclared (named a secret beyond
    doubt), and ``dagnb run -p`` refuses it; the save wrote it in clear into
    ``pipe_steps.py`` (``headers = {'Authorization': 'Bearer sk-proj-...'}``)."""
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    shell.run_cell(f"import collections, os\nheaders = {made}\n")
    cell(shell, "call --python --outputs n", 'n = len(headers["Authorization"])\n')
    try:
        with pytest.raises(UsageError) as caught:
            save(shell, "pipe.yml")
    finally:
        shell.user_ns.pop("headers", None)
    assert str(caught.value) == (
        "step 'call': a Python step reads notebook variable 'headers', which holds the value "
        "of secret 'OPENAI_API_KEY'; saving it would write the secret to a file: read "
        "os.environ['OPENAI_API_KEY'] inside the step instead")
    assert not {"pipe.yml", "pipe_steps.py", "pipe_steps.pkl"} & files(tmp_path)
    assert held_anywhere(tmp_path, OPENAI_KEY) == []


def test_save_refuses_an_undeclared_secrets_value_in_an_env(shell, tmp_path, monkeypatch):
    monkeypatch.setenv("OPENAI_API_KEY", OPENAI_KEY)
    cell(shell, f"call --env 'AUTH=Bearer {OPENAI_KEY}' --define-only", 'echo "$AUTH"\n')
    with pytest.raises(UsageError, match=r"^step 'call': env 'AUTH' holds the value of secret "
                                         r"'OPENAI_API_KEY', which the saved workflow would "
                                         r"hold in clear"):
        save(shell, "pipe.yml")
    assert held_anywhere(tmp_path, OPENAI_KEY) == []


# -- 2. a file dagnb did not write ------------------------------------------------------------
HAND_WRITTEN = "# hand-written\nname: etl\nsteps:\n  extract:\n    run: echo extract\n"


def test_save_refuses_to_replace_a_workflow_dagnb_did_not_write(shell, tmp_path):
    (tmp_path / "etl.yml").write_text(HAND_WRITTEN)
    cell(shell, "a --python --outputs n --define-only", "n = 1\n")
    with pytest.raises(UsageError, match=r"^'etl.yml' exists and was not written by dagnb, and "
                                         r"saving the workflow would replace it: save it under "
                                         r"another name, or remove etl.yml first$"):
        save(shell, "etl.yml")
    assert (tmp_path / "etl.yml").read_text() == HAND_WRITTEN
    assert not (tmp_path / "etl_steps.py").exists()  # (nor its module left behind)
    with pytest.raises(WorkflowError, match=r"^'etl\.yml' exists and was not written"):
        dagnb.notebook.session.get_session().graph.to_yaml("etl.yml")


def test_save_replaces_a_file_it_wrote(shell, tmp_path):
    cell(shell, "a --python --outputs n --define-only", "n = 1\n")
    assert str(save(shell, "etl.yml")) == "saved 1 step to etl.yml"
    assert (tmp_path / "etl.yml").read_text().startswith("# saved by dagnb")
    cell(shell, "b --define-only", "echo b\n")
    assert str(save(shell, "etl.yml")) == "saved 2 steps to etl.yml"
    assert dagnb.load(tmp_path / "etl.yml").names == ["a", "b"]


@pytest.mark.parametrize("name", ["notes.txt", "pipeline"])
def test_save_refuses_a_name_that_is_no_workflow_files(shell, tmp_path, name):
    (tmp_path / "notes.txt").write_text("my notes\n")
    cell(shell, "a --define-only", "echo a\n")
    stem = Path(name).stem
    with pytest.raises(UsageError, match=rf"^cannot save the workflow as '{name}': a workflow "
                                         rf"file's name ends in .yml or .yaml; save it as "
                                         rf"{stem}.yml$"):
        save(shell, name)
    assert (tmp_path / "notes.txt").read_text() == "my notes\n"
    assert files(tmp_path) == {"notes.txt"}


# -- 3. a helper this kernel has not defined yet (a restart) ----------------------------------
def write_notebook(path: Path, cells: list[str]) -> None:
    notebook = nbformat.v4.new_notebook()
    notebook.cells = [nbformat.v4.new_code_cell(source) for source in cells]
    nbformat.write(notebook, path)


HELPERS = "FACTOR = 3\ndef scale(x):\n    return x * FACTOR"
LOAD = "%%dagger load --python --outputs data\ndata = [scale(i) for i in range(4)]\n"


@pytest.fixture
def no_helpers(shell):
    """The shell (one a process) without the helpers an earlier test defined."""
    for name in ("FACTOR", "scale"):
        shell.user_ns.pop(name, None)
    yield shell
    for name in ("FACTOR", "scale"):
        shell.user_ns.pop(name, None)


@pytest.mark.parametrize(("defined", "missing"), [
    ("", "scale"), ("def scale(x):\n    return x * FACTOR", "FACTOR")],
    ids=["the-step-reads-it", "a-helper-reads-it"])
def test_save_refuses_a_step_reading_a_name_this_kernel_lacks_naming_the_cell(
        no_helpers, tmp_path, defined, missing):
    """After a restart (the helpers' cell not run), the module was saved without them and
    ``dagnb run`` failed with a NameError."""
    shell = no_helpers
    write_notebook(tmp_path / "nb.ipynb", ["%load_ext dagnb", HELPERS, LOAD])
    shell.user_ns["__session__"] = str(tmp_path / "nb.ipynb")  # (as JupyterLab's kernel)
    shell.run_cell(defined)
    cell(shell, "load --python --outputs data --define-only", LOAD.split("\n", 1)[1])
    with pytest.raises(UsageError) as caught:
        save(shell, "pipeline.yml")
    assert str(caught.value) == (f"cannot save pipeline.yml: step 'load' reads notebook variable "
                                 f"`{missing}`, not defined in this kernel yet; run cell 2 of "
                                 "nb.ipynb first")
    assert files(tmp_path) == {"nb.ipynb"}
    shell.run_cell(HELPERS)
    assert str(save(shell, "pipeline.yml")) == "saved 1 step to pipeline.yml"
    assert dagnb.load(tmp_path / "pipeline.yml").run(cache=False).result("load") == [0, 3, 6, 9]


def test_save_outside_a_notebook_names_the_step_and_the_name(tmp_path):
    namespace: dict = {}
    exec("def calc():\n    return scale(2)\n", namespace)
    graph = dagnb.Graph("g", [dagnb.Step("calc", func=namespace["calc"])], base_dir=tmp_path)
    with pytest.raises(WorkflowError, match=r"^step 'calc': calc\(\) reads 'scale', which is "
                                            r"not defined \(nor a builtin\)"):
        graph.to_yaml(tmp_path / "g.yml")
    assert list(tmp_path.iterdir()) == []


def test_builtins_and_display_are_no_missing_names(shell, tmp_path):
    cell(shell, "shows --python --outputs n --define-only",
         "n = len(sorted({1, 2}))\nprint(n)\ndisplay(n)\n")
    assert str(save(shell, "pipeline.yml")) == "saved 1 step to pipeline.yml"
    assert "from IPython.display import display" in (tmp_path / "pipeline_steps.py").read_text()


@pytest.mark.slow
def test_save_in_a_fresh_kernel_that_read_its_notebook_names_the_cell_to_run(tmp_path):
    """The QA's case: a kernel that knows its notebook (JupyterLab's) restarted, runs only
    ``%load_ext dagnb`` (which defines ``load`` from the file) and ``%dagger save``."""
    cells = ["%load_ext dagnb", HELPERS, LOAD, "%dagger save pipeline.yml"]
    write_notebook(tmp_path / "nb14.ipynb", cells)
    env = {"DAGNB_WIDGETS": "0", "DAGNB_CONFIG": "none",
           "JPY_SESSION_NAME": str(tmp_path / "nb14.ipynb")}
    with started_kernel(tmp_path, env) as client:
        kernel = LiveKernel(client)
        kernel.run(cells[0])
        outputs = kernel.run(cells[3])
    stderr = "".join(o.get("text", "") for o in outputs if o.get("name") == "stderr")
    assert stderr.partition("UsageError: ")[2].strip() == (
        "cannot save pipeline.yml: step 'load' reads notebook variable `scale`, not defined "
        "in this kernel yet; run cell 2 of nb14.ipynb first"), outputs
    assert files(tmp_path) == {"nb14.ipynb"}


# -- 4. a saved Python step keeps the folder `dagnb run` starts in ----------------------------
def test_save_into_another_folder_says_where_a_python_step_reads_its_paths(shell, tmp_path):
    """In-process, a Python step is not moved to its ``workdir: ..``: run from the YAML's
    folder, its ``open('data.txt')`` failed where the shell step's ``cat`` worked."""
    (tmp_path / "workflows").mkdir()
    cell(shell, "sh --define-only", "cat data.txt\n")
    cell(shell, "py --python --outputs text --define-only", "text = open('data.txt').read()\n")
    with pytest.warns(UserWarning, match=r"^'workflows/pipeline.yml': a Python step runs in the "
                                         r"folder `dagnb run` starts in, not in its workdir .*"
                                         r"so a relative path in the code of 'py' "
                                         r"\('data.txt'\) is read from "
                                         rf"there; start the run in '{tmp_path}'"):
        save(shell, "workflows/pipeline.yml")
    saved = dagnb.load(tmp_path / "workflows" / "pipeline.yml")
    assert saved["sh"].workdir == saved["py"].workdir == ".."  # (dask's worker is moved there)


def test_save_beside_the_notebook_says_nothing_of_folders(shell, tmp_path, recwarn):
    cell(shell, "py --python --outputs text --define-only", "text = open('data.txt').read()\n")
    assert str(save(shell, "pipeline.yml")) == "saved 1 step to pipeline.yml"
    assert not [w for w in recwarn if "workdir" in str(w.message)]
