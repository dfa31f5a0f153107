//! `ringq._ringq`: the synchronous core of the `ringq` Python package.
//!
//! One class, [`RingCore`], owns a [`ringq::RingFile`] behind a mutex. Everything asyncio
//! (waiting, wake-ups, cancellation, `join`) lives in the pure-Python `ringq` package; this
//! module does storage, framing and durable commits.
//!
//! # The GIL and the mutex
//! The mutex is taken in one of two ways, never mixed within one critical section:
//! - with the GIL held, for short operations (a small push, a pop that builds a `bytes`
//!   object straight from the map); the GIL is not released while the mutex is held;
//! - inside `allow_threads` (GIL released), for flushes, opening, closing and copies of large
//!   items; the mutex is released before the GIL is taken back.
//!
//! So no thread ever holds the mutex while waiting for the GIL, and the two locks cannot
//! deadlock.

use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use pyo3::create_exception;
use pyo3::exceptions::{PyBlockingIOError, PyException, PyOSError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use ringq::{Error, RingFile, RingOptions};

create_exception!(
    ringq,
    QueueException,
    PyException,
    "Top exception for exceptions raised by this package."
);

/// Items at least this large are copied with the GIL released.
const LARGE: usize = 64 * 1024;

type Shared = Arc<Mutex<Option<RingFile>>>;

/// Maps a ringq error to the Python exception a caller can act on.
fn to_py(e: Error) -> PyErr {
    let msg = e.to_string();
    match e {
        Error::Locked { .. } => PyBlockingIOError::new_err((libc_eagain(), msg)),
        Error::Io { source, .. } => match source.raw_os_error() {
            // OSError(errno, text) picks the matching subclass (FileNotFoundError, ...).
            Some(code) => PyOSError::new_err((code, msg)),
            None => PyOSError::new_err(msg),
        },
        Error::TooLarge { .. } => PyValueError::new_err(msg),
        _ => QueueException::new_err(msg),
    }
}

/// `EAGAIN`, the errno of `BlockingIOError`.
fn libc_eagain() -> i32 {
    std::io::Error::from(std::io::ErrorKind::WouldBlock)
        .raw_os_error()
        .unwrap_or(11)
}

fn closed() -> PyErr {
    PyValueError::new_err("the queue is closed")
}

/// Locks the ring; a panic on another thread leaves the ring usable (every ring method
/// either completes or leaves the ring as it was for the operations that follow).
fn lock(shared: &Mutex<Option<RingFile>>) -> MutexGuard<'_, Option<RingFile>> {
    shared.lock().unwrap_or_else(|p| p.into_inner())
}

/// A ring file opened for one Python queue: push, pop, guarded delivery, commits.
///
/// All methods are thread safe; see the module docs for how the GIL is handled.
#[pyclass(module = "ringq._ringq", name = "RingCore", frozen)]
struct RingCore {
    ring: Shared,
    path: PathBuf,
}

impl RingCore {
    /// Runs `f` on the open ring with the GIL held (short operations only).
    fn with<R>(&self, f: impl FnOnce(&mut RingFile) -> Result<R, Error>) -> PyResult<R> {
        let mut guard = lock(&self.ring);
        let ring = guard.as_mut().ok_or_else(closed)?;
        f(ring).map_err(to_py)
    }

    /// Runs `f` on the open ring with the GIL released.
    fn detached<R: Send>(
        &self,
        py: Python<'_>,
        f: impl FnOnce(&mut RingFile) -> Result<R, Error> + Send,
    ) -> PyResult<R> {
        let shared = &self.ring;
        let out = py.allow_threads(move || {
            let mut guard = lock(shared);
            guard.as_mut().map(f)
        });
        match out {
            None => Err(closed()),
            Some(r) => r.map_err(to_py),
        }
    }
}

#[pymethods]
impl RingCore {
    /// Opens (creating it if needed) the ring file at `path`, holding items encoded as `tag`.
    #[new]
    fn new(py: Python<'_>, path: PathBuf, tag: u32) -> PyResult<Self> {
        let options = RingOptions::default().encoding(Some(tag)).create(true);
        let opened = py.allow_threads(|| RingFile::open(&path, &options));
        let ring = opened.map_err(to_py)?;
        Ok(RingCore {
            ring: Arc::new(Mutex::new(Some(ring))),
            path,
        })
    }

    /// Appends one item; returns its sequence number.
    fn push(&self, py: Python<'_>, data: &[u8]) -> PyResult<u64> {
        if data.len() >= LARGE {
            self.detached(py, |r| r.push(data))
        } else {
            self.with(|r| r.push(data))
        }
    }

