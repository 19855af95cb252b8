"""dagnb: notebook-native task graphs.

Build a graph of steps (``%%dagger`` cells, ``@graph.step`` functions or a YAML
workflow), run each step on the host or in a container through Dagger, skip what has
not changed (a content-addressed cache), retry what fails for reasons that pass, and
read status, logs and results as pandas DataFrames.
"""

from __future__ import annotations

from typing import Any

from dagnb import cache, config, executors
from dagnb.cache.memory import Memory
from dagnb.config import Settings, configure, settings
from dagnb.errors import (
    CacheError,
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
    SecretError,
    StepCancelled,
    StepError,
    StepFailed,
    StepNotFoundError,
    StepTimeout,
    TransientError,
    WorkflowError,
)
from dagnb.executors.context import StepContext, current
from dagnb.model.graph import Graph
from dagnb.model.step import Step
from dagnb.notebook.magics import load_ipython_extension, unload_ipython_extension
from dagnb.retry.policy import RetryPolicy, retry
from dagnb.runtime.run import Run
from dagnb.workflows import templates
from dagnb.workflows.loader import load

__version__ = "0.1.0"


def builder() -> Any:
    """The graph builder form for the notebook's graph (ipywidgets)."""
    from dagnb.notebook.widgets.builder import builder as _builder

    return _builder()


__all__ = [
    "CacheError",
    "CircuitOpenError",
    "ConfigError",
    "CycleError",
    "DagnbError",
    "DuplicateStepError",
    "ExecutorError",
    "ExecutorUnavailable",
    "FingerprintError",
    "Graph",
    "GraphError",
    "InvalidStepError",
    "Memory",
    "MissingDependencyError",
    "RetryPolicy",
    "Run",
    "SecretError",
    "Settings",
    "Step",
    "StepCancelled",
    "StepContext",
    "StepError",
    "StepFailed",
    "StepNotFoundError",
    "StepTimeout",
    "TransientError",
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
    "settings",
    "templates",
    "unload_ipython_extension",
]
