//! Recovery's cost is linear in the file's size and its memory bounded by it, whatever the
//! bytes claim (issue 17, items 8 and 9). Crafted worst cases: a ring tiled with plausible
//! record headers that each claim to reach the ring's end, plausible garbage with random
//! claims, records nested inside each other with valid CRCs, and slots naming huge capacities.
//!
//! Cost is measured deterministically by `RecoveryReport::checked_bytes` (every CRC recovery
//! computes is counted), and, as a second check, by the ratio of the open times of a 1 MiB and
//! an 8 MiB crafted image measured in the same test (quadratic would be 64x).

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use ringq::format::{self, Slot, DATA_OFFSET, KIND_DATA, RECORD_HEADER, SLOT_OFFSETS, SLOT_SIZE};
use ringq::{MemStorage, RingFile, RingOptions};

/// What recovery may checksum: `CHECK_FACTOR` (8) times the file, plus 1 MiB.
fn budget(len: usize) -> u64 {
    8 * len as u64 + (1 << 20)
}

/// A sound, empty, synced ring of `cap` bytes: (image, epoch, next sequence number).
fn empty_ring(cap: u64) -> (Vec<u8>, u64, u64) {
    let mut r = RingFile::create_in(
        MemStorage::new(),
        &RingOptions::default().initial_capacity(cap),
    )
    .unwrap();
    r.sync().unwrap();
    let (epoch, next) = (r.epoch(), r.next_seq());
    (r.into_storage().durable().to_vec(), epoch, next)
}

/// Writes a header at ring offset `off` claiming `len` payload bytes, with a wrong CRC.
fn put_header(image: &mut [u8], off: usize, seq: u64, len: u32, epoch: u64) {
    let at = DATA_OFFSET + off;
    let h = &mut image[at..at + RECORD_HEADER];
    h[0..4].copy_from_slice(&0xDEAD_BEEFu32.to_le_bytes());
    h[4..8].copy_from_slice(&len.to_le_bytes());
    h[8..16].copy_from_slice(&((seq << 8) | KIND_DATA as u64).to_le_bytes());
    h[16..24].copy_from_slice(&epoch.to_le_bytes());
}

/// Issue 17 item 9: the ring tiled every 24 bytes with headers of this epoch and the next
/// sequence number, each claiming the rest of the ring, each with a wrong CRC.
fn tiled(cap: usize) -> Vec<u8> {
    let (mut image, epoch, next) = empty_ring(cap as u64);
    let mut off = 0;
    while off + RECORD_HEADER <= cap {
        put_header(
            &mut image,
            off,
            next,
            (cap - off - RECORD_HEADER) as u32,
            epoch,
        );
        off += RECORD_HEADER;
    }
    image
}

/// Plausible garbage: a header of this epoch every 8 bytes where it fits (kind, epoch right),
/// random claimed lengths (some past the ring's end, some huge), sequence numbers near the
/// next one.
fn plausible_garbage(cap: usize, seed: u64) -> Vec<u8> {
    let (mut image, epoch, next) = empty_ring(cap as u64);
    let mut x = seed;
    let mut rnd = || {
        x = x
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        x >> 17
    };
    let mut off = 0;
    while off + RECORD_HEADER <= cap {
        let len = match rnd() % 4 {
            0 => u32::MAX - (rnd() % 64) as u32,
            _ => (rnd() % (cap as u64)) as u32,
        };
        put_header(&mut image, off, next + rnd() % 3, len, epoch);
        off += RECORD_HEADER + 8 * (rnd() % 2) as usize;
    }
    image
}

fn open_checked(image: Vec<u8>) -> (RingFile<MemStorage>, Duration) {
    let t = Instant::now();
    let r = RingFile::open_in(MemStorage::from_bytes(image), &RingOptions::default())
        .expect("a crafted image opens");
    (r, t.elapsed())
}

#[test]
fn a_tiled_ring_opens_with_checksum_work_linear_in_its_size() {
    for cap in [1 << 20, 8 << 20] {
        let image = tiled(cap);
        let len = image.len();
        let (mut r, _) = open_checked(image);
        let checked = r.recovery_report().checked_bytes;
        assert!(
            checked <= budget(len),
            "{cap}-byte tiled ring: {checked} bytes checksummed, budget {}",
            budget(len)
        );
        assert_eq!(r.len(), 0, "nothing in a tiled ring verifies");
        r.push(b"after").unwrap();
        assert_eq!(r.pop().unwrap().as_deref(), Some(&b"after"[..]));
    }
}

#[test]
fn open_time_grows_linearly_not_quadratically() {
    // Medians of three opens each, measured in the same test so machine load hits both.
    let time = |cap: usize| {
        let image = tiled(cap);
        let mut t: Vec<Duration> = (0..3).map(|_| open_checked(image.clone()).1).collect();
        t.sort();
        t[1]
    };
    let small = time(1 << 20);
    let big = time(8 << 20);
    let ratio = big.as_secs_f64() / small.as_secs_f64().max(1e-6);
    eprintln!("tiled ring open: 1 MiB {small:?}, 8 MiB {big:?}, ratio {ratio:.1}");
    assert!(
        ratio < 20.0,
        "8x the size took {ratio:.1}x the time (quadratic would be 64x): 1 MiB {small:?}, 8 MiB {big:?}"
    );
}

