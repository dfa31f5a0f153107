//! The durable commit: flush what was written, then the inactive slot, then its page.

use std::ops::Range;

use super::RingFile;
use crate::error::{Error, Result};
use crate::format::{
    self, Slot, FLAG_CLEAN, FORMAT_VERSION, MAX_SEQ, PAGE, SEQ_RESERVATION, SLOT_MAGIC,
    SLOT_OFFSETS,
};
use crate::recovery::Pos;
use crate::storage::Storage;

impl<S: Storage> RingFile<S> {
    /// True when something changed since the last commit.
    pub fn needs_commit(&self) -> bool {
        !self.dirty.is_empty()
            || self.committed != self.tail
            || self.durable_head() != self.committed_head
            || self.source_seq != self.committed_source
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

    pub(super) fn poison_error(&self, cause: String) -> Error {
        Error::Poisoned {
            path: self.path_buf(),
            cause,
        }
    }

    pub(crate) fn commit(&mut self) -> Result<()> {
        self.commit_with(false)
    }

    pub(super) fn commit_with(&mut self, clean: bool) -> Result<()> {
        self.settle_in_flight()?;
        let plan = self.prepare_commit(clean)?;
        self.commit_planned(plan)
    }

    /// Before an inline commit: finishes what a split commit on another thread has in flight.
    /// Its ranges must be durable before this slot too; and its slot, already written, must
    /// be on disk before this commit writes into the other page, which holds the newest
    /// durable slot (a tear there with the new slot still unwritten would fall back two
    /// generations and deliver acknowledged removals again).
    pub(crate) fn settle_in_flight(&mut self) -> Result<()> {
        let others = std::mem::take(&mut self.in_flight);
        for r in &others {
            if let Err(e) = self.storage.flush(r.start, r.len()) {
                return Err(self.fail_commit(e));
            }
        }
        if self.active_slot != self.durable_slot {
            if let Err(e) = self.storage.flush(SLOT_OFFSETS[self.active_slot], PAGE) {
                return Err(self.fail_commit(e));
            }
            self.durable_slot = self.active_slot;
        }
        Ok(())
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

    /// A slot with nothing to flush that names `head` and `tail` with the last committed
    /// reservation and source mark (growth: see `grow.rs`).
    pub(super) fn growth_plan(&self, head: Pos, tail: Pos) -> CommitPlan {
        CommitPlan {
            ranges: Vec::new(),
            head,
            tail,
            seq_limit: self.seq_limit,
            source_seq: self.committed_source,
            generation: self.generation,
            clean: false,
        }
    }

    /// Step 2, after the plan's ranges are flushed: writes the slot into the page that does
    /// not hold the newest durable slot and returns that page, or `None` when another commit
    /// wrote a slot in between (it flushed this plan's ranges too, and covered everything the
    /// plan did). Until that page is flushed and [`RingFile::finish_commit`] runs, cursor
    /// writes go into the same page, never into the durable slot's.
    pub(crate) fn write_slot(&mut self, plan: &CommitPlan) -> Result<Option<usize>> {
        if let Some(msg) = &self.poisoned {
            return Err(self.poison_error(msg.clone()));
        }
        if plan.generation != self.generation {
            return Ok(None);
        }
        let page = 1 - self.durable_slot;
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

    /// Step 3, after the slot page is flushed: that slot is now the newest durable one.
    pub(crate) fn finish_commit(&mut self, plan: &CommitPlan) {
        self.in_flight.clear();
        if plan.generation + 1 == self.generation {
            self.durable_slot = self.active_slot;
            self.committed = plan.tail;
            self.committed_head = plan.head;
            self.seq_limit = self.seq_limit.max(plan.seq_limit);
            self.committed_source = plan.source_seq;
        }
        self.commit_count += 1;
    }

    /// The queue flusher's commit, replayed on this thread for crash models: prepare, flush
    /// the records, write the slot; then `window` runs where the flusher has dropped the ring
    /// lock and flushes the slot page (pops, pushes and inline commits can happen there);
    /// then the slot page is flushed and the commit finished. Same steps, same order as
    /// `Inner::commit_now`; over [`MemStorage`](crate::MemStorage) the durable image inside
    /// `window` is what a power cut at that instant could leave.
    #[doc(hidden)]
    pub fn sync_split(&mut self, window: impl FnOnce(&mut Self)) -> Result<()> {
        let plan = self.prepare_commit(false)?;
        for r in &plan.ranges {
            if let Err(e) = self.storage.flush(r.start, r.len()) {
                return Err(self.fail_commit(e));
            }
        }
        let page = self.write_slot(&plan)?;
        window(self);
        if let Some(page) = page {
            if let Err(e) = self.storage.flush(SLOT_OFFSETS[page], PAGE) {
                return Err(self.fail_commit(e));
            }
        }
        self.finish_commit(&plan);
        Ok(())
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

#[cfg(test)]
mod tests {
    use crate::format::{PAGE, SLOT_OFFSETS};
    use crate::storage::Storage;
    use crate::{MemStorage, RingFile, RingOptions};

    /// A ring with items 0..4 pushed and synced, item 0 popped and its removal synced
    /// (acknowledged, as a `Sync` get is), and item 1 popped since.
    fn acknowledged_removal() -> RingFile<MemStorage> {
        let opts = RingOptions::default().initial_capacity(4096);
        let mut r = RingFile::create_in(MemStorage::new(), &opts).unwrap();
        for i in 0..4u8 {
            r.push(&[i; 10]).unwrap();
        }
        r.sync().unwrap();
        assert_eq!(r.pop().unwrap().unwrap(), [0; 10]);
        r.sync().unwrap();
        assert_eq!(r.pop().unwrap().unwrap(), [1; 10]);
        r
    }

    /// The durable image with every slot page written since its flush either lost (`lost`)
    /// or torn into garbage (the others): a power cut the page-cache model allows.
    fn power_cut(r: &RingFile<MemStorage>, lost: usize) -> Vec<u8> {
        let (live, mut image) = (r.storage().live(), r.storage().durable().to_vec());
        for (page, &at) in SLOT_OFFSETS.iter().enumerate() {
            if page != lost && live[at..at + PAGE] != image[at..at + PAGE] {
                for (k, b) in image[at..at + PAGE].iter_mut().enumerate() {
                    *b = (k as u8).wrapping_mul(151) ^ 0x5A;
                }
            }
        }
        image
    }

    fn first_after_reopen(image: Vec<u8>) -> Option<Vec<u8>> {
        let mut r = RingFile::open_in(MemStorage::from_bytes(image), &RingOptions::default())
            .expect("reopen");
        r.pop().unwrap()
    }

    #[test]
    fn a_pop_inside_the_flushers_commit_never_tears_the_newest_durable_slot() {
        let mut r = acknowledged_removal();
        let mut image = None;
        r.sync_split(|r| {
            // The flusher dropped the lock after writing the new slot: a pop writes its cursor.
            assert_eq!(r.pop().unwrap().unwrap(), [2; 10]);
            // Power cut: the new slot's page never reached the disk, the page the cursor went
            // into tore.
            let written = 1 - r.durable_slot;
            image = Some(power_cut(r, written));
        })
        .unwrap();
        let got = first_after_reopen(image.unwrap());
        assert_ne!(got, Some(vec![0; 10]), "an acknowledged removal came back");
    }

    #[test]
    fn an_inline_commit_inside_the_flushers_commit_settles_it_first() {
        let mut r = acknowledged_removal();
        let mut image = None;
        r.sync_split(|r| {
            // A growth or an aborted removal commits inline while the flusher's slot is
            // still being flushed: replay its steps up to its own slot write.
            r.settle_in_flight().unwrap();
            let plan = r.prepare_commit(false).unwrap();
            for range in &plan.ranges {
                r.storage.flush(range.start, range.len()).unwrap();
            }
            r.pop().unwrap();
            let page = r.write_slot(&plan).unwrap().expect("a slot is written");
            // Power cut: that slot's page torn; the flusher's slot page as the disk has it.
            let mut cut = power_cut(r, usize::MAX);
            let other = SLOT_OFFSETS[1 - page];
            cut[other..other + PAGE].copy_from_slice(&r.storage().durable()[other..other + PAGE]);
            image = Some(cut);
            r.finish_commit(&plan);
        })
        .unwrap();
        let got = first_after_reopen(image.unwrap());
        assert_ne!(got, Some(vec![0; 10]), "an acknowledged removal came back");
    }
}
