"""dagnb: notebook-native task graphs.

Build a graph of steps (``%%dagger`` cells, ``@graph.step`` functions or a YAML
workflow), run each step on the host or in a container through Dagger, skip what has
not changed (a content-addressed cache), retry what fails for reasons that pass, and
read status, logs and results as pandas DataFrames.
"""

from __future__ import annotations

from typing import Any

from . import cache, config, executors, templates
from .config import Settings, configure, settings
from .context import StepContext, current
from .errors import (
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
from .graph import Graph
from .magics import load_ipython_extension, unload_ipython_extension
from .memory import Memory
from .retries import RetryPolicy, retry
from .run import Run
from .step import Step
from .workflow import load

__version__ = "0.1.0"


def builder() -> Any:
    """The graph builder form for the notebook's graph (ipywidgets)."""
    from .widgets.builder import builder as _builder

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
