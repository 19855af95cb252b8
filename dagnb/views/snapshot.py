"""A run's view frozen into HTML and plain text: what a saved notebook keeps.

When a ``%%dagger`` cell's run ends, its live widget is replaced by a
:class:`RunSnapshot` of what it showed (the header, the status table, the cell's own
output tail and the stderr tail of failed steps), so the saved ``.ipynb`` reads the same
with no kernel and no widget manager: on GitHub, nbviewer, ``nbconvert --to html``, or in
JupyterLab reopened. It holds strings only; nothing of it is live.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from dagnb.views.html import header_html, table_html, tail_html
from dagnb.views.live import FAILED_TAIL, LiveState, format_rows

if TYPE_CHECKING:
    from dagnb.runtime.run import Run

__all__ = ["RunSnapshot"]

OUTPUT_TAIL = 40  # lines of the cell's own step kept in the saved notebook


class RunSnapshot:
    """The lasting form of a run's view (``_repr_html_`` and ``repr``)."""

    def __init__(self, run: Run, focus: str | None = None) -> None:
        state = LiveState(run, tail=OUTPUT_TAIL)
        state.pull()
        rows = state.rows()
        # Each output once, as in text mode: upstream steps served from the cache are one
        # line (their rows are in the cells that ran them, and in %dagger status).
        shown = [r for r in rows.values() if not r["cached"] or r["step"] == focus]
        cached = [r["step"] for r in rows.values() if r["cached"] and r["step"] != focus]
        note = f"cached: {', '.join(cached)}" if cached else ""
        sections = self._sections(run, state, focus)
        self.html = (header_html(run, rows) + table_html(shown, time.time())
                     + (f"<div class='dagnb-cached'>{html.escape(note)}</div>" if note else "")
                     + "".join(f"<div class='dagnb-tail'><b>{html.escape(title)}</b>"
                               f"{tail_html(lines)}</div>" for title, lines in sections))
        text = [f"{title}\n" + "\n".join(lines) for title, lines in sections]
        self.text = "\n".join([*text, format_rows(shown), *([note] if note else [])])

    @staticmethod
    def _sections(run: Run, state: LiveState, focus: str | None) -> list[tuple[str, list[str]]]:
        sections = []
        if focus is not None and state.tails.get(focus):
            sections.append((f"── {focus} ──", list(state.tails[focus])))
        for name in run.failed:
            if name == focus:
                continue
            lines = run.logs(name, stream="stderr", tail=FAILED_TAIL)["line"].tolist()
            if lines:
                sections.append((f"── {name} failed; last lines of stderr ──", lines))
        return sections

    def _repr_html_(self) -> str:
        return f"<div class='dagnb-snapshot'>{self.html}</div>"

    def __repr__(self) -> str:
        return self.text
