"""The API to match: aiodiskqueue 0.1.2's Queue, one test per behaviour."""

import asyncio
import gc
import logging
import os
import pathlib

import pytest

import ringq
from ringq import Queue, QueueEmpty, QueueException, QueueFull

from conftest import Job


def test_queue_constructor_raises_type_error():
    with pytest.raises(TypeError):
        Queue()
    with pytest.raises(TypeError):
        Queue("x.q", 3)


async def test_create_takes_str_and_pathlike(tmp_path):
    q1 = await Queue.create(str(tmp_path / "a.q"))
    q2 = await Queue.create(tmp_path / "b.q")

    class P:
        def __fspath__(self):
            return str(tmp_path / "c.q")

    q3 = await Queue.create(P())
    for q in (q1, q2, q3):
        await q.put(1)
        assert await q.get() == 1
    assert {p.name for p in tmp_path.iterdir()} == {"a.q", "b.q", "c.q"}


async def test_bak_name_raises_value_error_and_creates_nothing(tmp_path):
    with pytest.raises(ValueError):
        await Queue.create(tmp_path / "jobs.bak")
    assert list(tmp_path.iterdir()) == []


async def test_missing_directory_raises_oserror_and_creates_no_directory(tmp_path):
    missing = tmp_path / "nope" / "deeper"
    with pytest.raises(OSError):
        await Queue.create(missing / "jobs.q")
    assert not (tmp_path / "nope").exists()


@pytest.mark.parametrize("maxsize", [0, -1, -100])
async def test_maxsize_not_positive_means_unlimited(qpath, maxsize):
    q = await Queue.create(qpath, maxsize=maxsize)
    assert q.maxsize == 0
    for i in range(300):
        await q.put_nowait(i)
    assert not q.full()
    assert q.qsize() == 300


async def test_maxsize_is_not_stored_in_the_file(qpath):
    q = await Queue.create(qpath, maxsize=2)
    await q.put(1)
    await q.put(2)
    with pytest.raises(QueueFull):
        await q.put_nowait(3)
    del q
    q = await Queue.create(qpath, maxsize=5)
    assert q.maxsize == 5
    await q.put_nowait(3)
    assert q.qsize() == 3
    del q
    q = await Queue.create(qpath)
    assert q.maxsize == 0


async def test_cls_storage_engine_must_be_none(qpath):
    class DbmEngine:
        pass

    with pytest.raises(TypeError):
        await Queue.create(qpath, cls_storage_engine=DbmEngine)
    assert not qpath.exists()
    q = await Queue.create(qpath, cls_storage_engine=None)
    assert q.empty()


async def test_put_nowait_is_a_coroutine_and_raises_queue_full(qpath):
    q = await Queue.create(qpath, maxsize=1)
    coro = q.put_nowait("a")
    assert asyncio.iscoroutine(coro)
    await coro
    with pytest.raises(QueueFull):
        await q.put_nowait("b")
    assert q.qsize() == 1


async def test_get_nowait_is_a_coroutine_and_raises_queue_empty(qpath):
    q = await Queue.create(qpath)
    with pytest.raises(QueueEmpty):
        await q.get_nowait()
    await q.put("a")
    coro = q.get_nowait()
    assert asyncio.iscoroutine(coro)
    assert await coro == "a"


async def test_task_done_is_a_coroutine_and_raises_value_error_when_overcalled(qpath):
    q = await Queue.create(qpath)
    await q.put(1)
    await q.get()
    coro = q.task_done()
    assert asyncio.iscoroutine(coro)
    await coro
    with pytest.raises(ValueError):
        await q.task_done()


async def test_join_waits_until_every_item_is_done(qpath):
    q = await Queue.create(qpath)
    for i in range(3):
        await q.put(i)
    joined = asyncio.ensure_future(q.join())
    for _ in range(3):
        await q.get()
        await asyncio.sleep(0)
        assert not joined.done()
        await q.task_done()
    await asyncio.wait_for(joined, 2)


async def test_qsize_empty_full_are_plain_methods(qpath):
    q = await Queue.create(qpath, maxsize=2)
    assert (q.qsize(), q.empty(), q.full()) == (0, True, False)
    await q.put("x")
    assert (q.qsize(), q.empty(), q.full()) == (1, False, False)
    await q.put("y")
    assert (q.qsize(), q.empty(), q.full()) == (2, False, True)
    await q.get()
    assert (q.qsize(), q.empty(), q.full()) == (1, False, False)


async def test_maxsize_is_a_read_only_property(qpath):
    q = await Queue.create(qpath, maxsize=7)
    assert q.maxsize == 7
    with pytest.raises(AttributeError):
        q.maxsize = 3


def test_exceptions_importable_and_subclass_both_families():
    from ringq import QueueEmpty as E, QueueException as X, QueueFull as F

    assert issubclass(E, X) and issubclass(F, X)
    assert issubclass(E, asyncio.QueueEmpty)
    assert issubclass(F, asyncio.QueueFull)
    assert issubclass(X, Exception)
    assert not issubclass(E, F) and not issubclass(F, E)


async def test_any_picklable_item_round_trips(qpath):
    items = [None, 1, 2.5, "text", b"bytes", [1, [2]], {"a": (1, 2)}, Job(1, "one", ("x",)), {1, 2}]
    q = await Queue.create(qpath)
    for it in items:
        await q.put(it)
    assert [await q.get() for _ in items] == items


async def test_unpicklable_item_raises_and_puts_nothing(qpath):
    q = await Queue.create(qpath)
    with pytest.raises(Exception):
        await q.put(lambda: 1)
    assert q.empty()


async def test_dataclass_items_persist_across_del_and_immediate_recreate(qpath):
    q = await Queue.create(qpath)
    jobs = [Job(i, f"job-{i}", ("t",) * (i % 3)) for i in range(50)]
    for j in jobs:
        await q.put(j)
    assert await q.get() == jobs[0]
    del q  # no gc.collect(): the file must be released at once
    q = await Queue.create(qpath)
    assert q.qsize() == 49
    assert [await q.get() for _ in range(49)] == jobs[1:]


async def test_data_file_sits_at_exact_path_and_stays_when_empty(tmp_path):
    path = tmp_path / "data.file"
    q = await Queue.create(path)
    assert path.is_file()
    await q.put(1)
    await q.get()
    assert q.empty()
    del q
    assert path.is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data.file"]


async def test_logs_through_the_ringq_logger(qpath, caplog):
    assert ringq.logger is logging.getLogger("ringq")
    with caplog.at_level(logging.DEBUG, logger="ringq"):
        q = await Queue.create(qpath)
        del q
    records = [r for r in caplog.records if r.name == "ringq"]
    assert any("opened" in r.getMessage() for r in records)
    assert any("closed" in r.getMessage() for r in records)


async def test_used_from_one_loop_per_test_twice(qpath):
    # Nothing caches a loop: a queue made on one loop works on another one.
    q = await Queue.create(qpath)
    await q.put("a")

    def other_loop():
        async def main():
            assert await q.get() == "a"
            getter = asyncio.ensure_future(q.get())
            await asyncio.sleep(0.01)
            await q.put("b")
            return await asyncio.wait_for(getter, 2)

        return asyncio.run(main())

    loop = asyncio.get_running_loop()
    assert await loop.run_in_executor(None, other_loop) == "b"
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0.01)
    await q.put("c")
    assert await asyncio.wait_for(getter, 2) == "c"
