"""A container's upload leaves dotenv files out (they hold secrets' values), and a store
in use writes its hits now and then, so another process's ``reduce_size`` keeps them."""

from __future__ import annotations

from pathlib import Path

from dagnb.cache import StepKey, Store
from dagnb.cache.journal import FLUSH_EVERY
from dagnb.cache.mounts import excluder, mount_excludes
from dagnb.executors.dagger.executor import DaggerExecutor
from dagnb.executors.dagger.translate import host_excludes
from dagnb.executors.loop import run_sync
from dagnb.model.step import Step

pytest_plugins = ["dagger_stub.fixtures"]


def write(folder: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        (folder / relative).parent.mkdir(parents=True, exist_ok=True)
        (folder / relative).write_text(text)


# ------------------------------------------------------------------ dotenv in uploads


def test_a_mounted_folder_is_uploaded_without_its_dotenv_files(stub, make_task, tmp_path):
    write(tmp_path / "proj", {".env": "TOKEN=x\n", ".env.local": "TOKEN=y\n",
                              "sub/.env": "TOKEN=z\n", "app.py": "", ".envrc.md": ""})
    step = Step("ls", run="cd /src && find . -type f | sort", mounts={"proj": "/src"})
    task = make_task(step, base_dir=tmp_path)
    run_sync(DaggerExecutor().execute(task))
    assert task.log.of("stdout") == ["./.envrc.md", "./app.py"]


def test_a_dotenv_file_named_as_the_mount_itself_is_uploaded(stub, make_task, tmp_path):
    write(tmp_path / "proj", {".env": "NAME=x\n"})
    step = Step("cat", run="cat /run/.env", mounts={"proj/.env": "/run/.env"})
    task = make_task(step, base_dir=tmp_path)
    run_sync(DaggerExecutor().execute(task))
    assert task.log.of("stdout") == ["NAME=x"]


def test_a_step_may_take_a_dotenv_file_back_with_an_exclude(tmp_path):
    left_out = excluder(host_excludes(Step("s", run="true", exclude=["!.env"]), tmp_path))
    assert not left_out(".env") and left_out("sub/.env") and left_out(".env.prod")


def test_the_key_still_counts_dotenv_files_so_keys_made_before_stay(tmp_path):
    """The key counts more than the step sees (a .env edit is a miss), never less."""
    counted = excluder(mount_excludes(Step("s", run="true"), tmp_path))
    assert not counted(".env") and not counted("sub/.env.local")
    assert counted(".git/")  # (the defaults still apply to both)


# --------------------------------------------------------------- hits written in time


def key(n: int) -> StepKey:
    digest = f"{n:032x}"
    return StepKey(digest, {"format": "f", "params": digest}, {"params": str(n)})


def save(store: Store, n: int) -> None:
    out = store.scratch_dir("f")
    (out / "file.txt").write_text(str(n))
    store.save("f", key(n), out_dir=out)


def test_another_stores_prune_keeps_what_a_live_store_hits_all_the_time(tmp_path):
    now = [1000.0]
    live = Store(tmp_path / "cache", clock=lambda: now[0])
    save(live, 1)  # hot
    now[0] += 1
    save(live, 2)  # cold
    for _ in range(25):  # a hit a second, never let go of
        now[0] += 1
        assert live.lookup("f", key(1)) is not None
    other = Store(tmp_path / "cache", clock=lambda: now[0])
    other.reduce_size(age_limit=FLUSH_EVERY + 5)
    assert other.lookup("f", key(1)) is not None
    assert other.lookup("f", key(2)) is None


def test_hits_within_the_interval_write_nothing(tmp_path):
    now = [1000.0]
    store = Store(tmp_path / "cache", clock=lambda: now[0])
    save(store, 1)
    for _ in range(1000):
        now[0] += FLUSH_EVERY / 400  # 2.5 intervals: two writes, not 1000
        store.lookup("f", key(1))
    assert len(store.backend.names(".access")) == 2
    assert store.pending_hits == 1
