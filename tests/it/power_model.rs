//! Power loss, modelled: random op sequences over the page-cache model (`MemStorage`), crashed
//! at many points under every tear strategy at 8 B, 512 B and 4 KiB units, reopened and
//! checked against the oracle of issue 10 (see `fuzz/model.rs`, shared with the fuzzer):
//! - what comes back is what was pushed under that sequence number, increasing, and gap-free
//!   except for items removed out of order and media damage the recovery report counts;
//! - everything acknowledged before the last durable commit is there unless durably removed,
//!   and nothing durably removed comes back;
//! - "all kept" gives exactly the kill -9 state, "all lost" exactly the last commit's state,
//!   with nothing counted as dropped;
//! - a push after recovery gets a sequence number above everything acknowledged;
//! - a second crash during the reopened ring's own writes leaves nothing worse.
//!
//! Cases: `RINGQ_MODEL_CASES` (default 40 sequences of 60 steps); seed: `RINGQ_MODEL_SEED`.

#[path = "../../fuzz/model.rs"]
mod model;

use model::{run_scenario, Op, Rng, Stats};
use ringq::{Durability, MemStorage, Queue, RingFile, RingOptions, Tear};

const UNITS: [usize; 3] = [8, 512, 4096];

fn env_u64(name: &str, default: u64) -> u64 {
    std::env::var(name)
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(default)
}

/// Fixed by default so CI is reproducible; set `RINGQ_MODEL_SEED` to explore.
fn seed() -> u64 {
    env_u64("RINGQ_MODEL_SEED", 1)
}

fn print_stats(name: &str, seed: u64, stats: &Stats) {
    eprintln!(
        "{name} seed {seed}: {} scenarios, {} crash points, {} reopens checked, {} records counted dropped, \
         {} unsynced items back after a second crash",
        stats.scenarios, stats.crash_points, stats.reopens, stats.dropped, stats.resurrected
    );
    for (phase, n) in stats.per_phase() {
        eprintln!("  phase {phase:<30} {n:>7} crash images");
    }
    for (tear, n) in stats.per_tear() {
        eprintln!("  tear  {tear:<30} {n:>7} crash images");
    }
}

/// One random sequence of 60 operations drawn from `seed`, crashing after a random third of
/// the steps; on failure, what went wrong and the operations.
fn random_case(seed: u64, stats: &mut Stats) -> Result<(), (String, Vec<model::Op>)> {
    let ops = model::random_ops(&mut Rng(seed), 60);
    let mut pick = Rng(seed ^ 0xABCD);
    let mut crash_here = |_: usize| pick.below(3) == 0;
    run_scenario(&ops, &mut crash_here, &Tear::ALL, &UNITS, seed, stats).map_err(|e| (e, ops))
}

/// Random sequences, crashing after a random third of the steps.
#[test]
fn power_cut_random_sequences() {
    let cases = env_u64("RINGQ_MODEL_CASES", 40);
    let base = seed();
    let mut stats = Stats::default();
    for case in 0..cases {
        let s = base.wrapping_add(case.wrapping_mul(0x9E37_79B9));
        if let Err((e, ops)) = random_case(s, &mut stats) {
            panic!("{e}\nreproduce with RINGQ_MODEL_SEED={s} RINGQ_MODEL_CASES=1\nops: {ops:?}");
        }
    }
    print_stats("power model", base, &stats);
    assert!(
        stats.crash_points >= cases,
        "every case crashed at least once"
    );
}

