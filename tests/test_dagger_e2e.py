"""The example workflow on the Dagger executor, end to end, against the stub engine.

The stub (tests/dagger_stub) answers the real dagger-io client and runs each exec on this
machine, so a Dagger run and a local run of the same workflow must agree: states, exit
codes, attempts, log lines and output files. Runs go through ``graph.run`` and the
``dagnb`` CLI in a subprocess.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from dagger_stub.queries import exec_calls_of, uploads
from dagger_stub.server import StubServer

import dagnb
from dagnb import Step
from dagnb.testing import isolated

# The stub engine fixtures (stub, dagger_stub); see dagger_stub/fixtures.py.
pytest_plugins = ["dagger_stub.fixtures"]

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "example_workflow.yml"
STEPS = ["generate", "total", "largest", "histogram", "report"]
STATUS = ["step", "state", "exit_code", "attempts"]
ENGINE_VARIABLES = ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN", "_EXPERIMENTAL_DAGGER_CLI_BIN")


pytestmark = pytest.mark.usefixtures("workdir")


def log_rows(run: dagnb.Run) -> list[list[Any]]:
    """(step, attempt, stream, line) sorted by step, in order within a step."""
    frame = run.logs()[["step", "attempt", "stream", "line"]]
    return frame.sort_values("step", kind="stable").values.tolist()


def report(run: dagnb.Run) -> str:
    return (run.outputs("report") / "report.md").read_text()


def without_engine(environ: dict[str, str]) -> dict[str, str]:
    """The environment with no Dagger session, CLI variable or dagger CLI on PATH."""
    env = {k: v for k, v in environ.items() if k not in ENGINE_VARIABLES}
    path = env.get("PATH", os.defpath).split(os.pathsep)
    env["PATH"] = os.pathsep.join(p for p in path if not shutil.which("dagger", path=p))
    return env


# -- in process: graph.run ---------------------------------------------------------------


@pytest.fixture(scope="module")
def example_runs(dagger_stub: StubServer, tmp_path_factory) -> SimpleNamespace:
    """The example workflow run once locally and once on the stub, without the cache."""
    root = tmp_path_factory.mktemp("example")
    graph = dagnb.load(WORKFLOW)
    with pytest.MonkeyPatch.context() as patch, isolated():
        patch.delenv("_EXPERIMENTAL_DAGGER_CLI_BIN", raising=False)
        for key, value in dagger_stub.env().items():
            patch.setenv(key, value)
        local = graph.run(executor="local", cache=False, cache_directory=root / "local")
        dagger_stub.reset()
        remote = graph.run(executor="dagger", cache=False, cache_directory=root / "dagger")
        texts = dagger_stub.texts()
    return SimpleNamespace(local=local, dagger=remote, texts=texts)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagger_run_matches_the_local_run(example_runs):
    local, remote = example_runs.local, example_runs.dagger
    assert remote.ok, remote.status()
    assert remote.status()[STATUS].equals(local.status()[STATUS])
    assert remote.status()["step"].tolist() == STEPS
    assert set(remote.status()["executor"]) == {"dagger"}
    assert log_rows(remote) == log_rows(local)
    assert "wrote 1000 numbers" in remote.logs("generate")["line"].tolist()
    assert report(remote) == report(local)
    assert report(remote).startswith("# Report\ntotal:")


def test_upstream_outputs_pass_container_to_container(example_runs, dagger_stub):
    chain = exec_calls_of(example_runs.texts, "report")
    mounts = {
        args["path"]: args["source"] for name, args in chain if name == "withMountedDirectory"
    }
    assert sorted(mounts) == ["/dagnb/in/histogram", "/dagnb/in/largest", "/dagnb/in/total"]
    for upstream, source in mounts.items():
        kind, state = dagger_stub.engine.describe(source)
        assert kind == "Directory" and state["path"] == "/dagnb/out", (upstream, state)
        maker = dict(exec_calls_of(example_runs.texts, upstream.rsplit("/", 1)[1]))
        assert (
            dagger_stub.engine.describe(state["ctr"])[1]["exec"]["args"]
            == maker["withExec"]["args"]
        )  # the upstream step's own container
    assert uploads(example_runs.texts) == []  # nothing went through the host
    workspace = str(example_runs.dagger.workspace)
    assert not [text for text in example_runs.texts if workspace in text and "export" not in text]


def test_dropped_connection_is_retried(stub):
    async def no_wait(seconds: float) -> None:
        return None

    # The SDK tries a query twice (connection._config); both drops fail attempt 1.
    stub.fail("drop", match="withExec", times=2)
    graph = dagnb.Graph("drop", [Step("hello", run="echo hello")])
    run = graph.run(executor="dagger", cache=False, sleep=no_wait)

    status = run.status().iloc[0]
    assert (status["state"], status["attempts"]) == ("succeeded", 2)
    retrying = [e for e in run.events if e.kind == "state" and e.data["state"] == "retrying"]
    assert len(retrying) == 1 and retrying[0].attempt == 1
    assert "lost the Dagger engine" in retrying[0].data["error"]
    assert run.logs("hello")[["attempt", "line"]].values.tolist() == [[2, "hello"]]


def _variables(stub, step: str) -> dict[str, list[str]]:
    """Names set on step's exec, by how: withEnvVariable or withVolatileVariable."""
    chain = exec_calls_of(stub.texts(), step)
    return {how: [args["name"] for name, args in chain if name == how]
            for how in ("withEnvVariable", "withVolatileVariable")}


