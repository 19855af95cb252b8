"""The one long-lived event loop that every run in this process uses.

A Dagger connection belongs to the loop that opened it, and a notebook kernel already
runs a loop of its own. So dagnb runs all of its async work on one background thread's
loop: synchronous callers (magics, the CLI, scripts) submit to it and wait, async
callers (``await graph.arun()``) submit to it and await, and a run started in the
background keeps going while the kernel stays free. We chose this over nest-asyncio,
which patches the kernel's loop in place and is no longer maintained.

Plain (not async) Python steps are called inline on that loop: a thread hop per step
would cost more than a no-op step. While one runs, the loop cannot take a cancellation,
so :func:`call_interruptibly` marks the call as the one the loop thread is in, and
:func:`interrupt` (from ``TaskFuture.cancel()`` or ``Run.cancel()``, on the thread that
was interrupted) raises ``KeyboardInterrupt`` inside it with ``PyThreadState_SetAsyncExc``,
as Ctrl-C stops plain Python. The exception arrives between two bytecodes: a loop of
short sleeps stops at once, one long C call (``time.sleep(30)``, a blocking socket read)
only when it returns; a wait for a child process (``subprocess.run``) returns once the
children the call started are stopped (Linux: :mod:`dagnb.executors.children`). Only
the call a run's own steps are in is interrupted: each task submitted here knows its
:class:`TaskFuture` (a ContextVar its steps inherit).

Timeouts are timers on the loop, which cannot fire while an inline call holds it. So
the runner waits with :func:`wait_for`, which also records the deadline (a ContextVar
the step inherits); a watchdog thread interrupts an inline call that passes it. The
interrupted step then waits on the loop for the cancellation that the timeout, or
``cancel()``, sends it (:func:`until_cancelled`), so it ends as any step stopped by a
timeout or a cancel does: ``failed`` with ``StepTimeout``, or ``cancelled``. The turns it
gives the loop meanwhile start no step of a cancelled run (:func:`stop_pending`).
"""

from __future__ import annotations

import _signal  # signal's functions without their enum wrapping (see interrupts_marked)
import asyncio
import concurrent.futures
import contextlib
import contextvars
import ctypes
import os
import select
import signal
import socket
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from typing import Any, NoReturn, TypeVar

from dagnb.checks import warn_user
from dagnb.executors import children
from dagnb.executors.reaper import kill_everything, steps_run
from dagnb.executors.wakeup import EventfdLoop, new_loop

__all__ = [
    "STARTS_A_PROCESS",
    "Interrupted",
    "TaskFuture",
    "UnwaitedAttempt",
    "call_interruptibly",
    "cancelling",
    "current_future",
    "get_loop",
    "held_function",
    "hold_wakeup",
    "in_loop_thread",
    "interrupt",
    "interrupt_arrived",
    "interrupted_unwaited",
    "interrupts_marked",
    "release_wakeup",
    "run_async",
    "run_sync",
    "sigint_pending",
    "sigints_seen",
    "stop_pending",
    "submit",
    "until_cancelled",
    "unwaited_attempt",
    "unwatch_unwaited",
    "wait_for",
    "watch_unwaited",
    "when_abandoned",
]

T = TypeVar("T")
_lock = threading.Lock()
_loop: asyncio.AbstractEventLoop | None = None
_thread: threading.Thread | None = None
# the loop thread's ident and native id, kept as it starts: asked on every Python step
_ident: int | None = None
_native_id: int | None = None


def get_loop() -> asyncio.AbstractEventLoop:
    """The background loop, started on first use (a daemon thread)."""
    global _loop, _thread, _ident, _native_id
    with _lock:
        if _loop is None or _thread is None or not _thread.is_alive():
            _loop = new_loop()
            children.listing_stale()  # (a listing of the thread before, its turns another loop's)
            _thread = threading.Thread(target=_run_loop, args=(_loop,), name="dagnb-loop",
                                       daemon=True)
            _thread.start()
            _ident, _native_id = _thread.ident, _thread.native_id
        return _loop


def _run_loop(loop: asyncio.AbstractEventLoop) -> None:
    try:
        loop.run_forever()
    finally:  # (stopped: the thread made next may be given its ident)
        _forget_loop_thread(threading.get_ident())


def _forget_loop_thread(ident: int | None = None) -> None:
    """Forget the loop thread's ident (only if it is ``ident``), which a new thread may
    be given once it is gone (in a forked child, its first): that one is not dagnb's
    loop thread, and a run from it would be refused as made from the loop."""
    global _ident, _native_id
    if ident is None or _ident == ident:
        _ident = _native_id = None


def in_loop_thread() -> bool:
    """True when called from the background loop's own thread."""
    return _ident is not None and threading.get_ident() == _ident


