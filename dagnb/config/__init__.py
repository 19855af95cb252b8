"""Settings: the defaults every run starts from, and where each one came from.

Precedence, lowest first:

1. built-in defaults (the :class:`Settings` field defaults);
2. the project's config file: ``dagnb.yaml`` (or ``dagnb.yml``), else ``[tool.dagnb]``
   in ``pyproject.toml``, found in the current directory or the nearest parent, stopping
   at the first folder that holds ``.git`` (the repository root) or at the filesystem
   root. ``DAGNB_CONFIG=path`` names the file instead; ``DAGNB_CONFIG=none`` skips it
   (empty is unset, as for the ``DAGNB_*`` switches: the search goes on);
3. ``DAGNB_*`` environment variables, one per setting (``DAGNB_MAX_CONCURRENT_EXECUTIONS=8``,
   ``DAGNB_CACHE_DIRECTORY=/scratch/cache``, ``DAGNB_CACHE_MODE=read-only``), the two
   mappings as JSON (``DAGNB_CACHE_STORAGE_OPTIONS='{"endpoint_url": "http://minio:9000"}'``);
   a ``DAGNB_*`` variable that is neither a setting nor one dagnb reads is warned about;
4. explicit arguments: :func:`configure`, magic options, CLI flags.

The file format (every key optional)::

    executor: auto                      # auto, local or dagger
    container_registry: ghcr.io
    project: sales-forecast             # names Dagger cache volumes (default: the folder's)
    dask_scheduler: tcp://10.0.0.5:8786 # executor="dask" steps run there (default: a
                                        # LocalCluster started on first use)
    container_credentials:
      username: me
      token_env: GHCR_TOKEN             # the *name* of a variable; never the token
    workflow_directory: workflows
    raise_on_failure: true              # a %%dagger cell raises when a step fails
    max_concurrent_executions: 8
    timeout_seconds: 3600               # or "1h"
    workflow_defaults:
      step_timeout_seconds: 10m         # each step's limit unless it sets its own
      max_retries: 2
      retry_backoff_factor: 0.5
      retry_jitter: 0.1                 # seconds; true = 0.1, false = none
      enable_retry: true
      cache_mode: read-write            # read-only, fail-on-miss or off (see below)
      cache_directory: .dagnb_cache     # relative paths: relative to the config file
                                        # (~ is the home folder, as in DAGNB_*);
                                        # or a store URL: s3://bucket/prefix, gs://, az://
      cache_local_directory: .dagnb_cache   # a URL's local read-through tier
      cache_storage_options:            # passed to the store library (fsspec); never
        endpoint_url: http://minio:9000 # credentials: those come from its environment
      cache_upload_timeout_seconds: 1m  # an upload (a run's, a save's, a push's) the store
                                        # moves none of for this long is given up (the
                                        # entry stays local, for a later run or push)
      cache_ttl_seconds: 7d
      cache_version: "1.10"             # text: quoted, as YAML reads 1.10 as 1.1
      pin_images: false                 # key container steps by image digest (images.json)

``cache_mode`` says what a run does with the cache: ``read-write`` uses hits and stores
what runs; ``read-only`` uses hits and writes nothing at all to the cache folder (pull
request builds); ``fail-on-miss`` refuses, before anything runs, a run that would execute
a step, listing each with why it misses (CI after the cache was filled or pulled);
``off`` neither looks up nor writes. ``caching_enabled: false`` (and
``DAGNB_CACHING_ENABLED``, ``configure(caching_enabled=...)``) is the older spelling of
``cache_mode: off``; ``true`` turns ``off`` back into ``read-write``.

The orchestration platform's spelling is accepted too and read as dagnb's
(:mod:`dagnb.config.aliases`): ``workflow_defaults.timeout_seconds`` is
``step_timeout_seconds`` and ``jitter`` is ``retry_jitter``.

Settings load lazily, on the first :func:`settings` call, and live in the current
:class:`Context` (:mod:`dagnb.config.live`): a fresh context (:func:`use_context`,
``dagnb.testing.isolated()``) reads them afresh. :func:`reload` reads the file and the
environment again (and forgets :func:`configure` arguments).
"""

from __future__ import annotations

import dataclasses
import functools
import os
import re
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dagnb import checks
from dagnb.config.aliases import DEFAULTS_ALIASES, canonical_file
from dagnb.config.live import Context, context, made, use_context
from dagnb.errors import ConfigError

__all__ = [
    "CACHE_MODES",
    "CONFIG_FILES",
    "ENV_PREFIX",
    "Context",
    "Settings",
    "check_cache_mode",
    "configure",
    "configured_by",
    "context",
    "env_flag",
    "find_config_file",
    "made",
    "origins",
    "readable_source",
    "reload",
    "secret_value",
    "settings",
    "show",
    "use_context",
]

CONFIG_FILES = ("dagnb.yaml", "dagnb.yml")
CACHE_MODES = ("read-write", "read-only", "fail-on-miss", "off")
ENV_PREFIX = "DAGNB_"
DEFAULT = "default"
ARGUMENT = "argument"


