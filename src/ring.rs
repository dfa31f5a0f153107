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

use std::collections::VecDeque;
use std::ops::Range;
use std::path::Path;

use crate::error::{Error, Result};
use crate::format::{
    self, read_frame, Cursor, Slot, DATA_OFFSET, FLAG_CLEAN, FORMAT_VERSION, KIND_DATA, KIND_DONE,
    KIND_SKIP, MAX_SEQ, MIN_CAPACITY, PAGE, RECORD_ALIGN, RECORD_HEADER, SEQ_RESERVATION,
    SLOT_MAGIC, SLOT_OFFSETS,
};
use crate::map::MappedFile;
use crate::recovery::{self, Found, Pos, RecoveryReport, Salvage, Sound};
use crate::storage::Storage;

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

/// A prepared durable commit: what to flush, then the slot to write.
#[derive(Debug)]
pub(crate) struct CommitPlan {
    pub ranges: Vec<Range<usize>>,
    head: Pos,
    tail: Pos,
    seq_limit: u64,
    source_seq: Option<u64>,
    /// The slot generation when the plan was made; a slot written since makes it stale.
    generation: u64,
    clean: bool,
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
    returned: usize,
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

fn round_capacity(bytes: u64) -> usize {
    let b = bytes.max(MIN_CAPACITY);
    let b = b.div_ceil(RECORD_ALIGN as u64) * RECORD_ALIGN as u64;
    usize::try_from(b).unwrap_or(usize::MAX & !(RECORD_ALIGN - 1))
}

impl<S: Storage> RingFile<S> {
    /// Same as [`RingFile::open_in`]; reads better where the storage is known to be empty.
    pub fn create_in(storage: S, options: &RingOptions) -> Result<Self> {
        Self::open_in(storage, options)
    }

    /// Opens a ring over `storage`, recovering what it holds (an empty or all-zero region
    /// becomes a new queue).
    pub fn open_in(storage: S, options: &RingOptions) -> Result<Self> {
        let found = recovery::recover(storage.bytes());
        let max_cap = options.max_capacity.map(round_capacity);
        match found {
            Found::Fresh => Self::init_fresh(storage, options, max_cap),
            Found::Sound(sound) => Self::from_sound(storage, options, max_cap, sound),
            Found::Salvage(salvage) => Self::from_salvage(storage, options, max_cap, salvage),
            Found::TooNew(reason) => Err(Error::Corrupt {
                path: storage
                    .path()
                    .map_or_else(|| "<memory>".into(), Path::to_path_buf),
                reason,
            }),
        }
    }

    fn blank(storage: S, epoch: u64, encoding: u32, cap: usize, max_cap: Option<usize>) -> Self {
        RingFile {
            storage,
            epoch,
            encoding,
            cap,
            max_cap,
            generation: 0,
            active_slot: 1,
            head: Pos::default(),
            read: Pos::default(),
            tail: Pos::default(),
            used: 0,
            queued: 0,
            delivered: VecDeque::with_capacity(16),
            delivered_span: 0,
            returned: 0,
            dirty: Vec::with_capacity(8),
            in_flight: Vec::new(),
            committed: Pos::default(),
            committed_head: Pos::default(),
            seq_limit: 0,
            jump_pending: false,
            cursor_cell: 0,
            poisoned: None,
            grow_count: 0,
            commit_count: 0,
            damaged_at_runtime: 0,
            known_damage: 0,
            source_seq: None,
            committed_source: None,
            unmarked_at_open: 0,
            report: RecoveryReport::default(),
        }
    }

    fn path_buf(&self) -> std::path::PathBuf {
        self.storage
            .path()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| "<memory>".into())
    }

    fn io_err(&self, context: &'static str, e: std::io::Error) -> Error {
        Error::io(context, self.path_buf(), e)
    }

    fn init_fresh(storage: S, options: &RingOptions, max_cap: Option<usize>) -> Result<Self> {
        let mut cap = round_capacity(options.initial_capacity);
        if let Some(m) = max_cap {
            cap = cap.min(m.max(MIN_CAPACITY as usize));
        }
        let encoding = options.encoding.unwrap_or(0);
        let mut ring = Self::blank(storage, new_epoch(), encoding, cap, max_cap);
        ring.init_region(cap)?;
        Ok(ring)
    }

    /// Makes the region a valid empty ring of `cap` bytes (headers zeroed, slot written).
    fn init_region(&mut self, cap: usize) -> Result<()> {
        let len = DATA_OFFSET + cap;
        if self.storage.bytes().len() < len {
            self.storage
                .grow(len)
                .map_err(|e| self.io_err("cannot allocate", e))?;
        }
        self.storage.bytes_mut()[..DATA_OFFSET].fill(0);
        self.storage
            .flush(0, DATA_OFFSET)
            .map_err(|e| self.io_err("cannot flush", e))?;
        self.cap = cap;
        self.generation = 0;
        self.active_slot = 1;
        self.commit()
    }

