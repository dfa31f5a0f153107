//! A valid file built from fuzzer-chosen operations, then fuzzer-chosen bit flips, overwrites
//! and a truncation: opening never panics, nothing is invented (every item that comes back was
//! pushed, with its payload intact), the order is kept, and items the damage did not touch
//! are not lost silently (whatever is missing is counted as dropped or was outside the
//! committed range).
#![no_main]

use std::collections::BTreeMap;

use libfuzzer_sys::fuzz_target;
use ringq::{MemStorage, RingFile, RingOptions};

fn payload(id: u64, len: usize) -> Vec<u8> {
    let idb = id.to_le_bytes();
    (0..len)
        .map(|k| {
            if k < 8 {
                idb[k]
            } else {
                (id as usize * 131 + k * 7) as u8
            }
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 4 {
        return;
    }
    let n_ops = data[0] as usize % 48;
    let (ops, damage) = data[1..].split_at((n_ops * 2).min(data.len() - 1));
    let opts = RingOptions::default().initial_capacity(4096);
    let Ok(mut ring) = RingFile::create_in(MemStorage::new(), &opts) else {
        return;
    };
    let mut pushed: BTreeMap<u64, Vec<u8>> = BTreeMap::new();
    for (id, c) in ops.chunks(2).enumerate() {
        let arg = c.get(1).copied().unwrap_or(0) as usize;
        match c[0] % 4 {
            0 | 1 => {
                let p = payload(id as u64, arg * 17);
                let seq = ring.push(&p).expect("push");
                pushed.insert(seq, p);
            }
            2 => {
                ring.pop().expect("pop");
            }
            _ => ring.sync().expect("sync"),
        }
    }
    ring.sync().expect("sync");
    let committed: Vec<u64> = ring.records().map(|r| r.seq).collect();
    let mut image = ring.into_storage().durable().to_vec();
    // Damage: (kind, position, value) triples. Damage to the header pages can make recovery
    // fall back to the older slot, whose committed range is shorter: only damage to records
    // is held to the "counted" rule.
    let mut headers_hit = false;
    for c in damage.chunks(4) {
        if c.len() < 4 || image.is_empty() {
            break;
        }
        let pos = (u16::from_le_bytes([c[1], c[2]]) as usize * 8 + c[0] as usize % 8) % image.len();
        headers_hit |= pos < ringq::format::DATA_OFFSET || c[0] % 5 == 4;
        match c[0] % 5 {
            0..=2 => image[pos] ^= 1 << (c[3] % 8),
            3 => {
                let end = (pos + c[3] as usize).min(image.len());
                image[pos..end].fill(c[3]);
            }
            _ => image.truncate(pos.max(1)),
        }
    }
    let Ok(ring) = RingFile::open_in(MemStorage::from_bytes(image), &opts) else {
        return; // a clean error is fine
    };
    let got: Vec<(u64, Vec<u8>)> = ring
        .records()
        .map(|r| (r.seq, r.payload.to_vec()))
        .collect();
    let mut prev = None;
    for (seq, p) in &got {
        assert_eq!(pushed.get(seq), Some(p), "item {seq} invented or altered");
        assert!(prev.is_none_or(|q| q < *seq), "order broken at {seq}");
        prev = Some(*seq);
    }
    let report = ring.recovery_report();
    if !headers_hit && !report.rebuilt && !report.redelivery_possible && !report.truncated {
        let have: std::collections::BTreeSet<u64> = got.iter().map(|(s, _)| *s).collect();
        let missing = committed.iter().filter(|s| !have.contains(s)).count() as u64;
        assert!(
            missing <= report.records_dropped,
            "{missing} committed item(s) lost without a count: {report:?}"
        );
    }
});