@dataclasses.dataclass
class Settings:
    """Process-wide defaults for runs. Field names follow the config file's keys."""

    executor: str = "auto"
    max_concurrent_executions: int = dataclasses.field(
        default_factory=lambda: max(4, os.cpu_count() or 1)
    )
    timeout_seconds: float | None = None  # whole-run limit
    step_timeout_seconds: float | None = None  # limit of a step that sets none
    cache_mode: str = "read-write"  # one of CACHE_MODES
    cache_directory: str = ".dagnb_cache"  # or a store URL (s3://bucket/prefix, ...)
    cache_local_directory: str = ".dagnb_cache"  # the local tier of a store URL
    cache_storage_options: dict[str, Any] | None = None  # fsspec options, no credentials
    # seconds an upload waits on a store that moves none of it (a run's at a step's end,
    # a save's, a push's: see dagnb.cache.remote.HeldUploads); the entry stays unsent
    cache_upload_timeout_seconds: float | None = 60.0  # (None: no limit)
    cache_ttl_seconds: float | None = None
    cache_version: str = ""
    max_retries: int = 0
    retry_backoff_factor: float = 0.5
    retry_jitter: float = 0.1  # seconds
    enable_retry: bool = True
    workflow_directory: str = "workflows"
    raise_on_failure: bool = True  # %%dagger cells and %dagger run raise RunFailed
    container_registry: str | None = None
    container_credentials: dict[str, str] | None = None
    project: str | None = None  # Dagger cache volumes are this project's (None: the folder)
    pin_images: bool = False  # key container steps by image digest (<cache>/images.json)
    dask_scheduler: str | None = None  # executor="dask": its address (None: a LocalCluster)

    @property
    def caching_enabled(self) -> bool:
        """The older spelling of ``cache_mode``: False is ``"off"``."""
        return self.cache_mode != "off"

    @caching_enabled.setter
    def caching_enabled(self, on: bool) -> None:
        # True leaves read-only and fail-on-miss as they are: only "off" is not enabled
        if not on:
            self.cache_mode = "off"
        elif self.cache_mode == "off":
            self.cache_mode = "read-write"

    def retry_defaults(self) -> dict[str, Any]:
        """The retry settings as RetryPolicy keyword arguments."""
        return {
            "max_retries": self.max_retries if self.enable_retry else 0,
            "backoff_factor": self.retry_backoff_factor,
            "jitter": self.retry_jitter,
        }

    def registry_auth(self) -> dict[str, str] | None:
        """Credentials for the Dagger executor, or None when none are configured.

        Returns
        -------
        dict or None
            ``{"address", "username", "password_env" | "token_env"}``: the address is
            ``container_registry`` (``docker.io`` when unset); the password stays in the
            variable named, read only when an image is pulled.
        """
        if not self.container_credentials:
            return None
        return {"address": self.container_registry or "docker.io", **self.container_credentials}

    def credential_secrets(self, store: str | Path | None = None) -> dict[str, str]:
        """The variables holding credentials dagnb uses, and their values, when set: the
        one ``container_credentials`` names, and the store library's secrets
        (``AWS_SECRET_ACCESS_KEY``...) of the setting's cache when it is a store, and of
        ``store`` (a run's ``cache_directory``) when that is one. No step declares them,
        but a local step sees them in its environment (``env`` prints them), so a run
        masks them, and keeps them out of the cache (which a store shares), as declared
        secrets. (The setting's too where a run names a folder: a step still sees them.)"""
        credentials = self.container_credentials or {}
        names = [credentials[key] for key in ("password_env", "token_env") if key in credentials]
        names += checks.key_variables(self.cache_storage_options).values()  # (SSE-C's)
        found = {name: os.environ[name] for name in names if os.environ.get(name)}
        named = _store_secret_names(self.cache_directory)
        if store is not None:  # (a tuple each, most often empty: a run's cost)
            named += _store_secret_names(store)
        for name in dict.fromkeys(named):
            value = os.environ.get(name, "")
            if value.strip() and value.strip() not in _STAND_INS:
                found[name] = value
        if "AWS_SECRET_ACCESS_KEY" in named:  # an S3 store: its profile's keys too
            profile = (self.cache_storage_options or {}).get("profile")
            found.update(_profile_secrets(profile if isinstance(profile, str) else None))
        return found


# The variables whose values are secrets among those the store libraries read: botocore's
# (s3fs: AWS_SECURITY_TOKEN is its older name of the session token), and adlfs' and
# azure-identity's. gcsfs reads none: GOOGLE_APPLICATION_CREDENTIALS names a file.
_STORE_SECRETS = {
    "s3": ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN"),
    "az": ("AZURE_STORAGE_ACCOUNT_KEY", "AZURE_STORAGE_CONNECTION_STRING",
           "AZURE_STORAGE_SAS_TOKEN", "AZURE_STORAGE_CLIENT_SECRET", "AZURE_CLIENT_SECRET"),
}
# The stand-ins local servers take for a store's secret (moto's and LocalStack's, MinIO's
# defaults), words params, results and logs hold for other reasons: no secret. (A real
# one of any length counts: a self-hosted store's password may be short.)
_STAND_INS = frozenset({"testing", "test", "minioadmin", "minio123", "password"})


