use super::*;
use crate::format::{record_size, write_header, KIND_DATA, SEQ_RESERVATION};

/// A ring image (no header pages) with consecutive records from `first`, under `epoch`.
fn ring_with(cap: usize, epoch: u64, first: u64, lens: &[usize]) -> (Vec<u8>, Vec<usize>) {
    let mut ring = vec![0u8; cap];
    let mut off = 0;
    let mut offs = Vec::new();
    for (k, &len) in lens.iter().enumerate() {
        let size = record_size(len).unwrap();
        let payload: Vec<u8> = (0..len).map(|i| (i + k) as u8).collect();
        ring[off + 24..off + 24 + len].copy_from_slice(&payload);
        write_header(
            &mut ring[off..off + size],
            KIND_DATA,
            first + k as u64,
            len as u32,
            epoch,
        );
        offs.push(off);
        off += size;
    }
    (ring, offs)
}

#[test]
fn walk_counts_consecutive_records_and_stops_past_the_committed_range() {
    let (mut ring, offs) = ring_with(1024, 5, 10, &[8, 16, 0, 40]);
    let w = walk(
        &ring,
        5,
        Pos { off: 0, seq: 10 },
        0,
        SEQ_RESERVATION,
        &mut Checker::new(1 << 20),
    );
    assert_eq!(w.items, 4);
    assert_eq!(w.end.seq, 14);
    // Damage record 1: beyond the committed range the walk stops there.
    ring[offs[1] + 30] ^= 1;
    let w = walk(
        &ring,
        5,
        Pos { off: 0, seq: 10 },
        0,
        SEQ_RESERVATION,
        &mut Checker::new(1 << 20),
    );
    assert_eq!((w.items, w.dropped), (1, 0));
    // Inside it, the damaged record is skipped and counted, the rest kept.
    let w = walk(
        &ring,
        5,
        Pos { off: 0, seq: 10 },
        14,
        SEQ_RESERVATION,
        &mut Checker::new(1 << 20),
    );
    assert_eq!((w.items, w.dropped), (3, 1));
    assert_eq!(w.end.seq, 14);
}

#[test]
fn resync_scans_past_a_destroyed_header() {
    let (mut ring, offs) = ring_with(1024, 5, 0, &[100, 8, 8]);
    ring[offs[0]..offs[0] + 24].fill(0xAB);
    let (next, dist) = resync(&ring, 5, offs[0], 0, 0, SEQ_RESERVATION, 1024).unwrap();
    assert_eq!(
        next,
        Pos {
            off: offs[1],
            seq: 1
        }
    );
    assert_eq!(dist, offs[1]);
}

#[test]
fn records_of_another_epoch_are_ignored() {
    let (ring, _) = ring_with(512, 5, 0, &[8, 8]);
    let w = walk(
        &ring,
        6,
        Pos { off: 0, seq: 0 },
        2,
        SEQ_RESERVATION,
        &mut Checker::new(1 << 20),
    );
    assert_eq!(w.items, 0);
}

#[test]
fn an_all_zero_image_is_fresh_and_garbage_is_salvage() {
    assert!(matches!(recover(&[0u8; 20_000]), Found::Fresh));
    assert!(matches!(recover(&[]), Found::Fresh));
    let junk: Vec<u8> = (0..20_000u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    assert!(matches!(recover(&junk), Found::Salvage(_)));
}

#[test]
fn salvage_keeps_the_longest_consecutive_run() {
    let mut image = vec![0u8; DATA_OFFSET];
    let (ring, offs) = ring_with(2048, 9, 100, &[8; 10]);
    image.extend_from_slice(&ring);
    // Break the run in the middle: 100..=103 and 105..=109 remain.
    image[DATA_OFFSET + offs[4] + 2] ^= 0xff;
    let Found::Salvage(s) = recover(&image) else {
        panic!("no slot: salvage expected")
    };
    let seqs: Vec<u64> = s.records.iter().map(|r| r.0).collect();
    assert_eq!(seqs, (105..110).collect::<Vec<_>>());
    assert_eq!(s.epoch, Some(9));
    assert_eq!(s.report.records_dropped, 4);
}

/// A header page pair whose slots both name a ring of `capacity` bytes, then `ring_len`
/// bytes of ring.
fn image_claiming(capacity: u64, ring_len: usize) -> Vec<u8> {
    let slot = Slot {
        magic: format::SLOT_MAGIC,
        version: format::FORMAT_VERSION,
        epoch: 5,
        generation: 1,
        capacity,
        seq_limit: SEQ_RESERVATION,
        ..Slot::default()
    };
    let mut image = vec![0u8; DATA_OFFSET + ring_len];
    for at in SLOT_OFFSETS {
        image[at..at + SLOT_SIZE].copy_from_slice(&slot.encode());
    }
    let (ring, _) = ring_with(ring_len, 5, 0, &[8, 8]);
    image[DATA_OFFSET..].copy_from_slice(&ring);
    image
}

#[test]
fn a_file_cut_short_is_extended_only_by_up_to_its_own_length() {
    // 2 MiB file whose slots name 3.5 MiB: extended back (1.5 MiB missing <= 2 MiB).
    let len = 2 << 20;
    let image = image_claiming((len + (3 << 19) - DATA_OFFSET) as u64, len - DATA_OFFSET);
    assert!(
        matches!(recover(&image), Found::Truncated { len: l, .. } if l == len + (3 << 19)),
        "a plausible truncation is extended"
    );
    // The same file naming 64 GiB, or 4x its length: salvaged, nothing sized by the claim.
    for capacity in [64u64 << 30, 4 * len as u64] {
        let image = image_claiming(capacity, len - DATA_OFFSET);
        let Found::Salvage(s) = recover(&image) else {
            panic!("a claim of {capacity} bytes must be salvaged")
        };
        assert_eq!(s.records.len(), 2);
        assert!(
            s.report.notes[0].contains("far more than"),
            "{:?}",
            s.report
        );
    }
}

#[test]
fn the_checksum_budget_bounds_nested_claims() {
    // Every header claims the rest of the ring: a full check of each would hash ~cap^2/48.
    let cap = 1 << 20;
    let mut ring = vec![0u8; cap];
    let mut off = 0;
    while off + 24 <= cap {
        let len = (cap - off - 24) as u32;
        ring[off + 4..off + 8].copy_from_slice(&len.to_le_bytes());
        ring[off + 8..off + 16].copy_from_slice(&((3u64 << 8) | KIND_DATA as u64).to_le_bytes());
        ring[off + 16..off + 24].copy_from_slice(&5u64.to_le_bytes());
        off += 24;
    }
    let mut chk = Checker::new(cap);
    let w = walk(
        &ring,
        5,
        Pos { off: 0, seq: 3 },
        10,
        SEQ_RESERVATION,
        &mut chk,
    );
    assert!(chk.checked <= CHECK_FACTOR * cap as u64 + (1 << 20));
    assert!(chk.refused > 0, "the budget was reached");
    assert_eq!(w.items, 0);
}
