"""``call_and_shelve`` computes a key once however many callers miss it at once, as a
plain call does (it took no lock: each caller computed it)."""

from __future__ import annotations

import asyncio
import threading
import time

import dagnb


def test_call_and_shelve_from_threads_at_once_computes_once(tmp_path):
    computed = []

    def slow(x):
        computed.append(x)
        time.sleep(0.3)
        return x * 10

    shelved = dagnb.Memory(str(tmp_path / "cache")).cache(slow)
    results = []
    callers = [threading.Thread(target=lambda: results.append(
        shelved.call_and_shelve(4).get())) for _ in range(3)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(10)
    assert results == [40, 40, 40]
    assert computed == [4]


def test_async_call_and_shelve_gathered_computes_once(tmp_path):
    computed = []

    async def slow(x):
        computed.append(x)
        await asyncio.sleep(0.3)
        return x * 10

    shelved = dagnb.Memory(str(tmp_path / "cache")).cache(slow)

    async def three():
        handles = await asyncio.gather(*(shelved.call_and_shelve(5) for _ in range(3)))
        return [handle.get() for handle in handles]

    assert asyncio.run(three()) == [50, 50, 50]
    assert computed == [5]
