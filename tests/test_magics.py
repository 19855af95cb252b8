"""The %%dagger and %dagger magics in a real IPython shell (plain-text views)."""

from __future__ import annotations

import asyncio
import re
import threading
import time
from pathlib import Path

import pandas as pd
import pytest
from IPython.core.error import UsageError

import dagnb
import dagnb.notebook.widgets
from dagnb.notebook.overview import HISTORY_COLUMNS, STATUS_COLUMNS, left_aligned
from dagnb.notebook.session import get_session
from dagnb.runtime.frames import LOG_COLUMNS
from dagnb.testing import wait_until
from dagnb.views.live import TextView
from dagnb.views.picture import DagView


def cell(ip, line, body=""):
    return ip.run_cell_magic("dagger", line, body)


def line(ip, text):
    return ip.run_line_magic("dagger", text)


def graph():
    return get_session().graph


def last_run():
    return get_session().last_run


# -- %%dagger cells -----------------------------------------------------------------
def test_shell_cell_prints_output_then_status_row(shell, capsys):
    cell(shell, "hello", "echo hello world\necho to-stderr >&2\n")
    out, err = capsys.readouterr()
    assert out.splitlines()[0] == "hello world"
    assert "to-stderr" in err
    assert "hello  succeeded" in out.splitlines()[-1]
    assert last_run().states() == {"hello": "succeeded"}
    assert isinstance(shell.user_ns["_dagger"]["hello"], Path)


def test_a_python_cells_traceback_names_the_prompt_it_ran_under(shell, capsys):
    """Its frames read ``<dagger-cell err #5>``, a count of definitions the user never
    sees, where IPython's own read ``Cell In[5]``; defined again under the same prompt
    (a form, a loop), a number of its own keeps each definition's lines apart."""
    result = shell.run_cell("%%dagger err --python\ny = 1\nraise ValueError('boom')\n",
                            store_history=True)  # (as a kernel runs it)
    assert isinstance(result.error_in_exec, dagnb.RunFailed)
    number = result.execution_count
    assert isinstance(number, int)
    err = capsys.readouterr().err
    assert f'File "<dagger-cell err In[{number}]>", line 3, in err_cell' in err, err
    cell(shell, "err --python --define-only", "raise KeyError('k')\n")
    assert re.fullmatch(r"<dagger-cell err #\d+>", graph()["err"].func.__code__.co_filename)


def test_rerun_replaces_step_then_hits_cache(shell, capsys):
    cell(shell, "greet", "echo one\n")
    cell(shell, "greet", "echo two\n")
    assert graph()["greet"].run == "echo two\n"
    assert last_run().states() == {"greet": "succeeded"}
    capsys.readouterr()
    cell(shell, "greet", "echo two\n")
    out = capsys.readouterr().out
    assert last_run().states() == {"greet": "cached"}
    assert "── greet (cached output) ──\ntwo" in out
    assert "cached  ✓" in out


def test_upstream_runs_with_target_and_python_gets_results(shell):
    cell(shell, "numbers --define-only", 'seq 1 4 > "$DAGNB_OUT/n.txt"\n')
    assert last_run() is None
    cell(shell, "total --python --needs numbers --outputs total,count",
         "values = [int(x) for x in (numbers / 'n.txt').read_text().split()]\n"
         "total = sum(values)\ncount = len(values)\n")
    assert last_run().states() == {"numbers": "succeeded", "total": "succeeded"}
    assert shell.user_ns["total"] == 10 and shell.user_ns["count"] == 4
    assert shell.user_ns["_dagger"]["total"] == {"total": 10, "count": 4}


def test_python_cell_single_output_and_user_namespace(shell):
    shell.user_ns["FACTOR"] = 3
    cell(shell, "base --python --outputs x", "x = 7\n")
    cell(shell, "scaled --python --needs base --outputs y", "y = base * FACTOR\n")
    assert shell.user_ns["y"] == 21
    assert shell.user_ns["_dagger"]["scaled"] == 21


def test_outputs_named_as_the_results_variable_is_refused(shell):
    with pytest.raises(UsageError, match=r"^--outputs '_dagger': `_dagger` is dagnb's "
                       r"variable of the steps' results; name the output otherwise$"):
        cell(shell, "first --python --outputs _dagger", "_dagger = None\n")
    assert graph().names == []  # the refused cell defined nothing


@pytest.mark.parametrize("assigned", ["None", "1"])
def test_a_results_variable_the_user_replaced_is_a_dict_again_with_a_warning(shell, assigned):
    """Every %%dagger cell after ``_dagger = 1`` failed with an internal TypeError."""
    cell(shell, "a --python --outputs x", "x = 1\n")
    shell.run_cell(f"_dagger = {assigned}")
    with pytest.warns(UserWarning, match=r"^dagnb: `_dagger` holds the steps' results and "
                      r"was set to something else \((NoneType|int)\); it is a dict of them "
                      r"again: keep your value under another name$"):
        cell(shell, "b --python --needs a --outputs y", "y = a + 1\n")
    assert shell.user_ns["_dagger"] == {"a": 1, "b": 2} and shell.user_ns["y"] == 2
    shell.run_cell("_dagger = 1")
    with pytest.warns(UserWarning, match="`_dagger` holds the steps' results"):
        line(shell, "remove b")
    assert shell.user_ns["_dagger"] == {}


def test_python_cell_comment_edit_hits_and_code_edit_runs(shell):
    cell(shell, "calc --python --outputs v", "v = 1 + 1  # first\n")
    cell(shell, "calc --python --outputs v", "# a new comment\nv = 1 + 1  # second\n")
    assert last_run().states() == {"calc": "cached"}
    assert shell.user_ns["v"] == 2
    cell(shell, "calc --python --outputs v", "v = 1 + 2\n")
    assert last_run().states() == {"calc": "succeeded"}
    assert shell.user_ns["v"] == 3


def test_python_cell_helper_change_invalidates(shell):
    shell.run_cell("def helper():\n    return 1\n")
    cell(shell, "use --python --outputs v", "v = helper()\n")
    cell(shell, "use --python --outputs v", "v = helper()\n")
    assert last_run().states() == {"use": "cached"}
    shell.run_cell("def helper():\n    return 2\n")
    cell(shell, "use --python --outputs v", "v = helper()\n")
    assert last_run().states() == {"use": "succeeded"} and shell.user_ns["v"] == 2


def test_python_cell_print_is_step_output(shell, capsys):
    cell(shell, "talk --python", "print('from python')\n")
    assert "from python" in capsys.readouterr().out
    assert list(last_run().logs("talk")["line"]) == ["from python"]


def test_step_options_build_the_step(shell, tmp_path, monkeypatch):
    (tmp_path / "data").mkdir()
    monkeypatch.setenv("TOKEN", "s3cret")
    cell(shell, "opts --image alpine:3.20 --env A=1 --env B=two --secret TOKEN "
         "--mount data:/data --param n=3 --param name=bob --param xs=[1,2] --retries 2 "
         "--timeout 10m --ttl 1h --tags x,y --no-cache --executor local --define-only",
         "echo $A $B\n")
    step = graph()["opts"]
    assert step.image == "alpine:3.20"
    assert dict(step.env) == {"A": "1", "B": "two"}
    assert step.secrets == ("TOKEN",)
    assert dict(step.mounts) == {"data": "/data"}
    assert dict(step.params) == {"n": 3, "name": "bob", "xs": [1, 2]}
    assert (step.retries, step.timeout, step.ttl) == (2, 600.0, 3600.0)
    assert step.tags == ("x", "y") and step.cache is False and step.executor == "local"


