//! A crash-safe worker: each job is taken with `get_guarded` and removed only when its guard
//! is committed, after the work is done. If the worker dies before committing (here: it
//! "crashes" by dropping the guard), the job is delivered again, first in line, with the
//! same sequence number, so downstream can drop a duplicate by `(epoch, seq)`.
//!
//! ```text
//! cargo run --example guarded_worker [-- PATH]
//! ```

use ringq::{Durability, Queue};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ringq::Error> {
    let path = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("ringq-worker-{}.q", std::process::id()))
        });
    let q: Queue<String> = Queue::builder(&path)
        .durability(Durability::Sync)
        .open()
        .await?;
    for name in ["resize photo", "send email", "bill customer"] {
        q.put(name.to_string()).await?;
    }

    // The first attempt at the first job fails before it commits: the guard is dropped and
    // the job goes back to the head of the queue (a crash would do the same on reopen).
    let guard = q.get_guarded().await?;
    let first_seq = guard.seq();
    println!(
        "attempt 1: job {} ({}) failed, not committed",
        guard.seq(),
        guard.item()
    );
    drop(guard);

    while !q.empty() {
        let guard = q.get_guarded().await?;
        let again = if guard.seq() == first_seq {
            " (delivered again)"
        } else {
            ""
        };
        println!("working on job {}{again}: {}", guard.seq(), guard.item());
        // ... do the work; only then remove the job for good (durably, under Sync) ...
        let job = guard.commit().await?;
        println!("  done: {job}");
    }
    println!("queue empty; {} holds nothing to redo", path.display());
    drop(q);
    let _ = std::fs::remove_file(&path);
    Ok(())
}
