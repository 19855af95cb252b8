"""``dagnb templates show`` and ``templates new`` with no template named list the ids
there are (as ``dagnb run`` with no file lists the workflow files): argparse said "the
following arguments are required: id", naming none."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.cli import main
from dagnb.workflows import templates


@pytest.mark.parametrize("words", [["show"], ["new"], ["new", "-o", "x.yml"]])
def test_no_template_named_lists_the_ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                         capsys: pytest.CaptureFixture[str],
                                         words: list[str]) -> None:
    monkeypatch.chdir(tmp_path)
    ids = sorted(row["id"] for row in templates.table_rows(None))
    assert len(ids) >= 2
    assert main(["templates", *words]) == 2
    assert capsys.readouterr().err == (
        f"dagnb: error: dagnb templates {words[0]} ID: name the template, one of "
        f"{', '.join(ids)} (dagnb templates list describes them)\n")
    assert list(tmp_path.iterdir()) == []  # nothing written
