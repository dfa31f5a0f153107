//! The state every clone of a `Queue` shares: the ring and every count that decides (items to
//! get, room under maxsize, the wait lists) behind one mutex, the unfinished-task count, and
//! removals waiting for their commit.
//!
//! Each operation changes the ring and the counts in one critical section, so no dropped
//! future or concurrent caller can see one without the other. Nothing is kept beside the
//! ring that could drift from it: what a getter may take is the ring's own `len()`.

use std::future::poll_fn;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::Poll;
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::sync::Notify;

use super::commit::{flusher_loop, Committer};
use super::wait::WaitList;
use super::{Backing, Durability, GuardBatch};
use crate::codec::Codec;
use crate::error::{Error, Result};
use crate::ring::RingFile;
use crate::storage::Storage;

// ------------------------------------------------------------------------- shared state

pub(super) struct Inner {
    pub(super) state: Mutex<State>,
    /// Woken when a removal frees bytes, for putters stopped by the byte limit (only when
    /// `State::bytes_blocked` says one waits: no cost otherwise).
    pub(super) bytes_freed: Notify,
    pub(super) maxsize: usize,
    pub(super) durability: Durability,
    /// Unfinished tasks: +1 per put (under the ring lock, with the push) and per item found at
    /// open, -1 per `task_done` and per record found damaged on delivery (never returned).
    pub(super) tasks: AtomicU64,
    pub(super) all_done: Notify,
    pub(super) committer: Arc<Committer>,
    pub(super) flusher: Mutex<Option<JoinHandle<()>>>,
    pub(super) path: PathBuf,
    pub(super) epoch: u64,
    /// Gets and commit latency for `Queue::stats`.
    pub(super) counters: crate::stats::QueueCounters,
}

/// What the ring mutex guards.
pub(super) struct State {
    /// `Some` while the queue is open.
    pub(super) ring: Option<RingFile<Backing>>,
    /// Items handed out by `take` (guards, `Sync` gets) and neither removed nor given back:
    /// they keep their place under maxsize.
    pub(super) out: u64,
    /// Puts that were given room and write on another thread (growth): their place is held.
    pub(super) pending_puts: u64,
    pub(super) maxsize: usize,
    pub(super) getters: WaitList,
    pub(super) putters: WaitList,
    /// Putters that hold their place and wait on `bytes_freed` (the byte limit): while any
    /// does, newcomers queue behind it (FIFO).
    pub(super) bytes_blocked: u64,
}

/// Which wait list, and which count, a caller waits on.
#[derive(Clone, Copy)]
pub(super) enum Kind {
    Get,
    Put,
}

impl State {
    fn ring(&self) -> &RingFile<Backing> {
        self.ring.as_ref().expect("checked in Inner::lock")
    }

    pub(super) fn ring_mut(&mut self) -> &mut RingFile<Backing> {
        self.ring.as_mut().expect("checked in Inner::lock")
    }

    fn list(&mut self, kind: Kind) -> &mut WaitList {
        match kind {
            Kind::Get => &mut self.getters,
            Kind::Put => &mut self.putters,
        }
    }

    /// Units of `kind` a caller may use now: items not promised to a waiting getter, or
    /// places under maxsize not held by anyone (unbounded: always).
    pub(super) fn free(&self, kind: Kind) -> u64 {
        match kind {
            Kind::Get => self.ring().len().saturating_sub(self.getters.granted()),
            Kind::Put if self.maxsize == 0 => u64::MAX,
            Kind::Put => {
                let held = self
                    .ring()
                    .len()
                    .saturating_add(self.out)
                    .saturating_add(self.pending_puts)
                    .saturating_add(self.putters.granted());
                (self.maxsize as u64).saturating_sub(held)
            }
        }
    }

    /// True when a newcomer of `kind` may go ahead now (nobody waits ahead of it).
    pub(super) fn may_pass(&self, kind: Kind) -> bool {
        let list = match kind {
            Kind::Get => &self.getters,
            Kind::Put => &self.putters,
        };
        let blocked = matches!(kind, Kind::Put) && self.bytes_blocked > 0;
        !blocked && !list.has_ungranted() && self.free(kind) > 0
    }

