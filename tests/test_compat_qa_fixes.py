"""The platform spelling and saving a graph keep what the user wrote (QA hunt-compat).

A saved ``key_fn`` or ``RetryPolicy``, ``retries: true|false`` beside a platform retry
key, a step's switch at its default value over the defaults' opposite, and
``caching_enabled`` against ``cache_mode`` in one config layer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

import dagnb
from dagnb import Graph, RetryPolicy, Step
from dagnb import config as dagnb_config
from dagnb.errors import ConfigError, StepNotFoundError, WorkflowError
from dagnb.retry.policy import layered
from dagnb.workflows.loader import load, loads

pytestmark = pytest.mark.usefixtures("project")


class Sleeps(list):
    async def __call__(self, seconds: float) -> None:
        self.append(seconds)


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def attempts(run: dagnb.Run, step: str) -> int:
    return int(run.status().set_index("step").loc[step, "attempts"])


def policy_of(step: Step) -> RetryPolicy:
    """The policy a run gives the step (the settings' retries under the step's)."""
    return RetryPolicy.from_value(layered(dagnb_config.settings().retry_defaults(),
                                          step.retries))


# -- bug 2: key_fn ----------------------------------------------------------------------


def test_saving_a_step_with_a_key_fn_is_refused_naming_the_step_and_the_fix(tmp_path):
    graph = Graph("kf", [Step("count", run="wc -l < data.csv", key_fn=lambda step: "v1")])
    with pytest.raises(WorkflowError, match=r"step 'count' has a key_fn, which a workflow "
                       r"file cannot hold .*mount the file key_fn reads \(mounts:\) or set "
                       r"cache_version"):
        graph.to_yaml(tmp_path / "out.yml")
    assert not (tmp_path / "out.yml").exists()


def test_a_python_step_with_a_key_fn_is_refused_before_its_module_is_written(tmp_path):
    def fit() -> int:
        return 1

    graph = Graph("kf", [Step("fit", func=fit, key_fn=lambda step: "v1")])
    graph.base_dir = folder = tmp_path / "flows"
    folder.mkdir()
    with pytest.raises(WorkflowError, match=r"step 'fit' has a key_fn"):
        graph.to_yaml(folder / "out.yml")
    assert list(folder.iterdir()) == []  # (no out_steps.py either)


# -- bug 3: retries true/false beside a platform retry key ------------------------------

FLAKY = 'def flaky():\n    print("attempt")\n    raise ConnectionError("network down")\n'


def test_retries_false_beside_retry_jitter_retries_not_even_a_transient_error(tmp_path):
    write(tmp_path / "steps.py", FLAKY)
    flow = write(tmp_path / "flow.yml", "steps:\n  flaky:\n    python: steps.py:flaky\n"
                 "    retries: false\n    retry_jitter: 0\n")
    graph = load(flow)
    assert graph["flaky"].retries == {"enable_retry": False, "jitter": 0.0}
    run = graph.run(executor="local", cache=False, sleep=Sleeps(), raise_on_failure=False)
    assert attempts(run, "flaky") == 1


def test_retries_true_beside_a_backoff_factor_retries_twice():
    graph = loads("steps:\n  shell:\n    run: exit 1\n    retries: true\n"
                  "    retry_backoff_factor: 0.01\n")
    assert graph["shell"].retries == {"max_retries": 2, "backoff_factor": 0.01}
    run = graph.run(executor="local", cache=False, sleep=Sleeps(), raise_on_failure=False)
    assert attempts(run, "shell") == 3


@pytest.mark.parametrize(("default", "expected"), [
    ("true", {"max_retries": 2, "backoff_factor": 0.01}),
    ("false", {"enable_retry": False, "backoff_factor": 0.01}),
])
def test_defaults_retries_true_or_false_merge_with_a_steps_retry_key(default, expected):
    graph = loads(f"workflow_defaults:\n  retries: {default}\nsteps:\n"
                  "  tuned: {command: exit 1, retry_backoff_factor: 0.01}\n")
    assert graph["tuned"].retries == expected


# -- bug 4: a step's switch at its default value overrides the defaults' ----------------


def test_a_steps_caching_enabled_true_overrides_the_defaults_false():
    text = ("workflow_defaults: {caching_enabled: false}\nsteps:\n"
            "  - {name: expensive, command: 'date +%s%N > \"$DAGNB_OUT/t\"',"
            " caching_enabled: true}\n  - {name: other, command: 'true'}\n")
    assert loads(text)["expensive"].cache is True and loads(text)["other"].cache is False
    loads(text).run(executor="local")
    again = loads(text).run(executor="local")
    assert again.status().set_index("step").loc["expensive", "cached"]


def test_a_steps_skip_cache_false_and_use_circuit_breaker_true_override_the_defaults():
    graph = loads("workflow_defaults: {use_circuit_breaker: false, skip_cache: true}\n"
                  "steps:\n  - {name: guarded, command: echo hi, use_circuit_breaker: true,"
                  " skip_cache: false}\n")
    assert graph["guarded"].cache is True and graph["guarded"].circuit_breaker is True


@pytest.mark.parametrize("step", [
    "{name: flaky, command: exit 1, max_retries: 2, enable_retry: true}",
    "{name: flaky, run: exit 1, retries: {max_retries: 2, enable_retry: true}}",
])
def test_a_steps_enable_retry_true_overrides_the_defaults_false(step):
    graph = loads(f"workflow_defaults: {{enable_retry: false}}\nsteps:\n  - {step}\n")
    assert graph["flaky"].retries == {"max_retries": 2}
    run = graph.run(executor="local", cache=False, sleep=Sleeps(), raise_on_failure=False)
    assert attempts(run, "flaky") == 3


def test_skip_cache_and_caching_enabled_in_one_step_must_agree():
    agree = loads("steps:\n  - {name: a, command: 'true', skip_cache: false,"
                  " caching_enabled: true}\n")
    assert agree["a"] == Step("a", run="true")
    with pytest.raises(WorkflowError, match=r"step 'a': skip_cache: true and caching_enabled: "
                       r"true disagree on cache; give one of the two"):
        loads("steps:\n  - {name: a, command: 'true', skip_cache: true,"
              " caching_enabled: true}\n")



@pytest.mark.parametrize(("fields", "cache", "breaker"), [
    ("cache: session, caching_enabled: true", "session", True),
    ("cache: session, skip_cache: false, caching_enabled: true", "session", True),
    ("cache: true, skip_cache: false", True, True),
    ("cache: false, caching_enabled: false", False, True),
    ("cache: false, skip_cache: true", False, True),
    ("circuit_breaker: true, use_circuit_breaker: true", True, True),
    ("circuit_breaker: false, use_circuit_breaker: false", True, False),
])
def test_a_switch_that_agrees_with_the_steps_own_field_loads(fields, cache, breaker):
    step = loads(f"steps:\n  - {{name: a, command: 'true', {fields}}}\n")["a"]
    assert (step.cache, step.circuit_breaker) == (cache, breaker)


@pytest.mark.parametrize(("fields", "switch", "field"), [
    ("cache: session, caching_enabled: false", "caching_enabled", "cache"),
    ("cache: session, skip_cache: true", "skip_cache", "cache"),
    ("cache: false, caching_enabled: true", "caching_enabled", "cache"),
    ("cache: true, skip_cache: false, caching_enabled: false", "caching_enabled", "cache"),
    ("circuit_breaker: true, use_circuit_breaker: false", "use_circuit_breaker",
     "circuit_breaker"),
])
def test_a_switch_that_disagrees_with_the_steps_own_field_is_refused(fields, switch, field):
    with pytest.raises(WorkflowError, match=rf"step 'a': '{switch}' sets '{field}', which is "
                       "already given; keep one of the two"):
        loads(f"steps:\n  - {{name: a, command: 'true', {fields}}}\n")


# -- bug 5: saving Python-only retry values ---------------------------------------------


@pytest.mark.parametrize("policy", [
    RetryPolicy(max_retries=3, jitter=False),
    RetryPolicy(retry_on_timeout=True),
    RetryPolicy(retry_on=(137,), max_delay=5, transient_retries=4),
    RetryPolicy.disabled(),
], ids=["count", "timeout", "exit-code", "disabled"])
def test_a_saved_retry_policy_loads_as_an_equal_policy(policy):
    dagnb.configure(max_retries=1, retry_backoff_factor=2.0, retry_jitter=0.5)
    text = Graph("g", [Step("s", run="true", retries=policy)]).to_yaml()
    assert "RetryPolicy" not in text
    assert policy_of(loads(text)["s"]) == policy


def test_a_retry_on_exception_type_is_refused_naming_the_step_and_the_item():
    graph = Graph("g", [Step("s", run="true", retries={"retry_on": [ConnectionError]})])
    with pytest.raises(WorkflowError, match=r"step 's': retries.retry_on holds "
                       r"ConnectionError, which a workflow file cannot; name exit codes"):
        graph.to_yaml()
    policy = Graph("g", [Step("s", run="true", retries=RetryPolicy(retry_on=(OSError,)))])
    with pytest.raises(WorkflowError, match=r"retry_on holds OSError"):
        policy.to_yaml()


# -- bug 7: caching_enabled and cache_mode in one layer ---------------------------------


@pytest.mark.parametrize("order", [
    "caching_enabled: false\n  cache_mode: read-write\n",
    "cache_mode: read-write\n  caching_enabled: false\n",
])
def test_config_file_caching_enabled_and_cache_mode_that_disagree_are_refused(
        tmp_path, order):
    write(tmp_path / "dagnb.yaml", f"workflow_defaults:\n  {order}")
    with pytest.raises(ConfigError, match=r"workflow_defaults: caching_enabled: false and "
                       r"cache_mode: read-write disagree; give one of the two"):
        dagnb_config.reload()


def test_config_caching_enabled_true_agrees_with_read_only(tmp_path):
    write(tmp_path / "dagnb.yaml", "workflow_defaults:\n  caching_enabled: true\n"
          "  cache_mode: read-only\n")
    assert dagnb_config.reload().cache_mode == "read-only"


def test_env_caching_enabled_and_cache_mode_that_disagree_are_refused(monkeypatch):
    monkeypatch.setenv("DAGNB_CACHING_ENABLED", "false")
    monkeypatch.setenv("DAGNB_CACHE_MODE", "read-write")
    with pytest.raises(ConfigError, match=r"DAGNB_CACHING_ENABLED=false and "
                       r"DAGNB_CACHE_MODE=read-write disagree"):
        dagnb_config.reload()


def test_configure_caching_enabled_and_cache_mode_that_disagree_are_refused():
    with pytest.raises(ConfigError, match=r"caching_enabled=False and "
                       r"cache_mode='read-write' disagree; give one"):
        dagnb.configure(caching_enabled=False, cache_mode="read-write")
    assert dagnb_config.settings().cache_mode == "read-write"  # (unchanged)


# -- bug 8: messages name what the user wrote -------------------------------------------


@pytest.mark.parametrize(("fields", "message"), [
    ("retries: {jitter: 0.2}\n    retry_jitter: 0.5",
     r"'retry_jitter' and retries.jitter both set 'jitter'; keep one of the two"),
    ("retries: 3\n    max_retries: 2",
     r"'max_retries' and 'retries: 3' both set 'max_retries'; keep one of the two"),
])
def test_a_retry_key_given_twice_is_named_as_written(fields, message):
    with pytest.raises(WorkflowError, match=message):
        loads(f"steps:\n  a:\n    run: echo\n    {fields}\n")


def test_top_level_jitter_belongs_under_workflow_defaults(tmp_path):
    write(tmp_path / "dagnb.yaml", "jitter: 0.3\n")
    with pytest.raises(ConfigError, match=r"key 'jitter' belongs under 'workflow_defaults'"):
        dagnb_config.reload()


def test_skip_cache_errors_name_skip_cache():
    graph = Graph("g", [Step("train", run="echo")])
    with pytest.raises(StepNotFoundError, match=r"^skip_cache names 'trian'"):
        graph.run(executor="local", skip_cache="trian")
    with pytest.raises(ConfigError, match=r"^skip_cache=\{'train': True\} must be True"):
        graph.run(executor="local", skip_cache={"train": True})


def test_to_yaml_writes_a_retries_mapping_in_dagnbs_spelling():
    text = Graph("g", [Step("fit", run="echo", retries={"retry_jitter": True})]).to_yaml()
    assert "retry_jitter" not in text and "retries:\n      jitter: 0.1\n" in text


@pytest.mark.parametrize("off", ["retries: false", "retries: {enable_retry: false}"])
def test_a_steps_own_retry_count_turns_retries_on_over_defaults_off(tmp_path, off):
    """As before the platform's switches were read: a step's ``retries: {max_retries:
    3}`` under defaults' ``retries: false`` retried 3 times; a backoff alone does not."""
    wf = tmp_path / "wf.yml"
    wf.write_text(f"""
name: r
workflow_defaults:
  {off}
steps:
  counted: {{run: "true", retries: {{max_retries: 3}}}}
  backoff: {{run: "true", retries: {{backoff_factor: 2}}}}
""")
    graph = load(wf)
    assert policy_of(graph["counted"]).max_retries == 3
    backoff = policy_of(graph["backoff"])
    assert (backoff.max_retries, backoff.retry_transient) == (0, False)