def test_env_param_and_secret_reach_the_step(shell, capsys, monkeypatch):
    monkeypatch.setenv("TOKEN", "s3cret")
    cell(shell, "show --env A=1 --param n=5 --secret TOKEN",
         'echo "A=$A N=$DAGNB_PARAM_N T=$TOKEN"\n')
    assert "A=1 N=5 T=***" in capsys.readouterr().out


def test_a_secret_a_step_prints_in_pieces_shows_masked_as_the_cell_runs(shell, capsys,
                                                                       monkeypatch):
    """A step's output is shown a line at a time, masked as its log is: a secret it writes
    in pieces, with a pause and a flush between them, shows as ``***`` (and so does one
    its thread writes so, which goes to the cell's output directly)."""
    secret = "tok-SPLIT-7654321"
    monkeypatch.setenv("TOKEN", secret)
    cell(shell, "sh --secret TOKEN",
         'printf %s "${TOKEN:0:4}"; sleep 0.2; printf \'%s\\n\' "${TOKEN:4}"\n')
    cell(shell, "py --python --secret TOKEN",
         "import os, sys, threading, time\n"
         "t = os.environ['TOKEN']\n"
         "sys.stdout.write(t[:4]); sys.stdout.write(t[4:] + '\\n')\n"
         "print(t[:4], end='', flush=True); time.sleep(0.2); print(t[4:])\n"
         "def later():\n"
         "    print('thread', t[:4], end='', flush=True); time.sleep(0.2); print(t[4:])\n"
         "thread = threading.Thread(target=later); thread.start(); thread.join()\n")
    printed = capsys.readouterr()
    assert secret not in printed.out + printed.err
    assert printed.out.count("***") == 4 and "thread ***" in printed.out
    assert last_run().states() == {"py": "succeeded"}


def test_a_cells_partial_line_held_back_while_a_run_masks_shows_as_the_cell_ends(
        shell, capsys, monkeypatch, workdir):
    """The start of a secret a cell prints with no line end, while a background run
    masks, waits for more; it went out only as the run ended, in clear, in the output
    of the cell running then. It goes as its own cell ends (post_execute), masked."""
    monkeypatch.setenv("TOKEN", "tok-9f8e7d6c5b4a")
    try:
        cell(shell, "slow --secret TOKEN --background",
             "for i in $(seq 400); do [ -f release ] && break; sleep 0.05; done\n")
        from dagnb.executors import capture
        from dagnb.testing import wait_until

        assert wait_until(lambda: capture._masks != (), timeout=10)  # (the run masks)
        capsys.readouterr()
        shell.run_cell("import os\nprint('half', os.environ['TOKEN'][:6], end='')")
        assert capsys.readouterr().out == "half ***"
    finally:
        (workdir / "release").touch()
        last_run().wait(30)


def test_refresh_runs_a_cached_step_again(shell):
    cell(shell, "r", "echo r\n")
    cell(shell, "r --refresh", "echo r\n")
    assert last_run().states() == {"r": "succeeded"}
    cell(shell, "r", "echo r\n")
    assert last_run().states() == {"r": "cached"}


def test_no_cache_always_runs(shell):
    cell(shell, "nc --no-cache", "echo x\n")
    cell(shell, "nc --no-cache", "echo x\n")
    assert last_run().states() == {"nc": "succeeded"}


def test_failed_step_shows_stderr_tail_and_row_not_traceback(shell, capsys):
    result = shell.run_cell(
        "%%dagger broken --no-raise\necho partial\necho 'bad thing' >&2\nexit 3\n")
    out, err = capsys.readouterr()
    assert result.success  # with --no-raise a failed step is data, not an exception
    assert err.count("bad thing") == 1  # printed once, as it came; the row names it too
    assert "last lines of stderr" not in out
    assert out.rstrip().splitlines()[-1].startswith("broken  failed")
    assert "Traceback" not in out + err
    assert last_run().failed == ["broken"]


def test_python_failure_shows_user_traceback_only(shell, capsys):
    cell(shell, "oops --python --no-raise", "x = 1 / 0\n")
    out, _ = capsys.readouterr()
    assert "ZeroDivisionError: division by zero" in out
    assert "dagnb/" not in out
    assert last_run().states() == {"oops": "failed"}


def test_retries_option_sets_the_policy(shell):
    cell(shell, "flaky --retries 3 --define-only", "echo\n")
    assert graph()["flaky"].retries == 3


def test_timeout_option_stops_the_step(shell):
    started = time.monotonic()
    cell(shell, "slow --timeout 0.3s --no-cache --no-raise", "sleep 20\n")
    assert time.monotonic() - started < 10
    assert last_run().states() == {"slow": "failed"}
    assert "timeout" in last_run().status()["error"][0]


# -- usage errors -------------------------------------------------------------------
@pytest.mark.parametrize(("magic_line", "body", "message"), [
    ("", "echo", "the following arguments are required: name"),
    ("x --bogus", "echo", "unrecognized arguments: --bogus"),
    ("x --env NOEQUALS", "echo", "--env 'NOEQUALS' is not KEY=VALUE"),
    ("x --mount nocolon", "echo", "--mount 'nocolon' is not HOST:PATH"),
    ("x --outputs a", "echo", "--outputs names Python variables; add --python"),
    ("x --python", "x = (\n", "line 2 of the cell is not valid Python"),  # (1: %%dagger)
    ("x", "  \n", "the cell is empty"),
    ("bad name", "echo", "unrecognized arguments: name"),
    ("9bad", "echo", "step name '9bad' is not valid"),
    # a --python cell's name is checked first too (its function takes the name)
    ("9bad --python", "x = 1", "^step name '9bad' is not valid; use letters, digits"),
    ("for --python", "x = 1", "^step name 'for' is not valid"),
    ("a.b --python", "x = 1", r"^step name 'a\.b' is not valid"),
    ("x --needs ghost", "echo", "step 'x' needs 'ghost', which is not a step"),
    ("x --timeout soon", "echo", "timeout 'soon' is not a duration"),
    ("x --executor mars", "echo", "invalid choice: 'mars'"),
    ("x --neds a", "echo", "unrecognized arguments: --neds a; did you mean '--needs'?"),
    ("x --tmeout=5s", "echo", "did you mean '--timeout'?"),
    # (nothing like it: the dashes every option shares made --outputs look close)
    ("x --bogus", "echo", "unrecognized arguments: --bogus$"),
    # what a space split, and a cell naming no step, say how to write them
    ("", "echo", "required: name; name the step after %%dagger, as in %%dagger load$"),
    ("bad name", "echo", "unrecognized arguments: name; a step's name is one word: bad_name$"),
    ("x --timeout 10 minutes", "echo", "unrecognized arguments: minutes; a value with a space "
                                       "is quoted: --timeout '10 minutes'$"),
    ("x --no-cache extra", "echo", "unrecognized arguments: extra$"),  # (a flag takes none)
])
def test_bad_cell_input_is_a_usage_error(shell, magic_line, body, message):
    with pytest.raises(UsageError, match=message.replace("(", r"\(").replace("[", r"\[")):
        cell(shell, magic_line, body)


@pytest.mark.parametrize(("ask", "shown"), [
    (lambda ip: cell(ip, "x --help", "echo ran > ran.txt"), "--define-only"),
    (lambda ip: cell(ip, "x -h --needs ghost", "echo ran"), "--needs A,B"),
    (lambda ip: line(ip, "run --help"), "--only-failed"),
    (lambda ip: line(ip, "logs -h"), "--tail N"),
    (lambda ip: line(ip, "--help"), "%dagger status"),
    (lambda ip: line(ip, "help"), "%dagger reset"),
    (lambda ip: line(ip, "status --help"), "%dagger config"),  # (no options: them all)
])
def test_help_asked_of_a_magic_shows_its_options_and_runs_nothing(
        shell, capsys, tmp_path, monkeypatch, ask, shown):
    """IPython's parsers take no --help: it was refused as an unrecognized argument."""
    monkeypatch.chdir(tmp_path)
    assert ask(shell) is None
    out, err = capsys.readouterr()
    assert shown in out and err == ""
    assert len(graph()) == 0 and not (tmp_path / "ran.txt").exists()


