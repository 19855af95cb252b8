"""Python function steps in a container: the function's source plus a small shim.

The container has its own ``python3`` and no dagnb, so the function travels as source:
``inspect.getsource``, dedented, decorators stripped, preceded by the imports of the
modules it uses and the module-level constants and helper functions it names. A module
edited on disk and not reloaded runs the text it was imported from, which its key
describes (:mod:`dagnb.fingerprint.imported`): its functions travel as that text, not
the file's new one; one edited before dagnb first read it has no such text, and its
step is refused in one line saying how to load the new code.

The project's own modules the function reaches (``helpers`` beside the steps module or
the notebook, a package of the project: its globals' modules, those its pickled values
refer to, its body's imports) travel with it as source too, as :mod:`.shipped` sends
them to dask workers (the imported text of one edited since; one edited before dagnb
read it, or holding a value its text does not set, refused in one line), in a file
beside the step's; the shim imports them from that text, ahead of the image's own path,
with :mod:`dagnb.executors.served` (its file sent along: the image has no dagnb). The
container needs no copy of the project, and an older one on its path is not used. A step
whose code imports dagnb gets :mod:`.standin` too, a ``dagnb`` with ``current()`` alone,
last on the path (an image's own dagnb wins), as the step contract offers
``dagnb.current()`` on every executor. The shim
(below, stdlib only) reads params from ``$DAGNB_PARAMS`` and upstream results from
``$DAGNB_IN/<name>/result.json|result.pkl`` (an upstream without a result is passed as
the ``pathlib.Path`` of its folder, as on the local executor), calls the function
(coroutines through ``asyncio.run``) and writes the return value to ``$DAGNB_OUT`` as
JSON when it round-trips exactly, pickle otherwise (the rule of :mod:`dagnb.model.results`).
A ``result.json`` (or ``.pkl``) the step wrote there itself is its result when it returned
None, kept as written (it must load), and never overwritten: a step that returned a value
too fails, as on the local executor (:func:`~dagnb.model.results.own_result`).

The function runs in a forked child, which tells the shim through a pipe how it ended:
returned, raised, or ``sys.exit()`` (which ends the step as a script: 0 succeeds with
no result, as on the local executor). A child that ends without telling, by
``os._exit()`` or a native ``exit()``, made no result: the shim fails the exec whatever
its exit code (0 too, or the engine would cache the exec and dagnb store it) and says so
on its last stderr line, as it does for a function that raised and for a non-zero
``sys.exit()`` (its 137 is no kill by SIGKILL: :func:`ending`). A ``--python`` cell's
``--outputs`` name its code did not reach (the UnboundLocalError of the return line
dagnb wrote, whose line in the shipped text the shim's spec holds) is told by its name,
with no traceback, and failed in the local executor's words. The
success path costs the engine no query more than before; a fork, no second interpreter.

Globals the function reads travel by value, as the cache key counts them: a literal as
its ``repr``, anything else (a set, a DataFrame, a compiled regex) pickled into the
module. One that cannot be (a lock, a client, an object of a class defined beside the
function, which the container cannot import) or that holds one of the step's secrets
is refused before the step runs, in one line naming it; so is one that holds a secret of
another step's (withheld from this one) or a registry's password.

Limits: the function and its helpers need retrievable source (not a lambda); pickled
values and results need the same classes importable on both sides.
"""

from __future__ import annotations

import ast
import base64
import functools
import inspect
import io
import json
import pickle
import re
import sys
import textwrap
import types
from collections.abc import Callable, Mapping
from typing import Any

from dagnb.errors import ExecutorError, InvalidStepError
from dagnb.executors import served, shipped
from dagnb.executors.dagger import standin
from dagnb.fingerprint import loaded_globals
from dagnb.fingerprint.imported import IMPORTED, stale_line
from dagnb.fingerprint.loaded import loaded_from_file
from dagnb.fingerprint.sources import (  # (the key's own reading of a kept text)
    _block_of,
    _in_libraries,
)
from dagnb.model.masking import SecretFinder
from dagnb.model.results import PUBLISHED_AS
from dagnb.model.step import Step

