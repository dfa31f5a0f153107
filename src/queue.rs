//! `Queue<T>`: the asyncio.Queue / aiodiskqueue contract on tokio, over a [`RingFile`].
//!
//! Waiting is done with two fair tokio semaphores: `items` (what getters may take) and
//! `space` (what putters may add, when `maxsize > 0`). Their acquire futures are
//! cancel-safe and served in the order they started waiting, which gives FIFO putters and
//! getters and lost-wakeup-free hand-offs. The ring itself sits behind a std mutex that is
//! never held across an `.await`; durable commits run on a dedicated flusher thread.

use std::marker::PhantomData;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use tokio::sync::{watch, Notify, Semaphore};

use crate::codec::{Bincode, Codec};
use crate::error::{Error, Result};
use crate::format::{PAGE, SLOT_OFFSETS};
use crate::map::MappedFile;
use crate::recovery::RecoveryReport;
use crate::ring::{RingFile, RingOptions, DEFAULT_INITIAL_CAPACITY};
use crate::storage::{ConcurrentFlush, MemStorage, Storage};

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
}

/// An item taken by [`Queue::get_guarded`]: removed for good by [`Guard::commit`], delivered
/// again (first in line) when dropped uncommitted or after a crash.
pub struct Guard<T> {
    inner: Arc<Inner>,
    seq: u64,
    epoch: u64,
    item: Option<T>,
}

impl<T> Guard<T> {
    /// The item's sequence number: with [`Guard::epoch`], an id that stays the same when the
    /// item is delivered again, so a consumer downstream can drop duplicates.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The file's random identity.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The item.
    pub fn item(&self) -> &T {
        self.item
            .as_ref()
            .expect("the item is present until the guard is consumed")
    }

    /// Removes the item for good (durably under [`Durability::Sync`]) and returns it.
    ///
    /// # Cancel safety
    /// Under [`Durability::Sync`], dropped before its commit is on disk, the item is given
    /// back, first in line (as a dropped guard would be). Otherwise it completes at once.
    pub async fn commit(mut self) -> Result<T> {
        let item = self
            .item
            .take()
            .expect("the item is present until the guard is consumed");
        Inner::remove(&self.inner, vec![self.seq]).await?;
        Ok(item)
    }
}

impl<T> std::ops::Deref for Guard<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.item()
    }
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if self.item.is_some() {
            self.inner.release(&[self.seq]);
        }
    }
}

/// Items taken together by [`Queue::get_guarded_batch`].
pub struct GuardBatch<T> {
    inner: Arc<Inner>,
    epoch: u64,
    items: Vec<(u64, T)>,
    settled: bool,
}

impl<T> GuardBatch<T> {
    /// The file's random identity.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The items with their sequence numbers, oldest first.
    pub fn items(&self) -> &[(u64, T)] {
        &self.items
    }

    /// How many items the batch holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the batch holds no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Removes every item of the batch for good (durably under [`Durability::Sync`]).
    ///
    /// # Cancel safety
    /// Under [`Durability::Sync`], dropped before its commit is on disk, the items are given
    /// back, first in line. Otherwise it completes at once.
    pub async fn commit(mut self) -> Result<Vec<(u64, T)>> {
        let seqs: Vec<u64> = self.items.iter().map(|(s, _)| *s).collect();
        self.settled = true;
        Inner::remove(&self.inner, seqs).await?;
        Ok(std::mem::take(&mut self.items))
    }
}

impl<T> Drop for GuardBatch<T> {
    fn drop(&mut self) {
        if !self.settled {
            let seqs: Vec<u64> = self.items.iter().map(|(s, _)| *s).collect();
            self.inner.release(&seqs);
        }
    }
}

// ------------------------------------------------------------------------- shared state

struct Inner {
    ring: Mutex<Option<RingFile<Backing>>>,
    items: Semaphore,
    space: Option<Semaphore>,
    /// Woken when a get frees bytes (for putters blocked by the byte limit).
    room: Notify,
    maxsize: usize,
    durability: Durability,
    /// Unfinished tasks: +1 per put (and per item found at open), -1 per `task_done`.
    tasks: AtomicU64,
    all_done: Notify,
    committer: Arc<Committer>,
    flusher: Mutex<Option<JoinHandle<()>>>,
    path: PathBuf,
    epoch: u64,
}