@pytest.mark.parametrize(("text", "message"), [
    ("", "%dagger needs a command"),
    ("fly", "unknown %dagger command 'fly'"),
    ("fly", "'fly'; use one of cache, config, graph, history"),
    ("hist", r"'hist'; did you mean %dagger history\?$"),
    ("histroy --run r1", r"'histroy'; did you mean %dagger history --run r1\?$"),
    ("stat", r"'stat'; did you mean %dagger status\?$"),
    ("re", "'re'; use one of"),  # (reset, remove: no one meant)
    ("cache shred", "is not a cache command"),
    ("save", "takes one path"),
    ("load missing.yml", "workflow file 'missing.yml' does not exist"),
    ("config colour=blue", "unknown key 'colour'"),
    ("config nonsense", "unknown setting .nonsense.; known settings: executor"),
    ("run ghost", "no step named 'ghost'"),
    ("logs --tail x", "argument --tail: invalid int value"),
])
def test_bad_line_input_is_a_usage_error(shell, text, message):
    with pytest.raises(UsageError, match=message):
        line(shell, text)


def test_usage_error_shows_one_line_in_the_shell(shell, capsys):
    result = shell.run_cell("%dagger run ghost")
    assert isinstance(result.error_in_exec, UsageError)
    assert "Traceback" not in capsys.readouterr().err


# -- line magics --------------------------------------------------------------------
def _two_steps(ip):
    cell(ip, "a --define-only", "echo from-a\n")
    cell(ip, "b --needs a --define-only", "echo from-b; echo warn >&2\n")


def test_run_all_and_names(shell):
    _two_steps(shell)
    assert line(shell, "run") is None
    assert last_run().states() == {"a": "succeeded", "b": "succeeded"}
    line(shell, "run a --max-concurrency 1")
    assert last_run().states() == {"a": "cached"}
    line(shell, "run b --refresh")
    assert last_run().states() == {"a": "cached", "b": "succeeded"}


def test_run_only_failed_and_tags(shell, tmp_path):
    flag = tmp_path / "ok"
    cell(shell, "good --tags fast --define-only", "echo good\n")
    cell(shell, "shaky --define-only --no-cache", f"test -e {flag}\n")
    line(shell, "run --no-raise")
    assert last_run().states() == {"good": "succeeded", "shaky": "failed"}
    flag.touch()
    line(shell, "run --only-failed")
    assert last_run().states() == {"shaky": "succeeded"}
    line(shell, "run --tags fast")
    assert last_run().states() == {"good": "cached"}


def test_a_skipped_step_whose_upstream_ended_well_since_says_so(shell):
    """Its error still names the failure of its last run; the note says that no longer
    holds, rather than leave it beside the upstream's 'succeeded'."""
    cell(shell, "load --define-only", "exit 1\n")
    cell(shell, "use --needs load --define-only", "echo use\n")
    line(shell, "run --no-raise")
    status = line(shell, "status").set_index("step")
    assert status.loc["use", "state"] == "skipped" and pd.isna(status.loc["use", "note"])
    cell(shell, "load", "echo fixed\n")
    status = line(shell, "status").set_index("step")
    assert status.loc["load", "state"] == "succeeded"
    assert status.loc["use", "state"] == "skipped"
    assert "upstream step 'load' failed" in status.loc["use", "error"]
    assert status.loc["use", "note"] == ("load ended well since it was skipped; run its "
                                         "cell (or %dagger run) to run it")


def test_run_only_failed_with_names_or_tags_reruns_only_what_they_need(shell):
    cell(shell, "a --define-only", "echo a\n")
    cell(shell, "b --needs a --define-only", "exit 1\n")
    cell(shell, "c --tags quick --define-only", "echo c\n")
    line(shell, "run --no-raise")
    assert last_run().failed == ["b"]
    nothing = ("nothing to run again among the steps named or tagged and their upstream: "
               "no step failed, was skipped or was cancelled (see %dagger status)")
    assert str(line(shell, "run c --only-failed")) == nothing
    assert str(line(shell, "run --tags quick --only-failed")) == nothing
    line(shell, "run b --only-failed --no-raise")
    assert last_run().states() == {"a": "cached", "b": "failed"}


def test_status_and_logs_are_dataframes(shell):
    _two_steps(shell)
    line(shell, "run")
    status = line(shell, "status")
    assert isinstance(status, pd.DataFrame)
    assert list(status["step"]) == ["a", "b"]
    logs = line(shell, "logs b")
    assert list(logs["line"]) == ["from-b", "warn"]
    assert list(line(shell, "logs b --stream stderr")["line"]) == ["warn"]
    assert list(line(shell, "logs b --tail 1")["line"]) == ["warn"]


def test_logs_without_a_name_lists_the_steps_and_the_failed_one(shell):
    """``%dagger logs`` was "the following arguments are required: name", naming none."""
    with pytest.raises(UsageError, match=r"^%dagger logs NAME: no steps yet: define one"):
        line(shell, "logs")
    _two_steps(shell)
    cell(shell, "c --needs b --define-only", "exit 3\n")
    line(shell, "run --no-raise")
    with pytest.raises(UsageError) as raised:
        line(shell, "logs --tail 3")
    assert str(raised.value) == ("%dagger logs NAME: name the step whose lines to show, one "
                                 "of a, b, c; 'c' failed in its latest run")


def test_services_with_none_started_say_so_and_stay_a_frame(shell):
    """An empty table printed as 'Empty DataFrame / Columns: [...]'."""
    frame = line(shell, "services")
    assert isinstance(frame, pd.DataFrame) and frame.empty
    assert list(frame.columns) == ["name", "image", "ports", "endpoint", "state", "started"]
    assert repr(frame).startswith("no service started in this session")


def test_graph_returns_a_view(shell):
    _two_steps(shell)
    line(shell, "run a")
    view = line(shell, "graph")
    assert isinstance(view, DagView)
    assert repr(view) == "graph 'notebook' (2 steps)\n  a [succeeded]\n  b [never run]  <- a"


def test_plan_and_cache_commands(shell):
    _two_steps(shell)
    assert list(line(shell, "plan")["cached"]) == [False, False]
    line(shell, "run")
    assert list(line(shell, "plan")["cached"]) == [True, True]
    stats = line(shell, "cache")
    assert isinstance(stats, pd.DataFrame) and set(stats.index) >= {"a", "b"}
    entries = line(shell, "cache entries a")
    assert set(entries["step"]) == {"a"}
    assert "cached" in line(shell, "cache explain b")
    assert line(shell, "cache clear a") == "removed 1 cache entry of 'a'"
    assert line(shell, "cache explain a") == "no entry yet for step 'a'"
    assert line(shell, "cache clear --all") == "removed 1 cache entry"


def test_cache_list_is_the_terminal_s_word_for_the_entries(shell):
    """``%dagger cache list`` (``dagnb cache list`` in a terminal) was refused as no
    cache command: the notebook said ``entries`` alone."""
    _two_steps(shell)
    line(shell, "run")
    listed = line(shell, "cache list")
    pd.testing.assert_frame_equal(listed, line(shell, "cache entries"))
    assert sorted(listed["step"]) == ["a", "b"]
    assert set(line(shell, "cache list a")["step"]) == {"a"}
    with pytest.raises(UsageError, match="did you mean %dagger cache list b"):
        line(shell, "list b")


