"""The package's shape: public names, layers as folders, no import circles, a light import."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import grimp
import pytest

import dagnb

PUBLIC = [
    "CacheError", "CacheMissError", "CircuitOpenError", "ConfigError", "CycleError", "DagnbError",
    "DuplicateStepError", "ExecutorError", "ExecutorUnavailable", "FingerprintError", "Graph",
    "GraphError", "InvalidStepError", "Memory", "MissingDependencyError", "RetryPolicy", "Run",
    "RunFailed", "UnfingerprintableVariable",
    "SecretError", "Settings", "Step", "StepCancelled", "StepContext", "StepError", "StepFailed",
    "StepNotFoundError", "StepTimeout", "TransientError", "WorkflowError", "__version__",
    "builder", "cache", "config", "configure", "current", "executors", "load",
    "load_ipython_extension", "retry", "services", "settings", "templates", "testing",
    "unload_ipython_extension",
    # the warnings dagnb gives, for warnings.filterwarnings(category=...)
    "BrokenTemplateWarning", "DamagedEntryWarning", "RemoteCacheWarning", "TemplatePathWarning",
    "UnkeyedEnvironmentWarning", "UnmountedReadWarning",
]
# DESIGN.md's layer list, top first; each is one folder (or one module) of the package.
LAYERS = ["cli", "notebook", "views", "workflows", "runtime", "executors", "retry",
          "cache", "fingerprint", "config", "model", "errors", "checks"]
# Graph's convenience methods (run, plan, explain, show, YAML) import upward at call time.
DECLARED_UPWARD = ("dagnb.runtime", "dagnb.views", "dagnb.workflows")


def test_public_names_are_pinned_and_sorted():
    assert dagnb.__all__ == sorted(dagnb.__all__)
    assert dagnb.__all__ == sorted(PUBLIC)


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_resolves(name):
    assert getattr(dagnb, name) is not None


def test_the_warnings_at_the_top_are_the_classes_dagnb_warns_with():
    from dagnb.cache.remote import RemoteCacheWarning
    from dagnb.cache.store import DamagedEntryWarning
    from dagnb.runtime.unmounted import UnkeyedEnvironmentWarning, UnmountedReadWarning
    from dagnb.workflows.templates import BrokenTemplateWarning, TemplatePathWarning

    for warning in (RemoteCacheWarning, DamagedEntryWarning, UnkeyedEnvironmentWarning,
                    UnmountedReadWarning, BrokenTemplateWarning, TemplatePathWarning):
        assert getattr(dagnb, warning.__name__) is warning
        assert issubclass(warning, UserWarning)


def test_retry_is_the_decorator_even_after_the_retry_layer_is_imported():
    import dagnb.retry.breaker

    assert callable(dagnb.retry) and dagnb.retry.__module__ == "dagnb.retry.policy"


def test_each_layer_is_one_folder_or_module():
    root = Path(dagnb.__file__).parent
    missing = [name for name in LAYERS
               if not (root / name / "__init__.py").exists() and not (root / f"{name}.py").exists()]
    assert missing == []


def _module_graph() -> dict[str, set[str]]:
    graph = grimp.build_graph("dagnb")
    # grimp reads the TYPE_CHECKING `import dagnb.x as x` of __init__ as dagnb importing
    # itself: a self-edge, not a circle
    edges = {module: set(graph.find_modules_directly_imported_by(module)) - {module}
             for module in graph.modules}
    edges["dagnb.model.graph"] = {m for m in edges["dagnb.model.graph"]
                                  if not m.startswith(DECLARED_UPWARD)}
    # the loader checks a file a template made against that template, at call time (the
    # templates build on the loader): one declared circle within the workflows layer
    edges["dagnb.workflows.loader"].discard("dagnb.workflows.templates")
    return edges


def _cycle(edges: dict[str, set[str]]) -> list[str] | None:
    """One import circle, if there is any (iterative depth-first search)."""
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done
    for start in sorted(edges):
        if start in state:
            continue
        path, stack = [start], [iter(sorted(edges[start]))]
        state[start] = 1
        while stack:
            child = next(stack[-1], None)
            if child is None:
                state[path.pop()] = 2
                stack.pop()
            elif state.get(child) == 1:
                return [*path[path.index(child):], child]
            elif child not in state and child in edges:
                state[child] = 1
                path.append(child)
                stack.append(iter(sorted(edges[child])))
    return None


def test_no_import_circles_besides_graphs_convenience_methods():
    assert _cycle(_module_graph()) is None


def test_the_cycle_finder_finds_a_circle():
    assert _cycle({"a": {"b"}, "b": {"c"}, "c": {"a"}}) == ["a", "b", "c", "a"]


def test_import_dagnb_loads_no_notebook_side_and_no_pandas():
    heavy = ('IPython', 'ipywidgets', 'pandas', 'distributed', 'cloudpickle')
    code = f"import sys, dagnb; print(','.join(m for m in {heavy!r} if m in sys.modules))"
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""


def test_the_cli_starts_without_the_notebook_side_or_pandas():
    code = ("import sys; from dagnb.cli import build_parser; build_parser(); "
            "print(','.join(m for m in ('IPython', 'ipywidgets', 'pandas') if m in sys.modules))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == ""
