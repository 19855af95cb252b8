"""The Dagger executor's second QA pass (/tmp/hunt-dagger2): a shipped global holding a
secret the step does not declare, ``dagnb.current()`` in a container, registry
credentials of another registry, and the 'auto' notice without the SDK. Through the
real dagger-io client and the stub engine."""

from __future__ import annotations

import ast
import json
import sys
from pathlib import Path

import pytest

import dagnb
from dagnb import Graph, Step, current
from dagnb.errors import InvalidStepError, SecretError
from dagnb.executors import get_executor
from dagnb.executors.dagger import shim
from dagnb.executors.dagger.executor import DaggerExecutor
from dagnb.executors.dagger.translate import RegistryAuth, image_registry
from dagnb.executors.loop import run_sync
from dagnb.notebook.cells import cell_function
from dagnb.testing import isolated

pytest_plugins = ["dagger_stub.fixtures"]

TOKEN = "tok-LEAKME-778899"
HEADERS = {"Authorization": "Bearer " + TOKEN}  # (a notebook's, built from os.environ)
REGISTRY_PASSWORD = "reg-Pa55word-4711"
DSN = f"postgresql://app:{REGISTRY_PASSWORD}@db/app"


def run(executor: DaggerExecutor, task):
    return run_sync(executor.execute(task))


def _plaintext_queries(stub, value: str) -> list[str]:
    return [q.query + json.dumps(q.variables) for q in stub.queries
            if value in q.query or value in json.dumps(q.variables)]


# -- a shipped global holding a secret the step does not declare ----------------------


def reads_headers():
    return len(HEADERS["Authorization"])


def reads_the_dsn():
    return DSN.split("@")[1]


def test_a_global_holding_another_step_s_secret_is_refused_without_its_value(
        stub, make_task, monkeypatch):
    """Before, only the step's own secrets were looked for: HEADERS went to the engine
    in the exec's query, with the value of a secret another step declares."""
    monkeypatch.setenv("QA_API_TOKEN", TOKEN)
    task = make_task(Step("other", func=reads_headers))
    task.withheld = frozenset({"QA_API_TOKEN"})  # (the runner's: another step declares it)
    with pytest.raises(InvalidStepError, match=(
            r"^step 'other': global 'HEADERS' holds the value of secret 'QA_API_TOKEN', "
            r"which would reach the container in plain text; read "
            r"os.environ\['QA_API_TOKEN'\] inside the function instead, with "
            r"'QA_API_TOKEN' among the step's secrets$")) as caught:
        run(DaggerExecutor(), task)
    assert TOKEN not in str(caught.value)
    assert not stub.texts("withExec")  # nothing ran
    assert _plaintext_queries(stub, TOKEN) == []


def test_a_global_holding_a_registry_password_is_refused(stub, make_task, monkeypatch):
    monkeypatch.setenv("QA_REG_PASSWORD", REGISTRY_PASSWORD)
    executor = DaggerExecutor(registry_auth={"address": "ghcr.io", "username": "me",
                                             "password_env": "QA_REG_PASSWORD"})
    with pytest.raises(InvalidStepError, match=(
            r"^step 'dsn': global 'DSN' holds the value of secret 'QA_REG_PASSWORD'")) as caught:
        run(executor, make_task(Step("dsn", func=reads_the_dsn)))
    assert REGISTRY_PASSWORD not in str(caught.value)
    assert _plaintext_queries(stub, REGISTRY_PASSWORD) == []


def test_a_graph_step_reading_another_step_s_secret_through_a_global_is_refused(
        stub, tmp_path, monkeypatch):
    monkeypatch.setenv("QA_API_TOKEN", TOKEN)
    graph = Graph("g", [Step("other", func=reads_headers),
                        Step("declares", run='test -n "$QA_API_TOKEN"',
                             secrets=["QA_API_TOKEN"])], base_dir=tmp_path)
    done = graph.run(executor="dagger", cache=False, raise_on_failure=False)
    assert done.states() == {"other": "failed", "declares": "succeeded"}
    assert "global 'HEADERS' holds the value of secret 'QA_API_TOKEN'" in (
        done.status_rows()["other"]["error"])
    assert [q for q in _plaintext_queries(stub, TOKEN) if "setSecret" not in q] == []