    fn from_sound(
        storage: S,
        options: &RingOptions,
        max_cap: Option<usize>,
        sound: Sound,
    ) -> Result<Self> {
        let slot = sound.slot;
        let mut ring = Self::blank(
            storage,
            slot.epoch,
            slot.encoding,
            slot.capacity as usize,
            max_cap,
        );
        if let Some(want) = options.encoding {
            if want != slot.encoding {
                return Err(Error::EncodingMismatch {
                    path: ring.path_buf(),
                    found: crate::codec::encoding_name(slot.encoding),
                    expected: crate::codec::encoding_name(want),
                });
            }
        }
        if let Some(len) = sound.extend_to {
            ring.storage
                .grow(len)
                .map_err(|e| ring.io_err("cannot extend the truncated file", e))?;
        }
        ring.generation = slot.generation;
        ring.active_slot = sound.slot_index;
        ring.head = sound.head;
        ring.read = sound.head;
        ring.tail = sound.tail;
        ring.used = sound.used;
        ring.queued = sound.items;
        ring.known_damage = sound.skipped_in_walk;
        ring.invalidate_stale(&sound.damaged_ranges);
        ring.seq_limit = slot.seq_limit;
        ring.committed = Pos {
            off: slot.tail_off as usize,
            seq: slot.next_seq,
        };
        ring.committed_head = Pos {
            off: slot.head_off as usize,
            seq: slot.head_seq,
        };
        if slot.flags & format::FLAG_SOURCE != 0 {
            ring.source_seq = Some(slot.source_seq);
            ring.committed_source = ring.source_seq;
            ring.unmarked_at_open = ring.records_past_commit();
        }
        if sound.tail.seq < slot.seq_limit {
            // Sequence numbers up to the reservation may have been handed out and lost:
            // never reuse them.
            ring.jump_pending = true;
        }
        if sound.tail != ring.committed || sound.report.anything_happened() {
            // Records recovered past the slot are in the page cache only: flush them with
            // the next commit.
            ring.mark_dirty(DATA_OFFSET..DATA_OFFSET + ring.cap);
        }
        ring.report = sound.report;
        if ring.report.anything_happened() {
            log::warn!(
                "{}: recovery kept {} item(s), dropped {}, skipped {} bytes",
                ring.path_buf().display(),
                ring.report.records_kept,
                ring.report.records_dropped,
                ring.report.bytes_skipped
            );
        }
        Ok(ring)
    }

    /// Invalidates every record that still verifies inside the stretches recovery stepped
    /// over: stale copies from an earlier life of the file (unsynced records written over
    /// removed ones, older laps). The next commit names a tail past these stretches, and a
    /// later recovery that met the same damage could otherwise resync onto one of them and
    /// skip live records. Written in memory only; the whole ring is flushed before that commit.
    fn invalidate_stale(&mut self, ranges: &[(usize, usize)]) {
        let (cap, epoch) = (self.cap, self.epoch);
        let ring = &mut self.storage.bytes_mut()[DATA_OFFSET..DATA_OFFSET + cap];
        for &(start, len) in ranges {
            let mut dist = 0;
            while dist < len {
                let off = (start + dist) % cap;
                if read_frame(ring, off, Some(epoch)).is_ok() {
                    format::invalidate_header(&mut ring[off..off + RECORD_HEADER]);
                }
                dist += RECORD_ALIGN;
            }
        }
    }