__all__ = ["MODULES_PATH", "SERVED_PATH", "SHIM_PATH", "SOURCE_PATH", "STANDIN_FOLDER",
           "TRAVELS_AS_SOURCE", "ending", "python_argv", "python_files"]

SOURCE_PATH = "/dagnb/step/step_source.py"
SHIM_PATH = "/dagnb/step/shim.py"
# the project's modules the step reaches, and the code that imports them (sent with them)
MODULES_PATH = "/dagnb/step/modules.json"
SERVED_PATH = "/dagnb/step/served.py"
# dagnb's stand-in (:mod:`.standin`: current() alone), sent to a step whose code names
# dagnb, as dagnb.py in this folder, which the shim puts last on the path
STANDIN_FOLDER = "/dagnb/step/standin"
# set on a dagnb function a cell's code calls (its last expression's display): it needs
# only the standard library, and travels as its source, as the container has no dagnb
TRAVELS_AS_SOURCE = "_dagnb_travels_as_source"
_PROTOCOL = 4  # pickled globals: readable by any python3 an image may have (3.4+)
_FIX = "pass it as a parameter, or define it inside the function"
# Starts the shim's last stderr line when the step raised or ended without telling it
# how (:func:`ending`); the executor takes the line out of the step's output.
_MARKER = "dagnb-step-ended: "
# (not always at a line's start: the step's last line may be unended)
_ENDED = re.compile(re.escape(_MARKER) + r"(raised|exit|died \d+|unreached \w+|wrote result\.\w+"
                    r"|unloadable result\.\w+: [^\n]*)(?:\n|\Z)")

