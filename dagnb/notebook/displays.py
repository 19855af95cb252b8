"""What a ``--python`` step displays (``display(df)``, ``Markdown``, a matplotlib plot)
is the step's output, as its prints are: shown in its cell and again from the cache.

While dagnb is loaded, the shell's display publisher first offers each display to the
Python step running in that context (:func:`dagnb.executors.capture.step_display`): the
run masks it, keeps it with the step's cache entry and puts it in its events, and the
cell's view publishes it from the cell's own thread (:func:`publish`), in order with the
step's lines, in the cell that ran it. A matplotlib figure is the step's that made it,
even among steps running at once (:mod:`dagnb.notebook.figures`): one it leaves open
(``plt.plot(...)`` with no ``plt.show()``) is shown as it ends, in its context, as the
inline backend would show it after the cell. A display from a thread the step starts is
not the step's (no context): it is published as it is, its text masked while a run masks
output outside its steps; a live widget is published as it is.
"""

from __future__ import annotations

import base64
from collections.abc import Callable, Mapping
from typing import Any

from dagnb.executors.capture import (
    add_step_hook,
    in_step_with_displays,
    outside_mask,
    remove_step_hook,
    step_display,
)
from dagnb.notebook import figures
from dagnb.runtime.displays import masked_bundle

__all__ = ["install", "publish", "uninstall"]

_ORIGINAL = "_dagnb_original"  # the wrapper's attribute holding the publisher's own publish


def install(shell: Any) -> None:
    """Offer the shell's displays to running Python steps first (once per shell)."""
    publisher = getattr(shell, "display_pub", None)
    if publisher is None or hasattr(publisher.publish, _ORIGINAL):
        return
    publisher.publish = _offered_to_steps(publisher.publish)
    add_step_hook(figures.step_started)
    figures.install()


def uninstall(shell: Any) -> None:
    publisher = getattr(shell, "display_pub", None)
    original = getattr(getattr(publisher, "publish", None), _ORIGINAL, None)
    if original is not None:
        publisher.publish = original
    remove_step_hook(figures.step_started)
    figures.uninstall()


def publish(shown: Mapping[str, Any]) -> None:
    """Publish a display event's bundle (from the thread whose output is the cell's)."""
    from IPython.display import publish_display_data

    display_id = shown.get("display_id")
    publish_display_data(shown["data"], shown.get("metadata") or {},
                         transient={"display_id": display_id} if display_id else None,
                         update=bool(shown.get("update")))


def _offered_to_steps(original: Callable[..., Any]) -> Callable[..., Any]:
    def offered(data: Mapping[str, Any], metadata: Mapping[str, Any] | None = None,
                *args: Any, transient: Mapping[str, Any] | None = None, update: bool = False,
                **kwargs: Any) -> Any:
        if in_step_with_displays():
            shown = step_display(_text_bundle(data), dict(metadata or {}),
                                 (transient or {}).get("display_id"), bool(update))
            if shown is True:
                return None  # the step's run publishes it, in its cell
            data, metadata = shown  # (its text masked)
        elif (mask := outside_mask()) is not None:  # a thread a step started, say
            data, metadata = masked_bundle(_text_bundle(data), dict(metadata or {}),
                                           mask) or ({}, {})
            if not data:
                return None
        return original(data, metadata, *args, transient=transient, update=update, **kwargs)

    setattr(offered, _ORIGINAL, original)
    return offered


def _text_bundle(data: Mapping[str, Any]) -> dict[str, Any]:
    """The bundle as JSON holds it: a binary file's bytes in base64 (as ipykernel sends
    them), other bytes as text."""
    bundle = {}
    for kind, value in data.items():
        if isinstance(value, (bytes, bytearray)):
            binary = kind == "application/pdf" or (kind.startswith("image/") and "svg" not in kind)
            value = (base64.b64encode(value).decode("ascii") if binary
                     else bytes(value).decode("utf-8", "replace"))
        bundle[kind] = value
    return bundle