def test_a_rerun_without_dagnbs_cache_is_served_by_the_engine_cache(stub, tmp_path):
    graph = dagnb.Graph("again", [Step("hello", run="echo hello")])
    first = graph.run(executor="dagger", cache_directory=tmp_path / "one")
    second = graph.run(executor="dagger", cache_directory=tmp_path / "two")
    assert first.states() == second.states() == {"hello": "succeeded"}
    assert second.logs("hello")["line"].tolist() == ["hello"]
    assert len(stub.engine.exec_log) == 1  # the second run's exec came from the engine's cache
    assert stub.engine.exec_log[0]["volatile"]["DAGNB_RUN_ID"] == first.id
    names = _variables(stub, "hello")
    assert names["withVolatileVariable"] == ["DAGNB_RUN_ID"]
    assert "DAGNB_RUN_ID" not in names["withEnvVariable"]
    assert "DAGNB_ATTEMPT" in names["withEnvVariable"]  # 1: the same for every first attempt


@pytest.mark.parametrize("how", ["cache=False", "refresh", "cache off"])
def test_a_step_run_again_on_purpose_is_not_served_by_the_engine_cache(stub, tmp_path, how):
    # A step that fetches what changes outside its key (an API, a database) is marked
    # cache=False or refreshed to get it anew: the engine's exec cache must not hand
    # back the first run's output as if the step had run.
    step = Step("fetch", run='cat "$SOURCE" > "$DAGNB_OUT/prices.csv"',
                env={"SOURCE": str(tmp_path / "prices.csv")}, cache=how != "cache=False")
    graph = dagnb.Graph("fetch", [step])
    options = ({"refresh": True} if how == "refresh"
               else {"cache_mode": "off"} if how == "cache off" else {})
    prices = []
    for day in ("monday", "tuesday"):
        (tmp_path / "prices.csv").write_text(day)
        run = graph.run(executor="dagger", cache_directory=tmp_path / "cache", **options)
        assert run.states() == {"fetch": "succeeded"}
        prices.append((run.outputs("fetch") / "prices.csv").read_text())
    assert prices == ["monday", "tuesday"]
    assert len(stub.engine.exec_log) == 2
    names = _variables(stub, "fetch")
    assert "DAGNB_RUN_ID" in names["withEnvVariable"]  # the run id keys the exec
    assert names["withVolatileVariable"] == []


def _fetch(source: Path, **options: Any) -> Step:
    """A step whose output changes outside its key (what ``source`` holds)."""
    return Step("fetch", run='cat "$SOURCE" > "$DAGNB_OUT/prices.csv"',
                env={"SOURCE": str(source)}, **options)


def _prices(run: dagnb.Run) -> str:
    assert run.states() == {"fetch": "succeeded"}
    return (run.outputs("fetch") / "prices.csv").read_text()


@pytest.mark.parametrize("why", ["ttl expired", "cache_version", "key_fn", "session"])
def test_a_step_dagnbs_key_misses_really_runs_again(stub, tmp_path, why):
    # dagnb runs the step again (its entry expired, a new cache_version or key_fn value,
    # a cache="session" step in a new process): the engine's exec cache, which outlives
    # both, must not hand back the first run's output under the new entry.
    source, cache, knob = tmp_path / "prices.csv", tmp_path / "cache", {"v": "1"}
    options: dict[str, Any] = {
        "ttl expired": {"ttl": 0.001}, "key_fn": {"key_fn": lambda step: knob["v"]},
        "session": {"cache": "session"}}.get(why, {})
    prices = []
    for day in ("monday", "tuesday"):
        source.write_text(day)
        version = knob["v"] if why == "cache_version" else ""
        graph = dagnb.Graph("fetch", [_fetch(source, cache_version=version, **options)])
        with isolated(cache_directory=cache):  # (a new process: no session store kept)
            prices.append(_prices(graph.run(executor="dagger")))
        knob["v"] = "2"
        time.sleep(0.01)  # past the 1 ms ttl, however fast the run ended
    assert prices == ["monday", "tuesday"]
    assert len(stub.engine.exec_log) == 2
    assert "DAGNB_KEY" in _variables(stub, "fetch")["withEnvVariable"]


