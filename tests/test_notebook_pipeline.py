"""The notebook is the pipeline: `dagnb run/graph/validate NOTEBOOK`, and a kernel restart."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import nbformat as nbf
import pytest
from nbclient import NotebookClient

pytestmark = pytest.mark.slow


def _notebook(folder: Path, *, failing: bool = False) -> Path:
    """Two steps: `make` (shell) and `total` (Python, reads the parameter `scale`)."""
    parameters = nbf.v4.new_code_cell(f"scale = 2\ncounter = {str(folder / 'runs.txt')!r}")
    parameters.metadata["tags"] = ["parameters"]
    make = (f"%%dagger make --param rows=3 --param counter={folder / 'runs.txt'}\n"
            'echo make >> "$DAGNB_PARAM_COUNTER"\n'
            'seq "$DAGNB_PARAM_ROWS" > "$DAGNB_OUT/n.txt"\n')
    total = ("%%dagger total --python --needs make --outputs total\n"
             "open(counter, 'a').write('total\\n')\n"
             "total = sum(int(x) for x in (make / 'n.txt').read_text().split()) * scale\n")
    cells = [nbf.v4.new_code_cell("%load_ext dagnb"), parameters,
             nbf.v4.new_code_cell(make), nbf.v4.new_code_cell(total),
             nbf.v4.new_code_cell("print('total is', total)")]
    if failing:
        cells.insert(4, nbf.v4.new_code_cell(
            "%%dagger broken --needs make\necho 'about to fail' >&2\nexit 3\n"))
    path = folder / "pipe.ipynb"
    nbf.write(nbf.v4.new_notebook(cells=cells), path)
    return path


def _runs(folder: Path) -> list[str]:
    counter = folder / "runs.txt"
    return counter.read_text().split() if counter.exists() else []


def _dagnb(*argv: str, cwd: Path, env: dict[str, str] | None = None
           ) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DAGNB_CONFIG": "none", **(env or {})}
    return subprocess.run([sys.executable, "-m", "dagnb.cli", *argv], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def _interactive(path: Path, env: dict[str, str] | None = None) -> nbf.NotebookNode:
    """Run the notebook top to bottom in a kernel, as JupyterLab's Run All does (a cell
    that fails raises here); the notebook with its outputs."""
    notebook = nbf.read(path, as_version=4)
    client = NotebookClient(notebook, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute(env={**os.environ, "DAGNB_CONFIG": "none", **(env or {})})
    return notebook


def test_a_notebook_run_interactively_runs_all_cached_from_the_cli(tmp_path):
    path = _notebook(tmp_path)
    _interactive(path)
    assert _runs(tmp_path) == ["make", "total"]
    done = _dagnb("run", str(path), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _runs(tmp_path) == ["make", "total"]  # zero executions
    table = done.stdout.splitlines()
    assert any(line.split()[:2] == ["make", "cached"] for line in table)
    assert any(line.split()[:2] == ["total", "cached"] for line in table)


def test_a_run_started_from_another_notebooks_kernel_reads_only_its_own_notebook(tmp_path):
    """A terminal in JupyterLab (or ``!dagnb run`` in a cell) passes the caller's
    ``JPY_SESSION_NAME`` on: the headless kernel must not read the caller's cells."""
    path = _notebook(tmp_path)
    caller = tmp_path / "caller.ipynb"
    nbf.write(nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell("%load_ext dagnb"),
                                         nbf.v4.new_code_cell("%%dagger heavy\necho heavy\n")]),
              caller)
    done = _dagnb("run", str(path), cwd=tmp_path, env={"JPY_SESSION_NAME": str(caller)})
    assert done.returncode == 0, done.stderr
    assert "caller.ipynb" not in done.stdout
    lines = done.stdout.splitlines()
    summary = max(i for i, line in enumerate(lines) if line.split()[:1] == ["step"])
    assert [line.split()[0] for line in lines[summary + 1:]] == ["make", "total"]


