"""Masking of secret values in captured text, in the forms a secret leaks in.

A step that prints a secret rarely prints it bare: a key is written in lines (a PEM file
line by line, since logs are captured a line at a time), a token goes through base64 or
URL-encoding, a value is dumped as JSON or ``repr`` or shown in HTML (a DataFrame's
table: ``&`` as ``&amp;``, or ``&#38;``). Each declared secret is masked in all of those
forms; the lines of a multi-line secret count one by one (those of at least ``MIN_LINE``
characters, so that a secret's blank or one-letter lines do not blank out ordinary
output).
"""

from __future__ import annotations

import base64
import bisect
import functools
import json
import os
import re
import urllib.parse
from collections.abc import Iterable, Iterator, Mapping
from html import escape as html_escape
from html.entities import html5 as _HTML_NAMES
from types import MappingProxyType

from dagnb.errors import InvalidStepError

__all__ = ["MASK", "MASKED_START", "MIN_LINE", "Masker", "SecretFinder", "environ_secrets",
           "leak_forms", "looks_like_token", "name_shown", "shared_finder", "shared_masker",
           "url_password", "variable_holding", "written_secrets"]

MASK = "***"
_SGR = re.compile(r"\x1b\[[0-9;:]*m")  # a terminal's colour and style codes

# A variable named like a credential (``HF_TOKEN``, ``DB_PASSWORD``): its value is kept out
# of a cache entry's metadata, and a notebook param equal to it is refused.
# (``DB_PASS``, ``GH_PAT``, ``SENTRY_DSN``, ``SSH_KEY``, ``BASIC_AUTH`` too, as words of
# their own: not ``COMPASS``, ``PATH``, ``KEYBOARD``; nor ``PWD``, the shell's folder)
named_as_secret = re.compile(
    r"token|secret|passw|credential|api_?key|private"
    r"|(?<![a-z])(?:pass|pat|dsn|key|auth|cookie)(?![a-z])", re.IGNORECASE).search
# A URL's password (``postgres://etl:Hunter22@db/prod``), whatever its variable is named
url_password = re.compile(r"[a-z][a-z0-9+.-]*://[^/\s:@]*:[^@\s/]+@", re.IGNORECASE).search
# Named as a secret beyond doubt, what a refusal needs (hiding takes the rule above): the
# word whole (``TOKENIZER_NAME`` is no token), and not the name of where one is or of one
# (``OAUTH_TOKEN_URL``, ``SECRET_NAME``, ``PRIVATE_REGISTRY``).
_SURELY_SECRET = re.compile(
    r"(?:tokens?|secrets?(?:_?keys?)?|passw(?:or)?ds?|passphrases?|credentials?|api_?keys?"
    r"|private_?keys?)"
    r"(?![a-z])(?!.*_(?:url|uri|name|file|path|endpoint|type|dir|host|port|id)$)",
    re.IGNORECASE)


def named_surely_secret(name: str) -> bool:
    """Whether variable ``name`` holds a secret beyond doubt (``HF_TOKEN``,
    ``DB_PASSWORD``, ``STRIPE_API_KEY``), not merely a name like one's."""
    return _SURELY_SECRET.search(name) is not None


MIN_LINE = 6
# the fewest characters of a secret's start at the end of the last text written (its
# writer stopped there) that are masked, where a word starts: fewer end much ordinary
# text as well (`471` of a total, as of a PIN `4711`; `tok` of a word)
MASKED_START = 4


# A word or a number (``postgres``, ``changeme``, ``123456``), under this many characters:
# too common a value to mask wherever it is, or to refuse a result for, on a name's word
_COMMON_BELOW = 16
_WORD_OR_NUMBER = re.compile(r"[^\W\d_]+|[0-9]+").fullmatch


def _may_be_secret(value: str) -> bool:
    """Whether the value of a variable named as a secret that no step declares is masked:
    not one under ``MIN_LINE`` characters (``dev``, ``1``), nor a word or a number that
    ordinary output holds, nor an existing path (``..._CREDENTIALS``: a file's name)."""
    text = value.strip()
    return (len(text) >= MIN_LINE
            and not (len(text) < _COMMON_BELOW and _WORD_OR_NUMBER(text))
            and not os.path.exists(text))


_NONE_SET: Mapping[str, str] = MappingProxyType({})


