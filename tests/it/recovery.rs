//! Recovery of damaged, truncated and stale files: nothing invented, order kept, at most
//! the damaged record lost inside the committed range, never a panic.

use std::path::{Path, PathBuf};

use ringq::format::{DATA_OFFSET, RECORD_HEADER, SLOT1_OFFSET};
use ringq::{Error, MemStorage, RingFile, RingOptions};

fn opts() -> RingOptions {
    RingOptions::default().initial_capacity(16 * 1024)
}

/// Self-describing payload: 8-byte index then filler derived from it.
fn payload(i: u64, len: usize) -> Vec<u8> {
    let mut v = i.to_le_bytes().to_vec();
    v.extend((0..len).map(|k| (i as usize * 7 + k) as u8));
    v
}

fn index_of(p: &[u8]) -> u64 {
    u64::from_le_bytes(p[..8].try_into().unwrap())
}

fn check_payload(p: &[u8]) {
    let i = index_of(p);
    assert_eq!(p, payload(i, p.len() - 8), "item {i} came back altered");
}

/// A synced file image holding items `first..first+n`, lengths varying.
fn synced_image(n: u64, drop_first: u64) -> Vec<u8> {
    let mut r = RingFile::create_in(MemStorage::new(), &opts()).unwrap();
    for i in 0..n {
        r.push(&payload(i, (i as usize * 13) % 200)).unwrap();
    }
    for _ in 0..drop_first {
        r.pop().unwrap();
    }
    r.sync().unwrap();
    r.into_storage().durable().to_vec()
}

fn open_image(image: Vec<u8>) -> RingFile<MemStorage> {
    RingFile::open_in(MemStorage::from_bytes(image), &opts()).unwrap()
}

fn drain_indices(r: &mut RingFile<MemStorage>) -> Vec<u64> {
    let mut out = Vec::new();
    while let Some(p) = r.pop().unwrap() {
        check_payload(&p);
        out.push(index_of(&p));
    }
    out
}

/// Offsets (in the file) of every data record of a sound image, with its index.
fn record_offsets(image: &[u8]) -> Vec<(usize, u64)> {
    let r = open_image(image.to_vec());
    let ring = &image[DATA_OFFSET..];
    let mut out = Vec::new();
    for rec in r.records() {
        // Find the payload in the ring: records are contiguous, so search by pointer offset.
        let off = rec.payload.as_ptr() as usize - r.storage().live().as_ptr() as usize;
        assert!(off >= DATA_OFFSET + RECORD_HEADER && off < DATA_OFFSET + ring.len());
        out.push((off - RECORD_HEADER, index_of(rec.payload)));
    }
    out
}

#[test]
fn byte_flips_inside_the_committed_range_lose_only_the_damaged_record() {
    let n = 60;
    let image = synced_image(n, 5);
    let records = record_offsets(&image);
    assert_eq!(records.len(), 55);
    let mut tried = 0;
    for (k, &(rec_off, idx)) in records.iter().enumerate() {
        // Flip a header byte, a payload byte, and the CRC, in turn.
        for delta in [0usize, 9, 13, RECORD_HEADER + 3] {
            let mut damaged = image.clone();
            let at = rec_off + delta;
            if at >= damaged.len() {
                continue;
            }
            damaged[at] ^= 0x5a;
            tried += 1;
            let mut r = open_image(damaged);
            let report = r.recovery_report().clone();
            let got = drain_indices(&mut r);
            let want: Vec<u64> = (5..n).filter(|&i| i != idx).collect();
            assert!(
                got == want || got == (5..n).collect::<Vec<_>>(),
                "flip at record {k} (+{delta}): got {got:?}"
            );
            if got.len() as u64 == n - 6 {
                assert_eq!(
                    report.records_dropped, 1,
                    "flip at record {k} (+{delta}): the loss is counted: {report:?}"
                );
            }
        }
    }
    assert!(tried > 100);
}

#[test]
fn random_flips_never_invent_or_reorder() {
    let image = synced_image(80, 10);
    let mut seed = 0x1234_5678_9abc_def0u64;
    for _ in 0..300 {
        let mut damaged = image.clone();
        for _ in 0..3 {
            seed ^= seed << 13;
            seed ^= seed >> 7;
            seed ^= seed << 17;
            let at = (seed as usize) % damaged.len();
            damaged[at] ^= (seed >> 32) as u8 | 1;
        }
        // Must never panic; whatever comes back is a subsequence, in order, unaltered.
        let Ok(mut r) = RingFile::open_in(MemStorage::from_bytes(damaged), &opts()) else {
            continue;
        };
        let got = drain_indices(&mut r);
        assert!(got.windows(2).all(|w| w[0] < w[1]), "reordered: {got:?}");
        assert!(
            got.iter().all(|&i| (10..80).contains(&i)),
            "invented or resurrected: {got:?}"
        );
        // And the queue works afterwards.
        r.push(b"after").unwrap();
        assert_eq!(r.pop().unwrap().unwrap(), b"after");
    }
}