    fn from_salvage(
        storage: S,
        options: &RingOptions,
        max_cap: Option<usize>,
        salvage: Salvage,
    ) -> Result<Self> {
        let image_len = storage.bytes().len();
        let payloads: Vec<(u64, Vec<u8>)> = salvage
            .records
            .iter()
            .map(|(seq, r)| (*seq, storage.bytes()[r.clone()].to_vec()))
            .collect();
        let mut report = salvage.report;
        if let Some(path) = storage.path() {
            report.backup_path = Some(backup(path, storage.bytes())?);
        }
        let epoch = salvage.epoch.unwrap_or_else(new_epoch);
        let cap = round_capacity(
            (image_len.saturating_sub(DATA_OFFSET) as u64)
                .max(options.initial_capacity)
                .max(MIN_CAPACITY),
        );
        let cap = cap - cap % RECORD_ALIGN;
        let encoding = options
            .encoding
            .or(salvage.encoding_hint)
            .unwrap_or(crate::codec::TAG_RAW);
        let mut ring = Self::blank(storage, epoch, encoding, cap, max_cap);
        let first = payloads.first().map_or(0, |(s, _)| *s);
        ring.head = Pos { off: 0, seq: first };
        ring.read = ring.head;
        ring.tail = ring.head;
        ring.committed = ring.head;
        ring.seq_limit = first;
        ring.init_region(cap)?;
        for (seq, payload) in &payloads {
            ring.tail.seq = *seq;
            ring.push(payload)?;
        }
        ring.commit()?;
        log::warn!(
            "{}: no usable header slot; kept {} item(s) that verify, dropped {}; backup at {}",
            ring.path_buf().display(),
            report.records_kept,
            report.records_dropped,
            report
                .backup_path
                .as_ref()
                .map_or("<none>".into(), |p| p.display().to_string())
        );
        ring.report = report;
        Ok(ring)
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

    // ---------------------------------------------------------------- push

    /// Appends `payload` as one record and returns its sequence number. The record is in the
    /// page cache when this returns (it survives `kill -9`, not a power cut; see
    /// [`RingFile::sync`]).
    pub fn push(&mut self, payload: &[u8]) -> Result<u64> {
        self.push_with(payload.len(), |buf| buf.copy_from_slice(payload))
    }

    /// Appends a record of `len` bytes that `fill` writes straight into the map (for
    /// serializers). `fill` must write the whole buffer; whatever it leaves is stored.
    pub fn push_with(&mut self, len: usize, fill: impl FnOnce(&mut [u8])) -> Result<u64> {
        self.push_encoded(len, |buf| {
            fill(buf);
            Ok(())
        })
    }

    /// Like [`RingFile::push_with`] for a filler that can fail: on failure nothing is
    /// appended and the message comes back as [`Error::Encode`].
    pub fn push_encoded(
        &mut self,
        len: usize,
        fill: impl FnOnce(&mut [u8]) -> std::result::Result<(), String>,
    ) -> Result<u64> {
        let size = self.check_size(len)?;
        if self.jump_pending {
            self.write_jump()?;
        }
        if self.tail.seq >= self.seq_limit {
            // Reserve more sequence numbers durably before handing them out.
            self.commit()?;
        }
        let off = self.reserve(size)?;
        let seq = self.tail.seq;
        let epoch = self.epoch;
        let ring = &mut self.storage.bytes_mut()[DATA_OFFSET..];
        let rec = &mut ring[off..off + size];
        let (payload, pad) = rec[RECORD_HEADER..].split_at_mut(len);
        fill(payload).map_err(Error::Encode)?;
        if !pad.is_empty() {
            pad.fill(0);
        }
        let len32 = len as u32; // checked by check_size
        format::write_header(rec, KIND_DATA, seq, len32, epoch);
        self.advance_tail(off, size, seq + 1);
        self.queued += 1;
        Ok(seq)
    }

    /// True when a push of `len` bytes needs no growth and no commit: no system call.
    pub fn push_is_cheap(&self, len: usize) -> bool {
        let Some(size) = format::record_size(len) else {
            return false;
        };
        if self.jump_pending || self.tail.seq >= self.seq_limit {
            return false;
        }
        if self.used == 0 && self.delivered.is_empty() && fits_before_end(self.cap, 0, size) {
            return true;
        }
        place(self.cap, self.head.off, self.tail.off, self.used, size) != Placement::NoRoom
    }

    /// True when half the reserved sequence numbers are used: a background commit now keeps
    /// pushes from having to commit inline later.
    pub fn wants_checkpoint(&self) -> bool {
        self.next_seq().saturating_add(SEQ_RESERVATION / 2) >= self.seq_limit
    }

    /// The upstream position a relay recorded with [`RingFile::set_source_seq`], as of the
    /// last commit plus what was recovered past it; `None` for a file never filled that way.
    pub fn source_mark(&self) -> Option<SourceMark> {
        self.source_seq.map(|seq| SourceMark {
            seq,
            unmarked: self.unmarked_at_open,
        })
    }

    /// Records that everything up to the last pushed record came from upstream position
    /// `seq`. Every later commit names it together with the tail, so after a crash the mark
    /// and the records agree. Call it right after the push it describes, with no push between.
    pub fn set_source_seq(&mut self, seq: u64) {
        self.source_seq = Some(seq);
        self.unmarked_at_open = 0;
    }

    /// Counts the data records between the committed tail and the recovered tail by walking
    /// them. Anything unexpected counts nothing: a relay then stores a record twice rather
    /// than skip one it never stored.
    fn records_past_commit(&self) -> u64 {
        let ring = &self.storage.bytes()[DATA_OFFSET..DATA_OFFSET + self.cap];
        let mut at = self.committed;
        let mut count = 0;
        for step in 0..=self.cap / RECORD_ALIGN {
            if at == self.tail {
                return count;
            }
            let Ok(f) = format::read_frame(ring, at.off, Some(self.epoch)) else {
                break;
            };
            // Only the first record after an open may be a sequence jump.
            let jump = step == 0 && f.kind == KIND_SKIP && f.seq > at.seq;
            if f.seq != at.seq && !jump {
                break;
            }
            at.seq = if f.kind == KIND_SKIP {
                f.seq
            } else {
                f.seq + 1
            };
            count += u64::from(f.kind != KIND_SKIP);
            at.off = (at.off + f.size) % self.cap;
        }
        log::warn!(
            "{}: cannot count the records past the last commit; a relay filling this queue may store up to one batch twice",
            self.path_buf().display()
        );
        0
    }

    /// True when something changed since the last commit.
    pub fn needs_commit(&self) -> bool {
        !self.dirty.is_empty()
            || self.committed != self.tail
            || self.durable_head() != self.committed_head
            || self.source_seq != self.committed_source
    }

    fn check_size(&self, len: usize) -> Result<usize> {
        let limit = self.max_payload();
        let size = format::record_size(len)
            .filter(|_| (len as u64) <= limit)
            .ok_or_else(|| Error::TooLarge {
                size: len as u64,
                limit,
                path: self.storage.path().map(Path::to_path_buf),
            })?;
        Ok(size)
    }

    fn advance_tail(&mut self, off: usize, size: usize, next_seq: u64) {
        self.mark_dirty(DATA_OFFSET + off..DATA_OFFSET + off + size);
        self.used += size;
        let mut end = off + size;
        if end == self.cap {
            end = 0;
        }
        self.tail = Pos {
            off: end,
            seq: next_seq,
        };
    }

    /// Writes a skip record whose sequence number jumps to the reservation, so numbers that
    /// may have been handed out before a crash are never reused.
    fn write_jump(&mut self) -> Result<()> {
        let off = self.reserve(RECORD_HEADER)?;
        let (seq, epoch) = (self.seq_limit, self.epoch);
        let ring = &mut self.storage.bytes_mut()[DATA_OFFSET..];
        format::write_header(
            &mut ring[off..off + RECORD_HEADER],
            KIND_SKIP,
            seq,
            0,
            epoch,
        );
        self.advance_tail(off, RECORD_HEADER, seq);
        self.jump_pending = false;
        Ok(())
    }

    /// Finds room for `size` bytes at the tail (wrapping or growing as needed) and returns
    /// the ring offset to write at. Never grows while the record fits.
    fn reserve(&mut self, size: usize) -> Result<usize> {
        loop {
            if self.used == 0 && self.delivered.is_empty() && self.tail.off != 0 {
                // Empty: start over at the front if the record does not fit at the tail.
                if !fits_before_end(self.cap, self.tail.off, size) {
                    self.tail.off = 0;
                    self.head = self.tail;
                    self.read = self.tail;
                    // Same sequence number, new offset: write both cells, or recovery could
                    // keep the other one (a tie on head_seq) and start at the stale offset.
                    self.write_cursor();
                    self.write_cursor();
                }
            }
            match place(self.cap, self.head.off, self.tail.off, self.used, size) {
                Placement::At(off) => return Ok(off),
                Placement::WrapAt(skip_len) => {
                    let (t, seq, epoch) = (self.tail.off, self.tail.seq, self.epoch);
                    let ring = &mut self.storage.bytes_mut()[DATA_OFFSET..];
                    format::write_header(
                        &mut ring[t..t + RECORD_HEADER],
                        KIND_SKIP,
                        seq,
                        (skip_len - RECORD_HEADER) as u32,
                        epoch,
                    );
                    self.mark_dirty(DATA_OFFSET + t..DATA_OFFSET + t + RECORD_HEADER);
                    self.used += skip_len;
                    self.tail.off = 0;
                    return Ok(0);
                }
                Placement::NoRoom => self.grow_for(size)?,
            }
        }
    }

    /// Grows the ring so a record of `size` bytes fits after the tail.
    fn grow_for(&mut self, size: usize) -> Result<()> {
        let wrapped = self.used > 0 && self.tail.off <= self.head.off;
        let new_tail = if wrapped {
            self.cap + self.tail.off
        } else {
            self.tail.off
        };
        let need = new_tail
            .checked_add(size)
            .and_then(|n| n.checked_add(RECORD_HEADER))
            .ok_or(Error::Full)?;
        let mut new_cap = self.cap;
        while new_cap < need {
            new_cap = new_cap.checked_mul(2).ok_or(Error::Full)?;
        }
        if let Some(max) = self.max_cap {
            if new_cap > max {
                if need <= max {
                    new_cap = max;
                } else {
                    return Err(Error::Full);
                }
            }
        }
        if new_cap <= self.cap {
            return Err(Error::Full);
        }
        if let Some(msg) = &self.poisoned {
            return Err(self.poison_error(msg.clone()));
        }
        let old_cap = self.cap;
        let old_tail_off = self.tail.off;
        self.storage
            .grow(DATA_OFFSET + new_cap)
            .map_err(|e| self.io_err("cannot grow", e))?;
        if wrapped {
            // Make the ring contiguous: copy the wrapped front behind the old end, into space
            // no slot names yet, so a crash before the slot write loses nothing.
            let t = self.tail.off;
            let bytes = self.storage.bytes_mut();
            bytes.copy_within(DATA_OFFSET..DATA_OFFSET + t, DATA_OFFSET + old_cap);
            self.mark_dirty(DATA_OFFSET + old_cap..DATA_OFFSET + old_cap + t);
            let tail_seq = self.tail.seq;
            let shift = |p: &mut Pos| {
                if p.seq == tail_seq {
                    p.off = new_tail;
                } else if p.off < t {
                    p.off += old_cap;
                }
            };
            for d in self.delivered.iter_mut() {
                if d.off < t {
                    d.off += old_cap;
                }
                shift(&mut d.next);
            }
            shift(&mut self.read);
            shift(&mut self.head);
            self.tail.off = new_tail;
        }
        self.cap = new_cap;
        self.grow_count += 1;
        // The slot naming the new capacity follows the flush of everything it names.
        self.commit()?;
        if wrapped {
            self.scrub_stale_front(old_tail_off)?;
        }
        Ok(())
    }

    /// Invalidates the records a growth copy left at the front of the ring (`..len`). Their
    /// copies behind the old end are the live ones; a stale copy that still verified would
    /// look like a live record to a recovery that scans past damage, and could bring back an
    /// item already removed. Runs once the slot naming the new layout is durable (before, the
    /// front was still live) and flushes at once, so no later crash finds them intact.
    fn scrub_stale_front(&mut self, len: usize) -> Result<()> {
        let ring = &mut self.storage.bytes_mut()[DATA_OFFSET..DATA_OFFSET + len];
        let mut off = 0;
        while off + RECORD_HEADER <= len {
            match read_frame(ring, off, None) {
                Ok(f) => {
                    format::invalidate_header(&mut ring[off..off + RECORD_HEADER]);
                    off += f.size;
                }
                Err(_) => off += RECORD_ALIGN,
            }
        }
        self.storage
            .flush(DATA_OFFSET, len)
            .map_err(|e| self.fail_commit(e))
    }

    // ---------------------------------------------------------------- delivery

    /// The next item a `pop` would return, borrowed from the map (zero copy).
    pub fn peek(&self) -> Option<Record<'_>> {
        if self.returned > 0 {
            let d = self.delivered.iter().find(|d| d.state == State::Returned)?;
            let f = read_frame(self.ring(), d.off, Some(self.epoch)).ok()?;
            return Some(Record {
                seq: d.seq,
                payload: f.payload(self.ring(), d.off),
            });
        }
        let (off, f, _, _) = self.next_fresh()?;
        Some(Record {
            seq: f.seq,
            payload: f.payload(self.ring(), off),
        })
    }

