"""``dagnb run NOTEBOOK`` loads nbformat without the grammars jsonschema builds for a
format no notebook schema checks (0.9 to 1.3 s of CPU a run, on import)."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import pytest

PROGRAM = textwrap.dedent("""
    import sys
    from dagnb.notebook.headless import _notebook_libraries
    nbformat, _client = _notebook_libraries()
    print("rfc3987_syntax" in sys.modules)
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("1")])
    nbformat.validate(notebook)  # (the schema checks still run)
    import rfc3987_syntax  # (importable again after)
    print("importable")
""")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_loading_the_notebook_libraries_skips_jsonschemas_grammars() -> None:
    pytest.importorskip("rfc3987_syntax")
    done = subprocess.run([sys.executable, "-c", PROGRAM], capture_output=True, text=True,
                          check=True, timeout=60)
    assert done.stdout.split() == ["False", "importable"], done.stdout
