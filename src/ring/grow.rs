//! Growth: allocate, remap, make a wrapped ring contiguous, commit, scrub stale copies.

use super::RingFile;
use crate::error::{Error, Result};
use crate::format::{self, read_frame, DATA_OFFSET, RECORD_ALIGN, RECORD_HEADER};
use crate::recovery::Pos;
use crate::storage::Storage;

impl<S: Storage> RingFile<S> {
    /// Grows the ring so a record of `size` bytes fits after the tail.
    pub(super) fn grow_for(&mut self, size: usize) -> Result<()> {
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
