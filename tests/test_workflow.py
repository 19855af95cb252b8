"""YAML workflows: loading, the errors that name file, step, key and line, round trip."""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

import dagnb
from dagnb import Step, WorkflowError
from dagnb.cache import step_key
from dagnb.errors import InvalidStepError
from dagnb.workflows.loader import dump, graph_from_dict, loads

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", ["example_workflow.yml", "example_pipeline.yml"])
def test_examples_load_and_validate(name: str) -> None:
    graph = dagnb.load(REPO / "workflows" / name)
    graph.validate(check_host=True)
    assert len(graph) >= 4 and graph.base_dir == REPO / "workflows"


def test_example_workflow_fans_out_and_in() -> None:
    graph = dagnb.load(REPO / "workflows" / "example_workflow.yml")
    fan_in = [s for s in graph if len(s.needs) >= 3]
    fanned = [s for s in graph if s.needs == ("generate",)]
    assert len(fan_in) == 1 and len(fanned) >= 3


def test_defaults_apply_where_a_step_is_silent() -> None:
    graph = loads("defaults: {image: alpine, timeout: 5m}\n"
                  "steps:\n  a: {run: 'true'}\n  b: {run: 'true', image: busybox}\n")
    assert graph["a"].image == "alpine" and graph["b"].image == "busybox"
    assert graph["a"].timeout == 300.0


def test_yaml_syntax_error_names_file_and_line(tmp_path: Path) -> None:
    path = tmp_path / "bad.yml"
    path.write_text("steps:\n  a:\n    run: [unclosed\n  b: {}\n")
    with pytest.raises(WorkflowError, match=r"bad\.yml, line \d+: YAML does not parse"):
        dagnb.load(path)


def test_unknown_step_key_names_file_step_and_key() -> None:
    with pytest.raises(WorkflowError,
                       match=r"wf\.yml: step 'a': unknown key 'neds'; did you mean 'needs'"):
        loads("steps:\n  a: {run: 'true', neds: [b]}\n", source="wf.yml")


@pytest.mark.parametrize("name", ["\x1b[2Jevil", "two\nlines", "bell\x07", "c1\x9b31m"])
def test_a_workflow_name_holding_a_control_character_is_refused(name: str) -> None:
    """It was printed as it is under each run: a terminal escape cleared the screen."""
    with pytest.raises(WorkflowError) as caught:
        loads(yaml.safe_dump({"name": name, "steps": {"a": {"run": "true"}}}), source="wf.yml")
    assert str(caught.value) == (f"wf.yml: name {name!r} holds a control character; write it "
                                 "as one line of printable text")


def test_a_workflow_name_with_spaces_and_accents_stays() -> None:
    assert loads("name: Données du jour\nsteps:\n  a: {run: 'true'}\n").name == "Données du jour"


@pytest.mark.parametrize(("written", "message"), [
    ("off", 'name: off reads as false in YAML; quote it: "off"'),
    ("3.10", 'name: 3.10 reads as the number 3.1 in YAML; quote it: "3.10"'),
    ("2024", 'name: 2024 reads as the number 2024 in YAML; quote it: "2024"'),
    ("[etl, daily]", 'name: [etl, daily] reads as a list in YAML; quote it: "[etl, daily]"'),
])
def test_a_workflow_name_yaml_reads_as_no_text_is_refused(written: str, message: str) -> None:
    """``off`` silently became the file's stem, ``3.10`` the name 3.1, a list its repr."""
    with pytest.raises(WorkflowError) as caught:
        loads(f"name: {written}\nsteps:\n  a: {{run: 'true'}}\n", source="wf.yml")
    assert str(caught.value) == f"wf.yml: {message}"
    with pytest.raises(WorkflowError, match=r"^<dict>: name False is not text; "):
        graph_from_dict({"name": False, "steps": {"a": {"run": "true"}}})


@pytest.mark.parametrize("line", ["", "name:\n", "name: ''\n", "name: ~\n"])
def test_a_workflow_without_a_name_is_named_after_its_file(tmp_path: Path, line: str) -> None:
    (tmp_path / "nightly.yml").write_text(f"{line}steps:\n  a: {{run: 'true'}}\n")
    assert dagnb.load(tmp_path / "nightly.yml").name == "nightly"


