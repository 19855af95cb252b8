"""A clear of a ``memory://`` store's local tier said that another process (or machine,
or a restarted kernel) downloads the store's copies again, and that the bucket's
lifecycle rules remove them: fsspec's memory store lives in this process alone."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

import dagnb
from dagnb.cache.clearing import kept_in_store


def test_memory_clear_says_a_memory_store_keeps_its_copies_in_this_process_only(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    memory = dagnb.Memory("memory://said-bucket/x")
    doubled = memory.cache(lambda x: x * 2)
    assert doubled(2) == 4
    with caplog.at_level(logging.WARNING, logger="dagnb.memory"):
        memory.clear()
    (said,) = [r.getMessage() for r in caplog.records if r.name == "dagnb.memory"]
    assert said.endswith("the store keeps its copies, in this process only (a memory:// "
                         "store ends with it)")
    assert "another process" not in said and "lifecycle" not in said


@pytest.mark.parametrize(("url", "said"), [
    ("memory://said-bucket/x", " (the local tier); the store memory://said-bucket/x keeps "
                               "its entries, in this process only"),
    ("s3://team/dagnb", " (the local tier); the store s3://team/dagnb keeps its entries, "
                        "which another machine downloads again"),
])
def test_a_clear_or_prune_line_says_where_the_store_keeps_its_entries(
        url: str, said: str) -> None:
    assert kept_in_store(url, ", which another machine downloads again") == said