_SHIM = '''\
"""dagnb's container shim: call one step function under the dagnb step contract.

The step runs in a forked child that tells this process, through a pipe, how it ended;
one that ends without telling (os._exit(), a native exit()) made no result, and its
exec must not succeed, or the engine would cache it."""
import asyncio, base64, importlib.util, inspect, json, math, os, pathlib, pickle, re
import signal, sys, traceback

SPEC = json.loads(%(spec)r)
MARKER = %(marker)r
SERVED = None  # dagnb's served.py, once loaded


def serve_modules():
    """The project's modules the step reaches, imported from the text sent with it,
    ahead of the image's own path (by dagnb's served.py, sent too)."""
    global SERVED
    if "modules" not in SPEC:
        return
    spec = importlib.util.spec_from_file_location("dagnb_served", SPEC["served"])
    served = SERVED = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(served)
    with open(SPEC["modules"], encoding="utf-8") as handle:
        sent = json.load(handle)
    served.serve({name: (file, None if text is None else base64.b64decode(text), folders)
                  for name, (file, text, folders) in sent.items()})


def serve_dagnb():
    """dagnb's stand-in (current() alone), last on the path: an image's own dagnb wins."""
    if "standin" in SPEC:
        sys.path.append(SPEC["standin"])


def load_function():
    spec = importlib.util.spec_from_file_location("dagnb_step", SPEC["source"])
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return getattr(module, SPEC["function"])


def upstream(name):
    folder = pathlib.Path(os.environ["DAGNB_IN"]) / name
    if (folder / "result.json").exists():
        return json.loads((folder / "result.json").read_text(encoding="utf-8"))
    if (folder / "result.pkl").exists():
        with open(folder / "result.pkl", "rb") as handle:
            return pickle.load(handle)
    return folder


def json_exact(value):
    kind = type(value)
    if value is None or kind in (str, bool, int):
        return True
    if kind is float:
        return math.isfinite(value)
    if kind is list:
        return all(json_exact(item) for item in value)
    if kind is dict:
        return all(type(k) is str and json_exact(v) for k, v in value.items())
    return False


class Refused(Exception):
    """The step's result cannot be saved: ``told`` says why, as the executor reads it."""

    def __init__(self, told):
        super().__init__(told)
        self.told = told


def own_result(out):
    """The result file the step wrote itself in ``out``, or None."""
    return next((name for name in ("result.json", "result.pkl") if (out / name).exists()),
                None)


def check_loads(path):
    """A step's own result file, its result, must load (as dagnb reads it)."""
    try:
        if path.suffix == ".json":
            json.loads(path.read_bytes())
        else:
            with open(path, "rb") as handle:
                pickle.load(handle)
    except Exception as exc:
        raise Refused("unloadable %%s: %%s" %% (path.name, " ".join(str(exc).split())))


def save(value):
    """Write the step's value, as dagnb's save_result does; a step's own result file
    (returned None) is its result, kept as written; with a value too, it is refused."""
    out = pathlib.Path(os.environ["DAGNB_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    own = own_result(out)
    if own is not None:
        if value is not None:
            raise Refused("wrote " + own)
        check_loads(out / own)
        return
    if json_exact(value):
        text = json.dumps(value, allow_nan=False)
        if json.loads(text) == value:
            (out / "result.json").write_text(text, encoding="utf-8")
            return
    with open(out / "result.pkl", "wb") as handle:
        pickle.dump(value, handle, protocol=min(5, pickle.HIGHEST_PROTOCOL))


def main():
    serve_modules()
    serve_dagnb()
    func = load_function()
    with open(os.environ["DAGNB_PARAMS"], encoding="utf-8") as handle:
        params = json.load(handle)
    kwargs = {}
    for name in inspect.signature(func).parameters:
        if name in SPEC["inputs"]:
            kwargs[name] = upstream(name)
        elif name in params:
            kwargs[name] = params[name]
    result = func(**kwargs)
    if inspect.iscoroutine(result):
        result = asyncio.run(result)
    save(result)


def report(exc):
    """The traceback from the step's own frames on, as the local executor logs it."""
    tb = exc.__traceback__
    while tb is not None and tb.tb_frame.f_code.co_filename == __file__:
        tb = tb.tb_next
    if SERVED is not None:
        SERVED.explain_unshipped(exc, "put the project in the image")
    dagnb = sys.modules.get("dagnb")
    if "standin" in SPEC and os.path.dirname(getattr(dagnb, "__file__", "")) == SPEC["standin"]:
        dagnb.explain(exc)  # (an import of what the stand-in has not)
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)


def unreached_output(exc):
    """The --outputs name of a cell whose code did not reach an assignment to it: the
    UnboundLocalError of the return line dagnb wrote (SPEC's "unreached"); else None."""
    unreached = SPEC.get("unreached")
    if unreached is None or not isinstance(exc, UnboundLocalError):
        return None
    raised = traceback.extract_tb(exc.__traceback__)[-1]
    named = re.search(r"'(\\w+)'", str(exc))
    if ((raised.filename, raised.lineno) != (SPEC["source"], unreached["line"])
            or named is None or named[1] not in unreached["outputs"]):
        return None
    return named[1]


def run_step(channel):
    """In the child: the step, then how it ended, told on ``channel``; sys.exit() ends
    it as it ends a script (its status, a text printed)."""
    try:
        main()
    except SystemExit:
        os.write(channel, b"exit")
        raise
    except Refused as exc:  # (no traceback: the executor words it)
        os.write(channel, exc.told.encode())
        sys.exit(1)
    except BaseException as exc:
        output = unreached_output(exc)
        if output is None:
            report(exc)  # (no frame of a line dagnb wrote would help: only its name)
        told = "raised" if output is None else "unreached " + output
        os.write(channel, told.encode())
        sys.exit(1)
    os.write(channel, b"returned")
    sys.exit(0)


def forward_signals(pid):
    """SIGTERM and SIGINT reach the step, as they would without the fork."""
    def send(number, frame):
        try:
            os.kill(pid, number)
        except OSError:  # it has ended
            pass

    for number in (signal.SIGTERM, signal.SIGINT):
        signal.signal(number, send)


def supervise():
    """The exit status of the step's child; a line for the executor when it failed
    (its sys.exit(137) is no kill: the exit status alone cannot tell)."""
    reader, channel = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(reader)
        run_step(channel)
    os.close(channel)
    forward_signals(pid)
    status = os.waitpid(pid, 0)[1]
    if os.WIFSIGNALED(status):
        return 128 + os.WTERMSIG(status)  # as a shell reports a killed command
    code = os.WEXITSTATUS(status)
    os.set_blocking(reader, False)  # a process the step left may hold the pipe open
    try:
        told = os.read(reader, 4096).decode()
    except BlockingIOError:
        told = ""
    if told == "returned" or (told == "exit" and code == 0):
        return code
    print(MARKER + (told or "died %%d" %% code), file=sys.stderr, flush=True)
    return code or 1


if __name__ == "__main__":
    sys.exit(supervise())
'''


