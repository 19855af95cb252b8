"""The Dagger executor, end to end through the real dagger-io client and the stub engine."""

from __future__ import annotations

import asyncio
import itertools
import json
import logging
import pathlib
import re
import time

import dagger
import pytest
from dagger_stub.queries import calls

from dagnb.errors import (
    ConfigError,
    ExecutorUnavailable,
    InvalidStepError,
    SecretError,
    StepFailed,
    TransientError,
)
from dagnb.executors.base import Input
from dagnb.executors.dagger import connection
from dagnb.executors.dagger.executor import DEFAULT_IMAGE, DaggerExecutor
from dagnb.executors.loop import run_sync
from dagnb.executors.shell import container_argv
from dagnb.model.results import PUBLISHED_AS
from dagnb.model.step import Step

# The stub engine fixtures (stub, dagger_stub, make_task); see dagger_stub/fixtures.py.
pytest_plugins = ["dagger_stub.fixtures"]

SECRET = "s3cr3t-Value-42"


def run(executor: DaggerExecutor, task):
    return run_sync(executor.execute(task))


def exec_query(stub) -> str:
    """The query that ran the (last) exec: the full chain ending in withExec + sync."""
    return stub.texts("withExec")[-1]


def exec_calls(stub) -> list[tuple[str, dict]]:
    return calls(exec_query(stub))


def uploads(stub) -> list[str]:
    """Host paths the client asked the engine to upload (``host { directory(path:) }``)."""
    found = []
    for query in stub.texts("host"):
        chain = calls(query)
        found += [a["path"] for (n, _), (m, a) in itertools.pairwise(chain)
                  if n == "host" and m in ("directory", "file")]
    return found


def call_args(stub, field: str) -> list[dict]:
    return [args for name, args in exec_calls(stub) if name == field]


# -- translation ----------------------------------------------------------------------


def test_shell_step_runs_with_the_contract_in_the_container(stub, make_task, tmp_path):
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("hello\n")
    step = Step(
        "prep", run='cat /data/a.txt; echo "n=$DAGNB_PARAM_N"; pwd; echo done > "$DAGNB_OUT/o.txt"',
        image="alpine:3.20", env={"MODE": "fast"}, params={"n": 3}, workdir="/work",
        mounts={"data": "/data"}, cache_volumes={"pip": "/root/.cache/pip"},
    )
    task = make_task(step, base_dir=tmp_path)
    outcome = run(DaggerExecutor(), task)

    assert outcome.exit_code == 0
    assert (task.out_dir / "o.txt").read_text() == "done\n"
    assert task.log.of("stdout") == ["hello", "n=3", "/work"]
    assert isinstance(outcome.handle, dagger.Directory)
    chain = exec_calls(stub)
    for call in [
        ("from", {"address": "alpine:3.20"}),
        ("withEnvVariable", {"name": "MODE", "value": "fast"}),
        ("withEnvVariable", {"name": "DAGNB_OUT", "value": "/dagnb/out"}),
        ("withEnvVariable", {"name": "DAGNB_IN", "value": "/dagnb/in"}),
        ("withEnvVariable", {"name": "DAGNB_PARAMS", "value": "/dagnb/params.json"}),
        ("withEnvVariable", {"name": "DAGNB_PARAM_N", "value": "3"}),
        ("withWorkdir", {"path": "/work"}),
        ("withExec", {"args": container_argv(step)}),  # expect: the default, SUCCESS
    ]:
        assert call in chain
    params = call_args(stub, "withNewFile")
    assert [json.loads(p["contents"]) for p in params if p["path"] == "/dagnb/params.json"] == [
        {"n": 3}]
    assert [a["path"] for a in call_args(stub, "withMountedCache")] == ["/root/.cache/pip"]
    data = [a for a in call_args(stub, "withMountedDirectory") if a["path"] == "/data"]
    assert data and data[0]["source"].startswith("Directory:")
    assert str(tmp_path / "tasks") not in exec_query(stub)  # no host path of the contract
    assert str(tmp_path / "data") in uploads(stub)


def test_default_image_and_argv_steps(stub, make_task):
    outcome = run(DaggerExecutor(), make_task(Step("argv", run=["echo", "a b"])))
    assert outcome.exit_code == 0
    assert ("from", {"address": DEFAULT_IMAGE}) in exec_calls(stub)
    assert call_args(stub, "withExec") == [{"args": ["echo", "a b"]}]
    assert stub.engine.exec_log[-1]["image"] == "python:3.12-slim"


def test_file_mount_and_missing_mount(stub, make_task, tmp_path):
    (tmp_path / "cfg.ini").write_text("k=v\n")
    step = Step("cfg", run="cat /etc/app.ini", mounts={"cfg.ini": "/etc/app.ini"})
    task = make_task(step, base_dir=tmp_path)
    assert run(DaggerExecutor(), task).exit_code == 0
    assert task.log.of("stdout") == ["k=v"]
    assert [a["path"] for a in call_args(stub, "withMountedFile")] == ["/etc/app.ini"]
    missing = make_task(Step("gone", run="true", mounts={"nope": "/x"}), base_dir=tmp_path)
    with pytest.raises(Exception, match="mount source 'nope' does not exist"):
        run(DaggerExecutor(), missing)


def test_the_stub_drops_mounts_beneath_a_new_mount_as_the_engine_does(stub, tmp_path):
    # core/container.go ContainerMounts.With: a stub that kept both would hide the bug.
    for name in ("outer", "inner"):
        (tmp_path / name).mkdir()
        (tmp_path / name / f"{name}.txt").write_text(name)

    async def listing(order: list[str]) -> str:
        dag = await connection.client()
        ctr = dag.container().from_("alpine:3.20")
        for name in order:
            folder = dag.host().directory(str(tmp_path / name))
            ctr = ctr.with_mounted_directory("/w" if name == "outer" else "/w/in", folder)
        return await ctr.with_exec(["sh", "-c", "ls /w /w/in || true"]).stdout()

    assert "inner.txt" in run_sync(listing(["outer", "inner"]))
    assert "inner.txt" not in run_sync(listing(["inner", "outer"]))


def test_the_stubs_volatile_values_are_the_sessions_last_set_as_the_engines(stub):
    # v0.21.8 keeps withVolatileVariable values per session, name -> value, the last set
    # winning, read as an exec runs: two steps built at once see the later one's value,
    # and only the name keys the exec (the second is served the first's exec).
    echo = ["sh", "-c", 'echo "$DAGNB_RUN_ID"']

    async def both() -> list[str]:
        dag = await connection.client()
        base = dag.container().from_("alpine:3.20")
        built = [await base.with_volatile_variable("DAGNB_RUN_ID", run).sync()
                 for run in ("run-1", "run-2")]  # (both set, neither exec run yet)
        return [await ctr.with_exec(echo).stdout() for ctr in built]

    assert run_sync(both()) == ["run-2\n", "run-2\n"]
    assert [e["volatile"] for e in stub.engine.exec_log] == [{"DAGNB_RUN_ID": "run-2"}]


@pytest.mark.parametrize("parent", ["mount", "cache volume"])
def test_a_mount_beneath_another_is_made_after_it(stub, make_task, tmp_path, parent):
    # Sorted by host path, "data" came before "src" and the /work mount dropped it.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "x.txt").write_text("data\n")
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "main.py").write_text("src\n")
    mounts, volumes = {"data": "/work/data"}, {}
    if parent == "mount":
        mounts["src"] = "/work"
    else:  # a cache volume was mounted after every host mount
        volumes["work"] = "/work"
    step = Step("nested", run="cat /work/data/x.txt", mounts=mounts, cache_volumes=volumes)
    task = make_task(step, base_dir=tmp_path)
    assert run(DaggerExecutor(), task).exit_code == 0, task.log.lines
    assert task.log.of("stdout") == ["data"]
    order = [args["path"] for name, args in exec_calls(stub) if name.startswith("withMounted")]
    assert order == ["/work", "/work/data"]


@pytest.mark.parametrize(("mounts", "volumes", "error"), [
    ({"a": "/dagnb"}, {}, "mount target '/dagnb' overlaps '/dagnb'"),
    ({"a": "/dagnb/in/up"}, {}, "mount target '/dagnb/in/up' overlaps"),
    ({}, {"pip": "/"}, "mount target '/' overlaps '/dagnb'"),
    ({"a": "/x", "b": "/x/"}, {}, "two mounts or cache volumes target '/x/'"),
    ({"a": "/x"}, {"pip": "/x:locked"}, "two mounts or cache volumes target '/x'"),
])
def test_mounts_over_the_contract_or_at_one_path_are_refused(stub, make_task, tmp_path,
                                                             mounts, volumes, error):
    for host in mounts:
        (tmp_path / host).mkdir()
    task = make_task(Step("m", run="true", mounts=mounts, cache_volumes=volumes),
                     base_dir=tmp_path)
    with pytest.raises(InvalidStepError, match=re.escape(error)):
        run(DaggerExecutor(), task)


