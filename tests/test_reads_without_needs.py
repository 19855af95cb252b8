"""A shell step that reads ``$DAGNB_IN/<step>`` of a step it does not need is refused
when the graph is checked: that folder is never there ($DAGNB_IN holds the steps it
needs), and the run failed saying its paths are relative to the workflow's folder."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb import Graph, MissingDependencyError, Step
from dagnb.cli import main

MAKE = 'echo hi > "$DAGNB_OUT/d.txt"'
REFUSED = "step 'use' reads $DAGNB_IN/make but does not need 'make'; add needs: [make]"


def _workflow(folder: Path, use: str, needs: str = "") -> Path:
    path = folder / "wf.yml"
    path.write_text(f"name: t\nsteps:\n  make:\n    run: '{MAKE}'\n"
                    f"  use:\n    run: '{use}'\n{needs}")
    return path


@pytest.mark.parametrize("command", [["validate"], ["plan"], ["run", "--executor", "local"]])
def test_the_cli_refuses_a_read_of_a_step_not_needed_before_anything_runs(
        workdir: Path, capsys: pytest.CaptureFixture[str], command: list[str]) -> None:
    _workflow(workdir, 'wc -l "$DAGNB_IN/make/d.txt"')
    assert main([command[0], "wf.yml", *command[1:]]) == 2
    assert capsys.readouterr().err == f"dagnb: error: wf.yml: {REFUSED}\n"
    assert not (workdir / ".dagnb_cache" / ".runs").exists()  # (make did not run either)


def test_the_cli_runs_it_once_it_needs_the_step(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _workflow(workdir, 'wc -l < "$DAGNB_IN/make/d.txt" > "$DAGNB_OUT/n.txt"',
              needs="    needs: [make]\n")
    assert main(["validate", "wf.yml"]) == 0
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    assert "2 succeeded" in capsys.readouterr().out


@pytest.mark.parametrize("command", [
    'wc -l "$DAGNB_IN/make/d.txt"',
    "wc -l ${DAGNB_IN}/make/d.txt",
    'wc -l "${DAGNB_IN}/make/d.txt"',
    'wc -l "$DAGNB_IN"/make/d.txt',
    'cd "$DAGNB_IN/make"',
    'ls $DAGNB_IN/make;',
    "set -e\n# counts the lines\nwc -l $DAGNB_IN/make/d.txt | tee $DAGNB_OUT/n",
])
def test_the_graph_refuses_each_way_of_writing_the_read(command: str) -> None:
    graph = Graph("g", [Step("make", run=MAKE), Step("use", run=command)])
    with pytest.raises(MissingDependencyError) as refused:
        graph.validate()
    assert str(refused.value) == REFUSED


def test_an_argv_command_is_read_too() -> None:
    graph = Graph("g", [Step("make", run=MAKE),
                        Step("use", run=["bash", "-c", 'wc -l "$DAGNB_IN/make/d.txt"'])])
    with pytest.raises(MissingDependencyError, match=r"add needs: \[make\]$"):
        graph.validate()


def test_a_step_needed_only_through_another_is_not_in_its_inputs() -> None:
    graph = Graph("g", [Step("make", run=MAKE), Step("mid", run="true", needs=["make"]),
                        Step("use", run='cat "$DAGNB_IN/mid/x" "$DAGNB_IN/make/d.txt"',
                             needs=["mid"])])
    with pytest.raises(MissingDependencyError) as refused:
        graph.validate()
    assert str(refused.value) == ("step 'use' reads $DAGNB_IN/make but does not need "
                                  "'make'; add it to its needs: [mid, make]")


def test_every_step_read_and_not_needed_is_named() -> None:
    graph = Graph("g", [Step("a", run="true"), Step("b", run="true"),
                        Step("use", run='cat $DAGNB_IN/a/x $DAGNB_IN/b/y $DAGNB_IN/a/z')])
    with pytest.raises(MissingDependencyError) as refused:
        graph.validate()
    assert str(refused.value) == ("step 'use' reads $DAGNB_IN/a and $DAGNB_IN/b but does "
                                  "not need 'a' or 'b'; add needs: [a, b]")


def test_graph_run_refuses_it_before_anything_runs(workdir: Path) -> None:
    graph = Graph("g", [Step("make", run=MAKE), Step("use", run='wc -l "$DAGNB_IN/make/d.txt"')])
    with pytest.raises(MissingDependencyError, match=r"^step 'use' reads \$DAGNB_IN/make "):
        graph.run(executor="local")
    assert graph.last_run is None


@pytest.mark.parametrize("command", [
    'ls "$DAGNB_IN"/*',  # a glob: whatever is there
    "ls $DAGNB_IN/ma*",
    'cat "$DAGNB_IN/extra/x"',  # no step of that name: a folder of the user's?
    "cat $DAGNB_IN/make.csv",  # no step's folder (a step's name has no dot)
    "echo $DAGNB_INPUT/make",  # another variable
    "# was: cat $DAGNB_IN/make/d.txt\ntrue",  # a comment
    'ls "$DAGNB_IN/use"',  # its own name: not another step
])
def test_what_names_no_other_steps_folder_is_not_refused(command: str) -> None:
    try:
        Graph("g", [Step("make", run=MAKE), Step("use", run=command)]).validate()
    except MissingDependencyError as refused:
        pytest.fail(f"refused: {refused}")


def test_a_python_step_is_not_read(workdir: Path) -> None:
    def use() -> str:
        return "$DAGNB_IN/make/d.txt"  # (its inputs are its arguments)

    graph = Graph("g", [Step("make", run=MAKE), Step("use", func=use)])
    graph.validate()
    assert graph.run(executor="local").result("use") == "$DAGNB_IN/make/d.txt"


def test_a_run_failing_on_an_input_not_needed_says_so_not_the_folder_it_ran_in(
        workdir: Path) -> None:
    # (the name is made as it runs: the check of the command cannot see it)
    _workflow(workdir, 'n=make; wc -l "$DAGNB_IN/$n/d.txt"')
    run = Graph.from_yaml(workdir / "wf.yml").run(executor="local")
    error = run.status_rows()["use"]["error"]
    assert "/use/in/make/d.txt: No such file or directory" in error
    assert error.endswith("; $DAGNB_IN holds only the outputs of the steps it needs, and "
                          "it does not need 'make': add needs: [make]")