#[test]
fn plausible_garbage_opens_within_the_budget() {
    for seed in 1..6 {
        let image = plausible_garbage(1 << 20, seed);
        let len = image.len();
        let (r, _) = open_checked(image);
        let checked = r.recovery_report().checked_bytes;
        assert!(
            checked <= budget(len),
            "seed {seed}: {checked} bytes checksummed"
        );
    }
}

#[test]
fn nested_valid_records_cost_no_more_than_the_budget() {
    // Valid records each containing the next one in its payload, all claiming the ring's end
    // and carrying plausible numbers: every candidate verifies, so only the budget bounds it.
    let cap = 64 * 1024;
    let (mut image, epoch, next) = empty_ring(cap as u64);
    let mut off = cap - 64;
    while off >= 24 {
        let len = cap - off - RECORD_HEADER;
        let at = DATA_OFFSET + off;
        format::write_header(
            &mut image[at..at + RECORD_HEADER + len],
            KIND_DATA,
            next + (off / 24) as u64,
            len as u32,
            epoch,
        );
        off -= 24;
    }
    let len = image.len();
    let (r, _) = open_checked(image);
    let checked = r.recovery_report().checked_bytes;
    assert!(checked <= budget(len), "{checked} bytes checksummed");
}

/// A small file whose two slots both claim a ring of `capacity` bytes (CRCs fixed up).
fn claiming(capacity: u64) -> Vec<u8> {
    let mut r = RingFile::create_in(
        MemStorage::new(),
        &RingOptions::default().initial_capacity(262_144),
    )
    .unwrap();
    for i in 0..100u32 {
        r.push(&i.to_le_bytes().repeat(50)).unwrap();
    }
    r.sync().unwrap();
    r.sync().unwrap();
    let mut image = r.into_storage().durable().to_vec();
    for at in SLOT_OFFSETS {
        let mut slot = Slot::decode(&image[at..at + SLOT_SIZE]).unwrap();
        slot.capacity = capacity;
        image[at..at + SLOT_SIZE].copy_from_slice(&slot.encode());
    }
    image
}

#[test]
fn slots_claiming_64_gib_are_salvaged_from_the_file_not_extended() {
    let image = claiming(64 << 30);
    let len = image.len();
    let (mut r, _) = open_checked(image);
    let rep = r.recovery_report().clone();
    assert!(rep.rebuilt && !rep.truncated, "{rep:?}");
    assert!(r.capacity() as usize <= len, "capacity {}", r.capacity());
    assert_eq!(r.len(), 100, "{rep:?}");
    assert_eq!(r.pop().unwrap().unwrap(), 0u32.to_le_bytes().repeat(50));
}

#[test]
fn slots_claiming_a_little_more_than_the_file_extend_it_back() {
    // Cut short by less than its own length: extended back, every record kept.
    let image = claiming(400_000);
    let (mut r, _) = open_checked(image);
    assert!(r.recovery_report().truncated, "{:?}", r.recovery_report());
    assert_eq!(r.capacity(), 400_000);
    assert_eq!(r.len(), 100);
    assert_eq!(r.pop().unwrap().unwrap(), 0u32.to_le_bytes().repeat(50));
}

/// Runs the CLI under a 512 MiB address-space limit (`prlimit`), or `None` when there is no
/// `prlimit` to run it under.
fn ringq_limited(args: &[&str], file: &Path) -> Option<std::process::Output> {
    let prlimit = ["/usr/bin/prlimit", "/bin/prlimit"]
        .into_iter()
        .find(|p| Path::new(p).exists())?;
    Some(
        Command::new(prlimit)
            .arg("--as=536870912")
            .arg(crate::ringq_bin::ringq_bin())
            .args(args)
            .arg(file)
            .output()
            .unwrap(),
    )
}

#[test]
fn the_cli_handles_a_64_gib_claim_in_bounded_memory() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge-claim.q");
    let image = claiming(64 << 30);
    std::fs::write(&path, &image).unwrap();
    for args in [&["inspect"][..], &["verify"], &["repair"], &["inspect"]] {
        let Some(out) = ringq_limited(args, &path) else {
            eprintln!("skipped: no prlimit to bound the child's memory");
            return;
        };
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.code().is_some() && !stderr.contains("memory allocation"),
            "ringq {args:?} under a 512 MiB limit: {:?}\n{stderr}",
            out.status
        );
        assert!(
            matches!(out.status.code(), Some(0..=2)),
            "ringq {args:?}: {:?}\n{stderr}",
            out.status
        );
    }
    // The library opens such a real file too: salvaged, no larger than the file was.
    let path = dir.path().join("huge-claim-2.q");
    std::fs::write(&path, &image).unwrap();
    let len = image.len() as u64;
    let r = RingFile::open(&path, &RingOptions::default()).unwrap();
    assert_eq!(r.len(), 100);
    assert!(r.capacity() <= len);
}
