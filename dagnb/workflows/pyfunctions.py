"""Python steps in workflow files: their code in a module beside the YAML.

``graph.to_yaml("pipeline.yml")`` (and ``%dagger save``) writes each Python step's function
into ``pipeline_steps.py`` and names it in the YAML as ``python: pipeline_steps.py:fit``.
The module stays in the graph's folder, where the helpers its code imports are found; a
file saved into another folder names it after that folder too (``wa/pipeline.yml``'s is
``wa_pipeline_steps.py``), so that two workflows never share one. Its second line names
the workflow it serves: a save refuses to replace a module of another workflow file, or
a file of that name that dagnb did not write.
What the function reads goes into the module too, so that ``dagnb run pipeline.yml``
computes the same results under the same cache keys as the notebook did:

- modules by their import (``import numpy as np``);
- functions and classes defined in the notebook, by their source (and what they read);
- data by value: a literal when it reads back equal, else pickled into
  ``pipeline_steps.pkl`` (a DataFrame, an array), loaded by the module;
- but not a variable another step's ``--outputs`` publish: the step takes that step's
  result at run time (:mod:`dagnb.workflows.published`), under a key of its own (its
  code takes the step as a parameter), so the file's first run runs it again once.

A value that can neither be written nor pickled is refused with one line naming it, and
so is a name the code reads that is neither defined now nor a builtin (a kernel that
restarted has not run the cell defining a helper: the module would lack it).
Loading a workflow imports the module from the workflow's folder.
"""

from __future__ import annotations

import ast
import builtins
import contextlib
import errno
import hashlib
import importlib.util
import inspect
import io
import linecache
import os
import pickle
import sys
import textwrap
import traceback
import types
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

from dagnb import checks
from dagnb.errors import FingerprintError, WorkflowError
from dagnb.fingerprint import code_names, loaded_globals
from dagnb.fingerprint.sources import class_source
from dagnb.model.masking import SecretFinder, environ_secrets
from dagnb.model.moved_modules import STEPS_MODULE_PREFIX
from dagnb.model.step import cached_per_function
from dagnb.workflows.bytecode import TextCheckedLoader, search_with_text_checks
from dagnb.workflows.file_facts import file_digest
from dagnb.workflows.published import Published, Read, taking_upstreams
from dagnb.workflows.siblings import check_siblings

__all__ = ["IMPORT_NOTE", "PYTHON_KEY", "UndefinedName", "check_params_taken",
           "import_function", "module_path", "write_module"]

PYTHON_KEY = "python"
# a function's attribute: the comment its import line gets in a saved module (dagnb's own
# helpers that a cell's code calls, which the user never wrote: what they are for)
IMPORT_NOTE = "_dagnb_import_note"


class UndefinedName(WorkflowError):
    """A name a step's code reads that is neither defined now nor a builtin: its saved
    module would fail with a NameError (a notebook cell defining it has not run in this
    kernel). Carries the ``step`` and the ``name``, for a notebook to name that cell."""

    def __init__(self, step: str, name: str, reader: str) -> None:
        self.step, self.name = step, name
        super().__init__(f"step {step!r}: {reader} reads {name!r}, which is not defined (nor "
                         "a builtin), so its saved module could not run it; define it (run "
                         "the cell that does) before saving")


