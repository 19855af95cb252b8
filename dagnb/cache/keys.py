"""A step's cache key: one digest over named component digests.

Each component (the image, the env, one per mounted path, one per upstream output...)
is digested on its own and stored in the entry, so a later miss can say which one
changed (:mod:`dagnb.cache.explain`). ``describe`` holds the human-readable value of
each component for those sentences; it never holds a secret value: secrets count by name,
and a run's ``mask`` hides every declared secret's value in what is described (a notebook
global built from one, ``headers = {'Authorization': 'Bearer ' + token}``).
"""

from __future__ import annotations

import builtins
import dataclasses
import functools
import json
import os
import posixpath
import re
import reprlib
import sys
from bisect import bisect_left
from collections.abc import Callable, Mapping
from itertools import islice, pairwise
from json.encoder import encode_basestring as _quoted
from pathlib import Path
from typing import Any

from dagnb.cache.mounts import excluder, mount_excludes
from dagnb.errors import CacheError, FingerprintError, UnfingerprintableVariable
from dagnb.fingerprint import (
    code_source_parts,
    code_with_values,
    environ_read,
    get_hash_algorithm,
    path_digest,
    text_digest,
    value_digest,
)
from dagnb.model.jsontext import encoder, scalar_text
from dagnb.model.masking import (
    MIN_LINE,
    named_as_secret,
    named_surely_secret,
    url_password,
    written_secrets,
)
from dagnb.model.step import Step, host_folders, mount_path

__all__ = ["CACHE_FORMAT", "StepKey", "code_text", "key_digest", "step_key"]

# Bump when what goes into a key changes meaning: every old entry then misses.
# 2: a Python step's globals count as ``var:<name>`` components, hashed at each run.
CACHE_FORMAT = "dagnb-key-2"

# The ``runs_in`` component of a step run in a container; a host run has none.
CONTAINER = "a container"


@dataclasses.dataclass(frozen=True, slots=True)
class StepKey:
    """The cache key of one step (or one Memory call).

    Attributes
    ----------
    digest
        Hex digest over all components; names the entry directory.
    components
        Component name -> digest, e.g. ``"image"``, ``"mount:data/raw.csv"``,
        ``"upstream:prep"``, ``"var:params"`` (a global a Python step reads),
        ``"host_var:REGION"`` (a host variable a shell step run on this machine reads),
        ``"started_in"`` (the folder an in-process Python step runs in, when the process
        was started in another than the step's).
    describe
        Component name -> human-readable value (image string, env JSON, params JSON,
        the normalized code), used only to explain a miss.
    """

    digest: str
    components: Mapping[str, str]
    describe: Mapping[str, str] = dataclasses.field(default_factory=dict, compare=False)

    @property
    def short(self) -> str:
        """The first 12 hex digits, for display."""
        return self.digest[:12]

    def __str__(self) -> str:
        return self.digest


def key_digest(components: Mapping[str, str]) -> str:
    """The key digest over sorted ``name=digest`` components."""
    return text_digest("".join([f"{name}={components[name]}\n" for name in sorted(components)]))


# Params, env and names are JSON already (Step checks): canonical JSON is their
# fingerprint, and cheaper than value_digest. 1, 1.0 and true stay distinct.
_ENCODER = encoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def _canonical(value: Any) -> str:
    if value == {} or value == []:  # most steps: no env, no params, no services
        return "{}" if type(value) is dict else "[]"
    return _ENCODER(value)


def _params_text(params: Mapping[str, Any]) -> str:
    """``_canonical(dict(params))``; params of str names and None, bool, int or str
    values (most steps') are written without the encoder, whose call cost each step's
    key some 5,000 instructions. Any other value, or name, goes to the encoder."""
    if len(params) == 1:  # (no sort)
        names: list[Any] = list(params)
    else:
        try:
            names = sorted(params)
        except TypeError:  # names of mixed types: the encoder says what it says of them
            return _canonical(dict(params))
    items = []
    for name in names:
        value = params[name]
        text = _quoted(value) if type(value) is str else scalar_text(value)
        if text is None:  # a float (NaN, its shortest text), a list, a dict...
            return _canonical(dict(params))
        if type(name) is not str:
            return _canonical(dict(params))
        items.append(f"{_quoted(name)}:{text}")
    return "{" + ",".join(items) + "}"


class _Builder:
    """Collects components and their descriptions."""

    __slots__ = ("components", "describe")

    def __init__(self, components: dict[str, str] | None = None,
                 describe: dict[str, str] | None = None) -> None:
        self.components: dict[str, str] = {} if components is None else components
        self.describe: dict[str, str] = {} if describe is None else describe

    def text(self, name: str, text: str, shown: str | None = None) -> None:
        self.components[name] = _text_digest(text)
        self.describe[name] = text if shown is None else shown

    def digest(self, name: str, digest: str, shown: str) -> None:
        self.components[name] = digest
        self.describe[name] = shown