# The secrets of a profile in the AWS files, by (profile, each file and its mtime): a
# run's prepare asks each time, and parses the files again only when one changed
_PROFILE_SECRETS: dict[tuple[Any, ...], dict[str, str]] = {}
_PROFILE_KEYS = ("aws_secret_access_key", "aws_session_token", "aws_security_token")


def _profile_secrets(profile: str | None) -> dict[str, str]:
    """The secret key and token that botocore reads for ``profile`` (the store's option,
    else ``AWS_PROFILE``) from ``~/.aws/credentials`` and ``~/.aws/config`` (or the files
    ``AWS_SHARED_CREDENTIALS_FILE`` and ``AWS_CONFIG_FILE`` name): the store's secret
    when no variable holds it, which a step's boto3 reads and may print as well. Only
    those files: a role's, SSO's or an instance's credentials are asked of a server,
    which a run's start does not wait on (and each step's session gets its own)."""
    profile = profile or os.environ.get("AWS_PROFILE") or os.environ.get(
        "AWS_DEFAULT_PROFILE") or "default"
    files = tuple(os.path.expanduser(os.environ.get(variable) or default) for variable, default
                  in (("AWS_SHARED_CREDENTIALS_FILE", "~/.aws/credentials"),
                      ("AWS_CONFIG_FILE", "~/.aws/config")))
    known = (profile, *((path, _mtime(path)) for path in files))
    if known not in _PROFILE_SECRETS:
        if len(_PROFILE_SECRETS) > 16:  # (files edited many times in a long kernel)
            _PROFILE_SECRETS.clear()
        _PROFILE_SECRETS[known] = _read_profile_secrets(profile, *files)
    return _PROFILE_SECRETS[known]


def _mtime(path: str) -> int | None:
    try:
        return os.stat(path).st_mtime_ns
    except OSError:
        return None


def _read_profile_secrets(profile: str, credentials: str, config: str) -> dict[str, str]:
    """The secrets of ``profile`` in the ``credentials`` file, then ``config``'s (the
    order botocore reads them in), but a local server's stand-ins; named by the key and
    the profile (never by the value, which no message shows)."""
    try:  # (only for an S3 store: a folder's run imports none of it)
        from botocore.configloader import raw_config_parse
        from botocore.exceptions import BotoCoreError
    except ImportError:  # no s3fs either: the store says so
        return {}
    found: dict[str, str] = {}
    for path, section in ((credentials, profile), (config, _config_section(profile))):
        try:
            keys = raw_config_parse(path).get(section) or {}
        except (BotoCoreError, OSError, ValueError):  # none, or not INI: botocore's to say
            continue
        for key in _PROFILE_KEYS:
            value = str(keys.get(key) or "").strip()
            if value and value not in _STAND_INS and value not in found.values():
                found[f"{key} of AWS profile {profile!r}"] = value
    return found


_PROFILE_SECRET = re.compile(r"(aws_\w+) of AWS profile '(.*)'")  # (the names above)


def secret_value(name: str) -> str:
    """The value of the secret ``name`` in this process ("" for none): its environment
    variable, or, named as :func:`_read_profile_secrets` names one, the key of that AWS
    profile in this machine's files (a dask worker told the names only, as the run's
    other secrets, finds it there, where the step's boto3 would)."""
    value = os.environ.get(name, "")
    if value:
        return value
    named = _PROFILE_SECRET.fullmatch(name)
    return "" if named is None else _profile_secrets(named[2]).get(name, "")


def _config_section(profile: str) -> str:
    """A profile's section in ``~/.aws/config``: ``[profile team]``, ``[default]``."""
    return profile if profile == "default" else f"profile {profile}"


def _store_secret_names(cache_directory: str | Path) -> tuple[str, ...]:
    """The secret variables the store library of ``cache_directory`` reads (a store URL's;
    none for a folder)."""
    if not checks.is_url(cache_directory):
        return ()
    scheme = str(cache_directory).partition("://")[0].lower()
    return _STORE_SECRETS.get(checks.STORE_FAMILIES.get(scheme, ""), ())


# -- checking values (the validators are dagnb.checks'; these few are config's own) --
_NONE = {"none", "null"}  # DAGNB_CONFIG's "no file" (empty is unset: the search goes on)


def _optional_text(value: Any) -> str | None:
    if value is None or (isinstance(value, str) and not value.strip()):
        return None
    return checks.text(value)


def _address(fix: str) -> Callable[[Any], str | None]:
    """A check of an optional server address that refuses one with credentials: every
    setting is printed by ``config show``, so none may hold a password."""
    def check(value: Any) -> str | None:
        text = _optional_text(value)
        return None if text is None else checks.address(text, fix=fix)
    return check


_VERSION_AS_TEXT = ('text, as a number loses digits (1.10 is read as 1.1, and a new version '
                    'would look old); quote it: cache_version: "1.10" in a file, '
                    'cache_version=\'"1.10"\' in %dagger config')


def _version(value: Any) -> str:
    """A salt that must change when its text does: a float is refused (``1.10`` was read as
    1.1); a whole number is kept, as two different ones never give the same text."""
    if isinstance(value, str) or (isinstance(value, int) and not isinstance(value, bool)):
        return str(value)
    raise checks.Invalid(value, _VERSION_AS_TEXT)


_SWITCH_WORDS = frozenset({"true", "false", "yes", "no", "on", "off"})


