"""An argv step's ``$NAME`` items on the Dagger executor, through the real dagger-io
client and the stub engine: expanded from the container's environment (the contract's
container paths, params, env, the image's variables) before the exec is sent, as on
the local executor; a name not there, and a secret (whose value would travel in the
query), fail the step in one line before anything runs. The stub models the engine's
own ``expand`` (os.Expand: ``$$`` and an unknown name read as empty), which dagnb does
not use for that reason."""

from __future__ import annotations

import json

import pytest

from dagnb import Step
from dagnb.errors import StepFailed
from dagnb.executors.dagger.executor import DaggerExecutor
from dagnb.executors.loop import run_sync

pytest_plugins = ["dagger_stub.fixtures"]

TOKEN = "tok-QA-dagger-argv-61c2"


def _execute(task):
    return run_sync(DaggerExecutor().execute(task))


def test_items_expand_from_the_container_s_environment(stub, make_task, monkeypatch) -> None:
    monkeypatch.setenv("QA_HOST_ONLY", "host")  # (no variable of the container's)
    task = make_task(Step("e", params={"rows": 3}, env={"MODE": "fast"}, run=[
        "python3", "-c", "import sys, os; open(sys.argv[1] + '/args', 'w').write("
        "'|'.join(sys.argv[2:]))", "$DAGNB_OUT", "$DAGNB_PARAM_ROWS", "${MODE}-x",
        "$$QA_HOST_ONLY", "$DAGNB_IN/up"]))
    outcome = _execute(task)
    assert outcome.exit_code == 0
    assert (task.out_dir / "args").read_text() == "3|fast-x|$QA_HOST_ONLY|/dagnb/in/up"
    assert stub.engine.exec_log[-1]["args"][3:] == [
        "/dagnb/out", "3", "fast-x", "$QA_HOST_ONLY", "/dagnb/in/up"]


def test_an_image_variable_is_asked_of_the_engine(stub, make_task) -> None:
    task = make_task(Step("p", run=["sh", "-c", 'test "$$0" = "$$PATH"', "$PATH"]))
    assert _execute(task).exit_code == 0
    assert stub.texts("envVariable")  # (asked: dagnb does not set PATH in a container)


def test_a_name_the_container_has_not_fails_the_step_before_it_runs(
        stub, make_task, monkeypatch) -> None:
    monkeypatch.setenv("QA_HOST_ONLY", "host")  # the host's: not the container's
    with pytest.raises(StepFailed) as failed:
        _execute(make_task(Step("u", run=["echo", "$QA_HOST_ONLY"])))
    assert str(failed.value) == (
        "step 'u': run item 2 '$QA_HOST_ONLY' reads $QA_HOST_ONLY, which is not in the "
        "step's environment; set it (the step's env, secrets, or the image's variables), "
        "or write $$QA_HOST_ONLY for the text as it is")
    assert not stub.texts("withExec")


def test_a_secret_is_refused_and_its_value_sent_nowhere(stub, make_task) -> None:
    task = make_task(Step("s", secrets=["QA_TOKEN"], run=["curl", "-H", "X: $QA_TOKEN"]),
                     secrets={"QA_TOKEN": TOKEN})
    with pytest.raises(StepFailed) as failed:
        _execute(task)
    assert str(failed.value).startswith(
        "step 's': run item 3 'X: $QA_TOKEN' reads $QA_TOKEN, which is a secret: the dagger "
        "executor does not put one into a command's arguments")
    assert not stub.texts("withExec")
    assert not [q for q in stub.queries
                if TOKEN in q.query + json.dumps(q.variables) and "setSecret" not in q.query]


def test_the_stub_expands_as_the_engine_does(stub) -> None:
    """v0.21.8 core/container.go ExpandContainerInput: os.Expand over the plain
    variables; ``$$`` and a name not set read as empty, a secret's name is an error."""
    from dagger_stub.resolvers import go_expand

    from dagnb.executors.dagger import connection

    assert go_expand("$A/${A}-$$-$NOPE-end$", {"A": "x"}.get) == "x/x---end$"

    async def asked(secret: bool) -> str:
        dag = await connection.client()
        ctr = dag.container().from_("alpine").with_env_variable("A", "x")
        if secret:
            ctr = ctr.with_secret_variable("S", dag.set_secret("s", TOKEN))
        return await ctr.with_exec(["echo", "$A-$$-$NOPE-${S}"], expand=True).stdout()

    assert run_sync(asked(False)) == "x---\n"
    with pytest.raises(Exception, match="expand cannot be used with secret env variable"):
        run_sync(asked(True))
