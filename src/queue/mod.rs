//! `Queue<T>`: the asyncio.Queue / aiodiskqueue contract on tokio, over a [`RingFile`].
//!
//! Waiting is done with two fair tokio semaphores: `items` (what getters may take) and
//! `space` (what putters may add, when `maxsize > 0`). Their acquire futures are
//! cancel-safe and served in the order they started waiting, which gives FIFO putters and
//! getters and lost-wakeup-free hand-offs. The ring itself sits behind a std mutex that is
//! never held across an `.await`; durable commits run on a dedicated flusher thread.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use crate::codec::{Bincode, Codec};
use crate::error::{Error, Result};
use crate::map::MappedFile;
use crate::recovery::RecoveryReport;
use crate::ring::{RingFile, RingOptions, DEFAULT_INITIAL_CAPACITY};
use crate::storage::{ConcurrentFlush, MemStorage, Storage};

mod commit;
mod guard;
mod inner;

pub use guard::{Guard, GuardBatch};
use inner::Inner;

/// When acknowledged operations reach the disk. See `ARCHITECTURE.md` for what each policy
/// can lose.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// `put` and `get` return once the change is in the page cache: it survives `kill -9`,
    /// not a power cut. Fastest.
    #[default]
    Buffered,
    /// As `Buffered`, plus a real synchronous flush at most every interval, off the async
    /// executor. A power cut loses at most the last interval plus one flush.
    Periodic(Duration),
    /// `put` and `get` return only once their change and a header slot naming it are on disk.
    /// Concurrent callers share one commit (group commit).
    Sync,
}

/// The storage a queue runs on: a file, or the in-memory model (for tests).
#[derive(Debug)]
pub(crate) enum Backing {
    File(MappedFile),
    Memory(MemStorage),
}

impl Storage for Backing {
    fn bytes(&self) -> &[u8] {
        match self {
            Backing::File(f) => f.bytes(),
            Backing::Memory(m) => m.bytes(),
        }
    }
    fn bytes_mut(&mut self) -> &mut [u8] {
        match self {
            Backing::File(f) => f.bytes_mut(),
            Backing::Memory(m) => m.bytes_mut(),
        }
    }
    fn flush(&mut self, offset: usize, len: usize) -> std::io::Result<()> {
        match self {
            Backing::File(f) => f.flush(offset, len),
            Backing::Memory(m) => m.flush(offset, len),
        }
    }
    fn grow(&mut self, new_len: usize) -> std::io::Result<()> {
        match self {
            Backing::File(f) => f.grow(new_len),
            Backing::Memory(m) => m.grow(new_len),
        }
    }
    fn concurrent_flusher(&self) -> Option<Arc<dyn ConcurrentFlush>> {
        match self {
            Backing::File(f) => f.concurrent_flusher(),
            Backing::Memory(_) => None,
        }
    }
    fn path(&self) -> Option<&Path> {
        match self {
            Backing::File(f) => Storage::path(f),
            Backing::Memory(_) => None,
        }
    }
}

/// Configures and opens a [`Queue`]. Made by [`Queue::builder`].
#[derive(Debug)]
#[must_use = "a builder does nothing until .open().await"]
pub struct QueueBuilder<T, C = Bincode> {
    path: PathBuf,
    maxsize: usize,
    durability: Durability,
    initial_capacity: u64,
    max_bytes: Option<u64>,
    memory: Option<MemStorage>,
    _item: PhantomData<fn() -> (T, C)>,
}

