"""A run's view frozen into HTML and plain text: what a saved notebook keeps.

When a ``%%dagger`` cell's run ends, its live widget is replaced by a
:class:`RunSnapshot` of what it showed (the header, the status table, the output tail of
each step that ran and the stderr tail of failed steps), so the saved ``.ipynb`` reads
the same with no kernel and no widget manager: on GitHub, nbviewer, ``nbconvert --to
html``, or in JupyterLab reopened. It holds strings only; nothing of it is live.

Each output shows once, as in text mode: a step cut to its last lines says how many
came before and where to read them, and when the cell raises :class:`~dagnb.RunFailed`
(which shows the failed steps' stderr tails) a failed step shows its output tail here,
as a step that ran, not its stderr tail a second time.
"""

from __future__ import annotations

import html
import time
from typing import TYPE_CHECKING

from dagnb.views.html import header_html, table_html, tail_html
from dagnb.views.live import (
    FAILED_TAIL,
    LiveState,
    failed_tail,
    format_rows,
)

if TYPE_CHECKING:
    from dagnb.runtime.run import Run

__all__ = ["RunSnapshot"]

OUTPUT_TAIL = 40  # lines of each step that ran kept in the saved notebook


class RunSnapshot:
    """The lasting form of a run's view (``_repr_html_`` and ``repr``)."""

    def __init__(self, run: Run, focus: str | None = None, *,
                 failed_tails: bool = True) -> None:
        """``failed_tails=False``: the cell raises RunFailed, which shows the stderr
        tails of failed steps; this leaves them out."""
        state = LiveState(run, tail=OUTPUT_TAIL)
        state.pull()
        rows = state.rows()
        # Each output once, as in text mode: upstream steps served from the cache are one
        # line (their rows are in the cells that ran them, and in %dagger status).
        shown = [r for r in rows.values() if not r["cached"] or r["step"] == focus]
        cached = [r["step"] for r in rows.values() if r["cached"] and r["step"] != focus]
        note = f"cached: {', '.join(cached)}" if cached else ""
        sections = self._sections(run, state, focus, rows, failed_tails)
        # (every step from the cache: their line alone, not a table's header over no row)
        table = shown or not cached
        self.html = (header_html(run, rows) + (table_html(shown, time.time()) if table else "")
                     + (f"<div class='dagnb-cached'>{html.escape(note)}</div>" if note else "")
                     + "".join(f"<div class='dagnb-tail'><b>{html.escape(title)}</b>"
                               + (f"<div class='dagnb-earlier'>{html.escape(earlier)}</div>"
                                  if earlier else "")
                               + f"{tail_html(lines)}</div>"
                               for title, earlier, lines in sections))
        text = ["\n".join([title, *([earlier] if earlier else []), *lines])
                for title, earlier, lines in sections]
        self.text = "\n".join([*text, *([format_rows(shown)] if table else []),
                               *([note] if note else [])])

    @staticmethod
    def _sections(run: Run, state: LiveState, focus: str | None, rows: dict[str, dict],
                  failed_tails: bool = True) -> list[tuple[str, str, list[str]]]:
        """(title, earlier-lines note, lines): the output tail of each step that ran (a
        ``%dagger run`` has no focus step, and its saved output must show what every
        step printed), of the focus step even when cached, and with ``failed_tails`` the
        stderr tail of each other failed step."""
        sections = []
        for name in run.order:
            if failed_tails and name in run.failed and name != focus:
                earlier, lines = failed_tail(run, name, FAILED_TAIL)
                title = f"── {name} failed; last lines of stderr ──"
            else:
                ran = name == focus or not rows.get(name, {}).get("cached")
                lines, title = state.lines(name) if ran else [], f"── {name} ──"
                earlier = state.earlier(name, lines)
            if lines:
                sections.append((title, earlier, lines))
        return sections

    def _repr_html_(self) -> str:
        return f"<div class='dagnb-snapshot'>{self.html}</div>"

    def __repr__(self) -> str:
        return self.text

