"""What the QA pass found in the scheduler: a secret's start left in clear at the end of
a step cut off mid-line, and a step's result that is a path into its out_dir."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import dagnb
from dagnb.executors.capture import capturing, routed_output

TOKEN = "sk-live-Abc123XyZ987qwe"


def _files_holding(root: Path, text: str) -> list[str]:
    return [str(path) for path in root.rglob("*")
            if path.is_file() and text.encode() in path.read_bytes()]


# --- A: the end of a stream with no newline is masked as the last of its line --------

def test_a_secret_start_at_a_cut_off_line_is_masked_everywhere(workdir, monkeypatch):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    graph = dagnb.Graph("cut")

    @graph.step(secrets=["API_TOKEN"])
    def streamed():
        token = os.environ["API_TOKEN"]
        for piece in ("Authorization: Bearer ", token[:7], token[7:14]):  # cut off
            print(piece, end="", flush=True)
        raise ConnectionResetError("stream cut")

    run = graph.run(retries=False)
    assert run.logs("streamed")["line"].tolist()[0] == "Authorization: Bearer ***"
    assert _files_holding(workdir, TOKEN[:7]) == []


def test_a_commands_cut_off_line_masks_a_secret_start_too(workdir, monkeypatch):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    step = dagnb.Step("cut", secrets=["API_TOKEN"], executor="local",
                      run='printf "Authorization: Bearer %s" "${API_TOKEN%???????????}"; exit 3')
    run = dagnb.Graph("cut", [step]).run(retries=False, raise_on_failure=False)
    assert run.logs("cut")["line"].tolist() == ["Authorization: Bearer ***"]
    assert _files_holding(workdir, TOKEN[:7]) == []


def test_a_finished_line_ending_with_a_secret_start_shows_as_written(workdir, monkeypatch):
    monkeypatch.setenv("API_TOKEN", TOKEN)
    graph = dagnb.Graph("ended")

    @graph.step(secrets=["API_TOKEN"])
    def prefix():
        print("prefix: " + os.environ["API_TOKEN"][:7])  # its line ends: no secret there

    run = graph.run()
    assert run.logs("prefix")["line"].tolist() == ["prefix: sk-live"]


def test_a_sink_without_last_gets_the_cut_off_line_as_a_line():
    lines: list[tuple[str, str]] = []
    with capturing(), routed_output(lambda stream, line: lines.append((stream, line))):
        print("no newline", end="")
    assert lines == [("stdout", "no newline")]


# --- B: a result that is a path into the step's out_dir -----------------------------

def test_a_result_path_into_the_out_dir_is_said_to_move(workdir):
    graph = dagnb.Graph("paths")

    @graph.step
    def export():
        path = dagnb.current().out_dir / "data.csv"
        path.write_text("a,b\n1,2\n")
        return path

    @graph.step
    def load(export):
        return (dagnb.current().inputs["export"] / "data.csv").read_text()

    with pytest.warns(UserWarning, match=r"^step 'export' returned a path inside its "
                      r"out_dir, which moves into the cache; a downstream step reads it as "
                      r"dagnb.current\(\).inputs\['export'\] / 'data.csv'$"):
        run = graph.run()
    assert run.result("load") == "a,b\n1,2\n"


def test_a_result_path_elsewhere_is_not_said(workdir, recwarn):
    graph = dagnb.Graph("elsewhere")

    @graph.step
    def export():
        (dagnb.current().out_dir / "data.csv").write_text("x")
        return workdir / "data.csv"

    graph.run()
    assert not [w for w in recwarn if "out_dir" in str(w.message)]
