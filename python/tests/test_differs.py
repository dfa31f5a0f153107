"""Where ringq differs from aiodiskqueue on purpose, one test each, plus the extras."""

import asyncio
import errno
import os
import pickle

import pytest

import ringq
from ringq import Queue, QueueException, QueueLocked

from conftest import Job


async def test_items_in_the_file_count_as_unfinished_tasks(qpath):
    q = await Queue.create(qpath)
    for i in range(3):
        await q.put(Job(i, "x"))
    del q
    q = await Queue.create(qpath)
    joined = asyncio.ensure_future(q.join())
    await asyncio.sleep(0.01)
    assert not joined.done()
    for _ in range(3):
        await q.get()
        await q.task_done()  # aiodiskqueue raises ValueError here
    await asyncio.wait_for(joined, 2)
    with pytest.raises(ValueError):
        await q.task_done()


async def test_second_create_on_a_held_file_raises_at_once(qpath):
    q = await Queue.create(qpath)
    await q.put(1)
    with pytest.raises(QueueLocked) as info:
        await Queue.create(qpath)
    err = info.value
    assert isinstance(err, QueueException) and isinstance(err, BlockingIOError)
    assert err.errno == errno.EAGAIN
    assert "locked" in str(err)
    assert await q.get() == 1  # the holder is untouched


async def test_del_releases_the_lock_at_once_under_every_durability(qpath):
    for durability in ("buffered", "periodic", "sync"):
        q = await Queue.create(qpath, durability=durability, interval=0.05)
        await q.put(durability)
        del q
        q = await Queue.create(qpath)
        assert await q.get() == durability
        del q


async def test_close_releases_the_lock_and_later_calls_fail(qpath):
    q = await Queue.create(qpath)
    await q.put(1)
    q.close()
    q.close()  # idempotent
    other = await Queue.create(qpath)
    with pytest.raises(ValueError):
        await q.put(2)
    assert await other.get() == 1


async def test_close_wakes_waiting_gets_and_puts_with_value_error(qpath):
    q = await Queue.create(qpath, maxsize=1)
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    other = await Queue.create(qpath.with_name("full.q"), maxsize=1)
    await other.put(1)
    putter = asyncio.ensure_future(other.put(2))
    await asyncio.sleep(0)
    q.close()
    other.close()
    await asyncio.sleep(0.05)
    for waiter in (getter, putter):  # they would wait forever on a file nobody can reach
        assert waiter.done()
        with pytest.raises(ValueError, match="closed"):
            await waiter


async def test_waiter_cancelled_after_close_raises_cancelled_error(qpath):
    q = await Queue.create(qpath)
    getter = asyncio.ensure_future(q.get())
    await asyncio.sleep(0)
    q.close()
    getter.cancel()
    with pytest.raises(asyncio.CancelledError):
        await getter


async def test_damaged_record_is_skipped_and_intact_items_kept(qpath):
    q = await Queue.create(qpath)
    items = [("item", i, "x" * 200) for i in range(40)]
    for it in items:
        await q.put(it)
    q.close()
    data = bytearray(qpath.read_bytes())
    # Records start after the two header pages (8192 bytes). Damage one in the middle.
    victim = data.find(pickle.dumps(items[20], protocol=pickle.HIGHEST_PROTOCOL), 8192)
    assert victim > 8192
    for k in range(victim + 10, victim + 30):
        data[k] ^= 0xFF
    qpath.write_bytes(bytes(data))

    q = await Queue.create(qpath)
    got = []
    while not q.empty():
        got.append(await q.get())
    assert got == items[:20] + items[21:]


async def test_file_with_both_headers_destroyed_is_backed_up_and_items_kept(qpath, tmp_path):
    q = await Queue.create(qpath)
    items = [Job(i, "y" * 50) for i in range(30)]
    for it in items:
        await q.put(it)
    q.close()
    data = bytearray(qpath.read_bytes())
    for k in range(0, 8192):
        data[k] = 0xA5
    qpath.write_bytes(bytes(data))

    q = await Queue.create(qpath)
    got = [await q.get() for _ in range(q.qsize())]
    assert got == items
    backups = [p for p in tmp_path.iterdir() if p.name.endswith(".bak")]
    assert len(backups) == 1


@pytest.mark.parametrize("durability", ["buffered", "periodic", "sync"])
async def test_durability_modes_keep_items(qpath, durability):
    q = await Queue.create(qpath, durability=durability, interval=0.02)
    await asyncio.gather(*(q.put(Job(i, "d")) for i in range(50)))
    for i in range(10):
        assert await q.get() == Job(i, "d")
    if durability == "periodic":
        await asyncio.sleep(0.1)
    del q
    q = await Queue.create(qpath)
    assert [await q.get() for _ in range(40)] == [Job(i, "d") for i in range(10, 50)]