def _jitter(value: Any) -> float:
    """Seconds, or a switch as the platform writes it: true is the default jitter, false
    none (a number, even ``"1"``, is always seconds)."""
    words = isinstance(value, str) and value.strip().lower() in _SWITCH_WORDS
    if isinstance(value, bool) or words:
        return Settings.retry_jitter if checks.flag(value, text=True) else 0.0
    try:
        return checks.number(value, text=True)
    except checks.Invalid:
        raise checks.Invalid(value, "a number >= 0 (seconds), or true/false") from None


def _cache_mode(value: Any) -> str:
    """One of :data:`CACHE_MODES` (any case, ``_`` for ``-``), with a suggestion. False is
    ``"off"``: YAML reads a bare ``cache_mode: off`` (or ``Off``, ``no``) as False."""
    if value is False:
        return "off"
    if isinstance(value, str):
        mode = value.strip().lower().replace("_", "-")
        if mode in CACHE_MODES:
            return mode
    hint = checks.did_you_mean(value, CACHE_MODES)
    expected = "'read-write', 'read-only', 'fail-on-miss' or 'off'"
    raise checks.Invalid(value, f"{expected}; {hint}" if hint else expected)


def check_cache_mode(value: Any, what: str = "cache_mode") -> str:
    """``value`` as a cache mode, or a ConfigError naming ``what`` (``"--cache-mode"``)
    and the valid modes."""
    sep = "=" if what.isidentifier() else " "
    return checks.checked(_cache_mode, value, what, ConfigError, sep=sep)


_STORE_FIX = (
    "dagnb's config never holds credentials; set them where the store library reads them "
    "(AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY, or profile: NAME for ~/.aws/credentials)"
)


def _storage_options(value: Any) -> dict[str, Any] | None:
    """Options for the cache's store library; credentials in them are refused (as
    ``config show`` prints them), URLs among them checked as code's are (ObjectStore)."""
    return None if value is None else checks.store_options(value, fix=_STORE_FIX)


_CREDENTIAL_KEYS = ("username", "password_env", "token_env")
_PLAINTEXT = ("password", "token")


def _credentials(value: Any) -> dict[str, str] | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise checks.Invalid(value, "a mapping with 'username' and 'password_env' or 'token_env'")
    secret = [k for k in ("password_env", "token_env") if value.get(k)]
    if not value.get("username") or len(secret) != 1:
        raise checks.Invalid(
            value, "a mapping with 'username' and one of 'password_env' or 'token_env'"
        )
    return {k: checks.text(value[k]) for k in ("username", secret[0])}


_COUNT = functools.partial(checks.count, text=True)
_FLAG = functools.partial(checks.flag, text=True)
_NUMBER = functools.partial(checks.number, text=True)
_CHECKS: dict[str, Callable[[Any], Any]] = {
    "executor": functools.partial(checks.one_of, choices=("auto", "local", "dagger")),
    "max_concurrent_executions": functools.partial(_COUNT, least=1),
    "timeout_seconds": checks.duration,
    "step_timeout_seconds": checks.duration,
    "caching_enabled": _FLAG,  # the older spelling of cache_mode (False: "off")
    "cache_mode": _cache_mode,
    "cache_directory": checks.location,
    "cache_local_directory": checks.path,
    "cache_storage_options": _storage_options,
    "cache_upload_timeout_seconds": checks.duration,
    "cache_ttl_seconds": checks.duration,
    "cache_version": _version,
    "max_retries": _COUNT,
    "retry_backoff_factor": _NUMBER,
    "retry_jitter": _jitter,
    "enable_retry": _FLAG,
    "workflow_directory": checks.path,
    "raise_on_failure": _FLAG,
    "container_registry": _address(
        "give the registry's address alone and the login in container_credentials "
        "(username and password_env or token_env)"),
    "container_credentials": _credentials,
    "project": _optional_text,
    "pin_images": _FLAG,
    "dask_scheduler": _address(
        "dask authenticates with TLS certificates from its own config "
        "(distributed.comm.tls), not with a password in the address"),
}
TOP_KEYS = (
    "executor",
    "container_registry",
    "container_credentials",
    "project",
    "dask_scheduler",
    "workflow_directory",
    "raise_on_failure",
    "max_concurrent_executions",
    "timeout_seconds",
    "workflow_defaults",
)
DEFAULT_KEYS = (
    "step_timeout_seconds",
    "max_retries",
    "retry_backoff_factor",
    "retry_jitter",
    "enable_retry",
    "caching_enabled",
    "cache_mode",
    "cache_directory",
    "cache_local_directory",
    "cache_storage_options",
    "cache_upload_timeout_seconds",
    "cache_ttl_seconds",
    "cache_version",
    "pin_images",
)
_PATH_KEYS = ("cache_directory", "cache_local_directory", "workflow_directory")
_SECRET_KEYS = ("container_credentials",)


def _checked(key: str, value: Any, where: str) -> Any:
    # A misplaced token is the likely mistake in a secret key: never echo what was given.
    show = key not in _SECRET_KEYS
    return checks.checked(_CHECKS[key], value, f"{where}: {key}", ConfigError, show=show)


