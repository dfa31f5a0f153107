//! The operations the model test draws and the reference model it checks `Queue<T>` against.

use std::collections::{HashMap, HashSet};

use ringq::Durability;

use super::Item;

/// Operations per case.
pub(super) const STEPS: usize = 40;
// ------------------------------------------------------------------------- generation

pub(super) struct Rng(pub(super) u64);

impl Rng {
    pub(super) fn next(&mut self) -> u64 {
        // splitmix64
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    pub(super) fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    pub(super) fn pick<T: Copy>(&mut self, xs: &[T]) -> T {
        xs[self.below(xs.len() as u64) as usize]
    }
}

#[derive(Clone, Debug)]
pub(super) struct Cfg {
    pub(super) maxsize: usize,
    pub(super) initial: u64,
    pub(super) max_bytes: Option<u64>,
    pub(super) durability: Durability,
    /// Item lengths in bytes, inclusive.
    pub(super) lens: (usize, usize),
    pub(super) on_disk: bool,
    /// Items that do not decode as `Item`, found in the file at the first open.
    pub(super) bad: usize,
}

impl Cfg {
    pub(super) fn random(rng: &mut Rng) -> Cfg {
        let on_disk = rng.below(8) == 0;
        let bad = if rng.below(5) == 0 {
            1 + rng.below(2) as usize
        } else {
            0
        };
        let durability = if rng.below(10) < 3 {
            Durability::Sync
        } else {
            Durability::Buffered
        };
        if rng.below(5) == 0 {
            // The byte limit: puts meet Full and wait for room.
            return Cfg {
                maxsize: rng.pick(&[0, 0, 3]),
                initial: 4096,
                max_bytes: Some(8192),
                durability,
                lens: (100, 1000),
                on_disk,
                bad,
            };
        }
        let slow = rng.below(2) == 0;
        Cfg {
            maxsize: rng.pick(&[0, 0, 1, 2, 3, 4]),
            // A small ring grows on the puts' slow path (a blocking thread).
            initial: if slow { 4096 } else { 1 << 20 },
            max_bytes: None,
            durability,
            lens: if slow && rng.below(2) == 0 {
                (8, 10_000)
            } else {
                (8, 64)
            },
            on_disk,
            bad,
        }
    }
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Kind {
    Put(usize),
    Get,
    Guarded,
    Batch(usize),
    /// Commit the held guard or batch with this index (modulo how many are held).
    Commit(usize),
    Join,
}

#[derive(Clone, Copy, Debug)]
pub(super) enum Op {
    PutNowait(usize),
    GetNowait,
    TaskDone,
    /// Starts an async operation and polls it `k` times (a live one is dropped first).
    Start(Kind, u32),
    /// Polls the live operation `k` more times.
    Poll(u32),
    /// Drops the live operation wherever it is.
    Drop,
    /// Drives the live operation to its end if the model says it must finish, else drops it.
    Finish,
    /// Drops (releases) a held guard or batch.
    Release(usize),
    /// Closes every handle and reopens the file with this maxsize.
    Reopen(usize),
}

pub(super) fn gen_ops(rng: &mut Rng, cfg: &Cfg) -> Vec<Op> {
    let len = |rng: &mut Rng| {
        let (lo, hi) = cfg.lens;
        if hi > 1000 && rng.below(4) != 0 {
            lo + rng.below(56) as usize // mostly small, now and then up to 10 KB
        } else {
            lo + rng.below((hi - lo + 1) as u64) as usize
        }
    };
    (0..STEPS)
        .map(|_| match rng.below(100) {
            0..=17 => Op::PutNowait(len(rng)),
            18..=29 => Op::GetNowait,
            30..=36 => Op::TaskDone,
            37..=68 => {
                let kind = match rng.below(20) {
                    0..=6 => Kind::Put(len(rng)),
                    7..=11 => Kind::Get,
                    12..=14 => Kind::Guarded,
                    15..=16 => Kind::Batch(1 + rng.below(4) as usize),
                    17..=18 => Kind::Commit(rng.below(4) as usize),
                    _ => Kind::Join,
                };
                Op::Start(kind, rng.below(4) as u32)
            }
            69..=76 => Op::Poll(1 + rng.below(3) as u32),
            77..=81 => Op::Drop,
            82..=89 => Op::Finish,
            90..=94 => Op::Release(rng.below(4) as usize),
            95..=97 => Op::Release(rng.below(4) as usize),
            _ => Op::Reopen(rng.below(4) as usize),
        })
        .collect()
}

pub(super) fn make_item(id: u64, len: usize) -> Item {
    let mut v = id.to_le_bytes().to_vec();
    v.resize(len.max(8), id as u8);
    v
}

pub(super) fn id_of(item: &[u8]) -> u64 {
    u64::from_le_bytes(item[..8].try_into().expect("items are at least 8 bytes"))
}

// ------------------------------------------------------------------------- the model

#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum St {
    Queued,
    Taken,
    Gone,
}

/// The live operation's unseen state.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub(super) enum L {
    /// No hidden effect (a waiting getter, a join, a commit, nothing).
    Idle,
    PutWaiting,
    /// The put holds room; its write may happen at any moment.
    PutReserved,
    PutPushed,
    /// A `Sync` get took this item and waits for its removal's commit.
    GetHolding(u64),
}

#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct S {
    /// Items in put order (which is also the order they come back in).
    pub(super) items: Vec<(u64, St)>,
    pub(super) tasks: u64,
    pub(super) live: L,
    /// Dropped puts whose write may still happen (each holds its room until then).
    pub(super) orphans: Vec<u64>,
}

