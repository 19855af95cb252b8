"""Python function steps in a container: the function's source plus a small shim.

The container has its own ``python3`` and no dagnb, so the function travels as source:
``inspect.getsource``, dedented, decorators stripped, preceded by the imports of the
modules it uses and the module-level constants and helper functions it names. The shim
(below, stdlib only) reads params from ``$DAGNB_PARAMS`` and upstream results from
``$DAGNB_IN/<name>/result.json|result.pkl`` (an upstream without a result is passed as
the ``pathlib.Path`` of its folder, as on the local executor), calls the function
(coroutines through ``asyncio.run``) and writes the return value to ``$DAGNB_OUT`` as
JSON when it round-trips exactly, pickle otherwise (the rule of :mod:`dagnb.model.results`).

Limits: the function and its helpers need retrievable source (not a lambda); values it
reads from globals must be JSON-like constants; pickled results need the same classes
importable on both sides.
"""

from __future__ import annotations

import ast
import inspect
import json
import textwrap
import types
from collections.abc import Callable
from typing import Any

from dagnb.errors import InvalidStepError
from dagnb.model.step import Step

__all__ = ["SHIM_PATH", "SOURCE_PATH", "python_argv", "python_files"]

SOURCE_PATH = "/dagnb/step/step_source.py"
SHIM_PATH = "/dagnb/step/shim.py"
_CONSTANTS = (str, int, float, bool, type(None))

_SHIM = '''\
"""dagnb's container shim: call one step function under the dagnb step contract."""
import asyncio, importlib.util, inspect, json, math, os, pathlib, pickle, sys
import traceback

SPEC = json.loads(%(spec)r)


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


def save(value):
    out = pathlib.Path(os.environ["DAGNB_OUT"])
    out.mkdir(parents=True, exist_ok=True)
    if json_exact(value):
        text = json.dumps(value, allow_nan=False)
        if json.loads(text) == value:
            (out / "result.json").write_text(text, encoding="utf-8")
            return
    with open(out / "result.pkl", "wb") as handle:
        pickle.dump(value, handle, protocol=min(5, pickle.HIGHEST_PROTOCOL))


def main():
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
    traceback.print_exception(type(exc), exc, tb or exc.__traceback__)


if __name__ == "__main__":
    try:
        main()
    except Exception as exc:
        report(exc)
        sys.exit(1)
'''


def python_files(step: Step, inputs: list[str]) -> dict[str, str]:
    """Container path -> text of the files a Python function step needs."""
    func = step.func
    if func is None:
        raise InvalidStepError(f"step {step.name!r} has no Python function")
    spec = {"source": SOURCE_PATH, "function": func.__name__, "inputs": sorted(inputs)}
    shim = _SHIM % {"spec": json.dumps(spec)}
    return {SOURCE_PATH: function_module(func, step.name), SHIM_PATH: shim}


def python_argv() -> list[str]:
    """The command that runs the shim with the image's own interpreter."""
    return ["python3", SHIM_PATH]


def function_module(func: Callable[..., Any], step: str) -> str:
    """Source text of a module defining ``func`` and what it needs from its globals."""
    parts = _ModuleParts()
    parts.collect(func, step)
    # Helpers known by another name (``twice = _doubled``) are bound once all are defined.
    lines = [*sorted(parts.header), "", *reversed(parts.bodies), *sorted(parts.aliases)]
    return "\n".join(lines) + "\n"


class _ModuleParts:
    """The imports and constants, function bodies and aliases of a step's module."""

    def __init__(self) -> None:
        self.header: set[str] = set()
        self.bodies: list[str] = []
        self.aliases: set[str] = set()
        self.seen: set[str] = set()

    def collect(self, func: Callable[..., Any], step: str) -> None:
        if func.__name__ in self.seen:
            return
        self.seen.add(func.__name__)
        self.bodies.append(_undecorated_source(func, step))
        for name in _global_names(func):
            if name in func.__globals__:  # else a builtin, an attribute name, or undefined
                self.add_global(name, func.__globals__[name], func, step)

    def add_global(self, name: str, value: Any, func: Callable[..., Any], step: str) -> None:
        if isinstance(value, types.ModuleType):
            self.header.add(_import_line(name, value))
        elif isinstance(value, types.FunctionType) and value.__module__ == func.__module__:
            self.collect(value, step)
            if name != value.__name__:
                self.aliases.add(f"{name} = {value.__name__}")
        elif isinstance(value, _CONSTANTS) or _is_plain(value):
            self.header.add(f"{name} = {value!r}")
        elif _importable(value, func.__module__):
            self.header.add(f"from {value.__module__} import {value.__qualname__} as {name}")


def _undecorated_source(func: Callable[..., Any], step: str) -> str:
    try:
        source = textwrap.dedent(inspect.getsource(func))
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
    node.decorator_list = []
    return ast.unparse(node) + "\n"


def _global_names(func: Callable[..., Any]) -> list[str]:
    names: list[str] = []
    code_objects = [func.__code__]
    while code_objects:  # nested functions and comprehensions have their own names
        code = code_objects.pop()
        names.extend(code.co_names)
        code_objects.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    return list(dict.fromkeys(names))


def _import_line(name: str, module: types.ModuleType) -> str:
    if module.__name__ == name:
        return f"import {name}"
    return f"import {module.__name__} as {name}"


def _importable(value: Any, home: str) -> bool:
    """A class or function of another, importable module (``from m import f``)."""
    module = getattr(value, "__module__", None)
    qualname = getattr(value, "__qualname__", "")
    return (callable(value) and isinstance(module, str) and module not in (home, "__main__")
            and "." not in qualname and "<" not in qualname)


def _is_plain(value: Any) -> bool:
    if isinstance(value, (list, tuple, dict)):
        try:
            return ast.literal_eval(repr(value)) == value
        except (ValueError, SyntaxError):
            return False
    return False
