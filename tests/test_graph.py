"""Graph: add/replace/remove, validation errors, order and selection."""

from __future__ import annotations

import asyncio
import copy
import graphlib
import random
import re
from pathlib import Path

import pytest

from dagnb import (
    ConfigError,
    CycleError,
    DuplicateStepError,
    Graph,
    InvalidStepError,
    MissingDependencyError,
    Step,
    StepNotFoundError,
)


def diamond() -> Graph:
    return Graph(
        "d",
        [
            Step("load", run="true", tags=["io"]),
            Step("left", run="true", needs=["load"]),
            Step("right", run="true", needs=["load"], tags=["slow"]),
            Step("join", run="true", needs=["left", "right"]),
            Step("other", run="true"),
        ],
    )


def test_order_is_topological_and_stable() -> None:
    assert diamond().order() == ["load", "other", "left", "right", "join"]


def _graphlib_order(graph: Graph, wanted: set[str]) -> list[str]:
    """The order as graphlib's get_ready/done loop gives it, each batch by position."""
    needs = {s.name: [d for d in s.needs if d in wanted] for s in graph if s.name in wanted}
    position = {name: i for i, name in enumerate(graph.names)}
    sorter = graphlib.TopologicalSorter(needs)
    sorter.prepare()
    ordered: list[str] = []
    while sorter.is_active():
        ready = sorted(sorter.get_ready(), key=position.__getitem__)
        ordered.extend(ready)
        sorter.done(*ready)
    return ordered


def test_order_is_graphlibs_batches_in_the_order_steps_were_added() -> None:
    rng = random.Random(7)
    for _ in range(300):
        names = [f"n{i}" for i in range(rng.randint(1, 25))]
        graph = Graph("g")
        for name in rng.sample(names, len(names)):  # added in another order than needed
            i = names.index(name)
            needs = rng.sample(names[:i], min(i, rng.randint(0, 3)))
            graph.add(Step(name, run="true", needs=needs))
        wanted = set(rng.sample(names, rng.randint(1, len(names))))
        assert graph.order() == _graphlib_order(graph, set(names))
        assert graph.order(wanted) == _graphlib_order(graph, wanted)


def test_a_cycle_in_a_selection_is_named() -> None:
    graph = Graph("c", [Step("x", run="true"), Step("a", run="true", needs=["b", "x"]),
                        Step("b", run="true", needs=["a"])])
    with pytest.raises(CycleError, match=r"cycle: (a -> b -> a|b -> a -> b)"):
        graph.order({"a", "b"})


def test_cycle_names_the_cycle() -> None:
    graph = Graph("c", [Step("a", run="true", needs=["b"]), Step("b", run="true", needs=["a"])])
    with pytest.raises(CycleError, match=r"cycle: (a -> b -> a|b -> a -> b)") as info:
        graph.validate()
    assert info.value.cycle[0] == info.value.cycle[-1]


def test_a_step_needing_itself_is_named_with_the_fix() -> None:
    # (it read "the steps' needs form a cycle: a -> a; remove one of these needs")
    graph = Graph("c", [Step("a", run="true", needs=["a"])])
    with pytest.raises(CycleError) as refused:
        graph.validate()
    assert str(refused.value) == "step 'a' needs itself; remove 'a' from its needs"
    assert refused.value.cycle == ["a", "a"]


def test_unknown_need_suggests_the_closest_name() -> None:
    graph = Graph("g", [Step("prepare", run="true"), Step("train", run="true", needs=["prepar"])])
    with pytest.raises(
        MissingDependencyError,
        match=r"step 'train' needs 'prepar', which is not a step; did you mean 'prepare'",
    ):
        graph.validate()


def test_duplicate_name_and_replace() -> None:
    graph = diamond()
    with pytest.raises(DuplicateStepError, match=r"step name 'load' is already in graph"):
        graph.add(Step("load", run="false"))
    graph.replace(Step("load", run="echo new"))
    assert graph["load"].run == "echo new" and graph.names[0] == "load"


def test_remove_and_unknown_name() -> None:
    graph = diamond()
    graph.remove("other")
    assert "other" not in graph
    with pytest.raises(
        StepNotFoundError, match=r"no step named 'lef' in the graph; did you mean 'left'"
    ):
        graph["lef"]