def write_module(functions: dict[str, Callable[..., Any]], yaml_path: Path,
                 secrets: Iterable[str] = (), published: Published | None = None,
                 folder: Path | None = None) -> dict[str, str]:
    """Write the functions (step name -> function) into the module of the workflow file
    ``yaml_path`` in ``folder`` (by default the file's; see :func:`module_path`); step ->
    reference, relative to ``folder``.
    A value they read that holds one of ``secrets`` (names, read from the environment
    now), or the value of a variable of the environment named as a secret beyond doubt
    (``OPENAI_API_KEY``, declared or not: those a run masks, :func:`environ_secrets`), is
    refused: the module is a file to share, as the cache keeps no secret either.
    A notebook variable that is another step's result (``published``) is not written:
    the step's function takes that step's result and binds it (see
    :mod:`dagnb.workflows.published`)."""
    yaml_path = yaml_path.resolve()
    if not yaml_path.parent.is_dir():  # (no module left behind for a file never written)
        raise WorkflowError(f"cannot write {str(yaml_path)!r}: {os.strerror(errno.ENOENT)}; "
                            "check that its folder exists and is writable")
    module = module_path(yaml_path, (folder or yaml_path.parent).resolve())
    declared = {n: os.environ[n] for n in secrets if n in os.environ}
    collected = _Collected(SecretFinder({**environ_secrets(), **declared}), published)
    for step, func in functions.items():
        try:
            collected.add_step(step, func)
        except UndefinedName:  # (it names the step)
            raise
        except WorkflowError as exc:
            raise WorkflowError(f"step {step!r}: {exc}") from None
    pickled = module.with_suffix(".pkl")
    _check_replaceable(module, yaml_path, pickled if collected.pickled else None)
    try:
        served = Path(os.path.relpath(yaml_path, module.parent)).as_posix()
        module.write_text(collected.text(pickled.name, served), encoding="utf-8")
        if collected.pickled:
            pickled.write_bytes(pickle.dumps(collected.pickled))
    except OSError as exc:
        raise WorkflowError(f"cannot write {str(module)!r}: {exc.strerror}; check that its "
                            "folder exists and is writable") from None
    return {step: f"{module.name}:{func.__name__}" for step, func in functions.items()}


def module_path(yaml_path: Path, folder: Path) -> Path:
    """The module of the workflow file ``yaml_path``'s Python steps: in ``folder``, named
    after the file (``pipeline_steps.py``), and after the path to its folder when that is
    another (``wa_pipeline_steps.py`` for ``wa/pipeline.yml``, ``up_`` for a ``..``)."""
    try:
        between = Path(os.path.relpath(yaml_path.parent, folder)).parts
    except ValueError:  # (Windows: another drive)
        between = (yaml_path.parent.name,)
    prefix = "".join(f"{'up' if part == '..' else part}_" for part in between if part != ".")
    return folder / f"{prefix}{yaml_path.stem}_steps.py"


_HEADER = '"""Python steps exported by dagnb with their workflow; loaded by it."""'
_SERVES = "# the Python steps of workflow file "  # + its path from the module's folder


def _check_replaceable(module: Path, yaml_path: Path, pickled: Path | None) -> None:
    """Refuse to write over a file dagnb did not write (a hand-written ``c_steps.py``, or
    a ``pickled`` file with no module of dagnb's beside it), or over the module of another
    workflow file that is still there (its steps would silently run this one's code)."""
    head = _first_lines(module)
    if head is not None and head[0] != _HEADER:
        _refuse_foreign(module, yaml_path)
    if head is None and pickled is not None and pickled.exists():
        _refuse_foreign(pickled, yaml_path)
    # (a module saved before dagnb named its workflow names none: it is replaced, as then)
    served = head[1].removeprefix(_SERVES) if head and head[1].startswith(_SERVES) else ""
    other = (module.parent / served).resolve() if served else yaml_path
    if other != yaml_path and other.is_file():
        raise WorkflowError(
            f"{str(module)!r} holds the Python steps of workflow {str(other)!r}, and saving "
            f"{str(yaml_path)!r} would replace them; save it under another file name")


def _refuse_foreign(path: Path, yaml_path: Path) -> None:
    raise WorkflowError(f"{str(path)!r} exists and was not written by dagnb, and saving "
                        f"{yaml_path.name!r} would replace it: save the workflow under another "
                        f"name, or move {path.name} away")


def _first_lines(path: Path) -> list[str] | None:
    """The first two lines of ``path``; None when there is no such file."""
    try:
        with path.open(encoding="utf-8", errors="replace") as handle:
            return [handle.readline().rstrip("\r\n") for _ in range(2)]
    except FileNotFoundError:
        return None
    except OSError:  # (unreadable: writing it says why, in one line)
        return [_HEADER, ""]


