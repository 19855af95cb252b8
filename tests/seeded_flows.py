"""A flow script run in a fresh process with a given hash seed (``PYTHONHASHSEED``), as
a new ``python`` or kernel runs it: what tells a digest that follows iteration order."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any


def run_seeded(tmp_path: Path, flow: str, seed: str, mode: str) -> dict[str, Any]:
    """Run ``flow`` (argv: the cache folder, ``mode``) under hash seed ``seed``; the JSON
    its last printed line holds."""
    script = tmp_path / "flow.py"
    script.write_text(flow)
    done = subprocess.run([sys.executable, str(script), str(tmp_path / "cache"), mode],
                          env={**os.environ, "PYTHONHASHSEED": seed}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])
