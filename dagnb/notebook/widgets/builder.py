"""The graph builder: a form that adds or edits a shell step of the notebook's graph.

The form's fields are turned into ``%%dagger`` cell text, parsed by the cell magic's own
parser. A new step is that parsed step. An edited step is the step loaded, as the graph
holds it when saved (its cell may have run again since), with only the fields the user
changed in the form replaced by the parsed ones: what the form cannot show (a workdir, a
retry policy, an argv run, errexit...) is kept as it was, and a save with no change
leaves the step (and its cache key) as it was. When the loaded step's cell runs again,
the form shows the graph's new version in the fields the user did not change.

A ``--python`` cell's step is loaded to be read and exported, never saved over: a name
typed over it adds a new shell step beside it, not a rename.
"""

from __future__ import annotations

import dataclasses
import html
import os
import shlex
import weakref
from typing import Any

import ipywidgets as w
from IPython.core.error import UsageError

from dagnb.checks import made_here
from dagnb.config import settings
from dagnb.errors import ConfigError, DagnbError, GraphError, InvalidStepError
from dagnb.model.step import Step, check_name
from dagnb.notebook.cells import cell_text, duration_text, setting_text, shell_text
from dagnb.notebook.magics import step_from_cell
from dagnb.notebook.session import Session, get_session
from dagnb.retry.policy import RetryPolicy

__all__ = ["COMMON_IMAGES", "Builder", "builder"]