def test_unknown_workflow_key() -> None:
    with pytest.raises(WorkflowError, match=r"unknown workflow key 'stpes'; did you mean 'steps'"):
        loads("stpes: {}\n")


@pytest.mark.parametrize("text, said", [
    ("", "<string>: the file is empty; write its steps in it, like "
         "steps: {hello: {run: echo hello}}"),
    ("steps:\n", "<string>: no steps; list them under 'steps', like "
                 "steps: {hello: {run: echo hello}}"),
    ("name: x\n", "<string>: no steps; list them under 'steps'"),
    ("- a\n- b\n", "<string>: a workflow is a mapping with a 'steps' key, got ['a', 'b']; "
                   "write it like steps: {hello: {run: echo hello}}"),
    ("steps: echo hi\n", "got 'echo hi'; write it like steps: {hello: {run: echo hello}}"),
    ("steps:\n  clean-data:\n", "<string>: step 'clean-data' has no fields; give it a "
                                 "command or a function, like clean-data: {run: echo hello} "
                                 "or clean-data: {python: steps.py:clean_data}"),
])
def test_a_file_with_no_steps_says_so_and_shows_the_least_workflow(text: str, said: str) -> None:
    # (an empty file, or a steps key with nothing under it: "got None", no fix named)
    with pytest.raises(WorkflowError) as refused:
        loads(text)
    assert said in str(refused.value), str(refused.value)


def test_missing_file_is_one_line() -> None:
    with pytest.raises(WorkflowError, match=r"workflow file 'nope\.yml' does not exist"):
        dagnb.load("nope.yml")


def test_steps_as_a_list_and_bad_field_value() -> None:
    graph = loads("steps:\n  - name: a\n    run: 'true'\n")
    assert graph.names == ["a"]
    with pytest.raises(WorkflowError, match=r"<string>: step 'a' timeout 'x' is not a duration"):
        loads("steps:\n  a: {run: 'true', timeout: x}\n")


def test_round_trip_keeps_every_field() -> None:
    graph = dagnb.load(REPO / "workflows" / "example_pipeline.yml")
    again = loads(dump(graph))
    assert [again[n] for n in again.names] == [graph[n] for n in graph.names]
    assert "run: |" in dump(graph)  # scripts stay readable blocks


def test_a_step_name_given_twice_is_an_error_with_its_line() -> None:
    text = "steps:\n  a: {run: 'true'}\n  a: {run: 'false'}\n"
    with pytest.raises(WorkflowError, match=r"line 3: YAML does not parse \('a' is given twice"):
        loads(text)


def test_a_step_listed_twice_in_a_steps_list_is_told_in_the_file_s_words() -> None:
    """The graph's own refusal suggested graph.replace(), which a YAML file has no use for."""
    text = ("steps:\n  - {name: a, run: 'true'}\n  - {name: b, run: 'true'}\n"
            "  - {name: a, run: 'false'}\n")
    with pytest.raises(WorkflowError) as refused:
        loads(text)
    assert str(refused.value) == ("<string>: step 'a' is listed twice in 'steps' (items 1 and "
                                  "3); give each step its own name")


_POINT_MODULE = """\
import dataclasses
import os
with open(os.path.join(os.path.dirname(__file__), "imports.log"), "a") as log:
    log.write("imported\\n")  # a side effect: it must happen once per process


@dataclasses.dataclass
class Point:
    x: int
    y: int


def make():
    return Point(1, 2)


def use(make):
    assert isinstance(make, Point), f"{type(make)} is not this module's Point"
    return make.x + make.y
"""


def _point_workflow(folder: Path) -> Path:
    (folder / "steps.py").write_text(_POINT_MODULE)
    (folder / "wf.yml").write_text("steps:\n  make: {python: 'steps.py:make'}\n"
                                   "  use: {python: 'steps.py:use', needs: [make]}\n")
    return folder / "wf.yml"


def test_a_python_steps_module_is_imported_once_and_its_classes_pass_between_steps(
        workdir: Path) -> None:
    graph = dagnb.load(_point_workflow(workdir))
    assert dagnb.load(workdir / "wf.yml")["use"].func is graph["use"].func
    run = graph.run(executor="local")
    assert run.states() == {"make": "succeeded", "use": "succeeded"}, run.status_rows()
    assert (workdir / "imports.log").read_text() == "imported\n"
    again = dagnb.load(workdir / "wf.yml").run(executor="local")  # cached: it pickled
    assert again.states() == {"make": "cached", "use": "cached"}