def python_files(step: Step, inputs: list[str],
                 secrets: Mapping[str, str] | None = None) -> dict[str, str]:
    """Container path -> text of the files a Python function step needs; ``secrets``
    (name -> value): every secret the run knows for it (its own, other steps', the
    registries'), which no global or module it ships may hold."""
    func = step.func
    if func is None:
        raise InvalidStepError(f"step {step.name!r} has no Python function")
    parts = _collected(func, step.name, secrets)
    files = {SOURCE_PATH: parts.text()}
    spec: dict[str, Any] = {"source": SOURCE_PATH, "function": func.__name__,
                            "inputs": sorted(inputs)}
    return_line = _shipped_return_line(func, files[SOURCE_PATH])
    if return_line:  # (a --python cell with --outputs: see unreached_output in the shim)
        spec["unreached"] = {"line": return_line, "outputs": list(getattr(func, PUBLISHED_AS))}
    modules = parts.project_modules(home=func.__module__)
    if modules:  # (a step without any keeps its files, and so its exec's cache key)
        files[MODULES_PATH] = _modules_text(modules)
        files[SERVED_PATH] = _served_text()
        spec.update(modules=MODULES_PATH, served=SERVED_PATH)
    if parts.names_dagnb(modules):  # (as with modules: a step naming none keeps its files)
        files[f"{STANDIN_FOLDER}/dagnb.py"] = _standin_text()
        spec["standin"] = STANDIN_FOLDER
    files[SHIM_PATH] = _SHIM % {"spec": json.dumps(spec), "marker": _MARKER}
    return files


def _shipped_return_line(func: Callable[..., Any], module: str) -> int | None:
    """The line of the step's ``module`` text that is the line a --python cell's function
    returns its outputs on (``_dagnb_return_line``): unparsing it moved that line."""
    line = getattr(func, "_dagnb_return_line", None)
    if line is None:
        return None
    written = ast.parse(textwrap.dedent(inspect.getsource(func))).body[0]
    path = _statement_path(written, line - func.__code__.co_firstlineno + 1)
    shipped = next(node for node in ast.parse(module).body
                   if isinstance(node, ast.FunctionDef) and node.name == func.__name__)
    for index in path or ():
        shipped = shipped.body[index]
    return shipped.lineno if path else None


def _statement_path(node: ast.AST, line: int) -> list[int]:
    """The indices, body by body through ``node``'s nested functions, of its statement
    on ``line``; [] if none."""
    for index, statement in enumerate(getattr(node, "body", ())):
        if statement.lineno == line:
            return [index]
        if isinstance(statement, ast.FunctionDef) and (
                statement.lineno < line <= (statement.end_lineno or 0)):
            inner = _statement_path(statement, line)
            return [index, *inner] if inner else []
    return []


def python_argv() -> list[str]:
    """The command that runs the shim with the image's own interpreter."""
    return ["python3", SHIM_PATH]


def ending(stderr: str) -> tuple[str, str]:
    """How a failed Python step ended, as the shim's last line says: "raised", "died
    <exit code>" (it ended without telling: os._exit()), "exit" for a non-zero exit the
    step chose (sys.exit(3)), "wrote result.json" (its own, and it returned a value),
    "unloadable result.json: <why>" (its own, its result, does not load), "" without the
    line (a kill); and its stderr without that line. The line is the shim's last, not
    always the stderr's: a process the step left running may write after it."""
    found = list(_ENDED.finditer(stderr))  # (the shim writes it once, at its end)
    if not found:
        return stderr, ""
    last = found[-1]
    return stderr[:last.start()] + stderr[last.end():], last.group(1)


