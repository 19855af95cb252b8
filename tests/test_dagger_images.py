"""Which image ran: the digest in a step's record and status, and ``pin_images``.

Through the real dagger-io client against the stub engine, which answers ``imageRef``
only right after ``from`` (as the engine does), resolves a tag once per session and can
move a tag to a new digest (``stub.engine.move_tag``), as a push to a registry would.
"""

from __future__ import annotations

import io
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from dagger_stub.queries import calls, exec_calls_of
from IPython.core.error import UsageError

import dagnb
from dagnb import Step
from dagnb.cache import store_for
from dagnb.cache.images import ImagePins, image_label, moved
from dagnb.executors.dagger import connection
from dagnb.executors.dagger.executor import DaggerExecutor
from dagnb.executors.dagger.images import refresh
from dagnb.executors.loop import run_sync
from dagnb.views.progress import ProgressPrinter

pytest_plugins = ["dagger_stub.fixtures"]
pytestmark = pytest.mark.usefixtures("workdir", "own_session")

IMAGE = "alpine:3.20"
SHOWN = re.compile(r"alpine:3\.20@sha256:[0-9a-f]{12}…")


@pytest.fixture
def own_session(stub):
    """Each test in a session of its own: tags moved here are not resolved elsewhere
    (the client remembers what its session resolved, as the engine does)."""
    run_sync(connection.aclose())
    yield
    run_sync(connection.aclose())


def graph(name: str = "g") -> dagnb.Graph:
    return dagnb.Graph(name, [Step("hello", run="echo hello", image=IMAGE)])


def from_address(stub) -> str:
    """The image address the step's exec was built from."""
    return dict(exec_calls_of(stub.texts(), "hello"))["from"]["address"]


def entry_meta(run) -> dict:
    entry = store_for().newest("hello")
    assert entry is not None, run.status()
    return dict(entry.meta)


# -- the digest that ran -----------------------------------------------------------------


def test_the_image_facts_are_one_query_asked_of_the_image_itself(stub, make_task):
    """USER and imageRef come in one query per image and session, asked of ``from()``'s
    container: the engine has no imageRef for a container changed since."""
    executor = DaggerExecutor()
    outcome = run_sync(executor.execute(make_task(Step("a", run="true", image=IMAGE))))
    facts = [calls(t) for t in stub.texts("imageRef")]
    assert len(facts) == 1
    assert [name for name, _ in facts[0]] == ["container", "from", "user", "imageRef"]
    assert outcome.image_ref == stub.engine.resolve(IMAGE, None)[1]
    before = len(stub.queries)
    run_sync(executor.execute(make_task(Step("b", run="true", image=IMAGE))))
    assert stub.texts("imageRef")[1:] == [] and len(stub.queries) - before == 3


def test_the_stub_has_no_image_ref_after_the_image_changed(stub):
    engine = stub.engine
    ctr = engine.make("Query", {}).r_container().r_from(IMAGE)
    assert ctr.r_imageRef().startswith("docker.io/library/alpine:3.20@sha256:")
    assert ctr.r_withEnvVariable("A", "1").r_imageRef() == ctr.r_imageRef()
    with pytest.raises(ValueError, match="only be retrieved immediately after"):
        ctr.r_withNewFile("/x", "y").r_imageRef()


def test_a_run_records_the_digest_that_ran_and_status_shows_it(stub):
    run = graph().run(executor="dagger")
    assert run.ok, run.status()
    ref = entry_meta(run)["provenance"]["image_ref"]
    assert ref == f"docker.io/library/{IMAGE}@{stub.engine.resolve(IMAGE, None)[0]}"
    assert SHOWN.fullmatch(run.status().loc[0, "image"])
    assert ref.split("@sha256:")[1][:12] in run.status().loc[0, "image"]
    again = graph().run(executor="dagger")  # cached: the record says which digest made it
    assert again.status().loc[0, "cached"]
    assert again.status().loc[0, "image"] == run.status().loc[0, "image"]
    table = ProgressPrinter(io.StringIO()).table(again)  # what `dagnb run` prints
    assert table.split("\n")[0].split()[-3:] == ["executor", "image", "error"]
    assert run.status().loc[0, "image"] in table


def test_without_pin_images_the_key_is_the_tag_and_status_shows_the_new_digest(stub):
    first = graph().run(executor="dagger")
    stub.engine.move_tag(IMAGE)
    run_sync(connection.aclose())  # a new kernel: its session resolves the tag afresh
    again = graph().run(executor="dagger")
    assert again.status().loc[0, "cached"]  # the tag did not change: neither did the key
    rerun = graph().run(executor="dagger", refresh=True)
    assert rerun.status().loc[0, "image"] != first.status().loc[0, "image"]
    assert entry_meta(rerun)["describe"]["image"] == IMAGE


