"""A Dagger expert's QA pass (session 69): a link a container step made in $DAGNB_OUT
leading out of it (``python -m venv``'s ``bin/python -> /usr/bin/python3``) was
followed on this machine by the cache, which hashed, stored and pushed this machine's
file; and the stub let a step write into a read-only mount, which the engine refuses.
Through the real dagger-io client and the stub engine."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import quote

import pytest

from dagnb import Graph, Step
from dagnb.executors.dagger import links
from dagnb.executors.dagger.executor import DaggerExecutor
from dagnb.executors.loop import run_sync

pytest_plugins = ["dagger_stub.fixtures"]

HOST_BYTES = b"THIS-MACHINE-ONLY-7f3a"


def _files_holding(folder: Path, needle: bytes) -> list[Path]:
    return [path for path in folder.rglob("*")
            if path.is_file() and not path.is_symlink() and needle in path.read_bytes()]


def _venv_graph(tmp_path: Path, host_file: Path) -> Graph:
    made = ('mkdir -p "$DAGNB_OUT/bin" && echo ok > "$DAGNB_OUT/made.txt" && '
            f'ln -s {host_file} "$DAGNB_OUT/bin/python" && ln -s python "$DAGNB_OUT/bin/python3"')
    return Graph("g", [
        Step("venv", run=made),
        Step("use", needs=["venv"],
             run='readlink "$DAGNB_IN/venv/bin/python" "$DAGNB_IN/venv/bin/python3" '
                 '> "$DAGNB_OUT/seen.txt"'),
    ], base_dir=tmp_path)


def _not_cached(step: str, link: str, target: str) -> str:
    return (f"step {step!r} ran but was not cached: its output {link!r} is a link to "
            f"{target!r} in the container, which names the container's file, not one "
            "here; copy the file into $DAGNB_OUT (cp -L) or make the link relative "
            "inside it")


def test_a_container_s_link_out_of_its_outputs_is_not_followed_here(stub, tmp_path):
    """Before: the entry stored this machine's file that the link named (its bytes in
    the cache, a push would upload them) and hashed it as the step's output."""
    host_file = tmp_path / "python3"
    host_file.write_bytes(HOST_BYTES)
    graph, cache = _venv_graph(tmp_path, host_file), tmp_path / "cache"
    with pytest.warns(UserWarning) as caught:
        done = graph.run(executor="dagger", cache_directory=cache)
    assert done.states() == {"venv": "succeeded", "use": "succeeded"}
    assert [str(w.message) for w in caught if "'venv'" in str(w.message)] == [
        _not_cached("venv", "bin/python", str(host_file))]
    assert _files_holding(cache, HOST_BYTES) == []
    # downstream in a container: the links as the step made them
    assert (done.outputs("use") / "seen.txt").read_text().split() == [str(host_file),
                                                                       "python"]
    # here: set aside, followed by nothing; its other files as made
    out = done.outputs("venv")
    assert os.readlink(out / "bin/python") == links.SET_ASIDE + quote(str(host_file), safe="")
    assert not (out / "bin/python").exists() and not (out / "bin/python3").exists()
    assert os.readlink(out / "bin/python3") == "python"
    assert (out / "made.txt").read_text() == "ok\n"
    # this machine's file is no part of the step's output digest: "use" is a hit
    host_file.write_bytes(HOST_BYTES + b" changed")
    with pytest.warns(UserWarning, match="'venv' ran but was not cached"):
        again = graph.run(executor="dagger", cache_directory=cache)
    assert again.states() == {"venv": "succeeded", "use": "cached"}


def test_a_link_climbing_out_that_is_missing_here_is_not_called_broken(stub, tmp_path):
    """Before: "is not a file or a folder (..., a broken link); write files there"."""
    graph = Graph("g", [Step("rel", run='ln -s ../../etc/os-release "$DAGNB_OUT/osr"')],
                  base_dir=tmp_path)
    with pytest.warns(UserWarning) as caught:
        done = graph.run(executor="dagger", cache_directory=tmp_path / "cache")
    assert done.states() == {"rel": "succeeded"}
    assert [str(w.message) for w in caught] == [
        _not_cached("rel", "osr", "../../etc/os-release")]


def test_a_set_aside_link_s_target_holding_a_secret_is_not_said(stub, tmp_path, monkeypatch):
    """The warning that names a set-aside link's target must not say a secret in it:
    the outputs' names are searched before, for the secret's %-quoted form too."""
    secret = "Kx7/Secret@Val"
    monkeypatch.setenv("API_TOKEN", secret)
    graph = Graph("g", [Step("named", secrets=("API_TOKEN",),
                             run='ln -s "/opt/$API_TOKEN" "$DAGNB_OUT/l"')], base_dir=tmp_path)
    with pytest.warns(UserWarning) as caught:
        done = graph.run(executor="dagger", cache_directory=tmp_path / "cache")
    assert done.states() == {"named": "succeeded"}
    said = [str(w.message) for w in caught]
    assert all(secret not in message for message in said)
    assert any("(or a link's target) holds the value of secret 'API_TOKEN'" in message
               for message in said), said