# -- dagnb.current() in a container ----------------------------------------------------


def upstream():
    return 1


def reads_the_context(up, n):
    import dagnb

    here = dagnb.current()
    (here.out_dir / "note.txt").write_text("written")
    try:
        here.params["n"] = 0
        writable = True
    except TypeError:
        writable = False
    return {"n": here.params["n"], "step": here.step, "attempt": here.attempt,
            "inputs": sorted(here.inputs), "input": type(here.inputs["up"]).__name__,
            "params_writable": writable, "repr": repr(here)}


def test_dagnb_current_answers_in_a_container_as_on_this_machine(stub, tmp_path):
    """Before: ModuleNotFoundError: No module named 'dagnb', in every Dagger step."""
    graph = Graph("g", [Step("up", func=upstream),
                        Step("ctx", func=reads_the_context, needs=["up"], params={"n": 21})],
                 base_dir=tmp_path)
    found = {}
    for executor in ("local", "dagger"):
        done = graph.run(executor=executor, cache=False, raise_on_failure=False)
        assert done.states() == {"up": "succeeded", "ctx": "succeeded"}, (
            done.status_rows()["ctx"]["error"])
        found[executor] = done.result("ctx")
        assert (Path(done.outputs("ctx")) / "note.txt").read_text() == "written"
    assert found["dagger"] == found["local"] == {
        "n": 21, "step": "ctx", "attempt": 1, "inputs": ["up"], "input": "PosixPath",
        "params_writable": False, "repr": "<StepContext 'ctx' attempt 1>"}


def reads_through_the_module_global(n):
    return dagnb.current().params["n"] * 2


def reads_through_the_function_global():
    return current().step


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_current_as_a_global_of_the_step_s_module(stub, tmp_path):
    graph = Graph("g", [Step("mod", func=reads_through_the_module_global, params={"n": 4}),
                        Step("fn", func=reads_through_the_function_global)],
                  base_dir=tmp_path)
    done = graph.run(executor="dagger", cache=False, raise_on_failure=False)
    assert done.states() == {"mod": "succeeded", "fn": "succeeded"}, done.status()
    assert (done.result("mod"), done.result("fn")) == (8, "fn")


def asks_for_more_of_dagnb():
    return dagnb.Graph


def imports_more_of_dagnb():
    from dagnb import Graph

    return Graph


@pytest.mark.parametrize("func", [asks_for_more_of_dagnb, imports_more_of_dagnb])
def test_the_rest_of_dagnb_in_a_container_says_to_install_it_in_the_image(
        stub, tmp_path, func):
    done = Graph("g", [Step("more", func=func)], base_dir=tmp_path).run(
        executor="dagger", cache=False, raise_on_failure=False)
    error = done.status_rows()["more"]["error"]
    assert "only dagnb.current() is available inside a container; install dagnb in the " \
           "image to use " in error, error
    assert "\n" not in error


def says_whose_dagnb():
    import dagnb

    return dagnb.current()


def test_an_image_s_own_dagnb_wins_over_the_stand_in(stub, tmp_path):
    (tmp_path / "site" / "dagnb").mkdir(parents=True)
    (tmp_path / "site" / "dagnb" / "__init__.py").write_text(
        "def current():\n    return \"the image's\"\n")
    step = Step("whose", func=says_whose_dagnb, mounts={"site": "/opt/site"},
                env={"PYTHONPATH": "/opt/site"})
    done = Graph("g", [step], base_dir=tmp_path).run(executor="dagger", cache=False,
                                                     raise_on_failure=False)
    assert done.states() == {"whose": "succeeded"}, done.status_rows()["whose"]["error"]
    assert done.result("whose") == "the image's"


def plain(n):
    return n + 1


def test_a_step_that_names_no_dagnb_gets_no_stand_in():
    """Its files, and so its exec's cache key in the engine, are not changed by it; nor
    a --python cell's, whose last value dagnb's display function shows."""
    cell = cell_function("s", "x = 2\nx * 21\n", [], ["x"], {})
    for step in (Step("plain", func=plain), Step("s", func=cell)):
        files = shim.python_files(step, [])
        assert not [path for path in files if path.startswith(shim.STANDIN_FOLDER)]
        assert "standin" not in _spec(files)
    with_it = shim.python_files(Step("ctx", func=reads_the_context), ["up"])
    assert f"{shim.STANDIN_FOLDER}/dagnb.py" in with_it
    assert _spec(with_it)["standin"] == shim.STANDIN_FOLDER


