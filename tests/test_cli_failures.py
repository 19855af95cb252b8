"""What the dagnb command shows of a failed step (its log's last lines, where the rest is,
``dagnb logs``), plain progress lines of ``cache push`` in a CI log, ``--version``."""

from __future__ import annotations

import importlib.metadata
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

FAILING = """\
steps:
  dbt:
    run: |
      echo "Running model orders..."
      echo "ERROR: relation analytics.orders does not exist"
      echo "Done. PASS=3 ERROR=1"
      exit 1
  multi:
    run: |
      echo "real cause: disk quota exceeded on /data" >&2
      echo "cleanup: removing temp files" >&2
      exit 2
  mixed:
    run: |
      echo "out one"; sleep 0.2
      echo "err one" >&2; sleep 0.2
      echo "out two"
      false
  fine:
    run: echo "fine-output"
"""


def dagnb(*args: str, cwd: Path, env: dict[str, str] | None = None,
          ) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "dagnb", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def block(stdout: str, step: str) -> list[str]:
    """The lines from a failed step's header to its footer, both included."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith(f"── {step} failed"))
    end = next(i for i in range(start, len(lines)) if lines[i].startswith("── full log:"))
    return lines[start:end + 1]


@pytest.fixture
def failed(tmp_path: Path) -> subprocess.CompletedProcess[str]:
    (tmp_path / "wf.yml").write_text(FAILING)
    return dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path)


def test_a_failed_step_shows_the_last_lines_of_its_log_under_its_failure(failed, tmp_path):
    """The cause a step printed to stdout shows, not only ``exit code 1``; of one that
    wrote the cause to stderr then a cleanup line, the cause shows too."""
    assert failed.returncode == 1
    dbt = block(failed.stdout, "dbt")
    assert dbt[:4] == ["── dbt failed: exit code 1 ──", "Running model orders...",
                       "ERROR: relation analytics.orders does not exist",
                       "Done. PASS=3 ERROR=1"]
    multi = block(failed.stdout, "multi")
    assert multi[1:3] == ["real cause: disk quota exceeded on /data",
                          "cleanup: removing temp files"]
    assert block(failed.stdout, "mixed")[1:4] == ["out one", "err one", "out two"]  # as logged
    assert "fine-output" not in failed.stdout  # a step that succeeded stays quiet
    # before the table and the summary, which stay the last lines
    assert failed.stdout.index("── full log:") < failed.stdout.index("step   state")
    assert failed.stdout.splitlines()[-1].endswith("3 failed, 1 succeeded")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_the_footer_names_the_log_file_and_the_command_that_shows_it(failed, tmp_path):
    footer = re.fullmatch(r"── full log: (\S+) \((.+)\) ──", block(failed.stdout, "dbt")[-1])
    assert footer is not None
    path, command = footer.groups()
    assert path.startswith(".dagnb_cache/.runs/") and path.endswith("/dbt/logs-1.jsonl")
    assert "analytics.orders" in (tmp_path / path).read_text()
    # (this run's: another may have run the step since, its logs the last ones)
    assert re.fullmatch(r"dagnb logs wf\.yml dbt --run \S+", command), command
    shown = dagnb(*shlex.split(command)[1:], cwd=tmp_path)
    assert (shown.returncode, shown.stderr) == (0, "")
    assert shown.stdout.splitlines() == block(failed.stdout, "dbt")[1:-1]


def test_a_long_log_shows_its_last_20_lines_and_how_many_came_before(tmp_path):
    (tmp_path / "wf.yml").write_text(
        "steps:\n  big:\n    run: 'for i in $(seq 1 45); do echo \"line $i\"; done; exit 3'\n")
    done = dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path)
    lines = block(done.stdout, "big")
    assert re.fullmatch(r"25 earlier lines not shown; dagnb logs wf\.yml big --run \S+ "
                        r"shows them", lines[1]), lines[1]
    assert lines[2:-1] == [f"line {i}" for i in range(26, 46)]
    assert done.returncode == 1


def test_a_read_only_run_says_its_log_is_not_kept_rather_than_point_at_another_run(tmp_path):
    """A read-only run (a pull-request build) writes nothing to the cache folder: its
    log lives in a temporary folder removed at exit, and its run is not recorded, so
    ``dagnb logs`` shows the lines of the last recorded run instead, here the one that
    succeeded. Its footer said to look at both."""
    wf = tmp_path / "wf.yml"
    wf.write_text("steps:\n  dbt:\n    run: 'for i in $(seq 1 25); do echo \"v1 $i\"; done'\n")
    assert dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    wf.write_text("steps:\n  dbt:\n    run: 'for i in $(seq 1 25); do echo \"v2 $i\"; done; "
                  "exit 1'\n")
    done = dagnb("run", "wf.yml", "--executor", "local", "--cache-mode", "read-only",
                 cwd=tmp_path)
    assert done.returncode == 1
    lines = block(done.stdout, "dbt")
    assert lines[1] == ("5 earlier lines not shown: a read-only run keeps no log once it "
                        "ends (--cache-mode off keeps it for dagnb logs)")
    assert lines[2:-1] == [f"v2 {i}" for i in range(6, 26)]
    assert lines[-1] == ("── full log: not kept: a read-only run writes nothing to the cache "
                         "folder (--cache-mode off keeps it for dagnb logs) ──")
    assert "dagnb logs wf.yml" not in done.stdout and "dagnb-runs-" not in done.stdout


def test_a_secret_in_the_tail_is_masked_as_in_the_log(tmp_path):
    (tmp_path / "wf.yml").write_text(
        "steps:\n  leak:\n    secrets: [TOKEN]\n"
        "    run: 'echo \"token is $TOKEN\"; echo done >&2; exit 1'\n")
    env = {**os.environ, "TOKEN": "hunter2-s3cr3t-value"}
    done = dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path, env=env)
    assert block(done.stdout, "leak")[1:3] == ["token is ***", "done"]
    assert "hunter2" not in done.stdout + done.stderr


def test_a_step_that_printed_nothing_says_so_in_its_failure_line(tmp_path):
    (tmp_path / "wf.yml").write_text("steps:\n  argv: {run: [no-such-binary-here]}\n")
    done = dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path)
    said = [line for line in done.stdout.splitlines() if line.startswith("── argv failed")]
    assert len(said) == 1 and said[0].endswith("; it printed nothing ──"), done.stdout
    assert "full log" not in done.stdout and done.returncode == 1
    logs = dagnb("logs", "wf.yml", "argv", cwd=tmp_path)
    assert (logs.returncode, logs.stdout) == (0, "")
    assert logs.stderr.startswith("dagnb: step 'argv' (failed) printed nothing in run ")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_logs_reads_a_stream_and_a_tail_and_refuses_an_unknown_step(failed, tmp_path):
    last = dagnb("logs", "wf.yml", "multi", "--stream", "stderr", "--tail", "1", cwd=tmp_path)
    assert (last.returncode, last.stdout) == (0, "cleanup: removing temp files\n")
    out = dagnb("logs", "wf.yml", "mixed", "--stream", "stdout", cwd=tmp_path)
    assert out.stdout == "out one\nout two\n"
    typo = dagnb("logs", "wf.yml", "mult", cwd=tmp_path)
    assert typo.returncode == 2 and "did you mean 'multi'?" in typo.stderr


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_logs_prints_a_stored_step_s_lines_from_its_entry(failed, tmp_path):
    done = dagnb("logs", "wf.yml", "fine", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "fine-output\n")
    assert re.fullmatch(r"dagnb: step 'fine' succeeded in run \S+: its lines, stored with "
                        r"its cache entry at \S+ \S+\n", done.stderr), done.stderr


CACHED = """\
steps:
  greet:
    secrets: [TOKEN]
    run: 'echo "token is $TOKEN"; echo "warn one" >&2; echo "out two"'
  quiet:
    run: 'true'
  many:
    run: 'seq 1 5000'
