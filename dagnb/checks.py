"""Checks: the one set of validators every layer shares, and one "did you mean".

A validator takes a value and returns it parsed (``"30s"`` -> 30.0, ``"yes"`` -> True,
``"8"`` -> 8 where text is allowed) or raises :class:`Invalid`, a ``ValueError`` whose
``expected`` says what would pass. Only the caller knows what the value *is* (a config
key, a retry setting, a step field), so the caller turns :class:`Invalid` into its own
error class and sentence, most often with :func:`checked`::

    checked(count, "-1", "dagnb.yaml: max_retries", ConfigError, text=True)
    # ConfigError: dagnb.yaml: max_retries = '-1' is not valid; expected a whole number >= 0

==================  =====================================================================
validator           passes
==================  =====================================================================
``text``, ``path``  a non-empty string (stripped); a path may be ``os.PathLike``
``location``        a path, or a store URL (``s3://bucket/prefix``) that holds no credentials
``store_options``   a store library's options whose URLs hold no credentials
``name``            an identifier-like step name (no keyword, no space or control character)
``variable_name``   an environment variable name
``one_of``          one of ``choices``, of the same type (``1`` is not ``True``)
``mapping_of_str``  a mapping of non-empty strings to strings or numbers
``flag``            a bool (``text=True``: also yes/no, on/off, true/false, 1/0)
``count``           a whole number >= ``least`` (``text=True``: also ``"8"``)
``number``          a finite number >= ``least`` (``text=True``: also ``"0.5"``)
``duration``        a setting's duration: seconds, ``"30m"``, or none for no limit
==================  =====================================================================

:func:`parse_duration` is the duration of a Python argument (a step's ``timeout``), with
its own messages; :func:`did_you_mean` and :func:`known_keys` suggest the closest key,
:func:`choices_named` also names the choices (or the closest few of many).
Validators never accept a bool where a number is asked for (``True`` is an ``int`` in
Python, never a count in a config file), and accept text only when asked to
(``text=True``: values read from files and environment variables).

This module sits at the bottom of the layers, above :mod:`dagnb.errors` (the only part of
dagnb it imports).
"""

from __future__ import annotations

import contextlib
import contextvars
import difflib
import keyword
import math
import os
import re
import shlex
import sys
import urllib.parse
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any, NamedTuple, TypeVar

from dagnb.errors import InvalidStepError

__all__ = [
    "AGE_FORMS",
    "DURATION_FORMS",
    "Invalid",
    "checked",
    "choices_named",
    "count",
    "did_you_mean",
    "duration",
    "flag",
    "is_url",
    "known_keys",
    "location",
    "mapping_of_str",
    "missing_file",
    "name",
    "number",
    "one_of",
    "parse_duration",
    "path",
    "redact_url",
    "short_repr",
    "store_options",
    "text",
    "variable_name",
]

T = TypeVar("T")

_TRUE = frozenset({"1", "true", "yes", "on"})
_FALSE = frozenset({"0", "false", "no", "off"})
_NONE = frozenset({"", "none", "null"})
# fullmatch, not "^...$": "$" also matches before a trailing newline
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_\-]{0,99}")
_VARIABLE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# a duration's parts, each a number and its unit, as people write them: ``10m``,
# ``1h30m`` (Go's, Dagger's), ``10 minutes``, ``2 hours``; a bare number alone is seconds
_UNIT_WORDS = {
    "ms": ("ms", "msec", "msecs", "millisecond", "milliseconds"),
    "s": ("s", "sec", "secs", "second", "seconds"),
    "m": ("m", "min", "mins", "minute", "minutes"),
    "h": ("h", "hr", "hrs", "hour", "hours"),
    "d": ("d", "day", "days"),
    "w": ("w", "wk", "wks", "week", "weeks"),  # (a cache's ttl, an age to clear)
}
_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_UNIT_OF = {word: unit for unit, words in _UNIT_WORDS.items() for word in words}
_NUMBER = r"\d+(?:\.\d+)?"
_UNIT = "|".join(sorted(_UNIT_OF, key=len, reverse=True))  # (longest first: ms before m)
_DURATION_PART = re.compile(rf"({_NUMBER})\s*({_UNIT})(?![a-z])")
_ONE_PART = rf"{_NUMBER}\s*(?:{_UNIT})(?![a-z])"
_DURATION = re.compile(rf"\s*{_ONE_PART}(?:\s*,?\s*(?:and\s+)?{_ONE_PART})*\s*")
_BARE_SECONDS = re.compile(rf"\s*({_NUMBER})\s*")


class Redacted(str):
    """The value an :class:`Invalid` reports for one that holds a secret: never shown."""


class Masked(str):
    """The ``repr`` of a value with its secret parts shown as ``***``: what an
    :class:`Invalid` reports (and :func:`checked` shows) instead of the value given."""

    def __repr__(self) -> str:
        return str(self)


class Invalid(ValueError):
    """A value that fails a check; ``expected`` says what would pass.

    Its own message, ``"<value!r> is not valid; expected <expected>"``, is for a caller
    that does not wrap it; callers that know the value's name use :func:`checked`.
    """

    def __init__(self, value: Any, expected: str) -> None:
        super().__init__(f"{value!r} is not valid; expected {expected}")
        self.value = value
        self.expected = expected