    /// Removes and returns the next item, or `None` when there is none.
    fn pop<'py>(&self, py: Python<'py>) -> PyResult<Option<Bound<'py, PyBytes>>> {
        {
            let mut guard = lock(&self.ring);
            let ring = guard.as_mut().ok_or_else(closed)?;
            match ring.peek() {
                None => return Ok(None),
                Some(rec) if rec.payload.len() < LARGE => {
                    return ring.pop_with(|_, p| PyBytes::new(py, p)).map_err(to_py);
                }
                Some(_) => {}
            }
        }
        // A large item: copy it out of the map with the GIL released.
        let out = self.detached(py, |r| r.pop())?;
        Ok(out.map(|v| PyBytes::new(py, &v)))
    }

    /// Hands out the next item without removing it: `(seq, bytes)` or `None`.
    fn take<'py>(&self, py: Python<'py>) -> PyResult<Option<(u64, Bound<'py, PyBytes>)>> {
        self.with(|r| {
            let Some(t) = r.take()? else {
                return Ok(None);
            };
            match r.taken_payload(&t) {
                Some(p) => Ok(Some((t.seq, PyBytes::new(py, p)))),
                None => {
                    // Damaged after it was handed out: drop it, like delivery would.
                    r.commit_taken(t.seq)?;
                    Err(Error::NotInFlight { seq: t.seq })
                }
            }
        })
    }

    /// Removes an item handed out by `take` for good.
    fn commit(&self, seq: u64) -> PyResult<()> {
        self.with(|r| r.commit_taken(seq))
    }

    /// Gives an item handed out by `take` back: it is delivered again, first in line.
    fn release(&self, seq: u64) -> PyResult<()> {
        self.with(|r| r.release(seq))
    }

    /// Items a `pop` or `take` can deliver.
    fn __len__(&self) -> PyResult<usize> {
        self.with(|r| Ok(usize::try_from(r.len()).unwrap_or(usize::MAX)))
    }

    /// The durable commit (flush), with the GIL released.
    fn sync(&self, py: Python<'_>) -> PyResult<()> {
        self.detached(py, |r| r.sync())
    }

    /// Commits with a flush only when something changed since the last commit.
    fn sync_if_needed(&self, py: Python<'_>) -> PyResult<bool> {
        self.detached(py, |r| {
            if r.needs_commit() {
                r.sync().map(|()| true)
            } else {
                Ok(false)
            }
        })
    }

    /// Starts a background thread that commits every `interval` seconds while something
    /// changed. The thread holds only a weak reference: `close` ends it.
    fn start_flusher(&self, interval: f64) -> PyResult<()> {
        if !(interval.is_finite() && interval > 0.0) {
            return Err(PyValueError::new_err(
                "interval must be a positive number of seconds",
            ));
        }
        let every = Duration::from_secs_f64(interval);
        let weak: Weak<Mutex<Option<RingFile>>> = Arc::downgrade(&self.ring);
        std::thread::Builder::new()
            .name("ringq-flusher".into())
            .spawn(move || flusher(weak, every))
            .map_err(|e| PyOSError::new_err(format!("cannot start the flusher thread: {e}")))?;
        Ok(())
    }

    /// Closes the file with a final clean commit and releases its lock at once. Idempotent.
    fn close(&self, py: Python<'_>) -> PyResult<()> {
        let shared = &self.ring;
        let out = py.allow_threads(move || lock(shared).take().map(RingFile::close));
        match out {
            None | Some(Ok(_)) => Ok(()),
            Some(Err(e)) => Err(to_py(e)),
        }
    }

    /// True once `close` ran.
    #[getter]
    fn closed(&self) -> bool {
        lock(&self.ring).is_none()
    }

    /// The file's path.
    #[getter]
    fn path(&self) -> PathBuf {
        self.path.clone()
    }

    /// The file's epoch (random, fixed when the file was created).
    #[getter]
    fn epoch(&self) -> PyResult<u64> {
        self.with(|r| Ok(r.epoch()))
    }

    /// True when something changed since the last durable commit.
    #[getter]
    fn needs_commit(&self) -> PyResult<bool> {
        self.with(|r| Ok(r.needs_commit()))
    }

    /// Items handed out by `take` and neither committed nor released.
    #[getter]
    fn taken_count(&self) -> PyResult<usize> {
        self.with(|r| Ok(r.taken_count()))
    }

    /// What recovery did when the file was opened, as a dict.
    fn recovery_report<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let report = self.with(|r| Ok(r.recovery_report().clone()))?;
        let d = PyDict::new(py);
        d.set_item("anything_happened", report.anything_happened())?;
        d.set_item("records_kept", report.records_kept)?;
        d.set_item("records_dropped", report.records_dropped)?;
        d.set_item("bytes_skipped", report.bytes_skipped)?;
        d.set_item("backup_path", report.backup_path)?;
        d.set_item("redelivery_possible", report.redelivery_possible)?;
        d.set_item("truncated", report.truncated)?;
        d.set_item("rebuilt", report.rebuilt)?;
        d.set_item("notes", report.notes)?;
        Ok(d)
    }
}

/// The periodic-durability loop: commits what changed, every `every`, until the ring is
/// closed or dropped.
fn flusher(weak: Weak<Mutex<Option<RingFile>>>, every: Duration) {
    loop {
        std::thread::sleep(every);
        let Some(shared) = weak.upgrade() else { return };
        let mut guard = lock(&shared);
        let Some(ring) = guard.as_mut() else { return };
        // A failed commit poisons the ring (ringq logs why); later durable operations
        // report it to their callers, so this thread stops.
        if ring.needs_commit() && ring.sync().is_err() {
            return;
        }
    }
}

/// The extension module.
#[pymodule]
fn _ringq(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<RingCore>()?;
    m.add("QueueException", m.py().get_type::<QueueException>())?;
    m.add("TAG_RAW", ringq::codec::TAG_RAW)?;
    m.add("TAG_PICKLE", ringq::codec::TAG_PICKLE)?;
    Ok(())
}
