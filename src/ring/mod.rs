//! `RingFile`: the persistent FIFO ring over a [`Storage`]: records, growth, delivery with
//! guards, the durable commit and open-time recovery.
//!
//! Invariants (checked by the property tests):
//! - Live records lie between `head` and `tail`, walking forward and wrapping at `cap`; `used`
//!   counts their bytes, skip records and stepped-over damage included.
//! - Every record ends exactly at `cap` or at least one header before it, so a skip record
//!   always fits in the space a wrap leaves.
//! - `head <= read <= tail` in walk order; records between `head` and `read` have been
//!   delivered and are listed in `delivered` (the fast path keeps `head == read`).
//! - A slot is written only after every record it names was flushed (`commit`).

mod commit;
mod deliver;
mod grow;
mod open;
mod push;

use std::collections::VecDeque;
use std::ops::Range;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{self, DATA_OFFSET, MIN_CAPACITY, RECORD_ALIGN, RECORD_HEADER};
use crate::map::MappedFile;
use crate::recovery::{Pos, RecoveryReport};
use crate::storage::Storage;

pub use deliver::Records;
#[cfg(test)]
use push::{place, Placement};

/// Default ring capacity of a new file: small, it grows on demand.
pub const DEFAULT_INITIAL_CAPACITY: u64 = 256 * 1024;

/// How to open a ring file.
#[derive(Clone, Debug)]
#[non_exhaustive]
pub struct RingOptions {
    /// Ring capacity of a new file, in bytes (rounded up to a multiple of 8, at least 4 KiB).
    /// An existing file keeps its own.
    pub initial_capacity: u64,
    /// Largest ring capacity the file may grow to; `None` grows without limit. When the ring
    /// is at the limit, `push` reports [`Error::Full`].
    pub max_capacity: Option<u64>,
    /// The payload encoding tag to write into a new file and to require of an existing one;
    /// `None` accepts any (tools that only move raw bytes).
    pub encoding: Option<u32>,
    /// Create the file when it does not exist.
    pub create: bool,
}

impl Default for RingOptions {
    fn default() -> Self {
        RingOptions {
            initial_capacity: DEFAULT_INITIAL_CAPACITY,
            max_capacity: None,
            encoding: None,
            create: true,
        }
    }
}

impl RingOptions {
    /// Sets the initial capacity of a new file.
    pub fn initial_capacity(mut self, bytes: u64) -> Self {
        self.initial_capacity = bytes;
        self
    }
    /// Sets the largest capacity the ring may grow to.
    pub fn max_capacity(mut self, bytes: Option<u64>) -> Self {
        self.max_capacity = bytes;
        self
    }
    /// Sets the encoding tag to write and require.
    pub fn encoding(mut self, tag: Option<u32>) -> Self {
        self.encoding = tag;
        self
    }
    /// Whether to create a missing file.
    pub fn create(mut self, create: bool) -> Self {
        self.create = create;
        self
    }
}

/// A record borrowed straight from the ring: zero copies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record<'a> {
    /// The record's sequence number, unique in this file for its whole life.
    pub seq: u64,
    /// The payload bytes, in the map.
    pub payload: &'a [u8],
}

/// An item handed out by [`RingFile::take`], not removed until [`RingFile::commit_taken`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Taken {
    /// The item's sequence number.
    pub seq: u64,
    /// Where its record starts in the ring.
    off: usize,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Handed out by `take`, awaiting commit or release.
    Taken,
    /// Given back: delivered again before anything fresh.
    Returned,
    /// Removed; its space frees once everything before it is done too.
    Done,
    /// Being removed durably: the next commit names it removed, but its space is kept until
    /// the removal is finished, so an abandoned removal can still give it back.
    Removing,
}

/// A delivered record between `head` and `read`.
#[derive(Clone, Copy, Debug)]
struct Delivered {
    seq: u64,
    /// Offset of the record itself.
    off: usize,
    /// Where the head moves once this entry is done (past the record).
    next: Pos,
    /// Bytes from this entry's start (the head position before it) to `next`.
    span: usize,
    state: State,
}

