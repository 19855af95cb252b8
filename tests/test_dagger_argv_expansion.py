"""An argv step's items on the Dagger executor, through the real dagger-io client and
the stub engine: dagnb's ``$DAGNB_...`` variables expanded with their container paths
and values before the exec is sent, as on the local executor, and everything else sent
as written (the engine's own ``expand``, os.Expand, would read ``$$`` and any name it
does not know as empty, which the stub models); a ``$DAGNB_`` name the step has not
fails it in one line before anything runs."""

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


def test_dagnb_s_items_expand_and_the_rest_is_sent_as_written(stub, make_task) -> None:
    task = make_task(Step("e", params={"rows": 3}, env={"MODE": "fast"},
                          secrets=["QA_TOKEN"], run=[
        "python3", "-c", "import sys, os; open(sys.argv[1] + '/args', 'w').write("
        "'|'.join(sys.argv[2:]))", "$DAGNB_OUT", "$DAGNB_PARAM_ROWS", "${MODE}-x",
        "$$", "$QA_TOKEN", "$DAGNB_IN/up"]), secrets={"QA_TOKEN": TOKEN})
    outcome = _execute(task)
    assert outcome.exit_code == 0
    assert (task.out_dir / "args").read_text() == "3|${MODE}-x|$$|$QA_TOKEN|/dagnb/in/up"
    assert stub.engine.exec_log[-1]["args"][3:] == [
        "/dagnb/out", "3", "${MODE}-x", "$$", "$QA_TOKEN", "/dagnb/in/up"]
    assert not [q for q in stub.queries  # (a secret's value travels as a secret alone)
                if TOKEN in q.query + json.dumps(q.variables) and "setSecret" not in q.query]


def test_a_dagnb_name_the_step_has_not_fails_it_before_it_runs(stub, make_task) -> None:
    with pytest.raises(StepFailed) as failed:
        _execute(make_task(Step("u", run=["echo", "$DAGNB_PARAM_ROWZ"], params={"rows": 1})))
    assert str(failed.value).startswith(
        "step 'u': run item 2 '$DAGNB_PARAM_ROWZ' reads $DAGNB_PARAM_ROWZ, which dagnb does "
        "not set for this step; check the name")
    assert not stub.texts("withExec")


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
