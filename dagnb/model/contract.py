"""The step contract's environment: DAGNB_* variables, params file, secrets."""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from dagnb.checks import warn_user
from dagnb.errors import SecretError
from dagnb.model.masking import (
    MIN_LINE,
    Masker,
    SecretFinder,
    leak_forms,
    looks_like_token,
    name_shown,
    variable_holding,
)
from dagnb.model.step import Step, fits_a_variable, param_env_name, param_text

__all__ = [
    "contract_env",
    "known_secret_values",
    "make_step_folders",
    "param_env_name",
    "refuse_secret_values",
    "resolve_secrets",
    "secret_not_set",
    "unset_secret",
    "write_params",
]


def contract_env(
    step: Step, *, out_dir: Path | str, in_dir: Path | str, params_file: Path | str,
    run_id: str, attempt: int,
) -> dict[str, str]:
    """The step's own env plus the contract's variables (no secrets)."""
    env = dict(step.env)
    env.update(  # (step.CONTRACT_VARIABLES: a step's env may name none of them)
        DAGNB_OUT=str(out_dir),
        DAGNB_IN=str(in_dir),
        DAGNB_PARAMS=str(params_file),
        DAGNB_STEP=step.name,
        DAGNB_RUN_ID=run_id,
        DAGNB_ATTEMPT=str(attempt),
    )
    for name, value in step.params.items():
        text = param_text(value)
        if fits_a_variable(text):  # a longer one would make execve fail: in the file only
            env[param_env_name(name)] = text
    return env