def step_key(
    step: Step,
    *,
    upstream_digests: Mapping[str, str],
    base_dir: Path,
    cache_version: str = "",
    mask: Callable[[str], str] | None = None,
    container: bool | str | None = None,
    cache_folder: Path | None = None,
    variables: Mapping[str, Any] | None = None,
) -> StepKey:
    """The cache key of ``step``.

    Parameters
    ----------
    step
        The step. When ``step.key_fn`` is set, ``key_fn(step)`` is called and the digest
        of its return value becomes the ``key_fn`` component *instead of* ``command`` or
        ``code``: the step is then cached on what the function returns (a version
        string, a file's checksum...), not on its command or code. Everything else
        (image, env, params, mounts, upstreams) still counts.
    upstream_digests
        Upstream step name -> that step's *output* digest (not its key), one
        ``upstream:<name>`` component each: an upstream that re-runs and produces the
        same output leaves this key unchanged.
    base_dir
        Relative mount paths resolve here.
    cache_version
        The run-level salt, combined with ``step.cache_version``.
    mask
        Replaces the values of the secrets the run knows with ``***`` (a
        :class:`~dagnb.model.masking.Masker`): applied to every description, and to
        each string of a variable's value before its short repr cuts it (a secret cut
        in two shows its head and tail, which no mask finds). Digests are unchanged.
    container
        The run executes the step in a container (the Dagger executor): a ``runs_in``
        component tells its result apart from one made on the host, which saw another
        system. False (the host: local, dask) adds no ``runs_in``, so those keys stay as
        they were. A str: the image a step without one runs in there, when it is not dagnb's default
        (an executor made with its own ``default_image``): a ``default_image`` component.
        False (a run's cache says it runs on the host) also counts, for a Python step,
        the folder this process runs in when it is not the step's (``started_in``): an
        in-process step runs there. None (the default: a key made outside a run) counts
        no folder, as before.
    cache_folder
        The run's cache folder, left out of a mounted folder that holds it (as the
        configured one is): every run changes it.
    variables
        Values to key the globals of these names the code reads by, instead of their
        values now, whether defined now or not (a plan: what a notebook variable will
        hold when the step runs).

    Raises
    ------
    UnfingerprintableVariable
        A global the step's code reads cannot be hashed (the step runs uncached).
    FingerprintError
        A mounted path does not exist, or ``key_fn`` returned an unhashable value.
    """
    if get_hash_algorithm() != _MEMO_ALGORITHM[0]:
        _forget_digests()
    spec = _spec_of(step, cache_version)
    params = _params_text(step.params) if step.params else None
    code = None
    if step.key_fn is None and step.func is not None:
        code = _code_and_variables(step, variables)
    if code is not None and not code[1]:  # (most Python steps: code that reads no global)
        components, describe, lines = spec.with_code(code[0], params, step.func)
    else:
        components, describe, lines = spec.with_params(params)
        if step.key_fn is not None:  # instead of the code or the command
            value = step.key_fn(step)
            components["key_fn"], describe["key_fn"] = value_digest(value), repr(value)
        elif code is not None:
            _add_code(components, describe, step, code, mask)
    if step.func is None and not container:  # (in a container the host's are not seen)
        _add_host_variables(components, describe, step, mask)
    elif not container:  # (a Python step on this machine: the variables its code reads)
        _add_environ_reads(components, describe, step, mask)
        if container is False and step.executor != "dask":  # (dask: to its folder)
            _add_process_folder(components, describe, step, base_dir)
    for host, target in step.mounts.items():
        label = _mount_label(host, components)
        components[label], listing = _mount_digest(step, Path(base_dir), host, target,
                                                   cache_folder)
        describe[label] = target
        if listing is not None:  # (a folder's: explain names the files that changed)
            describe[f"{MOUNT_FILES}:{label}"] = listing
    for name, digest in upstream_digests.items():
        label = f"upstream:{name}"
        components[label] = describe[label] = digest
    if container:
        components["runs_in"], describe["runs_in"] = _text_digest(CONTAINER), CONTAINER
        if type(container) is str and not step.image:  # (not dagnb's default: keys kept)
            components["default_image"] = _text_digest(container)
            describe["default_image"] = container
    if mask is not None:
        describe = {label: mask(text) for label, text in describe.items()}
    if KEYED_ON_HOST and not container:  # (a container sees its mounts alone)
        for hook in KEYED_ON_HOST:
            hook(step, base_dir, cache_folder)
    return StepKey(lines.digest(components), components, describe)


# Called with (step, base folder, cache folder) as each key of a step run on this
# machine is made; none changes the key. The runtime's look for files a step names
# that no mount covers (:mod:`dagnb.runtime.unmounted`) adds itself here.
KEYED_ON_HOST: list[Callable[[Step, Path, Path | None], None]] = []


# The ``host_var:<name>`` component of a host variable a shell step's text names.
HOST_VARIABLE = "host_var"

# ``describe["files:mount:data"]``: a mounted folder's files (``_files_listing``), not a
# component: the key is the same with or without it, and entries made before have none.
MOUNT_FILES = "files"
LISTED_FILES = 100  # a folder of more files keeps their count alone
LISTING_CHARS = 8192  # (long names: the entry stays small)
SHORT_DIGEST = 10  # hex digits of each file's digest: a change seen but for 1 in 2**40

# ``$NAME``, ``${NAME}``, ``${NAME:-x}``, ``${#NAME}``: positional and special
# parameters ($1, $@, $?...) start otherwise.
_NAMED = re.compile(r"\$\{?[#!]?([A-Za-z_][A-Za-z0-9_]*)")

# Python run by the text (``python3 - <<'PY'``, ``python -c``) reading one by its literal
# name: ``os.environ["X"]``, ``os.environ.get("X", ...)``, ``os.getenv("X")``, ``environ['X']``,
# and awk's ``ENVIRON["X"]`` (its quotes escaped in a double-quoted program too).
_PYTHON_READ = re.compile(
    r"""(?:\b(?:environ\s*\[|environ\.get\(|getenv\()|\bENVIRON\s*\[)\s*\\?(?P<q>['"])"""
    r"""([A-Za-z_][A-Za-z0-9_]*)\\?(?P=q)""")
# Other tongues a shell step runs, reading one by its literal name: Perl's
# ``$ENV{X}``/``$ENV{'X'}``, Node's ``process.env.X``/``process.env["X"]``, Ruby's
# ``ENV["X"]``/``ENV.fetch("X")``.
_OTHER_READ = re.compile(
    r"""\$ENV\{\s*\\?['"]?([A-Za-z_][A-Za-z0-9_]*)\\?['"]?\s*\}"""
    r"""|\bprocess\.env(?:\.([A-Za-z_][A-Za-z0-9_]*)\b|\[\s*\\?['"]([A-Za-z_][A-Za-z0-9_]*)\\?['"])"""
    r"""|\bENV(?:\s*\[|\.fetch\(\s*)\s*\\?['"]([A-Za-z_][A-Za-z0-9_]*)\\?['"]""")
# ``printenv`` and the words after it up to the command's end: the names it prints.
_PRINTENV = re.compile(r"""\bprintenv\b(?![-.=])([^;&|<>()`#\n]*)""")
_PRINTED = re.compile(r"""(?<![^\s'"])['"]?([A-Za-z_][A-Za-z0-9_]*)['"]?(?![^\s])""")


def _reads(text: str) -> list[tuple[int, str]]:
    """Where ``text`` reads a variable, and its name: by the shell (``$X``, ``printenv
    X``), by Python or by awk."""
    reads = [(found.start(), found.group(1)) for found in _NAMED.finditer(text)
             if found.group(1) != "ENV" or not text.startswith("{", found.end())]  # (Perl's)
    if "env" in text or "ENV" in text:  # (most commands read none so)
        reads.extend((found.start(), found.group(2)) for found in _PYTHON_READ.finditer(text))
        reads.extend((found.start(), next(name for name in found.groups() if name))
                     for found in _OTHER_READ.finditer(text))
        for command in _PRINTENV.finditer(text):
            reads.extend((command.start(1) + name.start(1), name.group(1))
                         for name in _PRINTED.finditer(command.group(1)))
    return reads