def _known(keys: Any, known: tuple[str, ...], where: str) -> None:
    checks.known_keys(keys, known, where, ConfigError, cutoff=0.5)


# -- the config file ------------------------------------------------------------------
def find_config_file(start: str | Path | None = None) -> Path | None:
    """The config file in force: ``$DAGNB_CONFIG``, else the nearest one upwards.

    The search looks in ``start`` (the current directory) and its parents for
    ``dagnb.yaml``, ``dagnb.yml`` or a ``pyproject.toml`` with a ``[tool.dagnb]`` table,
    and stops after the first folder holding ``.git``, or at the filesystem root.
    """
    named = os.environ.get(f"{ENV_PREFIX}CONFIG", "")
    if named.strip():  # (empty is unset: CI's `DAGNB_CONFIG: ${{ vars.X }}` with X unset)
        return _named_file(named)
    folder = Path(start or Path.cwd()).absolute()
    for candidate in (folder, *folder.parents):
        found = _file_in(candidate)
        if found is not None or (candidate / ".git").exists():
            return found
    return None


def _named_file(named: str) -> Path | None:
    if named.strip().lower() in _NONE:
        return None
    path = Path(named).expanduser()
    if not path.is_file():
        raise ConfigError(
            f"DAGNB_CONFIG names {named!r}, which is not a file; fix the path or unset it"
        )
    return path.absolute()


def _file_in(folder: Path) -> Path | None:
    found = [folder / name for name in CONFIG_FILES if (folder / name).is_file()]
    pyproject = folder / "pyproject.toml"
    if pyproject.is_file() and _read_pyproject(pyproject) is not None:
        found.append(pyproject)
    if len(found) > 1:
        names = ", ".join(p.name for p in found)
        raise ConfigError(f"{str(folder)!r} holds more than one dagnb config ({names}); keep one")
    return found[0] if found else None


def _read_pyproject(path: Path) -> dict[str, Any] | None:
    try:
        import tomllib
    except ImportError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]
    try:
        data = tomllib.loads(_read_text(path))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{str(path)!r} is not valid TOML ({exc}); fix the syntax") from None
    return data.get("tool", {}).get("dagnb")


def _read_file(path: Path) -> Mapping[str, Any]:
    if path.name == "pyproject.toml":
        data: Any = _read_pyproject(path) or {}
    else:
        import yaml  # only a project with a config file pays for it

        from dagnb.config.yaml_keys import DuplicateKeyError, UniqueKeyLoader, yaml_message

        try:
            data = yaml.load(_read_text(path), Loader=UniqueKeyLoader) or {}
        except DuplicateKeyError as exc:
            raise ConfigError(f"{str(path)!r}, line {exc.line}: key {exc.key!r} is given "
                              "twice; keep one") from None
        except yaml.YAMLError as exc:
            raise ConfigError(yaml_message(exc, repr(str(path)))) from None
    if not isinstance(data, Mapping):
        # (its type only: DAGNB_CONFIG=.env would print every secret in it)
        raise ConfigError(f"{str(path)!r}: the config must be a mapping of keys (key: value "
                          f"lines), got {_kind(data)}; is this the right file?")
    return data


def _read_text(path: Path) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        utf16 = exc.object[:2] in (b"\xff\xfe", b"\xfe\xff")  # (PowerShell 5's `>`)
        was = "UTF-16" if utf16 else f"not UTF-8 (byte {exc.start + 1})"
        raise ConfigError(f"{str(path)!r} is {was}; save it as UTF-8") from None


def file_values(path: Path) -> dict[str, Any]:
    """The checked settings of one config file (keys are Settings field names)."""
    where = _describe(path)
    data = _read_file(path)
    if path.name != "pyproject.toml":  # (TOML has no base-60 numbers)
        _refuse_base_60(path, data, where)
    data = canonical_file(data, where)
    values: dict[str, Any] = {}
    for key, raw in data.items():
        if key in DEFAULT_KEYS or (key in DEFAULTS_ALIASES and key not in TOP_KEYS):
            raise ConfigError(
                f"{where}: key {key!r} belongs under 'workflow_defaults'; indent it there"
            )
        _known([key], TOP_KEYS, where)
        if key == "workflow_defaults":
            values.update(_defaults_values(raw, where))
        elif key == "container_credentials":
            values[key] = _file_credentials(raw, where)
        else:
            values[key] = _checked(key, raw, where)
    for key in _PATH_KEYS:
        if key in values and not checks.is_url(values[key]):
            # (~ first, as a DAGNB_* path and --cache-dir: a folder named '~' here is no one's)
            values[key] = str((path.parent / Path(values[key]).expanduser()).resolve())
    return values


# The settings that are durations (``10m`` or seconds), and those that are seconds (a
# number only), as the file may spell them (aliases too)
_DURATION_KEYS = ("timeout_seconds", "step_timeout_seconds", "cache_upload_timeout_seconds",
                  "cache_ttl_seconds")
_SECONDS_KEYS = ("retry_backoff_factor", "retry_jitter", "jitter")