/// A persistent FIFO ring of byte records in one file (or any [`Storage`]).
///
/// One owner, synchronous. Pushes write straight into the map and return once the record is
/// in the page cache (it survives `kill -9`); [`RingFile::sync`] is the durable commit.
///
/// ```
/// use ringq::{RingFile, RingOptions};
/// let dir = tempfile::tempdir()?;
/// let path = dir.path().join("q.ring");
/// let mut ring = RingFile::open(&path, &RingOptions::default())?;
/// ring.push(b"one")?;
/// ring.push_with(3, |buf| buf.copy_from_slice(b"two"))?;
/// ring.sync()?; // durable: survives a power cut
/// assert_eq!(ring.peek().map(|r| r.payload), Some(&b"one"[..]));
/// assert_eq!(ring.pop()?.as_deref(), Some(&b"one"[..]));
/// drop(ring);
/// let mut ring = RingFile::open(&path, &RingOptions::default())?;
/// assert_eq!(ring.pop()?.as_deref(), Some(&b"two"[..]));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct RingFile<S: Storage = MappedFile> {
    storage: S,
    epoch: u64,
    encoding: u32,
    cap: usize,
    max_cap: Option<usize>,
    /// Generation of the newest slot on disk, and which slot page holds it.
    generation: u64,
    active_slot: usize,
    /// The slot page holding the newest slot known durable (its page was flushed). Differs
    /// from `active_slot` only while a split commit flushes a new slot; nothing is written
    /// into this page until the next slot is on disk (see `commit.rs`).
    durable_slot: usize,
    /// Oldest record not yet removed: the durable head candidate.
    head: Pos,
    /// Next record to deliver fresh.
    read: Pos,
    /// Where the next record goes; `tail.seq` is the next sequence number.
    tail: Pos,
    used: usize,
    /// Items a `pop` or `take` can still deliver (fresh plus returned).
    queued: u64,
    delivered: VecDeque<Delivered>,
    /// Sum of the spans in `delivered`.
    delivered_span: usize,
    /// Sequence numbers of the entries given back, lowest first: the next deliveries, in
    /// order, without a scan of `delivered`.
    returned: std::collections::BTreeSet<u64>,
    /// File ranges written since the last commit.
    dirty: Vec<Range<usize>>,
    /// Ranges a commit in progress on another thread is flushing.
    in_flight: Vec<Range<usize>>,
    /// The tail as of the last commit.
    committed: Pos,
    /// The head as of the last commit.
    committed_head: Pos,
    seq_limit: u64,
    /// A sequence jump (after an unclean stop) to write before the next record.
    jump_pending: bool,
    cursor_cell: usize,
    poisoned: Option<String>,
    grow_count: u64,
    commit_count: u64,
    damaged_at_runtime: u64,
    /// Damaged records recovery already left out of `queued`, still between head and tail.
    known_damage: u64,
    /// Upstream position of the last record a relay filled in (committed with every slot).
    source_seq: Option<u64>,
    /// `source_seq` as of the last commit.
    committed_source: Option<u64>,
    /// Records recovered past the last commit that were never marked: see `source_mark`.
    unmarked_at_open: u64,
    report: RecoveryReport,
}

/// Where a queue filled from an upstream log stands in that log (see [`RingFile::source_mark`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SourceMark {
    /// The upstream sequence number of the last marked record.
    pub seq: u64,
    /// Records after it that the file holds although no commit named them (written before a
    /// crash, recovered from the page cache). They are the upstream records that followed
    /// `seq`, in order: a relay skips that many instead of storing them twice.
    pub unmarked: u64,
}

impl<S: Storage> std::fmt::Debug for RingFile<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RingFile")
            .field("path", &self.storage.path())
            .field("capacity", &self.cap)
            .field("len", &self.queued)
            .field("head", &self.head)
            .field("tail", &self.tail)
            .finish_non_exhaustive()
    }
}

impl RingFile<MappedFile> {
    /// Opens the queue file at `path` (creating it when `options.create`), takes its
    /// exclusive lock, and recovers its contents. See [`RingFile::recovery_report`].
    pub fn open(path: impl AsRef<Path>, options: &RingOptions) -> Result<Self> {
        let (file, _) = MappedFile::open(path.as_ref(), options.create)?;
        Self::open_in(file, options)
    }
}

fn new_epoch() -> u64 {
    let mut b = [0u8; 8];
    if getrandom::fill(&mut b).is_err() {
        let t = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        b = (t ^ (std::process::id() as u64).rotate_left(32)).to_le_bytes();
    }
    u64::from_le_bytes(b).max(1)
}

