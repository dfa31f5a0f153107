//! A producer process: opens the queue file, puts N messages durably, and exits.
//!
//! Run it, then the consumer, sharing one file in turn (the file's lock lets one process in
//! at a time; the consumer waits for it):
//!
//! ```text
//! cargo run --example producer -- /tmp/messages.q 5
//! cargo run --example consumer -- /tmp/messages.q
//! ```
//!
//! The path defaults to `ringq-example.q` in the temporary directory, N to 10.

use ringq::{Durability, Queue};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), ringq::Error> {
    let mut args = std::env::args().skip(1);
    let path = args
        .next()
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ringq-example.q"));
    let n: u32 = args.next().and_then(|s| s.parse().ok()).unwrap_or(10);

    // Sync durability: each put returns once it would survive a power cut.
    let q: Queue<String> = Queue::builder(&path)
        .durability(Durability::Sync)
        .open()
        .await?;
    let pid = std::process::id();
    for i in 0..n {
        q.put(format!("message {i} from process {pid}")).await?;
    }
    println!(
        "put {n} messages into {} ({} waiting)",
        path.display(),
        q.qsize()
    );
    // Dropping the last handle closes the file cleanly and releases its lock.
    Ok(())
}
