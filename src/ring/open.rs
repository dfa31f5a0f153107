//! Opening a ring: a fresh file, a sound one (recovery's walk), or a salvage with backup.

use std::collections::VecDeque;
use std::path::Path;

use super::{new_epoch, round_capacity, RingFile, RingOptions};
use crate::error::{Error, Result};
use crate::format::{
    self, DATA_OFFSET, KIND_DATA, KIND_SKIP, MIN_CAPACITY, RECORD_ALIGN, RECORD_HEADER,
};
use crate::recovery::{self, Found, Pos, RecoveryReport, Salvage, Sound};
use crate::storage::Storage;

impl<S: Storage> RingFile<S> {
    /// Same as [`RingFile::open_in`]; reads better where the storage is known to be empty.
    pub fn create_in(storage: S, options: &RingOptions) -> Result<Self> {
        Self::open_in(storage, options)
    }

    /// Opens a ring over `storage`, recovering what it holds (an empty or all-zero region
    /// becomes a new queue).
    pub fn open_in(mut storage: S, options: &RingOptions) -> Result<Self> {
        let mut found = recovery::recover(storage.bytes());
        let max_cap = options.max_capacity.map(round_capacity);
        let mut truncated_from = None;
        if let Found::Truncated { slot, len } = found {
            // Cut short of its ring by at most `recovery::max_extension`: extend the file
            // back (zeros, on disk) and recover over the whole ring, never over a heap copy.
            check_encoding(&storage, options, slot.encoding)?;
            let was = storage.bytes().len();
            storage.grow(len).map_err(|e| {
                Error::io(
                    "cannot extend the truncated file",
                    storage_path(&storage),
                    e,
                )
            })?;
            truncated_from = Some(was);
            found = recovery::recover(storage.bytes());
        }
        match found {
            Found::Fresh => Self::init_fresh(storage, options, max_cap),
            Found::Sound(mut sound) => {
                if let Some(was) = truncated_from {
                    sound.report.truncated = true;
                    sound.report.notes.insert(
                        0,
                        format!(
                            "the file was {was} bytes, shorter than its {}-byte ring, and was extended back",
                            sound.slot.capacity
                        ),
                    );
                }
                Self::from_sound(storage, options, max_cap, sound)
            }
            Found::Salvage(salvage) => Self::from_salvage(storage, options, max_cap, salvage),
            Found::TooNew(reason) => Err(Error::Corrupt {
                path: storage_path(&storage),
                reason,
            }),
            Found::Truncated { .. } => Err(Error::Corrupt {
                path: storage_path(&storage),
                reason: "the file stays shorter than its header after extending it".into(),
            }),
        }
    }

    pub(super) fn blank(
        storage: S,
        epoch: u64,
        encoding: u32,
        cap: usize,
        max_cap: Option<usize>,
    ) -> Self {
        RingFile {
            storage,
            epoch,
            encoding,
            cap,
            max_cap,
            generation: 0,
            active_slot: 1,
            durable_slot: 1,
            head: Pos::default(),
            read: Pos::default(),
            tail: Pos::default(),
            used: 0,
            queued: 0,
            delivered: VecDeque::with_capacity(16),
            delivered_span: 0,
            returned: Default::default(),
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

    pub(super) fn init_fresh(
        storage: S,
        options: &RingOptions,
        max_cap: Option<usize>,
    ) -> Result<Self> {
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
    pub(super) fn init_region(&mut self, cap: usize) -> Result<()> {
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
        self.durable_slot = 1;
        self.commit()
    }

    pub(super) fn from_sound(
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
        check_encoding(&ring.storage, options, slot.encoding)?;
        ring.generation = slot.generation;
        ring.active_slot = sound.slot_index;
        ring.durable_slot = sound.slot_index;
        // The slot recovery chose may be in the page cache only (a crash between a slot
        // write and its flush): make it durable before any cursor or slot write goes into
        // the other page.
        let at = format::SLOT_OFFSETS[sound.slot_index];
        ring.storage
            .flush(at, format::PAGE)
            .map_err(|e| ring.io_err("cannot flush", e))?;
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

    /// Invalidates every record header inside the stretches recovery stepped over: stale
    /// copies from an earlier life of the file (unsynced records written over removed ones,
    /// older laps) and the damaged records themselves. The next commit names a tail past these
    /// stretches, and a later recovery that met the same damage could otherwise resync onto
    /// one of them and skip live records. Any header of this epoch is cleared, checksum or not
    /// (nothing in a stretch is live), so this costs one pass without CRCs. Written in memory
    /// only; the whole ring is flushed before that commit.
    pub(super) fn invalidate_stale(&mut self, ranges: &[(usize, usize)]) {
        let (cap, epoch) = (self.cap, self.epoch);
        let ring = &mut self.storage.bytes_mut()[DATA_OFFSET..DATA_OFFSET + cap];
        for &(start, len) in ranges {
            let mut dist = 0;
            while dist + RECORD_HEADER <= len {
                let off = (start + dist) % cap;
                if let Some(hdr) = ring.get_mut(off..off + RECORD_HEADER) {
                    let kind = hdr[8];
                    if (kind == KIND_DATA || kind == KIND_SKIP)
                        && format::read_u64(hdr, 16) == Some(epoch)
                    {
                        format::invalidate_header(hdr);
                    }
                }
                dist += RECORD_ALIGN;
            }
        }
    }

    pub(super) fn from_salvage(
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

    /// Counts the data records between the committed tail and the recovered tail by walking
    /// them. Anything unexpected counts nothing: a relay then stores a record twice rather
    /// than skip one it never stored.
    pub(super) fn records_past_commit(&self) -> u64 {
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
}

fn storage_path<S: Storage>(storage: &S) -> std::path::PathBuf {
    storage
        .path()
        .map(Path::to_path_buf)
        .unwrap_or_else(|| "<memory>".into())
}

/// The encoding a file was made with must be the one asked for, if any.
fn check_encoding<S: Storage>(storage: &S, options: &RingOptions, found: u32) -> Result<()> {
    match options.encoding {
        Some(want) if want != found => Err(Error::EncodingMismatch {
            path: storage_path(storage),
            found: crate::codec::encoding_name(found),
            expected: crate::codec::encoding_name(want),
        }),
        _ => Ok(()),
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