/// The queue flusher's split commit, with pops and inline commits inside its window (the
/// new slot written, its page not yet flushed): random sequences whose syncs are split
/// commits, crashed inside every window. Issue 17 item 13: a pop's cursor or an inline
/// commit's slot written into the page of the newest durable slot, torn with the new slot
/// not yet on disk, fell back two generations and delivered acknowledged removals again.
#[test]
fn power_cut_inside_split_commits() {
    let cases = env_u64("RINGQ_MODEL_CASES", 40);
    let base = seed() ^ 0x5B11_7C0D;
    let mut stats = Stats::default();
    for case in 0..cases {
        let s = base.wrapping_add(case.wrapping_mul(0x9E37_79B9));
        let mut rng = Rng(s);
        let mut ops = model::random_ops(&mut rng, 60);
        for op in &mut ops {
            if matches!(op, Op::Sync) {
                *op = Op::SplitSync(rng.below(8) as u8);
            }
        }
        let mut pick = Rng(s ^ 0xABCD);
        let mut crash_here = |_: usize| pick.below(3) == 0;
        if let Err(e) = run_scenario(&ops, &mut crash_here, &Tear::ALL, &UNITS, s, &mut stats) {
            panic!("{e}\nseed {s}\nops: {ops:?}");
        }
    }
    print_stats("power model, split commits", base, &stats);
    assert!(
        stats
            .per_phase()
            .get("inside a split commit")
            .copied()
            .unwrap_or(0)
            > 0
    );
}

/// The edges where ring buffers broke before (Tape, queue-file): growth while wrapped, an
/// exactly full ring, a wrap with a skip record, then crashes at every step.
#[test]
fn power_cut_named_edges() {
    let mut stats = Stats::default();
    let cases: Vec<(&str, Vec<Op>)> = vec![
        (
            "grow while wrapped",
            vec![
                Op::Push(1000),
                Op::Push(1000),
                Op::Push(1000),
                Op::Sync,
                Op::Pop,
                Op::Pop,
                Op::Push(1500),
                Op::Push(1500),
                Op::Push(3000),
                Op::Push(100),
                Op::Sync,
                Op::Push(5000),
            ],
        ),
        (
            "exactly full ring",
            // 4096 B ring: records of 24 + 1000 B = 1024 B fill it exactly, four times.
            vec![
                Op::Push(1000),
                Op::Push(1000),
                Op::Push(1000),
                Op::Sync,
                Op::Push(1000),
                Op::Pop,
                Op::Push(1000),
            ],
        ),
        (
            "popped space reused before the next sync",
            vec![
                Op::Push(900),
                Op::Push(900),
                Op::Push(900),
                Op::Sync,
                Op::Pop,
                Op::Pop,
                Op::Pop,
                Op::Push(1200),
                Op::Push(1200),
                Op::Push(1200),
                Op::Sync,
            ],
        ),
        (
            "guarded out of order",
            vec![
                Op::Push(10),
                Op::Push(20),
                Op::Push(30),
                Op::Sync,
                Op::Take,
                Op::Take,
                Op::CommitTaken(1),
                Op::Sync,
                Op::Release(0),
                Op::Pop,
            ],
        ),
        (
            "empty payloads",
            vec![
                Op::Push(0),
                Op::Push(0),
                Op::Sync,
                Op::Pop,
                Op::Push(0),
                Op::Pop,
            ],
        ),
        (
            "sync fails between the record flush and the slot write",
            vec![
                Op::Push(100),
                Op::Sync,
                Op::Push(200),
                Op::Push(5000),
                Op::Pop,
                Op::FailSync(1),
            ],
        ),
        (
            "sync fails at the slot page flush",
            vec![Op::Push(100), Op::Sync, Op::Push(300), Op::FailSync(2)],
        ),
        (
            "growth fails",
            vec![
                Op::Push(3000),
                Op::Sync,
                Op::FailGrowPush(6000),
                Op::Push(100),
                Op::Sync,
            ],
        ),
        (
            "partial record",
            vec![
                Op::Push(10),
                Op::PartialPush(3000),
                Op::Push(20),
                Op::Sync,
                Op::PartialPush(50),
            ],
        ),
    ];
    for (i, (name, ops)) in cases.iter().enumerate() {
        let mut every = |_: usize| true;
        if let Err(e) = run_scenario(
            ops,
            &mut every,
            &Tear::ALL,
            &UNITS,
            1000 + i as u64,
            &mut stats,
        ) {
            panic!("edge case '{name}': {e}");
        }
    }
    print_stats("power model, named edges", 1000, &stats);
}