def checked(
    check: Callable[..., T],
    value: Any,
    what: str,
    error: Callable[[str], Exception] = ValueError,
    *,
    sep: str = " = ",
    show: bool = True,
    **options: Any,
) -> T:
    """``check(value, **options)``, with a failure raised as ``error`` naming ``what``.

    Parameters
    ----------
    check
        A validator of this module (or any callable raising :class:`Invalid`).
    value
        The value to check.
    what
        What the value is, as the message starts: ``"dagnb.yaml: max_retries"``.
    error
        The caller's error class (``ConfigError``, ``InvalidStepError``, ...).
    sep
        Between ``what`` and the value: ``" = "`` for a file key, ``"="`` for a keyword.
    show
        False leaves the value out of the message (a misplaced secret).
    **options
        Passed on to ``check`` (``least=1``, ``text=True``, ...).

    Raises
    ------
    error
        ``"<what><sep><value!r> is not valid; expected <expected>"``.
    """
    try:
        return check(value, **options)
    except Invalid as bad:
        raise error(f"{what}{_shown(value, bad, sep, show)} is not valid; "
                    f"expected {bad.expected}") from None


def _shown(value: Any, bad: Invalid, sep: str, show: bool) -> str:
    """The value as a message shows it: masked by its check, or left out."""
    if not show or isinstance(bad.value, Redacted):
        return ""
    masked = isinstance(bad.value, Masked)
    return f"{sep}{bad.value!r}" if masked else f"{sep}{_redacted_repr(value)}"


def _redacted_repr(value: Any) -> str:
    """``repr(value)``, with a URL's ``user:password@`` in text redacted."""
    return repr(redact_url(value)) if isinstance(value, str) else repr(value)


def did_you_mean(
    word: object, choices: Iterable[str], *, otherwise: str = "", cutoff: float = 0.6
) -> str:
    """``"did you mean 'x'?"`` for the choice closest to ``word``, else ``otherwise``.

    The one place a mistyped key, name or option gets its suggestion (``difflib``);
    callers put it after their own sentence: ``f"unknown key {key!r}; {hint}"``.
    """
    close = closest(word, choices, cutoff=cutoff)
    return f"did you mean {close!r}?" if close is not None else otherwise


def missing_file(what: str, path: str | os.PathLike[str]) -> str:
    """``workflow file 'wf.yaml' does not exist; did you mean 'wf.yml'?``: the file of
    its folder and kind (YAML, notebook) whose name but for its suffix is closest (``-``
    for ``_``, a letter left out), where one is close; else ``check the path``."""
    text = os.fspath(path)
    folder, name = os.path.split(text)
    stem, suffix = os.path.splitext(name)
    kind = next((kind for kind in _FILE_KINDS if suffix.lower() in kind), None)
    by_stem: dict[str, str] = {}
    try:
        with os.scandir(folder or ".") as entries:  # (a folder of 10,000 files: 2,000 read)
            for _, entry in zip(range(_FILES_READ), entries, strict=False):
                other_stem, other_suffix = os.path.splitext(entry.name)
                if (kind is None or other_suffix.lower() in kind) and entry.is_file():
                    by_stem.setdefault(other_stem, entry.name)
    except OSError:  # (the folder is missing too)
        pass
    close = closest(stem, by_stem)
    fix = ("check the path" if close is None
           else f"did you mean {os.path.join(folder, by_stem[close])!r}?")
    return f"{what} {text!r} does not exist; {fix}"


_FILE_KINDS = ((".yml", ".yaml"), (".ipynb", ".py"))  # what a missing file may be taken for
_FILES_READ = 2_000  # of a folder, looked through for a name close to a missing file's


def choices_named(word: object, choices: Iterable[str], *, noun: str = "steps",
                  most: int = 20, few: int = 5) -> str:
    """``"did you mean 'x'? (its steps: x, y)"``, or ``"its steps are x, y"`` when none is
    close: every choice when there are at most ``most``, else the ``few`` closest to
    ``word`` and how many there are, so that a name nothing resembles still finds its
    fix in the message."""
    known = list(choices)
    if not known:
        return f"it has no {noun}"
    named = known if len(known) <= most else difflib.get_close_matches(
        str(word), known, n=few, cutoff=0)
    listed = ", ".join(named)
    which = f"its {noun}" if len(named) == len(known) else f"the closest of its {len(known)} {noun}"
    close = closest(word, known)
    if close is not None:
        return f"did you mean {close!r}? ({which}: {listed})"
    return f"{which} are {listed}"


def listed(names: Sequence[str], most: int = 20) -> str:
    """``"a, b, c"``: every name when there are at most ``most``, else the first
    ``most`` and how many more."""
    if len(names) <= most:
        return ", ".join(names)
    return f"{', '.join(names[:most])} and {len(names) - most} more"


def close_sibling(given: str, folder: str | os.PathLike[str], suffix: str = "") -> str | None:
    """``given`` (a path as the user wrote it) with its last part the closest name in
    ``folder``, where it would be (``data`` for ``dat``, ``steps.py`` for ``step.py``,
    files ending in ``suffix`` when one is given); None when none is close or the
    folder cannot be listed."""
    try:
        names = [entry.name for entry in os.scandir(folder) if not suffix
                 or (entry.name.endswith(suffix) and entry.is_file())]
    except OSError:  # (its folder is missing too)
        return None
    parent, slash, name = given.rstrip("/").rpartition("/")  # (``dat/``: ``dat``)
    close = closest(name, names)
    return None if close is None else f"{parent}{slash}{close}"


def value_split_at(parser: Any, words: Sequence[str], at: int) -> str | None:
    """``words[at]`` written back into the value before it, quoted, when the word two
    before is an option of ``parser`` that takes one value: ``--timeout 10 minutes``
    reads as ``--timeout '10 minutes'``, a value a space split (the terminal's and the
    notebook's parsers refuse ``minutes`` as no step, or no argument). None otherwise."""
    option = words[at - 2] if at >= 2 else None
    if option is None or not any(action.nargs is None and option in action.option_strings
                                 for action in parser._actions):
        return None
    return shlex.join([option, f"{words[at - 1]} {words[at]}"])


