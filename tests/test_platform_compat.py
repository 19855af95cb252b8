"""The orchestration platform's config and pipeline files load as written (issue 15).

The files below are written from the platform's documented keys; dagnb reads them as its
own spelling (dagnb.config.aliases, dagnb.workflows.aliases) and runs the pipeline.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import dagnb
import dagnb.cache
from dagnb import Graph, RetryPolicy, Step, TransientError
from dagnb import config as dagnb_config
from dagnb.cli import main
from dagnb.errors import ConfigError, WorkflowError
from dagnb.executors.base import Availability, Outcome, Task
from dagnb.retry.breaker import breaker_for
from dagnb.workflows.loader import graph_to_dict, loads

PLATFORM_CONFIG = """\
executor: local
max_concurrent_executions: 4
container_registry: ghcr.io
container_credentials:
  username: me
  password_env: REGISTRY_PASSWORD
workflow_defaults:
  timeout_seconds: 600
  max_retries: 2
  retry_backoff_factor: 0.5
  retry_jitter: true
  enable_retry: true
  caching_enabled: true
  cache_ttl_seconds: 7d
"""

PLATFORM_PIPELINE = """\
name: platform
workflow_defaults:
  timeout_seconds: 120
steps:
  - name: step1
    command: echo hello > "$DAGNB_OUT/greeting.txt"
    container_image: python:3.12-slim
    environment:
      GREETING: hi
  - name: step2
    command: ["cat", "data/input.txt"]
    depends_on: [step1]
    volumes:
      - source: data
        target: /data
        read_only: true
    skip_cache: true
    enable_retry: false
    use_circuit_breaker: false
  - name: step3
    command: tr a-z A-Z < "$DAGNB_IN/step1/greeting.txt" > "$DAGNB_OUT/loud.txt"
    needs: [step1]
    max_retries: 3
    retry_jitter: false
