"""``dagnb run FILE --only-failed``: the params of the run it takes up.

The newest run of the file recorded the ``--param`` values it was given. Re-running its
failed steps with the file's own values instead would run another configuration than
the one that failed (and look up the steps they need under other keys), so they are
given again; a value given now wins for its name. Each is said in one line on stderr.
Which steps run is decided among the recorded runs given the same params
(:func:`dagnb.runtime.history.last_states`): a step done with ``city=Paris`` has not run
with ``city=Rome``, so after a change it runs too (from the cache, if it ran so before).
Params are compared as the runs used them, the file's own values under those given: a
run given none and one given the file's ``city=Paris`` are the same run.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Mapping
from typing import Any

__all__ = ["last_run_params"]

Mask = Callable[[str], str]


def last_run_params(graph: Any, given: Mapping[str, Any], cache_dir: str | None,
                    mask: Mask) -> dict[str, Any]:
    """The params the last run of ``graph``'s file was given that ``given`` (set now)
    does not name, to set for an ``--only-failed`` run; what came from where, and
    what a change means for the steps that run, said in one line on stderr."""
    from dagnb.cache import local_folder
    from dagnb.runtime.history import last_params, last_states

    folder = local_folder(cache_dir or None)
    last = last_params(folder, graph.name, graph.workflow_file)
    if last is None:  # (no run recorded: every step runs anyway)
        return {}
    declared = {name for step in graph for name in step.params}
    own = graph.own_params()
    kept = {name: value for name, value in last.items()
            if name not in given and name in declared}
    dropped = {name: value for name, value in last.items()
               if name not in given and name not in declared}
    ran_with = {**own, **last}  # (a value given the file's own one changes nothing)
    changed = {name: value for name, value in given.items()
               if name not in ran_with or _json(value) != _json(ran_with[name])}
    said = _notes(last, kept, changed, dropped, mask, graph.workflow_file.name)
    if changed or dropped:  # (another configuration: which runs count changes)
        found = last_states(folder, graph.name, graph.workflow_file, {**kept, **given}, own)
        said.append(_AFTER_A_CHANGE[found is not None])
    if said:
        print("dagnb: --only-failed: " + "; ".join(said), file=sys.stderr)
    return kept


_AFTER_A_CHANGE = {  # by whether a run given the same params is recorded
    False: "no run with these params is recorded, so every step runs (those whose "
           "inputs are unchanged come from the cache)",
    True: "a step runs unless a run with these params finished it",
}


def _notes(last: Mapping[str, Any], kept: Mapping[str, Any], changed: Mapping[str, Any],
           dropped: Mapping[str, Any], mask: Mask, file_name: str) -> list[str]:
    """What each param of the run is, against the last run's."""
    said = [f"using the last run's {_flags(kept, mask)}"] if kept else []
    said += [f"--param {name}={_value(value, mask)} given, in place of "
             + (f"the last run's {_value(last[name], mask)}" if name in last
                else "the file's value, which the last run had")
             for name, value in changed.items()]
    if dropped:
        said.append(f"the last run's {_flags(dropped, mask)} left out (no step of "
                    f"{file_name} declares it now)")
    return said


def _flags(values: Mapping[str, Any], mask: Mask) -> str:
    return " ".join(f"--param {name}={_value(value, mask)}" for name, value in values.items())


def _value(value: Any, mask: Mask) -> str:
    from dagnb.workflows.params import as_written, shown

    return shown(as_written(value), mask)


def _json(value: Any) -> str:
    """The value's JSON text: equal only for the same value and type (``1``, ``true``)."""
    return json.dumps(value, sort_keys=True)