# A command's start: a line's, after an operator, a keyword or a command running the next.
_COMMAND_START = r"""(?:^|[;&|({`]|\b(?:then|do|else|time|sudo|exec|command|builtin)\b)[ \t]*"""
# A command's end: the line's, an operator, a redirection or a comment.
_COMMAND_END = r"""[ \t]*(?=$|[;&|<>)}`#])"""
# A command run with no name, printing the whole environment, which no key can hold:
# ``env`` or ``printenv`` with options alone (``env | grep '^REGION='``); bash's
# ``export`` (``-p``), ``declare``/``typeset`` (``-p``, ``-x``) and a bare ``set``, which
# print every variable (``set -e``, ``export FOO=1``, ``declare -f``: no such dump).
# ``env -u NAME`` with no command prints the rest; bash's ``compgen -e`` (``-A export``)
# lists every exported name, for a loop to read them all.
_WHOLE_ENVIRONMENT = re.compile(
    _COMMAND_START + r"""((?:\S*/)?(?:env|printenv)"""
    r"""(?:[ \t]+(?:-u[ \t]*\w+|--unset(?:=|[ \t]+)\w+|-[-\w]*))*"""
    r"""|export(?:[ \t]+-[pn]+)*|(?:declare|typeset)(?:[ \t]+-[pxg]+)*|set"""
    r"""|compgen[ \t]+(?:-e|-A[ \t]*export))"""
    + _COMMAND_END, re.MULTILINE)
# Python run by the text taking ``os.environ`` whole (``dict(os.environ)``,
# ``os.environ.items()``, ``.copy()``, ``{**os.environ}``, ``for k in os.environ``), and
# awk's ``for (k in ENVIRON)``; ``"X" in os.environ`` and ``os.environ["X"]`` take none.
_WHOLE_PYTHON_ENVIRONMENT = re.compile(
    r"""\benviron\s*\.\s*(?:items|keys|values|copy)\s*\(\s*\)"""
    r"""|\b(?:dict|list|sorted|set|tuple|print|pprint|str|repr|dumps)\s*\(\s*"""
    r"""(?:os\s*\.\s*)?environ\s*[,)]"""
    r"""|\*\*\s*(?:os\s*\.\s*)?environ\b"""
    r"""|\bfor\s+\w+(?:\s*,\s*\w+)*\s+in\s+(?:os\s*\.\s*)?environ\b(?!\s*[.\[])"""
    r"""|\bfor\s*\(\s*\w+\s+in\s+ENVIRON\s*\)"""
    # Perl's ``%ENV`` (``keys %ENV``), Node's ``process.env`` taken whole
    # (``JSON.stringify(process.env)``, ``{...process.env}``), Ruby's ``ENV.to_h``...
    r"""|%ENV\b|\bprocess\.env\b(?!\s*[.\[])"""
    r"""|\bENV\.(?:to_h|to_hash|to_a|each\w*|keys|values|inspect|select|map|filter)\b""")
# Words without which a text reads no whole environment (most commands: no regex run).
_WHOLE_ENVIRONMENT_WORDS = ("env", "ENV", "export", "declare", "typeset", "set", "compgen")


@functools.lru_cache(maxsize=1024)  # (each key of a step run here asks)
def whole_environment_read(run: str | tuple[str, ...] | None) -> str:
    """What in a shell step's text reads its whole environment (``env``, ``export -p``,
    ``set``, Python's ``dict(os.environ)``), or "": its host variables are read, but no
    key can name them."""
    if isinstance(run, tuple):  # (an argv list: ``["env"]``, ``["sh", "-c", "env | ..."]``)
        if run and posixpath.basename(run[0]) in ("env", "printenv"):
            return run[0] if all(word.startswith("-") for word in run[1:]) else ""
        return next((seen for flag, text in pairwise(run)
                     if flag.startswith("-") and flag.endswith("c")
                     and (seen := whole_environment_read(text))), "")
    if not run or not any(word in run for word in _WHOLE_ENVIRONMENT_WORDS):
        return ""
    found = _WHOLE_ENVIRONMENT.search(run) or _WHOLE_PYTHON_ENVIRONMENT.search(run)
    return "" if found is None else " ".join(found.group(found.lastindex or 0).split())


def reads_whole_environment(run: str | tuple[str, ...] | None) -> bool:
    """Whether a shell step's text reads its whole environment (:func:`whole_environment_read`)."""
    return bool(whole_environment_read(run))


def _read_names(text: str) -> list[str]:
    return [name for _, name in _reads(text)]


# Variables of the machine or the shell session, not inputs: their values differ from one
# machine (or terminal) to the next without changing what a step makes, and keying them
# would leave a shared cache to no one else.
_MACHINE_VARIABLES = frozenset({
    "HOME", "PATH", "PWD", "OLDPWD", "USER", "LOGNAME", "SHELL", "SHLVL", "TERM", "TMPDIR",
    "TMP", "TEMP", "LANG", "LANGUAGE", "HOSTNAME", "DISPLAY", "COLUMNS", "LINES", "PS1",
    "PS2", "PS3", "PS4", "IFS", "RANDOM", "SRANDOM", "SECONDS", "LINENO", "UID", "EUID",
    "PPID", "OPTIND", "OPTARG", "REPLY", "PIPESTATUS", "FUNCNAME", "GROUPS", "HOSTTYPE",
    "OSTYPE", "MACHTYPE", "EPOCHSECONDS", "EPOCHREALTIME", "VIRTUAL_ENV", "_",
})
_MACHINE_PREFIXES = ("LC_", "XDG_", "SSH_", "BASH", "CONDA_", "JUPYTER_", "DAGNB_")

# Names the text binds itself before it reads them: a loop's (``for i in 3 1 4``,
# ``for ((i = 0; ...``) and ``read``'s (``while read -r line``), which a host variable
# of that name does not reach.
_BOUND = re.compile(
    r"\b(?:for\s+([A-Za-z_]\w*)\s|for\s*\(\(\s*([A-Za-z_]\w*)"
    r"|read((?:[ \t]+-[A-Za-z]+)*(?:[ \t]+[A-Za-z_]\w*)+))")

# The names a command text reads that may count, by the text: most steps' keys look once.
_HOST_NAMES: dict[Any, tuple[str, ...]] = {}


def _host_names(run: str | tuple[str, ...] | None) -> tuple[str, ...]:
    """The variables ``run`` names, less the machine's, dagnb's own and secrets'."""
    found = _HOST_NAMES.get(run)  # (Step made it text or a tuple of texts)
    if found is None:
        text = run if isinstance(run, str) else _argv_text(run or ())
        found = tuple(sorted({
            name for name in _read_names(text)
            if name not in _MACHINE_VARIABLES and not name.startswith(_MACHINE_PREFIXES)
            and not named_surely_secret(name)} - _bound(text)))
        if len(_HOST_NAMES) >= _TEXT_MEMO_LIMIT:
            _HOST_NAMES.clear()
        _HOST_NAMES[run] = found
    return found


def _argv_text(run: tuple[str, ...]) -> str:
    """An argv list's items a line each (``["sh", "-c", TEXT]``), and, for one running
    ``printenv``, the names it prints on its line too (``["printenv", "REGION"]``)."""
    text = "\n".join(run)
    if run and posixpath.basename(run[0]) == "printenv":
        text += "\nprintenv " + " ".join(run[1:])
    return text


