"""A cached call's key: its arguments bound to the function's parameters, each hashed,
with the function's code digest (see :mod:`dagnb.cache.memory`)."""

from __future__ import annotations

import functools
import inspect
import io
import time
import types
import warnings
from collections.abc import AsyncIterator, Callable, Iterable, Iterator, Mapping
from typing import Any, Generic, ParamSpec

from dagnb.cache.keys import (
    CACHE_FORMAT,
    StepKey,
    code_text,
    environ_digests,
    environ_shown,
    key_digest,
    shown,
)
from dagnb.checks import user_stacklevel
from dagnb.errors import ConfigError, FingerprintError
from dagnb.fingerprint import (
    code_with_values,
    environ_read,
    global_values,
    object_digest,
    signature_of,
    text_digest,
    value_digest,
)
from dagnb.fingerprint.code import PARTIAL_LABEL, partial_arguments

__all__ = ["CallKeys", "label", "plain_parameters", "target_of"]

P = ParamSpec("P")


def target_of(func: Callable[..., Any]) -> Callable[..., Any]:
    """The function a ``functools.partial`` (however nested) ends up calling."""
    while isinstance(func, functools.partial):
        func = func.func
    return func


def label(func: Callable[..., Any]) -> str:
    """A short name for messages."""
    target = target_of(func)
    return getattr(target, "__name__", None) or type(target).__name__


_PLAIN = inspect.Parameter.POSITIONAL_OR_KEYWORD
_NO_DEFAULT = inspect.Parameter.empty


SLOW_GLOBAL = 0.05  # seconds hashing a global takes from which a cached function says so


