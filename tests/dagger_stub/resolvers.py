"""The stub engine's objects: immutable states behind opaque IDs, evaluated lazily.

Every object is a ``(type name, state)`` pair. The state is a plain JSON value (for a
container: image, env, secret names -> secret IDs, mounts, files, workdir, cache mounts,
service bindings, registry auth and the last exec); its ID is ``Type:<digest of the
state>`` and the state itself stays in a server-side table, so an ID never carries a
secret. Secret plaintext lives only in :attr:`StubEngine.secrets`, keyed by an opaque
handle. Like Dagger, nothing runs until a field needs it (``stdout``, ``sync``,
``export``, ...).

The exec cache, as the engine's: an exec runs once per container definition (image,
env values, mounts' contents, args, ...; :meth:`StubEngine.cache_key`); of variables set
with ``withVolatileVariable`` only the names are part of it, so a cached exec keeps the
values of the run that made it. An exec that ends outside its ``expect`` (an
``ExecError``) is not cached: asked again, it runs again.

Volatile values, as the engine's (v0.21.8 core/schema/container.go withVolatileVariable,
dagql/cache.go SetVolatileVars, core/container_exec.go ResolveVolatileVars): they are
kept per session, name -> value, the last set winning, and an exec reads the session's
values of its variables' names when it runs, not those its container was given. Two
containers of one session that set ``X`` run with whichever value was set last.

Images, as the engine's: ``from(address)`` resolves a tag to a digest once per session
(:meth:`StubEngine.new_session`; a digest address is taken as it is), the digest is part
of the container's definition (so of the exec cache key), and ``imageRef`` answers only
right after ``from``: a container whose files, mounts or secrets changed since has none.
:meth:`StubEngine.move_tag` makes a tag point at another digest, as a push would.
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import json
import os
import secrets as secrets_module
import shutil
import socket
import tempfile
import threading
from pathlib import Path, PurePosixPath
from typing import Any

from . import sandbox

__all__ = ["ExecFailure", "Obj", "StubEngine"]

VERSION = "v0.21.8"
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_EMPTY_CONTAINER: dict[str, Any] = {
    "image": None,
    "env": {},
    "volatile": {},
    "secrets": {},
    "workdir": "/",
    "user": "",
    "labels": {},
    "files": {},
    "mounts": {},
    "services": {},
    "auth": {},
    "ports": [],
    "exec": None,
    "digest": None,  # of the image, resolved by from()
    "ref": None,  # imageRef: set by from(), dropped by a change other than _KEEPS_REF's
}
# Changes after which the engine still answers imageRef (it clears it on the others).
_KEEPS_REF = frozenset({"image", "digest", "ref", "user", "env", "workdir", "platform"})
_NO_REF = ("Image reference can only be retrieved immediately after the 'Container.From' "
           "call. Error in fetching imageRef as the container image is changed")


class ExecFailure(Exception):
    """An exec that exited outside its ``expect``; graphql-core copies ``extensions``."""

    def __init__(self, argv: list[str], result: sandbox.ExecResult) -> None:
        super().__init__(
            f"process {json.dumps(argv)} did not complete successfully: "
            f"exit code: {result.exit_code}"
        )
        self.extensions = {
            "_type": "EXEC_ERROR",
            "cmd": argv,
            "exitCode": result.exit_code,
            "stdout": result.stdout,
            "stderr": result.stderr,
        }


class StubEngine:
    """All server-side state of one stub: objects, secrets, exec results, counters."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.objects: dict[str, tuple[str, Any]] = {}
        self.secrets: dict[str, str] = {}  # opaque handle -> plaintext
        self._secret_key = secrets_module.token_bytes(16)
        self._lock = threading.Lock()
        self._exec_locks: dict[str, threading.Lock] = {}
        self.exec_results: dict[str, tuple[sandbox.ExecResult, Path]] = {}
        self.host_reads: dict[str, str] = {}  # request -> stored snapshot (per client)
        self.services: dict[str, dict[str, Any]] = {}  # service ID -> runtime record
        self.exec_log: list[dict[str, Any]] = []
        self.active_execs = 0
        self.max_active_execs = 0
        self.request = threading.local()  # .alive(): is the asking client still connected
        self.version = VERSION
        self.images: dict[str, dict[str, str]] = {}  # address -> image config ({"user": ...})
        self.tags: dict[tuple[str, str | None], str] = {}  # moved tags: -> their new digest
        self.resolved: dict[tuple[str, str | None], str] = {}  # this session's resolutions
        self._cache_keys: dict[str, str] = {}
        self.volatile: dict[str, str] = {}  # this session's volatile values, the last set
        self._volatile_calls: set[str] = set()  # withVolatileVariable results resolved
        self.hidden: list[Path] = []  # host folders no exec sees (sandbox.run's ``hidden``)

    def client_alive(self) -> bool:
        """Whether the client of the request being answered is still connected."""
        alive = getattr(self.request, "alive", None)
        return alive() if alive else True

    # -- identity ---------------------------------------------------------------------

    def make(self, type_name: str, state: Any) -> Obj:
        """The object of this type and state (the same state gives the same ID)."""
        blob = json.dumps([type_name, state], sort_keys=True)
        ident = f"{type_name}:{hashlib.sha256(blob.encode()).hexdigest()[:32]}"
        with self._lock:
            self.objects.setdefault(ident, (type_name, state))
        return Obj(self, type_name, state, ident)

    def load(self, ident: str) -> Obj:
        """The object behind an ID the stub handed out."""
        try:
            type_name, state = self.objects[ident]
        except KeyError:
            raise ValueError(f"unknown ID {ident!r}") from None
        return Obj(self, type_name, state, ident)

    def cache_key(self, ident: str) -> str:
        """The engine's cache key of an object: its definition with the names of its
        volatile variables but not their values (v0.21.8 withVolatileVariable's content
        digest: "with-volatile-variable-name-only"), with every object it refers to
        replaced by that object's key."""
        found = self._cache_keys.get(ident)
        if found is None:
            type_name, state = self.objects[ident]
            if type_name == "Container":
                state = {**state, "volatile": sorted(state["volatile"])}
            blob = json.dumps([type_name, self._keyed(state)], sort_keys=True)
            found = self._cache_keys[ident] = hashlib.sha256(blob.encode()).hexdigest()[:32]
        return found

    def _keyed(self, value: Any) -> Any:
        if isinstance(value, dict):
            return {k: self._keyed(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self._keyed(v) for v in value]
        if isinstance(value, str) and value in self.objects:
            return self.cache_key(value)
        return value

    def describe(self, ident: str) -> tuple[str, Any]:
        """(type name, state) behind an ID, for tests."""
        return self.objects[ident]

    def secret_handle(self, name: str, plaintext: str) -> str:
        """An opaque handle; the plaintext stays in this table only. As the engine's
        setSecret (v0.21.8 core/schema/secret.go, core/secret.go SetSecretHandle), the
        handle, so the secret's digest in every cache key, comes from the name alone,
        and the value set last under a name is the one bound to it (dagql/cache.go
        BindSessionResource): a new value under the same name busts no exec cache."""
        digest = hmac.new(self._secret_key, name.encode(), "sha256")
        handle = digest.hexdigest()[:32]
        self.secrets[handle] = plaintext
        return handle

    def restart(self) -> None:
        """The engine restarts: every object, secret, cached exec and service is gone (an
        ID from before is unknown), as for a client whose session died."""
        with self._lock:
            self.objects.clear()
            self.secrets.clear()
            self._cache_keys.clear()
        self.reset()

    def reset(self) -> None:
        """Forget exec results, services and counters (objects and secrets stay)."""
        with self._lock:
            self.exec_results.clear()
            self.host_reads.clear()
            self.services.clear()
            self.exec_log.clear()
            self.active_execs = self.max_active_execs = 0
            self.version = VERSION
            self.images.clear()
            self.tags.clear()
            self.resolved.clear()
            self.hidden.clear()
            self._forget_volatile()

    def new_session(self) -> None:
        """A client opened a session: its tags resolve afresh (the engine keys a tag's
        resolution by session; a digest needs none), and it has no volatile values."""
        with self._lock:
            self.resolved.clear()
            self._forget_volatile()

    def _forget_volatile(self) -> None:
        self.volatile.clear()
        self._volatile_calls.clear()

    def set_volatile(self, ident: str, name: str, value: str) -> None:
        """Container ``ident`` was made by ``withVolatileVariable(name, value)``: the
        session's ``name`` is now ``value``. The field is per session (PerSessionInput):
        the engine runs its resolver once per session, so a call asked again (a query
        that re-sends the chain) sets nothing."""
        with self._lock:
            if ident not in self._volatile_calls:
                self._volatile_calls.add(ident)
                self.volatile[name] = value

    def volatile_values(self, names: Any) -> dict[str, str]:
        """The session's values of ``names`` now (a name never set has none)."""
        with self._lock:
            return {name: self.volatile[name] for name in names if name in self.volatile}

    def move_tag(self, address: str, platform: str | None = None) -> str:
        """Point tag ``address`` at a new digest, as a push to the registry would; a
        session that resolved it already keeps the old one. Returns the new digest."""
        name = _normalized(address)
        with self._lock:
            old = self.tags.get((name, platform)) or _tag_digest(name, platform)
            self.tags[(name, platform)] = _tag_digest(old, platform)
            return self.tags[(name, platform)]

    def resolve(self, address: str, platform: str | None) -> tuple[str, str]:
        """(digest, imageRef) of ``address``: a tag resolves once per session."""
        name, _, pinned = address.partition("@")
        name = _normalized(name)
        if pinned:
            return pinned, f"{name}@{pinned}"
        with self._lock:
            current = self.tags.get((name, platform)) or _tag_digest(name, platform)
            digest = self.resolved.setdefault((name, platform), current)
        return digest, f"{name}@{digest}"

    # -- storage ----------------------------------------------------------------------

    def new_dir(self, prefix: str) -> Path:
        """A fresh directory in the stub's store."""
        return Path(tempfile.mkdtemp(prefix=prefix, dir=self.workdir))

    def read_host(self, path: str, is_file: bool, no_cache: bool = False,
                  exclude: list[str] | None = None, gitignore: bool = False) -> str:
        """``host.directory/file``: like the engine, a read is cached per client (here:
        until :meth:`reset`) unless ``noCache``, so an edit can go unseen."""
        request = json.dumps([path, is_file, exclude or [], gitignore])
        with self._lock:
            cached = None if no_cache else self.host_reads.get(request)
        if cached is None:
            cached = self.snapshot_host(path, is_file, _host_excludes(path, exclude, gitignore))
            with self._lock:
                self.host_reads[request] = cached
        return cached

    def snapshot_host(self, path: str, is_file: bool, exclude: list[str] | None = None) -> str:
        """Copy a host path into the store now, as Dagger uploads it; keyed by content.
        As the engine's (v0.21.8 engine/client/filesync.go normalizeLocalImportStat),
        every uploaded entry is root's (0:0) and keeps its mode: a private file (0600)
        is unreadable to a non-root user unless a mount's ``owner`` gives it to them."""
        source = Path(path)
        if not source.exists():
            raise ValueError(f"{path!r} does not exist on the host")
        staging = self.new_dir("upload-")
        copy = staging / (source.name if is_file else "d")
        if is_file:
            shutil.copy2(source, copy)
        else:
            shutil.copytree(source, copy, symlinks=True, ignore=_ignoring(source, exclude or []))
        _chown(copy, "0:0")
        target = self.workdir / f"host-{_content_digest(copy)}"
        with self._lock:
            if target.exists():
                shutil.rmtree(staging)
            else:
                staging.rename(target)
        return str(target)

    # -- execs ------------------------------------------------------------------------

    def exec_result(self, ctr_id: str) -> tuple[sandbox.ExecResult, Path]:
        """Run the last exec of a container once per cache key; later calls reuse it."""
        key = self.cache_key(ctr_id)
        with self._lock:
            lock = self._exec_locks.setdefault(key, threading.Lock())
        with lock:
            found = self.exec_results.get(key)
            if found is None:
                ctr = self.load(ctr_id)
                found = self._run_exec(ctr)
                if _expected(ctr.state["exec"]["expect"], found[0].exit_code):
                    self.exec_results[key] = found  # dagql caches no errors
            return found

    def _run_exec(self, ctr: Obj) -> tuple[sandbox.ExecResult, Path]:
        spec = ctr.state["exec"]
        parent = self.load(spec["parent"])
        root = self.new_dir("root-")
        parent.build_rootfs(root)
        parent.build_mounts(root)
        env = parent.exec_env()
        entry = {"args": spec["args"], "image": parent.state["image"], "exit_code": None,
                 "volatile": {name: env[name] for name in parent.state["volatile"]
                              if name in env}}  # (the session's values, as it runs)
        self.exec_log.append(entry)
        try:
            with self._counting():
                result = sandbox.run(root, spec["args"], env, parent.state["workdir"],
                                     parent.binds(), alive=self.client_alive,
                                     user=_ids(parent.state["user"]), hidden=self.hidden,
                                     read_only=parent.read_only_mounts())
        except sandbox.Cancelled:
            entry["cancelled"] = True  # like the engine: the work of a gone client stops
            raise
        entry["exit_code"] = result.exit_code
        parent.drop_mounts(root)
        return result, root

    @contextlib.contextmanager
    def _counting(self):
        with self._lock:
            self.active_execs += 1
            self.max_active_execs = max(self.max_active_execs, self.active_execs)
        try:
            yield
        finally:
            with self._lock:
                self.active_execs -= 1


def go_expand(text: str, mapping: Any) -> str:
    """Go's os.Expand: ``${name}`` and ``$name`` replaced by ``mapping(name)``; one of the
    shell's special names (``$$``, ``$1``, ``$@``) is read as a name; ``${}`` and an
    unclosed ``${`` are dropped; a ``$`` before anything else stays."""
    out, i, j = [], 0, 0
    while j < len(text):
        if text[j] == "$" and j + 1 < len(text):
            out.append(text[i:j])
            name, width = _shell_name(text[j + 1:])
            if name == "" and width > 0:
                pass  # bad syntax: eaten
            elif name == "":
                out.append("$")
            else:
                out.append(mapping(name) or "")
            j += width
            i = j + 1
        j += 1
    out.append(text[i:])
    return "".join(out)


_GO_SPECIAL = "*#$@!?-0123456789"


def _shell_name(s: str) -> tuple[str, int]:
    """Go's getShellName."""
    if s[0] == "{":
        if len(s) > 2 and s[1] in _GO_SPECIAL and s[2] == "}":
            return s[1:2], 3
        for i in range(1, len(s)):
            if s[i] == "}":
                return ("", 2) if i == 1 else (s[1:i], i + 1)
        return "", 1
    if s[0] in _GO_SPECIAL:
        return s[0:1], 1
    i = 0
    while i < len(s) and (s[i] == "_" or (s[i].isascii() and s[i].isalnum())):
        i += 1
    return s[:i], i


def _expected(expect: str, code: int) -> bool:
    """Dagger's ReturnType: ANY is 0-127 and 192-255, so a signal (128-191) still fails."""
    normal = code <= 127 or code >= 192
    return {"SUCCESS": code == 0, "FAILURE": code != 0 and normal, "ANY": normal}[expect]


def _normalized(name: str) -> str:
    """A reference as the engine spells it: ``python:3.12`` is
    ``docker.io/library/python:3.12``; no tag is ``:latest``."""
    first, _, rest = name.partition("/")
    if not rest:
        name = f"docker.io/library/{name}"
    elif "." not in first and ":" not in first and first != "localhost":
        name = f"docker.io/{name}"
    if ":" not in name.rsplit("/", 1)[-1]:
        name += ":latest"
    return name


def _tag_digest(seed: str, platform: str | None) -> str:
    return "sha256:" + hashlib.sha256(f"{seed}|{platform}".encode()).hexdigest()


def _content_digest(path: Path) -> str:
    """Digest of names and bytes under path, so an unchanged upload keeps its ID."""
    digest = hashlib.sha256()
    files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())
    for file in files:
        digest.update(str(file.relative_to(path.parent if path.is_file() else path)).encode())
        digest.update(hashlib.sha256(file.read_bytes()).digest())
    return digest.hexdigest()[:32]


