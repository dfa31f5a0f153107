//! `Queue<T>`: the asyncio.Queue / aiodiskqueue contract on tokio, over a [`RingFile`].
//!
//! The ring and every count that decides (items to get, room under `maxsize`, unfinished
//! tasks) change together under one std mutex, never held across an `.await`; each
//! operation is one critical section. Getters and putters that must wait queue in FIFO wait
//! lists under the same mutex (`wait.rs`): a freed unit is granted to the oldest waiter,
//! and a waiter dropped with a grant passes it on, so waiting is cancel-safe, in arrival
//! order and lost-wakeup-free. The uncontended path takes the mutex once and wakes no one.
//! Durable commits run on a dedicated flusher thread.

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
mod wait;

pub use guard::{Guard, GuardBatch};
use inner::{Inner, Kind, PendingRemoval, Reserved};

/// Runs `f` (system calls: growth, a commit, opening) off the async worker: on tokio's
/// blocking pool inside a tokio runtime, inline on the calling thread under any other
/// executor (which has no worker pool of ours to protect).
async fn off_worker<R: Send + 'static>(
    context: &'static str,
    path: &Path,
    f: impl FnOnce() -> R + Send + 'static,
) -> Result<R> {
    match tokio::runtime::Handle::try_current() {
        Ok(rt) => rt
            .spawn_blocking(f)
            .await
            .map_err(|e| Error::io(context, path, std::io::Error::other(e))),
        Err(_) => Ok(f()),
    }
}

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
    /// Most items the queue holds before `put` waits (0: unbounded, the default). Items
    /// taken by guards and not yet committed count; any value is accepted (a huge one is
    /// effectively no limit).
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
        let ring = off_worker("cannot open", &self.path, open).await??;
        Ok(Queue {
            inner: Inner::start(ring, self.path, self.maxsize, self.durability),
            _item: PhantomData,
        })
    }
}