    /// Finds the next fresh data record from `read`, stepping over skip records and damage.
    /// Returns its offset, frame, the bytes from `read` to it, and how many were damaged.
    fn next_fresh(&self) -> Option<(usize, format::Frame, usize, u64)> {
        let ring = self.ring();
        let (mut off, mut expected) = (self.read.off, self.read.seq);
        let mut dist = 0usize;
        let mut damaged = 0;
        let live = self.used.saturating_sub(self.delivered_span);
        while expected < self.tail.seq && dist < live {
            if off >= self.cap {
                off = 0;
            }
            match read_frame(ring, off, Some(self.epoch)) {
                Ok(f) if f.kind == KIND_DATA && f.seq == expected => {
                    return Some((off, f, dist, damaged))
                }
                Ok(f) if f.kind == KIND_DONE && f.seq == expected => {
                    // Removed out of order before a reopen: step over it.
                    expected += 1;
                    dist += f.size;
                    off += f.size;
                }
                Ok(f) if f.kind == KIND_SKIP && f.seq >= expected => {
                    expected = f.seq;
                    dist += f.size;
                    off += f.size;
                }
                _ => {
                    let budget = live - dist;
                    // At run time no stale record can sit between read and tail: the first
                    // candidate is the one (no committed range to protect, hence 0).
                    let (next, step) = recovery::resync(
                        ring,
                        self.epoch,
                        off,
                        expected,
                        0,
                        self.tail.seq,
                        budget,
                    )?;
                    damaged += next.seq - expected;
                    expected = next.seq;
                    dist += step;
                    off = next.off;
                }
            }
        }
        None
    }