def test_the_label_of_an_image(stub):
    ref = "docker.io/library/python:3.12-slim@sha256:" + "ab" * 32
    assert image_label("python:3.12-slim", ref) == "python:3.12-slim@sha256:abababababab…"
    assert image_label(None, ref) == "python:3.12-slim@sha256:abababababab…"
    assert image_label("python:3.12-slim") == "python:3.12-slim"
    assert image_label(None) is None
    assert moved("x:1@sha256:" + "a" * 64, "x:1@sha256:" + "c" * 64) == (
        "image x:1 moved: sha256:aaaaaaaaaaaa… → sha256:cccccccccccc…")
    assert moved("x:1", "x:2") is None


# -- pin_images --------------------------------------------------------------------------


@pytest.fixture
def pinning():
    dagnb.configure(pin_images=True)


@pytest.mark.usefixtures("pinning")
def test_pin_images_runs_and_keys_the_digest_and_a_moved_tag_reruns(stub, workdir):
    digest = stub.engine.resolve(IMAGE, None)[0]
    first = graph().run(executor="dagger")
    assert first.ok, first.status()
    assert from_address(stub) == f"{IMAGE}@{digest}"  # what ran is what the key says
    assert len(stub.texts("imageRef")) == 1  # the pin's answer serves the pinned step too
    table = json.loads((workdir / ".dagnb_cache" / "images.json").read_text())["images"]
    assert table[IMAGE]["digest"] == digest
    assert entry_meta(first)["describe"]["image"] == f"{IMAGE}@{digest}"

    stub.reset()
    assert graph().run(executor="dagger").status().loc[0, "cached"]
    assert stub.texts("imageRef") == []  # pinned: nothing to resolve, nothing ran

    new = stub.engine.move_tag(IMAGE)
    assert graph().explain("hello") == ["entry found: it is cached"]  # pinned till a refresh
    said = run_sync(refresh())
    assert said == [f"image {IMAGE} moved: {digest[:19]}… → {new[:19]}…"]
    assert graph().explain("hello") == [said[0]]
    rerun = graph().run(executor="dagger")
    assert rerun.status().loc[0, "state"] == "succeeded"
    assert not rerun.status().loc[0, "cached"]
    assert from_address(stub) == f"{IMAGE}@{new}"
    assert new[7:19] in rerun.status().loc[0, "image"]


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@pytest.mark.usefixtures("pinning")
def test_refresh_sees_a_moved_tag_though_the_kernels_session_does_not(stub):
    """The engine resolves a tag once per session: a refresh opens a session of its own."""
    graph().run(executor="dagger")
    new = stub.engine.move_tag(IMAGE)
    client = run_sync(connection.client())
    ref = run_sync(client.container().from_(IMAGE).image_ref())
    assert not ref.endswith(new)  # the kernel's session keeps what it resolved
    assert "moved" in run_sync(refresh())[0]
    assert ImagePins(store_for().location).table()[IMAGE]["digest"] == new


@pytest.mark.usefixtures("pinning")
def test_refresh_says_which_platform_of_a_tag_moved(stub):
    """Before, both lines read 'image alpine:3.20 moved: ...' with different digests."""
    arm = f"{IMAGE} [linux/arm64]"
    run_sync(refresh(images=[IMAGE, arm]))
    stub.engine.move_tag(IMAGE)
    stub.engine.move_tag(IMAGE, "linux/arm64")
    said = run_sync(refresh())
    assert sorted(line.partition(" moved: ")[0] for line in said) == [
        f"image {IMAGE}", f"image {arm}"]


@pytest.mark.usefixtures("pinning")
def test_refresh_of_a_tag_not_pinned_pins_it_and_refuses_a_digest(stub):
    assert run_sync(refresh(images=[IMAGE]))[0].startswith(f"image {IMAGE} pinned: sha256:")
    assert "unchanged" in run_sync(refresh())[0]
    with pytest.raises(dagnb.DagnbError, match="is not a tag to pin"):
        run_sync(refresh(images=[f"{IMAGE}@sha256:" + "0" * 64]))