class _EnvironSecrets:
    """The variables of ``os.environ`` named as secrets beyond doubt (``HF_TOKEN``,
    ``DB_PASSWORD``: :func:`named_surely_secret`) whose values may be secrets, by name.
    Every run asks: the names are listed again only when the environment's names changed
    (its raw keys, not decoded: a third of a microsecond), their values read each time."""

    __slots__ = ("_listed", "_read")

    def __init__(self) -> None:
        # (each a tuple replaced whole: threads starting runs read it consistent)
        self._listed: tuple[tuple[object, ...] | None, tuple[str, ...]] = (None, ())
        self._read: tuple[tuple[object, ...], Mapping[str, str]] = ((), _NONE_SET)

    def __call__(self) -> Mapping[str, str]:
        environ = os.environ
        keys = tuple(getattr(environ, "_data", environ))
        listed_keys, names = self._listed
        if keys != listed_keys:
            names = tuple(name for name in environ
                          if named_surely_secret(name) and name not in _DAGNB_OWN)
            self._listed = (keys, names)
        if not names:  # (most environments: no such name)
            return _NONE_SET
        state = (names, tuple(map(environ.get, names)))
        read_state, found = self._read
        if state != read_state:
            found = MappingProxyType({name: value for name, value in zip(*state, strict=True)
                                      if value is not None and _may_be_secret(value)})
            self._read = (state, found)
        return found


# dagnb's own variables named like secrets: the token its steps' processes carry while
# they run (dagnb.executors.reaper's TOKEN_VARIABLE), which names them, and hides nothing
_DAGNB_OWN = frozenset({"DAGNB_STEP_TOKEN"})
_ENVIRON_SECRETS = _EnvironSecrets()


def environ_secrets() -> Mapping[str, str]:
    """The variables of the environment named as secrets beyond doubt whose values may
    be secrets (of ``MIN_LINE`` characters or more, not a plain word or number, not a
    path), by name: a run masks them even when no step declares them (an in-process
    step reads the process's environment, a command inherits it). Shared: not to change."""
    return _ENVIRON_SECRETS()


def written_secrets(env: Mapping[str, str]) -> dict[str, str]:
    """The values of a step's ``env`` that are secrets written into it, by name: one of a
    variable named as a secret beyond doubt (``DB_PASSWORD: CorrectHorse42``) that may be
    one (:func:`_may_be_secret`), and the password of a URL (``postgres://etl:pw@db``,
    as ``NAME:password``). A run masks them, as it masks such a variable of its
    environment, and a key describes them as ``<not shown>``."""
    found = {}
    for name, value in env.items():
        if named_surely_secret(name) and _may_be_secret(value):
            found[name] = value
        elif (password := url_password(value)) is not None:
            secret = password[0].rpartition(":")[2][:-1]  # (between the ':' and the '@')
            if len(secret) >= MIN_LINE:
                found[f"{name}:password"] = secret
    return found


def leak_forms(secret: str, lines: bool = True) -> set[str]:
    """The secret and the spellings it commonly leaks in; with ``lines``, each line of a
    multi-line one too (a PEM file's, which other certificates share)."""
    raw = secret.encode()
    forms = {secret, json.dumps(secret)[1:-1], repr(secret)[1:-1],
             json.dumps(secret, ensure_ascii=False)[1:-1],  # (UTF-8 JSON's: "ü" kept)
             urllib.parse.quote(secret, safe=""), urllib.parse.quote_plus(secret),
             urllib.parse.quote(secret)}  # (a path's: "/" kept)
    for encoded in (base64.b64encode(raw), base64.urlsafe_b64encode(raw)):
        forms |= {encoded.decode(), encoded.decode().rstrip("="), *_wrapped(encoded.decode())}
    forms |= _base64_within(raw) | _quoted(secret) | _html_escaped(secret)
    if lines:
        forms |= {line.strip() for line in secret.splitlines() if len(line.strip()) >= MIN_LINE}
    trimmed = secret.strip()
    if trimmed != secret and len(trimmed) >= MIN_LINE:
        # a value read from a file ends in a newline (a Kubernetes secret --from-file):
        # the token its user sends, and encodes, is the trimmed one
        forms |= leak_forms(trimmed, lines=False)
    return {form for form in forms if form}


# How the tokens services issue begin: GitHub's, OpenAI's and Stripe's, Slack's, AWS
# access keys, GitLab's. Given where a secret's name goes, one is a value, not a name.
_TOKEN_PREFIXES = ("ghp_", "gho_", "ghs_", "ghu_", "ghr_", "github_pat_", "sk-", "sk_live",
                   "sk_test", "xox", "AKIA", "ASIA", "glpat-")
_UPPER_NAME = re.compile(r"[A-Z0-9_]+\Z")  # (how variables are named: API_TOKEN)


