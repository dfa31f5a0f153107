"""shutdown(): asyncio.Queue's (3.13) rules, except that an immediate shutdown keeps the items
in the file (the CPython cases themselves are in test_cpython_queues.py)."""

import asyncio
import threading

import pytest

from ringq import Queue, QueueShutDown


async def test_immediate_shutdown_keeps_the_items_for_the_next_open(qpath):
    q = await Queue.create(qpath)
    for i in range(3):
        await q.put(i)
    assert await q.get() == 0
    q.shutdown(immediate=True)  # unfinished: 3 -> 1 (the gotten item is still being worked on)
    assert q.qsize() == 2
    with pytest.raises(QueueShutDown):
        await q.get_nowait()
    join = asyncio.ensure_future(q.join())
    await asyncio.sleep(0)
    assert not join.done()
    await q.task_done()
    await asyncio.wait_for(join, 5)
    del q
    q = await Queue.create(qpath)
    assert [await q.get_nowait(), await q.get_nowait()] == [1, 2]


async def test_plain_shutdown_then_immediate_upgrades(qpath):
    q = await Queue.create(qpath)
    await q.put("a")
    await q.put("b")
    q.shutdown()
    assert await q.get() == "a"  # a plain shutdown still delivers what is queued
    q.shutdown(immediate=True)
    with pytest.raises(QueueShutDown):
        await q.get()
    await q.task_done()  # for "a"; "b" was counted as finished by the immediate shutdown
    with pytest.raises(ValueError):
        await q.task_done()
    q.shutdown(immediate=True)  # idempotent
    assert q.qsize() == 1


async def test_guarded_get_after_shutdown(qpath):
    q = await Queue.create(qpath)
    await q.put("kept")
    q.shutdown()
    async with q.get_guarded() as item:  # queued items are still delivered
        assert item == "kept"
    with pytest.raises(QueueShutDown):
        async with q.get_guarded():
            pass


async def test_guard_released_after_immediate_shutdown_does_not_hold_join(qpath):
    q = await Queue.create(qpath)
    await q.put("work")
    with pytest.raises(RuntimeError):
        async with q.get_guarded() as item:
            assert item == "work"
            q.shutdown(immediate=True)  # the taken item is not queued: still unfinished
            join = asyncio.ensure_future(q.join())
            await asyncio.sleep(0)
            assert not join.done()
            raise RuntimeError("the work failed")
    # Given back to the file, where no get of this queue can reach it: counted as finished.
    await asyncio.wait_for(join, 5)
    assert q.qsize() == 1
    del q
    q = await Queue.create(qpath)
    assert await q.get_nowait() == "work"


async def test_waiting_getter_and_putter_raise_on_shutdown(qpath):
    q = await Queue.create(qpath, maxsize=1)
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.shutdown()
    with pytest.raises(QueueShutDown):
        await asyncio.wait_for(getter, 5)

    q2 = await Queue.create(qpath.with_name("full.q"), maxsize=1)
    await q2.put(1)
    putter = asyncio.ensure_future(q2.put(2))
    await asyncio.sleep(0)
    q2.shutdown(immediate=True)
    with pytest.raises(QueueShutDown):
        await asyncio.wait_for(putter, 5)
    assert q2.qsize() == 1


def test_shutdown_wakes_a_getter_waiting_on_another_threads_loop(qpath):
    q = asyncio.run(Queue.create(qpath))
    waiting = threading.Event()
    outcome = []

    def consumer():
        async def main():
            task = asyncio.ensure_future(q.get())
            await asyncio.sleep(0)
            waiting.set()
            try:
                await asyncio.wait_for(task, 10)
            except BaseException as e:  # reported below
                outcome.append(type(e))

        asyncio.run(main())

    th = threading.Thread(target=consumer)
    th.start()
    assert waiting.wait(10)
    q.shutdown()
    th.join(15)
    assert outcome == [QueueShutDown]