    /// Removes the next item and returns a copy of it.
    pub fn pop(&mut self) -> Result<Option<Vec<u8>>> {
        self.pop_with(|_, payload| payload.to_vec())
    }

    /// Removes the next item into `buf` (reusing its allocation) and returns its sequence
    /// number.
    pub fn pop_into(&mut self, buf: &mut Vec<u8>) -> Result<Option<u64>> {
        self.pop_with(|seq, payload| {
            buf.clear();
            buf.extend_from_slice(payload);
            seq
        })
    }

    /// Removes the next item, handing `f` its sequence number and payload straight from the
    /// map. The removal is in the page cache when this returns (`kill -9` never delivers it
    /// again).
    pub fn pop_with<R>(&mut self, f: impl FnOnce(u64, &[u8]) -> R) -> Result<Option<R>> {
        if self.delivered.is_empty() && self.known_damage == 0 {
            // Fast path: nothing handed out, so the head moves with the read position.
            if let Some((off, frame, dist, 0)) = self.next_fresh() {
                let out = f(frame.seq, frame.payload(self.ring(), off));
                let mut next = off + frame.size;
                if next >= self.cap {
                    next = 0;
                }
                self.read = Pos {
                    off: next,
                    seq: frame.seq + 1,
                };
                self.head = self.read;
                self.used -= dist + frame.size;
                self.queued = self.queued.saturating_sub(1);
                self.write_cursor();
                return Ok(Some(out));
            }
        }
        let Some((off, frame)) = self.deliver(State::Done) else {
            return Ok(None);
        };
        let ring = self.ring();
        let out = f(frame.seq, frame.payload(ring, off));
        self.advance_head();
        self.mark_done_if_held(frame.seq, off);
        Ok(Some(out))
    }

    /// Hands out the next item without removing it: it stays in the file until
    /// [`RingFile::commit_taken`], and [`RingFile::release`] (or a crash) delivers it again,
    /// first in line.
    pub fn take(&mut self) -> Result<Option<Taken>> {
        Ok(self.deliver(State::Taken).map(|(off, frame)| Taken {
            seq: frame.seq,
            off,
        }))
    }

    /// The payload of an item handed out by [`RingFile::take`], straight from the map.
    pub fn taken_payload(&self, taken: &Taken) -> Option<&[u8]> {
        let ring = self.ring();
        let f = read_frame(ring, taken.off, Some(self.epoch)).ok()?;
        (f.seq == taken.seq).then(|| f.payload(ring, taken.off))
    }

    /// Removes a taken item for good.
    pub fn commit_taken(&mut self, seq: u64) -> Result<()> {
        let d = self.find_delivered(seq)?;
        if d.state != State::Taken {
            return Err(Error::NotInFlight { seq });
        }
        d.state = State::Done;
        let off = d.off;
        self.advance_head();
        self.mark_done_if_held(seq, off);
        Ok(())
    }

    /// An item removed while an older one is still taken keeps its space (the head cannot
    /// pass the older one), so mark it done in place: after a crash it is not delivered again.
    fn mark_done_if_held(&mut self, seq: u64, off: usize) {
        if self.delivered.front().is_some_and(|d| d.seq <= seq) {
            self.set_done(off, true);
        }
    }

    /// Marks a data record done (or present again) in place, and makes the next commit flush
    /// the mark.
    fn set_done(&mut self, off: usize, done: bool) {
        let (epoch, cap) = (self.epoch, self.cap);
        let ring = &mut self.storage.bytes_mut()[DATA_OFFSET..DATA_OFFSET + cap];
        if format::set_done(ring, off, epoch, done) {
            self.mark_dirty(DATA_OFFSET + off..DATA_OFFSET + off + RECORD_ALIGN);
        }
    }

