"""``dagnb cache clear`` and ``list`` with ``--workflow beta --step extract``, where beta's
``extract`` was served the entry alpha's run stored (the same step in both): the
refusal said beta had no entry at all ("no entry of a workflow of that name"), though
``cache list`` showed beta's own (a QA session); it now says whose the step's are."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.cli import main

FLOW = """name: {name}
steps:
  extract:
    run: echo shared > "$DAGNB_OUT/x.txt"
  load:
    needs: [extract]
    run: echo "{name} load"; cat "$DAGNB_IN/extract/x.txt"
"""


@pytest.mark.parametrize("command", ["clear", "list"])
def test_a_workflow_served_anothers_entry_of_the_step_is_told_whose_it_is(
        workdir: Path, capsys: pytest.CaptureFixture[str], command: str) -> None:
    for name in ("alpha", "beta"):
        (workdir / f"{name}.yml").write_text(FLOW.format(name=name))
        assert main(["run", f"{name}.yml", "--executor", "local"]) == 0
    capsys.readouterr()
    assert main(["cache", command, "--workflow", "beta", "--step", "extract"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("dagnb: error: --workflow 'beta': its runs stored no entry of "
                            "step 'extract' in ")
    assert error.endswith("; those there are of 'alpha' (a step alike in two workflows is "
                          "stored once, by the first run of it, and served to the other): "
                          "--workflow alpha --step extract names them\n")
    assert main(["cache", "list", "--workflow", "beta"]) == 0  # (beta's own load)
    assert "load" in capsys.readouterr().out


def test_a_workflow_name_of_no_entry_is_still_said_so(
        workdir: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (workdir / "alpha.yml").write_text(FLOW.format(name="alpha"))
    assert main(["run", "alpha.yml", "--executor", "local"]) == 0
    capsys.readouterr()
    assert main(["cache", "clear", "--workflow", "gamma", "--step", "extract"]) == 2
    assert "--workflow 'gamma': no entry of a workflow of that name" in capsys.readouterr().err