COMMON_IMAGES = ("python:3.12-slim", "alpine:3.20", "ubuntu:24.04")
_NEW = "(new step)"
_TEXT_WIDTH = 110  # (what ipywidgets keeps of a widget's text form)
# The form's fields (widget attribute -> the Step field it edits).
_EDITED = {"name": "name", "image": "image", "command": "run", "needs": "needs",
           "retries": "retries", "ttl": "ttl"}


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
        self.retries = w.BoundedIntText(description="Retries", min=0, max=1000, value=0)
        self.ttl = w.Text(description="TTL", placeholder="1h (empty: no expiry)")
        self.save_button = w.Button(description="Add / update step", button_style="primary",
                                    icon="plus")
        self.export_button = w.Button(description="Export as %%dagger cell", icon="code")
        self.exported = w.Textarea(layout=w.Layout(width="40em", height="8em"))
        self.message = w.HTML()
        self.loaded: Step | None = None  # the step being edited, for the options not shown
        self._shown: dict[str, Any] = {}  # the fields' values as load() filled them
        self._listed: tuple[Any, int] | None = None  # the graph and its changes when listed
        self._listing = False  # refresh(), not the user, is setting Edit's options
        self.existing.observe(self._on_pick, names="value")
        # (no Name observer: each keystroke is a change, and a need dropped while the
        # typed name passed through it never came back; Save refuses a self-need)
        self.save_button.on_click(made_here(self._save))
        self.export_button.on_click(made_here(self._export))
        super().__init__(children=[
            self.existing, self.name, self.image, self.command, self.needs, self.retries,
            self.ttl, w.HBox([self.save_button, self.export_button]), self.message,
            self.exported,
        ], **kwargs)
        self.refresh()
        _follow_cells(self)

    def __repr__(self) -> str:
        """The text a reader with no widgets sees (a notebook saved without widget state;
        ipywidgets keeps 110 characters): what the form is, and the graph's steps."""
        names = getattr(getattr(self, "session", None), "graph", None)
        names = names.names if names is not None else []
        text = "dagnb step builder (a live form: run its cell in a kernel to use it); "
        steps = f"steps: {', '.join(names)}" if names else "no steps yet"
        if len(text + steps) > _TEXT_WIDTH:
            steps = f"{len(names)} steps: {', '.join(names)}"
            steps = steps[:_TEXT_WIDTH - len(text) - 1].rsplit(", ", 1)[0] + "…"
        return text + steps

    # -- the form <-> steps ----------------------------------------------------------
    def refresh(self) -> None:
        """Update the choices from the graph (steps to edit, needs, recent images), the
        step being edited kept; done after each cell, so a form follows the cells that
        define or remove steps."""
        graph = self.session.graph
        self._listed = (graph, graph.changes)
        shown = self.existing.value
        self._listing = True  # (new options select the first: not the user's pick)
        try:
            self.existing.options = [_NEW, *graph.names]
            self.existing.value = shown if shown in graph else _NEW
        finally:
            self._listing = False
        if shown != _NEW and shown not in graph:
            self._gone(shown)
        self._offer_needs()
        self._follow_loaded()
        recent = self.session.recent_images
        self.image.options = [*recent, *(i for i in COMMON_IMAGES if i not in recent)]

    def _offer_needs(self) -> None:
        """Every step of the graph can be needed; the choices still in the graph kept.
        The Name typed changes neither (Save refuses a step needing itself)."""
        chosen = self.needs.value
        options = list(self.session.graph.names)
        if list(self.needs.options) != options:
            self.needs.options = options
        self.needs.value = tuple(n for n in chosen if n in options)

    def _follow_loaded(self) -> None:
        """The loaded step changed in the graph (its cell ran again): the fields the user
        did not change show its new version; those changed keep what was typed."""
        graph = self.session.graph
        if self.loaded is None or self.loaded.name not in graph.names:
            return
        if graph[self.loaded.name] == self.loaded:
            return
        typed = {field: getattr(self, field).value for field in self._changed()}
        self.load(self.loaded.name)
        for field, value in typed.items():
            getattr(self, field).value = value
        if self.message.value:  # (load's own word: the step became a --python cell's)
            return
        kept = f"; the fields you changed are kept ({', '.join(typed)})" if typed else ""
        self.message.value = html.escape(f"step {self.loaded.name!r} changed in the graph "
                                         f"(its cell ran again?): the form shows it now{kept}")

    def follow_graph(self) -> None:
        """Refresh the choices if the graph changed since they were listed."""
        graph = self.session.graph
        if self._listed != (graph, graph.changes):
            self.refresh()

    def _on_pick(self, change: dict[str, Any]) -> None:
        if self._listing:
            return
        if change["new"] == _NEW or change["new"] in self.session.graph:
            self.load(change["new"])
            return
        self._listing = True  # (Edit listed a step gone since: back to what it showed)
        try:
            self.existing.value = change["old"]
        finally:
            self._listing = False
        self.refresh()
        if change["old"] == _NEW or change["old"] in self.session.graph:
            # (else refresh said the step being edited went too)
            self.message.value = _error_html(_gone_text(change["new"], "Edit listed it") +
                                             "; Edit now lists the graph's steps")

    def _gone(self, name: str) -> None:
        """The step picked, or being edited, left the graph since Edit listed it: the
        form keeps its fields (Save adds them as a new step) and says so."""
        self.loaded = None
        self._shown = {}
        self.message.value = _error_html(
            _gone_text(name, "the form loaded it") +
            "; Save adds the form's fields as a new step, or pick another under Edit")

    def load(self, name: str) -> None:
        """Fill the form from the graph's step ``name`` (or clear it for a new step)."""
        if name != _NEW and name not in self.session.graph:
            self.message.value = _error_html(_gone_text(name, "it was listed"))
            return
        step = self.session.graph[name] if name in self.session.graph.names else None
        self.loaded = step
        self.name.value = step.name if step else ""
        self.image.value = (step.image or "") if step else ""
        self.command.value = _command_text(step.run) if step else ""
        self.needs.value = tuple(n for n in step.needs if n in self.needs.options) if step else ()
        self.retries.value = _retry_count(step.retries) if step else 0
        self.ttl.value = duration_text(step.ttl) if step and step.ttl else ""
        self._shown = self._fields()
        self.message.value = _error_html(_python_step(step.name)) if step and step.func else ""

    def _fields(self) -> dict[str, Any]:
        return {field: getattr(self, field).value for field in _EDITED}

    def _changed(self) -> list[str]:
        """The fields the user changed since the step was loaded."""
        return [field for field, value in self._fields().items() if self._shown.get(field) != value]

    def _edited(self) -> Step | None:
        """The loaded step the form edits, as the graph holds it now: its cell may have run
        again since it was loaded, and the fields the user did not change keep that. A
        shell step (a --python cell's is not)."""
        if self.loaded is None:
            return None
        graph = self.session.graph
        step = graph[self.loaded.name] if self.loaded.name in graph.names else self.loaded
        return step if step.func is None else None

    def _redefined(self) -> str:
        """What the message says when the loaded step changed in the graph since."""
        edited = self._edited()
        if edited is None or edited == self.loaded:
            return ""
        return ("the fields not changed here keep what the step was given since the form "
                "loaded it (its cell ran again?); ")

    def _python_loaded(self) -> Step | None:
        """The loaded step when it is a ``--python`` cell's (as the graph holds it now)."""
        graph = self.session.graph
        if self.loaded is None or self.loaded.name not in graph.names:
            return None
        step = graph[self.loaded.name]
        return step if step.func is not None else None

    def cell_text(self) -> str:
        """The ``%%dagger`` cell equivalent to the form's step, with a comment line naming
        its settings no option sets (a workdir, a retry policy...); for a ``--python``
        cell's step loaded and left as it is, its own cell. Refused when it would hold a
        secret's value (one a run of the graph masks)."""
        python = self._python_loaded()
        if python is not None and self.name.value.strip() == python.name:
            if self._changed():
                raise InvalidStepError(_python_step(python.name))
            return cell_text(python, self._secret_values())
        return cell_text(self.step(), self._secret_values())

    def _secret_values(self) -> dict[str, str]:
        """Name -> value of each secret a run of the graph masks, as set now: the steps'
        declared ones and the registry's (as a run's check of params and env)."""
        names = sorted({name for step in self.session.graph for name in step.secrets})
        declared = {name: os.environ[name] for name in names if os.environ.get(name)}
        return {**declared, **settings().credential_secrets()}

    def _form_cell(self) -> str:
        """The ``%%dagger`` cell of the form's fields alone."""
        name = self.name.value.strip()
        check_name(name)  # (else the magic's parser reads `bad name!` as two words)
        options = [f"%%dagger {name}"]
        if self.image.value.strip():
            options.append(f"--image={shlex.quote(self.image.value.strip())}")
        if self.needs.value:
            options.append(f"--needs {','.join(self.needs.value)}")
        if self.retries.value:
            options.append(f"--retries {self.retries.value}")
        if self.ttl.value.strip():
            # (--ttl=: a value starting with "-" is not read as an option)
            options.append(f"--ttl={shlex.quote(self.ttl.value.strip())}")
        return " ".join(options) + "\n" + self.command.value.strip("\n") + "\n"

    def step(self) -> Step:
        """The Step the form describes: the fields parsed by the ``%%dagger`` parser; for
        a loaded step, that step with the fields the user changed replaced."""
        parsed = step_from_cell(self._form_cell())
        edited = self._edited()
        if edited is None:
            return parsed
        changes = {_EDITED[f]: getattr(parsed, _EDITED[f]) for f in self._changed()}
        return dataclasses.replace(edited, **changes) if changes else edited

    # -- buttons ---------------------------------------------------------------------
    def _save(self) -> None:
        try:
            step = self.step()
            if step.name in self.session.graph.names and self.session.graph[step.name].func:
                raise InvalidStepError(_python_step(step.name))
            _check_not_needing_itself(step)
            self._check_not_another(step.name)
            renamed = self._check_renaming(step)
            replaced = self._redefined() + self._replaced_policy()  # (of the step before)
            step = self.session.define(step)
            if renamed:
                self.session.remove(renamed)
        except (DagnbError, UsageError, ValueError) as exc:  # shown in the form, not raised
            self.message.value = _error_html(exc)
            return
        self.refresh()
        if self.existing.value == step.name:
            self.load(step.name)  # (the saved step is the one edited from now on)
        self.existing.value = step.name
        if renamed:
            replaced = f"{replaced}renamed from {renamed!r} (removed from the graph); "
        self.message.value = html.escape(
            f"step {step.name!r} is in the graph; {replaced}run it with %dagger run "
            f"{step.name}; it lives in this kernel only until exported as a %%dagger cell "
            "(Export, then paste it in a cell)")

    def _check_not_another(self, name: str) -> None:
        """Refuse a save that would replace a step other than the one loaded (a Name
        typed over, or a new step named as one of the graph's)."""
        edited = self._edited()  # (a --python step loaded is not: a new step beside it)
        loaded = edited.name if edited is not None else None
        if name == loaded or name not in self.session.graph:
            return
        what = f"saving {loaded!r} as {name!r}" if loaded else f"a new step {name!r}"
        raise GraphError(f"step {name!r} is already in the graph and {what} would replace "
                         f"it; pick {name!r} under Edit to change it, or choose a new name")

    def _check_renaming(self, step: Step) -> str | None:
        """The loaded step's name when the form saves it under a new one: a rename (the
        old step is removed), refused while other steps, or the step itself, need it."""
        edited = self._edited()  # (a --python step loaded is never renamed: see _python_step)
        old = edited.name if edited is not None else None
        if old is None or old == step.name or old not in self.session.graph:
            return None
        needing = [s.name for s in self.session.graph if old in s.needs and s.name != old]
        if old in step.needs:
            needing.append(step.name)
        if needing:
            verb = "needs" if len(needing) == 1 else "need"
            raise GraphError(f"renaming {old!r} to {step.name!r} is refused: "
                             f"{', '.join(map(repr, needing))} {verb} {old!r}; change that "
                             f"first, or pick {_NEW} under Edit to add {step.name!r} beside it")
        return old

    def _replaced_policy(self) -> str:
        """What the message says when a retry policy the form showed as a number was
        replaced by the number typed."""
        edited = self._edited()
        if (edited is None or "retries" not in self._changed() or edited.retries is None
                or _is_count(edited.retries)):
            return ""
        return (f"its retry policy {setting_text(edited.retries)} was replaced by "
                f"{self.retries.value} retries; ")

    def close(self) -> None:
        _FORMS.discard(self)
        super().close()

    def _export(self) -> None:
        try:
            self.exported.value = self.cell_text()
        except (DagnbError, UsageError, ValueError) as exc:
            self.exported.value = ""  # (a cell left from before would not match the form)
            self.message.value = _error_html(exc)
            return
        redefined = self._redefined()  # (as Save says it)
        self.message.value = html.escape(f"exported; {redefined.rstrip('; ')}") if redefined else ""


