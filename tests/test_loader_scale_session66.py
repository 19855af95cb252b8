"""Big workflows (session 66's scale pass): a file without aliases is never refused for
its size; a save writes with libyaml, the same text; `defaults: {python: ...}`."""

from __future__ import annotations

import itertools
import time
import warnings

import pytest
import yaml

import dagnb
from dagnb import Step, WorkflowError
from dagnb.workflows import loader
from dagnb.workflows.loader import dump, loads, parse_yaml


def work(n=0):
    return n


def reads_a_file(n=0):
    with open("rows.csv") as rows:
        return rows.read(n)


_MAP, _SEQ, _STR = (f"tag:yaml.org,2002:{kind}" for kind in ("map", "seq", "str"))


def _mapping(pairs: dict) -> yaml.MappingNode:
    return yaml.MappingNode(_MAP, [(yaml.ScalarNode(_STR, key), value)
                                   for key, value in pairs.items()])


def _scalars(*texts: str) -> yaml.SequenceNode:
    return yaml.SequenceNode(_SEQ, [yaml.ScalarNode(_STR, text) for text in texts])


def _saved_nodes(steps: int) -> yaml.MappingNode:
    """The YAML nodes of a workflow as dagnb saves one (as `g.to_yaml()` wrote
    rt_15000.yml): 14 values a step, no alias (built here: libyaml reads the text in 3 s)."""
    return _mapping({"name": yaml.ScalarNode(_STR, "rt"), "steps": _mapping({
        f"s{i}": _mapping({"run": yaml.ScalarNode(_STR, "true"), "needs": _scalars(f"s{i - 1}"),
                           "params": _mapping({"n": yaml.ScalarNode(_STR, str(i))}),
                           "tags": _scalars("a")})
        for i in range(steps)})})


# -- 1. aliases count what they add; a big file holds no alias -------------------------------
@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_big_saved_workflow_without_aliases_passes_the_alias_check():
    """rt_15000.yml, 15,000 shell steps dagnb saved itself, was refused: `YAML aliases
    expand to more than 200000 values`, though it holds no alias (every value counted)."""
    loader._check_expansion(_saved_nodes(15_000), "rt_15000.yml")  # (no error)


def _laughs(levels: int, width: int) -> str:
    """a: `width` values; each next level: `width` aliases of the level before."""
    text = "a: &a [" + ", ".join(["x"] * width) + "]\n"
    for level in range(1, levels):
        previous, name = "abcdefghij"[level - 1], "abcdefghij"[level]
        text += f"{name}: &{name} [" + ", ".join([f"*{previous}"] * width) + "]\n"
    return text


@pytest.mark.parametrize(("limit", "refused"), [(1220, False), (1219, True)])
def test_aliases_count_each_use_beyond_the_first_expanded(monkeypatch, limit, refused):
    """a holds 10 values (11 with its list), written once; b uses a 10 times more (110
    added) and so holds 111 expanded; c uses b 10 times (1,110): 1,220 added in all."""
    monkeypatch.setattr(loader, "MAX_ALIAS_VALUES", limit)
    if refused:
        with pytest.raises(WorkflowError, match=r"^w\.yml: YAML aliases expand to more than "
                                                r"1219 values beyond those written; write "):
            parse_yaml(_laughs(3, 10), "w.yml")
    else:
        assert len(parse_yaml(_laughs(3, 10), "w.yml")["c"][9][9]) == 10


def test_a_billion_laughs_is_still_refused_at_once():
    started = time.monotonic()
    with pytest.raises(WorkflowError, match="aliases expand to more than 1000000 values"):
        parse_yaml(_laughs(10, 9), "w.yml")  # (9**10: 3.5 billion values)
    assert time.monotonic() - started < 2


def test_one_anchor_merged_into_every_step_of_a_big_workflow_loads():
    text = "defaults: &d {run: echo, params: {a: 1, b: 2}, tags: [x, y]}\nsteps:\n"
    text += "".join(f"  s{i}: {{<<: *d}}\n" for i in range(20_000))  # (13 values each)
    assert parse_yaml(text, "w.yml")["steps"]["s19999"]["params"] == {"a": 1, "b": 2}


# -- 2. a save: libyaml's emitter, the same text; each step once ------------------------------
def _python_text(data) -> str:
    return yaml.dump(data, Dumper=loader._BlockDumper, sort_keys=False,
                     default_flow_style=False, allow_unicode=True, width=float("inf"))


_PIECES = ["", " ", "a", "\n", "\t", "\r", "#", ": ", "- ", "?", "'", '"', "---", "...",
           "|", ">", "*", "&", "!", "%", "@", "`", "{", "[", ",", "\\", "0", "1e3", "yes",
           "~", "null", "12:30", "0o7", "é", "日本", "😀", "\x85", "\u2028", "\ufeff", "\x00",
           "\x7f", "x" * 150]


