"""The example workflow on a real Dagger engine.

Run with ``pytest -m dagger_live`` on a machine with the dagger CLI and a container
runtime (or inside ``dagger run``). A plain ``pytest`` run skips it, saying so, even where
an engine is available: pulling images and starting an engine is not for every run.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from dagnb.executors.dagger import connection
from dagnb.model.graph import Graph

WORKFLOW = Path(__file__).resolve().parents[1] / "workflows" / "example_workflow.yml"


def _asked_for(request: pytest.FixtureRequest) -> bool:
    """True when the run selects by marker expression naming dagger_live (-m dagger_live)."""
    expression = request.config.getoption("markexpr") or ""
    return "dagger_live" in expression and "not dagger_live" not in expression


@pytest.fixture
def live(request, tmp_path, monkeypatch):
    """A real engine, or a skip saying how to ask for one."""
    if not _asked_for(request):
        pytest.skip("needs a real Dagger engine; run it with: pytest -m dagger_live")
    found = connection.detect()
    if not found.available:
        pytest.skip(f"no Dagger engine here: {found.reason}")
    monkeypatch.chdir(tmp_path)
    return tmp_path


@pytest.mark.dagger_live
@pytest.mark.timeout(900)  # a cold engine pulls its image and python:3.12-slim
def test_example_workflow_on_a_real_engine(live):
    tmp_path = live
    graph = Graph.from_yaml(WORKFLOW)
    run = graph.run(executor="dagger", cache_directory=tmp_path / "cache")
    assert run.ok, run.status()[["step", "state", "exit_code", "error"]]
    assert set(run.states().values()) == {"succeeded"}
    assert set(run.status()["executor"]) == {"dagger"}
    report = (run.outputs("report") / "report.md").read_text()
    assert report.startswith("# Report\ntotal:")
    local = graph.run(executor="local", cache=False, cache_directory=tmp_path / "local")
    assert (local.outputs("report") / "report.md").read_text() == report

    again = graph.run(executor="dagger", cache_directory=tmp_path / "cache")
    assert set(again.states().values()) == {"cached"}


# -- the engine behaviours the stub models (issue 14), checked on a real engine ---------




def _run(graph_steps, tmp_path, cache_dir="cache", **options):
    return Graph("live", graph_steps, base_dir=tmp_path).run(
        executor="dagger", cache_directory=tmp_path / cache_dir, **options)


def _unique() -> str:
    import uuid

    return uuid.uuid4().hex[:12]


@pytest.mark.dagger_live
@pytest.mark.timeout(600)
def test_live_a_timeout_stops_the_step_at_once(live):
    import time

    from dagnb.model.step import Step

    _run([Step("warm", run="true")], live, cache=False)
    started = time.monotonic()
    run = _run([Step("slow", run=f"sleep 30; echo {_unique()}", timeout=2, retries=0)], live,
               cache=False)
    assert run.states() == {"slow": "failed"}
    assert time.monotonic() - started < 5


@pytest.mark.dagger_live
@pytest.mark.timeout(600)
def test_live_host_files_are_read_fresh_and_excluded(live):
    from dagnb.model.step import Step

    (live / "data").mkdir()
    (live / "data" / ".git").mkdir()
    (live / "data" / "a.txt").write_text("one\n")
    step = Step("read", run="cat /data/a.txt; ls -A /data", mounts={"data": "/data"})
    first = _run([step], live, cache=False)
    (live / "data" / "a.txt").write_text("two\n")
    second = _run([step], live, cache=False)
    assert first.logs("read")["line"].tolist() == ["one", "a.txt"]
    assert second.logs("read")["line"].tolist() == ["two", "a.txt"]


@pytest.mark.dagger_live
@pytest.mark.timeout(600)
def test_live_the_engine_cache_serves_a_rerun_and_failures_run_again(live):
    from dagnb.model.step import Step

    stamp = Step("stamp", run=f'echo {_unique()}; date +%s%N > "$DAGNB_OUT/t"')
    one, two = _run([stamp], live, "one"), _run([stamp], live, "two")
    assert (one.outputs("stamp") / "t").read_text() == (two.outputs("stamp") / "t").read_text()

    async def no_wait(seconds: float) -> None:
        return None

    mark = f"mark-{_unique()}"  # a cache volume survives the failed attempt
    flaky = Step("flaky", run='test -e /m/x || { touch /m/x; exit 3; }; echo second',
                 cache_volumes={mark: "/m"}, retries=1)
    run = _run([flaky], live, cache=False, sleep=no_wait)
    assert run.status().iloc[0][["state", "attempts"]].tolist() == ["succeeded", 2]


@pytest.mark.dagger_live
@pytest.mark.timeout(600)
def test_live_a_non_root_user_writes_outputs_and_cache_volumes(live):
    from dagnb.model.step import Step

    step = Step("nobody", run='id -u; echo hi > "$DAGNB_OUT/o"; touch /c/x',
                user="65534:65534", cache_volumes={f"c-{_unique()}": "/c"})
    run = _run([step], live, cache=False)
    assert run.ok, run.status()
    assert run.logs("nobody")["line"].tolist() == ["65534"]


@pytest.mark.dagger_live
@pytest.mark.timeout(600)
@pytest.mark.parametrize("image", ["python:3.12-slim", "alpine:3.20"])  # bash, and none
def test_live_a_failing_middle_command_fails_the_step(live, image):
    from dagnb.model.step import Step

    step = Step("multi", run="echo one\nfalse\necho three", image=image)
    run = _run([step], live, cache=False)
    assert run.states() == {"multi": "failed"}
    assert run.logs("multi")["line"].tolist() == ["one"]


@pytest.mark.dagger_live
@pytest.mark.timeout(600)
def test_live_identical_services_under_two_names_are_two(live):
    from dagnb.executors.dagger import services

    args = ["python", "-m", "http.server", "8000"]
    try:
        services.start("web1", "python:3.12-slim", ports=[8000], args=args)
        services.start("web2", "python:3.12-slim", ports=[8000], args=args)
        services.stop("web1")
        import urllib.request

        endpoint = services.running().set_index("name").loc["web2", "endpoint"]
        assert urllib.request.urlopen(f"http://{endpoint}/", timeout=10).status == 200
    finally:
        services._forget_all()


# -- which image ran, pin_images, engine.log (issue 14; tests/test_dagger_images.py and
# -- tests/test_dagger_engine_log.py run the same cases on the stub) ---------------------


@pytest.mark.dagger_live
@pytest.mark.timeout(600)
def test_live_the_digest_that_ran_is_recorded_and_shown(live):
    import re

    from dagnb.cache import store_for
    from dagnb.model.step import Step

    run = _run([Step("which", run="cat /etc/alpine-release", image="alpine:3.20")], live)
    assert run.ok, run.status()
    assert re.fullmatch(r"alpine:3\.20@sha256:[0-9a-f]{12}…", run.status().loc[0, "image"])
    entry = store_for(live / "cache").newest("which")
    assert entry.meta["provenance"]["image_ref"].startswith(
        "docker.io/library/alpine:3.20@sha256:")


@pytest.mark.dagger_live
@pytest.mark.timeout(900)
def test_live_pin_images_keys_by_digest_and_a_refresh_sees_a_moved_tag(live):
    import dagnb
    from dagnb.cache.images import ImagePins, digest_of
    from dagnb.executors.dagger.executor import DaggerExecutor
    from dagnb.executors.dagger.images import refresh
    from dagnb.executors.loop import run_sync
    from dagnb.model.step import Step

    dagnb.configure(pin_images=True)
    try:
        # alpine:3.20 "was pinned when it pointed at" 3.19's image: a tag that moved since
        older = run_sync(DaggerExecutor().image_ref("alpine:3.19"))
        ImagePins(live / "cache").add("alpine:3.20", None,
                                      f"docker.io/library/alpine:3.20@{digest_of(older)}")
        step = Step("release", run="cat /etc/alpine-release", image="alpine:3.20")
        first = _run([step], live)
        assert first.logs("release")["line"].tolist()[0].startswith("3.19")
        said = run_sync(refresh(live / "cache"))
        assert said[0].startswith("image alpine:3.20 moved: sha256:")
        graph = Graph("live", [step], base_dir=live)
        assert graph.explain("release", cache_directory=live / "cache") == said
        again = _run([step], live)
        assert again.states() == {"release": "succeeded"}
        assert again.logs("release")["line"].tolist()[0].startswith("3.20")
        assert _run([step], live).states() == {"release": "cached"}
    finally:
        dagnb.config.reload()


@pytest.mark.dagger_live
@pytest.mark.timeout(600)
def test_live_the_engines_progress_is_in_the_runs_engine_log(live, monkeypatch):
    import os

    from dagnb.model.step import Step

    secret = f"live-secret-{_unique()}"
    monkeypatch.setenv("LIVE_TOKEN", secret)
    step = Step("logged", run=f'echo "{_unique()}"; test -n "$LIVE_TOKEN"', secrets=["LIVE_TOKEN"])
    run = _run([step], live, cache=False)
    assert run.ok, run.status()
    text = (live / "cache" / ".runs" / run.id / "engine.log").read_text()
    assert secret not in text
    if not os.environ.get("DAGGER_SESSION_PORT"):  # a session the SDK started: its progress
        assert text.strip(), "the engine's session printed nothing"
