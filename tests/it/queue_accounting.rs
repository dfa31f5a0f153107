//! Issue 17: `Queue<T>` accounting. Every count that decides (items to get, room under
//! maxsize, unfinished tasks) must move with the ring, on every path: growth on a blocking
//! thread, cancelled futures, undecodable items, over-full files, failed commits, no runtime.

use std::future::Future;
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};
use std::time::{Duration, Instant};

use ringq::{Durability, Error, MemStorage, Queue};

fn path(dir: &tempfile::TempDir) -> std::path::PathBuf {
    dir.path().join("q.ringq")
}

/// Waits (bounded) until `qsize()` reads `n`.
async fn wait_for_qsize(q: &Queue<Vec<u8>>, n: usize) {
    let start = Instant::now();
    while q.qsize() != n {
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "qsize stayed {} (waited for {n})",
            q.qsize()
        );
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// A minimal executor with no tokio context at all: parks the thread between polls.
fn block_on<F: Future>(f: F) -> F::Output {
    struct Unpark(std::thread::Thread);
    impl Wake for Unpark {
        fn wake(self: Arc<Self>) {
            self.0.unpark();
        }
    }
    let waker = Waker::from(Arc::new(Unpark(std::thread::current())));
    let mut cx = Context::from_waker(&waker);
    let mut f = std::pin::pin!(f);
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Poll::Ready(v) = f.as_mut().poll(&mut cx) {
            return v;
        }
        assert!(Instant::now() < deadline, "the future never finished");
        std::thread::park_timeout(Duration::from_millis(100));
    }
}

// ---------------------------------------------------------------- item 1

/// A put dropped while its growth runs on a blocking thread: the write completes, and the
/// item is gettable, counted as a task and holds its place under maxsize.
#[tokio::test]
async fn item1_put_dropped_on_the_growth_path_keeps_its_item_whole() {
    let dir = tempfile::tempdir().unwrap();
    let q: Queue<Vec<u8>> = Queue::builder(path(&dir))
        .maxsize(1)
        .initial_capacity(4096)
        .open()
        .await
        .unwrap();
    let mut put = tokio_test::task::spawn(q.put(vec![7; 10_000]));
    assert!(put.poll().is_pending(), "growth runs off the async worker");
    drop(put);
    wait_for_qsize(&q, 1).await;
    let mut join = tokio_test::task::spawn(q.join());
    assert!(
        join.poll().is_pending(),
        "join returned with an item queued"
    );
    drop(join);
    assert!(
        matches!(q.put_nowait(vec![1]), Err(Error::Full)),
        "maxsize 1 exceeded"
    );
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get_nowait().expect("qsize is 1"), vec![7; 10_000]);
    q.task_done().unwrap();
    tokio::time::timeout(Duration::from_secs(5), q.join())
        .await
        .expect("join after the last task_done");
    q.put_nowait(vec![2]).expect("room is back");
}

// ---------------------------------------------------------------- item 2

/// While a slow put's write is done but its future has not run again, another put is
/// acknowledged: both stay counted, neither is taken against the other's count.
#[tokio::test]
async fn item2_a_put_beside_a_blocking_put_keeps_its_own_count() {
    let dir = tempfile::tempdir().unwrap();
    let q: Queue<Vec<u8>> = Queue::builder(path(&dir))
        .initial_capacity(4096)
        .open()
        .await
        .unwrap();
    let mut slow = tokio_test::task::spawn(q.put(vec![7; 10_000]));
    assert!(slow.poll().is_pending());
    wait_for_qsize(&q, 1).await; // written; its future has not been polled since
    q.put_nowait(vec![8]).unwrap();
    assert_eq!(q.get_nowait().unwrap(), vec![7; 10_000]);
    q.task_done().unwrap();
    let mut join = tokio_test::task::spawn(q.join());
    assert!(
        join.poll().is_pending(),
        "join returned while an acknowledged item is queued"
    );
    assert_eq!(
        q.get_nowait().expect("the acknowledged item is gettable"),
        vec![8]
    );
    q.task_done().unwrap();
    assert!(join.poll().is_ready());
    // The slow put finishes normally once polled again.
    tokio::time::timeout(Duration::from_secs(5), slow)
        .await
        .expect("the slow put completes")
        .unwrap();
    assert!(matches!(q.get_nowait(), Err(Error::Empty)));
}

// ---------------------------------------------------------------- item 3

/// An undecodable item met by `get_guarded` is removed and gives its room back.
#[tokio::test]
async fn item3_an_undecodable_guarded_item_gives_its_room_back() {
    let dir = tempfile::tempdir().unwrap();
    {
        let q: Queue<String> = Queue::create(path(&dir), 0).await.unwrap();
        q.put("not a number".into()).await.unwrap();
    }
    let q: Queue<u64> = Queue::create(path(&dir), 1).await.unwrap();
    assert!(matches!(q.get_guarded().await, Err(Error::Decode { .. })));
    assert!(q.empty());
    q.put_nowait(5)
        .expect("the empty queue with maxsize 1 has room");
    assert!(matches!(q.put_nowait(6), Err(Error::Full)));
    assert_eq!(q.get_guarded().await.unwrap().commit().await.unwrap(), 5);
    q.put_nowait(7).expect("room after the commit");
}

