//! The state every clone of a `Queue` shares: the ring behind its mutex, the waiting
//! primitives, the unfinished-task count, and removals waiting for their commit.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::{Notify, Semaphore};

use super::commit::{flusher_loop, Committer};
use super::{Backing, Durability, GuardBatch};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::ring::RingFile;

// ------------------------------------------------------------------------- shared state

pub(super) struct Inner {
    pub(super) ring: Mutex<Option<RingFile<Backing>>>,
    pub(super) items: Semaphore,
    pub(super) space: Option<Semaphore>,
    /// Woken when a get frees bytes (for putters blocked by the byte limit).
    pub(super) room: Notify,
    pub(super) maxsize: usize,
    pub(super) durability: Durability,
    /// Unfinished tasks: +1 per put (and per item found at open), -1 per `task_done`.
    pub(super) tasks: AtomicU64,
    pub(super) all_done: Notify,
    pub(super) committer: Arc<Committer>,
    pub(super) flusher: Mutex<Option<JoinHandle<()>>>,
    pub(super) path: PathBuf,
    pub(super) epoch: u64,
    /// Gets and commit latency for `Queue::stats`.
    pub(super) counters: crate::stats::QueueCounters,
}

impl Inner {
    pub(super) fn start(
        ring: RingFile<Backing>,
        path: PathBuf,
        maxsize: usize,
        durability: Durability,
    ) -> Arc<Inner> {
        let len = ring.len();
        let epoch = ring.epoch();
        let counters = crate::stats::QueueCounters::new(ring.next_seq());
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
            counters,
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
    pub(super) async fn take_item_permit(&self) -> Result<()> {
        let permit = self.items.acquire().await.map_err(|_| self.closed())?;
        permit.forget();
        Ok(())
    }

    pub(super) fn closed(&self) -> Error {
        Error::io(
            "the queue is closed:",
            &self.path,
            std::io::Error::other("closed"),
        )
    }

    pub(super) fn lock(&self) -> Result<MappedRing<'_>> {
        let guard = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        if guard.is_none() {
            return Err(self.closed());
        }
        Ok(MappedRing(guard))
    }

    pub(super) fn push<T, C: Codec<T>>(
        &self,
        item: &T,
        len: usize,
        upstream_seq: Option<u64>,
    ) -> Result<()> {
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

    pub(super) fn after_put(&self) {
        self.tasks.fetch_add(1, Ordering::AcqRel);
        self.items.add_permits(1);
    }

    /// Removes the next item; `None` when the ring had nothing after all (a damaged record
    /// was dropped: the permit is spent and the caller waits again).
    pub(super) fn pop<T, C: Codec<T>>(&self) -> Result<Option<Result<T>>> {
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
            self.counters.got(1);
            self.freed_one(qsize);
        }
        Ok(popped)
    }

    pub(super) fn freed_one(&self, qsize_after: usize) {
        if let Some(space) = &self.space {
            if qsize_after < self.maxsize {
                space.add_permits(1);
            }
        }
        self.room.notify_waiters();
    }

    pub(super) async fn wait_for_room(&self) {
        let notified = self.room.notified();
        tokio::pin!(notified);
        notified.as_mut().enable();
        // A get may have freed room between the failed push and now: retry after a short
        // wait either way.
        let _ = tokio::time::timeout(Duration::from_millis(50), notified).await;
    }

    pub(super) fn take_batch<T, C: Codec<T>>(self: &Arc<Self>, n: usize) -> Result<GuardBatch<T>> {
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
        self.counters
            .got(items.len() as u64 + u64::from(undecodable.is_some()));
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
    pub(super) async fn remove(this: &Arc<Inner>, seqs: Vec<u64>) -> Result<()> {
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

    pub(super) fn commit_taken(&self, seqs: &[u64]) -> Result<()> {
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

    pub(super) fn release(&self, seqs: &[u64]) {
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
    pub(super) async fn durable_ack(&self) -> Result<()> {
        if self.durability != Durability::Sync {
            return Ok(());
        }
        let ticket = self.committer.request();
        self.committer.wait(ticket, &self.path).await
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
pub(super) struct PendingRemoval {
    pub(super) inner: Arc<Inner>,
    pub(super) seqs: Vec<u64>,
    pub(super) finished: bool,
}

impl PendingRemoval {
    pub(super) fn finish(&mut self) -> Result<()> {
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
pub(super) struct MappedRing<'a>(MutexGuard<'a, Option<RingFile<Backing>>>);

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