def test_a_python_steps_module_edited_between_loads_is_imported_again(workdir: Path) -> None:
    first = dagnb.load(_point_workflow(workdir))["make"].func
    (workdir / "steps.py").write_text(_POINT_MODULE.replace("Point(1, 2)", "Point(3, 4)"))
    second = dagnb.load(workdir / "wf.yml")["make"].func
    assert (first().x, second().x) == (1, 3)
    assert (workdir / "imports.log").read_text() == "imported\nimported\n"


def test_two_workflows_steps_files_of_one_name_are_two_modules_in_any_order(
        workdir: Path) -> None:
    # Both registered as dagnb_steps_steps, the one loaded last owned the name: the
    # other's cached Point unpickled as the wrong class, and its keys hung on the order.
    first, second = workdir / "a", workdir / "b"
    for folder, fields in ((first, "x: int\n    y: int"), (second, "w: int\n    y: int")):
        folder.mkdir()
        _point_workflow(folder)
        module = _POINT_MODULE.replace("x: int\n    y: int", fields)
        (folder / "steps.py").write_text(module.replace("make.x", "make.y"))
    graph = dagnb.load(first / "wf.yml")
    alone = graph.plan()["key"].tolist()
    other = dagnb.load(second / "wf.yml")
    assert graph.plan()["key"].tolist() == alone
    assert graph.run(executor="local").ok and other.run(executor="local").ok
    again = graph.run(executor="local")
    assert again.states() == {"make": "cached", "use": "cached"}, again.status_rows()
    assert dataclasses.fields(again.result("make"))[0].name == "x"


@pytest.fixture
def sibling_helpers() -> Any:
    """Forgets the ``wf_helpers`` module the workflows' steps import, before and after."""
    sys.modules.pop("wf_helpers", None)
    yield
    sys.modules.pop("wf_helpers", None)


def _helpers_workflow(folder: Path, factor: str) -> Path:
    """A workflow whose steps.py imports ``wf_helpers``, the module beside it."""
    folder.mkdir()
    (folder / "wf_helpers.py").write_text(f"FACTOR = {factor!r}\n")
    (folder / "steps.py").write_text("import wf_helpers\n\n\ndef which():\n"
                                     "    return wf_helpers.FACTOR\n")
    (folder / "wf.yml").write_text("steps:\n  which: {python: 'steps.py:which'}\n")
    return folder / "wf.yml"


@pytest.mark.usefixtures("sibling_helpers")
def test_a_workflow_importing_a_sibling_another_folder_s_module_of_that_name_holds_is_refused(
        workdir: Path) -> None:
    # b's `import wf_helpers` was answered by a's module, already loaded: b ran a's code,
    # and was served a's cache entry (its key read a's helpers).
    first = dagnb.load(_helpers_workflow(workdir / "a", "a"))
    second = _helpers_workflow(workdir / "b", "b")
    assert first.run(executor="local").result("which") == "a"
    with pytest.raises(WorkflowError) as refused:
        dagnb.load(second)
    message = str(refused.value)
    assert "\n" not in message and message.startswith(f"{second}: step 'which': ")
    assert str(workdir / "a" / "wf_helpers.py") in message
    assert str(workdir / "b" / "wf_helpers.py") in message
    assert "distinct name" in message and "separate processes" in message
    again = dagnb.load(workdir / "a" / "wf.yml").run(executor="local")  # a is unharmed
    assert again.states() == {"which": "cached"} and again.result("which") == "a"


@pytest.mark.usefixtures("sibling_helpers")
def test_a_sibling_imported_by_a_sibling_is_checked_too(workdir: Path) -> None:
    dagnb.load(_helpers_workflow(workdir / "a", "a"))
    second = _helpers_workflow(workdir / "b", "b")
    (second.parent / "steps.py").write_text(
        "def which():\n    import middle\n    return middle.FACTOR\n")
    (second.parent / "middle.py").write_text("from wf_helpers import FACTOR\n")
    with pytest.raises(WorkflowError,
                       match=r": middle\.py imports 'wf_helpers', the module .*b/wf_helpers"):
        dagnb.load(second)


