//! Appending records: sizing, sequence reservation, placement (wrap with a skip record).

use std::path::Path;

use super::{RingFile, SourceMark};
use crate::error::{Error, Result};
use crate::format::{self, DATA_OFFSET, KIND_DATA, KIND_SKIP, RECORD_HEADER, SEQ_RESERVATION};
use crate::recovery::Pos;
use crate::storage::Storage;

impl<S: Storage> RingFile<S> {
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
        if self.used == 0 && self.delivered.is_empty() && size <= self.cap {
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

    pub(super) fn check_size(&self, len: usize) -> Result<usize> {
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

    pub(super) fn advance_tail(&mut self, off: usize, size: usize, next_seq: u64) {
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
    pub(super) fn write_jump(&mut self) -> Result<()> {
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
    pub(super) fn reserve(&mut self, size: usize) -> Result<usize> {
        loop {
            if self.used == 0 && self.delivered.is_empty() {
                // Empty: start over where the record fits: at the front, or, for a record
                // too long to leave room for a skip record behind it, ending exactly at the
                // ring's end (so every payload up to `max_payload` fits an empty ring).
                let at = if fits_before_end(self.cap, 0, size) || size > self.cap {
                    0
                } else {
                    self.cap - size
                };
                if at != self.tail.off && !fits_before_end(self.cap, self.tail.off, size) {
                    self.tail.off = at;
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
}

/// Where a record goes.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Placement {
    /// At this offset.
    At(usize),
    /// After a skip record of this many bytes at the tail, at offset 0.
    WrapAt(usize),
    /// Not without growing.
    NoRoom,
}

/// True when a record of `size` bytes may start at `at`: it ends exactly at `cap` or leaves
/// room for at least a header before it.
pub(super) fn fits_before_end(cap: usize, at: usize, size: usize) -> bool {
    let Some(room) = cap.checked_sub(at) else {
        return false;
    };
    size == room || size.saturating_add(RECORD_HEADER) <= room
}

/// The ring arithmetic: where a record of `size` bytes goes, given the head and tail
/// offsets and the bytes in use.
pub(super) fn place(cap: usize, head: usize, tail: usize, used: usize, size: usize) -> Placement {
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