def _bound(text: str) -> set[str]:
    """The names ``text`` binds in a loop or a ``read`` (see :data:`_BOUND`), or
    assigns before it reads them (:func:`_assigned_first`)."""
    names = _assigned_first(text)
    for loop, counter, read in _BOUND.findall(text):
        names.update(word for word in (loop, counter, *read.split())
                     if word and not word.startswith("-"))
    return names


# ``NAME=`` at a command's start (``export``, ``local``... before it): an assignment.
_ASSIGNED = re.compile(
    r"(?:^|[\s;&|(])(?:(?:export|local|readonly|declare(?:\s+-\w+)*)\s+)?([A-Za-z_]\w*)=")


def _assigned_first(text: str) -> set[str]:
    """The names ``text`` assigns before it first reads them, the value assigned not
    reading them either (``PYTHONPATH="$(mktemp -d)"``: the host's value never reaches
    the step; ``REGION=${REGION:-eu}`` reads it, and counts)."""
    first_read: dict[str, int] = {}
    for at, name in sorted(_reads(text)):
        first_read.setdefault(name, at)
    names = set()
    for found in _ASSIGNED.finditer(text):
        name, at = found.group(1), found.end()
        if at <= first_read.get(name, len(text)) and not any(
                read == name for read in _read_names(_word_at(text, at))):
            names.add(name)
    return names


def _word_at(text: str, start: int) -> str:
    """The shell word starting at ``start``: up to a blank, ``;``, ``&`` or ``|`` outside
    quotes and ``$(...)`` (an assignment's value)."""
    quote, depth, at = "", 0, start
    while at < len(text):
        char = text[at]
        if quote:
            quote = "" if char == quote else quote
        elif char in "'\"":
            quote = char
        elif text.startswith("$(", at):
            depth, at = depth + 1, at + 1
        elif char == ")" and depth:
            depth -= 1
        elif not depth and (char.isspace() or char in ";&|"):
            break
        at += 1
    return text[start:at]


def _add_host_variables(components: dict[str, str], describe: dict[str, str], step: Step,
                        mask: Callable[[str], str] | None) -> None:
    """One ``host_var:<name>`` component per host variable a shell step run on this
    machine reads, by its value now (unset counts as such): the step sees it, and a
    result made with another value is another result. Left out: those the step sets
    (``env``), its secrets, and a value holding a secret's (the run's, or of a variable
    named as one): a secret's value goes in no key."""
    _add_host_names(components, describe, step, _host_names(step.run), mask)


def _add_environ_reads(components: dict[str, str], describe: dict[str, str], step: Step,
                       mask: Callable[[str], str] | None) -> None:
    """The ``host_var:<name>`` components of a Python step run on this machine: the
    variables its code reads by a name written in it (``os.environ["REGION"]``,
    ``os.getenv("REGION")``), as a shell step's ``$REGION``, by the same rules."""
    names = environ_read(step.func)
    if names:  # (most steps read none)
        _add_host_names(components, describe, step, _keyable(names), mask)


def keyed_environ(step: Step) -> dict[str, str | None]:
    """The host variables a Python step's key counts, with their values here (None:
    unset): an executor running it elsewhere (a dask worker) gives it these, so that
    what it reads is what its key holds."""
    if step.func is None:
        return {}
    return _host_values(_keyable(environ_read(step.func)), step)


def environ_digests(func: Callable[..., Any]) -> dict[str, str]:
    """A cached function's ``host_var:<name>`` components (``dagnb.Memory``): the
    variables its code reads by a name written in it, by their values now, as a Python
    step's; the machine's and the secrets' left out."""
    names = environ_read(func)
    if not names:  # (most functions read none: every hit asks)
        return {}
    return {f"{HOST_VARIABLE}:{name}": _text_digest(_canonical(value))
            for name, value in _host_values(_keyable(names)).items()}


def environ_shown(components: Mapping[str, str]) -> dict[str, str]:
    """How explain shows the ``host_var:<name>`` components among ``components``: each
    variable's value now, short (one named as a secret: not shown)."""
    prefix = f"{HOST_VARIABLE}:"
    return {label: _host_value_shown(label[len(prefix):], os.environ.get(label[len(prefix):]))
            for label in components if label.startswith(prefix)}


def _keyable(names: tuple[str, ...]) -> tuple[str, ...]:
    """The names read that a key counts: not the machine's, not one named as a secret."""
    return tuple(name for name in names if name not in _MACHINE_VARIABLES
                 and not name.startswith(_MACHINE_PREFIXES) and not named_surely_secret(name))


def _add_host_names(components: dict[str, str], describe: dict[str, str], step: Step,
                    names: tuple[str, ...], mask: Callable[[str], str] | None) -> None:
    for name, value in _host_values(names, step, mask).items():
        label = f"{HOST_VARIABLE}:{name}"
        components[label] = _text_digest(_canonical(value))  # (unset: null, not "")
        describe[label] = _host_value_shown(name, value)


def _host_values(names: tuple[str, ...], step: Step | None = None,
                 mask: Callable[[str], str] | None = None) -> dict[str, str | None]:
    """The values here (None: unset) of the host variables ``names`` a key counts: not
    those ``step`` sets in its ``env`` or declares as secrets, nor a value holding a
    secret (the run's, by ``mask``, or a variable's named as one)."""
    found = {}
    for name in names:
        if step is not None and (name in step.env or name in step.secrets):
            continue
        value = os.environ.get(name)
        if value is None or not _holds_secret(value, mask):
            found[name] = value
    return found


# The ``started_in`` component: the folder this process runs an in-process Python step in.
STARTED_IN = "started_in"

# (process folder, base folder, workdir, mounts) -> the process folder, resolved, and as
# keyed, when a shell step would start in another, else None: resolving costs a stat a
# component.
_ELSEWHERE: dict[tuple[Any, ...], tuple[str, str] | None] = {}


def _add_process_folder(components: dict[str, str], describe: dict[str, str], step: Step,
                        base_dir: Path | str) -> None:
    """A ``started_in`` component naming the folder this process runs in, for a Python
    step run in it: the step runs there (the process has one folder), and reads
    ``Path("data")`` there. Only when a shell step would start in another (its workdir,
    else the workflow's folder): the keys of a run started there stay as they were."""
    here = os.getcwd()
    if step.workdir is None and here == os.fspath(base_dir):  # (most runs: no more looks)
        return
    memo = (here, os.fspath(base_dir), step.workdir, _items(step.mounts))
    if memo not in _ELSEWHERE:
        resolved = str(Path(here).resolve())
        if len(_ELSEWHERE) >= _TEXT_MEMO_LIMIT:
            _ELSEWHERE.clear()
        shell_folder = str(_shell_folder(step, Path(base_dir)))
        _ELSEWHERE[memo] = (None if resolved == shell_folder
                            else (resolved, _relative_or_whole(resolved, shell_folder)))
    elsewhere = _ELSEWHERE[memo]
    if elsewhere is not None:
        folder, keyed = elsewhere
        components[STARTED_IN] = _text_digest(keyed)
        own = f"its workdir {step.workdir}" if step.workdir else "the workflow’s folder"
        describe[STARTED_IN] = f"{folder}, not {own}"