def test_host_files_and_folders_are_read_fresh_on_each_run(stub, make_task, tmp_path):
    # The engine caches host reads per client: without noCache an edit in the same
    # kernel would be served from the first upload.
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("one\n")
    (tmp_path / "cfg.ini").write_text("k=1\n")
    step = Step("read", run="cat /data/a.txt /etc/app.ini",
                mounts={"data": "/data", "cfg.ini": "/etc/app.ini"})
    first = make_task(step, base_dir=tmp_path)
    run(DaggerExecutor(), first)
    (tmp_path / "data" / "a.txt").write_text("two\n")
    (tmp_path / "cfg.ini").write_text("k=2\n")
    second = make_task(step, base_dir=tmp_path, attempt=2)
    run(DaggerExecutor(), second)
    assert first.log.of("stdout") == ["one", "k=1"]
    assert second.log.of("stdout") == ["two", "k=2"]


def test_host_folders_leave_out_vcs_venvs_caches_and_step_excludes(stub, make_task, tmp_path):
    src = tmp_path / "src"
    for relative in [".git/HEAD", ".venv/bin/python", "env311/pyvenv.cfg", ".dagnb_cache/x",
                     "pkg/__pycache__/m.pyc", "pkg/m.py", "notes.tmp", "keep.txt",
                     "build-cache/x"]:
        (src / relative).parent.mkdir(parents=True, exist_ok=True)
        (src / relative).write_text("x")
    step = Step("ls", run="cd /src && find . -type f | sort", mounts={"src": "/src"},
                exclude=["*.tmp"])
    task = make_task(step, base_dir=tmp_path)
    task.cache_folder = src / "build-cache"  # (the run's --cache-dir: as its key does)
    run(DaggerExecutor(), task)
    assert task.log.of("stdout") == ["./keep.txt", "./pkg/m.py"]
    [read] = [args for text in stub.texts("host {") for name, args in calls(text)
              if name == "directory"]
    assert read["noCache"] is True and ".git" in " ".join(read["exclude"])


def test_the_configured_cache_folder_is_left_out_and_no_other_of_its_name(tmp_path):
    import dagnb
    from dagnb.executors.dagger.translate import host_excludes

    dagnb.configure(cache_directory=str(tmp_path / "src" / "results" / "cache"))
    patterns = host_excludes(Step("s", run="true"), tmp_path / "src")
    assert "results/cache" in patterns and "**/cache" not in patterns
    dagnb.configure(cache_directory="/elsewhere/cache")
    assert not [p for p in host_excludes(Step("s", run="true"), tmp_path / "src")
                if p.endswith("cache") and p != "**/.dagnb_cache"]
    dagnb.configure(cache_directory="s3://bucket/team",  # a store URL: its local tier
                    cache_local_directory=str(tmp_path / "src" / "tier"))
    assert "tier" in host_excludes(Step("s", run="true"), tmp_path / "src")


def test_exclude_is_a_validated_step_field_in_the_key(tmp_path):
    from dagnb.cache.keys import step_key
    from dagnb.errors import InvalidStepError

    assert Step("s", run="true", exclude="*.tmp, raw").exclude == ("*.tmp", "raw")
    with pytest.raises(InvalidStepError, match="exclude must be names, got 3"):
        Step("s", run="true", exclude=[3])
    plain, excluding = Step("s", run="true"), Step("s", run="true", exclude=["*.tmp"])
    keys = [step_key(s, upstream_digests={}, base_dir=tmp_path) for s in (plain, excluding)]
    assert keys[0].digest != keys[1].digest


def _needs_namespaces():
    from dagger_stub import sandbox

    if sandbox.mode() != "namespace":
        pytest.skip("the stub runs execs as another user only in mount-namespace mode")


WRITES = 'id -u; echo hi > "$DAGNB_OUT/o.txt"; touch /cache/x && echo cache-ok'


def test_a_non_root_image_user_can_write_its_outputs_and_cache_volumes(stub, make_task):
    _needs_namespaces()
    run_sync(connection.aclose())  # a session of its own: an earlier test's knows the user
    stub.engine.images["quay.io/jupyter/base-notebook"] = {"user": "1000:100"}
    step = Step("nb", run=WRITES, image="quay.io/jupyter/base-notebook",
                cache_volumes={"nonroot-cache": "/cache"})
    task = make_task(step)
    assert run(DaggerExecutor(), task).exit_code == 0, task.log.lines
    assert task.log.of("stdout") == ["1000", "cache-ok"]
    assert (task.out_dir / "o.txt").read_text() == "hi\n"
    assert {a.get("owner") for a in call_args(stub, "withMountedCache")} == {"1000:100"}
    run(DaggerExecutor(), make_task(Step("nb2", run="true", image=step.image)))
    assert len(stub.texts("user: user")) == 1  # the image's user is asked once per session


def test_the_step_user_option_runs_as_that_user(stub, make_task):
    _needs_namespaces()
    step = Step("runas", run=WRITES, user="1234:1234", cache_volumes={"user-cache": "/cache"})
    task = make_task(step)
    assert run(DaggerExecutor(), task).exit_code == 0, task.log.lines
    assert task.log.of("stdout") == ["1234", "cache-ok"]
    assert ("withUser", {"name": "1234:1234"}) in exec_calls(stub)
    # the image's own USER (asked with its imageRef, in one query, once a session:
    # whether this test asks depends on the tests before it) is never what it runs as
    assert [args for name, args in exec_calls(stub) if name == "withUser"] == [
        {"name": "1234:1234"}]
    with pytest.raises(Exception, match="user '' must be a user name or id"):
        Step("bad", run="true", user="")


NONROOT_IMAGE = "quay.io/jupyter/base-notebook"


def test_the_stub_keeps_owners_as_the_engine_does(stub, tmp_path):
    # A stub that made every copy root's (or none) would hide what a non-root step
    # can read: uploads are 0:0 with their modes (filesync.go normalizeLocalImportStat),
    # a container's directory keeps its owners, and a mount's owner= chowns it all.
    _needs_namespaces()
    (tmp_path / "up").mkdir()
    (tmp_path / "up" / "f").write_text("x")
    (tmp_path / "up" / "f").chmod(0o600)
    stat = ["stat", "-c", "%u %a", "/m/f"]

    async def owners() -> list[str]:
        dag = await connection.client()
        base = dag.container().from_("alpine:3.20")
        made = base.with_user("1000:100").with_directory("/o", dag.directory(), owner="1000")
        made = made.with_exec(["sh", "-c", "umask 077; echo x > /o/f"]).directory("/o")
        host = dag.host().directory(str(tmp_path / "up"))
        mounts = [(made, ""), (host, ""), (host, "1234:1234")]
        return [(await base.with_mounted_directory("/m", source, owner=owner)
                 .with_exec(stat).stdout()).strip() for source, owner in mounts]

    assert run_sync(owners()) == ["1000 600", "0 600", "1234 600"]


def test_a_non_root_step_reads_the_private_files_of_its_uploads(stub, make_task, tmp_path):
    # An upstream served from dagnb's cache (or run here, or before the session was
    # reopened) and a mounted folder or file are uploaded: root's, with their modes.
    _needs_namespaces()
    stub.engine.images[NONROOT_IMAGE] = {"user": "1000:100"}
    for folder, name in (("up-out", "model.bin"), ("data", "private.txt")):
        (tmp_path / folder / "sub").mkdir(parents=True)
        (tmp_path / folder / "sub" / name).write_text(f"{name}\n")
        (tmp_path / folder / "sub").chmod(0o700)
        (tmp_path / folder / "sub" / name).chmod(0o600)
    (tmp_path / "app.ini").write_text("k=v\n")
    (tmp_path / "app.ini").chmod(0o600)
    step = Step("down", image=NONROOT_IMAGE, needs=["up"],
                run='cat "$DAGNB_IN/up/sub/model.bin" /data/sub/private.txt /etc/app.ini',
                mounts={"data": "/data", "app.ini": "/etc/app.ini"})
    task = make_task(step, base_dir=tmp_path, inputs={"up": Input("up", tmp_path / "up-out")})
    assert run(DaggerExecutor(), task).exit_code == 0, task.log.lines
    assert task.log.of("stdout") == ["model.bin", "private.txt", "k=v"]
    owners = {name: {a.get("owner") for a in call_args(stub, name)}
              for name in ("withMountedDirectory", "withMountedFile")}
    assert owners == {"withMountedDirectory": {"1000:100"}, "withMountedFile": {"1000:100"}}


def test_a_step_reads_the_private_files_of_an_upstream_run_as_another_user(
        stub, make_task):
    # Passed container to container, the upstream's files keep their owner (root
    # here): given to the step's user, they read as they would had `up` been cached.
    _needs_namespaces()
    up_task = make_task(Step("up", run='umask 077; echo 42 > "$DAGNB_OUT/n.txt"'))
    up = run(DaggerExecutor(), up_task)
    inputs = {"up": Input("up", up_task.out_dir, handle=up.handle)}
    step = Step("down", run='cat "$DAGNB_IN/up/n.txt"', needs=["up"], user="1234:1234")
    task = make_task(step, inputs=inputs)
    assert run(DaggerExecutor(), task).exit_code == 0, task.log.lines
    assert task.log.of("stdout") == ["42"]


