//! # ringq: a persistent FIFO queue on a memory-mapped ring file
//!
//! ringq gives a program a queue that lives in one file, survives `kill -9` (and, with the
//! durability you choose, a power cut), and runs at memory speed. Start with [`Queue`], the
//! async `asyncio.Queue` contract on tokio:
//!
//! ```
//! # #[tokio::main(flavor = "current_thread")]
//! # async fn main() -> Result<(), ringq::Error> {
//! # let dir = tempfile::tempdir().unwrap();
//! # let path = dir.path().join("jobs.q");
//! use ringq::{Durability, Queue};
//!
//! #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
//! struct Job { id: u64, url: String }
//!
//! // maxsize 0 = unbounded; Buffered durability: survives kill -9, not a power cut.
//! let q: Queue<Job> = Queue::create(&path, 0).await?;
//! q.put(Job { id: 1, url: "https://example.org".into() }).await?;
//! let job = q.get().await?;
//! q.task_done()?;
//! assert_eq!(job.id, 1);
//! drop(q);
//!
//! // Durable acknowledgements: every put returns after its record and a header naming it are
//! // on disk. Concurrent putters share one commit.
//! let q: Queue<Job> = Queue::builder(&path)
//!     .maxsize(1000)
//!     .durability(Durability::Sync)
//!     .open()
//!     .await?;
//! q.put(Job { id: 2, url: "https://example.com".into() }).await?;
//!
//! // At-least-once: the item is removed only when the guard is committed.
//! let guard = q.get_guarded().await?;
//! assert_eq!(guard.id, 2);
//! guard.commit().await?;
//! # Ok(()) }
//! ```
//!
//! ## Choosing durability
//! - [`Durability::Buffered`] (default): an acknowledged `put`/`get` is in the page cache. It
//!   survives the process being killed; a power cut may lose recent operations.
//! - [`Durability::Periodic`]: as Buffered, plus a real flush at most every interval on a
//!   background thread: a power cut loses at most the interval plus one flush.
//! - [`Durability::Sync`]: `put` and `get` return only when durable; group commit shares one
//!   flush among all callers waiting at the same time.
//!
//! Underneath, [`RingFile`] is the synchronous ring (one owner, zero copy: records are written
//! straight into the map and read straight out of it). [`MemStorage`] runs it in memory and
//! models the page cache for crash tests.

pub mod codec;
mod error;
pub mod format;
pub mod inspect;
mod map;
mod queue;
mod recovery;
#[cfg(any(feature = "nats", feature = "kafka"))]
pub mod relay;
mod ring;
mod stats;
mod storage;

pub use codec::{Bincode, Codec, Pod, Raw};
pub use error::{Error, Result};
pub use map::{MappedFile, Opened};
pub use queue::{Durability, Guard, GuardBatch, Queue, QueueBuilder};
pub use recovery::RecoveryReport;
pub use ring::{
    Record, Records, RingFile, RingOptions, SourceMark, Taken, DEFAULT_INITIAL_CAPACITY,
};
pub use stats::{CommitLatency, Stats};
pub use storage::{ConcurrentFlush, MemStorage, Storage, Tear};