def _as_file_and_function(reference: str) -> str:
    """``pkg/steps.py:load`` for a dotted ``pkg.steps.load`` (a module path, as other tools
    name a function), ``steps.py:load`` for ``steps.py.load``; ``steps.py:fit`` when the
    text is no such path."""
    module, dot, name = reference.strip().removesuffix(".py").rpartition(".")
    parts = module.removesuffix(".py").split(".")
    if not dot or not all(part.isidentifier() for part in (*parts, name)):
        return "steps.py:fit"
    return f"{'/'.join(parts)}.py:{name}"


def import_function(reference: str, base_dir: Path, where: str) -> Callable[..., Any]:
    """The function ``file.py:name`` names, from a module in ``base_dir``; a module that
    is not Python or fails to import is a one-line WorkflowError naming it."""
    file, sep, name = (part.strip() for part in str(reference).partition(":"))
    if not sep or not file or not name:
        raise WorkflowError(f"{where}: python {reference!r} is not FILE.py:FUNCTION; write "
                            f"it like python: {_as_file_and_function(str(reference))}")
    path = base_dir / file
    if not path.is_file():
        raise WorkflowError(f"{where}: python {reference!r} names {file!r}, which is not a "
                            f"file in {str(base_dir)!r}; {_module_file_fix(file, name, base_dir)}")
    if path.suffix != ".py":
        raise WorkflowError(f"{where}: python {reference!r} names {file!r}, which is not a .py "
                            "file; name a Python module as FILE.py:FUNCTION")
    module = _imported(path, f"{where}: python {reference!r}")
    func = getattr(module, name, None)
    if not callable(func):
        raise WorkflowError(f"{where}: {file} has no function {name!r}; "
                            + checks.choices_named(name, _functions_of(module),
                                                   noun="functions"))
    return func


def _module_file_fix(file: str, name: str, base_dir: Path) -> str:
    """How to name the module a ``python:`` reference meant: by its file, where one was
    named as a module is (``steps:fit``, ``pkg.steps:fit``, as an entry point names it),
    else the file of a close name there (``step.py:fit``), else the path to check."""
    module_file = f"{file.replace('.', '/')}.py"
    if all(part.isidentifier() for part in file.split(".")) and (
            base_dir / module_file).is_file():
        return f"name its file: python: {module_file}:{name}"
    meant = checks.close_sibling(file, base_dir / Path(file).parent, ".py")
    if meant is not None:
        return f"did you mean python: {meant}:{name}?"
    return "check the path"


def _functions_of(module: types.ModuleType) -> list[str]:
    """The names a ``python:`` reference may give in ``module`` (its callables that are
    neither classes nor private), for the message naming the one meant."""
    return [name for name, value in vars(module).items()
            if callable(value) and not isinstance(value, type) and not name.startswith("_")]


@cached_per_function  # (a graph of 10,000 steps of one function asks it 10,000 times)
def _parameters_of(func: Callable[..., Any]) -> Mapping[str, inspect.Parameter]:
    return inspect.signature(func).parameters


def check_params_taken(func: Callable[..., Any], params: Iterable[str], where: str) -> None:
    """Warn of a param the step's function may never see: not one of its parameters, no
    ``**kwargs`` that could be meant for it, and no ``dagnb.current().params`` read in
    its code or its helpers' (a misspelt ``nn`` for ``n`` ran with the default). A
    warning, not a refusal: the walk does not enter installed packages, and a helper
    there may read it."""
    try:
        parameters = _parameters_of(func)
    except (TypeError, ValueError):  # (a callable without a signature: nothing to check)
        return
    if any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return
    dropped = [name for name in params if name not in parameters]
    if dropped and not _may_read_params(func):
        for name in dropped:
            checks.warn_user(_dropped_message(name, func, list(parameters), where))


