"""A Python step sent to a container travels as its definition's text as written (less
its decorators): ``ast.unparse`` of it wrote Python 3.12's f-strings on a 3.12 or newer
client, quotes inside quotes alike (``f'{d['k']}'``), which the container's Python 3.11
or older cannot read: the step failed there with a SyntaxError it did not write."""

from __future__ import annotations

import functools
import inspect
import os

from dagnb.executors.dagger.shim import _undecorated_source


def _noted(func):  # a decorator, left out of what travels
    @functools.wraps(func)
    def wrapper(*args, **kwargs):
        return func(*args, **kwargs)
    return wrapper


@_noted
@functools.cache  # (a second one)
def rejected(token: str = "") -> str:
    # the message quotes a subscript inside the f-string
    return f"rejected {os.environ['TOKEN']} {token!r}"


def test_a_function_travels_as_written_from_its_def() -> None:
    lines, _ = inspect.getsourcelines(rejected)
    text = _undecorated_source(rejected, "step", lines)
    assert text == "".join(line for line in lines if not line.startswith("@"))
    assert """f"rejected {os.environ['TOKEN']} {token!r}\"""" in text  # (its quotes, as written)
    compile(text, "<step>", "exec")  # (a definition of its own)


def test_an_indented_function_travels_dedented() -> None:
    class Holder:
        @staticmethod
        def inner(x: int) -> str:
            return f"{ {'k': x}['k'] }"

    lines, _ = inspect.getsourcelines(Holder.inner)
    text = _undecorated_source(Holder.inner, "step", lines)
    assert text.startswith("def inner(x: int) -> str:\n")
    assert """return f"{ {'k': x}['k'] }\"""" in text
    namespace: dict[str, object] = {}
    exec(compile(text, "<step>", "exec"), namespace)
    assert namespace["inner"](3) == "3"  # type: ignore[operator]