@pytest.mark.usefixtures("sibling_helpers")
def test_a_workflow_with_sibling_modules_loads_and_runs_again_in_one_process(
        workdir: Path) -> None:
    path = _helpers_workflow(workdir / "a", "a")
    (path.parent / "yaml").mkdir()  # (a data folder named like a package: not a module)
    (path.parent / "steps.py").write_text("import yaml\n" + (path.parent / "steps.py")
                                          .read_text())
    assert dagnb.load(path).run(executor="local").result("which") == "a"
    again = dagnb.load(path).run(executor="local")
    assert again.states() == {"which": "cached"} and again.result("which") == "a"


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_steps_module_result_loads_in_a_moved_or_copied_project_sharing_the_cache(
        tmp_path: Path) -> None:
    """The key holds no path, so the copy (a moved folder, a teammate's checkout or CI
    sharing the cache) hits the entry, whose result names the module by the first
    folder's path: it was called damaged and set aside, and the step reading it failed."""
    first, second = tmp_path / "alice", tmp_path / "bob"
    first.mkdir()
    _point_workflow(first)

    def run(folder: Path) -> tuple[int, list[list[str]]]:
        done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "wf.yml", "--executor",
                               "local", "--cache-dir", str(tmp_path / "shared")], cwd=folder,
                              capture_output=True, text=True, timeout=120)
        rows = [line.split()[:2] for line in done.stdout.splitlines()]
        return done.returncode, [row for row in rows if row[:1] in (["make"], ["use"])]

    assert run(first) == (0, [["make", "succeeded"], ["use", "succeeded"]])
    shutil.copytree(first, second)
    steps = second / "steps.py"  # use changed: it runs, reading make's cached Point
    steps.write_text(steps.read_text().replace("make.x + make.y", "make.x * make.y"))
    assert run(second) == (0, [["make", "cached"], ["use", "succeeded"]])


@pytest.mark.parametrize("fields", ["{}", "{run: null}", "{run: 'true', python: 'x.py:f'}",
                                    "{command: 'true', python: 'x.py:f'}"])
def test_a_step_with_neither_or_both_of_run_and_python_is_told_in_the_file_s_words(
        fields: str) -> None:
    with pytest.raises(WorkflowError) as refused:  # (it said run= or func=, Python's words)
        loads(f"steps:\n  a: {fields}\n", source="w.yml")
    assert str(refused.value) == ("w.yml: step 'a' needs exactly one of run (a shell "
                                  "command) or python (FILE.py:FUNCTION)")


def test_a_step_field_that_is_a_mapping_merges_with_the_defaults_key_by_key() -> None:
    graph = loads(
        "defaults:\n"
        "  retries: {max_retries: 2, backoff_factor: 0.01}\n"
        "  env: {PYTHONUNBUFFERED: '1', REGION: eu}\n"
        "  params: {rows: 10, seed: 1}\n"
        "steps:\n"
        "  plain: {run: 'true'}\n"
        "  tuned: {run: 'true', retries: {jitter: 0}, env: {REGION: us, EXTRA: x}}\n"
        "  counted: {run: 'true', retries: 5, params: {seed: 2}}\n")
    assert graph["plain"].retries == {"max_retries": 2, "backoff_factor": 0.01}
    assert graph["tuned"].retries == {"max_retries": 2, "backoff_factor": 0.01, "jitter": 0}
    assert dict(graph["tuned"].env) == {"PYTHONUNBUFFERED": "1", "REGION": "us", "EXTRA": "x"}
    assert graph["counted"].retries == {"max_retries": 5, "backoff_factor": 0.01}
    assert dict(graph["counted"].params) == {"rows": 10, "seed": 2}


def test_a_steps_secrets_add_to_the_defaults_secrets() -> None:
    # A step's list replaced the defaults': DB_PASSWORD was then no step's secret.
    graph = loads(
        "defaults: {secrets: [DB_PASSWORD, API_TOKEN]}\n"
        "steps:\n"
        "  plain: {run: 'true'}\n"
        "  own: {run: 'true', secrets: [API_TOKEN, S3_KEY]}\n"
        "  spaced: {run: 'true', secrets: 'S3_KEY, DB_PASSWORD'}\n")
    assert graph["plain"].secrets == ("DB_PASSWORD", "API_TOKEN")
    assert graph["own"].secrets == ("DB_PASSWORD", "API_TOKEN", "S3_KEY")
    assert graph["spaced"].secrets == ("DB_PASSWORD", "API_TOKEN", "S3_KEY")