impl<T, C> QueueBuilder<T, C>
where
    T: Send + 'static,
    C: Codec<T>,
{
    /// Most items the queue holds before `put` waits (0: unbounded, the default).
    pub fn maxsize(mut self, maxsize: usize) -> Self {
        self.maxsize = maxsize;
        self
    }

    /// When operations become durable (default [`Durability::Buffered`]).
    pub fn durability(mut self, durability: Durability) -> Self {
        self.durability = durability;
        self
    }

    /// Ring capacity of a new file, in bytes (default 256 KiB; it grows on demand).
    pub fn initial_capacity(mut self, bytes: u64) -> Self {
        self.initial_capacity = bytes;
        self
    }

    /// The largest ring the file may grow to, in bytes. At the limit `put` waits (and
    /// `put_nowait` fails with [`Error::Full`]); a single item larger than the limit fails
    /// with [`Error::TooLarge`].
    pub fn max_bytes(mut self, bytes: u64) -> Self {
        self.max_bytes = Some(bytes);
        self
    }

    /// Chooses how items are encoded: [`Bincode`] (the default), [`crate::Pod`] for
    /// plain-old-data, or [`crate::Raw`] for `Vec<u8>` shared with the CLI.
    pub fn codec<C2: Codec<T>>(self) -> QueueBuilder<T, C2> {
        QueueBuilder {
            path: self.path,
            maxsize: self.maxsize,
            durability: self.durability,
            initial_capacity: self.initial_capacity,
            max_bytes: self.max_bytes,
            memory: self.memory,
            _item: PhantomData,
        }
    }

    /// Runs the queue over the in-memory page-cache model instead of the file (for tests
    /// and fault injection); the path is then only a name.
    pub fn in_memory(mut self, storage: MemStorage) -> Self {
        self.memory = Some(storage);
        self
    }

    /// Opens the file (creating it if needed, recovering it if it exists) and takes its lock.
    pub async fn open(self) -> Result<Queue<T, C>> {
        let options = RingOptions::default()
            .initial_capacity(self.initial_capacity)
            .max_capacity(self.max_bytes)
            .encoding(Some(C::TAG));
        let path = self.path.clone();
        let memory = self.memory;
        let open = move || -> Result<RingFile<Backing>> {
            let backing = match memory {
                Some(m) => Backing::Memory(m),
                None => Backing::File(MappedFile::open(&path, true)?.0),
            };
            RingFile::open_in(backing, &options)
        };
        let ring = tokio::task::spawn_blocking(open)
            .await
            .map_err(|e| Error::io("cannot open", &self.path, std::io::Error::other(e)))??;
        Ok(Queue {
            inner: Inner::start(ring, self.path, self.maxsize, self.durability),
            _item: PhantomData,
        })
    }
}

/// A persistent, async FIFO queue of `T` in one file: the `asyncio.Queue` contract.
///
/// Cheap to clone: every clone is a handle to the same queue, `Send + Sync`, usable from any
/// task, thread or runtime. The file's lock is held until the last clone is dropped.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), ringq::Error> {
/// # let dir = tempfile::tempdir().unwrap();
/// # let path = dir.path().join("jobs.q");
/// use ringq::Queue;
/// #[derive(serde::Serialize, serde::Deserialize, Debug, PartialEq)]
/// struct Job { id: u32 }
///
/// let q: Queue<Job> = Queue::create(&path, 0).await?;
/// q.put(Job { id: 1 }).await?;
/// assert_eq!(q.qsize(), 1);
/// assert_eq!(q.get().await?, Job { id: 1 });
/// q.task_done()?;
/// q.join().await;
/// # Ok(()) }
/// ```
pub struct Queue<T, C = Bincode> {
    inner: Arc<Inner>,
    _item: PhantomData<fn() -> (T, C)>,
}

impl<T, C> Clone for Queue<T, C> {
    fn clone(&self) -> Self {
        Queue {
            inner: Arc::clone(&self.inner),
            _item: PhantomData,
        }
    }
}

impl<T, C> std::fmt::Debug for Queue<T, C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("path", &self.inner.path)
            .field("maxsize", &self.inner.maxsize)
            .field("durability", &self.inner.durability)
            .finish_non_exhaustive()
    }
}

impl<T> Queue<T, Bincode>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + 'static,
{
    /// Opens the queue file at `path`, creating it if needed (recovering it if it exists),
    /// with `maxsize` (0: unbounded) and [`Durability::Buffered`].
    pub async fn create(path: impl AsRef<Path>, maxsize: usize) -> Result<Self> {
        Self::builder(path).maxsize(maxsize).open().await
    }
}

