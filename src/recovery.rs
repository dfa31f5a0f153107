//! Open-time recovery over a byte image of the file: pick the header slot, find the head,
//! walk the records, skip damage, and report what happened. No I/O: it runs the same over a
//! mapped file and over an exact-length heap buffer (which AddressSanitizer can see the end of).

use std::path::PathBuf;

use crate::format::{
    self, cursor_offset, Cursor, Frame, Slot, DATA_OFFSET, KIND_DATA, KIND_DONE, KIND_SKIP,
    RECORD_ALIGN, SLOT_OFFSETS, SLOT_SIZE,
};

/// What recovery did when a file was opened.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct RecoveryReport {
    /// Items found and kept.
    pub records_kept: u64,
    /// Items lost to damage (failed checksums inside the committed range, or not salvaged).
    pub records_dropped: u64,
    /// Bytes stepped over to get past damaged records.
    pub bytes_skipped: u64,
    /// Where the damaged file was copied before it was rebuilt, if it was.
    pub backup_path: Option<PathBuf>,
    /// True when items that were already removed may be delivered again (no slot survived,
    /// so the head is not known).
    pub redelivery_possible: bool,
    /// True when the file was shorter than its header says and was extended back.
    pub truncated: bool,
    /// True when no header slot was usable and the file was rebuilt from its records.
    pub rebuilt: bool,
    /// Human-readable notes, one per event.
    pub notes: Vec<String>,
    /// Bytes recovery checksummed. At most 8 times the file's length plus 1 MiB whatever
    /// the file holds (past that, records are counted as damaged unchecked): a measure of
    /// recovery's cost.
    pub checked_bytes: u64,
}

impl RecoveryReport {
    /// True when recovery lost, skipped or rebuilt anything.
    pub fn anything_happened(&self) -> bool {
        self.records_dropped > 0 || self.bytes_skipped > 0 || self.truncated || self.rebuilt
    }
}

/// A position in the ring: a record offset and the sequence number expected there.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct Pos {
    /// Offset from the start of the ring.
    pub off: usize,
    /// Sequence number.
    pub seq: u64,
}

/// The state found in a file whose header slot is sound.
#[derive(Clone, Debug)]
pub(crate) struct Sound {
    pub slot: Slot,
    pub slot_index: usize,
    pub head: Pos,
    pub tail: Pos,
    pub items: u64,
    pub used: usize,
    /// Damaged records the walk stepped over between head and tail (deliveries meet them
    /// again and must not count them twice).
    pub skipped_in_walk: u64,
    /// Ring ranges the walk stepped over to get past damage. Anything in them that still
    /// verifies is stale; the ring invalidates it before its next commit makes the range
    /// part of a longer committed one (see `RingFile::from_sound`).
    pub damaged_ranges: Vec<(usize, usize)>,
    pub report: RecoveryReport,
}

/// A file without a usable slot: the records worth keeping, in order.
#[derive(Clone, Debug)]
pub(crate) struct Salvage {
    pub epoch: Option<u64>,
    /// The encoding a damaged slot still shows, when its magic survived.
    pub encoding_hint: Option<u32>,
    pub records: Vec<(u64, std::ops::Range<usize>)>,
    pub report: RecoveryReport,
}

/// What an image holds.
#[derive(Clone, Debug)]
pub(crate) enum Found {
    /// Empty or all zeros: a crash during creation, or a new file.
    Fresh,
    /// A slot is sound.
    Sound(Sound),
    /// No slot is sound: rebuild from what verifies.
    Salvage(Salvage),
    /// Both slots are sound but name a ring longer than the file, by at most
    /// [`max_extension`]: extend the file to `len` (on disk, never on the heap) and recover
    /// again.
    Truncated { slot: Slot, len: usize },
    /// A slot that verifies names a format version newer than this build's: refuse the file
    /// untouched rather than read it by the wrong rules (or salvage and rewrite it).
    TooNew(String),
}

