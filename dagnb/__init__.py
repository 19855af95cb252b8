"""dagnb: notebook-native task graphs.

Build a graph of steps (``%%dagger`` cells, ``@graph.step`` functions or a YAML
workflow), run each step on the host or in a container through Dagger, skip what has
not changed (a content-addressed cache), retry what fails for reasons that pass, and
read status, logs and results as pandas DataFrames.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from dagnb.errors import (
    CacheError,
    CacheMissError,
    CircuitOpenError,
    ConfigError,
    CycleError,
    DagnbError,
    DuplicateStepError,
    ExecutorError,
    ExecutorUnavailable,
    FingerprintError,
    GraphError,
    InvalidStepError,
    MissingDependencyError,
    RunFailed,
    SecretError,
    StepCancelled,
    StepError,
    StepFailed,
    StepNotFoundError,
    StepTimeout,
    TransientError,
    UnfingerprintableVariable,
    WorkflowError,
)

# ``dagnb.retry`` is the decorator, not the ``dagnb/retry/`` layer package: binding it here,
# after the package is imported, keeps it so (later submodule imports do not rebind it).
from dagnb.retry.policy import RetryPolicy, retry

__version__ = "0.1.0"

# Everything else loads on first use, so that ``import dagnb`` stays light in a plain
# script, the CLI and CI: no pandas, IPython or ipywidgets until something needs them.
_LAZY = {
    "Graph": ("dagnb.model.graph", "Graph"),
    "Step": ("dagnb.model.step", "Step"),
    "Run": ("dagnb.runtime.run", "Run"),
    "Memory": ("dagnb.cache.memory", "Memory"),
    "Settings": ("dagnb.config", "Settings"),
    "configure": ("dagnb.config", "configure"),
    "settings": ("dagnb.config", "settings"),
    "StepContext": ("dagnb.executors.context", "StepContext"),
    "current": ("dagnb.executors.context", "current"),
    "load": ("dagnb.workflows.loader", "load"),
    "cache": ("dagnb.cache", None),
    "config": ("dagnb.config", None),
    "executors": ("dagnb.executors", None),
    "templates": ("dagnb.workflows.templates", None),
    "services": ("dagnb.executors.dagger.services", None),
    "testing": ("dagnb.testing", None),
    # the warnings dagnb gives, for warnings.filterwarnings(category=...)
    "BrokenTemplateWarning": ("dagnb.workflows.templates", "BrokenTemplateWarning"),
    "DamagedEntryWarning": ("dagnb.cache.store", "DamagedEntryWarning"),
    "RemoteCacheWarning": ("dagnb.cache.remote", "RemoteCacheWarning"),
    "TemplatePathWarning": ("dagnb.workflows.templates", "TemplatePathWarning"),
    "UnkeyedEnvironmentWarning": ("dagnb.fingerprint.environ", "UnkeyedEnvironmentWarning"),
    "UnmountedReadWarning": ("dagnb.runtime.unmounted", "UnmountedReadWarning"),
}

if TYPE_CHECKING:  # pragma: no cover - for type checkers and IDEs only
    import dagnb.cache as cache
    import dagnb.config as config
    import dagnb.executors as executors
    import dagnb.executors.dagger.services as services
    import dagnb.testing as testing
    import dagnb.workflows.templates as templates
    from dagnb.cache.memory import Memory
    from dagnb.cache.remote import RemoteCacheWarning
    from dagnb.cache.store import DamagedEntryWarning
    from dagnb.config import Settings, configure, settings
    from dagnb.executors.context import StepContext, current
    from dagnb.fingerprint.environ import UnkeyedEnvironmentWarning
    from dagnb.model.graph import Graph
    from dagnb.model.step import Step
    from dagnb.runtime.run import Run
    from dagnb.runtime.unmounted import UnmountedReadWarning
    from dagnb.workflows.loader import load
    from dagnb.workflows.templates import BrokenTemplateWarning, TemplatePathWarning


def __getattr__(name: str) -> Any:
    try:
        module_name, attribute = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'dagnb' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attribute is None else getattr(module, attribute)
    globals()[name] = value  # later lookups skip __getattr__
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))


def load_ipython_extension(ipython: Any) -> None:
    """``%load_ext dagnb``: register the ``%%dagger`` magics (loads IPython's side only now)."""
    from dagnb.notebook.magics import load_ipython_extension as load_extension

    load_extension(ipython)


def unload_ipython_extension(ipython: Any) -> None:
    """``%unload_ext dagnb``."""
    from dagnb.notebook.magics import unload_ipython_extension as unload_extension

    unload_extension(ipython)


def builder() -> Any:
    """The graph builder form for the notebook's graph (ipywidgets)."""
    from dagnb.notebook.widgets.builder import builder as make_builder

    return make_builder()


__all__ = [
    "BrokenTemplateWarning",
    "CacheError",
    "CacheMissError",
    "CircuitOpenError",
    "ConfigError",
    "CycleError",
    "DagnbError",
    "DamagedEntryWarning",
    "DuplicateStepError",
    "ExecutorError",
    "ExecutorUnavailable",
    "FingerprintError",
    "Graph",
    "GraphError",
    "InvalidStepError",
    "Memory",
    "MissingDependencyError",
    "RemoteCacheWarning",
    "RetryPolicy",
    "Run",
    "RunFailed",
    "SecretError",
    "Settings",
    "Step",
    "StepCancelled",
    "StepContext",
    "StepError",
    "StepFailed",
    "StepNotFoundError",
    "StepTimeout",
    "TemplatePathWarning",
    "TransientError",
    "UnfingerprintableVariable",
    "UnkeyedEnvironmentWarning",
    "UnmountedReadWarning",
    "WorkflowError",
    "__version__",
    "builder",
    "cache",
    "config",
    "configure",
    "current",
    "executors",
    "load",
    "load_ipython_extension",
    "retry",
    "services",
    "settings",
    "templates",
    "testing",
    "unload_ipython_extension",
]
