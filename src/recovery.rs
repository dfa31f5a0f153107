//! Open-time recovery over a byte image of the file: pick the header slot, find the head,
//! walk the records, skip damage, and report what happened. No I/O: it runs the same over a
//! mapped file and over an exact-length heap buffer (which AddressSanitizer can see the end of).

use std::collections::BTreeMap;
use std::path::PathBuf;

use crate::format::{
    self, cursor_offset, read_frame, Cursor, Frame, Slot, DATA_OFFSET, KIND_DATA, KIND_DONE,
    KIND_SKIP, RECORD_ALIGN, SLOT_OFFSETS, SLOT_SIZE,
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
    /// The file must be extended to this length (it was truncated).
    pub extend_to: Option<usize>,
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
    /// A slot that verifies names a format version newer than this build's: refuse the file
    /// untouched rather than read it by the wrong rules (or salvage and rewrite it).
    TooNew(String),
}

/// Recovers the queue state from `image`, the whole file.
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
        return Found::Sound(recover_with_slot(image, index, slot, None));
    }
    if let Some((index, slot)) = best_too_long {
        // A file truncated below what its slot names: keep the intact prefix, extend back.
        let Ok(cap) = usize::try_from(slot.capacity) else {
            return salvage(
                image,
                "the slot names a capacity this machine cannot map".into(),
            );
        };
        let len = DATA_OFFSET + cap;
        if cap > (1usize << 40) {
            return salvage(image, "the slot names an implausible capacity".into());
        }
        let mut padded = image.to_vec();
        padded.resize(len, 0);
        return Found::Sound(recover_with_slot(&padded, index, slot, Some(len)));
    }
    salvage(image, problems.join("; "))
}