// ---------------------------------------------------------------- item 4

/// A file opened with more items than maxsize: once they are gone, by plain gets or by
/// committed guards, the room is exactly maxsize.
#[tokio::test]
async fn item4_an_over_full_file_drains_to_exactly_maxsize() {
    for guarded in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        {
            let q: Queue<u32> = Queue::create(path(&dir), 0).await.unwrap();
            for i in 0..3 {
                q.put(i).await.unwrap();
            }
        }
        let q: Queue<u32> = Queue::create(path(&dir), 2).await.unwrap();
        assert!(matches!(q.put_nowait(9), Err(Error::Full)));
        if guarded {
            let mut guards = Vec::new();
            for i in 0..3 {
                let g = q.get_guarded().await.unwrap();
                assert_eq!(*g, i);
                guards.push(g);
            }
            for g in guards {
                g.commit().await.unwrap();
            }
        } else {
            for i in 0..3 {
                assert_eq!(q.get().await.unwrap(), i);
            }
        }
        assert!(q.empty());
        q.put_nowait(10).unwrap();
        q.put_nowait(11).unwrap();
        assert!(
            matches!(q.put_nowait(12), Err(Error::Full)),
            "maxsize 2 exceeded (guarded: {guarded}), qsize {}",
            q.qsize()
        );
    }
}

// ---------------------------------------------------------------- item 5

/// Drops a `Sync` get whose removal is already committed; returns the queue and the flushes
/// made before the drop, or `None` when the get finished at its first poll (the flusher was
/// faster: try again).
async fn sync_get_dropped_after_its_commit(storage: MemStorage) -> Option<(Queue<u32>, u64)> {
    let q: Queue<u32> = Queue::builder("mem")
        .durability(Durability::Sync)
        .in_memory(storage)
        .open()
        .await
        .unwrap();
    q.put(1).await.unwrap();
    q.put(2).await.unwrap();
    let commits = q.commit_count();
    let mut get = tokio_test::task::spawn(q.get());
    if get.poll().is_ready() {
        return None;
    }
    let start = Instant::now();
    while q.commit_count() == commits {
        assert!(start.elapsed() < Duration::from_secs(10), "no commit");
        std::thread::sleep(Duration::from_millis(1));
    }
    let flushes = q.memory_snapshot().unwrap().flush_count();
    drop(get); // after the commit that names the removal: the abort commits again
    Some((q, flushes))
}

/// A removal aborted after a commit named it removed commits again; when that commit
/// fails, the item is still back in line and gettable.
#[tokio::test]
async fn item5_a_failed_commit_in_an_abort_leaves_the_item_gettable() {
    for _ in 0..50 {
        let Some((q, flushes)) = sync_get_dropped_after_its_commit(MemStorage::new()).await else {
            continue;
        };
        drop(q);
        let mut storage = MemStorage::new();
        storage.fail_flush_at(flushes); // the first flush of the abort's commit
        let Some((q, _)) = sync_get_dropped_after_its_commit(storage).await else {
            continue;
        };
        assert!(q.sync().await.is_err(), "the abort's commit failed");
        assert_eq!(q.qsize(), 2);
        assert_eq!(q.get_nowait().expect("the given-back item is gettable"), 1);
        assert_eq!(q.get_nowait().unwrap(), 2);
        return;
    }
    panic!("no get was ever caught waiting for its commit");
}

/// Decided and documented on `Queue::put`: a `Sync` put whose commit fails returns
/// `Err(Poisoned)` (or the flush's `Io`), and the item stays queued in this process.
#[tokio::test]
async fn item5_a_sync_put_whose_commit_fails_leaves_its_item_queued() {
    let opened = Queue::<u32>::builder("mem")
        .durability(Durability::Sync)
        .in_memory(MemStorage::new())
        .open()
        .await
        .unwrap();
    let flushes = opened.memory_snapshot().unwrap().flush_count();
    drop(opened);
    let mut storage = MemStorage::new();
    storage.fail_flush_at(flushes); // the put's commit
    let q: Queue<u32> = Queue::builder("mem")
        .durability(Durability::Sync)
        .in_memory(storage)
        .open()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let r = q.put(1).await;
    assert!(
        matches!(r, Err(Error::Poisoned { .. } | Error::Io { .. })),
        "{r:?}"
    );
    assert_eq!(q.qsize(), 1);
    assert_eq!(q.get_nowait().unwrap(), 1);
}

// ---------------------------------------------------------------- item 7