/// How many times the file's length recovery may checksum, in all, before it treats every
/// further record it would have to checksum as damaged. A sound or torn file needs at most
/// about 6 times its ring: the walk hashes each record once (plus the one that ends it), a
/// head scan hashes the records once more, and each walk breaking a tie (two for a record
/// and its growth copy) up to twice the ring. Only crafted images, where claimed records
/// nest inside each other, come near it. Keeps open linear in the file's size on any image.
pub const CHECK_FACTOR: u64 = 8;
/// Checksum bytes allowed on top of `CHECK_FACTOR` times the length (small files).
const CHECK_SLACK: u64 = 1 << 20;
/// At most this many positions holding the lowest sequence number are walked to break a tie
/// in the head scan (a sound file has at most two: a record and its growth copy).
const TIE_WALKS: usize = 4;

/// The most a truncated file is extended back by at open: missing bytes up to the file's own
/// length (or 1 MiB for small files). A slot naming more is treated as damage and the
/// records are salvaged: a few bytes must not make open allocate gigabytes.
pub(crate) fn max_extension(file_len: usize) -> usize {
    file_len.max(1 << 20)
}

/// The checksum budget of one recovery (or one runtime resync): every CRC recovery computes
/// goes through [`Checker::verify`], which refuses once the budget is spent.
///
/// Bound: each call charges the bytes it hashes before hashing them, so a recovery hashes at
/// most `CHECK_FACTOR * len + CHECK_SLACK` bytes; every loop outside the CRC visits each
/// 8-byte offset of the ring a bounded number of times (the walk and its resyncs move
/// forward through at most one lap, plus one full-budget scan when it settles for a record
/// past the committed range, after which it never resyncs again; the head scan is one pass
/// plus at most `TIE_WALKS` walks; salvage one pass). So open is linear in the file's size.
#[derive(Clone, Debug)]
pub(crate) struct Checker {
    left: u64,
    checked: u64,
    refused: u64,
}

impl Checker {
    /// A budget for an image of `len` bytes.
    pub(crate) fn new(len: usize) -> Self {
        Checker {
            left: (len as u64).saturating_mul(CHECK_FACTOR) + CHECK_SLACK,
            checked: 0,
            refused: 0,
        }
    }

    /// Verifies the CRC of the record whose header `h` is at `off`, charging the budget;
    /// once the budget is spent, every record is refused as damaged.
    pub(crate) fn verify(
        &mut self,
        ring: &[u8],
        off: usize,
        h: &format::Header,
    ) -> Result<Frame, format::FrameProblem> {
        let cost = h.crc_len() as u64;
        if cost > self.left {
            self.refused += 1;
            self.left = 0;
            return Err(format::FrameProblem::Checksum);
        }
        self.left -= cost;
        self.checked += cost;
        h.verify(ring, off)
    }

    /// Reads the record at `off` when its header passes `cheap` (checked before the CRC).
    pub(crate) fn frame(
        &mut self,
        ring: &[u8],
        off: usize,
        epoch: Option<u64>,
        cheap: impl FnOnce(&format::Header) -> bool,
    ) -> Option<Frame> {
        let h = format::read_header(ring, off, epoch).ok()?;
        if !cheap(&h) {
            return None;
        }
        self.verify(ring, off, &h).ok()
    }

    fn note(&self, report: &mut RecoveryReport) {
        report.checked_bytes += self.checked;
        if self.refused > 0 {
            report.notes.push(format!(
                "checksum budget spent after {} bytes: {} record(s) were treated as damaged unchecked \
                 (records claimed inside each other: a crafted or badly damaged file)",
                self.checked, self.refused
            ));
        }
    }
}

