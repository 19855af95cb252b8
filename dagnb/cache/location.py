"""Where the cache is: the configured folder, or a store URL's local tier (where run
records and locks live too).

A relative folder (the default ``.dagnb_cache``) is the working directory's, except in a
notebook's kernel: ``%load_ext dagnb`` pins it to the notebook's folder
(:func:`pin_relative_folder`), so a ``%cd`` in a cell does not start a second cache
there, in which every step would run again.
"""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from dagnb import checks
from dagnb.checks import is_url
from dagnb.config import context, settings
from dagnb.errors import ConfigError

# The folders a store makes at a cache's top (a run makes .runs and .locks): what tells a
# dagnb cache folder apart, whatever its name.
STORE_FOLDERS = (".scratch", ".locks", ".packs", ".access", ".runs")


def made_by_a_store(names: Iterable[str]) -> bool:
    """Whether a folder holding ``names`` is a dagnb cache's top: it holds the packs' or
    the entries' scratch folder, or two of a store's folders. Another alone is too common
    a name to tell: the Hugging Face hub's cache holds a ``.locks``."""
    found = set(names).intersection(STORE_FOLDERS)
    return not found.isdisjoint(_OURS_ALONE) or len(found) >= 2


_OURS_ALONE = frozenset({".packs", ".scratch"})  # names only a dagnb store gives a folder


def default_location() -> Path:
    """The configured cache folder, as an absolute path (a store URL's local tier)."""
    return local_folder(settings().cache_directory)


def local_folder(directory: str | os.PathLike[str] | None = None) -> Path:
    """The local folder of a cache directory: itself, or the local tier of a store URL
    (the ``cache_local_directory`` setting), where run records and locks live too."""
    config = settings()
    location = absolute(config.cache_directory if directory is None else directory)
    return absolute(config.cache_local_directory) if isinstance(location, str) else location


def absolute(directory: str | os.PathLike[str]) -> Path | str:
    """A folder resolved now (a relative one follows the working directory, or the
    folder :func:`pin_relative_folder` pinned), or a store URL as given."""
    text = os.fspath(directory)
    if is_url(text):  # (one with credentials in it refused, as the setting's is)
        return checks.checked(checks.location, text, "cache directory", ConfigError, sep=" ")
    path = Path(text).expanduser()
    pinned = pinned_folder()
    return (path if pinned is None else pinned / path).resolve()  # (absolute: path alone)


_RELATIVE_TO = "cache.relative_to"


def pin_relative_folder(folder: str | os.PathLike[str]) -> None:
    """Resolve a relative cache folder against ``folder`` from now on, not against the
    working directory (a notebook kernel's: its notebook's folder)."""
    context().set(_RELATIVE_TO, Path(folder).absolute())


def pinned_folder() -> Path | None:
    """The folder a relative cache folder is resolved against (None: the working
    directory's, as it is then); see :func:`pin_relative_folder`."""
    return context().peek(_RELATIVE_TO)
