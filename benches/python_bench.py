#!/usr/bin/env python3
"""ringq's Python package against aiodiskqueue 0.1.2 and the in-memory ceiling.

Put + get of small dataclass items through each queue, in one process and one run:
- ringq (durability "buffered", the default; "sync" and "periodic" too with --all-durabilities),
- aiodiskqueue 0.1.2 with each of its engines (DbmEngine, PickledList, PickleSequence,
  SqliteEngine),
- asyncio.Queue with the same pickling (pickle.dumps on put, pickle.loads on get): the
  in-memory ceiling.
A second ringq row reopens a file that has already grown to the working size (as a
long-lived queue's has): a new file pays for each doubling of its ring with a durable commit.
Cases: one producer / one consumer, and five producers / two consumers. Each figure is the
median of --runs runs, in put+get pairs per second. Every run checks that each item came
out exactly once.

Setup (a venv with the wheel built from python/):
    python3 -m venv /tmp/benchvenv
    /tmp/benchvenv/bin/pip install aiodiskqueue==0.1.2 aiofiles==25.1.0 aiosqlite==0.22.1 \
        python/dist/ringq-*.whl
    /tmp/benchvenv/bin/python benches/python_bench.py
"""

import argparse
import asyncio
import dataclasses
import os
import pickle
import platform
import statistics
import sys
import tempfile
import time

import ringq


@dataclasses.dataclass
class Item:
    """A small item, as a job queue carries."""

    id: int
    name: str
    score: float
    tags: tuple


def make_item(i):
    return Item(i, f"item-{i}", i * 0.5, ("a", "b"))


class PickledAsyncioQueue:
    """asyncio.Queue with aiodiskqueue's pickling, as the in-memory ceiling."""

    def __init__(self):
        self._q = asyncio.Queue()

    async def put(self, item):
        self._q.put_nowait(pickle.dumps(item))

    async def get(self):
        return pickle.loads(await self._q.get())

    async def task_done(self):
        self._q.task_done()


async def run_case(make_queue, n, producers, consumers):
    """Returns (seconds, items) for n put+get pairs through a fresh queue."""
    q = await make_queue()
    per = [n // producers + (1 if p < n % producers else 0) for p in range(producers)]
    seen = []

    async def produce(p, count):
        base = sum(per[:p])
        for i in range(base, base + count):
            await q.put(make_item(i))

    async def consume(share):
        for _ in range(share):
            item = await q.get()
            seen.append(item.id)
            await q.task_done()

    shares = [n // consumers + (1 if c < n % consumers else 0) for c in range(consumers)]
    t0 = time.perf_counter()
    await asyncio.gather(
        *(produce(p, c) for p, c in enumerate(per)),
        *(consume(s) for s in shares),
    )
    elapsed = time.perf_counter() - t0
    if sorted(seen) != list(range(n)):
        raise AssertionError(f"items lost or duplicated: {len(seen)} seen of {n}")
    del q
    return elapsed


def dbm_backend(tmpdir):
    import dbm

    path = os.path.join(tmpdir, "probe")
    with dbm.open(path, "c") as db:
        db[b"k"] = b"v"
    return dbm.whichdb(path)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--runs", type=int, default=5, help="runs per figure; the median is reported")
    ap.add_argument("--n-fast", type=int, default=50_000, help="items per run for ringq and asyncio.Queue")
    ap.add_argument("--n-slow", type=int, default=200, help="items per run for aiodiskqueue's engines")
    ap.add_argument("--all-durabilities", action="store_true", help="also ringq 'periodic' and 'sync'")
    ap.add_argument("--skip-aiodiskqueue", action="store_true")
    args = ap.parse_args()

    tmp = tempfile.mkdtemp(prefix="ringq-pybench-")
    counter = [0]

    def fresh(name):
        counter[0] += 1
        return os.path.join(tmp, f"{name}-{counter[0]}")

    contenders = []  # (label, factory, n, kind)

    def ringq_factory(durability):
        return lambda: ringq.Queue.create(fresh("ringq") + ".q", durability=durability)

    contenders.append(("ringq (buffered)", ringq_factory("buffered"), args.n_fast, "ringq"))

    # A long-lived queue's file has already grown to its working size; a new file pays for
    # each doubling with a durable commit of everything in it. Same queue, reopened.
    warm_path = fresh("ringq-warm") + ".q"

    async def warm_up():
        q = await ringq.Queue.create(warm_path)
        for i in range(args.n_fast):
            await q.put(make_item(i))
        for _ in range(args.n_fast):
            await q.get()
        q.close()

    asyncio.run(warm_up())
    contenders.append(("ringq (buffered, grown file)", lambda: ringq.Queue.create(warm_path), args.n_fast, "ringq-extra"))
    if args.all_durabilities:
        contenders.append(("ringq (periodic 1s)", ringq_factory("periodic"), args.n_fast, "ringq-extra"))
        contenders.append(("ringq (sync)", ringq_factory("sync"), args.n_fast // 10, "ringq-extra"))

    async def ceiling():
        return PickledAsyncioQueue()

    contenders.append(("asyncio.Queue + pickle", ceiling, args.n_fast, "ceiling"))

    backend = None
    if not args.skip_aiodiskqueue:
        import aiodiskqueue
        from aiodiskqueue import engines

        backend = dbm_backend(tmp)
        for name in ("DbmEngine", "PickledList", "PickleSequence", "SqliteEngine"):
            engine = getattr(engines, name, None)
            if engine is None:
                print(f"aiodiskqueue engine {name} unavailable (missing dependency)", file=sys.stderr)
                continue

            def factory(engine=engine, name=name):
                return aiodiskqueue.Queue.create(fresh(name), cls_storage_engine=engine)

            contenders.append((f"aiodiskqueue {aiodiskqueue.__version__} {name}", factory, args.n_slow, "aiodiskqueue"))

    cases = [("1 producer / 1 consumer", 1, 1), ("5 producers / 2 consumers", 5, 2)]
    print(f"python {platform.python_version()} on {platform.machine()} {platform.system()}, "
          f"{os.cpu_count()} cpus; ringq {ringq.__version__}; runs={args.runs} (median)")
    if backend is not None:
        print(f"dbm backend used by aiodiskqueue's DbmEngine: {backend}")
    results = {}
    for case, producers, consumers in cases:
        print(f"\n## {case}")
        for label, factory, n, kind in contenders:
            rates = []
            for _ in range(args.runs):
                secs = asyncio.run(run_case(factory, n, producers, consumers))
                rates.append(n / secs)
            med = statistics.median(rates)
            results[(case, label)] = (med, kind)
            print(f"{label:<40} {med:>12,.0f} put+get/s   (n={n}, runs: "
                  + ", ".join(f"{r:,.0f}" for r in rates) + ")")
        ring = results[(case, "ringq (buffered)")][0]
        ceil = results[(case, "asyncio.Queue + pickle")][0]
        print(f"ringq / in-memory ceiling: {ring / ceil:.2f} (target >= 0.25)")
        slow = [(v[0], l) for (c, l), v in results.items() if c == case and v[1] == "aiodiskqueue"]
        if slow:
            best, best_label = max(slow)
            print(f"ringq / fastest aiodiskqueue engine ({best_label}): {ring / best:,.0f}x (target >= 100x)")
    for f in os.listdir(tmp):
        try:
            os.remove(os.path.join(tmp, f))
        except OSError:
            pass
    try:
        os.rmdir(tmp)
    except OSError:
        pass


if __name__ == "__main__":
    main()