@pytest.mark.usefixtures("pinning")
def test_dagger_images_magic_lists_and_refreshes(stub, shell):
    # (how to pin them said too, as the command says it)
    assert str(shell.run_line_magic("dagger", "images")).startswith("no pinned images in ")
    assert "with pin_images: true" in str(shell.run_line_magic("dagger", "images"))
    assert graph().run(executor="dagger").ok
    digest = stub.engine.resolve(IMAGE, None)[0]
    assert str(shell.run_line_magic("dagger", "images list")).startswith(f"{IMAGE}  {digest}")
    new = stub.engine.move_tag(IMAGE)
    said = str(shell.run_line_magic("dagger", f"images refresh {IMAGE}"))
    assert said == f"image {IMAGE} moved: {digest[:19]}… → {new[:19]}…"
    with pytest.raises(UsageError, match="use list or refresh"):
        shell.run_line_magic("dagger", "images pull")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_dagnb_images_refresh_on_the_command_line(stub, workdir):
    ImagePins(workdir / ".dagnb_cache").add(IMAGE, None, f"docker.io/library/{IMAGE}@sha256:"
                                            + "0" * 64)
    done = subprocess.run([sys.executable, "-m", "dagnb.cli", "images", "refresh", "--cache-dir",
                           str(workdir / ".dagnb_cache")], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith(f"image {IMAGE} moved: sha256:000000000000… → sha256:")
    listed = subprocess.run([sys.executable, "-m", "dagnb.cli", "images", "list", "--cache-dir",
                             str(workdir / ".dagnb_cache")], capture_output=True, text=True,
                            timeout=60)
    assert listed.stdout.startswith(f"{IMAGE}  sha256:") and "0" * 12 not in listed.stdout


def test_pin_images_is_a_setting(monkeypatch, workdir):
    assert dagnb.config.settings().pin_images is False
    monkeypatch.setenv("DAGNB_PIN_IMAGES", "true")
    dagnb.config.reload()
    assert dagnb.config.settings().pin_images is True
    (workdir / "dagnb.yaml").write_text("workflow_defaults:\n  pin_images: yes\n")
    monkeypatch.delenv("DAGNB_PIN_IMAGES")
    dagnb.config.reload()
    assert dagnb.config.settings().pin_images is True
    Path(workdir / "dagnb.yaml").unlink()


@pytest.mark.usefixtures("pinning")
def test_a_read_only_cache_pins_a_new_tag_for_the_run_only(stub, workdir):
    run = graph().run(executor="dagger", cache_mode="read-only")
    assert run.ok, run.status()
    assert from_address(stub) == f"{IMAGE}@{stub.engine.resolve(IMAGE, None)[0]}"
    assert not (workdir / ".dagnb_cache" / "images.json").exists()


PULL_DENIED = ("failed to resolve source metadata for docker.io/library/alpine:3.20: pull "
               "access denied, repository does not exist or may require authorization")


@pytest.mark.usefixtures("pinning")
def test_an_image_that_cannot_be_pinned_fails_its_step_as_its_exec_would(stub):
    stub.fail("error", match="imageRef", times=10, message=PULL_DENIED)
    row = graph().run(executor="dagger").status().loc[0]
    assert (row["state"], row["error"]) == ("failed",
                                            f"step 'hello': Dagger engine error: {PULL_DENIED}")


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
@pytest.mark.usefixtures("pinning")
def test_a_session_lost_before_pinning_is_reopened(stub):
    run_sync(connection.client())
    session = connection.session_number()
    stub.lose_session()  # the engine restarted: the old client's requests are dropped
    run = graph().run(executor="dagger")
    assert run.ok, run.status()
    assert connection.session_number() == session + 1


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_pinning_errors_are_sorted_and_masked_as_a_steps(stub, monkeypatch):
    monkeypatch.setenv("REG_TOKEN", "reg-S3cret-token")
    executor = DaggerExecutor(registry_auth={"address": "ghcr.io", "username": "me",
                                             "token_env": "REG_TOKEN"})
    stub.fail("error", match="imageRef", message="unauthorized: token reg-S3cret-token")
    with pytest.raises(dagnb.StepFailed, match=re.escape(
            "step 'hello': Dagger engine error: unauthorized: token ***")) as failed:
        run_sync(executor.image_ref(IMAGE, step="hello"))
    assert failed.value.step == "hello"
    stub.fail("error", match="imageRef", message="pull: dial tcp 1.2.3.4:443: i/o timeout")
    with pytest.raises(dagnb.TransientError, match="step 'hello': Dagger engine error: pull"):
        run_sync(executor.image_ref(IMAGE, step="hello"))
    stub.fail("drop", match="imageRef", times=2)  # the client's own retry sees both
    assert run_sync(executor.image_ref(IMAGE)).startswith("docker.io/library/alpine:3.20@")
    stub.fail("drop", match="imageRef", times=4)  # (another tag: the first is remembered)
    with pytest.raises(dagnb.TransientError, match=r"^image 'alpine:3\.21': lost the Dagger"):
        run_sync(executor.image_ref("alpine:3.21"))
