"""``dagnb plan`` after an upstream step that will run: the steps keyed on its result
*may* run (a run serves them from the cache when it makes the same output again: early
cut-off), counted apart from those that surely run; and a ``cache: session`` step, which
each ``dagnb run`` runs, says why. Each plan is borne out by the run that follows it."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_cli import dagnb
from test_cli_plan import _plan

from dagnb import Graph, Step
from dagnb.cli import main
from dagnb.errors import CacheMissError
from dagnb.runtime.plan import NEW_SESSION

UPSTREAM = """\
steps:
  make:
    {cache}run: '{make} > "$DAGNB_OUT/n.txt"'
  total:
    needs: [make]
    run: '{total} "$DAGNB_IN/make/n.txt" > "$DAGNB_OUT/t.txt"'
  side:
    run: 'echo side'
"""

SESSION = """\
steps:
  sess:
    cache: session
    run: 'echo s > "$DAGNB_OUT/s.txt"'
  after:
    needs: [sess]
    run: 'cat "$DAGNB_IN/sess/s.txt" > "$DAGNB_OUT/a.txt"'
"""

MAY_RUN_TOTAL = "may run: runs if make's result changes (make will run)"


@pytest.fixture
def options(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """``wf.yml`` in the working folder, and the options keying it as a local run on a
    cache of its own."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cache").mkdir()
    return ["wf.yml", "--executor", "local", "--cache-dir", str(tmp_path / "cache")]


def _write(tmp_path: Path, *, cache: bool = True, make: str = "echo 1",
           total: str = "cat") -> None:
    """``wf.yml``: make's command, total's (and make with ``cache: false``)."""
    (tmp_path / "wf.yml").write_text(UPSTREAM.format(
        cache="" if cache else "cache: false\n    ", make=make, total=total))