def _host_excludes(path: str, exclude: list[str] | None, gitignore: bool) -> list[str]:
    """The exclude patterns plus, with ``gitignore``, the folder's own .gitignore lines."""
    patterns = list(exclude or [])
    ignore_file = Path(path) / ".gitignore"
    if gitignore and ignore_file.is_file():
        lines = ignore_file.read_text().splitlines()
        patterns += [line.strip() for line in lines if line.strip() and line[0] != "#"]
    return patterns


def _excluded(relative: str, patterns: list[str]) -> bool:
    """Dagger-style patterns (``.git``, ``**/.venv``, ``*.tmp``) against a relative path."""
    parts = relative.split("/")
    for pattern in patterns:
        pattern = pattern.strip("/").removeprefix("./")
        if pattern.startswith("**/"):
            if any(fnmatch.fnmatchcase(part, pattern[3:]) for part in parts):
                return True
        elif any(fnmatch.fnmatchcase("/".join(parts[:n]), pattern)
                 for n in range(1, len(parts) + 1)):
            return True
    return False


def _ignoring(root: Path, patterns: list[str]) -> Any:
    """A ``shutil.copytree`` ignore function for ``patterns``, relative to ``root``."""
    def ignore(folder: str, names: list[str]) -> set[str]:
        base = os.path.relpath(folder, root)
        prefix = "" if base == "." else base + "/"
        return {name for name in names if _excluded(prefix + name, patterns)}

    return ignore