def test_nonzero_exit_is_an_outcome_with_logs(stub, make_task):
    task = make_task(Step("bad", run="echo out; echo oops >&2; exit 3"))
    outcome = run(DaggerExecutor(), task)
    assert outcome.exit_code == 3
    assert outcome.handle is None
    assert task.log.lines == [("stdout", "out"), ("stderr", "oops")]


def test_upstream_directory_passes_container_to_container(stub, make_task, tmp_path):
    up_task = make_task(Step("up", run='echo 42 > "$DAGNB_OUT/n.txt"'))
    up = run(DaggerExecutor(), up_task)
    handle_id = run_sync(up.handle.id())
    assert "ctr" in stub.engine.describe(handle_id)[1]  # an output of a container
    stub.reset()

    inputs = {"up": Input("up", up_task.out_dir, handle=up.handle)}
    task = make_task(Step("down", run="cat $DAGNB_IN/up/n.txt", needs=["up"]), inputs=inputs)
    assert run(DaggerExecutor(), task).exit_code == 0
    assert task.log.of("stdout") == ["42"]
    mounts = call_args(stub, "withMountedDirectory")
    assert mounts == [{"path": "/dagnb/in/up", "source": handle_id, "readOnly": True}]
    assert str(up_task.out_dir) not in uploads(stub)  # never uploaded from the host
    assert not stub.texts(str(up_task.out_dir))


def test_upstream_without_handle_is_uploaded_from_host(stub, make_task, tmp_path):
    folder = tmp_path / "local-out"
    folder.mkdir()
    (folder / "n.txt").write_text("7\n")
    inputs = {"up": Input("up", folder)}
    task = make_task(Step("down", run="cat /dagnb/in/up/n.txt", needs=["up"]), inputs=inputs)
    run(DaggerExecutor(), task)
    assert task.log.of("stdout") == ["7"]
    assert str(folder) in uploads(stub)


def _ending_in(texts: list[str], field: str) -> list[str]:
    return [t for t in texts if "IntrospectionQuery" not in t and calls(t)[-1][0] == field]


def test_a_step_costs_one_sync_and_no_id_round_trips_for_session_constants(stub, make_task):
    executor = DaggerExecutor()
    step = Step("c", run='echo hi > "$DAGNB_OUT/x"', cache_volumes={"pip": "/root/.cache/pip"})
    run(executor, make_task(step))  # the session's first: asks version, user, IDs once
    before = len(stub.queries)
    run(executor, make_task(step.replace(name="c2")))
    texts = [q.query for q in stub.queries[before:]]
    assert len(_ending_in(texts, "sync")) == 1
    assert _ending_in(texts, "id") == []  # the empty folders and the volume: known IDs
    assert len(texts) == 3  # sync, stdout and stderr in one, export


def test_cache_volumes_are_the_projects_with_their_sharing(stub, make_task, tmp_path):
    import dagnb

    step = Step("v", run="true", cache_volumes={"pip": "/root/.cache/pip:locked",
                                                "npm": "/root/.npm"})
    run(DaggerExecutor(), make_task(step, base_dir=tmp_path / "my project"))
    keys = [args["key"] for text in stub.texts("cacheVolume") for name, args in calls(text)
            if name == "cacheVolume"]
    assert sorted(keys) == ["dagnb-my-project-npm", "dagnb-my-project-pip"]
    sharing = {a["path"]: a.get("sharing") for a in call_args(stub, "withMountedCache")}
    assert sharing == {"/root/.cache/pip": "LOCKED", "/root/.npm": None}  # None: SHARED
    try:
        dagnb.configure(project="forecast")
        run(DaggerExecutor(), make_task(step.replace(name="v2"), base_dir=tmp_path))
        assert any('key: "dagnb-forecast-pip"' in t for t in stub.texts("cacheVolume"))
    finally:
        dagnb.config.reload()


def test_platform_option_and_the_image_digest_that_ran(stub, make_task):
    step = Step("arm", run="true", image="alpine:3.20", platform="linux/arm64")
    outcome = run(DaggerExecutor(), make_task(step))
    assert ("container", {"platform": "linux/arm64"}) in exec_calls(stub)
    # the engine's spelling of the reference, with the digest the tag resolved to
    assert re.fullmatch(r"docker\.io/library/alpine:3\.20@sha256:[0-9a-f]{64}", outcome.image_ref)
    with pytest.raises(Exception, match="platform 'arm64' must be os/architecture"):
        Step("bad", run="true", platform="arm64")


# -- secrets and registry auth --------------------------------------------------------


def _plaintext_queries(stub, value: str) -> list[str]:
    return [q.query + json.dumps(q.variables) for q in stub.queries
            if value in q.query or value in json.dumps(q.variables)]


def test_secrets_reach_the_step_only_through_set_secret(stub, make_task):
    task = make_task(Step("sec", run='echo "${#TOKEN} chars"', secrets=["TOKEN"]),
                     secrets={"TOKEN": SECRET})
    run(DaggerExecutor(), task)
    assert task.log.of("stdout") == [f"{len(SECRET)} chars"]
    carrying = _plaintext_queries(stub, SECRET)
    assert len(carrying) == 1 and carrying[0].startswith('{\n  setSecret(name: "TOKEN"')
    [secret] = call_args(stub, "withSecretVariable")
    assert secret["name"] == "TOKEN" and secret["secret"].startswith("Secret:")
    assert "TOKEN" not in [a["name"] for a in call_args(stub, "withEnvVariable")]
    assert SECRET not in json.dumps(stub.engine.describe(secret["secret"]))  # opaque


def test_secret_values_stay_out_of_the_clients_debug_log(stub, make_task, monkeypatch,
                                                         caplog):
    # gql logs each request and the arguments of each call it builds at DEBUG: a user
    # debugging with logging.basicConfig(level=logging.DEBUG) saw every secret's value.
    monkeypatch.setenv("REG_PASSWORD", SECRET + "-registry")
    executor = DaggerExecutor(registry_auth={"address": "registry.example.com",
                                             "username": "bob", "password_env": "REG_PASSWORD"})
    caplog.set_level(logging.DEBUG)
    task = make_task(Step("sec", run='echo "${#TOKEN} chars"', secrets=["TOKEN"],
                          image="registry.example.com/app:1"),
                     secrets={"TOKEN": SECRET})
    run(executor, task)
    assert task.log.of("stdout") == [f"{len(SECRET)} chars"]
    assert len(_plaintext_queries(stub, SECRET)) == 2  # the engine got both, once each
    requests = [r for r in caplog.records if r.name.startswith("gql")]
    assert any("withSecretVariable" in r.getMessage() for r in requests)  # still logged
    assert not [r.getMessage() for r in caplog.records if SECRET in r.getMessage()]


def test_registry_auth_uses_a_secret(stub, make_task, monkeypatch):
    monkeypatch.setenv("REG_PASSWORD", SECRET)
    executor = DaggerExecutor(registry_auth={"address": "registry.example.com",
                                             "username": "bob", "password_env": "REG_PASSWORD"})
    run(executor, make_task(Step("private", run="true", image="registry.example.com/app:1")))
    names = [name for name, _ in exec_calls(stub)]
    assert names[:3] == ["container", "withRegistryAuth", "from"]  # auth before the pull
    [auth] = call_args(stub, "withRegistryAuth")
    assert auth["address"] == "registry.example.com" and auth["username"] == "bob"
    assert auth["secret"].startswith("Secret:")
    carrying = _plaintext_queries(stub, SECRET)
    assert len(carrying) == 1 and "setSecret" in carrying[0]


def test_registry_auth_config_errors(stub, make_task, monkeypatch):
    with pytest.raises(ConfigError, match="must have 'address', 'username' and one of"):
        DaggerExecutor(registry_auth={"address": "r.io", "username": "u", "password": "x"})
    monkeypatch.delenv("REG_TOKEN", raising=False)
    executor = DaggerExecutor(registry_auth=[{"address": "r.io", "username": "u",
                                              "token_env": "REG_TOKEN"}])
    with pytest.raises(SecretError, match=r"^container_credentials for 'r\.io': token_env "
                                          r"names 'REG_TOKEN', which is not set"):
        run(executor, make_task(Step("s", run="true", image="r.io/app:1")))


# -- errors ---------------------------------------------------------------------------


def test_exec_error_becomes_step_failed_with_tails_and_masked_secret(stub, make_task):
    # 137 (killed) is outside ReturnType.ANY, so the engine answers with an ExecError.
    step = Step("oom", run='echo working; echo "token $TOKEN gone" >&2; kill -KILL $$',
                secrets=["TOKEN"])
    with pytest.raises(StepFailed, match="exited with code 137") as caught:
        run(DaggerExecutor(), make_task(step, secrets={"TOKEN": SECRET}))
    error = caught.value
    assert error.exit_code == 137 and error.step == "oom"
    assert error.stderr_tail == "token *** gone\n"
    assert error.stdout_tail == "working\n"
    assert SECRET not in str(error)