def test_a_steps_mount_or_cache_volume_replaces_the_defaults_at_the_same_path() -> None:
    # Merged by host path, both mounts reached /app, and the Dagger executor refused it.
    graph = loads(
        "defaults:\n"
        "  mounts: {./src: /app, ./data: /data}\n"
        "  cache_volumes: {pip: /root/.cache/pip, npm: /root/.npm}\n"
        "steps:\n"
        "  a: {run: 'true', mounts: {./src_v2: /app},\n"
        "      cache_volumes: {wheels: '/root/.cache/pip:locked'}}\n")
    assert dict(graph["a"].mounts) == {"./data": "/data", "./src_v2": "/app"}
    assert dict(graph["a"].cache_volumes) == {"npm": "/root/.npm",
                                              "wheels": "/root/.cache/pip:locked"}


def test_keys_yaml_reads_apart_but_text_makes_one_are_no_traceback() -> None:
    # The as-written read saw 1 and "1" as one key twice: a ConstructorError traceback.
    with pytest.raises(WorkflowError, match=r"param 'labels' must be a JSON value"):
        loads("steps:\n  a: {run: 'true', params: {labels: {1: one, '1': uno}}}\n")


def test_a_retries_count_over_a_default_count_stays_a_count() -> None:
    graph = loads("defaults: {retries: 2}\nsteps:\n  a: {run: 'true', retries: 3}\n"
                  "  b: {run: 'true', retries: {jitter: 0}}\n")
    assert graph["a"].retries == 3
    assert graph["b"].retries == {"max_retries": 2, "jitter": 0}


def test_env_and_argv_booleans_are_true_and_false_and_numbers_keep_their_text() -> None:
    graph = loads("steps:\n  a:\n    env: {DEBUG: true, QUIET: False, N: 1.5, COUNT: 10}\n"
                  "    run: [echo, true, 2, 0.5, 'null']\n")
    assert dict(graph["a"].env) == {"DEBUG": "true", "QUIET": "false", "N": "1.5", "COUNT": "10"}
    assert graph["a"].run == ("echo", "true", "2", "0.5", "null")
    assert dict(Step("b", run="true", env={"A": 1, "B": True}).env) == {"A": "1", "B": "true"}


@pytest.mark.parametrize(("fields", "message"), [
    ("env: {PY_VERSION: 3.10}", 'env PY_VERSION: 3.10 reads as the number 3.1 in YAML; '
                                'quote it: "3.10"'),
    ("env: {UMASK: 0022}", 'env UMASK: 0022 reads as the number 18 in YAML; quote it: "0022"'),
    ("environment: {DEBUG: yes}", 'environment DEBUG: yes reads as true in YAML; quote it: '
                                  '"yes"'),
    ("env: {FOO: null}", 'env FOO is null; give a string, e.g. ""'),
    ("env: {FOO: }", 'env FOO is null; give a string'),
    ("run: [chmod, 0755, f]", 'run[1]: 0755 reads as the number 493 in YAML; quote it: "0755"'),
    ("run: [echo, off]", 'run[1]: off reads as false in YAML; quote it: "off"'),
    ("run: [echo, ~]", 'run[1] is null; give a string'),
])
def test_an_env_value_or_argv_item_yaml_reads_as_another_value_is_refused(
        fields: str, message: str) -> None:
    command = "" if fields.startswith("run:") else "\n    run: 'true'"
    with pytest.raises(WorkflowError, match=r"^wf\.yml: step 'a': " + re.escape(message)):
        loads(f"steps:\n  a:\n    {fields}{command}\n", source="wf.yml")


def test_a_misread_value_in_the_defaults_names_the_defaults() -> None:
    with pytest.raises(WorkflowError, match=r"wf\.yml: defaults: env V: 1\.10 reads as the "):
        loads("defaults: {env: {V: 1.10}}\nsteps:\n  a: {run: 'true'}\n", source="wf.yml")


def test_a_null_argv_item_from_data_is_refused() -> None:
    with pytest.raises(WorkflowError, match=r"step 'a': run\[1\] is null; give a string"):
        graph_from_dict({"steps": {"a": {"run": ["echo", None]}}})
    with pytest.raises(InvalidStepError, match=r"step 'a': env FOO is null; give a string"):
        Step("a", run="true", env={"FOO": None})