def closest(word: object, choices: Iterable[str], *, cutoff: float = 0.6) -> str | None:
    """The choice closest to ``word``: the one it is but for case and ``-`` for ``_``
    (``N`` for ``n``, ``BATCH-SIZE`` for ``batch_size``, which difflib finds too unlike),
    else ``difflib``'s; None when none is close."""
    known = list(choices)
    folded = _folded(str(word))
    alike = [choice for choice in dict.fromkeys(known) if _folded(choice) == folded]
    if len(alike) == 1:
        return alike[0]
    close = difflib.get_close_matches(str(word), known, n=1, cutoff=cutoff)
    return close[0] if close else None


def _folded(name: str) -> str:
    return name.casefold().replace("-", "_")


def known_keys(
    keys: Iterable[Any],
    known: Sequence[str],
    where: str,
    error: Callable[[str], Exception] = ValueError,
    *,
    noun: str = "key",
    cutoff: float = 0.6,
    see: str = "",
) -> None:
    """Raise ``error`` for the first of ``keys`` (a mapping's, say) that is not ``known``.

    The message is ``"<where>: unknown <noun> 'x'; did you mean 'y'?"``, listing the
    known keys instead when none is close, then ``see`` (where they are documented).
    """
    for key in keys:
        if key not in known:
            otherwise = f"known {noun}s: {', '.join(known)}"
            hint = did_you_mean(key, known, otherwise=otherwise, cutoff=cutoff)
            raise error(f"{where}: unknown {noun} {key!r}; {hint}{see}")


# -- text -----------------------------------------------------------------------------
def text(value: Any) -> str:
    """A non-empty string, stripped of surrounding white space."""
    if isinstance(value, str) and value.strip():
        return value.strip()
    raise Invalid(value, "a non-empty string")


def path(value: Any) -> str:
    """A non-empty path as text (``os.PathLike`` objects are accepted)."""
    return text(os.fspath(value) if isinstance(value, os.PathLike) else value)


_URL = re.compile(r"[A-Za-z][A-Za-z0-9+.-]+://")


def is_url(value: Any) -> bool:
    """Whether ``value`` is a store URL (``s3://...``, ``file://...``), not a path."""
    return isinstance(value, str) and "://" in value and _URL.match(value) is not None


_URL_IN_TEXT = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://(\S+)")  # to the next space
# Azure's schemes name a container before the @ (abfs://container@account.dfs...)
_CONTAINER_AT = frozenset({"abfs", "abfss", "az", "wasb", "wasbs"})


def _credentials_end(rest: str, scheme: str = "") -> int:
    """Where the ``user[:password]`` of a URL ends (the ``@``'s index in ``rest``, what
    follows ``scheme://``), or -1 for none. The authority ends at the first ``/``, ``?``
    or ``#``, and its last ``@`` ends the credentials (``user:p@ss@bucket``); with no
    ``@`` there, ``user:pass/word@`` is a password holding an unencoded ``/`` (AWS secret
    keys hold some), unless what follows the ``:`` is a port (``host:9000/a@b``)."""
    head = re.split(r"[/?#]", rest, maxsplit=1)[0]
    if "@" in head:
        at = head.rindex("@")
        return -1 if scheme.lower() in _CONTAINER_AT and ":" not in head[:at] else at
    user, colon, after = head.partition(":")
    if colon and not after.isdigit() and "@" in rest and user:
        return rest.index("@")
    return -1


def _redacted(match: re.Match[str]) -> str:
    scheme, rest = match.group(1), match.group(2)
    end = _credentials_end(rest, scheme)
    return match.group(0) if end < 0 else f"{scheme}://***{rest[end:]}"


def redact_url(text: str) -> str:
    """``text`` with any URL's ``user:password@`` shown as ``***@``: for messages, which
    never hold a secret (``s3://KEY:SECRET@bucket/p`` -> ``s3://***@bucket/p``)."""
    return _URL_IN_TEXT.sub(_redacted, text) if "://" in text else text


def redacted(value: str, *, bare: bool = False) -> str:
    """``value``, a URL, with its ``user[:password]`` shown as ``***``
    (``s3://KEY:SECRET@bucket`` -> ``s3://***@bucket``); with ``bare``, also of an address
    with no scheme (``user:pass@host:8786``). Unlike :func:`redact_url`, the whole value
    is the URL, so a password with a space in it is redacted too."""
    scheme, sep, rest = value.partition("://")
    if bare and not sep:
        scheme, rest = "", value
    elif not is_url(value):
        return value
    end = _credentials_end(rest, scheme)
    return value if end < 0 else f"{scheme}{sep}***{rest[end:]}"


def _without_credentials(value: str, fix: str, *, bare: bool = False) -> str:
    """``value``, refused (and reported redacted) if a user or password is in it."""
    shown = redacted(value, bare=bare)
    if shown != value:
        raise Invalid(Masked(repr(shown)), f"a URL without user or password; {fix}")
    return value


def location(value: Any) -> str:
    """A path, or a store URL without credentials in it (``s3://KEY:SECRET@bucket``);
    the one refused is reported with them redacted. A URL's scheme is read in lower case
    (``S3://`` is ``s3://``: schemes ignore case, the store libraries' names do not); a
    path that starts as a known one with a slash short (``s3:/bucket``) is refused:
    it made a local folder named ``s3:``, and shared nothing."""
    given = path(value)
    scheme, sep, rest = given.partition("://")
    if sep and is_url(given) and not scheme.islower():
        given = f"{scheme.lower()}://{rest}"
    elif not sep:
        _refuse_one_slash(given)
    given = _without_credentials(
        given, "the store library reads credentials from the environment or a profile"
    )
    if is_url(given):
        _refuse_double_slash(given)
        _refuse_file_url_with_a_host(given)
    return given


