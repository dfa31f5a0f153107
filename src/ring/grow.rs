//! Growth: allocate, remap, make a wrapped ring contiguous, commit, scrub stale copies.

use super::push::fits_before_end;
use super::{RingFile, MAX_RING};
use crate::error::{Error, Result};
use crate::format::{
    self, read_frame, DATA_OFFSET, PAGE, RECORD_ALIGN, RECORD_HEADER, SLOT_OFFSETS,
};
use crate::recovery::Pos;
use crate::storage::Storage;

/// Below this capacity the ring grows x4 at a time, above it x2: a fresh queue that fills
/// to tens of MiB pays a handful of growths, a large ring does not overshoot by much.
const FAST_GROWTH_BELOW: usize = 16 << 20;

impl<S: Storage> RingFile<S> {
    /// The capacity to grow to so a record of `size` bytes fits at ring offset `at` (after
    /// the growth copy), or `Full` when no capacity up to the limit holds it there.
    fn grown_capacity(&self, at: usize, size: usize) -> Result<usize> {
        let max = self.max_cap.map_or(MAX_RING, |m| m.min(MAX_RING));
        // An empty ring can place the record anywhere (`reserve`), even ending at the end.
        let empty = self.used == 0 && self.delivered.is_empty();
        let fits = |cap: usize| fits_before_end(cap, at, size) || (empty && size <= cap);
        let mut new_cap = self.cap;
        while !fits(new_cap) && new_cap < max {
            let factor = if new_cap < FAST_GROWTH_BELOW { 4 } else { 2 };
            new_cap = new_cap.saturating_mul(factor).min(max);
        }
        if new_cap <= self.cap || !fits(new_cap) {
            return Err(Error::Full);
        }
        Ok(new_cap)
    }

    /// Grows the ring so a record of `size` bytes fits after the tail.
    pub(super) fn grow_for(&mut self, size: usize) -> Result<()> {
        let wrapped = self.used > 0 && self.tail.off <= self.head.off;
        let new_tail = if wrapped {
            self.cap + self.tail.off
        } else {
            self.tail.off
        };
        let new_cap = self.grown_capacity(new_tail, size)?;
        if let Some(msg) = &self.poisoned {
            return Err(self.poison_error(msg.clone()));
        }
        let old_cap = self.cap;
        let old_tail_off = self.tail.off;
        // (1) Blocks and a durable length before any slot names them (see `Storage::grow`).
        self.storage
            .grow(DATA_OFFSET + new_cap)
            .map_err(|e| self.io_err("cannot grow", e))?;
        if wrapped {
            // (2) Make the ring contiguous: copy the wrapped front behind the old end, into
            // space no slot names yet, so a crash before the slot write loses nothing.
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
            // The last commit's positions move with the bytes they name (`growth_commit`
            // names them again only while they are all live, so the copy holds them).
            shift(&mut self.committed);
            shift(&mut self.committed_head);
            self.tail.off = new_tail;
        }
        self.cap = new_cap;
        self.grow_count += 1;
        // (3) The slot naming the new capacity.
        self.growth_commit(wrapped.then_some(old_cap))?;
        if wrapped {
            // (4) Only now is the front stale.
            self.scrub_stale_front(old_tail_off)?;
        }
        Ok(())
    }

    /// Writes the slot that names the grown capacity: the last commit's slot again (its head,
    /// tail, reservation and source mark) with the new capacity. Records written since the
    /// last commit stay past the slot, where recovery reads on over them, so they need no
    /// flush here: a `Buffered` fill does not pay a flush of everything written at each
    /// growth. It is not a commit (no push or removal becomes durable, `commit_count` does
    /// not move): a crash after it recovers exactly what the last commit left, in the new
    /// layout.
    ///
    /// Growth runs a full commit instead when a removal happened since the last commit or an
    /// item is out (the space a removal freed may hold newer records, while a power cut can
    /// still bring back the committed bytes there, which a copy would not carry; a removal
    /// behind a taken item marks the record in place, which a flushed copy would make
    /// durable), when committed records were copied (their flush would carry the records behind
    /// them), or when another thread's commit is in flight (its callers wait for a slot naming
    /// its tail, which this one would drop).
    /// A fill (puts, no gets) never needs the full commit.
    fn growth_commit(&mut self, copied_behind: Option<usize>) -> Result<()> {
        let removed_since = self.committed_head != self.head || !self.delivered.is_empty();
        // Committed records in the copy would need a flush, which (whole pages) would also
        // make uncommitted records behind them durable: a full commit says so honestly.
        let committed_in_copy = copied_behind.is_some_and(|old_cap| self.committed.off > old_cap);
        // A slot still in flight (the flusher between its slot write and that page's flush)
        // also goes through the full commit, which settles it first.
        let slot_in_flight = !self.in_flight.is_empty() || self.active_slot != self.durable_slot;
        if slot_in_flight || removed_since || committed_in_copy {
            return self.commit();
        }
        let (head, tail) = (self.committed_head, self.committed);
        if copied_behind.is_some() {
            // The pops since the last commit left cursor cells naming the head at its old
            // place: name the moved head in both cells of the page the slot goes to.
            self.write_cursor();
            self.write_cursor();
        }
        let plan = self.growth_plan(head, tail);
        if let Some(page) = self.write_slot(&plan)? {
            self.storage
                .flush(SLOT_OFFSETS[page], PAGE)
                .map_err(|e| self.fail_commit(e))?;
        }
        Ok(())
    }

    /// Invalidates the records a growth copy left at the front of the ring (`..len`). Their
    /// copies behind the old end are the live ones; a stale copy that still verified would
    /// look like a live record to a recovery that scans past damage, and could bring back an
    /// item already removed. Runs once the slot naming the new layout is durable (before, the
    /// front was still live) and flushes at once, so no later crash finds them intact.
    pub(super) fn scrub_stale_front(&mut self, len: usize) -> Result<()> {
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
}