def looks_like_token(text: str) -> bool:
    """Whether ``text``, given as a secret's name, looks like a secret's value: a known
    token prefix, or long and not in upper case, or mixing lower case, upper case and
    digits, or long upper case and digits run together (``ABCD1234EFGH5678IJKL``)."""
    if text.startswith(_TOKEN_PREFIXES):
        return True
    if _UPPER_NAME.match(text):
        return len(text) >= 20 and "_" not in text and any(c.isdigit() for c in text)
    mixed = all(any(test(c) for c in text) for test in (str.islower, str.isupper, str.isdigit))
    return len(text) >= 24 or (len(text) >= 16 and mixed)


def variable_holding(value: str, environ: Mapping[str, str]) -> str | None:
    """The environment variable whose value ``value`` is (trimmed or not), if any: a
    secret's value given where its name goes (``secrets=[os.environ["API_TOKEN"]]``)."""
    if len(value) < MIN_LINE:  # (``dev``: too many variables hold one so short)
        return None
    return next((name for name, held in environ.items()
                 if name != value and value in (held, held.strip())), None)


def name_shown(name: str) -> str:
    """A secret's name as a message shows it: as it is, unless it looks like a token,
    then its known prefix only (``'ghp_***'``) or ``'***'``, with its length."""
    if not looks_like_token(name):
        return repr(name)
    prefix = next((start for start in _TOKEN_PREFIXES if name.startswith(start)), "")
    return f"{prefix + MASK!r} ({len(name)} characters, not shown: it looks like a token)"


# what printf %q and bash's ${v@Q} put a backslash before (bash's sh_backslash_quote)
_SHELL_SPECIAL = re.compile(r"""([ \t'"\\|&;()<>!{}*\[?\]^$`,])""")


def _quoted(secret: str) -> set[str]:
    """How shells and Python quote a secret that holds a quote, a backslash, a space or
    a ``$``: bash's trace (``set -x``), ``'pa'\\''ss'``; ``shlex.quote``'s
    ``'pa'"'"'ss'``; ``declare -p``'s ``"pa\\"ss"``; ``printf %q``'s; a ``repr`` that
    escapes ``'``, of the secret or of ``shlex.quote``'s (``'pa\\'"\\'"\\'ss'``: a
    ``%dagger`` line's words rejoined, quoted in its refusal); a bytes ``repr``
    (``b'p\\xc3\\xa4ss'``). Most secrets have none of these: each is then the secret
    itself."""
    shlex_quoted = secret.replace("'", "'\"'\"'")
    return {secret.replace("'", "'\\''"), shlex_quoted, shlex_quoted.replace("'", "\\'"),
            re.sub(r'([\\"$`])', r"\\\1", secret), _SHELL_SPECIAL.sub(r"\\\1", secret),
            repr('"' + secret)[2:-1], repr(secret.encode())[2:-1]}


# How HTML text spells " and ' (beside &amp; &lt; &gt;): kept (pandas' to_html, a
# DataFrame's table), html.escape's, markupsafe's (Jinja2), an attribute's (saxutils
# quoteattr, the old cgi.escape), XML's
_HTML_QUOTES = (('"', "'"), ("&quot;", "&#x27;"), ("&#34;", "&#39;"), ("&quot;", "'"),
                ("&quot;", "&apos;"))


def _html_escaped(secret: str) -> set[str]:
    """A secret that holds ``&``, ``<``, ``>`` or a quote as HTML shows it (each is the
    secret itself when it holds none)."""
    text = html_escape(secret, quote=False)
    return {text.replace('"', double).replace("'", single) for double, single in _HTML_QUOTES}


_WRAPS = (76, 64)  # base64's (and MIME's) line width, PEM's and openssl's


