"""A ``%%dagger`` line the magic refuses is quoted in its error, after IPython wrote the
notebook's values into it (``--param p=$pw``): the error, which the saved notebook keeps,
shows every secret dagnb knows as ``***``, never its value."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import nbformat
import pytest
from notebook_cells import KERNEL_ENV, LiveKernel, started_kernel

pytestmark = pytest.mark.slow

# declared by a cell's --secret, its name like no secret's; a quote in it breaks the line
PHRASE = "Summer 2024'xyz"
# declared by no cell, but named as a secret
TOKEN = "tok-SUPERSECRET-9f8e7d"


@pytest.fixture(scope="module")
def kernel(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveKernel]:
    home = tmp_path_factory.mktemp("kernel")
    env = KERNEL_ENV | {"SHOP_PHRASE": PHRASE, "API_TOKEN": TOKEN,
                        "JPY_SESSION_NAME": str(home / "analysis.ipynb")}
    with started_kernel(home, env) as client:
        live = LiveKernel(client)
        live.run("%load_ext dagnb\nimport os")
        live.run("%%dagger uses --python --secret SHOP_PHRASE --outputs n\n"
                 "n = len(os.environ['SHOP_PHRASE'])\n")
        live.run("pw = os.environ['SHOP_PHRASE']; tok = os.environ['API_TOKEN']")
        yield live


def _stderr(outputs: list[dict]) -> str:
    return "".join(o["text"] for o in outputs
                   if o["output_type"] == "stream" and o["name"] == "stderr")


@pytest.mark.parametrize(("line", "said", "secret"), [
    # (a line is read as typed, each value whole: a quote of the value splits none; an
    # unclosed quote typed leaves it IPython's, the value written into it)
    ('%dagger logs "$pw',
     """UsageError: cannot read the options 'logs "***': No closing quotation""", PHRASE),
    # (its words rejoined by shlex, quoted by repr: its apostrophe as '\\'"\\'"\\'')
    ("%dagger status $pw",
     """UsageError: %dagger status takes no arguments, got '\\'***\\''""", PHRASE),
    ("%%dagger x5 --python --bogus $tok --outputs y",
     "UsageError: unrecognized arguments: --bogus ***", TOKEN),
], ids=["unclosed-quote-declared-secret", "rejoined-words-declared-secret",
        "unknown-option-secret-named-variable"])
def test_a_refused_line_shows_a_secret_masked_in_the_cell_and_the_saved_notebook(
        kernel: LiveKernel, tmp_path: Path, line: str, said: str, secret: str) -> None:
    shown = _stderr(kernel.run(f"{line}\ny = 1\n"))
    assert said in shown, shown
    assert secret not in shown
    saved = tmp_path / "saved.ipynb"
    nbformat.write(kernel.client.nb, saved)
    assert secret not in saved.read_text()
    assert "***" in saved.read_text()