impl Inner {
    fn start(
        ring: RingFile<Backing>,
        path: PathBuf,
        maxsize: usize,
        durability: Durability,
    ) -> Arc<Inner> {
        let len = ring.len();
        let epoch = ring.epoch();
        let items = Semaphore::new((len as usize).min(Semaphore::MAX_PERMITS));
        let space = (maxsize > 0).then(|| Semaphore::new(maxsize.saturating_sub(len as usize)));
        let committer = Arc::new(Committer::new());
        let inner = Arc::new(Inner {
            ring: Mutex::new(Some(ring)),
            items,
            space,
            room: Notify::new(),
            maxsize,
            durability,
            tasks: AtomicU64::new(len),
            all_done: Notify::new(),
            committer: Arc::clone(&committer),
            flusher: Mutex::new(None),
            path,
            epoch,
        });
        let weak = Arc::downgrade(&inner);
        let period = match durability {
            Durability::Periodic(d) => Some(d.max(Duration::from_millis(1))),
            _ => None,
        };
        let handle = std::thread::Builder::new()
            .name("ringq-flusher".into())
            .spawn(move || flusher_loop(weak, committer, period))
            .ok();
        *inner.flusher.lock().unwrap_or_else(|p| p.into_inner()) = handle;
        inner
    }

    /// Waits, cancel-safely and in arrival order, for an item to become available and claims
    /// it (the caller then takes it from the ring without awaiting).
    async fn take_item_permit(&self) -> Result<()> {
        let permit = self.items.acquire().await.map_err(|_| self.closed())?;
        permit.forget();
        Ok(())
    }

    fn closed(&self) -> Error {
        Error::io(
            "the queue is closed:",
            &self.path,
            std::io::Error::other("closed"),
        )
    }