def _relative_or_whole(folder: str, shell_folder: str) -> str:
    """``folder`` as the key holds it: from the folder a shell step starts in (``..``
    for a project's root, run from there), so that a teammate's clone elsewhere, or
    CI's, keys it alike; whole where no relative path leads there (another drive)."""
    try:
        return os.path.relpath(folder, shell_folder)
    except ValueError:
        return folder


def _shell_folder(step: Step, base_dir: Path) -> Path:
    """The folder a shell step of ``step``'s workdir and mounts starts in on this machine,
    resolved (as the local executor finds it: :func:`host_folders`)."""
    if step.workdir is None:
        return base_dir.resolve()
    found = next((path for path in host_folders(base_dir, step.workdir, step.mounts)
                  if path.is_dir()), base_dir / step.workdir)
    return found.resolve()


def _holds_secret(value: str, mask: Callable[[str], str] | None) -> bool:
    """Whether ``value`` holds a secret the run knows, or a piece of the value of a
    variable named as one beyond doubt (``API_TOKEN``'s, which a step sees undeclared)."""
    if mask is not None and mask(value) != value:
        return True
    return len(value) >= MIN_LINE and _holds_piece(value, _SURE_ENVIRON_SECRETS())


# A host variable's value as explain shows it: short, on one line.
_SHOWN_LENGTH = reprlib.Repr().maxstring
UNSET, NOT_SHOWN = "(unset)", "<not shown>"


def _host_value_shown(name: str, value: str | None) -> str:
    if value is None:
        return UNSET
    if named_as_secret(name) or _url_password_near_ends(value):  # (``TOKENIZER_NAME``, too)
        return NOT_SHOWN
    text = value if value.isprintable() else repr(value)[1:-1]
    return _cut(text, _SHOWN_LENGTH) if text else '""'


def _mount_label(host: str, components: Mapping[str, str]) -> str:
    """A mount's component, by its host path as the file system reads it: ``data``,
    ``./data`` and ``data/`` are one folder, and rewriting one as another ran the step
    again. (Two spellings of one folder in one step keep theirs, so neither is lost.)"""
    label = f"mount:{posixpath.normpath(host)}"
    return label if label not in components else f"mount:{host}"


# What a step's fields alone give (every component but params, code, mounts and
# upstreams), by the fields' values: the steps of a chain share one entry, whatever
# their names, and a step met for the first time (a re-run in a new process) costs a
# tuple and a dict hit. Params are not in it: their JSON is their digest's input anyway,
# and 1, 1.0 and True are equal as Python values but not as JSON.
_SPEC_MEMO: dict[tuple[Any, ...], _Spec] = {}
_SPEC_MEMO_LIMIT = 100_000
_NO_PARAMS = "{}"


def _spec_signature(step: Step, kind: str, plain: bool, cache_version: str) -> tuple[Any, ...]:
    """The fields ``_spec`` reads, as a hashable tuple that is equal only where the
    components are (the versions with their types: ``"1"`` and ``1`` differ in JSON)."""
    return (
        kind, step.run if plain else None, step.image, _items(step.env),
        step.secrets, step.workdir, step.services, _items(step.cache_volumes),
        step.exclude, step.user, step.platform, not step.errexit,
        step.cache_version, type(step.cache_version), cache_version, type(cache_version),
    )


def _items(mapping: Mapping[str, Any]) -> tuple[tuple[str, Any], ...]:
    return tuple(mapping.items()) if mapping else ()


class _KeyLines:
    """The sorted ``name=digest`` lines of :func:`key_digest` for the components a key
    starts from (but those named ``own``): a key's text is these with the step's own
    lines (params, code, upstreams...) put in their places, where formatting and sorting
    every line again cost a first run of 100 steps some 14,000 instructions a step."""

    __slots__ = ("count", "lines", "names", "own")

    def __init__(self, components: Mapping[str, str], own: tuple[str, ...] = ()) -> None:
        self.names = sorted(name for name in components if name not in own)
        self.lines = [f"{name}={components[name]}\n" for name in self.names]
        self.own, self.count = own, len(components)

    def digest(self, components: Mapping[str, str]) -> str:
        """``key_digest(components)``, where only the names ``own`` and those added
        after the first ``count`` may differ from the ones these lines were made of."""
        lines = self.lines.copy()
        own = (*self.own, *islice(components, self.count, None))
        for name in sorted(own, reverse=True):  # (the last first: earlier places hold)
            lines.insert(bisect_left(self.names, name), f"{name}={components[name]}\n")
        return text_digest("".join(lines))


_Parts = tuple[dict[str, str], dict[str, str], _KeyLines]


class _Spec:
    """The components of a step's fields (params ``{}``), and those with its params
    and code too, by the code's digest and the params' text: the steps of a chain that
    run one function share them, and each key adds only its upstreams' lines."""

    __slots__ = ("_with_code", "components", "describe", "lines")

    def __init__(self, components: dict[str, str], describe: dict[str, str]) -> None:
        self.components, self.describe = components, describe
        self.lines = _KeyLines(components, ("params",))
        self._with_code: dict[tuple[str, str | None], _Parts] = {}

    def with_params(self, params: str | None) -> _Parts:
        """New dicts of the components with ``params`` (``_params_text``; None: none)."""
        components, describe = self.components.copy(), self.describe.copy()
        if params is not None:  # in its place among the components (the order is kept)
            components["params"], describe["params"] = _text_digest(params), params
        return components, describe, self.lines

    def with_code(self, digest: str, params: str | None, func: Any) -> _Parts:
        """New dicts of the components with ``params`` and the ``code`` component of
        ``func`` (of code ``digest``, reading no global), and their lines."""
        found = self._with_code.get((digest, params))
        if found is None:
            components, describe, _ = self.with_params(params)
            components["code"] = digest
            describe["code"] = code_text(digest, func) + _defaults_line(func, None)
            found = (components, describe, _KeyLines(components))
            if len(self._with_code) >= _TEXT_MEMO_LIMIT:
                self._with_code.clear()
            self._with_code[digest, params] = found
        return found[0].copy(), found[1].copy(), found[2]