/// Recovers the queue state from `image`, the whole file. Allocates nothing in proportion to
/// what the bytes claim: only to what they hold (salvage's list of records).
pub(crate) fn recover(image: &[u8]) -> Found {
    if image.iter().all(|&b| b == 0) {
        return Found::Fresh;
    }
    let mut best: Option<(usize, Slot)> = None;
    let mut best_too_long: Option<(usize, Slot)> = None;
    let mut problems = Vec::new();
    for (i, &at) in SLOT_OFFSETS.iter().enumerate() {
        let Some(raw) = image.get(at..at + SLOT_SIZE) else {
            problems.push(format!("slot {i}: file too short"));
            continue;
        };
        let Some(slot) = Slot::decode(raw) else {
            continue;
        };
        if let Err(p) = slot.check(raw) {
            if let format::SlotProblem::Version(v) = p {
                if v > format::FORMAT_VERSION {
                    return Found::TooNew(format!(
                        "it was written by a newer ringq (format version {v}; this build reads \
                         version {} only): open it with that version or later",
                        format::FORMAT_VERSION
                    ));
                }
            }
            problems.push(format!("slot {i}: {p:?}"));
            continue;
        }
        let fits = (DATA_OFFSET as u64)
            .checked_add(slot.capacity)
            .is_some_and(|need| need <= image.len() as u64);
        let target = if fits { &mut best } else { &mut best_too_long };
        if target.is_none_or(|(_, b)| slot.generation > b.generation) {
            *target = Some((i, slot));
        }
    }
    if let Some((index, slot)) = best {
        return Found::Sound(recover_with_slot(image, index, slot));
    }
    if let Some((_, slot)) = best_too_long {
        // A file cut short of the ring its slots name. Extend it back (on disk) and recover
        // over the full length when little is missing; a claim far beyond the file is damage.
        let need = usize::try_from(slot.capacity)
            .ok()
            .and_then(|c| c.checked_add(DATA_OFFSET));
        return match need {
            Some(len) if len - image.len() <= max_extension(image.len()) => {
                Found::Truncated { slot, len }
            }
            _ => salvage(
                image,
                format!(
                    "both slots name a {}-byte ring, far more than the {}-byte file",
                    slot.capacity,
                    image.len()
                ),
            ),
        };
    }
    salvage(image, problems.join("; "))
}

fn recover_with_slot(image: &[u8], slot_index: usize, slot: Slot) -> Sound {
    let cap = slot.capacity as usize;
    let ring = &image[DATA_OFFSET..DATA_OFFSET + cap];
    let epoch = slot.epoch;
    let mut report = RecoveryReport::default();
    let mut chk = Checker::new(image.len());

    // The head is the furthest of the slot's head and any valid cursor cell.
    let mut cursor: Option<Cursor> = None;
    for page in 0..2 {
        for cell in 0..2 {
            let at = cursor_offset(page, cell);
            let Some(c) = image.get(at..).and_then(|b| Cursor::decode(b, epoch)) else {
                continue;
            };
            let plausible = c.head_seq >= slot.head_seq
                && c.head_seq <= slot.seq_limit
                && (c.head_off as usize) < cap
                && c.head_off.is_multiple_of(RECORD_ALIGN as u64);
            if plausible && cursor.is_none_or(|b| c.head_seq > b.head_seq) {
                cursor = Some(c);
            }
        }
    }
    let floor = cursor.map_or(slot.head_seq, |c| c.head_seq);
    let committed_end = slot.next_seq;
    let seq_limit = slot.seq_limit;

    let mut candidates = Vec::new();
    if let Some(c) = cursor {
        candidates.push(Pos {
            off: c.head_off as usize,
            seq: c.head_seq,
        });
    }
    if floor == slot.head_seq {
        candidates.push(Pos {
            off: slot.head_off as usize,
            seq: slot.head_seq,
        });
    }
    let start = candidates
        .into_iter()
        .find(|p| starts_at(ring, p.off, p.seq, epoch, &mut chk))
        .or_else(|| scan_for_head(ring, epoch, floor, seq_limit, &mut chk))
        // A start past the committed range must be the very next number: otherwise records
        // nobody committed would be skipped without a trace (a gap in the unsynced tail).
        .filter(|p| p.seq <= committed_end.max(floor));

    let Some(start) = start else {
        // Nothing at or after the head: an empty queue. Keep the cursor's place if any.
        let head = cursor
            .map(|c| Pos {
                off: c.head_off as usize,
                seq: c.head_seq,
            })
            .unwrap_or(Pos {
                off: slot.tail_off as usize,
                seq: slot.next_seq,
            });
        let missing = committed_end.saturating_sub(floor);
        if missing > 0 {
            report.records_dropped = missing;
            report.notes.push(format!(
                "{missing} committed record(s) failed their checks and were dropped"
            ));
        }
        chk.note(&mut report);
        return Sound {
            slot,
            slot_index,
            head,
            tail: head,
            items: 0,
            used: 0,
            skipped_in_walk: 0,
            damaged_ranges: Vec::new(),
            report,
        };
    };
    if start.seq > floor && floor < committed_end {
        let lost = start.seq.min(committed_end) - floor;
        report.records_dropped += lost;
        report.notes.push(format!(
            "{lost} committed record(s) at the head failed their checks and were dropped"
        ));
    }
    let walk = walk(ring, epoch, start, committed_end, seq_limit, &mut chk);
    report.records_kept = walk.items;
    report.records_dropped += walk.dropped;
    report.bytes_skipped += walk.bytes_skipped as u64;
    if walk.dropped > 0 {
        report.notes.push(format!(
            "{} committed record(s) failed their checks and were skipped ({} bytes)",
            walk.dropped, walk.bytes_skipped
        ));
    }
    chk.note(&mut report);
    Sound {
        slot,
        slot_index,
        head: start,
        tail: walk.end,
        items: walk.items,
        used: walk.used,
        skipped_in_walk: walk.dropped,
        damaged_ranges: walk.damaged_ranges,
        report,
    }
}