async def test_bad_keyword_extras_raise(qpath):
    with pytest.raises(ValueError):
        await Queue.create(qpath, durability="fsync")
    with pytest.raises(ValueError):
        await Queue.create(qpath, serializer="json")
    with pytest.raises(ValueError):
        await Queue.create(qpath, durability="periodic", interval=0)
    with pytest.raises(TypeError):
        await Queue.create(qpath, 0, None, "sync")  # extras are keyword-only
    assert not qpath.exists()


async def test_guarded_get_commits_on_success(qpath):
    q = await Queue.create(qpath)
    await q.put("a")
    await q.put("b")
    async with q.get_guarded() as item:
        assert item == "a"
        assert q.qsize() == 1
    assert await q.get() == "b"
    del q
    q = await Queue.create(qpath)
    assert q.empty()


async def test_guarded_get_redelivers_first_on_exception(qpath):
    q = await Queue.create(qpath)
    await q.put("a")
    await q.put("b")
    with pytest.raises(RuntimeError):
        async with q.get_guarded() as item:
            assert item == "a"
            raise RuntimeError("work failed")
    assert q.qsize() == 2
    assert await q.get() == "a"
    assert await q.get() == "b"


async def test_guarded_get_waits_and_is_woken_by_put(qpath):
    q = await Queue.create(qpath)

    async def worker():
        async with q.get_guarded() as item:
            return item

    w = asyncio.ensure_future(worker())
    await asyncio.sleep(0.01)
    assert not w.done()
    await q.put("late")
    assert await asyncio.wait_for(w, 2) == "late"
    assert q.empty()


async def test_guarded_commit_counts_as_task_done(qpath):
    q = await Queue.create(qpath)
    await q.put(1)
    async with q.get_guarded():
        pass
    await asyncio.wait_for(q.join(), 2)


def _refuse_to_unpickle():
    raise RuntimeError("this item does not unpickle")


class Undecodable:
    """Pickles fine; unpickling it raises."""

    def __reduce__(self):
        return (_refuse_to_unpickle, ())


async def test_guarded_item_that_does_not_unpickle_is_dropped_and_counted_as_done(qpath):
    q = await Queue.create(qpath, maxsize=1)
    await q.put(Undecodable())
    with pytest.raises(RuntimeError, match="does not unpickle"):
        async with q.get_guarded():
            pass
    assert q.empty()
    # Removed for good, so its task is finished (nobody can task_done an item they never got)
    await asyncio.wait_for(q.join(), 2)
    with pytest.raises(ValueError):
        await q.task_done()
    await q.put_nowait("room is back")


async def test_plain_get_of_an_item_that_does_not_unpickle(qpath):
    # As asyncio's rule for a get: the item is gone, its task unfinished until task_done.
    q = await Queue.create(qpath)
    await q.put(Undecodable())
    with pytest.raises(RuntimeError, match="does not unpickle"):
        await q.get()
    assert q.empty()
    join = asyncio.ensure_future(q.join())
    await asyncio.sleep(0)
    assert not join.done()
    await q.task_done()
    await asyncio.wait_for(join, 2)


async def test_guarded_item_not_committed_comes_back_after_del(qpath):
    q = await Queue.create(qpath)
    await q.put("a")
    await q.put("b")
    guard = q.get_guarded()
    assert await guard.__aenter__() == "a"
    # No __aexit__: the process "crashes" while working on "a".
    del guard
    del q
    q = await Queue.create(qpath)
    assert [await q.get(), await q.get()] == ["a", "b"]


async def test_bytes_serializer_round_trips_raw_bytes(qpath):
    q = await Queue.create(qpath, serializer="bytes")
    await q.put(b"one")
    await q.put(bytearray(b"two"))
    await q.put(memoryview(b"three"))
    with pytest.raises(TypeError):
        await q.put("not bytes")
    big = os.urandom(1 << 20)  # a large item: copied with the GIL released
    await q.put(big)
    assert [await q.get() for _ in range(3)] == [b"one", b"two", b"three"]
    assert await q.get() == big


async def test_file_opened_with_the_other_serializer_raises(qpath):
    q = await Queue.create(qpath, serializer="bytes")
    await q.put(b"raw")
    del q
    with pytest.raises(QueueException) as info:
        await Queue.create(qpath, serializer="pickle")
    assert "pickle" in str(info.value).lower()
    q = await Queue.create(qpath, serializer="bytes")
    assert await q.get() == b"raw"


async def test_sync_put_returns_only_once_its_item_is_committed(qpath):
    q = await Queue.create(qpath, durability="sync")
    await asyncio.gather(*(q.put(i) for i in range(20)))
    # Nothing left to commit: every acknowledged put was flushed with a header naming it.
    assert not q._core.needs_commit
    buffered = await Queue.create(qpath.with_name("other.q"))
    await buffered.put(1)
    assert buffered._core.needs_commit  # control: buffered leaves it pending


async def test_periodic_flusher_commits_in_the_background(qpath):
    q = await Queue.create(qpath, durability="periodic", interval=0.02)
    await q.put("x")
    assert q._core.needs_commit
    for _ in range(100):
        await asyncio.sleep(0.02)
        if not q._core.needs_commit:
            break
    else:
        pytest.fail("the periodic flusher never committed")
