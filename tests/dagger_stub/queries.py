"""Reading the queries the stub recorded: call chains, exec queries per step, uploads."""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from typing import Any

import graphql

__all__ = ["calls", "exec_calls_of", "uploads"]


def calls(query: str) -> list[tuple[str, dict[str, Any]]]:
    """The (field, arguments) of a query, outermost first: the call chain it re-sends."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(selections: Any) -> None:
        for node in selections.selections:
            if isinstance(node, graphql.FieldNode):
                args = {a.name.value: graphql.value_from_ast_untyped(a.value)
                        for a in node.arguments or ()}
                found.append((node.name.value, args))
            if node.selection_set:
                walk(node.selection_set)

    for definition in graphql.parse(query).definitions:
        walk(definition.selection_set)  # type: ignore[attr-defined]
    return found


def exec_calls_of(texts: Iterable[str], step: str) -> list[tuple[str, dict[str, Any]]]:
    """The call chain of the last query that ran step ``step``'s exec (by DAGNB_STEP)."""
    marker = ("withEnvVariable", {"name": "DAGNB_STEP", "value": step})
    chains = [calls(text) for text in texts if "withExec" in text]
    found = [chain for chain in chains if marker in chain]
    if not found:
        raise LookupError(f"no exec query for step {step!r} was recorded")
    return found[-1]


def uploads(texts: Iterable[str]) -> list[str]:
    """Host paths the client asked the engine to upload (``host { directory(path:) }``)."""
    found = []
    for text in texts:
        if "host" not in text:
            continue
        found += [args["path"] for (name, _), (field, args) in itertools.pairwise(calls(text))
                  if name == "host" and field in ("directory", "file")]
    return found