    fn lock(&self) -> Result<MappedRing<'_>> {
        let guard = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            return Err(self.closed());
        }
        Ok(MappedRing(guard))
    }

    fn push<T, C: Codec<T>>(&self, item: &T, len: usize, upstream_seq: Option<u64>) -> Result<()> {
        let mut ring = self.lock()?;
        // The encoder runs under the lock, writing straight into the map: keep it short.
        ring.push_encoded(len, |buf| C::encode_into(item, buf))?;
        if let Some(seq) = upstream_seq {
            // Under the same lock as the push: no commit can name one without the other.
            ring.set_source_seq(seq);
        }
        if ring.wants_checkpoint() {
            self.committer.request();
        }
        Ok(())
    }

    fn after_put(&self) {
        self.tasks.fetch_add(1, Ordering::AcqRel);
        self.items.add_permits(1);
    }

    /// Removes the next item; `None` when the ring had nothing after all (a damaged record
    /// was dropped: the permit is spent and the caller waits again).
    fn pop<T, C: Codec<T>>(&self) -> Result<Option<Result<T>>> {
        let (popped, qsize) = {
            let mut ring = self.lock()?;
            let popped = ring.pop_with(|seq, bytes| {
                C::decode(bytes).map_err(|reason| Error::Decode {
                    seq,
                    reason,
                    raw: bytes.to_vec(),
                })
            })?;
            (popped, ring.len() as usize)
        };
        if popped.is_some() {
            self.freed_one(qsize);
        }
        Ok(popped)
    }

    fn freed_one(&self, qsize_after: usize) {
        if let Some(space) = &self.space {
            if qsize_after < self.maxsize {
                space.add_permits(1);
            }
        }
        self.room.notify_waiters();
    }

    async fn wait_for_room(&self) {
        let notified = self.room.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // A get may have freed room between the failed push and now: retry after a short
        // wait either way.
        let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
    }

    fn take_batch<T, C: Codec<T>>(self: &Arc<Self>, n: usize) -> Result<GuardBatch<T>> {
        let mut items = Vec::with_capacity(n);
        let mut undecodable = None;
        let mut ring = self.lock()?;
        for _ in 0..n {
            let Some(taken) = ring.take()? else {
                break;
            };
            let bytes = ring.taken_payload(&taken).unwrap_or(&[]);
            match C::decode(bytes) {
                Ok(item) => items.push((taken.seq, item)),
                Err(reason) => {
                    let raw = bytes.to_vec();
                    ring.commit_taken(taken.seq)?;
                    undecodable = Some(Error::Decode {
                        seq: taken.seq,
                        reason,
                        raw,
                    });
                    break;
                }
            }
        }
        drop(ring);
        let batch = GuardBatch {
            inner: Arc::clone(self),
            epoch: self.epoch,
            items,
            settled: false,
        };
        match undecodable {
            Some(e) => {
                drop(batch); // releases what was taken before the bad item
                Err(e)
            }
            None => Ok(batch),
        }
    }

    /// Removes taken items for good; under `Sync`, returns once the removal is on disk. If
    /// this future is dropped (or the commit fails) before that, the items are given back,
    /// first in line, and the next commit names them present again.
    async fn remove(this: &Arc<Inner>, seqs: Vec<u64>) -> Result<()> {
        if this.durability != Durability::Sync {
            return this.commit_taken(&seqs);
        }
        {
            let mut ring = this.lock()?;
            for &seq in &seqs {
                ring.begin_removal(seq)?;
            }
        }
        let mut pending = PendingRemoval {
            inner: Arc::clone(this),
            seqs,
            finished: false,
        };
        let ticket = this.committer.request();
        this.committer.wait(ticket, &this.path).await?;
        pending.finish()
    }

    fn commit_taken(&self, seqs: &[u64]) -> Result<()> {
        let qsize = {
            let mut ring = self.lock()?;
            for &seq in seqs {
                ring.commit_taken(seq)?;
            }
            ring.len() as usize
        };
        for _ in seqs {
            self.freed_one(qsize);
        }
        Ok(())
    }

    fn release(&self, seqs: &[u64]) {
        let Ok(mut ring) = self.lock() else {
            return;
        };
        let mut n = 0;
        for &seq in seqs.iter().rev() {
            if ring.release(seq).is_ok() {
                n += 1;
            }
        }
        drop(ring);
        self.items.add_permits(n);
    }

    /// Under `Sync`, waits for a commit covering everything done so far.
    async fn durable_ack(&self) -> Result<()> {
        if self.durability != Durability::Sync {
            return Ok(());
        }
        let ticket = self.committer.request();
        self.committer.wait(ticket, &self.path).await
    }

    /// One durable commit, flushing outside the ring lock where the storage allows it.
    fn commit_now(&self) -> Result<()> {
        let (plan, flusher) = {
            let mut ring = self.lock()?;
            if !ring.needs_commit() && !ring.is_poisoned() {
                return Ok(());
            }
            let plan = ring.prepare_commit(false)?;
            (plan, ring.concurrent_flusher())
        };
        let Some(flusher) = flusher else {
            return self.lock()?.commit_planned(plan);
        };
        for r in &plan.ranges {
            if let Err(e) = flusher.flush(r.start, r.len()) {
                return Err(self.lock()?.fail_commit(e));
            }
        }
        let page = self.lock()?.write_slot(&plan)?;
        if let Some(page) = page {
            if let Err(e) = flusher.flush(SLOT_OFFSETS[page], PAGE) {
                return Err(self.lock()?.fail_commit(e));
            }
        }
        self.lock()?.finish_commit(&plan);
        Ok(())
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.committer.stop();
        let handle = self
            .flusher
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        if let Some(h) = handle {
            if h.thread().id() != std::thread::current().id() {
                let _ = h.join();
            }
        }
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner()).take();
        if let Some(ring) = ring {
            if !ring.is_poisoned() {
                if let Err(e) = ring.close() {
                    log::warn!("{}: clean close failed: {e}", self.path.display());
                }
            }
        }
    }
}

/// Removals waiting for their commit; dropped unfinished, it gives the items back.
struct PendingRemoval {
    inner: Arc<Inner>,
    seqs: Vec<u64>,
    finished: bool,
}

impl PendingRemoval {
    fn finish(&mut self) -> Result<()> {
        self.finished = true;
        let qsize = {
            let mut ring = self.inner.lock()?;
            for &seq in &self.seqs {
                ring.finish_removal(seq)?;
            }
            ring.len() as usize
        };
        for _ in &self.seqs {
            self.inner.freed_one(qsize);
        }
        Ok(())
    }
}

impl Drop for PendingRemoval {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let Ok(mut ring) = self.inner.lock() else {
            return;
        };
        let mut given_back = 0;
        for &seq in self.seqs.iter().rev() {
            if ring.abort_removal(seq).is_ok() {
                given_back += 1;
            }
        }
        drop(ring);
        self.inner.items.add_permits(given_back);
        // A commit may already name them removed: the next one names them present again.
        self.inner.committer.request();
    }
}