fn recover_with_slot(
    image: &[u8],
    slot_index: usize,
    slot: Slot,
    extend_to: Option<usize>,
) -> Sound {
    let cap = slot.capacity as usize;
    let ring = &image[DATA_OFFSET..DATA_OFFSET + cap];
    let epoch = slot.epoch;
    let mut report = RecoveryReport {
        truncated: extend_to.is_some(),
        ..RecoveryReport::default()
    };
    if extend_to.is_some() {
        report.notes.push(format!(
            "the file was shorter than its {cap}-byte ring and was extended back"
        ));
    }

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
        .find(|p| starts_at(ring, p.off, p.seq, epoch))
        .or_else(|| scan_for_head(ring, epoch, floor, seq_limit))
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
        return Sound {
            slot,
            slot_index,
            head,
            tail: head,
            items: 0,
            used: 0,
            skipped_in_walk: 0,
            damaged_ranges: Vec::new(),
            extend_to,
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
    let walk = walk(ring, epoch, start, committed_end, seq_limit);
    report.records_kept = walk.items;
    report.records_dropped += walk.dropped;
    report.bytes_skipped += walk.bytes_skipped as u64;
    if walk.dropped > 0 {
        report.notes.push(format!(
            "{} committed record(s) failed their checks and were skipped ({} bytes)",
            walk.dropped, walk.bytes_skipped
        ));
    }
    Sound {
        slot,
        slot_index,
        head: start,
        tail: walk.end,
        items: walk.items,
        used: walk.used,
        skipped_in_walk: walk.dropped,
        damaged_ranges: walk.damaged_ranges,
        extend_to,
        report,
    }
}

/// True when a walk may start at `off` expecting `seq`.
fn starts_at(ring: &[u8], off: usize, seq: u64, epoch: u64) -> bool {
    match read_frame(ring, off, Some(epoch)) {
        Ok(f) if f.kind != KIND_SKIP => f.seq == seq,
        Ok(f) => f.seq >= seq,
        Err(_) => false,
    }
}

/// Finds where the live records start when neither the cursor nor the slot names a record:
/// the lowest sequence number at or above `floor` (ties: the position with the longest walk).
fn scan_for_head(ring: &[u8], epoch: u64, floor: u64, seq_limit: u64) -> Option<Pos> {
    let mut best: Option<(Pos, u64)> = None;
    for off in (0..ring.len()).step_by(RECORD_ALIGN) {
        let Ok(f) = read_frame(ring, off, Some(epoch)) else {
            continue;
        };
        if f.kind == KIND_SKIP || f.seq < floor || f.seq >= seq_limit {
            continue;
        }
        let pos = Pos { off, seq: f.seq };
        match best {
            Some((b, _)) if f.seq > b.seq => {}
            Some((b, items)) if f.seq == b.seq => {
                let w = walk(ring, epoch, pos, 0, seq_limit).items;
                if w > items {
                    best = Some((pos, w));
                }
            }
            _ => best = Some((pos, walk(ring, epoch, pos, 0, seq_limit).items)),
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
        let size = match read_frame(ring, off, Some(epoch)) {
            Ok(f) if f.kind == KIND_DATA && f.seq == expected && f.size <= cap - w.used => {
                w.items += 1;
                expected += 1;
                f.size
            }
            Ok(f) if f.kind == KIND_DONE && f.seq == expected && f.size <= cap - w.used => {
                expected += 1;
                f.size
            }
            Ok(f)
                if f.kind == KIND_SKIP
                    && f.seq >= expected
                    && f.seq <= seq_limit
                    && f.size <= cap - w.used =>
            {
                expected = f.seq;
                f.size
            }
            _ if expected < committed_end => {
                let budget = cap - w.used;
                let Some((next, dist)) =
                    resync(ring, epoch, off, expected, committed_end, seq_limit, budget)
                else {
                    // Nothing verifies after it: the rest of the committed range is lost.
                    w.dropped += lost_records(committed_end - expected, budget);
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
            _ => break,
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
pub(crate) fn resync(
    ring: &[u8],
    epoch: u64,
    from: usize,
    expected: u64,
    committed_end: u64,
    seq_limit: u64,
    budget: usize,
) -> Option<(Pos, usize)> {
    let cap = ring.len();
    let acceptable = |f: &Frame| f.seq >= expected && f.seq < seq_limit;
    let first_choice = |f: &Frame| expected >= committed_end || f.seq < committed_end;
    let mut fallback = None;
    if let Some((_, size)) = format::plausible_header(ring, from, epoch) {
        let next = (from + size) % cap;
        if size < budget {
            if let Ok(f) = read_frame(ring, next, Some(epoch)) {
                if acceptable(&f) {
                    let found = (
                        Pos {
                            off: next,
                            seq: f.seq,
                        },
                        size,
                    );
                    if first_choice(&f) {
                        return Some(found);
                    }
                    fallback = Some(found);
                }
            }
        }
    }
    let mut dist = RECORD_ALIGN;
    while dist < budget {
        let off = (from + dist) % cap;
        if let Ok(f) = read_frame(ring, off, Some(epoch)) {
            if acceptable(&f) {
                let found = (Pos { off, seq: f.seq }, dist);
                if first_choice(&f) {
                    return Some(found);
                }
                fallback.get_or_insert(found);
            }
        }
        dist += RECORD_ALIGN;
    }
    fallback
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
    let ring = image.get(DATA_OFFSET..).unwrap_or(&[]);
    let ring = &ring[..ring.len() - ring.len() % RECORD_ALIGN];
    // epoch -> seq -> (payload range, removed) (the first position found for a number wins).
    type Seen = BTreeMap<u64, (std::ops::Range<usize>, bool)>;
    let mut by_epoch: BTreeMap<u64, Seen> = BTreeMap::new();
    let mut off = 0;
    while off + format::RECORD_HEADER <= ring.len() {
        match read_frame(ring, off, None) {
            Ok(f) if f.kind != KIND_SKIP => {
                let start = DATA_OFFSET + off + format::RECORD_HEADER;
                by_epoch
                    .entry(f.epoch)
                    .or_default()
                    .entry(f.seq)
                    .or_insert((start..start + f.len as usize, f.kind == KIND_DONE));
                off += f.size;
            }
            _ => off += RECORD_ALIGN,
        }
    }
    let total: u64 = by_epoch.values().map(|m| m.len() as u64).sum();
    let encoding_hint = SLOT_OFFSETS.iter().find_map(|&at| {
        let slot = Slot::decode(image.get(at..at + SLOT_SIZE)?)?;
        (slot.magic == format::SLOT_MAGIC && slot.encoding <= crate::codec::TAG_PICKLE)
            .then_some(slot.encoding)
    });
    let Some((&epoch, seqs)) = by_epoch.iter().max_by_key(|(_, m)| m.len()) else {
        return Found::Salvage(Salvage {
            epoch: None,
            encoding_hint,
            records: Vec::new(),
            report,
        });
    };
    // Longest run of consecutive sequence numbers.
    let (mut best, mut run): (Vec<u64>, Vec<u64>) = (Vec::new(), Vec::new());
    for &seq in seqs.keys() {
        if run.last().is_some_and(|&l| l + 1 != seq) {
            run.clear();
        }
        run.push(seq);
        if run.len() > best.len() {
            best.clone_from(&run);
        }
    }
    let records: Vec<_> = best
        .iter()
        .filter(|s| !seqs[s].1)
        .map(|s| (*s, seqs[s].0.clone()))
        .collect();
    report.records_kept = records.len() as u64;
    report.records_dropped = total - best.len() as u64;
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