/// True when a walk may start at `off` expecting `seq`.
fn starts_at(ring: &[u8], off: usize, seq: u64, epoch: u64, chk: &mut Checker) -> bool {
    let cheap = |h: &format::Header| {
        if h.kind == KIND_SKIP {
            h.seq >= seq
        } else {
            h.seq == seq
        }
    };
    chk.frame(ring, off, Some(epoch), cheap).is_some()
}

/// Finds where the live records start when neither the cursor nor the slot names a record:
/// the lowest sequence number at or above `floor` (ties: the position with the longest walk).
///
/// One pass finds the lowest number and where it sits (only records that could beat or tie
/// the best so far are checksummed); then at most [`TIE_WALKS`] of those positions are walked.
fn scan_for_head(
    ring: &[u8],
    epoch: u64,
    floor: u64,
    seq_limit: u64,
    chk: &mut Checker,
) -> Option<Pos> {
    let mut lowest: Option<u64> = None;
    let mut at: Vec<usize> = Vec::new();
    for off in (0..ring.len()).step_by(RECORD_ALIGN) {
        let cheap = |h: &format::Header| {
            h.kind != KIND_SKIP
                && h.seq >= floor
                && h.seq < seq_limit
                && lowest.is_none_or(|l| h.seq < l || (h.seq == l && at.len() < TIE_WALKS))
        };
        let Some(f) = chk.frame(ring, off, Some(epoch), cheap) else {
            continue;
        };
        if lowest != Some(f.seq) {
            lowest = Some(f.seq);
            at.clear();
        }
        at.push(off);
    }
    let seq = lowest?;
    if at.len() == 1 {
        return Some(Pos { off: at[0], seq });
    }
    let mut best: Option<(Pos, u64)> = None;
    for off in at {
        let pos = Pos { off, seq };
        let items = walk(ring, epoch, pos, 0, seq_limit, chk).items;
        if best.is_none_or(|(_, b)| items > b) {
            best = Some((pos, items));
        }
    }
    best.map(|(p, _)| p)
}

/// The outcome of walking the records from a start position.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Walk {
    /// Where the next record goes, and its sequence number.
    pub end: Pos,
    pub items: u64,
    pub used: usize,
    pub dropped: u64,
    pub bytes_skipped: usize,
    /// `(offset, length)` of each stretch stepped over (it may wrap past the ring's end).
    pub damaged_ranges: Vec<(usize, usize)>,
}