def _may_read_params(func: Callable[..., Any]) -> bool:
    """Whether ``func``'s code, or a helper's, reads a ``params`` (``dagnb.current()``'s)."""
    try:
        return "params" in code_names(func)
    except FingerprintError:  # (code too deep to walk: its run says so; no guess here)
        return True


def _dropped_message(name: str, func: Callable[..., Any], taken: list[str], where: str) -> str:
    code = getattr(func, "__code__", None)
    function = f"{getattr(func, '__name__', 'the function')}()" + (
        f" in {Path(code.co_filename).name}" if code is not None else "")
    read = f"read it with dagnb.current().params[{name!r}]"
    close = checks.did_you_mean(name, taken)
    if close:
        hint = f"{close} (or {read})"
    elif name.isidentifier():
        hint = f"add {name} to its parameters, or {read}"
    else:
        hint = read
    return (f"{where}: param {name!r} is not a parameter of {function}, which may never "
            f"see it; {hint}")


# resolved path -> (digest of the source it ran, the module): a file is imported once
# per process, as ``import`` would, and again only when its text changed
_MODULES: dict[Path, tuple[str, types.ModuleType]] = {}


def _imported(path: Path, where: str) -> types.ModuleType:
    """The module of ``path``, run once per process (and again after an edit), and
    registered in ``sys.modules`` as ``dagnb_steps_<stem>_<digest of its path>``: pickle
    finds its classes (a result of the module's own class is cached) and every step sees
    the same ones; two files of one name in two folders (two workflows' ``steps.py``)
    are two modules, whatever order they are loaded in.
    Its folder is on ``sys.path`` (as a script's is): the helper modules beside it, as
    a notebook beside them imported them, are found; one that another folder's module
    of its name would stand in for is refused (:mod:`.siblings`)."""
    resolved = path.resolve()
    try:
        digest = _module_digest(resolved)
    except OSError as exc:
        raise WorkflowError(f"{where}: {path.name} cannot be read ({exc.strerror}); check "
                            "its permissions") from None
    known = _MODULES.get(resolved)
    again = known is not None and known[0] == digest
    folder = str(resolved.parent)
    if not again and folder not in sys.path:
        sys.path.insert(0, folder)
    search_with_text_checks(folder)  # (its helpers too: never a stale .pyc's code)
    check_siblings(resolved, where)  # (at each load: another folder's may be loaded since)
    if again:
        sys.modules[known[1].__name__] = known[1]  # (a file of the same name may have taken it)
        return known[1]
    module = _run_module(resolved, module_name(resolved), where)
    _MODULES[resolved] = (digest, module)
    return module


def _module_digest(resolved: Path) -> str:
    """The digest of a steps module's text and of the values it loads from the pickle
    beside it (a save's ``pipeline_steps.pkl``): saved again with other values and the
    same text, it is run again, not served from the first import with the old ones.
    Each file is read once per text (each step of a load asks: :mod:`.file_facts`)."""
    digests = [file_digest(resolved)]
    with contextlib.suppress(FileNotFoundError):
        digests.append(file_digest(resolved.with_suffix(".pkl")))
    return ":".join(digests)


def module_name(resolved: Path) -> str:
    """The name a steps file is imported as: its stem, and a digest of where it is (a
    result pickled by one process is found by the next, the file at the same place)."""
    where = hashlib.sha256(os.fsencode(resolved)).hexdigest()[:8]
    # (a dot, of a saved file's folder ``v0.3``, would make it a package's submodule to
    # pickle: a result of its classes could not be stored)
    stem = resolved.stem.replace(".", "_")
    return f"{STEPS_MODULE_PREFIX}{stem}_{where}"  # (moved_modules reads it)


