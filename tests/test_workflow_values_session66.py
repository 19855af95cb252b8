"""Values a workflow file and ``--param`` give, read as a reader means them (QA session 66).

1. A step's ``params`` were read the YAML 1.1 way with no word: ``{version: 3.10, mode:
   yes, code: 0755, at: 12:30}`` reached the step as ``3.1 true 493 750``, and ``dagnb
   validate`` said valid (an env value written so was refused, with its quoting).
2. ``-p rows=050`` was 40, ``0755`` 493 and ``cutoff=9:45`` 585, YAML 1.2 and JSON
   reading 50, 755 and the text.
3. A Python step's parameter that names nothing and a mount that does not exist were
   said without the ``file.yml:`` every other mistake of a workflow file starts with.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import dagnb
from dagnb import Graph, Step
from dagnb.cli import main
from dagnb.errors import InvalidStepError, WorkflowError
from dagnb.workflows import templates
from dagnb.workflows.loader import dump, load, loads
from dagnb.workflows.params import as_written, read_value

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A temp working dir and cache, no user templates, no config file."""
    monkeypatch.delenv("DAGNB_TEMPLATE_PATH", raising=False)
    monkeypatch.setenv("DAGNB_CONFIG", "none")
    monkeypatch.chdir(tmp_path)
    dagnb.configure(cache_directory=tmp_path / "cache", executor="local")
    yield tmp_path
    monkeypatch.undo()


def _refused(text: str, capsys, *command: str) -> str:
    """The one line ``dagnb validate wf.yml`` and ``dagnb run wf.yml`` (both exit 2) say
    of the file ``text``, without the ``dagnb: error:`` they start it with."""
    Path("wf.yml").write_text(text, encoding="utf-8")
    said = []
    for argv in (["validate", "wf.yml", *command], ["run", "wf.yml", *command]):
        capsys.readouterr()
        assert main(argv) == 2
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("dagnb: error: "), err
        said.append(err.removeprefix("dagnb: error: ").rstrip("\n"))
    assert said[0] == said[1]
    return said[0]