/// A persistent, async FIFO queue of `T` in one file: the `asyncio.Queue` contract.
///
/// Cheap to clone: every clone is a handle to the same queue, `Send + Sync`, usable from any
/// task, thread or runtime: no tokio runtime, and no time driver, is needed to open it or to
/// wait on it (under another executor, the rare system calls that tokio would run on its
/// blocking pool run on the calling thread). The file's lock is held until the last clone,
/// [`Guard`] and [`GuardBatch`] is dropped.
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
    /// Putters waiting for room are served in the order they started waiting. An item that
    /// cannot fit even into the empty ring at its largest (`max_bytes`) fails with
    /// [`Error::TooLarge`] instead of waiting.
    ///
    /// # Errors under [`Durability::Sync`]
    /// The item is queued before its commit is asked for. If that commit fails, `put`
    /// returns the error ([`Error::Poisoned`] or the flush's [`Error::Io`]) and **the item
    /// stays queued**: this process still delivers it, but whether it survives a power cut
    /// is unknown. Do not put it again blindly: that delivers it twice. Reopen the queue
    /// (recovery re-verifies what is on disk) and check, or let consumers drop duplicates.
    ///
    /// # Cancel safety
    /// Dropped while waiting for room, it puts nothing, and room it was handed passes to the
    /// next putter. Once the item is being written it completes: the rare write that must
    /// grow the file runs on a blocking thread, which also counts the item (gettable, one
    /// more task for [`Queue::join`], its place under `maxsize`) in the same step, even if
    /// this future is dropped. Under [`Durability::Sync`] a put dropped while waiting for
    /// its commit leaves the item queued (not yet known durable).
    ///
    /// Outside a tokio runtime (another executor), that write runs on the calling thread.
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
        let reserved = {
            let mut g = self.inner.turn(Kind::Put).await?;
            if g.push_is_cheap(len) {
                let r = self
                    .inner
                    .push_locked::<T, C>(&mut g.0, &item, len, upstream_seq);
                g.0.wake();
                r.map(|()| None)
            } else {
                // Growth or a commit: hold the place, write on a blocking thread.
                g.0.pending_puts += 1;
                Ok(Some(Reserved {
                    inner: Arc::clone(&self.inner),
                    held: true,
                    blocked: false,
                }))
            }
        }?;
        let Some(mut reserved) = reserved else {
            return self.inner.durable_ack().await;
        };
        let mut item = item;
        loop {
            // Enabled before the push is tried, so a removal after a `Full` cannot be missed.
            let room = self.inner.bytes_freed.notified();
            tokio::pin!(room);
            room.as_mut().enable();
            let inner = Arc::clone(&self.inner);
            let (r, back, res) = off_worker("cannot write to", &self.inner.path, move || {
                let mut reserved = reserved;
                let r = inner.push_reserved::<T, C>(&mut reserved, &item, len, upstream_seq);
                (r, item, reserved)
            })
            .await?;
            (item, reserved) = (back, res);
            match r {
                Ok(()) => return self.inner.durable_ack().await,
                // The byte limit: keep the place (first in line) until a removal frees bytes.
                Err(Error::Full) => room.await,
                Err(e) => return Err(e),
            }
        }
    }

    /// Puts an item if there is room now, else fails with [`Error::Full`]. No room while
    /// a [`Queue::put`] waits for it (under `maxsize`, or for bytes under the byte limit):
    /// waiting putters go first.
    ///
    /// Under [`Durability::Sync`] this does not wait for the commit (it is not async); call
    /// [`Queue::sync`] to wait for durability. A push that must grow the file grows it on
    /// the calling thread.
    pub fn put_nowait(&self, item: T) -> Result<()> {
        let len = C::encoded_len(&item).map_err(Error::Encode)?;
        {
            let mut g = self.inner.lock()?;
            if !g.0.may_pass(Kind::Put) {
                return Err(Error::Full);
            }
            let r = self.inner.push_locked::<T, C>(&mut g.0, &item, len, None);
            g.0.wake();
            r?;
        }
        if self.inner.durability == Durability::Sync {
            self.inner.committer.request();
        }
        Ok(())
    }

    /// Removes and returns the next item, waiting while the queue is empty.
    ///
    /// An item that does not decode as `T` is removed and comes back as [`Error::Decode`]
    /// with its raw bytes: nothing is lost and the queue moves on. It was gotten all the
    /// same: mark it done with [`Queue::task_done`], or [`Queue::join`] waits for it.
    ///
    /// # Cancel safety
    /// Dropped while waiting for an item, it takes nothing, and an item it was handed passes
    /// to the next getter. Under [`Durability::Sync`], a get dropped while its removal is
    /// being committed gives the item back, first in line.
    pub async fn get(&self) -> Result<T> {
        loop {
            if self.inner.durability != Durability::Sync {
                let mut g = self.inner.turn(Kind::Get).await?;
                let before = g.len();
                let popped = self.inner.pop_locked::<T, C>(&mut g.0);
                g.0.wake();
                match popped? {
                    Some(r) => return r,
                    // Damaged records were dropped (by this pop, or by another since this
                    // getter was handed an item): wait again.
                    None if g.len() < before || g.is_empty() => continue,
                    None => return Err(Error::Empty),
                }
            }
            // Sync: hold the item while its removal commits, so a cancelled get gives it back.
            let mut items = Vec::with_capacity(1);
            let (taken, pending) = {
                let mut g = self.inner.turn(Kind::Get).await?;
                let taken = self.inner.take_locked::<T, C>(&mut g.0, 1, &mut items);
                let mut pending = PendingRemoval {
                    inner: Arc::clone(&self.inner),
                    seqs: Vec::with_capacity(1),
                    finished: false,
                };
                if let Some((seq, _)) = items.first() {
                    if let Err(e) = g.begin_removal(*seq) {
                        drop(g);
                        self.inner.release(&[*seq]);
                        return Err(e);
                    }
                    pending.seqs.push(*seq);
                }
                g.0.wake();
                (taken, pending)
            };
            taken?; // the lock is released: `pending` may be dropped here
            if let Some((_, item)) = items.pop() {
                pending.wait().await?;
                return Ok(item);
            }
        }
    }

    /// Removes and returns the next item if there is one, else fails with [`Error::Empty`].
    ///
    /// Under [`Durability::Sync`] this does not wait for the commit of the removal (it is
    /// not async): after a power cut the item may be delivered again. Use [`Queue::get`] or
    /// a guard's commit where that matters.
    pub fn get_nowait(&self) -> Result<T> {
        loop {
            let popped = {
                let mut g = self.inner.lock()?;
                if !g.0.may_pass(Kind::Get) {
                    return Err(Error::Empty);
                }
                let before = g.len();
                let popped = self.inner.pop_locked::<T, C>(&mut g.0);
                g.0.wake();
                match popped? {
                    None if g.len() >= before => return Err(Error::Empty),
                    popped => popped,
                }
            };
            if let Some(r) = popped {
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
        let mut batch = self.inner.take_batch::<T, C>(1).await?;
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
        self.inner.take_batch::<T, C>(max.max(1)).await
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
    /// done with [`Queue::task_done`]. A record found damaged when it is reached (skipped,
    /// never returned, counted in [`crate::Stats::damaged`]) counts as done.
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
    fn assert_send<X: Send>(_: &X) {}

    #[allow(dead_code)]
    fn futures_are_send(q: Queue<Vec<u8>>, g: Guard<Vec<u8>>) {
        assert_send(&q.put(vec![]));
        assert_send(&q.put_from_source(vec![], 1));
        assert_send(&q.get());
        assert_send(&q.get_guarded());
        assert_send(&q.get_guarded_batch(2));
        assert_send(&q.join());
        assert_send(&q.sync());
        assert_send(&g.commit());
    }

    #[test]
    fn public_types_are_send_and_sync() {
        assert_send_sync::<Queue<Vec<u8>>>();
        assert_send_sync::<Guard<Vec<u8>>>();
        assert_send_sync::<GuardBatch<String>>();
        assert_send_sync::<Error>();
    }
}