def _run_module(path: Path, name: str, where: str) -> types.ModuleType:
    """Run the module's code as an import does (registered first: a dataclass looks its
    module up); whatever it raises, said in one line, with the name given back."""
    spec = importlib.util.spec_from_file_location(
        name, path, loader=TextCheckedLoader(name, str(path)))  # (not a stale .pyc's code)
    module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
    before = sys.modules.get(name)
    sys.modules[name] = module
    try:
        spec.loader.exec_module(module)  # type: ignore[union-attr]
    except (Exception, SystemExit) as exc:  # its code is the user's: anything can happen
        _give_back(name, before)
        problem = (str(exc).strip().splitlines() or [""])[0]
        kind = type(exc).__name__ + (f": {problem}" if problem else "")
        fix = "install what it imports" if isinstance(exc, ImportError) else "fix the module"
        raise WorkflowError(f"{where}: importing {path.name} failed ({kind}"
                            f"{_raised_at(exc, path)}); {fix}") from None
    return module


def _raised_at(exc: BaseException, module: Path) -> str:
    """`` (helper.py, line 2)``: where ``exc`` was raised, as a SyntaxError's message
    says it: the deepest frame in the project's files (the module's folder, an installed
    package in it aside), the module itself or a helper it imported; "" for a
    SyntaxError, whose message says where already."""
    if isinstance(exc, SyntaxError):
        return ""
    folder = module.parent
    at = ""
    for frame, line in traceback.walk_tb(exc.__traceback__):
        file = Path(os.path.abspath(frame.f_code.co_filename))
        if _in_project(file, folder):
            at = f" ({file.relative_to(folder).as_posix()}, line {line})"
    return at


def _in_project(file: Path, folder: Path) -> bool:
    """Whether ``file`` is one of the project's own, in ``folder`` and not in an
    environment's installed packages there (a ``.venv`` beside the steps)."""
    if not file.is_relative_to(folder):
        return False
    return not {"site-packages", "dist-packages"} & set(file.relative_to(folder).parts)


def _give_back(name: str, before: types.ModuleType | None) -> None:
    if before is None:
        sys.modules.pop(name, None)
    else:
        sys.modules[name] = before