/// Walks consecutive records from `start`. Inside the committed range (`seq <
/// committed_end`) a bad record is damage: step over it and go on. Past it, stop at the
/// first record that fails.
pub(crate) fn walk(
    ring: &[u8],
    epoch: u64,
    start: Pos,
    committed_end: u64,
    seq_limit: u64,
    chk: &mut Checker,
) -> Walk {
    let cap = ring.len();
    let mut w = Walk {
        end: start,
        items: 0,
        used: 0,
        dropped: 0,
        bytes_skipped: 0,
        damaged_ranges: Vec::new(),
    };
    let (mut off, mut expected) = (start.off, start.seq);
    while w.used < cap {
        if off >= cap {
            off = 0;
        }
        let room = cap - w.used;
        let cheap = |h: &format::Header| {
            h.size <= room
                && if h.kind == KIND_SKIP {
                    h.seq >= expected && h.seq <= seq_limit
                } else {
                    h.seq == expected
                }
        };
        let size = match chk.frame(ring, off, Some(epoch), cheap) {
            Some(f) if f.kind == KIND_DATA => {
                w.items += 1;
                expected += 1;
                f.size
            }
            Some(f) if f.kind == KIND_DONE => {
                expected += 1;
                f.size
            }
            Some(f) => {
                expected = f.seq;
                f.size
            }
            None if expected < committed_end => {
                let Some((next, dist)) = resync_checked(
                    ring,
                    epoch,
                    off,
                    expected,
                    committed_end,
                    seq_limit,
                    room,
                    chk,
                ) else {
                    // Nothing verifies after it: the rest of the committed range is lost.
                    w.dropped += lost_records(committed_end - expected, room);
                    expected = committed_end;
                    break;
                };
                w.dropped += lost_records(next.seq - expected, dist);
                w.damaged_ranges.push((off, dist));
                w.bytes_skipped += dist;
                w.used += dist;
                off = next.off;
                expected = next.seq;
                continue;
            }
            None => break,
        };
        w.used += size;
        off += size;
    }
    if off >= cap {
        off = 0;
    }
    w.end = Pos { off, seq: expected };
    w
}

/// How many records a damaged stretch of `bytes` bytes cost, when the sequence numbers
/// around it differ by `numbers`. A jump in the numbering (after an unclean stop) or a
/// resync onto a skip record makes `numbers` far larger than what fits: no record takes
/// less than a header.
fn lost_records(numbers: u64, bytes: usize) -> u64 {
    numbers.min((bytes / format::RECORD_HEADER) as u64)
}

/// After a bad record at `from` (where `expected` should be), finds the next record worth
/// keeping: by the bad record's own length when its header is plausible and a good record
/// follows, else by scanning 8-byte boundaries forward (wrapping) for a record of this epoch
/// with a sequence number at or above `expected`. Returns it and the bytes stepped over.
///
/// While committed records are still expected (`expected < committed_end`), a record from
/// past the committed range is the last choice: it may have been written, after the last
/// commit, over records whose removal was never made durable, and taking it would skip
/// committed records that lie intact further on. It is taken only when no committed one is
/// found in the whole budget.
///
/// Of the last-choice records it keeps the lowest number (the uncommitted tail is gap-free).
/// Sequence numbers are checked before any CRC, and once a last-choice record is held only a
/// lower-numbered one is checksummed, so each candidate costs its CRC at most once.
#[allow(clippy::too_many_arguments)]
pub(crate) fn resync_checked(
    ring: &[u8],
    epoch: u64,
    from: usize,
    expected: u64,
    committed_end: u64,
    seq_limit: u64,
    budget: usize,
    chk: &mut Checker,
) -> Option<(Pos, usize)> {
    let cap = ring.len();
    let acceptable = |h: &format::Header| h.seq >= expected && h.seq < seq_limit;
    let first_choice = |seq: u64| expected >= committed_end || seq < committed_end;
    let mut fallback = None;
    if let Some((_, size)) = format::plausible_header(ring, from, epoch) {
        let next = (from + size) % cap;
        if size < budget {
            if let Some(f) = chk.frame(ring, next, Some(epoch), acceptable) {
                let found = (
                    Pos {
                        off: next,
                        seq: f.seq,
                    },
                    size,
                );
                if first_choice(f.seq) {
                    return Some(found);
                }
                fallback = Some(found);
            }
        }
    }
    let mut dist = RECORD_ALIGN;
    while dist < budget {
        let off = (from + dist) % cap;
        // Past the committed range only the lowest number can start a gap-free tail: a
        // later one in scan order would skip uncommitted records that lie intact.
        let held = fallback.map(|(p, _): (Pos, usize)| p.seq);
        let worth = |h: &format::Header| {
            acceptable(h) && (first_choice(h.seq) || held.is_none_or(|s| h.seq < s))
        };
        if let Some(f) = chk.frame(ring, off, Some(epoch), worth) {
            let found = (Pos { off, seq: f.seq }, dist);
            if first_choice(f.seq) {
                return Some(found);
            }
            fallback = Some(found);
        }
        dist += RECORD_ALIGN;
    }
    fallback
}