/// A huge maxsize means no limit; the builder's numeric options take their whole range.
#[tokio::test]
async fn item7_a_huge_maxsize_means_no_limit() {
    let dir = tempfile::tempdir().unwrap();
    let q: Queue<u32> = Queue::create(path(&dir), usize::MAX).await.unwrap();
    for i in 0..100 {
        q.put_nowait(i).unwrap();
    }
    q.put(100).await.unwrap();
    assert_eq!(q.maxsize(), usize::MAX);
    assert!(!q.full());
    drop(q);
    let q: Queue<u32> = Queue::builder(path(&dir))
        .maxsize(usize::MAX - 1)
        .open()
        .await
        .unwrap();
    assert_eq!(q.qsize(), 101);
    assert_eq!(q.get().await.unwrap(), 0);
}

/// An item that can never fit, not even into an empty ring at its largest, is an error,
/// not a put waiting for room forever.
#[tokio::test]
async fn item7_a_put_that_can_never_fit_does_not_wait_forever() {
    let q: Queue<Vec<u8>, ringq::Raw> = Queue::builder("mem")
        .in_memory(MemStorage::new())
        .initial_capacity(4096)
        .max_bytes(8192)
        .open()
        .await
        .unwrap();
    for len in [8160usize, 8168, 8176, 9000] {
        let r = tokio::time::timeout(Duration::from_secs(5), q.put(vec![1; len]))
            .await
            .unwrap_or_else(|_| panic!("a put of {len} bytes waits forever"));
        match r {
            Ok(()) => assert_eq!(q.get_nowait().unwrap().len(), len),
            Err(Error::TooLarge { .. }) => {}
            Err(e) => panic!("{len} bytes: {e}"),
        }
    }
}

// ---------------------------------------------------------------- item 11

/// Re-taking released items costs about what the first takes cost, not a scan per take.
#[tokio::test]
async fn item11_re_taking_released_items_is_linear() {
    const N: usize = 100_000;
    let q: Queue<u32> = Queue::builder("mem")
        .in_memory(MemStorage::new())
        .open()
        .await
        .unwrap();
    for i in 0..N as u32 {
        q.put_nowait(i).unwrap();
    }
    let mut guards = Vec::with_capacity(N);
    let start = Instant::now();
    for _ in 0..N {
        guards.push(q.get_guarded().await.unwrap());
    }
    let first = start.elapsed();
    drop(guards); // all N back, first in line, in order
    assert_eq!(q.qsize(), N);
    let limit = first * 3;
    let mut guards = Vec::with_capacity(N);
    let start = Instant::now();
    for i in 0..N {
        let g = q.get_guarded().await.unwrap();
        assert_eq!(*g, i as u32);
        guards.push(g);
        if i % 1000 == 999 {
            assert!(
                start.elapsed() <= limit,
                "{} re-takes took {:?}, the first {N} takes {first:?}",
                i + 1,
                start.elapsed()
            );
        }
    }
    // Peek-like order check after a partial release: returned items come back first.
    let back: Vec<_> = guards.drain(10..20).collect();
    drop(back);
    drop(guards.pop());
    let g = q.get_guarded().await.unwrap();
    assert_eq!(*g, 10);
}

// ---------------------------------------------------------------- item 12

/// A put that must grow the ring works when driven by an executor that is not tokio's.
#[test]
fn item12_a_growing_put_works_without_a_tokio_runtime() {
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let q: Queue<Vec<u8>> = rt
        .block_on(Queue::builder(path(&dir)).initial_capacity(4096).open())
        .unwrap();
    let q2 = q.clone();
    std::thread::spawn(move || {
        block_on(q2.put(vec![3; 10_000])).unwrap();
        assert_eq!(block_on(q2.get()).unwrap(), vec![3; 10_000]);
        // Opening needs no tokio runtime either.
        let dir = tempfile::tempdir().unwrap();
        let q3: Queue<u8> = block_on(Queue::create(path(&dir), 0)).unwrap();
        block_on(q3.put(1)).unwrap();
    })
    .join()
    .expect("no panic without a tokio runtime");
}

/// A put waiting at the byte limit needs no time driver.
#[test]
fn item12_the_byte_limit_wait_needs_no_time_driver() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .unwrap();
    rt.block_on(async {
        let q: Queue<Vec<u8>, ringq::Raw> = Queue::builder("mem")
            .in_memory(MemStorage::new())
            .initial_capacity(4096)
            .max_bytes(4096)
            .open()
            .await
            .unwrap();
        let mut n = 0;
        while q.put_nowait(vec![0; 1000]).is_ok() {
            n += 1;
        }
        assert!(n > 0);
        let mut waiting = tokio_test::task::spawn(q.put(vec![1; 1000]));
        assert!(waiting.poll().is_pending(), "the put waits for room");
        q.get_nowait().unwrap();
        // Woken by the get (or by its blocking thread finishing first, then by the get).
        let mut done = false;
        for _ in 0..2000 {
            if waiting.is_woken() {
                if let Poll::Ready(r) = waiting.poll() {
                    r.unwrap();
                    done = true;
                    break;
                }
            }
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(done, "the get wakes the waiting put");
        assert_eq!(q.qsize(), n);
    });
}
