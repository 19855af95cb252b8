"""The dagnb command as QA found it (pass 5): a duration YAML read as base 60, plan
saying "would run" where run refuses, a shell command's trailing newline re-running its
step, and the cache beside a workflow unsaid by plan, explain, logs and history."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.cli import main

# -- 1. a duration written 1:30 --------------------------------------------------------


@pytest.mark.parametrize(("fields", "line"), [
    ("    timeout: 1:30\n",
     "step 'a': timeout 1:30 reads as 90 s in YAML; write 90s, 1h30m or 1m30s"),
    ("    ttl: 12:00\n",
     "step 'a': ttl 12:00 reads as 720 s in YAML; write 720s, 12h or 12m"),
    ("    timeout_seconds: 1:30:00\n",
     "step 'a': timeout_seconds 1:30:00 reads as 5400 s in YAML; write 5400s or 1h30m"),
    ("    cache_ttl_seconds: 2:00\n",
     "step 'a': cache_ttl_seconds 2:00 reads as 120 s in YAML; write 120s, 2h or 2m"),
    ("    retries: {max_retries: 2, max_delay: 1:00}\n",
     "step 'a': retries: max_delay 1:00 reads as 60 s in YAML; write the seconds: 3600 (1h)"
     " or 60 (1m)"),
    ("    retries:\n      backoff_factor: 1:30\n",
     "step 'a': retries: backoff_factor 1:30 reads as 90 s in YAML; write the seconds: "
     "5400 (1h30m) or 90 (1m30s)"),
    ("    retry_jitter: 1:30\n",
     "step 'a': retry_jitter 1:30 reads as 90 s in YAML; write the seconds: 5400 (1h30m) "
     "or 90 (1m30s)"),
])
def test_a_duration_field_written_as_a_base_60_number_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        fields: str, line: str) -> None:
    """YAML 1.1 reads a bare ``1:30`` as 90: ``timeout: 1:30`` was 90 s and ``ttl: 12:00``
    12 minutes without a word, where ``--timeout 1:30`` and ``"1:30"`` are refused."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(f"name: x\nsteps:\n  a:\n    run: echo hi\n{fields}")
    assert main(["validate", "wf.yml"]) == 2
    assert capsys.readouterr().err == f"dagnb: error: wf.yml: {line}\n"


def test_a_defaults_duration_written_as_a_base_60_number_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text("workflow_defaults:\n  timeout_seconds: 2:00\n"
                                     "steps:\n  - name: a\n    command: echo hi\n")
    assert main(["validate", "wf.yml"]) == 2
    assert capsys.readouterr().err == (
        "dagnb: error: wf.yml: workflow_defaults: timeout_seconds 2:00 reads as 120 s in "
        "YAML; write 120s, 2h or 2m\n")


