"""Waiting, wake-ups and cancellation follow asyncio.Queue's rules."""

import asyncio
import threading

import pytest

from ringq import Queue, QueueEmpty

from conftest import Job


async def test_fifo_order(qpath):
    q = await Queue.create(qpath)
    for i in range(500):
        await q.put(Job(i, "o"))
    assert [(await q.get()).id for _ in range(500)] == list(range(500))


async def test_put_blocks_at_maxsize_until_a_get(qpath):
    q = await Queue.create(qpath, maxsize=2)
    await q.put(1)
    await q.put(2)
    putter = asyncio.ensure_future(q.put(3))
    await asyncio.sleep(0.01)
    assert not putter.done()
    assert q.qsize() == 2
    assert await q.get() == 1
    await asyncio.wait_for(putter, 2)
    assert [await q.get(), await q.get()] == [2, 3]


async def test_getter_waits_for_a_put(qpath):
    q = await Queue.create(qpath)
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0.01)
    assert not getter.done()
    await q.put("x")
    assert await asyncio.wait_for(getter, 2) == "x"


async def test_cancelled_get_takes_nothing(qpath):
    q = await Queue.create(qpath)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(q.get(), 0.01)
    assert not q._getters  # a cancelled waiter leaves nothing behind
    await q.put("kept")
    assert q.qsize() == 1
    assert await q.get_nowait() == "kept"


async def test_woken_then_cancelled_getter_passes_the_wakeup_on(qpath):
    q = await Queue.create(qpath)
    g1 = asyncio.ensure_future(q.get())
    g2 = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    assert len(q._getters) == 2
    await q.put_nowait("only")  # wakes g1 (its future resolved, task not yet run)
    g1.cancel()  # cancelled before it could take the item
    with pytest.raises(asyncio.CancelledError):
        await g1
    assert await asyncio.wait_for(g2, 2) == "only"
    assert q.empty() and not q._getters


async def test_cancelled_put_puts_nothing(qpath):
    q = await Queue.create(qpath, maxsize=1)
    await q.put("a")
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(q.put("b"), 0.01)
    assert not q._putters
    assert await q.get() == "a"
    assert q.empty()
    with pytest.raises(QueueEmpty):
        await q.get_nowait()


async def test_woken_then_cancelled_putter_passes_the_wakeup_on(qpath):
    q = await Queue.create(qpath, maxsize=1)
    await q.put("a")
    p1 = asyncio.ensure_future(q.put("p1"))
    p2 = asyncio.ensure_future(q.put("p2"))
    await asyncio.sleep(0)
    assert await q.get_nowait() == "a"  # wakes p1
    p1.cancel()
    with pytest.raises(asyncio.CancelledError):
        await p1
    await asyncio.wait_for(p2, 2)
    assert await q.get_nowait() == "p2"
    assert q.empty()


async def test_waiting_putters_are_served_in_order(qpath):
    q = await Queue.create(qpath, maxsize=1)
    await q.put(-1)
    putters = []
    for i in range(10):
        putters.append(asyncio.ensure_future(q.put(i)))
        await asyncio.sleep(0)
    got = []
    for _ in range(11):
        got.append(await q.get())
        await asyncio.sleep(0)
    assert got == list(range(-1, 10))
    await asyncio.gather(*putters)


async def test_join_with_producers_and_consumers_loses_and_duplicates_nothing(qpath):
    q = await Queue.create(qpath, maxsize=10)
    n_producers, per_producer = 5, 100
    seen = []

    async def producer(p):
        for i in range(per_producer):
            await q.put(Job(p * 1000 + i, "job"))

    async def consumer():
        while True:
            job = await q.get()
            seen.append(job.id)
            if job.id % 7 == 0:
                await asyncio.sleep(0)
            await q.task_done()

    consumers = [asyncio.ensure_future(consumer()) for _ in range(3)]
    await asyncio.gather(*(producer(p) for p in range(n_producers)))
    await asyncio.wait_for(q.join(), 10)
    for c in consumers:
        c.cancel()
    await asyncio.gather(*consumers, return_exceptions=True)
    expected = sorted(p * 1000 + i for p in range(n_producers) for i in range(per_producer))
    assert sorted(seen) == expected
    assert len(seen) == len(set(seen))
    assert q.empty() and not q._getters


async def test_cancelled_join_leaves_nothing_behind(qpath):
    q = await Queue.create(qpath)
    await q.put(1)
    with pytest.raises(asyncio.TimeoutError):
        await asyncio.wait_for(q.join(), 0.01)
    assert not q._joiners


def test_shared_by_threads_each_running_its_own_loop(qpath):
    q = asyncio.run(Queue.create(qpath, maxsize=16))
    n_threads, per_thread = 3, 300
    got = []
    errors = []

    def producer(t):
        async def main():
            for i in range(per_thread):
                await q.put((t, i))

        try:
            asyncio.run(main())
        except BaseException as e:  # reported below
            errors.append(e)

    def consumer():
        async def main():
            for _ in range(n_threads * per_thread // 2):
                got.append(await asyncio.wait_for(q.get(), 10))

        try:
            asyncio.run(main())
        except BaseException as e:
            errors.append(e)

    threads = [threading.Thread(target=producer, args=(t,)) for t in range(n_threads)]
    threads += [threading.Thread(target=consumer) for _ in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(30)
    assert not errors
    assert sorted(got) == sorted((t, i) for t in range(n_threads) for i in range(per_thread))
    for t in range(n_threads):  # each producer's items stay in order
        mine = [i for (tt, i) in got if tt == t]
        assert len(mine) == per_thread
    assert q.empty()
