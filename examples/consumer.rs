//! A consumer process: opens the queue file the producer wrote, drains it, prints each
//! message, and exits. See `examples/producer.rs` for how to run the pair.
//!
//! ```text
//! cargo run --example producer -- /tmp/messages.q 5
//! cargo run --example consumer -- /tmp/messages.q
//! ```

use std::time::Duration;

use ringq::{Error, Queue};

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), Error> {
    let path = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| std::env::temp_dir().join("ringq-example.q"));

    // One process holds the file at a time: wait (up to 10 s) while the producer has it.
    let mut tries = 0;
    let q: Queue<String> = loop {
        match Queue::builder(&path).open().await {
            Err(Error::Locked { .. }) if tries < 100 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            other => break other?,
        }
    };
    let mut n = 0;
    // get_nowait fails with Error::Empty once the queue is drained.
    while let Ok(message) = q.get_nowait() {
        println!("{message}");
        q.task_done()?;
        n += 1;
    }
    println!("drained {n} messages from {}", path.display());
    Ok(())
}