"""


# Each test starts in an empty project folder with no DAGNB_* variables (and, as every
# test does, in a fresh context: its settings load on first use).
pytestmark = pytest.mark.usefixtures("project")


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def platform_files(tmp_path: Path) -> Path:
    write(tmp_path / "dagnb.yaml", PLATFORM_CONFIG)
    (tmp_path / "data").mkdir()
    write(tmp_path / "data" / "input.txt", "raw data\n")
    return write(tmp_path / "pipeline.yml", PLATFORM_PIPELINE)


# -- the config file --------------------------------------------------------------------


def test_platform_config_file_loads_in_dagnbs_spelling(tmp_path):
    platform_files(tmp_path)
    current = dagnb_config.reload()
    assert current.step_timeout_seconds == 600.0  # each step's limit, not the run's
    assert current.timeout_seconds is None
    assert current.retry_jitter == 0.1  # true: the default jitter
    assert current.cache_ttl_seconds == 7 * 86400
    assert dagnb_config.origins()["step_timeout_seconds"] == str(tmp_path / "dagnb.yaml")


@pytest.mark.parametrize(("given", "seconds"), [("true", 0.1), ("false", 0.0), ("0.25", 0.25)])
def test_config_jitter_is_a_switch_or_seconds_under_either_name(tmp_path, given, seconds):
    for key in ("retry_jitter", "jitter"):
        write(tmp_path / "dagnb.yaml", f"workflow_defaults: {{{key}: {given}}}\n")
        assert dagnb_config.reload().retry_jitter == seconds


def test_env_jitter_accepts_true_and_false(monkeypatch):
    monkeypatch.setenv("DAGNB_RETRY_JITTER", "false")
    assert dagnb_config.reload().retry_defaults()["jitter"] == 0.0


def test_config_show_prints_the_canonical_keys(tmp_path, capsys):
    platform_files(tmp_path)
    assert main(["config", "show"]) == 0
    out = capsys.readouterr().out
    assert "step_timeout_seconds" in out and "600.0" in out
    assert "retry_jitter" in out and " jitter " not in out


def test_config_refuses_both_spellings_of_one_key(tmp_path):
    write(tmp_path / "dagnb.yaml", "workflow_defaults: {jitter: 0.1, retry_jitter: 0.2}\n")
    with pytest.raises(ConfigError, match=r"'jitter' and 'retry_jitter' both set retry_jitter"):
        dagnb_config.reload()


def test_config_unknown_key_still_gets_did_you_mean(tmp_path):
    write(tmp_path / "dagnb.yaml", "workflow_defaults: {timeout_secnds: 10}\n")
    with pytest.raises(ConfigError, match=r"unknown key 'timeout_secnds'; did you mean"):
        dagnb_config.reload()


def test_config_still_refuses_a_plaintext_password(tmp_path):
    write(
        tmp_path / "dagnb.yaml",
        "container_credentials: {username: me, password: hunter2}\n",
    )
    with pytest.raises(ConfigError, match=r"container_credentials.password is refused.*"
                       r"password_env: VARIABLE_NAME") as caught:
        dagnb_config.reload()
    assert "hunter2" not in str(caught.value)


def test_config_bad_jitter_names_the_value(tmp_path):
    write(tmp_path / "dagnb.yaml", "workflow_defaults: {retry_jitter: maybe}\n")
    with pytest.raises(ConfigError, match=r"retry_jitter = 'maybe' is not valid; expected a "
                       r"number >= 0 \(seconds\), or true/false"):
        dagnb_config.reload()


# -- jitter in Python -------------------------------------------------------------------


def test_retry_policy_jitter_false_is_none_and_true_the_default():
    assert RetryPolicy(jitter=False).jitter == 0.0
    assert RetryPolicy(jitter=False).delay_bounds(1) == (0.5, 0.5)
    assert RetryPolicy(jitter=True) == RetryPolicy()
    assert RetryPolicy.from_value({"retry_jitter": False}).jitter == 0.0


def test_retry_decorator_takes_jitter_false():
    waits: list[float] = []
    calls: list[int] = []

    @dagnb.retry(max_retries=2, backoff_factor=0.5, jitter=False, sleep=waits.append)
    def flaky() -> str:
        calls.append(1)
        if len(calls) < 3:
            raise TransientError("blip")
        return "ok"

    assert flaky() == "ok"
    assert waits == [0.5, 1.0]  # exactly the backoff: no random part


def test_retry_decorator_jitter_true_adds_up_to_the_default():
    waits: list[float] = []

    @dagnb.retry(max_retries=1, backoff_factor=1, jitter=True, sleep=waits.append)
    def fails() -> None:
        raise TransientError("blip")

    with pytest.raises(TransientError):
        fails()
    assert 1.0 <= waits[0] <= 1.1


# -- the pipeline file ------------------------------------------------------------------


def test_platform_pipeline_loads_and_runs(tmp_path):
    path = platform_files(tmp_path)
    graph = Graph.from_yaml(path)
    assert list(graph.order()) == ["step1", "step2", "step3"]
    step1, step2, step3 = graph["step1"], graph["step2"], graph["step3"]
    assert step1.image == "python:3.12-slim" and dict(step1.env) == {"GREETING": "hi"}
    assert step1.timeout == 120.0  # workflow_defaults.timeout_seconds
    assert step2.run == ("cat", "data/input.txt") and step2.kind == "argv"
    assert step2.needs == ("step1",) and dict(step2.mounts) == {"data": "/data"}
    assert step2.cache is False and step2.circuit_breaker is False
    assert RetryPolicy.from_value(step2.retries) == RetryPolicy.disabled()
    assert step3.retries == {"max_retries": 3, "jitter": 0.0}

    run = graph.run(executor="local")
    assert run.states() == {"step1": "succeeded", "step2": "succeeded", "step3": "succeeded"}
    assert (run.outputs("step3") / "loud.txt").read_text() == "HELLO\n"
    assert "raw data" in "".join(run.logs("step2")["line"])


def test_round_trip_writes_dagnbs_spelling(tmp_path):
    graph = Graph.from_yaml(platform_files(tmp_path))
    text = graph.to_yaml()
    for platform_key in ("command", "container_image", "environment", "depends_on",
                         "volumes", "skip_cache", "use_circuit_breaker",
                         "retry_jitter", "workflow_defaults", "timeout_seconds"):
        assert platform_key not in text
    again = loads(text)
    assert graph_to_dict(again)["steps"] == graph_to_dict(graph)["steps"]
    assert "circuit_breaker: false" in text and "run:" in text
    assert "retries:\n      enable_retry: false" in text  # dagnb's own retries key


def test_validate_explain_prints_the_rewrites_and_canonical_yaml(tmp_path, capsys):
    path = platform_files(tmp_path)
    assert main(["validate", "--explain", str(path)]) == 0
    out = capsys.readouterr().out
    assert "# " + f"{path}: step 'step1': command -> run" in out
    assert "use_circuit_breaker: False -> circuit_breaker: False" in out
    body = "\n".join(line for line in out.splitlines() if not line.startswith("#"))
    assert "container_image" not in body and "image: python:3.12-slim" in body


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ("comand: 'true'", r"step 'a': unknown key 'comand'; did you mean 'command'\?"),
        ("run: 'true'\n    command: 'true'", r"step 'a': 'run' and 'command' both set 'run'"),
        ("command: 'true'\n    volumes: [{source: d, target: /d, read_only: false}]",
         r"volume 'd' has read_only: false, but dagnb mounts are read-only inputs"),
        ("command: 'true'\n    volumes: [{source: d, targt: /d}]",
         r"volume .* needs a 'source' \(host path\) and a 'target'"),
        ("command: 'true'\n    volumes: [{source: d, target: /d, mode: ro}]",
         r"unknown volume key 'mode'; known volume keys: source, target, read_only"),
        ("command: 'true'\n    skip_cache: yes please",
         r"skip_cache='yes please' is not valid; expected true or false"),
    ],
)
def test_platform_keys_are_checked_with_one_line_errors(fields, message):
    with pytest.raises(WorkflowError, match=message):
        loads(f"steps:\n  - name: a\n    {fields}\n")


def test_jitter_in_a_yaml_retries_mapping_is_a_switch_or_seconds():
    graph = loads(
        "steps:\n"
        "  a: {run: 'true', retries: {max_retries: 1, retry_jitter: true}}\n"
        "  b: {run: 'true', retries: {jitter: false}}\n"
        "  c: {run: 'true', jitter: 0.3}\n"
    )
    assert graph["a"].retries == {"max_retries": 1, "jitter": 0.1}
    assert graph["b"].retries == {"jitter": 0.0}
    assert graph["c"].retries == {"jitter": 0.3}


def test_default_switches_say_nothing():
    graph = loads(
        "steps:\n  - {name: a, command: 'true', skip_cache: false, enable_retry: true,"
        " use_circuit_breaker: true}\n"
    )
    assert graph["a"] == Step("a", run="true")


# -- the step time limit from the config ------------------------------------------------


def test_workflow_defaults_timeout_limits_steps_without_their_own(tmp_path):
    write(tmp_path / "dagnb.yaml", "workflow_defaults: {timeout_seconds: 0.3}\n")
    dagnb_config.reload()
    graph = Graph("limits", [Step("slow", run="sleep 5"),
                             Step("own", run="sleep 0.6", timeout=10)])
    run = graph.run(executor="local", cache=False)
    assert run.states() == {"slow": "failed", "own": "succeeded"}
    error = run.status().set_index("step").loc["slow", "error"]
    assert "ran past its timeout of 0.3 s" in error


# -- per-execution switches -------------------------------------------------------------


class Sleeps(list):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def attempts(run: dagnb.Run, step: str) -> int:
    return int(run.status().set_index("step").loc[step, "attempts"])


def test_run_enable_retry_false_retries_no_step():
    step = Step("a", run="exit 3", retries=3)
    graph = Graph("switches", [step])
    assert attempts(graph.run(executor="local", cache=False, sleep=Sleeps()), "a") == 4
    run = graph.run(executor="local", cache=False, sleep=Sleeps(), enable_retry=False)
    assert attempts(run, "a") == 1


def test_the_enable_retry_setting_false_retries_no_step_not_even_a_transient_error():
    # The setting only set max_retries to 0: a transient error was still tried 3 times.
    calls = []

    def flaky() -> None:
        calls.append(1)
        raise ConnectionError("down")

    graph = Graph("setting", [Step("f", func=flaky, circuit_breaker=False)])
    dagnb.configure(enable_retry=False)
    run = graph.run(executor="local", cache=False, sleep=Sleeps())
    assert (attempts(run, "f"), len(calls)) == (1, 1)
    run = graph.run(executor="local", cache=False, sleep=Sleeps(), enable_retry=True)
    assert attempts(run, "f") == 3  # the run's own switch still wins


class DownExecutor:
    """An executor whose engine is always down (a transient error)."""

    name = "down"
    capabilities = frozenset({"shell"})

    def __init__(self) -> None:
        self.calls: list[str] = []

    def availability(self) -> Availability:
        return Availability(True, "a test double")

    async def aclose(self) -> None:
        return None

    async def execute(self, task: Task) -> Outcome:
        self.calls.append(task.step.name)
        return Outcome(exit_code=0)


def open_breaker() -> Any:
    breaker = breaker_for("down", failure_threshold=1, reset_timeout=3600)
    breaker.record_failure()
    assert breaker.state == "open"
    return breaker


def test_use_circuit_breaker_false_on_a_run_or_a_step_runs_past_an_open_breaker():
    open_breaker()
    executor = DownExecutor()
    graph = Graph("switches", [Step("a", run="true")])
    held = graph.run(executor=executor, cache=False, sleep=Sleeps())
    assert held.states() == {"a": "failed"} and executor.calls == []
    run = graph.run(executor=executor, cache=False, sleep=Sleeps(), use_circuit_breaker=False)
    assert run.states() == {"a": "succeeded"} and executor.calls == ["a"]
    own = Graph("own", [Step("b", run="true", circuit_breaker=False)])
    assert own.run(executor=executor, cache=False, sleep=Sleeps()).states() == {"b": "succeeded"}


def test_run_switches_must_be_true_or_false():
    with pytest.raises(ConfigError, match=r"enable_retry='no' is not valid; expected True"):
        Graph("g", [Step("a", run="true")]).run(executor="local", enable_retry="no")


def test_cli_switches_reach_the_run(tmp_path, monkeypatch):
    seen: dict[str, Any] = {}
    import dagnb.runtime.prepare as prepare_module

    real = prepare_module.prepare

    def spy(graph: Any, targets: Any = None, **options: Any) -> Any:
        seen.update(options)
        return real(graph, targets, **options)

    monkeypatch.setattr(prepare_module, "prepare", spy)
    write(tmp_path / "flow.yml", "steps:\n  - {name: a, command: 'true'}\n")
    argv = ["run", "flow.yml", "--executor", "local", "--skip-cache", "--no-enable-retry",
            "--no-use-circuit-breaker"]
    assert main(argv) == 0
    assert seen["skip_cache"] is True
    assert seen["enable_retry"] is False and seen["use_circuit_breaker"] is False


def test_validate_explain_of_a_file_in_dagnbs_spelling_says_so(tmp_path, capsys):
    write(tmp_path / "flow.yml", "steps:\n  a: {run: 'true'}\n")
    assert main(["validate", "--explain", str(tmp_path / "flow.yml")]) == 0
    assert "# already in dagnb's spelling" in capsys.readouterr().out


def test_workflow_defaults_beside_defaults_is_refused():
    text = "workflow_defaults: {timeout: 1}\ndefaults: {timeout: 2}\nsteps: {a: {run: 'true'}}\n"
    with pytest.raises(WorkflowError, match=r"'workflow_defaults' and 'defaults' both set"):
        loads(text)


def test_configure_takes_jitter_as_a_switch():
    assert dagnb.configure(retry_jitter=False).retry_defaults()["jitter"] == 0.0
    assert dagnb.configure(retry_jitter=True).retry_jitter == 0.1


def test_validate_explain_refuses_a_notebook_in_one_line(tmp_path, capsys):
    write(tmp_path / "analysis.ipynb", '{"cells": [], "metadata": {}, "nbformat": 4, '
          '"nbformat_minor": 5}')
    assert main(["validate", "--explain", str(tmp_path / "analysis.ipynb")]) == 2
    assert "--explain reads workflow YAML" in capsys.readouterr().err


def test_workflow_defaults_retries_merge_with_a_steps_own_and_explain_shows_it(
        tmp_path, capsys):
    write(tmp_path / "flow.yml", "workflow_defaults:\n  max_retries: 2\n"
          "  environment: {REGION: eu}\nsteps:\n"
          "  - {name: plain, command: exit 1}\n"
          "  - {name: tuned, command: exit 1, retry_backoff_factor: 0.01,"
          " environment: {EXTRA: x}}\n")
    graph = dagnb.load(tmp_path / "flow.yml")
    assert graph["tuned"].retries == {"max_retries": 2, "backoff_factor": 0.01}
    assert dict(graph["tuned"].env) == {"REGION": "eu", "EXTRA": "x"}
    run = graph.run(executor="local", cache=False, sleep=Sleeps())
    assert attempts(run, "plain") == attempts(run, "tuned") == 3
    assert main(["validate", "--explain", str(tmp_path / "flow.yml")]) == 0
    out = capsys.readouterr().out
    assert "retries:\n      max_retries: 2\n      backoff_factor: 0.01" in out
    assert "env:\n      REGION: eu\n      EXTRA: x" in out


def test_every_module_of_dagnb_imports_on_this_python():
    """The version legs run a part of the suite: a module using what a newer Python has
    (``import tomllib``, ``from typing import Self``) fails here on 3.10, whichever tests
    the leg runs. In a fresh process: an import's side effects stay out of this one."""
    script = (
        "import importlib, pkgutil, dagnb\n"
        "names = [m.name for m in pkgutil.walk_packages(dagnb.__path__, 'dagnb.')\n"
        "         if not m.name.endswith('__main__')]\n"
        "for name in names:\n"
        "    importlib.import_module(name)\n"
        "print(len(names))\n"
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    assert int(done.stdout) > 100, done.stdout  # (the walk found the package's modules)
