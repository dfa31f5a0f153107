//! The power-loss model and its oracle, shared by `tests/it/power_model.rs` and the
//! `crash_recovery` fuzz target (included in both with `#[path]`).
//!
//! A scenario runs operations on a `RingFile<MemStorage>` and tracks what the model knows:
//! every acknowledged push (sequence number and payload), every removal and whether it was in
//! FIFO order, and the state of the last durable commit (an explicit `sync`, or one the ring
//! made itself to grow or to reserve sequence numbers). At a crash point it builds
//! `crash_image(tear, unit, seed)`, reopens it and checks the oracle; then it writes through
//! the reopened ring, crashes that one too, reopens once more and checks it is no worse.

#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};

use ringq::{MemStorage, RecoveryReport, RingFile, RingOptions, Tear};

/// One step of a scenario.
#[derive(Clone, Copy, Debug)]
pub enum Op {
    /// Push a payload of this many bytes.
    Push(usize),
    /// Start a push of this many bytes whose filler fails half way: nothing is appended, but
    /// half a record's payload is in the map (a crash inside a record write).
    PartialPush(usize),
    /// Pop one item.
    Pop,
    /// Take one item (guarded get).
    Take,
    /// Commit the n-th taken item (modulo how many are taken).
    CommitTaken(usize),
    /// Release the n-th taken item.
    Release(usize),
    /// The durable commit.
    Sync,
    /// A sync whose n-th flush fails with EIO: the scenario ends there (the ring is poisoned).
    FailSync(u64),
    /// A push of this many bytes whose growth fails with ENOSPC (if it needs one).
    FailGrowPush(usize),
    /// The queue flusher's split commit (`RingFile::sync_split`); inside its window, where
    /// the new slot is written but not yet flushed: bit 0 a pop, bit 1 an inline commit
    /// (growth or an aborted removal commits there), bit 2 a pop after it. Crashes are
    /// checked inside the window.
    SplitSync(u8),
}

/// Where in the protocol a crash point sits.
pub const PHASES: [&str; 11] = [
    "inside a record write",
    "record written, unflushed",
    "during growth",
    "at a wrap",
    "after a removal (cursor)",
    "after a take/release",
    "after a sync",
    "inside a sync (flush failed)",
    "after a failed growth",
    "during recovery (re-crash)",
    "inside a split commit",
];

/// Figures a run collects.
#[derive(Default, Debug)]
pub struct Stats {
    /// (phase, tear, unit) -> crash images checked.
    pub points: BTreeMap<(&'static str, String, usize), u64>,
    /// Crash points (before trying every tear and unit).
    pub crash_points: u64,
    /// Reopens checked against the oracle.
    pub reopens: u64,
    /// Records recovery reported dropped (media damage from garbage tears).
    pub dropped: u64,
    /// Scenarios run.
    pub scenarios: u64,
    /// Items a second recovery returned that the first one had not (real, never removed).
    pub resurrected: u64,
}

impl Stats {
    /// Totals per phase.
    pub fn per_phase(&self) -> BTreeMap<&'static str, u64> {
        let mut m = BTreeMap::new();
        for ((p, _, _), n) in &self.points {
            *m.entry(*p).or_insert(0) += n;
        }
        m
    }
    /// Totals per tear strategy.
    pub fn per_tear(&self) -> BTreeMap<String, u64> {
        let mut m = BTreeMap::new();
        for ((_, t, _), n) in &self.points {
            *m.entry(t.clone()).or_insert(0) += n;
        }
        m
    }
}

/// A self-describing payload: its bytes follow from (id, len); the model also keeps a copy.
pub fn payload(id: u64, len: usize) -> Vec<u8> {
    let idb = id.to_le_bytes();
    (0..len)
        .map(|k| {
            if k < 8 {
                idb[k]
            } else {
                (id as usize).wrapping_mul(131).wrapping_add(k * 7) as u8
            }
        })
        .collect()
}

/// Tiny deterministic generator.
pub struct Rng(pub u64);