def test_an_env_value_of_another_type_is_refused_by_its_type_not_its_value() -> None:
    """``env TOKEN=['hunter2'] must be a string or a number`` showed the secret."""
    with pytest.raises(WorkflowError) as refused:
        loads("steps:\n  a:\n    run: 'true'\n    env: {TOKEN: [hunter2]}\n", source="wf.yml")
    assert str(refused.value) == ('wf.yml: step \'a\': env TOKEN is a list, not a string or a '
                                  'number; give its text, e.g. TOKEN: "..."')
    with pytest.raises(InvalidStepError) as refused_here:
        Step("a", run="true", env={"TOKEN": {"value": "hunter2"}})
    assert "hunter2" not in str(refused_here.value)


def test_an_exponent_in_env_or_an_argv_list_stays_the_text_written() -> None:
    """YAML 1.2 reads 1e-3 as a number, but env values and argv items are text: as
    written, as before (`run: [python, train.py, --lr, 1e-3]` was refused)."""
    graph = loads("steps:\n  a:\n    run: [python, train.py, --lr, 1e-3, 2.5E+3]\n"
                  "    env: {LR: 1e-3}\n")
    assert graph["a"].run == ("python", "train.py", "--lr", "1e-3", "2.5E+3")
    assert graph["a"].env == {"LR": "1e-3"}


def test_yaml_1_2_exponent_floats_are_numbers_with_the_keys_of_the_same_numbers(
        tmp_path: Path) -> None:
    """`big: 1e6` (and `--param ratio=1e-3`) arrived as the text "1e6": PyYAML reads YAML
    1.1, whose floats need a dot and a signed exponent, where a notebook's --param and
    the templates read 1e-3 as 0.001. Only those forms change; the text "1e-3" written
    back stays text."""
    graph = loads("steps:\n  a:\n    run: 'true'\n    params: {big: 1e6, small: 1e-3, "
                  "neg: -2.5E+3, half: .5e1, text: '1e-3', word: 1e, v: 3.10}\n")
    params = graph["a"].params
    assert params == {"big": 1e6, "small": 0.001, "neg": -2500.0, "half": 5.0,
                      "text": "1e-3", "word": "1e", "v": 3.1}
    assert isinstance(params["big"], float)
    assert loads(dump(graph))["a"].params == params
    same = loads("steps:\n  a:\n    run: 'true'\n    params: {big: 1000000.0, small: 0.001, "
                 "neg: -2500.0, half: 5.0, text: '1e-3', word: 1e, v: 3.1}\n")
    assert (step_key(graph["a"], upstream_digests={}, base_dir=tmp_path).digest
            == step_key(same["a"], upstream_digests={}, base_dir=tmp_path).digest)


_SCRIPT_GRAPH = """\
import dagnb

graph = dagnb.Graph("demo")


@graph.step
def numbers():
    return list(range(10))


@graph.step(cache_version="1")  # parameters named after steps receive their results
def total(numbers):
    return sum(numbers)


graph.add(dagnb.Step("report", needs=["total"], run='echo done > "$DAGNB_OUT/report.txt"'))
if __name__ == "__main__":
    assert graph.run(executor="local").ok
    graph.to_yaml("pipeline.yml")
"""


def test_a_script_graph_of_decorated_steps_saved_to_yaml_runs_cached_from_the_file(
        tmp_path: Path) -> None:
    """The README's Python example saved with ``graph.to_yaml``: its module held the
    ``@graph.step`` lines, so ``dagnb run pipeline.yml`` failed importing it (NameError:
    'graph'); the functions the decorators returned are what the file's steps run, under
    the keys the script's run stored."""
    (tmp_path / "build.py").write_text(_SCRIPT_GRAPH)
    subprocess.run([sys.executable, "build.py"], cwd=tmp_path, check=True, timeout=120,
                   capture_output=True)
    assert "@graph" not in (tmp_path / "pipeline_steps.py").read_text()
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "pipeline.yml",
                           "--executor", "local"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "3 cached" in done.stdout, done.stdout