"""


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_logs_prints_a_cached_step_s_lines_from_its_cache_entry(tmp_path):
    """A fully cached re-run is the common last run: its steps' lines are their entries',
    those of the run that stored them, masked as they were stored."""
    (tmp_path / "wf.yml").write_text(CACHED)
    env = {**os.environ, "TOKEN": "hunter2-s3cr3t-value"}
    for _ in range(2):  # (the second run: every step from the cache)
        dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path, env=env)
    done = dagnb("logs", "wf.yml", "greet", cwd=tmp_path)
    assert done.returncode == 0  # (the two streams' lines in the order they came)
    assert sorted(done.stdout.splitlines()) == ["out two", "token is ***", "warn one"]
    header = re.fullmatch(r"dagnb: step 'greet' came from the cache in run \S+: its lines "
                          r"from the run that stored the entry, at \S+ \S+\n", done.stderr)
    assert header is not None, done.stderr
    assert "hunter2" not in done.stdout + done.stderr
    tail = dagnb("logs", "wf.yml", "greet", "--tail", "1", "--stream", "stdout", cwd=tmp_path)
    assert tail.stdout == "out two\n"
    many = dagnb("logs", "wf.yml", "many", "--tail", "2", cwd=tmp_path)  # (an entry's folder)
    assert (many.returncode, many.stdout) == (0, "4999\n5000\n")
    quiet = dagnb("logs", "wf.yml", "quiet", cwd=tmp_path)
    assert (quiet.returncode, quiet.stdout) == (0, "")
    assert re.search(r"; the run that stored its entry, at \S+ \S+, printed nothing\n$",
                     quiet.stderr)


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_logs_of_a_cached_step_whose_entry_is_gone_says_to_run_again(tmp_path):
    (tmp_path / "wf.yml").write_text(CACHED)
    for _ in range(2):
        dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path,
              env={**os.environ, "TOKEN": "x"})
    dagnb("cache", "clear", "--all", cwd=tmp_path)
    done = dagnb("logs", "wf.yml", "greet", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr.count("\n") == 1 and "entry is no longer in" in done.stderr
    assert done.stderr.endswith("run the workflow again (dagnb run wf.yml) to see its lines\n")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_logs_reads_the_newest_run_that_had_the_step(failed, tmp_path):
    """As its help says: a later --target run that left the step out is not "the last
    run" dagnb logs reads; the run before it, which had the step, is."""
    assert dagnb("run", "wf.yml", "--executor", "local", "--target", "fine",
                 cwd=tmp_path).returncode == 0
    done = dagnb("logs", "wf.yml", "dbt", "--tail", "1", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, "Done. PASS=3 ERROR=1\n"), done.stderr
    helped = dagnb("--help", cwd=tmp_path).stdout
    assert "newest run of a workflow or notebook that had it" in " ".join(helped.split())