def _refuse_file_url_with_a_host(given: str) -> None:
    """Refuse ``file://tmp/store``: its path is ``tmp/store``, relative, so each folder a
    command ran in made a store of its own there, shared by none (a push wrote 185 MB
    under the working folder, exit 0). ``file:///tmp/store`` (three slashes) is the
    folder ``/tmp/store`` (fsspec reads ``file://localhost/tmp`` as ``localhost/tmp``)."""
    scheme, _, rest = given.partition("://")
    if scheme not in _FOLDER_SCHEMES or rest.startswith("/"):
        return
    host, slash, path_part = rest.partition("/")
    meant = path_part if host.lower() == "localhost" and slash else rest
    raise Invalid(Masked(repr(given)), f"a folder's URL with three slashes, "
                  f"{scheme}:///{meant} (with two, {rest!r} is a path relative to the folder "
                  "a command runs in: another store in each)")


_ONE_SLASH = re.compile(r"([A-Za-z][A-Za-z0-9+.-]+):/(?!/)")
# The schemes a store URL most often has, for when fsspec (s3fs' dependency) is missing
# each store URL scheme's family: the library (and its credentials) that serves it
STORE_FAMILIES = {"s3": "s3", "s3a": "s3", "gs": "gs", "gcs": "gs", "az": "az", "abfs": "az",
                  "abfss": "az", "adl": "az", "wasb": "az", "wasbs": "az"}
_KNOWN_SCHEMES = frozenset({"s3", "s3a", "gs", "gcs", "az", "abfs", "abfss", "adl", "file",
                            "local", "memory", "http", "https", "hdfs", "sftp", "ftp"})
_FOLDER_SCHEMES = frozenset({"file", "local"})  # (what follows is an absolute path)


def _refuse_one_slash(given: str) -> None:
    """Refuse ``s3:/bucket/prefix``, a store URL with one slash, that would be a folder."""
    found = _ONE_SLASH.match(given)
    if found is None or found.group(1).lower() not in _store_schemes():
        return
    scheme = found.group(1).lower()
    rest = redact_url(f"x://{given[found.end():]}")[4:]  # (a user:password@ as ***@)
    fixed = f"{scheme}:///{rest}" if scheme in _FOLDER_SCHEMES else f"{scheme}://{rest}"
    shown = f"{given[:found.end()]}{rest}"
    raise Invalid(Masked(repr(shown)), f"a store URL with two slashes, {fixed} (or "
                  f"./{shown} for a local folder)")


def _refuse_double_slash(given: str) -> None:
    """Refuse ``s3://team//dagnb``: an object store keeps ``//`` in a key, so it named
    another prefix (``/dagnb``), a store of its own that no teammate on ``s3://team/dagnb``
    shared. (A trailing ``/`` names the same prefix; a folder's ``//`` the same folder.)"""
    scheme, _, rest = given.partition("://")
    inner = rest.strip("/")
    if scheme in _FOLDER_SCHEMES or "//" not in inner:
        return
    fixed = f"{scheme}://{re.sub('/{2,}', '/', inner)}"
    prefix = inner.partition("/")[2]
    raise Invalid(Masked(repr(given)), f"a store URL with one slash between its parts, "
                  f"{fixed} (with '//' the prefix is {prefix!r}: another store)")


def _store_schemes() -> frozenset[str]:
    """The schemes fsspec knows (asked only of a value that looks like ``x:/...``)."""
    try:
        import fsspec
    except ImportError:
        return _KNOWN_SCHEMES
    return _KNOWN_SCHEMES.union(fsspec.available_protocols())


def address(value: Any, *, fix: str) -> str:
    """A server's address or URL (``tls://10.0.0.5:8786``, ``ghcr.io``) without a user or
    password in it, with a scheme or not; the one refused is reported with them redacted
    and ``fix``, where the credentials go instead."""
    return _without_credentials(text(value), fix, bare=True)


# An S3 SSE-C key (s3fs' ``s3_additional_kwargs``, or its HTTP header): the key itself,
# which whoever reads it may decrypt the store with. (SSE-KMS's key id and encryption
# context are not secret: AWS logs the context in clear.)
_ENCRYPTION_KEYS = frozenset({
    "ssecustomerkey", "copysourcessecustomerkey", "x-amz-server-side-encryption-customer-key",
    "x-amz-copy-source-server-side-encryption-customer-key",
})
_ENCRYPTION_FIX = ("an encryption key is a secret, and config show prints every setting; "
                   "give the variable that holds it instead (SSECustomerKey_env: "
                   "MY_SSE_KEY), or encrypt with KMS (ServerSideEncryption: aws:kms, "
                   "SSEKMSKeyId: its ARN), whose key stays in KMS")
KEY_FROM_VARIABLE = "_env"  # an encryption key's option + this: the variable holding it


def key_variables(options: Any) -> dict[str, str]:
    """The variables the store's encryption keys are read from (``SSECustomerKey_env:
    MY_SSE_KEY``, at any depth of ``options``), by the option they give."""
    found: dict[str, str] = {}
    if isinstance(options, Mapping):
        for key, value in options.items():
            option = str(key)
            if isinstance(value, Mapping):
                found.update(key_variables(value))
            elif (option.lower().endswith(KEY_FROM_VARIABLE) and isinstance(value, str)
                  and option[:-len(KEY_FROM_VARIABLE)].lower() in _ENCRYPTION_KEYS):
                found[option[:-len(KEY_FROM_VARIABLE)]] = value
    return found

# Keyword arguments of fsspec stores (s3fs, gcsfs, adlfs: its SAS token or key as
# ``credential``) that carry credentials, and HTTP headers that do (an ``Authorization:
# Bearer`` in ``client_kwargs``), looked for at any depth, in any case.
STORE_CREDENTIALS = frozenset({
    "key", "secret", "token", "password", "access_key", "secret_key", "session_token",
    "aws_access_key_id", "aws_secret_access_key", "aws_session_token", "account_key",
    "sas_token", "client_secret", "connection_string", "credentials", "credential",
    "access_token", "refresh_token", "private_key", "authorization",
    "proxy-authorization", "auth", "api_key", "api-key", "apikey", "x-api-key",
    *_ENCRYPTION_KEYS,
})