_SAVED_ELSEWHERE = """\
import dagnb
from subfolder_helpers import double

graph = dagnb.Graph("demo")
graph.add(dagnb.Step("fetch", run='cp data/in.txt "$DAGNB_OUT/in.txt"', mounts={"data": "/data"}))


def total(fetch):
    return double(len((fetch / "in.txt").read_text()))


graph.add(dagnb.Step("total", func=total, needs=["fetch"]))
graph.to_yaml("workflows/pipe.yml")
"""


def test_a_graph_saved_into_another_folder_keeps_its_paths_and_runs(tmp_path: Path) -> None:
    """`graph.to_yaml("workflows/pipe.yml")` wrote the mount `data` and the module beside
    the YAML unchanged, but a workflow's paths are its file's folder's: the run failed
    (`No module named 'subfolder_helpers'`, then `mounts 'data', which does not exist`)."""
    tmp_path = tmp_path.resolve()
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "in.txt").write_text("abcd")
    (tmp_path / "workflows").mkdir()
    (tmp_path / "subfolder_helpers.py").write_text("def double(n):\n    return 2 * n\n")
    (tmp_path / "build.py").write_text(_SAVED_ELSEWHERE)
    subprocess.run([sys.executable, "build.py"], cwd=tmp_path, check=True, timeout=120,
                   capture_output=True)
    steps = yaml.safe_load((tmp_path / "workflows" / "pipe.yml").read_text())["steps"]
    in_file = tmp_path / "workflows"
    assert {(in_file / host).resolve(): target
            for host, target in steps["fetch"]["mounts"].items()} == {tmp_path / "data": "/data"}
    assert {(in_file / steps[name]["workdir"]).resolve() for name in steps} == {tmp_path}
    module = steps["total"]["python"].partition(":")[0]
    assert (in_file / module).resolve().parent == tmp_path  # (its imports found there)
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "workflows/pipe.yml",
                           "--executor", "local"], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert "2 succeeded" in done.stdout, done.stdout


def test_a_graph_saved_beside_its_folder_keeps_its_paths_as_written(tmp_path: Path) -> None:
    graph = dagnb.Graph("demo", base_dir=tmp_path)
    graph.add(Step("a", run="true", mounts={"./data": "/data"}, workdir="src"))
    dump(graph, tmp_path / "wf.yml")
    steps = yaml.safe_load((tmp_path / "wf.yml").read_text())["steps"]
    assert steps == {"a": {"run": "true", "mounts": {"./data": "/data"}, "workdir": "src"}}


@pytest.mark.skipif(not getattr(yaml, "__with_libyaml__", False), reason="PyYAML without libyaml")
def test_a_big_workflow_is_read_by_libyaml_and_a_broken_one_in_pure_pythons_words(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A 2,000-step workflow took 1.6 s to load (PyYAML's pure-Python scanner, run twice),
    most of a cached re-run; libyaml reads it now, and a problem is said as before."""
    text = "steps:\n" + "".join(f"  s{i}:\n    params: {{v: 0}}\n    run: 'true'\n"
                                for i in range(200))
    (tmp_path / "wf.yml").write_text(text)
    scanned: list[object] = []
    check_token = yaml.scanner.Scanner.check_token

    def counted(self: object, *choices: object) -> bool:
        scanned.append(self)
        return check_token(self, *choices)

    monkeypatch.setattr(yaml.scanner.Scanner, "check_token", counted)
    graph = dagnb.load(tmp_path / "wf.yml")
    assert (len(graph.names), graph["s199"].params, scanned) == (200, {"v": 0}, [])
    (tmp_path / "bad.yml").write_text("steps:\n  a: {run: 'true'\n")
    with pytest.raises(dagnb.WorkflowError, match=r"bad.yml, line 3: YAML does not parse "
                       r"\(expected ',' or '}', but got '<stream end>'\)"):
        dagnb.load(tmp_path / "bad.yml")
    assert scanned  # (said by the pure-Python reader, as before)


def test_to_yaml_of_a_function_step_without_a_file_names_the_call_with_one() -> None:
    # (it said to write the workflow to a file, not how)
    graph = dagnb.Graph("g", [dagnb.Step("load", func=_a_function)])
    with pytest.raises(WorkflowError) as refused:
        graph.to_yaml()
    assert str(refused.value).endswith("write it to a file: graph.to_yaml('pipeline.yml')")


def _a_function() -> int:
    return 1