def test_dropped_connection_is_transient(stub, make_task):
    stub.fail("drop", match="withExec", times=5)
    with pytest.raises(TransientError, match="lost the Dagger engine"):
        run(DaggerExecutor(), make_task(Step("s", run="true")))
    stub.faults.clear()
    assert run(DaggerExecutor(), make_task(Step("s2", run="true"))).exit_code == 0


def test_server_errors_are_transient(stub, make_task):
    stub.fail("http500", match="withExec", times=5)
    with pytest.raises(TransientError):
        run(DaggerExecutor(), make_task(Step("s", run="true")))


def test_engine_errors_are_classified(stub, make_task):
    stub.fail("error", match="withExec", message="pull: i/o timeout talking to registry")
    with pytest.raises(TransientError, match="i/o timeout"):
        run(DaggerExecutor(), make_task(Step("a", run="true")))
    stub.fail("error", match="withExec", message=f"image not found (token {SECRET})")
    with pytest.raises(StepFailed, match=r"image not found \(token \*\*\*\)"):
        run(DaggerExecutor(), make_task(Step("b", run="true", secrets=["T"]),
                                        secrets={"T": SECRET}))


NETWORK_ERRORS = [
    "pull: dial tcp 104.18.121.25:443: i/o timeout",
    "failed to do request: Head https://registry-1.docker.io/v2/library/python/manifests/3.12:"
    " net/http: TLS handshake timeout",
    "net/http: request canceled (Client.Timeout exceeded while awaiting headers)",
    "failed to resolve source metadata: context deadline exceeded",
    "failed to fetch blob: read tcp 10.0.0.2:51234->3.3.3.3:443: read: connection reset by peer",
    "dial tcp 127.0.0.1:5000: connect: connection refused",
    "dial unix /run/buildkit/buildkitd.sock: resource temporarily unavailable",
    "toomanyrequests: You have reached your pull rate limit (429 Too Many Requests)",
    "unexpected status code 503 Service Unavailable",
    "received unexpected HTTP status: 502 Bad Gateway",
    "GET https://ghcr.io/token: status 504",
    "failed to copy: httpReadSeeker: failed open: unexpected EOF",
    "error reading from server: EOF",
    "operation timed out after 30s",
]
PERMANENT_ERRORS = [
    "failed to resolve source metadata for docker.io/geoffrey/etl:1: pull access denied, "
    "repository does not exist or may require authorization",
    'withMountedDirectory: path "/data/thereof" invalid',
    "failed to stat /src/timeout_settings.yaml: no such file or directory",
    "docker.io/library/pyton:3.12: not found",
    "failed to authorize: 401 Unauthorized",
    "open /data/results_503.csv: permission denied",
    "invalid reference format: repository name must be lowercase (after i/o timeout retry)",
    "lookup of /src/eof_markers.txt: no such file or directory (context deadline exceeded)",
]


@pytest.mark.parametrize("message", NETWORK_ERRORS)
def test_network_phrases_in_engine_errors_are_transient(message):
    assert isinstance(_engine_error(message), TransientError)


@pytest.mark.parametrize("message", PERMANENT_ERRORS)
def test_engine_errors_naming_a_path_image_or_refusal_are_permanent(message):
    # "timeout", "eof" and "503" inside a path or an image name say nothing about the
    # network; a clear refusal wins over a network phrase in the same message.
    error = _engine_error(message)
    assert isinstance(error, StepFailed)


def _unmasked(text: str) -> str:  # (no secret: the error's words as they are)
    return text


def _engine_error(message: str):
    from types import SimpleNamespace

    from dagger._exceptions import QueryErrorValue

    from dagnb.executors.dagger.executor import _classified

    exc = dagger.QueryError([QueryErrorValue(message=message)], SimpleNamespace(document=None))
    return _classified("step 's'", exc, _unmasked, dagger, "s")


