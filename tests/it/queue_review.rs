//! Review of the issue 17 `Queue<T>` accounting rewrite: each test here failed on the code
//! the review started from.

use std::io::{Seek, SeekFrom, Write};
use std::time::{Duration, Instant};

use ringq::{Durability, MemStorage, Queue, Raw};

/// Flips one byte inside the first occurrence of `pattern` in the file (through the page
/// cache the queue's map shares), as bit rot or a stray writer would.
fn corrupt(path: &std::path::Path, pattern: &[u8]) {
    let bytes = std::fs::read(path).unwrap();
    let at = bytes
        .windows(pattern.len())
        .position(|w| w == pattern)
        .expect("the record is in the file");
    let mut f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.seek(SeekFrom::Start((at + pattern.len() / 2) as u64))
        .unwrap();
    f.write_all(&[!pattern[pattern.len() / 2]]).unwrap();
    f.flush().unwrap();
}

/// A record found damaged after open is skipped and never delivered, so no caller can ever
/// mark it done: `join` must not wait for it (it waited forever).
#[tokio::test]
async fn join_returns_after_a_record_damaged_at_run_time_is_skipped() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.ringq");
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    q.put(vec![1; 64]).await.unwrap();
    q.put(vec![0xAB; 64]).await.unwrap();
    q.put(vec![3; 64]).await.unwrap();
    corrupt(&path, &[0xAB; 64]);
    assert_eq!(q.get().await.unwrap(), vec![1; 64]);
    q.task_done().unwrap();
    assert_eq!(
        q.get().await.unwrap(),
        vec![3; 64],
        "the damaged record is skipped"
    );
    q.task_done().unwrap();
    assert_eq!(q.qsize(), 0);
    assert_eq!(q.stats().damaged, 1);
    tokio::time::timeout(Duration::from_secs(5), q.join())
        .await
        .expect("join waited for a record no get can ever return");
}

/// An in-memory `Sync` queue holding items `0..n`, durably.
async fn sync_queue_holding(name: &str, n: usize) -> Queue<u64> {
    let q: Queue<u64> = Queue::builder(name)
        .durability(Durability::Sync)
        .in_memory(MemStorage::new())
        .open()
        .await
        .unwrap();
    for i in 0..n as u64 {
        q.put_nowait(i).unwrap();
    }
    q.sync().await.unwrap();
    q
}

/// Time to commit one guarded batch of `n` items under `Sync` (filled and taken beforehand).
async fn sync_batch_commit(n: usize) -> Duration {
    let q = sync_queue_holding("batch", n).await;
    let batch = q.get_guarded_batch(n).await.unwrap();
    assert_eq!(batch.len(), n);
    let t = Instant::now();
    batch.commit().await.unwrap();
    let took = t.elapsed();
    assert_eq!(q.qsize(), 0);
    took
}

/// Beginning the durable removal of a batch scanned every item before each one (quadratic,
/// under the queue's lock): 20,000 items took 7.7 s in a debug build, 4x per doubling.
#[tokio::test]
async fn a_sync_batch_commit_costs_linear_time_in_its_size() {
    // The fastest of three runs of each size: load from parallel tests only adds time.
    let (mut small, mut big) = (Duration::MAX, Duration::MAX);
    for _ in 0..3 {
        small = small.min(sync_batch_commit(2_000).await);
        big = big.min(sync_batch_commit(16_000).await);
    }
    let ratio = big.as_secs_f64() / small.as_secs_f64().max(1e-6);
    eprintln!("Sync batch commit: 2,000 items {small:?}, 16,000 {big:?}, ratio {ratio:.1}");
    assert!(
        ratio < 20.0,
        "8x the items took {ratio:.1}x the time (quadratic would be 64x): {small:?}, {big:?}"
    );
}