/// `Queue` with `Durability::Sync` over the model: at any quiescent point, every acknowledged
/// put is there, no acknowledged get comes back, under every tear.
#[test]
fn power_cut_queue_sync() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let base = seed();
    let cases = env_u64("RINGQ_MODEL_CASES", 40) / 4 + 1;
    let mut images = 0u64;
    for case in 0..cases {
        let s = base.wrapping_add(case);
        let mut rng = Rng(s);
        rt.block_on(async {
            let q: Queue<(u64, Vec<u8>)> = Queue::builder(format!("memory-{s}.q"))
                .durability(Durability::Sync)
                .initial_capacity(4096)
                .in_memory(MemStorage::new())
                .open()
                .await
                .unwrap();
            let mut model = std::collections::VecDeque::new();
            let mut next = 0u64;
            for step in 0..40 {
                if rng.below(10) < 6 || model.is_empty() {
                    let data = model::payload(next, model::random_len(&mut rng));
                    q.put((next, data.clone())).await.unwrap();
                    model.push_back((next, data));
                    next += 1;
                } else {
                    let got = q.get().await.unwrap();
                    assert_eq!(Some(got), model.pop_front(), "FIFO order");
                }
                if rng.below(3) != 0 {
                    continue;
                }
                let mem = q.memory_snapshot().expect("in-memory queue");
                for tear in Tear::ALL {
                    for unit in UNITS {
                        let image = mem.crash_image(tear, unit, rng.next());
                        let r = RingFile::open_in(MemStorage::from_bytes(image), &RingOptions::default())
                            .unwrap_or_else(|e| panic!("seed {s} step {step}: reopen failed: {e}"));
                        let got: Vec<(u64, Vec<u8>)> = r
                            .records()
                            .map(|rec| {
                                <ringq::Bincode as ringq::Codec<(u64, Vec<u8>)>>::decode(rec.payload)
                                    .expect("decodes")
                            })
                            .collect();
                        let want: Vec<(u64, Vec<u8>)> = model.iter().cloned().collect();
                        assert_eq!(
                            got, want,
                            "seed {s} step {step} {tear:?}/{unit}: Sync queue lost or resurrected items \
                             (report {:?})",
                            r.recovery_report()
                        );
                        images += 1;
                    }
                }
            }
        });
    }
    eprintln!(
        "power model, Queue Sync seed {base}: {cases} sequences, {images} crash images, lost: 0"
    );
}

/// Scenarios the model once failed, replayed exactly (each seed is a `power_cut_random_sequences`
/// case: `RINGQ_MODEL_SEED=<seed> RINGQ_MODEL_CASES=1`).
///
/// 398165365351: pops freed the space of records whose removal was not yet durable and
/// newer records were written there; after a torn power cut recovery resynced onto a newer
/// record and skipped committed ones (items 8..13 lost), and after a second crash it resynced
/// onto a stale record left inside the stretch it had stepped over.
const FOUND_SCENARIOS: &[u64] = &[398_165_365_351];

#[test]
fn power_cut_found_scenarios() {
    for &s in FOUND_SCENARIOS {
        if let Err((e, _)) = random_case(s, &mut Stats::default()) {
            panic!("{e}");
        }
    }
}

/// Regression (found by this model): a 4 KiB page torn into garbage inside the committed
/// range made recovery resync onto a stale copy of a record that growth-while-wrapped had left
/// at the front of the ring, and an item removed out of order (done-marked, committed) was
/// delivered again. Growth now invalidates those copies once the new layout is committed.
#[test]
fn torn_page_never_resyncs_onto_a_stale_growth_copy() {
    let s = 0x5EED_0010;
    let mut stats = Stats::default();
    let mut rng = Rng(s);
    let ops = model::random_ops(&mut rng, 60);
    let mut pick = Rng(s ^ 0xABCD);
    let mut crash_here = |_: usize| pick.below(3) == 0;
    if let Err(e) = run_scenario(&ops, &mut crash_here, &Tear::ALL, &UNITS, s, &mut stats) {
        panic!("{e}");
    }
}