class TaskFuture(concurrent.futures.Future):  # type: ignore[type-arg]
    """A thread-safe future for a task on the loop whose ``cancel()`` cancels the task
    and completes only once the task has finished cleaning up (killed its processes).
    ``asyncio.run_coroutine_threadsafe``'s future is marked cancelled at once instead."""

    def __init__(self, loop: asyncio.AbstractEventLoop, coro: Coroutine[Any, Any, Any]) -> None:
        super().__init__()
        self._loop = loop
        self._coro: Coroutine[Any, Any, Any] | None = coro  # until the task takes it
        self._task: asyncio.Task[Any] | None = None
        self._cancel_requested = False
        self.stopping = False  # cancel() was called (read by stop_pending)
        self._abandon_hooks: list[Callable[[bool], object]] = []  # see when_abandoned
        self.left_in_call: list[str] = []  # given up on, its steps still in their call
        self._wait_told = False  # a run has said it waits for them (run_sync)

    def start(self) -> TaskFuture:
        """Schedule the task on the loop (apart from ``__init__``: a caller that must
        cancel it on Ctrl-C holds the future before the task can start).

        On asyncio's own selector loop (not in debug mode, which refuses it) the task is
        made here and the loop woken, as ``call_soon_threadsafe`` does: its first step
        then runs in the turn the loop wakes for, not in the one after (a turn, 150
        instructions and a ``select``, saved on every run). The task's context is a
        copy of this thread's either way, as a handle scheduled from here has."""
        loop = self._loop
        if type(loop) in _SELECTOR_LOOPS and not loop.get_debug():
            self._start()
            loop._write_to_self()  # type: ignore[attr-defined]  # (the loop is asyncio's)
        else:
            loop.call_soon_threadsafe(self._start)
        return self

    def _start(self) -> None:
        coro, self._coro = self._coro, None
        assert coro is not None
        context = contextvars.copy_context()
        context.run(_belong_to, self)  # the task and the steps it starts know their future
        self._task = context.run(self._loop.create_task, self._reporting(coro))
        if self._cancel_requested:
            self._cancel_task()

    async def _reporting(self, coro: Coroutine[Any, Any, Any]) -> Any:
        """Await ``coro`` and hand its result over at once: the waiting caller wakes
        in this turn of the loop, not the next, when the task's done callbacks run.
        What it raises is handed over by the task's end (:meth:`_finish`), the task's
        state final then: a done callback on every task cost a run a loop turn."""
        try:
            result = await coro
        except BaseException:
            self._reported_by_end()
            raise
        self.set_result(result)
        self._let_go()
        return result

    def _reported_by_end(self) -> None:
        """Have the task's end hand over what it ended with (its cancellation too, one
        that reaches it before it starts, when its coroutine runs no line)."""
        assert self._task is not None
        self._task.add_done_callback(self._finish)

    def _finish(self, task: asyncio.Task[Any]) -> None:
        if self.done():  # the result, handed over by _reporting
            return
        if task.cancelled():
            super().cancel()
            self.set_running_or_notify_cancel()
        elif task.exception() is not None:
            self.set_exception(task.exception())
        else:
            self.set_result(task.result())
        self._let_go()

    def _let_go(self) -> None:
        """Done (its callbacks called): drop the task, the abandon hooks and the done
        callbacks. The task's context holds this future, and the hooks and callbacks
        hold the run that follows it: kept, they made a cycle per run, which only the
        collector's full passes free (rare in a kernel: see ``_heap_frozen``)."""
        self._task = None
        self._abandon_hooks = []
        self._done_callbacks = []

    def cancel(self) -> bool:
        if self.done():
            return False
        self.stopping = True  # set before the interrupt: see stop_pending
        self._loop.call_soon_threadsafe(self._cancel_task)
        interrupt(self)  # a Python step blocking the loop would hold the cancellation up
        return True

    def mark_stopping(self) -> None:
        """Mark the task stopping now, from a signal handler or a step's thread, before
        :meth:`cancel` follows (see :class:`interrupts_marked`)."""
        self.stopping = True

    def abandon(self) -> None:
        """The thread waiting for the task gives up on it, not done (:func:`run_sync`):
        call the hooks :func:`when_abandoned` set, each with whether a step call of the
        task still holds the loop thread. A hook that fails is one warning.
        :attr:`left_in_call` then names the steps still in that call."""
        func = held_function()
        held = holding_the_loop() is self
        named: list[str] = []
        for hook in self._abandon_hooks:
            try:
                named += _step_names(hook(held))
            except Exception as exc:  # the caller is leaving on Ctrl-C: say so, go on
                warn_user(f"dagnb: a run given up on after Ctrl-C: {exc}")
        if held:
            self.left_in_call = named or [getattr(func, "__name__", repr(func))]

    def still_in_call(self) -> str:
        """What the caller given up on it is told: which step did not stop, and why."""
        steps = ", ".join(map(repr, self.left_in_call))
        noun = "step" if len(self.left_in_call) == 1 else "steps"
        return (f"Python {noun} {steps} did not stop: a long call outside Python (C code) "
                "cannot be interrupted; it holds dagnb's loop until its call returns, and "
                "the next run waits for it")

    def tell_waiting(self) -> None:
        """Say once, on stderr, that a run waits for this abandoned task's call."""
        if self._wait_told:
            return
        self._wait_told = True
        noun = "step" if len(self.left_in_call) == 1 else "steps"
        print(f"dagnb: waiting for {noun} {', '.join(map(repr, self.left_in_call))} of an "
              "interrupted run, still in its call", file=sys.stderr, flush=True)

    def _cancel_task(self) -> None:
        self._cancel_requested = True
        if self._task is not None:
            self._reported_by_end()
            self._task.cancel()
        elif self._coro is not None:  # never started (Ctrl-C came as it was started):
            self._coro.close()  #        done, cancelled (the loop runs handles in order)
            self._coro = None
            super().cancel()
            self.set_running_or_notify_cancel()
            self._let_go()


# the loops a task may be made on from another thread (see TaskFuture.start): asyncio's,
# whose call_soon appends to a deque, as call_soon_threadsafe does
_SELECTOR_LOOPS = frozenset({asyncio.SelectorEventLoop, EventfdLoop})

_owner: contextvars.ContextVar[TaskFuture | None] = contextvars.ContextVar(
    "dagnb_task_future", default=None
)


def _belong_to(future: TaskFuture) -> None:
    """In a task's context: its steps are ``future``'s, their processes too (a Ctrl-C
    on it kills those, not another run's: :func:`dagnb.executors.reaper.kill_everything`)."""
    _owner.set(future)
    steps_run.set(future)


def _step_names(named: object) -> list[str]:
    """The step names an abandon hook returned (a list of str), else none."""
    if isinstance(named, list) and all(isinstance(name, str) for name in named):
        return named
    return []


class _Held:
    """How long the loop thread has spent in inline Python calls (they hold it: no other
    step's process is read, started or timed meanwhile)."""

    total = 0.0