def store_options(value: Any, *, fix: str, credentials: bool = False) -> dict[str, Any]:
    """A store library's options (fsspec's ``storage_options``) with no user or password
    in a URL among them (``endpoint_url``, ``proxies``, nested ones too) and every
    ``*_url`` option a URL; a credential option (``key``, ``secret``, ...) is refused too
    unless ``credentials``. ``fix`` says where the credentials go instead. The one
    refused is shown with its secrets as ``***``."""
    if not isinstance(value, Mapping):  # (pairs or JSON text may hold a secret: not shown)
        raise Invalid(Masked(f"<{type(value).__name__}>"),
                      "a mapping of store options (endpoint_url, profile, ...)")
    found = None if credentials else _credential_option_in(value)
    if found is not None:  # its value may be the secret itself: not shown at all
        why = _ENCRYPTION_FIX if found.lower() in _ENCRYPTION_KEYS else fix
        raise Invalid(Redacted("<options with a credential>"), f"no {found!r} option: {why}")
    found = _url_credential_in(value)
    if found is not None:  # (endpoint_url: http://user:pass@minio:9000) shown redacted
        raise Invalid(_masked_options(value),
                      f"no user or password in the {found!r} URL: {fix}")
    _refuse_url_not_a_url(value)
    return dict(value)


def _credential_option_in(options: Mapping[str, Any]) -> str | None:
    for key, value in options.items():
        if str(key).lower() in STORE_CREDENTIALS:
            return str(key)
        if isinstance(value, Mapping) and (found := _credential_option_in(value)) is not None:
            return found
    return None


def _url_credential_in(options: Mapping[str, Any]) -> str | None:
    """The key of the first URL in ``options`` (nested ones too) with credentials."""
    for key, value in options.items():
        if isinstance(value, Mapping):
            if (found := _url_credential_in(value)) is not None:
                return found
        elif _redacted_urls(value, key) != value:
            return str(key)
    return None


def _redacted_urls(value: Any, key: Any = "", hide: frozenset[str] = frozenset()) -> Any:
    """``value``, option ``key``'s, with every URL's ``user:password@`` in it as ``***@``
    (a ``*_url`` option's even with no scheme: botocore's error repeats it whole), and
    the value of an option named in ``hide`` as ``***``."""
    name = str(key).lower()
    if name in hide:
        return "***"
    if isinstance(value, str):
        return redacted(value, bare=name.endswith("_url"))
    if isinstance(value, Mapping):
        return {k: _redacted_urls(item, k, hide) for k, item in value.items()}
    if isinstance(value, (list, tuple)):  # (of its own type: a tuple is no changed list)
        items = [_redacted_urls(item, key, hide) for item in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def _masked_options(options: Mapping[str, Any]) -> Masked:
    """``options`` as a message shows them: URLs redacted, credential options' values
    (which code may pass) as ``***``."""
    return Masked(repr(_redacted_urls(options, hide=STORE_CREDENTIALS)))


def _refuse_url_not_a_url(options: Mapping[str, Any]) -> None:
    """An endpoint given as a port alone (``endpoint_url: 5077``), with no scheme
    (``minio:9000``), another scheme (``htp://``) or no host reached the store library,
    whose error named no option (or was taken for an outage, the cache going on local
    alone): refused here, naming it. None is the library's default."""
    for key, value in options.items():
        if isinstance(value, Mapping):
            _refuse_url_not_a_url(value)
        elif str(key).endswith("_url") and value is not None and not is_url(value):
            form = "with its scheme" if isinstance(value, str) else "in quotes"
            fixed = "http://HOST:PORT" if form == "in quotes" else _endpoint_fix(value)[1]
            raise Invalid(_masked_options(options),
                          f"{key} as a URL {form}, not {value!r}: {key}: \"{fixed}\"")
        elif str(key).lower() == "endpoint_url" and isinstance(value, str):
            fault = endpoint_fault(value)
            if fault is not None:
                raise Invalid(_masked_options(options),
                              f"{key} as {fault[0]}, not {value!r}: {key}: \"{fault[1]}\"")


_ENDPOINT_SCHEMES = ("http", "https")
_SCHEME_AND_SLASHES = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*):/+")


def endpoint_fault(value: str) -> tuple[str, str] | None:
    """What an S3 endpoint ``value`` lacks and the URL it likely meant (``('an http://
    or https:// URL', 'http://127.0.0.1:5055')`` for ``htp://127.0.0.1:5055``), or None
    for an http(s) URL with a host. botocore took any other for an unreachable store."""
    scheme = value.partition("://")[0].lower()
    try:
        host = urllib.parse.urlsplit(value).hostname
    except ValueError:  # (an IPv6 bracket left open: botocore's own error says so)
        return None
    if "://" in value and scheme in _ENDPOINT_SCHEMES and host:
        return None
    return _endpoint_fix(value)


def _endpoint_fix(value: str) -> tuple[str, str]:
    """What ``value`` lacks as an endpoint and the URL it was likely meant as."""
    found = _SCHEME_AND_SLASHES.match(value)
    rest = value[found.end():] if found else value
    fixed_host = f"HOST{rest or ':PORT'}" if rest[:1] in ("", ":", "/") else rest
    if found is None:
        return "a URL with its scheme", f"http://{fixed_host}"
    scheme = found.group(1).lower()
    closest = difflib.get_close_matches(scheme, _ENDPOINT_SCHEMES, n=1, cutoff=0)[0]
    if scheme in _ENDPOINT_SCHEMES and value[found.start(1) + len(scheme):].startswith("://"):
        return "a URL with a host", f"{scheme}://{fixed_host}"
    return "an http:// or https:// URL", f"{closest}://{fixed_host}"


