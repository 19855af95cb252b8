"""A shell step run on this machine is keyed by the host variables its text names
(``$REGION``): it ran once, and a later run with another value was served the first
value's result. Machine and session variables, dagnb's own, the step's ``env`` and
every secret stay out of the key; so does everything in a container run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from dagnb.cache import step_key
from dagnb.cli import main
from dagnb.model.step import Step

QA = """steps: {r: {run: 'echo "region=$REGION" | tee "$DAGNB_OUT/r.txt"'}}\n"""
TOKEN = "tok-Qx7Rv2Lm9Pw4Zk8N"  # (an undeclared API_TOKEN's value)
PASSWORD = "pw-Hd3Jf8Ks2Mn6"  # (a declared secret's value)


@pytest.fixture
def folder(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    for name in ("REGION", "API_TOKEN", "DB_PASS", "DB_URL", "TOKENIZER_NAME"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path


def _cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """``dagnb ARGS`` (the local executor where a run's is asked), its exit code and
    its output and errors together."""
    code = main([*args, *(["--executor", "local"] if args[0] != "logs" else [])])
    said = capsys.readouterr()
    return code, said.out + said.err


def _summary(out: str) -> str:
    """What `dagnb run`'s summary line says the steps did (``1 cached``)."""
    return next(line for line in out.splitlines() if line.startswith("run ")).split(": ")[-1]


def _key(step: Step, **options: object) -> object:
    return step_key(step, upstream_digests={}, base_dir=Path("."), **options)


def test_the_qa_step_runs_again_when_the_variable_it_echoes_changes(
        folder: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    # (REGION=ap was served REGION=eu's result: `1 cached`, its log `region=eu`)
    (folder / "h.yml").write_text(QA)
    monkeypatch.setenv("REGION", "eu")
    assert _summary(_cli(capsys, "run", "h.yml")[1]) == "1 succeeded"
    monkeypatch.setenv("REGION", "ap")
    assert _summary(_cli(capsys, "run", "h.yml")[1]) == "1 succeeded"
    assert _cli(capsys, "logs", "h.yml", "r")[1].startswith("region=ap\n")
    assert _summary(_cli(capsys, "run", "h.yml")[1]) == "1 cached"
    monkeypatch.setenv("REGION", "eu")  # (its own entry: cached too)
    assert _cli(capsys, "explain", "h.yml", "r")[1].endswith("entry found: it is cached\n")
    monkeypatch.setenv("REGION", "us")
    assert _cli(capsys, "explain", "h.yml", "r")[1].endswith(
        "host variable REGION changed: ap → us\n")
    code, out = _cli(capsys, "plan", "h.yml")
    assert "host variable REGION changed: ap → us" in out
    code, out = _cli(capsys, "run", "h.yml", "--cache-mode", "fail-on-miss")
    assert code == 2 and "host variable REGION changed: ap → us" in out
    monkeypatch.delenv("REGION")  # (unset counts as unset)
    assert _cli(capsys, "explain", "h.yml", "r")[1].endswith(
        "host variable REGION changed: ap → (unset)\n")


def test_machine_variables_leave_the_step_cached(
        folder: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "h.yml").write_text(
        """steps: {r: {run: 'echo "$HOME ${PATH} $USER $LANG $REGION" > "$DAGNB_OUT/r.txt"'}}\n""")
    monkeypatch.setenv("REGION", "eu")
    assert _summary(_cli(capsys, "run", "h.yml")[1]) == "1 succeeded"
    monkeypatch.setenv("HOME", str(folder))
    monkeypatch.setenv("PATH", "/nowhere" + os.pathsep + os.environ["PATH"])
    monkeypatch.setenv("USER", "someone-else")
    monkeypatch.setenv("LANG", "C.UTF-8" if os.environ.get("LANG") != "C.UTF-8" else "C")
    assert _summary(_cli(capsys, "run", "h.yml")[1]) == "1 cached"


def test_a_step_naming_only_excluded_variables_keeps_the_key_it_had(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # computed by the dagnb before host variables counted (7db023b)
    monkeypatch.setenv("LC_ALL", "C")
    step = Step("r", run='echo "home=$HOME path=${PATH} pwd=$PWD lang=$LANG lc=$LC_ALL '
                         'x=${1:-} $@ $# $? $$" | tee "$DAGNB_OUT/r.txt"')
    argv = Step("r", run=["sh", "-c", 'cp "$DAGNB_IN/a" "${DAGNB_OUT}/a" && echo '
                          '$DAGNB_PARAM_N $XDG_CONFIG_HOME'], params={"n": 1})
    # (a loop's and read's own variables too: the quickstart's download step)
    loop = Step("download", run='for i in 3 1 4 1 5 9 2 6; do echo $i; done > '
                                '"$DAGNB_OUT/numbers.txt"\nwhile read -r line; do echo '
                                '"$line"; done < "$DAGNB_IN/x"\n')
    monkeypatch.setenv("i", "7")
    assert _key(step).digest == "aa440a77cb6ece4d0283393a27572d58"
    assert _key(argv).digest == "5d807e05fc6449d81248901a72a0aa63"
    assert _key(loop).digest == "fa4b876122211e8104f4a20d511ca24b"


def test_secrets_stay_out_of_the_key_the_cache_folder_explain_and_logs(
        folder: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    (folder / "h.yml").write_text(
        "steps:\n"
        "  login: {run: 'test -n \"$DB_PASS\"', secrets: [DB_PASS]}\n"
        "  r: {run: 'echo \"region=$REGION n=${#API_TOKEN} m=${#DB_URL}\""
        " | tee \"$DAGNB_OUT/r.txt\"'}\n")
    monkeypatch.setenv("REGION", "eu")
    monkeypatch.setenv("API_TOKEN", TOKEN)  # (named as a secret: declared by none)
    monkeypatch.setenv("DB_PASS", PASSWORD)  # (declared by login)
    monkeypatch.setenv("DB_URL", f"postgres://app:{PASSWORD}@db/app")  # (holds it)
    assert _summary(_cli(capsys, "run", "h.yml")[1]) == "2 succeeded"
    monkeypatch.setenv("REGION", "ap")
    said = [_cli(capsys, "explain", "h.yml", "r")[1], _cli(capsys, "plan", "h.yml")[1]]
    assert "host variable REGION changed: eu → ap" in said[0]
    assert _summary(_cli(capsys, "run", "h.yml")[1]) == "1 cached, 1 succeeded"
    said.append(_cli(capsys, "logs", "h.yml", "r")[1])
    assert said[-1].startswith("region=ap n=20 m=")
    stored = b"".join(path.read_bytes() for path in (folder / ".dagnb_cache").rglob("*")
                      if path.is_file())
    assert b"region=ap" in stored  # (the folder is where the run wrote)
    for secret in (TOKEN, PASSWORD):
        assert secret.encode() not in stored
        assert not [text for text in said if secret in text]
    monkeypatch.setenv("API_TOKEN", TOKEN[::-1])  # a rotated token: still cached
    assert _summary(_cli(capsys, "run", "h.yml")[1]) == "2 cached"


def test_no_component_for_a_secret_whatever_says_it_is_one(
        monkeypatch: pytest.MonkeyPatch) -> None:
    from dagnb.model.masking import Masker

    monkeypatch.setenv("API_TOKEN", TOKEN)
    monkeypatch.setenv("CONN", f"https://x:{TOKEN}@host")  # (an undeclared one's value)
    monkeypatch.setenv("DB_PASS", PASSWORD)
    monkeypatch.setenv("DSN", f"user:{PASSWORD}")  # (a secret the run knows)
    monkeypatch.setenv("SMTP_PASSWORD", "4711")  # (named as one; too short to look for)
    monkeypatch.setenv("REGION", "eu")
    step = Step("r", run="echo $API_TOKEN ${CONN} ${DB_PASS:-x} $DSN $SMTP_PASSWORD $REGION",
                secrets=("DB_PASS",))
    key = _key(step, mask=Masker([PASSWORD]))
    assert [name for name in key.components if name.startswith("host_var:")] == [
        "host_var:REGION"]
    unmasked = _key(step)  # (its own declared secret counts by name alone)
    assert "host_var:DB_PASS" not in unmasked.components


def test_a_variable_the_step_sets_in_its_env_counts_by_that_value_alone(
        monkeypatch: pytest.MonkeyPatch) -> None:
    step = Step("r", run="echo $REGION", env={"REGION": "eu"})
    monkeypatch.setenv("REGION", "ap")
    first = _key(step)
    monkeypatch.setenv("REGION", "us")
    assert _key(step) == first
    assert "host_var:REGION" not in first.components
    assert _key(Step("r", run="echo $REGION", env={"REGION": "ap"})) != first


def test_unset_empty_and_set_are_three_keys_and_an_argv_list_counts_too(
        monkeypatch: pytest.MonkeyPatch) -> None:
    for run in ("echo ${REGION:-eu}", ("sh", "-c", "echo $REGION")):
        step = Step("r", run=run)
        monkeypatch.delenv("REGION", raising=False)
        unset = _key(step)
        monkeypatch.setenv("REGION", "")
        empty = _key(step)
        monkeypatch.setenv("REGION", "eu")
        set_ = _key(step)
        assert len({unset.digest, empty.digest, set_.digest}) == 3
        assert [key.describe["host_var:REGION"] for key in (unset, empty, set_)] == [
            "(unset)", '""', "eu"]


def test_a_long_value_is_shortened_and_one_named_like_a_secret_not_shown(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REGION", "x" * 100)
    monkeypatch.setenv("TOKENIZER_NAME", "bert-base")  # (no secret, but named like one)
    key = _key(Step("r", run="echo $REGION $TOKENIZER_NAME"))
    assert key.describe["host_var:REGION"] == "x" * 13 + "..." + "x" * 14
    assert key.describe["host_var:TOKENIZER_NAME"] == "<not shown>"
    monkeypatch.setenv("TOKENIZER_NAME", "gpt2")
    assert _key(Step("r", run="echo $REGION $TOKENIZER_NAME")) != key


def test_a_step_run_in_a_container_is_not_keyed_by_the_host_s_variables(
        monkeypatch: pytest.MonkeyPatch) -> None:
    # (the host's variables do not reach a container)
    step = Step("r", run="echo $REGION", image="alpine:3")
    monkeypatch.setenv("REGION", "eu")
    first = _key(step, container=True)
    monkeypatch.setenv("REGION", "ap")
    assert _key(step, container=True) == first
    assert not [name for name in first.components if name.startswith("host_var:")]
    assert _key(step) != _key(step, container=True)


@pytest.mark.parametrize(("text", "read"), [
    ('PYTHONPATH="$(mktemp -d)"; export PYTHONPATH; trap \'rm -rf "$PYTHONPATH"\' EXIT',
     ()),  # assigned before it is read: the host's value never reaches the step
    ("REGION=${REGION:-eu}; echo $REGION", ("REGION",)),  # read by its own default
    ('OUT="$(prefix $OUT)" run', ("OUT",)),  # the value assigned reads it
    ("echo $X; X=1", ("X",)),  # read first
    ("export A=1\necho $A $B", ("B",)),
    ("for f in *.csv; do wc -l $f; done", ()),
])
def test_a_variable_the_text_assigns_before_reading_it_is_not_the_hosts(text, read):
    from dagnb.cache.keys import _host_names

    assert _host_names(text) == read
