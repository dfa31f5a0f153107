//! FIFO wait lists for getters and putters, kept under the ring mutex with the counts they
//! wait on, so a wake-up and the state it announces never drift apart.
//!
//! A waiter is *granted* a unit (an item, or a place under maxsize) when one is free and every
//! older waiter already holds one: grants go out in arrival order, so the granted waiters are
//! always a prefix of the list. A granted waiter claims its unit the next time it is polled;
//! dropped first, its grant goes to the next waiter in line.

use std::collections::VecDeque;
use std::task::Waker;

#[derive(Default)]
pub(super) struct WaitList {
    next_id: u64,
    /// Waiters in arrival order (ids increase along the list).
    waiters: VecDeque<(u64, Waker)>,
    /// How many waiters at the front hold a grant.
    granted: usize,
}

impl WaitList {
    /// Units promised to waiters and not yet claimed: not free for newcomers.
    pub(super) fn granted(&self) -> u64 {
        self.granted as u64
    }

    /// True when a waiter still waits for a grant (newcomers queue behind it).
    pub(super) fn has_ungranted(&self) -> bool {
        self.waiters.len() > self.granted
    }

    /// Grants a unit to the oldest waiter without one and wakes it.
    pub(super) fn grant_next(&mut self) {
        if let Some((_, waker)) = self.waiters.get(self.granted) {
            waker.wake_by_ref();
            self.granted += 1;
        }
    }

    /// Queues a new waiter; returns its id.
    pub(super) fn push(&mut self, waker: Waker) -> u64 {
        let id = self.next_id;
        self.next_id += 1;
        self.waiters.push_back((id, waker));
        id
    }

    fn index(&self, id: u64) -> Option<usize> {
        self.waiters.binary_search_by_key(&id, |(i, _)| *i).ok()
    }

    /// For a queued waiter: `Some(true)` when it holds a grant, else refreshes its waker.
    /// `None` when `id` is not queued.
    pub(super) fn poll_grant(&mut self, id: u64, waker: &Waker) -> Option<bool> {
        let i = self.index(id)?;
        if i < self.granted {
            return Some(true);
        }
        let slot = &mut self.waiters[i].1;
        if !slot.will_wake(waker) {
            slot.clone_from(waker);
        }
        Some(false)
    }

    /// Removes a waiter (claiming its grant, or giving up). Returns whether it held a grant.
    pub(super) fn remove(&mut self, id: u64) -> bool {
        let Some(i) = self.index(id) else {
            return false;
        };
        self.waiters.remove(i);
        if i < self.granted {
            self.granted -= 1;
            true
        } else {
            false
        }
    }
}