def _spec_of(step: Step, cache_version: str) -> _Spec:
    """The components that depend on the step's fields alone, memoized."""
    plain = step.key_fn is None and step.func is None  # a command: part of the spec
    kind = step.kind
    try:
        signature: tuple[Any, ...] | None = _spec_signature(step, kind, plain, cache_version)
        found = _SPEC_MEMO.get(signature)  # type: ignore[arg-type]
    except TypeError:  # an unhashable field value (Step checks most): not memoized
        signature = found = None
    if found is None:
        found = _Spec(*_spec(step, kind, plain, cache_version))
        if signature is not None:
            if len(_SPEC_MEMO) >= _SPEC_MEMO_LIMIT:
                _SPEC_MEMO.clear()
            _SPEC_MEMO[signature] = found
    return found


def _spec(step: Step, kind: str, plain: bool,
          cache_version: str) -> tuple[dict[str, str], dict[str, str]]:
    """The components ``_spec_of`` memoizes, with no params (``{}``)."""
    key = _Builder()
    key.text("format", CACHE_FORMAT)
    key.text("cache_version", _canonical([step.cache_version, cache_version]))
    key.text("kind", kind)
    if plain and isinstance(step.run, str):
        key.text("command", _shell_text(step.run))
    elif plain:
        key.text("command", _canonical(list(step.run or ())))
    key.text("image", step.image or "", step.image or "(none)")
    key.text("env", _canonical(dict(step.env)), _env_shown(step.env))
    key.text("secrets", _canonical(sorted(step.secrets)))  # names only, never values
    key.text("workdir", step.workdir or "", step.workdir or "(default)")
    key.text("params", _NO_PARAMS)
    key.text("services", _canonical(list(step.services)))
    key.text("cache_volumes", _canonical(dict(step.cache_volumes)))
    if step.exclude:  # what a container step sees of its mounts (absent: keys unchanged)
        key.text("exclude", _canonical(list(step.exclude)))
    if step.user:  # who runs a container step
        key.text("user", step.user)
    if step.platform:  # the architecture a container step's image runs as
        key.text("platform", step.platform)
    if not step.errexit:  # shell text that carries on after a failing command
        key.text("errexit", "false")
    return key.components, key.describe


def _shell_text(run: str) -> str:
    """A step's shell text as its key holds it: without the whitespace an editor leaves
    at its end (spaces, blank lines, YAML's ``|+``), which the shell ignores, and with one
    newline at its end where it had one: the keys of ``run: |`` (one newline) and of a
    one-line ``run:`` (none) are those their entries were saved under, so rewriting the
    one as the other runs the step again (plan and explain say it is whitespace alone).
    The end is kept as written where it means something: after a backslash (``\\`` and
    a newline continue the line, a final one is a backslash) and, in text with a
    here-document, all but its newlines (its last line ``EOF  `` is no ``EOF``)."""
    stripped = run.rstrip()
    if stripped.endswith("\\"):
        return run
    text = run.rstrip("\n") if "<<" in stripped else stripped
    return f"{text}\n" if run.endswith("\n") else text


def _env_shown(env: Mapping[str, str]) -> str | None:
    """A step's env as its key describes it, a secret written into it (a password's
    value, a URL's password) as ``<not shown>``: the description is kept with the entry,
    and pushed to a store; None (as it is) when it holds none."""
    written = written_secrets(env)
    if not written:
        return None
    shown = {name: NOT_SHOWN if name in written else value for name, value in env.items()}
    for name, value in env.items():
        password = written.get(f"{name}:password")
        if password is not None:
            shown[name] = value.replace(f":{password}@", ":***@")
    return _canonical(shown)


def _code_and_variables(step: Step, instead: Mapping[str, Any] | None
                        ) -> tuple[str, Mapping[str, Any]]:
    """The code digest of a Python step and the globals its code reads (by their value
    in ``instead``, if there; one it reads that is not defined now, too)."""
    digest, variables = code_with_values(step.func, fresh=True,  # type: ignore[arg-type]
                                         assumed=instead)
    if instead:
        variables = {name: instead.get(name, value) for name, value in variables.items()}
    return digest, variables


def _add_code(components: dict[str, str], describe: dict[str, str], step: Step,
              code: tuple[str, Mapping[str, Any]],
              mask: Callable[[str], str] | None = None) -> None:
    """The ``code`` component and a ``var:<name>`` one per global the code reads."""
    digest, variables = code
    components["code"] = digest
    describe["code"] = code_text(digest, step.func) + _defaults_line(step.func, mask)
    if variables:
        home = describe[GLOBALS_OF] = globals_home(step.func)
        _add_variables(_Builder(components, describe), step, variables, mask, home)


def _defaults_line(func: Any, mask: Callable[[str], str] | None) -> str:
    """The values of the function's defaults, as a last line of its code's description:
    the code digest counts them, and ``def f(x=fmt.K)`` reads the same after ``K``
    changed (explain then had only "code changed" to say). Each shown as a variable is
    (masked, short; one named as a secret by its type alone); text with no ``mask`` to
    hide a secret it may be (a step's code memoized for every run) by its type alone."""
    while hasattr(func, "func"):  # (a partial's)
        func = func.func
    func = getattr(func, "__func__", func)  # (a method's)
    code = getattr(func, "__code__", None)
    if code is None:
        return ""
    given = dict(zip(code.co_varnames[code.co_argcount - len(func.__defaults__ or ()):
                                       code.co_argcount], func.__defaults__ or (),
                     strict=True))
    given.update(func.__kwdefaults__ or {})
    if not given:
        return ""
    return "\n\n# defaults: " + ", ".join(
        f"{name}={_default_shown(name, value, mask)}" for name, value in given.items())


def _default_shown(name: str, value: Any, mask: Callable[[str], str] | None) -> str:
    if mask is None and isinstance(value, (str, bytes)):
        return _sized(value)
    return shown(name, value, mask)


# The description (not a component: no key depends on it) naming whose globals a key's
# ``var:<name>`` components are (those of a name without a dot): the file of the
# step's module (``steps.py``), or NOTEBOOK for a namespace with no file (a kernel's).
GLOBALS_OF = "globals_of"
NOTEBOOK = "__main__"


def globals_home(func: Any) -> str:
    """Whose globals ``func`` reads: its module's file name, or :data:`NOTEBOOK`."""
    while hasattr(func, "func"):  # (a partial's)
        func = func.func
    namespace = getattr(func, "__globals__", None) or {}
    file = namespace.get("__file__")
    return posixpath.basename(file.replace(os.sep, "/")) if isinstance(file, str) else NOTEBOOK