class _Collected:
    """Imports, definitions and values a set of functions needs, in dependency order."""

    def __init__(self, secrets: SecretFinder | None = None,
                 published: Published | None = None) -> None:
        self.secrets = secrets or SecretFinder({})
        self.published = published
        self.step = ""  # the step whose function is being collected
        self.imports: dict[str, str] = {}
        self.values: dict[str, str] = {}
        self.pickled: dict[str, Any] = {}
        self.definitions: dict[str, str] = {}

    def add_step(self, step: str, func: Any) -> None:
        """A step's function, taking the upstream results it reads as notebook variables."""
        self.step = step
        self.add_function(func, self.published.reads.get(step) if self.published else None)

    def add_function(self, func: Any, reads: list[Read] | None = None) -> None:
        name = func.__name__
        if name in self.definitions:
            return
        self.definitions[name] = ""  # placeholder: breaks cycles, keeps the order
        given = {read.variable for read in reads or ()}
        for global_name in sorted(loaded_globals(func.__code__) - given):
            self._add_global(global_name, func.__globals__, f"{name}()")
        source = _source(func)
        self.definitions[name] = taking_upstreams(source, reads) if reads else source

    def add_class(self, cls: type) -> None:
        """A notebook class by its source, after what its statement and methods read."""
        name = cls.__name__
        if name in self.definitions:
            return
        self.definitions[name] = ""  # placeholder: breaks cycles
        source = _class_source(cls)
        namespace = vars(sys.modules[cls.__module__]) if cls.__module__ in sys.modules else {}
        for global_name in sorted(_statement_globals(source)):
            self._add_global(global_name, namespace, f"class {name}")
        del self.definitions[name]  # a class statement runs after the bases, decorators
        self.definitions[name] = source  # and values it reads; its methods' can follow
        for method in _methods(cls):
            for global_name in sorted(loaded_globals(method.__code__)):
                self._add_global(global_name, method.__globals__, f"{name}.{method.__name__}()")

    def _add_global(self, name: str, namespace: dict[str, Any], reader: str) -> None:
        maker = (self.published.maker(name, namespace, self.step)
                 if self.published is not None else None)
        if maker is not None:  # (a step's own reads are given it: this is a helper's)
            raise WorkflowError(
                f"{reader} reads notebook variable {name!r}, the output of step {maker!r}, "
                "which only the step's own code can be given at run time; pass "
                f"{name} to {reader} as an argument from the cell")
        if name in self.imports or name in self.values:
            return
        if name not in namespace:
            self._add_builtin(name, reader)
            return
        value = namespace[name]
        if name == "get_ipython":  # (what a cell's ``!cmd`` and ``%magic`` lines became)
            raise WorkflowError(
                "its cell uses IPython syntax (!cmd, %magic), which runs only in a notebook; "
                "write it as Python (subprocess.run([...]), os.environ) to save it")
        if isinstance(value, types.ModuleType):
            real = value.__name__
            self.imports[name] = f"import {real}" + (f" as {name}" if real != name else "")
        elif isinstance(value, type) and _from_notebook(value):
            self.add_class(value)
        elif isinstance(value, types.FunctionType) and _from_notebook(value):
            self.add_function(value)
        elif isinstance(value, (types.FunctionType, type, types.BuiltinFunctionType)):
            module = getattr(value, "__module__", None)
            note = getattr(value, IMPORT_NOTE, None)
            self.imports[name] = f"from {module} import {value.__name__}" + (
                f" as {name}" if value.__name__ != name else "") + (
                f"  # {note}" if note else "")
        else:
            self._add_value(name, value)

    def _add_builtin(self, name: str, reader: str) -> None:
        """A name its namespace lacks: ``display()`` (a notebook's builtin, IPython's,
        imported), a builtin or a module's own name (``__file__``); else refused, as the
        saved module could not run (a kernel restarted, the cell defining it not run)."""
        if name == "display":
            self.imports[name] = "from IPython.display import display"
        elif not hasattr(builtins, name) and not (name.startswith("__") and name.endswith("__")):
            raise UndefinedName(self.step, name, reader)

    def _add_value(self, name: str, value: Any) -> None:
        self._refuse_secret(name, value)
        text = repr(value)
        try:
            back = ast.literal_eval(text)
            literal = type(back) is type(value) and back == value
        except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
            literal = False
        if literal:
            self.values[name] = f"{name} = {text}"
            return
        try:
            made_here = _notebook_objects_in(value)
        except Exception as exc:
            raise WorkflowError(f"a Python step reads notebook variable {name!r} "
                                f"({type(value).__name__}), which cannot be saved: {exc}; "
                                "make it a param or build it inside the step") from None
        if made_here:  # (pickled by reference to the notebook: no file could load it)
            raise WorkflowError(
                f"a Python step reads notebook variable {name!r}, which holds "
                f"{made_here[0]!r} defined in the notebook: a saved value cannot refer to "
                f"it; build {name} inside the step, or define {made_here[0]!r} in a module")
        self.pickled[name] = value
        self.values[name] = f"{name} = _values[{name!r}]"

    def _refuse_secret(self, name: str, value: Any) -> None:
        if not self.secrets:
            return
        try:
            held = self.secrets.find(repr(value).encode()) or self.secrets.find(
                pickle.dumps(value))
        except Exception:  # (what does not pickle is refused below, by its own message)
            held = None
        if held is not None:
            raise WorkflowError(
                f"a Python step reads notebook variable {name!r}, which holds the value of "
                f"secret {held!r}; saving it would write the secret to a file: read "
                f"os.environ[{held!r}] inside the step instead")

    def text(self, pickle_name: str, served: str) -> str:
        head = [_HEADER, f"{_SERVES}{served}", ""]
        imports = sorted(set(self.imports.values()))
        if self.pickled:
            imports = ["import pickle", "from pathlib import Path", *imports]
        lines = [*head, *imports, ""]
        if self.pickled:
            lines += [f"_values = pickle.loads((Path(__file__).parent / {pickle_name!r})"
                      ".read_bytes())", ""]
        lines += [*self.values.values(), ""]
        lines += [f"\n{source.rstrip()}\n" for source in self.definitions.values()]
        return "\n".join(lines)