    /// Hands what is free to the waiters, oldest first. Called after every change.
    pub(super) fn wake(&mut self) {
        while self.getters.has_ungranted() && self.free(Kind::Get) > 0 {
            self.getters.grant_next();
        }
        while self.bytes_blocked == 0 && self.putters.has_ungranted() && self.free(Kind::Put) > 0 {
            self.putters.grant_next();
        }
    }
}

/// A place in a wait list; dropped before it claims its grant, it passes the grant on.
struct Turn<'a> {
    inner: &'a Inner,
    kind: Kind,
    id: Option<u64>,
}

impl Drop for Turn<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            let mut st = self.inner.lock_state();
            st.list(self.kind).remove(id);
            if st.ring.is_some() {
                st.wake();
            }
        }
    }
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
        let committer = Arc::new(Committer::new());
        let inner = Arc::new(Inner {
            state: Mutex::new(State {
                ring: Some(ring),
                out: 0,
                pending_puts: 0,
                maxsize,
                getters: WaitList::default(),
                putters: WaitList::default(),
                bytes_blocked: 0,
            }),
            bytes_freed: Notify::new(),
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

    pub(super) fn closed(&self) -> Error {
        Error::io(
            "the queue is closed:",
            &self.path,
            std::io::Error::other("closed"),
        )
    }

    fn lock_state(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    pub(super) fn lock(&self) -> Result<MappedRing<'_>> {
        let guard = self.lock_state();
        if guard.ring.is_none() {
            return Err(self.closed());
        }
        Ok(MappedRing(guard))
    }

    /// Waits, in arrival order and cancel-safely, until a unit of `kind` is free for this
    /// caller, and returns the lock with it: the caller uses the unit before unlocking, then
    /// calls `State::wake` (a unit it did not use goes to the next waiter).
    pub(super) async fn turn(&self, kind: Kind) -> Result<MappedRing<'_>> {
        {
            let g = self.lock()?;
            if g.0.may_pass(kind) {
                return Ok(g);
            }
        }
        let mut turn = Turn {
            inner: self,
            kind,
            id: None,
        };
        poll_fn(|cx| {
            let mut g = match self.lock() {
                Ok(g) => g,
                Err(e) => return Poll::Ready(Err(e)),
            };
            let st = &mut *g.0;
            match turn.id {
                Some(id) => match st.list(kind).poll_grant(id, cx.waker()) {
                    Some(true) => {
                        st.list(kind).remove(id);
                        turn.id = None;
                        Poll::Ready(Ok(g))
                    }
                    Some(false) => Poll::Pending,
                    None => {
                        // Not queued (cannot happen): queue again rather than hang.
                        turn.id = Some(st.list(kind).push(cx.waker().clone()));
                        st.wake();
                        Poll::Pending
                    }
                },
                None if st.may_pass(kind) => Poll::Ready(Ok(g)),
                None => {
                    turn.id = Some(st.list(kind).push(cx.waker().clone()));
                    Poll::Pending
                }
            }
        })
        .await
    }

    /// Pushes under the lock the caller holds, counting the task in the same critical
    /// section.
    pub(super) fn push_locked<T, C: Codec<T>>(
        &self,
        st: &mut State,
        item: &T,
        len: usize,
        upstream_seq: Option<u64>,
    ) -> Result<()> {
        let ring = st.ring_mut();
        // The encoder runs under the lock, writing straight into the map: keep it short.
        ring.push_encoded(len, |buf| C::encode_into(item, buf))?;
        if let Some(seq) = upstream_seq {
            // Under the same lock as the push: no commit can name one without the other.
            ring.set_source_seq(seq);
        }
        if ring.wants_checkpoint() {
            self.committer.request();
        }
        self.tasks.fetch_add(1, Ordering::AcqRel);
        Ok(())
    }

    /// The whole of a put that was given room and runs off the async worker (growth): the
    /// push, the task count and the wake-ups in one critical section, whatever happens to the
    /// future that started it. `Full` (the byte limit) keeps the caller's place and counts it
    /// blocked (newcomers queue behind it) until it retries; an item that does not fit even
    /// into the empty ring at its largest is `TooLarge`.
    pub(super) fn push_reserved<T, C: Codec<T>>(
        &self,
        reserved: &mut Reserved,
        item: &T,
        len: usize,
        upstream_seq: Option<u64>,
    ) -> Result<()> {
        let mut g = self.lock()?;
        let mut r = self.push_locked::<T, C>(&mut g.0, item, len, upstream_seq);
        if let Err(Error::Full) = r {
            let ring = g.0.ring();
            if ring.bytes_used() > 0 {
                if !std::mem::replace(&mut reserved.blocked, true) {
                    g.0.bytes_blocked += 1;
                }
                return r;
            }
            r = Err(Error::TooLarge {
                size: len as u64,
                limit: ring.max_payload(),
                path: ring.storage().path().map(Path::to_path_buf),
            });
        }
        reserved.release(&mut g.0);
        g.0.wake();
        r
    }

    /// After anything that frees ring bytes: wakes putters stopped by the byte limit.
    pub(super) fn bytes_removed(&self, st: &mut State) {
        if st.bytes_blocked > 0 {
            self.bytes_freed.notify_waiters();
        }
    }

    /// Removes the next item under the caller's lock; `None` when the ring had nothing after
    /// all (damaged records were dropped).
    pub(super) fn pop_locked<T, C: Codec<T>>(&self, st: &mut State) -> Result<Option<Result<T>>> {
        let damaged = st.ring().damaged_count();
        let popped = st.ring_mut().pop_with(|seq, bytes| {
            C::decode(bytes).map_err(|reason| Error::Decode {
                seq,
                reason,
                raw: bytes.to_vec(),
            })
        })?;
        if popped.is_some() {
            self.counters.got(1);
        }
        self.forget_damaged(st, damaged);
        self.bytes_removed(st);
        Ok(popped)
    }

    /// Records found damaged while delivering are gone: no get returns them, so no
    /// `task_done` can mark them done, and `join` must not wait for them.
    fn forget_damaged(&self, st: &State, damaged_before: u64) {
        let lost = st.ring().damaged_count().saturating_sub(damaged_before);
        if lost == 0 {
            return;
        }
        let before = self
            .tasks
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
                Some(n.saturating_sub(lost))
            })
            .unwrap_or_else(|n| n);
        if before > 0 && before <= lost {
            self.all_done.notify_waiters();
        }
    }

    /// Takes up to `n` items under the caller's lock, counting them out. An item that does
    /// not decode is removed (its room and bytes freed) and ends the batch as its error.
    pub(super) fn take_locked<T, C: Codec<T>>(
        &self,
        st: &mut State,
        n: usize,
        items: &mut Vec<(u64, T)>,
    ) -> Result<()> {
        let damaged = st.ring().damaged_count();
        let r = self.take_each::<T, C>(st, n, items);
        self.forget_damaged(st, damaged);
        r
    }

    fn take_each<T, C: Codec<T>>(
        &self,
        st: &mut State,
        n: usize,
        items: &mut Vec<(u64, T)>,
    ) -> Result<()> {
        for _ in 0..n {
            let ring = st.ring_mut();
            let Some(taken) = ring.take()? else {
                break;
            };
            let bytes = ring.taken_payload(&taken).unwrap_or(&[]);
            match C::decode(bytes) {
                Ok(item) => {
                    items.push((taken.seq, item));
                    st.out += 1;
                    self.counters.got(1);
                }
                Err(reason) => {
                    let raw = bytes.to_vec();
                    self.counters.got(1);
                    ring.commit_taken(taken.seq)?;
                    self.bytes_removed(st);
                    return Err(Error::Decode {
                        seq: taken.seq,
                        reason,
                        raw,
                    });
                }
            }
        }
        Ok(())
    }

    /// Waits for an item, then takes up to `max` (guarded). An undecodable item gives back
    /// what was taken before it and comes back as its error.
    pub(super) async fn take_batch<T, C: Codec<T>>(
        self: &Arc<Self>,
        max: usize,
    ) -> Result<GuardBatch<T>> {
        loop {
            let mut batch = GuardBatch {
                inner: Arc::clone(self),
                epoch: self.epoch,
                items: Vec::new(),
                settled: false,
            };
            let r = {
                let mut g = self.turn(Kind::Get).await?;
                let n = (g.0.free(Kind::Get).min(max as u64) as usize).max(1);
                batch.items.reserve(n);
                let r = self.take_locked::<T, C>(&mut g.0, n, &mut batch.items);
                g.0.wake();
                r
            };
            r?; // on error the batch, dropped, releases what it holds
            if !batch.items.is_empty() {
                return Ok(batch);
            }
        }
    }

    /// Removes taken items for good; under `Sync`, returns once the removal is on disk. If
    /// this future is dropped (or the commit fails) before that, the items are given back,
    /// first in line, and the next commit names them present again.
    pub(super) async fn remove(this: &Arc<Inner>, seqs: Vec<u64>) -> Result<()> {
        if this.durability != Durability::Sync {
            return this.commit_taken(&seqs);
        }
        let mut pending = PendingRemoval {
            inner: Arc::clone(this),
            seqs: Vec::with_capacity(seqs.len()),
            finished: false,
        };
        let (began, r) = this.lock()?.begin_removals(&seqs);
        // The lock is released: on error, `pending` gives back what began.
        pending.seqs.extend_from_slice(&seqs[..began]);
        r?;
        pending.wait().await
    }

    pub(super) fn commit_taken(&self, seqs: &[u64]) -> Result<()> {
        let mut g = self.lock()?;
        let st = &mut *g.0;
        let mut r = Ok(());
        for &seq in seqs {
            match st.ring_mut().commit_taken(seq) {
                Ok(()) => st.out -= 1,
                Err(e) => r = Err(e),
            }
        }
        self.bytes_removed(st);
        st.wake();
        r
    }

    pub(super) fn release(&self, seqs: &[u64]) {
        let Ok(mut g) = self.lock() else {
            return;
        };
        let st = &mut *g.0;
        for &seq in seqs.iter().rev() {
            if st.ring_mut().release(seq).is_ok() {
                st.out -= 1;
            }
        }
        st.wake();
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
        let ring = self.lock_state().ring.take();
        if let Some(ring) = ring {
            if !ring.is_poisoned() {
                if let Err(e) = ring.close() {
                    log::warn!("{}: clean close failed: {e}", self.path.display());
                }
            }
        }
    }
}