def function_module(func: Callable[..., Any], step: str,
                    secrets: Mapping[str, str] | None = None) -> str:
    """Source text of a module defining ``func`` and what it needs from its globals."""
    return _collected(func, step, secrets).text()


def _collected(func: Callable[..., Any], step: str,
               secrets: Mapping[str, str] | None) -> _ModuleParts:
    parts = _ModuleParts(step, SecretFinder(secrets or {}))
    parts.collect(func)
    return parts


def _modules_text(modules: Mapping[str, shipped.Shipped]) -> str:
    """The shipped modules as the shim reads them: name -> [file, source as base64 (None
    for a namespace package), folders], sorted: the text keys the engine's exec cache."""
    entries = (_module_entry(name, file, source, None if folders is None else tuple(folders))
               for name, (file, source, folders) in sorted(modules.items()))
    return "{" + ", ".join(entries) + "}"  # (json.dumps of the dict, as it was)


@functools.lru_cache(maxsize=256)  # (the same bytes object while its file is unchanged)
def _module_entry(name: str, file: str, source: bytes | None,
                  folders: tuple[str, ...] | None) -> str:
    """One module's ``"name": [file, base64, folders]``: encoded once a module version,
    not at each step (a 1 MB module's JSON of its base64: 6 ms)."""
    listed = None if folders is None else list(folders)
    return f"{json.dumps(name)}: {json.dumps([file, _base64(source), listed])}"


def _base64(source: bytes | None) -> str | None:
    return None if source is None else base64.b64encode(source).decode()


@functools.cache
def _served_text() -> str:
    return inspect.getsource(served)


@functools.cache
def _standin_text() -> str:
    return inspect.getsource(standin)


