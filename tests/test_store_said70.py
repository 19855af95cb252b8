"""What the front ends say of a store URL's store (a ``file://`` folder store: nothing
here needs S3):

- ``%dagger cache clear`` says, as ``dagnb cache clear`` does, that the local tier alone
  was cleared and the store keeps its entries (it said nothing: a user took results for
  gone that other machines were still served), and what the kernel does then: it
  fetches none it cleared, and runs their steps again (its plan and explain, which read
  the cache apart, said "cached" of them);
- ``explain`` and ``plan`` on a fresh local tier compare with the store's entries of the
  step (they said ``no entry yet`` while the store held them), reading their metadata
  alone.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

import dagnb
from dagnb.cache import Store
from dagnb.cache.remote import RemoteBackend
from dagnb.notebook.session import get_session


def _store_url(folder: Path) -> str:
    return f"file://{folder / 'store'}"


def test_cache_clear_in_a_notebook_says_the_store_keeps_its_entries(
        shell, workdir: Path) -> None:
    url = _store_url(workdir)
    dagnb.configure(cache_directory=url, cache_local_directory=str(workdir / "tier"))
    shell.run_cell_magic("dagger", "a", "echo from-a\n")
    (manifest,) = (workdir / "store" / "entries" / "a").iterdir()
    created = json.loads(manifest.read_text())["created"]
    said = shell.run_line_magic("dagger", "cache clear a")
    assert said == (
        f"removed 1 cache entry of 'a' from {workdir / 'tier'} (the local tier); the store "
        f"{url} keeps its entries, which other machines and a restarted kernel download "
        "again; this kernel runs step 'a' again and replaces them there")
    # what it says holds: another tier (machine, kernel) is served the store's entry...
    key = manifest.stem
    other = Store(url, backend=RemoteBackend(url, local=workdir / "other"))
    assert other.lookup("a", key) is not None
    # ...and this kernel runs the step (its explain too says so), and replaces the store's
    assert shell.run_line_magic("dagger", "cache explain a") == (
        f"the store's entry a/{key[:12]} is not served (cleared, set aside or found "
        "incomplete here): it will run again")
    shell.run_line_magic("dagger", "run a")
    assert get_session().last_run.states() == {"a": "succeeded"}
    assert json.loads(manifest.read_text())["created"] > created


def test_cache_clear_in_a_notebook_of_a_cache_folder_names_no_store(shell) -> None:
    shell.run_cell_magic("dagger", "a", "echo from-a\n")
    assert shell.run_line_magic("dagger", "cache clear --all") == "removed 1 cache entry"


def _graph(command: str, ttl: str | None = None) -> dagnb.Graph:
    return dagnb.Graph("said", [dagnb.Step("make", run=command, ttl=ttl)])


def _publish(workdir: Path, ttl: str | None = None) -> str:
    """A teammate's run puts an entry of ``make`` (``echo one``) in the store; this
    machine's tier is new and empty. The store's URL."""
    url = _store_url(workdir)
    dagnb.configure(cache_local_directory=str(workdir / "teammate"))
    run = _graph('echo one > "$DAGNB_OUT/v.txt"', ttl).run(executor="local",
                                                          cache_directory=url)
    assert run.states() == {"make": "succeeded"}
    dagnb.configure(cache_local_directory=str(workdir / "fresh"))
    return url


@pytest.fixture
def published(workdir: Path) -> str:
    return _publish(workdir)


def test_explain_on_a_fresh_tier_compares_with_the_store_s_entry(
        published: str, workdir: Path) -> None:
    graph = _graph('echo two > "$DAGNB_OUT/v.txt"')
    said = 'command changed echo one > "$DAGNB_OUT/v.txt" → echo two > "$DAGNB_OUT/v.txt"'
    assert graph.explain("make", cache_directory=published, executor="local") == [said]
    plan = graph.plan(cache_directory=published, executor="local")
    assert plan["reason"].tolist() == [said]
    # metadata alone: no output of the store's entry came into the tier
    assert list((workdir / "fresh").rglob("v.txt")) == []


def test_explain_says_no_entry_yet_when_the_store_holds_none_of_the_step(
        published: str) -> None:
    graph = dagnb.Graph("said", [dagnb.Step("other", run="true")])
    assert graph.explain("other", cache_directory=published, executor="local") == [
        "no entry yet for step 'other'"]


def test_explain_of_the_store_s_own_entry_past_its_ttl_says_it_expired(
        workdir: Path) -> None:
    """The key itself is in the store, expired (a download refuses it): nothing
    changed, so no older entry's differences (nor "the key changed but no component
    did") are why."""
    url = _publish(workdir, ttl="1ms")
    graph = _graph('echo one > "$DAGNB_OUT/v.txt"', ttl="1ms")
    (said,) = graph.explain("make", cache_directory=url, executor="local")
    assert re.fullmatch(r"entry [0-9a-f]{12} expired: it will run again", said), said