class _Wait:
    """A timeout under way (:func:`wait_for`). It counts the time of its own work, not
    the time other steps' inline Python calls held the loop thread: a shell step's
    ``timeout: 2s`` beside a Python step that computes for 5 s is not passed."""

    __slots__ = ("held_before", "own", "start", "timeout")

    def __init__(self, timeout: float) -> None:
        self.start, self.timeout = time.monotonic(), timeout
        self.held_before = _Held.total
        self.own = 0.0  # the inline calls made under this wait (its own steps')

    def restart(self) -> None:
        """Count from now: what came before was not the step's time."""
        self.start, self.held_before = time.monotonic(), _Held.total

    def deadline(self) -> float:
        """When it passes: its timeout after it began, and the time other steps' inline
        calls held the loop meanwhile."""
        others = _Held.total - self.held_before - self.own
        return self.start + self.timeout + max(0.0, others)


_waits: contextvars.ContextVar[tuple[_Wait, ...]] = contextvars.ContextVar(
    "dagnb_waits", default=()
)
_UNOWNED = object()  # the owner of an inline call that only a deadline can interrupt


class Interrupted(asyncio.CancelledError):
    """An inline Python step was interrupted (a cancel, a timeout)."""


class _Interrupt(KeyboardInterrupt):
    """What an interrupt raises in the step (a KeyboardInterrupt, so that its ``except
    KeyboardInterrupt`` and ``finally`` run as with Ctrl-C), told apart from one the
    step's own code raises, which fails the step."""


class _InlineCall:
    """The Python step the loop thread is calling now, and whether it was interrupted.

    ``owner``, ``func`` (the step's function called), ``serial`` (which call this is) and
    ``children`` (the loop thread's as the call began) are written only by the loop
    thread and read by interrupters under ``lock``; the loop thread takes ``lock`` to
    leave, so no interrupt can be sent after it has left, and one sent just before is
    cleared or caught there.
    """

    __slots__ = ("children", "fired", "func", "lock", "owner", "serial", "stopped")

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.owner: object | None = None
        self.func: Callable[..., Any] | None = None
        self.fired = False
        self.serial = 0
        self.children: bytes | None = None
        self.stopped = 0  # the last call whose children were stopped

    def fire(self, owner: object | None = None, serial: int | None = None) -> bool:
        """Interrupt the call if it is ``owner``'s or the ``serial``-th; True if so."""
        thread = _thread
        with self.lock:
            if self.owner is None or thread is None:
                return False
            if (owner is not None and self.owner is not owner) or (
                serial is not None and self.serial != serial
            ):
                return False
            _send_async_exc(thread.ident, _Interrupt)  # type: ignore[arg-type]
            self.fired = True
            self._stop_children(thread)
            return True

    def _stop_children(self, thread: threading.Thread) -> None:
        """The interrupt lands in a wait for a child (``subprocess.run``) only once the
        child ends: the children the call started are stopped, in a thread of their own
        (SIGTERM, a grace, SIGKILL; see :mod:`dagnb.executors.children`)."""
        if self.children is None or self.stopped == self.serial:
            return
        self.stopped = self.serial
        # listed now, under the lock the call must take to leave: later, the list could
        # hold what the loop thread's next step started
        started = children.started_since(thread.native_id, self.children)  # type: ignore[arg-type]
        if started:
            threading.Thread(target=children.stop, name="dagnb-stop-children",
                             args=(started,), daemon=True).start()

    def leave(self) -> bool:
        """Stop being interruptible; True if an interrupt was sent meanwhile."""
        fired = False
        while True:
            try:
                with self.lock:
                    self.owner = self.func = None
                    fired, self.fired = fired or self.fired, False
                    if fired:  # sent but perhaps not raised yet: take it back
                        _send_async_exc(threading.get_ident(), None)
                return fired
            except _Interrupt:  # it arrived right here (only ours arrive from outside)
                fired = True
                if self.lock._is_owned():  # type: ignore[attr-defined]
                    self.lock.release()


_inline = _InlineCall()


def _set_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    """Raise ``exc`` in that thread at its next bytecode (None takes a pending one back)."""
    value = None if exc is None else ctypes.py_object(exc)
    ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(thread_id), value)


def _send_async_exc(thread_id: int, exc: type[BaseException] | None) -> None:
    """:func:`_set_async_exc`, once no thread is being born. Before 3.12, CPython gives
    a new thread's state the ident of the thread starting it until the new thread runs,
    and ``PyThreadState_SetAsyncExc`` takes the newest state with the ident: an interrupt
    sent as a step started a thread (a pool, dagnb's log flusher) killed the new thread
    at birth, and the step ran on, never stopped (seen on CI's loaded machine). A thread
    enters threading's limbo (under its lock, held here) before its state is made, and
    has its own ident once it runs: sent when every thread in limbo has one. Waited for
    at most a second, then sent all the same."""
    if sys.version_info >= (3, 12):  # (a state has no ident until its thread runs)
        _set_async_exc(thread_id, exc)
        return
    deadline = time.monotonic() + 1.0
    while True:
        with threading._active_limbo_lock:  # type: ignore[attr-defined]
            born = all(thread.ident is not None for thread in threading._limbo)  # type: ignore[attr-defined]
            if born or time.monotonic() > deadline:
                _set_async_exc(thread_id, exc)
                return
        time.sleep(0.0005)


