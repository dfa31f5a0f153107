//! Group commit: callers ask for a commit and wait for its ticket; one flusher thread runs
//! them, each covering every request made before it started.

use std::collections::HashMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::task::{Context, Poll, Waker};
use std::time::{Duration, Instant};

use super::inner::Inner;
use crate::error::{Error, Result};
use crate::format::{PAGE, SLOT_OFFSETS};

// ------------------------------------------------------------------------- group commit

/// Commit requests and their outcome, shared between callers and the flusher thread.
pub(super) struct Committer {
    pub(super) requests: Mutex<Requests>,
    pub(super) wake: Condvar,
    pub(super) status: StatusCell,
}

#[derive(Default)]
pub(super) struct Requests {
    pub(super) requested: u64,
    pub(super) stop: bool,
}

#[derive(Clone, Default)]
pub(super) struct Status {
    pub(super) completed: u64,
    pub(super) failed: Option<String>,
}

/// The outcome of commits and the callers waiting on it, keyed by ticket: a commit wakes
/// exactly the callers it covers, once each (a watch channel woke every waiter on every
/// commit, and each re-subscribed: with hundreds of `Sync` putters that was CPU-bound).
#[derive(Default)]
pub(super) struct StatusCell {
    inner: Mutex<StatusInner>,
}

#[derive(Default)]
struct StatusInner {
    status: Status,
    /// Waiting callers: id -> (ticket, waker).
    waiters: HashMap<u64, (u64, Waker)>,
    next_id: u64,
}

impl StatusCell {
    fn lock(&self) -> std::sync::MutexGuard<'_, StatusInner> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Updates the status and wakes the callers it settles (all of them on a failure).
    pub(super) fn send_modify(&self, f: impl FnOnce(&mut Status)) {
        let mut woken = Vec::new();
        {
            let mut g = self.lock();
            f(&mut g.status);
            let (done, failed) = (g.status.completed, g.status.failed.is_some());
            g.waiters.retain(|_, (ticket, waker)| {
                let settled = failed || *ticket <= done;
                if settled {
                    woken.push(waker.clone());
                }
                !settled
            });
        }
        // Wake outside the lock: a woken task on another worker may poll at once.
        for w in woken {
            w.wake();
        }
    }
}

/// Waits until the commit with `ticket` (or a later one) finished.
struct WaitFor<'a> {
    cell: &'a StatusCell,
    ticket: u64,
    /// Our entry in the waiter list, once registered.
    id: Option<u64>,
    path: &'a Path,
}

impl Future for WaitFor<'_> {
    type Output = Result<()>;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<()>> {
        let this = &mut *self;
        let mut g = this.cell.lock();
        if let Some(cause) = &g.status.failed {
            let cause = cause.clone();
            if let Some(id) = this.id.take() {
                g.waiters.remove(&id);
            }
            return Poll::Ready(Err(Error::Poisoned {
                path: this.path.to_path_buf(),
                cause,
            }));
        }
        if g.status.completed >= this.ticket {
            if let Some(id) = this.id.take() {
                g.waiters.remove(&id);
            }
            return Poll::Ready(Ok(()));
        }
        let id = match this.id {
            Some(id) => id,
            None => {
                g.next_id += 1;
                let id = g.next_id;
                this.id = Some(id);
                id
            }
        };
        match g.waiters.get_mut(&id) {
            Some((_, w)) if w.will_wake(cx.waker()) => {}
            Some((_, w)) => w.clone_from(cx.waker()),
            None => {
                g.waiters.insert(id, (this.ticket, cx.waker().clone()));
            }
        }
        Poll::Pending
    }
}

impl Drop for WaitFor<'_> {
    fn drop(&mut self) {
        if let Some(id) = self.id.take() {
            self.cell.lock().waiters.remove(&id);
        }
    }
}

impl Committer {
    pub(super) fn new() -> Self {
        Committer {
            requests: Mutex::new(Requests::default()),
            wake: Condvar::new(),
            status: StatusCell::default(),
        }
    }

    /// Asks for a commit covering everything done before this call; returns its ticket.
    pub(super) fn request(&self) -> u64 {
        let mut r = self.requests.lock().unwrap_or_else(|p| p.into_inner());
        r.requested += 1;
        self.wake.notify_one();
        r.requested
    }

    pub(super) fn stop(&self) {
        self.requests.lock().unwrap_or_else(|p| p.into_inner()).stop = true;
        self.wake.notify_one();
    }

    pub(super) async fn wait(&self, ticket: u64, path: &Path) -> Result<()> {
        WaitFor {
            cell: &self.status,
            ticket,
            id: None,
            path,
        }
        .await
    }
}

/// The flusher thread: one commit at a time, covering every request made before it started.
/// The longest a commit waits to gather callers (see `flusher_loop`).
pub(super) const MAX_GATHER: Duration = Duration::from_millis(2);

pub(super) fn flusher_loop(
    inner: Weak<Inner>,
    committer: Arc<Committer>,
    period: Option<Duration>,
) {
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

impl Inner {
    /// One durable commit, flushing outside the ring lock where the storage allows it.
    pub(super) fn commit_now(&self) -> Result<()> {
        let started = Instant::now();
        let (plan, flusher) = {
            let mut ring = self.lock()?;
            if !ring.needs_commit() && !ring.is_poisoned() {
                return Ok(());
            }
            let plan = ring.prepare_commit(false)?;
            (plan, ring.concurrent_flusher())
        };
        let Some(flusher) = flusher else {
            self.lock()?.commit_planned(plan)?;
            self.counters.commit_took(started.elapsed());
            return Ok(());
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
        self.counters.commit_took(started.elapsed());
        Ok(())
    }
}