#[test]
fn stale_records_from_an_earlier_lap_are_never_returned() {
    // Fill and drain several laps of a small ring, so the space behind the tail holds
    // older records with valid CRCs.
    let mut r = RingFile::create_in(
        MemStorage::new(),
        &RingOptions::default().initial_capacity(4096),
    )
    .unwrap();
    let mut next = 0u64;
    for _ in 0..20 {
        for _ in 0..10 {
            r.push(&payload(next, 100)).unwrap();
            next += 1;
        }
        for _ in 0..10 {
            r.pop().unwrap();
        }
    }
    for _ in 0..3 {
        r.push(&payload(next, 100)).unwrap();
        next += 1;
    }
    assert_eq!(r.capacity(), 4096, "the test needs laps, not growth");
    let live = r.into_storage().live().to_vec();
    let mut r2 = RingFile::open_in(MemStorage::from_bytes(live), &RingOptions::default()).unwrap();
    assert_eq!(drain_indices(&mut r2), vec![next - 3, next - 2, next - 1]);
}

#[test]
fn a_zeroed_unsynced_tail_keeps_the_gap_free_prefix() {
    let mut r = RingFile::create_in(MemStorage::new(), &opts()).unwrap();
    for i in 0..10 {
        r.push(&payload(i, 50)).unwrap();
    }
    r.sync().unwrap();
    for i in 10..20 {
        r.push(&payload(i, 50)).unwrap();
    }
    let live = r.into_storage().live().to_vec();
    let records = record_offsets(&live);
    // Zero from record 15 on: 10..15 survive past the slot's tail, nothing after.
    let (cut, idx) = records[15];
    assert_eq!(idx, 15);
    let mut image = live.clone();
    image[cut..].fill(0);
    let mut r = open_image(image);
    assert_eq!(drain_indices(&mut r), (0..15).collect::<Vec<_>>());
    assert_eq!(
        r.recovery_report().records_dropped,
        0,
        "past the committed range a loss is not damage"
    );
    // New pushes get numbers above everything that could have been handed out.
    let seq = r.push(b"new").unwrap();
    assert!(
        seq >= 20,
        "sequence {seq} may repeat one handed out before the crash"
    );
}

#[test]
fn truncation_at_many_lengths_keeps_the_intact_prefix() {
    let image = synced_image(40, 0);
    let records = record_offsets(&image);
    let end_of = |k: usize| records.get(k + 1).map_or(image.len(), |r| r.0);
    for cut in (0..image.len())
        .step_by(97)
        .chain([DATA_OFFSET, SLOT1_OFFSET, 1, 8191])
    {
        let truncated = image[..cut].to_vec();
        let mut r = RingFile::open_in(MemStorage::from_bytes(truncated), &opts())
            .unwrap_or_else(|e| panic!("cut at {cut}: {e}"));
        let got = drain_indices(&mut r);
        if cut > DATA_OFFSET {
            // Every record wholly before the cut survives.
            let whole = records
                .iter()
                .enumerate()
                .filter(|(k, _)| end_of(*k) <= cut)
                .count();
            assert!(
                got.len() >= whole,
                "cut at {cut}: kept {} of {whole}",
                got.len()
            );
            assert_eq!(
                got,
                (0..got.len() as u64).collect::<Vec<_>>(),
                "cut at {cut}"
            );
            assert!(r.recovery_report().truncated);
        }
        assert!(r.storage().live().len() >= DATA_OFFSET + 4096);
    }
}

