"""A step named ``on`` or ``yes`` written bare in a YAML list of names: YAML 1.1 reads a
boolean there, and the error says so, with the quoted spelling that works."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.cli import main

_STEPS = """name: t
steps:
  - name: "{name}"
    run: echo hi
  - name: b
    {field}
    run: echo b
"""


@pytest.mark.parametrize(("name", "field", "said"), [
    ("on", "needs: [on]", "needs must be names, got True (YAML reads a bare on"),
    ("no", "needs: [no]", "needs must be names, got False (YAML reads a bare on"),
    ("yes", "needs: yes", "needs is True (YAML reads a bare on"),
])
def test_a_bare_boolean_name_is_refused_with_the_quoted_spelling(
        tmp_path: Path, capsys: pytest.CaptureFixture[str], name: str, field: str,
        said: str) -> None:
    (tmp_path / "wf.yml").write_text(_STEPS.format(name=name, field=field))
    code = main(["run", str(tmp_path / "wf.yml"), "--cache-dir", str(tmp_path / "c")])
    error = capsys.readouterr().err.strip().splitlines()
    assert code == 2
    assert len(error) == 1 and said in error[0], error
    assert error[0].endswith('quote the name, needs: ["on"])')


def test_the_quoted_name_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "wf.yml").write_text(_STEPS.format(name="on", field='needs: ["on"]'))
    code = main(["run", str(tmp_path / "wf.yml"), "--cache-dir", str(tmp_path / "c")])
    assert code == 0, capsys.readouterr().err


def test_a_number_is_still_told_to_be_a_list() -> None:
    from dagnb.errors import InvalidStepError
    from dagnb.model.step import Step

    with pytest.raises(InvalidStepError, match=r"needs is 5, not a list; write it like "
                                               r"needs: \[a, b\]$"):
        Step("b", run="true", needs=5)
