"""Static HTML pieces of a run's view, shared by the live widget and its lasting snapshot."""

from __future__ import annotations

import html
import re
from typing import TYPE_CHECKING, Any

from dagnb.views.live import STATE_COLOURS, row_cells

if TYPE_CHECKING:
    from dagnb.runtime.run import Run

__all__ = ["ANSI", "COLUMNS", "header_html", "state_badge", "table_html", "tail_html"]

COLUMNS = ("step", "state", "cached", "attempt", "duration", "exit", "error")


def header_html(run: Run, rows: dict[str, dict[str, Any]]) -> str:
    """The graph, the run id and how many steps are in each state."""
    counts: dict[str, int] = {}
    for row in rows.values():
        counts[row["state"]] = counts.get(row["state"], 0) + 1
    parts = ", ".join(f"{n} {s}" for s, n in counts.items())
    return (f"<div class='dagnb-header'><b>{html.escape(run.graph_name)}</b> "
            f"<code>{html.escape(run.id)}</code>: {html.escape(parts)}</div>")


def state_badge(state: str) -> str:
    """A state as a coloured pill."""
    colour = STATE_COLOURS.get(state, "#9e9e9e")
    return (f"<span class='dagnb-state' style='background:{colour};color:white;"
            f"padding:0 0.5em;border-radius:0.6em'>{state}</span>")


def table_html(rows: Any, now: float) -> str:
    """The status rows as a table (durations of running steps measured to ``now``)."""
    head = "".join(f"<th style='text-align:left'>{c}</th>" for c in COLUMNS)
    body = []
    for row in rows:
        cells = row_cells(row, now)
        tds = [html.escape(cells["step"]), state_badge(cells["state"]),
               *(html.escape(cells[c]) for c in COLUMNS[2:])]
        body.append(f"<tr class='dagnb-row dagnb-state-{cells['state']}' "
                    f"data-step='{html.escape(cells['step'])}'>"
                    + "".join(f"<td>{td}</td>" for td in tds) + "</tr>")
    return (f"<table class='dagnb-table' style='border-spacing:0.6em 0'><thead><tr>{head}"
            f"</tr></thead><tbody>{''.join(body)}</tbody></table>")


# A terminal's colour and cursor codes (ESC [ ... letter): HTML draws them as text,
# '[31mred[0m', where JupyterLab's text/plain colours them.
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]")  # a terminal's control sequences


def tail_html(lines: Any) -> str:
    """Log lines in a scrolling block (their terminal codes left out)."""
    text = html.escape(ANSI.sub("", "\n".join(lines))) if lines else "(no output yet)"
    return (f"<pre class='dagnb-log' style='max-height:16em;overflow:auto;margin:0'>"
            f"{text}</pre>")