def test_durations_written_otherwise_still_load(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(
        "steps:\n  a:\n    run: echo hi\n    timeout: 90\n    ttl: 1h30m\n"
        "    retries: {max_retries: 2, max_delay: 60, jitter: 0.5}\n")
    assert main(["validate", "wf.yml"]) == 0
    assert capsys.readouterr().out == "wf.yml: 1 step, valid\n"


@pytest.mark.parametrize(("text", "line"), [
    ("timeout_seconds: 2:00\n",
     "timeout_seconds 2:00 reads as 120 s in YAML; write 120s, 2h or 2m"),
    ("workflow_defaults:\n  timeout_seconds: 1:00\n",
     "workflow_defaults: timeout_seconds 1:00 reads as 60 s in YAML; write 60s, 1h or 1m"),
    ("workflow_defaults:\n  cache_ttl_seconds: 12:00\n",
     "workflow_defaults: cache_ttl_seconds 12:00 reads as 720 s in YAML; write 720s, 12h "
     "or 12m"),
    ("workflow_defaults:\n  retry_backoff_factor: 1:30\n",
     "workflow_defaults: retry_backoff_factor 1:30 reads as 90 s in YAML; write the "
     "seconds: 5400 (1h30m) or 90 (1m30s)"),
])
def test_a_config_duration_written_as_a_base_60_number_is_refused(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        text: str, line: str) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("DAGNB_CONFIG", raising=False)
    (tmp_path / "dagnb.yaml").write_text(text)
    assert main(["config", "show"]) == 2
    assert capsys.readouterr().err == f"dagnb: error: {tmp_path / 'dagnb.yaml'}: {line}\n"


# -- 2. plan refuses where run refuses -------------------------------------------------

_SECRET_PARAM = ("name: s\nsteps:\n  fetch:\n    secrets: [API_TOKEN]\n"
                 "    params: {account: demo}\n"
                 "    run: echo \"fetching $DAGNB_PARAM_ACCOUNT\"\n")
_TOKEN = "tok-ABCDEF123456"


def test_plan_refuses_a_param_holding_a_secret_as_the_run_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """plan said "1 would run" and exited 0 where run refused before anything ran."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("API_TOKEN", _TOKEN)
    (tmp_path / "wf.yml").write_text(_SECRET_PARAM)
    argv = ["wf.yml", "-p", f"account={_TOKEN}", "--executor", "local"]
    assert main(["run", *argv]) == 2
    refused = capsys.readouterr().err.strip().splitlines()[-1].removeprefix("dagnb: error: ")
    assert refused.startswith("step 'fetch': param 'account' holds the value of secret "
                              "'API_TOKEN'")
    assert main(["plan", *argv]) == 2
    out, err = capsys.readouterr()
    assert out.splitlines()[-1] == f"dagnb run would refuse before running anything: {refused}"
    assert _TOKEN not in out + err


def test_plan_says_a_step_whose_workdir_is_missing_fails_as_validate_does(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(
        "steps:\n  a:\n    run: echo a\n    workdir: nodir\n    executor: local\n")
    assert main(["validate", "wf.yml"]) == 2
    refused = capsys.readouterr().err.strip().removeprefix("dagnb: error: ")
    assert main(["plan", "wf.yml"]) == 2
    assert capsys.readouterr().out.splitlines()[-1] == (
        f"dagnb run would fail a step as it starts: {refused}")
    (tmp_path / "nodir").mkdir()
    assert main(["plan", "wf.yml"]) == 0


# -- 3. whitespace at the end of a shell command ---------------------------------------


def _plan_reason(capsys: pytest.CaptureFixture[str]) -> str:
    assert main(["plan", "wf.yml", "--executor", "local"]) == 0
    return capsys.readouterr().out.splitlines()[1].split(None, 3)[3]


@pytest.mark.parametrize(("first", "then"), [
    ("    run: 'echo a > $DAGNB_OUT/a.txt  '\n", "    run: echo a > $DAGNB_OUT/a.txt\n"),
    ("    run: |\n      echo a > $DAGNB_OUT/a.txt\n",
     "    run: |+\n      echo a > $DAGNB_OUT/a.txt\n\n"),
])
def test_a_shell_command_rewritten_with_other_spaces_at_its_end_is_still_cached(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        first: str, then: str) -> None:
    """Spaces an editor leaves, or YAML's ``|+`` blank lines, at the end: the shell
    ignores them, and so does the key."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(f"steps:\n  a:\n{first}")
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    (tmp_path / "wf.yml").write_text(f"steps:\n  a:\n{then}")
    capsys.readouterr()
    assert _plan_reason(capsys) == "cached"
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("1 cached")


@pytest.mark.parametrize(("first", "then"), [
    ("    run: echo a > $DAGNB_OUT/a.txt\n", "    run: |\n      echo a > $DAGNB_OUT/a.txt\n"),
    ("    run: |\n      echo a > $DAGNB_OUT/a.txt\n      echo b > $DAGNB_OUT/b.txt\n",
     "    run: |-\n      echo a > $DAGNB_OUT/a.txt\n      echo b > $DAGNB_OUT/b.txt\n"),
])
def test_a_newline_more_or_less_at_the_end_is_said_to_be_whitespace_alone(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        first: str, then: str) -> None:
    """``run: |`` ends the text with a newline that a one-line ``run:`` (and ``|-``)
    does not. The key keeps that newline (the entries saved so far keep their keys), and
    plan says it is all that changed: it said "command changed echo a > … → echo a >
    …", two texts alike (or "command changed" and no diff at all)."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text(f"steps:\n  a:\n{first}")
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    (tmp_path / "wf.yml").write_text(f"steps:\n  a:\n{then}")
    capsys.readouterr()
    assert _plan_reason(capsys).startswith("command changed, only in whitespace at its end (")


@pytest.mark.parametrize("run", ["echo one\n", "echo a\necho b\n", "echo plain",
                                 "cat <<EOF\nx\nEOF\n"])
def test_the_usual_shell_texts_keep_the_keys_their_entries_were_saved_under(run: str) -> None:
    from dagnb.cache.keys import _shell_text

    assert _shell_text(run) == run


def test_explain_says_which_whitespace_changed_where_it_counts(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A final backslash is one (``echo a \\``), and before a newline it continues the
    line: the key tells them apart, and the sentence says what differs, not two texts
    that look the same."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "wf.yml").write_text("steps:\n  a:\n    run: 'echo a \\'\n")
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    (tmp_path / "wf.yml").write_text("steps:\n  a:\n    run: |\n      echo a \\\n")
    capsys.readouterr()
    reason = "command changed, only in whitespace at its end (none → '\\n')"
    assert _plan_reason(capsys) == reason
    assert main(["explain", "wf.yml", "a", "--executor", "local"]) == 0
    assert capsys.readouterr().out == f"{reason}\n"


# -- 4. the cache beside the workflow, said by every command that reads it ----------------

_BESIDE = ("dagnb: the cache folder is .dagnb_cache, this folder's; proj/.dagnb_cache, "
           "beside the workflow, is another one (--cache-dir proj/.dagnb_cache uses it)")


@pytest.mark.parametrize("argv", [
    ["plan", "proj/wf.yml", "--executor", "local"],
    ["explain", "proj/wf.yml", "a", "--executor", "local"],
    ["logs", "proj/wf.yml", "a"],
    ["history", "proj/wf.yml"],
])
def test_the_commands_reading_a_workflows_cache_say_the_one_beside_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
        argv: list[str]) -> None:
    """From the folder above, plan said "no entry yet ... 1 would run", and logs and
    history found no run, not a word of the workflow's own cache, which run names."""
    (tmp_path / "proj").mkdir()
    (tmp_path / "proj" / "wf.yml").write_text("name: up\nsteps:\n  a:\n    run: echo a\n")
    monkeypatch.chdir(tmp_path / "proj")
    assert main(["run", "wf.yml", "--executor", "local"]) == 0
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    main(argv)
    assert _BESIDE in capsys.readouterr().err.splitlines()
    assert main([*argv, "--cache-dir", "proj/.dagnb_cache"]) == 0
    assert _BESIDE not in capsys.readouterr().err
    monkeypatch.chdir(tmp_path / "proj")
    assert main([argv[0], "wf.yml", *argv[2:]]) == 0
    assert "beside the workflow" not in capsys.readouterr().err