def call_interruptibly(func: Callable[..., T], kwargs: Mapping[str, Any]) -> T:
    """``func(**kwargs)`` on the loop thread, stoppable by :func:`interrupt` and by the
    deadline of the :func:`wait_for` it runs under.

    An interrupt raises ``KeyboardInterrupt`` in ``func`` (so its ``finally`` blocks
    and ``except KeyboardInterrupt`` run, as with Ctrl-C); it leaves here as
    :class:`Interrupted`, whatever ``func`` did with it: await :func:`until_cancelled`.
    """
    owner, waits = _owner.get(), _waits.get()  # (in_loop_thread inline: every step)
    if (owner is None and not waits) or _ident is None or threading.get_ident() != _ident:
        return func(**kwargs)
    began, fired = time.monotonic(), False
    try:
        try:
            _inline.serial += 1  # (then owner: an interrupt of this call sees its children)
            loop = _loop  # (the callback running now: its turn, its task)
            if type(loop) is EventfdLoop and (task := asyncio.current_task(loop)) is not None:
                listing = children.snapshot(_native_id, loop.turns, task)  # type: ignore[arg-type]
                # (not kept in this frame: an interrupt's traceback holds the frame, the
                # task its cancel, whose context is the interrupt; a cycle, which held
                # the run till a full collection)
                task = None
            else:  # (a loop that counts no turns)
                listing = children.snapshot(_native_id)  # type: ignore[arg-type]
            _inline.children = listing
            _inline.func = func
            _inline.owner = _UNOWNED if owner is None else owner
            if waits:  # (the earliest of nested timeouts)
                _watchdog.arm(_inline.serial, min(wait.deadline() for wait in waits))
            result = func(**kwargs)
        finally:
            fired = _inline.leave()
            held = time.monotonic() - began  # (_count_held inline: on every step)
            if held >= children.SPAWN_FLOOR:  # (it may have started a process)
                children.listing_stale()
            _Held.total += held
            for wait in waits:
                wait.own += held
    except BaseException as exc:  # (after an interrupt, also what it caused: the error
        if not (fired or isinstance(exc, _Interrupt)):  # of a child it stopped)
            raise  # the step's own: it fails the step
        _inline.leave()  # ours, landed before leave() could catch it: leave again
        fired = True  #    (idempotent), or the next inline call would see it fired
    if fired:
        raise Interrupted("interrupted")
    return result


def current_future() -> TaskFuture | None:
    """The TaskFuture the calling task runs under (``run_sync``, ``run_async``, ``submit``
    set it as they start it), or None outside one."""
    return _owner.get()


def holding_the_loop() -> object | None:
    """The owner (a run's future, see :func:`submit`) of the step call holding the loop
    thread now, or None: every run's steps wait until that call returns."""
    return _inline.owner


def held_function() -> Callable[..., Any] | None:
    """The function of the step call holding the loop thread now (whose owner is
    :func:`holding_the_loop`), or None: which of a run's running steps is in it."""
    return _inline.func


def when_abandoned(hook: Callable[[bool], object]) -> None:
    """From a task: should the thread waiting for it (:func:`run_sync`) give up before it
    ends (Ctrl-C's grace ran out, most often as a Python step holds the loop thread in one
    long C call), call ``hook(held)`` on that thread, ``held`` telling whether a step call
    of the task still holds the loop thread. The process may exit right after, the loop
    thread never running again: the hook records what only the task would have. It may
    return the names of the task's steps still in the held call, for the message the
    waiting caller's KeyboardInterrupt carries (else the held function's name is)."""
    owner = _owner.get()
    if owner is not None:
        owner._abandon_hooks.append(hook)


def cancelling() -> bool:
    """Whether the run the calling task belongs to was cancelled (``TaskFuture.cancel``)
    or an interrupt was marked on it (:class:`interrupts_marked`), the cancellation
    perhaps not here yet."""
    owner = _owner.get()
    return owner is not None and owner.stopping


def stop_pending() -> bool:
    """Whether the run the calling task belongs to was cancelled (:func:`cancelling`)
    or a timeout it runs under (:func:`wait_for`) has passed, though the cancellation
    may not have reached its tasks yet: the step it interrupted gives the loop turns
    first (:func:`until_cancelled`), in which no step may start."""
    owner, waits = _owner.get(), _waits.get()  # (cancelling inline: asked on every step)
    if owner is not None and owner.stopping:
        return True
    if not waits:
        return False
    now = time.monotonic()
    return any(wait.deadline() <= now for wait in waits)


def interrupt(owner: Any) -> bool:
    """Interrupt the Python step the loop thread is calling if it belongs to ``owner``
    (the TaskFuture of a run); True if one was."""
    return owner is not None and _inline.fire(owner=owner)