/// The largest ring any file can have: the whole file must stay addressable as one slice.
pub(crate) const MAX_RING: usize = (isize::MAX as usize - DATA_OFFSET) & !(RECORD_ALIGN - 1);

/// A capacity option as a ring size: at least 4 KiB, a multiple of 8, at most [`MAX_RING`]
/// (a larger value, up to `u64::MAX`, means "as large as the machine allows").
fn round_capacity(bytes: u64) -> usize {
    let b = bytes.clamp(MIN_CAPACITY, MAX_RING as u64);
    let b = b.div_ceil(RECORD_ALIGN as u64) * RECORD_ALIGN as u64;
    usize::try_from(b).map_or(MAX_RING, |b| b.min(MAX_RING))
}
impl<S: Storage> RingFile<S> {
    fn path_buf(&self) -> std::path::PathBuf {
        self.storage
            .path()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| "<memory>".into())
    }

    fn io_err(&self, context: &'static str, e: std::io::Error) -> Error {
        Error::io(context, self.path_buf(), e)
    }
    /// What recovery found and did when this ring was opened.
    pub fn recovery_report(&self) -> &RecoveryReport {
        &self.report
    }

    /// The backing storage (for the in-memory model: its live and durable images).
    pub fn storage(&self) -> &S {
        &self.storage
    }

    /// Mutable access to the backing storage (to inject faults into the in-memory model).
    pub fn storage_mut(&mut self) -> &mut S {
        &mut self.storage
    }

    /// Consumes the ring and returns its storage, without the clean-close commit.
    pub fn into_storage(self) -> S {
        self.storage
    }

    /// The file's random identity, fixed at creation (with `seq`, a unique item id).
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The payload encoding tag stored in the file.
    pub fn encoding(&self) -> u32 {
        self.encoding
    }

    /// Items waiting to be delivered (not counting items taken and not yet committed).
    pub fn len(&self) -> u64 {
        self.queued
    }

    /// True when no item waits.
    pub fn is_empty(&self) -> bool {
        self.queued == 0
    }

    /// Bytes of the ring in use: records, padding, skip records and items taken but not
    /// committed.
    pub fn bytes_used(&self) -> u64 {
        self.used as u64
    }

    /// Ring capacity in bytes (the file is this plus 8 KiB of header pages).
    pub fn capacity(&self) -> u64 {
        self.cap as u64
    }

    /// The sequence number the next pushed item gets.
    pub fn next_seq(&self) -> u64 {
        if self.jump_pending {
            self.seq_limit
        } else {
            self.tail.seq
        }
    }

    /// Sequence number of the oldest item not yet removed.
    pub fn head_seq(&self) -> u64 {
        self.head.seq
    }

    /// How many durable commits this handle has made.
    pub fn commit_count(&self) -> u64 {
        self.commit_count
    }

    /// How many times the ring grew.
    pub fn grow_count(&self) -> u64 {
        self.grow_count
    }

    /// Records found damaged after open (skipped, never returned).
    pub fn damaged_count(&self) -> u64 {
        self.damaged_at_runtime
    }

    /// The largest payload one record may carry, given the byte limit.
    pub fn max_payload(&self) -> u64 {
        let cap = self
            .max_cap
            .map_or(u32::MAX as u64 + RECORD_HEADER as u64, |m| m as u64);
        format::max_payload(cap)
    }

    /// True when an earlier flush failed: durable operations are refused until reopen.
    pub fn is_poisoned(&self) -> bool {
        self.poisoned.is_some()
    }

    fn ring(&self) -> &[u8] {
        &self.storage.bytes()[DATA_OFFSET..DATA_OFFSET + self.cap]
    }

    fn mark_dirty(&mut self, r: Range<usize>) {
        if let Some(last) = self.dirty.last_mut() {
            if last.end == r.start {
                last.end = r.end;
                return;
            }
        }
        if self.dirty.len() == self.dirty.capacity() {
            // Many wraps since the last commit: flush the whole ring instead.
            self.dirty.clear();
            // Growth marks the copied range before `cap` names it: cover it too.
            self.dirty
                .push(DATA_OFFSET..(DATA_OFFSET + self.cap).max(r.end));
            return;
        }
        self.dirty.push(r);
    }
}

#[cfg(test)]
mod tests;