def _values() -> list[str]:
    return ["".join(pair) for pair in itertools.product(_PIECES, repeat=2)]


def test_a_saved_text_is_the_one_pure_python_writes():
    """libyaml writes faster, and differently in places (an emoji escaped, a long key
    written `? key`): where it would, the save writes with PyYAML's Python emitter."""
    documents = [{"steps": {"s": {"run": value, "env": {"V": value}, "tags": [value, "a"],
                                  "params": {"p": {"q": [value, 1.5, None, True, 10**40]}}}}}
                 for value in _values()]
    documents += [{value or "k": 1} for value in _values()]
    documents += [{char * n: [n, {}, []]} for char in "kéあ'" for n in range(28, 132)]
    by_libyaml = [one for one in documents if loader._libyaml_writes_alike(one)]
    assert len(by_libyaml) > len(documents) / 3  # (the many it writes: compared)
    assert [loader._yaml_text(one) for one in documents] == list(map(_python_text, documents))


@pytest.mark.skipif(not yaml.__with_libyaml__, reason="PyYAML without libyaml")
def test_a_save_writes_with_libyaml(monkeypatch):
    """PyYAML's pure-Python emitter took 10 of the 12 s a 20,000-step save took."""
    graph = dagnb.Graph("g")
    for i in range(50):
        graph.add(Step(f"s{i}", run="echo hi\necho there", needs=[f"s{i - 1}"] if i else []))
    written = []
    monkeypatch.setattr(yaml.emitter.Emitter, "emit", lambda *args: written.append(args))
    text = dump(graph)
    assert written == [] and "  s49:\n    run: |-\n      echo hi\n" in text


def test_a_save_makes_its_data_once_and_checks_no_step_again(tmp_path, monkeypatch):
    """The save made graph_to_dict twice, and each Python step anew (replace()), a
    fifth of its time."""
    monkeypatch.chdir(tmp_path)
    graph = dagnb.Graph("g")
    for i in range(20):
        graph.add(Step(f"s{i}", func=work, params={"n": i}))
    made, checked = [], []
    real = loader.graph_to_dict
    monkeypatch.setattr(loader, "graph_to_dict", lambda *a: made.append(1) or real(*a))
    post_init = Step.__post_init__
    monkeypatch.setattr(Step, "__post_init__", lambda s: checked.append(1) or post_init(s))
    graph.to_yaml("w.yml")
    assert (len(made), len(checked)) == (1, 0)
    saved = dagnb.load(tmp_path / "w.yml")
    assert saved["s7"].params == {"n": 7} and saved["s7"].func(n=3) == 3


def test_a_python_step_on_dask_saves(tmp_path, monkeypatch):
    """It was refused: its stand-in, a command, cannot run on dask."""
    monkeypatch.chdir(tmp_path)
    graph = dagnb.Graph("g")
    graph.add(Step("a", func=work, executor="dask", params={"n": 1}))
    graph.to_yaml("w.yml")
    assert dagnb.load(tmp_path / "w.yml")["a"].executor == "dask"


def test_the_unmoved_python_steps_warning_names_a_few(tmp_path, monkeypatch):
    """It named all 20,000 steps of a big save (200 KB in one line), and its
    `(open('data.txt'))` read as if the steps opened that file."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "sub").mkdir()
    graph = dagnb.Graph("g")
    for i in range(30):
        graph.add(Step(f"s{i}", func=reads_a_file, params={"n": i}))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        graph.to_yaml("sub/w.yml")
    [message] = [str(w.message) for w in caught if "workdir" in str(w.message)]
    assert "a relative path in the code of 's0', 's1', 's2', 's3', 's4' and 25 more " \
           "('rows.csv') is read from there" in message, message
    assert len(message) < 500


# -- 3. defaults: {python: FILE.py:FUNCTION} ---------------------------------------------------
def test_defaults_python_is_each_step_s_that_gives_no_command(tmp_path):
    """`defaults: {python: steps.py:work}` was refused (`unknown key 'python'`), though
    defaults take any step field."""
    (tmp_path / "steps.py").write_text("def work(n=0):\n    return n\n\n"
                                       "def other(n=0):\n    return -n\n")
    graph = loads("defaults:\n  python: steps.py:work\n  params: {n: 1}\nsteps:\n"
                  "  a: {}\n  b: {run: echo hi}\n  c: {python: 'steps.py:other'}\n",
                  source="w.yml", base_dir=tmp_path)
    assert graph["a"].func.__name__ == "work" and graph["a"].run is None
    assert graph["b"].run == "echo hi" and graph["b"].func is None
    assert graph["c"].func.__name__ == "other"


def test_defaults_giving_both_run_and_python_are_refused(tmp_path):
    with pytest.raises(WorkflowError, match=r"^w\.yml: defaults give both run and python"):
        loads("defaults: {python: 'steps.py:work', run: echo}\nsteps:\n  a: {}\n",
              source="w.yml", base_dir=tmp_path)