def test_links_leading_out_only_are_set_aside(tmp_path):
    out = tmp_path / "out"
    (out / "a").mkdir(parents=True)
    (out / "data.csv").write_text("x\n")
    (out / "a" / "b").symlink_to("..")  # out itself: inside
    (out / "s").symlink_to("a/b")  # inside
    (out / "t").symlink_to("s/..")  # as written, inside; followed, out's parent
    (out / "abs").symlink_to("/dagnb/out/data.csv")  # the container's path: not here
    (out / "a" / "up").symlink_to("../../elsewhere")
    (out / "rel").symlink_to("a/../data.csv")
    (out / "to-abs").symlink_to("abs")
    links.set_aside_leaving_links(out)
    assert {path.name: os.readlink(path) for path in [*out.iterdir(), *(out / "a").iterdir()]
            if path.is_symlink()} == {
        "b": "..", "s": "a/b", "rel": "a/../data.csv", "to-abs": "abs",
        "t": links.SET_ASIDE + "s%2F..", "abs": links.SET_ASIDE + "%2Fdagnb%2Fout%2Fdata.csv",
        "up": links.SET_ASIDE + "..%2F..%2Felsewhere"}
    assert not any(os.path.exists(out / name) for name in ("t", "abs", "a/up"))
    assert links.first_set_aside(str(out)) == ("a/up", "../../elsewhere")


def test_a_host_step_s_link_out_of_its_outputs_is_stored_as_before(tmp_path):
    """Only a container's link names another machine's file: the local executor's is
    this machine's, stored as it was."""
    graph = Graph("g", [Step("here", run='ln -s /etc/hostname "$DAGNB_OUT/h"')],
                  base_dir=tmp_path)
    graph.run(executor="local", cache_directory=tmp_path / "cache")
    again = graph.run(executor="local", cache_directory=tmp_path / "cache")
    assert again.states() == {"here": "cached"}


# -- a read-only mount --------------------------------------------------------------


@pytest.mark.parametrize("sandbox", ["namespace", "rewrite"])
def test_a_write_into_a_mounted_folder_fails_as_on_the_engine(
        stub, make_task, tmp_path, monkeypatch, sandbox):
    """dagnb mounts a host folder readOnly: the engine mounts it "ro", and the step's
    write fails with the kernel's EROFS. Before, the stub let it write."""
    if sandbox == "namespace" and _namespace_unavailable():
        pytest.skip("mount namespaces are not allowed here")
    monkeypatch.setenv("DAGNB_STUB_SANDBOX", sandbox)
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("x\n")
    step = Step("w", run='cat /workspace/a.txt > "$DAGNB_OUT/copy.txt" && '
                         'echo y > /workspace/new.txt', mounts={"data": "/workspace"},
                workdir="/workspace")
    task = make_task(step, base_dir=tmp_path)
    outcome = run_sync(DaggerExecutor().execute(task))
    assert outcome.exit_code != 0
    assert any(line.endswith("/workspace/new.txt: Read-only file system")
               for line in task.log.of("stderr")), task.log.lines
    assert not (tmp_path / "data" / "new.txt").exists()


@pytest.mark.parametrize("sandbox", ["namespace", "rewrite"])
def test_python_importing_from_a_read_only_mount_runs_as_on_the_engine(
        stub, make_task, tmp_path, monkeypatch, sandbox):
    """Python writes no bytecode cache into a read-only folder, and says nothing."""
    if sandbox == "namespace" and _namespace_unavailable():
        pytest.skip("mount namespaces are not allowed here")
    monkeypatch.setenv("DAGNB_STUB_SANDBOX", sandbox)
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "helper.py").write_text("ANSWER = 42\n")
    step = Step("py", run='python3 -c "import helper; print(helper.ANSWER)"',
                mounts={"src": "/workspace"}, workdir="/workspace")
    task = make_task(step, base_dir=tmp_path)
    assert run_sync(DaggerExecutor().execute(task)).exit_code == 0
    assert task.log.of("stdout") == ["42"]


def test_a_step_writing_into_its_input_fails_as_on_the_engine(stub, tmp_path):
    graph = Graph("g", [
        Step("up", run='echo 1 > "$DAGNB_OUT/n.txt"'),
        Step("down", needs=["up"], run='echo 2 > "$DAGNB_IN/up/n.txt"'),
    ], base_dir=tmp_path)
    done = graph.run(executor="dagger", cache=False, raise_on_failure=False)
    assert done.states() == {"up": "succeeded", "down": "failed"}
    lines = done.logs("down", stream="stderr")["line"].tolist()
    assert any(line.endswith("Read-only file system") for line in lines), lines


def _namespace_unavailable() -> bool:
    from dagger_stub import sandbox

    return not sandbox._namespace_works()
