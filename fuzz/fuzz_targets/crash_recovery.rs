//! An arbitrary sequence of pushes (0 B to tens of KiB), pops, guarded gets, syncs, failed
//! syncs and growth, crashed at fuzzer-chosen points under a fuzzer-chosen tear strategy and
//! unit, checked against the oracle in `fuzz/model.rs` (shared with tests/it/power_model.rs).
#![no_main]

use libfuzzer_sys::fuzz_target;
use ringq::Tear;

#[path = "../model.rs"]
mod model;

use model::{run_scenario, Op, Stats};

fuzz_target!(|data: &[u8]| {
    if data.len() < 3 {
        return;
    }
    let tear = Tear::ALL[data[0] as usize % Tear::ALL.len()];
    let unit = [8usize, 512, 4096][data[1] as usize % 3];
    let crash_mask = data[2];
    let mut ops = Vec::new();
    for c in data[3..].chunks(3).take(64) {
        let arg = c.get(1).copied().unwrap_or(0) as usize
            | (c.get(2).copied().unwrap_or(0) as usize) << 8;
        let op = match c[0] % 10 {
            0..=2 => Op::Push(arg % (24 * 1024)),
            3 => Op::Pop,
            4 => Op::Take,
            5 => Op::CommitTaken(arg),
            6 => Op::Release(arg),
            7 if arg % 3 == 0 => Op::Sync,
            7 => Op::SplitSync((arg >> 2) as u8 & 7),
            8 => Op::PartialPush(arg % 8192 + 2),
            _ => {
                if arg.is_multiple_of(2) {
                    Op::FailSync((arg / 2 % 5) as u64)
                } else {
                    Op::FailGrowPush(arg % (24 * 1024))
                }
            }
        };
        ops.push(op);
    }
    let mut stats = Stats::default();
    let mut crash_here = |i: usize| crash_mask & (1 << (i % 8)) != 0;
    let seed = u64::from(data[0]) << 8 | u64::from(data[1]);
    if let Err(e) = run_scenario(&ops, &mut crash_here, &[tear], &[unit], seed, &mut stats) {
        panic!("{e}\nops: {ops:?}");
    }
});