/// The locked ring (the `Option` is `Some` while the queue is open).
struct MappedRing<'a>(MutexGuard<'a, Option<RingFile<Backing>>>);

impl std::ops::Deref for MappedRing<'_> {
    type Target = RingFile<Backing>;
    fn deref(&self) -> &Self::Target {
        self.0.as_ref().expect("checked in Inner::lock")
    }
}

impl std::ops::DerefMut for MappedRing<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.as_mut().expect("checked in Inner::lock")
    }
}

// ------------------------------------------------------------------------- group commit

/// Commit requests and their outcome, shared between callers and the flusher thread.
struct Committer {
    requests: Mutex<Requests>,
    wake: Condvar,
    status: watch::Sender<Status>,
}

#[derive(Default)]
struct Requests {
    requested: u64,
    stop: bool,
}

#[derive(Clone, Default)]
struct Status {
    completed: u64,
    failed: Option<String>,
}

impl Committer {
    fn new() -> Self {
        Committer {
            requests: Mutex::new(Requests::default()),
            wake: Condvar::new(),
            status: watch::Sender::new(Status::default()),
        }
    }

    /// Asks for a commit covering everything done before this call; returns its ticket.
    fn request(&self) -> u64 {
        let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        r.requested += 1;
        self.wake.notify_one();
        r.requested
    }

    fn stop(&self) {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        self.wake.notify_one();
    }

    async fn wait(&self, ticket: u64, path: &Path) -> Result<()> {
        let mut rx = self.status.subscribe();
        loop {
            {
                let s = rx.borrow_and_update();
                if let Some(cause) = &s.failed {
                    return Err(Error::Poisoned {
                        path: path.to_path_buf(),
                        cause: cause.clone(),
                    });
                }
                if s.completed >= ticket {
                    return Ok(());
                }
            }
            if rx.changed().await.is_err() {
                return Err(Error::Poisoned {
                    path: path.to_path_buf(),
                    cause: "the queue closed before the commit".into(),
                });
            }
        }
    }
}

/// The flusher thread: one commit at a time, covering every request made before it started.
/// The longest a commit waits to gather callers (see `flusher_loop`).
const MAX_GATHER: Duration = Duration::from_millis(2);

fn flusher_loop(inner: Weak<Inner>, committer: Arc<Committer>, period: Option<Duration>) {
    let mut done = 0u64;
    let mut last = Instant::now();
    // Group commit: when the last commit served several callers, others are likely on their
    // way; gathering them for a small fraction of a commit's cost lets one flush serve more.
    let (mut last_batch, mut last_cost) = (0u64, Duration::ZERO);
    loop {
        let mut target = {
            let mut r = committer.requests.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if r.stop {
                    return;
                }
                if r.requested > done {
                    break r.requested;
                }
                match period {
                    Some(p) => {
                        let left = p.saturating_sub(last.elapsed());
                        if left.is_zero() {
                            break r.requested;
                        }
                        r = committer
                            .wake
                            .wait_timeout(r, left)
                            .map(|(g, _)| g)
                            .unwrap_or_else(|p| p.into_inner().0);
                    }
                    None => r = committer.wake.wait(r).unwrap_or_else(|p| p.into_inner()),
                }
            }
        };
        if last_batch > 1 {
            // The callers the last commit served are on their way back (each woken task puts
            // again): wait until as many have asked, for at most half a commit's cost, so
            // one flush serves them all instead of the first few.
            let deadline = Instant::now() + (last_cost / 2).min(MAX_GATHER);
            let mut r = committer.requests.lock().unwrap_or_else(|p| p.into_inner());
            while r.requested - done < last_batch && !r.stop {
                let left = deadline.saturating_duration_since(Instant::now());
                if left.is_zero() {
                    break;
                }
                r = committer
                    .wake
                    .wait_timeout(r, left)
                    .map(|(g, _)| g)
                    .unwrap_or_else(|p| p.into_inner().0);
            }
            target = r.requested;
        }
        let Some(q) = inner.upgrade() else {
            return;
        };
        let started = Instant::now();
        let result = q.commit_now();
        drop(q);
        last = Instant::now();
        (last_batch, last_cost) = (target - done, last - started);
        done = target;
        committer.status.send_modify(|s| match result {
            Ok(()) => s.completed = s.completed.max(target),
            Err(e) => {
                s.failed.get_or_insert(e.to_string());
            }
        });
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