def _given(text: str, capsys, *params: str) -> str:
    """The ``params given:`` line of ``dagnb validate wf.yml -p ...``."""
    Path("wf.yml").write_text(text, encoding="utf-8")
    capsys.readouterr()
    assert main(["validate", "wf.yml", *[f"-p{p}" for p in params]]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    return out.splitlines()[-1]


# -- 1. a param YAML 1.1 reads apart from YAML 1.2 (or from its text) is refused -------------


@pytest.mark.parametrize(("params", "said"), [
    ("{at: 12:30}", 'step \'a\': params at: 12:30 reads as the number 750 in YAML; quote it: '
                    '"12:30"'),
    ("{code: 0755}", 'step \'a\': params code: 0755 reads as the number 493 in YAML; quote '
                     'it: "0755"'),
    ("{rows: 050}", 'step \'a\': params rows: 050 reads as the number 40 in YAML; quote it: '
                    '"050"'),
    ("{mode: yes}", 'step \'a\': params mode: yes reads as true in YAML; quote it: "yes", or '
                    'write true for the boolean'),
    ("{mode: Off}", 'step \'a\': params mode: Off reads as false in YAML; quote it: "Off", or '
                    'write false for the boolean'),
    ("{n: 1_000}", 'step \'a\': params n: 1_000 reads as the number 1000 in YAML; quote it: '
                   '"1_000"'),
    ("{codes: ['0644', 0755]}", 'step \'a\': params codes[1]: 0755 reads as the number '
                                '493 in YAML; quote it: "0755"'),
    ("{times: {open: 9:45}}", 'step \'a\': params times.open: 9:45 reads as the number 585 '
                              'in YAML; quote it: "9:45"'),
])
def test_a_step_param_yaml_reads_as_another_value_is_refused_naming_file_step_and_param(
        workspace, capsys, params, said) -> None:
    text = f"steps:\n  a:\n    params: {params}\n    run: 'true'\n"
    assert _refused(text, capsys) == f"wf.yml: {said}"


def test_the_defaults_params_and_a_declared_default_are_refused_alike(workspace,
                                                                      capsys) -> None:
    defaults = "defaults:\n  params: {at: 12:30}\nsteps:\n  a: {run: 'true'}\n"
    assert _refused(defaults, capsys) == (
        'wf.yml: defaults: params at: 12:30 reads as the number 750 in YAML; quote it: '
        '"12:30"')
    declared = ("parameters:\n  at: {type: str, default: 12:30}\n"
                "steps:\n  a: {run: 'true', params: {at: '12:30'}}\n")
    assert _refused(declared, capsys) == (
        'wf.yml: parameter \'at\': default: 12:30 reads as the number 750 in YAML; quote '
        'it: "12:30"')
    mode = ("parameters:\n  mode: {type: int, default: 0755}\n"
            "steps:\n  a: {run: 'true', params: {mode: 493}}\n")
    assert _refused(mode, capsys) == (
        'wf.yml: parameter \'mode\': default: 0755 reads as the number 493 in YAML; quote '
        'it: "0755"')


def test_the_step_sees_the_values_quoted_as_written(workspace, capsys) -> None:
    Path("wf.yml").write_text(
        "steps:\n  a:\n    params: {version: '3.10', mode: 'yes', code: '0755', at: '12:30'}"
        "\n    run: echo \"$DAGNB_PARAM_VERSION $DAGNB_PARAM_MODE $DAGNB_PARAM_CODE "
        "$DAGNB_PARAM_AT\" > seen.txt\n", encoding="utf-8")
    assert main(["run", "wf.yml"]) == 0
    assert Path("seen.txt").read_text().split() == ["3.10", "yes", "0755", "12:30"]


def test_a_value_both_yamls_and_a_reader_take_alike_still_loads() -> None:
    """Numbers in other spellings that read as one number either way, and a value a
    declared type settles (a bool's yes), load as before: ``0.50`` and ``3.10`` too, one
    number to both YAMLs (a ratio, most often; an env value's ``3.10`` is refused)."""
    graph = loads("parameters:\n"
                  "  flag: {type: bool, default: yes}\n"
                  "  ratio: {type: float, default: 0.50}\n"
                  "steps:\n  a:\n    run: 'true'\n"
                  "    params: {flag: on, ratio: 0.50, half: 0.5, one: 1.0, small: 1e-3, "
                  "plus: +5, hex: 0x1F, dot: .5, none: ~, t: true, text: '12:30', "
                  "d: 09:45, lr: 0.10, v: 3.10}\n", source="wf.yml")
    assert graph["a"].params == {
        "flag": True, "ratio": 0.5, "half": 0.5, "one": 1.0, "small": 0.001, "plus": 5,
        "hex": 31, "dot": 0.5, "none": None, "t": True,
        "text": "12:30", "d": "09:45", "lr": 0.1, "v": 3.1}
    assert graph.parameters["flag"].default is True


def test_the_repos_workflows_and_templates_still_validate(workspace, capsys) -> None:
    for path in sorted((REPO / "workflows").glob("*.yml")):
        assert main(["validate", str(path)]) == 0, capsys.readouterr().err
    for template_id in templates.table()["id"]:
        assert main(["templates", "new", template_id, "-o", f"{template_id}.yml"]) == 0
        assert main(["validate", f"{template_id}.yml"]) == 0, capsys.readouterr().err


def test_a_saved_workflow_quotes_such_text_and_loads_again_as_it_was() -> None:
    values = {"at": "12:30", "code": "0755", "mode": "yes", "version": "3.10",
              "octal": "0o755", "neg": "-.5", "items": ["9:45", "050", 7]}
    graph = Graph("rt", [Step("a", run="true", params=values)])
    text = dump(graph)
    assert "at: '12:30'" in text and "code: '0755'" in text and "octal: '0o755'" in text
    assert loads(text)["a"].params == values
    for value in values.values():  # (--param gives each back as the value it was)
        assert read_value("x", as_written(value), in_file=[5]) == value


# -- 2. --param reads such values as YAML 1.2 does --------------------------------------------

_NUMBER_PARAM = "steps:\n  s:\n    params: {rows: 5, flag: false}\n    run: 'true'\n"


@pytest.mark.parametrize(("given", "read"), [
    ("050", "50"), ("0755", "755"), ("9:45", '"9:45"'), ("09:45", '"09:45"'),
    ("yes", '"yes"'), ("0o17", "15"), ("[050, 9:45]", '[50, "9:45"]'), ("1_000", '"1_000"'),
    # JSON, and what both YAMLs read alike, as before
    ('{"a": 1}', '{"a": 1}'), ('"0755"', '"0755"'), ("1e-3", "0.001"), ("3.10", "3.1"),
    ("true", "true"), ("[1, 2]", "[1, 2]"), ("7", "7"), ("~", "null"),
])
def test_a_param_value_is_read_as_yaml_1_2_reads_it(workspace, capsys, given, read) -> None:
    assert _given(_NUMBER_PARAM, capsys, f"rows={given}") == f"params given: rows={read} for s"


@pytest.mark.parametrize(("given", "read"), [("yes", "true"), ("off", "false"),
                                             ("No", "false"), ("maybe", '"maybe"')])
def test_yes_and_no_are_booleans_for_a_param_the_file_gives_as_a_boolean(
        workspace, capsys, given, read) -> None:
    assert _given(_NUMBER_PARAM, capsys, f"flag={given}") == f"params given: flag={read} for s"


def test_a_declared_parameter_reads_the_value_by_its_type(workspace, capsys) -> None:
    text = ("parameters:\n  rows: {type: int, default: 5}\n"
            "  counts: {type: list, items: int, default: [1]}\n"
            "steps:\n  s:\n    params: {rows: 5, counts: [1]}\n    run: 'true'\n")
    assert _given(text, capsys, "rows=0755", "counts=[050, 10]") == (
        "params given: rows=755 for s; counts=[50, 10] for s")


# -- 3. the graph's own refusals name the workflow file ---------------------------------------


def test_a_python_steps_parameter_that_names_nothing_names_the_file(workspace,
                                                                     capsys) -> None:
    Path("mod.py").write_text("def load(rows):\n    return rows\n", encoding="utf-8")
    text = "steps:\n  a:\n    python: mod.py:load\n"
    said = ("step 'a': parameter 'rows' of load() names no upstream step in needs and no "
            "param; add it to needs or params")
    assert _refused(text, capsys) == f"wf.yml: {said}"
    with pytest.raises(WorkflowError) as caught:
        load("wf.yml")
    assert str(caught.value) == f"wf.yml: {said}"


def test_a_mount_that_does_not_exist_names_the_file(workspace, capsys) -> None:
    text = "steps:\n  a:\n    mounts: {nothere.txt: /data/x.txt}\n    run: 'true'\n"
    gone = workspace.resolve() / "nothere.txt"
    said = (f"step 'a' mounts 'nothere.txt', which does not exist ({gone}); create it or fix "
            "the path")
    assert _refused(text, capsys) == f"wf.yml: {said}"
    Path("sub").mkdir()
    Path("sub/wf.yml").write_text(text.replace("nothere", "gone"), encoding="utf-8")
    with pytest.raises(InvalidStepError, match=r"^sub/wf\.yml: step 'a' mounts 'gone\.txt'"):
        load("sub/wf.yml").run()
    # a graph of no file says it as before
    graph = Graph("g", [Step("a", run="true", mounts={"nothere.txt": "/x"})],
                  base_dir=workspace)
    with pytest.raises(InvalidStepError, match=r"^step 'a' mounts 'nothere\.txt'"):
        graph.check_mounts()


def test_the_value_loads_once_the_fix_the_refusal_names_is_applied() -> None:
    for bare, quoted in (("12:30", '"12:30"'), ("yes", '"yes"'), ("0755", '"0755"')):
        with pytest.raises(WorkflowError, match=f'quote it: {quoted}'):
            loads(f"steps:\n  a: {{run: 'true', params: {{v: {bare}}}}}\n")
        assert loads(f"steps:\n  a: {{run: 'true', params: {{v: {quoted}}}}}\n")[
            "a"].params == {"v": json.loads(quoted)}


def test_a_misspelt_mount_names_the_close_one_beside_it(workspace, capsys) -> None:
    # (it said "create it or fix the path" of 'dat' beside a folder 'data')
    Path("data").mkdir()
    text = "steps:\n  a:\n    mounts: {./dat/: /data}\n    run: 'true'\n"
    assert _refused(text, capsys).endswith("which does not exist "
                                           f"({workspace.resolve() / 'dat'}); did you mean "
                                           "'./data'?")