def _wait_until(condition, seconds: float = 3.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition() and time.monotonic() < deadline:
        time.sleep(0.02)
    return condition()


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@pytest.mark.parametrize("how", ["timeout", "cancel"])
def test_a_timeout_or_cancel_stops_the_exec_at_once(stub, make_task, how):
    executor = DaggerExecutor()
    run(executor, make_task(Step("warm", run="true")))  # connected: time only the step
    task = make_task(Step("slow", run="sleep 3; echo done"))

    def slow_running() -> bool:
        return any("sleep 3" in " ".join(entry["args"]) and entry["exit_code"] is None
                   and not entry.get("cancelled") for entry in stub.engine.exec_log)

    async def stopped_after() -> float:
        """Seconds from the stop (a 0.3 s timeout, or a cancel) to the attempt's end,
        the exec running in the engine first (a fixed 0.7 s wait from the start was at
        times spent before the exec reached a loaded CI machine's engine)."""
        job = asyncio.ensure_future(executor.execute(task))
        deadline = time.monotonic() + 10
        while not slow_running() and time.monotonic() < deadline:
            await asyncio.sleep(0.02)
        assert slow_running(), stub.engine.exec_log
        stopped = time.monotonic()
        if how == "timeout":
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(job, 0.3)
        else:
            job.cancel()
            with pytest.raises(asyncio.CancelledError):
                await job
        return time.monotonic() - stopped

    assert run_sync(stopped_after()) < 0.6  # (the exec sleeps 3 s: stopped, not waited for)
    sent = len(stub.queries)
    assert _wait_until(lambda: stub.engine.exec_log[-1].get("cancelled"))  # killed, not left
    time.sleep(0.3)
    assert len(stub.queries) == sent  # no query after the cancel (no retry, no sync)
    said = [line for _stream, line in task.log.lines]  # (the engine returns none of it)
    assert len(said) == 1 and "returned none of the output of step" in said[0], said


# -- concurrency ----------------------------------------------------------------------


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_independent_steps_run_at_once(stub, make_task, tmp_path):
    executor = DaggerExecutor()
    barrier = tmp_path / "barrier"
    barrier.mkdir()
    # Each exec waits (at most 10 s) until all eight have started, so the count does not
    # depend on how fast this machine starts them (a fixed sleep did, on 2 CPUs).
    wait = ('touch "$BARRIER/$DAGNB_STEP"; i=0; '
            'while [ "$(ls "$BARRIER" | wc -l)" -lt 8 ] && [ $i -lt 200 ]; '
            'do sleep 0.05; i=$((i+1)); done; echo "$DAGNB_STEP"')
    tasks = [make_task(Step(f"s{i}", run=wait, env={"BARRIER": str(barrier)}))
             for i in range(8)]

    async def all_at_once():
        return await asyncio.gather(*(executor.execute(t) for t in tasks))

    started = time.monotonic()
    outcomes = run_sync(all_at_once())
    assert [o.exit_code for o in outcomes] == [0] * 8
    assert stub.engine.max_active_execs == 8
    assert time.monotonic() - started < 8


def test_steps_starting_together_ask_for_their_image_once(stub, make_task):
    # Each asked: 60 steps at concurrency 4 sent 4 identical image lookups.
    executor = DaggerExecutor(default_image="alpine:3.20-together")  # new to this session
    tasks = [make_task(Step(f"t{i}", run="true")) for i in range(4)]

    async def all_at_once():
        return await asyncio.gather(*(executor.execute(t) for t in tasks))

    outcomes = run_sync(all_at_once())
    assert {o.image_ref for o in outcomes} == {outcomes[0].image_ref}
    assert len([t for t in stub.texts("imageRef") if "alpine:3.20-together" in t]) == 1


def test_a_lookup_that_failed_is_asked_again(stub):
    async def lookups():
        async def fails():
            raise ValueError("engine hiccup")

        async def answers():
            return "v1"

        first = await asyncio.gather(connection.remembered("probe", fails),
                                     connection.remembered("probe", fails),
                                     return_exceptions=True)
        return first, await connection.remembered("probe", answers)

    first, then = run_sync(lookups())
    assert [str(e) for e in first] == ["engine hiccup"] * 2 and then == "v1"


def test_a_cancelled_caller_leaves_the_others_their_answer(stub):
    async def lookups():
        answer = asyncio.Event()

        async def slow():
            await answer.wait()
            return "digest"

        timed_out = asyncio.ensure_future(connection.remembered("slow", slow))
        waiting = asyncio.ensure_future(connection.remembered("slow", slow))
        await asyncio.sleep(0)
        timed_out.cancel()  # its step's timeout
        answer.set()
        return await waiting, timed_out.cancelled()

    assert run_sync(lookups()) == ("digest", True)


# -- python function steps ------------------------------------------------------------

SCALE = 10


def _helper(x):
    return x * SCALE


def make_dict():
    import os

    return {"x": 2, "where": os.environ["DAGNB_OUT"]}


def add(up, n):
    return _helper(up["x"]) + n


async def as_set(add):
    await asyncio.sleep(0)
    return {add, add + 1}


def boom():
    raise ValueError("bad input")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_python_steps_run_and_pass_results(stub, make_task):
    executor = DaggerExecutor()
    up_task = make_task(Step("up", func=make_dict))
    up = run(executor, up_task)
    assert up.result == {"x": 2, "where": "/dagnb/out"}
    assert (up_task.out_dir / "result.json").exists()
    assert call_args(stub, "withExec")[0]["args"] == ["python3", "/dagnb/step/shim.py"]

    inputs = {"up": Input("up", up_task.out_dir, result=up.result, handle=up.handle)}
    mid_task = make_task(Step("add", func=add, params={"n": 3}, needs=["up"]), inputs=inputs)
    mid = run(executor, mid_task)
    assert mid.result == 23

    inputs = {"add": Input("add", mid_task.out_dir, result=23, handle=mid.handle)}
    last = run(executor, make_task(Step("as_set", func=as_set, needs=["add"]), inputs=inputs))
    assert last.result == {23, 24}  # not JSON: pickled in the container, loaded here


def takes_keywords(up, **options):
    return {"up": up, **options}


def test_a_python_step_with_kwargs_gets_only_the_params_it_names(stub, make_task):
    """As on this machine: **options is the function's own (a reader's options), not a
    catch-all for the step's params, which may be the defaults' meant for shell steps."""
    inputs = {"up": Input("up", make_task(Step("up", func=make_dict)).out_dir, result=1)}
    step = Step("kw", func=takes_keywords, params={"up": 0, "n": 3, "run-id": 7}, needs=["up"])
    outcome = run(DaggerExecutor(), make_task(step, inputs=inputs))
    assert outcome.result == {"up": 1}


def test_python_step_exception_is_step_failed(stub, make_task):
    with pytest.raises(StepFailed, match="raised") as caught:
        run(DaggerExecutor(), make_task(Step("boom", func=boom)))
    assert "ValueError: bad input" in caught.value.stderr_tail


def boom_after_a_partial_line():
    import sys

    print("rows read: 41", end="", file=sys.stderr, flush=True)  # (no line end)
    raise ValueError("bad input row 42")


def test_a_python_step_raising_after_an_unended_line_is_named_by_its_exception(
        stub, make_task):
    """It read "the Python function raised (exit code 1); see its stderr": the
    traceback's first line followed the step's unended one, on the same line."""
    with pytest.raises(StepFailed) as caught:
        run(DaggerExecutor(), make_task(Step("boom", func=boom_after_a_partial_line)))
    assert str(caught.value) == (
        "step 'boom': the Python function raised (exit code 1): ValueError: bad input row 42")


def rows_and_a_note():
    import dagnb

    (dagnb.current().out_dir / "note.txt").write_text("from the host")
    return [1, 2, 3]


def just_rows():
    return [4, 5]


def describe(rows):
    import os

    folder = os.path.join(os.environ["DAGNB_IN"], "rows")
    return {"rows": rows, "files": sorted(os.listdir(folder))}


@pytest.mark.parametrize("upstream", [rows_and_a_note, just_rows])
@pytest.mark.parametrize("cache", ["step", "run"])
def test_a_container_step_gets_the_value_of_an_upstream_run_in_process(
        stub, tmp_path, upstream, cache):
    # The upstream's value, not stored (cache=False on it, or on the run), was in memory
    # only: the container got its folder's Path, or no folder at all (an engine error).
    import dagnb

    graph = dagnb.Graph("mixed", [
        Step("rows", func=upstream, executor="local", cache=cache != "step"),
        Step("describe", func=describe, needs=["rows"], executor="dagger"),
    ])
    run = graph.run(cache_directory=tmp_path / "cache", cache=cache != "run")
    assert run.states() == {"rows": "succeeded", "describe": "succeeded"}, run.status()
    expected = {rows_and_a_note: {"rows": [1, 2, 3], "files": ["note.txt", "result.json"]},
                just_rows: {"rows": [4, 5], "files": ["result.json"]}}[upstream]
    assert run.result("describe") == expected
    assert not (tmp_path / "cache" / ".runs" / run.id / "describe" / "inputs").exists()


def test_a_file_system_error_here_is_not_called_the_engines(stub, make_task, tmp_path):
    # Staging an upstream's value failed on this machine; it read "Dagger engine error".
    (tmp_path / "rows").mkdir()
    inputs = {"rows": Input("rows", tmp_path / "rows", result=[1, 2])}
    task = make_task(Step("describe", func=describe, needs=["rows"]), inputs=inputs)
    blocker = task.out_dir.parent / "inputs"  # where the upstream's folder is staged
    blocker.write_text("a file, not a folder")
    with pytest.raises(StepFailed) as caught:
        run(DaggerExecutor(), task)
    assert str(caught.value) == ("step 'describe': file-system error on this machine: Not a "
                                 f"directory: {str(blocker / 'rows')!r}")
    assert not stub.texts("withExec")


def test_a_failed_copy_here_names_its_file():
    import shutil

    error = shutil.Error([("/data/a.csv", "/stage/a.csv", "[Errno 13] Permission denied")])
    words = _classified_message(error)
    assert words == ("step 's': file-system error on this machine: [Errno 13] Permission "
                     "denied (copying '/data/a.csv')")
    assert "Dagger engine error" in str(_engine_error("stat /x: no such file or directory"))
    assert "Dagger engine error" in _classified_message(TimeoutError("timed out"))  # no path


def _classified_message(exc: Exception) -> str:
    from dagnb.executors.dagger.executor import _classified

    return str(_classified("step 's'", exc, _unmasked, dagger, "s"))


# -- availability and the connection --------------------------------------------------


def test_unavailable_without_engine(monkeypatch, make_task, tmp_path):
    for key in ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN", "_EXPERIMENTAL_DAGGER_CLI_BIN"):
        monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    found = connection.detect()
    assert not found.available
    assert "install the dagger CLI" in found.reason and "DAGGER_SESSION_PORT" in found.reason
    assert connection.pick_auto() == ("local", found.reason)
    with pytest.raises(ExecutorUnavailable, match="install the dagger CLI"):
        run(DaggerExecutor(), make_task(Step("s", run="true")))


def test_detect_finds_cli_or_session(monkeypatch, tmp_path):
    for key in ("DAGGER_SESSION_PORT", "DAGGER_SESSION_TOKEN", "_EXPERIMENTAL_DAGGER_CLI_BIN"):
        monkeypatch.delenv(key, raising=False)
    cli = tmp_path / "dagger"
    cli.write_text("#!/bin/sh\n")
    cli.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path))
    assert connection.detect().available and "on PATH" in connection.detect().reason
    assert connection.pick_auto().executor == "dagger"
    monkeypatch.setenv("PATH", "/nonexistent")
    monkeypatch.setenv("_EXPERIMENTAL_DAGGER_CLI_BIN", "/opt/dagger")
    assert "_EXPERIMENTAL_DAGGER_CLI_BIN" in connection.detect().reason
    monkeypatch.setenv("DAGGER_SESSION_PORT", "1234")
    assert connection.detect().available  # a port without a token is not a session
    monkeypatch.delenv("_EXPERIMENTAL_DAGGER_CLI_BIN")
    assert not connection.detect().available
    monkeypatch.setenv("DAGGER_SESSION_TOKEN", "t")
    assert "127.0.0.1:1234" in connection.detect().reason


def test_missing_sdk_names_the_extra(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "dagger", None)  # what an uninstalled package looks like
    with pytest.raises(ExecutorUnavailable, match=r"pip install 'dagnb\[dagger\]'"):
        connection.require_sdk()


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_one_connection_reused_and_loop_change_reconnects(stub, make_task, caplog):
    # The connection the steps are to reuse is opened here, on dagnb's loop, not left
    # by an earlier test; its opening is not counted: the SDK's own queries on
    # connecting (the schema's introspection, a version check of its own) are its.
    run_sync(connection.aclose())
    first = run_sync(connection.client())
    session = connection.session_number()
    opened = len(stub.texts())
    executor = DaggerExecutor()
    run(executor, make_task(Step("a", run="true")))
    run(executor, make_task(Step("b", run="true")))
    assert connection._connection.client is first
    assert connection.session_number() == session
    steps = stub.texts()[opened:]
    assert not [q for q in steps if "IntrospectionQuery" in q]  # no session opened
    # the version the client asked as it connected is kept: the steps ask none
    assert [q for q in steps if q.startswith("{\n  version")] == []

    with caplog.at_level(logging.WARNING, logger="dagnb.executors.dagger.connection"):
        outcome = asyncio.run(executor.execute(make_task(Step("c", run="echo other"))))
    assert outcome.exit_code == 0
    assert "event loop changed" in caplog.text
    assert connection._connection.client is not first
    assert connection.session_number() == session + 1
    run(executor, make_task(Step("d", run="true")))  # and back on dagnb's loop


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_lost_session_is_reopened_once_and_its_objects_dropped(stub, make_task, caplog):
    from dagnb.executors.dagger import services

    executor = DaggerExecutor()
    up_task = make_task(Step("up", run='echo 42 > "$DAGNB_OUT/n.txt"'))
    up = run(executor, up_task)
    services.start("db", "postgres:16", ports=[5432])
    stub.lose_session()  # old client's requests are dropped; a new session knows no old ID
    inputs = {"up": Input("up", up_task.out_dir, handle=up.handle)}
    down = Step("down", run="cat $DAGNB_IN/up/n.txt", needs=["up"])

    async def three_at_once():
        tasks = [make_task(down.replace(name=f"down{i}"), inputs=inputs) for i in range(3)]
        return await asyncio.gather(*(executor.execute(t) for t in tasks),
                                    return_exceptions=True)

    with caplog.at_level(logging.WARNING, logger="dagnb.executors.dagger.connection"):
        failures = run_sync(three_at_once())
    assert all(isinstance(f, TransientError) for f in failures), failures
    assert caplog.text.count("lost the Dagger session") == 1  # reopened once, not per step
    task = make_task(down, inputs=inputs, attempt=2)  # the runner's retry
    assert run(executor, task).exit_code == 0, task.log.lines
    assert task.log.of("stdout") == ["42"]
    assert str(up_task.out_dir) in uploads(stub)  # the old handle dropped, uploaded instead
    try:
        assert services.running().loc[0, "state"] == "stopped"
        assert services.logs("db").endswith("stopped: the Dagger session was lost")
    finally:
        services._forget_all()


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_passing_connection_failure_keeps_the_session(stub, make_task):
    executor = DaggerExecutor()
    run(executor, make_task(Step("a", run="true")))
    session = connection.session_number()
    stub.fail("http500", match="withExec", times=2)  # one step's query fails, twice
    with pytest.raises(TransientError):
        run(executor, make_task(Step("b", run="true")))
    assert connection.session_number() == session  # it still answered: services live on
    assert run(executor, make_task(Step("c", run="true"))).exit_code == 0