def test_select_targets_with_upstream_tags_and_failed() -> None:
    graph = diamond()
    assert graph.select("left") == ["load", "left"]
    assert graph.select(tags="slow") == ["load", "right"]
    assert graph.select() == graph.order()
    with pytest.raises(StepNotFoundError, match=r"^no step has tag 'nope'; the steps' tags "
                                                 r"are 'io', 'slow'$"):
        graph.select(tags="nope")
    with pytest.raises(StepNotFoundError, match=r"^no step has tag 'slwo'; did you mean "
                                                 r"'slow'\?$"):
        graph.select(tags=["slow", "slwo"])  # a typo beside a good tag is no quiet subset


def test_unknown_tags_are_named_plainly() -> None:
    """It said "no step has tag ['x', 'y']", a Python list, and "tag" for several."""
    with pytest.raises(StepNotFoundError, match=r"^no step has tags 'nope', 'zzz'; the "
                                                 r"steps' tags are 'io', 'slow'$"):
        diamond().select(tags=["zzz", "nope"])
    untagged = Graph("u", [Step("a", run="true")])
    with pytest.raises(StepNotFoundError, match=r"^no step has tag 'x'; no step has any tag$"):
        untagged.select(tags="x")


def test_a_target_that_is_also_tagged_selects_no_more_than_both_ask() -> None:
    # Counted twice, the chosen steps looked like the whole graph: every step ran.
    graph = diamond()
    assert graph.select(["left", "right", "load"], tags=["io", "slow"]) == [
        "load", "left", "right"]  # (five names asked for, of five steps: not all of them)
    assert graph.select(["left", "left", "load", "load", "left"]) == ["load", "left"]


def test_function_steps_infer_needs_from_parameters() -> None:
    graph = Graph("f")

    @graph.step
    def numbers() -> list[int]:
        return [1, 2]

    @graph.step(params={"k": 2})
    def scaled(numbers: list[int], k: int) -> list[int]:
        return [n * k for n in numbers]

    assert graph["scaled"].needs == ("numbers",)
    assert scaled([1], 3) == [3]  # the function stays callable


def test_function_parameter_that_matches_nothing_is_an_error() -> None:
    graph = Graph("f")
    graph.replace(Step("use", func=lambda missing: missing, needs=()))
    with pytest.raises(
        InvalidStepError, match=r"parameter 'missing' of <lambda>\(\) names no upstream"
    ):
        graph.validate()


def test_a_callable_object_s_parameter_that_matches_nothing_names_its_class() -> None:
    class Scale:
        def __call__(self, factor: int) -> int:
            return factor

    graph = Graph("f", [Step("use", func=Scale())])
    with pytest.raises(InvalidStepError, match=r"parameter 'factor' of Scale\(\) names no"):
        graph.validate()


def test_a_positional_only_parameter_is_refused_in_one_line_before_anything_runs(
    workdir: Path
) -> None:
    """Results and params are passed by name: "add it to needs" was a TypeError on
    every run (and @graph.step never inferred it)."""
    graph = Graph("f")

    @graph.step
    def numbers() -> list[int]:
        return [1, 2, 3]

    def total(numbers: list[int], /) -> int:
        return sum(numbers)

    refused = (r"^step 'total': parameter 'numbers' of total\(\) is positional-only \(before "
               r"'/'\), and dagnb passes it by name; remove the '/' from total\(\)$")
    for step in (graph.step(total) and graph["total"],
                 Step("total", func=total, needs=["numbers"])):
        graph.replace(step)
        with pytest.raises(InvalidStepError, match=refused):
            graph.run(executor="local", cache=False)
    assert not list(workdir.iterdir())
    graph.replace(Step("total", func=lambda n=6, /: n))  # given nothing: its default
    assert graph.run(executor="local", cache=False).result("total") == 6


def test_a_param_named_like_an_upstream_the_function_takes_is_refused_before_anything_runs(
    workdir: Path
) -> None:
    """The function got the upstream's result, never the param (nor `-p a=7`), which
    only changed the step's key: silently."""
    def a() -> int:
        return 5

    def h(a: int) -> int:
        return a

    graph = Graph("f", [Step("a", func=a), Step("h", func=h, needs=["a"], params={"a": 99})])
    with pytest.raises(InvalidStepError, match=(
            r"^step 'h': param 'a' is upstream step 'a' \(needs\) too, whose result h\(\) "
            r"takes as `a`, never the param; rename the param, or the step$")):
        graph.run(executor="local", cache=False)
    assert not list(workdir.iterdir())
    # a **kwargs takes neither (both are read from dagnb.current()); a command's param
    # and upstream folder do not meet; nor do a param and a need the function does not take
    for step in (Step("h", func=lambda **options: 1, needs=["a"], params={"a": 99}),
                 Step("h", run="echo $DAGNB_PARAM_A", needs=["a"], params={"a": 99}),
                 Step("h", func=lambda b=1: b, needs=["a"], params={"a": 99})):
        graph.replace(step)
        graph.validate()