def write_params(step: Step, path: Path) -> None:
    """Write the step's params as JSON for ``$DAGNB_PARAMS``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_params_json(step), encoding="utf-8")


def _params_json(step: Step) -> str:
    if not step.params:  # most steps: json.dumps' pure-Python indenting costs 3 us
        return "{}"
    return json.dumps(dict(step.params), sort_keys=True, indent=1)


def refuse_secret_values(steps: Iterable[Step], secrets: Mapping[str, str]) -> None:
    """Refuse a param that holds the value of a secret (``secrets``: name -> value, of
    the run and the graph), before any step runs: params are written in clear to the
    step's params file, in the cache folder, and shown in its key's description. Warn
    of a param holding a short one (:func:`_warn_short_secret_params`) and of an env
    value holding one (:func:`_warn_secret_env`)."""
    steps = list(steps)
    finder = SecretFinder(secrets)
    for step in steps if finder else ():
        for name, value in step.params.items():  # (most steps have none)
            finder.refuse(  # (as the params file spells it: JSON, non-ASCII escaped)
                json.dumps(value).encode(), f"step {step.name!r}: param {name!r}",
                "would be written in clear to the step's params file in the cache folder",
                "read the secret from the environment inside the step instead "
                "(os.environ[{held!r}] in a function, \"${held}\" in a command), with "
                "{held!r} in its secrets")
    short = {name: value for name, value in secrets.items() if 0 < len(value) < MIN_LINE}
    if short and any(step.params for step in steps):
        _warn_short_secret_params(steps, short)
    if finder and any(step.env for step in steps):
        _warn_secret_env(steps, secrets)


def _warn_short_secret_params(steps: Iterable[Step], secrets: Mapping[str, str]) -> None:
    """Warn of a param holding a secret under ``MIN_LINE`` characters as a value or word
    of its own (as descriptions mask it): it is not refused, since ``dev`` or ``1`` is in
    too many params to refuse them all, but the params file keeps it in clear."""
    maskers = [(name, Masker([value], words_below=MIN_LINE))
               for name, value in sorted(secrets.items())]
    for step in steps:
        for param, value in step.params.items():
            text = json.dumps(value)
            held = next((name for name, mask in maskers if mask(text) != text), None)
            if held is not None:
                warn_user(
                    f"step {step.name!r}: param {param!r} holds the value of secret {held!r} "
                    f"(under {MIN_LINE} characters: not refused, as so short a value is common "
                    "in params), which is written in clear to the step's params file in the "
                    "cache folder; if it is the secret, read it from the environment inside "
                    f"the step instead (os.environ[{held!r}] in a function, \"${held}\" in "
                    "a command)")


def _warn_secret_env(steps: Iterable[Step], secrets: Mapping[str, str]) -> None:
    """Warn, once a variable, of an env value holding a secret's value as a word of its
    own (``Bearer <token>``; not ``postgresql://`` for a password ``postgres``): it
    counts in the step's cache key (as a digest) and reaches a container as a plain
    variable. A warning, not a refusal: a dev database's user may well be its password
    too, and env values are not written in clear to the cache."""
    found = _secret_words(secrets)
    for step in steps:
        for name, text in step.env.items():
            held = next((secret for secret, word in found if word.search(text)), None)
            if held is not None:
                warn_user(
                    f"step {step.name!r}: env {name!r} holds the value of secret "
                    f"{held!r}: it counts in the step's cache key and reaches a container "
                    f"as a plain variable, not a secret; if it is one, declare {name} under "
                    f"the step's secrets (set in the environment), or build it in the step "
                    f"from ${held}")


def _secret_words(secrets: Mapping[str, str]) -> list[tuple[str, re.Pattern[str]]]:
    """Per secret of ``MIN_LINE`` characters or more: a pattern finding its whole value
    (in any leak form, not a line of it alone) between non-alphanumeric characters."""
    found = []
    for name, value in sorted(secrets.items()):
        forms = sorted((f for f in leak_forms(value, lines=False) if len(f) >= MIN_LINE),
                       key=len, reverse=True)
        if forms:
            either = "|".join(map(re.escape, forms))
            found.append((name, re.compile(f"(?<![A-Za-z0-9])(?:{either})(?![A-Za-z0-9])")))
    return found


def make_step_folders(
    step: Step, *, out_dir: str, in_dir: str, params_file: str, inputs: Mapping[str, Path]
) -> None:
    """Make what a step's process finds when it starts: ``out_dir`` (empty), ``in_dir``
    with a link per upstream step to its outputs, and the params file.

    Three folders and a file per step, each a journaled change that costs 0.1–0.3 ms of
    system time on a busy disk: the local executor calls this off its event loop. Each
    step gets a params file of its own, even an empty one (a hard link to one shared
    ``{}`` would let a step that writes it change its siblings' input). The step's
    folder (the parent of all three) is made first and once; the run's folder is
    already there.
    """
    _mkdir(os.path.dirname(params_file))  # out_dir's and in_dir's too, in a run
    # (no file object: its buffer and codec cost more than the three calls)
    descriptor = os.open(params_file, _NEW_FILE, 0o666)
    try:
        text = _params_json(step).encode()
        while text:  # (a write may take less than all, on some file systems)
            text = text[os.write(descriptor, text):]
    finally:
        os.close(descriptor)
    _mkdir(out_dir)
    _mkdir(in_dir)
    for name, path in inputs.items():
        link = os.path.join(in_dir, name)
        if not os.path.lexists(link):  # (a retry's: it dangles where no outputs were made)
            os.symlink(os.path.realpath(path), link, target_is_directory=True)


_NEW_FILE = os.O_WRONLY | os.O_CREAT | os.O_TRUNC | getattr(os, "O_CLOEXEC", 0)


def _mkdir(path: str) -> None:
    """``Path(path).mkdir(parents=True, exist_ok=True)`` in one system call when, as
    almost always, the parent is there and the folder is not."""
    try:
        os.mkdir(path)
    except FileExistsError:
        if not os.path.isdir(path):
            raise
    except FileNotFoundError:
        os.makedirs(path, exist_ok=True)


def resolve_secrets(
    steps: Iterable[Step], environ: Mapping[str, str] | None = None, *,
    required: bool = True,
) -> dict[str, dict[str, str]]:
    """Step name -> {secret name: value}, read from the environment now, for the steps
    that declare secrets (most declare none).

    A missing variable is a SecretError naming the step and the variable, never a value;
    not ``required``, it is left out (:func:`unset_secret` finds it).
    """
    environ = os.environ if environ is None else environ
    resolved: dict[str, dict[str, str]] = {}
    for step in steps:
        if not step.secrets:
            continue
        values = {}
        for name in step.secrets:
            if name in environ:
                values[name] = environ[name]
            elif required:
                raise secret_not_set(step.name, name, environ)
        resolved[step.name] = values
    return resolved


def unset_secret(step: Step, values: Mapping[str, str]) -> str | None:
    """The first secret ``step`` declares that ``values`` (its resolved ones) lacks."""
    return next((name for name in step.secrets if name not in values), None)


def secret_not_set(step: str, name: str,
                   environ: Mapping[str, str] | None = None) -> SecretError:
    """The error of a step that must run and whose secret ``name`` is not set: a name
    that is the value of a variable (``environ``, else the process's), or looks like a
    token, is a secret's value given as its name, and is not shown."""
    holder = variable_holding(name, os.environ if environ is None else environ)
    if holder is not None:
        return SecretError(f"step {step!r}: a secret's name ({len(name)} characters, not "
                           f"shown) is the value of ${holder}; give the name: "
                           f"secrets=[{holder!r}]")
    if looks_like_token(name):
        return SecretError(f"step {step!r} needs secret {name_shown(name)}, which is not "
                           "set in the environment; give the variable's name, e.g. "
                           "API_TOKEN, not its value")
    if _in_a_kernel():
        return SecretError(f"step {step!r} needs secret {name!r}, which is not set in the "
                           "kernel's environment (a shell's export does not reach a running "
                           "kernel); set it in a cell before running: import os, getpass; "
                           f"os.environ[{name!r}] = getpass.getpass() (%env {name}=... "
                           "works too, but saves the value in the notebook)")
    return SecretError(f"step {step!r} needs secret {name!r}, which is not set in the "
                       f"environment; set it (export {name}=...) before running")


def _in_a_kernel() -> bool:
    """Whether this process is a Jupyter kernel the user works in, whose environment only
    its own cells can change: not ``dagnb run NOTEBOOK``'s, which inherits the caller's.
    Read from ``sys.modules``: the model layer does not import IPython."""
    ipython = sys.modules.get("IPython")
    shell = getattr(ipython, "get_ipython", lambda: None)()
    return (getattr(shell, "kernel", None) is not None  # (a terminal IPython has none)
            and not os.environ.get("DAGNB_NOTEBOOK_FILE"))


def known_secret_values(
    steps: Iterable[Step], environ: Mapping[str, str] | None = None
) -> list[str]:
    """The values, as set now, of every secret the steps declare (those not set are
    left out): what a run masks wherever it shows a value, cache descriptions too."""
    environ = os.environ if environ is None else environ
    names = sorted({name for step in steps for name in step.secrets})
    return [environ[name] for name in names if environ.get(name)]
