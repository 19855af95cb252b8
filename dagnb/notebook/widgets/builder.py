"""The graph builder: a form that adds or edits a shell step of the notebook's graph.

The form is turned into ``%%dagger`` cell text and that text is parsed by the cell
magic's own parser, so a step built here equals the step its exported cell builds.
"""

from __future__ import annotations

import dataclasses
import html
import shlex
from typing import Any

import ipywidgets as w
from IPython.core.error import UsageError

from dagnb.checks import made_here
from dagnb.errors import DagnbError, InvalidStepError
from dagnb.model.step import Step
from dagnb.notebook.cells import cell_options, duration_text
from dagnb.notebook.magics import step_from_cell
from dagnb.notebook.session import Session, get_session

__all__ = ["COMMON_IMAGES", "Builder", "builder"]

COMMON_IMAGES = ("python:3.12-slim", "alpine:3.20", "ubuntu:24.04")
_NEW = "(new step)"


class Builder(w.VBox):
    """A form for one step of the session graph, with Save and Export buttons.

    Parameters
    ----------
    session
        The session whose graph the form edits (the notebook's, by default).
    """

    def __init__(self, session: Session | None = None, **kwargs: Any) -> None:
        self.session = session or get_session()
        self.existing = w.Dropdown(description="Edit", options=[_NEW])
        self.name = w.Text(description="Name", placeholder="clean_data")
        self.image = w.Combobox(description="Image", placeholder="python:3.12-slim",
                                ensure_option=False)
        self.command = w.Textarea(description="Command", placeholder="echo hello",
                                  layout=w.Layout(width="40em", height="8em"))
        self.needs = w.SelectMultiple(description="Needs", options=[])
        self.retries = w.BoundedIntText(description="Retries", min=0, max=20, value=0)
        self.ttl = w.Text(description="TTL", placeholder="1h (empty: no expiry)")
        self.save_button = w.Button(description="Add / update step", button_style="primary",
                                    icon="plus")
        self.export_button = w.Button(description="Export as %%dagger cell", icon="code")
        self.exported = w.Textarea(layout=w.Layout(width="40em", height="8em"))
        self.message = w.HTML()
        self.loaded: Step | None = None  # the step being edited, for the options not shown
        self.existing.observe(lambda change: self.load(change["new"]), names="value")
        self.name.observe(lambda _: self._offer_needs(), names="value")
        self.save_button.on_click(made_here(self._save))
        self.export_button.on_click(made_here(self._export))
        super().__init__(children=[
            self.existing, self.name, self.image, self.command, self.needs, self.retries,
            self.ttl, w.HBox([self.save_button, self.export_button]), self.message,
            self.exported,
        ], **kwargs)
        self.refresh()

    # -- the form <-> steps ----------------------------------------------------------
    def refresh(self) -> None:
        """Update the choices from the graph (steps to edit, needs, recent images)."""
        self.existing.options = [_NEW, *self.session.graph.names]
        self._offer_needs()
        recent = self.session.recent_images
        self.image.options = [*recent, *(i for i in COMMON_IMAGES if i not in recent)]

    def _offer_needs(self) -> None:
        """Every other step of the graph can be needed; keep the valid choices."""
        chosen = self.needs.value
        options = [n for n in self.session.graph.names if n != self.name.value.strip()]
        self.needs.options = options
        self.needs.value = tuple(n for n in chosen if n in options)

    def load(self, name: str) -> None:
        """Fill the form from the graph's step ``name`` (or clear it for a new step)."""
        step = self.session.graph[name] if name in self.session.graph.names else None
        self.loaded = step
        self.name.value = step.name if step else ""
        self.image.value = (step.image or "") if step else ""
        self.command.value = str(step.run or "") if step and step.run else ""
        self.needs.value = tuple(step.needs) if step else ()
        retries = step.retries if step and isinstance(step.retries, int) else 0
        self.retries.value = retries
        self.ttl.value = duration_text(step.ttl) if step and step.ttl else ""
        self.message.value = _error_html(_python_step(step.name)) if step and step.func else ""

    def cell_text(self) -> str:
        """The ``%%dagger`` cell equivalent to the form."""
        options = [f"%%dagger {self.name.value.strip()}"]
        if self.image.value.strip():
            options.append(f"--image {shlex.quote(self.image.value.strip())}")
        if self.needs.value:
            options.append(f"--needs {','.join(self.needs.value)}")
        if self.retries.value:
            options.append(f"--retries {self.retries.value}")
        if self.ttl.value.strip():
            options.append(f"--ttl {shlex.quote(self.ttl.value.strip())}")
        options += self._hidden_options()
        return " ".join(options) + "\n" + self.command.value.strip("\n") + "\n"

    def _hidden_options(self) -> list[str]:
        """The edited step's options the form has no field for (env, params, tags, ...)."""
        if self.loaded is None or self.loaded.func is not None:
            return []
        shown = dataclasses.replace(self.loaded, image=None, needs=(), retries=None, ttl=None)
        return cell_options(shown)

    def step(self) -> Step:
        """The Step the form describes, built by the ``%%dagger`` parser."""
        return step_from_cell(self.cell_text())

    # -- buttons ---------------------------------------------------------------------
    def _save(self) -> None:
        try:
            step = self.step()
            if step.name in self.session.graph.names and self.session.graph[step.name].func:
                raise InvalidStepError(_python_step(step.name))
            step = self.session.define(step)
        except (DagnbError, UsageError, ValueError) as exc:  # shown in the form, not raised
            self.message.value = _error_html(exc)
            return
        self.refresh()
        self.existing.value = step.name
        self.message.value = html.escape(f"step {step.name!r} is in the graph; run it with "
                                         f"%dagger run {step.name}")

    def _export(self) -> None:
        self.exported.value = self.cell_text()


def _python_step(name: str) -> str:
    """Why the form leaves a ``--python`` cell's step alone: saved, it would become a
    shell step, its code, params and outputs gone."""
    return (f"step {name!r} is a --python cell's: this form edits shell steps; change it "
            "in its cell, or name this step otherwise")


def _error_html(exc: BaseException | str) -> str:
    return f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"


def builder(session: Session | None = None) -> Builder:
    """A graph builder form for the notebook's graph (``dagnb.builder()``)."""
    return Builder(session)