def test_an_unchanged_step_hits_dagnbs_cache_then_the_engines_once_it_is_cleared(
        stub, tmp_path):
    source, cache = tmp_path / "prices.csv", tmp_path / "cache"
    source.write_text("monday")
    graph, states, prices = dagnb.Graph("fetch", [_fetch(source)]), [], []
    for _ in range(2):
        run = graph.run(executor="dagger", cache_directory=cache)
        states.append(run.states()["fetch"])
        prices.append((run.outputs("fetch") / "prices.csv").read_text())
        source.write_text("tuesday")  # unseen: nothing in the step's key changed
    shutil.rmtree(cache)
    prices.append(_prices(graph.run(executor="dagger", cache_directory=cache)))
    assert states == ["succeeded", "cached"]
    assert prices == ["monday"] * 3  # dagnb ran it again: the engine's exec cache served it
    assert len(stub.engine.exec_log) == 1


def test_a_rotated_secret_reaches_a_step_that_runs_every_time(stub, tmp_path, monkeypatch):
    # The engine keys a secret by its name alone: a new value under the same name is
    # the same exec, so only the run id keying it makes the step use the new value.
    step = Step("whoami", run='echo "${TOKEN%%-*}" > "$DAGNB_OUT/user"', secrets=["TOKEN"],
                cache=False)
    users = []
    for token in ("alice-0123456789", "bob-9876543210"):
        monkeypatch.setenv("TOKEN", token)
        run = dagnb.Graph("who", [step]).run(executor="dagger",
                                             cache_directory=tmp_path / "cache")
        users.append((run.outputs("whoami") / "user").read_text().strip())
    assert users == ["alice", "bob"]


def _peek_token() -> str:
    return os.environ["TOKEN"]


@pytest.mark.parametrize("mode", ["read-write", "off"])
def test_an_unstored_result_holding_a_secret_is_not_staged_for_a_container(
        stub, tmp_path, monkeypatch, mode):
    """The run warns that the steps reading it as a file do not get it: a container's
    did, staged into a host folder and uploaded to the engine (whose cache keeps it)."""
    monkeypatch.setenv("TOKEN", "zz-TOPSECRET-42-abcdef")
    graph = dagnb.Graph("peek", [
        Step("up", func=_peek_token, secrets=["TOKEN"], executor="local"),
        Step("b", run='ls "$DAGNB_IN/up/"; echo listed', needs=["up"])])
    with pytest.warns(UserWarning, match=r"'up': its result holds the value of secret "
                                          r"'TOKEN', so the steps that read it as a file"):
        run = graph.run(executor="dagger", cache_directory=tmp_path / "cache",
                        cache_mode=mode)
    assert run.states() == {"up": "succeeded", "b": "succeeded"}, run.status()
    assert run.logs("b", stream="stdout")["line"].tolist() == ["listed"]


def test_an_engine_without_volatile_variables_gets_neither(stub, tmp_path):
    from dagnb.executors.dagger import connection
    from dagnb.executors.loop import run_sync

    run_sync(connection.aclose())  # the version is asked once per session
    stub.engine.version = "v0.21.3"
    graph = dagnb.Graph("old", [Step("hello", run='echo "${DAGNB_RUN_ID:-none}"')])
    runs = [graph.run(executor="dagger", cache_directory=tmp_path / n) for n in ("a", "b")]
    assert [r.logs("hello")["line"].tolist() for r in runs] == [["none"], ["none"]]
    assert len(stub.engine.exec_log) == 1
    assert _variables(stub, "hello")["withVolatileVariable"] == []
    assert "DAGNB_RUN_ID" not in _variables(stub, "hello")["withEnvVariable"]
    run_sync(connection.aclose())


def test_a_failed_exec_is_not_cached_and_its_retry_runs_again(stub, tmp_path):
    flaky = ('test -e "$MARK" || { touch "$MARK"; echo first >&2; exit 3; }; '
             'echo "second $DAGNB_ATTEMPT"')
    step = Step("flaky", run=flaky, env={"MARK": str(tmp_path / "mark")}, retries=1)

    async def no_wait(seconds: float) -> None:
        return None

    run = dagnb.Graph("flaky", [step]).run(executor="dagger", cache=False, sleep=no_wait)
    status = run.status().iloc[0]
    assert (status["state"], status["attempts"]) == ("succeeded", 2), run.status()
    assert [e["exit_code"] for e in stub.engine.exec_log] == [3, 0]  # both really ran
    assert run.logs("flaky")[["attempt", "line"]].values.tolist() == [[1, "first"],
                                                                      [2, "second 2"]]
    [expect] = {args.get("expect") for name, args in exec_calls_of(stub.texts(), "flaky")
                if name == "withExec"}
    assert expect is None  # the default, SUCCESS: a failure is an error, shown as one


