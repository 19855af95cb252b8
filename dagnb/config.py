"""Settings: the defaults every run starts from.

Precedence, lowest first: built-in defaults < config file (``dagnb.yaml`` or
``[tool.dagnb]`` in ``pyproject.toml``) < ``DAGNB_*`` environment variables < explicit
arguments (``dagnb.configure(...)``, magic options, CLI flags).
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any

from .errors import ConfigError

__all__ = ["Settings", "configure", "settings"]


@dataclasses.dataclass
class Settings:
    """Process-wide defaults for runs. Field names follow the config file's keys."""

    executor: str = "auto"
    max_concurrent_executions: int = dataclasses.field(
        default_factory=lambda: max(4, os.cpu_count() or 1)
    )
    timeout_seconds: float | None = None  # whole-run limit
    caching_enabled: bool = True
    cache_directory: str = ".dagnb_cache"
    cache_ttl_seconds: float | None = None
    cache_version: str = ""
    max_retries: int = 0
    retry_backoff_factor: float = 0.5
    retry_jitter: float = 0.1
    enable_retry: bool = True
    workflow_directory: str = "workflows"
    container_registry: str | None = None
    container_credentials: dict[str, str] | None = None

    def retry_defaults(self) -> dict[str, Any]:
        """The retry settings as RetryPolicy keyword arguments."""
        return {
            "max_retries": self.max_retries if self.enable_retry else 0,
            "backoff_factor": self.retry_backoff_factor,
            "jitter": self.retry_jitter,
        }


_settings = Settings()


def settings() -> Settings:
    """The settings in force for this process."""
    return _settings


def configure(**changes: Any) -> Settings:
    """Change settings for this process; unknown keys are a ConfigError."""
    names = {f.name for f in dataclasses.fields(Settings)}
    for key, value in changes.items():
        if key not in names:
            raise ConfigError(
                f"unknown setting {key!r}; known settings: {', '.join(sorted(names))}"
            )
        setattr(_settings, key, value)
    return _settings