def test_exit_hook_closes_on_the_owning_loop(stub, make_task):
    run(DaggerExecutor(), make_task(Step("a", run="true")))
    assert connection._connection.client is not None
    connection._close_at_exit()
    assert connection._connection.client is None
    assert run(DaggerExecutor(), make_task(Step("b", run="true"))).exit_code == 0


def test_a_stale_session_port_says_how_to_fix_it(stub, monkeypatch):
    import socket

    with socket.socket() as sock:  # a port nothing listens on: `dagger run` has ended
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    monkeypatch.setenv("DAGGER_SESSION_PORT", str(port))
    run_sync(connection.aclose())
    with pytest.raises(TransientError, match=re.escape(
            f"could not connect to the Dagger session on 127.0.0.1:{port} "
            "(DAGGER_SESSION_PORT): nothing answers there; restart `dagger run` (the "
            "session ends with it), or unset DAGGER_SESSION_PORT and DAGGER_SESSION_TOKEN")):
        run_sync(connection.client())

def test_rewrite_sandbox_fallback(stub, make_task, tmp_path, monkeypatch):
    # Where mount namespaces are not allowed the stub rewrites container paths instead.
    monkeypatch.setenv("DAGNB_STUB_SANDBOX", "rewrite")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.txt").write_text("x\n")
    step = Step("rw", run='cat /data/a.txt > "$DAGNB_OUT/copy.txt"; ls /dagnb',
                mounts={"data": "/data"})
    task = make_task(step, base_dir=tmp_path)
    assert run(DaggerExecutor(), task).exit_code == 0
    assert (task.out_dir / "copy.txt").read_text() == "x\n"
    assert task.log.of("stdout") == ["in", "out", "params.json"]


def test_service_binding(stub, make_task):
    from dagnb.executors.dagger import services

    services.start("db", "postgres:16", ports=[5432])
    try:
        run(DaggerExecutor(), make_task(Step("q", run="true", services=["db"])))
        [binding] = call_args(stub, "withServiceBinding")
        assert binding["alias"] == "db" and binding["service"].startswith("Service:")
    finally:
        services.stop("db")
        services._forget_all()
    with pytest.raises(Exception, match="no service named 'db'"):
        run(DaggerExecutor(), make_task(Step("q2", run="true", services=["db"])))


def test_step_paths_are_not_host_paths(stub, make_task):
    task = make_task(Step("env", run='echo "$DAGNB_OUT $DAGNB_IN $DAGNB_PARAMS"; cat $DAGNB_PARAMS',
                          params={"alpha": [1, 2]}))
    run(DaggerExecutor(), task)
    assert task.log.of("stdout")[0] == "/dagnb/out /dagnb/in /dagnb/params.json"
    assert json.loads("".join(task.log.of("stdout")[1:])) == {"alpha": [1, 2]}


# -- through the runner ---------------------------------------------------------------


def total(prep, k):
    return int((prep / "n.txt").read_text()) * k


def _example_graph(base_dir):
    from dagnb.model.graph import Graph

    return Graph("e2e", [
        Step("prep", run='echo prepping; echo 5 > "$DAGNB_OUT/n.txt"'),
        Step("double", run='echo $(( $(cat "$DAGNB_IN/prep/n.txt") * 2 ))', needs=["prep"]),
        Step("total", func=total, needs=["prep"], params={"k": 3}),
        Step("broken", run="echo bad >&2; exit 2", needs=["double"]),
        Step("after", run="echo never", needs=["broken"]),
    ], base_dir=base_dir)


def _run_graph(tmp_path, executor: str):
    from dagnb.runtime.prepare import start_background

    run = start_background(_example_graph(tmp_path), executor=executor, cache=False,
                           cache_directory=tmp_path / executor)
    try:
        run.wait(timeout=8)
    except TimeoutError:
        run.cancel()
        raise
    return run


def test_graph_runs_the_same_on_dagger_and_locally(stub, tmp_path):
    columns = ["step", "state", "exit_code"]
    local = _run_graph(tmp_path, "local")
    assert local.states()["total"] == "succeeded", local.status()
    remote = _run_graph(tmp_path, "dagger")
    assert remote.status()[columns].equals(local.status()[columns])
    assert remote.states()["broken"] == "failed" and remote.states()["after"] == "skipped"
    assert remote.result("total") == local.result("total") == 15
    log_columns = ["step", "stream", "line"]
    remote_logs = remote.logs()[log_columns].reset_index(drop=True)
    local_logs = local.logs()[log_columns].reset_index(drop=True)
    def rows(frame):
        return frame.sort_values(log_columns).values.tolist()

    assert rows(remote_logs) == rows(local_logs)
    assert set(remote.status()["executor"].dropna()) == {"dagger"}
    assert stub.engine.exec_log  # the steps really went through the engine


def shout():
    print("working on it")
    raise ValueError("bad input row 42")


def _failing_graph(base_dir):
    from dagnb.model.graph import Graph

    return Graph("failing", [
        Step("shout", func=shout),
        Step("killed", run='echo working; echo "token $TOKEN gone" >&2; kill -KILL $$',
             secrets=["TOKEN"]),
        Step("exits", run="echo out; echo oops >&2; exit 3"),
    ], base_dir=base_dir)


def _failed_run(tmp_path, executor: str):
    from dagnb.runtime.prepare import start_background

    run = start_background(_failing_graph(tmp_path), executor=executor, cache=False,
                           cache_directory=tmp_path / executor)
    run.wait(timeout=8)
    return run


def _lines(run, step: str, stream: str) -> list[str]:
    logs = run.logs()
    return logs[(logs["step"] == step) & (logs["stream"] == stream)]["line"].tolist()


def test_failed_steps_output_reaches_the_logs_as_on_the_local_executor(
        stub, tmp_path, monkeypatch):
    monkeypatch.setenv("TOKEN", SECRET)
    local, remote = _failed_run(tmp_path, "local"), _failed_run(tmp_path, "dagger")
    for run in (local, remote):
        assert set(run.states().values()) == {"failed"}, run.status()
        assert _lines(run, "shout", "stdout") == ["working on it"]
        traceback = _lines(run, "shout", "stderr")  # the step's own frame, not the shim's
        assert traceback[0] == "Traceback (most recent call last):"
        assert [line for line in traceback if line.lstrip().startswith("File ")] == [
            line for line in traceback if "in shout" in line]
        assert traceback[-1] == "ValueError: bad input row 42"
        for step in ("killed", "exits"):
            assert _lines(run, step, "stdout") == _lines(local, step, "stdout"), step
            assert _lines(run, step, "stderr") == _lines(local, step, "stderr"), step
    assert _lines(remote, "killed", "stderr") == ["token *** gone"]
    errors = remote.status().set_index("step")["error"]
    assert errors["shout"].endswith(": ValueError: bad input row 42")
    assert errors["killed"].endswith(
        "exited with code 137 (killed by SIGKILL; out of memory?): token *** gone")


def killed():
    import os
    import signal
    import sys

    print("loading 40 GB", file=sys.stderr, flush=True)
    os.kill(os.getpid(), signal.SIGKILL)  # as the OOM killer does