def _ids(user: str) -> str:
    """``"uid:gid"`` for a user spec (``"1000"``, ``"1000:100"``, ``"jovyan"``); "" for root."""
    import grp
    import pwd

    if user in ("", "root", "0", "0:0", "root:root"):
        return ""
    name, _, group = user.partition(":")
    uid = int(name) if name.isdigit() else pwd.getpwnam(name).pw_uid
    if group:
        gid = int(group) if group.isdigit() else grp.getgrnam(group).gr_gid
    else:
        try:
            gid = pwd.getpwuid(uid).pw_gid
        except KeyError:
            gid = 0  # a uid the image's /etc/passwd does not name: group root, as runc
    return f"{uid}:{gid}"


def _chown(path: Path, owner: str) -> None:
    """Give ``path`` and everything under it to ``owner`` ("" leaves the owners as they
    are; "root" is 0:0). Only root may chown: elsewhere (no mount namespaces, so every
    exec runs as this user) owners do not matter."""
    if not owner or os.geteuid() != 0:
        return
    uid, gid = (int(n) for n in (_ids(owner) or "0:0").split(":"))
    os.lchown(path, uid, gid)  # (a file's walk is empty)
    for folder, dirs, files in os.walk(path):
        os.lchown(folder, uid, gid)
        for name in dirs + files:  # (a symlink itself, never what it points at)
            os.lchown(os.path.join(folder, name), uid, gid)