# botocore's endpoint variables, the first one set winning (unless the options name one)
ENDPOINT_VARIABLES = ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL")


def endpoint_variable(options: Mapping[str, Any]) -> str | None:
    """The endpoint variable botocore reads for an S3 store of these ``options``
    (``AWS_ENDPOINT_URL_S3`` first); None when unset or not read (the ``options`` name an
    endpoint, or ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` is true)."""
    if _endpoint_named_or_ignored(options):
        return None
    return next((name for name in ENDPOINT_VARIABLES if os.environ.get(name)), None)


def _endpoint_named_or_ignored(options: Mapping[str, Any]) -> bool:
    """Whether botocore reads no configured endpoint for these ``options``: they name
    one, or ``AWS_IGNORE_CONFIGURED_ENDPOINT_URLS`` is true."""
    client = options.get("client_kwargs")
    named = options.get("endpoint_url") or (isinstance(client, Mapping)
                                            and client.get("endpoint_url"))
    ignored = os.environ.get("AWS_IGNORE_CONFIGURED_ENDPOINT_URLS", "").lower() == "true"
    return bool(named or ignored)


def endpoint_variable_fault(options: Mapping[str, Any]) -> str | None:
    """Why the endpoint variable botocore reads for an S3 store (``AWS_ENDPOINT_URL=
    127.0.0.1:5055``) is refused, in one line naming it (redacted) and the fix; None
    when it is an http(s) URL with a host, unset, or not read (:func:`endpoint_variable`)."""
    variable = endpoint_variable(options)
    if variable is None:
        return None
    value = os.environ[variable]
    fault = endpoint_fault(value)
    if fault is None:
        return None
    shown, fixed = redacted(value, bare=True), redacted(fault[1], bare=True)
    return (f"environment variable {variable}={shown!r} is not valid; expected {fault[0]}: "
            f"export {variable}={fixed} (or unset it)")


def endpoint_config_fault(options: Mapping[str, Any]) -> str | None:
    """Why the endpoint botocore (>= 1.31) reads from its config file for an S3 store of
    these ``options`` (``endpoint_url = 127.0.0.1:9000`` under the profile, or ``s3 =
    endpoint_url`` in its ``services`` section) is refused, in one line naming the file,
    the section and the fix; None when it is an http(s) URL with a host, not set, or not
    read (the options or an endpoint variable name one, or it is ignored). botocore took
    one with no scheme for an unreachable store, as it does the variable's."""
    if endpoint_variable(options) is not None or _endpoint_named_or_ignored(options):
        return None
    found = _configured_endpoint(options.get("profile"))
    if found is None or (fault := endpoint_fault(found[0])) is None:
        return None
    (value, where), fixed = found, redacted(fault[1], bare=True)
    return (f"endpoint_url = {redacted(value, bare=True)!r} in {where} is not valid; "
            f"expected {fault[0]}: write endpoint_url = {fixed} there (or remove it)")


def _configured_endpoint(profile: str | None) -> tuple[str, str] | None:
    """The endpoint botocore's config file (``AWS_CONFIG_FILE``, ``~/.aws/config``) sets
    for S3 under ``profile`` (None: ``AWS_PROFILE``'s, or the default) and where (the
    file and section), in botocore's order: its ``services`` section's ``s3`` one first
    (an ``s3 = endpoint_url`` in the profile itself botocore does not read). None when
    none is set, or botocore cannot read the file or profile (its own error says so as
    the store connects)."""
    try:  # (botocore comes with s3fs, imported here as an S3 store is made)
        import botocore.exceptions
        import botocore.session
    except ImportError:
        return None
    session = botocore.session.Session(profile=profile)
    try:
        scoped, full = session.get_scoped_config(), session.full_config
        if session.get_config_variable("ignore_configured_endpoint_urls"):
            return None
    except botocore.exceptions.BotoCoreError:
        return None
    file = session.get_config_variable("config_file")
    name = session.profile or "default"
    section = "[default]" if name == "default" else f"[profile {name}]"
    services = scoped.get("services")
    service = full.get("services", {}).get(services, {}).get("s3") if services else None
    if isinstance(service, Mapping) and service.get("endpoint_url"):
        return (str(service["endpoint_url"]), f"{file}, [services {services}] under s3 "
                f"(the services of {section}),")
    if scoped.get("endpoint_url"):
        return str(scoped["endpoint_url"]), f"{file}, {section},"
    return None


def name(value: Any) -> str:
    """An identifier-like name: letters, digits, ``_`` and ``-``, up to 100 characters.

    Names become folder names, argument names and table rows, so a keyword, a space, a
    newline or any other control character is refused.
    """
    if isinstance(value, str) and _NAME.fullmatch(value) and not keyword.iskeyword(value):
        return value
    raise Invalid(value, _name_rule(value))


_NAME_RULE = "letters, digits, '_' or '-', starting with a letter or '_' (for example 'clean_data')"


def _name_rule(value: Any) -> str:
    """What a refused name breaks, where the rule alone would not say it: 'import' and
    'données' are made of letters."""
    if isinstance(value, str) and keyword.iskeyword(value):
        return (f"a name other than a Python keyword (a Python step takes an upstream "
                f"result as an argument of its name), for example {value + '_data'!r}")
    if isinstance(value, str) and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_\-]*", value):
        return f"at most 100 characters ({len(value)} given)"
    if isinstance(value, str) and not value.isascii():
        return f"ASCII {_NAME_RULE}"
    return _NAME_RULE


def variable_name(value: Any) -> str:
    """An environment variable name: letters, digits and ``_``, not starting with a digit."""
    if isinstance(value, str) and _VARIABLE.fullmatch(value):
        return value
    raise Invalid(value, "a variable name (letters, digits and '_', not starting with a digit)")