def test_a_python_step_killed_by_a_signal_says_so_as_a_shell_step_does(stub, make_task):
    # It read "the Python function raised (exit code 137); see its stderr".
    with pytest.raises(StepFailed) as caught:
        run(DaggerExecutor(), make_task(Step("oom", func=killed)))
    assert str(caught.value) == ("step 'oom' exited with code 137 (killed by SIGKILL; out of "
                                 "memory?): loading 40 GB")
    assert caught.value.exit_code == 137
    shell = Step("term", run="kill -TERM $$")
    with pytest.raises(StepFailed, match=r"^step 'term' exited with code 143 \(killed by "
                                         r"SIGTERM\)$"):
        run(DaggerExecutor(), make_task(shell))


def half_done(code):
    import os
    import sys

    sys.stderr.write("half done")  # (no line end: the shim's line follows on this line)
    sys.stderr.flush()
    os._exit(code)


def after_leaving(leave):
    return leave


@pytest.mark.parametrize("user", ["", "1234:1234"])
@pytest.mark.parametrize("code", [0, 3])
def test_a_python_step_that_ends_its_process_with_os_exit_fails_and_runs_again_next_time(
        stub, tmp_path, code, user):
    """os._exit() ends the step's process mid-step: no result exists. With code 0 the
    step succeeded, was stored and served to the next run (which the engine's exec
    cache would have served too); with 3 it "raised (exit code 3)", raising nothing."""
    from dagnb.model.graph import Graph

    if user:
        _needs_namespaces()
    leave = Step("leave", func=half_done, params={"code": code}, user=user or None)
    graph = Graph("g", [leave, Step("after", func=after_leaving, needs=["leave"])])
    for _ in range(2):
        run = graph.run(executor="dagger", cache_directory=tmp_path / "cache")
        row = run.status_rows()["leave"]
        assert (row["state"], row["cached"], row["exit_code"]) == ("failed", False, code)
        assert row["error"] == (
            f"step 'leave': its process in the container exited with code {code} before "
            "returning a result (os._exit() or a native exit() ends it so); end the step "
            "by returning, raising or sys.exit() instead")
        assert run.states()["after"] == "skipped"
        assert _lines(run, "leave", "stderr") == ["half done"]
    assert len(stub.engine.exec_log) == 2  # the engine ran it again: nothing was cached


def leaves_a_writer(how):
    import os
    import subprocess

    subprocess.Popen(["sh", "-c", "sleep 0.3; echo still here >&2"])  # (after the step)
    if how == "raise":
        raise ValueError("bad rows")
    os._exit(0)


@pytest.mark.parametrize(("how", "error"), [
    ("raise", "step 'left': the Python function raised (exit code 1): ValueError: bad rows"),
    ("os._exit", "step 'left': its process in the container exited with code 0 before "
                 "returning a result (os._exit() or a native exit() ends it so); end the "
                 "step by returning, raising or sys.exit() instead"),
])
def test_a_python_step_leaving_a_process_that_writes_after_it_ended_fails_as_it_ended(
        stub, make_task, how, error):
    """The shim's line saying how the step ended was taken only as stderr's last: a line
    from a process the step left running came after it, and the step failed as "exit
    code 1: still here" (the marker line left in its logs)."""
    task = make_task(Step("left", func=leaves_a_writer, params={"how": how}))
    with pytest.raises(StepFailed) as caught:
        run(DaggerExecutor(), task)
    assert str(caught.value) == error
    stderr = task.log.of("stderr")
    assert stderr[-1] == "still here"
    assert not [line for line in stderr if "dagnb-step-ended" in line], stderr


@pytest.mark.parametrize(("stderr", "expected"), [
    ("Traceback ...\nValueError: x\n{m}raised\n", ("Traceback ...\nValueError: x\n", "raised")),
    ("half done{m}died 0\n", ("half done", "died 0")),
    ("{m}died 3\n", ("", "died 3")),
    ("{m}raised\nwritten after it\n", ("written after it\n", "raised")),  # (a process left)
    ("{m}raised by the step itself\n", ("{m}raised by the step itself\n", "")),
    ("out of patience\n{m}exit\n", ("out of patience\n", "exit")),  # (sys.exit(137))
    ("{m}unreached u\n", ("", "unreached u")),  # (a cell's --outputs name not reached)
    ("leaving\n", ("leaving\n", "")),
])
def test_the_shims_last_line_says_how_a_python_step_ended(stderr, expected):
    from dagnb.executors.dagger.shim import _MARKER, ending

    def marked(text):
        return text.replace("{m}", _MARKER)

    assert ending(marked(stderr)) == tuple(marked(text) for text in expected)


def leaving():
    import sys

    print("leaving", file=sys.stderr)
    sys.exit(3)


def complain():
    import sys

    sys.exit("no input today")


def done_early():
    import sys

    sys.exit(0)


def after_done(done_early):
    return isinstance(done_early, pathlib.Path)  # no result: its folder, as a shell step's


def load_cell():
    import sys

    sys.exit(0)


setattr(load_cell, PUBLISHED_AS, ("rows",))  # (a --python cell's, with --outputs rows)


def test_a_cell_with_outputs_ended_by_sys_exit_0_fails_and_stores_nothing_in_a_container(
        stub, tmp_path):
    """It succeeded with no result, published as None and cached; it fails, as on local."""
    from dagnb.model.graph import Graph

    graph = Graph("g", [Step("load", func=load_cell)])
    for executor in ("local", "dagger"):
        for _ in range(2):  # (the second is no cache hit: nothing was stored)
            run = graph.run(executor=executor, cache_directory=tmp_path / executor)
            row = run.status_rows()["load"]
            assert (row["state"], row["cached"]) == ("failed", False), row
            assert row["error"].startswith("step 'load': the cell ended (sys.exit(0)) "
                                           "before assigning its --outputs 'rows'; "), row


def test_sys_exit_in_a_container_step_ends_it_as_on_the_local_executor(stub, tmp_path):
    """sys.exit() ends a step as it ends a script: 0 succeeds with no result, a text is
    printed and fails with status 1, a number is the status. sys.exit(3) read "the
    Python function raised (exit code 3); see its stderr"."""
    from dagnb.model.graph import Graph

    graph = Graph("g", [Step("leaving", func=leaving), Step("complain", func=complain),
                        Step("done_early", func=done_early),
                        Step("after", func=after_done, needs=["done_early"])])
    local, remote = (graph.run(executor=name, cache=False, cache_directory=tmp_path / name)
                     for name in ("local", "dagger"))
    columns = ("state", "exit_code", "error")
    for run in (local, remote):
        rows = run.status_rows()
        assert {name: tuple(rows[name][c] for c in columns) for name in rows} == {
            "leaving": ("failed", 3, "exit code 3: leaving"),
            "complain": ("failed", 1, "exit code 1: no input today"),
            "done_early": ("succeeded", 0, None),
            "after": ("succeeded", 0, None)}, run
        assert run.result("after") is True
        assert _lines(run, "complain", "stderr") == ["no input today"]
    assert len(stub.engine.exec_log) == 4


def exits_as_if_killed():
    import sys

    print("out of patience", file=sys.stderr)
    sys.exit(137)


def test_a_python_step_s_sys_exit_137_is_its_exit_code_not_a_kill(stub, tmp_path):
    """sys.exit(137) read "exited with code 137 (killed by SIGKILL; out of memory?)" on
    Dagger, "exit code 137" on the local executor: the shim knew the step chose it."""
    from dagnb.model.graph import Graph

    graph = Graph("g", [Step("chosen", func=exits_as_if_killed)])
    errors = [graph.run(executor=name, cache=False, cache_directory=tmp_path / name)
              .status_rows()["chosen"] for name in ("local", "dagger")]
    assert [(row["state"], row["exit_code"], row["error"]) for row in errors] == [
        ("failed", 137, "exit code 137: out of patience")] * 2
    assert len(stub.engine.exec_log) == 1


# -- review ---------------------------------------------------------------------------


def leaky():
    import os

    print("token", os.environ["TOKEN"])
    raise ValueError(f"rejected {os.environ['TOKEN']}")


def test_python_step_failure_masks_secrets_in_its_tails(stub, make_task):
    task = make_task(Step("leaky", func=leaky, secrets=["TOKEN"]), secrets={"TOKEN": SECRET})
    with pytest.raises(StepFailed, match="raised") as caught:
        run(DaggerExecutor(), task)
    error = caught.value
    assert "token ***" in error.stdout_tail and "rejected ***" in error.stderr_tail
    assert SECRET not in error.stdout_tail + error.stderr_tail + str(error)


def test_home_relative_mount_resolves_as_the_cache_key_does(stub, make_task, tmp_path,
                                                            monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "cfg.ini").write_text("k=home\n")
    step = Step("cfg", run="cat /etc/app.ini", mounts={"~/cfg.ini": "/etc/app.ini"})
    task = make_task(step, base_dir=tmp_path)
    assert run(DaggerExecutor(), task).exit_code == 0
    assert task.log.of("stdout") == ["k=home"]


def _doubled(x):
    return 2 * x


twice = _doubled  # a module-level alias of a helper


def calls_an_alias(n):
    return twice(n) + 1