def _copy_tree(source: Path, target: Path) -> None:
    """Copy a directory as the engine's snapshots pass between containers: each entry
    keeps its mode and its owner (shutil's copies keep modes only; run as root, every
    copy became root's, so a file private to a non-root user was lost to that user)."""
    shutil.copytree(source, target, symlinks=True, dirs_exist_ok=True)
    _keep_owners(source, target)


def _copy_file(source: Path, target: Path) -> None:
    shutil.copy2(source, target)
    _keep_owners(source, target)


def _keep_owners(source: Path, target: Path) -> None:
    if os.geteuid() != 0:
        return
    if not source.is_dir() or source.is_symlink():
        found = source.lstat()
        os.lchown(target, found.st_uid, found.st_gid)
        return
    for folder, dirs, files in os.walk(source):
        for name in [".", *dirs, *files]:
            entry = os.path.join(folder, name)
            found = os.lstat(entry)
            os.lchown(target / os.path.relpath(entry, source), found.st_uid, found.st_gid)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _deepest_first(item: tuple[str, Any]) -> int:
    return -len(PurePosixPath(item[0]).parts)


def _norm(path: str, workdir: str = "/") -> str:
    return str(PurePosixPath(workdir, path))


class Obj:
    """One API object; resolvers are the ``r_<field>`` methods (arguments as GraphQL names)."""

    __slots__ = ("engine", "ident", "state", "type_name")

    def __init__(self, engine: StubEngine, type_name: str, state: Any, ident: str) -> None:
        self.engine, self.type_name, self.state, self.ident = engine, type_name, state, ident

    def derive(self, **changes: Any) -> Obj:
        """The same type with some state keys replaced (a container's imageRef is
        dropped by most changes, as the engine's)."""
        if self.type_name == "Container" and not changes.keys() <= _KEEPS_REF:
            changes["ref"] = None
        return self.engine.make(self.type_name, {**self.state, **changes})

    def with_entry(self, key: str, name: str, value: Any) -> Obj:
        return self.derive(**{key: {**self.state[key], name: value}})

    # -- every object -----------------------------------------------------------------

    def r_id(self) -> str:
        return self.ident

    def r_sync(self) -> str:
        if self.type_name == "Container" and self.state["exec"]:
            self.check_exec()
        elif self.type_name == "Directory":
            with tempfile.TemporaryDirectory(dir=self.engine.workdir) as tmp:
                self.materialize(Path(tmp) / "d")
        return self.ident

    # -- Query ------------------------------------------------------------------------

    def r_version(self) -> str:
        return self.engine.version

    def r_container(self, platform: str | None = None) -> Obj:
        return self.engine.make("Container", {**_EMPTY_CONTAINER, "platform": platform})

    def r_host(self) -> Obj:
        return self.engine.make("Host", {})

    def r_directory(self, path: str | None = None, noCache: bool = False,
                    exclude: list[str] | None = None, gitignore: bool = False,
                    **_: Any) -> Obj:
        if self.type_name == "Query":
            return self.engine.make("Directory", {"empty": True})
        if self.type_name == "Host":
            stored = self.engine.read_host(path, False, noCache, exclude, gitignore)
            return self.engine.make("Directory", {"store": stored})
        return self.engine.make("Directory", {"ctr": self.ident, "path": self.abs(path)})

    def r_setSecret(self, name: str, plaintext: str) -> Obj:
        handle = self.engine.secret_handle(name, plaintext)
        return self.engine.make("Secret", {"name": name, "handle": handle})

    def r_cacheVolume(self, key: str, **_: Any) -> Obj:
        return self.engine.make("CacheVolume", {"key": key})

    def r_node(self, id: str) -> Obj:
        return self.engine.load(id)

    def r_name(self) -> str:
        if self.type_name == "File":
            return PurePosixPath(self.state["path"]).name
        return self.state["name"]

    # -- Container: building ----------------------------------------------------------

    def r_from(self, address: str, registryService: str | None = None) -> Obj:
        user = self.engine.images.get(address.split("@")[0], {}).get("user", "")
        digest, ref = self.engine.resolve(address, self.state["platform"])
        return self.derive(image=address, user=user, digest=digest, ref=ref)

    def r_withLabel(self, name: str, value: str) -> Obj:
        return self.with_entry("labels", name, value)

    def r_withUser(self, name: str) -> Obj:
        return self.derive(user=name)

    def r_user(self) -> str:
        return self.state["user"]

    def r_imageRef(self) -> str:
        if not self.state.get("ref"):
            raise ValueError(_NO_REF)
        return self.state["ref"]

    def r_withEnvVariable(self, name: str, value: str, expand: bool = False) -> Obj:
        return self.with_entry("env", name, self.expanded(value) if expand else value)

    def expanded(self, text: str) -> str:
        """``expand: true`` as the engine reads it (v0.21.8 core/container.go
        ExpandContainerInput): Go's os.Expand over the container's plain variables; a
        name not set, and ``$$`` (the shell's ``$``), read as empty; a secret's or a
        volatile variable's name is an error."""
        def value(name: str) -> str:
            if name in self.state["secrets"]:
                raise ValueError(f"expand cannot be used with secret env variable {name!r}")
            if name in self.state["volatile"]:
                raise ValueError(f"expand cannot be used with volatile env variable {name!r}")
            return self.image_env().get(name) or ""
        return go_expand(text, value)

    def image_env(self) -> dict[str, str]:
        """The container's plain variables as its image config holds them (envVariable,
        expand): every stub image sets PATH, as the images the tests stand for do."""
        return {"PATH": os.environ.get("PATH", _DEFAULT_PATH), **self.state["env"]}

    def r_withVolatileVariable(self, name: str, value: str) -> Obj:
        ctr = self.with_entry("volatile", name, value)
        self.engine.set_volatile(ctr.ident, name, value)
        return ctr

    def r_withSecretVariable(self, name: str, secret: str) -> Obj:
        self.engine.load(secret)  # an unknown secret fails here, as in Dagger
        return self.with_entry("secrets", name, secret)

    def r_withDirectory(self, path: str, source: str, owner: str = "", **_: Any) -> Obj:
        # Like the engine: a new directory belongs to root unless an owner is given.
        spec = {"dir": self.engine.load(source).ident, "owner": owner}
        return self.with_entry("files", self.abs(path), spec)

    def r_withMountedDirectory(self, path: str, source: str, owner: str = "",
                               readOnly: bool = False, **_: Any) -> Obj:
        # As the engine's: the source keeps its owners unless ``owner`` chowns it all;
        # ``readOnly`` mounts it "ro" (core/container_exec.go): a write fails with EROFS.
        spec = {"dir": self.engine.load(source).ident, **({"owner": owner} if owner else {}),
                **({"readOnly": True} if readOnly else {})}
        return self.with_mount(self.abs(path), spec)

    def r_withMountedFile(self, path: str, source: str, owner: str = "", **_: Any) -> Obj:
        spec = {"file": self.engine.load(source).ident, **({"owner": owner} if owner else {})}
        return self.with_mount(self.abs(path), spec)

    def r_withMountedCache(self, path: str, cache: str, owner: str = "",
                           sharing: str = "SHARED", **_: Any) -> Obj:
        key = self.engine.load(cache).state["key"]
        spec = {"cache": key, "owner": owner, "sharing": sharing}
        return self.with_mount(self.abs(path), spec)

    def with_mount(self, target: str, spec: dict[str, Any]) -> Obj:
        """As core/container.go ContainerMounts.With: a new mount drops every mount at
        or under its target, so a parent mounted after its child hides it."""
        kept = {path: old for path, old in self.state["mounts"].items()
                if path != target and not path.startswith(target + "/")}
        return self.derive(mounts={**kept, target: spec})

    def r_withNewFile(self, path: str, contents: str, permissions: int = 0o644, **_: Any) -> Obj:
        return self.with_entry("files", self.abs(path), {"text": contents, "mode": permissions})

    def r_withWorkdir(self, path: str, expand: bool = False) -> Obj:
        return self.derive(workdir=self.abs(path))

    def r_withServiceBinding(self, alias: str, service: str) -> Obj:
        return self.with_entry("services", alias, self.engine.load(service).ident)

    def r_withRegistryAuth(self, address: str, username: str, secret: str) -> Obj:
        return self.with_entry("auth", address, {"username": username, "secret": secret})

    def r_withExposedPort(self, port: int, protocol: str = "TCP", **_: Any) -> Obj:
        return self.derive(ports=[*self.state["ports"], {"port": port, "protocol": protocol}])

    def r_withExec(self, args: list[str], expect: str = "SUCCESS", expand: bool = False,
                   **_: Any) -> Obj:
        args = [self.expanded(arg) for arg in args] if expand else list(args)
        exec_ = {"args": args, "expect": expect, "parent": self.ident}
        return self.derive(exec=exec_, files={})

    def r_asService(self, args: list[str] | None = None, **_: Any) -> Obj:
        return self.engine.make("Service", {"ctr": self.ident, "args": list(args or [])})

    def abs(self, path: str) -> str:
        return _norm(path, self.state["workdir"])

    # -- Container: results -----------------------------------------------------------

    def check_exec(self) -> sandbox.ExecResult:
        """The last exec's result; outside ``expect`` it is the EXEC_ERROR of Dagger."""
        spec = self.state["exec"]
        if spec is None:
            raise ValueError("no command has been executed")
        result, _ = self.engine.exec_result(self.ident)
        if not _expected(spec["expect"], result.exit_code):
            raise ExecFailure(spec["args"], result)
        return result

    def r_stdout(self) -> str:
        return self.check_exec().stdout

    def r_stderr(self) -> str:
        return self.check_exec().stderr

    def r_exitCode(self) -> int:
        return self.check_exec().exit_code

    def r_workdir(self) -> str:
        return self.state["workdir"]

    def r_envVariable(self, name: str) -> str | None:
        return self.image_env().get(name)

    def r_file(self, path: str, noCache: bool = False, **_: Any) -> Obj:
        if self.type_name == "Host":
            stored = Path(self.engine.read_host(path, True, noCache))
            return self.engine.make("File", {"store": str(next(stored.iterdir())), "path": path})
        if self.type_name == "Directory":
            return self.engine.make("File", {"dir": self.ident, "path": _norm(path)})
        return self.engine.make("File", {"ctr": self.ident, "path": self.abs(path)})

    # -- Container: filesystem --------------------------------------------------------

    def build_rootfs(self, root: Path) -> None:
        """Write the container's files (last exec's output plus new files) into root."""
        if self.state["exec"]:
            self.check_exec()
            _, snapshot = self.engine.exec_result(self.ident)
            _copy_tree(snapshot, root)
        root.mkdir(parents=True, exist_ok=True)
        for path, spec in sorted(self.state["files"].items()):
            target = root / path.lstrip("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            if "dir" in spec:
                self.engine.load(spec["dir"]).materialize(target)
                _chown(target, spec.get("owner", ""))
            else:
                target.write_text(spec["text"])
                target.chmod(spec["mode"])

    def build_mounts(self, root: Path) -> None:
        """Copy mounted directories and files into root (cache volumes are binds)."""
        for path, spec in sorted(self.state["mounts"].items()):
            target = root / path.lstrip("/")
            if "dir" in spec:
                self.engine.load(spec["dir"]).materialize_mount(spec, target)
            elif "file" in spec:
                target.parent.mkdir(parents=True, exist_ok=True)
                self.engine.load(spec["file"]).materialize_file(target)
                _chown(target, spec.get("owner", ""))

    def drop_mounts(self, root: Path) -> None:
        """Remove mounts from an exec's snapshot: they are not part of the rootfs."""
        for path in sorted(self.state["mounts"], key=len, reverse=True):
            target = root / path.lstrip("/")
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            elif target.exists():
                target.unlink()

    def binds(self) -> dict[str, Path]:
        """Cache volumes: one host directory per key, shared by every exec; and the
        directories mounted beneath a cache volume (a copy in root would be hidden by
        the volume's bind, while the engine mounts them over it)."""
        binds = {}
        caches = [path for path, spec in self.state["mounts"].items() if "cache" in spec]
        for path, spec in self.state["mounts"].items():
            if "cache" in spec:
                binds[path] = self.engine.workdir / "caches" / spec["cache"]
                if not binds[path].exists():  # the owner applies when a volume is made
                    binds[path].mkdir(parents=True)
                    _chown(binds[path], spec.get("owner", ""))
            elif "dir" in spec and any(path.startswith(cache + "/") for cache in caches):
                binds[path] = self.engine.new_dir("nested-") / "d"
                self.engine.load(spec["dir"]).materialize_mount(spec, binds[path])
        return binds

    def read_only_mounts(self) -> list[str]:
        """The container paths of the mounts made ``readOnly``."""
        return sorted(path for path, spec in self.state["mounts"].items()
                      if spec.get("readOnly"))

    def exec_env(self) -> dict[str, str]:
        env = {"PATH": os.environ.get("PATH", _DEFAULT_PATH), **self.state["env"],
               **self.engine.volatile_values(self.state["volatile"])}
        for name, secret_id in self.state["secrets"].items():
            env[name] = self.engine.secrets[self.engine.load(secret_id).state["handle"]]
        for alias in self.state["services"]:
            self.engine.services.setdefault(self.state["services"][alias], {"state": "bound"})
        return env

    # -- Directory and File -----------------------------------------------------------

    def materialize(self, target: Path) -> None:
        """Write this directory's contents to a new host directory ``target``."""
        if "empty" in self.state:
            target.mkdir(parents=True, exist_ok=True)
            return
        if "store" in self.state:
            _copy_tree(Path(self.state["store"]) / "d", target)
            return
        ctr = self.engine.load(self.state["ctr"])
        path = self.state["path"]
        for mount, spec in sorted(ctr.state["mounts"].items(), key=_deepest_first):
            if "dir" in spec and (path == mount or path.startswith(mount + "/")):
                with tempfile.TemporaryDirectory(dir=self.engine.workdir) as tmp:
                    self.engine.load(spec["dir"]).materialize_mount(spec, Path(tmp) / "m")
                    sub = Path(tmp) / "m" / os.path.relpath(path, mount)
                    _copy_tree(sub, target)
                return
        with tempfile.TemporaryDirectory(dir=self.engine.workdir) as tmp:
            ctr.build_rootfs(Path(tmp))
            source = Path(tmp) / path.lstrip("/")
            if not source.is_dir():
                raise ValueError(f"{path!r} is not a directory in the container")
            _copy_tree(source, target)

    def materialize_mount(self, spec: dict[str, Any], target: Path) -> None:
        """This directory as mount ``spec`` shows it: chowned when it gives an owner."""
        self.materialize(target)
        _chown(target, spec.get("owner", ""))

    def materialize_file(self, target: Path) -> None:
        """Write this file's contents to host path ``target``."""
        if "store" in self.state:
            _copy_file(Path(self.state["store"]), target)
            return
        with tempfile.TemporaryDirectory(dir=self.engine.workdir) as tmp:
            if "dir" in self.state:
                self.engine.load(self.state["dir"]).materialize(Path(tmp) / "d")
                _copy_file(Path(tmp) / "d" / self.state["path"].lstrip("/"), target)
            else:
                self.engine.load(self.state["ctr"]).build_rootfs(Path(tmp))
                _copy_file(Path(tmp) / self.state["path"].lstrip("/"), target)

    def r_export(self, path: str, wipe: bool = False, **_: Any) -> str:
        target = Path(path)
        if self.type_name == "File":
            target.parent.mkdir(parents=True, exist_ok=True)
            self.materialize_file(target)
            return path
        with tempfile.TemporaryDirectory(dir=self.engine.workdir) as tmp:
            self.materialize(Path(tmp) / "d")
            if wipe and target.exists():
                shutil.rmtree(target)
            shutil.copytree(Path(tmp) / "d", target, symlinks=True, dirs_exist_ok=True)
        return path

    def r_entries(self, path: str | None = None) -> list[str]:
        with tempfile.TemporaryDirectory(dir=self.engine.workdir) as tmp:
            self.materialize(Path(tmp) / "d")
            base = Path(tmp) / "d" / (path or "").lstrip("/")
            return sorted(p.name + ("/" if p.is_dir() else "") for p in base.iterdir())

    def r_contents(self, offsetLines: int | None = None, limitLines: int | None = None) -> str:
        with tempfile.TemporaryDirectory(dir=self.engine.workdir) as tmp:
            self.materialize_file(Path(tmp) / "f")
            return (Path(tmp) / "f").read_text()

    # -- Service ----------------------------------------------------------------------

    def r_tunnel(self, service: str, ports: list[dict[str, Any]] | None = None, **_: Any) -> Obj:
        forwards = [dict(p) for p in ports or []]
        target = self.engine.load(service).ident
        return self.engine.make("Service", {"tunnel": target, "ports": forwards})

    def runtime(self) -> dict[str, Any]:
        return self.engine.services.setdefault(self.ident, {"state": "created"})

    def r_start(self) -> str:
        record = self.runtime()
        record["state"] = "running"
        if "tunnel" in self.state:
            self.engine.load(self.state["tunnel"]).r_start()
            record["frontends"] = [p.get("frontend") or _free_port() for p in self.state["ports"]]
        return self.ident

    def r_stop(self, kill: bool = False) -> str:
        self.runtime()["state"] = "stopped"
        if "tunnel" in self.state:
            self.engine.load(self.state["tunnel"]).r_stop(kill)
        return self.ident

    def r_endpoint(self, port: int | None = None, scheme: str = "") -> str:
        record = self.runtime()
        if "tunnel" in self.state:
            if record["state"] != "running":
                raise ValueError("the tunnel is not running; start it first")
            address = f"localhost:{record['frontends'][0]}"
        else:
            address = f"{self.r_hostname()}:{port or self.service_ports()[0]}"
        return f"{scheme}://{address}" if scheme else address

    def r_hostname(self) -> str:
        return "stub-" + self.ident.split(":")[1][:12]

    def service_ports(self) -> list[int]:
        if "tunnel" in self.state:
            return [p["backend"] for p in self.state["ports"]]
        return [p["port"] for p in self.engine.load(self.state["ctr"]).state["ports"]]

    def r_ports(self) -> list[Obj]:
        return [
            self.engine.make("Port", {"port": port, "protocol": "TCP"})
            for port in self.service_ports()
        ]

    def r_port(self) -> int:
        return self.state["port"]

    def r_protocol(self) -> str:
        return self.state["protocol"]

    def r_description(self) -> str | None:
        return None

    def r_experimentalSkipHealthcheck(self) -> bool:
        return False