def _spec(files: dict[str, str]) -> dict:
    """The shim's SPEC: ``SPEC = json.loads('...')``."""
    line = next(line for line in files[shim.SHIM_PATH].splitlines()
                if line.startswith("SPEC = "))
    return json.loads(ast.literal_eval(line.removeprefix("SPEC = json.loads(")[:-1]))


def test_the_stand_in_runs_on_the_oldest_python_an_image_may_have(monkeypatch):
    """Python 3.7: no walrus, no positional-only parameters, no ``list[str]`` at run time."""
    from dagnb.executors.dagger import standin

    source = Path(standin.__file__).read_text()
    ast.parse(source, feature_version=(3, 7))
    namespace: dict = {"__name__": "dagnb"}
    exec(compile(source, "dagnb.py", "exec"), namespace)
    monkeypatch.delenv("DAGNB_STEP", raising=False)
    with pytest.raises(RuntimeError, match="only available inside a running Python step"):
        namespace["current"]()


# -- registry credentials of another registry -----------------------------------------


@pytest.mark.parametrize(("image", "registry"), [
    ("alpine:3.20", "docker.io"),
    ("library/python:3.12-slim", "docker.io"),
    ("someone/tool:1", "docker.io"),
    ("docker.io/library/alpine:3.20", "docker.io"),
    ("index.docker.io/library/alpine", "docker.io"),
    ("ghcr.io/org/app:1", "ghcr.io"),
    ("GHCR.io/org/app@sha256:" + "0" * 64, "ghcr.io"),
    ("localhost/app", "localhost"),
    ("localhost:5000/app:1", "localhost:5000"),
    ("registry.example.com:8443/team/app", "registry.example.com:8443"),
])
def test_the_registry_an_image_is_pulled_from(image, registry):
    assert image_registry(image) == registry


def test_credentials_serve_their_own_registry_only():
    ghcr = RegistryAuth("https://ghcr.io/org", "me", "GHCR_TOKEN", "token_env")
    assert ghcr.serves("ghcr.io/org/app:1") and not ghcr.serves("alpine:3.20")
    assert RegistryAuth("index.docker.io", "me", "HUB").serves("alpine:3.20")


def test_a_docker_hub_image_needs_no_token_of_another_registry(stub, make_task,
                                                                monkeypatch):
    """Before, every container step failed while GHCR_TOKEN was unset."""
    monkeypatch.delenv("QA_GHCR_TOKEN", raising=False)
    executor = DaggerExecutor(registry_auth={"address": "ghcr.io", "username": "me",
                                             "token_env": "QA_GHCR_TOKEN"})
    task = make_task(Step("pub", run="echo hi", image="alpine:3.20"))
    assert run(executor, task).exit_code == 0
    assert not stub.texts("withRegistryAuth")
    with pytest.raises(SecretError, match=(
            r"^container_credentials for 'ghcr.io': token_env names 'QA_GHCR_TOKEN', which "
            r"is not set in the environment; export it$")):
        run(executor, make_task(Step("private", run="true", image="ghcr.io/org/app:1")))
    monkeypatch.setenv("QA_GHCR_TOKEN", "ghcr-T0ken-value")
    run(executor, make_task(Step("private2", run="true", image="ghcr.io/org/app:1")))
    assert stub.texts("withRegistryAuth")


# -- executor 'auto' without the SDK ---------------------------------------------------


def test_auto_without_the_sdk_says_so_even_beside_an_engine(stub, monkeypatch, capsys):
    """Under ``dagger run`` without dagger-io, 'auto' said no engine was found."""
    monkeypatch.setitem(sys.modules, "dagger", None)  # (dagger-io not installed)
    with isolated():
        assert get_executor("auto").name == "local"
    assert capsys.readouterr().err.splitlines() == [
        "dagnb: the Dagger SDK is not installed (pip install 'dagnb[dagger]'); steps run "
        "on this machine"]