def one_of(value: Any, choices: Sequence[Any]) -> Any:
    """``value`` if it is one of ``choices`` (of the same type: ``1`` is not ``True``)."""
    if any(value == choice and type(value) is type(choice) for choice in choices):
        return value
    hint = did_you_mean(value, [choice for choice in choices if isinstance(choice, str)])
    raise Invalid(value, f"{_alternatives(choices)}; {hint}" if hint else _alternatives(choices))


def _alternatives(choices: Sequence[Any]) -> str:
    """``"'auto', 'local' or 'dagger'"``."""
    shown = [repr(choice) for choice in choices]
    return shown[0] if len(shown) == 1 else f"{', '.join(shown[:-1])} or {shown[-1]}"


def mapping_of_str(value: Any) -> dict[str, str]:
    """A mapping of non-empty strings to strings (numbers and bools become text)."""
    if isinstance(value, Mapping) and all(
        isinstance(k, str) and k and isinstance(v, (str, int, float)) for k, v in value.items()
    ):
        return {k: str(v) for k, v in value.items()}
    raise Invalid(value, "a mapping of names to strings")


# -- numbers and flags ----------------------------------------------------------------
def flag(value: Any, *, text: bool = False) -> bool:
    """A bool; with ``text=True`` also ``true/false``, ``yes/no``, ``on/off``, ``1/0``."""
    if isinstance(value, bool):
        return value
    if text and isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE
    raise Invalid(value, "true or false" if text else "True or False")


def count(value: Any, *, least: int = 0, text: bool = False) -> int:
    """A whole number >= ``least`` (never a bool); with ``text=True`` also ``"8"``."""
    parsed = value
    if text and isinstance(value, str) and value.strip().lstrip("-").isdecimal():
        parsed = int(value)
    if isinstance(parsed, int) and not isinstance(parsed, bool) and parsed >= least:
        return parsed
    raise Invalid(value, f"a whole number >= {least}")


def number(
    value: Any, *, least: float = 0, text: bool = False, kind: str = "a number"
) -> float:
    """A finite number >= ``least`` as a float (never a bool); ``text=True`` also ``"0.5"``.

    ``kind`` names it in the message: ``"a number of seconds"``.
    """
    parsed = _float_or_none(value) if text and isinstance(value, str) else value
    is_number = isinstance(parsed, (int, float)) and not isinstance(parsed, bool)
    if is_number and math.isfinite(parsed) and parsed >= least:
        return float(parsed)
    raise Invalid(value, f"{kind} >= {least:g}")


