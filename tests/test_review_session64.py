"""Mends of a review of this session's commits: the setting's store credentials stay
secrets where a run names a local folder; ``-p`` messages mask store credentials; a
killed run whose pid another user's process took is read as killed; a class cached in a
script is named after the script; a shelved result pickled by an older version loads."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

import dagnb
from dagnb import Graph, Step
from dagnb.cli import main
from dagnb.errors import DagnbError
from dagnb.runtime import history

SECRET = "wJalrXUtnFEMIK7MDENGbPxRfiCYEXAMPLEKEY"


def test_the_setting_s_store_secret_is_one_where_a_run_names_a_folder(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A step still sees the setting's store credentials in its environment."""
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    dagnb.configure(cache_directory="s3://team-bucket/cache")
    graph = Graph("g", [Step("a", run="true", params={"label": SECRET})])
    with pytest.raises(DagnbError, match="param 'label' holds the value of secret "
                                         "'AWS_SECRET_ACCESS_KEY'"):
        graph.run(cache_directory=str(workdir / "local"), executor="local")
    assert not (workdir / "local").exists()


def test_a_param_refused_by_its_parameter_masks_a_store_credential(
        workdir: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET)
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://127.0.0.1:9")
    (workdir / "wf.yml").write_text(textwrap.dedent("""\
        name: wf
        parameters:
          samples: {type: int, default: 3}
        steps:
          - name: a
            run: 'true'
            params: {samples: 3}
        """))
    for command in (["plan", "wf.yml"], ["run", "wf.yml", "--executor", "local"]):
        code = main([*command, "--cache-dir", "s3://team-bucket/cache",
                     "-p", f"samples={SECRET}"])
        out, err = capsys.readouterr()
        assert code == 2, (command, out, err)
        assert SECRET not in out + err, (command, err)
        assert "--param 'samples=***'" in err, (command, err)


def test_a_run_whose_pid_another_user_s_process_took_is_read_as_killed(
        workdir: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """``kill(pid, 0)`` is refused for another user's process: its start still tells."""
    import json

    Graph("cut", [Step("a", run="true"), Step("b", run="exit 3", needs=["a"])]).run(
        executor="local")
    folder = history.RunFolder(workdir / ".dagnb_cache", "20261205-000000-000-killed",
                               origin=history.graph_origin())
    folder.begin("cut", ["a", "b"])
    other = subprocess.Popen(["sleep", "30"])
    try:
        _, began = history._process_state(other.pid)
        started = workdir / ".dagnb_cache" / ".runs" / history.STARTED_NAME
        lines = [json.loads(line) for line in started.read_text().splitlines() if line.strip()]
        started.write_text("".join(json.dumps({**line, "pid": other.pid, "since": began - 1})
                                   + "\n" for line in lines))

        kill = os.kill

        def refused(pid: int, signal: int) -> None:  # (as for a process of another user)
            if pid == other.pid and signal == 0:
                raise PermissionError(1, "Operation not permitted")
            kill(pid, signal)

        monkeypatch.setattr(os, "kill", refused)
        assert history.last_states(workdir / ".dagnb_cache", "cut") == {
            "a": "killed", "b": "killed"}
    finally:
        other.kill()
        other.wait()


CLASS_SCRIPT = textwrap.dedent("""
    import sys
    import dagnb

    memory = dagnb.Memory(sys.argv[1])

    class Model:
        def __init__(self, x):
            with open(sys.argv[2], "a") as runs:
                runs.write(f"built {x}\\n")
            self.x = x

    Cached = memory.cache(Model)
    if sys.argv[3] == "call":
        assert Cached(1).x == 1
    else:
        Cached.clear(warn=False)
    print(Cached.store_name)
""")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_clearing_one_script_s_cached_class_keeps_another_script_s_class_of_that_name(
        tmp_path: Path) -> None:
    names = {}
    for folder in ("a", "b"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "train.py").write_text(CLASS_SCRIPT)

    def run(folder: str, action: str) -> None:
        done = subprocess.run([sys.executable, "train.py", str(tmp_path / "cache"),
                               str(tmp_path / f"{folder}.runs"), action],
                              cwd=tmp_path / folder, capture_output=True, text=True,
                              timeout=120)
        assert done.returncode == 0, done.stderr
        names[folder] = done.stdout.strip()

    run("b", "call")
    run("a", "call")
    run("a", "clear")
    run("b", "call")  # a hit: b's entry was kept
    assert (tmp_path / "b.runs").read_text().splitlines() == ["built 1"]
    assert names["a"] != names["b"] and names["a"].endswith(".Model"), names


def _double(x: int) -> int:
    return x * 2


def test_a_shelved_result_pickled_before_names_were_sent_loads(tmp_path: Path) -> None:
    """A handle kept on disk by an older version: its pickle gave four arguments."""
    from dagnb.cache import memory

    double = dagnb.Memory(str(tmp_path)).cache(_double)
    shelved = double.call_and_shelve(4)
    rebuild, arguments = shelved.__reduce__()
    old = rebuild(*arguments[:4])
    assert old.get() == 8
    assert rebuild is memory._shelved_rebuilt