def _run_ids(tmp_path: Path) -> list[str]:
    """The ids of the recorded runs, oldest first."""
    records = (tmp_path / ".dagnb_cache" / ".runs" / "records.jsonl").read_text()
    return [json.loads(line)["run"] for line in records.splitlines() if line.strip()]


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_logs_of_a_skipped_step_says_why_and_where_it_last_ran(tmp_path):
    """It said "step 'report' (skipped) printed nothing in run X" and exited 0."""
    workflow = tmp_path / "wf.yml"
    workflow.write_text("steps:\n  load: {run: echo loading}\n"
                        "  report: {run: echo reporting, needs: [load]}\n")
    assert dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    workflow.write_text(workflow.read_text().replace("echo loading", "exit 3"))
    assert dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path).returncode == 1
    ran, skipped = _run_ids(tmp_path)
    done = dagnb("logs", "wf.yml", "report", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (1, "")
    assert done.stderr == (
        f"dagnb: step 'report' did not run in run {skipped}: it was skipped because upstream "
        f"step 'load' failed; it last ran in run {ran} (succeeded): dagnb logs wf.yml report "
        f"--run {ran} shows its lines\n")
    earlier = dagnb("logs", "wf.yml", "report", "--run", ran, cwd=tmp_path)
    assert (earlier.returncode, earlier.stdout) == (0, "reporting\n"), earlier.stderr
    unknown = dagnb("logs", "wf.yml", "report", "--run", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and unknown.stderr.startswith("dagnb: error: --run 'nope'")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_logs_reads_a_step_renamed_since_or_a_file_mid_edit_from_the_records(tmp_path):
    """After `extract` was renamed in the file, or while the file had a YAML error,
    `dagnb logs wf.yml extract` failed ("no step named", the YAML error), though the
    last run's record has the step."""
    workflow = tmp_path / "wf.yml"
    workflow.write_text("steps:\n  extract: {run: echo extracting}\n"
                        "  report: {run: echo reporting, needs: [extract]}\n")
    assert dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    (ran,) = _run_ids(tmp_path)
    workflow.write_text(workflow.read_text().replace("extract", "pull"))
    renamed = dagnb("logs", "wf.yml", "extract", cwd=tmp_path)
    assert (renamed.returncode, renamed.stdout) == (0, "extracting\n"), renamed.stderr
    assert renamed.stderr.startswith("dagnb: wf.yml no longer defines step 'extract'; read "
                                     f"from its run records: its lines in run {ran}")
    unknown = dagnb("logs", "wf.yml", "nope", cwd=tmp_path)
    assert unknown.returncode == 2 and "no step named 'nope'" in unknown.stderr
    workflow.write_text("steps:\n  pull: [\n")
    for step, line in (("extract", "extracting"), ("report", "reporting")):
        mid_edit = dagnb("logs", "wf.yml", step, cwd=tmp_path)
        assert (mid_edit.returncode, mid_edit.stdout) == (0, f"{line}\n"), mid_edit.stderr
        assert mid_edit.stderr.startswith("dagnb: wf.yml does not load now (wf.yml, line 3: "
                                          "YAML does not parse")
        assert f"step {step!r} read from its run records: its lines in run {ran}\n" in \
            mid_edit.stderr
    never = dagnb("logs", "wf.yml", "nope", cwd=tmp_path)
    assert never.returncode == 2 and never.stderr.count("\n") == 1
    assert never.stderr.startswith("dagnb: error: wf.yml, line 3: YAML does not parse")
    assert never.stderr.endswith("(dagnb logs found no run record of this file with step "
                                 "'nope': name a step a recorded run had, or fix the file)\n")


def test_dagnb_logs_before_any_run_says_to_run_first(tmp_path):
    (tmp_path / "wf.yml").write_text(FAILING)
    done = dagnb("logs", "wf.yml", "dbt", cwd=tmp_path)
    assert done.returncode == 2 and "run it first (dagnb run wf.yml)" in done.stderr


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_logs_names_a_cache_dir_that_is_not_there_and_the_option_when_none_is_given(
        tmp_path):
    """`--cache-dir nonexist` said "no run ... recorded in '.../nonexist'; run it first";
    without it, the hint did not say a run may have cached elsewhere."""
    (tmp_path / "wf.yml").write_text(FAILING)
    assert dagnb("run", "wf.yml", "--executor", "local", "--cache-dir", "elsewhere",
                 cwd=tmp_path).returncode == 1
    typo = dagnb("logs", "wf.yml", "dbt", "--cache-dir", "elsewher", cwd=tmp_path)
    assert (typo.returncode, typo.stderr) == (2, (
        f"dagnb: error: --cache-dir 'elsewher': there is no folder "
        f"{str(tmp_path / 'elsewher')!r}; name the folder dagnb run caches in (the setting "
        "cache_directory)\n"))
    assert not (tmp_path / "elsewher").exists()
    default = dagnb("logs", "wf.yml", "dbt", cwd=tmp_path)
    assert default.returncode == 2 and default.stderr.count("\n") == 1
    assert "run it first (dagnb run wf.yml), or name the folder it cached in with " \
           "--cache-dir DIR" in default.stderr
    found = dagnb("logs", "wf.yml", "dbt", "--cache-dir", "elsewhere", "--tail", "1",
                  cwd=tmp_path)
    assert (found.returncode, found.stdout) == (0, "Done. PASS=3 ERROR=1\n"), found.stderr


def test_cache_push_prints_plain_lines_when_stderr_is_no_terminal(tmp_path):
    (tmp_path / "wf.yml").write_text("steps:\n  a: {run: 'echo a > $DAGNB_OUT/a'}\n"
                                     "  b: {run: 'echo b', needs: [a]}\n")
    assert dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    pushed = subprocess.run([sys.executable, "-m", "dagnb", "cache", "push",
                             (tmp_path / "store").as_uri()], cwd=tmp_path,
                            capture_output=True, timeout=120)  # (bytes: text mode reads \r as \n)
    assert pushed.returncode == 0, pushed.stderr
    assert b"\r" not in pushed.stderr
    # (two entries of a few bytes: in kB, not "0.0 MB", as if nothing was copied)
    assert re.search(rb"push: 2/2 entries, [1-9]\d*\.\d kB\n", pushed.stderr), pushed.stderr


def test_version_is_the_installed_package_s(tmp_path):
    done = dagnb("--version", cwd=tmp_path)
    assert (done.returncode, done.stdout) == (0, f"dagnb {importlib.metadata.version('dagnb')}\n")


def test_plain_progress_lines_come_every_few_seconds_and_at_the_end():
    """A long push in a CI log says it is alive, one line each PLAIN_EVERY seconds."""
    import io

    from dagnb.cache.remote import PLAIN_EVERY, progress_line

    now = [0.0]
    out = io.StringIO()
    show = progress_line("pull", out, clock=lambda: now[0])
    for done in range(1, 7):
        now[0] += PLAIN_EVERY / 2
        show(done, 6, done * 500_000)
    assert out.getvalue() == ("pull: 2/6 entries, 1.0 MB\npull: 4/6 entries, 2.0 MB\n"
                              "pull: 6/6 entries, 3.0 MB\n")


def test_progress_line_of_one_entry_says_entry():
    """A push of one entry read "push: 1/1 entries"; the noun agrees with the total."""
    import io

    from dagnb.cache.remote import progress_line

    out = io.StringIO()
    progress_line("push", out)(1, 1, 2_000_000)
    assert out.getvalue() == "push: 1/1 entry, 2.0 MB\n"


UNSAFE = r"""steps:
  bad:
    run: |
      printf 'caf\303\251 \342\234\223\n'
      printf 'wipe \033[2J\033[H \033]0;owned\007 \033[31mred\033[0m end\n'
      exit 1
  fine:
    run: echo fine-output
"""


@pytest.mark.parametrize("encoding", ["ascii", "cp1252"])
def test_a_failed_run_prints_its_whole_report_on_a_stdout_that_is_not_utf8(tmp_path, encoding):
    """The tail's rules and a step's non-ASCII output once ended the run in a
    UnicodeEncodeError, with no status table or summary."""
    (tmp_path / "wf.yml").write_text(UNSAFE)
    env = {**os.environ, "PYTHONIOENCODING": encoding}
    done = subprocess.run([sys.executable, "-m", "dagnb", "run", "wf.yml", "--executor", "local"],
                          cwd=tmp_path, env=env, capture_output=True, timeout=120)
    out = done.stdout.decode(encoding)
    assert done.returncode == 1 and b"Traceback" not in done.stderr, done.stderr
    lines = out.splitlines()
    assert "-- bad failed: exit code 1 --" in lines
    assert ("caf\\xe9 \\u2713" if encoding == "ascii" else "café \\u2713") in lines
    assert any(line.startswith("-- full log: ") for line in lines)
    assert lines[-1].endswith("1 failed, 1 succeeded") and "bad   failed" in out


def test_control_characters_in_a_tail_show_as_escapes(tmp_path):
    """A step's clear-screen or title sequence would wipe the report above it."""
    (tmp_path / "wf.yml").write_text(UNSAFE)
    done = dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path)
    shown = r"wipe \x1b[2J\x1b[H \x1b]0;owned\x07 \x1b[31mred\x1b[0m end"
    assert block(done.stdout, "bad")[2] == shown  # (off a terminal, colour too)
    assert "\x1b" not in done.stdout and "\x07" not in done.stdout
    logs = dagnb("logs", "wf.yml", "bad", cwd=tmp_path)
    assert logs.stdout.splitlines()[1] == shown


def test_control_characters_in_an_error_show_as_escapes_in_progress_lines_and_the_table(
        tmp_path, monkeypatch, capsys):
    """A step's error (its last line on stderr) is in its retry line, its progress line and
    the status table: a clear-screen there wiped the failure report printed above."""
    from dagnb.cli import main

    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(
        "steps:\n"
        "  bad:\n"
        "    retries: {max_retries: 1, backoff_factor: 0, retry_on: [1]}\n"
        "    run: printf 'quota \\033[2J\\033[H\\n' >&2; exit 1\n")
    assert main(["run", "wf.yml", "--executor", "local", "--no-cache"]) == 1
    out = capsys.readouterr().out
    error = r"exit code 1: quota \x1b[2J\x1b[H"
    said = [line.split(" ", 1)[1] for line in out.splitlines() if line[:1].isdigit()]
    retry = re.fullmatch(r"\[0/1\] bad retrying 2/2 in [0-9.]+ s: (.*)", said[1])
    assert retry is not None and retry.group(1) == error, said
    assert said[3] == f"[1/1] bad failed: {error}"
    assert any(line.split()[:2] == ["bad", "failed"] and line.endswith(error)
               for line in out.splitlines())
    assert "\x1b" not in out


def test_terminal_safe_keeps_colour_on_a_terminal_only():
    from dagnb.views.progress import terminal_safe

    assert terminal_safe("\x1b[31mred\x1b[2J\tx", colour=True) == "\x1b[31mred\\x1b[2J\tx\x1b[0m"
    assert terminal_safe("\x1b[31mred\r", colour=False) == "\\x1b[31mred\\r"


RETRIED = """\
steps:
  flaky:
    retries: {max_retries: 1, backoff_factor: 0, retry_on: [3]}
    run: 'echo "try $DAGNB_ATTEMPT"; echo "cause $DAGNB_ATTEMPT" >&2; exit 3'
"""


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_tail_spanning_retries_says_which_attempt_each_line_came_from(tmp_path):
    (tmp_path / "wf.yml").write_text(RETRIED)
    done = dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path)
    marked = ["── attempt 1 ──", "try 1", "cause 1", "── attempt 2 ──", "try 2", "cause 2"]
    assert block(done.stdout, "flaky")[1:-1] == marked
    logs = dagnb("logs", "wf.yml", "flaky", cwd=tmp_path)
    assert logs.stdout.splitlines() == marked
    assert dagnb("logs", "wf.yml", "flaky", "--tail", "3", cwd=tmp_path).stdout.splitlines() \
        == ["── attempt 1 ──", "cause 1", "── attempt 2 ──", "try 2", "cause 2"]
    one = dagnb("logs", "wf.yml", "flaky", "--tail", "2", cwd=tmp_path)
    assert one.stdout == "try 2\ncause 2\n"  # (one attempt's lines: no marker)