def _refuse_base_60(path: Path, data: Mapping[str, Any], where: str) -> None:
    """Refuse a duration YAML 1.1 read as a base-60 number: ``timeout_seconds: 2:00`` was
    120 s without a word (``DAGNB_TIMEOUT_SECONDS=2:00`` and ``--timeout 2:00`` are
    refused). The file is read again, its numbers as written, only when a duration
    setting holds a number."""
    defaults = data.get("workflow_defaults")
    holders = [(data, where, "")]
    if isinstance(defaults, Mapping):
        holders.append((defaults, f"{where}: workflow_defaults", "workflow_defaults"))
    keys = (*_DURATION_KEYS, *_SECONDS_KEYS)
    if not any(isinstance(holder.get(key), (int, float)) for holder, _, _ in holders
               for key in keys):
        return
    import yaml

    from dagnb.config.yaml_keys import WrittenKeyLoader, base_60_misread

    written = yaml.load(_read_text(path), Loader=WrittenKeyLoader)
    for holder, there, under in holders:
        texts = written.get(under) if under else written
        for key in keys:
            text = texts.get(key) if isinstance(texts, Mapping) else None
            message = base_60_misread(key, holder.get(key), text,
                                      units=key in _DURATION_KEYS)
            if message:
                raise ConfigError(f"{there}: {message}")


def _defaults_values(raw: Any, where: str) -> dict[str, Any]:
    if raw is None:
        return {}
    if not isinstance(raw, Mapping):
        # (its type only: a value here may be a line of secrets the indentation lost)
        raise ConfigError(f"{where}: workflow_defaults is {_kind(raw)}, not a mapping of "
                          "settings; indent the settings under it")
    for key in raw:
        if key in TOP_KEYS:  # (the reverse of file_values' "belongs under")
            raise ConfigError(f"{where}: workflow_defaults: key {key!r} is a top-level "
                              "setting, not a step default; unindent it")
    _known(raw, (*DEFAULT_KEYS, *DEFAULTS_ALIASES), f"{where}: workflow_defaults")
    values = {key: _checked(key, value, where) for key, value in raw.items()}
    if _cache_switches_disagree(values):
        raise ConfigError(
            f"{where}: workflow_defaults: caching_enabled: {_yaml_flag(values['caching_enabled'])}"
            f" and cache_mode: {values['cache_mode']} disagree; give one of the two")
    return values


def _cache_switches_disagree(values: Mapping[str, Any]) -> bool:
    """Whether ``caching_enabled`` and ``cache_mode``, both given in one place, disagree:
    set in turn, the later one would silently undo the other."""
    if "caching_enabled" not in values or "cache_mode" not in values:
        return False
    return bool(values["caching_enabled"]) != (values["cache_mode"] != "off")


def _yaml_flag(on: Any) -> str:
    return "true" if on else "false"


def _file_credentials(raw: Any, where: str) -> dict[str, str] | None:
    if isinstance(raw, Mapping):
        for key in raw:
            if key in _PLAINTEXT:
                raise ConfigError(
                    f"{where}: container_credentials.{key} is refused because a plaintext "
                    f"secret in settings ends up in files, history and logs; put it in an "
                    f"environment variable and give {key}_env: VARIABLE_NAME instead"
                )
        _known(raw, _CREDENTIAL_KEYS, f"{where}: container_credentials")
        for key in _CREDENTIAL_KEYS:
            _credential_field(key, raw.get(key), where)
    return _checked("container_credentials", raw, where)


def _credential_field(key: str, value: Any, where: str) -> None:
    """One field of ``container_credentials``, named in its error and never shown: a
    token pasted in the wrong place is the likely mistake."""
    if value is None or value == "":  # (missing: the mapping's own check says what it needs)
        return
    if not isinstance(value, str):
        raise ConfigError(f"{where}: container_credentials.{key} is {_kind(value)}, not text; "
                          f"quote it ({key}: \"...\")")
    if key.endswith("_env") and not _is_variable_name(value):
        raise ConfigError(
            f"{where}: container_credentials.{key} looks like a token, not a variable's name "
            f"(letters, digits and '_'); put the token in an environment variable and give "
            f"{key}: VARIABLE_NAME (not shown: a secret in settings ends up in logs)"
        )


def _is_variable_name(value: str) -> bool:
    try:
        checks.variable_name(value)
    except checks.Invalid:
        return False
    return True


_KINDS = {bool: "true/false", int: "a number", float: "a number", str: "text",
          list: "a list", dict: "a mapping"}


def _kind(value: Any) -> str:
    """What YAML made of a value, for a message that must not show it."""
    return _KINDS.get(type(value), f"a {type(value).__name__}")


def _describe(path: Path) -> str:
    return f"{path} [tool.dagnb]" if path.name == "pyproject.toml" else str(path)


# -- the environment ------------------------------------------------------------------
def env_values(environ: Mapping[str, str] | None = None) -> dict[str, tuple[Any, str]]:
    """Settings given as ``DAGNB_<KEY>`` variables: key -> (value, variable name)."""
    environ = os.environ if environ is None else environ
    values = {}
    for key in _CHECKS:
        name = ENV_PREFIX + key.upper()
        if name not in environ or (key in _MAPPING_KEYS and not environ[name].strip()):
            continue
        values[key] = (_env_value(key, environ[name], f"environment variable {name}"), name)
    if _cache_switches_disagree({key: value for key, (value, _) in values.items()}):
        raise ConfigError(
            f"environment variables {ENV_PREFIX}CACHING_ENABLED="
            f"{environ[ENV_PREFIX + 'CACHING_ENABLED']} and {ENV_PREFIX}CACHE_MODE="
            f"{environ[ENV_PREFIX + 'CACHE_MODE']} disagree; unset one of the two")
    return values