/// A batch commit dropped after the flusher's commit already named its items removed gives
/// them back with one commit naming them present again, not one inline commit per item
/// (each a flush, under the queue's lock) and a scan of every removal behind each one.
#[tokio::test]
async fn a_dropped_sync_batch_commit_gives_its_items_back_with_one_commit() {
    let n = 200;
    let q = sync_queue_holding("abort", n).await;
    let batch = q.get_guarded_batch(n).await.unwrap();
    let mut commit = tokio_test::task::spawn(batch.commit());
    assert!(commit.poll().is_pending(), "waits for its commit");
    q.sync().await.unwrap(); // the flusher's commit names the batch removed
    let before = q.commit_count();
    drop(commit);
    let inline = q.commit_count() - before;
    assert_eq!(q.qsize(), n, "every item is back");
    assert!(
        inline <= 1,
        "giving back {n} items took {inline} inline commits"
    );
    let again = q.get_guarded_batch(n).await.unwrap();
    assert_eq!(again.items()[0].1, 0, "first in line");
    again.commit().await.unwrap();
    assert_eq!(q.qsize(), 0);
}

/// `put` promises that putters waiting for room are served in the order they started
/// waiting. A put stopped by the byte limit waits outside the putters' line, so a later
/// small put is queued first (and a stream of them can starve the big one).
#[tokio::test]
async fn a_put_waiting_for_bytes_is_not_overtaken_by_a_later_put() {
    let dir = tempfile::tempdir().unwrap();
    let q = Queue::<Vec<u8>, Raw>::builder(dir.path().join("q.ringq"))
        .initial_capacity(4096)
        .max_bytes(4096)
        .open()
        .await
        .unwrap();
    let mut filled = 0;
    while q.put_nowait(vec![1; 400]).is_ok() {
        filled += 1;
    }
    assert!(filled >= 2);
    let big = tokio::spawn({
        let q = q.clone();
        async move { q.put(vec![0xA; 2000]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(!big.is_finished(), "the big put waits for bytes");
    assert_eq!(q.get_nowait().unwrap(), vec![1; 400]); // frees too little for it
    let small = tokio::spawn({
        let q = q.clone();
        async move { q.put(vec![0xB; 100]).await }
    });
    tokio::time::sleep(Duration::from_millis(200)).await;
    // Drain; record the order the two waiting puts' items come out in.
    let mut order = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(10);
    while order.len() < 2 {
        assert!(Instant::now() < deadline, "the puts never finished");
        match q.get_nowait() {
            Ok(v) if v[0] == 0xA || v[0] == 0xB => order.push(v[0]),
            Ok(_) => {}
            Err(_) => tokio::time::sleep(Duration::from_millis(10)).await,
        }
    }
    big.await.unwrap().unwrap();
    small.await.unwrap().unwrap();
    assert_eq!(order, vec![0xA, 0xB], "the later put was served first");
}

/// Getters granted an item each, one of which turns out damaged when reached: the getter
/// left without an item must go on waiting, not return `Empty` from `get().await`.
#[tokio::test]
async fn a_getter_whose_item_was_found_damaged_keeps_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q.ringq");
    let q = Queue::<Vec<u8>, Raw>::builder(&path).open().await.unwrap();
    let getters: Vec<_> = (0..3)
        .map(|_| {
            let q = q.clone();
            tokio::spawn(async move { q.get().await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(100)).await; // all three wait
    q.put_nowait(vec![1; 64]).unwrap();
    q.put_nowait(vec![0xAB; 64]).unwrap();
    q.put_nowait(vec![3; 64]).unwrap();
    corrupt(&path, &[0xAB; 64]);
    tokio::time::sleep(Duration::from_millis(200)).await;
    let mut got = Vec::new();
    let mut waiting = Vec::new();
    for g in getters {
        if g.is_finished() {
            got.push(g.await.unwrap());
        } else {
            waiting.push(g);
        }
    }
    assert!(
        got.iter().all(|r| r.is_ok()),
        "get().await returned an error: {:?}",
        got.iter()
            .filter_map(|r| r.as_ref().err())
            .collect::<Vec<_>>()
    );
    assert_eq!(got.len(), 2);
    assert_eq!(waiting.len(), 1, "one getter still waits for an item");
    q.put_nowait(vec![4; 64]).unwrap();
    let last = tokio::time::timeout(Duration::from_secs(5), waiting.pop().unwrap())
        .await
        .expect("the waiting getter gets the next item");
    assert_eq!(last.unwrap().unwrap(), vec![4; 64]);
}