/// [`resync_checked`] for delivery at run time, with a budget of its own for this call.
pub(crate) fn resync(
    ring: &[u8],
    epoch: u64,
    from: usize,
    expected: u64,
    committed_end: u64,
    seq_limit: u64,
    budget: usize,
) -> Option<(Pos, usize)> {
    let mut chk = Checker::new(ring.len());
    resync_checked(
        ring,
        epoch,
        from,
        expected,
        committed_end,
        seq_limit,
        budget,
        &mut chk,
    )
}

/// Salvage from a file without a usable slot: the longest run of consecutive sequence
/// numbers among the records that verify (under the epoch most records carry).
fn salvage(image: &[u8], reason: String) -> Found {
    let mut report = RecoveryReport {
        redelivery_possible: true,
        rebuilt: true,
        ..RecoveryReport::default()
    };
    report.notes.push(format!(
        "no usable header slot ({reason}); rebuilt from the records that verify"
    ));
    let mut chk = Checker::new(image.len());
    let ring = image.get(DATA_OFFSET..).unwrap_or(&[]);
    let ring = &ring[..ring.len() - ring.len() % RECORD_ALIGN];
    // (epoch, seq, payload start, payload len, removed), one per record that verifies: at
    // most one per 24 bytes of the file.
    let mut found: Vec<(u64, u64, usize, u32, bool)> = Vec::new();
    let mut off = 0;
    while off + format::RECORD_HEADER <= ring.len() {
        match chk.frame(ring, off, None, |h| h.kind != KIND_SKIP) {
            Some(f) => {
                let start = DATA_OFFSET + off + format::RECORD_HEADER;
                found.push((f.epoch, f.seq, start, f.len, f.kind == KIND_DONE));
                off += f.size;
            }
            None => off += RECORD_ALIGN,
        }
    }
    chk.note(&mut report);
    // By epoch and number; the first position found for a number wins (stable sort).
    found.sort_by_key(|r| (r.0, r.1));
    found.dedup_by_key(|r| (r.0, r.1));
    let total = found.len() as u64;
    let encoding_hint = SLOT_OFFSETS.iter().find_map(|&at| {
        let slot = Slot::decode(image.get(at..at + SLOT_SIZE)?)?;
        (slot.magic == format::SLOT_MAGIC && slot.encoding <= crate::codec::TAG_PICKLE)
            .then_some(slot.encoding)
    });
    // The epoch most records carry (the highest such, as before).
    let mut epoch_pick: Option<(u64, usize, usize)> = None; // (epoch, start index, count)
    let mut i = 0;
    while i < found.len() {
        let e = found[i].0;
        let n = found[i..].iter().take_while(|r| r.0 == e).count();
        if epoch_pick.is_none_or(|(_, _, best)| n >= best) {
            epoch_pick = Some((e, i, n));
        }
        i += n;
    }
    let Some((epoch, first, count)) = epoch_pick else {
        return Found::Salvage(Salvage {
            epoch: None,
            encoding_hint,
            records: Vec::new(),
            report,
        });
    };
    let seqs = &found[first..first + count];
    // Longest run of consecutive sequence numbers (the first of equal length wins).
    let (mut best, mut run_start) = ((0usize, 0usize), 0usize);
    for k in 0..seqs.len() {
        if k > 0 && seqs[k - 1].1 + 1 != seqs[k].1 {
            run_start = k;
        }
        if k + 1 - run_start > best.1 - best.0 {
            best = (run_start, k + 1);
        }
    }
    let run = &seqs[best.0..best.1];
    let records: Vec<_> = run
        .iter()
        .filter(|r| !r.4)
        .map(|r| (r.1, r.2..r.2 + r.3 as usize))
        .collect();
    report.records_kept = records.len() as u64;
    report.records_dropped = total - run.len() as u64;
    Found::Salvage(Salvage {
        epoch: Some(epoch),
        encoding_hint,
        records,
        report,
    })
}

#[cfg(test)]
#[path = "recovery_tests.rs"]
mod tests;
