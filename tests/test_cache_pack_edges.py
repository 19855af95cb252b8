"""Packed entries at the edges: results no UTF-8 encoder takes, and damage that
`dagnb cache verify` must report."""

from __future__ import annotations

import os
import warnings
from pathlib import Path

import pytest

from dagnb import Graph, Memory
from dagnb.cache import DamagedEntryWarning, Store
from dagnb.cli import main
from dagnb.testing import isolated

# A str os.fsdecode makes of a non-UTF-8 file name: it holds a lone surrogate.
SURROGATE = os.fsdecode(b"caf\xe9.csv")


def test_a_result_with_a_lone_surrogate_is_packed_and_read_back(tmp_path: Path) -> None:
    store = Store(tmp_path / "c")
    store.save("s", "k1", out_dir=None, inline={"json": SURROGATE})
    with isolated():
        assert Store(tmp_path / "c").lookup("s", "k1").result() == SURROGATE


def test_a_memory_result_with_a_lone_surrogate_is_cached(tmp_path: Path) -> None:
    calls: list[int] = []

    def name(x: int) -> str:
        calls.append(x)
        return SURROGATE + str(x)

    cached = Memory(tmp_path / "c").cache(name)
    assert cached(1) == cached(1) == SURROGATE + "1"
    assert calls == [1]


@pytest.mark.usefixtures("workdir")
def test_a_step_returning_a_lone_surrogate_succeeds_then_is_cached() -> None:
    def graph() -> Graph:
        made = Graph("g")
        made.step(lambda: os.fsdecode(b"caf\xe9.csv"), name="n")
        return made

    assert graph().run(executor="local").states() == {"n": "succeeded"}
    again = graph().run(executor="local")
    assert again.states() == {"n": "cached"} and again.result("n") == SURROGATE


def _two_records_the_first_rotted(folder: Path) -> None:
    """A pack of two records, s/k1 and s/k2, with a byte of k1's changed (bit rot)."""
    with isolated():
        store = Store(folder)
        store.save("s", "k1", out_dir=None, inline={"json": "a" * 50})
        store.save("s", "k2", out_dir=None, inline={"json": "b" * 50})
        store.close()
    pack = next((folder / ".packs").glob("*.pack"))
    data = bytearray(pack.read_bytes())
    data[data.index(b"a" * 50) + 10] = ord("z")
    pack.write_bytes(bytes(data))


def test_verify_reports_a_damaged_pack_record(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_records_the_first_rotted(tmp_path / "c")
    with isolated():
        code = main(["cache", "verify", "--cache-dir", str(tmp_path / "c")])
    out = capsys.readouterr().out
    assert code == 1 and "1 damaged" in out and "damaged pack record" in out, out
    with isolated():
        store = Store(tmp_path / "c")
        assert store.lookup("s", "k1") is None and store.lookup("s", "k2").result() == "b" * 50


def _verify(location: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    """`dagnb cache verify` of ``location`` as a new process runs it: its code and output."""
    with isolated():
        code = main(["cache", "verify", "--cache-dir", str(location)])
    return code, capsys.readouterr().out


def _two_records_the_last_torn(folder: Path) -> None:
    """A pack of two records, s/k1 and s/k2, cut 5 bytes short: a power loss tore k2's."""
    with isolated():
        store = Store(folder)
        store.save("s", "k1", out_dir=None, inline={"json": 1})
        store.save("s", "k2", out_dir=None, inline={"json": 2})
        store.close()
    pack = next((folder / ".packs").glob("*.pack"))
    pack.write_bytes(pack.read_bytes()[:-5])


def test_verify_is_healthy_once_a_torn_last_record_was_rebuilt(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_records_the_last_torn(tmp_path / "c")
    with isolated(), pytest.warns(DamagedEntryWarning, match="torn"):
        store = Store(tmp_path / "c")
        assert store.lookup("s", "k2") is None  # the next run rebuilds it
        store.save("s", "k2", out_dir=None, inline={"json": 2})
        store.close()
    code, out = _verify(tmp_path / "c", capsys)
    assert code == 0 and "verified 2 cache entries" in out and "all intact" in out, out


def test_verify_sets_a_torn_last_record_aside_once(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_records_the_last_torn(tmp_path / "c")
    code, out = _verify(tmp_path / "c", capsys)
    assert code == 1 and "s/k2" in out and "torn" in out and "verified 2 cache" in out, out
    code, out = _verify(tmp_path / "c", capsys)
    assert code == 0 and "verified 1 cache entries" in out and "all intact" in out, out


def test_verify_sets_a_damaged_pack_record_aside_for_good(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _two_records_the_first_rotted(tmp_path / "c")
    code, out = _verify(tmp_path / "c", capsys)
    assert code == 1 and "1 damaged, set aside" in out, out
    code, out = _verify(tmp_path / "c", capsys)
    assert code == 0 and "verified 1 cache entries" in out and "all intact" in out, out
    with isolated(), warnings.catch_warnings():
        warnings.simplefilter("error")  # set aside: a plain miss, not damage met again
        store = Store(tmp_path / "c")
        assert store.lookup("s", "k1") is None and store.lookup("s", "k2").result() == "b" * 50
        store.save("s", "k1", out_dir=None, inline={"json": "a" * 50})
    with isolated():
        assert Store(tmp_path / "c").lookup("s", "k1").result() == "a" * 50