def _notebook_objects_in(value: Any) -> list[str]:
    """The names of the notebook's classes and functions that ``value``'s pickle refers
    to (an instance of a notebook class, such a class or function itself); pickles it,
    raising what pickling raises."""
    found: list[str] = []

    class _Finder(pickle.Pickler):
        def persistent_id(self, obj: Any) -> None:
            held = obj if isinstance(obj, (type, types.FunctionType)) else type(obj)
            if _from_notebook(held) and held.__qualname__ not in found:
                found.append(held.__qualname__)

    _Finder(io.BytesIO()).dump(value)
    return found


def _from_notebook(obj: Any) -> bool:
    """Defined in the notebook (or another script), not importable from a module file."""
    return getattr(obj, "__module__", None) in ("__main__", None) or obj.__module__.startswith(
        STEPS_MODULE_PREFIX)


def _methods(cls: type) -> list[types.FunctionType]:
    """The functions a class's own body defines (static, class methods and properties too;
    what decorators wrap; not those a library wrote for it, such as a dataclass's)."""
    found = [getattr(v, "__func__", getattr(v, "fget", v)) for v in vars(cls).values()]
    found = [inspect.unwrap(f) for f in found if isinstance(f, types.FunctionType)]
    return [f for f in found if isinstance(f, types.FunctionType)
            and f.__module__ == cls.__module__ and f.__code__.co_filename != "<string>"]


def _class_source(cls: type) -> str:
    """A class's source as its key reads it (through its methods' cell for a notebook's
    class, which ``inspect`` cannot find before Python 3.13)."""
    source = class_source(cls)
    if source is None:
        raise WorkflowError(f"the source of class {cls.__name__!r} cannot be found (no method "
                            "of its own written in a cell or file); define it with a method in "
                            "a cell, or import it from a module")
    return source


def _statement_globals(source: str) -> set[str]:
    """Names the class statement reads as it runs (bases, decorators, class attributes,
    defaults), not those its methods read when called (their code says which)."""
    loaded, stored = set(), set()
    pending: list[ast.AST] = [ast.parse(source).body[0]]
    while pending:
        node = pending.pop()
        if isinstance(node, ast.Name):
            (loaded if isinstance(node.ctx, ast.Load) else stored).add(node.id)
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            pending += [*node.decorator_list, node.args, *filter(None, [node.returns])]
        elif isinstance(node, ast.Lambda):
            pending.append(node.args)
        else:
            pending += ast.iter_child_nodes(node)
    return loaded - stored


def _source(obj: Any) -> str:
    code = getattr(obj, "__code__", None)
    if code is not None and code.co_filename.startswith("<dagger-cell"):
        return "".join(linecache.getlines(code.co_filename))  # a %%dagger --python cell
    try:
        source = inspect.getsource(obj)
    except (OSError, TypeError) as exc:
        raise WorkflowError(f"the source of {getattr(obj, '__name__', obj)!r} cannot be "
                            f"found ({exc}); define it in a cell or a module") from None
    return _without_decorators(source) if inspect.unwrap(obj) is obj else source


def _without_decorators(source: str) -> str:
    """A function's ``def`` without the decorators above it: the step runs the function
    the ``def`` made, not what they returned, and their names (``@graph.step``, the
    script's graph) are not in the saved module. (A wrapper is written with them.)"""
    text = textwrap.dedent(source)
    try:
        node = ast.parse(text).body[0]
    except (SyntaxError, IndexError):  # (a lambda's line, cut out of an expression)
        return source
    if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) or not node.decorator_list:
        return source
    return "".join(text.splitlines(keepends=True)[node.lineno - 1:])
