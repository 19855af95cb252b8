"""Two mistakes a broad ``except`` hid, found by logging what such handlers swallow over
the whole suite: a session store's ``flush`` that refused the keyword its store's
``__del__`` passes, and the inline encoder's byte count, which ``len()`` could not take
of the out-of-band buffer protocol 5 writes a large bytes value through (so it was
refused as unpicklable, not measured)."""

from __future__ import annotations

import pytest

from dagnb.cache.store import SessionStore
from dagnb.model.results import decode_inline, encode_inline


def test_a_session_store_flushes_as_any_store_is_asked_to() -> None:
    store = SessionStore()
    store.flush(compact=False)  # what Store.__del__ calls on a store with hits counted
    store.flush()
    assert store._pending == {}  # (nothing counted, nothing written)


def test_a_value_pickled_through_a_buffer_is_measured_not_refused() -> None:
    np = pytest.importorskip("numpy")  # (pandas brings it)
    value = np.arange(20_000, dtype=np.int64)  # 160 KB, written as a PickleBuffer
    inline = encode_inline(value, 400_000)
    assert inline is not None and "pickle" in inline
    assert (decode_inline(inline) == value).all()
    assert encode_inline(value, 100_000) is None  # too big for that limit: still refused
