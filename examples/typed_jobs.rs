//! A typed job queue: serde structs, a bounded queue (`maxsize`) that makes fast producers
//! wait for slow consumers, several producer and consumer tasks, and `task_done` / `join`.
//!
//! ```text
//! cargo run --example typed_jobs [-- PATH]
//! ```

use std::time::Duration;

use ringq::Queue;
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize, Debug, Clone)]
struct Job {
    id: u32,
    producer: u32,
    url: String,
}

const PRODUCERS: u32 = 3;
const JOBS_EACH: u32 = 20;
const CONSUMERS: u32 = 2;

/// Takes jobs forever (until aborted), marking each one done.
async fn consume(q: Queue<Job>, c: u32) -> Result<(), ringq::Error> {
    loop {
        let job = q.get().await?;
        tokio::time::sleep(Duration::from_millis(2)).await; // the "work"
        if job.id % 10 == 0 {
            println!(
                "consumer {c}: job {} from producer {}: {}",
                job.id, job.producer, job.url
            );
        }
        q.task_done()?;
    }
}

#[tokio::main]
async fn main() -> Result<(), ringq::Error> {
    let path = std::env::args()
        .nth(1)
        .map(std::path::PathBuf::from)
        .unwrap_or_else(|| {
            std::env::temp_dir().join(format!("ringq-jobs-{}.q", std::process::id()))
        });
    // At most 5 jobs wait at once: a put on a full queue waits for a get.
    let q: Queue<Job> = Queue::builder(&path).maxsize(5).open().await?;

    let mut producers = Vec::new();
    for p in 0..PRODUCERS {
        let q = q.clone();
        producers.push(tokio::spawn(async move {
            for i in 0..JOBS_EACH {
                let job = Job {
                    id: p * 1000 + i,
                    producer: p,
                    url: format!("https://example.org/{p}/{i}"),
                };
                q.put(job).await?;
            }
            Ok::<_, ringq::Error>(())
        }));
    }

    let consumers: Vec<_> = (0..CONSUMERS)
        .map(|c| tokio::spawn(consume(q.clone(), c)))
        .collect();

    for p in producers {
        p.await.expect("producer task")?;
    }
    // Wait until every job put has been marked done, then stop the consumers.
    q.join().await;
    for c in consumers {
        c.abort();
        let _ = c.await; // drops the task's queue handle
    }
    println!(
        "all {} jobs done; {} left in {}",
        PRODUCERS * JOBS_EACH,
        q.qsize(),
        path.display()
    );
    drop(q);
    let _ = std::fs::remove_file(&path);
    Ok(())
}
