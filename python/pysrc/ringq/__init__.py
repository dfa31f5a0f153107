"""ringq: a persistent asyncio FIFO queue on one memory-mapped ring file.

A drop-in for aiodiskqueue's ``Queue``::

    import ringq as aiodiskqueue          # or: from ringq import Queue, QueueEmpty, QueueFull

    q = await Queue.create("jobs.q", maxsize=1000)
    await q.put({"id": 1})
    item = await q.get()
    await q.task_done()

Storage, framing and durable commits are done by the Rust core (``ringq._ringq``); waiting,
wake-ups and cancellation follow ``asyncio.Queue``'s own rules and live here.

Threads: one queue may be used from several threads, each running its own event loop (or
from one loop shared by many tasks). Every compound step (check the size, then push or pop)
runs under a lock, and a waiter is woken on the loop that awaits it
(``call_soon_threadsafe`` when that loop runs on another thread).
"""

import asyncio
import collections
import logging
import os
import pickle
import sys
import threading
import types
import weakref

from ._ringq import TAG_PICKLE, TAG_RAW, QueueException, RingCore

__all__ = [
    "Queue",
    "QueueException",
    "QueueEmpty",
    "QueueFull",
    "QueueLocked",
    "QueueShutDown",
    "DURABILITIES",
    "SERIALIZERS",
]

__version__ = "0.1.0"

logger = logging.getLogger("ringq")

DURABILITIES = ("buffered", "periodic", "sync")
SERIALIZERS = ("pickle", "bytes")

_get_running_loop = asyncio._get_running_loop  # the C accelerated, non-raising variant


class QueueEmpty(QueueException, asyncio.QueueEmpty):
    """Queue is empty."""


class QueueFull(QueueException, asyncio.QueueFull):
    """Queue is full."""


class QueueLocked(QueueException, BlockingIOError):
    """The data file is held by another live queue, in this process or another."""


# asyncio.QueueShutDown exists from Python 3.13.
_ASYNCIO_SHUTDOWN = getattr(asyncio, "QueueShutDown", None)


class QueueShutDown(QueueException, *((_ASYNCIO_SHUTDOWN,) if _ASYNCIO_SHUTDOWN else ())):
    """put/get on a queue that was shut down (see ``Queue.shutdown``)."""


_CREATE_TOKEN = object()


def _wake(fut, on_missed=None):
    """Resolves ``fut`` on its own loop. Returns False when it was already done.

    From the thread running the future's loop it is resolved at once; from any other
    thread, through ``call_soon_threadsafe``; if it turns out to be done (cancelled) by then,
    ``on_missed`` is called there to pass the wake-up on.
    """
    loop = fut.get_loop()
    if _get_running_loop() is loop:
        if fut.done():
            return False
        fut.set_result(None)
        return True
    if fut.done():
        return False
    try:
        loop.call_soon_threadsafe(_wake_foreign, fut, on_missed)
    except RuntimeError:  # that loop is closed: nobody waits there any more
        return False
    return True


def _wake_foreign(fut, on_missed):
    if not fut.done():
        fut.set_result(None)
    elif on_missed is not None:
        on_missed()


def _resolve(fut, err):
    if fut.done():
        return
    if err is None:
        fut.set_result(None)
    else:
        fut.set_exception(err)


class _Committer:
    """Group commit for ``durability="sync"``: flushes run on the loop's default executor,
    every caller waiting when a flush starts shares it, and each waiter is resolved on its
    own loop. It holds the core, never the queue, so ``del q`` still frees the queue (whose
    ``__del__`` closes the core, waiting for a flush in progress)."""

    def __init__(self, core):
        self._core = core
        self._lock = threading.Lock()
        self._waiters = []
        self._dirty = False
        self._running = False

    def request(self, wait):
        """Starts a commit if none runs; returns a future resolved once everything done
        before this call is durable (or None when ``wait`` is false)."""
        loop = asyncio.get_running_loop()
        fut = loop.create_future() if wait else None
        with self._lock:
            if fut is not None:
                self._waiters.append(fut)
            self._dirty = True
            start = not self._running
            self._running = True
        if start:
            try:
                loop.run_in_executor(None, self._run)
            except RuntimeError:  # the executor is shut down: commit here instead
                self._run()
        return fut

    def _run(self):
        while True:
            with self._lock:
                if not self._dirty:
                    self._running = False
                    return
                batch, self._waiters, self._dirty = self._waiters, [], False
            err = None
            try:
                self._core.sync()
            except BaseException as e:  # reported to every waiter of this commit
                err = e
                if not batch:
                    logger.error("ringq: commit of %s failed: %s", self._core.path, e)
            for fut in batch:
                try:
                    fut.get_loop().call_soon_threadsafe(_resolve, fut, err)
                except RuntimeError:
                    pass  # its loop is closed