def test_a_changed_parameter_runs_only_the_steps_that_read_it(tmp_path):
    path = _notebook(tmp_path)
    assert _dagnb("run", str(path), cwd=tmp_path).returncode == 0
    done = _dagnb("run", str(path), "--param", "scale=10", "-o", "out.ipynb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _runs(tmp_path) == ["make", "total", "total"]
    assert "total is 60" in done.stdout
    executed = nbf.read(tmp_path / "out.ipynb", as_version=4)
    assert "injected-parameters" in executed.cells[2].metadata["tags"]
    assert "total is 60" in executed.cells[-1].outputs[0]["text"]


def test_a_step_its_cell_re_ran_shows_as_ran_though_a_later_cell_was_served_it(tmp_path):
    """The table showed each step's row from the last run that had it: `total`, re-run
    by its cell for the new scale, then served to `report`'s run, read `cached`, as if
    the param had been ignored."""
    path = _notebook(tmp_path)
    notebook = nbf.read(path, as_version=4)
    notebook.cells.append(nbf.v4.new_code_cell(
        "%%dagger report --python --needs total --outputs line\nline = f'total={total}'"))
    nbf.write(notebook, path)
    assert _dagnb("run", str(path), cwd=tmp_path).returncode == 0
    done = _dagnb("run", str(path), "--param", "scale=10", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _runs(tmp_path) == ["make", "total", "total"]
    states = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()
              if line.split()[:1] in (["make"], ["total"], ["report"])}
    assert states == {"make": "cached", "total": "succeeded", "report": "succeeded"}


def test_a_failing_step_exits_1_with_its_stderr(tmp_path):
    path = _notebook(tmp_path, failing=True)
    done = _dagnb("run", str(path), cwd=tmp_path)
    assert done.returncode == 1
    assert "about to fail" in done.stdout + done.stderr
    assert any(line.split()[:2] == ["broken", "failed"] for line in done.stdout.splitlines())
    # the cell's output, echoed on stdout, is not repeated under the error (nbclient's
    # message holds it, and the failed step's tail, which the cell's view printed)
    error = done.stderr.split("failed:\n", 1)[1]
    assert "----- stderr -----" not in error and "%%dagger broken" not in error
    assert "RunFailed: " in error and "last lines of stderr" not in error, error
    printed = (done.stdout + done.stderr).splitlines()
    assert printed.count("about to fail") == 1, printed  # (once: the live line)


def test_a_refused_magic_says_why_under_the_failed_cell_line(tmp_path):
    """A UsageError (a bad option) has no traceback: the error under "a cell of ...
    failed:" was blank, its one line only somewhere in the echoed output above. (Its
    value read from a notebook variable: a bad option written out is refused before the
    kernel starts, as `dagnb validate` refuses it.)"""
    path = _notebook(tmp_path)
    notebook = nbf.read(path, as_version=4)
    notebook.cells[3].source = notebook.cells[3].source.replace(
        "--needs make", "--needs make --timeout {scale}x", 1)
    nbf.write(notebook, path)
    done = _dagnb("run", str(path), cwd=tmp_path)
    assert done.returncode == 1
    assert f"dagnb: cell 4 of {path} (step " in done.stderr, done.stderr
    error = done.stderr.split(" failed:\n", 1)[1]
    assert error.splitlines()[0] == (
        "UsageError: step 'total' timeout '2x' is not a duration; use seconds or a number "
        "with ms, s, m, h, d or w such as '10m' or '1h30m'"), error


def test_target_runs_what_it_needs_and_not_the_cells_after(tmp_path):
    path = _notebook(tmp_path)
    done = _dagnb("run", str(path), "--target", "make", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert _runs(tmp_path) == ["make"]
    assert "total is" not in done.stdout


def test_run_options_reach_the_notebooks_steps(tmp_path):
    path = _notebook(tmp_path)
    caller = tmp_path / "caller"
    caller.mkdir()
    done = _dagnb("run", str(path), "--tag", "nosuch", cwd=caller)
    assert done.returncode == 2 and "no step has tag" in done.stderr
    (tmp_path / "tagged.py").write_text(
        "# %%\n%load_ext dagnb\n\n# %%\n%%dagger a --tags first\ntouch a_ran\n\n"
        "# %%\n%%dagger b\ntouch b_ran\n")
    done = _dagnb("run", str(tmp_path / "tagged.py"), "--tag", "first", "--executor", "local",
                  "--max-concurrency", "1", "--no-enable-retry", "--cache-dir", "elsewhere",
                  cwd=caller)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "a_ran").exists() and not (tmp_path / "b_ran").exists()
    assert (caller / "elsewhere" / ".runs").is_dir()  # the caller's folder, as for a workflow
    assert not (tmp_path / ".dagnb_cache").exists()


def test_a_background_cell_is_waited_for_and_its_failure_exits_1(tmp_path):
    """The kernel shuts down once the last cell ran: a ``--background`` step still going
    ended unrun, shown ``pending``, and the run exited 0."""
    (tmp_path / "bg.py").write_text(
        "# %%\n%load_ext dagnb\n\n"
        "# %%\n%%dagger slow --background\nsleep 1\ntouch slow_ran\n\n"
        "# %%\n%%dagger bad --background\nsleep 1\nexit 3\n\n# %%\nprint('last cell')\n")
    done = _dagnb("run", "bg.py", "--executor", "local", cwd=tmp_path)
    assert done.returncode == 1, done.stdout
    assert (tmp_path / "slow_ran").exists()
    states = {line.split()[0]: line.split()[1] for line in done.stdout.splitlines()
              if line.split()[:1] in (["slow"], ["bad"])}
    assert states == {"slow": "succeeded", "bad": "failed"}


def test_timeout_limits_the_whole_notebook_and_stops_its_steps(tmp_path):
    (tmp_path / "slow.py").write_text(
        "# %%\n%load_ext dagnb\n\n# %%\n%%dagger nap\nsleep 60\n\n"
        "# %%\n%%dagger after\ntouch after_ran\n")
    done = _dagnb("run", "slow.py", "--timeout", "3", "--executor", "local", cwd=tmp_path)
    assert done.returncode == 1
    assert "the run's time limit (3s) passed" in done.stderr.splitlines()[-1]
    assert not (tmp_path / "after_ran").exists()


def test_graph_and_validate_read_the_cells_without_running_them(tmp_path):
    path = _notebook(tmp_path)
    graph = _dagnb("graph", str(path), cwd=tmp_path)
    assert graph.stdout.split("\n")[:2] == ["make", "total  <- make"]
    assert _dagnb("validate", str(path), cwd=tmp_path).stdout.strip().endswith("2 steps, valid")
    assert _runs(tmp_path) == []


def test_graph_shows_a_step_reading_another_steps_outputs_as_after_it(tmp_path):
    """A cell reading a variable an earlier --python cell outputs runs after it (--target
    and a saved workflow have it), though no --needs says so: graph listed it alone. A
    plain cell binding the variable again between them cuts the link."""
    path = tmp_path / "reads.py"
    path.write_text("# %%\n%load_ext dagnb\n\n# %%\n%%dagger load --python --outputs rows\n"
                    "rows = [1, 2]\n\n# %%\n%%dagger total --python --outputs t\n"
                    "t = sum(rows)\n\n# %%\nrows = [3]\n\n"
                    "# %%\n%%dagger again --python --outputs u\nu = len(rows)\n")
    graph = _dagnb("graph", str(path), cwd=tmp_path)
    assert graph.stdout.splitlines() == ["load", "total  <- load (reads rows)", "again"]


def test_a_bad_cell_is_one_line_and_exit_2(tmp_path):
    path = tmp_path / "bad.ipynb"
    cells = [nbf.v4.new_code_cell("%%dagger a --neds b\necho a")]
    nbf.write(nbf.v4.new_notebook(cells=cells), path)
    done = _dagnb("validate", str(path), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "cell 1" in done.stderr and "--neds" in done.stderr


def test_a_percent_format_py_notebook_works_the_same(tmp_path):
    script = tmp_path / "pipe.py"
    script.write_text("# %%\n# %load_ext dagnb\n\n# %% [markdown]\n# A pipeline\n\n"
                      "# %%\n# %%dagger hello\n# echo hello > \"$DAGNB_OUT/h.txt\"\n\n"
                      "# %%\n# %%dagger shout --needs hello\n"
                      "# tr a-z A-Z < \"$DAGNB_IN/hello/h.txt\"\n")
    assert _dagnb("graph", str(script), cwd=tmp_path).stdout.split("\n")[:2] == [
        "hello", "shout  <- hello"]
    done = _dagnb("run", str(script), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "HELLO" in done.stdout
    assert "no %%dagger cell" not in done.stderr


def test_param_lands_after_a_percent_format_cell_tagged_parameters(tmp_path):
    """jupytext writes a cell's tags on its marker: `--param` goes after that cell (it
    went first, and the defaults cell then put the old value back, exit 0)."""
    script = tmp_path / "nb.py"
    script.write_text('# %%\nimport sys\n\n# %% tags=["parameters"]\nalpha = 0.5\n\n'
                      '# %% [markdown] tags=["notes"]\n# alpha\n\n'
                      '# %%\nprint("alpha used:", alpha)\n')
    done = _dagnb("run", str(script), "--param", "alpha=2", "-o", "out.ipynb", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "alpha used: 2" in done.stdout
    # (a notebook of no step: said, not a run that printed nothing of dagnb's)
    assert done.stderr == (f"dagnb: {script} has no %%dagger cell: its code ran, and no step is "
                           "listed; a step is a cell that starts with %%dagger NAME\n")
    executed = nbf.read(tmp_path / "out.ipynb", as_version=4)
    assert [cell.metadata.get("tags") for cell in executed.cells] == [
        None, ["parameters"], ["injected-parameters"], ["notes"], None]


def test_code_before_the_first_percent_marker_is_a_first_cell(tmp_path):
    """As jupytext reads it: imports and constants often come before the first ``# %%``."""
    script = tmp_path / "nb.py"
    script.write_text('import pathlib\nGREETING = "hello"\n\n# %%\nprint("cell ran", GREETING)\n')
    done = _dagnb("run", str(script), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "cell ran hello" in done.stdout


def test_a_jupytext_header_is_not_a_cell_but_the_code_after_it_is(tmp_path):
    script = tmp_path / "nb.py"
    script.write_text("#!/usr/bin/env python\n# ---\n# jupyter:\n#   jupytext:\n"
                      "#     formats: py:percent\n# ---\nimport os\n\n"
                      "# %%\n# %%dagger a --neds b\n# echo a\n")
    done = _dagnb("validate", str(script), cwd=tmp_path)
    assert done.returncode == 2
    assert "cell 2" in done.stderr and done.stderr.count("\n") == 1  # `import os` is cell 1


@pytest.mark.parametrize("command", ["run", "validate", "graph"])
def test_a_py_file_without_percent_cells_is_refused(tmp_path, command):
    script = tmp_path / "mod.py"
    script.write_text("open('ran', 'w').close()\nraise SystemExit(3)\n")
    done = _dagnb(command, str(script), cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr == (f"dagnb: error: {str(script)!r} has no '# %%' cells, so it is not a "
                           "percent-format notebook; start each cell with a '# %%' line, or "
                           "run it with python\n")
    assert not (tmp_path / "ran").exists()


def test_a_kernel_running_a_plain_script_loads_the_extension(tmp_path):
    """VS Code's interactive window names the .py it runs, which may have no cells."""
    (tmp_path / "script.py").write_text("print('plain')\n")
    path = tmp_path / "scratch.ipynb"
    cells = [nbf.v4.new_code_cell("%load_ext dagnb"),
             nbf.v4.new_code_cell("%%dagger hello\necho hi > \"$DAGNB_OUT/h.txt\"")]
    nbf.write(nbf.v4.new_notebook(cells=cells), path)
    ran = _interactive(path, {"JPY_SESSION_NAME": str(tmp_path / "script.py"),
                              "DAGNB_CACHE_DIRECTORY": str(tmp_path / "cache")})
    shown = "".join(out.get("text", "") + "".join(out.get("data", {}).get("text/plain", ""))
                    for out in ran.cells[1].outputs)
    assert any(line.split()[:2] == ["hello", "succeeded"] for line in shown.splitlines()), shown
    assert [p.read_text() for p in (tmp_path / "cache").rglob("h.txt")] == ["hi\n"]


def test_after_a_kernel_restart_the_last_cell_alone_is_served_from_the_cache(tmp_path):
    path = _notebook(tmp_path)
    notebook = nbf.read(path, as_version=4)
    report = nbf.v4.new_code_cell("%%dagger report --python --needs total --outputs text\n"
                                  "open(counter, 'a').write('report\\n')\n"
                                  "text = f'total={total}'")
    final = nbf.v4.new_code_cell("%%dagger final --python --needs report --outputs line\n"
                                 "open(counter, 'a').write('final\\n')\n"
                                 "line = report.upper()")
    notebook.cells[4:4] = [report, final]
    nbf.write(notebook, path)
    env = {"JPY_SESSION_NAME": str(path)}  # what Jupyter Server tells a session's kernel
    _interactive(path, env)
    assert _runs(tmp_path) == ["make", "total", "report", "final"]
    restarted = nbf.v4.new_notebook(cells=[
        nbf.v4.new_code_cell("%load_ext dagnb"),
        notebook.cells[1],  # the parameters: the plain cell the steps read
        final,
        nbf.v4.new_code_cell("from dagnb.notebook.session import get_session\n"
                             "print(get_session().graph.order(), line)"),
    ])
    client = NotebookClient(restarted, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ, "DAGNB_CONFIG": "none", **env})
    assert _runs(tmp_path) == ["make", "total", "report", "final"]  # nothing ran again
    load_text = "".join(o.get("text", "") for o in restarted.cells[0].outputs)
    assert "4 steps read from pipe.ipynb" in load_text
    last = restarted.cells[3].outputs[0]["text"]
    assert last.strip() == "['make', 'total', 'report', 'final'] TOTAL=12"


def test_a_kernel_says_which_step_its_notebook_defines_twice(tmp_path):
    """A copied cell defines its step again: the kernel counted it twice ("3 steps" for
    2) and said nothing of the earlier cell it replaces."""
    path = tmp_path / "dup.ipynb"
    nbf.write(nbf.v4.new_notebook(cells=[
        nbf.v4.new_code_cell("%%dagger a\necho one"),
        nbf.v4.new_code_cell("%%dagger b\necho two"),
        nbf.v4.new_code_cell("%%dagger a\necho three")]), path)
    started = nbf.v4.new_notebook(cells=[nbf.v4.new_code_cell("%load_ext dagnb")])
    client = NotebookClient(started, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ, "DAGNB_CONFIG": "none", "JPY_SESSION_NAME": str(path)})
    said = "".join(o.get("text", "") for o in started.cells[0].outputs)
    saved = time.strftime("%H:%M:%S", time.localtime(path.stat().st_mtime))
    assert said == (f"dagnb: 2 steps read from dup.ipynb (saved {saved}; unsaved edits are not "
                    "seen); step 'a' is defined in cells 1 and 3: the last one counts\n")


def test_after_a_restart_status_says_which_cell_defines_a_missing_variable(tmp_path):
    path = _notebook(tmp_path)
    restarted = nbf.v4.new_notebook(cells=[
        nbf.v4.new_code_cell("%load_ext dagnb"),
        nbf.v4.new_code_cell("status = %dagger status\n"
                             "print(status.set_index('step').loc['total', 'note'])"),
    ])
    client = NotebookClient(restarted, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ, "DAGNB_CONFIG": "none", "JPY_SESSION_NAME": str(path)})
    note = restarted.cells[1].outputs[0]["text"].strip()
    assert note == ("needs variable `counter` (cell 2 of pipe.ipynb), "
                    "`scale` (cell 2 of pipe.ipynb)")


def test_after_a_restart_plan_and_explain_say_which_cell_to_run_not_code_changed(tmp_path):
    """The step's code was as it ran, but its key lacked the variable no cell had
    defined yet: %dagger plan said "code changed", and explain began so, with no diff."""
    path = _notebook(tmp_path)
    _interactive(path)
    restarted = nbf.v4.new_notebook(cells=[
        nbf.v4.new_code_cell("%load_ext dagnb"),
        nbf.v4.new_code_cell("plan = %dagger plan\n"
                             "print(plan.set_index('step').loc['total', 'reason'])"),
        nbf.v4.new_code_cell("why = %dagger cache explain total\nprint(str(why).splitlines()[0])"),
    ])
    client = NotebookClient(restarted, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute(env={**os.environ, "DAGNB_CONFIG": "none", "JPY_SESSION_NAME": str(path)})
    said = ("step 'total' reads notebook variables `counter`, `scale`, not defined in this "
            "kernel yet; run cell 2 of pipe.ipynb first")
    assert restarted.cells[1].outputs[0]["text"].strip() == said
    assert restarted.cells[2].outputs[0]["text"].strip() == said


_CLEANED = """# %%
%load_ext dagnb

# %%
%%dagger other
echo other

# %%
rows = [1, 2, None, 4]

# %%
%%dagger clean --python --outputs rows
rows = [r for r in rows if r is not None]

# %%
%%dagger count --python --outputs n
n = len(rows)
print("count is", n)

# %%
%%dagger broken --needs other
exit 3

# %%
%%dagger last
echo last
"""


def _table(stdout: str) -> dict[str, list[str]]:
    """The final status table's rows (after its header), by step."""
    lines = stdout.splitlines()
    headers = [i for i, line in enumerate(lines)
               if line.split()[:4] == ["step", "state", "cached", "attempts"]]
    assert headers, f"no status table in {stdout!r}"
    header = headers[-1]
    return {line.split()[0]: line.split()[1:] for line in lines[header + 1:] if line.strip()}


def test_a_target_gets_the_value_an_earlier_steps_outputs_give_it_as_in_a_full_run(tmp_path):
    """`count` reads `rows`, which `clean`'s --outputs replace (no --needs): --target
    count gave 4, not 3. The table's counts are integers beside a `not run` row, and a
    failed cell still ends with the table of every step, those it left unrun too."""
    (tmp_path / "t.py").write_text(_CLEANED)
    done = _dagnb("run", "t.py", "--target", "count", "--executor", "local", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "count is 3" in done.stdout
    assert ("dagnb: --target runs 'clean' too: 'count' reads its output 'rows'; "
            "add --needs clean to count to say so") in done.stdout
    table = _table(done.stdout)
    assert table["other"] == ["not", "run"]
    assert table["count"][:4] == ["succeeded", "False", "1", "0"]
    done = _dagnb("run", "t.py", "--executor", "local", cwd=tmp_path)
    assert done.returncode == 1
    table = _table(done.stdout)
    assert [table[n][0] for n in ("clean", "count", "broken")] == [
        "cached", "cached", "failed"]  # the keys --target's run computed: a full run's
    assert table["last"] == ["not", "run"]


def test_needed_steps_follow_notebook_variables_through_plain_cells_and_lines():
    from dagnb.notebook.flow import needed_steps

    cells = [("code", "rows = [1, None]"),
             ("code", "%%dagger clean --python --outputs rows\nrows = [r for r in rows if r]"),
             ("code", "%%dagger late --python --outputs rows\nrows = []"),  # after: no effect
             ("code", "valid = list(rows)"),
             ("code", "%%dagger size --python --outputs n\nn = len(valid)"),
             ("code", "%%dagger shout --param n=$n\necho $DAGNB_PARAM_N")]
    cells[2], cells[3] = cells[3], cells[2]  # `late` comes after `valid = list(rows)`
    steps, feeds = needed_steps(cells, ["shout"], [])
    assert steps == ["clean", "size", "shout"]
    assert [(f.step, f.variable, f.reader) for f in feeds] == [
        ("clean", "rows", "size"), ("size", "n", "shout")]
    steps, feeds = needed_steps(cells, ["late"], [])
    assert steps == ["clean", "late"]  # cell 3, `valid = list(rows)`, runs before `late`
    assert [(f.step, f.variable, f.reader) for f in feeds] == [("clean", "rows", "cell 3")]
    # a needed step that rebinds what it reads (rows = f(rows)) reads the earlier one's
    again = [cells[0], cells[1], ("code", "%%dagger drop --python --outputs rows\n"
                                          "rows = [r for r in rows if r != 1]")]
    assert needed_steps(again, ["drop"], [])[0] == ["clean", "drop"]


def test_graph_and_validate_say_a_line_reads_notebook_variables(tmp_path):
    (tmp_path / "v.py").write_text(
        "# %%\n%load_ext dagnb\n\n# %%\nwho = 'acme'\n\n"
        "# %%\n%%dagger report --param who=$who --mount $data:/data\necho $DAGNB_PARAM_WHO\n")
    said = "its line reads notebook variables (who, data), known only when the cell runs"
    graph = _dagnb("graph", "v.py", cwd=tmp_path)
    assert graph.stdout.splitlines() == [f"report  ({said})"]
    valid = _dagnb("validate", "v.py", cwd=tmp_path)  # not "mounts '$data', which does not exist"
    assert valid.returncode == 0, valid.stderr
    assert valid.stdout.splitlines() == ["v.py: 1 step, valid",
                                         f"note: step 'report': {said}, and checked then"]


def test_the_callers_relative_dagnb_paths_reach_the_kernel_as_absolute_ones(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`DAGNB_CACHE_DIRECTORY=mycache dagnb run nbs/nb.ipynb` wrote nbs/mycache (the
    kernel works in the notebook's folder), and a relative DAGNB_CONFIG failed the first
    cell there, though `dagnb config show` named the project's: as --cache-dir is, they
    are made absolute from where the command was typed."""
    from dagnb.notebook.headless import _kernel_env

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("DAGNB_CACHE_DIRECTORY", "mycache")
    monkeypatch.setenv("DAGNB_CONFIG", "conf/dagnb.yaml")
    monkeypatch.setenv("DAGNB_MAX_RETRIES", "3")
    env = _kernel_env(None)
    assert env["DAGNB_CACHE_DIRECTORY"] == str(tmp_path / "mycache")
    assert env["DAGNB_CONFIG"] == str(tmp_path / "conf" / "dagnb.yaml")
    assert env["DAGNB_MAX_RETRIES"] == "3"  # (no path: as given)
    monkeypatch.setenv("DAGNB_CACHE_DIRECTORY", "s3://bucket/cache")
    monkeypatch.setenv("DAGNB_CONFIG", "none")
    env = _kernel_env(None)
    assert (env["DAGNB_CACHE_DIRECTORY"], env["DAGNB_CONFIG"]) == ("s3://bucket/cache", "none")
