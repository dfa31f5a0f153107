//! Group commit: callers ask for a commit and wait for its ticket; one flusher thread runs
//! them, each covering every request made before it started.

use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, Weak};
use std::time::{Duration, Instant};

use tokio::sync::watch;

use super::inner::Inner;
use crate::error::{Error, Result};
use crate::format::{PAGE, SLOT_OFFSETS};

// ------------------------------------------------------------------------- group commit

/// Commit requests and their outcome, shared between callers and the flusher thread.
pub(super) struct Committer {
    pub(super) requests: Mutex<Requests>,
    pub(super) wake: Condvar,
    pub(super) status: watch::Sender<Status>,
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

impl Committer {
    pub(super) fn new() -> Self {
        Committer {
            requests: Mutex::new(Requests::default()),
            wake: Condvar::new(),
            status: watch::Sender::new(Status::default()),
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