def test_python_step_reaching_a_helper_through_an_alias(stub, make_task):
    outcome = run(DaggerExecutor(), make_task(Step("alias", func=calls_an_alias,
                                                   params={"n": 4})))
    assert outcome.result == 9


def test_each_step_is_an_opentelemetry_span_the_queries_carry(stub, make_task):
    from opentelemetry import trace
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    exported = InMemorySpanExporter()
    provider = trace.get_tracer_provider()
    if not isinstance(provider, TracerProvider):  # as dagger run's environment would
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    provider.add_span_processor(SimpleSpanProcessor(exported))
    run(DaggerExecutor(), make_task(Step("traced", run="true")))
    [span] = [s for s in exported.get_finished_spans() if s.name == "traced"]
    assert span.attributes["dagnb.step"] == "traced"
    trace_id = format(span.context.trace_id, "032x")
    execs = [q for q in stub.queries if "withExec" in q.query]
    assert execs and all(trace_id in (q.traceparent or "") for q in execs)


# -- globals a Python step reads ------------------------------------------------------

ALLOWED = {"b", "a"}  # not a literal the old shim wrote: a set
PATTERN = re.compile(r"[a-z]+\d+")
HALF = __import__("fractions").Fraction(1, 2)  # an object of an importable class
NAN = float("nan")  # its repr, nan, reads back as no value
LOCK = __import__("threading").Lock()
LEAKED = {"token": SECRET}  # a copy of a secret's value, taken when the cell ran
PICKLED_LEAK = frozenset({SECRET})  # the same, in a value that is pickled


class Settings:
    def __init__(self, rate):
        self.rate = rate


SETTINGS = Settings(3)  # of a class the container cannot import


def reads_globals():
    import math

    return {"allowed": sorted(ALLOWED), "match": bool(PATTERN.fullmatch("ab12")),
            "half": str(HALF * 2), "nan": math.isnan(NAN)}


def reads_a_lock():
    with LOCK:
        return 1


def reads_an_attribute_named_as_a_global():
    import types

    return types.SimpleNamespace(LOCK=2).LOCK  # an attribute, not the global LOCK


def reads_settings():
    return SETTINGS.rate


def reads_a_secret():
    return len(LEAKED["token"])


def reads_a_pickled_secret():
    return len(PICKLED_LEAK)


def test_python_step_reads_globals_that_are_not_literals(stub, make_task):
    # Only literals were shipped: sorted(ALLOWED) failed with a NameError in the container.
    outcome = run(DaggerExecutor(), make_task(Step("globals", func=reads_globals)))
    assert outcome.result == {"allowed": ["a", "b"], "match": True, "half": "1", "nan": True}
    assert run(DaggerExecutor(), make_task(
        Step("attr", func=reads_an_attribute_named_as_a_global))).result == 2


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_set_global_is_written_the_same_in_every_process(tmp_path):
    # Its order follows string hashing, which changes per process; the module's text
    # keys the engine's exec cache, which every new kernel would miss.
    import os
    import subprocess
    import sys
    from pathlib import Path

    script = tmp_path / "probe.py"  # inspect reads the function's source from its file
    script.write_text("from dagnb.executors.dagger.shim import function_module\n"
                      "WORDS = {'delta', 'alpha', 'echo', 'bravo', 'charlie'}\n"
                      "def words():\n    return sorted(WORDS)\n"
                      "print(function_module(words, 's').splitlines()[0])\n")
    root = str(Path(__file__).resolve().parents[1])
    texts = {subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                            check=True, env={**os.environ, "PYTHONHASHSEED": seed,
                                             "PYTHONPATH": root}).stdout
             for seed in ("1", "2", "3")}
    assert texts == {"WORDS = {'alpha', 'bravo', 'charlie', 'delta', 'echo'}\n"}


@pytest.mark.parametrize(("func", "words"), [
    (reads_a_lock, r"global 'LOCK' \(lock\) cannot be sent to the container: cannot "
                   r"pickle '_thread.lock' object; pass it as a parameter, or define it "
                   r"inside the function$"),
    (reads_settings, r"global 'SETTINGS' \(Settings\) cannot be sent to the container: it "
                     r"refers to 'Settings', defined beside the function"),
    (reads_a_secret, r"global 'LEAKED' holds the value of secret 'TOKEN', which would reach "
                     r"the container in plain text; read os.environ\['TOKEN'\]"),
    (reads_a_pickled_secret, r"global 'PICKLED_LEAK' holds the value of secret 'TOKEN'"),
])
def test_a_global_that_cannot_be_sent_is_refused_before_the_step_runs(stub, make_task,
                                                                      func, words):
    task = make_task(Step("reader", func=func, secrets=["TOKEN"]), secrets={"TOKEN": SECRET})
    with pytest.raises(InvalidStepError, match=r"^step 'reader': " + words) as caught:
        run(DaggerExecutor(), task)
    assert "\n" not in str(caught.value)
    assert not stub.texts("withExec")  # nothing ran
    assert len(_plaintext_queries(stub, SECRET)) <= 1  # setSecret's, if any


def raises_with_the_secret():
    import os

    raise ValueError(f"row {os.environ['RETRIES']} is bad")


def rejects_its_input():
    import os

    with open(os.path.join(os.environ["DAGNB_IN"], "writer", "t")) as handle:
        raise ValueError(f"rejected {handle.read()}")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_short_secret_masks_what_the_step_or_engine_said_not_dagnbs_words(
        stub, tmp_path, monkeypatch):
    """A secret ``1`` turned ``exit code 1`` into ``exit code ***`` and a step ``fetch1``
    into ``fetch***``: the run masked the whole message again. What it holds of the
    step's output, or the engine's words, is masked still, with the run's every secret
    (another step's, which an upstream's file holds, too)."""
    from dagnb.model.graph import Graph
    from dagnb.runtime.prepare import start_background

    def errors(*steps: Step) -> dict[str, str | None]:
        run = start_background(Graph("short", list(steps), base_dir=tmp_path),
                               executor="dagger", cache=False, enable_retry=False,
                               cache_directory=tmp_path / "cache")
        run.wait(timeout=8)
        return run.status().set_index("step")["error"].to_dict()

    monkeypatch.setenv("RETRIES", "1")
    monkeypatch.setenv("OTHER", SECRET)
    stub.fail("error", match="fetch-step", message="layer 1 of 3 missing")
    assert errors(
        Step("raises", func=raises_with_the_secret, secrets=["RETRIES"]),
        Step("killed", run='echo "tried $RETRIES time" >&2; kill -KILL $$',
             secrets=["RETRIES"]),
        Step("fetch1", run="echo fetch-step", secrets=["RETRIES"]),
        Step("writer", run='printf %s "$OTHER" > "$DAGNB_OUT/t"', secrets=["OTHER"]),
        Step("reader", func=rejects_its_input, needs=["writer"]),
    ) == {
        "raises": "step 'raises': the Python function raised (exit code 1): "
                  "ValueError: row *** is bad",
        "killed": "step 'killed' exited with code 137 (killed by SIGKILL; out of memory?): "
                  "tried *** time",
        "fetch1": "step 'fetch1': Dagger engine error: layer *** of 3 missing",
        "writer": None,
        "reader": "step 'reader': the Python function raised (exit code 1): "
                  "ValueError: rejected ***",
    }
    stub.fail("drop", match="drop-step", times=5)  # (alone: it drops the others' session)
    [dropped] = errors(Step("drop1", run="echo drop-step", secrets=["RETRIES"])).values()
    assert dropped.startswith("step 'drop1': lost the Dagger engine: "), dropped


def test_an_output_a_cell_did_not_reach_fails_in_its_words_in_a_container(stub, tmp_path):
    """It failed with "the Python function raised (exit code 1): UnboundLocalError",
    pointing at a `return u` line dagnb wrote; it fails in one line, as on local. An
    UnboundLocalError on the cell's own lines is reported as before."""
    from dagnb.model.graph import Graph
    from dagnb.notebook.cells import cell_function

    unreached = cell_function("s", "if flag:\n    u = 1\n", (), ("u",), {}, params=("flag",))
    nested = cell_function(  # (w, read before assigned, nests the cell's function)
        "t", "w = w + 1\nif flag:\n    u = 1\n", (), ("w", "u"), {"w": 3}, params=("flag",))
    own = cell_function("own", "def f():\n    print(v)\n    v = 1\nf()\nw = 2\n", (), ("w",),
                        {})
    graph = Graph("g", [Step(name, func=func, params={"flag": False})
                        for name, func in (("s", unreached), ("t", nested), ("own", own))])
    for executor in ("local", "dagger"):
        rows = graph.run(executor=executor, cache=False,
                         cache_directory=tmp_path / executor).status_rows()
        for name in ("s", "t"):
            assert (rows[name]["state"], rows[name]["exit_code"], rows[name]["error"]) == (
                "failed", 1, f"step {name!r}: --outputs 'u' was not assigned: the cell's code "
                "did not reach an assignment to it; assign it on every path (u = None first, "
                "say)"), rows
        assert rows["own"]["state"] == "failed", rows
        assert "UnboundLocalError" in rows["own"]["error"], rows