class CallKeys(Generic[P]):
    """Turns a call's arguments into a key; the signature is bound once.

    A function whose parameters are all plain (no ``*args``, ``**kwargs``, positional- or
    keyword-only ones) has its calls bound without ``Signature.bind``, which costs more
    than hashing small arguments: every hit pays for the binding.
    """

    __slots__ = ("defaults", "func", "ignore", "keyed", "labels", "names", "opaque",
                 "slow", "template", "unhashed")

    def __init__(self, func: Callable[P, Any], ignore: Iterable[str]) -> None:
        self.func = func
        self.ignore = frozenset(ignore)
        # what the code digest is taken of: a partial's arguments ignore= names left out
        self.keyed: Callable[..., Any] = _leaving_out(func, self.ignore)
        self.unhashed: set[str] = set()  # globals warned of (_variable_digest, warn_of_state)
        self.slow: set[str] = set()  # globals warned of as slow to hash (_said_slow)
        plain = plain_parameters(func)
        self.opaque = plain is None and not _has_signature(func)
        if plain is None:
            parameters = list(self.signature.parameters.values())
            every = tuple(p.name for p in parameters)
            simple = all(p.kind is _PLAIN for p in parameters)
            self.names = every if simple else None  # None: bind()
            self.defaults = {p.name: p.default for p in parameters
                             if p.default is not _NO_DEFAULT}
        else:
            every, self.defaults = plain
            self.names = every
        known = [*every, *(name for name in _bound_names(func) if name not in every)]
        unknown = self.ignore.difference(known)
        if unknown:
            raise ConfigError(  # (a ValueError, as joblib's is)
                f"ignore={sorted(unknown)!r} names no parameter of {label(func)}; "
                f"choose among its parameters {known!r}"
            )
        self.labels = _labels(every)  # component names (shared: only read)
        self.template = (_key_template(self.names)
                         if self.names is not None and not self.ignore else None)

    def copy(self, func: Callable[P, Any] | None) -> CallKeys[P]:
        """The same keys for ``func`` (the very function they were made for, or None: a
        copy kept to make others from, which keeps no function alive), with warnings of
        their own (a function cached again is warned of anew), made without reading the
        function again."""
        keys: CallKeys[P] = object.__new__(CallKeys)
        keys.func, keys.ignore, keys.opaque, keys.names = (
            func, self.ignore, self.opaque, self.names)
        keys.keyed = func if self.keyed is self.func else self.keyed
        keys.defaults, keys.labels, keys.template = self.defaults, self.labels, self.template
        keys.unhashed, keys.slow = set(), set()
        return keys

    @property
    def signature(self) -> inspect.Signature:
        """The function's signature (a call that does not fit plain parameters binds)."""
        return _AS_GIVEN if self.opaque else signature_of(self.func)

    def arguments(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any]:
        """The bound arguments that count (defaults applied, ignored ones left out)."""
        bound = self._plain(args, kwargs) if self.names is not None else None
        if bound is None:
            try:
                signature = self.signature.bind(*args, **kwargs)
            except TypeError as exc:  # (bind's words name no function)
                hint = _method_hint(self.func, self.signature, args)
                raise TypeError(f"{label(self.func)}(): {exc}{hint}") from None
            signature.apply_defaults()
            bound = signature.arguments
        if not self.ignore:
            return bound
        return {k: v for k, v in bound.items() if k not in self.ignore}

    def _plain(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> dict[str, Any] | None:
        """``bind`` for plain parameters, in their order; None when the call does not fit
        them (then ``bind`` raises the TypeError Python would)."""
        names = self.names
        assert names is not None
        if len(args) > len(names):
            return None
        bound = dict(zip(names, args, strict=False))  # fewer args: the rest below
        if not kwargs and len(args) == len(names):
            return bound
        if any(name in kwargs for name in bound) or not kwargs.keys() <= set(names):
            return None  # given twice, or unknown
        for name in names[len(args):]:
            if name in kwargs:
                bound[name] = kwargs[name]
            elif name in self.defaults:
                bound[name] = self.defaults[name]
            else:
                return None  # missing
        return bound

    def digest(self, args: tuple[Any, ...], kwargs: dict[str, Any]) -> str:
        """``key_digest(self.components(args, kwargs))``: for a call with every argument
        given by position (every hit's, usually) of a function that reads no data from
        globals, the key's text is filled into the template made once, without the dict
        and the sort."""
        code = code_with_values(self.keyed)
        template = self.template
        if (template is not None and not code[1] and not kwargs
                and len(args) == len(self.labels) and not environ_read(self.keyed)):
            try:
                return text_digest(template.format(code[0], *map(value_digest, args)))
            except FingerprintError as exc:
                raise self._named(exc, args, kwargs) from exc.__cause__
        return key_digest(self.components(args, kwargs, code))

    def components(self, args: tuple[Any, ...], kwargs: dict[str, Any],
                   code: tuple[str, Mapping[str, Any]] | None = None) -> dict[str, str]:
        """The key's parts: the code's, one ``arg:<name>`` an argument, one
        ``var:<name>`` a global the code reads data from (hashed at each call, as a
        step's are at each run: a dict changed in place, or in another process, counts)."""
        # (code None: a miss about to run, stored under its inputs as they are now)
        digest, variables = code_with_values(self.keyed, fresh=True) if code is None else code
        components = {"format": CACHE_FORMAT, "code": digest}
        names, labels = self.names, self.labels
        try:
            if names is not None and not kwargs and len(args) == len(names) and not self.ignore:
                for name, value in zip(names, args, strict=True):  # every hit: no binding
                    components[labels[name]] = value_digest(value)
            else:
                for name, value in self.arguments(args, kwargs).items():
                    components[labels[name]] = value_digest(value)
        except FingerprintError as exc:
            raise self._named(exc, args, kwargs) from exc.__cause__
        for name, value in variables.items():
            components[f"var:{name}"] = self._variable_digest(name, value)
        components.update(environ_digests(self.keyed))  # (``os.environ["REGION"]``)
        return components

    def _named(self, exc: FingerprintError, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> FingerprintError:
        """``exc`` naming the argument that cannot be hashed and the ``ignore=`` that
        leaves it out: the fingerprint layer knows values, not parameters. Only on the
        way to an error: a call's arguments are hashed once more to find it."""
        for name, value in self.arguments(args, kwargs).items():
            try:
                value_digest(value)
            except FingerprintError as bad:
                kind = f"{type(value).__module__}.{type(value).__qualname__}"
                return FingerprintError(
                    f"{label(self.func)}: argument {name!r} cannot be fingerprinted (a "
                    f"{kind!r}: {bad.__cause__ or bad}); {_way_out(name, value)}")
        return exc

    def _variable_digest(self, name: str, value: Any) -> str:
        """A global's value digest; one that cannot be hashed (a connection, a lock)
        counts by its type, with a warning once: every call would run otherwise. A
        method's object (``self``) has no such way out: objects of one class would share
        entries (FingerprintError, as before the call runs)."""
        if name == "self":
            return object_digest(value)
        if name.startswith(PARTIAL_LABEL):
            return self._bound_digest(name[len(PARTIAL_LABEL):], value)
        try:
            began = time.perf_counter()
            digest = value_digest(value)
            seconds = time.perf_counter() - began
            if seconds > SLOW_GLOBAL and name not in self.slow:
                self._said_slow(name, value, seconds)
            return digest
        except FingerprintError as exc:
            if name not in self.unhashed:
                self.unhashed.add(name)
                warnings.warn(
                    f"{label(self.func)}: global {name!r} ({type(value).__qualname__}) cannot "
                    f"be hashed ({exc.__cause__ or exc}); it counts by its type only, so a "
                    "change to it is not seen (pass what the function needs of it as an argument)",
                    stacklevel=user_stacklevel())
            return text_digest(f"type:{type(value).__module__}.{type(value).__qualname__}")

    def _said_slow(self, name: str, value: Any, seconds: float) -> None:
        """Warn, once a global, that hashing it costs each call ``seconds``: a
        vocabulary of 300,000 words made each hit take 0.7 s, a cache slower than what
        it saved. Its way out is joblib's, a change to it then unseen."""
        self.slow.add(name)
        size = f" of {len(value):,} items" if hasattr(value, "__len__") else ""
        warnings.warn(
            f"{label(self.func)}: global {name!r} (a {type(value).__qualname__}{size}) takes "
            f"{seconds:.2f} s to hash, at each call, hit or miss: a cached function is keyed "
            "on the globals it reads, so that a change to them is seen; if this one does "
            "not change, pass it as an argument that ignore= names (joblib's way: a change "
            "to it is then not seen)", stacklevel=user_stacklevel())

    def _bound_digest(self, name: str, value: Any) -> str:
        """An argument the partial binds (its code digest leaves them out when one cannot
        be hashed): as one given at the call, refused rather than counted by its type
        (two clients would share entries)."""
        try:
            return value_digest(value)
        except FingerprintError as exc:
            kind = f"{type(value).__module__}.{type(value).__qualname__}"
            raise FingerprintError(
                f"{label(self.func)}: argument {name!r} the functools.partial binds cannot "
                f"be fingerprinted (a {kind!r}: {exc.__cause__ or exc}); leave it out of "
                f"the key with memory.cache(..., ignore=[{name!r}]), or bind plain data "
                "instead") from None

    def warn_of_state(self, components: Mapping[str, str]) -> None:
        """After a call ran: a global it read and changed (``calls.append(x)``) is state,
        not input; keyed by it, every call misses. Say so, once a name."""
        read = [key[4:] for key in components if key.startswith("var:")]
        if not read:
            return
        now = global_values(self.keyed)
        for name in read:
            if name in now and name not in self.unhashed and self._variable_digest(
                    name, now[name]) != components[f"var:{name}"]:
                self.unhashed.add(name)  # (warned of: once)
                warnings.warn(
                    f"{label(self.func)} changed global {name!r}, which it reads: the key "
                    "of its calls holds that global's value, so each call misses; keep "
                    "such state out of a cached function", stacklevel=user_stacklevel())

    def step_key(
        self, components: dict[str, str], args: tuple[Any, ...], kwargs: dict[str, Any],
        mask: Callable[[str], str] | None = None,
    ) -> StepKey:
        """The full key, with descriptions for explain (only built on a miss): the code
        as a step's is described (no values of the constants it reads), each description
        masked by ``mask`` (the secrets in force: a step's), each argument as a global
        is (one holding a secret-named variable's value: by its type and size, as
        ``fetch(n, os.environ["API_TOKEN"])`` stored its token); digests unchanged."""
        describe = {"code": code_text(components["code"], self.keyed)}
        for name, value in self.arguments(args, kwargs).items():
            describe[f"arg:{name}"] = shown(name, value, mask)
        for name, value in global_values(self.keyed).items():
            describe[f"var:{name}"] = shown(name, value, mask)
        describe.update(environ_shown(components))
        if mask is not None:
            describe = {label: mask(text) for label, text in describe.items()}
        return StepKey(key_digest(components), components, describe)


def _way_out(name: str, value: Any) -> str:
    """What to do about an argument no hash takes: data read by the call (a generator,
    an iterator, a file) passed as plain data, since left out of the key every call
    would return the first's result; anything else (a connection, a lock, a client,
    which does not change the result) left out of the key."""
    if isinstance(value, io.IOBase):
        return "pass its path (or its contents) instead: what it holds is the call's input"
    if isinstance(value, (Iterator, AsyncIterator)):
        return ("pass plain data instead, such as a list (list(...) of it): it is data the "
                "call reads, which left out of the key (ignore=) would make every call "
                "return the first one's result")
    return (f"leave it out of the key with @memory.cache(ignore=[{name!r}]), or pass "
            "plain data instead")


def _method_hint(func: Callable[..., Any], signature: inspect.Signature,
                 args: tuple[Any, ...]) -> str:
    """For a call of a method that does not fit: how to give its cache controls the
    object, when it was not given. ``obj.fit.call(x)`` reaches the function's ``call``
    through the bound method, which passes ``obj`` to calls of the method, not to its
    attributes: ``x`` is taken for ``self``. (Only on the way to an error.)"""
    first = next(iter(signature.parameters), None)
    if first not in ("self", "cls"):
        return _set_on_a_class_hint(func, args)
    if args:  # the object given (a call through the bound method itself): no hint
        owner = args[0] if first == "cls" else type(args[0])
        member = inspect.getattr_static(owner, getattr(func, "__name__", ""), None)
        if func in (getattr(member, "__wrapped__", None),
                    getattr(getattr(member, "__func__", None), "__wrapped__", None)):
            return ""
    name = ".".join(str(getattr(func, "__qualname__", label(func))).split(".")[-2:])  # Model.fit
    given = (name.rpartition(".")[0] or "cls") if first == "cls" else "obj"
    return (f"; {name} is a method: give it the {'class' if first == 'cls' else 'object'} "
            f"first ({name}.check_call_in_cache({given}, ...)): a bound method passes it to "
            "calls, not to .call(), .check_call_in_cache() or .call_and_shelve()")


def _set_on_a_class_hint(func: Callable[..., Any], args: tuple[Any, ...]) -> str:
    """For a call with an argument too many of a function cached outside a class body
    and set on a class since (``Dataset._read = memory.cache(read_csv)``): its wrapper,
    a function, is given the instance first, as any function set on a class is (one
    cached in the class body is a static method). (Only on the way to an error.)"""
    if not args:
        return ""
    for owner in type(args[0]).__mro__:
        for name, member in vars(owner).items():
            if _given_the_object(member) and member.__dict__.get("func") is func:
                where = f"{owner.__qualname__}.{name}"
                return (f"; {where} is a cached function set on a class, which passes the "
                        f"object first, as to any function set on a class; set it as "
                        f"{where} = staticmethod(memory.cache({label(func)})), or cache it "
                        "in the class body")
    return ""


def _given_the_object(member: Any) -> bool:
    """Whether a class's member, called through an instance, is given it first: a
    function, or an object that binds as one (a cached function its module names
    itself, ``memory.cache(read_csv)``, is such an object, see dagnb.cache.memory), not
    a static or class method."""
    return type(member) is types.FunctionType or (
        hasattr(type(member), "__get__") and hasattr(member, "__dict__")
        and not isinstance(member, (staticmethod, classmethod)))


def _bound_names(func: Callable[..., Any]) -> list[str]:
    """The parameters a ``functools.partial`` (however nested) binds, which ``ignore=``
    may name as joblib's does (``partial(fetch, client)``, ``ignore=["client"]``)."""
    names: list[str] = []
    while isinstance(func, functools.partial):
        names += partial_arguments(func)
        func = func.func
    if (name := _self_name(func)) is not None:
        names.append(name)
    return names


def _self_name(func: Any) -> str | None:
    """The name a bound method's function gives the object it is bound to (``self``,
    ``cls``), which ``ignore=`` may name, as joblib's: the object then counts in no key
    (a database connection, a session); None for anything else."""
    if not isinstance(func, types.MethodType):
        return None
    code = getattr(func.__func__, "__code__", None)
    return code.co_varnames[0] if code is not None and code.co_argcount else None


class _LeftOut:
    """What stands in a partial's code digest for a bound argument ``ignore=`` names."""

    __slots__ = ()

    def __reduce__(self) -> tuple[Any, ...]:
        return _LeftOut, ()


_LEFT_OUT = _LeftOut()


def _leaving_out(func: Callable[..., Any], ignore: frozenset[str]) -> Callable[..., Any]:
    """``func``, or a partial that binds ``_LEFT_OUT`` where it bound an argument
    ``ignore`` names: what the key's code digest is taken of (never called)."""
    if isinstance(func, types.MethodType) and _self_name(func) in ignore:
        return func.__func__  # (its code and what it reads, not the object)
    if not isinstance(func, functools.partial) or not ignore.intersection(_bound_names(func)):
        return func
    inner = _leaving_out(func.func, ignore)
    args = tuple(_LEFT_OUT if name in ignore else value
                 for name, value in zip(_positional_names(func), func.args, strict=True))
    keywords = {name: _LEFT_OUT if name in ignore else value
                for name, value in func.keywords.items()}
    return functools.partial(inner, *args, **keywords)


def _positional_names(func: functools.partial[Any]) -> list[str]:
    """The parameter each argument a partial binds by position fills (``*args``' name
    for each one it takes), as :func:`partial_arguments` names them."""
    names = list(partial_arguments(functools.partial(func.func, *func.args)))
    return [names[min(at, len(names) - 1)] for at in range(len(func.args))]


_AS_GIVEN = inspect.Signature([
    inspect.Parameter("args", inspect.Parameter.VAR_POSITIONAL),
    inspect.Parameter("kwargs", inspect.Parameter.VAR_KEYWORD),
])
"""What a callable with no signature inspect can read binds to (``max``,
``operator.itemgetter(0)``): its calls count by their arguments as given, as joblib's do."""


def _has_signature(func: Callable[..., Any]) -> bool:
    """Whether inspect reads ``func``'s signature (C code may not declare one)."""
    try:
        signature_of(func)
    except ValueError:
        return False
    return True


@functools.lru_cache(maxsize=256)  # (a notebook wraps the same parameters again and again)
def _labels(names: tuple[str, ...]) -> dict[str, str]:
    """Each parameter's key component name."""
    return {name: f"arg:{name}" for name in names}


@functools.lru_cache(maxsize=256)  # (a notebook wraps the same parameters again and again)
def _key_template(names: tuple[str, ...]) -> str:
    """What :func:`~dagnb.cache.keys.key_digest` hashes for a call of these parameters,
    as a ``str.format`` template: ``{0}`` the code's digest, ``{1}``... the arguments'
    in the parameters' order."""
    fields = {"format": CACHE_FORMAT.replace("{", "{{").replace("}", "}}"), "code": "{0}"}
    fields.update({f"arg:{name}": f"{{{i}}}" for i, name in enumerate(names, start=1)})
    return "".join(f"{name}={fields[name]}\n" for name in sorted(fields))


_NOT_PLAIN = inspect.CO_VARARGS | inspect.CO_VARKEYWORDS


def plain_parameters(func: Callable[..., Any]) -> tuple[tuple[str, ...], dict[str, Any]] | None:
    """The parameter names and defaults of a plain function (no ``*args``, ``**kwargs``,
    positional- or keyword-only parameters, no signature of its own), read from its
    code: cheaper than ``inspect.signature``. None for anything else."""
    if type(func) is not types.FunctionType or "__wrapped__" in func.__dict__ or (
            "__signature__" in func.__dict__):
        return None
    code = func.__code__
    if code.co_flags & _NOT_PLAIN or code.co_posonlyargcount or code.co_kwonlyargcount:
        return None
    names = code.co_varnames[:code.co_argcount]
    values = func.__defaults__ or ()
    return names, dict(zip(names[len(names) - len(values):], values, strict=True))