def _base64_within(raw: bytes) -> set[str]:
    """The secret's base64 inside longer encoded text (``user:token`` in a Basic auth
    header, which ``curl -v`` prints): at each of a 3-byte group's offsets, the
    characters that encode the secret's bits alone (its first and last characters also
    hold bits of what is around it). Only those of ``MIN_LINE`` characters or more."""
    forms = set()
    for offset in range(3):
        first, end = -(-8 * offset // 6), 8 * (offset + len(raw)) // 6  # (ceil, floor)
        for encode in (base64.b64encode, base64.urlsafe_b64encode):
            inner = encode(bytes(offset) + raw).decode()[first:end]
            if len(inner) >= MIN_LINE:
                forms.add(inner)
    return forms


def _wrapped(encoded: str) -> set[str]:
    """The lines base64 text is cut into by tools that wrap it (``base64`` without
    ``-w0``): each is printed, and captured, as a line of its own."""
    return {encoded[at:at + width].rstrip("=") for width in _WRAPS if len(encoded) > width
            for at in range(0, len(encoded), width)
            if len(encoded[at:at + width].rstrip("=")) >= MIN_LINE}


def _stored_forms(value: str) -> list[bytes]:
    """The bytes a value's leak forms are stored as: UTF-8, and the value in UTF-16 and
    UTF-32 too (a numpy array of strings is pickled as UTF-32). A form that holds another
    is left out, as finding it finds the other: each form costs a pass over the data."""
    forms = {form.encode() for form in leak_forms(value) if len(form) >= MIN_LINE}
    kept: list[bytes] = []
    for form in sorted(forms | {value.encode(code) for code in ("utf-16-le", "utf-32-le")},
                       key=len):
        if not any(shorter in form for shorter in kept):
            kept.append(form)
    return kept


class SecretFinder:
    """Finds the value of a secret, in any leak form, in bytes: what a step would store
    (its result, its files), which must hold none. A value (or form) shorter than
    ``MIN_LINE`` is not looked for: ``"dev"`` is in too many results to refuse them all."""

    __slots__ = ("_forms", "longest")

    def __init__(self, secrets: Mapping[str, str]) -> None:
        self._forms = [(name, _stored_forms(value))
                       for name, value in sorted(secrets.items()) if len(value) >= MIN_LINE]
        self.longest = max((len(forms[-1]) for _, forms in self._forms), default=0)

    def __bool__(self) -> bool:
        return bool(self._forms)

    def find(self, data: bytes | memoryview) -> str | None:
        """The name of a secret ``data`` holds, or None."""
        blob = bytes(data)
        for name, forms in self._forms:
            if any(form in blob for form in forms):
                return name
        return None

    def refuse(self, data: bytes, what: str, why: str, fix: str) -> None:
        """Refuse what a step would send or write where no secret may be, in one line:
        ``{what} holds the value of secret 'NAME', which {why}; {fix}``, ``fix``
        formatted with ``held``, the secret's name."""
        held = self.find(data)
        if held is not None:
            raise InvalidStepError(f"{what} holds the value of secret {held!r}, which {why}; "
                                   + fix.format(held=held))


class Masker:
    """Replaces every occurrence of the given secret values (in any leak form) with ``***``.

    ``words_below``: a value shorter is masked only where it is a word of its own, no
    letter or digit touching it (``4711``, ``pin=4711``, ``"4711"``, ``a\\n4711``, not
    ``147112`` nor ``3.4711``): descriptions of values use ``MIN_LINE``, as a secret
    ``a`` would mask every ``a``. Those are masked after the others, and a secret cut
    short (``admin-S3cr...``) first: a secret ``admin`` must not break another's form."""

    __slots__ = ("_cut", "_ellipsis", "_first", "_forms", "_kept", "_passes", "_second")

    def __init__(self, secrets: Iterable[str] = (), *, words_below: int = 1) -> None:
        kept = [secret for secret in secrets if secret]
        anywhere = [(secret, False) for secret in kept if len(secret) >= words_below]
        words = [(secret, True) for secret in kept if len(secret) < words_below]
        self._passes = [_Pass(group) for group in (anywhere, words) if group]
        # (each line a step prints is masked: its substitutions bound, no loop)
        subs = [one.pattern.sub for one in self._passes] + [None, None]
        self._first, self._second = subs[0], subs[1]
        self._cut = _CutShort(kept)
        # secrets holding an ellipsis themselves, masked whole before any is taken for
        # one cut short (its head or tail masked, the rest left in clear)
        ellipsis = [(secret, word) for secret, word in anywhere + words if _ELLIPSIS_IN(secret)]
        self._ellipsis = _Pass(ellipsis) if ellipsis else None
        self._kept = kept
        self._forms: _Forms | None = None  # (made when first asked: unfinished_from)

    def __call__(self, text: str) -> str:
        masked = self._masked(text)
        if "\x1b[" not in masked:  # (most text: no colour code to split a secret)
            return masked
        # a secret a colour code splits (`tok-9f8e\x1b[0m7d6c...`) reads whole on a
        # terminal: such text is masked without its colours
        plain = _SGR.sub("", masked)
        plain_masked = self._masked(plain)
        return plain_masked if plain_masked != plain else masked

    def _masked(self, text: str) -> str:
        if "..." in text or "\u2026" in text:  # (first: see the class)
            if self._ellipsis is not None:
                text = self._ellipsis.pattern.sub(MASK, text)
            text = self._cut(text)
        if self._first is not None:
            text = self._first(MASK, text)
            if self._second is not None:
                text = self._second(MASK, text)
        return text

    def html(self, text: str) -> str:
        """``text`` masked as HTML, where a character reference (``&#39;``, ``&amp;``) is
        one character: masked whole as part of a secret or left whole, so that a short
        secret ``9`` or ``amp`` does not break ``&#39;`` into ``&#3***;``. A secret spelled
        with numeric references (``p&#38;ss``, ``p&#x26;ss``; named ones such as
        ``&AMP;`` along with those) is masked too: those of its characters but ASCII
        letters and digits, which HTML writers do not spell."""
        if "..." in text or "\u2026" in text:
            if self._ellipsis is not None:
                text = self._ellipsis.html(text)
            text = self._cut(text)
        for one in self._passes:
            text = one.html(text)
        return text

    def __bool__(self) -> bool:
        return bool(self._passes)

    def unfinished_from(self, text: str, start: int = 0) -> int:
        """Where, from ``start`` on, the end of ``text`` may begin a secret (in a leak
        form) that more text would complete: the start of the longest such suffix, a
        whole form too (``4711`` may go on as ``47112``, no word then), or of a text cut
        short by an ellipsis; ``len(text)`` when none. What is written in pieces is
        masked whole if this end waits for the next piece (:mod:`dagnb.executors.capture`)."""
        if not self._kept:
            return len(text)
        at = self._known_forms().unfinished_from(text, start)
        # (most text: no ellipsis, nor one begun at its end: `.` or `..`)
        if text[-1:] == ".":
            at = min(at, self._dots_from(text, start))
        elif "..." in text or "\u2026" in text:
            at = min(at, self._cut.unfinished_from(text, start))
        return at

    def _dots_from(self, text: str, start: int) -> int:
        """Where the end of ``text``, dots, must wait from for a secret cut short: from
        what before them may be a secret's head (of ``MIN_LINE`` characters, masked only
        with the whole ellipsis after it), or the word before them if it holds an
        ellipsis (a tail may follow); else only the last three dots wait, for a tail that
        may follow them (``...6c5b4a``): a status line's words (``Training model...``)
        show at once."""
        if not self._cut:
            return len(text)
        word_end = max(start, len(text.rstrip(".")))
        word = text[start:word_end].rsplit(None, 1)[-1] if word_end > start else ""
        if _ELLIPSIS_IN(word) or text.endswith("......"):
            return self._cut.unfinished_from(text, start)
        head = self._known_forms().unfinished_from(text[:word_end], start)
        return head if word_end - head >= MIN_LINE else max(word_end, len(text) - 3)

    def masked_as_last(self, text: str, before: str = "") -> str:
        """``text`` masked as the last its writer writes, none of it to go on: an end that
        begins a secret (``tok-9f`` of ``tok-9f8e...``), from ``MASKED_START`` characters
        on where a word starts (``ana`` of ``banana`` is no secret ``analytics``'s
        start) and from ``MIN_LINE`` anywhere (a hex key's first 15 after ``0x``), is
        masked too, and one that an ellipsis begun cuts short (``tok-9f8e..``), as the
        secret, or the ellipsis, written whole there would be. One full stop ends a
        sentence, not an ellipsis: ``Meet me in Summer.`` of a secret ``Summer2024!``
        shows as written, as the same line does when its newline follows.
        ``before``: the character written just before ``text`` (none at a line's start)."""
        if text.endswith("..") and not text.endswith("..."):
            finished = self(text + ".")
            if finished.endswith(MASK + "..."):
                return finished[:-1]
        text = self(text)
        if not self._kept:
            return text
        forms = self._known_forms()
        at = forms.unfinished_from(text, 0)
        while len(text) - at >= MASKED_START:
            # (mid-word from MIN_LINE characters: a token glued to "Bearer" or "0x"; a
            # shorter one there is more likely a word's middle, "ana" of "banana")
            if (len(text) - at >= MIN_LINE or _word_starts(
                    text[at], text[at - 1] if at else before)) and any(
                    self(text[:at] + form).endswith(MASK) for form in forms.begun_by(text[at:])):
                return text[:at] + MASK
            at = forms.unfinished_from(text, at + 1)
        return text

    def _known_forms(self) -> _Forms:
        if self._forms is None:
            self._forms = _Forms(self._kept)
        return self._forms


# the maskers and finders made for the secrets of recent runs: a run of a process whose
# environment holds a token (HF_TOKEN, masked in every run) would make its own (100 µs)
_SHARED: dict[tuple[object, ...], Masker | SecretFinder] = {}
_SHARED_LIMIT = 64


def shared_masker(secrets: Iterable[str], *, words_below: int = 1) -> Masker:
    """A :class:`Masker` of ``secrets``, the one made last time for the same (neither
    is changed once made; what it makes as asked, for HTML or a secret's start, it
    keeps for every run)."""
    memo = ("mask", words_below, *secrets)
    found = _SHARED.get(memo)
    if found is None:
        found = _shared(memo, Masker(memo[2:], words_below=words_below))
    return found  # type: ignore[return-value]


def shared_finder(secrets: Mapping[str, str]) -> SecretFinder:
    """A :class:`SecretFinder` of ``secrets``, the one made last time for the same."""
    memo = ("find", *secrets.items())
    found = _SHARED.get(memo)
    if found is None:
        found = _shared(memo, SecretFinder(secrets))
    return found  # type: ignore[return-value]


def _shared(memo: tuple[object, ...], made: Masker | SecretFinder) -> Masker | SecretFinder:
    if len(_SHARED) >= _SHARED_LIMIT:  # (secrets rotated many times in a long kernel)
        _SHARED.clear()
    _SHARED[memo] = made
    return made


class _Forms:
    """The leak forms of some secrets, sorted, to tell where a text may begin one."""

    __slots__ = ("_firsts", "_heads", "_longest", "_sorted")

    _HEAD = 8  # a form's first characters, looked up in a set before the forms are

    def __init__(self, secrets: Iterable[str]) -> None:
        forms = set().union(*(leak_forms(secret) for secret in secrets))
        self._sorted = sorted(forms)
        self._longest = max(map(len, forms), default=0)
        self._firsts = re.compile(f"[{re.escape(''.join({form[0] for form in forms}))}]")
        self._heads = frozenset(form[:size] for form in forms for size in range(1, self._HEAD + 1))

    def unfinished_from(self, text: str, start: int) -> int:
        # (a scan in C to the places a form's first character is, a few in most text)
        for found in self._firsts.finditer(text, max(start, len(text) - self._longest)):
            at = found.start()
            if text[at:at + self._HEAD] in self._heads and self._begins(text[at:]):
                return at
        return len(text)

    def _begins(self, text: str) -> bool:
        """Whether a form begins with ``text`` (those that do follow it, in order)."""
        found = bisect.bisect_left(self._sorted, text)
        return found < len(self._sorted) and self._sorted[found].startswith(text)

    def begun_by(self, text: str) -> Iterator[str]:
        """The forms that begin with ``text``."""
        for form in self._sorted[bisect.bisect_left(self._sorted, text):]:
            if not form.startswith(text):
                return
            yield form


class _Pass:
    """One regex over some of the secrets (all masked anywhere, or all as words)."""

    __slots__ = ("_html", "_numbers", "_secrets", "_spelled_chars", "pattern")

    def __init__(self, secrets: list[tuple[str, bool]]) -> None:
        self._secrets = secrets
        self.pattern = re.compile(_joined(_alternatives(secrets)))
        self._spelled_chars = _spelled_chars(secrets)
        # (made at the first HTML looked at: the numeric references to those characters;
        # at the first masked: the secrets, spelled with references too, or a reference)
        self._numbers: re.Pattern[str] | None = None
        self._html: re.Pattern[str] | None = None

    def html(self, text: str) -> str:
        # (most: none, told in one C scan, not a call per &amp; of a table)
        if self.pattern.search(text) is None and not self._spelled_in(text):
            return text
        if self._html is None:
            secret = _joined(_alternatives(self._secrets) + _spelled(self._secrets))
            self._html = re.compile(f"(?P<secret>{secret})|{_REFERENCE}")
        return self._html.sub(self._kept_reference, text)

    def _spelled_in(self, text: str) -> bool:
        """Whether ``text`` holds a numeric reference to a character of a secret: then it
        may be spelled so (a named one is no sign: ``&amp;`` is in every other table). A
        scan of its own, which goes in C from one ``&#`` to the next: in the secrets'
        pattern, it stopped that scan at each ``&`` of a table (2.5 ms for 100 KB, where
        the two scans take 1.6)."""
        if not self._spelled_chars:
            return False
        if self._numbers is None:
            self._numbers = re.compile(_numbers_of(self._spelled_chars))
        return self._numbers.search(text) is not None

    def _kept_reference(self, match: re.Match[str]) -> str:
        found = match[0]
        if match["secret"] is not None:
            return MASK
        if found[1] == "#" or found[1:] in _HTML_NAMES:
            return found
        return self.pattern.sub(MASK, found)  # (no reference: '&' and text, shown so)


_Alternatives = list[tuple[int, str]]  # (the length of the text matched, its regex)


def _alternatives(secrets: list[tuple[str, bool]]) -> _Alternatives:
    """The leak forms of the secrets, those of a word-only secret as words."""
    anywhere = set().union(*(leak_forms(value) for value, word in secrets if not word))
    words = set().union(*(leak_forms(value) for value, word in secrets if word)) - anywhere
    return ([(len(form), re.escape(form)) for form in anywhere]
            + [(len(form), _as_word(form)) for form in words])


def _joined(alternatives: _Alternatives) -> str:
    """One regex of all, the longest first (it wins where a shorter one starts too)."""
    return "|".join(regex for _, regex in sorted(alternatives, key=lambda a: a[0],
                                                   reverse=True))


# no letter or digit (of any script) before or after a word-only secret
_LETTER_OR_DIGIT = r"[^\W_]"
# ... but for the letter or digits of an escape before it, which stand for a character
# that is none (repr's \n and \x0b, JSON's \u00e9, a URL's %20)
_WORD_EDGE = re.compile(_LETTER_OR_DIGIT).fullmatch  # (a character that joins a word)
_ESCAPES = (r"\\[abfnrtv0]", r"\\x[0-9a-fA-F]{2}", r"\\u[0-9a-fA-F]{4}", "%[0-9a-fA-F]{2}")


def _word_starts(first: str, before: str) -> bool:
    """Whether a text beginning with ``first`` after ``before`` (none: a line's start)
    starts a word, as a word-only secret's form must (its own ``-`` or ``#`` at its edge
    being one whatever touches it)."""
    return not (before and _WORD_EDGE(before) and _WORD_EDGE(first))


def _as_word(form: str) -> str:
    """``form`` where no letter or digit touches it, nor a decimal point with a digit
    beyond (``3.4711``, ``4711.5``). The look behind comes after the form: re skips in
    C to the places where an alternative's first character is, and tries the look
    behind only where all of it is (before it, at each ``e`` of a text for a secret
    ``zq8``, base64 ``enE4``)."""
    escaped = re.escape(form)
    regex = escaped
    # a secret's own '#' or '-' at its edge is one whatever touches it (x#4711 holds
    # #4711); but one of punctuation alone ('.') is still a word only standing alone
    alone = not any(map(_WORD_EDGE, form))
    if alone or _WORD_EDGE(form[0]):
        before = "|".join([f"(?<!{_LETTER_OR_DIGIT}{escaped})",
                           *(f"(?<={escape}{escaped})" for escape in _ESCAPES)])
        regex += f"(?:{before})" + (f"(?<![0-9]\\.{escaped})" if form[0].isdigit() else "")
    if alone or _WORD_EDGE(form[-1]):
        regex += f"(?!{_LETTER_OR_DIGIT})" + ("(?!\\.[0-9])" if form[-1].isdigit() else "")
    return regex


def _spelled_texts(secrets: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """The secrets that HTML may spell otherwise, with a reference for one of their
    characters: a multi-line one by its lines (of ``MIN_LINE`` characters or more)."""
    texts = []
    for value, word in secrets:
        lines = [line.strip() for line in value.splitlines()]
        for text in [value] if len(lines) < 2 else [ln for ln in lines if len(ln) >= MIN_LINE]:
            if not _PLAIN.fullmatch(text):
                texts.append((text, word))
    return texts


_PLAIN = re.compile("[A-Za-z0-9]*")  # (ASCII letters and digits: written as they are)


def _spelled(secrets: list[tuple[str, bool]]) -> _Alternatives:
    """Each secret as HTML may spell it, any of its other characters as a reference."""
    found = []
    for text, word in _spelled_texts(secrets):
        spelled = "".join(char if _PLAIN.fullmatch(char) else _char_in_html(char)
                          for char in text)
        if word:
            spelled = f"(?<!{_LETTER_OR_DIGIT}){spelled}(?!{_LETTER_OR_DIGIT})"
        found.append((len(text), spelled))
    return found


def _char_in_html(char: str) -> str:
    """How HTML may write ``char``: itself, a numeric reference (decimal or hexadecimal,
    in either case, with leading zeros or not), or one of the names HTML gives it."""
    spellings = [re.escape(char), _numbers_of(char),
                 *(re.escape(f"&{name}") for name in _names_of().get(char, ()))]
    return f"(?:{'|'.join(spellings)})"


def _spelled_chars(secrets: list[tuple[str, bool]]) -> str:
    """The characters HTML may write as references in the secrets (none in most)."""
    return "".join(sorted({char for text, _ in _spelled_texts(secrets) for char in text
                           if not _PLAIN.fullmatch(char)}))


def _numbers_of(chars: str) -> str:
    """A numeric reference to one of ``chars``: ``&#38;``, ``&#0038;``, ``&#x26;`` or
    ``&#X26;`` for ``&``."""
    hexadecimal = ("".join(f"[{d}{d.upper()}]" if d.isalpha() else d for d in f"{ord(c):x}")
                   for c in chars)
    return (f"&#(?:0*(?:{'|'.join(str(ord(c)) for c in chars)})"
            f"|[xX]0*(?:{'|'.join(hexadecimal)}));")


@functools.cache
def _names_of() -> dict[str, list[str]]:
    """Character -> the names of its HTML references (``amp;``, ``AMP;``)."""
    names: dict[str, list[str]] = {}
    for name, char in _HTML_NAMES.items():
        if name.endswith(";"):
            names.setdefault(char, []).append(name)
    return names


# a character reference: numeric, or a name checked against HTML's (another is text)
_REFERENCE = "&(?:#[0-9]{1,7}|#[xX][0-9a-fA-F]{1,6}|[A-Za-z][A-Za-z0-9]{1,31});"
_ELLIPSIS = "(?:\\.\\.\\.|\u2026)"  # ... or …
_ELLIPSIS_IN = re.compile(_ELLIPSIS).search
_SPACE = re.compile(r"\s").search


class _CutShort:
    """A secret shown cut short: its head before an ellipsis (a pandas frame cuts a cell
    at 50 characters: ``eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ...``, and its HTML table then
    escapes ``&``, ``<`` and ``>``), its tail after one (``reprlib`` cuts in the middle),
    masked from ``MIN_LINE`` characters of it on."""

    __slots__ = ("_head_starts", "_pattern", "_values")

    def __init__(self, secrets: Iterable[str]) -> None:
        pieces = {line.strip() for secret in secrets
                  for line in [secret, html_escape(secret, quote=False), *secret.splitlines()]}
        self._values = sorted(piece for piece in pieces if len(piece) > MIN_LINE)
        heads = "|".join(sorted({re.escape(value[:MIN_LINE]) for value in self._values}))
        tails = "|".join(sorted({re.escape(value[-MIN_LINE:]) for value in self._values}))
        # (the head's ellipsis is left for a tail after it; a tail's takes all the dots
        # before it: `....c5b4a` is a tail cut short, not `.c5b4a`, no secret's end)
        self._pattern = re.compile(
            rf"(?P<head>(?:{heads})\S*?)(?={_ELLIPSIS})|(?P<cut>\.{{3,}}|\u2026)"
            rf"(?P<tail>\S*?(?:{tails}))") if self._values else None
        self._head_starts = re.compile(f"(?=(?:{heads}))").finditer

    def __call__(self, text: str) -> str:
        return text if self._pattern is None else self._pattern.sub(self._masked, text)

    def __bool__(self) -> bool:
        return self._pattern is not None

    def unfinished_from(self, text: str, start: int) -> int:
        """Where the word that ends ``text`` begins, if it holds an ellipsis, or ends with
        one begun (``.`` or ``..``): more of it may make it a secret's head or tail cut
        short, the head masked only with the whole ellipsis after it (see
        :meth:`Masker.unfinished_from`); ``len(text)`` otherwise. Of a word ending in
        dots enough for two ellipses (dots printed one by one as a progress bar), only
        the last three: what comes before them is told, and a tail after them masked."""
        if self._pattern is None:
            return len(text)
        if text[-1:] == "." and len(text) > start:  # (an ellipsis begun, or dots)
            if text.endswith("......") and len(text) - 6 >= start:
                return len(text) - 3
            at = len(text) - 1
        else:
            at = max(text.rfind("...", start), text.rfind("\u2026", start))
            if at < start or _SPACE(text, at):
                return len(text)
        before = text[start:at]
        word = before.rsplit(None, 1)[-1] if before and not before[-1].isspace() else ""
        return at - len(word)

    def _masked(self, match: re.Match[str]) -> str:
        head, tail = match["head"], match["tail"]
        if head is not None:
            return self._masked_head(head)
        if any(value.endswith(tail) for value in self._values):
            return match["cut"] + MASK
        return match[0]

    def _masked_head(self, word: str) -> str:
        """``word`` (up to an ellipsis) with the secret's head that ends it masked. The
        match begins at the first head-like start of the word, so a secret shown whole
        before its cut-short copy (``tok-9f8e7d6c5b4a&retry=tok-9f8e7d...``) began a
        match that was no head: the copy's head was left in clear."""
        for begun in self._head_starts(word):
            start = begun.start()
            if any(value.startswith(word[start:]) for value in self._values):
                return word[:start] + MASK
        return word