/// `Queue` under `Buffered` and `Periodic` over the model, growing from 4 KiB: whatever a
/// crash leaves is in put order, keeps a gap-free prefix of what is queued, holds every item
/// the last `sync()` made durable that no later get took, and nothing gotten before it;
/// "all kept" is exactly the queue. A garbage tear of a unit larger than a record's 8-byte
/// alignment may break the first two, by at most what recovery counts as dropped (below).
#[test]
fn power_cut_queue_buffered_and_periodic_grow() {
    queue_buffered_model(seed(), env_u64("RINGQ_MODEL_CASES", 40) / 4 + 1);
}

/// Found by the Buffered/Periodic queue model (`RINGQ_MODEL_SEED=3`, its case seed 13,
/// `Buffered`, step 32, tear SuffixKept/8, no garbage): a gap in the uncommitted tail.
/// Slot: committed [0, 6), capacity 16384; items 0..7 gotten since (their space reused),
/// 7..12 at ring offsets 8336..11408, a skip record, 13 at 0, 14..20 at 7080..8100. The
/// first dirty units in file order reverted: record 4 (1520..7872) has its end overwritten
/// by 15..20 and fails; `resync_checked` scans on from 1528, finds only records past the
/// committed range, and keeps the first in scan order, 15 at 7176, over 7 at 8336 with
/// 7..12 intact: items 8..12 (queued, intact on disk) lost, counted as 11 dropped.
#[test]
fn power_cut_queue_buffered_resync_takes_lowest_uncommitted() {
    queue_buffered_model(13, 1);
}