#[test]
fn both_slots_destroyed_salvages_the_records_and_warns_of_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    {
        let mut r = RingFile::open(&path, &opts()).unwrap();
        for i in 0..30 {
            r.push(&payload(i, 40)).unwrap();
        }
        r.sync().unwrap();
    }
    let mut bytes = std::fs::read(&path).unwrap();
    let original = bytes.clone();
    for b in &mut bytes[..DATA_OFFSET] {
        *b = 0xEE;
    }
    std::fs::write(&path, &bytes).unwrap();
    let mut r = RingFile::open(&path, &opts()).unwrap();
    let report = r.recovery_report().clone();
    assert!(report.rebuilt && report.redelivery_possible, "{report:?}");
    let backup = report.backup_path.clone().expect("a backup");
    assert!(backup
        .file_name()
        .unwrap()
        .to_string_lossy()
        .starts_with("q."));
    assert_eq!(
        std::fs::read(&backup).unwrap(),
        bytes,
        "the backup is the damaged file as found"
    );
    assert_ne!(bytes, original);
    let got: Vec<u64> = std::iter::from_fn(|| r.pop().unwrap())
        .map(|p| index_of(&p))
        .collect();
    assert_eq!(got, (0..30).collect::<Vec<_>>());
    drop(r);
    // Recovery is idempotent: opening again reports nothing new.
    let r = RingFile::open(&path, &opts()).unwrap();
    assert!(
        !r.recovery_report().anything_happened(),
        "{:?}",
        r.recovery_report()
    );
    assert!(backups(dir.path()).len() == 1);
}

fn backups(dir: &Path) -> Vec<PathBuf> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.to_string_lossy().ends_with(".bak"))
        .collect()
}

#[test]
fn a_second_salvage_never_overwrites_an_older_backup() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("q");
    for round in 0..2 {
        {
            let mut r = RingFile::open(&path, &opts()).unwrap();
            r.push(b"x").unwrap();
            r.sync().unwrap();
        }
        let mut bytes = std::fs::read(&path).unwrap();
        bytes[..DATA_OFFSET].fill(0x11 + round);
        std::fs::write(&path, &bytes).unwrap();
        let _ = RingFile::open(&path, &opts()).unwrap();
    }
    assert_eq!(backups(dir.path()).len(), 2);
}

#[test]
fn missing_empty_and_all_zero_files_are_new_queues_without_backup() {
    let dir = tempfile::tempdir().unwrap();
    for (name, content) in [
        ("missing", None),
        ("empty", Some(vec![])),
        ("zeros", Some(vec![0u8; 20_000])),
    ] {
        let path = dir.path().join(name);
        if let Some(c) = content {
            std::fs::write(&path, c).unwrap();
        }
        let mut r = RingFile::open(&path, &opts()).unwrap();
        assert!(r.is_empty());
        assert!(!r.recovery_report().anything_happened());
        r.push(b"works").unwrap();
    }
    assert!(backups(dir.path()).is_empty());
}

#[test]
fn garbage_files_of_any_length_open_without_panic() {
    let mut seed = 42u64;
    for len in [1usize, 7, 100, 4095, 4096, 8191, 8192, 8200, 12288, 50_000] {
        let bytes: Vec<u8> = (0..len)
            .map(|_| {
                seed = seed
                    .wrapping_mul(6364136223846793005)
                    .wrapping_add(1442695040888963407);
                (seed >> 33) as u8
            })
            .collect();
        let mut r = RingFile::open_in(MemStorage::from_bytes(bytes), &opts()).unwrap();
        assert!(r.recovery_report().redelivery_possible);
        r.push(b"ok").unwrap();
        assert_eq!(r.pop().unwrap().unwrap(), b"ok");
    }
}

#[test]
fn a_slot_claiming_more_than_the_file_is_not_trusted_over_a_sound_one() {
    // A growth that stopped half way: the newer slot names a capacity the file lacks.
    let image = synced_image(10, 0);
    let mut r = open_image(image);
    r.push(b"more").unwrap();
    r.sync().unwrap();
    let mut image = r.into_storage().durable().to_vec();
    // Cut the file short of its ring: both slots now claim too much; recovery extends it.
    image.truncate(DATA_OFFSET + 2048);
    let mut r = open_image(image);
    assert!(r.recovery_report().truncated);
    let kept = std::iter::from_fn(|| r.pop().unwrap()).count();
    assert!(kept <= 11);
}

#[test]
fn the_wrong_encoding_is_a_clear_error() {
    let mut r =
        RingFile::create_in(MemStorage::new(), &RingOptions::default().encoding(Some(1))).unwrap();
    r.push(b"x").unwrap();
    let image = r.into_storage().live().to_vec();
    let err = RingFile::open_in(
        MemStorage::from_bytes(image),
        &RingOptions::default().encoding(Some(2)),
    )
    .unwrap_err();
    assert!(matches!(err, Error::EncodingMismatch { .. }), "{err}");
}
