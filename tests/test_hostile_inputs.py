"""Hostile and broken inputs: one line and exit 2, at once, before anything is built or run."""

from __future__ import annotations

import os
import time

import pytest
from IPython.core.error import UsageError

from dagnb.cli import main

LAUGHS = "steps:\n  a:\n    run: echo hi\n    params:\n      a: &a [x, x, x, x, x, x, x, x, x]\n"
for level, name in enumerate("bcdefghij"):
    previous = "abcdefghij"[level]
    LAUGHS += f"      {name}: &{name} [" + ", ".join([f"*{previous}"] * 9) + "]\n"

CASES = {
    "billion_laughs": (LAUGHS, "aliases expand to more than"),
    "deep": ("steps:\n  a:\n    run: echo\n    params:\n      x: " + "[" * 300 + "]" * 300,
             "nests more than 64 levels"),
    "unhashable_key": ("steps:\n  a:\n    run: echo\n    params:\n      ? [1, 2]\n      : x\n",
                       "unhashable"),
    "huge_integer": ("steps:\n  a:\n    run: echo\n    params:\n      x: " + "9" * 5000,
                     "(4300"),  # Python's words: "(4300 digits)" from 3.11
    "self_alias": ("steps:\n  a: &a\n    run: echo\n    params: {x: *a}\n", "refers to"),
    "int_param_name": ("steps:\n  a:\n    run: echo\n    params: {1: x}\n",
                       "param name 1 is not text"),
    "image_number": ("steps:\n  a:\n    run: echo\n    image: 5\n", "image 5 is not an image"),
    "unknown_executor": ("steps:\n  a:\n    run: echo\n    executor: foo\n",
                         "executor='foo' must be 'auto', 'local', 'dagger' or 'dask'"),
    "bad_retries": ("steps:\n  a:\n    run: echo\n    retries: {max_retries: lots}\n",
                    "max_retries='lots' is not valid"),
    "newline_name": ('steps:\n  "abc\\n":\n    run: echo\n', "step name 'abc\\n' is not valid"),
}


@pytest.mark.parametrize("case", sorted(CASES))
@pytest.mark.parametrize("command", ["validate", "run"])
def test_bad_workflows_are_one_line_and_exit_2(case, command, tmp_path, monkeypatch, capsys):
    text, message = CASES[case]
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yml").write_text(text)
    started = time.monotonic()
    assert main([command, "w.yml"]) == 2
    assert time.monotonic() - started < 5
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and message in err, err


def test_non_utf8_yaml(tmp_path, capsys):
    (tmp_path / "w.yml").write_bytes(b"steps:\n  a:\n    run: echo \xff\xfe\n")
    assert main(["validate", str(tmp_path / "w.yml")]) == 2
    assert "is not UTF-8 text (byte 26)" in capsys.readouterr().err


@pytest.mark.parametrize("path", ["fifo", "/dev/zero"])
def test_a_pipe_or_a_device_is_refused_at_once(path, tmp_path, capsys):
    if path == "fifo":
        path = str(tmp_path / "w.yml")
        os.mkfifo(path)
    started = time.monotonic()
    assert main(["validate", path]) == 2  # a read would block (FIFO) or never end
    assert time.monotonic() - started < 2
    assert "is not a regular file" in capsys.readouterr().err


@pytest.mark.parametrize("command", ["validate", "run"])
@pytest.mark.parametrize("mount", ["fifo", "/dev/zero"])
def test_a_pipe_or_a_device_as_a_mount_is_refused_at_once(command, mount, tmp_path,
                                                          monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    if mount == "fifo":
        os.mkfifo(tmp_path / "fifo")
    (tmp_path / "w.yml").write_text(f"steps:\n  a:\n    run: ls /m\n    mounts: {{{mount}: /m}}\n")
    started = time.monotonic()
    assert main([command, "w.yml"]) == 2  # hashing it for the key would never end
    assert time.monotonic() - started < 5
    kind = "a FIFO" if mount == "fifo" else "a device"
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"which is {kind}, not a file or folder" in err, err


def test_validate_walks_a_mounted_folder_and_refuses_one_too_deep(tmp_path, monkeypatch,
                                                                  capsys):
    from dagnb.fingerprint import MAX_DEPTH

    monkeypatch.chdir(tmp_path)
    os.makedirs(os.path.join("deep", *["d"] * (MAX_DEPTH + 2)))
    os.makedirs("loop/inner")
    os.symlink("..", "loop/inner/up")  # a symlink loop is walked once, not refused
    (tmp_path / "w.yml").write_text("steps:\n  a:\n    run: ls\n    mounts: {loop: /l}\n"
                                    "  b:\n    run: ls\n    mounts: {deep: /m}\n")
    assert main(["validate", "w.yml"]) == 2  # a run would fail step b on its key
    err = capsys.readouterr().err
    assert err.count("\n") == 1
    assert f"step 'b' mounts 'deep': folder '{tmp_path / 'deep'}' nests more than" in err


def test_an_oversized_workflow_is_refused_unread(tmp_path, capsys):
    big = tmp_path / "w.yml"
    with big.open("wb") as handle:
        handle.truncate(33 * 2**20)  # (sparse: no disk taken)
    assert main(["validate", str(big)]) == 2
    assert "a workflow is at most 32 MiB" in capsys.readouterr().err


def test_notebook_paths_give_one_line(shell, tmp_path):
    ip = shell
    binary = tmp_path / "binary.yml"
    binary.write_bytes(bytes(range(256)))
    with pytest.raises(UsageError, match="is not UTF-8 text"):
        ip.run_line_magic("dagger", f"load {binary}")
    (tmp_path / "afile").write_text("a file where the folder would be made")
    with pytest.raises(UsageError, match=r"afile/x\.yml'.* is a file, not a folder"):
        ip.run_line_magic("dagger", f"save {tmp_path / 'afile' / 'x.yml'}")
    with pytest.raises(UsageError, match="nests too deeply"):
        ip.run_cell_magic("dagger", "deep --param x=" + "[" * 3000 + "]" * 3000, "echo hi")
    with pytest.raises(UsageError, match=r"more than 64 levels"):  # (3.13's json takes 3000)
        ip.run_cell_magic("dagger", "deep --param x=" + "[" * 65 + "]" * 65, "echo hi")
    ip.run_cell_magic("dagger", "deep --param x=" + "[" * 64 + "]" * 64 + " --no-cache",
                      "echo hi")  # (as deep as a workflow's YAML may nest)
