//! Guarded gets: an item stays in the file until its guard commits; dropped, it comes back.

use std::sync::Arc;

use super::inner::Inner;
use crate::error::Result;

/// An item taken by [`Queue::get_guarded`](crate::Queue::get_guarded): removed for good by [`Guard::commit`], delivered
/// again (first in line) when dropped uncommitted or after a crash.
pub struct Guard<T> {
    pub(super) inner: Arc<Inner>,
    pub(super) seq: u64,
    pub(super) epoch: u64,
    pub(super) item: Option<T>,
}

impl<T> Guard<T> {
    /// The item's sequence number: with [`Guard::epoch`], an id that stays the same when the
    /// item is delivered again, so a consumer downstream can drop duplicates.
    pub fn seq(&self) -> u64 {
        self.seq
    }

    /// The file's random identity.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The item.
    pub fn item(&self) -> &T {
        self.item
            .as_ref()
            .expect("the item is present until the guard is consumed")
    }

    /// Removes the item for good (durably under [`Durability::Sync`](crate::Durability::Sync)) and returns it.
    ///
    /// # Cancel safety
    /// Under [`Durability::Sync`](crate::Durability::Sync), dropped before its commit is on disk, the item is given
    /// back, first in line (as a dropped guard would be). Otherwise it completes at once.
    pub async fn commit(mut self) -> Result<T> {
        let item = self
            .item
            .take()
            .expect("the item is present until the guard is consumed");
        Inner::remove(&self.inner, vec![self.seq]).await?;
        Ok(item)
    }
}

impl<T> std::ops::Deref for Guard<T> {
    type Target = T;
    fn deref(&self) -> &T {
        self.item()
    }
}

impl<T> Drop for Guard<T> {
    fn drop(&mut self) {
        if self.item.is_some() {
            self.inner.release(&[self.seq]);
        }
    }
}

/// Items taken together by [`Queue::get_guarded_batch`](crate::Queue::get_guarded_batch).
pub struct GuardBatch<T> {
    pub(super) inner: Arc<Inner>,
    pub(super) epoch: u64,
    pub(super) items: Vec<(u64, T)>,
    pub(super) settled: bool,
}

impl<T> GuardBatch<T> {
    /// The file's random identity.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// The items with their sequence numbers, oldest first.
    pub fn items(&self) -> &[(u64, T)] {
        &self.items
    }

    /// How many items the batch holds.
    pub fn len(&self) -> usize {
        self.items.len()
    }

    /// True when the batch holds no item.
    pub fn is_empty(&self) -> bool {
        self.items.is_empty()
    }

    /// Removes every item of the batch for good (durably under [`Durability::Sync`](crate::Durability::Sync)).
    ///
    /// # Cancel safety
    /// Under [`Durability::Sync`](crate::Durability::Sync), dropped before its commit is on disk, the items are given
    /// back, first in line. Otherwise it completes at once.
    pub async fn commit(mut self) -> Result<Vec<(u64, T)>> {
        let seqs: Vec<u64> = self.items.iter().map(|(s, _)| *s).collect();
        self.settled = true;
        Inner::remove(&self.inner, seqs).await?;
        Ok(std::mem::take(&mut self.items))
    }
}

impl<T> Drop for GuardBatch<T> {
    fn drop(&mut self) {
        if !self.settled {
            let seqs: Vec<u64> = self.items.iter().map(|(s, _)| *s).collect();
            self.inner.release(&seqs);
        }
    }
}