def test_plan_names_the_command_that_shows_a_diff_not_the_diff_squeezed_in_a_row(shell):
    """A changed multi-line cell's plan row read 'command changed\\n--- cached\\n+++
    now\\n@@ -1,4 ...', every line break an escape; dagnb plan already said where to
    read it."""
    cell(shell, "a", "echo 1\necho 2\necho 3\necho 4\n")
    cell(shell, "a --define-only", "echo 1\necho 2\necho 3b\necho 4\n")
    assert line(shell, "plan")["reason"].tolist() == [
        "command changed (%dagger cache explain a shows the diff)"]
    assert "-echo 3\n+echo 3b" in str(line(shell, "cache explain a"))


def test_plan_shows_each_reason_whole_as_text_and_html(shell):
    """The plan's reasons were cut at pandas' 50 characters, in the cell and the saved
    notebook: "code changed (%dagger cache explain a shows..." lost where to look."""
    cell(shell, "a", "echo 1\necho 2\n")
    cell(shell, "a --define-only", "echo 1\necho 3\n")
    planned = line(shell, "plan")
    reason = "command changed (%dagger cache explain a shows the diff)"
    assert planned["reason"].tolist() == [reason] and len(reason) > 50
    assert reason in repr(planned) and reason in planned._repr_html_()


def test_cache_words_name_the_steps_held_and_the_magic_to_type(shell):
    """``%dagger cache entries lod`` said only "no cache entries of step 'lod'", and a
    push with no store named ``dagnb cache push``, a terminal's command."""
    _two_steps(shell)
    line(shell, "run")
    assert repr(line(shell, "cache entries lod")) == (
        "no cache entries of step 'lod'; it holds entries of a, b")
    with pytest.raises(UsageError, match=r"^cache push needs a store URL, not '[^']+'; name "
                                         r"one \(%dagger cache push s3://bucket/prefix, "):
        line(shell, "cache push")


def test_cache_clear_takes_a_memory_function_s_plain_name(shell, workdir):
    """As ``dagnb cache clear --step square`` does: a Memory function's name without its
    module's part, when one function has it (before: refused, naming the full name)."""
    shell.run_cell("import dagnb\nmemory = dagnb.Memory()\n"
                   "def square(x):\n    return x * x\n"
                   "cached = memory.cache(square)\ncached(3)\n")
    full = next(entry.step for entry in dagnb.cache.default_store().iter_entries())
    assert full.endswith(".square") and full != "square"
    assert line(shell, "cache clear square") == f"removed 1 cache entry of {full!r}"
    assert next(dagnb.cache.default_store().iter_entries(), None) is None


def test_cache_clear_follows_the_cli_s_rules(shell, workdir):
    """A bare clear removes nothing and asks for --all; a step neither cached nor in
    the graph (a typo) is refused; --step NAME and --older-than AGE are understood."""
    _two_steps(shell)
    line(shell, "run")
    where = re.escape(str(dagnb.cache.default_store().location))
    with pytest.raises(UsageError, match=rf"^%dagger cache clear removes every entry in "
                       rf"'{where}'; add --all to confirm, or name a step / --older-than "
                       r"AGE$"):
        line(shell, "cache clear")
    with pytest.raises(UsageError, match=rf"^step 'aa': the cache in '{where}' holds no "
                       r"entries of that step; did you mean 'a'\?$"):
        line(shell, "cache clear aa")
    with pytest.raises(UsageError, match=r"^--step 'zzz': .* of that step; it holds "
                       r"entries of a, b$"):
        line(shell, "cache clear --step zzz")
    with pytest.raises(UsageError, match=r"^--all clears every entry; give it alone"):
        line(shell, "cache clear a --all")
    with pytest.raises(UsageError, match=r"^%dagger cache clear a --step b: name the step once"):
        line(shell, "cache clear a --step b")
    with pytest.raises(UsageError, match=r"^--older-than 30 has no unit; write 30d"):
        line(shell, "cache clear --older-than 30")
    assert len(line(shell, "cache entries")) == 2  # nothing went
    assert line(shell, "cache clear --older-than 1h") == (
        "removed 0 cache entries created more than 1h ago")
    assert line(shell, "cache clear --step a") == "removed 1 cache entry of 'a'"
    assert line(shell, "cache clear a") == "removed 0 cache entries of 'a'"  # the graph's
    with pytest.raises(UsageError, match=r"^explain needs a step name: %dagger cache "
                       r"explain NAME$"):
        line(shell, "cache explain")


def test_services_table(shell):
    assert isinstance(line(shell, "services"), pd.DataFrame)


def test_save_load_reset(shell, tmp_path):
    _two_steps(shell)
    assert line(shell, "save flow.yml") == "saved 2 steps to flow.yml"
    assert (tmp_path / "flow.yml").exists()
    assert line(shell, "reset") == ("the notebook's graph is empty again, and the secrets "
                                    "its runs were given are forgotten")
    assert len(graph()) == 0
    assert line(shell, "load flow.yml") == "loaded 2 steps from flow.yml: a, b"
    assert graph()["b"].needs == ("a",)


def test_a_load_that_replaces_steps_of_the_notebook_says_which(shell, tmp_path):
    """``%dagger load other.yml`` said only "loaded 1 step from other.yml: z", the
    notebook's steps gone from the graph (a save then wrote one step)."""
    _two_steps(shell)
    (tmp_path / "other.yml").write_text("steps:\n  z: {run: echo z}\n  a: {run: echo a}\n")
    assert line(shell, "load other.yml") == (
        "loaded 2 steps from other.yml: z, a; it replaces the notebook's graph, whose b is "
        "out of it now (run a cell to define its step again)")
    assert list(graph().names) == ["z", "a"]


