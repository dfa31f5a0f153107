//! Delivery: peek, pop, guarded take / commit / release, durable removal, the head cursor.

use super::{Delivered, Record, RingFile, State, Taken};
use crate::error::{Error, Result};
use crate::format::{
    self, read_frame, Cursor, DATA_OFFSET, KIND_DATA, KIND_DONE, KIND_SKIP, RECORD_ALIGN,
};
use crate::recovery::{self, Pos};
use crate::storage::Storage;

impl<S: Storage> RingFile<S> {
    // ---------------------------------------------------------------- delivery

    /// The next item a `pop` would return, borrowed from the map (zero copy).
    pub fn peek(&self) -> Option<Record<'_>> {
        if let Some(&seq) = self.returned.first() {
            let d = &self.delivered[self.delivered_index(seq).ok()?];
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
    pub(super) fn next_fresh(&self) -> Option<(usize, format::Frame, usize, u64)> {
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
    pub(super) fn mark_done_if_held(&mut self, seq: u64, off: usize) {
        if self.delivered.front().is_some_and(|d| d.seq <= seq) {
            self.set_done(off, true);
        }
    }

    /// Marks a data record done (or present again) in place, and makes the next commit flush
    /// the mark.
    pub(super) fn set_done(&mut self, off: usize, done: bool) {
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
        self.begin_removals(&[seq]).1
    }

    /// [`RingFile::begin_removal`] for each of `seqs` in turn, in time linear in the items
    /// handed out (a batch commit). Returns how many began (a prefix of `seqs`) and the
    /// error that stopped the rest.
    pub fn begin_removals(&mut self, seqs: &[u64]) -> (usize, Result<()>) {
        // The first entry still taken or returned: a removal before it is covered by the head
        // a slot can name. Only moves forward here (entries only become `Removing`).
        let mut open = 0;
        for (n, &seq) in seqs.iter().enumerate() {
            let i = match self.delivered_index(seq) {
                Ok(i) if self.delivered[i].state == State::Taken => i,
                Ok(_) => return (n, Err(Error::NotInFlight { seq })),
                Err(e) => return (n, Err(e)),
            };
            self.delivered[i].state = State::Removing;
            while self
                .delivered
                .get(open)
                .is_some_and(|d| matches!(d.state, State::Done | State::Removing))
            {
                open += 1;
            }
            // Behind an item still taken or returned, the slot's head cannot name this
            // removal: mark the record itself.
            if open < i {
                let off = self.delivered[i].off;
                self.set_done(off, true);
            }
        }
        (seqs.len(), Ok(()))
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
    /// first in line. If a commit already named it removed, this commits again at once; when
    /// that commit fails the item is back in line all the same and the error is the
    /// commit's (only [`Error::NotInFlight`] means nothing changed).
    pub fn abort_removal(&mut self, seq: u64) -> Result<()> {
        self.abort_removals(&[seq]).1
    }

    /// [`RingFile::abort_removal`] for each of `seqs`, with one pass over the removals
    /// behind them and at most one commit (a whole batch given back). Returns how many went
    /// back in line (all but those [`Error::NotInFlight`]) and the first error.
    pub fn abort_removals(&mut self, seqs: &[u64]) -> (usize, Result<()>) {
        let mut back = 0;
        let mut lowest: Option<(usize, u64)> = None;
        let mut err = Ok(());
        for &seq in seqs {
            let i = match self.delivered_index(seq) {
                Ok(i) if self.delivered[i].state == State::Removing => i,
                Ok(_) => {
                    err = err.and(Err(Error::NotInFlight { seq }));
                    continue;
                }
                Err(e) => {
                    err = err.and(Err(e));
                    continue;
                }
            };
            let off = self.delivered[i].off;
            self.delivered[i].state = State::Returned;
            self.returned.insert(seq);
            self.queued += 1;
            self.set_done(off, false);
            back += 1;
            if lowest.is_none_or(|(l, _)| i < l) {
                lowest = Some((i, seq));
            }
        }
        let Some((first, seq)) = lowest else {
            return (0, err);
        };
        // Removals behind it are no longer covered by the head a slot can name: mark them.
        let behind: Vec<usize> = self
            .delivered
            .iter()
            .skip(first + 1)
            .filter(|d| d.state == State::Removing)
            .map(|d| d.off)
            .collect();
        for off in behind {
            self.set_done(off, true);
        }
        if self.committed_head.seq > seq {
            // A slot already names it removed: name it present again before anything else
            // (one commit covers every item given back, all at or after it).
            if let Err(e) = self.commit() {
                return (back, Err(e));
            }
        }
        (back, err)
    }

    /// The head a commit may name: past every leading entry that is removed or being
    /// removed.
    pub(super) fn durable_head(&self) -> Pos {
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
        self.returned.insert(seq);
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

    pub(super) fn find_delivered(&mut self, seq: u64) -> Result<&mut Delivered> {
        let i = self.delivered_index(seq)?;
        Ok(&mut self.delivered[i])
    }

    pub(super) fn delivered_index(&self, seq: u64) -> Result<usize> {
        self.delivered
            .binary_search_by_key(&seq, |d| d.seq)
            .map_err(|_| Error::NotInFlight { seq })
    }

    /// Picks the next item (returned first, else fresh), marks it `state`, and returns its
    /// offset and checked frame.
    pub(super) fn deliver(&mut self, state: State) -> Option<(usize, format::Frame)> {
        while let Some(seq) = self.returned.pop_first() {
            let Ok(i) = self.delivered_index(seq) else {
                continue;
            };
            let d = self.delivered[i];
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

    pub(super) fn drop_unreadable_rest(&mut self) {
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
    pub(super) fn advance_head(&mut self) {
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

    /// Records the head in the slot page that does not hold the newest durable slot (so a
    /// torn write cannot take it with it, even while a newer slot is still being flushed into
    /// the other page), alternating between two cells.
    pub(super) fn write_cursor(&mut self) {
        let page = 1 - self.durable_slot;
        let at = format::cursor_offset(page, self.cursor_cell);
        self.cursor_cell ^= 1;
        let cell = Cursor {
            head_seq: self.head.seq,
            head_off: self.head.off as u64,
        }
        .encode(self.epoch);
        self.storage.bytes_mut()[at..at + cell.len()].copy_from_slice(&cell);
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