class _ModuleParts:
    """The imports and constants, function bodies, aliases and pickled values of a
    step's module."""

    def __init__(self, step: str, secrets: SecretFinder) -> None:
        self.step = step
        self.secrets = secrets
        self.header: set[str] = set()
        self.bodies: list[str] = []
        self.aliases: set[str] = set()
        self.values: dict[str, bytes] = {}  # name -> pickle
        self.seen: set[str] = set()
        self.imported: dict[str, tuple[bool, list[str] | None]] = {}  # (by module file)
        self.reached = shipped.Reached()  # (the modules the container will import)

    def text(self) -> str:
        """The step's module, as the container loads it."""
        # Helpers known by another name (``twice = _doubled``) are bound once all are defined.
        lines = [*sorted(self.header), "", *reversed(self.bodies), *sorted(self.aliases),
                 *_unpickled(self.values)]
        return "\n".join(lines) + "\n"

    def project_modules(self, home: str) -> dict[str, shipped.Shipped]:
        """The project's modules the functions reach, but ``home``, whose functions the
        step's module holds (unless one of those imports it)."""
        try:
            modules = shipped.project_sources(self.reached.names - {home})
        except ExecutorError as exc:  # (no text of a module as it runs here to send)
            raise InvalidStepError(
                f"step {self.step!r} cannot be sent to the container: {exc}") from None
        for name, (_, source, _) in sorted(modules.items()):
            if source is not None:  # (its text sits in the engine's cache too)
                self.secrets.refuse(source, f"step {self.step!r}: module {name!r}",
                                    "would reach the container in plain text",
                                    "read os.environ[{held!r}] in the module instead, "
                                    "with {held!r} among the step's secrets")
        return modules

    def names_dagnb(self, modules: Mapping[str, shipped.Shipped]) -> bool:
        """Whether the step's code (its functions, or the project ``modules`` sent with
        them) imports dagnb, which the container may have only as :mod:`.standin`."""
        if any(_top(name) == "dagnb" for name in self.reached.names):
            return True
        return any(source is not None and _imports_dagnb(source)
                   for _, source, _ in modules.values())

    def collect(self, func: Callable[..., Any]) -> None:
        if func.__name__ in self.seen:
            return
        self.seen.add(func.__name__)
        if not getattr(func, TRAVELS_AS_SOURCE, False):  # (dagnb's, stdlib only: no dagnb)
            self.reached.note(func)  # (its body's imports)
        self.bodies.append(_undecorated_source(func, self.step, self.imported_lines(func)))
        # Loads only: an attribute's name (``obj.lock``) is no global to ship.
        for name in sorted(loaded_globals(func.__code__)):
            if name in func.__globals__:  # else a builtin or undefined
                self.add_global(name, func.__globals__[name], func)

    def imported_lines(self, func: Callable[..., Any]) -> list[str] | None:
        """``func``'s lines in the text its module was imported from, if the module's
        file holds another text now: the code the kernel runs and the key describes.
        None while the file holds that code (``inspect`` reads it there). One ``stat``
        per module of the user's."""
        unwrapped = inspect.unwrap(func)
        code = getattr(unwrapped, "__code__", None)
        module = sys.modules.get(getattr(unwrapped, "__module__", None) or "")
        file = getattr(module, "__file__", None)
        if module is None or not isinstance(code, types.CodeType) or (
                file != code.co_filename or _in_libraries(file)):
            return None  # (a notebook's: no file; a library's: keyed by its name)
        if file not in self.imported:
            self.imported[file] = IMPORTED.lines_run(module, file)
        stale, lines = self.imported[file]
        if not stale:
            return None
        if lines is None or not loaded_from_file(code, lines):  # (no text of its code)
            raise InvalidStepError(f"step {self.step!r} cannot be sent to the container: "
                                   f"{stale_line(module.__name__, file, gone=True)}")
        return _block_of(code, lines)

    def add_global(self, name: str, value: Any, func: Callable[..., Any]) -> None:
        if isinstance(value, types.ModuleType):
            self.header.add(_import_line(name, value))
            self.reached.note(value)
        elif isinstance(value, types.FunctionType) and (
                value.__module__ == func.__module__ or getattr(value, TRAVELS_AS_SOURCE, False)):
            self.collect(value)
            if name != value.__name__:
                self.aliases.add(f"{name} = {value.__name__}")
        elif _importable(value, func.__module__):
            # (dagnb.current as ``from dagnb import current``: the stand-in has that name)
            module = "dagnb" if _is_current(value) else value.__module__
            self.header.add(f"from {module} import {value.__qualname__} as {name}")
            self.reached.names.add(module)
        else:
            self.add_value(name, value, func.__module__)

    def add_value(self, name: str, value: Any, home: str) -> None:
        """A literal as its text; anything else pickled, which the container must be
        able to load: nothing that only the function's own module defines."""
        if _is_literal(value):
            text = _literal_text(value)
            self.refuse_secret(name, text.encode())
            self.header.add(f"{name} = {text}")
            return
        data, defined_here = _pickled(value, home, self.problem(name, value), self.reached)
        if defined_here:
            raise self.problem(name, value)(
                f"it refers to {defined_here!r}, defined beside the function, which the "
                "container cannot import; pass plain values as parameters, or define "
                f"{defined_here!r} and build the value inside the function")
        self.refuse_secret(name, data)
        self.values[name] = data

    def refuse_secret(self, name: str, data: bytes) -> None:
        # The module travels in the query and sits in the engine's cache: no secret in it.
        self.secrets.refuse(data, f"step {self.step!r}: global {name!r}",
                            "would reach the container in plain text",
                            "read os.environ[{held!r}] inside the function instead, "
                            "with {held!r} among the step's secrets")

    def problem(self, name: str, value: Any) -> Callable[[str], InvalidStepError]:
        def error(why: str) -> InvalidStepError:
            return InvalidStepError(
                f"step {self.step!r}: global {name!r} ({type(value).__name__}) cannot be "
                f"sent to the container: {why}")
        return error