_MAPPING_KEYS = {  # settings that are mappings: their variable holds JSON (or YAML's flow)
    "cache_storage_options": '{"endpoint_url": "http://minio:9000"}',
    "container_credentials": '{"username": "me", "token_env": "GHCR_TOKEN"}',
}


def _env_value(key: str, text: str, where: str) -> Any:
    if key in _MAPPING_KEYS:
        mapping = _env_mapping(key, text, where)
        if key == "container_credentials":
            return _file_credentials(mapping, where)
        return _checked(key, mapping, where)
    value = _checked(key, text, where)
    if key in _PATH_KEYS and not checks.is_url(value):
        value = str(Path(value).expanduser().absolute())
    return value


def _env_mapping(key: str, text: str, where: str) -> Any:
    """The mapping a variable holds as JSON; an error never shows the text (it may be
    credentials pasted whole)."""
    import yaml  # (JSON is YAML's flow style: {endpoint_url: x} reads too)

    try:
        value = yaml.safe_load(text)
    except yaml.YAMLError:
        value = None
    if not isinstance(value, Mapping):
        raise ConfigError(f"{where} is not a mapping; give it as JSON: {_MAPPING_KEYS[key]}")
    return value


# DAGNB_* variables dagnb reads or sets that are no setting: never "did you mean" them.
_OWN_VARIABLES = frozenset({
    "DAGNB_CONFIG", "DAGNB_WIDGETS", "DAGNB_TEMPLATE_PATH",  # read by config, widgets, templates
    "DAGNB_ONLY_STEPS",  # set by `dagnb run NOTEBOOK --target` for the kernel
    "DAGNB_NOTEBOOK_FILE",  # set by dagnb run NOTEBOOK for the kernel (run records' origin)
    "DAGNB_STEP_TOKEN",  # set in every step's processes (executors.reaper)
    # the step contract (model.step.CONTRACT_VARIABLES) and the Dagger executor's DAGNB_KEY:
    # a step that runs dagnb (a nested graph) has them in its environment
    "DAGNB_OUT", "DAGNB_IN", "DAGNB_PARAMS", "DAGNB_STEP", "DAGNB_RUN_ID", "DAGNB_ATTEMPT",
    "DAGNB_KEY",
    "DAGNB_STUB_SANDBOX", "DAGNB_SKIP_BINDER", "DAGNB_SHOWN",  # dagnb's own tests
})
_OWN_PREFIXES = ("DAGNB_PARAM_", "DAGNB_TEST_")  # a step's params; dagnb's own tests


def _warn_unknown_variables(environ: Mapping[str, str]) -> None:
    """Say once, for each ``DAGNB_*`` variable that is no setting, that it is ignored,
    with the setting it was likely meant for (``DAGNB_CACHE_DIR``: a flag's name)."""
    warned = made("unknown variables warned", set)
    read = {ENV_PREFIX + key.upper() for key in _CHECKS} | _OWN_VARIABLES
    for name in sorted(environ):
        if (not name.startswith(ENV_PREFIX) or name in read or name in warned
                or name.startswith(_OWN_PREFIXES)):
            continue
        warned.add(name)
        hint = _variable_hint(name[len(ENV_PREFIX):].lower())
        checks.warn_user(f"environment variable {name} is not a dagnb setting and is "
                         f"ignored; {hint}")


_READ_VARIABLES = ("config", "widgets", "template_path")  # (suggested too: DAGNB_CONFIG_FILE)


def _variable_hint(key: str) -> str:
    """The file's "did you mean" on the key part (``cache_dir``: ``cache_directory``, as
    in the file; on whole names the shared ``DAGNB_CACHE_`` made it ``DAGNB_CACHE_MODE``)."""
    choices = (*_CHECKS, *_READ_VARIABLES)
    started = [choice for choice in choices if choice.startswith(key)]  # (a flag's short form)
    close = started[0] if len(started) == 1 else checks.closest(key, choices, cutoff=0.5)
    if close is None:
        return "the variables are DAGNB_<KEY> for the keys dagnb config show lists"
    return f"did you mean {ENV_PREFIX + close.upper()}?"


def env_flag(name: str, environ: Mapping[str, str] | None = None) -> bool | None:
    """An on/off variable that is no setting (``DAGNB_WIDGETS``), read as the settings'
    flags are: ``true/false``, ``yes/no``, ``on/off``, ``1/0``; None when unset or empty.

    Raises
    ------
    ConfigError
        For any other value, naming the variable and the values it takes.
    """
    value = (os.environ if environ is None else environ).get(name, "").strip()
    if not value:
        return None
    try:
        return _FLAG(value)
    except checks.Invalid:
        raise ConfigError(f"environment variable {name}={value!r} is not valid; expected "
                          "true/false, yes/no, on/off or 1/0") from None


