//! Review of the issue 17 `Queue<T>` accounting rewrite: each test here failed on the code
//! the review started from.

use std::io::{Seek, SeekFrom, Write};
use std::time::Duration;

use ringq::{Queue, Raw};

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
    assert_eq!(q.get().await.unwrap(), vec![3; 64], "the damaged record is skipped");
    q.task_done().unwrap();
    assert_eq!(q.qsize(), 0);
    assert_eq!(q.stats().damaged, 1);
    tokio::time::timeout(Duration::from_secs(5), q.join())
        .await
        .expect("join waited for a record no get can ever return");
}