/// A place under maxsize held for a put that writes on another thread (and, `blocked`, its
/// place at the head of the putters while it waits for bytes). Released with the push, in its
/// critical section; dropped unused (the thread never ran, or the wait for bytes was
/// cancelled), it gives both back.
pub(super) struct Reserved {
    pub(super) inner: Arc<Inner>,
    pub(super) held: bool,
    pub(super) blocked: bool,
}

impl Reserved {
    fn release(&mut self, st: &mut State) {
        if std::mem::take(&mut self.held) {
            st.pending_puts -= 1;
        }
        if std::mem::take(&mut self.blocked) {
            st.bytes_blocked -= 1;
        }
    }
}

impl Drop for Reserved {
    fn drop(&mut self) {
        if self.held || self.blocked {
            let inner = Arc::clone(&self.inner);
            let mut st = inner.lock_state();
            self.release(&mut st);
            if st.ring.is_some() {
                st.wake();
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
    /// Waits for a commit naming the removals, then frees their space.
    pub(super) async fn wait(mut self) -> Result<()> {
        let ticket = self.inner.committer.request();
        self.inner.committer.wait(ticket, &self.inner.path).await?;
        self.finished = true;
        let mut g = self.inner.lock()?;
        let st = &mut *g.0;
        let mut r = Ok(());
        for &seq in &self.seqs {
            match st.ring_mut().finish_removal(seq) {
                Ok(()) => st.out -= 1,
                Err(e) => r = Err(e),
            }
        }
        self.inner.bytes_removed(st);
        st.wake();
        r
    }
}

impl Drop for PendingRemoval {
    fn drop(&mut self) {
        if self.finished || self.seqs.is_empty() {
            return;
        }
        let Ok(mut g) = self.inner.lock() else {
            return;
        };
        let st = &mut *g.0;
        // Only a removal that was not in progress is left as it was; after a failed
        // re-commit the items are back in line all the same (the ring is poisoned).
        let (back, _) = st.ring_mut().abort_removals(&self.seqs);
        st.out -= back as u64;
        st.wake();
        drop(g);
        // A commit may already name them removed: the next one names them present again.
        self.inner.committer.request();
    }
}

/// The locked state, with the ring open (it derefs to the ring).
pub(super) struct MappedRing<'a>(pub(super) MutexGuard<'a, State>);

impl std::ops::Deref for MappedRing<'_> {
    type Target = RingFile<Backing>;
    fn deref(&self) -> &Self::Target {
        self.0.ring()
    }
}

impl std::ops::DerefMut for MappedRing<'_> {
    fn deref_mut(&mut self) -> &mut Self::Target {
        self.0.ring_mut()
    }
}