class _Guard:
    """``async with q.get_guarded() as item``: the item is removed only when the block ends
    without an exception; on an exception (or a crash) it is delivered again, first in line."""

    __slots__ = ("_queue", "_seq")

    def __init__(self, queue):
        self._queue = queue
        self._seq = None

    async def __aenter__(self):
        q = self._queue
        seq, data = await q._wait_for_item(q._core.take)
        self._seq = seq
        try:
            return q._loads(data)
        except BaseException:
            # An item that does not decode would come back forever: remove it. Its task is
            # finished too, as a commit's is: the caller never had an item to task_done.
            q._core.commit(seq)
            self._seq = None
            q._after_removal()
            q._task_done(strict=False)
            raise

    async def __aexit__(self, exc_type, exc, tb):
        q = self._queue
        seq, self._seq = self._seq, None
        if seq is None:
            return False
        if exc_type is None:
            q._core.commit(seq)
            q._after_removal()
            q._task_done()
            if q._committer is not None:
                await q._committer.request(True)
        else:
            q._core.release(seq)
            if q._shutdown == "immediate":
                # Back in the file, but no get of this queue can take it any more: its task
                # is counted as finished, as the items queued at the shutdown were.
                q._task_done(strict=False)
            with q._lock:
                q._wakeup_next(q._getters)
        return False