async def until_cancelled(grace: float = 1.0) -> None:
    """After an :class:`Interrupted`: give the loop the turns in which the cancel or the
    passed timeout that caused it reaches this task (as ``CancelledError``); returns if
    none has after ``grace`` seconds."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + grace
    while loop.time() < give_up:
        await asyncio.sleep(0.005)


class holding:  # (lower case: used as the function it was, ``with holding():``)
    """Work the loop thread does for a step outside its inline call (its files hashed,
    scanned and stored): the other steps' timeouts leave it out as well. (A class: a
    generator-based context manager cost a first run five calls more per step.)"""

    __slots__ = ("_began",)

    def __enter__(self) -> None:
        self._began = time.monotonic()

    def __exit__(self, *exc_info: object) -> None:
        _count_held(time.monotonic() - self._began, _waits.get())


def _count_held(seconds: float, waits: tuple[_Wait, ...]) -> None:
    _Held.total += seconds
    for wait in waits:
        wait.own += seconds


async def wait_for(
    awaitable: Awaitable[T], timeout: float | None, starts: asyncio.Event | None = None
) -> T:
    """``asyncio.wait_for``, whose timeout also interrupts a Python step called inline
    under it (the earliest deadline of nested calls counts), and leaves out the time
    other steps' inline calls held the loop thread (:class:`_Wait`). Given ``starts``,
    the timeout counts from when that is set (the time before it, an attempt waiting in
    an executor's queue, is not the step's)."""
    if timeout is None:
        return await awaitable
    wait = _Wait(timeout)
    token = _waits.set((*_waits.get(), wait))
    try:
        task = asyncio.ensure_future(awaitable)  # (its context holds the wait)
    finally:
        _waits.reset(token)
    try:
        if starts is not None:
            await _until_set(starts, task)
            wait.restart()
        while not task.done():
            remaining = wait.deadline() - time.monotonic()
            if remaining <= 0:
                return await _past_deadline(task)
            await asyncio.wait((task,), timeout=remaining)
    except asyncio.CancelledError:  # (as asyncio.wait_for: the task ends first)
        await _cancelled_and_ended(task)
        raise
    return task.result()


async def _until_set(event: asyncio.Event, task: asyncio.Future[Any]) -> None:
    """Wait until ``event`` is set or ``task`` has ended."""
    if event.is_set():
        return
    setting = asyncio.ensure_future(event.wait())
    try:
        await asyncio.wait((task, setting), return_when=asyncio.FIRST_COMPLETED)
    finally:
        setting.cancel()


async def _past_deadline(task: asyncio.Future[Any]) -> NoReturn:
    """The task stopped (it ends before the timeout is reported: its processes are
    gone), then TimeoutError whatever it did with the cancel: asyncio.wait_for (3.11)
    returns the result of a coroutine that swallowed it, which ran past its deadline
    all the same."""
    await _cancelled_and_ended(task)
    error = None if task.cancelled() else task.exception()
    raise asyncio.TimeoutError from error


async def _cancelled_and_ended(task: asyncio.Future[Any]) -> None:
    """Cancel the task and wait until it ends; what it raised meanwhile is taken (the
    caller is cancelled, or reads it): else asyncio logs it at exit, unmasked."""
    task.cancel()
    await asyncio.wait((task,))
    if not task.cancelled():
        task.exception()


class _Watchdog:
    """One thread that interrupts the inline call that passes its deadline; started on
    first use, and armed with each call that has a deadline (one at a time: the loop
    thread makes one inline call at a time)."""

    def __init__(self) -> None:
        self.wake = threading.Condition()
        self.serial: int | None = None
        self.deadline = 0.0
        self.thread: threading.Thread | None = None

    def arm(self, serial: int, deadline: float) -> None:
        with self.wake:
            self.serial, self.deadline = serial, deadline
            if self.thread is None:
                self.thread = threading.Thread(target=self._watch, name="dagnb-watchdog",
                                               daemon=True)
                self.thread.start()
            self.wake.notify()

    def _watch(self) -> None:
        with self.wake:
            while True:
                if self.serial is None:
                    self.wake.wait()
                    continue
                remaining = self.deadline - time.monotonic()
                if remaining > 0:
                    self.wake.wait(remaining)
                    continue
                serial, self.serial = self.serial, None
                _inline.fire(serial=serial)  # a no-op if that call has left already


_watchdog = _Watchdog()


def _renew_in_child() -> None:
    """A forked child has none of its parent's threads: not its loop thread, which a
    thread of the child may look like (its ident; or be, forked from a step running on
    it, when nothing runs the loop it ran there), nor its watchdog, which would never
    interrupt a call that passes its deadline there. Its runs start a loop of its own,
    not as part of the run or under the timeout of the step that forked it (whose
    context the forking thread carries on in), and take no lock held in the parent by
    a thread the child has not."""
    global _watchdog, _loop, _thread, _inline, _lock, _waited, _wakeup, _wakeup_empty, _holds
    global _held_from
    global _sigints, _taking, _marking, _system_holds, _watching
    _forget_loop_thread()
    if _wakeup is not None:  # the parent's, shared with it: its signals are not the child's
        with contextlib.suppress(ValueError):  # (ValueError: not its main thread)
            before = _signal.set_wakeup_fd(-1)
            if before != _wakeup[1].fileno():  # (someone else's: kept)
                _signal.set_wakeup_fd(before)
            elif _held_from != -1:  # (the one ours replaced)
                _signal.set_wakeup_fd(_held_from)
        for end in _wakeup:
            end.close()
    _waited = _wakeup = _wakeup_empty = None
    _holds, _held_from, _sigints, _taking = 0, -1, 0, threading.Lock()
    _unwaited.clear()  # (the parent's runs)
    if os.system is _system_marking:  # (its marks are of the parent's runs)
        os.system = _system_under
    _marking, _system_holds, _watching = None, 0, threading.Lock()
    _loop = _thread = None
    _watchdog, _inline, _lock = _Watchdog(), _InlineCall(), threading.Lock()
    _owner.set(None)
    steps_run.set(None)
    _waits.set(())


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_renew_in_child)


def submit(coro: Coroutine[Any, Any, T]) -> TaskFuture:
    """Schedule ``coro`` on the background loop; returns a thread-safe future."""
    return TaskFuture(get_loop(), coro).start()


class interrupts_marked:  # (lower case: used as a function, ``with interrupts_marked(m):``)
    """While the main thread waits for a run (``waited``): SIGINT first calls ``mark``
    (which marks the run cancelled), then the handler in place before (Python's raises
    KeyboardInterrupt, on which the waiting caller cancels the run).

    The stop button of a kernel (``os.killpg``) and a terminal's Ctrl-C send SIGINT to
    the whole process group: to the processes an in-process Python step started
    (``subprocess.run``) too, which die at once. The step could then return, and its
    cut-short result be stored as a success, before the waiting thread had cancelled
    the run; the scheduler looks as each attempt ends instead, before anything is stored
    or said to have succeeded. The mark alone comes late: the handler runs once the main
    thread holds the GIL, measured up to 20 ms after the signal in a kernel, while a
    step's child died and the step returned within 0.5 ms. So the scheduler also asks
    :func:`interrupt_arrived`: Python's C-level handler writes each signal's number to
    the wakeup fd (set here) as the signal arrives, with no GIL needed.

    ``os.system`` ignores SIGINT in the whole process while its command runs (C's
    ``system()``): the stop button kills the command and nothing else sees it. So
    ``os.system`` is wrapped meanwhile (:func:`_system_marking`): a command killed by
    SIGINT marks the run before ``os.system`` returns, and the SIGINT is sent again to
    the main thread.

    Only in the main thread (signal handlers run there only), and only over a Python
    handler: one ignored or left at the default stays so. Through ``_signal``: the
    ``signal`` module turns what its functions return into an enum where it can, which
    for a Python handler costs a ValueError, and took the pair of calls 20 µs a run (a
    1-step run costs about 150 µs); ``_signal``'s take 0.2 µs.
    """

    __slots__ = ("_before", "_mark", "_marking_before", "_previous", "_waited")

    def __init__(self, mark: Callable[[], object], waited: object) -> None:
        self._mark, self._waited = mark, waited
        self._previous: Callable[..., Any] | None = None
        self._before: tuple[object, int] = (None, 0)  # the waited run and its count
        self._marking_before: interrupts_marked | None = None

    def __enter__(self) -> None:
        global _waited, _waited_since, _marking
        if threading.current_thread() is not threading.main_thread():
            return
        previous = _signal.getsignal(signal.SIGINT)
        if not callable(previous):
            return
        self._previous = previous
        first = _holds == 0
        hold_wakeup()
        self._before = (_waited, _waited_since)
        if _waited is None:  # (a wait around this one: the signals since it began count)
            # (the first hold finds the socket empty: the last release took what came)
            _waited_since = _sigints if first else sigints_seen()
        _waited = self._waited
        _signal.signal(signal.SIGINT, self._interrupted)
        self._marking_before, _marking = _marking, self
        _hold_system()

    def __exit__(self, *exc_info: object) -> None:
        global _waited, _waited_since, _marking
        previous, self._previous = self._previous, None
        if previous is None:
            return
        _release_system()
        _marking, self._marking_before = self._marking_before, None
        _signal.signal(signal.SIGINT, previous)
        _waited, _waited_since = self._before
        release_wakeup()

    def _interrupted(self, signum: int, frame: Any) -> None:
        self._mark()
        if self._previous is not None:
            self._previous(signum, frame)
        raise KeyboardInterrupt  # (a handler that did not raise: the run is marked and
        #                           must be cancelled, or it would start no step again)

    def _command_interrupted(self) -> None:
        """An ``os.system`` command died of SIGINT while the run is waited for."""
        if self._previous is not None:
            self._mark()
            signal.pthread_kill(threading.main_thread().ident,  # type: ignore[arg-type]
                                signal.SIGINT)


_marking: interrupts_marked | None = None  # the innermost wait on (its os.system marks)
_system_holds = 0  # waits and runs nobody waits for that need os.system wrapped
_system_under: Callable[..., int] = os.system  # what the first hold wrapped
_watching = threading.Lock()  # (holds end on the loop thread, begin on the main one)


def _system_marking(command: Any) -> int:
    """``os.system`` while a run is waited for or a run nobody waits for goes: C's
    ``system()`` ignores SIGINT in the whole process while its command runs, so the
    stop button that killed the command reaches no handler and no wakeup fd. A command
    killed by SIGINT marks, before ``os.system`` returns, the waited run
    (:class:`interrupts_marked`) and the attempt of a run nobody waits for that ran it
    (:func:`unwaited_attempt`)."""
    status = _system_under(command)
    if os.name == "posix" and os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGINT:
        attempt = _attempt_of_unwaited.get()
        if attempt is not None:
            attempt.command_interrupted = True
        marking = _marking
        if marking is not None:
            marking._command_interrupted()
    return status


def _hold_system() -> None:
    """Have ``os.system`` be :func:`_system_marking` until as many :func:`_release_system`."""
    global _system_holds, _system_under
    with _watching:
        if _system_holds == 0 and os.system is not _system_marking:
            _system_under, os.system = os.system, _system_marking
        _system_holds += 1


def _release_system() -> None:
    """Give ``os.system`` back after the last hold (not if someone replaced it meanwhile)."""
    global _system_holds
    with _watching:
        if _system_holds == 0:  # (none held: released in a forked child)
            return
        _system_holds -= 1
        if _system_holds == 0 and os.system is _system_marking:
            os.system = _system_under


_waited: object = None  # the run the main thread waits for (interrupts_marked)
_waited_since = 0  # the SIGINTs seen as its wait began (sigints_seen)
_wakeup: tuple[socket.socket, socket.socket] | None = None  # (read end, write end)
_wakeup_empty: Callable[[], bool] | None = None  # whether its read end has nothing
_holds = 0  # hold_wakeup() calls not released yet
_held_from = -1  # the wakeup fd the first hold replaced, given the signals that come
_sigints = 0  # SIGINTs taken out of the wakeup socket so far
_taking = threading.Lock()  # (the loop thread and the main thread both take)


def _wakeup_socket() -> socket.socket:
    """The read end of the wakeup socket pair, made on first use (one per process)."""
    global _wakeup, _wakeup_empty
    if _wakeup is None:
        pair = socket.socketpair()
        for end in pair:
            end.setblocking(False)
        _wakeup = pair
        _wakeup_empty = _emptiness(pair[0])
    return _wakeup[0]


def _emptiness(seen: socket.socket) -> Callable[[], bool] | None:
    """What tells whether ``seen`` has nothing to read, in one call that raises
    nothing; None where there is no ``poll`` (Windows)."""
    if not hasattr(select, "poll"):
        return None
    looker = select.poll()
    looker.register(seen.fileno(), select.POLLIN)
    return lambda: not looker.poll(0)


def hold_wakeup() -> None:
    """Make the signal wakeup fd ours (main thread) until as many :func:`release_wakeup`:
    Python's C-level handler writes each signal's number there as it arrives, with no
    GIL needed, for :func:`sigints_seen` to count. A wait for a run holds it, and so
    does a run nobody waits for, the two perhaps at once and ending in any order."""
    global _holds, _held_from
    _wakeup_socket()
    assert _wakeup is not None
    if _holds == 0:
        _held_from = _signal.set_wakeup_fd(_wakeup[1].fileno(), warn_on_full_buffer=False)
    _holds += 1


def release_wakeup() -> None:
    """Give the wakeup fd back once the last hold ends (main thread), and its owner the
    signals that came meanwhile (asyncio runs its signal handlers from them)."""
    global _holds, _held_from
    if _holds == 0:  # (none held: released in a forked child)
        return
    _holds -= 1
    if _holds:
        return
    _signal.set_wakeup_fd(_held_from)
    _take()  # (handed on to _held_from)
    _held_from = -1


def sigints_seen() -> int:
    """How many SIGINTs have reached this process while the wakeup fd was ours."""
    _take()
    return _sigints


def _take() -> None:
    """Count the SIGINTs in the wakeup socket, and hand what came on to the fd it
    replaced (any thread)."""
    global _sigints
    if _wakeup is None:
        return
    with _taking:
        came = _drain(_wakeup[0])
        _sigints += came.count(signal.SIGINT)
        owner = _held_from
    if came and owner != -1:
        with contextlib.suppress(OSError):
            os.write(owner, came)


def _drain(seen: socket.socket) -> bytes:
    """What is in the wakeup socket, taken out (looked at first: a read of the empty
    socket raises, which cost each wait for a run 2 µs)."""
    if _wakeup_empty is not None and _wakeup_empty():
        return b""
    came = b""
    with contextlib.suppress(OSError):  # (BlockingIOError: nothing more)
        while chunk := seen.recv(256):
            came += chunk
    return came


STARTS_A_PROCESS = 0.0002  # s: an attempt shorter than this started no process to kill


def interrupt_arrived(run: object, began: float, own_group: bool = False) -> bool:
    """Whether SIGINT has reached the process while the main thread waits for ``run``
    (a Run, or the TaskFuture the calling task belongs to), though its Python handler,
    which marks the run, may not have run yet (see :class:`interrupts_marked`).

    Sent but not yet taken counts too: the main thread must be scheduled to take it
    (and write it to the wakeup fd), and a step whose child the same signal killed may
    have returned meanwhile. Only an attempt (begun at ``began``, ``time.monotonic()``)
    long enough to have started a process looks: the look (the socket read, 1 µs;
    the queue, 10 µs) cost a chain of no-op steps 2 µs (14%) a step. An attempt whose
    processes lead a group of their own (``own_group``: a command the local executor
    ran), which a SIGINT to this process's group cannot have cut short, is not looked
    for in the queue: reading it cost each shell step 26 µs."""
    waited = _waited
    if waited is None or (waited is not run and waited is not _owner.get()):
        return False
    if time.monotonic() - began < STARTS_A_PROCESS:
        return False
    return sigints_seen() > _waited_since or (not own_group and sigint_pending())


_unwaited: set[object] = set()  # runs nobody waits for whose attempts SIGINT cuts short


class UnwaitedAttempt:
    """An attempt of a run nobody waits for, as it began: the SIGINTs seen then, what
    the process's ended children had used and the thread's live children (whether it
    starts a process meanwhile), and whether an ``os.system`` command it ran has died of
    SIGINT since."""

    __slots__ = ("children", "command_interrupted", "seen", "used")

    def __init__(self, seen: int) -> None:
        self.seen, self.command_interrupted = seen, False
        self.used, self.children = _children_used(), _live_children()

    def started_a_process(self) -> bool:
        """Whether a process may have started since (what a SIGINT to the kernel's group
        could have killed): a child ended and was waited for (``subprocess.run``), or
        one of this thread's lives on. Any other child the kernel waited for counts too
        (another run's command): where it cannot tell, it says yes."""
        if self.used is None or self.children is None:
            return True
        now = _live_children()
        return (_children_used() != self.used or now is None
                or not set(now.split()) <= set(self.children.split()))


def _children_used() -> tuple[float, ...] | None:
    """What the process's children that ended and were waited for have used (CPU, page
    faults): it moves with each one, however short; None where it cannot be read."""
    try:
        import resource
    except ImportError:  # (not on Windows)
        return None
    used = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (used.ru_utime, used.ru_stime, used.ru_minflt, used.ru_nvcsw, used.ru_nivcsw)


def _live_children() -> bytes | None:
    """This thread's live children, as Linux lists them; None where it does not."""
    try:
        with open(f"/proc/self/task/{threading.get_native_id()}/children", "rb") as listing:
            return listing.read()
    except OSError:
        return None


_attempt_of_unwaited: contextvars.ContextVar[UnwaitedAttempt | None] = contextvars.ContextVar(
    "dagnb_unwaited_attempt", default=None)


def watch_unwaited(run: object) -> None:
    """Have the attempts of ``run``, which no thread waits for (a notebook's
    ``--background`` run), look for SIGINTs as they end (:func:`unwaited_attempt`),
    an ``os.system`` command killed by one too; the caller holds the wakeup fd
    meanwhile (:func:`hold_wakeup`)."""
    if run not in _unwaited:
        _unwaited.add(run)
        _hold_system()


def unwatch_unwaited(run: object) -> None:
    """``run`` has ended: its attempts are looked at no more (any thread); after the
    last, ``os.system`` is given back."""
    if run in _unwaited:
        _unwaited.discard(run)
        _release_system()


def unwaited_attempt(run: object) -> UnwaitedAttempt | None:
    """As an attempt of ``run`` begins, in its context (an ``os.system`` the step calls
    there marks it): what to look at as it ends (:func:`interrupted_unwaited`) if no
    thread waits for ``run`` (:func:`watch_unwaited`), else None."""
    if not _unwaited or run not in _unwaited:
        return None
    attempt = UnwaitedAttempt(sigints_seen())
    _attempt_of_unwaited.set(attempt)
    return attempt


def interrupted_unwaited(attempt: UnwaitedAttempt, began: float) -> bool:
    """Whether SIGINT reached the process during ``attempt`` of a run nobody waits for,
    which began at ``began`` (``time.monotonic()``), or killed an ``os.system`` command
    it ran: the stop button then killed what the step waited for, though nobody cancels
    the run. Sent but not yet taken counts, as in :func:`interrupt_arrived`. An attempt
    that started no process had none to lose: a stop of another cell meanwhile threw
    its finished result away, said to be cut short."""
    if attempt.command_interrupted:
        return True
    if time.monotonic() - began < STARTS_A_PROCESS:
        return False
    return (sigints_seen() > attempt.seen or sigint_pending()) and attempt.started_a_process()


def sigint_pending() -> bool:
    """Whether SIGINT was sent to the process and no thread has taken it yet (Linux's
    ``/proc``; False elsewhere). Read, not taken: a look that blocked SIGINT for a
    moment (``sigpending`` sees only what the thread blocks) would take a pending one
    into this thread as it unblocked it, and the main thread, not woken, would run
    Python's handler only at its next line: an idle kernel's next cell then raised
    KeyboardInterrupt."""
    mask = _proc_status_field(b"\nShdPnd:")  # the process's pending signals, in hex
    try:
        return mask is not None and bool(int(mask, 16) >> (signal.SIGINT - 1) & 1)
    except ValueError:
        return False


def _proc_status_field(name: bytes) -> bytes | None:
    """The value after ``name`` on its line of ``/proc/self/status`` (None where there is
    no such file or line), read with as few ``read`` calls as it takes: one, for its
    1.5 KB. (A Python file read line by line cost each look at the end of an attempt
    18.6 µs; this, 13.)"""
    try:
        descriptor = os.open("/proc/self/status", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None
    status = b""
    try:
        while chunk := os.read(descriptor, 8192):
            status += chunk
            at = status.find(name)
            end = status.find(b"\n", at + 1) if at >= 0 else -1
            if end >= 0:
                return status[at + len(name):end]
    except OSError:
        return None
    finally:
        os.close(descriptor)
    return None


def run_sync(coro: Coroutine[Any, Any, T], *, grace: float = 3.0) -> T:
    """Run ``coro`` on the background loop and wait for it.

    Ctrl-C (or a kernel interrupt) cancels the coroutine, waits up to ``grace``
    seconds for it to clean up (kill its processes), then re-raises KeyboardInterrupt;
    a second Ctrl-C meanwhile kills the task's step processes at once. A task still not
    done then is given up on (:func:`when_abandoned`), and the KeyboardInterrupt names
    its step still in its call, which holds the loop: a later call says it waits for it.
    """
    if in_loop_thread():
        coro.close()
        raise RuntimeError("run_sync() called from dagnb's own loop; use 'await' there instead")
    _tell_if_held_by_abandoned()
    future = TaskFuture(get_loop(), coro)
    try:  # (a Ctrl-C as the task is started, once the loop has it, is caught: the task
        # is cancelled and cleans up, rather than run on unwatched; one before, closed)
        with interrupts_marked(future.mark_stopping, future):
            # started once the marking is in place: the loop thread, woken, then finds
            # this thread waiting and the GIL free (a run 12 µs sooner)
            future.start()
            return _result(future)
    except KeyboardInterrupt as stop:
        future.cancel()
        _wait_for_cleanup(future, grace)
        if future.left_in_call and type(stop) is KeyboardInterrupt and not stop.args:
            raise KeyboardInterrupt(future.still_in_call()) from None  # (a subclass, the
        raise  #                                         CLI's SIGTERM, keeps its own)


def _result(future: TaskFuture, timeout: float | None = None) -> Any:
    """``future.result(timeout)``, a Ctrl-C that lands in it raised as itself. One that
    lands in ``threading.Condition.wait`` after it let go of the future's lock and before
    its ``try`` leaves the lock let go, and the ``with`` around the wait then raises
    ``RuntimeError: cannot release un-acquired lock`` in its place (CPython's race, met
    once in CI: ``dagnb run`` exited 1 with a traceback, not 130; the lock is free
    again, as the next wait needs it)."""
    try:
        return future.result(timeout)
    except RuntimeError as exc:
        raise_interrupt_behind(exc)
        raise


def raise_interrupt_behind(exc: RuntimeError) -> None:
    """Raise the KeyboardInterrupt a RuntimeError of that race stands for (the one it
    was raised in the handling of); return for any other: any wait on a
    ``threading.Condition`` (an Event's too) in the main thread can meet it."""
    context = exc.__context__
    if isinstance(context, KeyboardInterrupt):
        raise context from None


def _tell_if_held_by_abandoned() -> None:
    """A step call of a run given up on holds the loop: this run waits until it returns,
    which could be hours. Say so rather than hang silently."""
    owner = _inline.owner
    if isinstance(owner, TaskFuture) and owner.left_in_call:
        owner.tell_waiting()


def _wait_for_cleanup(future: TaskFuture, grace: float) -> None:
    """Give a cancelled task ``grace`` seconds to stop its steps (SIGTERM, then SIGKILL
    a moment later). A second Ctrl-C (or SIGTERM) meanwhile, or the grace running out,
    SIGKILLs the task's step processes at once (not another run's, a background one's
    or another thread's): the caller is leaving, perhaps the process too,
    and must not leave the SIGKILL undone, nor the run unrecorded (the task, held up,
    records it no more: it is given up on, :meth:`TaskFuture.abandon`)."""
    try:
        _result(future, grace)
        return
    except (KeyboardInterrupt, concurrent.futures.TimeoutError):
        pass
    except BaseException:  # the cancellation itself, or what cleanup raised: it is done
        return
    while True:
        try:
            kill_everything(future)
            break
        except KeyboardInterrupt:  # a third one: kill all the same
            continue
    with contextlib.suppress(BaseException):  # the cleanup records the steps' ends
        future.result(timeout=0.5)
    if not future.done():  # a step call holds the loop thread (a long C call), or the
        future.abandon()  # cleanup is slow: what it would record is recorded from here


async def run_async(coro: Coroutine[Any, Any, T]) -> T:
    """Await ``coro`` on the background loop from any loop (or directly when on it)."""
    if in_loop_thread():
        return await coro
    future = submit(coro)
    try:
        return await asyncio.wrap_future(future)
    except asyncio.CancelledError:
        future.cancel()
        raise