impl S {
    pub(super) fn queued(&self) -> usize {
        self.items.iter().filter(|i| i.1 == St::Queued).count()
    }
    pub(super) fn front(&self) -> Option<u64> {
        self.items.iter().find(|i| i.1 == St::Queued).map(|i| i.0)
    }
    pub(super) fn used(&self) -> usize {
        let held = self.items.iter().filter(|i| i.1 != St::Gone).count();
        held + self.orphans.len() + usize::from(self.live == L::PutReserved)
    }
    pub(super) fn set(&mut self, id: u64, st: St) {
        if let Some(i) = self.items.iter_mut().find(|i| i.0 == id) {
            i.1 = st;
        }
    }
    pub(super) fn push(&mut self, id: u64) {
        self.items.push((id, St::Queued));
        self.tasks += 1;
    }
    pub(super) fn normalize(mut self) -> S {
        let gone = self.items.iter().take_while(|i| i.1 == St::Gone).count();
        self.items.drain(..gone);
        self
    }
}

/// What the model needs to know beside the states: the configuration and item sizes.
pub(super) struct Env {
    pub(super) cfg: Cfg,
    pub(super) lens: HashMap<u64, usize>,
    /// Ring bytes of each item's record.
    pub(super) records: HashMap<u64, usize>,
    pub(super) max_record: usize,
}

impl Env {
    pub(super) fn record(&self, id: u64) -> usize {
        self.records[&id]
    }
    pub(super) fn room(&self, s: &S) -> bool {
        self.cfg.maxsize == 0 || s.used() < self.cfg.maxsize
    }
    /// Ring bytes certainly in use: every record from the oldest one not removed to the
    /// newest (removed ones behind a taken item keep their space).
    pub(super) fn held_bytes(&self, s: &S) -> usize {
        let mut b: usize = s.items.iter().map(|i| self.record(i.0)).sum();
        b += s.orphans.iter().map(|&o| self.record(o)).sum::<usize>();
        b
    }
    /// The byte limit certainly leaves room for `id` (padding, a wrap and growth to the
    /// limit cost at most about the same again).
    pub(super) fn bytes_fit(&self, s: &S, id: u64) -> bool {
        match self.cfg.max_bytes {
            None => true,
            Some(m) => {
                2 * (self.held_bytes(s) + self.record(id) + self.max_record + 256) <= m as usize
            }
        }
    }
    /// The byte limit certainly refuses `id`.
    pub(super) fn bytes_refuse(&self, s: &S, id: u64) -> bool {
        if self.cfg.max_bytes.is_none() {
            return false;
        }
        let live: usize = s
            .items
            .iter()
            .filter(|i| i.1 != St::Gone)
            .map(|i| self.record(i.0))
            .sum();
        self.cfg
            .max_bytes
            .is_some_and(|m| live + self.record(id) > m as usize)
    }
}

/// Every state reachable by effects that may happen unseen at any moment.
pub(super) fn close(states: Vec<S>, env: &Env, live_put: Option<u64>) -> Vec<S> {
    let mut seen: HashSet<S> = HashSet::new();
    let mut todo = states;
    while let Some(s) = todo.pop() {
        if !seen.insert(s.clone()) {
            continue;
        }
        for (i, &o) in s.orphans.iter().enumerate() {
            let mut pushed = s.clone();
            pushed.orphans.remove(i);
            let mut vanished = pushed.clone();
            pushed.push(o);
            todo.push(pushed);
            vanished.orphans.sort_unstable();
            todo.push(vanished);
        }
        if let Some(id) = live_put {
            match s.live {
                L::PutWaiting if env.room(&s) => {
                    todo.push(S {
                        live: L::PutReserved,
                        ..s.clone()
                    });
                }
                L::PutReserved => {
                    let mut t = S {
                        live: L::PutPushed,
                        ..s.clone()
                    };
                    t.push(id);
                    todo.push(t);
                    if env.cfg.max_bytes.is_some() {
                        // The write met the byte limit: the put gives its room back and waits.
                        todo.push(S {
                            live: L::PutWaiting,
                            ..s.clone()
                        });
                    }
                }
                _ => {}
            }
        }
    }
    seen.into_iter().map(S::normalize).collect()
}

/// The state after the first queued items are `ids`, taken into `st`; none if they are not.
pub(super) fn take_front(s: &S, ids: &[u64], st: St) -> Vec<S> {
    let queued: Vec<u64> = s
        .items
        .iter()
        .filter(|i| i.1 == St::Queued)
        .map(|i| i.0)
        .collect();
    if !queued.starts_with(ids) {
        return vec![];
    }
    let mut t = s.clone();
    ids.iter().for_each(|&id| t.set(id, st));
    vec![t]
}

/// Ids of the items that do not decode (a `u64` written where `Item` is read).
pub(super) const BAD: u64 = 1 << 62;

/// The states after an operation that takes up to `n` items met an undecodable one: every
/// item before it is given back, it is removed (counted as done or not: either is allowed).
pub(super) fn take_bad(s: &S, n: usize) -> Vec<S> {
    let queued: Vec<u64> = s
        .items
        .iter()
        .filter(|i| i.1 == St::Queued)
        .map(|i| i.0)
        .collect();
    let Some(&bad) = queued.iter().take(n).find(|&&id| id >= BAD) else {
        return vec![];
    };
    let mut t = s.clone();
    t.set(bad, St::Gone);
    let mut v = vec![t.clone()];
    if t.tasks > 0 {
        t.tasks -= 1;
        v.push(t);
    }
    v
}