impl<T, C> Queue<T, C>
where
    T: Send + 'static,
    C: Codec<T>,
{
    /// Starts configuring a queue on `path`.
    pub fn builder(path: impl AsRef<Path>) -> QueueBuilder<T, C> {
        QueueBuilder {
            path: path.as_ref().to_path_buf(),
            maxsize: 0,
            durability: Durability::Buffered,
            initial_capacity: DEFAULT_INITIAL_CAPACITY,
            max_bytes: None,
            memory: None,
            _item: PhantomData,
        }
    }

    /// Puts an item, waiting while the queue is full (`maxsize`, or the byte limit).
    ///
    /// # Cancel safety
    /// Dropped while waiting for room, it puts nothing. Once the item is being written it
    /// completes: the rare write that must grow the file runs on a blocking thread and
    /// finishes even if this future is dropped; under [`Durability::Sync`] a put dropped
    /// while waiting for its commit leaves the item queued (not yet known durable).
    pub async fn put(&self, item: T) -> Result<()> {
        self.put_marked(item, None).await
    }

    /// Puts an item that came from position `upstream_seq` of a log (a relay filling this
    /// queue), recording that position with it: every commit names the position together with
    /// the records, so after a crash [`Queue::source_mark`] says exactly where to resume.
    /// Positions must increase, and the relay must be the queue's only producer.
    pub async fn put_from_source(&self, item: T, upstream_seq: u64) -> Result<()> {
        self.put_marked(item, Some(upstream_seq)).await
    }

    /// Where this queue stands in the log a relay fills it from (see
    /// [`Queue::put_from_source`]); `None` for a queue never filled that way.
    pub fn source_mark(&self) -> Option<crate::SourceMark> {
        self.inner.lock().ok()?.source_mark()
    }

    /// Records upstream position `upstream_seq` without putting anything: for records that
    /// are already in the queue (the `unmarked` ones of [`Queue::source_mark`]) or a starting
    /// point. Durable with the next commit ([`Queue::sync`]).
    pub fn set_source_seq(&self, upstream_seq: u64) -> Result<()> {
        self.inner.lock()?.set_source_seq(upstream_seq);
        Ok(())
    }

    async fn put_marked(&self, item: T, upstream_seq: Option<u64>) -> Result<()> {
        let len = C::encoded_len(&item).map_err(Error::Encode)?;
        let mut item = item;
        loop {
            let permit = match &self.inner.space {
                Some(space) => Some(space.acquire().await.map_err(|_| self.inner.closed())?),
                None => None,
            };
            let cheap = self.inner.lock()?.push_is_cheap(len);
            let pushed = if cheap {
                self.inner.push::<T, C>(&item, len, upstream_seq)
            } else {
                // Growth or a commit: system calls that must not run on an async worker.
                let inner = Arc::clone(&self.inner);
                let (r, back) = tokio::task::spawn_blocking(move || {
                    let r = inner.push::<T, C>(&item, len, upstream_seq);
                    (r, item)
                })
                .await
                .map_err(|e| {
                    Error::io(
                        "cannot write to",
                        &self.inner.path,
                        std::io::Error::other(e),
                    )
                })?;
                item = back;
                r
            };
            match pushed {
                Ok(()) => {
                    if let Some(p) = permit {
                        p.forget();
                    }
                    self.inner.after_put();
                    return self.inner.durable_ack().await;
                }
                Err(Error::Full) => {
                    // The byte limit is reached: wait for a get to free room, then retry.
                    drop(permit);
                    self.inner.wait_for_room().await;
                }
                Err(e) => return Err(e),
            }
        }
    }

    /// Puts an item if there is room now, else fails with [`Error::Full`].
    ///
    /// Under [`Durability::Sync`] this does not wait for the commit (it is not async); call
    /// [`Queue::sync`] to wait for durability.
    pub fn put_nowait(&self, item: T) -> Result<()> {
        let len = C::encoded_len(&item).map_err(Error::Encode)?;
        let permit = match &self.inner.space {
            Some(space) => Some(space.try_acquire().map_err(|_| Error::Full)?),
            None => None,
        };
        self.inner.push::<T, C>(&item, len, None)?;
        if let Some(p) = permit {
            p.forget();
        }
        self.inner.after_put();
        if self.inner.durability == Durability::Sync {
            self.inner.committer.request();
        }
        Ok(())
    }

    /// Removes and returns the next item, waiting while the queue is empty.
    ///
    /// An item that does not decode as `T` is removed and comes back as [`Error::Decode`]
    /// with its raw bytes: nothing is lost and the queue moves on.
    ///
    /// # Cancel safety
    /// Dropped while waiting for an item, it takes nothing, and a wake-up it received passes
    /// to the next getter. Under [`Durability::Sync`], a get dropped while its removal is
    /// being committed gives the item back, first in line.
    pub async fn get(&self) -> Result<T> {
        loop {
            self.inner.take_item_permit().await?;
            if self.inner.durability != Durability::Sync {
                if let Some(r) = self.inner.pop::<T, C>()? {
                    return r;
                }
                continue;
            }
            // Sync: hold the item while its removal commits, so a cancelled get gives it back.
            let mut batch = self.inner.take_batch::<T, C>(1)?;
            if let Some((seq, item)) = batch.items.pop() {
                batch.settled = true;
                Inner::remove(&self.inner, vec![seq]).await?;
                return Ok(item);
            }
        }
    }

    /// Removes and returns the next item if there is one, else fails with [`Error::Empty`].
    pub fn get_nowait(&self) -> Result<T> {
        loop {
            let permit = self.inner.items.try_acquire().map_err(|_| Error::Empty)?;
            permit.forget();
            if let Some(r) = self.inner.pop::<T, C>()? {
                if self.inner.durability == Durability::Sync {
                    self.inner.committer.request();
                }
                return r;
            }
        }
    }

    /// Takes the next item without removing it for good: it is removed when the guard is
    /// committed; a dropped guard, or a crash before the commit, delivers it again, first
    /// in line. At-least-once delivery.
    ///
    /// # Cancel safety
    /// Dropped while waiting, it takes nothing.
    pub async fn get_guarded(&self) -> Result<Guard<T>> {
        let mut batch = self.get_guarded_batch(1).await?;
        let (seq, item) = batch.items.pop().expect("a batch holds at least one item");
        batch.settled = true;
        Ok(Guard {
            inner: Arc::clone(&self.inner),
            seq,
            epoch: batch.epoch,
            item: Some(item),
        })
    }

    /// Waits for at least one item, then takes up to `max` items at once (guarded, as
    /// [`Queue::get_guarded`]); commit them together with [`GuardBatch::commit`].
    ///
    /// # Cancel safety
    /// Dropped while waiting, it takes nothing.
    pub async fn get_guarded_batch(&self, max: usize) -> Result<GuardBatch<T>> {
        let max = max.max(1);
        loop {
            self.inner.take_item_permit().await?;
            let mut extra = 0;
            while extra + 1 < max {
                match self.inner.items.try_acquire() {
                    Ok(p) => {
                        p.forget();
                        extra += 1;
                    }
                    Err(_) => break,
                }
            }
            let batch = self.inner.take_batch::<T, C>(extra + 1)?;
            if !batch.items.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// Marks one gotten item as processed (for [`Queue::join`]).
    pub fn task_done(&self) -> Result<()> {
        let tasks = &self.inner.tasks;
        let before = tasks
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| n.checked_sub(1))
            .map_err(|_| Error::TaskDoneUnderflow)?;
        if before == 1 {
            self.inner.all_done.notify_waiters();
        }
        Ok(())
    }

    /// Waits until every item put (and every item found in the file at open) has been marked
    /// done with [`Queue::task_done`].
    ///
    /// # Cancel safety
    /// Waiting has no effect on the queue; dropping it is always safe.
    pub async fn join(&self) {
        loop {
            let notified = self.inner.all_done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.inner.tasks.load(Ordering::Acquire) == 0 {
                return;
            }
            notified.await;
        }
    }

    /// Makes every operation so far durable (one group commit), whatever the policy.
    ///
    /// # Cancel safety
    /// Dropping it stops the wait, not the commit.
    pub async fn sync(&self) -> Result<()> {
        let ticket = self.inner.committer.request();
        self.inner.committer.wait(ticket, &self.inner.path).await
    }

    /// Items waiting to be gotten.
    pub fn qsize(&self) -> usize {
        self.inner.lock().map(|r| r.len() as usize).unwrap_or(0)
    }

    /// True when no item waits.
    pub fn empty(&self) -> bool {
        self.qsize() == 0
    }

    /// True when `maxsize > 0` and `qsize() >= maxsize`.
    pub fn full(&self) -> bool {
        self.inner.maxsize > 0 && self.qsize() >= self.inner.maxsize
    }

    /// The `maxsize` this handle was opened with (0: unbounded).
    pub fn maxsize(&self) -> usize {
        self.inner.maxsize
    }

    /// The file's path.
    pub fn path(&self) -> &Path {
        &self.inner.path
    }

    /// The file's random identity (with an item's sequence number, a unique id).
    pub fn epoch(&self) -> u64 {
        self.inner.epoch
    }

    /// What recovery did when the file was opened.
    pub fn recovery_report(&self) -> RecoveryReport {
        self.inner
            .lock()
            .map(|r| r.recovery_report().clone())
            .unwrap_or_default()
    }

    /// For a queue opened with [`QueueBuilder::in_memory`]: a snapshot of the page-cache
    /// model (its live and durable images), to check what a crash would leave.
    pub fn memory_snapshot(&self) -> Option<MemStorage> {
        let ring = self.inner.lock().ok()?;
        match ring.storage() {
            Backing::Memory(m) => Some(m.clone()),
            Backing::File(_) => None,
        }
    }

    /// Durable commits made so far (group commit makes this far smaller than the number of
    /// `Sync` operations).
    pub fn commit_count(&self) -> u64 {
        self.inner.lock().map(|r| r.commit_count()).unwrap_or(0)
    }

    /// The numbers an operator watches: depth, bytes, what was put, gotten and committed
    /// since open, commit latency, damage, growth. See [`crate::Stats`] for each field.
    pub fn stats(&self) -> crate::Stats {
        let (ring, next_seq) = match self.inner.lock() {
            Ok(r) => (r.stats(), r.next_seq()),
            Err(_) => return crate::Stats::default(),
        };
        self.inner.counters.fill(ring, next_seq)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn assert_send_sync<X: Send + Sync>() {}

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<Queue<Vec<u8>>>();
        assert_send_sync::<Guard<Vec<u8>>>();
        assert_send_sync::<GuardBatch<String>>();
        assert_send_sync::<Error>();
    }
}
