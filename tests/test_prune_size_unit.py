"""`dagnb cache prune --max-size 500` read 500 bytes and emptied the whole cache (QA:
500 MB was meant), where `--max-age 30` and `clear --older-than 30` are refused for
having no unit. A bare number is refused there too, in one line naming the value and
the fix, and nothing is removed; a size with its unit (`500B`) prunes as before. The
Python API keeps joblib's `bytes_limit=int` as bytes."""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.cache import Store
from dagnb.cli import main

TWO_STEPS = ("steps:\n  load:\n    run: head -c 3000 /dev/zero > \"$DAGNB_OUT/data.bin\"\n"
             "  report:\n    run: echo done\n    needs: [load]\n")


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys) -> Path:
    """Two entries in ``<tmp>/.dagnb_cache``, the current folder ``<tmp>``."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "w.yml").write_text(TWO_STEPS)
    assert main(["run", "w.yml", "--executor", "local"]) == 0
    capsys.readouterr()
    return tmp_path / ".dagnb_cache"


def _steps(cache: Path) -> list[str]:
    return sorted(Store(cache, read_only=True).entries()["step"])


@pytest.mark.parametrize(("given", "fix"), [
    ("500", "write 500MB or 500GB, or 500B for bytes"),
    ("0", "write 0MB or 0GB, or 0B for bytes"),
    ("1.5", "write 1.5MB or 1.5GB, or 1.5B for bytes"),
])
def test_a_bare_max_size_is_refused_in_one_line_and_nothing_goes(cache, capsys, given, fix):
    assert main(["cache", "prune", "--max-size", given]) == 2
    out, err = capsys.readouterr()
    assert (out, err) == ("", f"dagnb: error: --max-size {given} has no unit; {fix}\n")
    assert _steps(cache) == ["load", "report"]


def test_a_size_in_bytes_with_its_unit_prunes(cache, capsys):
    assert main(["cache", "prune", "--max-size", "500B"]) == 0
    assert capsys.readouterr().out.startswith("removed ")
    assert len(_steps(cache)) < 2


def test_the_python_api_keeps_an_int_as_bytes(cache):
    assert Store(cache).reduce_size(bytes_limit=10**9) == 0  # (joblib's: an int is bytes)
    assert _steps(cache) == ["load", "report"]