    /// Starts removing a taken item durably: the next commit names it removed, while its
    /// space stays reserved. Finish with [`RingFile::finish_removal`] once that commit is
    /// on disk, or give it back with [`RingFile::abort_removal`].
    pub fn begin_removal(&mut self, seq: u64) -> Result<()> {
        let i = self.delivered_index(seq)?;
        if self.delivered[i].state != State::Taken {
            return Err(Error::NotInFlight { seq });
        }
        self.delivered[i].state = State::Removing;
        // Behind an item still taken or returned, the slot's head cannot name this removal:
        // mark the record itself.
        let covered = self
            .delivered
            .iter()
            .take(i)
            .all(|d| matches!(d.state, State::Done | State::Removing));
        if !covered {
            let off = self.delivered[i].off;
            self.set_done(off, true);
        }
        Ok(())
    }

    /// Completes a removal begun with [`RingFile::begin_removal`]: frees its space.
    pub fn finish_removal(&mut self, seq: u64) -> Result<()> {
        let i = self.delivered_index(seq)?;
        if self.delivered[i].state != State::Removing {
            return Err(Error::NotInFlight { seq });
        }
        self.delivered[i].state = State::Done;
        let off = self.delivered[i].off;
        self.advance_head();
        self.mark_done_if_held(seq, off);
        Ok(())
    }

    /// Abandons a removal begun with [`RingFile::begin_removal`]: the item is delivered again,
    /// first in line. If a commit already named it removed, this commits again at once.
    pub fn abort_removal(&mut self, seq: u64) -> Result<()> {
        let i = self.delivered_index(seq)?;
        if self.delivered[i].state != State::Removing {
            return Err(Error::NotInFlight { seq });
        }
        let off = self.delivered[i].off;
        self.delivered[i].state = State::Returned;
        self.returned += 1;
        self.queued += 1;
        self.set_done(off, false);
        // Removals behind it are no longer covered by the head a slot can name: mark them.
        let behind: Vec<usize> = self
            .delivered
            .iter()
            .skip(i + 1)
            .filter(|d| d.state == State::Removing)
            .map(|d| d.off)
            .collect();
        for off in behind {
            self.set_done(off, true);
        }
        if self.committed_head.seq > seq {
            // A slot already names it removed: name it present again before anything else.
            self.commit()?;
        }
        Ok(())
    }

    /// The head a commit may name: past every leading entry that is removed or being
    /// removed.
    fn durable_head(&self) -> Pos {
        let mut head = self.head;
        for d in &self.delivered {
            match d.state {
                State::Done | State::Removing => head = d.next,
                State::Taken | State::Returned => break,
            }
        }
        head
    }

    /// Gives a taken item back: it is delivered again before anything fresh.
    pub fn release(&mut self, seq: u64) -> Result<()> {
        let d = self.find_delivered(seq)?;
        if d.state != State::Taken {
            return Err(Error::NotInFlight { seq });
        }
        d.state = State::Returned;
        self.returned += 1;
        self.queued += 1;
        Ok(())
    }

    /// Items handed out by `take` and neither committed nor released.
    pub fn taken_count(&self) -> usize {
        self.delivered
            .iter()
            .filter(|d| d.state == State::Taken)
            .count()
    }

    fn find_delivered(&mut self, seq: u64) -> Result<&mut Delivered> {
        let i = self.delivered_index(seq)?;
        Ok(&mut self.delivered[i])
    }

    fn delivered_index(&self, seq: u64) -> Result<usize> {
        self.delivered
            .binary_search_by_key(&seq, |d| d.seq)
            .map_err(|_| Error::NotInFlight { seq })
    }

    /// Picks the next item (returned first, else fresh), marks it `state`, and returns its
    /// offset and checked frame.
    fn deliver(&mut self, state: State) -> Option<(usize, format::Frame)> {
        while self.returned > 0 {
            let i = self
                .delivered
                .iter()
                .position(|d| d.state == State::Returned)?;
            let d = self.delivered[i];
            self.returned -= 1;
            self.queued -= 1;
            match read_frame(self.ring(), d.off, Some(self.epoch)) {
                Ok(f) if f.seq == d.seq => {
                    self.delivered[i].state = state;
                    return Some((d.off, f));
                }
                _ => {
                    // Damaged since it was first delivered: count it, never return it.
                    self.delivered[i].state = State::Done;
                    self.damaged_at_runtime += 1;
                    self.advance_head();
                }
            }
        }
        let Some((off, frame, dist, damaged)) = self.next_fresh() else {
            if self.queued > 0 && self.read.seq < self.tail.seq {
                // Everything left failed its checks after open: count it and move on.
                self.drop_unreadable_rest();
            }
            return None;
        };
        if damaged > 0 {
            let known = damaged.min(self.known_damage);
            self.known_damage -= known;
            let new = damaged - known;
            if new > 0 {
                self.damaged_at_runtime += new;
                self.queued = self.queued.saturating_sub(new);
                log::warn!(
                    "{}: {new} record(s) failed their checksum and were skipped",
                    self.path_buf().display()
                );
            }
        }

        let mut next_off = off + frame.size;
        if next_off >= self.cap {
            next_off = 0;
        }
        let next = Pos {
            off: next_off,
            seq: frame.seq + 1,
        };
        let span = dist + frame.size;
        self.delivered_span += span;
        self.queued = self.queued.saturating_sub(1);
        self.read = next;
        self.delivered.push_back(Delivered {
            seq: frame.seq,
            off,
            next,
            span,
            state,
        });
        Some((off, frame))
    }

    fn drop_unreadable_rest(&mut self) {
        let lost = self.tail.seq - self.read.seq;
        self.damaged_at_runtime += lost.min(self.queued);
        log::warn!(
            "{}: {lost} record(s) at the end failed their checks and were dropped",
            self.path_buf().display()
        );
        self.queued = 0;
        let live = self.used.saturating_sub(self.delivered_span);
        self.delivered_span += live;
        self.delivered.push_back(Delivered {
            seq: self.read.seq,
            off: self.read.off,
            next: self.tail,
            span: live,
            state: State::Done,
        });
        self.read = self.tail;
        self.advance_head();
    }