fn queue_buffered_model(base: u64, cases: u64) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let policies = [
        Durability::Buffered,
        Durability::Periodic(std::time::Duration::from_millis(1)),
    ];
    let (mut images, mut grows, mut dropped) = (0u64, 0u64, 0u64);
    for case in 0..cases {
        let s = base.wrapping_add(case);
        let mut rng = Rng(s);
        let policy = policies[case as usize % 2];
        rt.block_on(async {
            let q: Queue<(u64, Vec<u8>)> = Queue::builder(format!("memory-{s}.q"))
                .durability(policy)
                .initial_capacity(4096)
                .in_memory(MemStorage::new())
                .open()
                .await
                .unwrap();
            let mut queued = std::collections::VecDeque::new();
            // Items queued at the last sync(), less those gotten since.
            let mut must = std::collections::BTreeSet::new();
            // Everything gotten before the last sync() is gone for good.
            let mut gone_below = 0u64;
            let mut next = 0u64;
            for step in 0..60 {
                match rng.below(10) {
                    0..=5 => {
                        let data = model::payload(next, model::random_len(&mut rng) * 2);
                        q.put((next, data.clone())).await.unwrap();
                        queued.push_back((next, data));
                        next += 1;
                    }
                    6..=8 if !queued.is_empty() => {
                        let got = q.get().await.unwrap();
                        assert_eq!(Some(&got), queued.front(), "FIFO order");
                        queued.pop_front();
                        must.remove(&got.0);
                    }
                    _ => {
                        q.sync().await.unwrap();
                        must = queued.iter().map(|(id, _)| *id).collect();
                        gone_below = queued.front().map_or(next, |(id, _)| *id);
                    }
                }
                if rng.below(3) != 0 {
                    continue;
                }
                let mem = q.memory_snapshot().expect("in-memory queue");
                for tear in Tear::ALL {
                    for unit in UNITS {
                        let image = mem.crash_image(tear, unit, rng.next());
                        let r = RingFile::open_in(
                            MemStorage::from_bytes(image),
                            &RingOptions::default(),
                        )
                        .unwrap_or_else(|e| panic!("seed {s} step {step}: reopen failed: {e}"));
                        let got: Vec<(u64, Vec<u8>)> = r
                            .records()
                            .map(|rec| {
                                <ringq::Bincode as ringq::Codec<(u64, Vec<u8>)>>::decode(
                                    rec.payload,
                                )
                                .expect("decodes")
                            })
                            .collect();
                        let ctx = format!("seed {s} {policy:?} step {step} {tear:?}/{unit}");
                        for w in got.windows(2) {
                            assert!(w[1].0 > w[0].0, "{ctx}: reordered or duplicated");
                        }
                        let report = r.recovery_report();
                        let ids: std::collections::BTreeSet<u64> =
                            got.iter().map(|g| g.0).collect();
                        // Of what is still queued, a gap-free prefix survives (gotten items
                        // may come back, or not, around it): a queued item lost before the
                        // last queued one that survived is a hole.
                        let last_kept = queued.iter().rposition(|(id, _)| ids.contains(id));
                        let holes: Vec<u64> = queued
                            .iter()
                            .take(last_kept.unwrap_or(0))
                            .map(|(id, _)| *id)
                            .filter(|id| !ids.contains(id))
                            .collect();
                        let lost_must: Vec<u64> = must.difference(&ids).copied().collect();
                        let bad: std::collections::BTreeSet<u64> =
                            holes.iter().chain(&lost_must).copied().collect();
                        // A garbage tear destroys a whole dirty unit, and a 512 B or 4 KiB
                        // unit is dirty when any byte in it was written since its last flush:
                        // a record put after a commit shares its unit with the end of the last
                        // committed record (records are 8-byte aligned, not sector-aligned),
                        // so garbage there takes committed bytes with it, as a device without
                        // power-loss protection can (DURABILITY.md, 9).
                        // Recovery steps over that damage inside the committed range and
                        // resyncs onto the next record that verifies, which may lie past the
                        // range behind torn uncommitted ones: synced items lost and holes,
                        // each counted in `records_dropped`. Old-or-new tears (no garbage),
                        // and 8 B units, which never straddle a record boundary, lose nothing
                        // committed and leave no hole. The ring-level oracle
                        // (`fuzz/model.rs`, `check_recovered`) has the same rule.
                        let garbage = matches!(tear, Tear::OneTorn | Tear::Independent);
                        if garbage && unit > 8 {
                            assert!(
                                bad.len() as u64 <= report.records_dropped,
                                "{ctx}: items {bad:?} lost (holes {holes:?}, synced {lost_must:?}) \
                                 but only {} counted dropped",
                                report.records_dropped
                            );
                            dropped += report.records_dropped;
                        } else {
                            assert!(
                                holes.is_empty(),
                                "{ctx}: queued items lost before a later one survived: {holes:?} \
                                 (got {:?}, report {report:?})",
                                ids
                            );
                            assert!(
                                lost_must.is_empty(),
                                "{ctx}: lost synced items {lost_must:?} (report {report:?})"
                            );
                        }
                        if tear == Tear::AllKept {
                            // The kill -9 image: exactly the queue, nothing counted dropped.
                            let want: Vec<u64> = queued.iter().map(|(id, _)| *id).collect();
                            let seqs: Vec<u64> = got.iter().map(|g| g.0).collect();
                            assert_eq!(seqs, want, "{ctx}: all kept ({report:?})");
                            assert_eq!(report.records_dropped, 0, "{ctx}: all kept");
                        }
                        for (id, data) in &got {
                            assert!(
                                *id >= gone_below,
                                "{ctx}: item {id} durably gotten came back"
                            );
                            assert_eq!(
                                data,
                                &model::payload(*id, data.len()),
                                "{ctx}: item {id} payload"
                            );
                        }
                        images += 1;
                    }
                }
            }
            grows += u64::from(q.memory_snapshot().unwrap().live().len() > 8192 + 4096);
        });
    }
    assert!(
        grows * 2 >= cases,
        "growth must be exercised: {grows} of {cases} cases grew"
    );
    eprintln!(
        "power model, Queue Buffered/Periodic seed {base}: {cases} sequences, {images} crash images, \
         {grows} grew, {dropped} records counted dropped under garbage tears"
    );
}