def test_a_graph_checked_once_is_checked_again_after_each_change(tmp_path: Path) -> None:
    """validate() is remembered until a step changes (every run checks the graph):
    each way of changing it brings its problem back."""
    graph = Graph("f", [Step("a", func=lambda: 1), Step("b", func=lambda a: a, needs=["a"])])
    graph.run(cache=False, cache_directory=tmp_path, executor="local")
    graph.replace(Step("b", func=lambda missing: missing, needs=["a"]))  # same needs
    with pytest.raises(InvalidStepError, match="parameter 'missing'"):
        graph.run(cache=False, cache_directory=tmp_path, executor="local")
    graph.replace(Step("b", func=lambda a: a, needs=["a"]))
    graph.validate()
    graph.remove("a")
    with pytest.raises(MissingDependencyError, match="needs 'a'"):
        graph.validate()
    graph.add(Step("a", func=lambda b: b, needs=["b"]))
    with pytest.raises(CycleError):
        graph.validate()


def test_a_step_changed_while_the_graph_is_checked_is_checked_next_time(monkeypatch) -> None:
    """validate() remembers the graph as it was when the check began: a step replaced
    meanwhile (another thread) is checked by the next validate()."""
    import dagnb.model.graph as graph_module

    graph = Graph("f", [Step("a", func=lambda: 1)])
    check = graph_module._check_signature

    def check_and_change(step: Step) -> None:
        monkeypatch.setattr(graph_module, "_check_signature", check)
        graph.replace(Step("a", func=lambda missing: missing, needs=()))  # mid-check
        check(step)

    monkeypatch.setattr(graph_module, "_check_signature", check_and_change)
    graph.validate()  # checked the step as it was
    with pytest.raises(InvalidStepError, match="parameter 'missing'"):
        graph.validate()


def test_a_copy_of_a_graph_has_steps_of_its_own() -> None:
    graph = Graph("g", [Step("a", func=lambda: 1), Step("b", func=lambda a: a, needs=["a"])])
    graph.validate()
    trial = copy.copy(graph)
    trial.replace(Step("b", func=lambda missing: missing, needs=["a"]))
    graph.validate()  # its own steps, unchanged
    assert graph["b"] is not trial["b"] and graph.names == trial.names
    with pytest.raises(InvalidStepError, match="parameter 'missing'"):
        trial.validate()
    trial.remove("b")
    assert graph.names == ["a", "b"] and trial.names == ["a"]


def test_upstream_and_downstream() -> None:
    graph = diamond()
    assert graph.upstream("join") == {"load", "left", "right"}
    assert graph.downstream("load") == {"left", "right", "join"}


def test_upstream_of_a_step_whose_need_is_missing_names_it() -> None:
    graph = Graph("g", [Step("a", run="true", needs=["b"]), Step("b", run="true", needs=["zz"])])
    for name in ("a", "b"):  # it was a raw KeyError: 'zz'
        with pytest.raises(MissingDependencyError, match=r"^step 'b' needs 'zz', which is not"):
            graph.upstream(name)


@pytest.mark.parametrize(("call", "refused"), [
    (lambda g: g.run(targets=3), r"^targets 3 is not a step name or a list of them; "
                                 r"give one like targets='train' or targets=\['train'\]$"),
    (lambda g: g.plan(3), r"^targets 3 is not a step name"),
    (lambda g: g.run(tags=3), r"^tags 3 is not a tag or a list of them; give one like "
                              r"tags='nightly' or tags=\['nightly'\]$"),
    (lambda g: g.run(tags=0), r"^tags 0 is not a tag"),
    (lambda g: g.explain(3), r"^graph\.explain\(\) takes a step name, not 3; give one "
                             r"like graph\.explain\('train'\)$"),
    (lambda g: Graph(base_dir=3), r"^base_dir 3 is not a path; give a folder as text or a "
                                  r"Path, like base_dir='\.'$"),
])
def test_a_name_or_path_of_the_wrong_type_is_refused_in_one_line_before_anything_runs(
    call, refused, workdir: Path
) -> None:
    with pytest.raises(ConfigError, match=refused):
        call(diamond())
    assert not list(workdir.iterdir())