def _undecorated_source(func: Callable[..., Any], step: str,
                        lines: list[str] | None = None) -> str:
    """``func``'s definition without decorators, from ``lines`` (its own) or else its
    file as it is: its text as written, from its ``def`` (``ast.unparse`` of it wrote
    3.12's f-strings, quotes inside quotes alike, which a container's Python 3.11 or
    older cannot read: a step with ``f"{d['k']}"`` failed there with a SyntaxError)."""
    try:
        source = textwrap.dedent("".join(lines) if lines is not None
                                 else inspect.getsource(func))
    except (OSError, TypeError):
        raise InvalidStepError(
            f"step {step!r}: the source of {func.__qualname__!r} cannot be found, so it "
            "cannot run in a container; define it with 'def' in a file or notebook cell"
        ) from None
    tree = ast.parse(source)
    node = tree.body[0] if tree.body else None
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or node.name != func.__name__:
        raise InvalidStepError(
            f"step {step!r}: {func.__qualname__!r} is not a 'def' function (a lambda?); "
            "container steps need a named function"
        )
    written = source.splitlines(keepends=True)[node.lineno - 1:node.end_lineno]
    return "".join(written).rstrip("\n") + "\n"


def _top(name: str) -> str:
    return name.partition(".")[0]


def _imports_dagnb(source: bytes) -> bool:
    """Whether a module's text imports dagnb (read as :mod:`.shipped` reads its imports,
    once per text)."""
    return any(level == 0 and _top(module) == "dagnb"
               for module, level, _ in shipped._import_statements(source))


def _is_current(value: Any) -> bool:
    """Whether ``value`` is ``dagnb.current`` (without importing its module)."""
    return (getattr(value, "__module__", None), getattr(value, "__qualname__", None)) == (
        "dagnb.executors.context", "current")


def _import_line(name: str, module: types.ModuleType) -> str:
    if module.__name__ == name:
        return f"import {name}"
    return f"import {module.__name__} as {name}"


def _importable(value: Any, home: str) -> bool:
    """A class or function of another, importable module (``from m import f``): the
    module's own attribute of that name, not a callable object (a partial) it made."""
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", "")
    if not (callable(value) and isinstance(module, str) and module not in (home, "__main__")
            and qualname.isidentifier()):
        return False
    return getattr(sys.modules.get(module), qualname, None) is value


def _is_literal(value: Any) -> bool:
    """Whether ``repr(value)`` reads back as an equal value of the same type (not an
    IntEnum, whose repr is no Python, nor a NaN, unequal to itself)."""
    try:
        back = ast.literal_eval(repr(value))
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return False
    return type(back) is type(value) and back == value


def _literal_text(value: Any) -> str:
    """``repr(value)``; a set's items sorted: its order changes with each process's
    string hashing, and the module's text keys the engine's exec cache."""
    if type(value) is set and value:
        return "{" + ", ".join(sorted(map(repr, value))) + "}"
    return repr(value)


def _pickled(value: Any, home: str, problem: Callable[[str], InvalidStepError],
             reached: shipped.Reached) -> tuple[bytes, str]:
    """``value``'s pickle, and the name of a class or function of ``home`` (or
    ``__main__``) it refers to, "" if none: pickle refers to those by their module,
    which the container has not. The modules it refers to are noted in ``reached``."""
    found: list[str] = []

    class Finder(pickle.Pickler):
        def persistent_id(self, obj: Any) -> None:
            reached.note(obj)
            held = obj if isinstance(obj, (type, types.FunctionType)) else type(obj)
            if getattr(held, "__module__", None) in (home, "__main__") and not found:
                found.append(held.__qualname__)

    buffer = io.BytesIO()
    try:
        Finder(buffer, protocol=_PROTOCOL).dump(value)
    except Exception as exc:  # a lock, an open file, a connection: its own words
        raise problem(f"{str(exc) or type(exc).__name__}; {_FIX}") from None
    return buffer.getvalue(), found[0] if found else ""


def _unpickled(values: Mapping[str, bytes]) -> list[str]:
    """The module's last lines: each pickled global bound by name (as base64 text:
    ``withNewFile`` takes text)."""
    if not values:
        return []
    lines = ["", "import base64 as _dagnb_base64, pickle as _dagnb_pickle"]
    for name, data in sorted(values.items()):
        text = base64.b64encode(data).decode()
        lines.append(f"{name} = _dagnb_pickle.loads(_dagnb_base64.b64decode({text!r}))")
    return lines