def test_save_exports_python_steps_and_the_cli_runs_them_all_cached(shell, tmp_path):
    import subprocess
    import sys

    shell.run_cell("import json\nSCALE = {'factor': 3}\nrows = [1, 2, 3]\n"
                   "def helper(values):\n    return [v * SCALE['factor'] for v in values]\n")
    cell(shell, "make --param n=4", 'seq "$DAGNB_PARAM_N" > "$DAGNB_OUT/n.txt"; echo made')
    cell(shell, "scaled --python --needs make --outputs total",
         "numbers = [int(x) for x in (make / 'n.txt').read_text().split()]\n"
         "total = sum(helper(numbers + rows))\nprint(json.dumps(total))")
    assert shell.user_ns["total"] == 48
    assert str(line(shell, "save flow.yml")) == "saved 2 steps to flow.yml"
    assert "python: flow_steps.py:scaled_cell" in (tmp_path / "flow.yml").read_text()
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "flow.yml"],
                          cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("2 cached"), done.stdout  # same keys: nothing ran
    reloaded = dagnb.load(tmp_path / "flow.yml")
    assert reloaded.run(cache=False).result("scaled") == 48  # and the code runs alone


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_saved_step_that_calls_display_runs_outside_the_notebook_too(shell, tmp_path):
    """``display()`` is a builtin in a notebook only: the saved module imports it, so the
    step runs from the command too (a NameError once it ran, not cached), under the
    notebook's key (the command finds it cached)."""
    import subprocess
    import sys

    cell(shell, "shows --python --outputs total", "total = 6\ndisplay(total)")
    assert str(line(shell, "save flow.yml")) == "saved 1 step to flow.yml"
    for extra, ending in (([], "1 cached"), (["--no-cache"], "1 succeeded")):
        done = subprocess.run([sys.executable, "-m", "dagnb.cli", "run", "flow.yml", *extra],
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stdout.strip().endswith(ending), done.stdout


def test_a_notebook_variable_that_cannot_be_saved_is_one_line(shell):
    shell.run_cell("import threading\nlock = threading.Lock()\n")
    cell(shell, "p --python --define-only", "with lock:\n    x = 1\n")
    with pytest.raises(UsageError, match=r"notebook variable 'lock' .* cannot be saved"):
        line(shell, "save flow.yml")


def test_save_refuses_a_value_holding_an_object_of_a_notebook_class(shell, tmp_path):
    """Pickled, it names the notebook's class, which no saved file can load: the export
    said nothing and its run failed in the class lookup."""
    shell.run_cell("class Scaler:\n    def __init__(self, f):\n        self.f = f\n"
                   "    def __call__(self, v):\n        return v * self.f\nsc = Scaler(4)\n")
    cell(shell, "b --python --outputs b --define-only", "b = sc(2)\n")
    with pytest.raises(UsageError, match=r"^step 'b': a Python step reads notebook variable "
                                         r"'sc', which holds 'Scaler' defined in the notebook"):
        line(shell, "save flow.yml")
    assert not (tmp_path / "flow_steps.py").exists()


def test_save_refuses_ipython_syntax_naming_the_step(shell, tmp_path):
    cell(shell, "e --python --outputs e --define-only", "e = !echo hi\n")
    with pytest.raises(UsageError, match=r"^step 'e': its cell uses IPython syntax "
                                         r"\(!cmd, %magic\), which runs only in a notebook"):
        line(shell, "save flow.yml")


def _params_set(graph, **values):
    from dagnb.workflows.params import set_params

    set_params(graph, values, "flow.yml")
    return graph


@pytest.mark.parametrize("needs", ["", "--needs load"], ids=["no-needs", "needs"])
def test_save_passes_an_upstream_result_read_as_a_notebook_variable_at_run_time(
        shell, tmp_path, needs):
    """``total`` reads ``rows``, the variable ``load``'s result is published under: the
    saved module held the rows of the save, so the workflow run with ``n=5`` recomputed
    load and still summed the old rows (3, not the notebook's 10)."""
    cell(shell, "load --python --param n=3 --outputs rows", "rows = list(range(n))\n")
    cell(shell, f"total --python {needs} --outputs total", "total = sum(rows)\n")
    assert shell.user_ns["total"] == 3
    assert str(line(shell, "save flow.yml")) == "saved 2 steps to flow.yml"
    module = (tmp_path / "flow_steps.py").read_text()
    assert "rows = [0, 1, 2]" not in module and not (tmp_path / "flow_steps.pkl").exists()
    saved = dagnb.load(tmp_path / "flow.yml")
    assert saved["total"].needs == ("load",)
    assert saved.run(raise_on_failure=True).result("total") == 3
    changed = _params_set(dagnb.load(tmp_path / "flow.yml"), n=5).run(raise_on_failure=True)
    assert changed.result("total") == 10  # as the notebook gives it
    again = _params_set(dagnb.load(tmp_path / "flow.yml"), n=5).run()
    assert again.states() == {"load": "cached", "total": "cached"}
    cell(shell, "load --python --param n=5 --outputs rows", "rows = list(range(n))\n")
    cell(shell, f"total --python {needs} --outputs total", "total = sum(rows)\n")
    assert shell.user_ns["total"] == 10


def test_save_binds_one_of_several_outputs_and_keeps_the_cells_other_reads(shell, tmp_path):
    shell.run_cell("OFFSET = 100\n")
    cell(shell, "load --python --param n=3 --outputs rows,count",
         "rows = list(range(n))\ncount = len(rows)\n")
    cell(shell, "total --python --outputs total", "total = sum(rows) + count + OFFSET\n")
    assert shell.user_ns["total"] == 106
    line(shell, "save flow.yml")
    module = (tmp_path / "flow_steps.py").read_text()
    assert "def total_cell(load):\n    count = load['count']" in module
    assert "OFFSET = 100" in module
    run = _params_set(dagnb.load(tmp_path / "flow.yml"), n=4).run(raise_on_failure=True)
    assert run.result("total") == 6 + 4 + 100


def test_save_gives_a_variable_several_steps_output_from_the_last_of_them(shell, tmp_path):
    """``clean`` reads ``load``'s rows and outputs rows again, as a notebook re-binds a
    name: ``total`` reads the cleaned rows, in the notebook and in the saved workflow."""
    cell(shell, "load --python --param n=4 --outputs rows", "rows = list(range(n))\n")
    cell(shell, "total --python --outputs total --define-only", "total = sum(rows)\n")
    cell(shell, "clean --python --outputs rows", "rows = [r for r in rows if r % 2]\n")
    cell(shell, "total --python --outputs total", "total = sum(rows)\n")
    assert shell.user_ns["total"] == 4
    line(shell, "save flow.yml")
    saved = dagnb.load(tmp_path / "flow.yml")
    assert (saved["clean"].needs, saved["total"].needs) == (("load",), ("clean",))
    assert _params_set(saved, n=8).run(raise_on_failure=True).result("total") == 1 + 3 + 5 + 7


@pytest.mark.parametrize(("cells", "refused"), [
    ([("load --python --param n=3 --outputs rows", "rows = list(range(n))\n"),
      ("total --python --outputs total", "total = summed()\n")],
     r"^step 'total': summed\(\) reads notebook variable 'rows', the output of step 'load', "
     r"which only the step's own code can be given at run time; pass rows to summed\(\)"),
    ([("a --python --outputs rows", "rows = [1]\n"), ("b --python --outputs rows", "rows = [2]\n"),
      ("total --python --outputs total", "total = sum(rows)\n")],
     r"^step 'total' reads notebook variable 'rows', which steps 'a', 'b' all output; "
     r"--needs just the one it reads"),
    ([("seed --python --outputs rows", "rows = [1]\n"),
      ("grow --python --needs seed --outputs more", "more = seed + [2]\n"),
      ("seed --python --outputs rows", "rows = more + [3]\n")],
     r"^step 'seed' reads notebook variable 'more', the output of step 'grow', which runs "
     r"after it: a saved workflow cannot feed it back; make more a --param of 'seed'"),
], ids=["a-helper-reads-it", "two-steps-output-it", "fed-back"])
def test_save_refuses_an_upstream_result_no_saved_step_can_be_given(shell, tmp_path, cells,
                                                                     refused):
    shell.run_cell("def summed():\n    return sum(rows)\n")
    for options, body in cells:
        cell(shell, f"{options} --define-only", body)
    with pytest.raises(UsageError, match=refused):
        line(shell, "save flow.yml")
    assert not (tmp_path / "flow_steps.py").exists()


def test_config_shows_and_changes_settings(shell):
    old = dagnb.settings().max_concurrent_executions
    try:
        table = line(shell, "config max_concurrent_executions=3 cache_version=v2")
        assert dagnb.settings().max_concurrent_executions == 3
        # (the settings changed, not the whole table, which is %dagger config alone)
        assert table.values.tolist() == [["max_concurrent_executions", "3", "set in this kernel"],
                                         ["cache_version", "'v2'", "set in this kernel"]]
        everything = line(shell, "config")
        assert len(everything) > 2
        shown = dict(zip(everything["setting"], everything["source"], strict=True))
        assert shown["max_retries"] == dagnb.config.origins()["max_retries"] != "argument"
    finally:
        dagnb.configure(max_concurrent_executions=old, cache_version="")


def test_config_named_shows_those_settings_and_refusals_name_the_magic(shell):
    """``%dagger config max_retries`` was "is not KEY=VALUE", and a refusal named
    dagnb.configure(), which the user did not call."""
    old = dagnb.settings().max_retries
    try:
        table = line(shell, "config max_retries=2 executor max_retries")
        assert table[["setting", "value"]].values.tolist() == [
            ["executor", repr(dagnb.settings().executor)], ["max_retries", "2"]]
        with pytest.raises(UsageError, match=r"^%dagger config: unknown setting "
                                             r"'max_retrie'; did you mean 'max_retries'\?$"):
            line(shell, "config max_retrie")
        with pytest.raises(UsageError, match=r"^%dagger config: unknown key 'max_retrie'"):
            line(shell, "config max_retrie=1")
        assert dagnb.settings().max_retries == 2  # (nothing changed by a refused line)
    finally:
        dagnb.configure(max_retries=old)


def test_help_is_written_for_users(shell):
    line_help = shell.find_line_magic("dagger").__doc__
    cell_help = shell.find_cell_magic("dagger").__doc__
    assert "%dagger run [NAMES ...]" in line_help and "%dagger cache" in line_help
    assert "%%dagger [--python] [--outputs VARS]" in cell_help and "--needs A,B" in cell_help
    assert "Define a step from this cell" in cell_help


def test_help_lists_every_option_of_dagger_run(shell):
    """%dagger? is the one place a user reads %dagger run's options (the README says
    --skip-cache and --[no-]enable-retry work there too)."""
    from dagnb.notebook.magics import _cmd_run

    line_help = shell.find_line_magic("dagger").__doc__
    options = [s for action in _cmd_run.parser._actions for s in action.option_strings
               if s not in ("-h", "--help")]

    def shown(option):  # (a switch's two spellings may be written --[no-]NAME)
        switch = "--[no-]" + option.removeprefix("--no-").removeprefix("--")
        return f"[{option}" in line_help or f" {option}]" in line_help or switch in line_help

    assert [o for o in options if not shown(o)] == []


def test_a_bare_dagger_names_every_command(shell):
    from dagnb.notebook.magics import _COMMANDS

    with pytest.raises(UsageError) as error:
        line(shell, "")
    assert [c for c in _COMMANDS if c not in str(error.value)] == []


# -- background, loops, interrupts --------------------------------------------------
def test_background_returns_at_once_and_publishes(shell):
    started = time.monotonic()
    cell(shell, "bg --python --background --outputs v",
         "import time\ntime.sleep(0.5)\nv = 42\n")
    assert time.monotonic() - started < 0.4
    run = last_run()
    assert not run.done
    run.wait(10)
    assert run.states() == {"bg": "succeeded"}
    # a waiting thread publishes just after the end
    assert wait_until(lambda: shell.user_ns.get("v") == 42)


def test_a_background_run_publishes_under_the_outputs_its_cell_had(shell, workdir):
    cell(shell, "gate --define-only --no-cache",  # (20 s at most)
         "for i in $(seq 400); do [ -f release ] && break; sleep 0.05; done\n")
    cell(shell, "bg --python --needs gate --outputs v --background", "v = 'older'\n")
    run = last_run()
    cell(shell, "bg --python --outputs x --define-only", "x = 'edited'\n")  # not run
    (workdir / "release").touch()
    run.wait(20)
    for thread in threading.enumerate():
        if thread.name == "dagnb-publish":
            thread.join(20)
    assert shell.user_ns["v"] == shell.user_ns["_dagger"]["bg"] == "older"
    assert "x" not in shell.user_ns


def test_only_failed_just_after_a_background_run_ended_sees_how_it_ended(shell, monkeypatch):
    """A --background run's rows reached the steps' latest only when its publishing
    thread got to them: --only-failed, run just after it ended, read its steps as still
    running and ran them again."""
    from dagnb.notebook.session import Session

    monkeypatch.setattr(Session, "publish_when_done", lambda self, run: None)  # (late)
    cell(shell, "bg --define-only", "echo bg\n")
    line(shell, "run --background")
    assert last_run().wait(10).ok
    said = line(shell, "run --only-failed")
    assert str(said).startswith("nothing to run again: no step failed"), said


def test_background_line_run(shell):
    cell(shell, "s --define-only", "sleep 0.3; echo done\n")
    line(shell, "run --background")
    assert not last_run().done
    assert last_run().wait(10).ok


def test_history_counts_the_steps_a_background_run_has_not_finished(shell, workdir):
    cell(shell, "first --define-only --no-cache", "echo first\n")
    cell(shell, "gate --needs first --define-only --no-cache",  # (20 s at most)
         "for i in $(seq 400); do [ -f release ] && break; sleep 0.05; done\n")
    cell(shell, "after --needs gate --define-only --no-cache", "echo after\n")
    line(shell, "run --background")
    run = last_run()
    assert wait_until(lambda: run.states()["first"] == "succeeded", timeout=10)
    going = line(shell, "history").iloc[0]
    assert (going["unfinished"], going["succeeded"]) == (2, 1)  # gate running, after waiting
    (workdir / "release").touch()
    assert run.wait(20).ok
    ended = line(shell, "history").iloc[0]
    assert (ended["unfinished"], ended["succeeded"]) == (0, 3)


def test_magic_inside_a_running_event_loop(shell):
    async def main():
        cell(shell, "inloop --python --outputs v", "v = 'ok'\n")
        return shell.user_ns["v"]

    assert asyncio.run(main()) == "ok"


def test_top_level_await_of_arun(shell):
    result = shell.run_cell(
        "import dagnb\n"
        "g = dagnb.Graph('aw')\n"
        "g.replace(dagnb.Step('one', run='echo one'))\n"
        "run = await g.arun()\n"
    )
    assert result.success, result.error_in_exec
    assert shell.user_ns["run"].states() == {"one": "succeeded"}


def test_interrupt_cancels_the_run(shell, monkeypatch):
    calls = []

    def interrupt(self):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(TextView, "tick", interrupt)
    started = time.monotonic()
    with pytest.raises(UsageError, match="interrupted: the run was cancelled"):
        cell(shell, "long --no-cache", "sleep 30\n")
    assert time.monotonic() - started < 10
    assert last_run().states() == {"long": "cancelled"}


@pytest.mark.parametrize("text", ['save "flow.yml', 'plan "a', 'cache clear "a', '"run',
                                  "config 'x=1"])
def test_unclosed_quote_in_a_line_is_a_usage_error(shell, text):
    with pytest.raises(UsageError, match=r"cannot read the options .*: No closing quotation"):
        line(shell, text)


def test_max_concurrency_zero_is_refused_not_ignored(shell):
    with pytest.raises(UsageError, match="max_concurrency=0"):
        cell(shell, "x --max-concurrency 0", "echo hi\n")


def test_run_takes_the_platforms_per_execution_switches(shell):
    cell(shell, "flaky --retries 2 --define-only", "exit 3\n")
    shell.run_line_magic("dagger",
                         "run flaky --no-enable-retry --no-use-circuit-breaker --no-raise")
    assert last_run().status().set_index("step").loc["flaky", "attempts"] == 1
    cell(shell, "s", "echo s\n")
    cell(shell, "s --skip-cache", "echo s\n")
    assert last_run().states() == {"s": "succeeded"}  # run again, not replayed


def test_views_cover_the_notebook_not_the_last_cell(shell, tmp_path):
    assert repr(line(shell, "status")) == "no steps yet: define one with a %%dagger cell"
    assert repr(line(shell, "history")) == "no run yet in this session"
    cell(shell, "clean", "echo cleaned")
    cell(shell, "train --needs clean", "echo trained")
    cell(shell, "other", "echo other >&2")
    cell(shell, "later --define-only", "echo later")
    status = line(shell, "status").set_index("step")
    assert status["state"].to_dict() == {
        "clean": "cached", "train": "succeeded", "other": "succeeded", "later": "never run"}
    assert "image" not in repr(line(shell, "status"))  # no step sets one: not shown
    assert list(line(shell, "logs clean")["line"]) == ["cleaned"]  # a cell run before
    assert str(line(shell, "logs later")).startswith("step 'later' has not run")
    with pytest.raises(UsageError, match="did you mean 'clean'"):
        line(shell, "logs claen")
    runs = line(shell, "history")
    assert list(runs["steps"]) == ["clean", "clean, train", "other"]
    assert list(runs["cached"]) == [0, 1, 0]
    view = line(shell, "graph")
    assert view.states == {"clean": "cached", "train": "succeeded", "other": "succeeded",
                           "later": "never run"}
    cell(shell, "clean --define-only", "echo cleaned differently")
    assert line(shell, "status").set_index("step").loc["clean", "state"] == "stale"


def test_empty_views_are_frames_of_the_same_columns_that_show_a_sentence(shell):
    status, runs = line(shell, "status"), line(shell, "history")
    assert status[["step", "state"]].empty and list(status.columns) == STATUS_COLUMNS
    assert runs.empty and list(runs.columns) == HISTORY_COLUMNS
    assert "no steps yet" in status._repr_html_()
    cell(shell, "quiet", "true")
    logs = line(shell, "logs quiet")
    assert logs.empty and list(logs.columns) == LOG_COLUMNS
    assert repr(logs).startswith("step 'quiet' printed nothing in run ")
    run_id = get_session().step_runs["quiet"].id
    cell(shell, "quiet", "true")  # (the same cell again: served from the cache)
    assert repr(line(shell, "logs quiet")).startswith(
        f"step 'quiet' came from the cache in run {get_session().step_runs['quiet'].id}; "
        "the run that stored its entry printed nothing")
    assert get_session().step_runs["quiet"].id != run_id
    assert line(shell, "history").dtypes.to_dict() == runs.dtypes.to_dict()
    assert line(shell, "status").dtypes.to_dict() == status.dtypes.to_dict()


def test_status_keeps_its_blank_columns_and_shows_them_not(shell):
    cell(shell, "a", "echo a")
    status = line(shell, "status")
    assert list(status.columns) == STATUS_COLUMNS and status["note"].isna().all()
    header = repr(status).splitlines()[0]
    assert "note" not in header and "image" not in header
    assert "<th>note</th>" not in status._repr_html_()


def test_history_and_logs_show_local_clock_times_of_aware_values(shell):
    cell(shell, "a", "echo a")
    started, printed = line(shell, "history")["started"], line(shell, "logs a")["time"]
    assert started.dt.tz is not None and printed.dt.tz is not None
    wall = printed[0].strftime("%Y-%m-%d %H:%M:%S")
    assert wall in repr(line(shell, "logs a")) and "+00:00" not in repr(line(shell, "logs a"))
    with pd.option_context("display.width", 500, "display.max_columns", None):  # all shown
        shown = repr(line(shell, "history"))
    assert started[0].strftime("%H:%M:%S") in shown and "+00:00" not in shown


def test_cache_entries_show_local_clock_times_as_history_and_the_cli_do(shell):
    cell(shell, "a", "echo a")
    entries = line(shell, "cache entries")
    created = entries["created"]
    assert created.dt.tz is not None  # the frame keeps aware values, as dagnb.cache.entries()
    with pd.option_context("display.width", 500, "display.max_columns", None):
        shown = repr(entries)
    offset = re.compile(r"[+-]\d\d:\d\d\b")  # (+00:00 here, the machine's zone elsewhere)
    assert created[0].strftime("%Y-%m-%d %H:%M:%S") in shown and not offset.search(shown)
    assert not offset.search(entries._repr_html_())
    assert repr(line(shell, "cache entries zzz")) == ("no cache entries of step 'zzz'; it holds "
                                                  "entries of a")


def test_hits_count_lookups_that_served_a_result_and_nothing_else(shell):
    cell(shell, "a", "echo a")  # a miss
    cell(shell, "b --needs a", "echo b")  # a served from the cache for b: a hit; b a miss
    cell(shell, "a", "echo a")  # a hit
    for command in ("status", "plan", "graph", "logs a", "cache explain a"):
        line(shell, command)  # looking is not using
    stats = line(shell, "cache stats")
    assert stats.loc["a", ["hits", "misses"]].tolist() == [2, 1]
    assert stats.loc["a", "hit_rate"] == pytest.approx(2 / 3)
    assert stats.loc["b", ["hits", "misses"]].tolist() == [0, 1]


def test_logs_read_left_aligned_and_stay_a_dataframe(shell):
    cell(shell, "c", "echo short; echo 'a much longer line'")
    logs = line(shell, "logs c")
    assert isinstance(logs, pd.DataFrame) and list(logs["line"]) == ["short", "a much longer line"]
    rows = repr(logs).splitlines()
    assert rows[1].rstrip().endswith("stdout short")  # not pushed right by the longer line
    assert "<td style='text-align:left'>short</td>" in logs._repr_html_()
    assert type(logs[logs["stream"] == "stdout"]) is pd.DataFrame  # slices are plain frames


def test_the_logs_of_a_step_that_printed_much_show_as_many_rows_as_pandas_would(shell):
    """Every one of 50,000 lines went into the cell (20 MB in the saved notebook). (5,000
    here: far past pandas' 60 rows, and all of them shown are still some 80 times the
    bounds below.)"""
    cell(shell, "big", "seq 1 5000")
    logs = line(shell, "logs big")
    assert len(logs) == 5_000  # (the frame holds them all: code that reads it)
    text, page = repr(logs), logs._repr_html_()
    assert len(text) < 2_000 and len(page) < 5_000
    assert text.splitlines()[-3].rstrip().endswith("stdout 5000")  # (the end: the cause)
    assert text.endswith("[5000 rows x 5 columns]") and "5000 rows × 5 columns" in page
    with pd.option_context("display.max_rows", None):  # (pandas' own switch: all of them)
        assert len(repr(logs).splitlines()) == 5_001


def test_one_long_log_line_neither_pads_the_rows_shown_nor_shows_whole(shell):
    """A 200,000-character line among 1,000 short ones padded each of the 10 rows shown
    to its width (megabytes of spaces in the cell and the saved notebook); shown, it is
    its first 500 characters, and the frame still holds it whole."""
    cell(shell, "big", "seq 1 500; printf 'X%.0s' $(seq 1 200000); echo; seq 501 1000")
    logs = line(shell, "logs big")
    assert len(logs) == 1001 and len(logs["line"].iloc[500]) == 200_000
    text, page = repr(logs), logs._repr_html_()
    assert len(text) < 2_000 and len(page) < 5_000
    shown = logs.iloc[495:506]  # the long line among the rows shown
    text, page = repr(left_aligned(shown)), left_aligned(shown)._repr_html_()
    assert len(text) < 3_000 and len(page) < 4_000
    assert "X" * 500 + "… (199500 characters more)" in text
    assert "X" * 500 + "… (199500 characters more)" in page


@pytest.mark.parametrize(("path", "says"), [
    ("''", "got an empty one"), ("a.txt/p.yml", "'a.txt' is a file, not a folder")])
def test_save_to_a_path_it_cannot_write_is_one_line(shell, path, says):
    Path("a.txt").write_text("")  # (a missing folder is made: root makes /nonexistent too)
    cell(shell, "py --python --define-only --outputs n", "n = 1\n")
    with pytest.raises(UsageError, match=says) as caught:
        line(shell, f"save {path}")
    assert "\n" not in str(caught.value)


def test_status_says_why_a_step_was_not_stored(shell, monkeypatch):
    monkeypatch.setenv("STATUS_TOKEN", "tok-status-123456")
    cell(shell, "a --python --outputs r", "r = 1\n")
    with pytest.warns(UserWarning):  # (stored once, then an unpicklable result)
        cell(shell, "a --python --outputs r", "import threading\nr = threading.Lock()\n")
    with pytest.warns(UserWarning, match="secret"):
        cell(shell, "s --python --secret STATUS_TOKEN --outputs u",
             "import os\nu = 'x' + os.environ['STATUS_TOKEN']\n")
    cell(shell, "c", "echo c\n")
    line(shell, "cache clear c")
    shown = line(shell, "status").set_index("step")
    assert dict(shown["state"]) == {"a": "uncached", "s": "uncached", "c": "uncached"}
    notes = dict(shown["note"])
    assert "cannot be pickled" in notes["a"] and "secret 'STATUS_TOKEN'" in notes["s"]
    assert "removed" in notes["c"]


def test_a_not_cached_warning_names_the_line_that_ran_the_cell_not_one_of_dagnb(
        shell, monkeypatch):
    """The step runs on dagnb's loop thread: the warning names the line that started the
    run (here this test's; in a notebook, the cell), as a fixed stacklevel did not."""
    monkeypatch.setenv("WARN_TOKEN", "tok-warn-123456")
    shell.user_ns["lock"] = threading.Lock()
    with pytest.warns(UserWarning) as caught:
        cell(shell, "a --python --outputs r", "import threading\nr = threading.Lock()\n")
        cell(shell, "s --python --secret WARN_TOKEN --outputs u",
             "import os\nu = 'x' + os.environ['WARN_TOKEN']\n")
        cell(shell, "l --python --outputs z", "z = lock.locked()\n")
    said = {str(w.message).split("'")[1]: w.filename for w in caught
            if "not cached" in str(w.message)}
    assert said == {"a": __file__, "s": __file__, "l": __file__}


def test_status_says_why_a_step_reading_an_unhashable_variable_was_not_stored(shell):
    shell.user_ns["lock"] = threading.Lock()
    with pytest.warns(UserWarning, match="'l' ran but was not cached: notebook variable 'lock'"):
        cell(shell, "l --python --outputs z", "z = lock.locked()\n")
    note = line(shell, "status").set_index("step")["note"]["l"]
    assert note.startswith("not stored: notebook variable 'lock' (_thread.lock) cannot be "
                           "fingerprinted") and note.endswith("as a parameter (params=)")


def test_a_cells_own_lines_after_an_upstream_steps_have_a_header(shell, capsys):
    """Running a cell whose upstream step runs again first: the upstream's lines come
    under its header, and the cell's own under one too (they read as the upstream's)."""
    shell.run_cell("threshold = 1")
    cell(shell, "load --python --outputs data", "print('loading')\ndata = threshold")
    cell(shell, "child --python --needs load", "print('child sees', load)")
    shell.run_cell("threshold = 2")
    capsys.readouterr()
    cell(shell, "child --python --needs load", "print('child sees', load)")
    out = capsys.readouterr().out
    marks = ["── load ──", "loading", "── child ──", "child sees 2"]
    assert all(mark in out for mark in marks), out
    assert [out.index(mark) for mark in marks] == sorted(out.index(mark) for mark in marks)


def test_a_cells_own_lines_alone_have_no_header(shell, capsys):
    cell(shell, "alone --python", "print('just me')")
    assert "── alone" not in capsys.readouterr().out


def test_a_saved_cell_ending_in_an_expression_imports_dagnbs_display_with_a_note(
        shell, tmp_path):
    """The saved module calls dagnb's display of a cell's last value (the code the
    notebook ran, so that ``dagnb run`` shares its keys): its import line says what that
    helper, which the user never wrote, is for; likewise a %time line's timer."""
    cell(shell, "show --python --outputs rows", "rows = [1, 2]\n%time len(rows)\n")
    cell(shell, "head --python --needs show", "rows[:1]\n")
    line(shell, "save flow.yml")
    module = (tmp_path / "flow_steps.py").read_text()
    imports = {text.split(" import ")[1].split()[0]: text for text in module.splitlines()
               if text.startswith("from dagnb.")}
    assert "# shows a cell's last value in IPython" in imports["_dagnb_displayed"]
    assert "# what the cell's %time line became" in imports["timed"]


def test_config_says_where_each_value_came_from(shell, tmp_path, monkeypatch):
    """``%dagger config`` showed values alone: a value from a ``dagnb.yaml`` in the
    folder, or from a variable, looked the same as one typed in this kernel."""
    monkeypatch.setenv("DAGNB_MAX_RETRIES", "4")
    (tmp_path / "dagnb.yaml").write_text("project: from-file\n")
    monkeypatch.chdir(tmp_path)
    dagnb.config.reload()
    try:
        line(shell, "config retry_jitter=0.5")
        table = line(shell, "config max_retries project retry_jitter executor")
        assert dict(zip(table["setting"], table["source"], strict=True)) == {
            "max_retries": "DAGNB_MAX_RETRIES", "project": "dagnb.yaml",
            "retry_jitter": "set in this kernel", "executor": "default"}
    finally:
        monkeypatch.undo()
        dagnb.config.reload()


def test_an_option_cut_short_is_refused_not_taken_for_the_one_it_begins(shell):
    """``%dagger run --only a`` ran --only-failed (argparse took the start of an option
    for it), with a as its target, saying nothing."""
    cell(shell, "a --define-only", "echo a\n")
    with pytest.raises(UsageError, match=r"unrecognized arguments: --only"):
        line(shell, "run --only a")
    assert get_session().last_run is None  # (nothing ran)


@pytest.mark.parametrize(("options", "said"), [
    ("--param n=3 --param n=4", "--param 'n' is given twice (n=3, then n=4); give it once, "
                                "with the value meant"),
    ("--env API_TOKEN=abcdef1 --env API_TOKEN=abcdef2",
     "--env 'API_TOKEN' is given twice (API_TOKEN=<not shown>, then API_TOKEN=<not shown>); "
     "give it once, with the value meant"),
])
def test_a_name_given_twice_with_two_values_is_refused(shell, options, said):
    """``--param n=3 --param n=4`` ran with 4, silently (dagnb run --param refuses it)."""
    with pytest.raises(UsageError, match=re.escape(said)):
        cell(shell, f"a {options} --define-only", "echo a\n")
    assert "a" not in graph()
    cell(shell, "a --param n=3 --param n=3 --define-only", "echo a\n")  # (one value)
    assert graph()["a"].params == {"n": 3}


def test_a_step_reading_ipythons_exit_is_keyed_by_what_it_is_and_cached(shell):
    """``exit()`` in a --python cell warned "notebook variable 'exit' (...ExitAutocall)
    cannot be fingerprinted ... pass what it is made from as a parameter" and was never
    cached: it is IPython's, counted by its type as a library's object is."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        cell(shell, "e --python --outputs t", "t = type(exit).__name__\n")
        cell(shell, "e --python --outputs t", "t = type(exit).__name__\n")
    assert [str(w.message) for w in caught if "fingerprinted" in str(w.message)] == []
    assert get_session().last_run.states() == {"e": "cached"}
    assert shell.user_ns["t"].endswith("ExitAutocall")


def test_logs_show_a_redrawn_progress_line_as_a_terminal_leaves_it(shell):
    """A line a progress bar redrew (``10%\\r50%\\r100%``) broke the table of
    %dagger logs at each carriage return, rows with no time nor step; the frame keeps
    the line whole."""
    cell(shell, "bar", "printf 'prog 10%%\\rprog 50%%\\rprog 100%%\\n'; echo after\n")
    logs = line(shell, "logs bar")
    assert logs["line"].tolist() == ["prog 10%\rprog 50%\rprog 100%", "after"]
    shown = repr(logs)
    assert "\r" not in shown and "\r" not in logs._repr_html_()
    assert [row.split()[-2:] for row in shown.splitlines()[1:]] == [["prog", "100%"],
                                                                   ["stdout", "after"]]


def test_load_of_a_notebook_says_what_to_do(shell, tmp_path):
    (tmp_path / "nb.ipynb").write_text('{"cells": [], "metadata": {}, "nbformat": 4, '
                                       '"nbformat_minor": 5}')
    with pytest.raises(UsageError, match=r"^%dagger load nb\.ipynb: a notebook is no "
                                         r"workflow file; %dagger load reads a YAML one"):
        line(shell, "load nb.ipynb")