class Queue:
    """A persistent asyncio FIFO queue in one ring file.

    Make one with ``await Queue.create(data_path, ...)``; ``Queue()`` raises TypeError.
    """

    def __init__(self, *args, **kwargs):
        if kwargs.pop("_token", None) is not _CREATE_TOKEN:
            raise TypeError("use 'await Queue.create(data_path, maxsize)' to make a Queue")

    if sys.version_info >= (3, 9):
        # ``Queue[Job]`` in annotations, as ``asyncio.Queue[Job]``.
        __class_getitem__ = classmethod(types.GenericAlias)

    @classmethod
    async def create(
        cls,
        data_path,
        maxsize=0,
        cls_storage_engine=None,
        *,
        durability="buffered",
        interval=1.0,
        serializer="pickle",
    ):
        """Opens the queue in the file at ``data_path``, creating it if needed.

        ``maxsize <= 0`` means unlimited. Items already in the file are kept, in order, and
        count as unfinished tasks. Raises ValueError for a name ending in ``.bak``, OSError
        when the file cannot be created (a missing directory is not created), QueueLocked
        when another live queue holds the file.

        Keyword-only: ``durability`` is ``"buffered"`` (survives the process being killed),
        ``"periodic"`` (plus a flush every ``interval`` seconds on a background thread) or
        ``"sync"`` (``put`` returns once its item is on disk); ``serializer`` is
        ``"pickle"`` (any picklable object) or ``"bytes"`` (raw bytes, shared with the
        ``ringq`` command line's ``push`` and ``pop``).
        """
        if cls_storage_engine is not None:
            raise TypeError("cls_storage_engine must be None: ringq has one storage engine")
        path = os.fspath(data_path)
        if isinstance(path, bytes):
            path = os.fsdecode(path)
        if path.endswith(".bak"):
            raise ValueError(f"{path!r}: names ending in '.bak' are reserved for backups")
        if isinstance(maxsize, bool) or not isinstance(maxsize, int):
            raise TypeError(f"maxsize must be an int, not {type(maxsize).__name__}")
        if durability not in DURABILITIES:
            raise ValueError(f"durability must be one of {DURABILITIES}, not {durability!r}")
        if serializer not in SERIALIZERS:
            raise ValueError(f"serializer must be one of {SERIALIZERS}, not {serializer!r}")
        if durability == "periodic" and not (isinstance(interval, (int, float)) and interval > 0):
            raise ValueError("interval must be a positive number of seconds")
        tag = TAG_PICKLE if serializer == "pickle" else TAG_RAW
        try:
            core = RingCore(path, tag)
        except BlockingIOError as e:
            raise QueueLocked(e.errno, str(e)) from None
        self = cls(_token=_CREATE_TOKEN)
        self._init(core, max(maxsize, 0), durability, interval, serializer)
        return self

    def _init(self, core, maxsize, durability, interval, serializer):
        self._core = core
        self._maxsize = maxsize
        self._durability = durability
        self._serializer = serializer
        if serializer == "pickle":
            self._dumps = _pickle_dumps
            self._loads = pickle.loads
        else:
            self._dumps = _to_bytes
            self._loads = _identity
        self._lock = threading.Lock()
        self._getters = collections.deque()
        self._putters = collections.deque()
        self._joiners = []
        self._shutdown = None  # None, or "drain" / "immediate" once shutdown() was called
        self._committer = _Committer(core) if durability == "sync" else None
        if durability == "periodic":
            core.start_flusher(float(interval))
        self._unfinished_tasks = len(core)
        report = core.recovery_report()
        if report["anything_happened"]:
            logger.warning(
                "%s: recovered with damage: kept %d item(s), dropped %d, backup %s; %s",
                core.path,
                report["records_kept"],
                report["records_dropped"],
                report["backup_path"],
                "; ".join(report["notes"]),
            )
        logger.debug(
            "opened %s: %d item(s), maxsize %d, durability %s, serializer %s",
            core.path,
            self._unfinished_tasks,
            maxsize,
            durability,
            serializer,
        )
        # Wakes the next getter from another thread's loop when a wake-up was missed.
        ref = weakref.ref(self)
        self._pass_getter = lambda: _pass_on(ref, "_getters")
        self._pass_putter = lambda: _pass_on(ref, "_putters")

    # ------------------------------------------------------------------ lifetime

    def close(self):
        """Closes the file (a final durable commit) and releases its lock at once.

        Later operations raise ValueError, and so do the gets and puts waiting (they are
        woken). ``del q`` does the same when the last reference goes. Idempotent."""
        core = self.__dict__.get("_core")
        if core is not None:
            core.close()
            logger.debug("closed %s", core.path)
            if self._getters or self._putters:
                with self._lock:
                    for waiters in (self._getters, self._putters):
                        while waiters:
                            _wake(waiters.popleft())

    def __del__(self):
        try:
            self.close()
        except Exception as e:  # never raise from __del__
            logger.warning("closing the queue failed: %s", e)

    def __repr__(self):
        return f"<{type(self).__name__} at {id(self):#x} {self._format()}>"

    def __str__(self):
        return f"<{type(self).__name__} {self._format()}>"

    def _format(self):
        """asyncio.Queue's format, with ``qsize=N`` where asyncio lists the items (they are
        on disk; showing them would unpickle them) and the file's path."""
        core = self.__dict__.get("_core")
        if core is None:
            return "(not created)"
        parts = [f"path={str(core.path)!r}", f"maxsize={self._maxsize!r}"]
        if core.closed:
            parts.append("closed")
        elif len(core):
            parts.append(f"qsize={len(core)}")
        if self._getters:
            parts.append(f"_getters[{len(self._getters)}]")
        if self._putters:
            parts.append(f"_putters[{len(self._putters)}]")
        if self._unfinished_tasks:
            parts.append(f"tasks={self._unfinished_tasks}")
        if self._shutdown:
            parts.append("shutdown")
        return " ".join(parts)

    # ------------------------------------------------------------------ sizes

    @property
    def maxsize(self):
        """Number of items allowed in the queue; 0 means unlimited."""
        return self._maxsize

    @property
    def path(self):
        """The data file's path."""
        return self._core.path

    def qsize(self):
        """Number of items in the queue."""
        return len(self._core)

    def empty(self):
        """True if the queue is empty."""
        return len(self._core) == 0

    def full(self):
        """True if there are ``maxsize`` items in the queue (never when maxsize is 0)."""
        return self._maxsize > 0 and len(self._core) >= self._maxsize

    # ------------------------------------------------------------------ waking

    def _wakeup_next(self, waiters):
        """Wakes the first waiter that is not cancelled (called under ``self._lock``)."""
        on_missed = self._pass_getter if waiters is self._getters else self._pass_putter
        while waiters:
            if _wake(waiters.popleft(), on_missed):
                break

    def _count(self):
        """``qsize()``, or 0 once closed (for the cancel paths, which must not raise)."""
        try:
            return len(self._core)
        except ValueError:
            return 0

    def _full_or_closed(self):
        try:
            return self.full()
        except ValueError:
            return True

    def _after_removal(self):
        with self._lock:
            self._wakeup_next(self._putters)

    # ------------------------------------------------------------------ put

    async def put(self, item):
        """Puts an item into the queue, waiting while it is full.

        Cancelled while waiting for room, it puts nothing. Under ``durability="sync"`` it
        returns once the item is on disk; cancelled during that wait, the item stays put.
        Raises QueueShutDown once the queue is shut down (also while waiting)."""
        if self._shutdown:
            raise QueueShutDown
        data = self._dumps(item)
        core = self._core
        while True:
            with self._lock:
                if self._shutdown:
                    raise QueueShutDown
                if not (self._maxsize > 0 and len(core) >= self._maxsize):
                    core.push(data)
                    self._unfinished_tasks += 1
                    if self._getters:
                        self._wakeup_next(self._getters)
                    break
                putter = asyncio.get_running_loop().create_future()
                self._putters.append(putter)
            try:
                await putter
            except BaseException:
                putter.cancel()
                with self._lock:
                    try:
                        self._putters.remove(putter)
                    except ValueError:
                        pass  # already taken off by a wake-up
                    if not self._full_or_closed() and not putter.cancelled():
                        # Woken, but cannot take the room: pass it on.
                        self._wakeup_next(self._putters)
                raise
        if self._committer is not None:
            await self._committer.request(True)

    async def put_nowait(self, item):
        """Puts an item into the queue; raises QueueFull if it is full, QueueShutDown once
        the queue is shut down."""
        if self._shutdown:
            raise QueueShutDown
        data = self._dumps(item)
        with self._lock:
            if self._shutdown:
                raise QueueShutDown
            if self._maxsize > 0 and len(self._core) >= self._maxsize:
                raise QueueFull
            self._core.push(data)
            self._unfinished_tasks += 1
            if self._getters:
                self._wakeup_next(self._getters)
        if self._committer is not None:
            await self._committer.request(True)

    # ------------------------------------------------------------------ get

    async def _wait_for_item(self, fetch):
        """Waits until ``fetch()`` (pop or take, under the lock) returns an item."""
        while True:
            with self._lock:
                got = self._fetch(fetch)
                if got is not None:
                    if self._putters:
                        self._wakeup_next(self._putters)
                    return got
                if self._shutdown:
                    raise QueueShutDown
                getter = asyncio.get_running_loop().create_future()
                self._getters.append(getter)
            try:
                await getter
            except BaseException:
                getter.cancel()
                with self._lock:
                    try:
                        self._getters.remove(getter)
                    except ValueError:
                        pass  # already taken off by a wake-up
                    if self._count() and not getter.cancelled():
                        # Woken, but cancelled before taking the item: pass it on.
                        self._wakeup_next(self._getters)
                raise

    async def get(self):
        """Removes and returns an item, waiting while the queue is empty.

        Cancelled while waiting, it takes nothing. Raises QueueShutDown once the queue is
        shut down and empty (at once after ``shutdown(immediate=True)``)."""
        with self._lock:  # the fast path: an item is there
            data = self._fetch(self._core.pop)
            if data is not None and self._putters:
                self._wakeup_next(self._putters)
        if data is None:
            data = await self._wait_for_item(self._core.pop)
        if self._committer is not None:
            self._committer.request(False)
        return self._loads(data)

    async def get_nowait(self):
        """Removes and returns an item; raises QueueEmpty if there is none (QueueShutDown
        once the queue is shut down)."""
        with self._lock:
            data = self._fetch(self._core.pop)
            if data is None:
                raise QueueShutDown if self._shutdown else QueueEmpty
            if self._putters:
                self._wakeup_next(self._putters)
        if self._committer is not None:
            self._committer.request(False)
        return self._loads(data)

    def _fetch(self, fetch):
        """``fetch()`` (pop or take), or None after an immediate shutdown (under the lock)."""
        if self._shutdown == "immediate":
            return None
        return fetch()

    def get_guarded(self):
        """``async with q.get_guarded() as item:`` gets an item for at-least-once work.

        The item is removed (and counted as a finished task) when the block ends without an
        exception; on an exception it is given back, first in line, and after a crash it is
        delivered again."""
        return _Guard(self)

    # ------------------------------------------------------------------ tasks

    def _task_done(self, strict=True):
        """Counts one task finished; ``strict=False`` (the queue's own bookkeeping) ignores
        a count already at 0 (the caller ran task_done too often) instead of raising."""
        with self._lock:
            if self._unfinished_tasks <= 0:
                if not strict:
                    return
                raise ValueError("task_done() called too many times")
            self._unfinished_tasks -= 1
            if self._unfinished_tasks == 0:
                joiners, self._joiners = self._joiners, []
                for fut in joiners:
                    _wake(fut)

    async def task_done(self):
        """Marks a gotten item as processed; raises ValueError when called more times than
        items were gotten."""
        self._task_done()

    async def join(self):
        """Waits until every item put (or found in the file) has been gotten and processed."""
        with self._lock:
            if self._unfinished_tasks == 0:
                return
            fut = asyncio.get_running_loop().create_future()
            self._joiners.append(fut)
        try:
            await fut
        except BaseException:
            with self._lock:
                try:
                    self._joiners.remove(fut)
                except ValueError:
                    pass
            raise

    # ------------------------------------------------------------------ shutdown

    def shutdown(self, immediate=False):
        """Shuts the queue down, as ``asyncio.Queue.shutdown`` (Python 3.13) does.

        Later ``put``/``put_nowait`` raise QueueShutDown, and so do the puts waiting for
        room. ``get``/``get_nowait`` go on returning the queued items, then raise QueueShutDown
        instead of waiting; the gets waiting are woken and raise it.

        ``immediate=True`` also makes every get raise QueueShutDown at once and counts each
        queued item as a finished task (which may release ``join``), but, unlike asyncio,
        leaves the items in the file: the next ``create`` on it delivers them. Idempotent;
        ``shutdown(immediate=True)`` after a plain ``shutdown()`` upgrades it."""
        with self._lock:
            if immediate and self._shutdown != "immediate":
                self._shutdown = "immediate"
                self._unfinished_tasks = max(0, self._unfinished_tasks - len(self._core))
                if self._unfinished_tasks == 0:
                    joiners, self._joiners = self._joiners, []
                    for fut in joiners:
                        _wake(fut)
            elif not self._shutdown:
                self._shutdown = "drain"
            # Every waiter wakes, sees the shutdown and raises (or, a getter, takes an item).
            for waiters in (self._getters, self._putters):
                while waiters:
                    _wake(waiters.popleft())

    # ------------------------------------------------------------------ durability

    async def sync(self):
        """Makes everything done so far durable (a flush on the default executor)."""
        await asyncio.get_running_loop().run_in_executor(None, self._core.sync)


def _pass_on(ref, name):
    q = ref()
    if q is not None:
        with q._lock:
            q._wakeup_next(getattr(q, name))


def _pickle_dumps(item):
    return pickle.dumps(item, protocol=pickle.HIGHEST_PROTOCOL)


def _to_bytes(item):
    if type(item) is bytes:
        return item
    if isinstance(item, (bytearray, memoryview)):
        return bytes(item)
    raise TypeError(f"serializer='bytes' takes bytes, bytearray or memoryview, not {type(item).__name__}")


def _identity(data):
    return data