# The open forms, refreshed after each cell (weakly held: a form dropped is forgotten).
_FORMS: weakref.WeakSet[Builder] = weakref.WeakSet()


def _follow_cells(form: Builder) -> None:
    """Refresh ``form`` after each cell that changed its graph (IPython's post_run_cell)."""
    from IPython import get_ipython

    _FORMS.add(form)
    shell = get_ipython()
    if shell is not None and _refresh_forms not in shell.events.callbacks["post_run_cell"]:
        shell.events.register("post_run_cell", _refresh_forms)


def _refresh_forms(*_: Any) -> None:
    for form in list(_FORMS):
        form.follow_graph()


def _command_text(run: str | tuple[str, ...] | None) -> str:
    """What the Command field shows: shell text as it is, an argv list quoted as shell
    words (kept as the list while that text is unchanged)."""
    return shell_text(run) if isinstance(run, tuple) else (run or "")


def _is_count(retries: Any) -> bool:
    """A number of retries (what the form's field shows), not a policy or True/False."""
    return isinstance(retries, int) and not isinstance(retries, bool)


def _retry_count(retries: Any) -> int:
    """The number the Retries field shows: a policy's ``max_retries``."""
    if retries is None or _is_count(retries):
        return retries or 0
    try:
        return RetryPolicy.from_value(retries).max_retries
    except ConfigError:  # (refused when the step runs: show no number for it)
        return 0


def _gone_text(name: str, since: str) -> str:
    return f"step {name!r} is no longer in the graph (removed since {since})"


def _python_step(name: str) -> str:
    """Why the form leaves a ``--python`` cell's step alone: saved, it would become a
    shell step, its code, params and outputs gone."""
    return (f"step {name!r} is a --python cell's: this form edits shell steps; change it "
            "in its cell, or name this step otherwise (a new step, beside it)")


def _check_not_needing_itself(step: Step) -> None:
    """Refuse a step whose Name is one of the Needs chosen (the graph would call it a
    cycle)."""
    if step.name in step.needs:
        raise GraphError(f"step {step.name!r} is among its own Needs; unselect {step.name!r} "
                         "under Needs, or choose another name")


def _error_html(exc: BaseException | str) -> str:
    return f"<span style='color:#c62828'>{html.escape(str(exc))}</span>"


def builder(session: Session | None = None) -> Builder:
    """A graph builder form for the notebook's graph (``dagnb.builder()``)."""
    return Builder(session)