def _states(capsys: pytest.CaptureFixture[str], *args: str) -> dict[str, str]:
    """``dagnb run ARGS``: each step's state, from its status table."""
    assert main(["run", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines.index(next(line for line in lines if line.split()[:2] == ["step", "state"]))
    return {line.split()[0]: line.split()[1] for line in lines[header + 1:-1]}


def test_a_step_after_an_uncached_upstream_may_run_and_the_run_serves_it_cached(
        options, capsys, tmp_path):
    _write(tmp_path, cache=False)
    _states(capsys, *options)
    rows, last = _plan(capsys, *options)
    assert rows["make"][2] == "it runs every time: the step has cache=False"
    assert rows["total"] == ["False", "-", MAY_RUN_TOTAL]
    assert last == "1 of 3 steps cached, 1 would run, 1 may run (if an upstream's result changes)"
    assert _states(capsys, *options) == {"make": "succeeded", "total": "cached",
                                         "side": "cached"}


@pytest.mark.parametrize(("edit", "total_ran"), [
    ("echo  1", "cached"),  # the command edited, its output the same: early cut-off
    ("echo 2", "succeeded"),  # another output: total runs on it
])
def test_a_step_after_an_edited_upstream_may_run_and_the_run_decides(
        options, capsys, tmp_path, edit, total_ran):
    _write(tmp_path)
    _states(capsys, *options)
    _write(tmp_path, make=edit)
    rows, last = _plan(capsys, *options)
    assert rows["make"][2].startswith("command changed echo 1 >")
    assert rows["total"] == ["False", "-", MAY_RUN_TOTAL]
    assert last.startswith("1 of 3 steps cached, 1 would run, 1 may run")
    assert main(["explain", *options[:1], "total", *options[1:]]) == 0
    assert capsys.readouterr().out == f"{MAY_RUN_TOTAL}\n"
    assert _states(capsys, *options) == {"make": "succeeded", "total": total_ran,
                                         "side": "cached"}


def test_a_step_whose_own_command_changed_after_an_upstream_that_runs_surely_runs(
        options, capsys, tmp_path):
    _write(tmp_path)
    rows, last = _plan(capsys, *options)  # (an empty cache: no entry of total at all)
    assert rows["total"] == ["False", "-", "no entry yet for step 'total'"]
    assert last == "0 of 3 steps cached, 3 would run"
    _states(capsys, *options)
    _write(tmp_path, make="echo  1", total="cat -n")
    rows, last = _plan(capsys, *options)
    assert rows["total"][2].startswith("command changed cat ")
    assert last == "1 of 3 steps cached, 2 would run"
    assert main(["explain", *options[:1], "total", *options[1:]]) == 0
    assert capsys.readouterr().out.startswith("command changed cat ")
    assert _states(capsys, *options)["total"] == "succeeded"


def test_fail_on_miss_still_refuses_a_run_whose_upstream_runs_though_the_rest_may_hit(
        options, capsys, tmp_path):
    """make runs (edited), total may hit after it: the run would run make, so it is
    refused, and total is listed as the step that may run."""
    _write(tmp_path)
    _states(capsys, *options)
    _write(tmp_path, make="echo  1")
    assert main(["run", *options, "--cache-mode", "fail-on-miss"]) == 2
    err = capsys.readouterr().err
    assert "1 step would run, 1 may run" in err and "  make: command changed echo 1 >" in err
    assert f"  total: {MAY_RUN_TOTAL}" in err


def test_a_graph_plan_and_fail_on_miss_say_the_same_of_an_uncached_upstream(workdir):
    graph = Graph("g", [Step("make", run="echo 1 > $DAGNB_OUT/n.txt", cache=False),
                        Step("total", run="cat $DAGNB_IN/make/n.txt", needs=["make"])])
    graph.run(executor="local")
    planned = graph.plan(executor="local")  # (the notebook's %dagger plan table)
    assert planned.set_index("step")["reason"].to_dict() == {
        "make": "it runs every time: the step has cache=False", "total": MAY_RUN_TOTAL}
    with pytest.raises(CacheMissError, match="1 step would run, 1 may run") as refused:
        graph.run(executor="local", cache_mode="fail-on-miss")
    assert [name for name, _ in refused.value.misses] == ["make", "total"]
    assert graph.run(executor="local").states() == {"make": "succeeded", "total": "cached"}


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_session_step_is_planned_to_run_in_each_dagnb_run_and_does(options, tmp_path):
    """Each dagnb run is a process, whose session store starts empty: plan said "no
    entry yet" of a step that ran twice, as if the cache had lost it."""
    (tmp_path / "wf.yml").write_text(SESSION)
    for _ in range(2):
        assert dagnb("run", *options, cwd=tmp_path).returncode == 0
    planned = dagnb("plan", *options, cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    rows = {line.split()[0]: line for line in planned.stdout.splitlines()}
    assert rows["sess"].endswith(NEW_SESSION) and "no entry yet" not in planned.stdout
    assert rows["after"].endswith("may run: runs if sess's result changes (sess will run)")
    assert planned.stdout.splitlines()[-1].startswith("0 of 2 steps cached, 1 would run")
    explained = dagnb("explain", *options[:1], "sess", *options[1:], cwd=tmp_path)
    assert explained.stdout == f"{NEW_SESSION}\n", explained.stderr
    ran = dagnb("run", *options, cwd=tmp_path)
    states = {line.split()[0]: line.split()[1] for line in ran.stdout.splitlines()
              if line.split()[:1] in (["sess"], ["after"])}
    assert states == {"sess": "succeeded", "after": "cached"}


def test_in_one_process_a_session_step_is_planned_cached_once_it_ran(workdir):
    """A kernel's (or a script's) plan foresees a run of the same session: there the
    session's entries are found."""
    graph = Graph("g", [Step("sess", run="echo s", cache="session")])
    assert graph.plan(executor="local")["reason"].tolist() == [NEW_SESSION]
    graph.run(executor="local")
    assert graph.plan(executor="local")["cached"].tolist() == [True]
    assert graph.run(executor="local").states() == {"sess": "cached"}


def test_fail_on_miss_gives_a_session_step_the_reason_plan_gives(options, tmp_path, capsys):
    """It said "no entry yet" and to fill the cache first, of a step no cache can fill."""
    (tmp_path / "wf.yml").write_text(SESSION)
    assert dagnb("run", *options, cwd=tmp_path).returncode == 0
    assert main(["run", *options, "--cache-mode", "fail-on-miss"]) == 2
    assert f"  sess: {NEW_SESSION}" in capsys.readouterr().err


def test_a_step_given_a_need_on_a_step_that_runs_says_the_need_was_added(options, tmp_path,
                                                                         capsys):
    """Its entry lacks the new upstream, so it can never match: plan said "its cache
    entry has expired" of a step with no ttl."""
    _write(tmp_path)
    assert _states(capsys, *options) == dict.fromkeys(("make", "total", "side"), "succeeded")
    wf = tmp_path / "wf.yml"
    wf.write_text(wf.read_text().replace("needs: [make]", "needs: [make, side]")
                  .replace("'echo side'", "'echo side two'"))
    rows, _ = _plan(capsys, *options)
    assert rows["total"][2] == "upstream side added", rows["total"]
    assert "expired" not in " ".join(" ".join(row) for row in rows.values())