def test_a_step_timeout_stops_the_exec(stub):
    dagnb.Graph("warm", [Step("warm", run="true")]).run(executor="dagger", cache=False)
    graph = dagnb.Graph("slow", [Step("slow", run="sleep 3; echo done", timeout=0.7,
                                      retries=0)])
    started = time.monotonic()
    run = graph.run(executor="dagger", cache=False)
    assert time.monotonic() - started < 1.5  # the run's own bookkeeping included
    assert run.states() == {"slow": "failed"}
    assert "ran past its timeout of 0.7 s" in run.status().iloc[0]["error"]
    deadline = time.monotonic() + 3
    while not stub.engine.exec_log[-1].get("cancelled") and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stub.engine.exec_log[-1].get("cancelled")  # the exec was killed, not left running


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_eight_independent_steps_are_in_flight_at_once(stub, tmp_path):
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    # Each step waits (at most 10 s) until all eight have started: only steps that run at
    # the same time can pass, so the stub must see eight execs at once.
    wait = (
        'touch "$BARRIER/$DAGNB_STEP"; i=0; '
        'while [ "$(ls "$BARRIER" | wc -l)" -lt 8 ] && [ $i -lt 200 ]; '
        'do sleep 0.05; i=$((i+1)); done; ls "$BARRIER" | wc -l'
    )
    steps = [Step(f"s{n}", run=wait, env={"BARRIER": str(barrier)}) for n in range(8)]
    run = dagnb.Graph("fan", steps).run(executor="dagger", cache=False, max_concurrency=8)

    assert run.ok, run.status()
    assert stub.engine.max_active_execs == 8
    assert set(run.logs()["line"].str.strip()) == {"8"}


# -- the CLI -----------------------------------------------------------------------------


def cli(*args: str, env: dict[str, str], cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "dagnb.cli", "run", str(WORKFLOW), *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def table(output: str) -> list[list[str]]:
    """The printed status table's step, state, cached, attempts and exit_code columns."""
    lines = output.splitlines()
    start = next(i for i, line in enumerate(lines) if line.split()[:2] == ["step", "state"])
    return [line.split()[:5] for line in lines[start + 1 : start + 1 + len(STEPS)]]


@pytest.fixture(scope="module")
def cli_runs(tmp_path_factory) -> SimpleNamespace:
    """``dagnb run`` locally and on a stub of its own, which is stopped afterwards."""
    root = tmp_path_factory.mktemp("cli")
    server = StubServer().start()
    try:
        env = {**without_engine(dict(os.environ)), **server.env()}
        local = cli("--executor", "local", "--cache-dir", str(root / "local"), env=env, cwd=root)
        remote = cli("--executor", "dagger", "--cache-dir", str(root / "dagger"), env=env, cwd=root)
        execs = len(server.engine.exec_log)
    finally:
        server.stop()
    return SimpleNamespace(root=root, local=local, dagger=remote, execs=execs)


@pytest.mark.slow  # several seconds: on CI's main leg only
def test_cli_runs_the_example_workflow_on_dagger(cli_runs, example_runs):
    local, remote = cli_runs.local, cli_runs.dagger
    assert remote.returncode == 0, remote.stdout + remote.stderr
    assert cli_runs.execs == len(STEPS)
    assert table(remote.stdout) == table(local.stdout)
    assert [r[:2] for r in table(remote.stdout)] == [[s, "succeeded"] for s in STEPS]
    assert "5 succeeded" in remote.stdout
    # The logs the CLI's Dagger run stored are the lines of a local run (replayed by a
    # Dagger run: a container's entries are not a host run's, and it needs no engine).
    replay = dagnb.load(WORKFLOW).run(executor="dagger", cache_directory=cli_runs.root / "dagger")
    assert set(replay.states().values()) == {"cached"}
    assert log_rows(replay) == log_rows(example_runs.local)
    assert report(replay) == report(example_runs.local)


def test_cached_rerun_needs_no_engine(cli_runs, monkeypatch):
    env = without_engine(dict(os.environ))  # and the CLI's stub has been stopped
    again = cli(
        "--executor",
        "dagger",
        "--cache-dir",
        str(cli_runs.root / "dagger"),
        env=env,
        cwd=cli_runs.root,
    )
    assert again.returncode == 0, again.stdout + again.stderr
    assert [r[:3] for r in table(again.stdout)] == [[s, "cached", "True"] for s in STEPS]

    for key in ENGINE_VARIABLES:
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PATH", env["PATH"])
    run = dagnb.load(WORKFLOW).run(executor="dagger", cache_directory=cli_runs.root / "dagger")
    assert set(run.states().values()) == {"cached"}