def _float_or_none(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


# -- durations ------------------------------------------------------------------------
def _seconds(value: Any) -> float | None:
    """Seconds of a number or of ``"30s"``-style text; None when it is neither."""
    if isinstance(value, bool):
        return None
    if isinstance(value, (int, float)):
        return float(value)
    text = str(value)  # (str(): numpy integers read as text)
    bare = _BARE_SECONDS.fullmatch(text)
    if bare:
        return float(bare.group(1))
    if not _DURATION.fullmatch(text):
        return None
    return sum(float(number) * _UNIT_SECONDS[_UNIT_OF[unit]]
               for number, unit in _DURATION_PART.findall(text))


# what a duration may be, as the message of one that is not says (the default: a bare
# number is seconds) ...
DURATION_FORMS = "seconds or a number with ms, s, m, h, d or w such as '10m' or '1h30m'"
# ... and of a cache age typed by hand, which refuses a bare number (see cache.clearing)
AGE_FORMS = ("a number with a unit such as 2w (weeks), 30d (days), 12h (hours), 10m "
             "(minutes), 30s (seconds) or 500ms")


def parse_duration(
    value: float | int | str | None,
    *,
    what: str = "duration",
    error: Callable[[str], Exception] = InvalidStepError,
    forms: str = DURATION_FORMS,
) -> float | None:
    """Seconds from ``30``, ``"30s"``, ``"10m"``, ``"1.5h"``, ``"2d"`` or ``"250ms"``.

    None stays None (no limit). ``what`` starts the message of ``error``, raised for
    anything else (saying to use ``forms``, what the caller takes) and for durations
    that are not greater than zero.
    """
    if value is None:
        return None
    seconds = _seconds(value)
    if seconds is None:
        raise error(f"{what} {value!r} is not a duration; use {forms}")
    if not seconds > 0:  # NaN too
        raise error(f"{what} {value!r} must be greater than zero")
    return seconds


NEVER_EXPIRES = math.inf  # a ttl of "never": set, it beats a default ttl (None takes it)


def parse_ttl(
    value: float | int | str | None,
    *,
    what: str = "ttl",
    error: Callable[[str], Exception] = InvalidStepError,
) -> float | None:
    """Seconds of a ttl: None (no ttl of its own: the default's, if any), ``"never"``
    (:data:`NEVER_EXPIRES`: its entries never expire, whatever the default), or a
    duration (:func:`parse_duration`)."""
    if isinstance(value, str) and value.strip().lower() == "never":
        return NEVER_EXPIRES
    return parse_duration(value, what=what, error=error,
                          forms=f"{DURATION_FORMS}, or 'never'")


def seconds_to_live(ttl: float | None) -> float | None:
    """What an entry is saved with: None for no expiry (a ttl of none, or "never")."""
    return None if ttl is None or ttl == NEVER_EXPIRES else ttl


def duration(value: Any) -> float | None:
    """Seconds for a setting read from a file or the environment; None for no limit.

    Accepts what :func:`parse_duration` accepts plus number text (``"1e3"``) and
    ``None``, ``""``, ``"none"`` or ``"null"`` for no limit.
    """
    if value is None or (isinstance(value, str) and value.strip().lower() in _NONE):
        return None
    number_text = _float_or_none(value) if isinstance(value, str) else None
    seconds = _seconds(value if number_text is None else number_text)
    if seconds is None or not seconds > 0:
        raise Invalid(value, "seconds or a duration such as '30m' (none for no limit)")
    return seconds


LINE_LIMIT = 500  # characters of one line of a step's output shown in an error


def bounded_line(line: str, limit: int = LINE_LIMIT) -> str:
    """``line`` cut to ``limit`` characters, saying how many more the step's logs hold
    (one line of a step's stderr can be megabytes). Cut only masked text: a cut secret
    is no longer masked."""
    if len(line) <= limit:
        return line
    return f"{line[:limit]}… ({len(line) - limit} characters more; see the step's logs)"


def short_repr(value: Any, limit: int = 200, *, one_line: bool = False) -> str:
    """``repr(value)`` cut to ``limit`` characters (one that raises: its type's name),
    for messages and key descriptions; ``one_line``: one of several lines (a frame's, an
    array's) is its type's name too, for a message of one line."""
    try:
        text: str | None = repr(value)
    except Exception:
        text = None
    if text is None or (one_line and "\n" in text):
        text = f"<{type(value).__qualname__}>"
    return text if len(text) <= limit else text[: limit - 3] + "..."


def user_stacklevel() -> int:
    """The ``stacklevel`` for a ``warnings.warn`` made by the caller that points at the
    first frame outside dagnb and IPython (a notebook cell, a ``%%dagger`` cell, a
    script's line), whichever path led there (``graph.run``, ``arun``, a magic): a
    fixed one named a line of dagnb's."""
    return _first_user_frame(sys._getframe(1))[1]


def _first_user_frame(frame: Any) -> tuple[Any, int]:
    """The first frame from ``frame`` back that is not dagnb's or IPython's (None if
    there is none), and how many frames back it is (1: ``frame`` itself)."""
    level, known = 1, _OURS_BY_NAME
    while frame is not None:
        name = frame.f_globals.get("__name__")
        ours = known.get(name)
        if ours is None:
            ours = _remember_ours(name)
        if not ours:
            break
        frame, level = frame.f_back, level + 1
    return frame, level


# whether a module is dagnb's or IPython's, by name: asked of each frame of a walk (a
# run's start walks four of dagnb's)
_OURS_BY_NAME: dict[Any, bool] = {}


def _remember_ours(name: Any) -> bool:
    if len(_OURS_BY_NAME) > 1024:
        _OURS_BY_NAME.clear()
    ours = _OURS_BY_NAME[name] = _ours(name or "")
    return ours


class UserLine(NamedTuple):
    """A line of the user's (a cell's, a script's) that warnings can name."""

    filename: str
    lineno: int
    module_globals: dict[str, Any]


def user_line() -> UserLine | None:
    """The line :func:`user_stacklevel` points at, of the caller's thread, kept to warn
    there from another thread; where the caller is a widget's click, the line that showed
    the widget (see :func:`acting_for`); None if there is neither."""
    frame = _first_user_frame(sys._getframe(1))[0]
    if frame is None or _delivers(frame):
        return _acting_line.get()
    return UserLine(frame.f_code.co_filename, frame.f_lineno, frame.f_globals)


# The packages that deliver a widget's click to its handler: when the first frame past
# dagnb's is theirs, no line of the user's started the call (the kernel handles a comm
# message), and naming ipywidgets' line in a warning would only mislead.
_DELIVERY = frozenset({"ipywidgets", "comm", "ipykernel", "traitlets", "tornado", "zmq"})

# the line that showed the widget whose click is being handled (see acting_for)
_acting_line: contextvars.ContextVar[UserLine | None] = contextvars.ContextVar(
    "dagnb_acting_line", default=None)


def _delivers(frame: Any) -> bool:
    return (frame.f_globals.get("__name__") or "").split(".", 1)[0] in _DELIVERY


@contextlib.contextmanager
def acting_for(line: UserLine | None) -> Iterator[None]:
    """Within it, warnings (and a run started) that no user's line led to name ``line``:
    a widget's button handler's, with the line of the cell that showed the widget."""
    token = _acting_line.set(line)
    try:
        yield
    finally:
        _acting_line.reset(token)


def made_here(handler: Callable[[], Any]) -> Callable[[Any], None]:
    """``handler`` as a widget button's callback whose warnings, and the run it starts,
    name the user's line that made the widget, taken now (a click comes with none)."""
    line = user_line()

    def clicked(_: Any) -> None:
        with acting_for(line):
            handler()

    return clicked


# where a run's warnings point: a run's steps go on dagnb's loop thread, whose frames
# reach no line of the user's (set by the scheduler for its tasks)
_run_caller: contextvars.ContextVar[UserLine | None] = contextvars.ContextVar(
    "dagnb_run_caller", default=None)


def warn_at_run_caller(line: UserLine | None) -> None:
    """Make :func:`warn_user` in this task (and those it starts) name ``line``."""
    _run_caller.set(line)


def warn_user(message: str, category: type[Warning] = UserWarning) -> None:
    """``warnings.warn`` naming the user's line: the one that started the run (see
    :func:`warn_at_run_caller`), else the caller's first frame outside dagnb, else (a
    widget's click) the line that showed the widget (see :func:`acting_for`)."""
    line = _run_caller.get()
    if line is None:
        frame, level = _first_user_frame(sys._getframe(0))
        user_frame = frame is not None and not _delivers(frame)
        if user_frame or (line := _acting_line.get()) is None:
            warnings.warn(message, category, stacklevel=level)
            return
    where = line.module_globals  # (not passed on: as warnings.warn, linecache reads the
    # file, where a loader asked for the source of a ``python -m`` __main__ raises)
    warnings.warn_explicit(message, category, line.filename, line.lineno,
                           module=where.get("__name__", "<string>"),
                           registry=where.setdefault("__warningregistry__", {}))


def _ours(module: str) -> bool:
    """dagnb's modules, and IPython's that run a cell's magic for it."""
    return module.split(".", 1)[0] in ("dagnb", "IPython")