def variable_words(name: str, home: str | None, shown: str = "") -> str:
    """How a sentence names global ``name`` (written as ``shown``, else in backquotes)
    read by code of ``home``: another module's (the walk names it ``helpers.FACTOR``) is
    a variable; a notebook's, a notebook variable (also when no home is known: keys made
    before it was written)."""
    shown = shown or f"`{name}`"
    if "." in name:
        return f"variable {shown}"
    if home and home != NOTEBOOK and name.isidentifier() and name != "self":  # (a
        return f"global {shown} of {home}"  # method's object, a partial's argument: no global)
    return f"notebook variable {shown}"


# Digests of the short texts most steps share (an empty env, no image, the format...):
# a cold re-run of many steps would otherwise hash the same ten texts for each.
_TEXT_MEMO: dict[str, str] = {}
_TEXT_MEMO_LIMIT, _TEXT_MEMO_LONGEST = 4096, 1024


# The algorithm the memos above were filled with: another one empties them.
_MEMO_ALGORITHM = [get_hash_algorithm()]


def _forget_digests() -> None:
    _SPEC_MEMO.clear()
    _TEXT_MEMO.clear()
    _MEMO_ALGORITHM[0] = get_hash_algorithm()


def _text_digest(text: str) -> str:
    found = _TEXT_MEMO.get(text)
    if found is None:
        found = text_digest(text)
        if len(text) <= _TEXT_MEMO_LONGEST:
            if len(_TEXT_MEMO) >= _TEXT_MEMO_LIMIT:
                _TEXT_MEMO.clear()
            _TEXT_MEMO[text] = found
    return found


# The normalized code shown for a ``code`` digest (the digest names that text exactly).
_CODE_TEXTS: dict[str, str] = {}


def code_text(digest: str, func: Any) -> str:
    """The code description of ``func``, whose code digest is ``digest``: its sources,
    without the ``const <name>`` parts (the values of the immutable globals it reads,
    which may be a credential; their digests are in the key all the same)."""
    found = _CODE_TEXTS.get(digest)
    if found is None:
        parts = code_source_parts(func)
        found = "\n\n".join(text for label, text in parts.items()
                             if not label.startswith("const "))
        if len(_CODE_TEXTS) >= _TEXT_MEMO_LIMIT:
            _CODE_TEXTS.clear()
        _CODE_TEXTS[digest] = found
    return found


def _add_variables(key: _Builder, step: Step, variables: Mapping[str, Any],
                   mask: Callable[[str], str] | None = None, home: str | None = None) -> None:
    """One ``var:<name>`` component per global the code reads, hashed now (mutations count)."""
    for name, value in variables.items():
        if _of_the_shell(value):  # (IPython's exit, quit, get_ipython: by what they are)
            key.digest(f"var:{name}", text_digest(_type_name(value)), _type_name(value))
            continue
        try:
            digest = value_digest(value)
        except FingerprintError as exc:
            why = exc.__cause__ or exc
            reason = (f"{variable_words(name, home, repr(name))} ({_type_name(value)}) cannot be "
                      f"fingerprinted ({why}); {_UNHASHED_FIX}")
            raise UnfingerprintableVariable(
                f"step {step.name!r} is not cached this run: {reason}",
                step=step.name, variable=name, reason=reason,
            ) from None
        key.digest(f"var:{name}", digest, shown(name, value, mask))


def _of_the_shell(value: Any) -> bool:
    """Whether ``value`` is an object IPython or ipykernel put in the notebook's names
    (``exit()``, ``quit``, ``get_ipython``): a step reading it is no step reading data,
    and it cannot be pickled ("notebook variable 'exit' cannot be fingerprinted")."""
    module = getattr(type(value), "__module__", "") or ""
    return module.startswith(("IPython.", "ipykernel."))


# (a step has no ignore=: what its key cannot hash has to leave the globals it reads)
_UNHASHED_FIX = ("make it inside the function, or pass what it is made from as a "
                 "parameter (params=)")


def _type_name(value: Any) -> str:
    """The type's name as users write it: ``pandas.DataFrame`` whether pandas defines
    it in ``pandas`` (3.x) or ``pandas.core.frame`` (2.x), when the top package has it."""
    kind = type(value)
    module, name = kind.__module__, kind.__qualname__
    if module == "builtins":
        return name
    top = module.partition(".")[0]
    if getattr(sys.modules.get(top), name, None) is kind:
        return f"{top}.{name}"
    return f"{module}.{name}"


# What cannot hold text: described without looking for a secret in it.
_NOT_TEXT = (int, float, complex, bool, type(None))


def shown(name: str, value: Any, mask: Callable[[str], str] | None = None) -> str:
    """A short description for explain: the repr of plain data (each item masked by
    ``mask`` before it is cut short), else type and shape. Data that holds the value of
    a variable named as a secret (``{"token": os.environ["API_TOKEN"]}``) is described
    by its type and size: the description goes to the entry's metadata, and to a store."""
    plain = (str, bytes, int, float, bool, type(None), list, tuple, dict, set)
    if isinstance(value, plain) and not named_as_secret(name):
        if mask is None and type(value) in _NOT_TEXT:  # (every key build: kept cheap)
            return _NUMBER_REPR.repr(value)
        try:
            return _MaskedRepr(mask, _ENVIRON_SECRETS).repr(value)
        except _HoldsSecret:
            return _sized(value)
    shape = getattr(value, "shape", None)
    return f"<{_type_name(value)}" + (f" shape {tuple(shape)!r}>" if shape is not None else ">")


def _sized(value: Any) -> str:
    """``<dict of 2>``: a value's type, and its number of items when it is a container
    (text: its type alone, as its length would hint at a secret's)."""
    if isinstance(value, (str, bytes)):
        return f"<{_type_name(value)}>"
    return f"<{_type_name(value)} of {len(value)}>"


def _pieces(secrets: set[str]) -> frozenset[str]:
    """Every ``MIN_LINE``-character piece of each secret, as written and in a repr (of
    text, of bytes: quotes and backslashes escaped): a text holding part of a secret (a
    head or tail that ``...`` cut) holds one of them, unless that part is shorter."""
    forms = {form for secret in secrets for form in (
        secret, repr(secret)[1:-1], repr(secret.encode(errors="backslashreplace"))[2:-1])}
    return frozenset(form[at:at + MIN_LINE]
                     for form in forms for at in range(len(form) - MIN_LINE + 1))


class _EnvironSecrets:
    """The pieces (:func:`_pieces`) of the values of the environment's variables named
    as secrets (``API_TOKEN``: ``named`` says which), as ``headless`` finds them: none
    under ``MIN_LINE`` characters, nor one naming an existing path
    (``GOOGLE_APPLICATION_CREDENTIALS``: a path, not the key). Every key build asks: the
    names are listed again only when the environment's size changes or one of them is
    removed, their values read each time."""

    def __init__(self, named: Callable[[str], Any] = named_as_secret) -> None:
        self._named = named
        # (each a tuple replaced whole: threads building keys read it consistent)
        self._listed: tuple[tuple[int, int], tuple[str, ...]] = ((0, -1), ())
        self._read: tuple[tuple[str | None, ...] | None, frozenset[str]] = (None, frozenset())

    def __call__(self) -> frozenset[str]:
        environ = os.environ
        size, (listed_size, names) = (id(environ), len(environ)), self._listed
        values = tuple(map(environ.get, names))
        if size != listed_size or None in values:  # (one gone: another in its place?)
            names = tuple(name for name in environ if self._named(name))
            self._listed = (size, names)
            values = tuple(map(environ.get, names))
        if values != self._read[0]:
            self._read = (values, _pieces(_secret_values(values)))
        return self._read[1]


