"""Values as frames: a list of buffers that travel to a dask worker and back without
being copied into one big bytes object.

A value that is ``bytes`` or ``bytearray`` is a frame itself. Any other value is pickled
(protocol 5) with its large buffers out of band: the data of a numpy array (of a
DataFrame's numeric columns) become frames of their own, views of the object's memory,
which dask sends as they are. The first frame says how the others make up the values.
(One pickle of everything, the step's result inside the worker's report and its payload
inside the task, put a 100 MB array returned by one dask step and taken by the next 7
to 8 times over into the client's memory; as frames it is there about once.)
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from typing import IO, Any

__all__ = ["Frame", "is_frame", "loaders", "nbytes", "pack", "read", "unpack", "write"]

Frame = bytes | bytearray | memoryview
_RAW = {"bytes": bytes, "bytearray": bytearray}  # values that are frames themselves


def is_frame(value: Any) -> bool:
    """Whether ``value`` travels as a frame of its own, unpickled."""
    return type(value) in (bytes, bytearray)


def nbytes(frames: list[Frame]) -> int:
    """The size of ``frames`` in bytes."""
    return sum(memoryview(frame).nbytes for frame in frames)


def pack(values: Iterable[Any], pickler: Callable[..., pickle.Pickler] = pickle.Pickler,
         ) -> list[Frame]:
    """``values`` as frames; ``pickler`` is called as ``pickle.Pickler`` is."""
    import io

    layout: list[tuple[str, tuple[bool, ...]]] = []
    frames: list[Frame] = [b""]
    for value in values:
        if is_frame(value):
            layout.append((type(value).__name__, ()))
            frames.append(value)
            continue
        buffers: list[pickle.PickleBuffer] = []
        stream = io.BytesIO()
        pickler(stream, protocol=5, buffer_callback=buffers.append).dump(value)
        views = [buffer.raw() for buffer in buffers]
        layout.append(("pickle", tuple(not view.readonly for view in views)))
        frames += [stream.getvalue(), *views]  # (the stream's own bytes: no copy)
    frames[0] = pickle.dumps(layout, protocol=5)
    return frames


def unpack(frames: list[Frame]) -> list[Any]:
    """The values :func:`pack` made ``frames`` of: arrays are views of their frames,
    writable or not as they were."""
    return [load() for load in loaders(frames)]


def loaders(frames: list[Frame]) -> list[Callable[[], Any]]:
    """A function per value of ``frames`` that makes it, to be called in any order: a
    value packed last may be needed to load those before it."""
    import functools

    found: list[Callable[[], Any]] = []
    at = 1
    for kind, writable in pickle.loads(frames[0]):
        if kind in _RAW:
            found.append(functools.partial(_raw, frames[at], _RAW[kind]))
            at += 1
            continue
        buffers = [_flagged(frame, flag)
                   for frame, flag in zip(frames[at + 1:], writable, strict=False)]
        found.append(functools.partial(pickle.loads, frames[at], buffers=buffers))
        at += 1 + len(writable)
    return found


def _raw(frame: Frame, kind: type) -> Any:
    return frame if type(frame) is kind else kind(frame)


def _flagged(frame: Frame, writable: bool) -> memoryview:
    """``frame`` as a buffer as writable as the one pickled (an array's flag, and so
    its pickle and the keys made from it, stay as they were)."""
    view = memoryview(frame)
    if writable and view.readonly:
        return memoryview(bytearray(view))
    return view if writable or view.readonly else view.toreadonly()


def write(handle: IO[bytes], frames: list[Frame]) -> None:
    """Write ``frames`` to a file as they are, after their sizes."""
    pickle.dump([nbytes([frame]) for frame in frames], handle)
    for frame in frames:
        handle.write(frame)


def read(handle: IO[bytes]) -> list[Frame]:
    """Frames :func:`write` wrote, each read once into memory of its own: ``bytes``
    where a value is bytes or a pickle, a ``bytearray`` where it must be writable."""
    sizes = pickle.load(handle)
    frames: list[Frame] = [_read_exactly(handle, sizes[0], bytes)]
    kinds = []
    for kind, writable in pickle.loads(frames[0]):
        kinds.append(_RAW.get(kind, bytes))
        kinds += [bytearray if flag else bytes for flag in writable]
    for size, kind in zip(sizes[1:], kinds, strict=True):
        frames.append(_read_exactly(handle, size, kind))
    return frames


def _read_exactly(handle: IO[bytes], size: int, kind: type) -> Frame:
    data: Frame
    if kind is bytes:
        data = handle.read(size)
        got = len(data)
    else:
        data = bytearray(size)
        view, got = memoryview(data), 0
        while got < size and (count := handle.readinto(view[got:])):
            got += count
    if got != size:
        raise EOFError(f"a frame of {size} bytes ended after {got}")
    return data
