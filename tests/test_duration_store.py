"""A step's ``duration_s`` is its own time: the upload of its entry to a shared store
(``cache_directory`` a store URL) follows its end, and is timed apart (a ``stored``
event's ``store_s``). QA saw 9.1 s for a step of 3 s timeout whose 80 MB output went
through a slow line: it read as a step that broke its timeout. A folder store
(``file://``) stands for the store, its upload slowed by hand."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import dagnb
from dagnb.cache import Store
from dagnb.cache.remote import ObjectStore, RemoteBackend
from dagnb.testing import isolated

UPLOAD_S = 1.5  # what the slow line takes to upload an entry


@pytest.fixture
def slow_line(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Every upload takes UPLOAD_S more; the steps whose entries went up, in order."""
    real, uploaded = ObjectStore.upload, []

    def upload(self: ObjectStore, step: str, *args: object, **kwargs: object) -> object:
        time.sleep(UPLOAD_S)
        uploaded.append(step)
        return real(self, step, *args, **kwargs)  # type: ignore[arg-type]

    monkeypatch.setattr(ObjectStore, "upload", upload)
    return uploaded


def _graph() -> dagnb.Graph:
    return dagnb.Graph("timed", [
        dagnb.Step("make", run='echo made > "$DAGNB_OUT/v.txt"', timeout=1.0),
        dagnb.Step("use", run='cat "$DAGNB_IN/make/v.txt" > "$DAGNB_OUT/w.txt"',
                   needs=["make"]),
    ])


@pytest.mark.slow  # (over a second: CI's oldest-Python leg leaves it out)
def test_a_steps_duration_leaves_out_its_upload_to_the_store(
        tmp_path: Path, slow_line: list[str]) -> None:
    url = (tmp_path / "store").as_uri()
    with isolated(cache_local_directory=str(tmp_path / "tier")):
        run = _graph().run(executor="local", cache_directory=url)
    assert run.states() == {"make": "succeeded", "use": "succeeded"}
    status = run.status().set_index("step")
    assert (status["duration_s"] < UPLOAD_S).all(), status["duration_s"]  # its own time
    stored = {e.step: e.data for e in run.events.since(0) if e.kind == "stored"}
    assert set(stored) == {"make", "use"} and all(d["sent"] for d in stored.values())
    assert all(d["store_s"] >= UPLOAD_S for d in stored.values()), stored
    assert slow_line == ["make", "use"]
    kinds = [(e.kind, e.data.get("state")) for e in run.events.since(0)]
    assert kinds.index(("stored", None)) < kinds.index(("run", "finished"))  # sent in the run
    fresh = Store(url, backend=RemoteBackend(url, local=tmp_path / "other"))
    entry = fresh.lookup("use", run.entry_of("use") or "")
    assert entry is not None and (entry.out_dir / "w.txt").read_text() == "made\n"


def test_a_step_stored_in_a_folder_has_no_upload_to_time(tmp_path: Path) -> None:
    with isolated(cache_directory=str(tmp_path / "cache")):
        run = _graph().run(executor="local")
    assert run.states() == {"make": "succeeded", "use": "succeeded"}
    assert not [e for e in run.events.since(0) if e.kind == "stored"]