def _secret_values(values: tuple[str | None, ...]) -> set[str]:
    texts = {value.strip() for value in values if value is not None}
    return {text for text in texts if len(text) >= MIN_LINE and not os.path.exists(text)}


_ENVIRON_SECRETS = _EnvironSecrets()
_SURE_ENVIRON_SECRETS = _EnvironSecrets(named_surely_secret)


class _HoldsSecret(Exception):
    """An item of a described value holds a secret's value that no mask hides."""


_URL_WINDOW = 4096  # of a long text's head and tail, looked at for a URL's password


def _url_password_near_ends(text: str) -> bool:
    """Whether ``text`` holds a URL with its password where a short description shows
    it: anywhere in a short text, near either end of a long one (reprlib shows its
    head and tail; a 60 MB text is not searched whole)."""
    if len(text) <= 2 * _URL_WINDOW:
        return url_password(text) is not None
    return bool(url_password(text[:_URL_WINDOW]) or url_password(text[-_URL_WINDOW:]))


class _MaskedRepr(reprlib.Repr):
    """reprlib's short repr, with each item that is not a container and holds a secret
    masked whole before it is cut to its type's length: a secret cut in the middle would
    show its head and tail. An item without one is shown as reprlib shows it. An item
    whose shown part holds a piece of ``secrets()`` (looked up on the first item)
    raises :class:`_HoldsSecret`: reprlib's walk is the one over the items it shows."""

    _CONTAINERS = frozenset({"tuple", "list", "array", "set", "frozenset", "deque", "dict"})

    def __init__(self, mask: Callable[[str], str] | None,
                 secrets: Callable[[], frozenset[str]]) -> None:
        super().__init__()
        self._mask = mask
        self._secrets = secrets
        self._found: frozenset[str] | None = None

    def repr1(self, x: Any, level: int) -> str:
        if type(x).__name__ in self._CONTAINERS:
            return super().repr1(x, level)  # its items come back here
        if type(x) is str and _url_password_near_ends(x):  # (a URL's password: a secret)
            raise _HoldsSecret
        if self._mask is None and type(x) is str:  # (no repr of all of it)
            self._refuse_secret_in(x, self.maxstring)  # (reprlib shows its head and tail)
            return super().repr1(x, level)
        try:
            whole = builtins.repr(x)
        except Exception:  # (a repr that fails, an int too long to print)
            return f"<{type(x).__name__} instance>"
        masked = whole if self._mask is None else self._mask(whole)
        if masked == whole:
            if not isinstance(x, _NOT_TEXT):
                self._refuse_secret_in(x if type(x) is str else whole, self._limit(x))
            return super().repr1(x, level)
        self._refuse_secret_in(masked, self._limit(x))
        return _cut(masked, self._limit(x))

    def _refuse_secret_in(self, text: str, limit: int) -> None:
        """:class:`_HoldsSecret` if ``text`` cut to ``limit`` shows any of a secret."""
        if len(text) < MIN_LINE:  # (no piece of a secret in it)
            return
        if self._found is None:
            self._found = self._secrets()
        if self._found and any(_holds_piece(part, self._found)
                               for part in _shown_parts(text, limit)):
            raise _HoldsSecret

    def _limit(self, x: Any) -> int:
        """reprlib's length for ``x``'s type (``maxlong`` for an int, ...)."""
        if isinstance(x, str):
            return self.maxstring
        return self.maxlong if isinstance(x, int) and not isinstance(x, bool) else self.maxother


_NUMBER_REPR = _MaskedRepr(None, frozenset)  # (no text in a number: never asks)


def _shown_parts(text: str, limit: int) -> tuple[str, ...]:
    """The head and tail of ``text`` that :func:`_cut` to ``limit`` shows, each with the
    ``MIN_LINE - 1`` characters hidden next to it: a secret of which it shows a single
    character has a whole piece in them."""
    if len(text) <= limit:
        return (text,)
    head = max(0, (limit - 3) // 2)
    tail = max(0, limit - 3 - head)
    return text[:head + MIN_LINE - 1], text[len(text) - tail - MIN_LINE + 1:]


def _holds_piece(text: str, pieces: frozenset[str]) -> bool:
    return any(text[at:at + MIN_LINE] in pieces for at in range(len(text) - MIN_LINE + 1))


def _cut(text: str, limit: int) -> str:
    """``text`` shortened to ``limit`` characters around ``...``, as reprlib does."""
    if len(text) <= limit:
        return text
    head = max(0, (limit - 3) // 2)
    tail = max(0, limit - 3 - head)
    return text[:head] + "..." + text[len(text) - tail:]


def _mount_digest(step: Step, base_dir: Path, host: str, target: str,
                  cache_folder: Path | None = None) -> tuple[str, str | None]:
    """A mount's component digest, and a folder's :func:`_files_listing` (None: a file)."""
    path = mount_path(base_dir, host)
    files: dict[str, str] | None = None
    try:  # (a folder as a container's upload of it holds it)
        skip = None
        if path.is_dir():
            skip, files = excluder(mount_excludes(step, path, cache_folder)), {}
        content = path_digest(path, skip=skip, modes=True,  # (a script's exec bit too)
                              file_digests=files)
    except FileNotFoundError:
        raise FingerprintError(
            f"step {step.name!r}: mount {host!r} does not exist (looked for {str(path)!r})"
        ) from None
    except OSError as exc:
        raise CacheError(f"step {step.name!r}: mount {host!r} cannot be read: {exc}") from exc
    return text_digest(f"{target}\n{content}"), None if files is None else _files_listing(files)


def _files_listing(files: Mapping[str, str]) -> str:
    """What explain needs to name the files of a mounted folder that changed, kept small:
    the JSON of each file's name -> the first digits of its digest, or past
    :data:`LISTED_FILES` files (or :data:`LISTING_CHARS` characters) their count alone."""
    if len(files) <= LISTED_FILES:
        listing = json.dumps({name: digest[:SHORT_DIGEST] for name, digest in files.items()},
                             sort_keys=True, separators=(",", ":"))  # (ASCII: any name)
        if len(listing) <= LISTING_CHARS:
            return listing
    return str(len(files))