    /// Frees the space of every done entry at the front and writes the cursor.
    fn advance_head(&mut self) {
        let mut moved = false;
        while let Some(d) = self.delivered.front() {
            if d.state != State::Done {
                break;
            }
            self.used -= d.span;
            self.delivered_span -= d.span;
            self.head = d.next;
            self.delivered.pop_front();
            moved = true;
        }
        if moved {
            if self.delivered.is_empty() {
                self.head = self.read;
            }
            self.write_cursor();
        }
    }

    /// Records the head in the inactive slot page (never the active one, so a torn write
    /// cannot take the newest slot with it), alternating between two cells.
    fn write_cursor(&mut self) {
        let page = 1 - self.active_slot;
        let at = format::cursor_offset(page, self.cursor_cell);
        self.cursor_cell ^= 1;
        let cell = Cursor {
            head_seq: self.head.seq,
            head_off: self.head.off as u64,
        }
        .encode(self.epoch);
        self.storage.bytes_mut()[at..at + cell.len()].copy_from_slice(&cell);
    }

    // ---------------------------------------------------------------- commit

    /// The durable commit: flushes every record written since the last commit, then writes
    /// the inactive header slot naming them and flushes it. When this returns `Ok`, every
    /// push and removal before it survives a power cut.
    ///
    /// A failed flush poisons the ring: every later `sync` fails until it is reopened.
    pub fn sync(&mut self) -> Result<()> {
        self.commit()
    }

    fn poison_error(&self, cause: String) -> Error {
        Error::Poisoned {
            path: self.path_buf(),
            cause,
        }
    }

    pub(crate) fn commit(&mut self) -> Result<()> {
        self.commit_with(false)
    }

    fn commit_with(&mut self, clean: bool) -> Result<()> {
        // Ranges a concurrent commit is still flushing must be durable before this slot too.
        let others = std::mem::take(&mut self.in_flight);
        for r in &others {
            if let Err(e) = self.storage.flush(r.start, r.len()) {
                return Err(self.fail_commit(e));
            }
        }
        let plan = self.prepare_commit(clean)?;
        self.commit_planned(plan)
    }

    /// Runs a prepared commit to the end on this thread.
    pub(crate) fn commit_planned(&mut self, plan: CommitPlan) -> Result<()> {
        for r in &plan.ranges {
            if let Err(e) = self.storage.flush(r.start, r.len()) {
                return Err(self.fail_commit(e));
            }
        }
        let page = self.write_slot(&plan)?;
        if let Some(page) = page {
            if let Err(e) = self.storage.flush(SLOT_OFFSETS[page], PAGE) {
                return Err(self.fail_commit(e));
            }
        }
        self.finish_commit(&plan);
        Ok(())
    }

    /// Marks the ring poisoned after a failed flush and returns the error to report.
    pub(crate) fn fail_commit(&mut self, e: std::io::Error) -> Error {
        let msg = e.to_string();
        log::error!("{}: flush failed: {msg}", self.path_buf().display());
        self.poisoned.get_or_insert(msg);
        self.io_err("cannot flush", e)
    }

    /// Step 1 of a commit: what to flush. Clears the dirty list.
    pub(crate) fn prepare_commit(&mut self, clean: bool) -> Result<CommitPlan> {
        if let Some(msg) = &self.poisoned {
            return Err(self.poison_error(msg.clone()));
        }
        let seq_limit = if clean {
            self.next_seq()
        } else {
            self.next_seq()
                .saturating_add(SEQ_RESERVATION)
                .min(MAX_SEQ)
                .max(self.seq_limit)
        };
        // Keep the list's capacity: an empty-capacity list makes the next `mark_dirty` fall
        // back to flushing the whole ring.
        let ranges = std::mem::replace(&mut self.dirty, Vec::with_capacity(8));
        self.in_flight.clone_from(&ranges);
        Ok(CommitPlan {
            ranges,
            head: self.durable_head(),
            tail: self.tail,
            seq_limit,
            source_seq: self.source_seq,
            generation: self.generation,
            clean,
        })
    }

    /// Step 2, after the plan's ranges are flushed: writes the slot into the inactive page
    /// and returns that page, or `None` when another commit wrote a slot in between (it
    /// flushed this plan's ranges too, and covered everything the plan did).
    pub(crate) fn write_slot(&mut self, plan: &CommitPlan) -> Result<Option<usize>> {
        if let Some(msg) = &self.poisoned {
            return Err(self.poison_error(msg.clone()));
        }
        if plan.generation != self.generation {
            return Ok(None);
        }
        let page = 1 - self.active_slot;
        let slot = Slot {
            magic: SLOT_MAGIC,
            version: FORMAT_VERSION,
            flags: if plan.clean { FLAG_CLEAN } else { 0 }
                | if plan.source_seq.is_some() {
                    format::FLAG_SOURCE
                } else {
                    0
                },
            encoding: self.encoding,
            epoch: self.epoch,
            generation: self.generation + 1,
            capacity: self.cap as u64,
            head_off: plan.head.off as u64,
            head_seq: plan.head.seq,
            tail_off: plan.tail.off as u64,
            next_seq: plan.tail.seq,
            seq_limit: plan.seq_limit,
            source_seq: plan.source_seq.unwrap_or(0),
            ..Slot::default()
        };
        let at = SLOT_OFFSETS[page];
        self.storage.bytes_mut()[at..at + format::SLOT_SIZE].copy_from_slice(&slot.encode());
        self.generation += 1;
        self.active_slot = page;
        Ok(Some(page))
    }