@pytest.mark.parametrize(("call", "close"), [
    (lambda g: g.run(target="load"), r"graph\.run\(\): unknown option 'target'; .* 'targets'"),
    (lambda g: asyncio.run(g.arun(fail_fst=True)), r"graph\.arun\(\): .* 'fail_fast'"),
    (lambda g: g.warm(raise_on_falure=True), r"graph\.warm\(\): .* 'raise_on_failure'"),
    (lambda g: g.plan(target="load"), r"graph\.plan\(\): .* 'targets'"),
    (lambda g: g.explain("load", cache_dir="c"), r"graph\.explain\(\): .* 'cache_directory'"),
])
def test_an_unknown_option_is_refused_with_the_closest_one_before_anything_runs(
    call, close, workdir: Path
) -> None:
    with pytest.raises(ConfigError, match=close + r"\? \(.*help\(dagnb\.") as refused:
        call(diamond())
    assert "\n" not in str(refused.value) and not list(workdir.iterdir())


def test_an_unknown_option_with_no_close_one_lists_the_options(workdir: Path) -> None:
    with pytest.raises(ConfigError, match=r"unknown option 'zzz'; known options: cache, "
                                          r"cache_directory, .*, use_circuit_breaker \(each"):
        diamond().run(zzz=1)


def test_the_step_decorator_given_a_name_alone_says_how_to_name_or_read_a_step() -> None:
    """``@graph.step("load")`` or ``graph.step("load")`` said "'load' is not a callable
    object", from deep in Step."""
    graph = Graph("g")
    with pytest.raises(TypeError) as refused:
        graph.step("load")
    assert str(refused.value) == (
        "graph.step('load'): step() decorates a function; name its step with "
        "@graph.step(name='load'), and read a step as graph['load']")
    assert graph.names == []


def test_the_step_decorator_reads_needs_as_step_does() -> None:
    """needs="load" was made a tuple of its letters: "step 'b' needs 'l', which is not a
    step"."""
    graph = Graph("g")

    @graph.step
    def load() -> int:
        return 2

    @graph.step(needs="load")
    def doubled(load: int) -> int:
        return load * 2

    @graph.step(needs="load, doubled")
    def total(load: int, doubled: int) -> int:
        return load + doubled

    assert (graph["doubled"].needs, graph["total"].needs) == (("load",), ("load", "doubled"))
    assert graph.run(cache=False, executor="local").result("total") == 6
    with pytest.raises(InvalidStepError, match=r"step 'odd': needs is a mapping, not a list"):
        graph.step(lambda load: 1, name="odd", needs={"load": 1})


@pytest.mark.parametrize(("args", "said"), [
    # (a graph of no step, named by the list: its runs ran nothing and said nothing)
    (lambda: ([Step("a", run="echo a")],), "the first argument is the graph's name, not a "
                                           "list; write Graph('pipeline', [step, ...])"),
    (lambda: (None,), "the first argument is the graph's name, not None"),
    # (a mapping's keys were taken for its steps)
    (lambda: ("g", {"a": Step("a", run="echo a")}), "steps is a list of Steps, not a mapping; "
                                                    "pass list(steps.values())"),
])
def test_graph_arguments_given_the_wrong_way_round_are_refused(args, said) -> None:
    with pytest.raises(InvalidStepError, match=re.escape(said)):
        Graph(*args())


@pytest.mark.parametrize(("field", "value", "example"), [
    ("env", ["TOKEN=hunter2"], "env: {MODE: fast}"),
    ("params", [("password", "hunter2")], "params: {n: 3}"),
    ("mounts", ["data"], "mounts: {data: /data}"),
])
def test_a_mapping_field_given_a_list_is_refused_with_an_example_and_no_value(
        field: str, value: object, example: str) -> None:
    """The list was shown whole: env=["TOKEN=..."] put a secret in the error."""
    with pytest.raises(InvalidStepError) as refused:
        Step("a", run="echo", **{field: value})
    message = str(refused.value)
    assert message.startswith(f"step 'a': {field} must be a mapping, got a list; write it "
                              f"like {example}"), message
    assert "hunter2" not in message
