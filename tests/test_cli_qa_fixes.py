"""The dagnb command in daily terminal use (QA pass 2): nohup, caching off in plan and
explain, the bar on a narrow terminal, history of files that do not load, file:// URLs
percent-encoded, the notebook refusal's words, negative durations, and a command group
named without its action."""

from __future__ import annotations

import io
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from dagnb import config
from dagnb.cli import main
from dagnb.testing import wait_until

TWO_STEPS = ("steps:\n  a:\n    run: echo a > \"$DAGNB_OUT/a\"\n"
             "  b:\n    needs: [a]\n    run: cat \"$DAGNB_IN/a/a\"\n")


@pytest.fixture
def here(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """``wf.yml`` of two steps in the working folder, its cache filled by a local run."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(TWO_STEPS)
    assert main(["run", "wf.yml", "--executor", "local", "--cache-mode", "read-write"]) == 0
    return tmp_path


# -- 2. nohup --------------------------------------------------------------------------


def test_a_termination_signal_ignored_at_start_stays_ignored() -> None:
    """``nohup`` ignores SIGHUP so that a run outlives the terminal: dagnb's handler
    replaced that, and a logout cancelled the run."""
    from dagnb.cli import _handle_termination, _stop_like_ctrl_c

    before = {number: signal.getsignal(number) for number in (signal.SIGHUP, signal.SIGTERM)}
    try:
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
        _handle_termination()
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
        assert signal.getsignal(signal.SIGTERM) is _stop_like_ctrl_c
    finally:
        for number, handler in before.items():
            signal.signal(number, handler)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_nohup_run_goes_on_through_a_sighup(tmp_path: Path) -> None:
    marker = "sleep 1.7351"
    (tmp_path / "w.yml").write_text(f"steps:\n  slow: {{run: '{marker}; echo done'}}\n")
    child = subprocess.Popen(  # (as nohup starts it: SIGHUP ignored)
        [sys.executable, "-m", "dagnb.cli", "run", "w.yml", "--no-cache", "--executor", "local"],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        preexec_fn=lambda: signal.signal(signal.SIGHUP, signal.SIG_IGN))

    def running() -> bool:
        return bool(subprocess.run(["pgrep", "-f", marker], capture_output=True).stdout)

    assert wait_until(running, timeout=15), "the step never started"
    child.send_signal(signal.SIGHUP)
    out, err = child.communicate(timeout=30)
    assert child.returncode == 0, err
    assert "1 succeeded" in out


# -- 3. plan and explain with caching off ----------------------------------------------


def _plan_rows(capsys: pytest.CaptureFixture[str], *args: str) -> list[list[str]]:
    assert main(["plan", "wf.yml", "--executor", "local", *args]) == 0
    lines = capsys.readouterr().out.splitlines()
    return [line.split(None, 3) for line in lines[1:-1]]


@pytest.mark.parametrize(("setting", "origin"), [
    ("env", "DAGNB_CACHE_MODE"),
    ("file", "dagnb.yaml"),
    ("older", "DAGNB_CACHING_ENABLED"),
])
def test_plan_and_explain_say_every_step_runs_when_the_setting_turns_caching_off(
        here, capsys, monkeypatch, setting, origin):
    if setting == "env":
        monkeypatch.setenv("DAGNB_CACHE_MODE", "off")
    elif setting == "older":
        monkeypatch.setenv("DAGNB_CACHING_ENABLED", "false")
    else:
        (here / "dagnb.yaml").write_text('workflow_defaults:\n  cache_mode: "off"\n')
    config.reload()  # (the fixture's run read the settings)
    capsys.readouterr()
    rows = _plan_rows(capsys)
    assert [row[:3] for row in rows] == [["a", "False", "-"], ["b", "False", "-"]]
    reason = rows[0][3]
    assert reason.startswith("it runs every time: caching is off (cache_mode 'off' from ")
    assert reason.endswith(f"{origin})")
    assert main(["explain", "wf.yml", "b", "--executor", "local"]) == 0
    assert capsys.readouterr().out == f"{reason}\n"


def test_plan_and_explain_take_the_cache_mode_of_the_run_they_foresee(here, capsys):
    capsys.readouterr()
    off = _plan_rows(capsys, "--cache-mode", "off")
    assert {row[1] for row in off} == {"False"}
    assert off[0][3] == "it runs every time: caching is off (cache_mode 'off' asked for)"
    for mode in ("read-only", "fail-on-miss", "read-write"):  # (each looks the cache up)
        assert {row[1] for row in _plan_rows(capsys, "--cache-mode", mode)} == {"True"}
    assert main(["explain", "wf.yml", "a", "--executor", "local", "--cache-mode", "off"]) == 0
    assert "caching is off" in capsys.readouterr().out
    assert main(["plan", "wf.yml", "--cache-mode", "never"]) == 2
    assert "--cache-mode 'never'" in capsys.readouterr().err


def test_a_plan_with_caching_off_still_refuses_an_unknown_step(here, capsys, monkeypatch):
    monkeypatch.setenv("DAGNB_CACHE_MODE", "off")
    config.reload()
    assert main(["explain", "wf.yml", "nope"]) == 2
    assert "no step named 'nope'" in capsys.readouterr().err


# -- 4. the bar on a narrow terminal ----------------------------------------------------


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def _drawn(printer, screen, names) -> list[str]:
    """The run's events on ``printer``: the lines drawn, the stderr note among them."""
    from dagnb.runtime.events import EventLog

    events = EventLog()
    printer.on_event(events.emit("run", None, state="started", steps=len(names)))
    for name in names:
        printer.on_event(events.emit("state", name, 1, state="running"))
    with printer.stderr_above_bar():
        print("dagnb: a note above the bar", file=sys.stderr)
    for name in names:
        printer.on_event(events.emit("state", name, 1, state="succeeded"))
    printer.finish()
    return screen.getvalue().replace("\n", "\r").split("\r")


def test_the_bar_fits_the_terminal_line_and_its_erasing_too(monkeypatch) -> None:
    """24 bar characters and the running steps padded to 60 made ~91 columns: each
    redraw on an 80-column terminal wrapped and left a line behind."""
    from dagnb.views.progress import ProgressPrinter

    screen, note = _Terminal(), _Terminal()
    monkeypatch.setattr(sys, "stderr", note)
    printer = ProgressPrinter(screen, min_interval=0, columns=lambda: 40)
    names = [f"a_step_with_a_long_name_{i}" for i in range(4)]
    frames = _drawn(printer, screen, names)
    assert max(map(len, frames)) == 39, frames
    assert frames[-2].startswith("[" + "#" * 24 + "] 4/4")
    assert screen.getvalue().count("\n") == 1
    assert "a note above the bar" in note.getvalue()


def test_the_bar_reads_the_width_as_shutil_does(monkeypatch) -> None:
    from dagnb.views.progress import ProgressPrinter

    monkeypatch.setenv("COLUMNS", "50")
    screen = _Terminal()  # (no descriptor: COLUMNS, else 80)
    frames = _drawn(ProgressPrinter(screen, min_interval=0), screen, ["x" * 70])
    assert max(map(len, frames)) == 49
    monkeypatch.delenv("COLUMNS")
    screen = _Terminal()
    frames = _drawn(ProgressPrinter(screen, min_interval=0), screen, ["x" * 90])
    assert max(map(len, frames)) == 79


# -- 6, 7. dagnb history ---------------------------------------------------------------


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_history_of_every_run_masks_secrets_without_importing_python_steps(tmp_path):
    """To learn the secrets to mask, dagnb history loaded each run's workflow file,
    importing its python: steps' modules (a model loaded at import: seconds, per file)."""
    (tmp_path / "steps.py").write_text(
        "with open('imports.log', 'a') as log:\n    log.write('imported\\n')\n\n"
        "def fit(code):\n    print('fit')\n")
    (tmp_path / "wf.yml").write_text(
        "defaults: {secrets: 'PIN, OTHER'}\n"
        "steps:\n  fit: {python: 'steps.py:fit', params: {code: '0'}}\n"
        "  sh: {run: 'true', secrets: [NOTE], params: {note: ''}}\n")
    env = {**os.environ, "PIN": "4711", "NOTE": "9z8y", "OTHER": "unused-3c9d"}
    done = subprocess.run([sys.executable, "-m", "dagnb", "run", "wf.yml", "--executor",
                           "local", "-p", "code=4711", "-p", "note=9z8y"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    imported = (tmp_path / "imports.log").read_text()
    listed = subprocess.run([sys.executable, "-m", "dagnb", "history"], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120, env=env)
    assert listed.returncode == 0, listed.stderr
    assert listed.stdout.splitlines()[1].endswith('{"code":"***","note":"***"}')
    assert (tmp_path / "imports.log").read_text() == imported



def test_history_of_a_file_named_reads_its_yaml_alone(tmp_path, monkeypatch, capsys):
    """dagnb history wf.yml loaded the file, importing its python: steps' module: its
    top level ran, and one that needs an unset variable made the file "not load now"."""
    (tmp_path / "steps.py").write_text(
        "import os\nwith open('imports.log', 'a') as log:\n    log.write('imported\\n')\n"
        "URL = os.environ['DATABASE_URL']\n\ndef fit(code):\n    print('fit')\n")
    (tmp_path / "wf.yml").write_text(
        "name: nightly\ndefaults: {secrets: [PIN]}\n"
        "steps:\n  fit: {python: 'steps.py:fit', params: {code: '0'}}\n")
    env = {**os.environ, "PIN": "4711", "DATABASE_URL": "sqlite://"}
    done = subprocess.run([sys.executable, "-m", "dagnb", "run", "wf.yml", "--executor",
                           "local", "-p", "code=4711"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stdout + done.stderr
    imported = (tmp_path / "imports.log").read_text()
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.setenv("PIN", "4711")
    assert main(["history", "wf.yml"]) == 0
    out, err = capsys.readouterr()
    assert err == ""
    assert out.splitlines()[1].split()[3] == "wf.yml"
    assert out.splitlines()[1].endswith('{"code":"***"}')
    assert (tmp_path / "imports.log").read_text() == imported


def test_history_of_a_file_mid_edit_or_renamed_reads_the_run_records(here, capsys):
    capsys.readouterr()
    with open("wf.yml", "a") as edited:
        edited.write("  c: [\n")  # (YAML that does not parse)
    assert main(["history", "wf.yml"]) == 0
    out, err = capsys.readouterr()
    assert out.splitlines()[1].split()[3] == "wf.yml"
    assert err.startswith("dagnb: wf.yml does not load now (wf.yml, line ")
    assert err.rstrip().endswith("its runs found in the run records by its path")
    Path("wf.yml").rename("renamed.yml")
    assert main(["history", "wf.yml"]) == 0
    out, err = capsys.readouterr()
    assert len(out.splitlines()) == 2 and "does not exist" in err
    assert main(["history", "never.yml"]) == 2  # (no record either: a typo)
    assert capsys.readouterr().err == ("dagnb: error: workflow file 'never.yml' does not "
                                       "exist; check the path\n")


def test_history_names_two_workflows_of_one_name_by_their_paths(tmp_path, monkeypatch,
                                                                 capsys):
    monkeypatch.chdir(tmp_path)
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "wf.yml").write_text("steps:\n  s: {run: 'true'}\n")
        assert main(["run", f"{folder}/wf.yml", "--executor", "local"]) == 0
    (tmp_path / "c.yml").write_text("steps:\n  s: {run: 'true'}\n")
    assert main(["run", "c.yml", "--executor", "local"]) == 0
    capsys.readouterr()
    assert main(["history"]) == 0
    shown = [line.split()[3] for line in capsys.readouterr().out.splitlines()[1:]]
    assert shown == ["a/wf.yml", "b/wf.yml", "c.yml"]


# -- 8. a percent-encoded file:// URL ---------------------------------------------------


def test_cache_push_to_a_file_url_written_as_a_url_decodes_its_path(here, capsys):
    store = here / "my store é"
    assert main(["cache", "push", store.as_uri()]) == 0  # file:///...my%20store%20%C3%A9
    assert (store / "entries").is_dir()
    assert [path.name for path in here.glob("my*")] == [store.name]
    (here / ".dagnb_cache").rename(here / "old")
    assert main(["cache", "pull", store.as_uri()]) == 0
    assert "2 entries copied" in capsys.readouterr().out


# -- 9. the refusal of a notebook ------------------------------------------------------


@pytest.mark.parametrize(("argv", "magic"), [
    (["plan", "nb.ipynb"], "%dagger plan there"),
    (["explain", "nb.ipynb", "a"], "%dagger cache explain NAME there"),
])
def test_plan_of_a_notebook_names_the_magic_and_what_fail_on_miss_tells(
        tmp_path, monkeypatch, capsys, argv, magic):
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert f"open it and run {magic}" in err
    assert ("find the first cell that would run a step with dagnb run NOTEBOOK --cache-mode "
            "fail-on-miss (it stops at that cell)") in err


# -- 10. negative durations ------------------------------------------------------------


@pytest.mark.parametrize(("argv", "said"), [
    (["run", "wf.yml", "--timeout", "-1s"], "'-1s' is not a duration"),
    (["run", "wf.yml", "--timeout", "-.5"], "'-.5' is not a duration"),
    (["cache", "prune", "--max-age", "-1d"], "--max-age '-1d' is not a duration"),
    (["cache", "clear", "--older-than", "-1d"], "--older-than '-1d' is not a duration"),
    (["cache", "prune", "--max-size", "-1G"], "--max-size '-1G' is not a size"),
])
def test_a_negative_duration_gets_dagnbs_message_not_argparses(here, capsys, argv, said):
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.startswith("dagnb: error: ") and said in err and "expected one" not in err


def test_only_an_option_taking_a_value_joins_a_negative_looking_word() -> None:
    from dagnb.cli import _signed_values_joined

    assert _signed_values_joined(["run", "w.yml", "--timeout", "-1s", "-p", "x=-1"]) == [
        "run", "w.yml", "--timeout=-1s", "-p", "x=-1"]
    assert _signed_values_joined(["run", "--timeout", "-h"]) == ["run", "--timeout", "-h"]
    assert _signed_values_joined(["run", "--", "--timeout", "-1"]) == [
        "run", "--", "--timeout", "-1"]


# -- a command or group named without its action ---------------------------------------


@pytest.mark.parametrize(("argv", "actions"), [
    (["templates"], ["list", "show", "new"]),
    (["cache"], ["verify", "list", "stats", "clear", "prune", "push", "pull"]),
    ([], ["run", "history", "logs", "cache"]),
])
def test_a_missing_action_lists_the_actions_above_the_error(
        argv: list[str], actions: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """The bare usage line (``dagnb templates [-h] ACTION ...``) named none of them."""
    with pytest.raises(SystemExit) as ended:
        main(argv)
    out, err = capsys.readouterr()
    assert ended.value.code == 2 and out == ""
    listed = [line.split()[0] for line in err.splitlines() if line.startswith("    ")
              and not line.startswith("     ")]
    assert set(actions) <= set(listed), err
    assert err.splitlines()[-1].endswith("error: the following arguments are required: "
                                         + ("COMMAND" if not argv else "ACTION"))


def test_a_mistyped_workflow_file_is_said_with_the_file_meant(
        here: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """``wf.yaml`` for ``wf.yml``: "check the path" left the user to find it."""
    capsys.readouterr()
    for command in (["run", "wf.yaml"], ["validate", "wf.yaml"], ["history", "wf.yaml"]):
        assert main(command) == 2
        assert capsys.readouterr().err == ("dagnb: error: workflow file 'wf.yaml' does not "
                                           "exist; did you mean 'wf.yml'?\n")


# -- dagnb logs with no step -------------------------------------------------------------


def test_logs_without_a_step_names_the_files_steps_and_the_failed_one(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> None:
    """``dagnb logs wf.yml`` was argparse's "the following arguments are required:
    step", naming none of them: it now lists them, the newest run's failed ones too."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(TWO_STEPS + "  c:\n    needs: [b]\n    run: exit 3\n")
    assert main(["run", "wf.yml", "--executor", "local"]) == 1
    capsys.readouterr()
    assert main(["logs", "wf.yml"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("dagnb: error: dagnb logs wf.yml STEP: name the step whose lines "
                          "to show, one of a, b, c; in its newest run, ")
    assert err.rstrip().endswith(", 'c' failed") and err.count("\n") == 1
    (tmp_path / "wf.yml").write_text("steps: [")  # mid-edit: the run's steps, read back
    assert main(["logs", "wf.yml"]) == 2
    assert "one of a, b, c; in its newest run" in capsys.readouterr().err


# -- step names as words -----------------------------------------------------------------


def test_run_and_plan_take_step_names_after_the_file_as_targets(here, capsys) -> None:
    """``dagnb run wf.yml a`` (as make, or %dagger run a, reads it) was "unrecognized
    arguments: a"; before or after an option, it runs a and its upstream alone."""
    (here / "wf.yml").write_text(TWO_STEPS + "  c:\n    run: echo c\n")
    capsys.readouterr()
    assert main(["run", "wf.yml", "a", "--executor", "local"]) == 0
    assert "): 1 cached" in capsys.readouterr().out
    assert main(["run", "wf.yml", "--no-cache", "b", "--executor", "local"]) == 0
    assert "): 2 succeeded" in capsys.readouterr().out  # (b and its upstream a)
    assert main(["plan", "wf.yml", "c"]) == 0
    out = capsys.readouterr().out
    assert out.splitlines()[1].split()[:2] == ["c", "False"] and len(out.splitlines()) == 3
    assert main(["run", "wf.yml", "nope"]) == 2
    assert "no step named 'nope' in the graph" in capsys.readouterr().err
    with pytest.raises(SystemExit) as refused:  # (--refresh takes none: said, as before)
        main(["run", "wf.yml", "--refresh", "a"])
    assert refused.value.code == 2
    assert capsys.readouterr().err.endswith(
        "unrecognized arguments: a (--refresh takes no step name: --refresh-step a)\n")


def test_cache_stats_takes_a_step_as_cache_list_does(here, capsys) -> None:
    """``dagnb cache stats --step a`` was refused with "did you mean --help?"."""
    capsys.readouterr()
    assert main(["cache", "stats", "--step", "a"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split()[:3] for line in lines[2:3]] == [["a", "1", "0"]]
    assert lines[3].startswith("1 cache entry, ") and len(lines) == 4
    assert main(["cache", "stats", "--step", "zz"]) == 2
    assert capsys.readouterr().err.endswith("holds no entries of that step; it holds entries "
                                            "of a, b\n")


def test_an_unknown_option_is_not_said_to_mean_help(here, capsys) -> None:
    with pytest.raises(SystemExit):
        main(["cache", "verify", "--step", "a"])
    assert capsys.readouterr().err.endswith("error: unrecognized arguments: --step a\n")


# -- a run named by part of its id ------------------------------------------------------


def test_history_and_logs_take_a_unique_start_or_end_of_a_run_id(here, capsys) -> None:
    """``--run 20261207-084037`` (its time) or ``--run 1c15c5`` (its tail), as a short
    git hash names a commit, was "no run recorded by that id"."""
    assert main(["run", "wf.yml", "--executor", "local", "--cache-mode", "read-write"]) == 0
    capsys.readouterr()
    assert main(["history", "--last", "all"]) == 0
    ids = [line.split()[0] for line in capsys.readouterr().out.splitlines()[1:]]
    assert len(ids) == 2 and ids[0] != ids[1]
    last = ids[1]
    for part in (last[-6:], last[:-3]):
        assert main(["history", "--run", part]) == 0
        assert capsys.readouterr().out.splitlines()[1].startswith(last)
    assert main(["logs", "wf.yml", "b", "--run", last[-6:]]) == 0
    assert f"in run {last}" in capsys.readouterr().err
    common = next(ids[0][:n] for n in range(len(ids[0]), 0, -1) if ids[1].startswith(ids[0][:n]))
    assert main(["history", "--run", common]) == 2
    assert capsys.readouterr().err == (f"dagnb: error: --run {common!r} names 2 recorded runs "
                                       f"({ids[0]}, {ids[1]}); give more of its id\n")


@pytest.mark.parametrize("argv, meant", [
    (["histroy"], "history"), (["runn", "wf.yml"], "run"), (["cache", "ls"], "list"),
    (["cache", "rm"], "clear"), (["cache", "delete"], "clear"), (["templates", "lst"], "list"),
    (["cache", "entries"], "list"),  # (the notebook's %dagger cache entries)
    # (and an option's value not among its choices)
    (["logs", "wf.yml", "a", "--stream", "out"], "stdout"),
    (["run", "wf.yml", "--executor", "dagr"], "dagger"),
])
def test_a_misspelt_or_other_tools_command_names_the_one_meant(argv, meant, capsys) -> None:
    # (argparse listed the choices, not which one: `cache ls` is `cache list`)
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(f"; did you mean {meant!r}?")


@pytest.mark.parametrize("command", ["run", "plan"])
def test_executor_dask_for_a_whole_run_says_it_is_a_step_s_own(command, capsys) -> None:
    # (argparse listed auto, local and dagger alone: dask, which steps may name, looked
    # missing; graph.run(executor="dask") said where it goes)
    with pytest.raises(SystemExit) as refused:
        main([command, "wf.yml", "--executor", "dask"])
    assert refused.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(
        "; dask runs the Python steps that ask for it: write executor: dask on a python: "
        "step of the workflow file (--executor dask on a %%dagger --python cell)")


@pytest.mark.parametrize("argv", [["cache", "explain", "a"], ["cache", "history"],
                                  ["config", "logs"]])
def test_another_command_given_as_an_action_is_named_as_the_command_it_is(argv, capsys):
    # (argparse listed the cache actions: the notebook's %dagger cache explain is the
    # terminal's dagnb explain)
    with pytest.raises(SystemExit) as refused:
        main(argv)
    assert refused.value.code == 2
    assert capsys.readouterr().err.rstrip().endswith(
        f"; {argv[1]} is a command of its own: dagnb {argv[1]} (dagnb {argv[1]} -h says how)")


def test_a_command_like_none_names_none(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["cache", "xyz"])
    assert "did you mean" not in capsys.readouterr().err


def test_explain_without_a_step_names_the_files_steps(here, capsys) -> None:
    # (argparse's "the following arguments are required: step" named none of them)
    assert main(["explain", "wf.yml"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "dagnb explain wf.yml STEP: name the step to explain, one of a, b; "
        "dagnb plan wf.yml says which would run")


def test_config_show_takes_setting_names(tmp_path, monkeypatch, capsys) -> None:
    # (as %dagger config KEY does; it refused them as unrecognized arguments)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGNB_CONFIG", "none")
    monkeypatch.setenv("DAGNB_CACHE_MODE", "read-only")
    assert main(["config", "show", "cache_mode"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 and lines[1].split() == ["cache_mode", "'read-only'", "DAGNB_CACHE_MODE"]
    assert main(["config", "show", "cache_mod"]) == 2
    assert capsys.readouterr().err.strip().endswith(
        "dagnb config show: unknown setting 'cache_mod'; did you mean 'cache_mode'?")


def test_config_set_says_where_settings_are_written(capsys) -> None:
    with pytest.raises(SystemExit):
        main(["config", "set", "cache_mode", "off"])
    assert "; write a setting as a KEY: VALUE line of dagnb.yaml" in capsys.readouterr().err


def test_a_command_given_no_file_names_the_ones_there(tmp_path, monkeypatch, capsys) -> None:
    # (it said "required: workflow, STEP", STEP being optional, and named no file)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGNB_CONFIG", "none")
    with pytest.raises(SystemExit):
        main(["run"])
    assert capsys.readouterr().err.rstrip().endswith(
        "required: workflow; name a workflow file (none here: dagnb templates new ID FILE "
        "writes one from a template)")
    (tmp_path / "workflows").mkdir()
    for name in ("workflows/etl.yml", "report.ipynb", "dagnb.yaml", "notes.txt"):
        (tmp_path / name).write_text("")
    with pytest.raises(SystemExit):
        main(["logs"])
    assert capsys.readouterr().err.rstrip().endswith(
        "required: workflow; name one: report.ipynb, workflows/etl.yml")
    (tmp_path / "analysis.py").write_text("# %%\nimport os\n\n# %%dagger a\n# echo hi\n")
    (tmp_path / "script.py").write_text("print('no cells')\n")  # (a script: not named)
    with pytest.raises(SystemExit):
        main(["run"])
    assert capsys.readouterr().err.rstrip().endswith(
        "required: workflow; name one: analysis.py, report.ipynb, workflows/etl.yml")


def test_a_folder_given_as_the_workflow_names_its_files(tmp_path, monkeypatch, capsys) -> None:
    # (it said "is a folder; name a .yml file", naming none of those in it)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "workflows").mkdir()
    (tmp_path / "workflows" / "etl.yml").write_text(TWO_STEPS)
    (tmp_path / "empty").mkdir()
    assert main(["run", "workflows"]) == 2
    assert capsys.readouterr().err.strip() == (
        "dagnb: error: workflow file 'workflows' is a folder; name a .yml file in it: "
        "workflows/etl.yml")
    assert main(["validate", "empty"]) == 2
    assert capsys.readouterr().err.strip().endswith("is a folder; name a .yml file (it holds none)")


def test_a_value_split_by_a_space_is_named_quoted_not_taken_for_a_step(here, capsys) -> None:
    # (--timeout 10 minutes ran "minutes" as a target: "no step named 'minutes'")
    assert main(["run", "wf.yml", "--timeout", "10", "minutes"]) == 2
    assert capsys.readouterr().err.strip() == (
        "dagnb: error: no step is named 'minutes'; if it is part of a value with a space, "
        "quote the value: --timeout '10 minutes'")
    assert main(["plan", "wf.yml", "--cache-mode", "read-write", "b"]) == 0  # (a step: b)
    assert capsys.readouterr().out.splitlines()[-1].startswith("2 of 2 steps cached")


def test_an_optional_word_after_an_option_takes_its_place(here, capsys, tmp_path) -> None:
    # (argparse placed it only before the options: "unrecognized arguments: b")
    assert main(["logs", "wf.yml", "--tail", "1", "b"]) == 0
    assert capsys.readouterr().out == "a\n"
    assert main(["templates", "new", "pandas-etl", "-p", "rows=5", "q3.yml"]) == 0
    assert (tmp_path / "q3.yml").is_file()
    with pytest.raises(SystemExit):  # (an unknown option's value stays refused with it)
        main(["logs", "wf.yml", "--bogus", "b"])
    assert "unrecognized arguments: --bogus b" in capsys.readouterr().err