impl Rng {
    /// Next value.
    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    /// A value below `n`.
    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// Random payload length: 0 B to several KiB, mostly small.
pub fn random_len(rng: &mut Rng) -> usize {
    match rng.below(20) {
        0..=1 => 0,
        2..=9 => rng.below(64) as usize,
        10..=16 => 64 + rng.below(960) as usize,
        _ => 1024 + rng.below(6 * 1024) as usize,
    }
}

/// A random op sequence of `n` steps.
pub fn random_ops(rng: &mut Rng, n: usize) -> Vec<Op> {
    let mut ops = Vec::with_capacity(n);
    for _ in 0..n {
        let op = match rng.below(100) {
            0..=39 => Op::Push(random_len(rng)),
            40..=41 => Op::PartialPush(random_len(rng).max(2)),
            42..=61 => Op::Pop,
            62..=69 => Op::Take,
            70..=76 => Op::CommitTaken(rng.below(4) as usize),
            77..=80 => Op::Release(rng.below(4) as usize),
            81..=93 => Op::Sync,
            94..=95 => Op::FailGrowPush(2048 + rng.below(8192) as usize),
            _ => Op::FailSync(rng.below(4)),
        };
        ops.push(op);
    }
    ops
}

/// The state the model knows of.
#[derive(Clone, Default)]
struct Known {
    /// Every acknowledged push: seq -> payload.
    pushed: BTreeMap<u64, Vec<u8>>,
    /// Removed items: seq -> removed while every older item was already removed.
    removed: BTreeMap<u64, bool>,
    /// Taken, not yet committed or released.
    taken: Vec<u64>,
    /// Pushes acknowledged as of the last durable commit.
    synced_pushed: BTreeSet<u64>,
    /// Removals as of the last durable commit.
    synced_removed: BTreeSet<u64>,
    /// A sync failed part way, or a split commit's page flush carried a later cursor: some
    /// writes after the last commit are durable. Cleared by the next commit.
    partial_flush: bool,
    next_id: u64,
}

impl Known {
    fn mark_synced(&mut self) {
        self.partial_flush = false;
        self.synced_pushed = self.pushed.keys().copied().collect();
        self.synced_removed = self.removed.keys().copied().collect();
    }
    fn remove(&mut self, seq: u64) {
        let in_order = self
            .pushed
            .range(..seq)
            .all(|(s, _)| self.removed.contains_key(s));
        self.removed.insert(seq, in_order);
    }
    /// Items that must survive any crash (acknowledged before the last durable commit, not
    /// durably removed).
    fn must(&self) -> BTreeSet<u64> {
        self.synced_pushed
            .iter()
            .filter(|s| !self.removed.contains_key(s))
            .copied()
            .collect()
    }
    /// Exactly what the last commit named: the image when every later write is lost.
    fn at_last_commit(&self) -> Vec<u64> {
        self.synced_pushed
            .difference(&self.synced_removed)
            .copied()
            .collect()
    }
    /// What a kill -9 leaves: everything pushed and not removed.
    fn live(&self) -> Vec<u64> {
        self.pushed
            .keys()
            .filter(|s| !self.removed.contains_key(s))
            .copied()
            .collect()
    }
}

fn tear_has_garbage(t: Tear) -> bool {
    matches!(t, Tear::OneTorn | Tear::Independent)
}

fn opts() -> RingOptions {
    RingOptions::default().initial_capacity(4096)
}

fn read_all(ring: &RingFile<MemStorage>) -> Vec<(u64, Vec<u8>)> {
    ring.records()
        .map(|r| (r.seq, r.payload.to_vec()))
        .collect()
}

/// The oracle over one recovered ring. `what` names the case for messages.
fn check_recovered(
    k: &Known,
    got: &[(u64, Vec<u8>)],
    report: &RecoveryReport,
    tear: Tear,
    unit: usize,
    what: &str,
) -> Result<(), String> {
    // Nothing invented, payloads intact, strictly increasing.
    let mut prev = None;
    for (seq, p) in got {
        match k.pushed.get(seq) {
            Some(want) if want == p => {}
            Some(_) => return Err(format!("{what}: item {seq} came back altered")),
            None => return Err(format!("{what}: item {seq} was never pushed (invented)")),
        }
        if prev.is_some_and(|q| q >= *seq) {
            return Err(format!("{what}: order broken at {seq} after {prev:?}"));
        }
        prev = Some(*seq);
        if k.synced_removed.contains(seq) {
            return Err(format!(
                "{what}: item {seq} was durably removed and came back"
            ));
        }
    }
    let have: BTreeSet<u64> = got.iter().map(|(s, _)| *s).collect();
    let must = k.must();
    let missing_must: BTreeSet<u64> = must.difference(&have).copied().collect();
    let (min_r, max_r) = (have.first().copied(), have.last().copied());
    let mut holes = BTreeSet::new();
    if let (Some(lo), Some(hi)) = (min_r, max_r) {
        for &s in k.pushed.keys() {
            if s >= hi || have.contains(&s) {
                continue;
            }
            match k.removed.get(&s) {
                None => {
                    holes.insert(s);
                }
                Some(true) if s > lo => {
                    holes.insert(s);
                }
                _ => {}
            }
        }
    }
    let bad: BTreeSet<u64> = missing_must.union(&holes).copied().collect();
    let may_lose_synced = tear_has_garbage(tear) && unit > 8;
    if !missing_must.is_empty() && !may_lose_synced {
        return Err(format!(
            "{what}: items acknowledged before the last durable commit are gone: {missing_must:?} \
             (report {report:?})"
        ));
    }
    if bad.len() as u64 > report.records_dropped {
        return Err(format!(
            "{what}: {} item(s) missing without being counted (dropped {}): missing must {missing_must:?}, \
             holes {holes:?}",
            bad.len(),
            report.records_dropped
        ));
    }
    match tear {
        Tear::AllKept => {
            // The kill -9 image: exactly the live queue.
            let want = k.live();
            let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
            if seqs != want || report.records_dropped != 0 {
                return Err(format!(
                    "{what}: all kept: got {seqs:?}, live {want:?}, report {report:?}"
                ));
            }
        }
        Tear::AllLost if !k.partial_flush => {
            // The durable image: exactly the state of the last commit.
            let want = k.at_last_commit();
            let seqs: Vec<u64> = got.iter().map(|(s, _)| *s).collect();
            if seqs != want || report.records_dropped != 0 {
                return Err(format!(
                    "{what}: all lost: got {seqs:?}, last commit held {want:?}, report {report:?}"
                ));
            }
        }
        _ => {}
    }
    Ok(())
}

/// Crashes `ring` (by cloning its storage) under every tear in `tears` and unit in `units`,
/// reopens, checks, then writes through the reopened ring, crashes again and checks.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
fn crash_and_check(
    ring: &RingFile<MemStorage>,
    k: &Known,
    phase: &'static str,
    tears: &[Tear],
    units: &[usize],
    rng: &mut Rng,
    stats: &mut Stats,
    label: &str,
) -> Result<(), String> {
    stats.crash_points += 1;
    for &tear in tears {
        for &unit in units {
            let seed = rng.next();
            let what = format!("{label} phase '{phase}' tear {tear:?} unit {unit} seed {seed}");
            let image = ring.storage().crash_image(tear, unit, seed);
            let mut r2 = RingFile::open_in(MemStorage::from_bytes(image.clone()), &opts())
                .map_err(|e| format!("{what}: reopen failed: {e}"))?;
            let got = read_all(&r2);
            let report = r2.recovery_report().clone();
            check_recovered(k, &got, &report, tear, unit, &what).map_err(|e| {
                format!(
                    "{e}\n  live slots {}; image slots {}; unflushed {unit}-byte units {:?}; got {:?}; report {report:?}",
                    slots(ring.storage().live()),
                    slots(&image),
                    ring.storage().dirty_units(unit),
                    got.iter().map(|(s, _)| *s).collect::<Vec<_>>()
                )
            })?;
            stats.reopens += 1;
            stats.dropped += report.records_dropped;
            *stats
                .points
                .entry((phase, format!("{tear:?}"), unit))
                .or_insert(0) += 1;

            // New pushes after recovery get numbers above everything acknowledged.
            let max_acked = k.pushed.keys().last().copied();
            let new_payload = payload(u64::MAX - k.next_id, 1 + rng.below(300) as usize);
            let seq = r2
                .push(&new_payload)
                .map_err(|e| format!("{what}: push after recovery failed: {e}"))?;
            if max_acked.is_some_and(|m| seq <= m) {
                return Err(format!(
                    "{what}: push after recovery got seq {seq}, not above {max_acked:?}"
                ));
            }
            let synced = rng.below(2) == 0;
            if synced {
                r2.sync()
                    .map_err(|e| format!("{what}: sync after recovery: {e}"))?;
            }
            // Crash during the reopened ring's own writes, and reopen once more.
            let tear2 = Tear::ALL[rng.below(Tear::ALL.len() as u64) as usize];
            let unit2 = units[rng.below(units.len() as u64) as usize];
            let seed2 = rng.next();
            let what2 = format!(
                "{what}, then re-crash {tear2:?} unit {unit2} seed {seed2} (synced {synced})"
            );
            let image2 = r2.storage().crash_image(tear2, unit2, seed2);
            let image2_copy = image2.clone();
            let r3 = RingFile::open_in(MemStorage::from_bytes(image2), &opts())
                .map_err(|e| format!("{what2}: second reopen failed: {e}"))?;
            let got3 = read_all(&r3);
            let report3 = r3.recovery_report();
            let before: BTreeMap<u64, &Vec<u8>> = got.iter().map(|(s, p)| (*s, p)).collect();
            let mut prev = None;
            for (s, p) in &got3 {
                let ok = before.get(s).is_some_and(|b| *b == p) || (*s == seq && *p == new_payload);
                if !ok {
                    // Not in the first reopen's result: it must still be a real item, never a
                    // durably removed one (an unsynced item the first recovery could not reach
                    // may reappear once a later tear hides the record that stopped the walk).
                    let real =
                        k.pushed.get(s).is_some_and(|w| w == p) && !k.synced_removed.contains(s);
                    if !real {
                        return Err(format!(
                            "{what2}: item {s} was invented or durably removed; first reopen {:?}, second {:?}, \
                             durably removed {:?}; slots: image1 {}, image2 {}; report2 {:?} report3 {:?}",
                            before.keys().collect::<Vec<_>>(),
                            got3.iter().map(|(s, _)| *s).collect::<Vec<_>>(),
                            k.synced_removed,
                            slots(r2.storage().durable()),
                            slots(&image2_copy),
                            report,
                            report3
                        ));
                    }
                    stats.resurrected += 1;
                }
                if prev.is_some_and(|q| q >= *s) {
                    return Err(format!("{what2}: order broken at {s}"));
                }
                prev = Some(*s);
            }
            let have3: BTreeSet<u64> = got3.iter().map(|(s, _)| *s).collect();
            let mut lost: Vec<u64> = before
                .keys()
                .filter(|s| !have3.contains(s))
                .copied()
                .collect();
            if synced && !have3.contains(&seq) {
                lost.push(seq);
            }
            let garbage = tear_has_garbage(tear2) && unit2 > 8;
            if !lost.is_empty() && (!garbage || lost.len() as u64 > report3.records_dropped) {
                return Err(format!(
                    "{what2}: worse after the second crash: lost {lost:?} (report {report3:?}); first reopen \
                     {:?}, second {:?}, new item {seq}",
                    before.keys().collect::<Vec<_>>(),
                    have3
                ) + &format!(
                    "; reopened ring's unflushed 8-byte units: {:?}",
                    r2.storage().dirty_units(8)
                ));
            }
            stats.reopens += 1;
            *stats
                .points
                .entry((PHASES[9], format!("{tear2:?}"), unit2))
                .or_insert(0) += 1;
        }
    }
    Ok(())
}

/// Runs `ops` on a fresh 4 KiB ring; `crash_here(i)` says whether to crash after step `i`.
/// The scenario also crashes after its last step.
pub fn run_scenario(
    ops: &[Op],
    crash_here: &mut dyn FnMut(usize) -> bool,
    tears: &[Tear],
    units: &[usize],
    seed: u64,
    stats: &mut Stats,
) -> Result<(), String> {
    stats.scenarios += 1;
    let mut rng = Rng(seed);
    let mut ring = RingFile::create_in(MemStorage::new(), &opts()).map_err(|e| e.to_string())?;
    let mut k = Known::default();
    k.mark_synced(); // creation is a durable commit of the empty ring
    let label = format!("scenario seed {seed}");
    let mut last_push_at: Option<usize> = None;
    for (i, op) in ops.iter().enumerate() {
        let commits = ring.commit_count();
        let grows = ring.grow_count();
        let before_k = k.clone();
        let phase;
        let mut stop = false;
        match *op {
            Op::Push(len) | Op::FailGrowPush(len) => {
                let fail_grow = matches!(op, Op::FailGrowPush(_));
                if fail_grow {
                    ring.storage_mut().fail_grow_at(0);
                }
                let before = ring.storage().live().to_vec();
                let id = k.next_id;
                k.next_id += 1;
                let p = payload(id, len);
                match ring.push(&p) {
                    Ok(seq) => {
                        if k.pushed.keys().last().is_some_and(|&m| seq <= m) {
                            return Err(format!(
                                "{label} step {i}: push got seq {seq} not above earlier ones"
                            ));
                        }
                        k.pushed.insert(seq, p);
                        let live = ring.storage().live();
                        let first_change =
                            (8192..before.len().min(live.len())).find(|&j| before[j] != live[j]);
                        let wrapped = match (first_change, last_push_at) {
                            (Some(c), Some(last)) => c < last,
                            _ => false,
                        };
                        if first_change.is_some() {
                            last_push_at = first_change;
                        }
                        phase = if ring.grow_count() > grows {
                            last_push_at = None;
                            PHASES[2]
                        } else if wrapped {
                            PHASES[3]
                        } else {
                            PHASES[1]
                        };
                    }
                    Err(_) if fail_grow => {
                        // Any clean error will do; the ring must stay usable and valid.
                        phase = PHASES[8];
                    }
                    Err(e) => return Err(format!("{label} step {i}: push of {len} B failed: {e}")),
                }
                // Disarm a growth failure the push did not need.
                ring.storage_mut().fail_grow_at(u64::MAX);
            }
            Op::PartialPush(len) => {
                let r = ring.push_encoded(len, |buf| {
                    let half = buf.len() / 2;
                    buf[..half].fill(0xEE);
                    Err("filler failed half way".into())
                });
                if r.is_ok() {
                    return Err(format!(
                        "{label} step {i}: a failed filler appended a record"
                    ));
                }
                phase = PHASES[0];
            }
            Op::Pop => {
                if let Some(p) = ring.pop().map_err(|e| e.to_string())? {
                    let seq = expect_next(&k, &p, &label, i)?;
                    k.remove(seq);
                }
                phase = PHASES[4];
            }
            Op::Take => {
                if let Some(t) = ring.take().map_err(|e| e.to_string())? {
                    let p = ring
                        .taken_payload(&t)
                        .ok_or("taken payload missing")?
                        .to_vec();
                    if k.pushed.get(&t.seq) != Some(&p) {
                        return Err(format!("{label} step {i}: took item {} altered", t.seq));
                    }
                    k.taken.push(t.seq);
                }
                phase = PHASES[5];
            }
            Op::CommitTaken(n) | Op::Release(n) => {
                if !k.taken.is_empty() {
                    let seq = k.taken.remove(n % k.taken.len());
                    if matches!(op, Op::CommitTaken(_)) {
                        ring.commit_taken(seq).map_err(|e| e.to_string())?;
                        k.remove(seq);
                        phase = PHASES[4];
                    } else {
                        ring.release(seq).map_err(|e| e.to_string())?;
                        phase = PHASES[5];
                    }
                } else {
                    phase = PHASES[5];
                }
            }
            Op::Sync => {
                ring.sync()
                    .map_err(|e| format!("{label} step {i}: sync: {e}"))?;
                phase = PHASES[6];
            }
            Op::SplitSync(what) => {
                let at_prepare = k.clone();
                let mut inside: Result<(), String> = Ok(());
                let where_ = format!("{label} step {i} {op:?}");
                ring.sync_split(|r| {
                    inside = split_window(r, what, &mut k, &mut rng, stats, units, tears, &where_);
                })
                .map_err(|e| format!("{label} step {i}: split sync: {e}"))?;
                inside?;
                // Durable now: what the flusher's slot names (or, after an inline commit in
                // the window, what that commit named). A pop in the window wrote its cursor
                // into the slot page the flusher then flushed: it may be durable or not.
                if what & 2 == 0 {
                    let mut b = at_prepare.clone();
                    b.mark_synced();
                    k.synced_pushed = b.synced_pushed;
                    k.synced_removed = b.synced_removed;
                }
                if k.removed.len() > at_prepare.removed.len() {
                    k.partial_flush = true;
                }
                phase = PHASES[6];
            }
            Op::FailSync(n) => {
                ring.storage_mut().fail_flush_at(n);
                match ring.sync() {
                    Ok(()) => {
                        ring.storage_mut().fail_flush_at(u64::MAX);
                        phase = PHASES[6];
                    }
                    Err(_) => {
                        if !ring.is_poisoned() {
                            return Err(format!(
                                "{label} step {i}: a failed flush did not poison the ring"
                            ));
                        }
                        if ring.sync().is_ok() {
                            return Err(format!(
                                "{label} step {i}: sync succeeded after a failed flush"
                            ));
                        }
                        phase = PHASES[7];
                        k.partial_flush = true;
                        stop = true;
                    }
                }
            }
        }
        if ring.commit_count() > commits {
            // A durable commit ran. For a push it ran before the record was written (growth
            // or a sequence reservation): the commit holds the state before this step. A
            // split commit holds what came before its window (an inline commit inside the
            // window made more durable; claiming less keeps the oracle sound).
            match op {
                Op::Sync | Op::FailSync(_) => k.mark_synced(),
                Op::SplitSync(_) => {}
                _ => {
                    let mut b = before_k;
                    b.mark_synced();
                    k.synced_pushed = b.synced_pushed;
                    k.synced_removed = b.synced_removed;
                }
            }
        }
        if stop || i + 1 == ops.len() || crash_here(i) {
            crash_and_check(
                &ring,
                &k,
                phase,
                tears,
                units,
                &mut rng,
                stats,
                &format!("{label} step {i} {op:?}"),
            )?;
        }
        if stop {
            break;
        }
    }
    Ok(())
}

/// Inside a split commit's window: the new slot is written, its page not yet flushed. Pops
/// and an inline commit run there, with crashes checked after each.
#[allow(clippy::too_many_arguments)]
fn split_window(
    ring: &mut RingFile<MemStorage>,
    what: u8,
    k: &mut Known,
    rng: &mut Rng,
    stats: &mut Stats,
    units: &[usize],
    tears: &[Tear],
    label: &str,
) -> Result<(), String> {
    let phase = PHASES[10];
    let pop = |ring: &mut RingFile<MemStorage>, k: &mut Known| -> Result<(), String> {
        if let Some(p) = ring.pop().map_err(|e| e.to_string())? {
            let seq = expect_next(k, &p, label, 0)?;
            k.remove(seq);
        }
        Ok(())
    };
    // The split commit's records are flushed, its slot not yet: as after a sync that failed
    // at the slot page, records past the last commit may be durable.
    let mut synced_inline = false;
    let mut check = |ring: &RingFile<MemStorage>, k: &Known, inline: bool| {
        let mut seen = k.clone();
        seen.partial_flush |= !inline;
        crash_and_check(ring, &seen, phase, tears, units, rng, stats, label)
    };
    check(ring, k, synced_inline)?;
    if what & 1 != 0 {
        pop(ring, k)?;
        check(ring, k, synced_inline)?;
    }
    if what & 2 != 0 {
        ring.sync()
            .map_err(|e| format!("{label}: inline commit: {e}"))?;
        k.mark_synced();
        synced_inline = true;
        check(ring, k, synced_inline)?;
    }
    if what & 4 != 0 {
        pop(ring, k)?;
        check(ring, k, synced_inline)?;
    }
    Ok(())
}

/// Checks a popped payload is the oldest live item (FIFO) and returns its seq.
fn expect_next(k: &Known, p: &[u8], label: &str, i: usize) -> Result<u64, String> {
    let taken: BTreeSet<u64> = k.taken.iter().copied().collect();
    let next = k
        .pushed
        .iter()
        .find(|(s, _)| !k.removed.contains_key(s) && !taken.contains(s));
    match next {
        Some((s, want)) if want.as_slice() == p => Ok(*s),
        other => Err(format!(
            "{label} step {i}: pop returned {} bytes, expected item {:?}",
            p.len(),
            other.map(|(s, _)| s)
        )),
    }
}

/// The two header slots of an image, for messages.
fn slots(image: &[u8]) -> String {
    let mut out = String::new();
    for at in [0usize, 4096] {
        let raw = image.get(at..at + ringq::format::SLOT_SIZE);
        match raw.and_then(ringq::format::Slot::decode) {
            Some(sl) if sl.check(raw.unwrap_or_default()).is_ok() => {
                out += &format!(
                    "[gen {} head {}@{} next {} limit {}] ",
                    sl.generation, sl.head_seq, sl.head_off, sl.next_seq, sl.seq_limit
                )
            }
            _ => out += "[bad] ",
        }
    }
    out
}