# -- the process-wide settings --------------------------------------------------------
@dataclasses.dataclass
class _Loaded:
    """The context's settings (one object callers may hold) and each value's origin."""

    settings: Settings | None = None
    origins: dict[str, str] = dataclasses.field(default_factory=dict)


def _loaded() -> _Loaded:
    """The current context's settings holder (empty until the first :func:`settings`)."""
    return made("settings", _Loaded)


def _load() -> Settings:
    """Defaults < file < environment, with each value's origin recorded."""
    loaded, origin = Settings(), dict.fromkeys(_CHECKS, DEFAULT)
    path = find_config_file()
    if path is not None:
        for key, value in file_values(path).items():
            _set(loaded, origin, key, value, _describe(path))
    for key, (value, name) in env_values().items():
        _set(loaded, origin, key, value, name)
    _warn_unknown_variables(os.environ)
    return _install(loaded, origin)


def _set(values: Settings, origin: dict[str, str], key: str, value: Any, where: str) -> None:
    """One setting and where it came from. ``caching_enabled`` is read from ``cache_mode``,
    so setting the mode sets its origin too; ``caching_enabled`` marks the mode's origin
    only when it changed it (true leaves read-only as the file gave it)."""
    mode_before = values.cache_mode
    setattr(values, key, value)
    origin[key] = where
    if key == "cache_mode":
        origin["caching_enabled"] = where
    elif key == "caching_enabled" and values.cache_mode != mode_before:
        origin["cache_mode"] = where


def _install(values: Settings, origin: dict[str, str]) -> Settings:
    """Copy ``values`` into the one Settings object (callers may hold it)."""
    held = _loaded()
    if held.settings is None:
        held.settings = values
    else:
        for field in dataclasses.fields(Settings):
            setattr(held.settings, field.name, getattr(values, field.name))
    held.origins = dict(origin)
    return held.settings


def settings() -> Settings:
    """The settings of the current context (loaded on its first call).

    The same object is returned until the context is replaced (:func:`use_context`):
    :func:`configure` and :func:`reload` change it in place, so callers may hold it.
    """
    current = made("settings", _Loaded).settings  # (_loaded()'s, with a call less)
    return current if current is not None else _load()


def reload() -> Settings:
    """Read the config file and the environment again; :func:`configure` calls are lost."""
    return _load()


def configure(**changes: Any) -> Settings:
    """Change settings for this process (explicit arguments win over file and env).

    Parameters
    ----------
    **changes
        Settings field names and values, checked as the config file's are; a relative
        ``cache_directory`` or ``workflow_directory`` is made absolute now.

    Raises
    ------
    ConfigError
        For an unknown name or a value of the wrong type.
    """
    return configured_by("dagnb.configure()", changes)


def configured_by(call: str, changes: Mapping[str, Any]) -> Settings:
    """:func:`configure`, its refusals naming ``call`` (``%dagger config``: the user
    typed no ``dagnb.configure()``)."""
    current = settings()
    checked = {}
    for key, value in changes.items():
        _known([key], tuple(_CHECKS), call)
        if key == "container_credentials":
            checked[key] = _file_credentials(value, call)
        else:
            checked[key] = _checked(key, value, call)
        if key in _PATH_KEYS and not checks.is_url(checked[key]):
            checked[key] = str(Path(checked[key]).expanduser().absolute())
    if _cache_switches_disagree(checked):
        raise ConfigError(f"{call}: caching_enabled={checked['caching_enabled']!r} "
                          f"and cache_mode={checked['cache_mode']!r} disagree; give one")
    fields = {key: value for key, value in checked.items() if key != "caching_enabled"}
    new, origin = dataclasses.replace(current, **fields), dict(_loaded().origins)
    for key, value in checked.items():
        _set(new, origin, key, value, ARGUMENT)
    return _install(new, origin)


def origins() -> dict[str, str]:
    """Setting name -> where its value came from: 'default', a file, a variable name
    or 'argument'."""
    settings()
    return dict(_loaded().origins)


def show(*, short_paths: bool = True) -> Any:
    """The effective settings as a DataFrame: key, value, source. With ``short_paths`` a
    file in the current folder is named by its relative path and one in the home folder
    with ``~``: a notebook's table cuts a long cell short, and the end of a path is what
    names the file (``dagnb config show`` prints whole paths)."""
    import pandas as pd

    return pd.DataFrame(show_rows(short_paths=short_paths), columns=["key", "value", "source"])


def show_rows(*, short_paths: bool = True) -> list[dict[str, Any]]:
    """:func:`show`'s rows, without pandas (``dagnb config show`` prints them)."""
    current, where = settings(), origins()
    shown = readable_source if short_paths else str
    return [{"key": key, "value": getattr(current, key), "source": shown(where[key])}
            for key in _CHECKS]


def readable_source(source: str) -> str:
    """An origin as :func:`show` prints it (see there); 'default', a variable name and
    'argument' as they are."""
    path, bracket, section = source.partition(" [")  # "pyproject.toml [tool.dagnb]"
    if not os.path.isabs(path):
        return source
    here, home = os.getcwd(), os.path.expanduser("~")
    if path.startswith(here + os.sep):
        path = os.path.relpath(path, here)
    elif home not in ("", "/") and path.startswith(home + os.sep):
        path = "~" + path[len(home):]
    return path + bracket + section
