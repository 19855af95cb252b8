"""Service containers started through Dagger (against the stub engine)."""

from __future__ import annotations

import re

import pytest

from dagnb.errors import ConfigError, ExecutorError, TransientError
from dagnb.executors.dagger import services

# The stub engine fixtures (stub, dagger_stub, make_task); see dagger_stub/fixtures.py.
pytest_plugins = ["dagger_stub.fixtures"]


@pytest.fixture(autouse=True)
def _clean_registry():
    yield
    services._forget_all()


def test_start_list_logs_stop(stub):
    info = services.start("db", "postgres:16", ports=[5432], env={"POSTGRES_PASSWORD": "pw"})
    assert info.state == "running" and info.image == "postgres:16" and info.ports == (5432,)
    assert re.fullmatch(r"localhost:\d+", info.endpoint)
    assert info.endpoints == {5432: info.endpoint}
    assert stub.texts("withExposedPort") and stub.texts("tunnel")
    started = [r["state"] for r in stub.engine.services.values()]
    assert started.count("running") == 2  # the service and its tunnel

    table = services.running()
    assert list(table.columns) == ["name", "image", "ports", "endpoint", "state", "started"]
    assert table.loc[0, "name"] == "db" and table.loc[0, "state"] == "running"
    assert "started postgres:16" in services.logs("db")
    assert f"port 5432 -> {info.endpoint}" in services.logs("db")

    stopped = services.stop("db")
    assert stopped.state == "stopped"
    assert services.running().loc[0, "state"] == "stopped"
    assert set(r["state"] for r in stub.engine.services.values()) == {"stopped"}
    assert services.logs("db").endswith("stopped")
    with pytest.raises(ExecutorError, match="service 'db' is stopped"):
        services.get("db")


def test_running_is_the_table_and_list_its_old_name(stub):
    assert "list" not in vars(services) and services.list is services.running


def test_identical_definitions_under_two_names_are_two_services(stub):
    # The engine keys services by definition: without something that tells them apart,
    # stopping one would stop the other.
    one = services.start("db1", "postgres:16", ports=[5432])
    two = services.start("db2", "postgres:16", ports=[5432])
    assert one.endpoint != two.endpoint
    services.stop("db1")
    running = [r for r in stub.engine.services.values() if r["state"] == "running"]
    assert len(running) == 2  # db2 and its tunnel
    assert services.get("db2") is not None
    services.stop("db2")


def test_service_secrets_stay_out_of_queries(stub, monkeypatch):
    secret = "pg-S3cret-value"
    services.start("db", "postgres:16", ports=[5432], env={"POSTGRES_USER": "me"},
                   secrets={"POSTGRES_PASSWORD": secret})
    carrying = [q.query for q in stub.queries if secret in q.query]
    assert len(carrying) == 1 and "setSecret" in carrying[0]
    assert "withSecretVariable" in stub.texts("asService")[-1]
    services.stop("db")
    monkeypatch.setenv("PG_TOKEN", secret)
    services.start("db", "postgres:16", secrets=["PG_TOKEN"])
    assert len([q for q in stub.queries if secret in q.query]) == 2  # its own setSecret
    services.stop("db")
    with pytest.raises(ConfigError, match="secret 'NOPE_UNSET' is not set"):
        services.start("db3", "postgres:16", secrets=["NOPE_UNSET"])


def test_service_with_args_and_no_ports(stub):
    info = services.start("web", "python:3.12-slim", args=["python", "-m", "http.server"])
    assert info.endpoint is None and info.endpoints == {}
    assert "asService" in stub.texts("asService")[0]
    assert services.get("web") is not None


def test_bad_requests(stub):
    with pytest.raises(ConfigError, match="service name 'my db' must be an identifier"):
        services.start("my db", "postgres:16")
    with pytest.raises(ConfigError, match="port 70000 must be a number 1-65535"):
        services.start("db", "postgres:16", ports=[70000])
    services.start("db", "postgres:16", ports=[5432])
    with pytest.raises(ConfigError, match="'db' is already running"):
        services.start("db", "postgres:16")
    with pytest.raises(ExecutorError, match=r"no service named 'cache' \(started: \['db'\]\)"):
        services.get("cache")
    services.stop("db")


def test_a_failed_tunnel_stops_the_service_it_started(stub):
    stub.fail("error", match="tunnel", times=5)
    with pytest.raises(Exception, match="injected"):
        services.start("db", "postgres:16", ports=[5432])
    assert [r["state"] for r in stub.engine.services.values()] == ["stopped"]
    stub.faults.clear()
    assert services.start("db", "postgres:16", ports=[5432]).state == "running"


def test_two_starts_of_one_name_at_once_leave_one_service(stub):
    import asyncio

    from dagnb.executors.loop import run_sync

    async def both():
        return await asyncio.gather(services.astart("db", "postgres:16", ports=[5432]),
                                    services.astart("db", "postgres:16", ports=[5432]),
                                    return_exceptions=True)

    first, second = run_sync(both())
    assert first.state == "running"
    assert isinstance(second, ConfigError) and "'db' is already" in str(second)
    running = [r for r in stub.engine.services.values() if r["state"] == "running"]
    assert len(running) == 2  # the one service and its tunnel, nothing orphaned


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_lost_session_is_reopened_for_the_next_start(stub):
    services.start("db", "postgres:16", ports=[5432])
    stub.lose_session()  # the engine restarted: the old client's requests are dropped
    assert services.start("cache", "redis:7", ports=[6379]).state == "running"
    states = services.running().set_index("name")["state"].to_dict()
    assert states == {"db": "stopped", "cache": "running"}  # db went with its session
    assert services.logs("db").endswith("stopped: the Dagger session was lost")
    assert services.start("db", "postgres:16", ports=[5432]).state == "running"


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_stop_after_a_lost_session_finds_the_service_gone_with_it(stub):
    services.start("db", "postgres:16", ports=[5432])
    stub.lose_session()
    assert services.stop("db").state == "stopped"
    assert services.logs("db").endswith("stopped: the Dagger session was lost")
    assert services.stop("db").state == "stopped"  # (nothing left to ask the engine)
    assert services.start("db", "postgres:16", ports=[5432]).state == "running"


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_engine_errors_are_one_line_naming_the_service(stub):
    stub.fail("error", match="start", message="health check errored: tcp://db:5432 (pw-S3cret)")
    with pytest.raises(ExecutorError, match=re.escape(
            "service 'db' could not start: Dagger engine error: health check errored: "
            "tcp://db:5432 (***); check its image, ports, env and args")):
        services.start("db", "postgres:16", ports=[5432], secrets={"PW": "pw-S3cret"})
    stub.fail("error", match="start", message="pull: dial tcp 1.2.3.4:443: i/o timeout")
    with pytest.raises(TransientError, match=r"service 'db' could not start: .*i/o timeout"):
        services.start("db", "postgres:16", ports=[5432])
    services.start("db", "postgres:16", ports=[5432])
    stub.fail("error", match="stop", message="stub: stop refused")
    with pytest.raises(ExecutorError, match=r"^service 'db' could not stop: .*stop refused$"):
        services.stop("db")
    stub.fail("drop", times=50)  # no engine answers: nor the reopened session
    with pytest.raises(TransientError, match=r"^service 'db2': "):
        services.start("db2", "postgres:16", ports=[5432])