RECOVERED = """\
steps:
  flaky:
    retries: {max_retries: 2, backoff_factor: 0, retry_on: [3]}
    run: |
      echo "try $DAGNB_ATTEMPT"
      if [ "$DAGNB_ATTEMPT" -lt 3 ]; then echo "cause $DAGNB_ATTEMPT" >&2; exit 3; fi
      echo "loaded 120 rows"
"""


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_logs_of_a_step_that_succeeded_on_a_retry_shows_every_attempt(tmp_path):
    """The failed attempts' lines are in the run's folder, those of the attempt that
    succeeded in its cache entry: both are shown (the last attempt's were left out)."""
    (tmp_path / "wf.yml").write_text(RECOVERED)
    assert dagnb("run", "wf.yml", "--executor", "local", cwd=tmp_path).returncode == 0
    done = dagnb("logs", "wf.yml", "flaky", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    marked = ["── attempt 1 ──", "try 1", "cause 1", "── attempt 2 ──", "try 2", "cause 2",
              "── attempt 3 ──", "try 3", "loaded 120 rows"]
    assert done.stdout.splitlines() == marked
    assert re.fullmatch(r"dagnb: step 'flaky' succeeded in run \S+ on a retry: the failed "
                        r"attempts' lines from the run's folder, then those of the one stored "
                        r"with its cache entry at \S+ \S+\n", done.stderr), done.stderr
    tail = dagnb("logs", "wf.yml", "flaky", "--tail", "3", cwd=tmp_path)
    assert tail.stdout.splitlines() == ["── attempt 2 ──", "cause 2", "── attempt 3 ──",
                                        "try 3", "loaded 120 rows"]
    out = dagnb("logs", "wf.yml", "flaky", "--stream", "stdout", "--tail", "2", cwd=tmp_path)
    assert out.stdout == "try 3\nloaded 120 rows\n"  # (one attempt's lines: no marker)
    dagnb("cache", "clear", "--all", cwd=tmp_path)  # (the failed attempts' lines stay)
    gone = dagnb("logs", "wf.yml", "flaky", cwd=tmp_path)
    assert (gone.returncode, gone.stdout.splitlines()) == (1, marked[:6])
    assert "entry is no longer in" in gone.stderr


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_logs_prints_a_step_that_succeeded_unstored_without_the_cache_note(tmp_path):
    (tmp_path / "wf.yml").write_text(FAILING)
    dagnb("run", "wf.yml", "--executor", "local", "--no-cache", cwd=tmp_path)
    done = dagnb("logs", "wf.yml", "fine", cwd=tmp_path)
    assert (done.returncode, done.stdout, done.stderr) == (0, "fine-output\n", "")


def test_dagnb_logs_of_a_notebook_never_run_says_so_in_one_line(tmp_path):
    """A notebook's runs are found by their origin, its file: none recorded yet."""
    cell = {"cell_type": "code", "metadata": {}, "outputs": [], "execution_count": None,
            "source": "%%dagger step1\necho hi; exit 1"}
    (tmp_path / "x.ipynb").write_text(json.dumps(
        {"cells": [cell], "metadata": {}, "nbformat": 4, "nbformat_minor": 5}))
    done = dagnb("logs", "x.ipynb", "step1", cwd=tmp_path)
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1, done.stderr
    assert "no run of 'x.ipynb' recorded in" in done.stderr
    assert "run it first (dagnb run x.ipynb)" in done.stderr


def test_a_ctrl_c_pending_as_an_interrupted_command_exits_changes_no_exit_code(tmp_path):
    """A second Ctrl-C that lands once dagnb has said it was interrupted (here: after
    ``main`` returned) ended the process by SIGINT (-2), not with 130."""
    script = (
        "import os, signal, sys, time\n"
        "from dagnb import cli\n"
        "def stopped(args):\n"
        "    raise KeyboardInterrupt\n"
        "cli._COMMANDS['run'] = stopped\n"
        "sys.argv = ['dagnb', 'run', 'wf.yml']\n"
        "code = cli.main()\n"
        "os.kill(os.getpid(), signal.SIGINT)  # the second Ctrl-C, late\n"
        "time.sleep(0.2)\n"
        "sys.exit(code)\n"
    )
    done = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True,
                          text=True, timeout=60, check=False)
    assert done.returncode == 130, done.stderr
    assert done.stderr.count("dagnb: interrupted") == 1, done.stderr