    /// Step 3, after the slot page is flushed.
    pub(crate) fn finish_commit(&mut self, plan: &CommitPlan) {
        self.in_flight.clear();
        if plan.generation + 1 == self.generation {
            self.committed = plan.tail;
            self.committed_head = plan.head;
            self.seq_limit = self.seq_limit.max(plan.seq_limit);
            self.committed_source = plan.source_seq;
        }
        self.commit_count += 1;
    }

    /// Closes the ring with a final durable commit marked clean, and returns the storage.
    pub fn close(mut self) -> Result<S> {
        self.commit_with(true)?;
        Ok(self.into_storage())
    }

    /// A handle that flushes ranges while this ring keeps working, if the storage has one.
    pub(crate) fn concurrent_flusher(
        &self,
    ) -> Option<std::sync::Arc<dyn crate::storage::ConcurrentFlush>> {
        self.storage.concurrent_flusher()
    }

    /// Walks every live record from the head without consuming anything: items taken and not
    /// committed are included. Damaged records are skipped.
    pub fn records(&self) -> Records<'_, S> {
        Records {
            ring: self,
            pos: self.head,
            walked: 0,
        }
    }
}

/// Iterator over the live records of a ring, oldest first. See [`RingFile::records`].
pub struct Records<'a, S: Storage> {
    ring: &'a RingFile<S>,
    pos: Pos,
    walked: usize,
}

impl<'a, S: Storage> Iterator for Records<'a, S> {
    type Item = Record<'a>;

    fn next(&mut self) -> Option<Record<'a>> {
        let ring: &'a [u8] = self.ring.ring();
        let cap = self.ring.cap;
        while self.pos.seq < self.ring.tail.seq && self.walked < self.ring.used {
            if self.pos.off >= cap {
                self.pos.off = 0;
            }
            let off = self.pos.off;
            match read_frame(ring, off, Some(self.ring.epoch)) {
                Ok(f) if f.kind == KIND_DATA && f.seq == self.pos.seq => {
                    self.pos = Pos {
                        off: off + f.size,
                        seq: f.seq + 1,
                    };
                    self.walked += f.size;
                    return Some(Record {
                        seq: f.seq,
                        payload: f.payload(ring, off),
                    });
                }
                Ok(f) if f.kind == KIND_DONE && f.seq == self.pos.seq => {
                    self.pos = Pos {
                        off: off + f.size,
                        seq: f.seq + 1,
                    };
                    self.walked += f.size;
                }
                Ok(f) if f.kind == KIND_SKIP && f.seq >= self.pos.seq => {
                    self.pos = Pos {
                        off: off + f.size,
                        seq: f.seq,
                    };
                    self.walked += f.size;
                }
                _ => {
                    let budget = self.ring.used - self.walked;
                    let (next, step) = recovery::resync(
                        ring,
                        self.ring.epoch,
                        off,
                        self.pos.seq,
                        0,
                        self.ring.tail.seq,
                        budget,
                    )?;
                    self.pos = next;
                    self.walked += step;
                }
            }
        }
        None
    }
}

/// Where a record goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Placement {
    /// At this offset.
    At(usize),
    /// After a skip record of this many bytes at the tail, at offset 0.
    WrapAt(usize),
    /// Not without growing.
    NoRoom,
}

/// True when a record of `size` bytes may start at `at`: it ends exactly at `cap` or leaves
/// room for at least a header before it.
pub(crate) fn fits_before_end(cap: usize, at: usize, size: usize) -> bool {
    let Some(room) = cap.checked_sub(at) else {
        return false;
    };
    size == room || size.saturating_add(RECORD_HEADER) <= room
}

/// The ring arithmetic: where a record of `size` bytes goes, given the head and tail
/// offsets and the bytes in use.
pub(crate) fn place(cap: usize, head: usize, tail: usize, used: usize, size: usize) -> Placement {
    let wrapped = used > 0 && tail <= head;
    if wrapped {
        return if tail + size <= head {
            Placement::At(tail)
        } else {
            Placement::NoRoom
        };
    }
    if fits_before_end(cap, tail, size) {
        return Placement::At(tail);
    }
    // Wrap: the record goes to the front, a skip record covers the rest of the ring.
    let front_room = if used == 0 { tail } else { head };
    if size <= front_room && fits_before_end(cap, 0, size) && tail < cap {
        Placement::WrapAt(cap - tail)
    } else {
        Placement::NoRoom
    }
}

/// Copies the file to a backup beside it (never overwriting one), and makes it durable.
fn backup(path: &Path, bytes: &[u8]) -> Result<std::path::PathBuf> {
    use std::io::Write;
    let stamp = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    for n in 0u32.. {
        let candidate = if n == 0 {
            path.with_file_name(format!("{name}.{stamp}.bak"))
        } else {
            path.with_file_name(format!("{name}.{stamp}-{n}.bak"))
        };
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&candidate);
        match file {
            Ok(mut f) => {
                f.write_all(bytes)
                    .and_then(|_| f.sync_all())
                    .map_err(|e| Error::io("cannot write the backup", &candidate, e))?;
                crate::map::sync_parent_dir(&candidate)?;
                return Ok(candidate);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(Error::io("cannot create a backup of", path, e)),
        }
    }
    unreachable!("u32 backup names exhausted")
}

#[cfg(test)]
#[path = "ring_tests.rs"]
mod tests;
